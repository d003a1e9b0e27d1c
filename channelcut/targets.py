"""Where the cut model will run: each target decides the channel alignment, which rewrites the
cut may make (and so the form each takes there), and the cost model that decides which pay.

A rewrite is one of the solver's site kinds (channelcut.solve.SITE_KINDS), each written by
channelcut.fold in one form:
  "bias fold"    a constant input channel of a Conv or Gemm goes into its bias (a bias input is
                 created when there is none: no op is added); after a MatMul it is an Add
  "border fold"  a constant channel a padded Conv reads: Conv(ConstantOfShape(ones), U) + Add
  "reinsert"     an operand's constant channels put back for a one-sided cut: Pad, Gather (and
                 an Add of the constants)
A target lists the kinds its runtime runs well and whether a rewrite may add ops; the rest are
not made (those channels stay). Adding a target is one entry in TARGETS.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from channelcut.costs import MOVED_ELEMENT, NODE_OVERHEAD, SITE_KINDS
from channelcut.errors import ChannelcutError

if TYPE_CHECKING:  # the solver is imported when options are made: the CLI's parser lists
    from channelcut.solve import Options  # the targets without loading the engine

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
    guard: bool = False
    align_readers: frozenset[str] = frozenset()  # align only what these ops read (all: empty)
    # the runtime pads every channel count of a block or more up to the block (a tensor of 24
    # channels costs what 32 do): align every such tensor, not only those a block divides
    pad_to_blocks: bool = False
    border_form: str = "map"  # how a border fold is written (channelcut.solve.Options)
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
        from channelcut.solve import Options  # noqa: PLC0415

        blocks = self.channel_blocks() if align is None else ()
        return Options(fold=fold, objective=objective or self.objective,
                       align=self.alignment() if align is None else align, blocks=blocks,
                       align_readers=self.align_readers if align is None else frozenset(),
                       sites=self.sites, added_ops=self.added_ops, border_form=self.border_form,
                       reinsert_form=self.reinsert_form, pad_to_blocks=self.pad_to_blocks,
                       node_overhead=self.node_overhead, moved_element=self.moved_element)


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
           SITE_KINDS, True, "latency", guard=True, pad_to_blocks=True),
    # RKNN-Toolkit2 2.5.0, measured with its compiler (rk3588, bench/rknn_build.py): a border
    # map becomes a full-size constant, a Gather a one-hot 1x1 conv, a channel Pad runs on the
    # CPU unless its input holds a multiple of 8; a bias, or an Add after a conv, is free.
    # Conv cycles step in blocks of 16/32 output and 32 input channels whatever the count, so an unaligned
    # cut never costs a cycle and is the smallest .rknn (the seed demo: 187.6 KB unaligned,
    # 218.1 KB aligned to 8, same cycles); but Concat inputs left unaligned are padded by the
    # toolkit (densenet121: 33.3 MB, 13.4 MB aligned to 8): align those only.
    # So a border fold is written as a carrier (one constant channel stays and carries the
    # others in its weight column: exact, no op added; measured: no cycle, +0.3 KB), and a
    # reinsertion as one 1x1 Conv with one-hot weights (one NPU layer; naive resnet18: 11.5 MB,
    # 2.79 M cycles, no CPU op, against 17.6 MB, 5.43 M with bias folds only). Objective flops:
    # the cycle estimate is conv MACs in channel blocks; the one-hot conv is counted in full.
    Target("rknn", "Rockchip NPUs through RKNN-Toolkit2: bias and carrier folds, "
           "reinsertions as one-hot 1x1 convs, Concat inputs aligned to 8", (8,), SITE_KINDS,
           True, "flops", align_readers=frozenset({"Concat"}), border_form="carrier",
           reinsert_form="conv"),
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

