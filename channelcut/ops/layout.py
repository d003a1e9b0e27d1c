"""Ops that move data without computing: channels are renumbered, moved to another axis, cut into
pieces or joined, but each output channel is exactly one input channel (values carry over)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.channels import ChannelInfo, per_channel_constant
from channelcut.rewrite import Rewrite, delete_positions
from channelcut.graph import attr_int, attr_ints, input_at, opset_version, slice_range
from channelcut.ops import rule
from channelcut.ops.heads import (grid_readers_only, parts_picked, set_target_entry,
                                   computed_target_fixed, split_channels, target_entries)
from channelcut.symbolic_dims import Dims
from channelcut.ops.shuffle import is_grid, proven_shuffle, rewrite_as_gather, shuffle_chain


def _carry(walk: Walk, value: ir.Value, source: ChannelInfo, channels: np.ndarray,
           axis: int, positions: np.ndarray, span: int = 1) -> ChannelInfo:
    """`value` holds `channels` of `source` (in order) at `positions` along `axis`."""
    out = walk.new(value, axis, positions, span)
    walk.couple(source.ids[channels], out.ids)
    out.set_values(source.known[channels], source.const[channels])
    return out


def _axes_operand(node: ir.Node, walk: Walk) -> list[int] | None:
    """Squeeze's or Unsqueeze's axes: an input from opset 13, an attribute before; None if
    computed."""
    value = input_at(node, 1)
    if value is None:
        return attr_ints(node, "axes", [])
    array = walk.const(value)
    return None if array is None else [int(a) for a in array.reshape(-1)]


# -- Transpose, Squeeze, Unsqueeze, Gather off the channel axis ------------------------------

@rule("Transpose", spans=True)
def analyse_transpose(node: ir.Node, walk: Walk) -> None:
    """out[c] <- in[c]; the channel axis moves to where `perm` puts it. Channels spread over
    several axes (a shuffle) get their flat positions reordered like those axes."""
    source, shape = walk.info(node.inputs[0]), walk.dims(node.inputs[0])  # the rank suffices
    if source is None:
        return
    if shape is None or (source.span > 1 and walk.shape(node.inputs[0]) is None):
        walk.barrier(node, "Transpose shape unknown")
        return
    perm = attr_ints(node, "perm") or list(reversed(range(len(shape))))
    axes = list(range(source.axis, source.axis + source.span))
    lands = [perm.index(a) for a in axes]
    if max(lands) - min(lands) != len(lands) - 1:
        walk.barrier(node, "Transpose separates the axes a channel lies on")
        return
    if source.span == 1:
        out = walk.like(node.outputs[0], source, axis=lands[0])
        if source.parts is not None:
            out.parts = (perm.index(source.parts[0]), *source.parts[1:])
        return
    dims = np.array([shape[a] for a in axes])
    order = np.argsort(lands)  # input span axes in output order
    index = np.unravel_index(source.positions, dims)
    positions = np.ravel_multi_index(tuple(index[k] for k in order), dims[order])
    _carry(walk, node.outputs[0], source, np.arange(source.n), min(lands), positions,
           span=source.span)


@rule("Squeeze", "Unsqueeze")
def analyse_squeeze(node: ir.Node, walk: Walk) -> None:
    """out[c] <- in[c]; the channel axis moves to where the output keeps the input's axes:
    left past each axis Squeeze removes before it, right past each one Unsqueeze inserts."""
    source = walk.info(node.inputs[0])
    if source is None:
        return
    squeeze = node.op_type == "Squeeze"
    # the axes index the input of Squeeze, the output of Unsqueeze
    shape = walk.shape(node.inputs[0] if squeeze else node.outputs[0])
    axes = _axes_operand(node, walk)
    if axes is None or shape is None:
        walk.barrier(node, f"{node.op_type} axes unknown")
        return
    named = {a % len(shape) for a in axes}
    if squeeze and not named:  # no axes: every axis of size 1
        dims = walk.symbolic_dims(node.inputs[0])
        if dims is None or not all(isinstance(d, int) for d in dims):
            # a dynamic dim of size 1 at the analysed size goes there and stays at another
            walk.barrier(node, "Squeeze without axes of a tensor with dynamic dims")
            return
        named = {i for i, d in enumerate(shape) if d == 1}
    kept = [j for j in range(len(shape)) if j not in named]
    # input axis -> output axis
    lands = {j: i for i, j in enumerate(kept)} if squeeze else dict(enumerate(kept))
    if source.axis not in lands:
        walk.barrier(node, "Squeeze removes the channel axis")
        return
    out = walk.like(node.outputs[0], source, axis=lands[source.axis])
    if source.parts is not None and source.parts[0] in lands:
        out.parts = (lands[source.parts[0]], *source.parts[1:])


@rule("Gather")
def analyse_gather(node: ir.Node, walk: Walk) -> None:
    """out[c] <- in[c] when gathering along another axis; the channel axis shifts by rank(indices)-1."""
    source, shape = walk.info(node.inputs[0]), walk.shape(node.inputs[0])
    indices_shape = walk.shape(node.inputs[1])
    if source is None:
        return
    if shape is None or indices_shape is None:
        walk.barrier(node, "Gather shapes unknown")
        return
    axis = attr_int(node, "axis", 0) % len(shape)
    if axis == source.axis:
        walk.barrier(node, "Gather along the channel axis")
        return
    shift = len(indices_shape) - 1 if source.axis > axis else 0
    out = walk.like(node.outputs[0], source, axis=source.axis + shift)
    index = walk.const(node.inputs[1])
    if source.parts is not None and source.parts[0] == axis and index is not None \
            and index.size == 1:  # one of q, k, v: what is known of that part
        _, known, const = source.parts
        part = int(index.reshape(-1)[0]) % known.shape[0]
        out.set_values(known[part] & out.finite, const[part])


# -- Reshape and Flatten ------------------------------------------------------------------

def reshape_layout(source: ChannelInfo, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                   literal: bool = False, dims: tuple[Dims, Dims] | None = None
                   ) -> tuple[int, np.ndarray, int] | None:
    """Where a reshape puts each channel: (output axis, positions, span), or None.

    With `outer` elements before the channel axes and `inner` after them, position p owns flat
    slab [p*inner, (p+1)*inner) of each outer row. The output axes [j, j+span) must see the
    same outer rows, and each channel must cover whole output positions. A span > 1 splits a
    plain channel axis over several axes, as a channel shuffle does. The outer (or inner) dims
    must match one for one, so the mapping holds for any batch size, not just the analysed one;
    with a `literal` target (no 0 or -1: every run has the analysed sizes) dims of 1 may come
    or go ((S, 1, H, D) -> (S, H*D), torch's attention with a batch of one). `dims`: the input's
    and output's dims as they hold at every input size (`Walk.symbolic_dims`); with them, the
    mapping must hold at every size too (`_at_every_size`).
    """
    a, s = source.axis, source.span
    outer, inner = math.prod(in_shape[:a]), math.prod(in_shape[a + s:])
    max_span = 1 if source.span > 1 or source.block > 1 else len(out_shape)
    for j in range(len(out_shape)):
        if math.prod(out_shape[:j]) != outer:
            continue
        for span in range(1, min(max_span, len(out_shape) - j) + 1):
            inner_out = math.prod(out_shape[j + span:])
            if math.prod(out_shape[j:j + span]) * inner_out != source.size * inner:
                continue
            if not _same_dims(in_shape[:a], out_shape[:j], literal) and \
                    not _same_dims(in_shape[a + s:], out_shape[j + span:], literal):
                continue
            if dims is not None and not _at_every_size(dims, a, s, j, span):
                continue
            positions = _regroup(source, inner, inner_out)
            if positions is not None:
                return j, positions, span
    return None


def _at_every_size(dims: tuple[Dims, Dims], a: int, s: int, j: int, span: int) -> bool:
    """Do input axes [a, a+s) land on output axes [j, j+span) whatever the size of the
    inputs' dynamic dims? The mapping found at the analysed sizes depends on two products: the
    dims before the channels (the outer rows) and the ratio of the dims after them on either
    side. Both stay what they were at every size when the same dynamic dims (by name, as often
    each) come before the channels on both sides, and the same after them. A dynamic batch
    merged into the channels, (N, C, H, W) -> (N*C, H, W), fails: at a batch of N channel c
    is at positions c, C + c, ... of the merged axis, not at position c alone."""
    (in_dims, out_dims) = dims
    if None in in_dims or None in out_dims or _names(in_dims[a:a + s]):
        return False  # an unknown dim is the same as no other
    return _names(in_dims[:a]) == _names(out_dims[:j]) and \
        _names(in_dims[a + s:]) == _names(out_dims[j + span:])


def _names(dims: Dims) -> Counter[str]:
    """The dynamic dims among `dims`, each as often as it occurs."""
    return Counter(d for d in dims if isinstance(d, str))


def _same_dims(a: tuple[int, ...], b: tuple[int, ...], ignore_ones: bool) -> bool:
    if ignore_ones:
        return [d for d in a if d != 1] == [d for d in b if d != 1]
    return list(a) == list(b)


def map_reshape(source: ChannelInfo, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
                ) -> tuple[int, np.ndarray] | None:
    """`reshape_layout` when the channels land on a single output axis, else None."""
    layout = reshape_layout(source, in_shape, out_shape)
    return None if layout is None or layout[2] != 1 else layout[:2]


def _regroup(source: ChannelInfo, inner: int, inner_out: int) -> np.ndarray | None:
    """Channel positions when each position's slab of `inner` elements becomes slabs of
    `inner_out`; None when a channel would share an output position with another."""
    if inner_out and inner % inner_out == 0:  # each input position becomes r output ones
        r = inner // inner_out
        spread = source.positions[:, :, None] * r + np.arange(r)
        return spread.reshape(source.n, -1)
    if inner and inner_out % inner == 0:  # r input positions merge into one output one
        r = inner_out // inner
        if source.block % r:
            return None
        runs = np.sort(source.positions, axis=1).reshape(source.n, -1, r)
        aligned = (runs[:, :, 0] % r == 0) & np.all(runs == runs[:, :, :1] + np.arange(r), -1)
        return runs[:, :, 0] // r if aligned.all() else None
    return None


@rule("Reshape", "Flatten")
def analyse_reshape(node: ir.Node, walk: Walk) -> None:
    """out[c] <- in[c]: channel c keeps its data, now a block of positions on the output axis."""
    source = walk.info(node.inputs[0])
    if source is None:
        return
    in_shape, out_shape = walk.shape(node.inputs[0]), walk.shape(node.outputs[0])
    computed = node.op_type == "Reshape" and walk.const(node.inputs[1]) is None
    if computed and target_entries(node.inputs[1], walk) is None:
        walk.barrier(node, "Reshape to a computed shape")
        return
    if node.op_type == "Flatten" and (in_shape is None or out_shape is None):
        in_shape, out_shape = _flatten_shapes(node, walk, source)
    if in_shape is None or out_shape is None:
        walk.barrier(node, f"{node.op_type} shapes unknown")
        return
    target = walk.const(node.inputs[1]) if node.op_type == "Reshape" else None
    literal = target is not None and bool(np.all(target > 0))
    dims = None  # with every input's size fixed, the shapes are all there is
    if not walk.sizes_fixed:
        dims = walk.symbolic_dims(node.inputs[0]), walk.symbolic_dims(node.outputs[0])
        if dims[0] is None or dims[1] is None or \
                (len(dims[0]), len(dims[1])) != (len(in_shape), len(out_shape)):
            walk.barrier(node, f"{node.op_type} shapes at other input sizes unknown")
            return
    mapped = reshape_layout(source, in_shape, out_shape, literal, dims)
    if mapped is None:
        at_these_sizes = dims is not None and \
            reshape_layout(source, in_shape, out_shape, literal) is not None
        walk.barrier(node, f"{node.op_type} mixes the channel axis with a dynamic dim (the "
                           f"channels stay apart at the analysed sizes only)" if at_these_sizes
                     else f"{node.op_type} splits or mixes the channel axis")
        return
    axis, positions, span = mapped
    while span > 1 and out_shape[axis] == 1:  # a leading axis of 1 holds nothing apart
        axis, span = axis + 1, span - 1
    if computed and not computed_target_fixed(node, walk, axis, span):
        walk.barrier(node, "Reshape to a computed shape whose sizes from the channel axis on "
                           "are not all constants")
        return
    if span > 1 and not grid_readers_only(node, walk, axis, span):
        dims = out_shape[axis:axis + span]
        # an unpacked projection, (..., 3, E) picked apart into q, k, v, keeps E's channels;
        # else the split is (..., H, D), heads
        channel = len(dims) - (1 if len(dims) == 2 and parts_picked(node.outputs[0]) else 2)
        split_channels(walk, node.outputs[0], source, dims, axis, positions, channel)
        return
    out = _carry(walk, node.outputs[0], source, np.arange(source.n), axis, positions, span)
    if span > 1 and not (axis == source.axis and span == len(out_shape) - len(in_shape) + 1
                         and proven_shuffle(node, walk, axis) is not None):
        # (a proven shuffle leaves each channel on its own: the rewrite turns a cut that is
        # not a grid into a Gather, channelcut.ops.shuffle)
        # Split into dims (d0, ..., dk): channels that share the last index go together, so
        # what is kept is still a grid (d0, ..., dk - removed) and a shuffle stays exact.
        last = out_shape[axis + span - 1]
        owner = out.channel_at_position()
        members = out.ids[owner].reshape(-1, last)  # row-major: one row per leading index
        walk.couple(np.broadcast_to(members[:1], members.shape).ravel(), members.ravel())


def _flatten_shapes(node: ir.Node, walk: Walk, source: ChannelInfo
                    ) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """Flatten's shapes when only dims before the channel axis and before `axis` are unknown
    (a batch after a custom op): they only multiply the outer rows, which reshape_layout
    requires to match one for one anyway, so 1 stands for each."""
    dims = walk.dims(node.inputs[0])
    if dims is None:
        return None, None
    axis = attr_int(node, "axis", 1)
    axis += len(dims) if axis < 0 else 0  # -r..r: r flattens everything into the outer dim
    lead = min(axis, source.axis)
    if any(d is None for d in dims[lead:]):
        return None, None
    in_shape = tuple(1 if d is None else d for d in dims)
    return in_shape, (math.prod(in_shape[:axis]), math.prod(in_shape[axis:]))


def rewrite_reshape(node: ir.Node, rw: Rewrite) -> None:
    """Shrink the channel axis entry of the target shape (unless it is -1, inferred); when the
    channels span several axes, the last of them loses the removed columns."""
    deleted = rw.deleted(node.outputs[0])
    if node.op_type != "Reshape" or deleted.size == 0:
        return
    out = rw.info(node.outputs[0])
    shape = rw.shape(node.outputs[0])
    if out.span > 1 and not is_grid(deleted, shape[out.axis:out.axis + out.span]):
        # only a proven shuffle leaves its channels uncoupled by column (analyse_reshape)
        shuffle = shuffle_chain(node, rw, out.axis)
        if shuffle is None:
            raise ValueError("a cut that is not a grid through a Reshape that is no shuffle")
        rewrite_as_gather(shuffle, rw)
        return
    axis = out.axis + out.span - 1
    rows = math.prod(shape[out.axis:axis])  # the grid's other dims keep their size
    if target_entries(node.inputs[1], rw)[axis] != -1:
        set_target_entry(node, 1, rw, axis, shape[axis] - deleted.size // rows)


rule("Reshape", "Flatten", rewrite=rewrite_reshape, spans=True)(analyse_reshape)


# -- Expand and Tile over other axes ---------------------------------------------------------

@rule("Expand", "Tile")
def analyse_expand(node: ir.Node, walk: Walk) -> None:
    """out[c] <- in[c], repeated over the other axes; Expand may prepend axes (shapes align
    from the right), so the channel axis shifts by the ranks' difference."""
    source = walk.info(node.inputs[0])
    if source is None:
        return
    shape, out_shape = walk.shape(node.inputs[0]), walk.shape(node.outputs[0])
    entries = target_entries(node.inputs[1], walk) if node.op_type == "Expand" else \
        (None if walk.const(node.inputs[1]) is None else [])
    if shape is None or out_shape is None or entries is None:
        walk.barrier(node, f"{node.op_type} to a computed shape")
        return
    axis = source.axis + len(out_shape) - len(shape)
    at = axis - (len(out_shape) - len(entries))
    if node.op_type == "Expand" and 0 <= at < len(entries) and entries[at] is None:
        # a computed size on the channel axis could broadcast it at another size
        walk.barrier(node, "Expand to a computed shape on the channel axis")
        return
    if out_shape[axis] != shape[source.axis]:
        walk.barrier(node, f"{node.op_type} repeats the channel axis")
        return
    walk.like(node.outputs[0], source, axis=axis)


def rewrite_expand(node: ir.Node, rw: Rewrite) -> None:
    """Expand's target shape names the channel count where it is not 1 (broadcast): shrink it.
    Tile's repeats are 1 on the channel axis and stay."""
    deleted = rw.deleted(node.outputs[0])
    if node.op_type != "Expand" or deleted.size == 0:
        return
    target = target_entries(node.inputs[1], rw)
    axis = rw.info(node.outputs[0]).axis - (len(rw.shape(node.outputs[0])) - len(target))
    if axis >= 0 and target[axis] != 1:
        set_target_entry(node, 1, rw, axis, target[axis] - deleted.size)


rule("Expand", "Tile", rewrite=rewrite_expand)(analyse_expand)


# -- Concat -------------------------------------------------------------------------------

def analyse_concat(node: ir.Node, walk: Walk) -> None:
    """Along the channel axis: out[offset_k + c] <- in_k[c]. Along another axis: out[c] <- in_k[c]
    for every k (one group per channel across all inputs)."""
    infos = [walk.info(v) for v in node.inputs]
    shapes = [walk.shape(v) for v in node.inputs]
    if all(i is None for i in infos):
        return
    if any(s is None for s in shapes):
        walk.barrier(node, "Concat shapes unknown")
        return
    axis = attr_int(node, "axis", 0) % len(shapes[0])
    # Operands may hold their channels on different axes (one came through a Transpose, a
    # MatMul or a Squeeze): the output follows the operands whose channels are on the concat
    # axis if there are any, else those on the first operand's axis; every other operand is
    # read whole, as is the output's share of it.
    along = [i for i in infos if i is not None and i.axis == axis]
    if along:
        # their channel blocks may differ (one came through a Flatten of a map): the output
        # takes the first block that every operand's size divides, the operands with another
        # block are read whole; as when they are not tracked at all, so that a cut model (where
        # a reinsertion made such an operand untracked) cuts no more than its original
        block = next((i.block for i in along if all(s[axis] % i.block == 0 for s in shapes)),
                     along[0].block)
        _concat_channels(node, walk, infos, shapes, axis, block)
    else:
        _concat_other_axis(node, walk, infos, next(i for i in infos if i is not None))


def _concat_channels(node: ir.Node, walk: Walk, infos: list[ChannelInfo | None],
                     shapes: list[tuple[int, ...]], axis: int, block: int) -> None:
    fresh_parts: list[tuple[int, int]] = []  # channel ranges that come from untracked inputs
    positions, offset, n = [], 0, 0
    for info, shape in zip(infos, shapes):
        size = shape[axis]
        if info is None or info.axis != axis or info.block != block:
            if info is not None:
                walk.pin(info, node, "Concat input channels do not line up")
            if size % block:
                walk.barrier(node, "Concat of inputs with different channel blocks")
                return
            fresh_parts.append((n, n + size // block))
            positions.append(np.arange(size).reshape(-1, block) + offset)
            n += size // block
        else:
            positions.append(info.positions + offset)
            n += info.n
        offset += size
    out = walk.new(node.outputs[0], axis, np.concatenate(positions))
    known, const, start = [], [], 0
    for info, shape in zip(infos, shapes):
        tracked = info is not None and info.axis == axis and info.block == block
        count = info.n if tracked else shape[axis] // block
        if tracked:
            walk.couple(info.ids, out.ids[start:start + count])
            known.append(info.known)
            const.append(info.const)
        else:
            known.append(np.zeros(count, bool))
            const.append(np.zeros(count, np.float32))
        start += count
    out.set_values(np.concatenate(known), np.concatenate(const))
    for lo, hi in fresh_parts:
        walk.pin(out, node, "Concat input whose channels cannot be cut", np.arange(lo, hi))


def _concat_other_axis(node: ir.Node, walk: Walk, infos: list[ChannelInfo | None],
                       carrier: ChannelInfo) -> None:
    out = walk.like(node.outputs[0], carrier)
    same = np.ones(out.n, bool)
    for value, info in zip(node.inputs, infos):
        if info is carrier:
            continue
        if info is not None and info.axis == carrier.axis:
            if walk.couple_by_position(info, out, node):
                same &= (info.known == out.known) & (info.const == out.const)
                continue
        array = walk.const(value)
        if info is None and array is not None and array.shape[carrier.axis] == out.size:
            # a constant part: sliced along the channel axis when channels go
            known, const = per_channel_constant(array, carrier.axis, out.positions)
            same &= known & (const == out.const)
            continue
        if info is not None:  # its channels lie on another axis: the output reads them all
            walk.pin(info, node, "Concat input channels do not line up")
        walk.pin(out, node, "Concat input whose channels cannot be cut")
        same &= False
    out.set_values(out.known & same, out.const)


def rewrite_concat(node: ir.Node, rw: Rewrite) -> None:
    """Slice constant inputs along the channel axis when concatenating along another axis."""
    out = rw.info(node.outputs[0])
    deleted = rw.deleted(node.outputs[0])
    axis = attr_int(node, "axis", 0) % len(rw.shape(node.outputs[0]))
    if out is None or deleted.size == 0 or out.axis == axis:
        return
    for index, value in enumerate(node.inputs):
        array = rw.const(value)
        if array is not None and array.shape[out.axis] == out.size:
            rw.set_const(node, index, delete_positions(array, {out.axis: deleted}))


rule("Concat", rewrite=rewrite_concat)(analyse_concat)


# -- Split and Slice ----------------------------------------------------------------------

def _split_sizes(node: ir.Node, walk: Walk | Rewrite) -> list[int] | None:
    sizes = [walk.shape(v) for v in node.outputs]
    if any(s is None for s in sizes):
        return None
    axis = attr_int(node, "axis", 0) % len(sizes[0])
    return [s[axis] for s in sizes]


def analyse_split(node: ir.Node, walk: Walk) -> None:
    """Along the channel axis: out_k[c] <- in[start_k + c], each channel in one piece.
    Along another axis: out_k[c] <- in[c] for every piece."""
    source, shape = walk.info(node.inputs[0]), walk.shape(node.inputs[0])
    if source is None:
        return
    sizes = _split_sizes(node, walk)
    if shape is None or sizes is None:
        walk.barrier(node, "Split sizes unknown")
        return
    axis = attr_int(node, "axis", 0) % len(shape)
    if source.axis != axis:
        start = 0
        for value, size in zip(node.outputs, sizes):
            out = walk.like(value, source)
            if source.parts is not None and source.parts[0] == axis:  # q, k or v of a qkv
                known = source.parts[1][start:start + size]
                const = source.parts[2][start:start + size]
                same = known.all(axis=0) & (const == const[:1]).all(axis=0)
                out.set_values(same & out.finite, const[0])
            start += size
        return
    starts = np.concatenate([[0], np.cumsum(sizes)])
    piece = np.searchsorted(starts, source.positions, side="right") - 1
    if np.any(piece.min(axis=1) != piece.max(axis=1)):
        walk.barrier(node, "Split cuts through a channel")
        return
    for k, value in enumerate(node.outputs):
        channels = np.flatnonzero(piece[:, 0] == k)
        _carry(walk, value, source, channels, axis, source.positions[channels] - starts[k])


def rewrite_split(node: ir.Node, rw: Rewrite) -> None:
    """New piece sizes: each piece loses the positions cut from it."""
    source = rw.info(node.inputs[0])
    if source is None:
        return
    axis = attr_int(node, "axis", 0) % len(rw.shape(node.inputs[0]))
    deleted = [rw.deleted(v).size for v in node.outputs]
    if source.axis != axis or not any(deleted):
        return
    sizes = np.array(_split_sizes(node, rw), dtype=np.int64) - np.array(deleted)
    if opset_version(rw.model) >= 13:
        if "num_outputs" in node.attributes:
            del node.attributes["num_outputs"]
        rw.set_const(node, 1, sizes)
    else:
        rw.set_attr_ints(node, "split", [int(s) for s in sizes])


rule("Split", rewrite=rewrite_split)(analyse_split)


def _slice_params(node: ir.Node, walk: Walk | Rewrite, rank: int
                  ) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """(starts, ends, axes, steps) from inputs (opset 10+) or attributes; None if computed."""
    if len(node.inputs) > 1:
        arrays = [walk.const(input_at(node, i)) for i in range(1, 5)]
        if any(arrays[i] is None and input_at(node, i + 1) is not None for i in range(4)) \
                or arrays[0] is None or arrays[1] is None:
            return None
        starts, ends = [int(x) for x in arrays[0]], [int(x) for x in arrays[1]]
        axes = list(range(len(starts))) if arrays[2] is None else [int(x) for x in arrays[2]]
        steps = [1] * len(starts) if arrays[3] is None else [int(x) for x in arrays[3]]
    else:
        starts, ends = attr_ints(node, "starts", []), attr_ints(node, "ends", [])
        axes = attr_ints(node, "axes") or list(range(len(starts)))
        steps = [1] * len(starts)
    return starts, ends, [a % rank for a in axes], steps


def _clamped_range(start: int, end: int, size: int) -> tuple[int, int]:
    """The first index a step-1 Slice takes and the one after its last (`slice_range`)."""
    taken = slice_range(start, end, 1, size)
    return taken.start, taken.stop


def analyse_slice(node: ir.Node, walk: Walk) -> None:
    """On the channel axis (step 1): out[c] <- in[start + c] for the channels inside the range;
    channels outside it are not read. On other axes: out[c] <- in[c]."""
    source, shape = walk.info(node.inputs[0]), walk.shape(node.inputs[0])
    if source is None:
        return
    params = None if shape is None else _slice_params(node, walk, len(shape))
    if params is None:
        walk.barrier(node, "Slice parameters are computed")
        return
    starts, ends, axes, steps = params
    if source.axis not in axes:
        walk.like(node.outputs[0], source)
        return
    i = axes.index(source.axis)
    if steps[i] != 1:
        walk.barrier(node, "Slice with a step along the channel axis")
        return
    lo, hi = _clamped_range(starts[i], ends[i], shape[source.axis])
    inside = (source.positions >= lo) & (source.positions < hi)
    if np.any(inside.any(axis=1) != inside.all(axis=1)):
        walk.barrier(node, "Slice cuts through a channel")
        return
    channels = np.flatnonzero(inside[:, 0])
    _carry(walk, node.outputs[0], source, channels, source.axis, source.positions[channels] - lo)


def rewrite_slice(node: ir.Node, rw: Rewrite) -> None:
    """Move the range's ends left by the number of positions cut before them."""
    source = rw.info(node.inputs[0])
    deleted = rw.deleted(node.inputs[0])
    if source is None or deleted.size == 0:
        return
    shape = rw.shape(node.inputs[0])
    starts, ends, axes, _ = _slice_params(node, rw, len(shape))
    if source.axis not in axes:
        return
    i = axes.index(source.axis)
    lo, hi = _clamped_range(starts[i], ends[i], shape[source.axis])
    starts[i] = lo - int(np.sum(deleted < lo))
    ends[i] = hi - int(np.sum(deleted < hi))
    if len(node.inputs) > 1:
        dtype = rw.const(node.inputs[1]).dtype
        rw.set_const(node, 1, np.array(starts, dtype=dtype))
        rw.set_const(node, 2, np.array(ends, dtype=dtype))
    else:
        rw.set_attr_ints(node, "starts", starts)
        rw.set_attr_ints(node, "ends", ends)


rule("Slice", rewrite=rewrite_slice)(analyse_slice)
