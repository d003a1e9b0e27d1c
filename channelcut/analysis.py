"""Facts about every channel: its layout, its value, its couplings, and whether it can go.

One walk in topological order asks each node's op rule (channelcut.ops.RULES) to describe it:
the channel layout of its outputs, the per-channel values they carry, which channels must share
one fate (couplings, solved by union-find into groups), which inputs it reads through weights
(readers), and which channels it forces us to keep (pins). Then `solve` finds the largest set of
groups whose removal cannot change any output. Nothing here rewrites the model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from channelcut.channels import ChannelInfo, identity_positions
from channelcut.graph import const_array, static_shape

log = logging.getLogger(__name__)


@dataclass
class Pin:
    """Channels that must stay, and who says so (an op, or a graph boundary)."""

    ids: np.ndarray
    op_type: str
    node: str
    reason: str


@dataclass
class Reader:
    """An op that reads channels through weights: row o of its output reads input channel c
    with a non-zero weight exactly when `nz[o, c]`. The input channel is ignored (removable as
    far as this reader cares) when it is zero, or when every kept row has a zero weight for it."""

    in_ids: np.ndarray  # (n_in,)
    row_ids: np.ndarray  # (n_out,)
    nz: np.ndarray  # (n_out, n_in) bool


@dataclass
class GroupedConv:
    """A grouped conv's channels, one row per conv group (node ids; inputs by position).

    After the cut every remaining conv group must keep the same number of input channels and
    of output channels; a conv group whose inputs and outputs all go is dropped whole.
    """

    columns: np.ndarray | None  # (groups, cin/groups), None when the input is not tracked
    rows: np.ndarray  # (groups, cout/groups)
    op_type: str
    node: str


class Walk:
    """What op rules see and record while the graph is walked once in topological order."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.infos: dict[ir.Value, ChannelInfo] = {}
        self.n_nodes = 0
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.pins: list[Pin] = []
        self.readers: list[Reader] = []
        self.grouped: list[GroupedConv] = []
        self.unsupported: dict[str, list[str]] = {}
        self.consts: dict[ir.Value, np.ndarray | None] = {}

    # -- reading the graph ------------------------------------------------------------------
    def info(self, value: ir.Value | None) -> ChannelInfo | None:
        return None if value is None else self.infos.get(value)

    def shape(self, value: ir.Value | None) -> tuple[int, ...] | None:
        return static_shape(value)

    def const(self, value: ir.Value | None) -> np.ndarray | None:
        """A constant's value (converted once: large weights are read by several rules)."""
        if value is None:
            return None
        if value not in self.consts:
            self.consts[value] = const_array(value)
        return self.consts[value]

    # -- recording facts --------------------------------------------------------------------
    def new(self, value: ir.Value, axis: int, positions: np.ndarray | int) -> ChannelInfo:
        """Give `value` fresh channels along `axis` (positions, or a count of 1-wide channels)."""
        if isinstance(positions, (int, np.integer)):
            positions = identity_positions(int(positions))
        info = ChannelInfo(axis=axis, positions=positions, base=self.n_nodes)
        self.n_nodes += info.n
        self.infos[value] = info
        return info

    def like(self, value: ir.Value, source: ChannelInfo, axis: int | None = None) -> ChannelInfo:
        """`value` carries `source`'s channels unchanged (out[c] <- in[c]), maybe on another axis."""
        info = self.new(value, source.axis if axis is None else axis, source.positions)
        self.couple(source.ids, info.ids)
        info.set_values(source.known, source.const)
        return info

    def couple(self, a_ids: np.ndarray, b_ids: np.ndarray) -> None:
        """These channels share one fate: cut together or kept together."""
        self._edges.append((np.asarray(a_ids, np.int64), np.asarray(b_ids, np.int64)))

    def couple_by_position(self, a: ChannelInfo, b: ChannelInfo, node: ir.Node) -> bool:
        """Couple the channels of two tensors aligned position by position along their axes.

        Works when every channel of `b` covers exactly the positions of one channel of `a`;
        otherwise both are pinned and False is returned.
        """
        if a.size == b.size:
            if a.positions.shape == b.positions.shape and np.array_equal(a.positions, b.positions):
                self.couple(a.ids, b.ids)
                return True
            owner = a.channel_at_position()[b.positions[:, 0]]
            if a.block == b.block and np.array_equal(a.positions[owner], b.positions):
                self.couple(a.ids[owner], b.ids)
                return True
        self.pin(a, node, "channel layouts of its inputs do not line up")
        self.pin(b, node, "channel layouts of its inputs do not line up")
        return False

    def pin(self, info: ChannelInfo, node: ir.Node | str, reason: str,
            channels: np.ndarray | None = None) -> None:
        """Keep these channels (all of `info`'s unless `channels` picks some)."""
        ids = info.ids if channels is None else info.ids[channels]
        if isinstance(node, str):
            op_type, name = node, ""
        else:
            op_type, name = node.op_type, node.name or ""
        self.pins.append(Pin(ids, op_type, name, reason))

    def barrier(self, node: ir.Node, reason: str) -> None:
        """The node reads every channel of every input it gets and says nothing of its outputs."""
        for value in [*node.inputs, *node.outputs]:
            info = self.info(value)
            if info is not None:
                self.pin(info, node, reason)

    def reader(self, source: ChannelInfo, rows: ChannelInfo, nz: np.ndarray) -> None:
        """`rows` read `source`'s channels through weights with non-zero pattern `nz`."""
        self.reader_ids(source.ids, rows.ids, nz)

    def reader_ids(self, in_ids: np.ndarray, row_ids: np.ndarray, nz: np.ndarray) -> None:
        self.readers.append(Reader(in_ids, row_ids, np.asarray(nz, dtype=bool)))

    def grouped_conv(self, columns: np.ndarray | None, rows: np.ndarray, node: ir.Node) -> None:
        self.grouped.append(GroupedConv(columns, rows, node.op_type, node.name or ""))

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._edges:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return (np.concatenate([a for a, _ in self._edges]),
                np.concatenate([b for _, b in self._edges]))


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Label of each of `n` nodes after joining every pair (a[i], b[i]); labels are 0..k-1.

    Vectorised union-find: hook each edge's larger root under its smaller one, then jump
    pointers to the roots, until no edge joins two different roots.
    """
    parent = np.arange(n, dtype=np.int64)
    while True:
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        lo = np.minimum(ra[differ], rb[differ])
        hi = np.maximum(ra[differ], rb[differ])
        np.minimum.at(parent, hi, lo)
    _, labels = np.unique(parent, return_inverse=True)
    return labels.astype(np.int64)


@dataclass
class Analysis:
    """The facts the rewrite consumes: channel layouts, groups, and which groups go."""

    model: ir.Model
    infos: dict[ir.Value, ChannelInfo]
    group_of: np.ndarray  # node id -> group
    removable: np.ndarray  # group -> bool
    blockers: list[Pin] = field(default_factory=list)
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    consts: dict[ir.Value, np.ndarray | None] = field(default_factory=dict)  # converted once

    def removed(self, value: ir.Value) -> np.ndarray:
        """Per channel of `value`: is it cut? (all False for a value without channels)."""
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


def _nodes_with_zero(infos: Iterable[ChannelInfo], n: int) -> np.ndarray:
    zero = np.zeros(n, dtype=bool)
    for info in infos:
        zero[info.base:info.base + info.n] = info.zero
    return zero


def _live_columns(reader: Reader, removed_node: np.ndarray) -> np.ndarray:
    """Input channels that some kept output row reads with a non-zero weight."""
    kept_rows = ~removed_node[reader.row_ids]
    return reader.nz[kept_rows].any(axis=0)


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


def solve(walk: Walk) -> Analysis:
    """The largest set of groups whose removal leaves every remaining value unchanged.

    Start from every group that nothing pins and drop groups until all checks hold (a greatest
    fixed point): every reader ignores the removed channels it reads, given the rows it keeps;
    grouped convs lose whole groups or the same number of channels per group; no tensor loses
    all its channels.
    Dropping a group only ever adds kept rows, so the loop ends.
    """
    a, b = walk.edges()
    group_of = connected_components(walk.n_nodes, a, b)
    n_groups = int(group_of.max()) + 1 if walk.n_nodes else 0
    zero = _nodes_with_zero(walk.infos.values(), walk.n_nodes)
    removable = np.ones(n_groups, dtype=bool)
    for pin in walk.pins:
        removable[group_of[pin.ids]] = False
    extra_pins: list[Pin] = []

    def drop(groups: np.ndarray) -> bool:
        groups = groups[removable[groups]]
        if groups.size == 0:
            return False
        removable[groups] = False
        return True

    changed = True
    while changed:
        changed = False
        removed_node = removable[group_of]
        for reader in walk.readers:
            needed = _live_columns(reader, removed_node) & ~zero[reader.in_ids]
            changed |= drop(group_of[reader.in_ids[needed]])
        removed_node = removable[group_of]
        for conv in walk.grouped:
            trimmed = _unbalanced(conv, removed_node)
            if trimmed.size and drop(group_of[trimmed]):
                changed = True
                extra_pins.append(Pin(trimmed, conv.op_type, conv.node,
                                      "grouped Conv: every group must keep as many channels"))
        removed_node = removable[group_of]
        for info in walk.infos.values():
            if info.n and removed_node[info.base:info.base + info.n].all():
                changed |= drop(group_of[info.base:info.base + 1])

    blockers = _blockers(walk, group_of, removable, zero, extra_pins)
    return Analysis(walk.model, walk.infos, group_of, removable, blockers, walk.unsupported,
                    walk.consts)


def _blockers(walk: Walk, group_of: np.ndarray, removable: np.ndarray, zero: np.ndarray,
              extra_pins: list[Pin]) -> list[Pin]:
    """Pins that keep a group which every reader ignores and that pruning left evidence in.

    Evidence: a zero channel, or a reader whose weights for the channel are all zero. Groups
    with no such evidence (ordinary live channels) are not worth reporting.
    """
    n_groups = removable.size
    removed_node = removable[group_of]
    needed = np.zeros(n_groups, dtype=bool)
    evidence = np.zeros(n_groups, dtype=bool)
    evidence[group_of[zero]] = True
    for reader in walk.readers:
        live = _live_columns(reader, removed_node)
        needed[group_of[reader.in_ids[live & ~zero[reader.in_ids]]]] = True
        evidence[group_of[reader.in_ids[~reader.nz.any(axis=0)]]] = True
    blocked = evidence & ~needed & ~removable
    found: list[Pin] = []
    for pin in [*walk.pins, *extra_pins]:
        groups = np.unique(group_of[pin.ids])
        hit = groups[blocked[groups]]
        if hit.size:
            found.append(Pin(hit, pin.op_type, pin.node, pin.reason))
    return found


def analyse(model: ir.Model) -> Analysis:
    """Walk the graph once in topological order, asking each node's rule, then solve."""
    from channelcut.ops import RULES  # the rule modules import this one

    walk = Walk(model)
    graph = model.graph
    for node in graph:
        rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is None:
            walk.unsupported.setdefault(node.op_type, []).append(node.name or "")
            walk.barrier(node, f"no channel rule for {node.op_type}")
            continue
        try:
            rule.analyse(node, walk)
        except Exception as exc:  # a rule bug must not cut anything: keep what the node touches
            if os.environ.get("CHANNELCUT_STRICT"):
                raise
            log.warning("analysis of %s node %r failed (%s); its channels are kept",
                        node.op_type, node.name, exc)
            walk.barrier(node, f"analysis failed: {exc}")
    for value in graph.outputs:
        if (info := walk.info(value)) is not None:
            walk.pin(info, "graph output", f"output {value.name!r} keeps its shape")
    for value, info in walk.infos.items():
        if any(use.node.graph is not graph for use in value.uses()):
            walk.pin(info, "subgraph", f"{value.name!r} is read inside a subgraph")
    return solve(walk)
