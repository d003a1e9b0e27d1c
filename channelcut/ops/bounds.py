"""Bounds rules, one table keyed by op type: the interval [lo, hi] of each output channel.

A bounds rule runs after the node's channel rule has laid out its outputs and the walk has
marked what may be non-finite (so it never decides layouts, couplings or finiteness) and sets `lo`/`hi` on the output channels from the intervals of
the inputs (channelcut.ranges says what they mean). An op type with no entry gives unbounded
outputs, except where the channel rule knows a constant. Ops that only move values around
(FOLLOW) give each output channel the hull of the input channels its rule coupled it to.
The rules of other ops live in bounds_pointwise and bounds_weighted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.channels import ChannelInfo
from channelcut.graph import (attr_float, attr_int, attr_string, input_at,
                              padding_reaches_output)
from channelcut.ranges import settle, unbounded_past_float32, widen

Interval = tuple[np.ndarray, np.ndarray]  # (lo, hi), float64, one entry per channel/position
BOUNDS: dict[str, Callable[[ir.Node, Walk, ChannelInfo], Interval | None]] = {}
# ops whose outputs are sums over many inputs: no one interval for a value without channels
WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
log = logging.getLogger(__name__)


def bounds(*op_types: str):
    """Register a bounds rule: (node, walk, out) -> the interval of each channel of `out` (the
    first output's channels), or None for unbounded."""

    def register(fn):
        for op_type in op_types:
            BOUNDS[op_type] = fn
        return fn

    return register


def bound_outputs(node: ir.Node, walk: Walk, edges_before: int) -> None:
    """Set the intervals of the node's output channels and settle one-point ones."""
    infos = [(v, walk.infos.get(v)) for v in node.outputs if v is not None]
    if not any(info is not None for _, info in infos):
        _bound_untracked(node, walk)
        return
    source = walk.info(node.inputs[0]) if node.inputs and node.inputs[0] is not None else None
    input_bounds = (source.lo, source.hi) if source is not None else None
    try:
        if node.op_type in FOLLOW:
            computed = _followed(node, walk, infos, edges_before)
        elif (fn := BOUNDS.get(node.op_type)) is not None and infos[0][1] is not None:
            computed = {infos[0][0]: fn(node, walk, infos[0][1])}
        else:
            computed = {}
    except Exception as exc:  # noqa: BLE001 - a bounds bug must only lose the bounds
        log.warning("bounds of %s node %r failed (%s); unbounded",
                                            node.op_type, node.name, exc)
        computed = {}
    for value, info in infos:
        if info is None:
            continue
        interval = computed.get(value)
        if interval is not None:
            lo, hi = (np.broadcast_to(np.asarray(b, np.float64), (info.n,)).copy()
                      for b in interval)
            bad = ~(lo <= hi)  # NaN, or a rule that got it backwards: say nothing
            lo[bad], hi[bad] = -np.inf, np.inf
            info.lo, info.hi = lo, hi
        same_channels = input_bounds is not None and input_bounds[0].size == info.n
        settle(node, value, info, input_bounds if same_channels else None, walk.range_facts)


def _bound_untracked(node: ir.Node, walk: Walk) -> None:
    """A node whose output has no channels (it reads a graph input, say): one interval for
    every element of it, where the op is elementwise or only moves values; kept with the
    graph inputs' ranges, where readers look them up."""
    if not node.outputs or node.outputs[0] is None or node.outputs[0] in walk.nonfinite or \
            node.op_type not in FOLLOW and node.op_type not in BOUNDS or \
            node.op_type in WEIGHTED or _added_value(node, walk) is False:
        return
    one = ChannelInfo(axis=1, positions=np.zeros((1, 1), np.int64), base=0)
    try:
        if node.op_type in FOLLOW:
            lo, hi = _data_hull(node, walk)
            extra = _added_value(node, walk)
            if extra is not None:
                lo, hi = min(lo, extra), max(hi, extra)
            lo, hi = np.array([lo], np.float64), np.array([hi], np.float64)
            if node.op_type in AVERAGES:  # the others only move values: no rounding
                lo, hi = widen(lo, hi, np.abs(lo), terms=8, hi_magnitude=np.abs(hi))
        else:
            # an op with per-channel constants (BatchNormalization) gives one interval per
            # channel: every element lies in their hull (the first alone is too tight)
            with np.errstate(invalid="ignore"):
                lo, hi = (np.asarray(b, np.float64).reshape(-1)
                          for b in BOUNDS[node.op_type](node, walk, one))
                lo, hi = np.array([lo.min()]), np.array([hi.max()])
            lo[np.isnan(lo)], hi[np.isnan(hi)] = -np.inf, np.inf  # NaN: nothing known
    except Exception:  # noqa: BLE001 - then simply unbounded
        return
    if np.isfinite(lo[0]) or np.isfinite(hi[0]):
        walk.input_ranges[node.outputs[0]] = (lo, hi)


def _concat_across(node: ir.Node, walk: Walk, out: ChannelInfo,
                   edges: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float] | None:
    """A Concat along an axis other than the channels': the hull of the operands that no
    output channel is coupled to (constants, channels on another axis), which every output
    channel holds a piece of. None for a Concat along the channel axis (each output channel
    is one operand's) and for other ops."""
    if node.op_type != "Concat":
        return None
    rank = len(walk.dims(node.outputs[0]) or ())
    if rank and attr_int(node, "axis", 0) % rank == out.axis and out.span == 1:
        return None
    coupled = np.concatenate([np.concatenate([a, b]) for a, b in edges]) if edges else \
        np.zeros(0, np.int64)
    lo, hi = np.inf, -np.inf
    for value in node.inputs:
        info = walk.info(value)
        if info is not None and np.isin(info.ids, coupled).all():
            continue
        a, b = positions_range(walk, value, 0, 1)
        lo, hi = min(lo, float(a[0])), max(hi, float(b[0]))
    return None if lo > hi else (lo, hi)


def _data_hull(node: ir.Node, walk: Walk) -> tuple[float, float]:
    """The hull of every value the op's data inputs hold (all of Concat's, else the first)."""
    data = node.inputs if node.op_type == "Concat" else node.inputs[:1]
    lo, hi = np.inf, -np.inf
    for value in data:
        a, b = positions_range(walk, value, 0, 1)
        lo, hi = min(lo, float(a[0])), max(hi, float(b[0]))
    return (lo, hi) if lo <= hi else (-np.inf, np.inf)


# -- where input intervals come from -------------------------------------------------------

def positions_range(walk: Walk, value: ir.Value | None, axis: int, size: int) -> Interval:
    """Per position along `axis` (length `size`): the interval of the values there, from the
    value's channels, a declared input range, or a constant; unbounded otherwise."""
    unbounded = np.full(size, -np.inf), np.full(size, np.inf)
    if value is None:
        return unbounded
    info = walk.info(value)
    if info is not None:
        if info.axis != axis or info.size != size or info.span != 1:
            return _hull_everywhere(info.lo, info.hi, size)
        return info.by_position(info.lo), info.by_position(info.hi)
    if value in walk.input_ranges and value not in walk.nonfinite:
        lo, hi = walk.input_ranges[value]
        if lo.size == size and axis == 1:
            return lo.copy(), hi.copy()
        return _hull_everywhere(lo, hi, size)
    array = walk.const(value)
    if array is None or array.dtype.kind not in "fiub":
        return unbounded
    array = np.asarray(array, np.float64)
    if array.size == 0:
        return unbounded
    if array.ndim == 0 or axis >= array.ndim or array.shape[axis] != size:
        return _hull_everywhere(np.array([array.min()]), np.array([array.max()]), size)
    moved = np.moveaxis(array, axis, 0).reshape(size, -1)
    lo, hi = moved.min(axis=1), moved.max(axis=1)
    return unbounded_past_float32(np.where(np.isfinite(lo), lo, np.nan),
                                  np.where(np.isfinite(hi), hi, np.nan))


def _hull_everywhere(lo: np.ndarray, hi: np.ndarray, size: int) -> Interval:
    with np.errstate(all="ignore"):
        a, b = (float(lo.min()), float(hi.max())) if lo.size else (-np.inf, np.inf)
    return np.full(size, a), np.full(size, b)


def per_channel(out: ChannelInfo, lo_pos: np.ndarray, hi_pos: np.ndarray) -> Interval:
    """Per channel of `out`: the hull over the positions it owns."""
    return lo_pos[out.positions].min(axis=1), hi_pos[out.positions].max(axis=1)


def _times(w: np.ndarray | float, x: np.ndarray | float) -> np.ndarray:
    """w * x with 0 * inf = 0 either way round: the values are finite, only their bounds
    may be infinite."""
    with np.errstate(all="ignore"):
        return np.where((np.asarray(w) == 0) | (np.asarray(x) == 0), 0.0, np.multiply(w, x))


# -- follow: values only move -------------------------------------------------------------

FOLLOW = {"Identity", "Transpose", "Squeeze", "Unsqueeze", "Gather", "Reshape", "Flatten",
          "Expand", "Tile", "Concat", "Split", "Slice", "Dropout", "MaxPool", "GlobalMaxPool",
          "ReduceMax", "ReduceMin", "ReduceMean", "GlobalAveragePool", "AveragePool", "Resize",
          "Upsample", "Pad"}
# FOLLOW ops that compute a mean or a linear interpolation: rounding (monotone) may land an
# ulp outside the hull; the others only move or pick values
AVERAGES = frozenset({"ReduceMean", "GlobalAveragePool", "AveragePool", "Resize", "Upsample"})


def _followed(node: ir.Node, walk: Walk, infos: list[tuple[ir.Value, ChannelInfo | None]],
              edges_before: int) -> dict[ir.Value, Interval]:
    """out[c] lies in the hull of the input channels the rule coupled to it (a value moved,
    or a max, a mean or a linear interpolation of them), joined with what the op adds: the
    fill of a padding, zeros an average counts in."""
    extra = _added_value(node, walk)
    if extra is False:
        return {}
    sources = [walk.infos[v] for v in dict.fromkeys(node.inputs)
               if v is not None and v in walk.infos]
    if not sources:
        return {}
    in_ids = np.concatenate([s.ids for s in sources])
    in_lo = np.concatenate([s.lo for s in sources])
    in_hi = np.concatenate([s.hi for s in sources])
    order = np.argsort(in_ids)
    in_ids, in_lo, in_hi = in_ids[order], in_lo[order], in_hi[order]
    edges = walk._edges[edges_before:]
    result: dict[ir.Value, Interval] = {}
    for value, out in infos:
        if out is None:
            continue
        lo, hi = np.full(out.n, np.inf), np.full(out.n, -np.inf)
        for a, b in edges:
            for x, y in ((a, b), (b, a)):  # either side may be the output
                mine = (y >= out.base) & (y < out.base + out.n)
                where = np.searchsorted(in_ids, x[mine])
                where = np.minimum(where, in_ids.size - 1)
                hit = in_ids[where] == x[mine]
                rows = y[mine][hit] - out.base
                np.minimum.at(lo, rows, in_lo[where[hit]])
                np.maximum.at(hi, rows, in_hi[where[hit]])
        unmapped = lo > hi
        if unmapped.any():  # channels the rule made afresh: from any of the data inputs
            lo[unmapped], hi[unmapped] = _data_hull(node, walk)
        across = _concat_across(node, walk, out, edges)
        if across is not None:  # every channel also holds the operands not coupled to it
            lo, hi = np.minimum(lo, across[0]), np.maximum(hi, across[1])
        if extra is not None:
            lo, hi = np.minimum(lo, extra), np.maximum(hi, extra)
        if node.op_type in AVERAGES:
            lo, hi = widen(lo, hi, np.abs(lo), terms=8, hi_magnitude=np.abs(hi))
        result[value] = (lo, hi)
    return result


def _added_value(node: ir.Node, walk: Walk) -> float | None | bool:
    """A value the op writes besides its inputs' (a pad fill, zero padding an average counts),
    None when none, False when the output is not within the inputs' hull at all."""
    op = node.op_type
    if op == "Pad":
        if attr_string(node, "mode", "constant") != "constant":
            return None  # edge, reflect, wrap: copies of input values
        if len(node.inputs) > 1:
            fill = input_at(node, 2)
            array = walk.const(fill) if fill is not None else np.zeros(1)
            if array is None or np.asarray(array).size == 0:
                return 0.0 if array is not None else False
            return float(np.asarray(array, np.float64).reshape(-1)[0])
        return attr_float(node, "value", 0.0)
    if op == "AveragePool":
        pads = padding_reaches_output(node)
        return 0.0 if pads and attr_int(node, "count_include_pad", 0) else None
    if op == "Dropout":  # training mode scales what it keeps
        return None if input_at(node, 2) is None else False
    if op in ("Resize", "Upsample"):
        # cubic interpolation overshoots its inputs; nearest and linear stay within them
        if attr_string(node, "mode", "nearest") not in ("nearest", "linear"):
            return False
        if attr_string(node, "coordinate_transformation_mode", "") == "tf_crop_and_resize":
            return attr_float(node, "extrapolation_value", 0.0)  # written outside the box
        return None
    return None


# Importing the rule modules fills BOUNDS.
from channelcut.ops import bounds_pointwise, bounds_weighted  # noqa: E402,F401
