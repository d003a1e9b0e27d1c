"""Splits of a channel axis that are not channel shuffles: attention's heads, and packed
projections picked apart into q, k and v; and shape operands built at run time from `Shape`.

After `Reshape(B, S, H*D) -> (B, S, H, D)` a head is one channel of the H axis (its D source
channels coupled: the score and context MatMuls mix them), so whole heads go and the Reshape's
H shrinks. A packed projection unflattened to (3, E) keeps E's channels, with what each of q, k
and v holds (ChannelInfo.parts) for the Gather or Split that picks it.

A target computed at run time (`Concat` of sizes from `Shape` and constants, as exporters write
`(*x.shape[:-1], H, D)` for a dynamic sequence length) is followed only where the layout cannot
change with the sizes: the dims it holds are traced back to where they come from
(`root_dim`), so that "this size is the reshaped tensor's own dim" is proven, not assumed.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.channels import ChannelInfo
from channelcut.rewrite import Rewrite
from channelcut.graph import attr_int, attr_ints, slice_range


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


# -- which run-time sizes a computed shape operand holds -------------------------------------

Dim = tuple[ir.Value, int]  # axis `k` of tensor `value`, at run time
# Ops whose output has the shape of their first input
_SAME_SHAPE = frozenset({"Relu", "Sigmoid", "Tanh", "Gelu", "Erf", "Neg", "Sqrt", "Reciprocal",
                         "Exp", "Cast", "Identity", "Softmax", "LayerNormalization", "Dropout",
                         "SimplifiedLayerNormalization"})
_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where"})


def shape_dims(value: ir.Value, walk: Walk, depth: int = 6) -> list[Dim] | None:
    """For a 1-D size tensor computed from `Shape`: the run-time dims it holds, in order
    (Shape with start/end, then Gather of indices, Slice, Unsqueeze, Squeeze, Cast, Concat);
    None when it is anything else."""
    node = value.producer()
    if node is None or depth == 0:
        return None
    op = node.op_type
    if op == "Shape":
        dims = walk.dims(node.inputs[0])
        if dims is None:
            return None
        rank = len(dims)
        start, end = attr_int(node, "start", 0), attr_int(node, "end", rank)
        start, end = (min(max(x + rank if x < 0 else x, 0), rank) for x in (start, end))
        return [(node.inputs[0], k) for k in range(start, end)]
    if op in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        return shape_dims(node.inputs[0], walk, depth - 1)
    if op == "Concat":
        parts = [shape_dims(v, walk, depth - 1) for v in node.inputs]
        return None if any(p is None for p in parts) else [d for p in parts for d in p]
    base = shape_dims(node.inputs[0], walk, depth - 1) if node.inputs else None
    if base is None:
        return None
    if op == "Gather" and attr_int(node, "axis", 0) == 0:
        index = walk.const(node.inputs[1])
        if index is None or index.ndim > 1:
            return None
        return [base[int(i)] for i in index.reshape(-1)]
    if op == "Slice" and len(node.inputs) >= 3:
        arrays = [walk.const(node.inputs[i]) if i < len(node.inputs) and node.inputs[i]
                  is not None else None for i in range(1, 5)]
        if arrays[0] is None or arrays[1] is None or arrays[0].size != 1 \
                or (arrays[2] is not None and int(arrays[2].reshape(-1)[0]) != 0) \
                or (arrays[3] is not None and int(arrays[3].reshape(-1)[0]) != 1):
            return None
        taken = slice_range(int(arrays[0].reshape(-1)[0]), int(arrays[1].reshape(-1)[0]), 1,
                            len(base))
        return [base[i] for i in taken]
    return None


def same_dim(a: Dim, b: Dim, walk: Walk) -> bool:
    """Is run-time dim `a` provably dim `b`? Both are followed back to where they come from
    (`root_dim`), or shape inference gives both the same name at every input size
    (`Walk.symbolic_dims`)."""
    if root_dim(a, walk) == root_dim(b, walk):
        return True
    name = _symbolic(a, walk)
    return isinstance(name, str) and name == _symbolic(b, walk)


def _symbolic(a: Dim, walk: Walk) -> int | str | None:
    """Dim `a` as it holds at every input size: an int, a name, or None (unknown)."""
    value, k = a
    dims, shape = walk.symbolic_dims(value), walk.dims(value)
    if dims is None or shape is None or len(dims) != len(shape) or not 0 <= k < len(dims):
        return None
    return dims[k]


def root_dim(a: Dim, walk: Walk, depth: int = 32) -> tuple[int, int]:
    """Where run-time dim `a` comes from, as (id of a tensor, axis): followed back through ops
    that pass a dim on (`_passed_from`)."""
    while depth:
        previous = _passed_from(a, walk, depth)
        if previous is None:
            break
        a, depth = previous, depth - 1
    return id(a[0]), a[1]


def static_dim(a: Dim, walk: Walk, depth: int = 32) -> bool:
    """Is run-time dim `a` provably a constant? It is where it comes from (`root_dim`'s way)
    a constant's dim, a constant entry of a Reshape's target, or the columns of a MatMul with
    a constant matrix; or shape inference gives it one size at every input size
    (`Walk.symbolic_dims`)."""
    if isinstance(_symbolic(a, walk), int):
        return True
    while depth:
        previous = _passed_from(a, walk, depth)
        if previous is None:
            break
        a, depth = previous, depth - 1
    value, k = a
    if walk.const(value) is not None:
        return True
    node = value.producer()
    if node is None:
        return False
    if node.op_type in ("Reshape", "Expand"):  # an Expand entry above 1 is the output's size
        entries = target_entries(node.inputs[1], walk)
        rank = len(walk.dims(value) or ())
        at = k - rank + len(entries) if entries is not None else -1
        return at >= 0 and entries[at] is not None and entries[at] > (node.op_type == "Expand")
    if node.op_type == "MatMul" and walk.const(node.inputs[1]) is not None:
        return k == len(walk.dims(value) or ()) - 1
    return False


def _passed_from(a: Dim, walk: Walk, depth: int) -> Dim | None:
    """The input dim that dim `a` is at run time: through same-shape ops, a broadcast against
    constants (which must not stretch it), a MatMul (a constant matrix keeps all but the last
    dim; two activations keep rows, columns, and batch dims both operands share), Transpose,
    and Reshape (an entry computed from Shape, or 0: copied). None: nowhere provable."""
    value, k = a
    node = value.producer()
    if node is None or walk.dims(value) is None:
        return None
    rank, op = len(walk.dims(value)), node.op_type
    if op in _SAME_SHAPE:
        return node.inputs[0], k
    if op in _BROADCASTING:
        live = [v for v in node.inputs if v is not None and walk.const(v) is None]
        if len(live) != 1 or walk.dims(live[0]) is None or len(walk.dims(live[0])) != rank:
            return None
        for v in node.inputs:  # constants must not stretch the dim (size 1, or shorter rank)
            if v is None or v is live[0]:
                continue
            dims = walk.dims(v)
            at = None if dims is None else len(dims) - rank + k
            if dims is None or (at >= 0 and dims[at] != 1):
                return None
        return live[0], k
    if op == "MatMul":
        return _matmul_dim(node, walk, rank, k, depth)
    if op == "Transpose":
        perm = attr_ints(node, "perm") or list(reversed(range(rank)))
        return node.inputs[0], perm[k]
    if op in ("Unsqueeze", "Squeeze"):
        axes = walk.const(node.inputs[1]) if len(node.inputs) > 1 else None
        in_dims = walk.dims(node.inputs[0])
        if axes is None or in_dims is None:
            return None
        if op == "Unsqueeze":
            inserted = {int(x) % rank for x in axes.reshape(-1)}
            kept = [j for j in range(rank) if j not in inserted]
            return None if k in inserted else (node.inputs[0], kept.index(k))
        removed = {int(x) % len(in_dims) for x in axes.reshape(-1)}
        return node.inputs[0], [j for j in range(len(in_dims)) if j not in removed][k]
    if op == "Expand":  # broadcast(input dim, entry): the input's where the entry is 1 or it
        entries, in_dims = target_entries(node.inputs[1], walk), walk.dims(node.inputs[0])
        if entries is None or in_dims is None or len(entries) != rank or len(in_dims) != rank:
            return None
        if entries[k] == 1:
            return node.inputs[0], k
        dim = None if entries[k] is not None else _entry_dim(node.inputs[1], k, walk)
        if dim is not None and root_dim(dim, walk, depth - 1) == \
                root_dim((node.inputs[0], k), walk, depth - 1):
            return node.inputs[0], k
    if op == "Reshape":
        entries = target_entries(node.inputs[1], walk)
        if entries is None:
            return None
        if entries[k] == 0 and attr_int(node, "allowzero", 0) == 0:
            return node.inputs[0], k
        return None if entries[k] is not None else _entry_dim(node.inputs[1], k, walk)
    return None


def _matmul_dim(node: ir.Node, walk: Walk, rank: int, k: int, depth: int) -> Dim | None:
    a, b = node.inputs[:2]
    a_dims, b_dims = walk.dims(a), walk.dims(b)
    if a_dims is None or b_dims is None or len(a_dims) < 2 or len(b_dims) < 2:
        return None
    if k == rank - 1:
        return b, len(b_dims) - 1
    if k == rank - 2:
        return a, len(a_dims) - 2
    in_a, in_b = k - rank + len(a_dims), k - rank + len(b_dims)
    if in_a < 0 or (in_b >= 0 and walk.const(b) is not None and b_dims[in_b] == 1):
        return (b, in_b) if in_a < 0 else (a, in_a)
    if in_b < 0:
        return a, in_a
    # both carry it: the same dim if both come from the same place
    if root_dim((a, in_a), walk, depth - 1) == root_dim((b, in_b), walk, depth - 1):
        return a, in_a
    return None


def outer_sizes_proven(node: ir.Node, walk: Walk, axis: int) -> bool:
    """Do the computed entries before `axis` of a Reshape's target hold, one for one, the
    input's own first dims (`axis` of them), and are the input's dims after its channel axis
    constants? Then the rows before the channel axis are the same at any run-time size, and
    an inferred entry (-1) after them is fixed by the rest."""
    source, dims = walk.info(node.inputs[0]), walk.dims(node.inputs[0])
    entries = target_entries(node.inputs[1], walk)
    if source is None or source.axis != axis or entries is None or dims is None:
        return False
    # the input's dims after the channel axes must not change either (else -1 takes them up)
    if not all(static_dim((node.inputs[0], k), walk)
               for k in range(source.axis + source.span, len(dims))):
        return False
    concat, offset, proven = node.inputs[1].producer(), 0, [False] * axis
    for piece in concat.inputs:
        length = walk.shape(piece)[0]
        dims = shape_dims(piece, walk) if walk.const(piece) is None else None
        for i in range(offset, min(offset + length, axis)):
            mine = (node.inputs[0], i)
            proven[i] = dims is not None and (same_dim(mine, dims[i - offset], walk)
                                              or same_dim(dims[i - offset], mine, walk))
        offset += length
    return all(proven)


def entry_dims(target: ir.Value, walk: Walk) -> list[Dim | None] | None:
    """For each entry of a shape operand (`target_entries`): the run-time dim it holds where
    it is computed from `Shape` (None: a constant, or not traced); None when the operand is
    neither a constant nor a Concat of pieces."""
    entries = target_entries(target, walk)
    if entries is None:
        return None
    return [None if e is not None else _entry_dim(target, p, walk) for p, e in enumerate(entries)]


def computed_entry_is_dim(target: ir.Value, p: int, dim: Dim, walk: Walk) -> bool:
    """Is computed entry `p` of a Concat-built shape operand provably run-time dim `dim`?"""
    entry = _entry_dim(target, p, walk)
    return entry is not None and (same_dim(entry, dim, walk) or same_dim(dim, entry, walk))


def _entry_dim(target: ir.Value, p: int, walk: Walk) -> Dim | None:
    """The run-time dim that computed entry `p` of a Concat-built shape operand holds."""
    offset = 0
    for piece in target.producer().inputs:
        length = walk.shape(piece)[0]
        if p < offset + length:
            dims = shape_dims(piece, walk)
            return None if dims is None else dims[p - offset]
        offset += length
    return None


def computed_target_fixed(node: ir.Node, walk: Walk, axis: int, span: int) -> bool:
    """Does a Reshape to a computed target keep the analysed layout at every run-time size?

    The output's channel axes [axis, axis+span) must be constants (or one -1 where the sizes
    before them are the input's own: `outer_sizes_proven`); a computed size after them must
    be the input's dim at the same place from the end, and the input's other dims after its
    channel axis constants. Then the sizes after the channel axes change alike on both sides,
    and the rows before them are the input's (the element count says so)."""
    source, in_dims = walk.info(node.inputs[0]), walk.dims(node.inputs[0])
    entries = target_entries(node.inputs[1], walk)
    if source is None or in_dims is None or entries is None:
        return False
    first_inner, matched = source.axis + source.span, set()
    for p in range(axis, len(entries)):
        if entries[p] is not None:
            if entries[p] == 0:
                return False
            continue
        q = p - len(entries) + len(in_dims)
        dim = _entry_dim(node.inputs[1], p, walk)
        if p < axis + span or q < first_inner or dim is None \
                or not same_dim((node.inputs[0], q), dim, walk):
            return False
        matched.add(q)
    if not all(static_dim((node.inputs[0], q), walk)
               for q in range(first_inner, len(in_dims)) if q not in matched):
        return False
    sizes = [e for e in entries[axis:] if e is not None]
    return all(e > 0 for e in sizes) or (sizes.count(-1) == 1
                                         and outer_sizes_proven(node, walk, axis))
