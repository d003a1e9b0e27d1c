"""Each target's cut on each model, measured where it runs (issue 11).

For every model, two prunings: "naive" (the seed's ln_structured, 50% of every Conv2d's rows
zeroed, tests/zoo.py) and "groups" (50% of the coupled channel groups zeroed whole,
channelcut.torch_groups, bench/zoo.py's mode (b)). Each is exported to ONNX and cut for each
target (channelcut.cut(target=..., verify=False); ort-cpu's guard times its candidates itself).

ONNX Runtime CPU: the original and every target's cut, median of --runs alternated runs in one
process, next to the FLOP ratio. Targets (ort-cpu): never below x1.0 on any model in any
pruning; a speed-up of at least 0.9 x the FLOP ratio with consistent groups, 0.8 x with naive
pruning.

RKNN (only with --rknn-python, a python with RKNN-Toolkit2, see bench/rknn_env.sh): each row's
original, the original through RKNN-Toolkit2's own model_pruning=True, and our cut for
--rknn-targets, each built fp16 and int8 by bench/rknn_build.py in a subprocess: .rknn size and
the compiler's summed cycle estimate. Targets (rknn): size and cycles never above the uncut
model's; at or below RKNN-Toolkit2's own pruning on at least 14 of the 16 rows.

    python bench/targets.py --models resnet18 mobilenet_v2 --runs 20
    python bench/targets.py --rknn-python /work/rknn-venv/bin/python --models demo resnet18
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402 - after the path
from common import FAIL, Column, Failures, Session, Table, emit, ok  # noqa: E402

MODELS = ("demo", "resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121",
          "shufflenet_v2_x1_0", "yolov8n")
PRUNINGS = ("naive", "groups")
AMOUNT = 0.5
TARGETS = ("ort-cpu", "rknn", "portable")
SHARE = {"groups": 0.9, "naive": 0.8}  # ort-cpu speed-up / FLOP ratio, at least
RKNN_BUILD = Path(__file__).resolve().parent / "rknn_build.py"
RKNN_ROWS_WITHIN_TOOLKIT = 14


@dataclass
class Row:
    """One model in one pruning: FLOPs and ORT latency of the original and of each cut."""

    model: str
    pruning: str
    flops: dict[str, Any] = field(default_factory=dict)  # "original" or target -> FLOPs
    latency: dict[str, Any] = field(default_factory=dict)  # seconds per run
    kept: str = ""  # what ort-cpu's guard kept
    rknn: dict[str, dict[str, Any]] = field(default_factory=dict)  # build -> figures
    note: str = ""

    def speedup(self, target: str) -> Any:
        t0, t = self.latency.get("original"), self.latency.get(target)
        return t0 / t if ok(t0, t) and t else FAIL

    def flop_ratio(self, target: str) -> Any:
        f0, f = self.flops.get("original"), self.flops.get(target)
        return f0 / f if ok(f0, f) and f else FAIL

    def verdicts(self) -> dict[str, bool | None]:
        speedup, flops = self.speedup("ort-cpu"), self.flop_ratio("ort-cpu")
        measured = ok(speedup, flops)
        return {"ort-cpu never below x1.0": speedup >= 1.0 if measured else None,
                "ort-cpu speed-up >= 0.9 (groups) / 0.8 (naive) x FLOP ratio":
                    speedup >= SHARE[self.pruning] * flops if measured else None}


# ---------------------------------------------------------------------------- models

def _yolov8n(seed: int) -> Any:
    """ultralytics' YOLOv8n from its yaml (random weights, nothing downloaded), its Detect
    head as RKNN deployments export it (airockchip/rknn_model_zoo's yolov8): per level, the
    box branch's DFL logits and the class branch's sigmoid scores, concatenated (3 outputs);
    the box decode runs in post-processing. With the decode in the graph (ultralytics' ONNX
    export) RKNN-Toolkit2 2.5.0's compiler crashes on the uncut model
    (rknn.api.rules.conv._p_seperate_conv_rs_split: IndexError; ultralytics pins
    rknn-toolkit2<2.5 for its own RKNN export because 2.5.0 fails YOLO builds)."""
    import types

    import torch
    from ultralytics.nn.tasks import DetectionModel

    def levels(head: Any, x: list) -> tuple:
        return tuple(torch.cat((head.cv2[i](x[i]), head.cv3[i](x[i]).sigmoid()), 1)
                     for i in range(head.nl))

    torch.manual_seed(seed)  # its layers draw their initial weights from torch's generator
    model = DetectionModel("yolov8n.yaml", verbose=False)
    for module in model.modules():
        if type(module).__name__ == "Detect":
            module.forward = types.MethodType(levels, module)
    return model.eval()


def _module(name: str, shape: tuple[int, ...], seed: int) -> Any:
    if name == "demo":
        from channelcut.rknn import demo

        import torch
        torch.manual_seed(demo.SEED)
        return demo.Net().eval()
    if name == "yolov8n":
        return _yolov8n(seed)
    return common.build(name, shape, seed)


def pruned_onnx(name: str, pruning: str, shape: tuple[int, ...], seed: int) -> Any:
    """The model, pruned one way, exported to ONNX (BatchNorm folded)."""
    if name == "demo" and pruning == "naive":  # the seed's own model and export
        from channelcut.rknn import demo
        from channelcut.pytorch import to_onnx

        return to_onnx(demo.pruned_net(), [list(shape)])
    module = _module(name, shape, seed)
    if pruning == "naive":
        common.zoo.prune_ln_structured(module, AMOUNT)
    else:
        from zoo import zero_consistent_groups

        zero_consistent_groups(module, shape, AMOUNT, seed)
    return common.export(module, shape)


# ---------------------------------------------------------------------------- ORT CPU

def measure_row(name: str, pruning: str, args: Any, failures: Failures) -> tuple[Row, dict]:
    """FLOPs and alternated ORT latencies of the original and each target's cut; the models."""
    import channelcut.targets

    row = Row(name, pruning)
    label = f"{name} ({pruning})"
    shape = common.input_shape(name, args.size)
    original = failures.attempt(label, "build/prune/export", pruned_onnx, name, pruning, shape,
                                args.seed)
    if not ok(original):
        row.note = "failed, see below"
        return row, {}
    models = {"original": original}
    cuts = list(args.rknn_targets if args.rknn_only else args.targets)
    cuts += [t for t in args.rknn_targets if args.rknn_python and t not in cuts]
    # int8 builds get the cut for the target's int8 entry (what the RKNN facade cuts for)
    cuts += [f"{t}-int8" for t in args.rknn_targets if args.rknn_python and "int8" in
             args.rknn_dtypes and f"{t}-int8" in channelcut.targets.TARGETS]
    for target in cuts:
        result = failures.attempt(label, f"cut ({target})", channelcut.cut, original,
                                  target=target, verify=False)
        if ok(result):
            models[target] = result.model
            if target == "ort-cpu":
                row.kept = result.report.kept or "cut"
    if args.rknn_only:  # the RKNN builds alone: no FLOP count, no timing
        return row, models
    sessions, same = {}, {}  # a model identical to one timed already (a guard that kept the
    for key, model in models.items():  # original) is that one's figure, not a second noisy one
        row.flops[key] = failures.attempt(label, "FLOP count", common.onnx_flops, model)
        first = same.setdefault(model.SerializeToString(), key)
        if first != key:
            continue
        session = failures.attempt(label, f"ORT session ({key})", Session, model, args.threads)
        if ok(session):
            sessions[key] = session
    x = common.example_input(shape, args.seed)
    times = common.alternating_latency(list(sessions.values()), x, args.runs, args.warmup,
                                       args.stat, args.clock)
    row.latency = dict(zip(sessions, times))
    for key, model in models.items():
        row.latency.setdefault(key, row.latency.get(same[model.SerializeToString()], FAIL))
    return row, models


def columns(targets: list[str]) -> list[Column]:
    return [Column("model", 19), Column("pruning", 7), Column("orig ms", 8),
            *[c for t in targets for c in (Column("FLOPs", 6, t), Column("ms", 7, t),
                                           Column("speed", 6, t))],
            Column("guard kept", 10)]


def ort_cells(row: Row, targets: list[str]) -> list[str]:
    if row.note:
        return [row.model, row.pruning, row.note]
    cells = [row.model, row.pruning, common.millis(row.latency.get("original", FAIL))]
    for target in targets:
        flops, speed = row.flop_ratio(target), row.speedup(target)
        cells += [f"x{flops:.2f}" if ok(flops) else "FAIL",
                  common.millis(row.latency.get(target, FAIL)),
                  f"x{speed:.2f}" if ok(speed) else "FAIL"]
    return [*cells, row.kept]


# ---------------------------------------------------------------------------- RKNN

def rknn_build(python: str, script: Path, model: Any, workdir: Path, key: str, int8: bool,
               model_pruning: bool, platform: str, cache: Path | None = None) -> dict[str, Any]:
    """bench/rknn_build.py on one ONNX model in RKNN-Toolkit2's python; its JSON. With `cache`,
    a build already made of the same model bytes with the same flags is read from there (the
    compiler is deterministic; a build of a large model takes minutes)."""
    import hashlib

    import onnx

    data = model.SerializeToString()
    flags = f"{platform}{'-int8' * int8}{'-mp' * model_pruning}"
    cached = cache / f"{hashlib.sha256(data).hexdigest()[:20]}-{flags}.json" if cache else None
    if cached is not None and cached.exists():
        return json.loads(cached.read_text())
    path = workdir / f"{key}.onnx"
    if not path.exists():
        onnx.save(model, str(path))
    command = [python, str(script), str(path), "--target", platform]
    command += ["--int8"] * int8 + ["--model-pruning"] * model_pruning
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    text = done.stdout
    try:  # one JSON object, possibly indented, after anything the toolkit printed
        figures = json.loads(text[text.index("{"):]) if "{" in text else json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return {"error": (done.stderr or text).strip().splitlines()[-1:]}
    if cached is not None and "error" not in figures:
        cache.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps({k: v for k, v in figures.items() if k != "rows"}))
    return figures


def rknn_row(row: Row, models: dict, args: Any) -> None:
    """The RKNN builds of one row: original, toolkit-pruned original, our cuts; fp16, int8."""
    builds = [("original", "original", False), ("toolkit", "original", True)]
    builds += [(t, t, False) for t in args.rknn_targets if t in models]
    with tempfile.TemporaryDirectory(prefix="bench-rknn-") as tmp:
        for label, key, toolkit_pruning in builds:
            for int8 in (dtype == "int8" for dtype in args.rknn_dtypes):
                build = f"{label} {'int8' if int8 else 'fp16'}"
                cut = f"{key}-int8" if int8 and f"{key}-int8" in models else key
                row.rknn[build] = rknn_build(args.rknn_python, args.rknn_build, models[cut],
                                             Path(tmp), cut, int8, toolkit_pruning,
                                             args.rknn_platform, args.rknn_cache)


def _rknn_figure(build: dict[str, Any] | None, what: str) -> Any:
    if not build or "error" in build or what not in build:
        return FAIL
    return build[what]


def rknn_lines(rows: list[Row], targets: list[str], dtypes: list[str]) -> tuple[list[str], dict]:
    """The RKNN table (MB and Mcycles per build), and rknn's verdicts per row."""
    builds = ["original", "toolkit", *targets]
    columns = [Column("model", 19), Column("pruning", 7), Column("dtype", 5)]
    columns += [c for b in builds for c in (Column("MB", 6, b), Column("Mcyc", 7, b))]
    table = Table(columns)
    lines, verdicts, within = [table.header()], {}, []
    for row in rows:
        if row.note or not row.rknn:
            continue
        never_above = True
        for dtype in dtypes:
            cells = [row.model, row.pruning, dtype]
            for build in builds:
                figures = row.rknn.get(f"{build} {dtype}")
                size, cycles = (_rknn_figure(figures, "rknn_bytes"),
                                _rknn_figure(figures, "cycles"))
                cells += [f"{size / 1e6:.2f}" if ok(size) else "FAIL",
                          f"{cycles / 1e6:.2f}" if ok(cycles) else "FAIL"]
            lines.append(table.row(cells))
            ours, orig, toolkit = (row.rknn.get(f"{b} {dtype}") for b in ("rknn", "original",
                                                                          "toolkit"))
            pairs = [(_rknn_figure(ours, w), _rknn_figure(orig, w), _rknn_figure(toolkit, w))
                     for w in ("rknn_bytes", "cycles")]
            if all(ok(a, b) for a, b, _ in pairs):
                never_above &= all(a <= b for a, b, _ in pairs)
            else:
                never_above = None if never_above is not False else False
            if dtype == "fp16" and all(ok(a, c) for a, _, c in pairs):
                within.append(all(a <= c for a, _, c in pairs))
        verdicts[f"{row.model} ({row.pruning})"] = {
            "rknn size and cycles never above the uncut model's": never_above}
    lines.append(f"rknn at or below RKNN-Toolkit2's own pruning (fp16 size and cycles): "
                 f"{sum(within)}/{len(within)} rows (target: {RKNN_ROWS_WITHIN_TOOLKIT} of 16)")
    return lines, verdicts


# ---------------------------------------------------------------------------- main

def _options(parser: Any) -> None:
    parser.add_argument("--prunings", nargs="+", default=list(PRUNINGS), choices=PRUNINGS)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS,
                        help="whose cuts the ONNX Runtime table times (default: all)")
    parser.add_argument("--rknn-python", default=None, metavar="PATH",
                        help="a python with RKNN-Toolkit2 (bench/rknn_env.sh): also build "
                             "each row with its compiler")
    parser.add_argument("--rknn-targets", nargs="+", default=["rknn"], choices=TARGETS,
                        help="whose cuts the RKNN section builds (default: rknn)")
    parser.add_argument("--rknn-only", action="store_true",
                        help="only the RKNN builds (with --rknn-python): cut for --rknn-targets "
                             "alone, no ONNX Runtime timing")
    parser.add_argument("--rknn-platform", default="rk3588")
    parser.add_argument("--rknn-dtypes", nargs="+", default=["fp16", "int8"],
                        choices=("fp16", "int8"),
                        help="which builds (default: both; int8 quantizes, several times "
                             "slower)")
    parser.add_argument("--rknn-cache", type=Path, default=None, metavar="DIR",
                        help="keep each build's figures in DIR, keyed by the model's bytes and "
                             "the build flags, and reuse them")
    parser.add_argument("--rknn-build", type=Path, default=RKNN_BUILD, metavar="PATH",
                        help="the build script run in --rknn-python (default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__, MODELS, argv, more=_options)
    failures, rows = Failures(), []
    table = Table(columns(args.targets))
    if not args.rknn_only:
        emit(f"ORT CPU latency per target's cut; {common.latency_setup(args)}; FLOPs: "
             "original / cut; speed: original ms / cut ms")
        emit(table.header())
    for name in args.models:
        if name == "yolov8n":
            try:
                import ultralytics  # noqa: F401
            except ImportError:
                emit(f"{name}: skipped (ultralytics is not installed)")
                continue
        for pruning in args.prunings:
            row, models = measure_row(name, pruning, args, failures)
            if not args.rknn_only:
                emit(table.row(ort_cells(row, args.targets)))
            if args.rknn_python and models:
                if args.rknn_build.exists():
                    rknn_row(row, models, args)
                else:
                    row.note = row.note or "no bench/rknn_build.py"
            rows.append(row)
            del models
    verdicts = {f"{r.model} ({r.pruning})": {} if args.rknn_only else r.verdicts()
                for r in rows}
    if args.rknn_python:
        emit()
        emit(f"RKNN-Toolkit2 builds for {args.rknn_platform}: .rknn MB and the compiler's "
             "summed cycle estimate (M)")
        lines, rknn_verdicts = rknn_lines(rows, args.rknn_targets, args.rknn_dtypes)
        for line in lines:
            emit(line)
        for key, more in rknn_verdicts.items():
            verdicts.setdefault(key, {}).update(more)
    emit()
    if verdicts:
        keys = {k for v in verdicts.values() for k in v}
        common.summarize(failures, {m: {k: v.get(k) for k in sorted(keys)}
                                    for m, v in verdicts.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
