"""Rewrites of the full cut: fold cut constant channels into their readers, and reinsert an
operand's cut constant channels where an op still needs them (one-sided residual cuts).

Each works from the analysis' facts (the channel's known constant at that tensor) and keeps
the model numerically the same: a reader's output gains exactly the contribution the cut
channel made, computed in float64 and stored in the weights' dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Cost, Site
from channelcut.channels import ChannelInfo, identity_positions
from channelcut.rewrite import Rewrite, kept_mask
from channelcut.graph import attr_float, declared_sizes_fixed, input_at

if TYPE_CHECKING:
    from channelcut.options import Options

_CONV_GEOMETRY = ("auto_pad", "dilations", "kernel_shape", "pads", "strides")
_NO_ROWS = np.zeros(0, np.int64)


def folded_inputs(rw: Rewrite, value: ir.Value, deleted: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Of the positions cut from `value`, those holding a non-zero constant, and the constants."""
    info = rw.info(value)
    if info is None or deleted.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    known = info.by_position(info.known)[deleted]
    const = info.by_position(info.const)[deleted].astype(np.float64)
    keep = known & (const != 0)
    return deleted[keep], const[keep]


def fold_into_conv(node: ir.Node, rw: Rewrite, weights: np.ndarray, groups: int,
                   padded: bool, deleted_in: np.ndarray, deleted_out: np.ndarray,
                   constant_rows: np.ndarray = _NO_ROWS, bias: np.ndarray | None = None) -> None:
    """out[o] += sum_c v_c * (W[o, c] applied to a plane of ones): into the bias when no
    padding reaches the input, else as a border map Conv(ones, U) added to the output. Where
    the input's constant channels are maps (v_c times the input's plane P), Conv(P, U).

    `constant_rows`: output positions the conv no longer computes (the decision's: each is
    its bias `bias[o]` there), put back at the border map's Add (after the conv when there is
    no map to add)."""
    positions, values = folded_inputs(rw, node.inputs[0], deleted_in)
    folded = np.zeros(0)
    if positions.size:
        cout, cin_g = weights.shape[:2]
        in_group = (np.arange(cout) // (cout // groups))[:, None] == \
            (positions // cin_g)[None, :]
        coeff = np.where(in_group, values[None, :], 0.0)
        read = weights[:, positions % cin_g].astype(np.float64)
        # rows of other groups do not read these channels: their weights must not count, not
        # even as NaN * 0
        read = np.where(in_group.reshape(in_group.shape + (1,) * (read.ndim - 2)), read, 0.0)
        folded = np.delete(np.einsum("of...,of->o...", read, coeff), deleted_out, axis=0)
    constants = np.zeros(weights.shape[0]) if bias is None else \
        np.broadcast_to(bias.reshape(-1).astype(np.float64), weights.shape[:1])
    if not folded.any():  # no channel folded, or only into rows that read it with zero weights
        if constant_rows.size:
            _rows_after_conv(node, rw, np.union1d(deleted_out, constant_rows), constant_rows,
                             constants)
        return
    plane = rw.info(node.inputs[0]).plane
    if not padded and plane is None:
        add_to_bias(node, rw, 2, folded.reshape(folded.shape[0], -1).sum(axis=1))
        return
    stem = node.name or "conv"
    if plane is None:
        spatial = rw.shape(node.inputs[0])[2:]
        shape = rw.new_const(f"{stem}_ones_shape", np.array([1, 1, *spatial], np.int64))
        ones = rw.add_node(node, "ConstantOfShape", [shape],
                           {"value": np.ones(1, dtype=weights.dtype)})
    else:  # the folded channels are constants times this map
        ones = rw.new_const(f"{stem}_plane", plane[None, None].astype(weights.dtype))
    border_weights = folded[:, None].astype(weights.dtype)
    kept_out = np.flatnonzero(kept_mask(weights.shape[0], deleted_out))
    raw_rows = np.searchsorted(kept_out, constant_rows)  # among the rows the output keeps
    border_rows = _zero_border_rows(node, rw, border_weights, deleted_out, raw_rows)
    kernel = rw.new_const(f"{stem}_border", np.delete(border_weights, border_rows, axis=0))
    geometry = {k: node.attributes[k] for k in _CONV_GEOMETRY if k in node.attributes}
    border = rw.add_node(node, "Conv", [ones, kernel], geometry)
    raw = node.outputs[0]
    border.shape, border.type = raw.shape, raw.type  # as rules see shapes: before the cut
    out = rw.append_after(raw, "Add", [border])
    if raw_rows.size or border_rows.size:
        _reinsert_constant_rows(rw, out, raw, border, raw_rows, border_rows,
                                constants[kept_out], border_weights.shape[0])


def _rows_after_conv(node: ir.Node, rw: Rewrite, computed_out: np.ndarray,
                     constant_rows: np.ndarray, constants: np.ndarray) -> None:
    """The conv computes without the output positions `computed_out`: put those at
    `constant_rows` back after it, each its constant (the decision's rows whose border map
    came to nothing: the folded terms cancel)."""
    def after(op_type: str, tail: ir.Value, inputs: list[ir.Value],
              attributes: dict[str, object] | None = None) -> ir.Value:
        return rw.append_after(tail, op_type, inputs, attributes)

    _reinsertion(rw, f"{node.name or 'conv'}_out", node.outputs[0], computed_out, constant_rows,
                 after, _row_info(constants.size, constants))


def _zero_border_rows(node: ir.Node, rw: Rewrite, border_weights: np.ndarray,
                      deleted_out: np.ndarray, raw_rows: np.ndarray = _NO_ROWS) -> np.ndarray:
    """Of the kept rows of a border map, those that are zero (they read no folded constant),
    to be left out of it and put back in the Add as zeros where that pays under the
    objective. A cut of the cut model would see them as zero operand channels of that Add and
    take them: the first cut must (the fixed point). The costs are those that cut would count:
    the rows' kernels and FLOPs against a reinsertion; a tensor keeps at least one channel
    (its first). Zero rows among `raw_rows` (rows the conv no longer computes: they come back
    after the Add anyway) go at no cost: the Add adds a smaller map."""
    options = rw.analysis.options
    shape = rw.shape(node.outputs[0])
    if shape is None:
        return _NO_ROWS
    rows = border_weights.shape[0]
    zero = np.flatnonzero(~(border_weights.reshape(rows, -1) != 0).any(axis=1))
    free = _kept_aligned(np.intersect1d(zero, raw_rows), rows, options)
    gone = _kept_aligned(zero, rows, options)
    if np.setdiff1d(gone, free).size == 0:
        return free
    spatial = math.prod(shape[2:])  # the border map: batch 1
    kernel = math.prod(border_weights.shape[2:])
    saved = Cost(weight_bytes=kernel * border_weights.dtype.itemsize * gone.size,
                 flops=2 * spatial * kernel * gone.size)
    return gone if _zero_rows_pay(node, rw, shape, 1, gone, saved, deleted_out) else free


def _zero_rows_pay(node: ir.Node, rw: Rewrite, shape: tuple[int, ...], axis: int,
                   gone: np.ndarray, saved: Cost, deleted_out: np.ndarray) -> bool:
    """Does leaving the zero rows `gone` out of an operand of a fold's Add, put back as zeros
    before it, pay under the objective, as a cut of the cut model would count it (a
    reinsertion at the Add of the node's output, `shape` with channels on `axis`, against
    what computing the rows costs: `saved`)? Not where the target makes no reinsertion, or
    cannot write one there. Records the reinsertion when it does."""
    from channelcut.options import pays  # the decision's cost model
    from channelcut.solve import SiteUse

    options = rw.analysis.options
    if not options.allows(Site(node, "reinsert", Cost(nodes=3))) or \
            not options.writes_reinsertion(shape, axis):  # (the rank-3 MatMul's, for rknn)
        return False
    channels, elements = shape[axis], float(math.prod(shape))
    # the Gather order and the constants per kept channel, the Pad amounts (as the Add's)
    reinsertion = Site(node, "reinsert", Cost(weight_bytes=12.0 * channels + 16 * len(shape),
                                              flops=elements, moved=2 * elements, nodes=3),
                       per_position=12, positions=channels)
    added = options.cost(reinsertion, int(deleted_out.size))
    if not pays(saved, added, options.objective, options):
        return False
    rw.analysis.sites.append(SiteUse(node.name or "", "Add", "reinsert", int(gone.size), added,
                                     saved))
    return True


def _kept_aligned(gone: np.ndarray, rows: int, options: Options) -> np.ndarray:
    """Of the rows an operand of the Add could go without, those it may lose: it keeps at
    least one row, and a multiple of the alignment that applies to it, as the decision keeps
    for every tensor (channelcut.solve: the first candidates stay)."""
    if gone.size == rows:
        gone = gone[1:]
    readers, align = options.align_readers, options.alignment_of(rows)
    if align > 1 and (not readers or "Add" in readers):
        gone = gone[-(rows - gone.size) % align:]
    return gone


def _reinsert_constant_rows(rw: Rewrite, out: ir.Value, raw: ir.Value, border: ir.Value,
                            raw_rows: np.ndarray, border_rows: np.ndarray,
                            bias: np.ndarray | None, rows: int) -> None:
    """raw + border, each without its rows: what both lack comes back after the Add (the bias
    there; the border is zero), the rest before it into the operand that lacks it."""
    add = out.producer()
    constants = np.zeros(rows) if bias is None else bias.reshape(-1).astype(np.float64)
    both = np.intersect1d(raw_rows, border_rows)

    def before_add(op_type: str, tail: ir.Value, inputs: list[ir.Value],
                   attributes: dict[str, object] | None = None) -> ir.Value:
        return rw.add_node(add, op_type, [tail, *inputs], attributes)

    def after(op_type: str, tail: ir.Value, inputs: list[ir.Value],
              attributes: dict[str, object] | None = None) -> ir.Value:
        return rw.append_after(tail, op_type, inputs, attributes)

    for index, value, gone, values in ((0, raw, raw_rows, constants),
                                       (1, border, border_rows, np.zeros(rows))):
        needed = np.setdiff1d(gone, both)
        if needed.size:
            full = _reinsertion(rw, f"{add.name}_in{index}", value, gone, needed, before_add,
                                _row_info(rows, values))
            add.replace_input_with(index, full)
    if both.size:
        _reinsertion(rw, f"{add.name}_out", out, both, both, after, _row_info(rows, constants))


def _row_info(rows: int, constants: np.ndarray) -> ChannelInfo:
    """The layout of a conv's kept rows, each a known constant (what a reinsertion reads)."""
    info = ChannelInfo(axis=1, positions=identity_positions(rows), base=0)
    info.set_values(np.ones(rows, bool), constants)
    return info


def fold_into_carrier(node: ir.Node, rw: Rewrite, original: np.ndarray, weights: np.ndarray,
                      deleted_in: np.ndarray, deleted_out: np.ndarray) -> np.ndarray:
    """W'[:, p] += sum_c (v_c / v_p) W[:, c] for the cut constant channels c, p a kept non-zero
    constant channel of the input (the carrier; the solver keeps one): zero padding reaches
    every constant channel alike, so channel c is v_c / v_p times channel p everywhere. A
    border fold with no op added (one conv group). Returns the cut weights `weights` so."""
    positions, values = folded_inputs(rw, node.inputs[0], deleted_in)
    if positions.size == 0:
        return weights
    folded = np.delete(np.einsum("of...,f->o...", original[:, positions].astype(np.float64),
                                 values), deleted_out, axis=0)
    if not folded.any():  # only rows that read the channels with zero weights are left
        return weights
    info = rw.info(node.inputs[0])
    const = info.by_position(info.const).astype(np.float64)
    carrier = int(np.flatnonzero(kept_mask(info.size, deleted_in) & info.by_position(info.known)
                                 & (const != 0))[0])  # the solver kept one for this fold
    column = carrier - int(np.searchsorted(deleted_in, carrier))
    result = weights.astype(np.float64)
    result[:, column] += folded / const[carrier]
    return result.astype(weights.dtype)


def add_to_bias(node: ir.Node, rw: Rewrite, index: int, delta: np.ndarray) -> None:
    """bias += delta (creating the bias input when the node has none)."""
    bias = rw.const(input_at(node, index))
    dtype = rw.const(node.inputs[1]).dtype
    new = delta if bias is None else bias.astype(np.float64) + delta
    rw.set_const(node, index, np.asarray(new, dtype=dtype))


def fold_into_gemm(node: ir.Node, rw: Rewrite, w_nk: np.ndarray, deleted_in: np.ndarray,
                   deleted_out: np.ndarray) -> None:
    """C += alpha / beta * sum_k W[n, k] v_k (C created, or beta set to 1, when needed)."""
    positions, values = folded_inputs(rw, node.inputs[0], deleted_in)
    if positions.size == 0:
        return
    delta = attr_float(node, "alpha", 1.0) * (w_nk[:, positions].astype(np.float64) @ values)
    delta = np.delete(delta, deleted_out)
    if not delta.any():
        return
    beta = attr_float(node, "beta", 1.0)
    if input_at(node, 2) is None or beta == 0:
        node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        rw.set_const(node, 2, delta.astype(w_nk.dtype))
    else:
        add_to_bias(node, rw, 2, delta / beta)


def fold_into_matmul(node: ir.Node, rw: Rewrite, weights: np.ndarray, deleted_in: np.ndarray,
                     deleted_out: np.ndarray) -> None:
    """out[..., n] += sum_k v_k B[k, n], as an Add after the MatMul. Kept columns that read
    only kept inputs of known value (zero weights, or a constant channel the cut keeps, say
    for a conv group) are then constants: the MatMul computes without them, they come back as
    zeros before the Add, and the Add gives them their value, where that pays (a cut of the
    cut model would take them there: the fixed point)."""
    positions, values = folded_inputs(rw, node.inputs[0], deleted_in)
    if positions.size == 0:
        return
    delta = np.delete(values @ weights[positions].astype(np.float64), deleted_out)
    if not delta.any():
        return
    gone, column_values = _constant_matmul_columns(node, rw, weights, deleted_in, deleted_out)
    delta[gone] += column_values[gone]  # the Add gives them their whole value
    constant = rw.new_const(f"{node.name or 'matmul'}_folded", delta.astype(weights.dtype))
    out = rw.append_after(node.outputs[0], "Add", [constant])
    if gone.size == 0:
        return
    raw, add = node.outputs[0], out.producer()
    rw.set_const(node, 1, np.delete(rw.const(node.inputs[1]), gone, axis=-1))
    rank = len(rw.shape(raw))
    zeros = ChannelInfo(axis=rank - 1, positions=identity_positions(delta.size), base=0)
    zeros.set_values(np.ones(delta.size, bool), np.zeros(delta.size))

    def before_add(op_type: str, tail: ir.Value, inputs: list[ir.Value],
                   attributes: dict[str, object] | None = None) -> ir.Value:
        return rw.add_node(add, op_type, [tail, *inputs], attributes)

    add.replace_input_with(0, _reinsertion(rw, f"{add.name}_in0", raw, gone, gone, before_add,
                                           zeros))


def _constant_matmul_columns(node: ir.Node, rw: Rewrite, weights: np.ndarray,
                             deleted_in: np.ndarray, deleted_out: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Of the MatMul's kept columns (weights [K, N]), those whose non-zero weights on the kept
    inputs meet only inputs of known value, when the inputs are finite (0 x NaN is NaN) and
    leaving them out pays; and each kept column's value from those inputs (float64)."""
    options = rw.analysis.options
    shape, info = rw.shape(node.outputs[0]), rw.info(node.inputs[0])
    kept = np.delete(np.delete(weights, deleted_in, axis=0), deleted_out, axis=1)
    nothing = (_NO_ROWS, np.zeros(kept.shape[1]))
    if shape is None or info is None:
        return nothing
    if not np.delete(info.by_position(info.finite), deleted_in).all():
        return nothing
    known = np.delete(info.by_position(info.known), deleted_in)
    const = np.delete(info.by_position(info.const), deleted_in).astype(np.float64)
    computed = (kept[~known] != 0).any(axis=0)  # columns that read a computed input
    gone = _kept_aligned(np.flatnonzero(~computed), kept.shape[1], options)
    if gone.size == 0:
        return nothing
    rows = float(math.prod(shape[:-1]))
    saved = Cost(weight_bytes=kept.shape[0] * weights.dtype.itemsize * gone.size,
                 flops=2 * rows * kept.shape[0] * gone.size)
    if not _zero_rows_pay(node, rw, shape, len(shape) - 1, gone, saved, deleted_out):
        return nothing
    return gone, const[known] @ kept[known].astype(np.float64)


def reinsert(node: ir.Node, operand: ir.Value, rw: Rewrite, needed: np.ndarray) -> None:
    """Give the operand back the constant channels at positions `needed` that the cut took from
    it but the node still computes with. Every input of the node that is this operand reads
    the result."""
    index = next(i for i, value in enumerate(node.inputs) if value is operand)

    def before_node(op_type: str, tail: ir.Value, inputs: list[ir.Value],
                    attributes: dict[str, object] | None = None) -> ir.Value:
        return rw.add_node(node, op_type, [tail, *inputs], attributes)

    full = _reinsertion(rw, f"{node.name or node.op_type}_in{index}", operand,
                        rw.deleted(operand), needed, before_node)
    for i, value in enumerate(node.inputs):
        if value is operand:
            node.replace_input_with(i, full)


def reinsert_output(node: ir.Node, rw: Rewrite, computed_without: np.ndarray,
                    needed: np.ndarray) -> None:
    """The node computes without the positions `computed_without` of its output; give every
    reader back those at `needed` (known constants there) after it."""
    def after(op_type: str, tail: ir.Value, inputs: list[ir.Value],
              attributes: dict[str, object] | None = None) -> ir.Value:
        return rw.append_after(tail, op_type, inputs, attributes)

    out = node.outputs[0]
    _reinsertion(rw, f"{node.name or node.op_type}_out", out, computed_without, needed, after)


def _constant_block(rw: Rewrite, stem: str, value: ir.Value, axis: int,
                    constants: np.ndarray, dtype: np.dtype) -> tuple[ir.Value, ir.Value] | None:
    """The constants and the shape of a block of `value`'s size holding them along `axis`
    (an Expand of the two, which ONNX Runtime computes once, when it loads the model); None
    where a graph input's size is not fixed (an Expand to the analysed size would bake it in)
    or the shape is unknown."""
    shape = rw.shape(value)
    if shape is None or not declared_sizes_fixed(rw.graph):
        return None
    size = [1] * len(shape)
    size[axis] = constants.size
    full = list(shape)
    full[axis] = constants.size
    return (rw.new_const(f"{stem}_constants", constants.astype(dtype).reshape(size)),
            rw.new_const(f"{stem}_shape", np.array(full, np.int64)))


def _concat(rw: Rewrite, step: Callable[..., ir.Value], value: ir.Value,
            block: tuple[ir.Value, ir.Value], axis: int) -> ir.Value:
    """Concat(value, Expand(*block)) along `axis`, made with `step`."""
    constants, shape = block
    full = step("Concat", value, [shape], {"axis": axis})
    concat = full.producer()
    concat.replace_input_with(1, rw.add_node(concat, "Expand", [constants, shape]))
    return full


def _reinsertion(rw: Rewrite, stem: str, value: ir.Value, deleted: np.ndarray,
                 needed: np.ndarray, step: Callable[..., ir.Value],
                 info: ChannelInfo | None = None) -> ir.Value:
    """`value` (without the positions `deleted` along its channel axis) with the known constants
    at `needed` back in place: Pad zeros around the present channels when they stay in one run,
    else Pad zeros at the end of the channel axis and Gather every position into place; then
    Add the constants (when any is non-zero). In the "concat" form (ort-cpu), non-zero
    constants come as a block after the present channels instead, Concat(value,
    Expand(constants)), then the Gather (none when they all follow the present channels): a
    pass over the output fewer (ONNX Runtime expands the constants once, at load; a
    32 -> 64-channel reinsertion at 227x227: 4.2 ms against 5.6). `step(op_type, tail, inputs,
    attributes)` applies each op to the tensor built so far; returns the last one's output.
    `info`: the channels of `value` (default: the analysis')."""
    info = info or rw.info(value)
    axis, rank = info.axis, len(rw.shape(value))
    present = np.flatnonzero(kept_mask(info.size, deleted))
    wanted = np.union1d(present, needed)  # the positions the readers see, in order
    slot = np.empty(info.size, np.int64)
    slot[present] = np.arange(present.size)
    slot[needed] = present.size + np.arange(needed.size)
    values = info.by_position(info.const)[wanted] * np.isin(wanted, needed)
    dtype = value.dtype.numpy() if value.dtype is not None else np.float32
    if rw.analysis.options.reinsert_form == "conv" and rank == 4 and axis == 1:
        # one 1x1 Conv: out[j] = in[slot[j]] for the present channels, the constant otherwise
        order = slot[wanted]
        onehot = np.zeros((wanted.size, present.size, 1, 1), dtype)
        rows = np.flatnonzero(order < present.size)
        onehot[rows, order[rows], 0, 0] = 1
        return step("Conv", value, [rw.new_const(f"{stem}_onehot", onehot),
                                    rw.new_const(f"{stem}_constants", values.astype(dtype))])
    pads = np.zeros(2 * rank, np.int64)
    at = np.searchsorted(wanted, present)  # where the present channels land
    # in one run, the constants go around it and a Pad alone puts every channel in place (an
    # op fewer; and a cut of the cut model follows a Pad's channels, not a Gather's)
    one_run = present.size > 0 and at[-1] - at[0] == present.size - 1
    if rw.analysis.options.reinsert_form == "concat" and np.any(values != 0) and \
            present.size and (at[0] == 0 or not one_run):
        block = _constant_block(rw, stem, value, axis, info.by_position(info.const)[needed],
                                dtype)
        if block is not None:
            full = _concat(rw, step, value, block, axis)
            if one_run:  # the constants all after the present channels: in place already
                return full
            return step("Gather", full, [rw.new_const(f"{stem}_order", slot[wanted])],
                        {"axis": axis})
    if one_run:
        pads[axis], pads[rank + axis] = at[0], wanted.size - 1 - at[-1]
    else:
        pads[rank + axis] = needed.size
    full = step("Pad", value, [rw.new_const(f"{stem}_pads", pads)])
    if not one_run:
        full = step("Gather", full, [rw.new_const(f"{stem}_order", slot[wanted])],
                    {"axis": axis})
    if np.any(values != 0):
        shape = [1] * rank
        shape[axis] = wanted.size
        constants = rw.new_const(f"{stem}_constants", values.astype(dtype).reshape(shape))
        full = step("Add", full, [constants])
    return full
