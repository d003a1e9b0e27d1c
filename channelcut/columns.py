"""Intervals per position along a value's last axis ("columns"), where one interval for the whole
tensor cannot say enough: ReLU linear attention (EfficientViT, SANA) pads v with a column of
ones, so the last column of q @ (k^T @ Pad(v, value=1)) is a sum of non-negative terms, and
divides by it plus eps. Only that column is at least 0; the tensor's hull holds v's signs.

`column_intervals` follows a value's producers through the few ops that keep, select or
compute columns (Cast, Identity, Relu, a constant Pad, a constant Slice, MatMul, a scalar
constant's Add/Sub/Mul), each column's interval intersected with the whole value's (the
analysis's, always sound); anything else is the whole value's interval in every column. The
domain checks (ops.elementwise, finite) ask it before they mark a divisor that may hold zero.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.graph import attr_string, input_at
from channelcut.ops.bounds import Interval, _times, positions_range
from channelcut.ops.bounds_pointwise import arithmetic
from channelcut.ranges import widen

DEPTH = 12  # producers followed at most, from the value asked about
MOVES = ("Cast", "Identity")


def value_hull(walk: Walk, value: ir.Value, depth: int = DEPTH) -> Interval:
    """One interval for every element of the value (unbounded where nothing is known): the
    analysis's, narrowed through the moves and the Relu before it."""
    lo, hi = positions_range(walk, value, 0, 1)
    node = value.producer()
    if node is None or depth == 0 or value in walk.nonfinite or not _float32(node) or \
            node.op_type not in (*MOVES, "Relu", "Transpose"):
        return lo, hi
    below, above = value_hull(walk, node.inputs[0], depth - 1)
    if node.op_type == "Relu":
        below, above = np.maximum(below, 0.0), np.maximum(above, 0.0)
    return np.maximum(lo, below), np.minimum(hi, above)


def _float32(node: ir.Node) -> bool:
    """float32 in and out (a Cast that rounds or truncates is not followed)."""
    first = input_at(node, 0)
    return first is not None and first.dtype == ir.DataType.FLOAT and \
        node.outputs[0].dtype == ir.DataType.FLOAT


def column_intervals(walk: Walk, value: ir.Value, depth: int = DEPTH) -> Interval | None:
    """(lo, hi) per position along the value's last axis, or None when its size is unknown."""
    dims = walk.dims(value)
    if not dims or not isinstance(dims[-1], int):
        return None
    n = dims[-1]
    lo, hi = value_hull(walk, value)
    lo, hi = np.full(n, lo[0]), np.full(n, hi[0])
    node = value.producer()
    if node is None or depth == 0 or value in walk.nonfinite:
        return lo, hi
    try:
        columns = _through(walk, node, depth - 1)
    except (TypeError, ValueError, IndexError):  # an odd attribute or shape: the hull alone
        columns = None
    if columns is None or columns[0].shape != (n,):
        return lo, hi
    return np.maximum(lo, columns[0]), np.minimum(hi, columns[1])


def _through(walk: Walk, node: ir.Node, depth: int) -> Interval | None:
    """The columns of the node's output from its inputs' (None: not followed)."""
    op, first = node.op_type, input_at(node, 0)
    if not _float32(node):
        return None
    if op in MOVES or op == "Relu":
        columns = column_intervals(walk, first, depth)
        if columns is not None and op == "Relu":
            return np.maximum(columns[0], 0.0), np.maximum(columns[1], 0.0)
        return columns
    if op == "Pad":
        return _pad(walk, node, depth)
    if op == "Slice":
        return _slice(walk, node, depth)
    if op == "MatMul":
        return _matmul(walk, node, depth)
    if op in ("Add", "Sub", "Mul"):
        return _scalar_arithmetic(walk, node, depth)
    return None


def _pad(walk: Walk, node: ir.Node, depth: int) -> Interval | None:
    """A constant Pad: its fill's columns before and after the input's; padding another axis
    adds the fill to every column."""
    if attr_string(node, "mode", "constant") != "constant" or input_at(node, 3) is not None:
        return None
    pads = walk.const(input_at(node, 1))
    fill_value = input_at(node, 2)
    fill = np.zeros(1) if fill_value is None else walk.const(fill_value)
    columns = column_intervals(walk, node.inputs[0], depth)
    if pads is None or fill is None or columns is None or np.asarray(fill).size > 1:
        return None
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    rank = len(pads) // 2
    before, after = pads[rank - 1], pads[-1]
    if min(pads) < 0:
        return None  # a crop
    c = float(np.asarray(fill, np.float64).reshape(-1)[0]) if np.asarray(fill).size else 0.0
    lo, hi = columns
    if any(pads[:rank - 1]) or any(pads[rank:-1]):  # other axes padded: the fill is in every column
        lo, hi = np.minimum(lo, c), np.maximum(hi, c)
    return (np.concatenate([np.full(before, c), lo, np.full(after, c)]),
            np.concatenate([np.full(before, c), hi, np.full(after, c)]))


def _slice(walk: Walk, node: ir.Node, depth: int) -> Interval | None:
    """A Slice with constant starts, ends, axes and steps: the columns it keeps, in order."""
    dims = walk.dims(node.inputs[0])
    columns = column_intervals(walk, node.inputs[0], depth)
    arrays = [walk.const(input_at(node, i)) if input_at(node, i) is not None else None
              for i in (1, 2, 3, 4)]
    if dims is None or columns is None or arrays[0] is None or arrays[1] is None or \
            input_at(node, 3) is not None and arrays[2] is None or \
            input_at(node, 4) is not None and arrays[3] is None:
        return None
    rank = len(dims)
    starts, ends = (np.asarray(a, np.int64).reshape(-1) for a in arrays[:2])
    axes = np.arange(starts.size) if arrays[2] is None else \
        np.asarray(arrays[2], np.int64).reshape(-1) % rank
    steps = np.ones(starts.size, np.int64) if arrays[3] is None else \
        np.asarray(arrays[3], np.int64).reshape(-1)
    lo, hi = columns
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if axis == rank - 1:
            kept = np.arange(lo.size)[slice(int(start), int(end), int(step))]
            lo, hi = lo[kept], hi[kept]
    return lo, hi


def _matmul(walk: Walk, node: ir.Node, depth: int) -> Interval | None:
    """a @ b for a and b of rank >= 2: column j is a sum of K products a[., k] * b[k, j], each
    within the hull of a times b's column j."""
    a, b = node.inputs[0], input_at(node, 1)
    a_dims, b_dims = walk.dims(a), walk.dims(b)
    if b is None or a_dims is None or b_dims is None or len(a_dims) < 2 or len(b_dims) < 2 or \
            not isinstance(b_dims[-2], int):
        return None
    columns = column_intervals(walk, b, depth)
    if columns is None:
        return None
    a_lo, a_hi = value_hull(walk, a, depth)
    k = b_dims[-2]
    products = np.stack([_times(x, y) for x in (a_lo[0], a_hi[0]) for y in columns])
    low, high = k * products.min(axis=0), k * products.max(axis=0)
    # a sum of rounded products rounds monotonically: each side's error from its own terms;
    # and a float sum of products that are all at least 0 is at least 0
    lo, hi = widen(low, high, np.abs(low), terms=k, hi_magnitude=np.abs(high))
    return np.where(low >= 0, np.maximum(lo, 0.0), lo), hi


def _scalar_arithmetic(walk: Walk, node: ir.Node, depth: int) -> Interval | None:
    """x + c, x - c, c + x, x * c, c * x for a scalar constant c."""
    if len(node.inputs) != 2:
        return None
    consts = [walk.const(v) for v in node.inputs]
    scalar = [i for i, array in enumerate(consts) if array is not None and array.size == 1]
    if len(scalar) != 1:
        return None
    c = float(np.asarray(consts[scalar[0]], np.float64).reshape(-1)[0])
    other = node.inputs[1 - scalar[0]]
    columns = column_intervals(walk, other, depth)
    if columns is None or walk.dims(other) != walk.dims(node.outputs[0]):
        return None
    constant = (np.full_like(columns[0], c), np.full_like(columns[1], c))
    operands = [constant, columns] if scalar[0] == 0 else [columns, constant]
    return arithmetic(node.op_type, *operands)


def inside_by_columns(walk: Walk, value: ir.Value, edge) -> bool:
    """Does every column's interval stay inside a DOMAIN_EDGE (`edge` holds nowhere)?"""
    columns = column_intervals(walk, value)
    return columns is not None and not bool(edge(*columns).any())
