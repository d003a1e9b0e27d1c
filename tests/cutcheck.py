"""Judge one cut independently of channelcut's own verification: the checks the property tests
and bench/fuzz.py share.

`judge(model, mode)` cuts `model` in one of `MODES` and returns what is wrong, as `Finding`s in
these categories (an empty list: the cut is right):

- crash: the cut raised something other than a ChannelcutError, or modified its input model
- refused: channelcut's own verification rejected its cut (VerificationError)
- mismatch: an output of the cut model differs from the original's in ONNX Runtime (graph
  optimizations off, several seeded inputs, one of large magnitude): NaN and +-Inf at other
  positions, or finite values further apart than RTOL of the output's largest magnitude; or
  the cut model does not run, or lost or reshaped an output. Finite values further apart are
  computed again in float64 (both models, onnx.reference): when they agree there within
  EXACT_RTOL, the float32 difference is the rounding of an ill-conditioned graph (a sum of a
  few 1e4-sized terms that cancel to 4: the original's own float32 error is as large), not a
  different model; when float64 cannot run a model, the float32 mismatch stands
- checker: the cut model fails onnx.checker's full check
- interface: a graph input or output changed name, element type, dims or dim_params
- growth: the cut model's weight bytes exceed the original's
- fixpoint: cutting the cut model again (same mode) removes something

A clean ChannelcutError other than VerificationError ("declined") is not a failure of the cut,
but the bench counts it: on a valid model it is suspicious.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import channelcut
from channelcut.errors import ChannelcutError, VerificationError

CATEGORIES = ("crash", "refused", "mismatch", "checker", "interface", "growth", "fixpoint")
# channelcut.cut keyword arguments of each mode.
def _the_cut_is_fastest(models: dict, feeds: list) -> dict[str, float]:
    """A guard measure (channelcut.guard) that keeps the cut: the forms it writes are judged,
    not this machine's timings."""
    return {name: 1e-3 if name == "cut" else 2e-3 for name in models}


MODES: dict[str, dict] = {
    "zero": {"fold": False},
    "full": {"fold": True},
    "params": {"fold": True, "objective": "params"},
    "align8": {"fold": True, "align": 8},
    # ort-cpu's forms (reinsertions as Concat and Gather) and alignment; every fold judged by
    # FLOPs, so that the small graphs make some
    "ort-cpu": {"target": "ort-cpu", "objective": "flops", "measure": _the_cut_is_fastest},
}
RTOL = 1e-4  # of the output's largest finite magnitude
ATOL = 1e-6
EXACT_RTOL = 1e-8  # the same, for both models computed in float64
LARGE = 1e4  # the scale of the large-magnitude input


@dataclass(frozen=True)
class Finding:
    category: str  # one of CATEGORIES, or "declined"
    detail: str  # one line

    def __str__(self) -> str:
        return f"{self.category}: {self.detail}"


@dataclass
class Reference:
    """Seeded inputs and the original model's outputs on them (shared by every mode)."""

    feeds: list[dict[str, np.ndarray]]
    outputs: list[dict[str, np.ndarray]]


def session(m: onnx.ModelProto) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with every graph optimization off: they may change the
    model's own NaN pattern, and the check compares the model as written."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run_all(m: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]
            ) -> list[dict[str, np.ndarray]]:
    s = session(m)
    names = [o.name for o in s.get_outputs()]
    return [dict(zip(names, s.run(names, f))) for f in feeds]


def seeded_feeds(m: onnx.ModelProto, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Three inputs for every graph input: two standard normal (the second with batch 2 where
    the batch is dynamic), one of magnitude LARGE; other dynamic dims are 1."""
    inits = {t.name for t in m.graph.initializer}
    inputs = [v for v in m.graph.input if v.name not in inits]
    feeds = []
    for k, (batch, scale) in enumerate(((1, 1.0), (2, 1.0), (1, LARGE))):
        rng = np.random.default_rng([seed, k])
        feed = {}
        for v in inputs:
            dims = [d.dim_value if d.HasField("dim_value") else (batch if i == 0 else 1)
                    for i, d in enumerate(v.type.tensor_type.shape.dim)]
            feed[v.name] = (rng.standard_normal(dims) * scale).astype(np.float32)
        feeds.append(feed)
    return feeds


def reference(m: onnx.ModelProto) -> Reference:
    feeds = seeded_feeds(m)
    return Reference(feeds, run_all(m, feeds))


def weight_bytes(m: onnx.ModelProto) -> int:
    """Bytes of every initializer and Constant node value."""
    total = sum(numpy_helper.to_array(t).nbytes for t in m.graph.initializer)
    for n in m.graph.node:
        if n.op_type == "Constant":
            total += sum(numpy_helper.to_array(a.t).nbytes for a in n.attribute
                         if a.name == "value")
    return total


def interface(m: onnx.ModelProto) -> list[tuple]:
    """(kind, name, element type, dims) of every graph input (not initializers) and output;
    a dim is its value, its dim_param, or None."""
    inits = {t.name for t in m.graph.initializer}

    def describe(kind: str, v: onnx.ValueInfoProto) -> tuple:
        t = v.type.tensor_type
        dims = None
        if t.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else
                         (d.dim_param if d.HasField("dim_param") else None) for d in t.shape.dim)
        return kind, v.name, t.elem_type, dims

    return ([describe("input", v) for v in m.graph.input if v.name not in inits] +
            [describe("output", v) for v in m.graph.output])


def compare(name: str, want: np.ndarray, got: np.ndarray, rtol: float = RTOL,
            atol: float = ATOL) -> str | None:
    """Why `got` is not `want` (None when it is): NaN and +-Inf at the same positions exactly,
    finite values within `rtol` of the output's largest finite magnitude (plus `atol`)."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return (f"output {name!r} is {got.dtype}{list(got.shape)}, "
                f"was {want.dtype}{list(want.shape)}")
    if not np.issubdtype(want.dtype, np.floating):
        return None if np.array_equal(want, got) else f"output {name!r} differs"
    for what, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        w, g = test(want), test(got)
        if not np.array_equal(w, g):
            return (f"output {name!r}: {what} at {int(w.sum())} positions in the original, "
                    f"{int(g.sum())} in the cut model ({int((w != g).sum())} differ)")
    finite = np.isfinite(want)
    a, b = want[finite].astype(np.float64), got[finite].astype(np.float64)
    if not a.size:
        return None
    scale = float(np.max(np.abs(a)))
    error = float(np.max(np.abs(a - b)))
    if error > rtol * scale + atol:
        return f"output {name!r}: {FINITE_ERROR} {error:.3g} at output scale {scale:.3g}"
    return None


FINITE_ERROR = "max error"  # how compare() words a difference in finite values alone


def as_float64(m: onnx.ModelProto) -> onnx.ModelProto:
    """`m` computing in float64: its float32 constants, inputs, outputs and casts made
    float64, except a Resize's or Upsample's scales (float32 by the standard)."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    keep = {n.input[k] for n in m.graph.node for k in {"Resize": (2,), "Upsample": (1,)}.get(
        n.op_type, ()) if k < len(n.input)}
    for t in m.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and t.name not in keep:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64),
                                               t.name))
    for v in (*m.graph.input, *m.graph.output, *m.graph.value_info):
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            v.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    for n in m.graph.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == onnx.TensorProto.FLOAT:
                a.i = onnx.TensorProto.DOUBLE
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == onnx.TensorProto.FLOAT \
                    and not set(n.output) & keep:
                a.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
    return m


def float64_problem(original: onnx.ModelProto, cut_model: onnx.ModelProto,
                    feed: dict[str, np.ndarray]) -> str | None:
    """Why the two models differ when both compute in float64 (onnx.reference) on `feed`, or
    None when they agree within EXACT_RTOL; the float32 mismatch stands (returned as is by the
    caller) when float64 cannot run either model."""
    from onnx.reference import ReferenceEvaluator  # only for a float32 mismatch

    feed64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feed.items()}
    try:
        want, got = (ReferenceEvaluator(as_float64(m)).run(None, feed64)
                     for m in (original, cut_model))
    except Exception as exc:  # noqa: BLE001 - an op the reference lacks, say
        return f"float64 check did not run: {_error_line(exc)}"
    names = [o.name for o in original.graph.output]
    for name, w, g in zip(names, want, got):
        problem = compare(name, np.asarray(w), np.asarray(g), EXACT_RTOL, 0.0)
        if problem:
            return f"{problem} in float64"
    return None


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _crash(exc: BaseException, what: str) -> Finding:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"
    return Finding("crash", f"{what}: {_error_line(exc)} (at {where})")


def output_problem(m: onnx.ModelProto, cut_model: onnx.ModelProto, ref: Reference
                   ) -> str | None:
    """How the cut model's outputs differ from the original's `ref` (None: they do not)."""
    try:
        outputs = run_all(cut_model, ref.feeds)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors share no base
        return f"the cut model does not run: {_error_line(exc)}"
    for k, (expected, actual) in enumerate(zip(ref.outputs, outputs)):
        if list(actual) != list(expected):
            return f"outputs {list(expected)} -> {list(actual)}"
        problems = [p for p in (compare(n, expected[n], actual[n]) for n in expected) if p]
        if problems and all(FINITE_ERROR in p for p in problems):
            exact = float64_problem(m, cut_model, ref.feeds[k])
            problems = [f"{problems[0]}; {exact}"] if exact else []
        if problems:
            return f"input {k}: {problems[0]}"
    return None


def judge(m: onnx.ModelProto, mode: str, ref: Reference | None = None) -> list[Finding]:
    """Everything wrong with cutting `m` in `mode` (see the module docstring)."""
    options = MODES[mode]
    before = m.SerializeToString()
    findings = []
    try:
        result = channelcut.cut(m, verify=True, **options)
    except VerificationError as exc:
        findings.append(Finding("refused", _error_line(exc)))
        try:
            result = channelcut.cut(m, verify=False, **options)
        except Exception as again:  # noqa: BLE001 - whatever it is, it is the finding
            return [*findings, _crash(again, "cut(verify=False)")]
    except ChannelcutError as exc:
        return [Finding("declined", _error_line(exc))]
    except Exception as exc:  # noqa: BLE001
        return [_crash(exc, "cut")]
    if m.SerializeToString() != before:
        findings.append(Finding("crash", "cut() modified its input model"))
    cut_model = result.model

    try:
        onnx.checker.check_model(cut_model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        findings.append(Finding("checker", _error_line(exc)))

    want, got = interface(m), interface(cut_model)
    if want != got:
        changed = [f"{w} -> {g}" for w, g in zip(want, got) if w != g] or [
            f"{len(want)} -> {len(got)} inputs and outputs"]
        findings.append(Finding("interface", changed[0]))

    before_bytes, after_bytes = weight_bytes(m), weight_bytes(cut_model)
    report = result.report
    if after_bytes > before_bytes or report.weight_bytes_after > report.weight_bytes_before:
        findings.append(Finding("growth", f"{before_bytes} -> {after_bytes} weight bytes (report "
                                          f"{report.weight_bytes_before} -> "
                                          f"{report.weight_bytes_after})"))

    mismatch = output_problem(m, cut_model, ref or reference(m))
    if mismatch:
        findings.append(Finding("mismatch", mismatch))

    try:
        again = channelcut.cut(cut_model, verify=False, **options).report
    except Exception as exc:  # noqa: BLE001
        findings.append(_crash(exc, "re-cut"))
    else:
        if again.removed_groups or again.removed_channels or again.removed_nodes:
            findings.append(Finding("fixpoint", f"re-cut removed {again.removed_groups} groups, "
                                                f"{again.removed_channels} channels, "
                                                f"{again.removed_nodes} nodes"))
    return findings


def failures(findings: list[Finding]) -> list[Finding]:
    """The findings that are failures (all but "declined")."""
    return [f for f in findings if f.category in CATEGORIES]
