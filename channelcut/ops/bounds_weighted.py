"""Bounds rules of ops with constant weights: out[o] in b[o] + sum over what row o reads of
[min, max](w * [lo, hi]), a term 0 where zero padding may stand in; BatchNormalization per
channel."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.channels import ChannelInfo
from channelcut.graph import (attr_float, attr_int, attr_ints, attr_string, input_at,
                              padding_reaches_output)
from channelcut.ops.bounds import Interval, _times, bounds, positions_range
from channelcut.ops.bounds_pointwise import _input_channels
from channelcut.ranges import widen


@bounds("BatchNormalization")
def _batch_norm(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[c] <- a[c] * (in[c] - mean[c]) + B[c], a = scale / sqrt(var + eps)."""
    params = [walk.const(input_at(node, i)) for i in range(1, 5)]
    if any(p is None for p in params) or out.axis != 1 or out.block != 1:
        return None
    scale, bias, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
    with np.errstate(all="ignore"):
        a = scale / np.sqrt(var + attr_float(node, "epsilon", 1e-5))
        lo, hi = _input_channels(node, walk, out)
        ends = np.stack([_times(a, lo - mean), _times(a, hi - mean)]) + bias
        magnitude = np.abs(a) * (np.maximum(np.abs(lo), np.abs(hi)) + np.abs(mean)) + np.abs(bias)
    return widen(ends.min(axis=0), ends.max(axis=0), magnitude, terms=4)


# -- weighted ops -------------------------------------------------------------------------


# Rows of weights whose bounds are summed at once: up to this many weights, converted to
# float64 a chunk at a time (half a dozen float64 temporaries of a whole LLM projection would
# be several times the model's largest weight). 2 MB per float64 temporary stays in a CPU's
# cache: twice as fast as 16 MB ones on an LLM's projections, with the same sums.
CHUNK_WEIGHTS = 2**18


def _weighted_sum(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, subset: bool,
                  scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For groups of rows of weights w [groups, rows, cols, k] (times `scale`) reading inputs
    in [lo, hi] ([groups, cols]): per row (flattened over groups) the bounds of sum w * x
    over the terms (a subset of them, when `subset`: a term zero padding replaces is 0), and
    the sum of the terms' magnitudes; CHUNK_WEIGHTS weights at a time.
    """
    groups, rows, cols, k = w.shape
    if not (np.isfinite(lo).any() or np.isfinite(hi).any()):  # nothing bounded to sum
        unbounded = np.full(groups * rows, np.inf)
        return -unbounded, unbounded, unbounded
    lo, hi = (np.repeat(b.reshape(groups, cols), k, axis=1) for b in (lo, hi))
    if subset:
        lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
    step = max(1, CHUNK_WEIGHTS // max(1, groups * cols * k))
    # Every full chunk reuses the same float64 arrays: a new one of a few MB each time is
    # fresh pages from the OS, and faulting them in cost more than the sums.
    # (in the weights' own memory layout, as np.asarray(part, np.float64) would make them:
    # the same sums, in the same order)
    chunk = np.empty_like(w[:, :step], np.float64)
    scratch = [np.empty_like(chunk.reshape(groups, chunk.shape[1], cols * k))
               for _ in range(3)]
    parts = []
    for r in range(0, rows, step):
        part = w[:, r:r + step]
        into = chunk if part.shape == chunk.shape else np.empty_like(part, np.float64)
        np.copyto(into, part, casting="unsafe")
        if scale != 1.0:
            np.multiply(into, scale, out=into)
        parts.append(_weighted_sum_rows(into, lo, hi, scratch))
    if not rows:
        parts = [(np.zeros((groups, 0)),) * 3]
    return tuple(np.concatenate([part[i] for part in parts], axis=1).reshape(-1)
                 for i in range(3))


def _weighted_sum_rows(w: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                       scratch: list[np.ndarray] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_weighted_sum` of float64 rows w [groups, rows, cols, k], bounds [groups, cols * k],
    as [groups, rows] arrays; `scratch`: three float64 arrays to work in, used when they
    have w's flattened shape.

    Each term's largest value is w+ * hi + w- * lo (with `subset`, w+ * max(hi, 0) + w- *
    min(lo, 0)), its smallest the other way round: two products per bound (einsum: numpy's
    batched matmul of a matrix by a vector is ten times slower here). An
    infinite bound read through a non-zero weight makes the row's bound infinite.
    """
    groups, rows, cols, k = w.shape
    w = w.reshape(groups, rows, cols * k)
    if scratch is None or scratch[0].shape != w.shape:
        scratch = [np.empty_like(w) for _ in range(3)]
    positive, negative = np.maximum(w, 0, out=scratch[0]), np.minimum(w, 0, out=scratch[1])

    def dot(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
        """weights @ x per group, for weights of one sign, x's infinities counted apart (a zero
        weight times an infinite bound is 0: the values themselves are finite)."""
        finite = np.isfinite(x)
        total = np.einsum("grc,gc->gr", weights, np.where(finite, x, 0.0))
        if finite.all():  # no infinity to count (the sums below would add 0.0 to each)
            return total + 0.0  # as they would: -0.0 becomes 0.0
        for sign in (1.0, -1.0):
            # where few columns hold this infinity, read only those (the other terms are 0):
            # the weights have one sign, so the sum is 0 exactly when those terms are
            at = x == sign * np.inf
            cols = np.flatnonzero(at.any(axis=0))
            if 2 * cols.size > at.shape[1]:  # a copy of most columns costs more than it saves
                cols = slice(None)
            reach = np.einsum("grc,gc->gr", weights[:, :, cols], at[:, cols].astype(float))
            total = total + np.where(reach != 0, sign * np.sign(reach) * np.inf, 0.0)
        return total

    with np.errstate(all="ignore"):
        high = dot(positive, hi) + dot(negative, lo)
        low = dot(positive, lo) + dot(negative, hi)
        size = dot(np.abs(w, out=scratch[2]), np.maximum(np.abs(lo), np.abs(hi)))
    return low, high, size


def _windows(node: ir.Node, walk: Walk, kernel: tuple[int, ...]) -> np.ndarray | None:
    """The taps each output position of a padded conv reads inside the input, one row of
    booleans over the flattened kernel per distinct pattern (the interior: all of them; an
    edge or corner: those zero padding does not replace); None where the input's spatial size
    or the padding is not known here."""
    dims = walk.dims(node.inputs[0])
    pads = attr_ints(node, "pads", []) or [0] * (2 * len(kernel))
    if attr_string(node, "auto_pad", "NOTSET") != "NOTSET" or dims is None or \
            len(dims) != len(kernel) + 2 or len(pads) != 2 * len(kernel):
        return None
    strides = attr_ints(node, "strides", []) or [1] * len(kernel)
    dilations = attr_ints(node, "dilations", []) or [1] * len(kernel)
    per_axis = []
    for a, k in enumerate(kernel):
        length = dims[a + 2]
        if not isinstance(length, int) or length < 1:
            return None
        begin, span = pads[a], dilations[a] * (k - 1) + 1
        count = (length + begin + pads[a + len(kernel)] - span) // strides[a] + 1
        starts = np.arange(max(count, 0)) * strides[a] - begin
        taps = starts[:, None] + np.arange(k) * dilations[a]
        per_axis.append(np.unique((taps >= 0) & (taps < length), axis=0))
    patterns = per_axis[0]
    for masks in per_axis[1:]:  # every combination of one pattern per axis occurs
        patterns = (patterns[:, None, :, None] & masks[None, :, None, :]).reshape(
            patterns.shape[0] * masks.shape[0], -1)
    return patterns if patterns.shape[0] <= 64 else None


@bounds("Conv")
def _conv(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[o] in b[o] + sum over o's group and kernel of [min, max](w * [lo, hi]); a padded
    conv: the hull of that sum over the taps each window pattern reads (the interior reads all,
    an edge only those inside), or 0 per term where zero padding may stand in when the
    patterns are not known."""
    weights, b = walk.const(node.inputs[1]), input_at(node, 2)
    bias = np.zeros(weights.shape[0]) if b is None else np.asarray(walk.const(b), np.float64)
    groups = attr_int(node, "group", 1)
    cout, cin_g = weights.shape[:2]
    lo, hi = positions_range(walk, node.inputs[0], 1, cin_g * groups)
    flat = np.asarray(weights).reshape(groups, cout // groups, cin_g, -1)
    padded = padding_reaches_output(node, weights.shape[2:])
    windows = _windows(node, walk, tuple(weights.shape[2:])) if padded else None
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite weight: NaN, unbounded
        if windows is None:
            low, high, size = _weighted_sum(flat, lo, hi, padded)
        else:
            sums = [_weighted_sum(flat * mask, lo, hi, False) for mask in windows]
            low = np.min([s[0] for s in sums], axis=0)
            high, size = (np.max([s[i] for s in sums], axis=0) for i in (1, 2))
        low, high, size = low + bias, high + bias, size + np.abs(bias)
    return widen(low, high, size, terms=cin_g * flat.shape[-1] + 1)


@bounds("ConvTranspose")
def _conv_transpose(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[o] in b[o] + sum over inputs and kernel of [min(0, w*lo, w*hi), max(...)]: each
    output position gets a subset of the terms."""
    weights, b = walk.const(node.inputs[1]), input_at(node, 2)
    groups = attr_int(node, "group", 1)
    cin, cout_g = weights.shape[:2]
    cin_g = cin // groups
    bias = np.zeros(cout_g * groups) if b is None else np.asarray(walk.const(b), np.float64)
    lo, hi = positions_range(walk, node.inputs[0], 1, cin)
    flat = np.asarray(weights).reshape(groups, cin_g, cout_g, -1).transpose(0, 2, 1, 3)
    low, high, size = _weighted_sum(flat, lo, hi, True)
    return widen(low + bias, high + bias, size + np.abs(bias), terms=cin_g * flat.shape[-1] + 1)


@bounds("Gemm")
def _gemm(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[n] in beta * C[n] + alpha * sum_k [min, max](B'[k, n] * [lo, hi] of A'[k])."""
    weights = walk.const(node.inputs[1])
    w_nk = weights if attr_int(node, "transB", 0) else weights.T
    alpha, beta = attr_float(node, "alpha", 1.0), attr_float(node, "beta", 1.0)
    lo, hi = positions_range(walk, node.inputs[0], 0 if attr_int(node, "transA", 0) else 1,
                             w_nk.shape[1])
    low, high, size = _weighted_sum(w_nk[None, :, :, None], lo, hi, False, alpha)
    c = input_at(node, 2)
    if c is None:
        clo = chi = np.zeros(out.n)
    else:
        if walk.const(c) is None:
            return None
        c_array = np.asarray(walk.const(c), np.float64)
        c2 = c_array.reshape((1,) * (2 - c_array.ndim) + c_array.shape)
        clo, chi = positions_range_of(c2, out.n)
        clo, chi = np.minimum(beta * clo, beta * chi), np.maximum(beta * clo, beta * chi)
    return widen(low + clo, high + chi, size + np.maximum(np.abs(clo), np.abs(chi)),
                 terms=w_nk.shape[1] + 2)


def positions_range_of(c2: np.ndarray, n: int) -> Interval:
    """A 2-D constant broadcast over [rows, n]: min and max per column."""
    cols = np.broadcast_to(c2, (c2.shape[0], n))
    return cols.min(axis=0), cols.max(axis=0)


@bounds("MatMul")
def _matmul(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[..., n] in sum_k [min, max](B[k, n] * [lo, hi] of A[..., k])."""
    weights = walk.const(node.inputs[1])
    a_dims = walk.dims(node.inputs[0])
    if weights is None or a_dims is None or weights.ndim < 2:
        return None
    matrix = weights.reshape(weights.shape[-2:])
    lo, hi = positions_range(walk, node.inputs[0], len(a_dims) - 1, matrix.shape[0])
    low, high, size = _weighted_sum(matrix.T[None, :, :, None], lo, hi, False)
    return widen(low, high, size, terms=matrix.shape[0] + 1)
