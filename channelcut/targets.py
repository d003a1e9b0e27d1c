"""Where the cut model will run: each target decides the channel alignment, which rewrites the
cut may make (and so the form each takes there), and the cost model that decides which pay.

A rewrite is one of the solver's site kinds (channelcut.solve.SITE_KINDS), each written by
channelcut.fold in one form:
  "bias fold"    a constant input channel of a Conv or Gemm goes into its bias (a bias input is
                 created when there is none: no op is added); after a MatMul it is an Add
  "border fold"  a constant channel a padded Conv reads: Conv(ConstantOfShape(ones), U) + Add
  "reinsert"     an operand's constant channels put back for a one-sided cut: Pad, Gather (and
                 an Add of the constants); on ort-cpu Concat(operand, Expand(constants)) and
                 Gather; on rknn one 1x1 conv with one-hot weights
A target lists the kinds its runtime runs well and whether a rewrite may add ops; the rest are
not made (those channels stay). Adding a target is one entry in TARGETS.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from typing import TYPE_CHECKING

from channelcut.costs import MOVED_ELEMENT, NODE_OVERHEAD, SITE_KINDS
from channelcut.errors import ChannelcutError

if TYPE_CHECKING:  # the solver is imported when options are made: the CLI's parser lists
    import onnx_ir as ir  # the targets without loading the engine

    from channelcut.options import Options

CPUINFO = Path("/proc/cpuinfo")


def cpu_vector_channels(cpuinfo: str | None = None, machine: str | None = None) -> int:
    """Channels per block of ONNX Runtime's blocked (NCHWc) CPU kernels on this machine.

    MLAS picks the block from the CPU (onnxruntime/core/mlas/lib/platform.cpp): 16 floats (one
    512-bit register) with AVX-512F, 8 on other x86-64 (SSE, AVX, AVX2: two 128-bit or one
    256-bit register); on ARM64 its NEON NCHWc kernels use 16 (MLAS_NEON_NCHWC_BLOCK_SIZE;
    builds without them run the GEMM path, for which 16 is a multiple of NEON's 4 lanes too).
    A tensor whose channel count is not a multiple of the block runs the slow NCHW path.
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return 16
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), [])
    return 16 if "avx512f" in flags else 8


# Ops between a Concat and the conv that reads it that RKNN-Toolkit2 fuses into that conv or
# runs per channel (the split conv reads each input through them alike).
_CHANNELWISE = frozenset({"BatchNormalization", "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid",
                          "HardSigmoid", "HardSwish", "Mul", "Add", "Sub", "Div"})


def _reader(value: ir.Value, ops: frozenset[str], depth: int = 4) -> ir.Node | None:
    """The node of one of `ops` that reads `value` directly or through channelwise ops, if any."""
    for use in value.uses():
        node = use.node
        if node.op_type in ops and use.idx == 0:
            return node
        if node.op_type in _CHANNELWISE and depth and node.outputs:
            found = _reader(node.outputs[0], ops, depth - 1)
            if found is not None:
                return found
    return None


_conv_reading = partial(_reader, ops=frozenset({"Conv"}))
_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool"})


def _conv_producing(value: ir.Value, depth: int = 4) -> ir.Node | None:
    """The Conv that writes `value` directly or through channelwise ops, if any."""
    node = value.producer()
    if node is None:
        return None
    if node.op_type == "Conv":
        return node
    if node.op_type in _CHANNELWISE and depth and node.inputs and node.inputs[0] is not None:
        return _conv_producing(node.inputs[0], depth - 1)
    return None


def _weight_bytes_per_channel(conv: ir.Node | None, axis: int) -> int:
    """float32 bytes of one output row (axis 0) or one input column (axis 1) of a Conv."""
    weight = conv.inputs[1] if conv is not None and len(conv.inputs) > 1 else None
    shape = weight.shape if weight is not None and weight.shape is not None else None
    if shape is None or len(shape) < 3 or not all(isinstance(d, int) for d in shape):
        return 0
    return 4 * math.prod(int(d) for i, d in enumerate(shape) if i != axis)


def rknn_concat_splits(node: ir.Node, kept: list[int], block: int = 8) -> tuple[int, ...]:
    """The inputs of this Concat (their positions) that RKNN-Toolkit2 runs cheaper aligned to
    `block` than with `kept` channels each. Measured (bench/rknn_calibrate.py, "concat" and
    "concat_last"; bench/RKNN_FINDINGS.md), fp16:
    - an input other than the last that is not a multiple of 8 makes the compiler drop the
      Concat and split the conv reading it into one conv per input plus an Add; each part
      costs at least 2 input blocks of 32 (NPU cycles: ceil(Cout/16) * max(ceil(Cin/32) *
      k^2, 2) * HW). So those inputs are aligned where a conv reads the Concat and its parts
      cost more blocks than the aligned whole (densenet121: 33.3 MB unaligned, 13.4 MB
      aligned). A Concat that pooling reads (densenet121's last, through BN and Relu) is not
      split but copied, about 2 * C^2 bytes (C its channels): those inputs are aligned where
      the weights that keeps cost less than the copy (groups-pruned densenet121: 10.86 MB
      against 11.49 MB, the same cycles). A Concat nothing of these reads (a channel shuffle,
      shufflenet_v2: the compiler writes Concat, Reshape and Transpose as convs either way)
      gains nothing from the channels aligning keeps (groups-pruned shufflenet_v2_x1_0: 3.43
      MB and 0.590 M cycles unaligned, 4.29 MB and 0.647 M aligned).
    - the last input is never aligned. It does not split the reader and costs no cycle
      unaligned (its alignment keeps channels in blocks the NPU computes anyway); unaligned it
      makes the compiler copy the Concat, as above, but aligning it would keep channels the
      analysis proves dead and that RKNN-Toolkit2's own pruning removes, as it leaves the last
      input unaligned (groups-pruned densenet121: 0.039 GFLOPs, 0.7% of the model; the .rknn
      is then the toolkit's, 10.86 MB against 9.95 MB aligned, 3.349 M cycles either way).
      The rknn target removes at least what the toolkit's pruning removes.
    `block`: the channel block of the build's layout (8 in fp16, 16 in int8)."""
    output = node.outputs[0] if node.outputs else None
    live, last = [(i, k) for i, k in enumerate(kept) if k], len(kept) - 1
    if output is None or len(live) < 2 or not any(k % block for i, k in live if i != last):
        return ()
    before = tuple(i for i, _ in live if i != last)
    aligned = sum(k if i == last else -(-k // block) * block for i, k in live)
    reader = _conv_reading(output)
    if reader is not None:
        weight = reader.inputs[1] if len(reader.inputs) > 1 else None
        shape = weight.shape if weight is not None and weight.shape is not None else None
        area = math.prod(int(d) for d in shape[2:]) if shape is not None and all(
            isinstance(d, int) for d in shape[2:]) else 1
        parts = sum(max(-(-k // 32) * area, 2) for _, k in live)
        if parts <= max(-(-aligned // 32) * area, 2):
            return ()  # the compiler splits the reader: no Concat is left to copy
        return before
    if _reader(output, _POOLS) is None:
        return ()
    copy = 4 * aligned ** 2 + RKNN_LAYER_BYTES  # channelcut's float32 bytes: 2x fp16
    keeps = sum(-k % block * _weight_bytes_per_channel(_conv_producing(node.inputs[i]), 0)
                for i, k in live if i != last and node.inputs[i] is not None)
    return before if keeps <= copy else ()


# The .rknn bytes a layer takes beyond its weights (its compiled commands): 8.3-10 KB on every
# fp16 build measured (mobilenet_v2, resnet18, shufflenet_v2; .rknn size less "Total Weight
# Memory Size", per layer of the compiler's table); an added op must free at least that much,
# in the weight bytes channelcut counts (float32: twice an fp16 file's).
RKNN_LAYER_BYTES = 16384.0


@dataclass(frozen=True)
class Target:
    """One runtime: the alignment it wants, the rewrites it runs well, its cost model, and
    whether the cut is timed on this machine against the original (`guard`)."""

    name: str
    summary: str
    blocks: tuple[int, ...] | Callable[[], tuple[int, ...]]  # channel blocks, largest first
    sites: frozenset[str]
    added_ops: bool
    objective: str
    node_overhead: float = NODE_OVERHEAD
    moved_element: float = MOVED_ELEMENT
    node_bytes: float = 0.0  # what an added op costs in the deployed file (channelcut.options)
    guard: bool = False
    align_readers: frozenset[str] = frozenset()  # align only what these ops read (all: empty)
    align_reader: Callable[[ir.Node, list[int]], bool] | None = None  # and of those, these
    # the runtime pads every channel count of a block or more up to the block (a tensor of 24
    # channels costs what 32 do): align every such tensor, not only those a block divides
    pad_to_blocks: bool = False
    border_form: str = "map"  # how a border fold is written (channelcut.options.Options)
    reinsert_form: str = "pad-gather"  # how a reinsertion is written

    def channel_blocks(self) -> tuple[int, ...]:
        return tuple(self.blocks() if callable(self.blocks) else self.blocks)

    def alignment(self) -> int:
        """The largest block (1: none)."""
        return max(self.channel_blocks(), default=1)

    def options(self, *, fold: bool = True, objective: str | None = None,
                align: int | None = None) -> Options:
        """The solver's options for this target; explicit choices win over the target's (an
        explicit `align` applies to every tensor, the target's blocks only where a tensor was
        aligned)."""
        from channelcut.options import Options  # noqa: PLC0415

        blocks = self.channel_blocks() if align is None else ()
        return Options(fold=fold, objective=objective or self.objective,
                       align=self.alignment() if align is None else align, blocks=blocks,
                       align_readers=self.align_readers if align is None else frozenset(),
                       align_reader=self.align_reader if align is None else None,
                       sites=self.sites, added_ops=self.added_ops, border_form=self.border_form,
                       reinsert_form=self.reinsert_form, pad_to_blocks=self.pad_to_blocks,
                       node_overhead=self.node_overhead, moved_element=self.moved_element,
                       node_bytes=self.node_bytes)


TARGETS: dict[str, Target] = {t.name: t for t in (
    # Every rewrite, judged by FLOPs, no alignment: the fewest FLOPs, whatever runs it.
    Target("min-flops", "every rewrite, fewest FLOPs; no alignment (cut()'s default)",
           (), SITE_KINDS, True, "flops"),
    # ONNX Runtime on this CPU: the latency objective was calibrated there (channelcut.solve);
    # the guard times the result against the original and keeps the faster. MLAS's NCHWc
    # convs (ORT 1.32) pad any channel count of 16 or more up to the block (20 and 24 channels
    # run as fast as 32), while a conv reading fewer than 16 takes an NCHW input after a
    # ReorderOutput (34 GF/s against 75-100 on AVX-512: mobilenet_v2's 24-channel tensors cut
    # to 14 made 2 of its 1x1 convs 2x slower): so every tensor of 16 or more keeps a multiple.
    Target("ort-cpu", "ONNX Runtime on this CPU: aligned to its vector width, latency "
           "objective, timed against the original", lambda: (cpu_vector_channels(),),
           SITE_KINDS, True, "latency", guard=True, pad_to_blocks=True, reinsert_form="concat"),
    # RKNN-Toolkit2 2.5.0, measured with its compiler (rk3588, bench/rknn_build.py): a border
    # map becomes a full-size constant, a Gather a one-hot 1x1 conv, a channel Pad runs on the
    # CPU unless its input holds a multiple of 8; a bias, or an Add after a conv, is free.
    # Conv cycles step in blocks of 16/32 output and 32 input channels whatever the count, so an unaligned
    # cut never costs a cycle and is the smallest .rknn (the seed demo: 187.6 KB unaligned,
    # 218.1 KB aligned to 8, same cycles); but a conv reading a Concat of unaligned inputs is
    # split per input (densenet121: 33.3 MB, 13.4 MB aligned to 8): align those Concats only,
    # where the split costs more than aligning (or, read by pooling, the copy the compiler
    # writes more than the weights aligning keeps), never their last input, which splits
    # nothing and costs no cycle: its alignment would keep channels RKNN-Toolkit2's own
    # pruning removes (rknn_concat_splits).
    # So a border fold is written as a carrier (one constant channel stays and carries the
    # others in its weight column: exact, no op added; measured: no cycle, +0.3 KB), and a
    # reinsertion as one 1x1 Conv with one-hot weights (one NPU layer; naive resnet18: 11.5 MB,
    # 2.79 M cycles, no CPU op, against 17.6 MB, 5.43 M with bias folds only). Objective flops:
    # the cycle estimate is conv MACs in channel blocks; the one-hot conv is counted at the
    # compiler's blocked cycles (channelcut.options.Options.cost) and every added layer at its
    # .rknn bytes, so a reinsertion that frees less is not made (naive mobilenet_v2: 2.94 MB,
    # 0.718 M cycles against 3.01 MB, 0.755 M counting MACs only; the toolkit: 2.96, 0.750).
    Target("rknn", "Rockchip NPUs through RKNN-Toolkit2: bias and carrier folds, "
           "reinsertions as one-hot 1x1 convs, inputs of a conv-read Concat aligned to 8", (8,),
           SITE_KINDS, True, "flops", align_readers=frozenset({"Concat"}), align_reader=rknn_concat_splits,
           border_form="carrier", reinsert_form="conv", node_bytes=RKNN_LAYER_BYTES),
    # The same for int8 builds, whose layout holds 16 channels a block: Concat inputs kept at
    # multiples of 8 only cost the int8 build what unaligned ones cost fp16 (groups-pruned
    # densenet121 int8: 15.7 MB, above the uncut 12.3 MB, aligned to 8; 7.7 MB aligned to 16;
    # yolov8n int8: 2.20 and 2.29 MB aligned to 8, 2.06 and 2.18 MB to 16). The RKNN facade
    # cuts for it when it quantizes.
    Target("rknn-int8", "as rknn, for int8 builds: inputs of a conv-read Concat aligned to 16",
           (16, 8), SITE_KINDS, True, "flops", align_readers=frozenset({"Concat"}),
           align_reader=partial(rknn_concat_splits, block=16), border_form="carrier",
           reinsert_form="conv", node_bytes=RKNN_LAYER_BYTES),  # an int8 file's weights
    # are half an fp16 one's, so a layer is worth twice the bytes there: not measured yet
    # What every runtime runs natively: slicing, and folds into a layer's bias (no added op);
    # ONNX Runtime's blocks (16 with AVX-512, 8 with AVX2) and RKNN-Toolkit2's 8. As on
    # ort-cpu, a tensor of 16 channels or more keeps a multiple of 16 (MLAS pads 24 to 32 and
    # runs it blocked; cut below 16 it would leave the blocked path and run slower), one of
    # 8 to 15 a multiple of 8; RKNN's cycles step in blocks either way.
    Target("portable", "slicing, bias and carrier folds (no op added), a tensor of 16 "
           "channels or more aligned to 16 (8 to 15: to 8): never worse on ONNX Runtime CPU "
           "or RKNN", (16, 8), frozenset({"bias fold", "border fold"}), False, "flops",
           border_form="carrier", pad_to_blocks=True),
)}
DEFAULT = "min-flops"  # cut()'s: the library keeps its behaviour
CLI_DEFAULT = "portable"  # the console script's: see the README (targets)


def get(name: str) -> Target:
    """The target called `name`; a ChannelcutError naming the known ones otherwise."""
    target = TARGETS.get(name) if isinstance(name, str) else None
    if target is None:
        raise ChannelcutError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}")
    return target

