"""Bounds rules of pointwise and broadcasting ops: out[c] <- f(in[c], ...), an interval mapped
through f (exactly for clamps, widened for transcendental kernels and for rounded arithmetic)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.channels import ChannelInfo
from channelcut.graph import attr_float, attr_int, attr_string, input_at, reduction_axes
from channelcut.ops.bounds import (Interval, _hull_everywhere, _times, bounds, per_channel,
                                   positions_range)
from channelcut.ranges import relative, widen


# -- pointwise functions ------------------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return 0.5 * (1 + np.tanh(0.5 * x))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x)


def _at_inf(fn: Callable[[np.ndarray], np.ndarray], low: float, high: float
            ) -> Callable[[np.ndarray], np.ndarray]:
    """fn with its limits at -inf and +inf given (x * something of inf is NaN in numpy)."""

    def limited(x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            y = fn(np.where(np.isfinite(x), x, 0.0))
        return np.where(x == -np.inf, low, np.where(x == np.inf, high, y))

    return limited


# increasing f: [f(lo), f(hi)]; exact ones are computed exactly by the runtime (a clamp, a
# rounding), the others widened by a relative margin.
INCREASING: dict[str, tuple[Callable[[np.ndarray, ir.Node], np.ndarray], bool]] = {
    "Relu": (lambda x, n: np.maximum(x, 0.0), True),
    "Identity": (lambda x, n: x, True),
    "Floor": (lambda x, n: np.floor(x), True),
    "Ceil": (lambda x, n: np.ceil(x), True),
    "Round": (lambda x, n: np.round(x), True),
    "Sign": (lambda x, n: np.sign(x), True),
    "Sigmoid": (lambda x, n: _sigmoid(x), False),
    "Tanh": (lambda x, n: np.tanh(x), False),
    "Erf": (lambda x, n: _erf(x), False),
    "Exp": (lambda x, n: np.exp(x), False),
    "Softplus": (lambda x, n: _softplus(x), False),
    "Softsign": (lambda x, n: _at_inf(lambda v: v / (1 + np.abs(v)), -1.0, 1.0)(x), False),
    "Elu": (lambda x, n: np.where(x < 0, attr_float(n, "alpha", 1.0) * np.expm1(x), x), False),
    "Selu": (lambda x, n: attr_float(n, "gamma", 1.0507009873554805) * np.where(
        x <= 0, attr_float(n, "alpha", 1.6732632423543772) * np.expm1(x), x), False),
}

# quasi-convex f (decreasing, then increasing): op -> (f, where its minimum is, the minimum)
QUASI_CONVEX: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float, float]] = {
    "Gelu": (_at_inf(lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))), 0.0, np.inf),
             -0.7517915246, -0.1699712),
    "Mish": (_at_inf(lambda x: x * np.tanh(_softplus(x)), 0.0, np.inf),
             -1.1923473371, -0.3088400),
    "HardSwish": (_at_inf(lambda x: x * np.clip(x / 6 + 0.5, 0, 1), 0.0, np.inf), -1.5,
                  -0.375),
    "SiLU": (_at_inf(lambda x: x * _sigmoid(x), 0.0, np.inf), -1.2784645428, -0.2784645),
}


def _input_channels(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """The first input's interval under each of `out`'s channels (a pointwise op)."""
    lo, hi = positions_range(walk, node.inputs[0], out.axis, out.size)
    return per_channel(out, lo, hi)


def _increasing(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] <- f(in[c]) for an increasing f: [f(lo), f(hi)]."""
    fn, exact = INCREASING[node.op_type]
    if any(attr_float(node, name, 1.0) < 0 for name in ("alpha", "gamma")):
        return np.full(out.n, -np.inf), np.full(out.n, np.inf)  # Elu/Selu: not increasing
    lo, hi = _input_channels(node, walk, out)
    with np.errstate(all="ignore"):
        lo, hi = fn(lo, node), fn(hi, node)
    return (lo, hi) if exact else relative(lo, hi)


for _op in INCREASING:
    bounds(_op)(_increasing)


def quasi_convex(name: str, lo: np.ndarray, hi: np.ndarray) -> Interval:
    """f over [lo, hi] for f decreasing up to its minimum, then increasing."""
    fn, at, minimum = QUASI_CONVEX[name]
    f_lo, f_hi = fn(lo), fn(hi)
    top = np.maximum(f_lo, f_hi)
    bottom = np.where((lo <= at) & (at <= hi), minimum, np.minimum(f_lo, f_hi))
    low, high = relative(bottom, top, 1e-4)
    if name == "HardSwish":  # exactly 0 at and below -3 (x * clip(x/6 + 1/2, 0, 1))
        dead = hi <= -3
        low[dead], high[dead] = 0.0, 0.0
    return low, high


@bounds("Gelu", "Mish", "HardSwish")
def _quasi_convex(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[c] <- f(in[c]) for f with one minimum: at least that minimum whatever the input."""
    lo, hi = quasi_convex(node.op_type, *_input_channels(node, walk, out))
    if node.op_type == "Gelu" and attr_string(node, "approximate", "none") != "none":
        lo, hi = relative(lo, hi, 1e-2)  # the tanh form is within 1e-3 of the exact one
        lo = np.minimum(lo, -0.171)
    return lo, hi


@bounds("Clip")
def _clip(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] <- clip(in[c], a, b): [clip(lo), clip(hi)], exactly. A computed a (b) may be
    anything: the output is then only at most b (at least a) and at least min(lo, b)."""
    dynamic = [False, False]
    if len(node.inputs) > 1 or "min" not in node.attributes:
        bounds = [-np.inf, np.inf]
        for k, i in enumerate((1, 2)):
            value = input_at(node, i)
            array = walk.const(value) if value is not None else None
            if array is not None:
                bounds[k] = float(np.asarray(array).reshape(-1)[0])
            dynamic[k] = value is not None and array is None
        a, b = bounds
    else:
        a = attr_float(node, "min", -np.inf)
        b = attr_float(node, "max", np.inf)
    a, b = float(np.float32(a)), float(np.float32(b))  # the runtime compares in float32
    lo, hi = _input_channels(node, walk, out)
    if dynamic[0] and dynamic[1]:
        return np.full(out.n, -np.inf), np.full(out.n, np.inf)
    if dynamic[0]:
        return np.minimum(lo, b), np.full(out.n, b)
    if dynamic[1]:
        return np.full(out.n, a), np.maximum(hi, a)
    return np.clip(lo, a, b), np.clip(hi, a, b)


@bounds("HardSigmoid")
def _hard_sigmoid(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] <- clip(alpha * in[c] + beta, 0, 1): the affine part widened, the clamp exact."""
    alpha, beta = attr_float(node, "alpha", 0.2), attr_float(node, "beta", 0.5)
    lo, hi = _input_channels(node, walk, out)
    ends = _times(np.float64(alpha), np.stack([lo, hi])) + beta
    lo, hi = widen(ends.min(axis=0), ends.max(axis=0), np.abs(ends).max(axis=0), terms=2)
    return np.clip(lo, 0, 1), np.clip(hi, 0, 1)


@bounds("LeakyRelu")
def _leaky_relu(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[c] <- in[c] or alpha * in[c] below 0: increasing for alpha >= 0."""
    alpha = attr_float(node, "alpha", 0.01)
    if alpha < 0:
        return None
    lo, hi = _input_channels(node, walk, out)
    f = lambda x: np.where(x < 0, _times(np.float64(alpha), x), x)  # noqa: E731
    return widen(f(lo), f(hi), np.maximum(np.abs(f(lo)), np.abs(f(hi))))


@bounds("Neg")
def _neg(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] <- -in[c]."""
    lo, hi = _input_channels(node, walk, out)
    return -hi, -lo


@bounds("Abs")
def _abs(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] <- |in[c]| >= 0."""
    lo, hi = _input_channels(node, walk, out)
    top = np.maximum(np.abs(lo), np.abs(hi))
    return np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi))), top


@bounds("Sin", "Cos")
def _periodic(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] in [-1, 1]."""
    return np.full(out.n, -1.0), np.full(out.n, 1.0)


@bounds("Softmax")
def _softmax(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] in [0, 1] (a probability)."""
    return np.full(out.n, 0.0), np.full(out.n, 1.0 + 1e-6)


@bounds("Cast")
def _cast(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """A float cast rounds to the target's precision (bounds widened by its unit roundoff),
    and overflows to Inf past its largest value (then unbounded)."""
    info = np.finfo(ir.DataType(attr_int(node, "to", 1)).numpy())
    lo, hi = _input_channels(node, walk, out)
    lo, hi = relative(lo, hi, 2.0 * float(info.eps))
    past = np.maximum(np.abs(lo), np.abs(hi)) >= float(info.max)
    return np.where(past, -np.inf, lo), np.where(past, np.inf, hi)


# -- broadcasting ops ---------------------------------------------------------------------

def operand_interval(node: ir.Node, walk: Walk, out: ChannelInfo, value: ir.Value) -> Interval:
    """A broadcast operand's interval under each of the output's channels."""
    out_dims, dims = walk.dims(node.outputs[0]), walk.dims(value)
    if out_dims is None or dims is None:
        return np.full(out.n, -np.inf), np.full(out.n, np.inf)
    ax = out.axis - (len(out_dims) - len(dims))
    info = walk.info(value)
    if info is not None and info.axis == ax and info.size == out.size:
        if np.array_equal(info.positions, out.positions):
            return info.lo, info.hi
        return per_channel(out, info.by_position(info.lo), info.by_position(info.hi))
    if info is not None and info.axis == ax and dims[ax] == 1:
        return np.full(out.n, info.lo[0]), np.full(out.n, info.hi[0])
    if ax < 0 or dims[ax] == 1:
        lo, hi = positions_range(walk, value, max(ax, 0), 1) if info is None else \
            _hull_everywhere(info.lo, info.hi, 1)
        return np.full(out.n, lo[0]), np.full(out.n, hi[0])
    lo, hi = positions_range(walk, value, ax, out.size)
    return per_channel(out, lo, hi)


def _products(a: Interval, b: Interval) -> np.ndarray:
    return np.stack([_times(x, y) for x in a for y in b])


@bounds("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean")
def _broadcast(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """Interval arithmetic over the operands, per output channel."""
    values = [v for v in node.inputs if v is not None]
    silu = _silu_operand(node, values)
    operands = [operand_interval(node, walk, out, v) for v in values]
    op = node.op_type
    if silu is not None:
        return quasi_convex("SiLU", *operands[silu])
    if op in ("Max", "Min"):
        pick = np.max if op == "Max" else np.min
        return pick([lo for lo, _ in operands], axis=0), pick([hi for _, hi in operands], axis=0)
    if op in ("Sum", "Mean") or len(operands) != 2:
        return _sum(operands, mean=op == "Mean") if op in ("Sum", "Mean") else None
    if op == "Mul" and values[0] is values[1]:  # x * x: a square, never negative
        return _square(*operands[0])
    return arithmetic(op, *operands)


def _sum(operands: list[Interval], mean: bool = False) -> Interval:
    """The sum (or mean) of the operands, each end widened by one rounding per term."""
    with np.errstate(all="ignore"):
        lo = np.sum([lo for lo, _ in operands], axis=0)
        hi = np.sum([hi for _, hi in operands], axis=0)
        if mean:
            lo, hi = lo / len(operands), hi / len(operands)
        # a sum rounds monotonically: each side's error is bounded by its own terms
        return widen(lo, hi, np.sum([np.abs(a) for a, _ in operands], axis=0),
                     terms=len(operands) + 1,
                     hi_magnitude=np.sum([np.abs(b) for _, b in operands], axis=0))


def arithmetic(op: str, a: Interval, b: Interval) -> Interval:
    """a op b for op Add, Sub, Mul or Div, over intervals (of equal or broadcastable shapes),
    each end widened by the op's rounding; a quotient whose divisor may hold zero (or change
    sign) is unbounded."""
    if op == "Add":
        return _sum([a, b])
    (alo, ahi), (blo, bhi) = a, b
    with np.errstate(all="ignore"):
        if op == "Sub":
            lo, hi = alo - bhi, ahi - blo
            return widen(lo, hi, np.abs(alo) + np.abs(bhi), terms=2,
                         hi_magnitude=np.abs(ahi) + np.abs(blo))
        if op == "Div":
            safe = (blo > 0) | (bhi < 0)  # the divisor keeps one sign
            inv = (np.where(safe, 1 / bhi, -np.inf), np.where(safe, 1 / blo, np.inf))
            ends = _products((alo, ahi), (np.minimum(*inv), np.maximum(*inv)))
        else:
            ends = _products((alo, ahi), (blo, bhi))
        lo, hi = ends.min(axis=0), ends.max(axis=0)
        if op == "Div":
            lo, hi = np.where(safe, lo, -np.inf), np.where(safe, hi, np.inf)
        # one rounding of each product: the low end's error is relative to the low end
        return widen(lo, hi, np.abs(lo), terms=1, hi_magnitude=np.abs(hi))


def _square(lo: np.ndarray, hi: np.ndarray) -> Interval:
    """x * x for x in [lo, hi]: at least 0 (at least min(lo^2, hi^2) off zero), rounded once."""
    with np.errstate(all="ignore"):
        low = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo * lo, hi * hi))
        high = np.maximum(lo * lo, hi * hi)
    lo, hi = widen(low, high, low, hi_magnitude=high)
    return np.maximum(lo, 0.0), hi  # a float square is never below zero


@bounds("Pow")
def _pow(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[c] <- in[c] ** p for a constant whole p: even p, a square's bounds (p = 2) or |x|^p
    at least 0; odd p increasing. Other exponents: unbounded."""
    array = walk.const(input_at(node, 1))
    if array is None or array.size != 1:
        return None
    p = float(np.asarray(array, np.float64).reshape(-1)[0])
    if not (p == round(p) and 1 <= p <= 64):
        return None
    lo, hi = _input_channels(node, walk, out)
    if p == 2:
        return _square(lo, hi)
    with np.errstate(all="ignore"):
        if p % 2:
            return relative(np.power(lo, p), np.power(hi, p), 1e-5)
        mags = np.abs(np.stack([lo, hi]))
        low = np.where((lo <= 0) & (hi >= 0), 0.0, np.power(mags.min(axis=0), p))
        low, high = relative(low, np.power(mags.max(axis=0), p), 1e-5)
    return np.maximum(low, 0.0), high


@bounds("Sqrt")
def _sqrt(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] <- sqrt(in[c]): increasing, at least 0 (a negative input is NaN, and a channel
    whose input may be negative is marked non-finite, with no interval)."""
    lo, hi = _input_channels(node, walk, out)
    with np.errstate(all="ignore"):
        low, high = relative(np.sqrt(np.maximum(lo, 0.0)), np.sqrt(np.maximum(hi, 0.0)))
    return np.maximum(low, 0.0), high


@bounds("Reciprocal")
def _reciprocal(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] <- 1 / in[c]: [1/hi, 1/lo] where the input keeps one sign, else unbounded."""
    lo, hi = _input_channels(node, walk, out)
    safe = (lo > 0) | (hi < 0)
    with np.errstate(all="ignore"):
        low, high = np.where(safe, 1 / hi, -np.inf), np.where(safe, 1 / lo, np.inf)
    return widen(low, high, np.abs(low), hi_magnitude=np.abs(high))


def _reduced_count(node: ir.Node, walk: Walk) -> int | None:
    """How many elements a Reduce* node sums into each output element (None: not known, or
    not the same for every input: some graph input's size is not fixed)."""
    shape = walk.shape(node.inputs[0])
    if not walk.sizes_fixed or shape is None or any(not isinstance(d, int) for d in shape):
        return None
    axes = reduction_axes(node, walk.const, len(shape))
    return None if axes is None else math.prod(shape[a] for a in axes)


@bounds("ReduceSumSquare", "ReduceL1", "ReduceL2")
def _norm(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval:
    """out[c] <- sum(x^2), sum(|x|) or sqrt(sum(x^2)) over in[c]'s elements: at least 0 (a
    float sum of non-negative terms is never negative), at most count times the largest
    term (unbounded where the count is not known)."""
    lo, hi = _input_channels(node, walk, out)
    count = _reduced_count(node, walk)
    magnitude = np.maximum(np.abs(lo), np.abs(hi))
    with np.errstate(all="ignore"):
        if count is None:
            high = np.full(out.n, np.inf)
        elif node.op_type == "ReduceSumSquare":
            high = count * magnitude * magnitude
        elif node.op_type == "ReduceL1":
            high = count * magnitude
        else:
            high = math.sqrt(count) * magnitude
    _, high = widen(high, high, high, terms=2 * (count or 1) + 2)
    return np.zeros(out.n), high


def _silu_operand(node: ir.Node, values: list[ir.Value]) -> int | None:
    """x * Sigmoid(x) (SiLU, Swish): the index of the x operand."""
    if node.op_type != "Mul" or len(values) != 2:
        return None
    for i, value in enumerate(values):
        other = values[1 - i]
        producer = other.producer()
        if producer is not None and producer.op_type == "Sigmoid" and \
                producer.inputs[0] is value:
            return i
    return None


