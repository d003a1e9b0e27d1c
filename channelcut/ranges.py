"""Per-channel value intervals: input ranges, float32 rounding margins, and the step that turns
a one-point interval into a known constant.

Every channel carries a sound interval [lo, hi] (ChannelInfo.lo/hi, float64, infinite where
unbounded) holding every value it takes in float32 for inputs inside the declared input ranges
(graph inputs are unbounded, and finite, unless the user bounds them). The bounds rules
(channelcut.ops.bounds) compute them in float64 and widen them by what float32 rounding can
move a result; a bound past float32's range (the computation may overflow) is unbounded. A
channel whose interval is one point is that constant: `settle` marks it known, so it cuts or
folds like any other constant, and records why (a RangeFact, for the report).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_ir as ir

from channelcut.errors import ChannelcutError

if TYPE_CHECKING:
    from channelcut.channels import ChannelInfo

F32_MAX = float(np.finfo(np.float32).max)
EPS32 = 2.0 ** -24  # unit roundoff of float32
TINY = 1e-30  # absolute slack: denormals flushed to zero, and results rounded near zero
# Bounds past this are treated as unbounded: the float32 computation may overflow to Inf.
OVERFLOW = F32_MAX / 4

InputRange = tuple[float, float] | Sequence[tuple[float, float]]


@dataclass(frozen=True)
class RangeFact:
    """Channels of one tensor that are constant because their interval is one point: the bound
    that proves it is the interval of the value feeding the op that clamps it."""

    tensor: str
    node: str
    op_type: str
    channels: np.ndarray  # channel indices in the tensor
    ids: np.ndarray  # their channel node ids
    value: float  # the point every one of them is
    input_bounds: list[tuple[float, float]]  # per channel: the interval of the node's input


def widen(lo: np.ndarray, hi: np.ndarray, magnitude: np.ndarray | float, terms: int = 1,
          hi_magnitude: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi] computed exactly, widened to hold the float32 result of a sum of `terms`
    products whose magnitudes add up to at most `magnitude`: a sum of n rounded terms is off
    by at most about n * eps * sum|terms| (any summation order); 4x that for fused or blocked
    kernels. Bounds past float32's range become infinite.

    With `hi_magnitude`, each side is widened by its own magnitude (`magnitude` the low
    side's): sound where the result rounds monotonically in every input (one rounded op, a
    sum, an average: rounding never reverses an order), so that the float result is at least
    the same computation on the low ends, whose own terms bound its error. An unbounded side
    then leaves the other bounded (x >= 0 plus y >= 1 is at least 1)."""
    with np.errstate(all="ignore"):
        lo_margin = 4.0 * (terms + 2) * EPS32 * np.asarray(magnitude, np.float64) + TINY
        hi_margin = lo_margin if hi_magnitude is None else \
            4.0 * (terms + 2) * EPS32 * np.asarray(hi_magnitude, np.float64) + TINY
        lo = np.asarray(lo, np.float64) - lo_margin
        hi = np.asarray(hi, np.float64) + hi_margin
    return unbounded_past_float32(lo, hi)


def relative(lo: np.ndarray, hi: np.ndarray, rel: float = 1e-5
             ) -> tuple[np.ndarray, np.ndarray]:
    """Widen by a relative margin: for a transcendental function whose runtime kernel is an
    approximation accurate to a few units in the last place (1e-5 is a hundred of them)."""
    with np.errstate(all="ignore"):
        lo = lo - rel * np.abs(lo) - TINY
        hi = hi + rel * np.abs(hi) + TINY
    return unbounded_past_float32(lo, hi)


def unbounded_past_float32(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN or a magnitude past OVERFLOW: that side is unbounded (NaN: both)."""
    lo, hi = np.array(lo, np.float64, ndmin=1), np.array(hi, np.float64, ndmin=1)
    nan = np.isnan(lo) | np.isnan(hi)
    lo[nan | (np.abs(lo) > OVERFLOW)] = -np.inf
    hi[nan | (np.abs(hi) > OVERFLOW)] = np.inf
    return lo, hi


def settle(node: ir.Node, value: ir.Value, info: ChannelInfo, input_bounds: tuple[np.ndarray, np.ndarray]
           | None, records: list[RangeFact]) -> None:
    """Meet the interval with what is known of the channels; a one-point interval becomes a
    known constant (recorded in `records`). A channel that may be non-finite has no interval."""
    lo, hi = info.lo.astype(np.float64), info.hi.astype(np.float64)
    finite = info.finite  # False: may carry NaN or Inf (channelcut.finite)
    point_known = info.known & ((info.const == 0) | (info.plane is None))
    const = info.const.astype(np.float64)
    lo = np.where(point_known, const, lo)
    hi = np.where(point_known, const, hi)
    lo = np.where(finite, lo, -np.inf)
    hi = np.where(finite, hi, np.inf)
    # a point: the same finite number on both sides, exactly a float32 (clamps give those)
    point = (lo == hi) & np.isfinite(lo) & ~info.known & (np.float32(lo) == lo) & finite
    if info.plane is not None:
        point &= lo == 0  # a known constant here would be read as const * plane
    info.lo, info.hi = lo, hi
    if not point.any():
        return
    info.set_values(info.known | point, np.where(point, lo, info.const))
    for v in np.unique(lo[point]):
        channels = np.flatnonzero(point & (lo == v))
        bounds = [] if input_bounds is None else \
            [(float(input_bounds[0][c]), float(input_bounds[1][c])) for c in channels]
        records.append(RangeFact(value.name or "", node.name or "", node.op_type, channels,
                                 info.ids[channels], float(v), bounds))


def resolve_input_ranges(model: onnx.ModelProto, input_ranges: Mapping[str, InputRange] | None
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Graph inputs by name -> (lo, hi) arrays: one pair for every element, or one per channel
    (axis 1). A name that is no input, or a bound that is not a number with lo <= hi, is the
    user's mistake."""
    if not input_ranges:
        return {}
    inputs = {v.name: v for v in model.graph.input
              if v.name not in {t.name for t in model.graph.initializer}}
    resolved: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, spec in input_ranges.items():
        if name not in inputs:
            raise ChannelcutError(f"input range for {name!r}: the model has no such input "
                                  f"(its inputs: {', '.join(inputs) or 'none'})")
        try:
            pairs = np.asarray(spec, np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise ChannelcutError(f"input range for {name!r}: give (lo, hi) or one (lo, hi) "
                                  f"per channel, not {spec!r}") from None
        lo, hi = pairs[:, 0], pairs[:, 1]
        if np.isnan(pairs).any() or (lo > hi).any():
            raise ChannelcutError(f"input range for {name!r}: each lo must be <= its hi "
                                  f"(got {spec!r})")
        dims = inputs[name].type.tensor_type.shape.dim
        channels = dims[1].dim_value if len(dims) > 1 and dims[1].dim_value > 0 else None
        if lo.size > 1 and lo.size != channels:
            raise ChannelcutError(f"input range for {name!r}: {lo.size} per-channel ranges, "
                                  f"but the input has {channels} channels on axis 1")
        resolved[name] = (lo, hi)
    return resolved


def by_value(model: ir.Model, ranges: dict[str, tuple[np.ndarray, np.ndarray]]
             ) -> dict[ir.Value, tuple[np.ndarray, np.ndarray]]:
    """The ranges keyed by the graph inputs of the IR model (what the walk looks up)."""
    return {v: ranges[v.name] for v in model.graph.inputs if v.name in ranges}


def describe_input_ranges(ranges: dict[str, tuple[np.ndarray, np.ndarray]]
                          ) -> dict[str, list[list[float]]]:
    """For the report: input name -> [[lo, hi], ...] (one pair, or one per channel)."""
    return {name: [[float(a), float(b)] for a, b in zip(lo, hi)]
            for name, (lo, hi) in ranges.items()}


def parse_input_range(text: str) -> tuple[str, tuple[float, float]]:
    """`NAME:LO,HI` from the command line."""
    name, sep, bounds = text.rpartition(":")
    parts = bounds.split(",")
    try:
        if not sep or not name or len(parts) != 2:
            raise ValueError
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise ChannelcutError(f"--input-range {text!r}: write NAME:LO,HI, for example "
                              f"input:0,1") from None
    if not lo <= hi:
        raise ChannelcutError(f"--input-range {text!r}: LO must be <= HI")
    return name, (lo, hi)
