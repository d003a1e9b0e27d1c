"""Facts about every channel: its layout, its value, its couplings, and what it costs.

One walk in topological order asks each node's op rule (channelcut.ops.RULES) to describe it:
the channel layout of its outputs, the per-channel values they carry, which channels must share
one fate (couplings, solved by union-find into groups), which inputs it reads through weights
(readers), which operands an op could take back as constants (links), which rows a conv with
a border fold computes (computed rows, which may go while its output keeps them), which
channels it forces us to keep (pins), and what each channel costs in parameters and FLOPs.
`channelcut.solve` then decides; nothing here decides or rewrites.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from channelcut.channels import ChannelInfo, identity_positions
from channelcut.finite import bounded, track_nonfinite
from channelcut.graph import (cached_const, declared_sizes_fixed, partial_shape, release_pages,
                              static_shape)
from channelcut.ranges import RangeFact

log = logging.getLogger(__name__)


@dataclass
class Pin:
    """Channels that must stay, and who says so (an op, or a graph boundary)."""

    ids: np.ndarray
    op_type: str
    node: str
    reason: str


@dataclass(frozen=True)
class Cost:
    """Weight bytes and FLOPs (and, for latency, elements copied and ops added)."""

    weight_bytes: float = 0.0
    flops: float = 0.0
    moved: float = 0.0
    nodes: int = 0


@dataclass
class Site:
    """A node where the full cut may add something: a constant folded into a reader
    ("bias fold", or "border fold" for padded convs) or operands reinserted ("reinsert")."""

    node: ir.Node
    kind: str
    cost: Cost  # with every channel of the node's output kept
    # of cost.weight_bytes, the bytes per position along the output's channel axis (it has
    # `positions`): the cut writes them only for the positions it keeps, and its FLOPs and
    # copies scale likewise
    per_position: float = 0.0
    positions: int = 0


@dataclass
class Reader:
    """An op that reads channels through weights: row o of its output reads input channel c
    with a non-zero weight exactly when `nz[o, c]`. The input channel is ignored (removable as
    far as this reader cares) when it is zero, or when every kept row has a zero weight for it;
    with folding, also when it is a known constant that `site` can fold into the reader."""

    in_ids: np.ndarray  # (n_in,)
    row_ids: np.ndarray  # (n_out,)
    # (n_out, n_in) bool; or, when it is the outer product of (n_out,) and (n_in,) masks (the
    # pattern of whole zero rows and columns that structured pruning leaves), the two masks:
    # a byte per weight would be a quarter of a float32 model (channelcut.analysis.Walk.reader_ids)
    nz: np.ndarray | tuple[np.ndarray, np.ndarray]
    site: Site | None = None  # None: this reader cannot fold constants
    # (n_in,) bool: columns whose known constant folds without overflow; None: all of them
    foldable: np.ndarray | None = None
    # (n_out, n_in) bool: row o reads column c through a NaN or Inf weight; None: no row does.
    # While such a row is kept, a zero channel there is not ignored (NaN * 0 is NaN), nor is a
    # constant one folded.
    nonfinite_weights: np.ndarray | None = None
    _readers_per_column: np.ndarray | None = field(default=None, repr=False)

    def live_columns(self, removed_rows: np.ndarray) -> np.ndarray:
        """Input channels that some kept row reads with a non-zero weight.

        Counts per column are computed once; then only the smaller of the removed and the
        kept rows is read (the solver asks many times while rows go one by one).
        """
        if isinstance(self.nz, tuple):
            rows, columns = self.nz
            return columns & bool(np.any(rows & ~removed_rows))
        if self._readers_per_column is None:
            self._readers_per_column = self.nz.sum(axis=0, dtype=np.int32)
        n_removed = int(np.count_nonzero(removed_rows))
        if n_removed == 0:
            return self._readers_per_column > 0
        if 2 * n_removed <= removed_rows.size:
            lost = self.nz[removed_rows].sum(axis=0, dtype=np.int32)
            return self._readers_per_column > lost
        return self.nz[~removed_rows].any(axis=0)

    def dense_nz(self) -> np.ndarray:
        """The (n_out, n_in) non-zero pattern, expanded where it is kept as two masks."""
        if isinstance(self.nz, tuple):
            rows, columns = self.nz
            return np.outer(rows, columns)
        return self.nz

    def read_columns(self) -> np.ndarray:
        """Input channels that some row reads with a non-zero weight."""
        if isinstance(self.nz, tuple):
            rows, columns = self.nz
            return columns & bool(rows.any())
        return self.nz.any(axis=0)


@dataclass
class Link:
    """Operand channels of a broadcasting op, aligned with the output's channels.

    Without folding they are coupled. With folding, an operand channel may go while the output
    keeps it, when its value is a known constant: the rewrite reinserts the constant.
    """

    operand_ids: np.ndarray
    out_ids: np.ndarray
    site: Site | None  # None: always coupled


@dataclass
class ComputedRows:
    """The rows a conv with a border fold computes, before the fold's Add adds the border map:
    channel nodes of their own, one per output channel.

    With folding, a row the output keeps need not be computed when it is then its bias (every
    column it reads with a non-zero weight is zero, or a constant the fold takes): it goes from
    the conv and its bias is put back at the Add (`site`), as a cut of the cut model would put
    it back. A conv group whose rows and inputs all go is then dropped whole. Without that
    (zero-only, or the fold or reinsertion not allowed) each row shares its output's fate.
    """

    rows: ChannelInfo  # axis 1, one channel node per weight row
    out_ids: np.ndarray  # (rows,) the output channel of each row
    # what each row reads, as its conv group's Reader has it: (rows, cin/groups) input channel
    # ids, non-zero weights (or a NaN there), and whether a constant there folds
    columns: np.ndarray
    nz: np.ndarray
    foldable: np.ndarray
    bounded: np.ndarray  # (rows,) bool: the row's weights and bias make no NaN or Inf
    site: Site  # the reinsertion of rows the conv computes without
    fold: Site  # the border fold they rely on
    kernel: int  # weights per row and input channel
    itemsize: int
    has_bias: bool
    plane: float  # output elements per channel (what a row's FLOPs scale with)


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
    # the rows it computes (ComputedRows, their ids laid out as `rows`): where they may go
    # apart from the outputs, the conv groups balance those
    computed: ComputedRows | None = None


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
        self.links: list[Link] = []
        self.computed: dict[ir.Value, ComputedRows] = {}  # by the conv's output
        self._charges: list[tuple[np.ndarray, float, float]] = []  # (ids, bytes, flops) each
        # A border fold bakes the input's spatial size into a constant: only when it is fixed.
        self.spatial_fixed = declared_sizes_fixed(model.graph, first_axis=1)
        # A count of reduced values (a constant's sum) is the same for every input only when
        # every input's size is fixed, the batch too.
        self.sizes_fixed = declared_sizes_fixed(model.graph)
        self.unsupported: dict[str, list[str]] = {}
        # weighted layers whose weights are no constant, by what computes them (`computed_weights`)
        self.computed_weights: dict[str, int] = {}
        self.consts: dict[ir.Value, np.ndarray | None] = {}
        self._views: dict[ir.Value, ChannelInfo] = {}
        # outputs a barrier gave no channels: (the barrier node, why), for a reader that knows
        # their channel count from its weights (see `channels_after_barrier`)
        self._barrier_outputs: dict[ir.Value, tuple[ir.Node, str]] = {}
        self._shape_origins: dict[ir.Value, str] = {}
        # Values that may carry NaN or Inf (graph inputs are assumed finite), and per channel
        # node whether it is finite (ChannelInfo.finite, copied once its node is walked).
        self.nonfinite: set[ir.Value] = set()
        self._finite = np.ones(0, dtype=bool)
        self._bounded: dict[ir.Value, bool] = {}
        # values without channels that are bounded: graph inputs the user bounded ((lo, hi)
        # per channel on axis 1, or one pair), and what pointwise ops make of them (one pair)
        self.input_ranges: dict[ir.Value, tuple[np.ndarray, np.ndarray]] = {}
        self.range_facts: list[RangeFact] = []  # channels made constant by their interval

    # -- reading the graph ------------------------------------------------------------------
    def info(self, value: ir.Value | None) -> ChannelInfo | None:
        if value is None:
            return None
        return self._views.get(value) or self.infos.get(value)

    def hide_planes(self, node: ir.Node) -> None:
        """For a rule that does not understand planes: show it the node's inputs with only
        their zero channels known (until `show_planes`)."""
        for value in node.inputs:
            info = self.infos.get(value) if value is not None else None
            if info is not None and info.plane is not None:
                self._views[value] = info.without_plane()

    def show_planes(self) -> None:
        self._views.clear()

    def shape(self, value: ir.Value | None) -> tuple[int, ...] | None:
        return static_shape(value)

    def dims(self, value: ir.Value | None) -> tuple[int | None, ...] | None:
        """The shape with unknown dimensions None (after a custom op only ranks and channel
        counts may be known); None when the rank is unknown."""
        return partial_shape(value)

    def symbolic_dims(self, value: ir.Value | None) -> tuple[int | str | None, ...] | None:
        """The dims as they hold at every input size: ints, and the names of dims that vary
        with the inputs' dynamic dims (equal names, equal sizes; None: unknown); the shape
        itself when every input's size is fixed; None when not even the rank is known."""
        if self.sizes_fixed:
            return self.shape(value)
        return None if value is None else value.meta.get("symbolic_dims")

    def const(self, value: ir.Value | None) -> np.ndarray | None:
        """A constant's value (converted once: large weights are read by several rules)."""
        return cached_const(self.consts, value)

    # -- recording facts --------------------------------------------------------------------
    def new(self, value: ir.Value, axis: int, positions: np.ndarray | int,
            span: int = 1) -> ChannelInfo:
        """Give `value` fresh channels along `axis` (positions, or a count of 1-wide channels)."""
        if isinstance(positions, (int, np.integer)):
            positions = identity_positions(int(positions))
        info = ChannelInfo(axis=axis, positions=positions, base=self.n_nodes, span=span)
        self.n_nodes += info.n
        self.infos[value] = info
        return info

    def like(self, value: ir.Value, source: ChannelInfo, axis: int | None = None) -> ChannelInfo:
        """`value` carries `source`'s channels unchanged (out[c] <- in[c]), maybe on another axis."""
        info = self.new(value, source.axis if axis is None else axis, source.positions,
                        source.span)
        self.couple(source.ids, info.ids)
        info.set_values(source.known, source.const)
        return info

    def couple(self, a_ids: np.ndarray, b_ids: np.ndarray) -> None:
        """These channels share one fate: cut together or kept together."""
        self._edges.append(self._pairs(a_ids, b_ids, "coupling"))

    def align(self, a: ChannelInfo, b: ChannelInfo, node: ir.Node) -> np.ndarray | None:
        """For two tensors aligned position by position: the channel of `a` under each
        channel of `b`; None (and both pinned) unless each covers exactly the same positions."""
        if a.size == b.size:
            if a.positions.shape == b.positions.shape and np.array_equal(a.positions, b.positions):
                return np.arange(a.n)
            owner = a.channel_at_position()[b.positions[:, 0]]
            if a.block == b.block and np.array_equal(a.positions[owner], b.positions):
                return owner
        self.pin(a, node, "channel layouts of its inputs do not line up")
        self.pin(b, node, "channel layouts of its inputs do not line up")
        return None

    def couple_by_position(self, a: ChannelInfo, b: ChannelInfo, node: ir.Node) -> bool:
        """Couple the channels of two tensors aligned position by position along their axes."""
        owner = self.align(a, b, node)
        if owner is not None:
            self.couple(a.ids[owner], b.ids)
        return owner is not None

    def _ids(self, ids: np.ndarray, what: str) -> np.ndarray:
        """Channel node ids a rule records, checked: a rule bug must fail in its own rule
        (which walk_graph turns into a barrier), not later in the solver."""
        ids = np.asarray(ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_nodes):
            raise ValueError(f"{what} names channels that do not exist")
        return ids

    def _pairs(self, a_ids: np.ndarray, b_ids: np.ndarray, what: str
               ) -> tuple[np.ndarray, np.ndarray]:
        a_ids, b_ids = self._ids(a_ids, what), self._ids(b_ids, what)
        if a_ids.shape != b_ids.shape:
            raise ValueError(f"{what} pairs {a_ids.size} channels with {b_ids.size}")
        return a_ids, b_ids

    def pin(self, info: ChannelInfo, node: ir.Node | str, reason: str,
            channels: np.ndarray | None = None, name: str = "") -> None:
        """Keep these channels (all of `info`'s unless `channels` picks some); `node` is the op
        that needs them, or a label such as "graph output" (then `name` says which)."""
        ids = info.ids if channels is None else info.ids[channels]
        if isinstance(node, str):
            op_type = node
        else:
            op_type, name = node.op_type, node.name or ""
        self.pins.append(Pin(ids, op_type, name, reason))

    def barrier(self, node: ir.Node, reason: str) -> None:
        """The node reads every channel of every input it gets and says nothing of its outputs."""
        for value in [*node.inputs, *node.outputs]:
            info = self.info(value)
            if info is not None:
                self.pin(info, node, reason)
            elif value is not None and value in node.outputs:
                self._barrier_outputs.setdefault(value, (node, reason))

    def computed_weights_barrier(self, node: ir.Node, weights: ir.Value | None,
                                 reason: str) -> None:
        """A barrier for a weighted layer whose weights are no constant, counted by what
        computes them (an op type, "graph input" for weights fed at run time; an initializer
        listed as an input is the report's own note) for the report."""
        producer = weights.producer() if weights is not None else None
        if producer is not None:
            source = producer.op_type
        elif weights is not None and weights.is_graph_input() and weights.const_value is None:
            source = "graph input"
        else:
            source = ""
        if source:
            self.computed_weights[source] = self.computed_weights.get(source, 0) + 1
        self.barrier(node, reason)

    def channels_after_barrier(self, value: ir.Value, axis: int, n: int) -> ChannelInfo | None:
        """For a reader that knows from its weights that `value` has `n` channels on `axis`
        though the barrier that made it gave it none: channels, kept in the barrier's name
        (the reader's own output channels stay free), each one that may carry NaN or Inf when
        the value may. None unless a barrier made `value`."""
        if value not in self._barrier_outputs or self.info(value) is not None:
            return None
        node, reason = self._barrier_outputs[value]
        info = self.new(value, axis, n)
        if value in self.nonfinite:  # the barrier said so of the whole value
            info.mark_nonfinite()
            self.record_finite(info)
        self.pin(info, node, reason)
        return info

    def shape_origin(self, value: ir.Value | None) -> str | None:
        """Where the shape of `value` stopped being known: the first node on the way to it
        whose inputs all have static shapes but whose outputs do not (a custom op, a
        data-dependent size), or a graph input with dynamic dims; None when it is known."""
        if value is None or self.shape(value) is not None:
            return None
        if value in self._shape_origins:
            return self._shape_origins[value]
        producer = value.producer()
        if producer is None:
            return f"graph input {value.name!r}"
        return f"{producer.op_type} node {producer.name or value.name!r}"

    def note_shape_origins(self, node: ir.Node) -> None:
        """Once per node, in topological order: its outputs of unknown shape inherit the
        origin of an input's unknown shape, or have it here."""
        inherited = next((o for o in map(self.shape_origin, node.inputs) if o is not None),
                         None)
        for value in node.outputs:
            if self.shape(value) is None:
                self._shape_origins[value] = inherited or self.shape_origin(value)

    def reader(self, source: ChannelInfo, rows: ChannelInfo, nz: np.ndarray,
               site: Site | None = None, foldable: np.ndarray | None = None,
               nonfinite_weights: np.ndarray | None = None) -> None:
        """`rows` read `source`'s channels through weights with non-zero pattern `nz`."""
        self.reader_ids(source.ids, rows.ids, nz, site, foldable, nonfinite_weights)

    def reader_ids(self, in_ids: np.ndarray, row_ids: np.ndarray, nz: np.ndarray,
                   site: Site | None = None, foldable: np.ndarray | None = None,
                   nonfinite_weights: np.ndarray | None = None) -> None:
        in_ids, row_ids = self._ids(in_ids, "reader"), self._ids(row_ids, "reader")
        nz = np.asarray(nz, dtype=bool)
        if nz.shape != (row_ids.size, in_ids.size):
            raise ValueError(f"reader weights {nz.shape} do not match {row_ids.size} rows "
                             f"and {in_ids.size} inputs")
        nonfinite = ~self.finite_ids(in_ids)
        if nonfinite.any():  # 0 * NaN is NaN: every row reads such a channel, zero weight or not
            nz = nz | nonfinite[None, :]
        rows, columns = nz.any(axis=1), nz.any(axis=0)
        # nz lies inside the outer product of its rows and columns: equal when as many
        if np.count_nonzero(nz) == np.count_nonzero(rows) * np.count_nonzero(columns):
            nz = (rows, columns)
        self.readers.append(Reader(in_ids, row_ids, nz, site, foldable, nonfinite_weights))

    def finite_ids(self, ids: np.ndarray) -> np.ndarray:
        """Per channel node: is it finite (as far as the nodes walked so far say)?"""
        ids = np.asarray(ids, np.int64)
        finite = np.ones(ids.shape, dtype=bool)
        inside = ids < self._finite.size
        finite[inside] = self._finite[ids[inside]]
        return finite

    def bounded(self, value: ir.Value | None) -> bool:
        """Is `value` not a float constant holding a NaN, an Inf or a magnitude beyond HUGE?"""
        if value is None:
            return True
        if value not in self._bounded:
            self._bounded[value] = bounded(self.const(value))
        return self._bounded[value]

    def mark(self) -> tuple[int, int, int, int]:
        """How many couplings, readers, links and pins are recorded so far (what a node
        records comes after)."""
        return len(self._edges), len(self.readers), len(self.links), len(self.pins)

    def record_finite(self, info: ChannelInfo) -> None:
        """Copy the channels' finiteness where readers registered later look it up by id."""
        end = info.base + info.n
        if end > self._finite.size:
            grown = np.ones(max(end, 2 * self._finite.size), dtype=bool)
            grown[:self._finite.size] = self._finite
            self._finite = grown
        self._finite[info.base:end] = info.finite

    def link(self, operand_ids: np.ndarray, out_ids: np.ndarray, site: Site | None) -> None:
        """Operand channel `operand_ids[k]` lines up with output channel `out_ids[k]`."""
        self.links.append(Link(*self._pairs(operand_ids, out_ids, "link"), site))

    def charge(self, ids: np.ndarray, weight_bytes: float = 0.0, flops: float = 0.0) -> None:
        """Each of these channels carries this many weight bytes and FLOPs (saved if it goes)."""
        self._charges.append((self._ids(ids, "charge"), float(weight_bytes), float(flops)))

    def charges(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel node: (weight bytes, flops) it carries."""
        weight_bytes, flops = np.zeros(self.n_nodes), np.zeros(self.n_nodes)
        for ids, b, f in self._charges:
            np.add.at(weight_bytes, ids, b)
            np.add.at(flops, ids, f)
        return weight_bytes, flops

    def grouped_conv(self, columns: np.ndarray | None, rows: np.ndarray, node: ir.Node) -> None:
        rows = self._ids(rows, "grouped conv")
        if columns is not None:
            columns = self._ids(columns, "grouped conv")
            if rows.ndim != 2 or columns.ndim != 2 or columns.shape[0] != rows.shape[0]:
                raise ValueError("grouped conv rows and columns differ in groups")
        computed = self.computed.get(node.outputs[0])
        self.grouped.append(GroupedConv(columns, rows, node.op_type, node.name or "", computed))

    def computed_rows(self, node: ir.Node, readers: list[Reader], bounded: np.ndarray,
                      site: Site, fold: Site, kernel: int, itemsize: int, has_bias: bool
                      ) -> None:
        """The conv's rows as it computes them (see ComputedRows): fresh channel nodes, one
        per channel of its output, after the readers it registered."""
        out = self.infos[node.outputs[0]]
        rows = ChannelInfo(axis=1, positions=identity_positions(out.n), base=self.n_nodes)
        self.n_nodes += rows.n
        shape = static_shape(node.outputs[0])
        plane = float(np.prod(shape, dtype=np.float64)) / shape[1] if shape else 0.0
        per_group = out.n // len(readers)
        columns = np.repeat(np.stack([r.in_ids for r in readers]), per_group, axis=0)
        foldable = np.repeat(np.stack([np.ones(r.in_ids.size, bool) if r.foldable is None
                                       else r.foldable for r in readers]), per_group, axis=0)
        self.computed[node.outputs[0]] = ComputedRows(
            rows, out.ids, columns, np.concatenate([r.dense_nz() for r in readers]), foldable,
            np.asarray(bounded, bool), site, fold, kernel, itemsize, has_bias, plane)

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
    # every node points at its root, the smallest node of its component: number the roots
    is_root = parent == np.arange(n)
    return (np.cumsum(is_root) - 1)[parent]


def _extra_outputs_read(node: ir.Node, walk: Walk) -> None:
    """An output the rule gave no channels to (MaxPool indices, LayerNorm statistics, a
    Dropout mask) may still depend on the channel count: if anything reads it, or it is a
    graph output, the node reads every channel it gets."""
    if not node.outputs or walk.info(node.outputs[0]) is None:
        return  # nothing followed through this node: its rule already kept what it reads
    for value in node.outputs[1:]:
        if value is not None and walk.info(value) is None and \
                (value.uses() or value.is_graph_output()):
            walk.barrier(node, f"{node.op_type} output {value.name!r} depends on all channels")
            return


def _check_layouts(node: ir.Node, walk: Walk) -> None:
    """Each output's channels cover its channel axis exactly (where its shape is known): a
    rule that gets this wrong would mislead every rule downstream."""
    for value in node.outputs:
        info, shape = walk.infos.get(value), walk.shape(value)
        if info is None or shape is None:
            continue
        axes = shape[info.axis:info.axis + info.span] if 0 <= info.axis else ()
        if len(axes) != info.span or info.size != int(np.prod(axes, dtype=np.int64)):
            raise ValueError(f"{info.n} channels ({info.size} positions) do not cover output "
                             f"{value.name!r} of shape {list(shape)} along axis {info.axis}")


def _pin_varying_channel_axes(node: ir.Node, walk: Walk) -> None:
    """Where an input has dynamic dims, a channel axis of an output that shape inference from
    the declared inputs names after them (its size varies with the inputs' sizes) or cannot
    tell may hold other positions at other sizes than the analysed ones: its channels are
    kept, whatever the rule made of them (a rule that follows a computed size is meant to
    refuse such an axis itself; this catches the ones that do not)."""
    if walk.sizes_fixed:
        return
    for value in node.outputs:
        info, shape = walk.infos.get(value), walk.shape(value)
        dims = walk.symbolic_dims(value)
        if info is None or shape is None or dims is None or len(dims) != len(shape):
            continue
        varying = [d for d in dims[info.axis:info.axis + info.span] if not isinstance(d, int)]
        if varying:
            size = "unknown" if varying[0] is None else repr(varying[0])
            walk.pin(info, node, f"channel axis of {size} size at other input sizes than the "
                                 f"analysed ones")


def _name_shape_origin(node: ir.Node, walk: Walk, pins: list[Pin]) -> None:
    """A rule that kept channels while an input's shape was unknown most likely kept them for
    that: its reasons say which op upstream made the shape unknown (the op to look at)."""
    if not pins:
        return
    origin = next((o for o in map(walk.shape_origin, node.inputs) if o is not None), None)
    if origin is not None:
        for pin in pins:
            if (pin.op_type, pin.node) == (node.op_type, node.name or ""):  # not a barrier's
                pin.reason += f" (input shape unknown after {origin})"


def walk_graph(model: ir.Model,
               input_ranges: dict[ir.Value, tuple[np.ndarray, np.ndarray]] | None = None
               ) -> Walk:
    """Walk the graph once in topological order, asking each node's rule what it does (and
    its bounds rule what interval each output channel lies in, given `input_ranges`)."""
    from channelcut.flops import node_flops
    from channelcut.ops import RULES  # the rule modules import this one
    from channelcut.ops.bounds import bound_outputs

    walk = Walk(model)
    walk.input_ranges = dict(input_ranges or {})
    graph = model.graph
    for node in graph:
        rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        mark = walk.mark()
        if rule is None:
            walk.unsupported.setdefault(node.op_type, []).append(node.name or "")
            domain = f" in domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
            walk.barrier(node, f"no channel rule for {node.op_type}{domain}")
            walk.note_shape_origins(node)
            track_nonfinite(node, walk, mark)
            continue
        if not rule.spans and any(i is not None and i.span > 1
                                  for i in map(walk.info, node.inputs)):
            walk.barrier(node, f"{node.op_type} inside a channel shuffle")
            walk.note_shape_origins(node)
            track_nonfinite(node, walk, mark)
            continue
        if not rule.planes:
            walk.hide_planes(node)
        pins_before, edges_before = len(walk.pins), len(walk._edges)
        own = rule.own_constants
        try:
            rule.analyse(node, walk)
            _check_layouts(node, walk)
            _pin_varying_channel_axes(node, walk)
        except Exception as exc:  # a rule bug must not cut anything: keep what the node touches
            if os.environ.get("CHANNELCUT_STRICT"):
                raise
            log.warning("analysis of %s node %r failed (%s); its channels are kept",
                        node.op_type, node.name, exc)
            walk.barrier(node, f"analysis failed: {exc}")
            # what the rule said of its outputs cannot be trusted: downstream sees them as
            # after an op without a rule
            for value in node.outputs:
                walk.infos.pop(value, None)
                walk.computed.pop(value, None)
            own = False  # the rule may not have marked what its constants make
        walk.show_planes()
        _name_shape_origin(node, walk, walk.pins[pins_before:])
        walk.note_shape_origins(node)
        _extra_outputs_read(node, walk)
        track_nonfinite(node, walk, mark, own)
        bound_outputs(node, walk, edges_before)  # after the finiteness: NaN has no interval
        release_pages(node.inputs)  # the walk holds facts, not weights
        out = walk.info(node.outputs[0]) if node.outputs else None
        if out is not None and out.n:
            walk.charge(out.ids, flops=node_flops(node) / out.n)
    for value in graph.outputs:
        if (info := walk.info(value)) is not None:
            walk.pin(info, "graph output", f"output {value.name!r} keeps its shape",
                     name=value.name or "")
    for value, info in walk.infos.items():
        if any(use.node.graph is not graph for use in value.uses()):
            walk.pin(info, "subgraph", f"{value.name!r} is read inside a subgraph",
                     name=value.name or "")
    return walk
