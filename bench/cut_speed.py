"""How long channelcut takes to analyse and cut a ResNet, and how that time grows from
ResNet-18 to ResNet-152 (issue 2).

Each torchvision ResNet (random weights, BatchNorm given random statistics) has half the output
channels of every Conv2d zeroed by torch.nn.utils.prune.ln_structured(dim=0), the way users
prune, and is exported to ONNX (TorchScript exporter, BatchNorm folded, opset 17). The time is
channelcut.cut(model, verify=False) on the loaded ModelProto: analysis, solving and rewrite,
best of --repeats runs, for the zero-only cut (the seed's behaviour) and the full cut (constant
folding and one-sided residual cuts). ResNet-50 is the headline row; linear growth shows as a
flat "ms/node" column (and a "vs resnet18" ratio near 1). The verification run in ONNX Runtime
is left out: it is the models' own inference time, not the analysis.

    python bench/cut_speed.py
    python bench/cut_speed.py --models resnet50 --size 64 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from pathlib import Path
from typing import Any

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import channelcut  # noqa: E402

MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
AMOUNT = 0.5


def best_time(model: onnx.ModelProto, fold: bool, repeats: int) -> tuple[float, Any]:
    """The fastest of `repeats` unverified cuts, in seconds, and the last cut's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = channelcut.cut(model, fold=fold, verify=False)
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated torchvision ResNets (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input side (default: 224)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed cuts per model and mode; the best is shown (default: 3)")
    args = parser.parse_args(argv)
    print(f"naive {AMOUNT:.0%} ln_structured(dim=0) on every Conv2d, input 1x3x{args.size}x"
          f"{args.size}; channelcut.cut(verify=False), best of {args.repeats}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    print(f"{'model':<10} {'nodes':>6} {'zero-only s':>12} {'ms/node':>8} {'full s':>8} "
          f"{'ms/node':>8} {'vs resnet18':>12} {'params':>16}", flush=True)
    base = None
    for name in (m for m in args.models.split(",") if m):
        shape = (1, 3, args.size, args.size)
        module = common.zoo.prune_ln_structured(common.build(name, shape, seed=0), AMOUNT)
        model = common.export(module, shape)
        nodes = len(model.graph.node)
        zero, _ = best_time(model, False, args.repeats)
        full, result = best_time(model, True, args.repeats)
        per_node = full / nodes
        base = base if base is not None else per_node
        params = f"{common.millions(common.onnx_params(model))}->" \
                 f"{common.millions(common.onnx_params(result.model))}"
        print(f"{name:<10} {nodes:>6} {zero:>12.3f} {1e3 * zero / nodes:>8.3f} {full:>8.3f} "
              f"{1e3 * per_node:>8.3f} {per_node / base:>11.2f}x {params:>16}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
