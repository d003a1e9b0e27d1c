"""Where ONNX Runtime CPU spends its time in an original and its cuts: per-node profile, summed
by kind of node (issue 11: why ort-cpu's speed-up falls short of the FLOP ratio).

ONNX Runtime's own profiler (SessionOptions.enable_profiling), one thread, after warm-up; each
node's time is its minimum (--stat) over the timed runs, so that the preemptions of a loaded machine
(which add whole time slices to a few runs) drop out; the sums are the uncontended cost. Convs
are split by kind (1x1, depthwise, kxk, squeeze-excite 1x1 on a 1x1 map).

    python bench/ort_profile.py a.onnx b.onnx ...
    python bench/ort_profile.py --model efficientnet_b0 --pruning naive   # original + the
        # ort-cpu guard's candidates (cut, fewer and no added ops, zero-only) and the cut without
        # reinsertions, made here as bench/targets.py makes them
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _session(path: str, prefix: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _conv_kind(args: dict) -> str:
    """A Conv event's kind from the shapes ONNX Runtime profiles: "1x1", "dw" (one input
    channel per group), "kxk" or "se" (a 1x1 conv on a 1x1 map); its own names do not say
    (an NCHWc conv fused with its activation is named after the activation's output)."""
    shapes = [next(iter(t.values())) for t in args.get("input_type_shape", [])]
    out = [next(iter(t.values())) for t in args.get("output_type_shape", [])]
    if len(shapes) < 2 or len(shapes[1]) != 4:
        return "other"
    weight = shapes[1]
    if weight[1] == 1 and weight[2:] != [1, 1]:
        return "dw"
    if weight[2:] == [1, 1]:
        return "se" if out and out[0][2:] == [1, 1] else "1x1"
    return "kxk"


def _conv_flops(args: dict) -> float:
    """A Conv event's FLOPs (a multiply-add counts 2), from its profiled shapes."""
    shapes = [next(iter(t.values())) for t in args.get("input_type_shape", [])]
    out = [next(iter(t.values())) for t in args.get("output_type_shape", [])]
    return 2.0 * float(np.prod(out[0])) * float(np.prod(shapes[1][1:])) if out else 0.0


def profile(path: str, runs: int, warmup: int, stat: str = "min"
            ) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds per run by node kind (sum of per-node minima or medians), and "total";
    MFLOPs per run by conv kind."""
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        session = _session(path, os.path.join(tmp, "p"))
        feeds = {i.name: np.random.default_rng(0).standard_normal(
            [d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in session.get_inputs()}
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = json.load(open(session.end_profiling()))
    durations: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    flops: dict[tuple[str, str], float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            if op == "Conv":
                op = "Conv " + _conv_kind(event["args"])
            key = event["name"][:-len("_kernel_time")], op
            durations[key].append(event["dur"])
            if op.startswith("Conv"):
                flops[key] = _conv_flops(event["args"]) / 1e6
    by_kind: collections.Counter[str] = collections.Counter()
    for (name, op), values in durations.items():
        by_kind[op] += float((np.min if stat == "min" else np.median)(values[-runs:])) / 1e3
    by_kind["total"] = sum(by_kind.values())
    mflops: collections.Counter[str] = collections.Counter()
    for (_, op), value in flops.items():
        mflops[op] += value
    return dict(by_kind), dict(mflops)


def candidates(name: str, pruning: str, workdir: Path) -> list[str]:
    """The pruned model and the ort-cpu guard's candidates, saved; their paths."""
    import common
    import targets as bench_targets

    import channelcut
    from channelcut import api
    from channelcut import targets as cc_targets
    from channelcut.samples import Checking
    from channelcut.solve import SITE_KINDS
    from channelcut.stages import Stages

    original = bench_targets.pruned_onnx(name, pruning, common.input_shape(name, None), 0)
    paths = [workdir / "original.onnx"]
    onnx.save(original, str(paths[0]))
    for kept in ("cut", "fewer added ops", "no added ops", "zero-only"):
        def measure(models, feeds, kept=kept):  # make the guard keep this candidate
            return {n: 0.0 if n == kept else 1.0 for n in models}
        result = channelcut.cut(original, target="ort-cpu", verify=False, measure=measure)
        if result.report.kept == kept:
            paths.append(workdir / f"{kept.replace(' ', '_')}.onnx")
            onnx.save(result.model, str(paths[-1]))
    options = replace(cc_targets.get("ort-cpu").options(),
                      sites=frozenset(SITE_KINDS) - {"reinsert"})
    paths.append(workdir / "cut_without_reinsertions.onnx")
    cut = api._cut(original, None, False, 0.9999, options, Stages(), Checking())
    onnx.save(cut.model, str(paths[-1]))
    return [str(p) for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="ONNX files (the first is the reference)")
    parser.add_argument("--model", help="a bench model name: profile it and its candidates")
    parser.add_argument("--pruning", default="naive", choices=("naive", "groups"))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--stat", choices=("min", "median"), default="min",
                        help="per node, over the timed runs (default: min: the profile times "
                             "wall-clock, and on a loaded machine a node longer than a time "
                             "slice is preempted in most runs, which moves its median)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ort-profile-models-") as tmp:
        paths = list(args.models)
        if args.model:
            paths += candidates(args.model, args.pruning, Path(tmp))
        if not paths:
            parser.error("give ONNX files or --model")
        import common

        profiles = {Path(p).stem: profile(p, args.runs, args.warmup, args.stat) for p in paths}
        tables = {n: t for n, (t, _) in profiles.items()}
        flops = {Path(p).stem: common.onnx_flops(onnx.load(p)) for p in paths}
    names = list(tables)
    kinds = sorted({k for t in tables.values() for k in t} - {"total"},
                   key=lambda k: -tables[names[0]].get(k, 0.0))
    print(f"ms per run (sum of per-node {args.stat}s over {args.runs} runs, 1 thread)")
    print(f"{'':20s}" + "".join(f"{n[:24]:>26s}" for n in names))
    for kind in [*kinds, "total"]:
        print(f"{kind:20s}" + "".join(f"{tables[n].get(kind, 0.0):26.2f}" for n in names))
    reference = tables[names[0]]["total"]
    print(f"{'speed-up':20s}" + "".join(f"{reference / tables[n]['total']:25.2f}x"
                                         for n in names))
    print(f"{'FLOP ratio':20s}" + "".join(f"{flops[names[0]] / flops[n]:25.2f}x"
                                           for n in names))
    print("\nconvs: MFLOPs per run, and GFLOP/s (MFLOPs / ms above)")
    for kind in (k for k in kinds if k.startswith("Conv")):
        print(f"{kind:20s}" + "".join(
            f"{profiles[n][1].get(kind, 0.0):15.1f}"
            f"{profiles[n][1].get(kind, 0.0) / max(tables[n].get(kind, 0.0), 1e-9):9.1f}/s "
            for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
