"""Run the original and the cut model in ONNX Runtime on the same seeded inputs and compare."""

from __future__ import annotations

import gc
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from channelcut import io
from channelcut.errors import ChannelcutError, VerificationError
from channelcut.report import OutputCheck

log = logging.getLogger(__name__)

# Values a dynamic dimension takes when no --input-shape sets it (channelcut.dynamic_dims says
# so, and verifies at a second size too).
DEFAULT_DYNAMIC_DIM = 1
# Integer inputs are usually indices or lengths: keep them small so they are in range.
INT_INPUT_HIGH = 4
# ONNX Runtime threads per session: enough to be quick, not so many that a small CI box thrashes.
MAX_THREADS = 8
# Float inputs of the large-magnitude input set are standard normal times this. It is where a
# huge weight overflows (1e35 * 1e4 is Inf in float32) while an ordinary model stays far from
# the float32 range (products of two such values are 1e8); for a type with a small range the
# scale is its largest value to the power 1/4 (16 for float16).
LARGE_SCALE = 1e4
# The input sets every verification runs: (seed offset, scale of the float inputs).
INPUT_SETS = ((0, 1.0), (1, 1.0), (2, LARGE_SCALE))
# A cosine counts as reaching the threshold within this much: summing fewer channels rounds
# differently in float32, so an exact cut gives 1 - 1e-12 rather than 1, and threshold 1 means
# "equal up to rounding". 1 - cos is about r^2 / 2 for an error of relative norm r: rounding
# (r ~ 1e-6, 1e-4 in deep nets) stays below it, a changed output (r ~ 1e-2 and up) far above.
COSINE_TOLERANCE = 1e-7


def resolve_input_shapes(
    model: onnx.ModelProto, overrides: dict[str, Sequence[int]] | None
) -> dict[str, tuple[int, ...]]:
    """A concrete shape for every graph input: the model's dims, overrides, 1 for dynamic dims."""
    overrides = dict(overrides or {})
    inputs = graph_inputs(model)
    unknown = sorted(set(overrides) - {i.name for i in inputs})
    if unknown:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ChannelcutError(
            f"--input-shape names {unknown[0]!r}, which is not a model input; the inputs are: "
            f"{names}"
        )
    shapes = {}
    for value in inputs:
        dims = declared_dims(value)
        override = overrides.get(value.name)
        if override is None:
            if dims is None:
                raise ChannelcutError(
                    f"input {value.name!r} has no declared shape; give one with "
                    f"--input-shape {value.name}:1,3,224,224 (its real dims)"
                )
            shapes[value.name] = tuple(DEFAULT_DYNAMIC_DIM if d is None else d for d in dims)
            continue
        override = tuple(int(d) for d in override)
        expected = f"expected shape of {value.name!r} is {_format_dims(dims)}"
        if dims is not None and len(override) != len(dims):
            raise ChannelcutError(
                f"--input-shape {value.name}: has {len(override)} dims, the model's has "
                f"{len(dims)}; {expected}"
            )
        if any(d < 1 for d in override):
            raise ChannelcutError(f"--input-shape {value.name}: dims must be positive; {expected}")
        for axis, (want, got) in enumerate(zip(dims or (), override)):
            if want is not None and want != got:
                raise ChannelcutError(
                    f"--input-shape {value.name}: dim {axis} is {got}, the model fixes it to "
                    f"{want}; {expected}"
                )
        shapes[value.name] = override
    return shapes


def assumed_dims(model: onnx.ModelProto, overrides: dict[str, Sequence[int]] | None
                 ) -> dict[str, list[int]]:
    """Per input, the axes that are dynamic and that no override sets (they take
    DEFAULT_DYNAMIC_DIM); inputs with none are left out."""
    assumed = {}
    for value in graph_inputs(model):
        dims = declared_dims(value)
        if dims is not None and value.name not in (overrides or {}):
            axes = [axis for axis, d in enumerate(dims) if d is None]
            if axes:
                assumed[value.name] = axes
    return assumed


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Read a CLI `NAME:1,3,224,224` into (name, dims); the name may itself contain ':'."""
    name, sep, dims_text = text.rpartition(":")
    usage = "write it as NAME:DIM,DIM,... for example images:1,3,224,224"
    if not sep or not name or not dims_text.strip():
        raise ChannelcutError(f"--input-shape {text!r}: {usage}")
    try:
        dims = tuple(int(d) for d in dims_text.split(","))
    except ValueError:
        raise ChannelcutError(f"--input-shape {text!r}: dims must be integers; {usage}") from None
    if any(d < 1 for d in dims):
        raise ChannelcutError(f"--input-shape {text!r}: dims must be positive; {usage}")
    return name, dims


def random_inputs(
    model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0,
    scale: float = 1.0,
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs: floats standard normal (times `scale`, capped for narrow types at their
    largest value ** 0.25), integers small and non-negative, bools 50/50.

    A float input with a declared range (`ranges`: name -> (lo, hi), one pair or one per
    channel on axis 1) is drawn inside it whatever the scale, a fifth of its elements exactly
    at each edge: the cut assumed the range and may rely on its bounds being reached, never
    passed.
    """
    _check_input_bytes(model, shapes)
    rng = np.random.default_rng(seed)
    ranges = ranges or {}
    feeds = {}
    for value in graph_inputs(model):
        shape = shapes[value.name]
        elem_type = value.type.tensor_type.elem_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        # np.asarray: a 0-d input stays an array (ONNX Runtime takes no NumPy scalar)
        if dtype == np.bool_:
            feeds[value.name] = np.asarray(rng.random(shape) < 0.5)
        elif np.issubdtype(dtype, np.integer):
            feeds[value.name] = np.asarray(rng.integers(0, INT_INPUT_HIGH, size=shape), dtype)
        elif np.issubdtype(dtype, np.floating) and value.name in ranges:
            feeds[value.name] = np.asarray(inputs_in_range(rng, shape, *ranges[value.name]), dtype)
        elif np.issubdtype(dtype, np.floating):
            limit = float(np.finfo(dtype).max) ** 0.25
            values = rng.standard_normal(shape) * min(scale, limit)
            feeds[value.name] = np.asarray(values, dtype=dtype)
        else:
            type_name = onnx.TensorProto.DataType.Name(elem_type)
            raise ChannelcutError(
                f"input {value.name!r} has type {type_name}, which channelcut cannot fill with "
                "random values; skip verification with --no-verify"
            )
    return feeds


def inputs_in_range(rng: np.random.Generator, shape: tuple[int, ...], lo: np.ndarray,
                    hi: np.ndarray) -> np.ndarray:
    """Values in [lo, hi] (per channel on axis 1 when there are several): uniform where both
    bounds are finite, a normal tail from the finite one otherwise; 20% at each edge."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if lo.size > 1:  # one pair per channel on axis 1
        lo, hi = (b.reshape((1, -1) + (1,) * (len(shape) - 2)) for b in (lo, hi))
    else:  # one pair for every element (a 0-d input too)
        lo, hi = lo.reshape(()), hi.reshape(())
    lo, hi = np.broadcast_to(lo, shape), np.broadcast_to(hi, shape)
    normal = rng.standard_normal(shape)
    with np.errstate(all="ignore"):
        x = np.where(np.isfinite(lo) & np.isfinite(hi), lo + (hi - lo) * rng.random(shape),
                     np.where(np.isfinite(lo), lo + np.abs(normal),
                              np.where(np.isfinite(hi), hi - np.abs(normal), normal)))
    edge = rng.random(shape)
    x = np.where((edge < 0.2) & np.isfinite(lo), lo, x)
    x = np.where((edge > 0.8) & np.isfinite(hi), hi, x)
    return np.clip(x, lo, hi)


def input_sets(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0,
               count: int | None = None,
               ranges: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
               ) -> list[dict[str, np.ndarray]]:
    """The seeded inputs `compare` runs both models on (INPUT_SETS, from `seed` on); `count`:
    the first that many of them, then more standard normal ones; inputs with a declared range
    (`ranges`) inside it."""
    sets = list(INPUT_SETS) if count is None else \
        [*INPUT_SETS[:count], *((k, 1.0) for k in range(len(INPUT_SETS), count))]
    return [random_inputs(model, shapes, seed + offset, scale, ranges)
            for offset, scale in sets]


def _check_input_bytes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse inputs this machine cannot hold before allocating them (numpy would raise a
    MemoryError, or the system swap): they may take a quarter of its memory, counted at 8
    bytes an element as they are drawn in float64 or int64 before the cast."""
    sizes = {v.name: math.prod(shapes[v.name]) * 8 for v in graph_inputs(model)}
    limit = _memory_bytes() // 4
    if sizes and sum(sizes.values()) > limit:
        name = max(sizes, key=sizes.__getitem__)
        dims = ",".join(str(d) for d in shapes[name])
        raise InputsTooLarge(
            f"verification inputs would take {sum(sizes.values()) / 2**30:.3g} GiB (input "
            f"{name!r} is [{dims}]), more than a quarter of this machine's memory "
            f"({limit * 4 / 2**30:.3g} GiB); give smaller dims with --input-shape "
            f"{name}:DIM,DIM,... or skip verification with --no-verify")


def _memory_bytes() -> int:
    """Physical memory of this machine (16 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 16 * 2**30


def compare(
    original: onnx.ModelProto,
    cut: onnx.ModelProto,
    shapes: dict[str, tuple[int, ...]],
    seed: int = 0,
    samples: list[dict[str, np.ndarray]] | None = None,
    advance: Callable[[int], None] | None = None,
) -> list[OutputCheck]:
    """Cosine similarity, max errors and NaN/Inf mismatches of every output, original vs cut,
    the worst over the `samples` (a list of feeds; default `input_sets` from `seed`: several
    seeded input sets, one of large magnitude). `advance(k)` is told after each sample.

    Both models run as written (ONNX Runtime's graph optimizations off: fusing a Mul into a
    Conv's weights changes where NaN appears).
    """
    runtime_errors = _runtime_errors()
    samples = samples or input_sets(original, shapes, seed)
    # One session at a time, each freed before the next: a multi-GB model and its cut are
    # never both held by ONNX Runtime.
    try:
        as_inputs = _weights_as_inputs(original) or _weights_as_inputs(cut)
        expected = _outputs(original, samples, as_inputs)
    except runtime_errors as exc:
        raise OriginalDoesNotRun(io.error_line(exc)) from None
    per_set = []
    try:
        with _opened(cut, as_inputs) as session:
            for k, (feeds, want) in enumerate(zip(samples, expected), 1):
                actual = _run(session, feeds)
                checks = []
                for name, value in want.items():
                    if name not in actual:
                        raise VerificationError(
                            f"the cut model lost output {name!r}; this is a bug")
                    checks.append(_compare_output(name, value, actual[name]))
                per_set.append(checks)
                if advance is not None:
                    advance(k)
    except runtime_errors as exc:
        raise VerificationError(
            f"the cut model does not run in ONNX Runtime ({io.error_line(exc)}); this is a "
            "bug in channelcut, nothing was written: please report it with the model"
        ) from None
    return worst(per_set)


def _outputs(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]],
             as_inputs: bool = False) -> list[dict[str, object]]:
    """The model's outputs on each of the samples, from one session freed on return."""
    with _opened(model, as_inputs) as session:
        return [_run(session, feeds) for feeds in samples]


@contextmanager
def _opened(model: onnx.ModelProto, as_inputs: bool) -> Iterator[Session]:
    """A session for `model`, freed when the block ends."""
    session = _session(model, as_inputs)
    try:
        yield session
    finally:
        # The weights' maps go with their arrays, and ONNX Runtime's session (whose bindings
        # hold reference cycles) with a collection: the collector may be paused
        # (channelcut.api). Only for a large model: a full collection in a process that holds
        # many objects costs more than a small model's whole check.
        session.weights.clear()
        session.session = None
        if as_inputs:
            gc.collect()


def worst(per_set: list[list[OutputCheck]]) -> list[OutputCheck]:
    """Per output, the worst of several comparisons of the same outputs (in the same order)."""
    merged = []
    for checks in zip(*per_set):
        cosines = [c.cosine for c in checks]
        merged.append(OutputCheck(
            checks[0].name,
            math.nan if any(math.isnan(c) for c in cosines) else min(cosines),
            max(c.max_abs_error for c in checks),
            max(c.max_rel_error for c in checks),
            max(c.nonfinite_mismatches for c in checks)))
    return merged


def check(checks: list[OutputCheck], threshold: float) -> None:
    """Raise VerificationError naming the worst output when NaN or Inf differ anywhere or any
    cosine is below `threshold` (less COSINE_TOLERANCE)."""
    if not checks:
        return
    for c in checks:
        if c.nonfinite_mismatches:
            raise VerificationError(
                f"output {c.name!r} of the cut model has NaN or Inf at {c.nonfinite_mismatches} "
                "positions where the original has another value (or the reverse); this is a "
                "bug in channelcut, nothing was written: please report it with the model"
            )
    worst = min(checks, key=lambda c: -math.inf if math.isnan(c.cosine) else c.cosine)
    if math.isnan(worst.cosine) or worst.cosine < threshold - COSINE_TOLERANCE:
        raise VerificationError(
            f"output {worst.name!r} of the cut model differs from the original: cosine "
            f"similarity {worst.cosine:.7f} < {threshold} (max abs error "
            f"{worst.max_abs_error:.3g}); this is a bug in channelcut, nothing was written: "
            "please report it with the model"
        )


class InputsTooLarge(ChannelcutError):
    """Verification's inputs at the sizes asked for would not fit in this machine's memory."""


class OriginalDoesNotRun(ChannelcutError):
    """The original model does not run in ONNX Runtime at the size verification feeds."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the original model does not run in ONNX Runtime ({reason}); fix "
                         "the model or skip verification with --no-verify")
        self.reason = reason


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs a caller feeds; initializers listed as inputs (old exporters) are not."""
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def declared_dims(value: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    """The input's dims, None for a dynamic one; None overall when the rank is unknown."""
    if not value.type.HasField("tensor_type"):
        raise ChannelcutError(
            f"input {value.name!r} is not a tensor; channelcut handles tensor inputs only"
        )
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)


def _format_dims(dims: tuple[int | None, ...] | None) -> str:
    if dims is None:
        return "unknown"
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


@dataclass
class Session:
    """An ONNX Runtime session, and the weights it is fed with every run (`weights_as_inputs`;
    none for a model small enough to hand over whole)."""

    session: Any
    weights: dict[str, np.ndarray]


# Past this many bytes of weights, verification feeds them as inputs (`weights_as_inputs`):
# handed over inside the model, they would be held three times (the proto, its serialized
# bytes and ONNX Runtime's copy).
WEIGHTS_AS_INPUTS_BYTES = 2**26


def _weights_as_inputs(model: onnx.ModelProto) -> bool:
    """Whether `model`'s weights are to be fed as inputs: it has data on disk (a lazy load's,
    which ONNX Runtime cannot read from a proto in memory), or many weights."""
    large = io.large_initializers(model).values()
    return any(io.on_disk(t) for t in large) or \
        sum(io.inline_bytes(t) for t in large) >= WEIGHTS_AS_INPUTS_BYTES or \
        io.needs_external_data(model)


def _session(model: onnx.ModelProto, as_inputs: bool | None = None) -> Session:
    """An ONNX Runtime CPU session that runs the model as written; with `as_inputs` (by
    default, when `_weights_as_inputs` says so), its large weights fed as inputs.

    Both models of a comparison run the same way, so that they run the same kernels."""
    import onnxruntime as ort  # noqa: PLC0415 - heavy import, only verification needs it

    options = ort.SessionOptions()
    # as written: optimizations change where NaN and Inf appear (0 * Inf folded into weights)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # ONNX Runtime's CPU provider has no float16 MatMul (nor Add, Mul, Pow) on x86: even at
    # DISABLE_ALL it inserts a Cast to float32 before each float16 weight fed as an input. Its
    # default order runs such Casts (they read graph inputs only) early, so the float32 copies
    # of most weights were alive at once (5.7x a 1 GB float16 decoder's size in RSS). Its
    # priority order (Kahn's, ties to the lower node index) runs an inserted Cast only when no
    # node of the model is ready: just before its reader, one copy at a time
    # (tests/test_memory.py). The order changes no value computed.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.intra_op_num_threads = _thread_count()
    # fatal only: ORT's warnings are not the user's business, and its errors reach us as
    # exceptions (a size the original cannot run at is reported in one line, or skipped)
    options.log_severity_level = 4
    providers = ["CPUExecutionProvider"]
    weights: dict[str, np.ndarray] = {}
    if as_inputs or (as_inputs is None and _weights_as_inputs(model)):
        model, weights = weights_as_inputs(model)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    return Session(session, weights)


def weights_as_inputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A copy of `model` whose large initializers are graph inputs, and their values.

    Protobuf cannot hand a model over 2 GB to ONNX Runtime in memory, and ONNX Runtime copies
    the initializers it is given, where it reads an input in place. So the weights go in as
    inputs: data left on disk by a lazy load (channelcut.io) memory-mapped from its file, and
    nothing written to a temporary file. Initializers of a type numpy lacks, or read by a node
    outside the ONNX domain (a contrib kernel may want a constant), stay initializers.
    """
    special = {name for node in model.graph.node if node.domain not in ("", "ai.onnx")
               for name in node.input}
    moved = {}
    for index, tensor in io.large_initializers(model).items():
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        except (KeyError, TypeError, ValueError):
            continue
        if tensor.name not in special and dtype.kind in "biufc" and dtype.isnative:
            moved[index] = (tensor, dtype)
    light = io.skeleton(model, moved)
    declared = {v.name for v in light.graph.input}
    weights = {}
    for index in sorted(moved, reverse=True):
        tensor, dtype = moved[index]
        del light.graph.initializer[index]
        if tensor.name not in declared:
            light.graph.input.append(onnx.helper.make_tensor_value_info(
                tensor.name, tensor.data_type, list(tensor.dims)))
        source = io.on_disk(tensor)
        shape = tuple(tensor.dims)
        if source is None:
            array = np.frombuffer(tensor.raw_data, dtype=dtype).reshape(shape)
        else:
            array = np.memmap(source[0], dtype=dtype, mode="r", offset=source[1], shape=shape)
        weights[tensor.name] = array
    for tensor in light.graph.initializer:  # what stayed, and has its data on disk: read in
        source = io.on_disk(tensor)
        if source is not None:
            with open(source[0], "rb") as file:
                file.seek(source[1])
                raw = file.read(source[2])
            del tensor.external_data[:]
            tensor.ClearField("data_location")
            tensor.raw_data = raw
    return light, weights


def _run(session: Session, feeds: dict[str, np.ndarray]) -> dict[str, object]:
    """The session's outputs by name."""
    wanted = {i.name for i in session.session.get_inputs()}
    names = [o.name for o in session.session.get_outputs()]
    given = {**session.weights, **{k: v for k, v in feeds.items() if k in wanted}}
    values = session.session.run(names, given)
    return dict(zip(names, values))


def _runtime_errors() -> tuple[type[Exception], ...]:
    """What ONNX Runtime raises for a model it cannot load or run (its types share no base)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state  # noqa: PLC0415

    found = [o for o in vars(state).values() if isinstance(o, type) and issubclass(o, Exception)]
    return (*found, RuntimeError, ValueError)


def _thread_count() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))  # respects the CPUs a container actually grants
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cpus))


def _compare_output(name: str, want: object, got: object) -> OutputCheck:
    """One output's cosine (float64) and errors over the positions finite in both, and how
    many positions hold NaN or Inf in one model but not the same value in the other."""
    try:
        a = np.asarray(want, dtype=np.float64)
        b = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):  # strings and other non-numeric outputs: equal or not
        same = np.array_equal(np.asarray(want), np.asarray(got))
        return OutputCheck(name, 1.0 if same else 0.0, 0.0 if same else math.inf,
                           0.0 if same else math.inf)
    if a.shape != b.shape:
        raise VerificationError(
            f"output {name!r} has shape {list(b.shape)} in the cut model, {list(a.shape)} in "
            "the original; this is a bug in channelcut, nothing was written"
        )
    a, b = a.ravel(), b.ravel()
    finite = np.isfinite(a) & np.isfinite(b)
    a_rest, b_rest = a[~finite], b[~finite]
    mismatches = int(np.count_nonzero((a_rest != b_rest) & ~(np.isnan(a_rest) & np.isnan(b_rest))))
    a, b = a[finite], b[finite]
    abs_error = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    if scale > 0:
        rel_error = abs_error / scale
    else:
        rel_error = 0.0 if abs_error == 0 else math.inf
    return OutputCheck(name, _cosine(a, b), abs_error, rel_error, mismatches)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flat float64 vectors; two all-zero vectors are identical (1.0)."""
    if np.array_equal(a, b):  # exactly 1.0, not 1 - 1e-16 from rounding
        return 1.0
    # Each vector is scaled by its own max first: cosine ignores scale, and huge values would
    # otherwise overflow the squared norm.
    a_max = float(np.max(np.abs(a))) if a.size else 0.0
    b_max = float(np.max(np.abs(b))) if b.size else 0.0
    if a_max == 0 or b_max == 0:
        return 0.0
    a, b = a / a_max, b / b_max
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return min(1.0, max(-1.0, cosine))
