"""Which values may carry NaN or Inf: 0 * NaN is NaN, so a zero weight ignores a channel only
when the channel is finite.

Graph inputs are assumed finite, and the model's arithmetic on them is assumed not to overflow
(README: non-finite values). What can still bring NaN or Inf in is a constant: a NaN, an Inf,
or a magnitude beyond HUGE that overflows float32 once multiplied by an ordinary input; and a
division, a logarithm or a square root of a value whose interval reaches past the op's domain
(DOMAIN_EDGE: zeros a Pad fills in are there for every input). The walk
marks the output channels that such a constant makes (every channel of the node's outputs, or
the rows a weighted rule marks), those that NaN in an input channel reaches through what the
node records (couplings, links, readers), and those whose known value computes to NaN or Inf
(ChannelInfo.set_values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from channelcut.channels import HUGE

if TYPE_CHECKING:
    from channelcut.analysis import Walk


# float16's exponent bits: all set is Inf or NaN. Every finite float16 is within HUGE (65504).
_HALF_EXPONENT = np.uint16(0x7C00)
_CHUNK = 1 << 20  # elements per pass of the float16 check: a small temporary


def bounded(array: np.ndarray | None) -> bool:
    """A constant whose every element is finite and at most HUGE in magnitude (or no float)."""
    if array is None or array.dtype.kind != "f" or array.size == 0:
        return True
    if array.dtype == np.float16:
        # numpy reduces float16 element by element (converting each): read the bits instead,
        # 10x faster on an LLM's float16 weights
        bits = np.ascontiguousarray(array).reshape(-1).view(np.uint16)
        return not any(((bits[k:k + _CHUNK] & _HALF_EXPONENT) == _HALF_EXPONENT).any()
                       for k in range(0, bits.size, _CHUNK))
    # max and min propagate NaN, and the comparisons are then False; no temporary array
    return bool(array.max() <= HUGE) and bool(array.min() >= -HUGE)


def _attribute_arrays(node: ir.Node) -> list[np.ndarray]:
    """The float values a node takes as attributes (ConstantOfShape's value, Pad's value...)."""
    arrays = []
    for attr in node.attributes.values():
        if attr.type in (ir.AttributeType.FLOAT, ir.AttributeType.FLOATS):
            arrays.append(np.asarray(attr.value, dtype=np.float64))
        elif attr.type == ir.AttributeType.TENSOR:
            try:
                arrays.append(np.asarray(attr.value.numpy()))
            except Exception:  # unreadable (external data gone...): assume the worst, no crash
                arrays.append(np.array(np.nan))
    return arrays


# op type -> (lo, hi) -> where an input in [lo, hi] may be outside the op's domain (Div: its
# divisor): 1 / 0 is Inf, log(0) -Inf, log(-1) and sqrt(-1) NaN. A computed input is not
# assumed to stay inside it: zeros that a Pad fills in, or that zero weight columns make over
# another axis, are there for every input. The rules mark the channels (ops.elementwise);
# `leaves_domain` answers for an output without channels.
def _may_hold_zero(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return ~((lo > 0) | (hi < 0))


def not_above_zero(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """log's edge, and a Pow base's where the exponent is computed (0 ** -1, (-1) ** 0.5)."""
    return ~(lo > 0)


def pow_base_outside(fractional: np.ndarray | bool, lowest: np.ndarray | float,
                     lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Where a base in [lo, hi] may make base ** p NaN or Inf for constant exponents p, given
    whether one is fractional and the lowest: a fractional power wants a base >= 0
    ((-1) ** 0.5 is NaN), a negative one a base whose magnitude keeps |base| ** p within HUGE
    (0 ** -1 is Inf, 1e-30 ** -2 overflows)."""
    with np.errstate(all="ignore"):
        smallest = np.where(lo > 0, lo, np.where(hi < 0, -hi, 0.0))  # min |base|
        negative = np.asarray(lowest) < 0
        overflow = ~(np.power(smallest, np.minimum(lowest, 0.0)) <= HUGE)
        return (np.asarray(fractional) & ~(lo >= 0)) | (negative & overflow)


def pow_overflows(base: tuple[np.ndarray, np.ndarray], exponent: tuple[np.ndarray, np.ndarray]
                  ) -> np.ndarray:
    """Where base ** exponent may overflow for a base in `base` (> 0) and a computed exponent
    in `exponent` (intervals): a computed exponent is exp(e ln b), as easily Inf as Exp is
    (0.5 ** -200, 2 ** 200), unless the intervals keep every power within HUGE (the power is
    monotone in each operand for a positive base: its corners bound it)."""
    with np.errstate(all="ignore"):
        corners = [np.power(np.asarray(b, np.float64), np.asarray(e, np.float64))
                   for b in base for e in exponent]
        return ~np.all([c <= HUGE for c in corners], axis=0)


DOMAIN_EDGE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Div": _may_hold_zero,
    "Reciprocal": _may_hold_zero,
    "Log": not_above_zero,
    "Sqrt": lambda lo, hi: ~(lo >= 0),
}


def leaves_domain(node: ir.Node, walk: Walk) -> bool:
    """May a DOMAIN_EDGE op's input (Div's divisor) hold a value outside the op's domain
    anywhere, or a Pow make NaN or Inf (a fractional constant exponent of a base that may be
    negative, a negative one of a base that may be zero or so near it that the power
    overflows, a computed one of a base not above zero)? A constant is checked element by element; a computed value
    by its interval (one for the tensor, walk.input_ranges), unbounded where none is known."""
    if node.op_type == "Pow" and len(node.inputs) == 2:
        exponent = walk.const(node.inputs[1])
        if exponent is None:
            return _outside(node.inputs[0], walk, not_above_zero) or \
                bool(pow_overflows(_interval(node.inputs[0], walk),
                                   _interval(node.inputs[1], walk)).any())
        exponent = np.asarray(exponent, np.float64)
        fractional = bool((exponent != np.round(exponent)).any())
        lowest = float(exponent.min()) if exponent.size else 0.0
        if not (fractional or lowest < 0):
            return False

        def base_outside(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
            return pow_base_outside(fractional, lowest, lo, hi)

        return _outside(node.inputs[0], walk, base_outside)
    edge = DOMAIN_EDGE.get(node.op_type)
    index = 1 if node.op_type == "Div" else 0
    if edge is None or len(node.inputs) <= index or node.inputs[index] is None:
        return False
    from channelcut.columns import inside_by_columns  # it imports the rules

    return _outside(node.inputs[index], walk, edge) and \
        not inside_by_columns(walk, node.inputs[index], edge)


def _outside(value: ir.Value, walk: Walk,
             edge: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> bool:
    """Does `edge` hold anywhere in the value (a constant's elements, else its interval)?"""
    array = walk.const(value)
    if array is not None and array.dtype.kind != "f":
        return False  # integer division by zero: the runtime's error, not a NaN
    return bool(edge(*_interval(value, walk)).any())


def _interval(value: ir.Value, walk: Walk) -> tuple[np.ndarray, np.ndarray]:
    """A value's elements (a constant's, each its own interval), else its channels' intervals,
    else the one of a graph input's declared range, else unbounded."""
    array = walk.const(value)
    if array is not None:
        values = np.asarray(array, np.float64).reshape(-1)
        return values, values
    info = walk.info(value)
    if info is not None:
        return info.lo, info.hi
    return walk.input_ranges.get(value, (np.array([-np.inf]), np.array([np.inf])))


# Ops whose constants only bound the input (clip(x, -inf, inf) is x): no NaN or Inf from them.
BOUNDS_ONLY = frozenset({"Clip"})
# Ops that overflow on ordinary inputs (exp(89) is Inf in float32): what they make may be Inf.
OVERFLOWS = frozenset({"Exp"})


def _makes_every_channel_nonfinite(node: ir.Node, walk: Walk, own: bool) -> bool:
    """May the node make NaN or Inf in every output channel from finite inputs?

    Yes when it overflows easily (OVERFLOWS), when it holds a subgraph (whose constants are not
    looked at), and when one of its float constants is NaN, Inf or beyond HUGE (a huge weight
    times an ordinary input overflows), unless its rule marks what they make (`own`). Other
    arithmetic of finite values that overflows is outside what this tracks: graph inputs are
    assumed finite and such that the model's results do not overflow (README: non-finite
    values). Values past a domain's edge are marked per channel by the rules, and by
    `leaves_domain` where the output has no channels.
    """
    if node.op_type in OVERFLOWS:
        return True
    if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
           for a in node.attributes.values()):
        return True
    if node.op_type in BOUNDS_ONLY:
        return False
    return not ((own or all(walk.bounded(v) for v in node.inputs))
                and all(bounded(a) for a in _attribute_arrays(node)))


def _reached(walk: Walk, mark: tuple[int, int, int, int], sources: np.ndarray
             ) -> np.ndarray | None:
    """The channel nodes that NaN in `sources` (input channels) reaches through what the node
    recorded since `mark`: couplings and links (both ways), readers (every row of a reader
    that reads one). None when the node pins one of them: it reads it in ways not recorded."""
    edges, readers, links, pins = mark
    if any(np.isin(pin.ids, sources).any() for pin in walk.pins[pins:]):
        return None
    pairs = walk._edges[edges:] + [(k.operand_ids, k.out_ids) for k in walk.links[links:]]
    a = np.concatenate([x for x, _ in pairs]) if pairs else np.zeros(0, np.int64)
    b = np.concatenate([y for _, y in pairs]) if pairs else np.zeros(0, np.int64)
    new_readers = walk.readers[readers:]
    reached = np.unique(sources)
    while True:  # the closure: a node couples few channels, this ends after a few rounds
        grown = [reached, b[np.isin(a, reached)], a[np.isin(b, reached)]]
        grown += [r.row_ids for r in new_readers if np.isin(r.in_ids, reached).any()]
        grown = np.unique(np.concatenate(grown))
        if grown.size == reached.size:
            return reached
        reached = grown


def track_nonfinite(node: ir.Node, walk: Walk, mark: tuple[int, int, int, int],
                    own: bool = False) -> None:
    """Mark the node's output channels that may carry NaN or Inf, once its rule has run.

    Every channel of every output when the node makes NaN or Inf itself, or reads a value that
    may carry some and has no channels to say where; else the channels that the non-finite
    input channels reach (see `_reached`), and those the rule marked (a weight row with a NaN,
    a known value that computes to Inf). An output without channels may carry NaN or Inf when
    anything the node reads may.
    """
    inputs = [v for v in node.inputs if v is not None]
    every = _makes_every_channel_nonfinite(node, walk, own) or any(
        walk.info(v) is None and v in walk.nonfinite for v in inputs)
    sources = [info.ids[~info.finite] for v in inputs if (info := walk.info(v)) is not None]
    sources = np.concatenate(sources) if sources else np.zeros(0, np.int64)
    reached = None if every or sources.size == 0 else _reached(walk, mark, sources)
    every = every or (sources.size > 0 and reached is None)
    own_unbounded = own and not all(walk.bounded(v) for v in inputs)
    for value in node.outputs:
        if value is None:
            continue
        info = walk.infos.get(value)
        if info is None:
            may = every or sources.size > 0 or own_unbounded or leaves_domain(node, walk)
        else:
            if every:
                info.mark_nonfinite()
            elif reached is not None:
                info.mark_nonfinite(np.isin(info.ids, reached))
            walk.record_finite(info)
            may = not info.finite.all()
        if may and (value.dtype is None or value.dtype.is_floating_point()):
            walk.nonfinite.add(value)  # integers and booleans are never NaN
