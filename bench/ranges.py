"""Channels dead by their value range, and channelcut against RKNN-Toolkit2's model_pruning.

For each model two pruned variants are exported to ONNX (the zoo bench's modes):
  consistent  --amount (default 30%) of its coupled channel groups zeroed in PyTorch
              (channelcut.torch_groups, bench/zoo.py's mode (b))
  naive       50% ln_structured(dim=0) on every Conv2d (bench/zoo.py's mode (a))
and cut by channelcut without verification: zero-only (what RKNN-Toolkit's model_pruning is
meant to do), with the rknn target when the core has one (`cut(target="rknn")`), and the full
cut. Each row gives the channels cut because of their interval (report.range_channels), the
channel positions cut in all, and the weights (MB, 10^6 bytes) and GFLOPs removed. With
`--input-range` the ONNX input is assumed to lie in [LO, HI] (the normalised ImageNet pixel
range, say); without it the input is unbounded and only bounded activations bound anything.

With `--rknn-python PY` (RKNN-Toolkit2's venv) the same ONNX is built by the toolkit with
config(model_pruning=True) in a child process (its compiler prints to the file descriptors),
and its own pruning lines (`Weight: -X MB`, `GFLOPs`) are shown next to ours. The target:
channelcut's rknn cut removes at least the toolkit's share of the weights and of the FLOPs
(each tool's share of its own count: the toolkit counts the FLOPs of every op and weights as it
stores them, so absolute figures differ by a few percent).

    python bench/ranges.py --models mobilenet_v2 --rknn-python /work/rknn-venv/bin/python
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PRUNING_LINE = re.compile(r"(Weight|GFLOPs)\s*:", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def rknn_worker(model: str) -> int:
    """In RKNN-Toolkit2's python: build `model` with its model_pruning (fp16, rk3588)."""
    from rknn.api import RKNN

    rknn = RKNN(verbose=True)
    rknn.config(target_platform="rk3588", model_pruning=True)
    if rknn.load_onnx(model=model) != 0 or rknn.build(do_quantization=False) != 0:
        return 1
    rknn.release()
    return 0


def toolkit_pruning(python: str, onnx_path: Path, timeout: float) -> dict[str, Any]:
    """The toolkit's pruning lines for this ONNX, and the MB / GFLOPs change they state."""
    with tempfile.TemporaryDirectory(prefix="ranges_rknn_") as scratch:
        proc = subprocess.run([python, str(Path(__file__).resolve()), "--rknn-worker",
                               str(onnx_path)], cwd=scratch, capture_output=True,
                              timeout=timeout)
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    lines = [re.sub(r"^([DIWE] RKNN: \[[\d:.]+\] ?|[DIWE]\s+)", "", line).strip()
             for line in text.splitlines()]
    pruning = [line for line in lines if PRUNING_LINE.search(line) and "Memory" not in line]
    result: dict[str, Any] = {"lines": pruning, "returncode": proc.returncode}
    for line in pruning:
        numbers = [float(n) for n in NUMBER.findall(line.split(":", 1)[1])]
        key = "weight_mb" if "weight" in line.split(":", 1)[0].lower() else "gflops"
        if numbers:
            result[key] = numbers
    if proc.returncode != 0:
        result["log_tail"] = lines[-10:]
    return result


def channelcut_cuts(onnx_model: Any, input_ranges: dict[str, tuple[float, float]] | None
                    ) -> dict[str, Any]:
    """zero-only, rknn target (if the core has one) and full cuts: what each removes."""
    from channelcut.api import cut

    modes: dict[str, dict[str, Any]] = {"zero": {"fold": False}}
    if "target" in inspect.signature(cut).parameters:
        modes["rknn"] = {"target": "rknn"}
    modes["full"] = {"fold": True}
    rows = {}
    for mode, kwargs in modes.items():
        report = cut(onnx_model, verify=False, input_ranges=input_ranges, **kwargs).report
        rows[mode] = {
            "range_channels": report.range_channels,
            "range_tensors": len(report.range_cuts),
            "removed_channels": report.removed_channels,
            "weight_mb_removed": (report.weight_bytes_before - report.weight_bytes_after) / 1e6,
            "weight_mb_before": report.weight_bytes_before / 1e6,
            "gflops_removed": (report.flops_before - report.flops_after) / 1e9,
            "gflops_before": report.flops_before / 1e9,
        }
    return rows


def mode_name() -> str:
    """The cut compared with the toolkit: the rknn target's, else the full cut."""
    from channelcut.api import cut

    return "rknn" if "target" in inspect.signature(cut).parameters else "full"


def variants(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The model's consistent and naive pruned ONNX exports."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import copy

    import common
    from zoo import zero_consistent_groups

    shape = common.input_shape(name, args.size)
    model = common.build(name, shape, args.seed)
    naive = copy.deepcopy(model)
    zero_consistent_groups(model, shape, args.amount, args.seed)
    common.zoo.prune_ln_structured(naive, 0.5)
    return {"consistent": common.export(model, shape), "naive": common.export(naive, shape)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amount", type=float, default=0.3,
                        help="share of coupled groups zeroed in the consistent variant")
    parser.add_argument("--input-range", default=None, metavar="LO,HI",
                        help="assume the ONNX input lies in [LO, HI] (default: unbounded)")
    parser.add_argument("--rknn-python", default=None,
                        help="RKNN-Toolkit2's python: also run its model_pruning")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--save-onnx", type=Path, default=None, metavar="DIR",
                        help="also save the pruned ONNX exports here")
    parser.add_argument("--rknn-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rknn_worker:
        return rknn_worker(args.rknn_worker)

    import onnx

    bounds = None
    if args.input_range:
        lo, hi = (float(v) for v in args.input_range.split(","))
        bounds = (lo, hi)
    results: dict[str, Any] = {}
    header = (f"{'model':<14}{'variant':<11}{'tool':<15}{'by range':>9}{'channels':>10}"
              f"{'MB before':>10}{'MB cut':>9}{'GF before':>10}{'GF cut':>9}")
    print(f"input range: {'unbounded' if bounds is None else list(bounds)}")
    print(header)
    target_met = True
    for name in args.models:
        for variant, proto in variants(name, args).items():
            ranges = None if bounds is None else {proto.graph.input[0].name: bounds}
            if args.save_onnx:
                args.save_onnx.mkdir(parents=True, exist_ok=True)
                onnx.save(proto, args.save_onnx / f"{name}_{variant}.onnx")
            rows = channelcut_cuts(proto, ranges)
            results[f"{name}/{variant}"] = {"channelcut": rows}
            for mode, row in rows.items():
                print(f"{name:<14}{variant:<11}{'channelcut ' + mode:<15}"
                      f"{row['range_channels']:>9}{row['removed_channels']:>10}"
                      f"{row['weight_mb_before']:>10.5f}{row['weight_mb_removed']:>9.5f}"
                      f"{row['gflops_before']:>10.5f}{row['gflops_removed']:>9.5f}")
            if args.rknn_python:
                with tempfile.TemporaryDirectory(prefix="ranges_onnx_") as tmp:
                    path = Path(tmp) / f"{name}_{variant}.onnx"
                    onnx.save(proto, path)
                    toolkit = toolkit_pruning(args.rknn_python, path, args.timeout)
                results[f"{name}/{variant}"]["toolkit"] = toolkit
                for line in toolkit["lines"] or [f"(no pruning lines; exit "
                                                 f"{toolkit['returncode']})"]:
                    print(f"{name:<14}{variant:<11}{'RKNN-Toolkit2':<15}  {line}")
                ours = rows.get("rknn", rows["full"])
                for key, theirs in (("weight_mb", toolkit.get("weight_mb")),
                                    ("gflops", toolkit.get("gflops"))):
                    # the toolkit prints "-6.46281 MB (-47.7%)": its own counts (FLOPs of
                    # every op, weights as it stores them) differ from ours, so the share of
                    # each tool's own total is what is compared
                    share = 100 * ours[f"{key}_removed"] / ours[f"{key}_before"]
                    met = theirs is not None and len(theirs) > 1 and share + 0.05 >= -theirs[1]
                    target_met &= met
                    print(f"{'':<25}{key}: channelcut {mode_name()} -{share:.1f}%, toolkit "
                          f"{'?' if theirs is None or len(theirs) < 2 else theirs[1]}% "
                          f"({'ok' if met else 'LESS'})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.rknn_python:
        print(f"\ntarget (channelcut's {mode_name()} cut removes at least the toolkit's share "
              f"of weights and of GFLOPs on every row): {'met' if target_met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
