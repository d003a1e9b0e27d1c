"""What the bench scripts share: the command line, counting parameters and FLOPs the same way for
every tool, output errors, ONNX Runtime latency measured by alternating models, and the table.

Parameters and FLOPs are always counted on an ONNX export (BatchNorm folded into Conv by the
exporter), so channelcut's cut and a peer's PyTorch result are measured by the same code:
parameters are the elements of the distinct floating-point constants (initializers and Constant
nodes), FLOPs are channelcut.flops.model_flops (a multiply-add of Conv/Gemm/MatMul counts 2, other
arithmetic 1 per output element; the figures channelcut's own report prints).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]


def _load_model_zoo() -> Any:
    """tests/zoo.py (the model builders the tests use), by path: bench/zoo.py has its name."""
    spec = importlib.util.spec_from_file_location("tests_zoo", REPO / "tests" / "zoo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


zoo = _load_model_zoo()
zoo.import_torchvision()  # before any peer imports torchvision (its compiled ops do not load)
# The exporter's tracer warns about every Python branch on a shape (torch-simplify's layers have
# several), and torch about deprecations; none of it changes a number the bench prints.
warnings.filterwarnings("ignore")

# Where exactness is judged: max |got - want| / max |want| over an output.
EXACT_REL_ERROR = 1e-4
DEFAULT_SIZES = {"inception_v3": 299}


# ---------------------------------------------------------------------------- command line

def parse_args(description: str, models: Sequence[str], argv: Sequence[str] | None = None,
               more: Callable[[argparse.ArgumentParser], None] | None = None,
               ) -> argparse.Namespace:
    """The options both scripts take (which models, what input size, how many timed runs),
    and those `more` adds."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(models), metavar="NAME",
                        help="models to run (default: %(default)s); commas also separate")
    parser.add_argument("--size", type=int, default=None,
                        help="input height and width (default: 224, 299 for inception_v3)")
    parser.add_argument("--runs", type=int, default=30,
                        help="timed ONNX Runtime runs per model after warm-up (default: 30)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed ONNX Runtime runs per model first (default: 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of ONNX Runtime sessions and of torch (default: 1: on a "
                             "2-core machine that other work shares, 2 threads wait for that "
                             "work and times scatter several-fold)")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="latency statistic over the timed runs (default: median; min is "
                             "steadier on a machine other processes load)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="what a run's time is: wall-clock (default) or this process's CPU "
                             "time, which leaves out the time other processes held the CPU "
                             "(one thread: ONNX Runtime computes on the calling thread)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="times each tool runs on a model; its fastest is reported "
                             "(default: 3)")
    parser.add_argument("--align", type=int, default=1,
                        help="channelcut.cut(align=N): keep a multiple of N channels in every "
                             "tensor that loses some (default: 1, no alignment)")
    parser.add_argument("--seed", type=int, default=0, help="model and input seed (default: 0)")
    if more is not None:
        more(parser)
    args = parser.parse_args(argv)
    import torch

    # The PyTorch peers run torch ops (tracing, forward passes): give them the threads ORT gets.
    torch.set_num_threads(args.threads)
    args.models = [m for item in args.models for m in item.split(",") if m]
    return args


def input_shape(model: str, size: int | None) -> tuple[int, int, int, int]:
    """(1, 3, size, size), raised to the smallest input the model exports at (tests/zoo.py's
    SMALL_INPUTS: vgg16_bn 224, inception_v3 75); default 224, 299 for inception_v3."""
    side = size if size is not None else DEFAULT_SIZES.get(model, 224)
    smallest = zoo.SMALL_INPUTS.get(model, (1, 3, 1, 1))[-1]
    if "image_size" in zoo.SMALL_KWARGS.get(model, {}):  # built for the size (ViT)
        smallest = 1
    side = max(side, smallest)
    return (1, 3, side, side)


def build(model: str, shape: Sequence[int], seed: int) -> Any:
    """tests/zoo.py's model, built for this input where its constructor fixes the size (ViT)."""
    kwargs = {"image_size": shape[-1]} if "image_size" in zoo.SMALL_KWARGS.get(model, {}) \
        else {}
    return zoo.build(model, seed, **kwargs)


def export(module: Any, shape: Sequence[int]) -> onnx.ModelProto:
    """tests/zoo.py's ONNX export (TorchScript exporter, BatchNorm folded, opset 17), quietly.

    The exporter prints its whole IR graph when an op cannot be exported; the exception says
    what went wrong in its first line, which is what a bench row reports.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        return zoo.export_onnx(module, tuple(shape))


def latency_setup(args: argparse.Namespace) -> str:
    """How latency is measured, on what machine (and the cut's alignment), for a table's title."""
    threads = f"{args.threads} intra-op thread{'' if args.threads == 1 else 's'}"
    align = f"; cut aligned to {args.align} channels" if args.align > 1 else ""
    clock = " (CPU time)" if getattr(args, "clock", "wall") == "cpu" else ""
    return (f"ONNX Runtime CPU, {threads}, {args.stat}{clock} of {args.runs} "
            f"alternated runs after {args.warmup} warm-up; {platform.machine()}, "
            f"{os.cpu_count()} CPUs{align}")


def example_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------- counting

def onnx_params(model: onnx.ModelProto) -> int:
    """Elements of the model's distinct floating-point constants (initializers, Constant nodes).

    Distinct by content: exporters store equal tensors once (the all-zero biases of pruned
    layers, for example) while a rewrite may keep them under several names; counting each
    content once makes the figure independent of that bookkeeping.
    """
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    floating = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16}
    distinct = {}
    for tensor in tensors:
        if tensor.data_type in floating:
            data = numpy_helper.to_array(tensor)
            key = (data.dtype.str, data.shape, hashlib.sha1(data.tobytes()).hexdigest())
            distinct[key] = data.size
    return sum(distinct.values())


def onnx_flops(model: onnx.ModelProto) -> int:
    """FLOPs at the model's declared input shapes, counted by channelcut's own FLOP model."""
    from channelcut.flops import model_flops
    from channelcut.graph import to_ir
    from channelcut.verify import resolve_input_shapes

    return model_flops(to_ir(model, resolve_input_shapes(model, None)))


def torch_outputs(module: Any, x: np.ndarray) -> list[np.ndarray]:
    """A PyTorch module's outputs for input x, as arrays (a tuple of outputs flattened)."""
    import torch

    with torch.no_grad():
        outputs = module(torch.from_numpy(x))
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    return [o.numpy() for o in outputs]


@dataclass
class Errors:
    """How far one output is from the reference: cosine (float64), max abs and max rel error."""

    cosine: float
    max_abs: float
    max_rel: float

    @property
    def exact(self) -> bool:
        return self.max_rel <= EXACT_REL_ERROR


def output_errors(want: Sequence[Any], got: Sequence[Any]) -> Errors:
    """The worst output's errors: lowest cosine, highest max abs and max rel error."""
    if len(want) != len(got):
        return Errors(0.0, math.inf, math.inf)
    each = [_errors(w, g) for w, g in zip(want, got)]
    return Errors(min(e.cosine for e in each), max(e.max_abs for e in each),
                  max(e.max_rel for e in each))


def _errors(want: Any, got: Any) -> Errors:
    """Max rel error is max |got - want| / max |want|, as channelcut's verification defines it."""
    a = np.asarray(want, dtype=np.float64).ravel()
    b = np.asarray(got, dtype=np.float64).ravel()
    if a.shape != b.shape:
        return Errors(0.0, math.inf, math.inf)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        same = np.array_equal(a, b, equal_nan=True)
        return Errors(1.0 if same else 0.0, 0.0 if same else math.inf,
                      0.0 if same else math.inf)
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = 1.0 if np.array_equal(a, b) else float(np.dot(a, b) / norms) if norms else 0.0
    return Errors(cosine, max_abs, max_rel)


# ---------------------------------------------------------------------------- timing

def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """fn's result and its wall time in seconds."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


class Session:
    """One model in an ONNX Runtime CPU session with a fixed number of threads."""

    def __init__(self, model: onnx.ModelProto, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """The outputs for input x."""
        return self.session.run(None, {self.input: x})


def alternating_latency(sessions: Sequence[Session], x: np.ndarray, runs: int,
                        warmup: int, stat: str = "median", clock: str = "wall") -> list[float]:
    """Seconds per run of each session (median or min of `runs`), timed in turns so that drift
    hits all of them alike.

    Each round runs every session once; the order rotates from round to round so that no model
    is always the one that runs right after another (cache and frequency effects).
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    times: list[list[float]] = [[] for _ in sessions]
    for round_ in range(warmup + runs):
        shift = round_ % len(sessions)
        for k in [*range(shift, len(sessions)), *range(shift)]:
            start = now()
            sessions[k].run(x)
            elapsed = now() - start
            if round_ >= warmup:
                times[k].append(elapsed)
    return [(min if stat == "min" else statistics.median)(t) for t in times]


# ---------------------------------------------------------------------------- results

class Failed:
    """A cell whose step raised: prints as FAIL; the error goes to the failure list."""

    def __repr__(self) -> str:
        return "FAIL"


FAIL = Failed()


@dataclass
class Failures:
    """The steps that raised, per model, printed after the table."""

    lines: list[str] = field(default_factory=list)

    def attempt(self, model: str, step: str, fn: Callable[..., Any], *args: Any,
                **kwargs: Any) -> Any:
        """fn's result, or FAIL after recording what it raised."""
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - a bench row reports every failure
            last = traceback.extract_tb(error.__traceback__)[-1]
            where = f"{Path(last.filename).name}:{last.lineno}"
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            self.lines.append(f"{model}: {step}: {type(error).__name__}: {message[:300]} "
                              f"(at {where})")
            return FAIL


def best_of(repeat: int, failures: Failures, model: str, step: str, fn: Callable[..., Any],
            *args: Any, seconds: Callable[[Any], float] | None = None,
            **kwargs: Any) -> tuple[Any, Any]:
    """fn's last result and its fastest time over `repeat` calls, or (FAIL, FAIL) once it raises.

    Other work on a shared machine only ever adds time, so the fastest call is the closest to
    the tool's own cost. `seconds` reads the time from the result, for a tool that times
    itself (leaving out setup such as copying the model); otherwise the whole call is timed.
    """
    best, result = math.inf, None
    for _ in range(max(1, repeat)):
        result, elapsed = timed(failures.attempt, model, step, fn, *args, **kwargs)
        if not ok(result):
            return FAIL, FAIL
        best = min(best, seconds(result) if seconds is not None else elapsed)
    return result, best


def ok(*values: Any) -> bool:
    """Whether none of the values is a failure or missing."""
    return all(v is not None and v is not FAIL for v in values)


# ---------------------------------------------------------------------------- formatting

def millions(n: Any) -> str:
    return f"{n / 1e6:.2f}M" if ok(n) else str(n if n is not None else "-")


def giga(n: Any) -> str:
    return f"{n / 1e9:.3f}G" if ok(n) else str(n if n is not None else "-")


def seconds(s: Any) -> str:
    return f"{s:.2f}s" if ok(s) else str(s if s is not None else "-")


def millis(s: Any) -> str:
    return f"{s * 1e3:.1f}" if ok(s) else str(s if s is not None else "-")


def ratio(a: Any, b: Any) -> str:
    """a / b as 'x1.23'."""
    return f"x{a / b:.2f}" if ok(a, b) and b else "-"


def error(e: Any) -> str:
    return f"{e.max_rel:.1e}" if ok(e) else str(e if e is not None else "-")


@dataclass
class Column:
    header: str
    width: int
    group: str = ""


class Table:
    """A fixed-width text table, printed row by row as results arrive; grouped headers above."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)

    def _line(self, cells: Sequence[str]) -> str:
        """Cells right-aligned under their columns, the first left-aligned; a row with fewer
        cells than columns ends in its last cell, left-aligned (a note such as "skipped: ...")."""
        parts = []
        for k, (column, cell) in enumerate(zip(self.columns, cells)):
            last_of_short_row = k == len(cells) - 1 < len(self.columns) - 1
            parts.append(cell.ljust(column.width) if k == 0 else
                         "  " + cell if last_of_short_row else cell.rjust(column.width))
        return " ".join(parts).rstrip()

    def header(self) -> str:
        groups: list[tuple[str, int]] = []  # (label, width incl. separators)
        for column in self.columns:
            if groups and groups[-1][0] == column.group and column.group:
                groups[-1] = (column.group, groups[-1][1] + column.width + 1)
            else:
                groups.append((column.group, column.width + (1 if groups else 0)))
        top = "".join(label.center(width - 1).rjust(width) if label else " " * width
                      for label, width in groups).rstrip()
        names = self._line([c.header for c in self.columns])
        rule = "-" * len(names)
        return "\n".join(line for line in (top, names, rule) if line)

    def row(self, cells: Sequence[str]) -> str:
        return self._line([str(c) for c in cells])


def emit(line: str = "") -> None:
    print(line, flush=True)


def summarize(failures: Failures, verdicts: dict[str, dict[str, bool | None]]) -> None:
    """Print the failures, then per target where it held, where it was missed and where it
    could not be measured; `verdicts` is model -> target -> True, False or None."""
    for line in failures.lines:
        emit(f"failure: {line}")
    targets = list(next(iter(verdicts.values()), {}))
    any_missed = any_unknown = False
    for target in targets:
        held = [m for m, v in verdicts.items() if v[target] is True]
        missed = [m for m, v in verdicts.items() if v[target] is False]
        unknown = [m for m, v in verdicts.items() if v[target] is None]
        any_missed, any_unknown = any_missed or bool(missed), any_unknown or bool(unknown)
        emit(f"target {target}: held on {len(held)}/{len(verdicts)}"
             + (f"; MISSED on {', '.join(missed)}" if missed else "")
             + (f"; not measured on {', '.join(unknown)}" if unknown else ""))
    if any_missed or not targets:
        emit("NOT all targets held")
    elif any_unknown:
        emit("every target held wherever it was measured (see 'not measured' above)")
    else:
        emit("all targets held on every model")
