"""The fixed point behind a decision: starting from every channel group removable, each
constraint (a reader needs a column, a link couples an operand to its output, a grouped conv
keeps its groups balanced, a tensor keeps a channel) keeps the groups it must until none
keeps more. Keeping is always exact, so any fixed point is a valid cut; the greatest one is
the cut channelcut.solve decides between sites with."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np
import onnx_ir as ir

from channelcut.analysis import (ComputedRows, Cost, GroupedConv, Link, Pin, Reader, Site, Walk,
                                 connected_components)
from channelcut.channels import ChannelInfo
from channelcut.options import Options


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


class Solver:
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
        Alignment (`align`, a target's blocks) comes after the picks, and a channel it keeps
        may keep one of a tensor that was emptied: its pick is tried without in the same way,
        solved again with the groups alignment kept kept from the start.
        """
        start, checks = self.removable.copy(), self._checks()
        watchers = self._watchers(checks)
        picks, aligned = self._run_to_fixpoint(checks, watchers, [])
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
            again, realigned = self._run_to_fixpoint(checks, watchers, others, aligned)
            if (self.removable >= before).all() and (self.removable > before).any():
                picks = others + again  # the next pick is now at `index`
                aligned = np.union1d(aligned, realigned)
            else:
                self.removable, self.trims = before, trims
                index += 1

    def _run_to_fixpoint(self, checks: list[tuple[Callable[[], np.ndarray], np.ndarray]],
                         watchers: Callable[[np.ndarray], list[int]],
                         made: list[tuple[ChannelInfo, int]],
                         kept: np.ndarray | None = None
                         ) -> tuple[list[tuple[ChannelInfo, int]], np.ndarray]:
        """Settle every check, keeping a channel of each emptied tensor (the picks `made`
        first, and the groups `kept`), then align; returns the picks made here, as (tensor,
        group kept), and the groups alignment kept."""
        self.drop(np.array([group for _, group in made], np.int64))
        if kept is not None:
            self.drop(kept)
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
                    # aligned before a pick, a tensor would keep channels for a count the
                    # pick then changes
                    return picks, self._align(checks, watchers)
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
        """The channel node an emptied tensor keeps: one in the group of a channel a grouped
        conv reads in a conv group that keeps outputs anyway, or writes in one that keeps
        inputs anyway (keeping it there keeps no other conv group alive), else one in the
        group of a conv's computed row whose output channel stays (the conv computes it
        instead of putting it back, and keeps no other channel alive), else its first
        channel. By group: the tensor may be one the conv's channels are coupled to (a pooled
        and flattened conv output) rather than the conv's own."""
        ids = np.arange(info.base, info.base + info.n)
        groups = self.group_of[ids]

        def first_in(channels: np.ndarray) -> int | None:
            hit = np.isin(groups, self.group_of[channels])
            return int(ids[np.argmax(hit)]) if hit.any() else None

        for conv, written in zip(self.grouped, self.walk.grouped):
            if conv.columns is None:
                continue
            # (the output channels of computed rows, whose conv groups keep inputs likewise)
            for side, other in ((conv.columns, conv.rows), (conv.rows, conv.columns),
                                (written.rows, conv.columns)):
                alive = ~self.removed(other).all(axis=1)
                found = first_in(side[alive].ravel())
                if found is not None:
                    return found
        for rows in self.computed:  # a row whose output channel stays: computed, not put back
            found = first_in(rows.rows.ids[~self.removed(rows.out_ids)])
            if found is not None:
                return found
        return info.base

    def _align(self, checks: list[tuple[Callable[[], np.ndarray], np.ndarray]],
               watchers: Callable[[np.ndarray], list[int]]) -> np.ndarray:
        """Keep removed channels until every tensor that loses some keeps a multiple of
        `align` (or all of them); returns the groups it chose to keep. Keeping is always
        exact; known channels are kept first, since their rows read nothing unknown and keep
        nothing else alive."""
        chosen_all: list[np.ndarray] = [np.zeros(0, np.int64)]
        if not (self.options.align > 1 or self.options.blocks):
            return chosen_all[0]
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
                    chosen_all.append(dropped)
                    self._settle(checks, watchers, watchers(dropped))
                    changed = True
        return np.concatenate(chosen_all)

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
