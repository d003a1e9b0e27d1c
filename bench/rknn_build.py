"""Build an ONNX model with RKNN-Toolkit2 and print what its compiler says it costs, as JSON.

Run with the RKNN venv's python (bench/rknn_env.sh makes it), not channelcut's:

    /work/rknn-venv/bin/python bench/rknn_build.py model.onnx [--int8] [--model-pruning]
        [--target rk3588] [--simulate] [--keep DIR] [--log FILE]

Prints one JSON object:
  rknn_bytes      size of the exported .rknn file
  cycles          the compiler's summed cycle estimate: the Total of Cycles(DDR/NPU/Total) over
                  every row of its "Network Layer Information Table" (also ddr_cycles, npu_cycles)
  layers          rows of that table, InputOperator/OutputOperator excluded
  cpu_layers      those rows whose Target is CPU (op type and full name), and cpu_ops_unknown:
                  how many "Unkown op target" errors the compiler printed (the op it could not
                  place on the NPU, run by the CPU runtime)
  rows            with --rows, the layer table itself (id, op, dtype, target, shapes, cycles)
  op_types        layer count per compiled op type (ConvRelu, Add, exSoftmax, ...)
  weight_kib      "Total Weight Memory Size", internal_kib "Total Internal Memory Size"
  pruning         with --model-pruning, the toolkit's own summary lines (weights and GFLOPs)
  cosine          with --simulate: per output, cosine of the simulator's output against ONNX
                  Runtime's on the same random input (fp16 builds: > 0.999 expected), of
                  the model itself or of --reference; max_rel_error: the largest absolute
                  difference over the reference's largest magnitude

The toolkit's compiler is a C library that prints straight to file descriptors 1 and 2 and, with
verbose=True, writes check*.onnx into the current directory, so the build runs in a child
process in a scratch directory with both descriptors sent to a log; this process only parses the
log. A build that fails still prints JSON, with "error" and the log's last lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# A row of the layer table, after the "D RKNN: [time] " prefix:
#   ID OpType DataType Target InputShape OutputShape Cycles(DDR/NPU/Total) RW(KB) FullName
# Shapes have no spaces but may be "\" (none); the cycle triple is the one a/b/c token.
_PREFIX = re.compile(r"^[DIWE] RKNN: \[[\d:.]+\] ?")
_ROW = re.compile(r"^(?P<id>\d+)\s+(?P<op>\S+)\s+(?P<dtype>\S+)\s+(?P<target>\S+)\s+"
                  r"(?P<shapes>.*?)\s+(?P<ddr>\d+)/(?P<npu>\d+)/(?P<total>\d+)\s+"
                  r"(?P<rw>\S+)\s+(?P<name>.*)$")
_TABLE = "Network Layer Information Table"
_KIB = re.compile(r"Total (Weight|Internal) Memory Size:\s*([\d.]+)\s*KB")
_UNKNOWN_TARGET = re.compile(r"Unkn?own op target", re.IGNORECASE)
_BOUNDARY = ("InputOperator", "OutputOperator")


def parse_log(text: str) -> dict[str, Any]:
    """The figures the build log states: layer table, cycle sums, memory, CPU placements."""
    rows: list[dict[str, Any]] = []
    in_table = False
    lines = [_PREFIX.sub("", line.rstrip()) for line in text.splitlines()]
    for line in lines:
        if _TABLE in line:
            in_table, rows = True, []  # the last table printed is the final one
            continue
        if not in_table:
            continue
        match = _ROW.match(line.strip())
        if match:
            rows.append({"id": int(match["id"]), "op": match["op"], "dtype": match["dtype"],
                         "target": match["target"], "shapes": match["shapes"].split(),
                         "ddr": int(match["ddr"]), "npu": int(match["npu"]),
                         "total": int(match["total"]), "name": match["name"].strip()})
        elif rows and line.startswith("---"):
            in_table = False  # the rule under the last row
    layers = [r for r in rows if r["op"] not in _BOUNDARY]
    op_types: dict[str, int] = {}
    for r in layers:
        op_types[r["op"]] = op_types.get(r["op"], 0) + 1
    result: dict[str, Any] = {
        "cycles": sum(r["total"] for r in rows),
        "ddr_cycles": sum(r["ddr"] for r in rows),
        "npu_cycles": sum(r["npu"] for r in rows),
        "layers": len(layers),
        "op_types": op_types,
        "cpu_layers": [f"{r['op']} {r['name']}" for r in layers if r["target"] != "NPU"],
        "cpu_ops_unknown": sum(bool(_UNKNOWN_TARGET.search(line)) for line in lines),
        "table_found": bool(rows),
        "rows": rows,
    }
    for kind, kib in _KIB.findall(text):
        result[f"{kind.lower()}_kib"] = float(kib)
    pruning = [line.strip() for line in lines
               if re.search(r"(Weight|GFLOPs)\s*:", line) and "Memory" not in line]
    if pruning:
        result["pruning"] = pruning
    errors = [line.strip() for line in lines if line.startswith("E ")]
    if errors:
        result["errors"] = errors[:20]
    return result


def _inputs(model_path: Path, seed: int) -> list[np.ndarray]:
    """One random float32 array per graph input (dynamic dimensions taken as 1)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    arrays = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1
                for d in value.type.tensor_type.shape.dim]
        arrays.append(rng.standard_normal(dims).astype(np.float32))
    return arrays


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.dot(a, b) / denom) if denom else float(np.array_equal(a, b))


def _max_rel_error(want: np.ndarray, got: np.ndarray) -> float:
    """The largest absolute difference relative to the reference's largest magnitude (a
    per-element relative error is meaningless near zero, where fp16 keeps no digits)."""
    want, got = want.astype(np.float64), got.astype(np.float64)
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    diff = float(np.max(np.abs(want - got))) if want.size else 0.0
    return diff / scale if scale else diff


def worker(args: argparse.Namespace) -> int:
    """In the scratch directory: config, load, build, export, and (with --simulate) run the
    simulator on the inputs saved as input*.npy, saving its outputs as sim*.npy."""
    from rknn.api import RKNN

    rknn = RKNN(verbose=True)
    rknn.config(target_platform=args.target, model_pruning=args.model_pruning,
                optimization_level=args.optimization_level)
    if rknn.load_onnx(model=str(args.model)) != 0:
        return 1
    dataset = None
    if args.int8:  # calibration data: a few random inputs, one line of .npy paths each
        lines = []
        for k in range(args.calibration):
            names = []
            for i, array in enumerate(_inputs(args.model, seed=100 + k)):
                names.append(f"calib{k}_{i}.npy")
                np.save(names[-1], array)
            lines.append(" ".join(names))
        Path("dataset.txt").write_text("\n".join(lines) + "\n")
        dataset = "dataset.txt"
    if rknn.build(do_quantization=args.int8, dataset=dataset) != 0:
        return 1
    if rknn.export_rknn("model.rknn") != 0:
        return 1
    if args.simulate:
        inputs = [np.load(p) for p in sorted(Path(".").glob("input*.npy"))]
        if rknn.init_runtime() != 0:
            return 1
        # The simulator takes NHWC for 4-D image inputs by default; data_format says ours are
        # NCHW as the ONNX model reads them.
        outputs = rknn.inference(inputs=inputs,
                                 data_format=["nchw" if a.ndim == 4 else None for a in inputs])
        for i, out in enumerate(outputs):
            np.save(f"sim{i}.npy", np.asarray(out))
    rknn.release()
    return 0


def build(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    model = args.model.resolve()
    inputs = _inputs(model, args.seed) if args.simulate else []
    for i, array in enumerate(inputs):
        np.save(scratch / f"input{i}.npy", array)
    command = [sys.executable, os.path.abspath(__file__), str(model), "--worker",
               "--target", args.target, "--calibration", str(args.calibration),
               "--optimization-level", str(args.optimization_level)]
    command += [flag for flag, on in (("--int8", args.int8), ("--model-pruning",
                                                              args.model_pruning),
                                      ("--simulate", args.simulate)) if on]
    log_path = scratch / "build.log"
    with open(log_path, "wb") as log:
        proc = subprocess.run(command, cwd=scratch, stdout=log, stderr=subprocess.STDOUT,
                              timeout=args.timeout)
    text = log_path.read_text(errors="replace")
    if args.log:
        Path(args.log).write_text(text)
    result: dict[str, Any] = {"model": str(args.model), "target": args.target,
                              "dtype": "int8" if args.int8 else "fp16",
                              "model_pruning": args.model_pruning}
    result.update(parse_log(text))
    rknn_file = scratch / "model.rknn"
    result["rknn_bytes"] = rknn_file.stat().st_size if rknn_file.exists() else None
    if proc.returncode != 0 or not result["rknn_bytes"]:
        result["error"] = f"build exited {proc.returncode}"
        result["log_tail"] = text.splitlines()[-15:]
        return result
    if args.simulate:
        import onnxruntime as ort

        # The reference may be another model on the same inputs (the uncut original of a cut).
        reference = str((args.reference or model).resolve())
        session = ort.InferenceSession(reference, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        want = session.run(None, dict(zip(names, inputs)))
        got = [np.load(scratch / f"sim{i}.npy") for i in range(len(want))]
        result["cosine"] = [_cosine(w, g.reshape(w.shape)) if g.size == w.size else None
                            for w, g in zip(want, got)]
        result["max_rel_error"] = [_max_rel_error(w, g.reshape(w.shape))
                                   if g.size == w.size else None for w, g in zip(want, got)]
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="ONNX file")
    parser.add_argument("--target", default="rk3588", help="target_platform (default rk3588)")
    parser.add_argument("--int8", action="store_true",
                        help="quantize to int8 on random calibration inputs (default fp16)")
    parser.add_argument("--calibration", type=int, default=4,
                        help="random calibration inputs for --int8 (default 4)")
    parser.add_argument("--model-pruning", action="store_true",
                        help="config(model_pruning=True): the toolkit's own pruning")
    parser.add_argument("--optimization-level", type=int, default=3, choices=(0, 1, 2, 3))
    parser.add_argument("--simulate", action="store_true",
                        help="also run the PC simulator and compare with ONNX Runtime")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated input")
    parser.add_argument("--reference", type=Path, default=None, metavar="ONNX",
                        help="with --simulate: compare with this model's ONNX Runtime outputs "
                             "(default: the model itself), e.g. the uncut original of a cut")
    parser.add_argument("--keep", type=Path, help="keep the scratch directory here "
                        "(model.rknn, build.log, check*.onnx)")
    parser.add_argument("--rows", action="store_true",
                        help="include the parsed layer table (one object per row)")
    parser.add_argument("--log", help="also write the build log to this file")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return _build_or_timeout(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="rknn_build_") as scratch:
        return _build_or_timeout(args, Path(scratch))


def _build_or_timeout(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    try:
        return build(args, scratch)
    except subprocess.TimeoutExpired:
        return {"model": str(args.model), "error": f"build ran past {args.timeout:g} s"}


def measure(model: Path | str, *flags: str) -> dict[str, Any]:
    """The JSON object for one model, with the command line's flags ("--int8", ...); the
    layer table is always included (as "rows"). For scripts such as rknn_calibrate.py."""
    return _measure(_parser().parse_args([str(model), *flags]))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return worker(args)
    if not args.model.is_file():
        print(f"rknn_build: {args.model}: no such file; give an ONNX model", file=sys.stderr)
        return 2
    result = _measure(args)
    if not args.rows:
        result.pop("rows", None)
    print(json.dumps(result, indent=1))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
