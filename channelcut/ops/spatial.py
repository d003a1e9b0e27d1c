"""Ops that work within each channel over other axes: out[c] <- g(in[c]).

Pooling, resizing, padding and reductions over non-channel axes. A zero channel stays zero
when g(0) = 0; a constant channel stays constant when g keeps constants (max pooling, nearest
or linear resize, averages that do not count padding).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from channelcut.analysis import Walk
from channelcut.channels import ChannelInfo
from channelcut.rewrite import Rewrite
from channelcut.graph import (attr_float, attr_int, attr_ints, attr_string, input_at, opset_version,
                              padding_reaches_output, reduction_axes)
from channelcut.ops import rule
from channelcut.ops.elementwise import transparent
from channelcut.ops.heads import computed_entry_is_dim, set_target_entry, target_entries

log = logging.getLogger(__name__)


def _zero_only(x: np.ndarray) -> np.ndarray:
    """Only a zero channel is known afterwards (NaN marks the others unknown)."""
    return np.where(x == 0, 0, np.nan)


def _keeps_channel_axis(node: ir.Node, walk: Walk) -> bool:
    """Is the channel axis as long in the output as in the input (other dims may be
    unknown: a size computed from another tensor's)?"""
    source = walk.info(node.inputs[0])
    in_dims, out_dims = walk.dims(node.inputs[0]), walk.dims(node.outputs[0])
    if in_dims is None or out_dims is None or len(in_dims) != len(out_dims):
        return False
    axes = range(source.axis, source.axis + source.span)
    return all(in_dims[a] is not None and in_dims[a] == out_dims[a] for a in axes)


@rule("MaxPool", "GlobalMaxPool", "LpPool", "GlobalLpPool")
def analyse_pool(node: ir.Node, walk: Walk) -> None:
    """out[c] <- pool(in[c]) over space: constants stay unless padding is averaged in, and an
    Lp pool keeps only zeros (a window of v's has the norm |v| k^(1/p), not v).

    An average that counts zero padding turns a constant v into v times a map (the same
    average of a plane of ones): the channel stays known, with that map as its plane, where
    the input size is fixed. A global average of v times a plane is v times its mean.
    """
    source = walk.info(node.inputs[0])
    if source is None:
        return
    if source.axis != 1:
        walk.barrier(node, "channels are not on axis 1")
        return
    op = node.op_type
    if op in ("LpPool", "GlobalLpPool"):  # the norm of a window of v's is no v: only 0 stays
        transparent(node, walk, _zero_only, nan_unknown=True)
        return
    if op == "GlobalAveragePool":
        out = transparent(node, walk, lambda x: x)
        if source.plane is not None:
            out.set_values(source.known, source.const * np.float32(source.plane.mean()))
        return
    pads = padding_reaches_output(node)
    averages_padding = op == "AveragePool" and pads and attr_int(node, "count_include_pad", 0)
    if op != "AveragePool" or (source.plane is None and not averages_padding):
        transparent(node, walk, lambda x: x)  # max, or an average of constants alone
        return
    plane = _pooled_plane(node, walk, source)
    out = transparent(node, walk, (lambda x: x) if plane is not None else _zero_only,
                      nan_unknown=True)
    out.plane = plane


def _pooled_plane(node: ir.Node, walk: Walk, source: ChannelInfo) -> np.ndarray | None:
    """The pool applied to the input's plane (ones if it has none), or None when the input
    size is not fixed or the pool cannot be evaluated here."""
    shape = walk.shape(node.inputs[0])
    if not walk.spatial_fixed or shape is None:
        return None
    plane = np.ones(shape[2:], np.float32) if source.plane is None else source.plane
    try:
        proto = ir.serde.serialize_node(node)
        pooled = ReferenceEvaluator(proto, opsets={"": opset_version(walk.model)}).run(
            None, {node.inputs[0].name: plane[None, None].astype(np.float32)})[0]
    except Exception as exc:  # noqa: BLE001 - then only zero channels stay known
        log.debug("no plane for %s node %r: %s", node.op_type, node.name, exc)
        return None
    return np.asarray(pooled[0, 0], np.float32)


rule("GlobalAveragePool", "AveragePool", planes=True)(analyse_pool)


def _channel_axis_kept_at_every_size(node: ir.Node, walk: Walk) -> bool:
    """Does a Resize keep the channel axis's size whatever the input sizes, not only at the
    analysed ones? Constant scales and sizes keep what they keep there; a computed `sizes`
    must hold, on the channel axis, a constant or the input's own channel dim (traced back to
    the `Shape` it comes from: `interpolate(x, size=...)` writes `Concat(Shape(x)[:2],
    size)`); computed scales say nothing."""
    if node.op_type == "Upsample" or opset_version(walk.model) < 11:
        scales, sizes = input_at(node, 1), None
    else:
        scales, sizes = input_at(node, 2), input_at(node, 3)
    if scales is not None and walk.const(scales) is None:
        return False
    if sizes is None or walk.const(sizes) is not None:
        return True
    source, dims = walk.info(node.inputs[0]), walk.dims(node.inputs[0])
    entries = target_entries(sizes, walk)
    if source.span != 1 or entries is None or dims is None:
        return False
    at = _sizes_entry(node, len(dims), source.axis)
    if at is None:
        return True
    return at < len(entries) and (entries[at] is not None or computed_entry_is_dim(
        sizes, at, (node.inputs[0], source.axis), walk))


@rule("Resize", "Upsample")
def analyse_resize(node: ir.Node, walk: Walk) -> None:
    """out[c] <- resize(in[c]) when the channel axis keeps its size (at every input size)."""
    if walk.info(node.inputs[0]) is None:
        return
    if not _keeps_channel_axis(node, walk):
        walk.barrier(node, "Resize changes the channel axis")
        return
    if not _channel_axis_kept_at_every_size(node, walk):
        walk.barrier(node, "Resize to a computed size that may change the channel axis")
        return
    keeps = (lambda x: x) if attr_string(node, "mode", "nearest") in ("nearest", "linear") \
        else _zero_only
    if attr_string(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        if not _roi_spans_the_channel_axis(node, walk):
            walk.barrier(node, "Resize crops along the channel axis (tf_crop_and_resize)")
            return
        fill = np.float32(attr_float(node, "extrapolation_value", 0.0))
        transparent(node, walk, lambda x: np.where(x == fill, keeps(x), np.nan), nan_unknown=True)
        return
    transparent(node, walk, keeps)


def _roi_spans_the_channel_axis(node: ir.Node, walk: Walk) -> bool:
    """Does a tf_crop_and_resize's constant `roi` take the whole channel axis, from 0 to 1
    (out[c] <- in[c]; any other box samples channels between channels)? Its points outside
    the box, on other axes, are the extrapolation value, which `analyse_resize` keeps only
    where a channel's constant is that value."""
    roi = walk.const(input_at(node, 1)) if input_at(node, 1) is not None else None
    source, dims = walk.info(node.inputs[0]), walk.dims(node.inputs[0])
    if roi is None or dims is None:
        return False
    axes = [a % len(dims) for a in attr_ints(node, "axes", [])] or list(range(len(dims)))
    roi = np.asarray(roi, np.float64).reshape(-1)
    if roi.size != 2 * len(axes):
        return False
    for axis in range(source.axis, source.axis + source.span):
        if axis in axes and (roi[axes.index(axis)] != 0 or roi[len(axes) + axes.index(axis)] != 1):
            return False
    return True


def _sizes_entry(node: ir.Node, rank: int, axis: int) -> int | None:
    """Which entry of a Resize's `sizes` is for `axis` (its `axes` attribute lists the axes
    the entries are for; by default all); None when the sizes leave the axis out."""
    axes = [a % rank for a in attr_ints(node, "axes", [])] or list(range(rank))
    return axes.index(axis) if axis in axes else None


def rewrite_resize(node: ir.Node, rw: Rewrite) -> None:
    """Explicit output `sizes` include the channel count where they cover the channel axis:
    shrink it (a constant, or the constant piece of a Concat-built `sizes`; a computed entry
    is the input's own count, `_channel_axis_kept_at_every_size`)."""
    deleted = rw.deleted(node.outputs[0])
    sizes = input_at(node, 3) if node.op_type == "Resize" else None
    if deleted.size == 0 or sizes is None:
        return
    entries = target_entries(sizes, rw)
    if not entries:
        return
    shape = node.outputs[0].shape  # the rank (the H and W may be unknown)
    if shape is None:
        return
    at = _sizes_entry(node, len(shape), rw.info(node.outputs[0]).axis)
    if at is not None and at < len(entries) and entries[at] is not None:
        set_target_entry(node, 3, rw, at, entries[at] - deleted.size)


rule("Resize", "Upsample", rewrite=rewrite_resize)(analyse_resize)


@rule("Pad")
def analyse_pad(node: ir.Node, walk: Walk) -> None:
    """out[c] <- pad(in[c]) over non-channel axes; a constant survives padding with itself."""
    source, shape = walk.info(node.inputs[0]), walk.shape(node.inputs[0])
    if source is None:
        return
    if len(node.inputs) > 1:
        pads, axes = walk.const(input_at(node, 1)), input_at(node, 3)
        value_input = input_at(node, 2)
        fill = walk.const(value_input) if value_input is not None else np.zeros(1)
    else:
        pads, axes = np.array(attr_ints(node, "pads", []) or []), None
        fill = np.array([attr_float(node, "value", 0.0)])
    if pads is None or fill is None or shape is None:
        walk.barrier(node, "Pad amounts are computed")
        return
    rank = len(shape)
    axis_list = list(range(rank)) if axes is None else \
        [int(a) % rank for a in (walk.const(axes) if walk.const(axes) is not None else [])]
    if axes is not None and walk.const(axes) is None:
        walk.barrier(node, "Pad axes are computed")
        return
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    k = len(axis_list)
    constant = attr_string(node, "mode", "constant") == "constant"
    fill_value = np.float32(np.asarray(fill).reshape(-1)[0]) if np.asarray(fill).size else 0
    if source.axis in axis_list:
        i = axis_list.index(source.axis)
        if pads[i] or pads[i + k]:
            _pad_channels(node, walk, source, pads[i], pads[i + k], constant, fill_value,
                          spatial=any(p for j, p in enumerate(pads) if j % k != i))
            return
    if not constant or not any(pads):
        transparent(node, walk, lambda x: x)
        return
    transparent(node, walk, lambda x: np.where(x == fill_value, x, np.nan), nan_unknown=True)


def _pad_channels(node: ir.Node, walk: Walk, source: ChannelInfo, before: int, after: int,
                  constant: bool, fill: np.float32, spatial: bool) -> None:
    """out[c + before] <- in[c]; the channels padded before and after are the fill, kept (the
    Pad makes them whatever is cut): a reinsertion's Pad, put back by a cut, is seen through
    by a cut of the cut model. Other modes (copies of input channels), crops and channels in
    blocks are barriers."""
    if not constant or before < 0 or after < 0 or source.block != 1:
        walk.barrier(node, "Pad adds channels")
        return
    added = np.concatenate([np.arange(before), source.size + before + np.arange(after)])
    positions = np.concatenate([source.positions + before, added[:, None]])
    out = walk.new(node.outputs[0], source.axis, positions)
    walk.couple(source.ids, out.ids[:source.n])
    known, const = source.known.copy(), source.const.copy()
    if spatial:  # a constant survives the other axes' padding only when it is the fill
        known &= const == fill
    out.set_values(np.concatenate([known, np.ones(added.size, bool)]),
                   np.concatenate([const, np.full(added.size, fill, np.float32)]))
    walk.pin(out, node, "channels a Pad adds", np.arange(source.n, out.n))


# Reductions whose value of `count` copies of v does not depend on `count` (for a v of 0, every
# one but ReduceLogSumExp: 0 stays 0, and log(0) is -inf at any count).
_COUNT_FREE = frozenset({"ReduceMean", "ReduceMax", "ReduceMin"})
_REDUCE_CONSTANT = {  # op -> value of the reduction of `count` copies of v
    "ReduceMean": lambda v, count: v,
    "ReduceMax": lambda v, count: v,
    "ReduceMin": lambda v, count: v,
    "ReduceSum": lambda v, count: v * count,
    "ReduceSumSquare": lambda v, count: v * v * count,
    "ReduceL1": lambda v, count: np.abs(v) * count,
    "ReduceL2": lambda v, count: np.abs(v) * np.sqrt(np.float32(count)),
    "ReduceProd": lambda v, count: np.where(v == 0, 0, np.nan),
    "ReduceLogSum": lambda v, count: np.log(v * count),
    "ReduceLogSumExp": lambda v, count: v + np.log(np.float32(count)),
}


def analyse_reduce(node: ir.Node, walk: Walk) -> None:
    """out[c] <- reduce(in[c]) over non-channel axes; a reduction over channels is a barrier.
    A constant's sum (ReduceSum, L1, L2, SumSquare, LogSum, LogSumExp) depends on how many
    values are reduced: known only where every graph input has a fixed size, else only a
    zero's (which is the same at any count)."""
    source, shape = walk.info(node.inputs[0]), walk.shape(node.inputs[0])
    if source is None:
        return
    axes = None if shape is None else reduction_axes(node, walk.const, len(shape))
    if axes is None:
        walk.barrier(node, "reduction axes are computed")
        return
    if not axes:  # noop_with_empty_axes
        transparent(node, walk, lambda x: x)
        return
    if source.axis in axes:
        walk.barrier(node, f"{node.op_type} over the channel axis")
        return
    count = math.prod(shape[a] for a in axes)
    out_axis = source.axis if attr_int(node, "keepdims", 1) else \
        source.axis - sum(a < source.axis for a in axes)
    reduce = _REDUCE_CONSTANT[node.op_type]
    out = walk.like(node.outputs[0], source, axis=out_axis)
    with np.errstate(all="ignore"):
        const = np.asarray(reduce(source.const, count), dtype=np.float32)
    # ReduceProd marks what it cannot tell with NaN; another NaN is the channel's value
    sentinel = np.isnan(const) if node.op_type == "ReduceProd" else False
    known = source.known & ~sentinel
    if not walk.sizes_fixed and node.op_type not in _COUNT_FREE:
        # the count is that of the assumed sizes (a dynamic batch reduced, or a size derived
        # from one): a sum of v's is known only where it is the same at any count
        known &= (source.const == 0) & (node.op_type != "ReduceLogSumExp")
    out.set_values(known, const)


for _op in _REDUCE_CONSTANT:
    rule(_op)(analyse_reduce)
