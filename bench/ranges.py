"""Channels dead by their value range, and channelcut against RKNN-Toolkit2's model_pruning.

For each model of the target benchmark (bench/targets.py's list, its exports) two pruned
variants are exported to ONNX:
  groups  --amount (default targets.AMOUNT, 50%) of its coupled channel groups zeroed in
          PyTorch (channelcut.torch_groups, bench/zoo.py's mode (b)); "consistent" pruning
  naive   50% ln_structured(dim=0) on every Conv2d (bench/zoo.py's mode (a); the seed demo's
          own pruned network for `demo`)
and cut by channelcut without verification: zero-only (what RKNN-Toolkit's model_pruning is
meant to do), with the rknn target (`cut(target="rknn")`), the full cut, and the rknn target
without its alignment of Concat inputs to 8 (rknn-a1: what that alignment keeps). Each row gives the
channels cut because of their interval (report.range_channels), the channel positions cut in
all, the conv/gemm filters (weight rows) cut, and the weights (MB, 10^6 bytes) and GFLOPs
removed. With `--input-range` the ONNX input is assumed to lie in [LO, HI] (the normalised
ImageNet pixel range, say); without it the input is unbounded and only bounded activations
bound anything (the toolkit is given no mean/std either).

With `--rknn-python PY` (RKNN-Toolkit2's venv) the same ONNX is built by the toolkit (rk3588,
fp16) in a child process (its compiler prints to the file descriptors), which saves the
toolkit's graph as built (its IR is an ONNX model, after its own rewrites; the toolkit's fused
exSwish is read as x * Sigmoid(x)). Three toolkit rows:
  RKNN-Tk own        its own summary lines for config(model_pruning=True) (`Weight: -X MB
                     (-Y%)`, its "MB" being MiB, shown in 10^6 bytes; `GFLOPs: -Z (-W%)`;
                     "before" is what its percentages imply)
  RKNN-Tk pruned     its graph after its model_pruning, counted by channelcut's counters
  cc rknn, tk-built  channelcut's rknn cut built by the toolkit without its pruning, counted
                     the same way
Both counted rows are against the toolkit's graph of the original built without its pruning
("before": its rewrites, a channel shuffle made 1x1 convs say, are in all three); "filters"
there are the original's conv/gemm initializers by name (the toolkit renames the ones it
fuses), and `tk err` is the largest output difference of that graph against the original in
ONNX Runtime, max |diff| / max |ref| over normal inputs and inputs scaled to +-100.

The target, two measures: (1) shares: channelcut's rknn cut removes at least the toolkit's own
share of its weights and of its FLOPs (each tool's share of its own total: the toolkit counts
the FLOPs of every op and the weights of the graph its rewrites made); (2) absolute: the
toolkit's graph of our rknn cut holds no more weight bytes and FLOPs than its pruned graph of
the original, both counted by channelcut. `--cache DIR` keeps the exports and the toolkit's
results (keyed by the ONNX's hash), so a rerun builds nothing twice.

    python bench/ranges.py --cache /tmp/ranges --rknn-python /work/rknn-venv/bin/python
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PRUNING_LINE = re.compile(r"(Weight|GFLOPs)\s*:", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
MODELS = ("demo", "resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121",
          "shufflenet_v2_x1_0")  # bench/targets.py's, less yolov8n (the compiler crashes on it)
MIB = 2 ** 20
MODES = {"zero": {"fold": False}, "rknn": {"target": "rknn"}, "full": {"fold": True},
         # the rknn target without its alignment of Concat inputs to 8: what that costs
         "rknn-a1": {"target": "rknn", "align": 1}}


def rknn_worker(model: str, pruned: str, pruning: str) -> int:
    """In RKNN-Toolkit2's python: build `model` (fp16, rk3588), with its model_pruning when
    `pruning` is "1", and save its graph as built (the toolkit's IR holds an ONNX model, after
    its own rewrites and pruning) to `pruned`."""
    from rknn.api import RKNN

    rknn = RKNN(verbose=True)
    rknn.config(target_platform="rk3588", model_pruning=pruning == "1")
    if rknn.load_onnx(model=model) != 0 or rknn.build(do_quantization=False) != 0:
        return 1
    rknn.rknn_base.ir.save_onnx(pruned)
    rknn.release()
    return 0


def toolkit_pruning(python: str, onnx_path: Path, pruned: Path, timeout: float,
                    pruning: bool) -> dict[str, Any]:
    """The toolkit's pruning lines for this ONNX and the MB / GFLOPs change they state; its
    graph as built goes to `pruned`."""
    with tempfile.TemporaryDirectory(prefix="ranges_rknn_") as scratch:
        proc = subprocess.run([python, str(Path(__file__).resolve()), "--rknn-worker",
                               str(onnx_path), str(pruned), "1" if pruning else "0"],
                              cwd=scratch, capture_output=True, timeout=timeout)
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    lines = [re.sub(r"^([DIWE] RKNN: \[[\d:.]+\] ?|[DIWE]\s+)", "", line).strip()
             for line in text.splitlines()]
    pruning = [line for line in lines if PRUNING_LINE.search(line) and "Memory" not in line]
    result: dict[str, Any] = {"lines": pruning, "returncode": proc.returncode}
    for line in pruning:
        numbers = [float(n) for n in NUMBER.findall(line.split(":", 1)[1])]
        key = "weight_mib" if "weight" in line.split(":", 1)[0].lower() else "gflops"
        if numbers:
            result[key] = numbers
    if proc.returncode != 0:
        result["log_tail"] = lines[-10:]
    return result


def filters(model: Any) -> dict[str, int]:
    """Rows (output channels) of every rank >= 2 initializer, by name: conv and gemm filters."""
    return {t.name: int(t.dims[0]) for t in model.graph.initializer if len(t.dims) >= 2}


def filters_cut(original: dict[str, int], pruned: Any) -> tuple[int, dict[str, int]]:
    """Filters the pruned graph lost against the original's, in all and per initializer."""
    after = filters(pruned)
    lost = {name: rows - after[name] for name, rows in original.items()
            if name in after and after[name] < rows}
    return sum(lost.values()), lost


def figures(report: Any) -> dict[str, Any]:
    """What a cut removed, from its report (channelcut's counters)."""
    return {"range_channels": report.range_channels,
            "range_tensors": len(report.range_cuts),
            "removed_channels": report.removed_channels,
            "weight_mb_removed": (report.weight_bytes_before - report.weight_bytes_after) / 1e6,
            "weight_mb_before": report.weight_bytes_before / 1e6,
            "gflops_removed": (report.flops_before - report.flops_after) / 1e9,
            "gflops_before": report.flops_before / 1e9}


def channelcut_cuts(proto: Any, input_ranges: dict[str, tuple[float, float]] | None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """zero-only, rknn target and full cuts: what each removes; and the cut models."""
    from channelcut.api import cut

    rows, models = {}, {}
    original = filters(proto)
    for mode, kwargs in MODES.items():
        result = cut(proto, verify=False, input_ranges=input_ranges, **kwargs)
        rows[mode] = figures(result.report)
        rows[mode]["filters_cut"], rows[mode]["filters_lost"] = filters_cut(original,
                                                                           result.model)
        models[mode] = result.model
    return rows, models


def standard_ops(model: Any) -> Any:
    """The toolkit's graph with its own fused ops written in ONNX ops (what they compute), so
    that channelcut and ONNX Runtime read it: exSwish(x) = x * Sigmoid(x). Another op of its
    own stays (the graph then fails to load, and the bench says so)."""
    import onnx
    from onnx import helper

    if not any(n.op_type == "exSwish" for n in model.graph.node):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = []
    for n in model.graph.node:
        if n.op_type != "exSwish":
            nodes.append(n)
            continue
        gate = f"{n.output[0]}__sigmoid"
        nodes += [helper.make_node("Sigmoid", [n.input[0]], [gate], name=f"{n.name}__sigmoid"),
                  helper.make_node("Mul", [n.input[0], gate], [n.output[0]], name=n.name)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def measure(model: Any) -> tuple[int, int]:
    """Weight bytes and FLOPs of a model, by channelcut's counters."""
    from channelcut.api import cut

    report = cut(model, verify=False, fold=False).report
    return report.weight_bytes_before, report.flops_before


def counted(original: Any, before: tuple[int, int], pruned: Any) -> dict[str, Any]:
    """A toolkit's graph against the original (whose `before` = measure()), both counted by
    channelcut."""
    (w0, f0), (w1, f1) = before, measure(pruned)
    lost_total, lost = filters_cut(filters(original), pruned)
    return {"weight_mb_before": w0 / 1e6, "weight_mb_removed": (w0 - w1) / 1e6,
            "gflops_before": f0 / 1e9, "gflops_removed": (f0 - f1) / 1e9,
            "filters_cut": lost_total, "filters_lost": lost}


def output_error(original: Any, pruned: Any, seed: int) -> float:
    """max |pruned - original| / max |original| in ONNX Runtime, over normal inputs and the
    same inputs scaled by 100 (the input is unbounded: a cut that assumes a range shows)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the toolkit's graph lists its initializers as inputs

    def session(model: Any) -> Any:
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])

    a, b = session(original), session(pruned)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for scale in (1.0, 1.0, 100.0, -100.0):
        feeds = {i.name: (scale * rng.standard_normal(
                     [d if isinstance(d, int) and d > 0 else 1 for d in i.shape])
                 ).astype(np.float32) for i in a.get_inputs()}
        feeds_b = {i.name: feeds[i.name] for i in b.get_inputs()}
        for want, got in zip(a.run(None, feeds), b.run(None, feeds_b)):
            scale_ref = float(np.abs(want).max()) or 1.0
            worst = max(worst, float(np.abs(got - want).max()) / scale_ref)
    return worst


def variants(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The model's naive and groups-pruned ONNX exports: bench/targets.py's, with --amount of
    the groups zeroed (targets.py's AMOUNT by default)."""
    import common
    import targets
    from zoo import zero_consistent_groups

    shape = common.input_shape(name, args.size)
    out = {"naive": targets.pruned_onnx(name, "naive", shape, args.seed)}
    module = targets._module(name, shape, args.seed)
    zero_consistent_groups(module, shape, args.amount, args.seed)
    out["groups"] = common.export(module, shape)
    return out


def cached_variants(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """variants(), read from / written to --cache."""
    import onnx

    paths = {v: args.cache / f"{name}_{v}_{args.amount:g}_{args.seed}.onnx" if args.cache
             else None for v in ("naive", "groups")}
    if all(p is not None and p.exists() for p in paths.values()):
        return {v: onnx.load(str(p)) for v, p in paths.items()}
    out = variants(name, args)
    for v, p in paths.items():
        if p is not None:  # read back: the key of the toolkit's results is the bytes read
            onnx.save(out[v], str(p))
            out[v] = onnx.load(str(p))
    return out


def toolkit_row(proto: Any, args: argparse.Namespace, pruning: bool = True
                ) -> tuple[dict[str, Any], Any]:
    """The toolkit's build of this ONNX, with or without its pruning (cached by the ONNX's
    hash under --cache): its pruning lines, and its graph as built."""
    import onnx

    data = proto.SerializeToString()
    key = hashlib.sha256(data).hexdigest()[:16] + ("" if pruning else "_built")
    with tempfile.TemporaryDirectory(prefix="ranges_onnx_") as tmp:
        home = args.cache or Path(tmp)
        done, pruned = home / f"toolkit_{key}.json", home / f"toolkit_{key}_pruned.onnx"
        if done.exists() and pruned.exists():
            toolkit = json.loads(done.read_text())
        else:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(data)
            toolkit = toolkit_pruning(args.rknn_python, path, pruned, args.timeout, pruning)
            if toolkit["returncode"] == 0 and args.cache:
                done.write_text(json.dumps(toolkit, indent=2) + "\n")
        return toolkit, standard_ops(onnx.load(str(pruned))) if pruned.exists() else None


def share(row: dict[str, Any], key: str) -> float:
    return 100 * row[f"{key}_removed"] / row[f"{key}_before"]


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--rknn-worker":
        return rknn_worker(*sys.argv[2:5])  # in the toolkit's python: no channelcut there
    import targets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amount", type=float, default=targets.AMOUNT,
                        help="share of coupled groups zeroed in the groups variant")
    parser.add_argument("--input-range", default=None, metavar="LO,HI",
                        help="assume the ONNX input lies in [LO, HI] (default: unbounded)")
    parser.add_argument("--rknn-python", default=None,
                        help="RKNN-Toolkit2's python: also run its model_pruning")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="keep the exports and the toolkit's results here")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--layers", action="store_true",
                        help="name the initializers where the toolkit cut more filters")
    args = parser.parse_args(argv)
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)

    bounds = None
    if args.input_range:
        lo, hi = (float(v) for v in args.input_range.split(","))
        bounds = (lo, hi)
    results: dict[str, Any] = {}
    print(f"input range: {'unbounded' if bounds is None else list(bounds)}; groups variant: "
          f"{args.amount:.0%} of the coupled groups zeroed; MB = 10^6 bytes")
    print(f"{'model':<19}{'variant':<8}{'tool':<19}{'by range':>9}{'channels':>9}"
          f"{'filters':>8}{'MB before':>10}{'MB cut':>9}{'GF before':>10}{'GF cut':>9}"
          f"{'tk err':>9}")
    verdicts: dict[str, bool] = {}
    for name in args.models:
        for variant, proto in cached_variants(name, args).items():
            label = f"{name}/{variant}"
            ranges = None if bounds is None else {proto.graph.input[0].name: bounds}
            rows, cut_models = channelcut_cuts(proto, ranges)
            results[label] = {"channelcut": rows}
            lead = f"{name:<19}{variant:<8}"
            for mode, row in rows.items():
                print(f"{lead}{'channelcut ' + mode:<19}{row['range_channels']:>9}"
                      f"{row['removed_channels']:>9}{row['filters_cut']:>8}"
                      f"{row['weight_mb_before']:>10.4f}{row['weight_mb_removed']:>9.4f}"
                      f"{row['gflops_before']:>10.4f}{row['gflops_removed']:>9.4f}")
            if not args.rknn_python:
                continue
            toolkit, pruned = toolkit_row(proto, args)
            results[label]["toolkit"] = toolkit
            weight, gflops = toolkit.get("weight_mib"), toolkit.get("gflops")
            if weight is None or gflops is None or len(weight) < 2 or len(gflops) < 2 \
                    or pruned is None:
                print(f"{lead}{'RKNN-Toolkit2':<19}(no pruning lines; exit "
                      f"{toolkit['returncode']}) {toolkit.get('log_tail', '')}")
                verdicts[label] = False
                continue
            # its "MB" is MiB, its total implied by the share it prints
            tk_mb, tk_gf = -weight[0] * MIB / 1e6, -gflops[0]
            print(f"{lead}{'RKNN-Tk own':<19}{'':>26}{100 * tk_mb / -weight[1]:>10.4f}"
                  f"{tk_mb:>9.4f}{100 * tk_gf / -gflops[1]:>10.4f}{tk_gf:>9.4f}"
                  f"   ({weight[1]:+.1f}% weights, {gflops[1]:+.1f}% GFLOPs)")
            ours = rows["rknn"]
            checks = {"weights share": share(ours, "weight_mb") + 0.05 >= -weight[1],
                      "GFLOPs share": share(ours, "gflops") + 0.05 >= -gflops[1]}
            # absolute: the toolkit's graph of its pruning of the original against its graph
            # of our rknn cut built without its pruning, both counted by channelcut (its own
            # rewrites, a channel shuffle turned into 1x1 convs say, are then in both)
            built_status, built = toolkit_row(cut_models["rknn"], args, pruning=False)
            # the toolkit's graph of the original built without its pruning: the "before" of
            # both (its rewrites in it too), counted by channelcut
            _, baseline = toolkit_row(proto, args, pruning=False)
            before = measure(baseline if baseline is not None else proto)
            for tool, graph in (("RKNN-Tk pruned", pruned), ("cc rknn, tk-built", built)):
                if graph is None:
                    print(f"{lead}{tool:<19}(build failed: {built_status.get('log_tail')})")
                    continue
                tk = counted(proto, before, graph)
                tk["max_rel_error"] = output_error(proto, graph, args.seed)
                results[label][tool] = tk
                print(f"{lead}{tool:<19}{'':>18}{tk['filters_cut']:>8}"
                      f"{tk['weight_mb_before']:>10.4f}{tk['weight_mb_removed']:>9.4f}"
                      f"{tk['gflops_before']:>10.4f}{tk['gflops_removed']:>9.4f}"
                      f"{tk['max_rel_error']:>9.1e}")
            theirs, mine = results[label]["RKNN-Tk pruned"], results[label].get(
                "cc rknn, tk-built")
            for key, what in (("weight_mb", "weights"), ("gflops", "GFLOPs")):
                # a tolerance of a millionth for the rounding of the figures
                checks[f"{what} abs"] = mine is not None and (
                    mine[f"{key}_removed"] + 1e-6 >= theirs[f"{key}_removed"])
            more = {n: (k, ours["filters_lost"].get(n, 0))
                    for n, k in theirs["filters_lost"].items()
                    if k > ours["filters_lost"].get(n, 0)}
            results[label]["toolkit_cut_more"] = more
            if args.layers and more:
                print(f"{'':<27}the toolkit cuts more filters than channelcut rknn in "
                      f"{len(more)} initializers: " + ", ".join(
                          f"{n} {k} vs {o}" for n, (k, o) in list(more.items())[:6]))
            verdicts[label] = all(checks.values())
            word = {True: "ok", False: "LESS"}
            print(f"{'':<27}rknn vs toolkit, shares: weights {share(ours, 'weight_mb'):.1f}% vs "
                  f"{-weight[1]:.1f}% {word[checks['weights share']]}, GFLOPs "
                  f"{share(ours, 'gflops'):.1f}% vs {-gflops[1]:.1f}% "
                  f"{word[checks['GFLOPs share']]}; absolute: weights "
                  f"{word[checks['weights abs']]}, GFLOPs {word[checks['GFLOPs abs']]}")
            if not verdicts[label]:
                free = rows["rknn-a1"]
                print(f"{'':<27}unaligned (rknn-a1) shares: weights "
                      f"{share(free, 'weight_mb'):.1f}%, GFLOPs {share(free, 'gflops'):.1f}%")
            results[label]["checks"] = checks
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.rknn_python:
        missed = [label for label, met in verdicts.items() if not met]
        print(f"\ntarget (channelcut's rknn cut removes at least what the toolkit's "
              f"model_pruning removes:\n  shares of each tool's own totals, and absolute by "
              f"channelcut's counters on the toolkit's graphs): met on "
              f"{len(verdicts) - len(missed)} of {len(verdicts)} rows"
              + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
