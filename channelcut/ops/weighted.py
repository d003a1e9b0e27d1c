"""Ops with constant weights: out[o] <- bias[o] + sum_c W[o, c] * in[c].

Their output channels are new (one per weight row). They read their input channels through the
weights, so an input channel is ignored when it is zero or when every kept row has zero weights
for it. Output channel o is the constant bias[o] when each non-zero weight of row o reads a zero
channel, or a constant channel and no padding can reach it.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Cost, Site, Walk
from channelcut.flops import node_flops
from channelcut.fold import fold_into_carrier, fold_into_conv, fold_into_gemm, fold_into_matmul
from channelcut.channels import (HUGE, ChannelInfo, identity_positions,
                                 nonzero_along_last_axis, per_channel_constant)
from channelcut.rewrite import Rewrite, delete_positions, kept_mask
from channelcut.graph import (attr_float, attr_int, attr_ints, attr_string, input_at,
                              padding_reaches_output)
from channelcut.ops import rule


def _taps_of_one_position(node: ir.Node, walk: Walk, kernel: tuple[int, ...]
                          ) -> np.ndarray | None:
    """Where the conv has one output position (every spatial output dim 1, a pooled 1x1 input
    read by a padded 3x3 conv, say): which of its kernel taps (flattened, C order) read the
    input rather than padding. A constant input channel then carries through as one number,
    summed over those taps only. None: several positions, or shapes or padding not known, or
    the graph's spatial size not fixed (a dynamic one taken as 1 must not be baked in, as a
    border fold's is not)."""
    shape = walk.shape(node.inputs[0])
    auto_pad = attr_string(node, "auto_pad", "NOTSET")
    if not walk.spatial_fixed or shape is None or len(shape) != len(kernel) + 2 or \
            auto_pad not in ("NOTSET", "VALID"):
        return None
    spatial = shape[2:]
    n = len(kernel)
    pads = [0] * 2 * n if auto_pad == "VALID" else attr_ints(node, "pads", None) or [0] * 2 * n
    strides = attr_ints(node, "strides", None) or [1] * n
    dilations = attr_ints(node, "dilations", None) or [1] * n
    valid = []
    for d in range(n):
        size, k, dil = int(spatial[d]), int(kernel[d]), int(dilations[d])
        if (size + pads[d] + pads[d + n] - dil * (k - 1) - 1) // int(strides[d]) + 1 != 1:
            return None
        read = np.arange(k) * dil - pads[d]  # the input index tap k reads at position 0
        valid.append((read >= 0) & (read < size))
    taps = valid[0]
    for more in valid[1:]:
        taps = np.logical_and.outer(taps, more).reshape(-1)
    return taps.reshape(-1)


def _input_values(source: ChannelInfo | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Known flags and constants per position along the input's channel axis."""
    if source is None:
        return np.zeros(size, bool), np.zeros(size, np.float32)
    return source.by_position(source.known), source.by_position(source.const)


def _row_values(nz: np.ndarray, weights: np.ndarray, in_known: np.ndarray,
                in_const: np.ndarray, blocked: np.ndarray, bias: np.ndarray,
                scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Output rows whose every non-zero weight reads a known, unblocked input are constants:
    bias[o] + scale * sum_c (sum of W[o, c]) * in[c].

    Per group g: nz is [G, rows, cols] and weights [G, rows, cols, k] (the k weights of one
    row and input channel: a kernel, or a block of features); in_known, in_const and blocked
    are [G, cols]. Only the columns that carry a non-zero constant are summed.
    """
    unknown_in = ~in_known | blocked
    if unknown_in.all():
        row_unknown = nz.any(axis=2)
    else:
        row_unknown = (nz & unknown_in[:, None, :]).any(axis=2)
    value = np.zeros(nz.shape[:2], np.float32)
    carries = in_known & (in_const != 0)
    # only rows that are constants and read something need their value summed
    summed = ~row_unknown & nz.any(axis=2)
    for g in np.flatnonzero(carries.any(axis=1) & summed.any(axis=1)):
        rows, cols = np.flatnonzero(summed[g]), np.flatnonzero(carries[g])
        sums = weights[g][rows][:, cols].sum(axis=-1, dtype=np.float32)
        with np.errstate(all="ignore"):
            value[g, rows] = (sums * in_const[g, cols]).sum(axis=-1) * np.float32(scale)
    return ~row_unknown.reshape(-1), (bias + value.reshape(-1)).astype(np.float32)


# Half the smallest float32 subnormal: a product below it rounds to zero, and so does any sum
# of such products, in any order, fused (FMA) or not, and whatever the accumulator holds.
_VANISHING = float(np.finfo(np.float32).smallest_subnormal) / 2


def _vanishing_reads(nz: np.ndarray, weights: np.ndarray, in_known: np.ndarray,
                     in_const: np.ndarray) -> np.ndarray:
    """`nz` less the reads of a known constant input whose products with the row's weights add
    nothing: sum_k |W[o, c, k]| * |in[c]| below half the smallest subnormal (float32's, or the
    weights' type's if smaller). Such a read is a zero weight: the row does not depend on c,
    padded or not (denormal weights times a denormal constant: 1e-40 * 1e-40 is 0).

    nz: [G, rows, cols]; weights: [G, rows, cols, k]; in_known, in_const: [G, cols]."""
    carries = in_known & (in_const != 0)
    if not carries.any() or weights.dtype.kind != "f":
        return nz
    cols = np.flatnonzero(carries.any(axis=0))  # only the weights that read a constant
    tiny = min(_VANISHING, float(np.finfo(weights.dtype).smallest_subnormal) / 2)
    with np.errstate(all="ignore"):
        size = np.abs(weights[:, :, cols].astype(np.float64)).sum(axis=-1) * \
            np.abs(in_const[:, None, cols].astype(np.float64))
    vanishing = (size < tiny) & carries[:, None, cols] & nz[:, :, cols]
    if not vanishing.any():
        return nz
    nz = nz.copy()
    nz[:, :, cols] &= ~vanishing
    return nz


def _foldable(weights: np.ndarray, in_known: np.ndarray, in_const: np.ndarray
              ) -> np.ndarray | None:
    """Columns whose known constant folds into the reader without overflow: each of its
    folded terms, sum_k |W[o, c, k]| * |const[c]|, times the number of columns stays within
    HUGE, so no row's folded sum nears float32's range (the runtime sums in float32: a sum
    that overflows there must not become finite in a fold). None: every column does.

    weights: [G, rows, cols, k]; in_known, in_const: [G, cols].
    """
    carries = in_known & (in_const != 0)
    if not carries.any():  # nothing to fold: the weights need not be read
        return None
    cols = np.flatnonzero(carries.any(axis=0))  # only the weights that read a constant
    with np.errstate(all="ignore"):
        largest = np.abs(weights[:, :, cols].astype(np.float64)).sum(axis=-1).max(axis=1,
                                                                                  initial=0.0)
        bound = largest * np.abs(in_const[:, cols].astype(np.float64)) * weights.shape[2]
    foldable = np.ones(carries.shape, dtype=bool)
    foldable[:, cols] = bound <= HUGE
    return foldable


def _unbounded_rows(walk: Walk, value: ir.Value | None, array: np.ndarray | None,
                    axis: int, n: int) -> np.ndarray:
    """Per output channel (`n`, laid along `axis` of the constant, or one for all when that
    axis is 1 long): does its part of the constant hold a NaN, an Inf or a value beyond HUGE?"""
    if value is None or array is None or walk.bounded(value):
        return np.zeros(n, dtype=bool)
    moved = np.moveaxis(np.atleast_1d(array), axis, 0)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(moved.reshape(moved.shape[0], -1)) <= HUGE).all(axis=1)
    return np.broadcast_to(bad, (n,)) if bad.size == 1 else bad


def _unbounded_weight_rows(walk: Walk, value: ir.Value, w3: np.ndarray, in_zero: np.ndarray
                           ) -> np.ndarray:
    """Per row of weights [rows, cols, k]: does it make NaN or Inf? It does with a NaN or Inf
    anywhere (NaN * 0 is NaN), or with a huge weight on a column that is not known to be zero
    (`in_zero`, [rows, cols] or [cols]: a huge weight times zero is zero)."""
    if walk.bounded(value):
        return np.zeros(w3.shape[0], dtype=bool)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(w3)
        huge = finite & ~(np.abs(w3) <= HUGE)
    return (~finite).any(axis=(1, 2)) | (huge.any(axis=2) & ~in_zero).any(axis=1)


def _pinned_unless(walk: Walk, node: ir.Node, value: ir.Value, axis: int, n: int,
                   block_ok: bool = True) -> ChannelInfo | None:
    """The input's channels if they lie on the axis the op contracts; otherwise pin them.

    The `n` channels the weights read from an input that a barrier made are kept in that
    barrier's name: the report then says what keeps an input channel the weights ignore.
    """
    source = walk.info(value) or walk.channels_after_barrier(value, axis, n)
    if source is None:
        return None
    if source.axis != axis or (not block_ok and source.block != 1):
        walk.pin(source, node, "input channels are not on the axis the weights read")
        return None
    return source


# -- Conv ---------------------------------------------------------------------------------

def analyse_conv(node: ir.Node, walk: Walk) -> None:
    """out[o] <- b[o] + sum_c W[o, c] * in[c] within o's group; depthwise: out[c] <- in[c].

    A depthwise conv (one input and one output per group) couples out[c] with in[c]. With a
    channel multiplier m > 1 it is an ordinary grouped conv (one input, m outputs per group):
    every remaining group must keep as many outputs, which coupling all m would over-constrain.
    """
    x, w, b = node.inputs[0], node.inputs[1], input_at(node, 2)
    weights, bias = walk.const(w), walk.const(b)
    # the channel counts come from the weights: x's shape may be unknown (after a custom op)
    if weights is None or (b is not None and bias is None):
        walk.computed_weights_barrier(node, w if weights is None else b,
                                      "Conv weights or bias are not constants")
        return
    groups = attr_int(node, "group", 1)
    cout, cin_g = weights.shape[:2]
    cin = cin_g * groups
    out = walk.new(node.outputs[0], 1, cout)
    source = _pinned_unless(walk, node, x, 1, cin, block_ok=False)
    flat = weights.reshape(cout, cin_g, -1)
    nz = nonzero_along_last_axis(flat)
    bias = np.zeros(cout, np.float32) if bias is None else bias.astype(np.float32)
    in_known, in_const = _input_values(source, cin)
    nz = _vanishing_reads(nz.reshape(groups, -1, cin_g), flat.reshape(groups, cout // groups,
                                                                       cin_g, -1),
                          in_known.reshape(groups, cin_g), in_const.reshape(groups, cin_g)
                          ).reshape(cout, cin_g)
    # a non-zero constant does not carry through as one number where padding reaches it, or
    # where it is a map (a plane) to begin with; at a conv's only output position it does,
    # through the taps that read the input
    is_plane = source is not None and source.plane is not None
    maps = padding_reaches_output(node, weights.shape[2:]) or is_plane
    summed = flat
    if maps and not is_plane:
        taps = _taps_of_one_position(node, walk, tuple(weights.shape[2:]))
        if taps is not None:
            maps, summed = False, flat * taps.astype(flat.dtype)
    blocked = maps & (in_const != 0)
    # what each row reads that is known zero (its group's inputs)
    zero_read = np.repeat((in_known & (in_const == 0)).reshape(groups, cin_g),
                          cout // groups, axis=0)
    bad_rows = _unbounded_weight_rows(walk, w, flat, zero_read) | \
        _unbounded_rows(walk, b, bias, 0, cout)

    if _depthwise(groups, cin_g, cout):
        if source is not None:
            walk.couple(source.ids[source.channel_at_position()], out.ids)
        else:
            walk.pin(out, node, "depthwise Conv of a tensor whose channels cannot be cut")
        out.set_values(*_depthwise_values(nz[:, 0], summed[:, 0].sum(axis=-1, dtype=np.float32),
                                          in_known, in_const, blocked, bias))
        out.mark_nonfinite(bad_rows)
        return

    cout_g = cout // groups
    kernel = math.prod(weights.shape[2:])
    nz_g = nz.reshape(groups, cout_g, cin_g)
    rows = out.ids.reshape(groups, cout_g)
    size = weights.dtype.itemsize
    walk.charge(out.ids, weight_bytes=(cin_g * kernel + (b is not None)) * size)
    columns = None
    if source is not None:  # input channel ids by position, one row per group
        columns = source.ids[source.channel_at_position()].reshape(groups, cin_g)
        walk.charge(source.ids, weight_bytes=cout_g * kernel * size,
                    flops=node_flops(node) / cin)
        site = _conv_fold_site(node, walk, source, cout, kernel, b is not None, size)
        foldable = _foldable(flat.reshape(groups, cout_g, cin_g, -1),
                             in_known.reshape(groups, cin_g), in_const.reshape(groups, cin_g))
        nonfinite = None if walk.bounded(w) else \
            ~np.isfinite(flat).all(axis=2).reshape(groups, cout_g, cin_g)
        for k in range(groups):
            walk.reader_ids(columns[k], rows[k], nz_g[k], site,
                            None if foldable is None else foldable[k],
                            None if nonfinite is None else nonfinite[k])
        if site is not None and site.kind == "border fold":
            walk.computed_rows(node, walk.readers[-groups:], ~bad_rows,
                               _reinsert_rows_site(node, walk, cout), site, kernel, size,
                               b is not None)
    if groups > 1:
        walk.grouped_conv(columns, rows, node)
    out.set_values(*_row_values(nz_g, summed.reshape(groups, cout_g, cin_g, -1),
                                in_known.reshape(groups, cin_g),
                                in_const.reshape(groups, cin_g),
                                blocked.reshape(groups, cin_g), bias))
    out.mark_nonfinite(bad_rows)


def _depthwise(groups: int, cin_g: int, cout: int) -> bool:
    """One input and one output channel per group."""
    return groups > 1 and cin_g == 1 and cout == groups


def _conv_fold_site(node: ir.Node, walk: Walk, source: ChannelInfo, cout: int, kernel: int,
                    has_bias: bool, itemsize: int) -> Site | None:
    """Folding constant input channels: into the bias when no padding reaches them and they
    are one number everywhere; else into a border map, the conv of a plane of ones (or of the
    input's plane) with the folded kernel: a constant subgraph runtimes evaluate at load,
    plus one Add."""
    out_shape = walk.shape(node.outputs[0])
    kernel_shape = walk.const(node.inputs[1]).shape[2:]
    if not padding_reaches_output(node, kernel_shape) and source.plane is None:
        return Site(node, "bias fold", Cost(weight_bytes=0 if has_bias else cout * itemsize),
                    per_position=0 if has_bias else itemsize, positions=cout)
    # the map is the conv of a plane of the input's size (or of the input's plane)
    if not walk.spatial_fixed or out_shape is None or \
            (source.plane is None and walk.shape(node.inputs[0]) is None):
        return None
    plane = 4 * 8 if source.plane is None else source.plane.size * itemsize  # shape, or map
    return Site(node, "border fold", _added_output(cout * kernel * itemsize + plane, out_shape),
                per_position=kernel * itemsize, positions=cout)


def _reinsert_rows_site(node: ir.Node, walk: Walk, cout: int) -> Site:
    """Putting rows the conv computes without back as constants at the border fold's Add:
    Pad, Gather and Add of the constants (the Gather order and a constant per channel the
    output keeps, the Pad amounts), as a reinsertion at that Add costs."""
    shape = walk.shape(node.outputs[0])  # static: the border fold needs it
    elements = float(math.prod(shape))
    return Site(node, "reinsert", Cost(weight_bytes=12.0 * cout + 16 * len(shape),
                                       flops=elements, moved=2 * elements, nodes=3),
                per_position=12, positions=cout)


def _added_output(weight_bytes: float, out_shape: tuple[int, ...]) -> Cost:
    """An Add of a constant over the whole output: one op, one FLOP and one element moved per
    output element, and these weight bytes."""
    elements = float(math.prod(out_shape))
    return Cost(weight_bytes=weight_bytes, flops=elements, moved=elements, nodes=1)


def _depthwise_values(nz: np.ndarray, wsum: np.ndarray, in_known: np.ndarray,
                      in_const: np.ndarray, blocked: np.ndarray, bias: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Row o reads only its own input channel."""
    unknown = nz & (~in_known | blocked)
    with np.errstate(all="ignore"):
        value = bias + np.where(nz & in_known, wsum * in_const, 0)
    return ~unknown, value.astype(np.float32)


def rewrite_conv(node: ir.Node, rw: Rewrite) -> None:
    """Drop weight rows of cut outputs and columns of cut inputs (per group); fix `group`.
    Rows the output keeps but the conv no longer computes (their bias) come back as
    constants where the border map is added."""
    deleted_out, deleted_in = rw.deleted(node.outputs[0]), rw.deleted(node.inputs[0])
    constant_rows = rw.analysis.computed_without(node.outputs[0])
    if deleted_out.size == 0 and deleted_in.size == 0 and constant_rows.size == 0:
        return
    original = rw.const(node.inputs[1])
    original_bias = rw.const(input_at(node, 2))
    groups = attr_int(node, "group", 1)
    cout, cin_g = original.shape[:2]
    computed_out = np.union1d(deleted_out, constant_rows)  # the rows the conv goes without
    if _depthwise(groups, cin_g, cout):  # one row per channel
        weights = delete_positions(original, {0: deleted_out})
        rw.set_attr_int(node, "group", groups - deleted_in.size)
    elif groups == 1:
        weights = delete_positions(original, {0: computed_out, 1: deleted_in})
    else:
        weights = _cut_groups(original, groups, computed_out, deleted_in, node, rw)
    padded = padding_reaches_output(node, original.shape[2:])
    carried = padded and groups == 1 and rw.analysis.options.border_form == "carrier"
    if carried:
        weights = fold_into_carrier(node, rw, original, weights, deleted_in, deleted_out)
    rw.set_const(node, 1, weights)
    _rewrite_bias(node, rw, 2, computed_out, axis=0)
    if not _depthwise(groups, cin_g, cout) and not carried:
        fold_into_conv(node, rw, original, groups, padded, deleted_in, deleted_out,
                       constant_rows, original_bias)


def _cut_groups(weights: np.ndarray, groups: int, deleted_out: np.ndarray,
                deleted_in: np.ndarray, node: ir.Node, rw: Rewrite) -> np.ndarray:
    """Grouped conv: drop whole groups that lost every channel, then the same number of
    rows and (local) columns from each remaining group."""
    cout, cin_g = weights.shape[:2]
    cout_g = cout // groups
    out_kept = kept_mask(cout, deleted_out).reshape(groups, cout_g)
    in_kept = kept_mask(cin_g * groups, deleted_in).reshape(groups, cin_g)
    live = out_kept.any(axis=1)
    parts = [weights[k * cout_g:(k + 1) * cout_g][out_kept[k]][:, in_kept[k]]
             for k in range(groups) if live[k]]
    if not live.all():
        rw.set_attr_int(node, "group", int(live.sum()))
    return np.concatenate(parts, axis=0)


def _rewrite_bias(node: ir.Node, rw: Rewrite, index: int, deleted: np.ndarray, axis: int) -> None:
    bias = rw.const(input_at(node, index))
    if bias is not None and deleted.size and bias.ndim and bias.shape[axis] > 1:
        rw.set_const(node, index, delete_positions(bias, {axis: deleted}))


rule("Conv", rewrite=rewrite_conv, planes=True, own_constants=True)(analyse_conv)


# -- ConvTranspose ------------------------------------------------------------------------

def analyse_conv_transpose(node: ir.Node, walk: Walk) -> None:
    """out[o] <- b[o] + sum_c W[c, o] * in[c] (spread over space); depthwise: out[c] <- in[c].

    Overlapping windows make a constant input non-constant, so only zero inputs carry through.
    """
    x, w, b = node.inputs[0], node.inputs[1], input_at(node, 2)
    weights, bias = walk.const(w), walk.const(b)
    groups = attr_int(node, "group", 1)
    if weights is None or (b is not None and bias is None):
        walk.computed_weights_barrier(node, w if weights is None else b,
                                      "ConvTranspose weights or bias are not constants")
        return
    cin, cout_g = weights.shape[:2]
    depthwise = groups > 1 and groups == cin and cout_g == 1
    if groups > 1 and not depthwise:
        walk.barrier(node, "grouped ConvTranspose is not supported")
        return
    cout = cout_g * groups
    out = walk.new(node.outputs[0], 1, cout)
    source = _pinned_unless(walk, node, x, 1, cin, block_ok=False)
    nz = nonzero_along_last_axis(weights.reshape(cin, cout_g, -1)).T  # [cout_g, cin]
    bias = np.zeros(cout, np.float32) if bias is None else bias.astype(np.float32)
    in_known, in_const = _input_values(source, cin)
    not_zero = ~(in_known & (in_const == 0))
    if depthwise:
        if source is not None:
            walk.couple(source.ids[source.channel_at_position()], out.ids)
        else:
            walk.pin(out, node, "depthwise ConvTranspose of a tensor whose channels cannot be cut")
        row_unknown = nz[0] & not_zero
    else:
        if source is not None:
            nonfinite = None if walk.bounded(w) else \
                ~np.isfinite(weights.reshape(cin, cout_g, -1)).all(axis=2).T
            walk.reader(source, out, nz[:, source.positions[:, 0]], nonfinite_weights=None
                        if nonfinite is None else nonfinite[:, source.positions[:, 0]])
        row_unknown = (nz & not_zero[None, :]).any(axis=1)
    out.set_values(~row_unknown, bias)
    # rows by columns: output o reads input o (depthwise) or every input
    w3 = weights.reshape(cin, 1, -1) if depthwise else \
        weights.reshape(cin, cout_g, -1).transpose(1, 0, 2)
    in_zero = ~not_zero[:, None] if depthwise else ~not_zero
    out.mark_nonfinite(_unbounded_weight_rows(walk, w, w3, in_zero)
                       | _unbounded_rows(walk, b, bias, 0, cout))


def rewrite_conv_transpose(node: ir.Node, rw: Rewrite) -> None:
    deleted_out, deleted_in = rw.deleted(node.outputs[0]), rw.deleted(node.inputs[0])
    if deleted_out.size == 0 and deleted_in.size == 0:
        return
    weights = rw.const(node.inputs[1])
    groups = attr_int(node, "group", 1)
    if groups > 1:  # depthwise: rows are input = output channels
        rw.set_attr_int(node, "group", groups - deleted_in.size)
        weights = delete_positions(weights, {0: deleted_in})
    else:
        weights = delete_positions(weights, {0: deleted_in, 1: deleted_out})
    rw.set_const(node, 1, weights)
    _rewrite_bias(node, rw, 2, deleted_out, axis=0)


rule("ConvTranspose", rewrite=rewrite_conv_transpose, own_constants=True)(
    analyse_conv_transpose)


# -- Gemm and MatMul ----------------------------------------------------------------------

def _linear(node: ir.Node, walk: Walk, source: ChannelInfo | None, w_nk: np.ndarray,
            out: ChannelInfo, bias_known: np.ndarray, bias: np.ndarray, alpha: float,
            site: Site | None) -> None:
    """out[n] <- bias[n] + alpha * sum_k W[n, k] * in[k], a channel being a block of k's."""
    n_out = w_nk.shape[0]
    size = w_nk.dtype.itemsize
    walk.charge(out.ids, weight_bytes=w_nk.shape[1] * size)
    if source is None:
        nz_rows = (w_nk != 0).any(axis=1)
        out.set_values(bias_known & ~nz_rows, bias)
        out.mark_nonfinite(_unbounded_weight_rows(walk, node.inputs[1], w_nk[:, :, None],
                                                  np.zeros(w_nk.shape[1], bool)))
        return
    if np.array_equal(source.positions, identity_positions(source.n, source.block)):
        blocks = w_nk.reshape(n_out, source.n, source.block)  # a view, no copy
    else:
        blocks = w_nk[:, source.positions]
    nz = nonzero_along_last_axis(blocks)
    walk.charge(source.ids, weight_bytes=n_out * source.block * size,
                flops=node_flops(node) / source.n)
    foldable = _foldable(blocks[None], source.known[None], source.const[None])
    nonfinite = None if walk.bounded(node.inputs[1]) else ~np.isfinite(blocks).all(axis=2)
    walk.reader(source, out, nz, site, None if foldable is None else foldable[0], nonfinite)
    known, const = _row_values(nz[None], blocks[None], source.known[None], source.const[None],
                               np.zeros((1, source.n), bool), bias, alpha)
    out.set_values(known & bias_known, const)
    out.mark_nonfinite(_unbounded_weight_rows(walk, node.inputs[1], blocks, source.zero))


def analyse_gemm(node: ir.Node, walk: Walk) -> None:
    """out[n] <- beta * C[n] + alpha * sum_k B'[k, n] * A'[k] (A' = A or A^T, B' = B or B^T)."""
    a, b, c = node.inputs[0], node.inputs[1], input_at(node, 2)
    weights = walk.const(b)
    if weights is None or weights.ndim != 2:
        walk.computed_weights_barrier(node, b, "Gemm weights are not a constant matrix")
        return
    w_nk = weights if attr_int(node, "transB", 0) else weights.T
    out = walk.new(node.outputs[0], 1, w_nk.shape[0])
    source = _pinned_unless(walk, node, a, 0 if attr_int(node, "transA", 0) else 1,
                            w_nk.shape[1])
    beta = attr_float(node, "beta", 1.0)
    if c is None:
        bias_known, bias = np.ones(out.n, bool), np.zeros(out.n, np.float32)
    elif (c_array := walk.const(c)) is not None:
        c2 = c_array.reshape((1,) * (2 - c_array.ndim) + c_array.shape)
        bias_known, bias = per_channel_constant(c2, 1, out.positions)
        bias = (np.float32(beta) * bias).astype(np.float32)
    else:
        if walk.info(c) is not None:
            walk.pin(walk.info(c), node, "Gemm with a computed C")
        walk.pin(out, node, "Gemm with a computed C")
        bias_known, bias = np.zeros(out.n, bool), np.zeros(out.n, np.float32)
    has_bias = c is not None and walk.const(c) is not None and walk.const(c).shape[-1:] == (out.n,)
    site = Site(node, "bias fold",
                Cost(weight_bytes=0 if has_bias else out.n * weights.dtype.itemsize),
                per_position=0 if has_bias else weights.dtype.itemsize, positions=out.n)
    _linear(node, walk, source, w_nk, out, bias_known, bias, attr_float(node, "alpha", 1.0), site)
    out.mark_nonfinite(_unbounded_rows(walk, c, walk.const(c), -1, out.n))  # C: n is last


def rewrite_gemm(node: ir.Node, rw: Rewrite) -> None:
    deleted_out, deleted_in = rw.deleted(node.outputs[0]), rw.deleted(node.inputs[0])
    if deleted_out.size == 0 and deleted_in.size == 0:
        return
    original = rw.const(node.inputs[1])
    out_axis, in_axis = (0, 1) if attr_int(node, "transB", 0) else (1, 0)
    weights = delete_positions(original, {out_axis: deleted_out, in_axis: deleted_in})
    rw.set_const(node, 1, weights)
    _rewrite_bias(node, rw, 2, deleted_out, axis=-1)
    fold_into_gemm(node, rw, original if out_axis == 0 else original.T, deleted_in, deleted_out)


rule("Gemm", rewrite=rewrite_gemm, own_constants=True)(analyse_gemm)


def _matrix(weights: np.ndarray | None) -> np.ndarray | None:
    """A MatMul's constant right operand as [K, N], when it is one matrix for every batch."""
    if weights is None or weights.ndim < 2 or any(d != 1 for d in weights.shape[:-2]):
        return None
    return weights.reshape(weights.shape[-2:])


def analyse_matmul(node: ir.Node, walk: Walk) -> None:
    """out[..., n] <- sum_k B[k, n] * A[..., k] for a constant B."""
    a, b = node.inputs
    weights = _matrix(walk.const(b))
    # the ranks place the channel axes (the dims may be unknown after a custom op)
    a_shape, out_shape = walk.dims(a), walk.dims(node.outputs[0])
    if weights is None and walk.const(b) is None:
        _activation_matmul(node, walk)
        return
    if weights is None:
        walk.barrier(node, "MatMul without a constant weight matrix")
        return
    if a_shape is None or out_shape is None or len(a_shape) < 2:
        walk.barrier(node, "MatMul shapes unknown")
        return
    out = walk.new(node.outputs[0], len(out_shape) - 1, weights.shape[1])
    source = _pinned_unless(walk, node, a, len(a_shape) - 1, weights.shape[0])
    zeros = np.zeros(out.n, np.float32)
    static = walk.shape(node.outputs[0])  # what folding adds is priced by the output's size
    site = None if static is None else \
        Site(node, "bias fold", _added_output(out.n * weights.dtype.itemsize, static),
             per_position=weights.dtype.itemsize, positions=out.n)
    _linear(node, walk, source, weights.T, out, np.ones(out.n, bool), zeros, 1.0, site)


def _landing(info: ChannelInfo, rank: int, out_rank: int, left: bool) -> int | None:
    """The output axis a MatMul operand's channel axis becomes: a batch axis stays one, A's
    rows and B's columns carry over; None for the contracted axis."""
    if info.axis < rank - 2:
        return info.axis + out_rank - rank
    if left:
        return out_rank - 2 if info.axis == rank - 2 else None
    return out_rank - 1 if info.axis == rank - 1 else None


def _activation_matmul(node: ir.Node, walk: Walk) -> None:
    """out[c] <- A[c] @ B[c] for channels on a batch axis (attention heads: scores and context
    are per head); A's row and B's column channels carry over; a contracted channel axis mixes
    every channel (kept). A zero channel times a finite one is zero."""
    values = list(node.inputs[:2])
    infos = [walk.info(v) for v in values]
    shapes = [walk.shape(v) for v in values]
    out_shape = walk.shape(node.outputs[0])
    if all(i is None for i in infos):
        return
    if out_shape is None or any(s is None or len(s) < 2 for s in shapes):
        walk.barrier(node, "MatMul shapes unknown")
        return
    rank = len(out_shape)
    lands: list[int | None] = []
    for k, info in enumerate(infos):
        land = None if info is None else _landing(info, len(shapes[k]), rank, k == 0)
        if info is not None and land is None:
            walk.pin(info, node, "MatMul of two activations contracts the channel axis")
        lands.append(land)
    carried = [k for k in (0, 1) if lands[k] is not None]
    if not carried:
        return
    first, axis = carried[0], lands[carried[0]]
    if len(carried) == 2 and lands[1] != axis:  # rows of A and columns of B: keep B's
        walk.pin(infos[1], node, "MatMul operands hold channels on different axes")
        carried = [0]
    lead = infos[first]
    out = walk.like(node.outputs[0], lead, axis=axis)
    zero = lead.zero.copy()
    if len(carried) == 2:
        other = infos[1]
        if other.size != lead.size:
            walk.pin(other, node, "MatMul operands' channel axes do not line up")
            walk.pin(out, node, "MatMul operands' channel axes do not line up")
            return
        # heads line up by position (a kv head repeated for its q heads covers several)
        walk.couple(other.ids[other.channel_at_position()], lead.ids[lead.channel_at_position()])
        zero |= _zero_under(other, lead)
    elif axis < rank - 2:  # a batch axis: the other operand must broadcast along it
        k = 1 - first
        dim = shapes[k][axis - rank + len(shapes[k])] if axis - rank + len(shapes[k]) >= 0 else 1
        if dim != 1:
            walk.pin(out, node, "MatMul operand whose channels cannot be cut")
    out.set_values(zero, np.zeros(out.n, np.float32))


def _zero_under(other: ChannelInfo, lead: ChannelInfo) -> np.ndarray:
    """Per channel of `lead`: are all the `other` channels at its positions zero?"""
    zero_at = other.zero[other.channel_at_position()]
    return zero_at[lead.positions].all(axis=1)


def rewrite_matmul(node: ir.Node, rw: Rewrite) -> None:
    deleted_out, deleted_in = rw.deleted(node.outputs[0]), rw.deleted(node.inputs[0])
    if deleted_out.size == 0 and deleted_in.size == 0:
        return
    if _matrix(rw.const(node.inputs[1])) is None:  # two activations: no constant to slice
        return
    original = rw.const(node.inputs[1])
    weights = delete_positions(original, {-1: deleted_out, -2: deleted_in})
    rw.set_const(node, 1, weights)
    fold_into_matmul(node, rw, _matrix(original), deleted_in, deleted_out)


rule("MatMul", rewrite=rewrite_matmul, own_constants=True)(analyse_matmul)
