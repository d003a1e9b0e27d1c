"""Which values may carry NaN or Inf: 0 * NaN is NaN, so a zero weight ignores a channel only
when the channel is finite.

Graph inputs are assumed finite, and the model's arithmetic on them is assumed not to overflow
(README: non-finite values). What can still bring NaN or Inf in is a constant: a NaN, an Inf,
or a magnitude beyond HUGE that overflows float32 once multiplied by an ordinary input. The walk
marks every output of a node that reads such a constant or a marked value; op rules mark the
channels whose known value computes to NaN or Inf (ChannelInfo.set_values).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from channelcut.channels import HUGE

if TYPE_CHECKING:
    from channelcut.analysis import Walk


def bounded(array: np.ndarray | None) -> bool:
    """A constant whose every element is finite and at most HUGE in magnitude (or no float)."""
    if array is None or array.dtype.kind != "f" or array.size == 0:
        return True
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


# Ops whose constants only bound the input (clip(x, -inf, inf) is x): no NaN or Inf from them.
BOUNDS_ONLY = frozenset({"Clip"})
# Ops that overflow on ordinary inputs (exp(89) is Inf in float32): what they make may be Inf.
OVERFLOWS = frozenset({"Exp"})


def _may_make_nonfinite(node: ir.Node, walk: Walk) -> bool:
    """May the node's outputs carry NaN or Inf when the graph inputs are finite?

    Yes when it reads a value that may, when it overflows easily (OVERFLOWS), when it holds a
    subgraph (whose constants are not looked at), and when one of its float constants is NaN,
    Inf or beyond HUGE (a huge weight times an ordinary input overflows). Other arithmetic of
    finite values that overflows or divides by zero is outside what this tracks: graph inputs
    are assumed finite and such that the model's results do not overflow (README: non-finite
    values).
    """
    if node.op_type in OVERFLOWS or any(v is not None and v in walk.nonfinite
                                        for v in node.inputs):
        return True
    if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
           for a in node.attributes.values()):
        return True
    if node.op_type in BOUNDS_ONLY:
        return False
    return not (all(walk.bounded(v) for v in node.inputs)
                and all(bounded(a) for a in _attribute_arrays(node)))


def track_nonfinite(node: ir.Node, walk: Walk) -> None:
    """Mark the node's outputs that may carry NaN or Inf: every channel of each, when the node
    may make them, else those whose known value the rule computed to NaN or Inf."""
    makes = _may_make_nonfinite(node, walk)
    for value in node.outputs:
        info = walk.infos.get(value)
        if info is not None:
            if makes:
                info.make_nonfinite()
            walk.record_finite(info)
        may = makes or (info is not None and not info.finite.all())
        if may and (value.dtype is None or value.dtype.is_floating_point()):
            walk.nonfinite.add(value)  # integers and booleans are never NaN
