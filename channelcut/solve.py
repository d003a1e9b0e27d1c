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

from channelcut.analysis import Cost, Pin, Site, Walk, connected_components
from channelcut.channels import ChannelInfo
from channelcut.costs import MOVED_ELEMENT, NODE_OVERHEAD, OBJECTIVES, SITE_KINDS  # noqa: F401
from channelcut.graph import static_shape
from channelcut.options import Options, metric, pays  # noqa: F401 - pays: part of this API
from channelcut.propagate import Solver

_NOTHING = np.zeros(0, dtype=np.int64)
_NOTHING.flags.writeable = False


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
    # weighted layers whose weights are no constant, by what computes them (Walk's)
    computed_weights: dict[str, int] = field(default_factory=dict)
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


def _group_savings(solver: Solver, weight_bytes: np.ndarray, flops: np.ndarray
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
        solver = Solver(walk, options, allowed)
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
            margins[key] = (metric(saved, options.objective, options)
                            - metric(cost, options.objective, options))
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
                    units=_units(solver), computed_weights=walk.computed_weights)


def _units(solver: Solver) -> np.ndarray:
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


def _surely_refused(solver: Solver, sites: dict[int, Site], refused: set[int],
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
    if site.kind == "reinsert":
        info = walk.infos.get(site.node.outputs[0])
        return info is not None and \
            options.writes_reinsertion(static_shape(site.node.outputs[0]), info.axis)
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


def _blockers(walk: Walk, solver: Solver) -> list[Pin]:
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
