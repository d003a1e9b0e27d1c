"""Bounds rules, one table keyed by op type: the interval [lo, hi] of each output channel.

A bounds rule runs right after the node's channel rule has laid out its outputs (so it never
decides layouts or couplings) and sets `lo`/`hi` on the output channels from the intervals of
the inputs (channelcut.ranges says what they mean). An op type with no entry gives unbounded
outputs, except where the channel rule knows a constant. Ops that only move values around
(FOLLOW) give each output channel the hull of the input channels its rule coupled it to.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from channelcut.analysis import Walk
from channelcut.channels import ChannelInfo
from channelcut.graph import attr_float, attr_int, attr_ints, attr_string, input_at
from channelcut.ranges import relative, settle, unbounded_past_float32, widen

Interval = tuple[np.ndarray, np.ndarray]  # (lo, hi), float64, one entry per channel/position
BOUNDS: dict[str, Callable[[ir.Node, Walk, ChannelInfo], Interval | None]] = {}


def bounds(*op_types: str):
    """Register a bounds rule: (node, walk, out) -> the interval of each channel of `out` (the
    first output's channels), or None for unbounded."""

    def register(fn):
        for op_type in op_types:
            BOUNDS[op_type] = fn
        return fn

    return register


def bound_outputs(node: ir.Node, walk: Walk, edges_before: int) -> None:
    """Set the intervals of the node's output channels and settle one-point ones."""
    import logging

    infos = [(v, walk.infos.get(v)) for v in node.outputs if v is not None]
    if not any(info is not None for _, info in infos):
        _bound_untracked(node, walk)
        return
    source = walk.info(node.inputs[0]) if node.inputs and node.inputs[0] is not None else None
    input_bounds = (source.lo, source.hi) if source is not None else None
    try:
        if node.op_type in FOLLOW:
            computed = _followed(node, walk, infos, edges_before)
        elif (fn := BOUNDS.get(node.op_type)) is not None and infos[0][1] is not None:
            computed = {infos[0][0]: fn(node, walk, infos[0][1])}
        else:
            computed = {}
    except Exception as exc:  # noqa: BLE001 - a bounds bug must only lose the bounds
        logging.getLogger(__name__).warning("bounds of %s node %r failed (%s); unbounded",
                                            node.op_type, node.name, exc)
        computed = {}
    for value, info in infos:
        if info is None:
            continue
        interval = computed.get(value)
        if interval is not None:
            lo, hi = (np.broadcast_to(np.asarray(b, np.float64), (info.n,)).copy()
                      for b in interval)
            bad = ~(lo <= hi)  # NaN, or a rule that got it backwards: say nothing
            lo[bad], hi[bad] = -np.inf, np.inf
            info.lo, info.hi = lo, hi
        same_channels = input_bounds is not None and input_bounds[0].size == info.n
        settle(node, value, info, input_bounds if same_channels else None, walk.range_facts)


def _bound_untracked(node: ir.Node, walk: Walk) -> None:
    """A node whose output has no channels (it reads a graph input, say): one interval for
    every element of it, where the op is elementwise or only moves values; kept with the
    graph inputs' ranges, where readers look them up."""
    if not node.outputs or node.outputs[0] is None or node.outputs[0] in walk.nonfinite or \
            node.op_type not in FOLLOW and node.op_type not in BOUNDS or \
            node.op_type in WEIGHTED or _added_value(node, walk) is False:
        return
    one = ChannelInfo(axis=1, positions=np.zeros((1, 1), np.int64), base=0)
    try:
        if node.op_type in FOLLOW:
            lo, hi = _data_hull(node, walk)
            extra = _added_value(node, walk)
            if extra is not None:
                lo, hi = min(lo, extra), max(hi, extra)
            lo, hi = widen(np.array([lo]), np.array([hi]), max(abs(lo), abs(hi)), terms=8)
        else:
            lo, hi = (np.asarray(b, np.float64).reshape(-1)[:1]
                      for b in BOUNDS[node.op_type](node, walk, one))
    except Exception:  # noqa: BLE001 - then simply unbounded
        return
    if np.isfinite(lo[0]) or np.isfinite(hi[0]):
        walk.input_ranges[node.outputs[0]] = (lo, hi)


def _concat_across(node: ir.Node, walk: Walk, out: ChannelInfo,
                   edges: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float] | None:
    """A Concat along an axis other than the channels': the hull of the operands that no
    output channel is coupled to (constants, channels on another axis), which every output
    channel holds a piece of. None for a Concat along the channel axis (each output channel
    is one operand's) and for other ops."""
    if node.op_type != "Concat":
        return None
    rank = len(walk.dims(node.outputs[0]) or ())
    if rank and attr_int(node, "axis", 0) % rank == out.axis and out.span == 1:
        return None
    coupled = np.concatenate([np.concatenate([a, b]) for a, b in edges]) if edges else \
        np.zeros(0, np.int64)
    lo, hi = np.inf, -np.inf
    for value in node.inputs:
        info = walk.info(value)
        if info is not None and np.isin(info.ids, coupled).all():
            continue
        a, b = positions_range(walk, value, 0, 1)
        lo, hi = min(lo, float(a[0])), max(hi, float(b[0]))
    return None if lo > hi else (lo, hi)


def _data_hull(node: ir.Node, walk: Walk) -> tuple[float, float]:
    """The hull of every value the op's data inputs hold (all of Concat's, else the first)."""
    data = node.inputs if node.op_type == "Concat" else node.inputs[:1]
    lo, hi = np.inf, -np.inf
    for value in data:
        a, b = positions_range(walk, value, 0, 1)
        lo, hi = min(lo, float(a[0])), max(hi, float(b[0]))
    return (lo, hi) if lo <= hi else (-np.inf, np.inf)


# -- where input intervals come from -------------------------------------------------------

def positions_range(walk: Walk, value: ir.Value | None, axis: int, size: int) -> Interval:
    """Per position along `axis` (length `size`): the interval of the values there, from the
    value's channels, a declared input range, or a constant; unbounded otherwise."""
    unbounded = np.full(size, -np.inf), np.full(size, np.inf)
    if value is None:
        return unbounded
    info = walk.info(value)
    if info is not None:
        if info.axis != axis or info.size != size or info.span != 1:
            return _hull_everywhere(info.lo, info.hi, size)
        return info.by_position(info.lo), info.by_position(info.hi)
    if value in walk.input_ranges and value not in walk.nonfinite:
        lo, hi = walk.input_ranges[value]
        if lo.size == size and axis == 1:
            return lo.copy(), hi.copy()
        return _hull_everywhere(lo, hi, size)
    array = walk.const(value)
    if array is None or array.dtype.kind not in "fiub":
        return unbounded
    array = np.asarray(array, np.float64)
    if array.size == 0:
        return unbounded
    if array.ndim == 0 or axis >= array.ndim or array.shape[axis] != size:
        return _hull_everywhere(np.array([array.min()]), np.array([array.max()]), size)
    moved = np.moveaxis(array, axis, 0).reshape(size, -1)
    lo, hi = moved.min(axis=1), moved.max(axis=1)
    return unbounded_past_float32(np.where(np.isfinite(lo), lo, np.nan),
                                  np.where(np.isfinite(hi), hi, np.nan))


def _hull_everywhere(lo: np.ndarray, hi: np.ndarray, size: int) -> Interval:
    with np.errstate(all="ignore"):
        a, b = (float(lo.min()), float(hi.max())) if lo.size else (-np.inf, np.inf)
    return np.full(size, a), np.full(size, b)


def per_channel(out: ChannelInfo, lo_pos: np.ndarray, hi_pos: np.ndarray) -> Interval:
    """Per channel of `out`: the hull over the positions it owns."""
    return lo_pos[out.positions].min(axis=1), hi_pos[out.positions].max(axis=1)


def _times(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """w * x with 0 * inf = 0: the values are finite, only their bound is infinite."""
    with np.errstate(all="ignore"):
        return np.where(w == 0, 0.0, w * x)


# -- follow: values only move -------------------------------------------------------------

FOLLOW = {"Identity", "Transpose", "Squeeze", "Unsqueeze", "Gather", "Reshape", "Flatten",
          "Expand", "Tile", "Concat", "Split", "Slice", "Dropout", "MaxPool", "GlobalMaxPool",
          "ReduceMax", "ReduceMin", "ReduceMean", "GlobalAveragePool", "AveragePool", "Resize",
          "Upsample", "Pad"}


def _followed(node: ir.Node, walk: Walk, infos: list[tuple[ir.Value, ChannelInfo | None]],
              edges_before: int) -> dict[ir.Value, Interval]:
    """out[c] lies in the hull of the input channels the rule coupled to it (a value moved,
    or a max, a mean or a linear interpolation of them), joined with what the op adds: the
    fill of a padding, zeros an average counts in."""
    extra = _added_value(node, walk)
    if extra is False:
        return {}
    sources = [walk.infos[v] for v in dict.fromkeys(node.inputs)
               if v is not None and v in walk.infos]
    if not sources:
        return {}
    in_ids = np.concatenate([s.ids for s in sources])
    in_lo = np.concatenate([s.lo for s in sources])
    in_hi = np.concatenate([s.hi for s in sources])
    order = np.argsort(in_ids)
    in_ids, in_lo, in_hi = in_ids[order], in_lo[order], in_hi[order]
    edges = walk._edges[edges_before:]
    averages = node.op_type in ("ReduceMean", "GlobalAveragePool", "AveragePool", "Resize",
                                "Upsample")
    result: dict[ir.Value, Interval] = {}
    for value, out in infos:
        if out is None:
            continue
        lo, hi = np.full(out.n, np.inf), np.full(out.n, -np.inf)
        for a, b in edges:
            for x, y in ((a, b), (b, a)):  # either side may be the output
                mine = (y >= out.base) & (y < out.base + out.n)
                where = np.searchsorted(in_ids, x[mine])
                where = np.minimum(where, in_ids.size - 1)
                hit = in_ids[where] == x[mine]
                rows = y[mine][hit] - out.base
                np.minimum.at(lo, rows, in_lo[where[hit]])
                np.maximum.at(hi, rows, in_hi[where[hit]])
        unmapped = lo > hi
        if unmapped.any():  # channels the rule made afresh: from any of the data inputs
            lo[unmapped], hi[unmapped] = _data_hull(node, walk)
        across = _concat_across(node, walk, out, edges)
        if across is not None:  # every channel also holds the operands not coupled to it
            lo, hi = np.minimum(lo, across[0]), np.maximum(hi, across[1])
        if extra is not None:
            lo, hi = np.minimum(lo, extra), np.maximum(hi, extra)
        if averages:  # a mean or an interpolation rounds: it may land an ulp outside
            lo, hi = widen(lo, hi, np.maximum(np.abs(lo), np.abs(hi)), terms=8)
        result[value] = (lo, hi)
    return result


def _added_value(node: ir.Node, walk: Walk) -> float | None | bool:
    """A value the op writes besides its inputs' (a pad fill, zero padding an average counts),
    None when none, False when the output is not within the inputs' hull at all."""
    op = node.op_type
    if op == "Pad":
        if attr_string(node, "mode", "constant") != "constant":
            return None  # edge, reflect, wrap: copies of input values
        if len(node.inputs) > 1:
            fill = input_at(node, 2)
            array = walk.const(fill) if fill is not None else np.zeros(1)
            if array is None or np.asarray(array).size == 0:
                return 0.0 if array is not None else False
            return float(np.asarray(array, np.float64).reshape(-1)[0])
        return attr_float(node, "value", 0.0)
    if op == "AveragePool":
        pads = any(p != 0 for p in attr_ints(node, "pads", []) or []) or \
            attr_string(node, "auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER")
        return 0.0 if pads and attr_int(node, "count_include_pad", 0) else None
    if op == "Dropout":  # training mode scales what it keeps
        return None if input_at(node, 2) is None else False
    if op in ("Resize", "Upsample"):
        # cubic interpolation overshoots its inputs; nearest and linear stay within them
        return None if attr_string(node, "mode", "nearest") in ("nearest", "linear") else False
    return None


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


# -- broadcasting ops ---------------------------------------------------------------------

def _operand(node: ir.Node, walk: Walk, out: ChannelInfo, value: ir.Value) -> Interval:
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
    operands = [_operand(node, walk, out, v) for v in values]
    op = node.op_type
    if silu is not None:
        return quasi_convex("SiLU", *operands[silu])
    if op in ("Max", "Min"):
        pick = np.max if op == "Max" else np.min
        return pick([lo for lo, _ in operands], axis=0), pick([hi for _, hi in operands], axis=0)
    with np.errstate(all="ignore"):
        if op in ("Add", "Sum", "Mean"):
            lo = np.sum([lo for lo, _ in operands], axis=0)
            hi = np.sum([hi for _, hi in operands], axis=0)
            if op == "Mean":
                lo, hi = lo / len(operands), hi / len(operands)
            size = np.sum([np.maximum(np.abs(a), np.abs(b)) for a, b in operands], axis=0)
            return widen(lo, hi, size, terms=len(operands) + 1)
        if len(operands) != 2:
            return None
        (alo, ahi), (blo, bhi) = operands
        if op == "Sub":
            lo, hi = alo - bhi, ahi - blo
            return widen(lo, hi, np.maximum(np.abs(alo), np.abs(ahi))
                         + np.maximum(np.abs(blo), np.abs(bhi)), terms=2)
        if op == "Div":
            safe = (blo > 0) | (bhi < 0)  # the divisor keeps one sign
            inv = (np.where(safe, 1 / bhi, -np.inf), np.where(safe, 1 / blo, np.inf))
            ends = _products((alo, ahi), (np.minimum(*inv), np.maximum(*inv)))
        else:
            ends = _products((alo, ahi), (blo, bhi))
        lo, hi = ends.min(axis=0), ends.max(axis=0)
        if op == "Div":
            lo, hi = np.where(safe, lo, -np.inf), np.where(safe, hi, np.inf)
        return widen(lo, hi, np.abs(ends).max(axis=0), terms=3)


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


# -- weighted ops -------------------------------------------------------------------------

WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}

def _padded(node: ir.Node, kernel: tuple[int, ...]) -> bool:
    if attr_string(node, "auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        return any(k > 1 for k in kernel)
    return any(p != 0 for p in attr_ints(node, "pads", []) or [])


def _weighted_sum(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, subset: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows of weights w [rows, cols, k] reading inputs in [lo, hi] per column: the
    bounds of sum w * x over (a subset of, when `subset`) the terms, and the magnitude sum."""
    wl, wh = _times(w, lo[None, :, None]), _times(w, hi[None, :, None])
    low, high = np.minimum(wl, wh), np.maximum(wl, wh)
    if subset:  # zero padding: a term may be missing (contribute 0)
        low, high = np.minimum(low, 0), np.maximum(high, 0)
    with np.errstate(all="ignore"):
        size = np.maximum(np.abs(wl), np.abs(wh)).sum(axis=(1, 2))
        return low.sum(axis=(1, 2)), high.sum(axis=(1, 2)), size


@bounds("Conv")
def _conv(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[o] in b[o] + sum over o's group and kernel of [min, max](w * [lo, hi]) (and 0 per
    term where zero padding may stand in for the input)."""
    weights, b = walk.const(node.inputs[1]), input_at(node, 2)
    bias = np.zeros(weights.shape[0]) if b is None else np.asarray(walk.const(b), np.float64)
    groups = attr_int(node, "group", 1)
    cout, cin_g = weights.shape[:2]
    lo, hi = positions_range(walk, node.inputs[0], 1, cin_g * groups)
    flat = np.asarray(weights, np.float64).reshape(groups, cout // groups, cin_g, -1)
    subset = _padded(node, weights.shape[2:])
    parts = [_weighted_sum(flat[g], lo[g * cin_g:(g + 1) * cin_g],
                           hi[g * cin_g:(g + 1) * cin_g], subset) for g in range(groups)]
    low, high, size = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return widen(low + bias, high + bias, size + np.abs(bias), terms=cin_g * flat.shape[-1] + 1)


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
    flat = np.asarray(weights, np.float64).reshape(groups, cin_g, cout_g, -1).transpose(0, 2, 1, 3)
    parts = [_weighted_sum(flat[g], lo[g * cin_g:(g + 1) * cin_g],
                           hi[g * cin_g:(g + 1) * cin_g], True) for g in range(groups)]
    low, high, size = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return widen(low + bias, high + bias, size + np.abs(bias), terms=cin_g * flat.shape[-1] + 1)


@bounds("Gemm")
def _gemm(node: ir.Node, walk: Walk, out: ChannelInfo) -> Interval | None:
    """out[n] in beta * C[n] + alpha * sum_k [min, max](B'[k, n] * [lo, hi] of A'[k])."""
    weights = np.asarray(walk.const(node.inputs[1]), np.float64)
    w_nk = weights if attr_int(node, "transB", 0) else weights.T
    alpha, beta = attr_float(node, "alpha", 1.0), attr_float(node, "beta", 1.0)
    lo, hi = positions_range(walk, node.inputs[0], 0 if attr_int(node, "transA", 0) else 1,
                             w_nk.shape[1])
    low, high, size = _weighted_sum(alpha * w_nk[:, :, None], lo, hi, False)
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
    matrix = np.asarray(weights, np.float64).reshape(weights.shape[-2:])
    lo, hi = positions_range(walk, node.inputs[0], len(a_dims) - 1, matrix.shape[0])
    low, high, size = _weighted_sum(matrix.T[:, :, None], lo, hi, False)
    return widen(low, high, size, terms=matrix.shape[0] + 1)
