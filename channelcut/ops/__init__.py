"""Op rules, one table keyed by op type.

Each rule has two halves. `analyse(node, walk)` runs once, in topological order: it gives the
node's outputs their channel layouts and per-channel values, couples channels that must share a
fate, registers readers and pins what it cannot follow. `rewrite(node, rw)` runs after the
decision: it slices the node's constants and attributes for the channels that were cut. An op
type with no entry here is a barrier: every channel that touches it is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx_ir as ir

    from channelcut.analysis import Walk
    from channelcut.rewrite import Rewrite


@dataclass(frozen=True)
class Rule:
    """How one op type maps, couples and slices channels."""

    analyse: Callable[[ir.Node, Walk], None]
    rewrite: Callable[[ir.Node, Rewrite], None] | None = None  # None: no constants to slice
    spans: bool = False  # understands channels spread over several axes (see ChannelInfo)
    # understands constant channels that are a map (ChannelInfo.plane); other rules see only
    # the zero channels of such a tensor as known
    planes: bool = False
    # the rule marks the output channels that NaN, Inf or huge entries of its constant inputs
    # make (ChannelInfo.mark_nonfinite); else such a constant marks every output channel
    own_constants: bool = False


RULES: dict[str, Rule] = {}


def rule(*op_types: str, rewrite: Callable[[ir.Node, Rewrite], None] | None = None,
         spans: bool = False, planes: bool = False, own_constants: bool = False):
    """Register `analyse` (the decorated function) and `rewrite` for these op types."""

    def register(analyse: Callable[[ir.Node, Walk], None]) -> Callable[[ir.Node, Walk], None]:
        for op_type in op_types:
            RULES[op_type] = Rule(analyse, rewrite, spans, planes, own_constants)
        return analyse

    return register


# Importing the rule modules fills RULES.
from channelcut.ops import (elementwise, layout, normalization, sizes, spatial,  # noqa: E402,F401
                            weighted)
