"""Splits of a channel axis that are not channel shuffles: attention's heads, and packed
projections picked apart into q, k and v; and shape operands built at run time from `Shape`.

After `Reshape(B, S, H*D) -> (B, S, H, D)` a head is one channel of the H axis (its D source
channels coupled: the score and context MatMuls mix them), so whole heads go and the Reshape's
H shrinks. A packed projection unflattened to (3, E) keeps E's channels, with what each of q, k
and v holds (ChannelInfo.parts) for the Gather or Split that picks it.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.channels import ChannelInfo
from channelcut.cut import Rewrite
from channelcut.graph import attr_ints


def grid_readers_only(node: ir.Node, walk: Walk, axis: int, span: int) -> bool:
    """Does everything that reads the split keep its axes side by side (a channel shuffle:
    Transposes that keep them adjacent, Reshapes)? Then the split stays a grid of channels
    (`span` axes from `axis`); otherwise it is cut as heads (`split_channels`)."""
    rank = len(walk.shape(node.outputs[0]) or ())
    for use in node.outputs[0].uses():
        reader = use.node
        if reader.op_type == "Reshape":
            continue
        if reader.op_type != "Transpose":
            return False
        perm = attr_ints(reader, "perm") or list(reversed(range(rank)))
        lands = [perm.index(a) for a in range(axis, axis + span)]
        if max(lands) - min(lands) != span - 1:
            return False
    return True


# Ops that move axes around without reading values, between an unflatten and what picks it apart
_AXIS_MOVERS = frozenset({"Unsqueeze", "Squeeze", "Transpose"})


def parts_picked(value: ir.Value, depth: int = 4) -> bool:
    """Is `value` (or what Unsqueeze, Squeeze and Transpose make of it) picked apart by a
    Gather or Split? Then its first split axis holds parts (q, k, v), not heads."""
    for use in value.uses():
        reader = use.node
        if reader.op_type in ("Gather", "Split"):
            return True
        if reader.op_type in _AXIS_MOVERS and depth and parts_picked(reader.outputs[0],
                                                                       depth - 1):
            return True
    return False


def split_channels(walk: Walk, value: ir.Value, source: ChannelInfo, dims: tuple[int, ...],
                    axis: int, positions: np.ndarray, channel: int) -> None:
    """A channel axis split into `dims` that is not a channel shuffle: one channel per index
    of split axis `channel`, made of every source channel at that index. Heads: (..., H, D)
    with `channel` on H, so whole heads go and the Reshape's H shrinks (the D channels of a
    head are coupled: the score and context MatMuls mix them). A packed projection (3, E):
    `channel` on E, q, k and v of one column coupled. The other split axes are ordinary axes;
    with one before `channel` (the 3 of a fused qkv), what each of its slices holds is kept
    (ChannelInfo.parts) for the Gather or Split that picks q, k or v."""
    n, inner = dims[channel], math.prod(dims[channel + 1:])
    out = walk.new(value, axis + channel, n)
    owners = np.repeat(np.arange(source.n), positions.shape[1])
    slots = (positions.ravel() // inner) % n
    walk.couple(source.ids[owners], out.ids[slots])
    out.set_values(*_slot_values(source, owners, slots, n))
    finite = np.ones(n, bool)
    np.logical_and.at(finite, slots, source.finite[owners])
    out.mark_nonfinite(~finite)
    if channel == 1:
        parts = positions.ravel() // (inner * n)
        known = np.zeros((dims[0], n), bool)
        const = np.zeros((dims[0], n), np.float32)
        for part in range(dims[0]):
            at = parts == part
            known[part], const[part] = _slot_values(source, owners[at], slots[at], n)
        out.parts = (axis, known & out.finite, const)


def _slot_values(source: ChannelInfo, owners: np.ndarray, slots: np.ndarray, n: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per slot: known when every source channel `owners[i]` in it is known, and all equal."""
    known = np.ones(n, bool)
    np.logical_and.at(known, slots, source.known[owners])
    lo, hi = np.full(n, np.inf, np.float32), np.full(n, -np.inf, np.float32)
    np.minimum.at(lo, slots, source.const[owners])
    np.maximum.at(hi, slots, source.const[owners])
    known &= lo == hi
    return known, np.where(known, lo, 0).astype(np.float32)


def target_entries(value: ir.Value, walk: Walk | Rewrite) -> list[int | None] | None:
    """The entries of a shape operand (Reshape's, Expand's): a constant's, or those of a Concat
    of pieces, sizes computed at run time (from `Shape` of a tensor with a dynamic dim) being
    None. None when it is neither."""
    array = walk.const(value)
    if array is not None:
        return [int(x) for x in array.reshape(-1)]
    producer = value.producer()
    if producer is None or producer.op_type != "Concat":
        return None
    entries: list[int | None] = []
    for piece in producer.inputs:
        shape, array = walk.shape(piece), walk.const(piece)
        if shape is None or len(shape) != 1:
            return None
        entries += [None] * shape[0] if array is None else [int(x) for x in array.reshape(-1)]
    return entries


def set_target_entry(node: ir.Node, index: int, rw: Rewrite, axis: int, size: int) -> None:
    """Write `size` at entry `axis` of shape operand `index` of `node` (a constant, or the
    constant piece of the Concat that builds it: see `target_entries`)."""
    value = node.inputs[index]
    target = rw.const(value)
    if target is not None:
        target = target.copy()
        target[axis] = size
        rw.set_const(node, index, target)
        return
    concat = value.producer()
    if len(value.uses()) > 1 or value.is_graph_output():  # others read it: this node's own copy
        copy = rw.add_node(node, "Concat", list(concat.inputs), {"axis": 0})
        copy.shape, copy.type = value.shape, value.type
        node.replace_input_with(index, copy)
        concat = copy.producer()
    for k, piece in enumerate(concat.inputs):
        length = rw.shape(piece)[0]
        if axis < length:
            array = rw.const(piece).copy()
            array.reshape(-1)[axis] = size
            rw.set_const(concat, k, array)
            return
        axis -= length
