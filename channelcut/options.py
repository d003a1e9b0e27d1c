"""A cut's options: the mode, the objective, the alignment a target wants and the forms it
writes folds and reinsertions in, and the cost of each site in that form (what a fold or
reinsertion adds, and whether it pays)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import onnx_ir as ir

from channelcut.analysis import Cost, Site
from channelcut.costs import MOVED_ELEMENT, NODE_OVERHEAD, SITE_KINDS
from channelcut.graph import static_shape


@dataclass(frozen=True)
class Options:
    """`fold`: allow folding constants and reinserting them (the full cut); `objective`:
    what a fold or reinsertion must reduce to be worth doing; `align`: every tensor that
    loses channels keeps a multiple of this many (CPU and NPU kernels work on blocks of 8 or
    16 channels and fall back to slow paths otherwise; 1: cut all that can go; `blocks`: the
    same per tensor, only where the tensor was aligned); `sites`: the
    kinds of fold or reinsertion the runtime runs well, and `added_ops`: whether one may add
    ops to the graph (a target's choice, channelcut.targets); `node_overhead` and
    `moved_element`: the latency objective's constants, in FLOPs."""

    fold: bool = True
    objective: str = "flops"
    align: int = 1
    # a target's channel blocks, largest first, used instead of `align` when given: a tensor
    # whose channel count a block divides keeps a multiple of the largest such block (else it
    # would lose the fast layout it had); the others run the slow path anyway and may lose any
    blocks: tuple[int, ...] = ()
    # when given, only tensors an op of these types reads are aligned (RKNN-Toolkit2 pads the
    # Concat inputs it sees unaligned; elsewhere its cycles step in blocks either way)
    align_readers: frozenset[str] = frozenset()
    # and of those readers' inputs, only the ones this picks (their positions), given the
    # channels each input keeps unaligned (None: all): a target's cost decision per reader
    align_reader: Callable[[ir.Node, list[int]], Collection[int]] | None = None
    sites: frozenset[str] = SITE_KINDS
    added_ops: bool = True
    node_overhead: float = NODE_OVERHEAD
    moved_element: float = MOVED_ELEMENT
    # what each added op costs in the deployed file beyond its constants, counted as weight
    # bytes (a site must never grow them): RKNN-Toolkit2 writes each layer's commands
    node_bytes: float = 0.0

    # how a border fold is written: "map" (a constant border map Conv(ones) plus an Add) or
    # "carrier" (one constant input channel stays and carries the others in its weight
    # column: no op added; RKNN-Toolkit2 compiles a map into a full-size constant)
    border_form: str = "map"
    # how a reinsertion is written: "pad-gather" (Pad, Gather, Add) or "conv" (one 1x1 Conv
    # with one-hot weights and the constants as its bias: one NPU layer for RKNN-Toolkit2,
    # which runs a channel Pad on the CPU and turns a Gather into such a conv anyway) or
    # "concat" (the constants as Concat(operand, Expand(constants)) before the Gather: a pass
    # over the output fewer on ONNX Runtime, which expands the constants once, at load)
    reinsert_form: str = "pad-gather"
    # the runtime pads a channel count of a block or more up to the block (ONNX Runtime's
    # MLAS): `blocks` then apply to every tensor at least one block wide, not only to those
    # they divide
    pad_to_blocks: bool = False

    def alignment_of(self, channels: int) -> int:
        """The multiple a tensor of `channels` channels keeps when it loses some (1: none)."""
        if not self.blocks:
            return self.align
        return next((b for b in self.blocks
                     if (channels >= b if self.pad_to_blocks else channels % b == 0)), 1)

    def cost(self, site: Site, cut: int = 0) -> Cost:
        """What the site adds, in the form this target writes it, when the node's output loses
        `cut` of its channel positions: it is written for those it keeps, and the cut model,
        cut again, sees only those and must come to the same decision."""
        cost = self._form_cost(site, cut)
        if self.node_bytes and cost.nodes:
            return Cost(cost.weight_bytes + self.node_bytes * cost.nodes, cost.flops,
                        cost.moved, cost.nodes)
        return cost

    def _form_cost(self, site: Site, cut: int) -> Cost:
        kept = 1.0 - cut / site.positions if site.positions else 1.0
        if site.kind == "border fold" and self.border_form == "carrier":
            return Cost()  # a weight column changes; the carrier's own cost is a kept channel
        if site.kind == "reinsert" and self.reinsert_form == "conv":
            shape = static_shape(site.node.outputs[0])
            channels = shape[1] * kept
            elements = math.prod(shape) * kept
            # RKNN-Toolkit2 runs a conv in blocks of 16 output by 32 input channels at every
            # position, at least 2 input blocks (exact on 1499 layers, bench/rknn_calibrate.py):
            # a one-hot conv costs that whatever its few MACs, counted in FLOPs at the NPU's
            # full rate (naive mobilenet_v2: 12544 cycles for 12 -> 18 channels at 56x56)
            blocks = math.ceil(channels / 16) * max(math.ceil(channels / 32), 2)
            npu = 2.0 * 16 * 32 * blocks * math.prod(shape[2:])
            # at most every channel kept: channels x channels one-hot weights and a bias
            return Cost(weight_bytes=4.0 * channels * (channels + 1),
                        flops=max(2.0 * channels * elements, npu), moved=elements, nodes=1)
        full = site.cost
        return Cost(weight_bytes=full.weight_bytes - site.per_position * cut, flops=full.flops * kept,
                    moved=full.moved * kept, nodes=full.nodes)

    def writes_reinsertion(self, shape: tuple[int, ...] | None, axis: int) -> bool:
        """Can a reinsertion into a tensor of `shape`, channels on `axis`, be written in this
        target's form? The one-hot 1x1 Conv needs NCHW; Pad and Gather take any layout."""
        if self.reinsert_form != "conv":
            return True
        return shape is not None and len(shape) == 4 and axis == 1

    def allows(self, site: Site) -> bool:
        """May the cut use this fold or reinsertion at all?"""
        return site.kind in self.sites and (self.added_ops or self.cost(site).nodes == 0)


def metric(cost: Cost, objective: str, options: Options = Options()) -> float:
    if objective == "params":
        return cost.weight_bytes
    if objective == "latency":
        return (cost.flops + options.moved_element * cost.moved
                + options.node_overhead * cost.nodes)
    return cost.flops


def pays(saved: Cost, added: Cost, objective: str, options: Options = Options()) -> bool:
    """Worth doing: the objective goes down, and the weights never grow."""
    return (metric(saved, objective, options) > metric(added, objective, options)
            and saved.weight_bytes >= added.weight_bytes)
