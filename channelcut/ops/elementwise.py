"""Elementwise ops: out[c] <- f(in_1[c], in_2[c], ...), with numpy-style broadcasting.

The inputs and the output of an elementwise op share channels (one coupled group per channel).
A constant operand with a full channel axis is sliced along it when channels go. Known channel
values are pushed through `f` in float32, the way the runtime computes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Cost, Site, Walk
from channelcut.channels import HUGE, ChannelInfo, per_channel_constant
from channelcut.finite import DOMAIN_EDGE, not_above_zero, pow_base_outside, pow_overflows
from channelcut.fold import reinsert, reinsert_output
from channelcut.graph import attr_float, attr_int, attr_string, input_at, opset_version
from channelcut.ops import rule
from channelcut.rewrite import Rewrite, delete_positions

if TYPE_CHECKING:
    from channelcut.ops.bounds import Interval

Values = tuple[np.ndarray, np.ndarray]  # (known, const) per channel

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x: np.ndarray, node: ir.Node) -> np.ndarray:
    if attr_string(node, "approximate", "none") == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x)


# op type -> f(x, node): the op applied to a channel's constant value.
UNARY: dict[str, Callable[[np.ndarray, ir.Node], np.ndarray]] = {
    "Relu": lambda x, n: np.maximum(x, 0),
    "LeakyRelu": lambda x, n: np.where(x < 0, x * attr_float(n, "alpha", 0.01), x),
    "ThresholdedRelu": lambda x, n: np.where(x > attr_float(n, "alpha", 1.0), x, 0),
    "Elu": lambda x, n: np.where(x < 0, attr_float(n, "alpha", 1.0) * np.expm1(x), x),
    "Celu": lambda x, n: (np.maximum(x, 0) + np.minimum(
        0, attr_float(n, "alpha", 1.0) * np.expm1(x / attr_float(n, "alpha", 1.0)))),
    "Selu": lambda x, n: attr_float(n, "gamma", 1.0507009873554805) * np.where(
        x <= 0, attr_float(n, "alpha", 1.6732632423543772) * np.expm1(x), x),
    "Sigmoid": lambda x, n: 1 / (1 + np.exp(-x)),
    "HardSigmoid": lambda x, n: np.clip(
        attr_float(n, "alpha", 0.2) * x + attr_float(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda x, n: x * np.clip(x / 6 + 0.5, 0, 1),
    "Tanh": lambda x, n: np.tanh(x),
    "Softplus": lambda x, n: _softplus(x),
    "Softsign": lambda x, n: x / (1 + np.abs(x)),
    "Mish": lambda x, n: x * np.tanh(_softplus(x)),
    "Gelu": _gelu,
    "Erf": lambda x, n: _erf(x),
    "Neg": lambda x, n: -x,
    "Abs": lambda x, n: np.abs(x),
    "Exp": lambda x, n: np.exp(x),
    "Log": lambda x, n: np.log(x),
    "Sqrt": lambda x, n: np.sqrt(x),
    "Reciprocal": lambda x, n: 1 / x,
    "Floor": lambda x, n: np.floor(x),
    "Ceil": lambda x, n: np.ceil(x),
    "Round": lambda x, n: np.round(x),
    "Sign": lambda x, n: np.sign(x),
    "Sin": lambda x, n: np.sin(x),
    "Cos": lambda x, n: np.cos(x),
    "Identity": lambda x, n: x,
}


def apply(fn: Callable[[np.ndarray], np.ndarray], known: np.ndarray, const: np.ndarray,
          nan_unknown: bool = False) -> Values:
    """Push known constants through `fn` in float32. A NaN or Inf result is what the channel
    carries (ChannelInfo.set_values records it as such, never as a constant); with
    `nan_unknown`, `fn` marks the channels it cannot tell with NaN instead."""
    with np.errstate(all="ignore"):
        out = np.asarray(fn(const.astype(np.float32)), dtype=np.float32)
    return (known & ~np.isnan(out) if nan_unknown else known), out


def transparent(node: ir.Node, walk: Walk, fn: Callable[[np.ndarray], np.ndarray] | None,
                nan_unknown: bool = False) -> ChannelInfo | None:
    """out[c] <- fn(in[c]) for the first input and first output; fn None: values unknown."""
    source = walk.info(node.inputs[0])
    if source is None:
        return None
    out = walk.like(node.outputs[0], source)
    if fn is None:
        out.set_values(np.zeros(out.n, bool), out.const)
    else:
        out.set_values(*apply(fn, source.known, source.const, nan_unknown))
    return out


def _domain_checked(node: ir.Node, walk: Walk) -> None:
    """A UNARY op with a DOMAIN_EDGE: the output channels whose input interval reaches past
    the edge may be NaN or Inf (known ones compute theirs in `apply`)."""
    out = transparent(node, walk, lambda x: UNARY[node.op_type](x, node))
    if out is not None:
        source = walk.info(node.inputs[0])
        out.mark_nonfinite(DOMAIN_EDGE[node.op_type](source.lo, source.hi) & ~source.known)


for _op, _fn in UNARY.items():
    rule(_op)(_domain_checked if _op in DOMAIN_EDGE else
              lambda node, walk, _fn=_fn: transparent(node, walk, lambda x: _fn(x, node)))


@rule("Clip")
def analyse_clip(node: ir.Node, walk: Walk) -> None:
    """out[c] <- clip(in[c], min, max); bounds come from inputs (opset 11+) or attributes."""
    if len(node.inputs) > 1 or "min" not in node.attributes:
        bounds = [walk.const(input_at(node, i)) for i in (1, 2)]
        absent = [input_at(node, i) is None for i in (1, 2)]
        if any(b is None and not gone for b, gone in zip(bounds, absent)):
            transparent(node, walk, None)  # dynamic bounds: channels still line up
            return
        lo = -np.inf if bounds[0] is None else float(np.asarray(bounds[0]).reshape(-1)[0])
        hi = np.inf if bounds[1] is None else float(np.asarray(bounds[1]).reshape(-1)[0])
    else:
        lo = attr_float(node, "min", -3.4028234663852886e38)
        hi = attr_float(node, "max", 3.4028234663852886e38)
    transparent(node, walk, lambda x: np.clip(x, lo, hi))


@rule("Cast")
def analyse_cast(node: ir.Node, walk: Walk) -> None:
    """out[c] <- cast(in[c]); only casts between float types keep channels apart."""
    target = ir.DataType(attr_int(node, "to", 0))
    if not target.is_floating_point():
        walk.barrier(node, "Cast to a non-float type")
        return
    dtype = target.numpy()
    transparent(node, walk, lambda x: x.astype(dtype).astype(np.float32))


# -- broadcasting ops -----------------------------------------------------------------------

def _all_known(fn: Callable[..., np.ndarray]) -> Callable[[list[Values]], Values]:
    """The result is known where every operand is known."""

    def combine(operands: list[Values]) -> Values:
        known = np.logical_and.reduce([k for k, _ in operands])
        return apply(lambda _: fn(*[c for _, c in operands]), known, operands[0][1])

    return combine


def _mul(operands: list[Values]) -> Values:
    """A product is known where all factors are, and zero where any factor is zero."""
    known, const = _all_known(lambda *cs: np.prod(np.stack(cs), axis=0))(operands)
    zero = np.logical_or.reduce([k & (c == 0) for k, c in operands])
    return known | zero, np.where(zero, 0, const).astype(np.float32)


def _prelu(operands: list[Values]) -> Values:
    return _all_known(lambda x, slope: np.where(x < 0, slope * x, x))(operands)


BROADCAST: dict[str, Callable[[list[Values]], Values]] = {
    "Add": _all_known(lambda a, b: a + b),
    "Sub": _all_known(lambda a, b: a - b),
    "Mul": _mul,
    "Div": _all_known(lambda a, b: a / b),
    "Pow": _all_known(lambda a, b: np.power(a, b)),
    "Max": _all_known(lambda *cs: np.max(np.stack(cs), axis=0)),
    "Min": _all_known(lambda *cs: np.min(np.stack(cs), axis=0)),
    "Sum": _all_known(lambda *cs: np.sum(np.stack(cs), axis=0)),
    "Mean": _all_known(lambda *cs: np.mean(np.stack(cs), axis=0)),
    "PRelu": _prelu,
}


def _aligned_axis(out_axis: int, out_rank: int, shape: tuple[int, ...]) -> int:
    """Numpy broadcasting aligns shapes from the right."""
    return out_axis - (out_rank - len(shape))


def analyse_broadcast(node: ir.Node, walk: Walk) -> None:
    """out[c] <- f(a[c], b[c], ...): inputs with channels on the output's axis are coupled to it;
    a constant operand is folded in per channel (and sliced when channels go); any other
    operand that is not broadcast along the channel axis pins the channels."""
    out_value = node.outputs[0]
    # ranks align the operands; of the dims only the channel axis' matter (partly unknown
    # after a custom op)
    out_shape = walk.dims(out_value)
    operands = [v for v in node.inputs if v is not None]
    tracked = [v for v in operands if walk.info(v) is not None]
    if not tracked:
        return
    if out_shape is None or any(walk.dims(v) is None for v in operands):
        walk.barrier(node, "shapes unknown")
        return
    out = _output_channels(node, walk, tracked, out_shape)
    if out is None:
        walk.barrier(node, "channel count of a broadcast output unknown")
        return
    axis = out.axis
    values: list[Values] = []
    unknown = (np.zeros(out.n, bool), np.zeros(out.n, np.float32))
    linked: dict[ir.Value, tuple[np.ndarray, Site | None]] = {}
    nonfinite = np.zeros(out.n, bool)  # channels a constant operand makes NaN or Inf
    base = _base_interval(node, walk, out, operands)  # a Pow's, for its exponent's checks
    for index, value in enumerate(operands):
        shape = walk.dims(value)
        ax = _aligned_axis(axis, len(out_shape), shape)
        info = walk.info(value)
        if info is not None and info.axis == ax and info.size == out.size:
            owner = walk.align(info, out, node)
            if owner is not None and value not in linked:
                # coupled, or in the full cut a constant can be reinserted (once per tensor,
                # however many operands it is)
                linked[value] = (info.ids[owner],
                                 _reinsert_site(node, walk, out, walk.shape(out_value)))
            values.append((info.known[owner], info.const[owner]) if owner is not None
                          else unknown)
            nonfinite |= _known_makes_nonfinite(node.op_type, index, *values[-1],
                                                base if index == 1 else None)
            continue
        if info is not None and info.axis == ax and shape[ax] == 1:
            # one channel broadcast over all of the output's: it stays (a tensor keeps at
            # least one channel), and its value is every output channel's operand value
            walk.pin(info, node, "a channel broadcast over all channels")
            values.append((np.full(out.n, info.known[0]), np.full(out.n, info.const[0])))
            nonfinite |= _known_makes_nonfinite(node.op_type, index, *values[-1],
                                                base if index == 1 else None)
            continue
        if info is not None:
            walk.pin(info, node, "operand channels lie on another axis")
        array = walk.const(value)
        if array is not None and (ax < 0 or shape[ax] in (1, out.size)):
            if ax < 0:
                array, ax = array.reshape((1,) * (-ax) + array.shape), 0
            values.append(per_channel_constant(array, ax, out.positions))
            nonfinite |= _makes_nonfinite(node.op_type, index, array, ax, out,
                                          base if index == 1 else None)
        elif ax < 0 or shape[ax] == 1:
            values.append(unknown)  # one unknown value broadcast over all channels
        else:
            walk.pin(out, node, "an operand's channels cannot be cut")
            values.append(unknown)
            if array is not None:
                nonfinite |= _makes_nonfinite(node.op_type, index, array.reshape(-1), 0, None)
    if node.op_type in ("Div", "Pow") and len(operands) == 2 and \
            walk.const(operands[1]) is None:
        nonfinite |= _computed_second_operand_leaves_domain(node, walk, out, operands, values)
    out.set_values(*BROADCAST[node.op_type](values))
    out.mark_nonfinite(nonfinite)
    # An operand channel stays with an output channel its value may make NaN or Inf (x / 0):
    # put back by a reinsertion, it would be a computed channel to a cut of the cut model,
    # whose analysis of it may not see the zero this one knew, and might take what this kept.
    for operand_ids, site in linked.values():
        finite = out.finite
        walk.link(operand_ids[finite], out.ids[finite], site)
        if not finite.all():
            walk.couple(operand_ids[~finite], out.ids[~finite])


def _computed_second_operand_leaves_domain(node: ir.Node, walk: Walk, out: ChannelInfo,
                                           operands: list[ir.Value], values: list[Values]
                                           ) -> np.ndarray:
    """Per output channel, for a computed divisor or exponent (its known channels are checked
    as constants are): Div, where zero is inside the divisor's interval and its columns'
    (channelcut.columns); Pow, where the base's interval is not above zero (0 ** -1 is Inf,
    (-1) ** 0.5 NaN) or the power may overflow (finite.pow_overflows)."""
    from channelcut.columns import inside_by_columns  # they import the rules
    from channelcut.ops.bounds_pointwise import operand_interval

    if node.op_type == "Div":
        leaves = DOMAIN_EDGE["Div"](*operand_interval(node, walk, out, operands[1]))
        if leaves.any() and inside_by_columns(walk, operands[1], DOMAIN_EDGE["Div"]):
            leaves[:] = False  # the columns say more than the channels (linear attention)
    else:
        base = operand_interval(node, walk, out, operands[0])
        leaves = not_above_zero(*base) | \
            pow_overflows(base, operand_interval(node, walk, out, operands[1]))
    return leaves & ~values[1][0]


def _base_interval(node: ir.Node, walk: Walk, out: ChannelInfo, operands: list[ir.Value]
                   ) -> Interval | None:
    """A Pow's base's interval under each output channel (None for other ops)."""
    if node.op_type != "Pow" or len(operands) != 2:
        return None
    from channelcut.ops.bounds_pointwise import operand_interval  # it imports the rules

    return operand_interval(node, walk, out, operands[0])


def _makes_nonfinite(op_type: str, index: int, array: np.ndarray, axis: int,
                     out: ChannelInfo | None, base: Interval | None = None
                     ) -> np.ndarray | bool:
    """Per output channel (`array` laid along `axis` like `out`'s channels; None: one answer for
    all): does this constant operand make NaN or Inf from finite inputs? It does where it is
    NaN, Inf or huge, where it divides by zero or by a magnitude below 1 / HUGE (x / 1e-40
    overflows for |x| above 0.04: dividing by it multiplies by more than HUGE), and where it
    is an exponent that is negative or not a whole number (0 ** -1 is Inf, (-1) ** 0.5 NaN)
    of a base whose interval under the channel (`base`; None: any base) may hold such a value
    (finite.pow_base_outside)."""
    exponent = index == 1 and op_type == "Pow"
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(array) <= HUGE)
        if index == 1 and op_type == "Div":
            bad |= ~(np.abs(array) >= 1 / HUGE)
        if exponent and base is None:
            bad |= (array < 0) | (array != np.round(array))
    per_channel = _by_channel(bad, axis, out, np.any)
    if exponent and base is not None and out is not None:
        with np.errstate(invalid="ignore"):
            fractional = _by_channel(array != np.round(array), axis, out, np.any)
        lowest = _by_channel(np.asarray(array, np.float64), axis, out, np.min)
        per_channel = per_channel | pow_base_outside(fractional, lowest, *base)
    return per_channel


def _by_channel(per_element: np.ndarray, axis: int, out: ChannelInfo | None,
                combine: Callable) -> np.ndarray | bool:
    """A constant's elements (laid along `axis` like `out`'s channels) combined per output
    channel (`combine`: np.any, np.min), or over all of them where `out` is None."""
    if out is None or per_element.ndim == 0:
        whole = combine(per_element)
        return bool(whole) if per_element.dtype == bool else whole
    moved = np.moveaxis(per_element, axis, 0).reshape(per_element.shape[axis], -1)
    per_position = combine(moved, axis=1)
    if per_position.size == 1:
        return np.full(out.n, per_position[0])
    return combine(per_position[out.positions], axis=1)


def _known_makes_nonfinite(op_type: str, index: int, known: np.ndarray, const: np.ndarray,
                           base: Interval | None = None) -> np.ndarray:
    """Per output channel: does this operand's known channel value make NaN or Inf whatever
    the others hold, as a constant operand would (see `_makes_nonfinite`)? x / 0 is +-Inf or
    NaN for every x: a divisor channel that is known zero (all-zero weights) is one, and so is
    one below 1 / HUGE in magnitude (it overflows ordinary dividends); so is an exponent
    channel that is negative or fractional, where the base's interval (`base`) allows it."""
    bad = np.zeros(known.shape, dtype=bool)
    if index == 1 and op_type == "Div":
        with np.errstate(invalid="ignore"):
            bad = known & ~(np.abs(const) >= 1 / HUGE)
    elif index == 1 and op_type == "Pow":
        fractional = const != np.round(const)
        if base is None:
            bad = known & ((const < 0) | fractional)
        else:
            bad = known & pow_base_outside(fractional, const.astype(np.float64), *base)
    return bad


def _output_channels(node: ir.Node, walk: Walk, tracked: list[ir.Value],
                     out_shape: tuple[int | None, ...]) -> ChannelInfo | None:
    """The output's channels: those of the first tracked operand that spans the output's
    channel axis; when every tracked operand is broadcast along it (one channel against a
    constant or an untracked tensor), fresh ones along the first one's axis. None when the
    output's channel count is unknown and no operand tells it."""
    for value in tracked:
        info = walk.info(value)
        axis = info.axis + len(out_shape) - len(walk.dims(value))
        # a dim above 1 fixes the broadcast output's dim, even where inference lost it
        if info.size == out_shape[axis] or (out_shape[axis] is None and info.size > 1):
            return walk.new(node.outputs[0], axis, info.positions)
    first = walk.info(tracked[0])
    axis = first.axis + len(out_shape) - len(walk.dims(tracked[0]))
    if out_shape[axis] is None:
        return None
    return walk.new(node.outputs[0], axis, out_shape[axis])


def _reinsert_site(node: ir.Node, walk: Walk, out: ChannelInfo,
                   out_shape: tuple[int | None, ...] | None) -> Site | None:
    """Reinserting an operand's constant channels: Pad + Gather (+ Add of the constants)."""
    # Pad takes its amounts as an input from opset 11; the cost needs the output's size
    if opset_version(walk.model) < 11 or out_shape is None:
        return None
    elements = float(math.prod(out_shape))
    # constants (float32) and the Gather order (int64) along the axis, Pad amounts (int64)
    added = out.size * (4 + 8) + 2 * len(out_shape) * 8
    return Site(node, "reinsert", Cost(weight_bytes=added, flops=elements,
                                       moved=2.0 * elements, nodes=3), per_position=4 + 8,
                positions=out.size)


def rewrite_broadcast(node: ir.Node, rw: Rewrite) -> None:
    """Slice each constant operand that has a full channel axis; give back the constant
    channels the cut took from operands but the output keeps: after the node, once, for those
    every operand lost (x * sigmoid(x) in SiLU); before it, to each operand, for the rest."""
    out = node.outputs[0]
    deleted = rw.deleted(out)
    needs: dict[ir.Value, np.ndarray] = {}
    for value in dict.fromkeys(node.inputs):
        taken = rw.deleted(value) if rw.info(value) is not None else deleted
        if taken is not deleted and not np.array_equal(taken, deleted):
            needs[value] = np.setdiff1d(taken, deleted)
    shared = _lost_by_every_operand(node, rw, needs)
    if shared.size:
        deleted = np.union1d(deleted, shared)  # the node computes without them
        reinsert_output(node, rw, deleted, shared)
    for value, needed in needs.items():
        needed = np.setdiff1d(needed, shared)
        if needed.size:
            reinsert(node, value, rw, needed)
    if deleted.size == 0:
        return
    out_rank = len(out.shape)  # known, if not every dim (the analysis needed it)
    axis = rw.info(out).axis
    for index, value in enumerate(node.inputs):
        array = rw.const(value)
        if array is None:
            continue
        ax = _aligned_axis(axis, out_rank, array.shape)
        if ax >= 0 and array.shape[ax] > 1:
            rw.set_const(node, index, delete_positions(array, {ax: deleted}))


def _lost_by_every_operand(node: ir.Node, rw: Rewrite, needs: dict[ir.Value, np.ndarray]
                           ) -> np.ndarray:
    """Output positions that every operand with channels lost and the output keeps, where the
    output is a known constant: the node can compute without them and they can be put back
    after it. Empty when any operand is neither tracked nor a constant (it could not be sliced)."""
    carriers = [v for v in dict.fromkeys(node.inputs) if v is not None and rw.info(v) is not None]
    out_info = rw.info(node.outputs[0])
    if not needs or len(needs) != len(carriers) or out_info is None or \
            any(rw.info(v) is None and rw.const(v) is None for v in node.inputs if v is not None):
        return np.zeros(0, np.int64)
    shared = reduce(np.intersect1d, needs.values())
    return shared[out_info.by_position(out_info.known)[shared]]


for _op in BROADCAST:
    rule(_op, rewrite=rewrite_broadcast, own_constants=True)(analyse_broadcast)
