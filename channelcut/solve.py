"""The decision: which channel groups go, given the walk's facts and the cut mode.

Zero-only mode (the seed's behaviour) removes a group when every reader ignores it: its value
is zero there or no kept row reads it. Full mode also lets readers fold known constants into
their bias (or a border map for padded convs) and lets broadcasting ops take an operand's
constant channels back from a reinsertion (one-sided residual cuts). Each such site costs
something; the cost model keeps only the sites that pay under the chosen objective.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import onnx_ir as ir

from channelcut.analysis import (ComputedRows, Cost, GroupedConv, Link, Pin, Reader, Site,
                                 Walk, connected_components)
from channelcut.channels import ChannelInfo
from channelcut.graph import static_shape

from channelcut.costs import MOVED_ELEMENT, NODE_OVERHEAD, OBJECTIVES, SITE_KINDS  # noqa: F401

_NOTHING = np.zeros(0, dtype=np.int64)
_NOTHING.flags.writeable = False


@dataclass(frozen=True)
class Options:
    """`fold`: allow folding constants and reinserting them (the full cut); `objective`:
    what a fold or reinsertion must reduce to be worth doing; `align`: every tensor that
    loses channels keeps a multiple of this many (CPU and NPU kernels work on blocks of 8 or
    16 channels and fall back to slow paths otherwise; 1: cut all that can go; `blocks`: the
    same per tensor, only where the tensor was aligned); `sites`: the
    kinds of fold or reinsertion the runtime runs well, and `added_ops`: whether one may add
    ops to the graph (a target's choice, channelcut.targets); `node_overhead` and
    `moved_element`: the latency objective's constants, in FLOPs."""

    fold: bool = True
    objective: str = "flops"
    align: int = 1
    # a target's channel blocks, largest first, used instead of `align` when given: a tensor
    # whose channel count a block divides keeps a multiple of the largest such block (else it
    # would lose the fast layout it had); the others run the slow path anyway and may lose any
    blocks: tuple[int, ...] = ()
    # when given, only tensors an op of these types reads are aligned (RKNN-Toolkit2 pads the
    # Concat inputs it sees unaligned; elsewhere its cycles step in blocks either way)
    align_readers: frozenset[str] = frozenset()
    # and of those readers' inputs, only the ones this picks (their positions), given the
    # channels each input keeps unaligned (None: all): a target's cost decision per reader
    align_reader: Callable[[ir.Node, list[int]], Collection[int]] | None = None
    sites: frozenset[str] = SITE_KINDS
    added_ops: bool = True
    node_overhead: float = NODE_OVERHEAD
    moved_element: float = MOVED_ELEMENT
    # what each added op costs in the deployed file beyond its constants, counted as weight
    # bytes (a site must never grow them): RKNN-Toolkit2 writes each layer's commands
    node_bytes: float = 0.0

    # how a border fold is written: "map" (a constant border map Conv(ones) plus an Add) or
    # "carrier" (one constant input channel stays and carries the others in its weight
    # column: no op added; RKNN-Toolkit2 compiles a map into a full-size constant)
    border_form: str = "map"
    # how a reinsertion is written: "pad-gather" (Pad, Gather, Add) or "conv" (one 1x1 Conv
    # with one-hot weights and the constants as its bias: one NPU layer for RKNN-Toolkit2,
    # which runs a channel Pad on the CPU and turns a Gather into such a conv anyway)
    reinsert_form: str = "pad-gather"
    # the runtime pads a channel count of a block or more up to the block (ONNX Runtime's
    # MLAS): `blocks` then apply to every tensor at least one block wide, not only to those
    # they divide
    pad_to_blocks: bool = False

    def alignment_of(self, channels: int) -> int:
        """The multiple a tensor of `channels` channels keeps when it loses some (1: none)."""
        if not self.blocks:
            return self.align
        return next((b for b in self.blocks
                     if (channels >= b if self.pad_to_blocks else channels % b == 0)), 1)

    def cost(self, site: Site, cut: int = 0) -> Cost:
        """What the site adds, in the form this target writes it, when the node's output loses
        `cut` of its channel positions: it is written for those it keeps, and the cut model,
        cut again, sees only those and must come to the same decision."""
        cost = self._form_cost(site, cut)
        if self.node_bytes and cost.nodes:
            return Cost(cost.weight_bytes + self.node_bytes * cost.nodes, cost.flops,
                        cost.moved, cost.nodes)
        return cost

    def _form_cost(self, site: Site, cut: int) -> Cost:
        kept = 1.0 - cut / site.positions if site.positions else 1.0
        if site.kind == "border fold" and self.border_form == "carrier":
            return Cost()  # a weight column changes; the carrier's own cost is a kept channel
        if site.kind == "reinsert" and self.reinsert_form == "conv":
            shape = static_shape(site.node.outputs[0])
            channels = shape[1] * kept
            elements = math.prod(shape) * kept
            # RKNN-Toolkit2 runs a conv in blocks of 16 output by 32 input channels at every
            # position, at least 2 input blocks (exact on 1499 layers, bench/rknn_calibrate.py):
            # a one-hot conv costs that whatever its few MACs, counted in FLOPs at the NPU's
            # full rate (naive mobilenet_v2: 12544 cycles for 12 -> 18 channels at 56x56)
            blocks = math.ceil(channels / 16) * max(math.ceil(channels / 32), 2)
            npu = 2.0 * 16 * 32 * blocks * math.prod(shape[2:])
            # at most every channel kept: channels x channels one-hot weights and a bias
            return Cost(weight_bytes=4.0 * channels * (channels + 1),
                        flops=max(2.0 * channels * elements, npu), moved=elements, nodes=1)
        full = site.cost
        return Cost(weight_bytes=full.weight_bytes - site.per_position * cut, flops=full.flops * kept,
                    moved=full.moved * kept, nodes=full.nodes)

    def allows(self, site: Site) -> bool:
        """May the cut use this fold or reinsertion at all?"""
        return site.kind in self.sites and (self.added_ops or self.cost(site).nodes == 0)


@dataclass
class SiteUse:
    """A fold or reinsertion the cut performs: where, how many channel groups, what it adds
    and what removing those groups saves (estimates from the cost model)."""

    node: str
    op_type: str
    kind: str
    groups: int
    added: Cost
    saved: Cost


@dataclass
class Analysis:
    """The facts the rewrite consumes: channel layouts, groups, and which groups go."""

    model: ir.Model
    infos: dict[ir.Value, ChannelInfo]
    group_of: np.ndarray  # node id -> group
    removable: np.ndarray  # group -> bool
    options: Options = field(default_factory=Options)
    blockers: list[Pin] = field(default_factory=list)
    sites: list[SiteUse] = field(default_factory=list)
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    consts: dict[ir.Value, np.ndarray | None] = field(default_factory=dict)  # converted once
    # a conv's computed rows by its output (ComputedRows.rows), where they have their own fate
    computed: dict[ir.Value, ChannelInfo] = field(default_factory=dict)
    # the coupled unit of each group, where removal links groups (see `_units`)
    units: np.ndarray | None = None
    _deleted: dict[ir.Value, np.ndarray] = field(default_factory=dict, repr=False)

    def removed(self, value: ir.Value) -> np.ndarray:
        """Per channel of `value`: is it cut? (empty for a value without channels)."""
        info = self.infos.get(value)
        if info is None:
            return np.zeros(0, dtype=bool)
        return self.removable[self.group_of[info.ids]]

    def deleted_positions(self, value: ir.Value | None) -> np.ndarray:
        """Sorted positions along the value's channel axis that the cut deletes."""
        info = self.infos.get(value) if value is not None else None
        if info is None:
            return _NOTHING
        if value not in self._deleted:  # asked for by every rule that touches the value
            removed = self.removable[self.group_of[info.ids]]
            self._deleted[value] = np.sort(info.positions[removed].ravel()) if removed.any() \
                else _NOTHING
        return self._deleted[value]

    def computed_without(self, value: ir.Value) -> np.ndarray:
        """Sorted positions of `value` that the cut keeps but its producer no longer computes
        (a conv's rows that are then their bias, put back as constants)."""
        rows = self.computed.get(value)
        if rows is None:
            return _NOTHING
        return np.flatnonzero(self.removable[self.group_of[rows.ids]] & ~self.removed(value))

    @property
    def removed_groups(self) -> int:
        """How many coupled channel units the cut removes (what the report counts): a computed
        row that goes with its output channel is part of that channel's removal, not one more,
        and groups linked as one unit (`_units`) count once."""
        removed = self.removable.copy()
        for value, rows in self.computed.items():
            out = self.infos[value].ids
            along = (self.group_of[rows.ids] != self.group_of[out]) & self.removed(value)
            removed[self.group_of[rows.ids[along]]] = False
        if self.units is None:
            return int(removed.sum())
        return int(np.unique(self.units[removed]).size)


def _node_values(walk: Walk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel node: a known constant? a known constant or map (a plane)? zero?"""
    uniform = np.zeros(walk.n_nodes, dtype=bool)
    known = np.zeros(walk.n_nodes, dtype=bool)
    zero = np.zeros(walk.n_nodes, dtype=bool)
    for info in walk.infos.values():
        uniform[info.base:info.base + info.n] = info.uniform
        known[info.base:info.base + info.n] = info.known
        zero[info.base:info.base + info.n] = info.zero
    return uniform, known, zero


def _unbalanced(conv: GroupedConv, removed: Callable[[np.ndarray], np.ndarray],
                cheap: np.ndarray, reviving: Callable[[np.ndarray], np.ndarray] | None = None
                ) -> np.ndarray:
    """Removed channels to keep so that every surviving conv group loses the same number.

    Conv groups that lose all inputs and outputs are dropped whole and do not count. In the
    others, each loses only as many channels as the group that loses fewest. Of the excess,
    channels that `reviving(ids)` does not flag are kept first (keeping a flagged one brings
    back a conv group another grouped conv drops whole, and that group's channels with it),
    then `cheap` channel nodes (known values: keeping them keeps nothing upstream alive), then
    the highest indices. `removed(ids)` says which channel nodes are cut.
    """
    out_removed = removed(conv.rows)
    whole = out_removed.all(axis=1)
    sides = [(conv.rows, out_removed)]
    if conv.columns is None:
        whole[:] = False
    else:
        in_removed = removed(conv.columns)
        whole &= in_removed.all(axis=1)
        sides.append((conv.columns, in_removed))
    keep: list[np.ndarray] = []
    for ids, gone in sides:
        counts = gone[~whole].sum(axis=1)
        if counts.size == 0:
            continue
        target = counts.min()
        for k in np.flatnonzero(~whole):
            excess = gone[k].sum() - target
            if excess:
                candidates = ids[k][gone[k]][::-1]
                order = np.argsort(~cheap[candidates], kind="stable")
                candidates = candidates[order]
                if reviving is not None and candidates.size > excess:
                    candidates = candidates[np.argsort(reviving(candidates), kind="stable")]
                keep.append(candidates[:excess])
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


# How many of a solve's picks (a channel an emptied tensor keeps) are tried without: each
# try solves again.
MAX_RELEASES = 8


class _Solver:
    """One greatest fixed point for a given set of allowed sites."""

    def __init__(self, walk: Walk, options: Options, allowed: set[int]) -> None:
        self.walk, self.options, self.allowed = walk, options, allowed
        # known: one constant everywhere (what bias folds and reinsertions can put back);
        # known_map: or a constant map (what a border fold can add back)
        self.known, self.known_map, self.zero = _node_values(walk)
        self.links = [k for k in walk.links
                      if options.fold and k.site is not None and id(k.site) in allowed]
        constrained = {id(k) for k in self.links}
        # a conv's computed rows have a fate of their own only where their fold and their
        # reinsertion may both be written (a carrier fold adds no Add to put them back at)
        self.computed = [c for c in walk.computed.values()
                         if options.fold and options.border_form != "carrier"
                         and id(c.site) in allowed and id(c.fold) in allowed]
        self.free = free = {id(c) for c in self.computed}
        self.grouped = [replace(g, rows=g.computed.rows.ids[g.rows - g.rows.flat[0]])
                        if g.computed is not None and id(g.computed) in free else g
                        for g in walk.grouped]
        a, b = walk.edges()
        coupled = [(k.operand_ids, k.out_ids) for k in walk.links if id(k) not in constrained]
        coupled += [(c.rows.ids, c.out_ids) for c in walk.computed.values() if id(c) not in free]
        if coupled:
            a = np.concatenate([a, *[x for x, _ in coupled]])
            b = np.concatenate([b, *[y for _, y in coupled]])
        self.group_of = connected_components(walk.n_nodes, a, b)
        n_groups = int(self.group_of.max()) + 1 if walk.n_nodes else 0
        self.removable = np.ones(n_groups, dtype=bool)
        for pin in walk.pins:
            self.removable[self.group_of[pin.ids]] = False
        self.trims: list[Pin] = []
        # every tensor, with a conv's free computed rows just before its output (None: what
        # the fold's Add reads): each keeps a channel, and aligns
        self.tensors: list[tuple[ChannelInfo, ir.Value | None]] = []
        for value, info in walk.infos.items():
            if id(walk.computed.get(value)) in free:
                self.tensors.append((walk.computed[value].rows, None))
            self.tensors.append((info, value))

    def folds(self, reader: Reader) -> bool:
        return self.options.fold and reader.site is not None and id(reader.site) in self.allowed

    def needed_columns(self, reader: Reader, removed_node: np.ndarray | None = None
                       ) -> np.ndarray:
        """Input channels this reader cannot do without, given the rows it keeps (from
        `removed_node`, per channel node, or else from the current decision)."""
        ignorable = self.zero[reader.in_ids]
        if self.folds(reader):
            known = self.known_map if reader.site.kind == "border fold" else self.known
            folded = known[reader.in_ids]
            ignorable = ignorable | (folded if reader.foldable is None else
                                     folded & reader.foldable)
        rows = self.removed(reader.row_ids) if removed_node is None else \
            removed_node[reader.row_ids]
        if reader.nonfinite_weights is not None:  # NaN * 0 is NaN: a kept row reads it
            ignorable = ignorable & ~reader.nonfinite_weights[~rows].any(axis=0)
        return reader.live_columns(rows) & ~ignorable

    def removed(self, ids: np.ndarray) -> np.ndarray:
        """Which of these channel nodes are cut, as things stand."""
        return self.removable[self.group_of[ids]]

    def drop(self, groups: np.ndarray) -> np.ndarray:
        """Keep these groups; returns those that were still removable."""
        groups = np.unique(groups[self.removable[groups]])
        self.removable[groups] = False
        return groups

    def run(self) -> None:
        """Drop groups until every check holds; dropping only ever keeps more, so it ends.

        A tensor must keep at least one channel; that is checked only once the other checks
        have settled (before, a reader visited early may still count on rows a later reader
        will keep), and then for one tensor at a time, nearest the outputs first. Such a
        pick can turn out needless: a pick made later, upstream, may make the tensor keep
        other channels anyway (a constant a kept channel of its input now makes variable).
        Each such pick is then tried without: solved again with the other picks made first;
        the result is taken when it removes all it did and more, so a cut of the cut model,
        which sees the other picks as channels it must keep, finds nothing left to remove.
        """
        start, checks = self.removable.copy(), self._checks()
        watchers = self._watchers(checks)
        picks = self._run_to_fixpoint(checks, watchers, [])
        tries, index = 0, 0
        while index < len(picks) and tries < MAX_RELEASES:
            info, group = picks[index]
            base = self.group_of[info.base:info.base + info.n]
            if not (~self.removable[base] & (base != group)).any():
                index += 1
                continue
            tries += 1
            before, trims = self.removable, self.trims
            self.removable, self.trims = start.copy(), []
            others = picks[:index] + picks[index + 1:]
            again = self._run_to_fixpoint(checks, watchers, others)
            if (self.removable >= before).all() and (self.removable > before).any():
                picks = others + again  # the next pick is now at `index`
            else:
                self.removable, self.trims = before, trims
                index += 1
        if self.options.align > 1 or self.options.blocks:
            self._align(checks, watchers)

    def _run_to_fixpoint(self, checks: list[tuple[Callable[[], np.ndarray], np.ndarray]],
                         watchers: Callable[[np.ndarray], list[int]],
                         made: list[tuple[ChannelInfo, int]]) -> list[tuple[ChannelInfo, int]]:
        """Settle every check, keeping a channel of each emptied tensor (the picks `made`
        first); returns the picks made here, as (tensor, group kept)."""
        self.drop(np.array([group for _, group in made], np.int64))
        pending = list(range(len(checks)))
        picks: list[tuple[ChannelInfo, int]] = []
        while True:
            self._settle(checks, watchers, pending)
            removed = self.removable[self.group_of]
            # the last emptied tensor first: the channel it keeps may make upstream ones needed
            emptied = next((info for info, _ in reversed(self.tensors)
                            if info.n and removed[info.base:info.base + info.n].all()), None)
            if emptied is None:
                kept = np.concatenate([self._carriers(), self._unwritten_rows()])
                if kept.size == 0:
                    return picks
                pending = watchers(self.drop(kept))
                continue
            group = int(self.group_of[self._cheapest_to_keep(emptied)])
            picks.append((emptied, group))
            pending = watchers(self.drop(np.array([group], np.int64)))

    def _carriers(self) -> np.ndarray:
        """Groups to keep so that every carrier-form border fold has its carrier: a kept
        non-zero constant input channel that the folded ones are multiples of."""
        if self.options.border_form != "carrier":
            return np.zeros(0, np.int64)
        removed, keep = self.removable[self.group_of], []
        for reader in self.walk.readers:
            if not self.folds(reader) or reader.site.kind != "border fold":
                continue
            constant = self.known[reader.in_ids] & ~self.zero[reader.in_ids]
            gone = removed[reader.in_ids]
            folded = gone & constant & reader.live_columns(removed[reader.row_ids])
            if folded.any() and not (constant & ~gone).any():
                keep.append(self.group_of[reader.in_ids[np.flatnonzero(folded)[0]]])
        return np.unique(np.array(keep, np.int64))

    def _unwritten_rows(self) -> np.ndarray:
        """Groups of computed rows to keep because no border map would be added to the conv's
        output (no kept output row reads a folded channel): there is no Add to put them back
        at, and a cut of the cut model would see no such rows either."""
        keep = [self.group_of[c.rows.ids[self._taken(c)]] for c in self.computed
                if self._taken(c).any() and not self._border_written(c)]
        return np.concatenate(keep) if keep else np.zeros(0, np.int64)

    def _taken(self, rows: ComputedRows) -> np.ndarray:
        """Per row: does the conv compute without it while the output keeps it?"""
        return self.removed(rows.rows.ids) & ~self.removed(rows.out_ids)

    def _border_written(self, rows: ComputedRows) -> bool:
        """Does a kept output row read a folded channel (a non-zero constant that goes)?"""
        ids = rows.columns
        folded = self.removed(ids) & self.known_map[ids] & ~self.zero[ids]
        return bool((rows.nz & folded)[~self.removed(rows.out_ids)].any())

    def _constant_rows(self, rows: ComputedRows) -> np.ndarray:
        """Per row: is it its bias in the conv as cut (every column it reads with a non-zero
        weight, or whatever its weight when NaN may be there, is zero or folded away)?"""
        ids = rows.columns
        folded = self.removed(ids) & self.known_map[ids] & rows.foldable
        return rows.bounded & ~(rows.nz & ~(self.zero[ids] | folded)).any(axis=1)

    def _check_computed(self, rows: ComputedRows) -> np.ndarray:
        """A row goes from the conv when its output channel goes; it may go alone (put back
        as a constant) only while it is its bias."""
        computed_gone, out_gone = self.removed(rows.rows.ids), self.removed(rows.out_ids)
        taken = computed_gone & ~out_gone
        return self.drop(np.concatenate([
            self.group_of[rows.out_ids[out_gone & ~computed_gone]],
            self.group_of[rows.rows.ids[taken & ~self._constant_rows(rows)]]]))

    def row_savings(self) -> dict[int, Cost]:
        """Per reinsertion site of computed rows in use: what the conv saves by computing
        without them, as a cut of the cut model would count it: each row's weights over the
        inputs a conv group keeps (every group that computes a row keeps as many; a group
        dropped whole would keep as many without the reinsertion), its bias and its FLOPs."""
        savings: dict[int, Cost] = {}
        for rows in self.computed:
            taken = self._taken(rows)
            if not taken.any():
                continue
            kept = float((~self.removed(rows.columns)).sum(axis=1).max())
            n = float(taken.sum())
            savings[id(rows.site)] = Cost(
                weight_bytes=n * (kept * rows.kernel + rows.has_bias) * rows.itemsize,
                flops=n * 2.0 * rows.plane * kept * rows.kernel)
        return savings

    def _cheapest_to_keep(self, info: ChannelInfo) -> int:
        """The channel node an emptied tensor keeps: one a grouped conv reads in a conv group
        that keeps outputs anyway, or writes in one that keeps inputs anyway (keeping it there
        keeps no other conv group alive), else a conv's computed row whose output channel
        stays (the conv computes it instead of putting it back, and keeps no other channel
        alive), else its first channel."""
        for conv, written in zip(self.grouped, self.walk.grouped):
            if conv.columns is None:
                continue
            # (the output channels of computed rows, whose conv groups keep inputs likewise)
            for ids, other in ((conv.columns, conv.rows), (conv.rows, conv.columns),
                               (written.rows, conv.columns)):
                alive = ~self.removed(other).all(axis=1)
                free = ids[alive].ravel()
                free = free[(free >= info.base) & (free < info.base + info.n)]
                if free.size:
                    return int(free.min())
        for rows in self.computed:  # a row whose output channel stays: computed, not put back
            if rows.rows.base == info.base:
                stays = rows.rows.ids[~self.removed(rows.out_ids)]
                if stays.size:
                    return int(stays.min())
        return info.base

    def _align(self, checks: list[tuple[Callable[[], np.ndarray], np.ndarray]],
               watchers: Callable[[np.ndarray], list[int]]) -> None:
        """Keep removed channels until every tensor that loses some keeps a multiple of
        `align` (or all of them). Keeping is always exact; known channels are kept first,
        since their rows read nothing unknown and keep nothing else alive."""
        readers, changed = self.options.align_readers, True
        aligning = self._aligning_readers() if readers else set()
        while changed:
            changed = False
            for info, value in self.tensors:
                align = self.options.alignment_of(info.n)
                if info.block != 1 or info.span != 1 or align == 1 or (
                        readers and (value is None or not any(
                            (u.node, u.idx) in aligning for u in value.uses()))):
                    continue
                gone = self.removed(info.ids)
                short = -int(info.n - gone.sum()) % align
                if not gone.any() or short == 0:
                    continue
                candidates = info.ids[gone]
                candidates = candidates[np.argsort(~self.known_map[candidates], kind="stable")]
                groups = self.group_of[candidates]
                _, first = np.unique(groups, return_index=True)
                chosen = groups[np.sort(first)][:short]
                dropped = self.drop(chosen)
                if dropped.size:
                    self._settle(checks, watchers, watchers(dropped))
                    changed = True

    def _aligning_readers(self) -> set[tuple[ir.Node, int]]:
        """The (node, input position) pairs of `align_readers`' types whose input is aligned:
        every input, or those the target's `align_reader` picks, decided once per node on the
        unaligned cut."""
        decide, picked, seen = self.options.align_reader, set(), set()
        for value in self.walk.infos:
            for use in value.uses():
                node = use.node
                if node.op_type not in self.options.align_readers or node in seen:
                    continue
                seen.add(node)
                positions = range(len(node.inputs)) if decide is None else decide(
                    node, [self._kept(v) for v in node.inputs])
                picked.update((node, i) for i in positions)
        return picked

    def _kept(self, value: ir.Value | None) -> int:
        """How many channels `value` keeps in the cut so far (0: none known)."""
        info = self.walk.infos.get(value) if value is not None else None
        return int(info.n - self.removed(info.ids).sum()) if info is not None and info.n else 0

    def _checks(self) -> list[tuple[Callable[[], np.ndarray], np.ndarray]]:
        """Every constraint as (check, the channel nodes it looks at); a check drops what it
        must keep and returns those groups. Readers come last to first: from the outputs,
        one pass settles a chain."""
        checks = [(partial(self._check_reader, r), r.row_ids) for r in reversed(self.walk.readers)]
        checks += [(partial(self._check_link, k), np.concatenate([k.out_ids, k.operand_ids]))
                   for k in self.links]
        checks += [(partial(self._check_computed, c),
                    np.unique(np.concatenate([c.rows.ids, c.out_ids, c.columns.ravel()])))
                   for c in self.computed]
        self._first_grouped = len(checks)
        checks += [(partial(self._check_grouped, c),
                    c.rows.ravel() if c.columns is None else
                    np.concatenate([c.rows.ravel(), c.columns.ravel()]))
                   for c in self.grouped]
        return checks

    def _watchers(self, checks: list[tuple[Callable[[], np.ndarray], np.ndarray]]
                  ) -> Callable[[np.ndarray], list[int]]:
        """For dropped groups: the checks that look at any of their channels."""
        if not checks:
            return lambda groups: []
        groups = np.concatenate([self.group_of[ids] for _, ids in checks])
        owners = np.repeat(np.arange(len(checks)), [ids.size for _, ids in checks])
        order = np.lexsort((owners, groups))
        groups, owners = groups[order], owners[order]
        starts = np.searchsorted(groups, np.arange(self.removable.size + 1))

        def watching(dropped: np.ndarray) -> list[int]:
            lo, length = starts[dropped], starts[dropped + 1] - starts[dropped]
            total = int(length.sum())
            if total == 0:
                return []
            # the index ranges lo[i] .. lo[i] + length[i], concatenated
            at = np.repeat(lo - np.cumsum(length) + length, length) + np.arange(total)
            hit = np.zeros(len(checks), dtype=bool)
            hit[owners[at]] = True
            return np.flatnonzero(hit).tolist()

        return watching

    def _settle(self, checks: list[tuple[Callable[[], np.ndarray], np.ndarray]],
                watchers: Callable[[np.ndarray], list[int]], pending: list[int]) -> None:
        """Run checks until none drops anything, revisiting only those a drop concerns.

        Grouped-conv balancing waits until every other check has settled: which channels it
        keeps is a choice, best made once the others have kept what they must.
        """
        queue = deque(i for i in pending if i < self._first_grouped)
        deferred = deque(i for i in pending if i >= self._first_grouped)
        queued = np.zeros(len(checks), dtype=bool)
        queued[pending] = True
        while queue or deferred:
            index = queue.popleft() if queue else deferred.popleft()
            queued[index] = False
            for other in watchers(checks[index][0]()):
                if not queued[other]:
                    queued[other] = True
                    (queue if other < self._first_grouped else deferred).append(other)

    def _check_reader(self, reader: Reader) -> np.ndarray:
        return self.drop(self.group_of[reader.in_ids[self.needed_columns(reader)]])

    def _check_link(self, link: Link) -> np.ndarray:
        out_gone, operand_gone = self.removed(link.out_ids), self.removed(link.operand_ids)
        # the output can only lose a channel its operand loses too; an operand can lose a
        # channel the output keeps only if it is a known constant
        unknown = operand_gone & ~out_gone & ~self.known[link.operand_ids]
        return self.drop(np.concatenate([self.group_of[link.out_ids[out_gone & ~operand_gone]],
                                         self.group_of[link.operand_ids[unknown]]]))

    def _reviving(self, ids: np.ndarray) -> np.ndarray:
        """Per channel node: would keeping it bring back a conv group that a grouped conv now
        drops whole (all its inputs and outputs cut)? Its group may hold channels of several
        grouped convs (a conv's outputs are the next one's inputs)."""
        dead = []
        for conv in self.grouped:
            if conv.columns is None:
                continue
            whole = self.removed(conv.rows).all(axis=1) & self.removed(conv.columns).all(axis=1)
            dead += [self.group_of[conv.rows[whole]].ravel(),
                     self.group_of[conv.columns[whole]].ravel()]
        return np.isin(self.group_of[ids], np.concatenate(dead)) if dead else \
            np.zeros(ids.size, bool)

    def _check_grouped(self, conv: GroupedConv) -> np.ndarray:
        trimmed = _unbalanced(conv, self.removed, self.known_map, self._reviving)
        dropped = self.drop(self.group_of[trimmed])
        if dropped.size:
            self.trims.append(Pin(trimmed, conv.op_type, conv.node,
                                  "grouped Conv: every group must keep as many channels"))
        return dropped

    def cut_positions(self, site: Site) -> int:
        """How many positions of the site's node's output channel axis the decision cuts."""
        info = self.walk.infos.get(site.node.outputs[0])
        return 0 if info is None else int(self.removed(info.ids).sum()) * info.block

    def site_groups(self) -> dict[int, np.ndarray]:
        """For each site in use: the removed groups that need it (folded or reinserted)."""
        removed = self.removable[self.group_of]
        used: dict[int, list[np.ndarray]] = {}
        for reader in self.walk.readers:
            if not self.folds(reader):
                continue
            live = reader.live_columns(removed[reader.row_ids])
            folded = removed[reader.in_ids] & live & ~self.zero[reader.in_ids]
            if folded.any():
                used.setdefault(id(reader.site), []).append(self.group_of[reader.in_ids[folded]])
        for link in self.links:
            taken = removed[link.operand_ids] & ~removed[link.out_ids]
            if taken.any():
                used.setdefault(id(link.site), []).append(self.group_of[link.operand_ids[taken]])
        for rows in self.computed:
            taken = self._taken(rows)
            if taken.any():
                used.setdefault(id(rows.site), []).append(self.group_of[rows.rows.ids[taken]])
        return {key: np.unique(np.concatenate(parts)) for key, parts in used.items()}


def _read_by(value: ir.Value | None) -> set[str]:
    """The op types that read a tensor (None: a conv's computed rows, which its Add reads)."""
    return {"Add"} if value is None else {use.node.op_type for use in value.uses()}


def _metric(cost: Cost, objective: str, options: Options = Options()) -> float:
    if objective == "params":
        return cost.weight_bytes
    if objective == "latency":
        return (cost.flops + options.moved_element * cost.moved
                + options.node_overhead * cost.nodes)
    return cost.flops


def pays(saved: Cost, added: Cost, objective: str, options: Options = Options()) -> bool:
    """Worth doing: the objective goes down, and the weights never grow."""
    return (_metric(saved, objective, options) > _metric(added, objective, options)
            and saved.weight_bytes >= added.weight_bytes)


def _group_savings(solver: _Solver, weight_bytes: np.ndarray, flops: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    n = solver.removable.size
    return (np.bincount(solver.group_of, weights=weight_bytes, minlength=n),
            np.bincount(solver.group_of, weights=flops, minlength=n))


def solve(walk: Walk, options: Options = Options()) -> Analysis:
    """The largest set of groups whose removal leaves every remaining value unchanged, using
    only the folds and reinsertions that pay under `options.objective`.

    Start with every site allowed; solve; disallow each site whose saving does not beat its
    cost; solve again, until every site in use pays. A group may need several sites (each is
    credited with its whole saving), so the sites in use must also pay together: if they do
    not, the one that pays least is disallowed and the solve repeats.
    """
    if options.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
    sites = {id(s): s for s in _all_sites(walk) if options.allows(s) and _writable(walk, s,
                                                                                 options)} \
        if options.fold else {}
    allowed = set(sites)
    weight_bytes, flops = walk.charges()
    while True:
        solver = _Solver(walk, options, allowed)
        solver.run()
        group_bytes, group_flops = _group_savings(solver, weight_bytes, flops)
        uses: list[SiteUse] = []
        refused = set()
        used = solver.site_groups()
        rows_saved = solver.row_savings()  # computed rows carry no charges of their own
        margins: dict[int, float] = {}
        for key, groups in used.items():
            site = sites[key]
            extra = rows_saved.get(key, Cost())
            saved = Cost(weight_bytes=float(group_bytes[groups].sum()) + extra.weight_bytes,
                         flops=float(group_flops[groups].sum()) + extra.flops)
            cost = options.cost(site, solver.cut_positions(site))
            if not pays(saved, cost, options.objective, options):
                refused.add(key)
            margins[key] = (_metric(saved, options.objective, options)
                            - _metric(cost, options.objective, options))
            kind = "carrier fold" if site.kind == "border fold" and \
                options.border_form == "carrier" else site.kind
            uses.append(SiteUse(site.node.name or "", site.node.op_type, kind,
                                int(groups.size), cost, saved))
        if not refused and used:
            freed = np.unique(np.concatenate(list(used.values())))
            together = Cost(
                weight_bytes=float(group_bytes[freed].sum())
                + sum(c.weight_bytes for c in rows_saved.values()),
                flops=float(group_flops[freed].sum()) + sum(c.flops for c in rows_saved.values()))
            added = Cost(*(sum(getattr(options.cost(sites[k], solver.cut_positions(sites[k])), f)
                               for k in used)
                           for f in ("weight_bytes", "flops", "moved", "nodes")))
            if not pays(together, added, options.objective, options):
                refused.add(min(margins, key=margins.__getitem__))
        if not refused:
            break
        if len(refused) > 1:
            # each may pay once the others go: the worse half goes first, so that a chain of
            # them (reinsertions along a residual stream) takes a few solves, not one each
            worst = sorted(refused, key=margins.__getitem__)[:(len(refused) + 1) // 2]
            refused = _surely_refused(solver, sites, refused, group_bytes, group_flops) or \
                set(worst)
        allowed -= refused
    blockers = _blockers(walk, solver)
    computed = {value: rows.rows for value, rows in walk.computed.items()
                if id(rows) in solver.free}
    return Analysis(walk.model, walk.infos, solver.group_of, solver.removable, options,
                    blockers, uses, walk.unsupported, walk.consts, computed,
                    units=_units(solver))


def _units(solver: _Solver) -> np.ndarray:
    """Each group's removal unit: a broadcasting op's operand channel and its output channel
    are separate groups when a reinsertion may let the operand go alone, but where both go
    they are one unit (as without folding, where they are coupled): otherwise every channel
    of a head behind a bias Add would count once per channel in full mode."""
    removable, group_of = solver.removable, solver.group_of
    a, b = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for link in solver.links:
        operand, out = group_of[link.operand_ids], group_of[link.out_ids]
        both = removable[operand] & removable[out]
        a.append(operand[both])
        b.append(out[both])
    return connected_components(removable.size, np.concatenate(a), np.concatenate(b))


def _surely_refused(solver: _Solver, sites: dict[int, Site], refused: set[int],
                    group_bytes: np.ndarray, group_flops: np.ndarray) -> set[int]:
    """Of the sites that do not pay, those that would not pay whichever of the others are
    refused too. Refusing a reinsertion couples its operand's channels to the output's, and a
    fold reading the output is then credited with both (as a cut of the cut model counts it):
    refused all at once, such a fold is lost though it pays alone. Each site is bounded by
    every removed group that the refusals can couple to a channel it may take (fewer sites
    only ever keep more channels and merge groups, and the site costs more for what stays);
    the rest wait for the next solve, which counts them exactly."""
    walk, options, group_of, removable = solver.walk, solver.options, solver.group_of, \
        solver.removable
    joined = [(k.operand_ids, k.out_ids) for k in solver.links if id(k.site) in refused]
    joined += [(c.rows.ids, c.out_ids) for c in solver.computed
               if id(c.site) in refused or id(c.fold) in refused]
    a = np.concatenate([group_of[x] for x, _ in joined]) if joined else _NOTHING
    b = np.concatenate([group_of[y] for _, y in joined]) if joined else _NOTHING
    merged = connected_components(removable.size, a, b)
    saved_bytes = np.bincount(merged, weights=group_bytes * removable, minlength=removable.size)
    saved_flops = np.bincount(merged, weights=group_flops * removable, minlength=removable.size)
    taken: dict[int, list[np.ndarray]] = {}
    for reader in walk.readers:
        if solver.folds(reader) and id(reader.site) in refused:
            taken.setdefault(id(reader.site), []).append(reader.in_ids)
    for link in solver.links:
        if id(link.site) in refused:
            taken.setdefault(id(link.site), []).append(link.operand_ids)
    rows_bound: dict[int, Cost] = {}
    for rows in solver.computed:  # every removed row, over every input of its conv group
        if id(rows.site) in refused:
            taken.setdefault(id(rows.site), []).append(rows.rows.ids)
            n, width = float(solver.removed(rows.rows.ids).sum()), float(rows.columns.shape[1])
            rows_bound[id(rows.site)] = Cost(
                weight_bytes=n * (width * rows.kernel + rows.has_bias) * rows.itemsize,
                flops=n * 2.0 * rows.plane * width * rows.kernel)
    sure = set()
    for key in refused:
        ids = np.concatenate(taken[key]) if key in taken else _NOTHING
        parts = np.unique(merged[group_of[ids]])
        extra = rows_bound.get(key, Cost())
        bound = Cost(weight_bytes=float(saved_bytes[parts].sum()) + extra.weight_bytes,
                     flops=float(saved_flops[parts].sum()) + extra.flops)
        site = sites[key]
        if not pays(bound, options.cost(site, solver.cut_positions(site)), options.objective,
                    options):
            sure.add(key)
    return sure


def _writable(walk: Walk, site: Site, options: Options) -> bool:
    """Can the site be written in the target's form? A carrier needs one conv group and
    input channels that are constants, not maps (a multiple of a map is no carrier)."""
    if site.kind == "reinsert" and options.reinsert_form == "conv":  # a 1x1 Conv: NCHW
        info, shape = walk.infos.get(site.node.outputs[0]), static_shape(site.node.outputs[0])
        return info is not None and info.axis == 1 and shape is not None and len(shape) == 4
    if site.kind != "border fold" or options.border_form != "carrier":
        return True
    info = walk.infos.get(site.node.inputs[0])
    group = site.node.attributes.get("group")
    return info is not None and info.plane is None and (group is None or group.value == 1)


def _all_sites(walk: Walk) -> list[Site]:
    found: dict[int, Site] = {}
    for reader in walk.readers:
        if reader.site is not None:
            found[id(reader.site)] = reader.site
    for link in walk.links:
        if link.site is not None:
            found[id(link.site)] = link.site
    for rows in walk.computed.values():
        found[id(rows.site)] = rows.site
    return list(found.values())


def _blockers(walk: Walk, solver: _Solver) -> list[Pin]:
    """Pins that keep a group which every reader could do without and that pruning left
    evidence in (a zero or constant channel, or all-zero weights reading it). Groups with no
    such evidence (ordinary live channels) are not worth reporting."""
    group_of, removable = solver.group_of, solver.removable
    removed = removable[group_of]
    needed = np.zeros(removable.size, dtype=bool)
    evidence = np.zeros(removable.size, dtype=bool)
    evidence[group_of[solver.known_map if solver.options.fold else solver.zero]] = True
    for reader in walk.readers:
        needed[group_of[reader.in_ids[solver.needed_columns(reader, removed)]]] = True
        evidence[group_of[reader.in_ids[~reader.read_columns()]]] = True
    blocked = evidence & ~needed & ~removable
    found: dict[tuple[str, str, str], np.ndarray] = {}
    for pin in [*walk.pins, *solver.trims]:
        groups = np.unique(group_of[pin.ids])
        hit = groups[blocked[groups]]
        if hit.size:
            key = (pin.op_type, pin.node, pin.reason)
            found[key] = np.union1d(found.get(key, hit), hit)
    return [Pin(hit, *key) for key, hit in found.items()]
