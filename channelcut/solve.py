"""The decision: which channel groups go, given the walk's facts and the cut mode.

Zero-only mode (the seed's behaviour) removes a group when every reader ignores it: its value
is zero there or no kept row reads it. Full mode also lets readers fold known constants into
their bias (or a border map for padded convs) and lets broadcasting ops take an operand's
constant channels back from a reinsertion (one-sided residual cuts). Each such site costs
something; the cost model keeps only the sites that pay under the chosen objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Cost, GroupedConv, Pin, Reader, Site, Walk, connected_components
from channelcut.channels import ChannelInfo

OBJECTIVES = ("flops", "params", "latency")
NODE_OVERHEAD = 1e5  # latency objective: one added op costs about this many FLOPs of work


@dataclass(frozen=True)
class Options:
    """`fold`: allow folding constants and reinserting them (the full cut); `objective`:
    what a fold or reinsertion must reduce to be worth doing."""

    fold: bool = True
    objective: str = "flops"


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
            return np.zeros(0, dtype=np.int64)
        removed = self.removable[self.group_of[info.ids]]
        return np.sort(info.positions[removed].ravel())

    @property
    def removed_groups(self) -> int:
        return int(self.removable.sum())


def _node_values(walk: Walk) -> tuple[np.ndarray, np.ndarray]:
    """Per channel node: known? and zero?"""
    known = np.zeros(walk.n_nodes, dtype=bool)
    zero = np.zeros(walk.n_nodes, dtype=bool)
    for info in walk.infos.values():
        known[info.base:info.base + info.n] = info.known
        zero[info.base:info.base + info.n] = info.zero
    return known, zero


def _live_columns(reader: Reader, removed_node: np.ndarray) -> np.ndarray:
    """Input channels that some kept output row reads with a non-zero weight."""
    return reader.nz[~removed_node[reader.row_ids]].any(axis=0)


def _unbalanced(conv: GroupedConv, removed_node: np.ndarray) -> np.ndarray:
    """Removed channels to keep so that every surviving conv group loses the same number.

    Conv groups that lose all inputs and outputs are dropped whole and do not count. In the
    others, each loses only as many channels as the group that loses fewest; the highest
    indices of the excess are kept.
    """
    out_removed = removed_node[conv.rows]
    whole = out_removed.all(axis=1)
    sides = [(conv.rows, out_removed)]
    if conv.columns is None:
        whole[:] = False
    else:
        in_removed = removed_node[conv.columns]
        whole &= in_removed.all(axis=1)
        sides.append((conv.columns, in_removed))
    keep: list[np.ndarray] = []
    for ids, removed in sides:
        counts = removed[~whole].sum(axis=1)
        if counts.size == 0:
            continue
        target = counts.min()
        for k in np.flatnonzero(~whole):
            excess = removed[k].sum() - target
            if excess:
                keep.append(ids[k][removed[k]][-excess:])
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


class _Solver:
    """One greatest fixed point for a given set of allowed sites."""

    def __init__(self, walk: Walk, options: Options, allowed: set[int]) -> None:
        self.walk, self.options, self.allowed = walk, options, allowed
        self.known, self.zero = _node_values(walk)
        self.links = [k for k in walk.links
                      if options.fold and k.site is not None and id(k.site) in allowed]
        constrained = {id(k) for k in self.links}
        a, b = walk.edges()
        coupled = [k for k in walk.links if id(k) not in constrained]
        if coupled:
            a = np.concatenate([a, *[k.operand_ids for k in coupled]])
            b = np.concatenate([b, *[k.out_ids for k in coupled]])
        self.group_of = connected_components(walk.n_nodes, a, b)
        n_groups = int(self.group_of.max()) + 1 if walk.n_nodes else 0
        self.removable = np.ones(n_groups, dtype=bool)
        for pin in walk.pins:
            self.removable[self.group_of[pin.ids]] = False
        self.trims: list[Pin] = []

    def folds(self, reader: Reader) -> bool:
        return self.options.fold and reader.site is not None and id(reader.site) in self.allowed

    def needed_columns(self, reader: Reader, removed_node: np.ndarray) -> np.ndarray:
        """Input channels this reader cannot do without, given the rows it keeps."""
        ignorable = self.zero[reader.in_ids]
        if self.folds(reader):
            ignorable = ignorable | self.known[reader.in_ids]
        return _live_columns(reader, removed_node) & ~ignorable

    def drop(self, groups: np.ndarray) -> bool:
        groups = groups[self.removable[groups]]
        if groups.size == 0:
            return False
        self.removable[groups] = False
        return True

    def run(self) -> None:
        """Drop groups until every check holds; dropping only ever keeps more, so it ends.

        A tensor must keep at least one channel; that is checked only once the other checks
        have settled (before, a reader visited early may still count on rows a later reader
        will keep), and then for one tensor at a time, nearest the outputs first.
        """
        while True:
            self._settle()
            removed = self.removable[self.group_of]
            # the last emptied tensor first: the channel it keeps may make upstream ones needed
            emptied = next((info for info in reversed(self.walk.infos.values())
                            if info.n and removed[info.base:info.base + info.n].all()), None)
            if emptied is None:
                return
            self.drop(self.group_of[emptied.base:emptied.base + 1])

    def _settle(self) -> None:
        group_of, walk = self.group_of, self.walk
        changed = True
        while changed:
            changed = False
            removed = self.removable[group_of]
            for reader in walk.readers:
                changed |= self.drop(group_of[reader.in_ids[self.needed_columns(reader, removed)]])
            removed = self.removable[group_of]
            for link in self.links:
                out_gone, operand_gone = removed[link.out_ids], removed[link.operand_ids]
                # the output can only lose a channel its operand loses too
                changed |= self.drop(group_of[link.out_ids[out_gone & ~operand_gone]])
                # an operand can lose a channel the output keeps only if it is a known constant
                unknown = operand_gone & ~out_gone & ~self.known[link.operand_ids]
                changed |= self.drop(group_of[link.operand_ids[unknown]])
            removed = self.removable[group_of]
            for conv in walk.grouped:
                trimmed = _unbalanced(conv, removed)
                if trimmed.size and self.drop(group_of[trimmed]):
                    changed = True
                    self.trims.append(Pin(trimmed, conv.op_type, conv.node,
                                          "grouped Conv: every group must keep as many channels"))

    def site_groups(self) -> dict[int, np.ndarray]:
        """For each site in use: the removed groups that need it (folded or reinserted)."""
        removed = self.removable[self.group_of]
        used: dict[int, list[np.ndarray]] = {}
        for reader in self.walk.readers:
            if not self.folds(reader):
                continue
            live = _live_columns(reader, removed)
            folded = removed[reader.in_ids] & live & ~self.zero[reader.in_ids]
            if folded.any():
                used.setdefault(id(reader.site), []).append(self.group_of[reader.in_ids[folded]])
        for link in self.links:
            taken = removed[link.operand_ids] & ~removed[link.out_ids]
            if taken.any():
                used.setdefault(id(link.site), []).append(self.group_of[link.operand_ids[taken]])
        return {key: np.unique(np.concatenate(parts)) for key, parts in used.items()}


def _metric(cost: Cost, objective: str) -> float:
    if objective == "params":
        return cost.weight_bytes
    if objective == "latency":
        return cost.flops + cost.moved + NODE_OVERHEAD * cost.nodes
    return cost.flops


def pays(saved: Cost, added: Cost, objective: str) -> bool:
    """Worth doing: the objective goes down, and the weights never grow."""
    return (_metric(saved, objective) > _metric(added, objective)
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
    cost; solve again, until every site in use pays.
    """
    if options.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
    sites = {id(s): s for s in _all_sites(walk)} if options.fold else {}
    allowed = set(sites)
    weight_bytes, flops = walk.charges()
    while True:
        solver = _Solver(walk, options, allowed)
        solver.run()
        group_bytes, group_flops = _group_savings(solver, weight_bytes, flops)
        uses: list[SiteUse] = []
        refused = set()
        for key, groups in solver.site_groups().items():
            site = sites[key]
            saved = Cost(weight_bytes=float(group_bytes[groups].sum()),
                         flops=float(group_flops[groups].sum()))
            if not pays(saved, site.cost, options.objective):
                refused.add(key)
            uses.append(SiteUse(site.node.name or "", site.node.op_type, site.kind,
                                int(groups.size), site.cost, saved))
        if not refused:
            break
        allowed -= refused
    blockers = _blockers(walk, solver)
    return Analysis(walk.model, walk.infos, solver.group_of, solver.removable, options,
                    blockers, uses, walk.unsupported, walk.consts)


def _all_sites(walk: Walk) -> list[Site]:
    found: dict[int, Site] = {}
    for reader in walk.readers:
        if reader.site is not None:
            found[id(reader.site)] = reader.site
    for link in walk.links:
        if link.site is not None:
            found[id(link.site)] = link.site
    return list(found.values())


def _blockers(walk: Walk, solver: _Solver) -> list[Pin]:
    """Pins that keep a group which every reader could do without and that pruning left
    evidence in (a zero or constant channel, or all-zero weights reading it). Groups with no
    such evidence (ordinary live channels) are not worth reporting."""
    group_of, removable = solver.group_of, solver.removable
    removed = removable[group_of]
    needed = np.zeros(removable.size, dtype=bool)
    evidence = np.zeros(removable.size, dtype=bool)
    evidence[group_of[solver.known if solver.options.fold else solver.zero]] = True
    for reader in walk.readers:
        needed[group_of[reader.in_ids[solver.needed_columns(reader, removed)]]] = True
        evidence[group_of[reader.in_ids[~reader.nz.any(axis=0)]]] = True
    blocked = evidence & ~needed & ~removable
    found: dict[tuple[str, str, str], np.ndarray] = {}
    for pin in [*walk.pins, *solver.trims]:
        groups = np.unique(group_of[pin.ids])
        hit = groups[blocked[groups]]
        if hit.size:
            key = (pin.op_type, pin.node, pin.reason)
            found[key] = np.union1d(found.get(key, hit), hit)
    return [Pin(hit, *key) for key, hit in found.items()]
