"""channelcut against torch-simplify on naively pruned torchvision models (issue 5).

Every Conv2d of each model (BatchNorm given random statistics) has half its output channels
zeroed by torch.nn.utils.prune.ln_structured(dim=0), the way users prune. torch-simplify
(`simplify.simplify(module, zeros)`) simplifies a deep copy of that module in PyTorch; channelcut
cuts (full cut, no verification) the ONNX export of the same module. Side by side per model:

  params, FLOPs  counted on ONNX exports by the same code (bench/common.py): the original, the
                 torch-simplify module exported to ONNX, and channelcut's cut
  max rel err    max |out - ref| / max |ref| on one seeded random input: torch-simplify's module
                 against the pruned module in PyTorch, channelcut's cut against the original
                 ONNX in ONNX Runtime
  time           torch -> ONNX export; torch-simplify's simplify(); channelcut.cut(verify=False)
  ORT ms         ONNX Runtime CPU latency, median of --runs alternated runs in one process
  speed-up       original / cut for FLOPs and for latency, side by side

Targets: our FLOPs after <= torch-simplify's, our parameters never above the original, our
outputs exact (max rel error <= 1e-4), our cut faster than the original.

    python bench/vs_simplify.py                      # all ten models, 224x224 (inception 299)
    python bench/vs_simplify.py --models resnet18 --size 64 --runs 5
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import (FAIL, Column, Failures, Session, Table, emit, error, giga,  # noqa: E402
                    millions, millis, ok, ratio, seconds, timed)

MODELS = ("resnet18", "resnet50", "densenet121", "mobilenet_v2", "googlenet", "inception_v3",
          "vgg16_bn", "wide_resnet50_2", "mnasnet1_0", "shufflenet_v2_x1_0")
AMOUNT = 0.5

COLUMNS = [
    Column("model", 18), Column("input", 5),
    Column("orig", 7, "params"), Column("simpl", 7, "params"), Column("cut", 7, "params"),
    Column("orig", 7, "FLOPs"), Column("simpl", 7, "FLOPs"), Column("cut", 7, "FLOPs"),
    Column("simpl", 8, "max rel err"), Column("cut", 8, "max rel err"),
    Column("export", 7, "time"), Column("simpl", 7, "time"), Column("cut", 7, "time"),
    Column("orig", 7, "ORT ms"), Column("simpl", 7, "ORT ms"), Column("cut", 7, "ORT ms"),
    Column("FLOPs", 6, "cut speed-up"), Column("ORT", 6, "cut speed-up"),
]


@dataclass
class Row:
    """What one model measured; FAIL where that step raised, None where it did not run."""

    name: str
    size: Any = None  # input height and width
    params: tuple[Any, Any, Any] = (None, None, None)  # original, torch-simplify, channelcut
    flops: tuple[Any, Any, Any] = (None, None, None)
    simplify_error: Any = None
    cut_error: Any = None
    export_s: Any = None
    simplify_s: Any = None
    cut_s: Any = None
    latency: tuple[Any, Any, Any] = (None, None, None)

    def cells(self) -> list[str]:
        return [self.name, str(self.size or "-"), *map(millions, self.params),
                *map(giga, self.flops),
                error(self.simplify_error), error(self.cut_error),
                seconds(self.export_s), seconds(self.simplify_s), seconds(self.cut_s),
                *map(millis, self.latency),
                ratio(self.flops[0], self.flops[2]), ratio(self.latency[0], self.latency[2])]

    def targets(self) -> dict[str, bool | None]:
        """Each target: held, missed, or None when a failed step left it unmeasured."""
        orig_params, _, cut_params = self.params
        orig_flops, simplify_flops, cut_flops = self.flops
        orig_ms, _, cut_ms = self.latency
        return {
            "FLOPs <= torch-simplify's": cut_flops <= simplify_flops
            if ok(cut_flops, simplify_flops) else None,
            "params <= original": cut_params <= orig_params
            if ok(cut_params, orig_params) else None,
            "exact": self.cut_error.exact if ok(self.cut_error) else None,
            "faster than original": cut_ms < orig_ms if ok(cut_ms, orig_ms) else None,
        }


def run_model(name: str, args: Any, failures: Failures) -> Row:
    import channelcut
    import torch
    from simplify import simplify

    shape = common.input_shape(name, args.size)
    row = Row(name, shape[-1])
    x = common.example_input(shape, args.seed)
    model = common.zoo.prune_ln_structured(common.build(name, shape, args.seed), AMOUNT)
    original, row.export_s = timed(common.export, model, shape)
    sessions: dict[str, Session] = {"orig": Session(original, args.threads)}
    reference = sessions["orig"].run(x)

    copies = [copy.deepcopy(model) for _ in range(args.repeat)]  # simplify() changes its input
    simplified, row.simplify_s = common.best_of(
        args.repeat, failures, name, "torch-simplify", lambda: simplify(copies.pop(),
                                                                        torch.zeros(shape)))
    simplified_onnx = FAIL
    if ok(simplified):
        row.simplify_error = common.output_errors(common.torch_outputs(model, x),
                                                  common.torch_outputs(simplified, x))
        simplified_onnx = failures.attempt(name, "torch-simplify ONNX export",
                                           common.export, simplified, shape)
    if ok(simplified_onnx):
        sessions["simpl"] = Session(simplified_onnx, args.threads)

    result, row.cut_s = common.best_of(args.repeat, failures, name, "channelcut.cut",
                                       channelcut.cut, original, fold=True, verify=False,
                                       align=args.align)
    if ok(result):
        sessions["cut"] = failures.attempt(name, "ORT session of the cut", Session,
                                           result.model, args.threads)
        if ok(sessions["cut"]):
            row.cut_error = common.output_errors(reference, sessions["cut"].run(x))
        else:
            del sessions["cut"]

    models = (original, simplified_onnx, result.model if ok(result) else FAIL)
    row.params = tuple(common.onnx_params(m) if ok(m) else m for m in models)
    row.flops = tuple(failures.attempt(name, "FLOP count", common.onnx_flops, m)
                      if ok(m) else m for m in models)
    medians = common.alternating_latency(list(sessions.values()), x, args.runs, args.warmup,
                                             args.stat)
    latency = dict(zip(sessions, medians))
    row.latency = tuple(latency.get(k, FAIL if k != "orig" else None)
                        for k in ("orig", "simpl", "cut"))
    return row


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__, MODELS, argv)
    table = Table(COLUMNS)
    failures = Failures()
    emit(f"naive {AMOUNT:.0%} ln_structured(dim=0) on every Conv2d; "
         f"{common.latency_setup(args)}")
    emit(table.header())
    rows = []
    for name in args.models:
        row = failures.attempt(name, "build/prune/export", run_model, name, args, failures)
        row = row if ok(row) else Row(name)
        rows.append(row)
        emit(table.row(row.cells()))
    emit()
    common.summarize(failures, {r.name: r.targets() for r in rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
