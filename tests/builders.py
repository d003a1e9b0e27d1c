"""Small onnx.helper shortcuts for building test models, and `assert_cut` to check a cut.

A test reads like the graph it checks:

    m = model([conv("x", "w", "y", pads=1), relu("y", "a"), conv("a", "w2", "z")],
              inputs={"x": [1, 3, 8, 8]}, outputs=["z"],
              inits={"w": weights(8, 3, 3, 3, zero_rows=[2, 5]), "w2": weights(4, 8, 1, 1)})
    result = assert_cut(m, kept={"conv_y": (3, 6), "conv_z": (6, 4)}, groups=2)

Nodes are named `<op_type lower>_<first output>` ("conv_y"), the names the report uses.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import channelcut
from channelcut import CutResult

OPSET = 18
SEED = 0

ValueSpec = str | tuple[str, Sequence[int | str | None] | None] | onnx.ValueInfoProto


# --- arrays ------------------------------------------------------------------------------------

def rand(*shape: int, seed: int = SEED, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Seeded uniform float32 values in [low, high)."""
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def weights(*shape: int, zero_rows: Iterable[int] = (), zero_cols: Iterable[int] = (),
            seed: int = SEED) -> np.ndarray:
    """Seeded random weights (no exact zeros) with rows (axis 0) and columns (axis 1) zeroed.

    For a Conv weight [Cout, Cin/g, kh, kw] rows are output channels, columns input channels;
    for a MatMul weight [K, N] pass `zero_rows` for dead inputs and `zero_cols` for dead outputs.
    """
    w = rand(*shape, seed=seed, low=0.1, high=1.0) * np.where(
        np.random.default_rng(seed + 1).random(shape) < 0.5, -1, 1).astype(np.float32)
    w[list(zero_rows)] = 0.0
    w[:, list(zero_cols)] = 0.0
    return w


def bias(n: int, at: Mapping[int, float] | None = None, seed: int = SEED) -> np.ndarray:
    """Seeded random bias of length `n` with the entries in `at` set ({channel: value})."""
    b = rand(n, seed=seed + 7)
    for index, value in (at or {}).items():
        b[index] = value
    return b


# --- nodes -------------------------------------------------------------------------------------

def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None,
         domain: str | None = None, **attrs) -> onnx.NodeProto:
    """Any node; named `<op_type lower>_<first output>` unless `name` says otherwise."""
    return helper.make_node(op_type, list(inputs), list(outputs),
                            name=name or f"{op_type.lower()}_{outputs[0]}", domain=domain,
                            **attrs)


def conv(x: str, w: str, y: str, b: str | None = None, *, pads: int | Sequence[int] = 0,
         group: int = 1, strides: Sequence[int] | None = None,
         dilations: Sequence[int] | None = None, name: str | None = None) -> onnx.NodeProto:
    """2-D Conv named `conv_<y>`; `pads` is one int for every side or the full ONNX list."""
    attrs: dict = {"pads": [pads] * 4 if isinstance(pads, int) else list(pads)}
    if group != 1:
        attrs["group"] = group
    if strides is not None:
        attrs["strides"] = list(strides)
    if dilations is not None:
        attrs["dilations"] = list(dilations)
    return node("Conv", [x, w] + ([b] if b else []), [y], name=name, **attrs)


def gemm(a: str, b: str, y: str, c: str | None = None, *, trans_a: int = 0, trans_b: int = 0,
         name: str | None = None) -> onnx.NodeProto:
    """Gemm named `gemm_<y>`: y = op(a) @ op(b) + c."""
    attrs = {k: v for k, v in (("transA", trans_a), ("transB", trans_b)) if v}
    return node("Gemm", [a, b] + ([c] if c else []), [y], name=name, **attrs)


def matmul(a: str, b: str, y: str, name: str | None = None) -> onnx.NodeProto:
    return node("MatMul", [a, b], [y], name=name)


def relu(x: str, y: str) -> onnx.NodeProto:
    return node("Relu", [x], [y])


# --- models ------------------------------------------------------------------------------------

def value_info(spec: ValueSpec, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input or output: a name (shape unknown), (name, shape), or a ValueInfoProto."""
    if isinstance(spec, onnx.ValueInfoProto):
        return spec
    if isinstance(spec, str):
        return helper.make_tensor_value_info(spec, elem_type, None)
    name, shape = spec
    return helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape))


def _specs(values: Mapping[str, Sequence[int] | None] | Sequence[ValueSpec]) -> list[ValueSpec]:
    return list(values.items()) if isinstance(values, Mapping) else list(values)


def model(nodes: Sequence[onnx.NodeProto],
          inputs: Mapping[str, Sequence[int] | None] | Sequence[ValueSpec],
          outputs: Mapping[str, Sequence[int] | None] | Sequence[ValueSpec],
          inits: Mapping[str, np.ndarray] | Sequence[onnx.TensorProto] = (), *,
          opset: int = OPSET, extra_opsets: Mapping[str, int] | None = None,
          check: bool = True) -> onnx.ModelProto:
    """A checked ModelProto. `inputs`/`outputs`: {name: shape} or a list of names, (name, shape)
    pairs or ValueInfoProtos (an output given by name alone gets its inferred shape);
    `inits`: {name: array} or TensorProtos."""
    if isinstance(inits, Mapping):
        inits = [numpy_helper.from_array(np.asarray(a), name) for name, a in inits.items()]
    graph = helper.make_graph(list(nodes), "test", [value_info(s) for s in _specs(inputs)],
                              [value_info(s) for s in _specs(outputs)], list(inits))
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    m = helper.make_model(graph, opset_imports=opsets, ir_version=9)
    # Outputs given by name alone get their inferred type (the checker wants a shape).
    inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(m).graph.output}
    for out in m.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in inferred:
            out.CopyFrom(inferred[out.name])
    if check:
        onnx.checker.check_model(m, full_check=True)
    return m


def parse(text: str) -> onnx.ModelProto:
    """A model in ONNX text form, checked."""
    m = onnx.parser.parse_model(text)
    onnx.checker.check_model(m, full_check=True)
    return m


def dead_channel_model() -> onnx.ModelProto:
    """x[N,3,8,8] -> conv1 (4 out) -> Relu (r) -> conv2 (2 out) -> y, both convs padded by 1.

    conv1's channel 2 has zero weights and bias -1: Relu makes it 0 for every input, so it
    and conv2's matching input channel can go. Sizes in bytes: w1 432 -> 324, b1 16 -> 12,
    w2 288 -> 216; b2 (8) stays.
    """
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(4).astype(np.float32)
    w1[2], b1[2] = 0.0, -1.0
    w2 = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    b2 = rng.standard_normal(2).astype(np.float32)
    pads = {"pads": [1, 1, 1, 1]}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1", **pads),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="conv2", **pads)],
        "dead_channel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"),
                                                     (b2, "b2"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# --- running and checking ----------------------------------------------------------------------

def random_feeds(m: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None = None,
                 seed: int = 1) -> dict[str, np.ndarray]:
    """Seeded random inputs for every graph input, of its float type (float32 when it
    declares none); `shapes` overrides declared shapes, other dynamic dims become 1."""
    inits = {t.name for t in m.graph.initializer}
    feeds = {}
    for i, vi in enumerate(v for v in m.graph.input if v.name not in inits):
        dims = [d.dim_value if d.HasField("dim_value") else 1
                for d in vi.type.tensor_type.shape.dim]
        dims = list((shapes or {}).get(vi.name, dims))
        elem = vi.type.tensor_type.elem_type
        dtype = helper.tensor_dtype_to_np_dtype(elem) if elem in (
            TensorProto.FLOAT16, TensorProto.DOUBLE) else np.float32
        feeds[vi.name] = np.random.default_rng(seed + i).standard_normal(dims).astype(dtype)
    return feeds


def run(m: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every graph output of `m` on `feeds`, in ONNX Runtime on the CPU."""
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def kept_channels(result: CutResult) -> dict[str, tuple[int, int]]:
    """Weighted node -> (input channels, output channels) kept, for every layer that lost some."""
    return {layer.node: (layer.in_channels[1], layer.out_channels[1])
            for layer in result.report.layers}


def blockers(result: CutResult, op_type: str | None = None) -> list:
    """The report's blockers, those of `op_type` only when given."""
    return [b for b in result.report.blockers if op_type is None or b.op_type == op_type]


def initializer(m: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name == name)


def find_node(m: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.name == name)


def const_input(m: onnx.ModelProto, node_name: str, index: int = 1) -> np.ndarray:
    """The initializer the named node reads as input `index` (1: a Conv's or Gemm's weights)."""
    return initializer(m, find_node(m, node_name).input[index])


def attribute(m: onnx.ModelProto, node_name: str, attr: str, default=None):
    """An attribute of the named node in `m`, as a Python value."""
    for a in find_node(m, node_name).attribute:
        if a.name == attr:
            return helper.get_attribute_value(a)
    return default


def cut(m: onnx.ModelProto, mode: str = "zero", **kwargs) -> CutResult:
    """channelcut.cut in `mode` "zero" (only zero or unread channels go: what these tests
    predict by default) or "full" (constants folded too; skips the test where the core has no
    `fold` option yet)."""
    if "fold" in inspect.signature(channelcut.cut).parameters:
        kwargs["fold"] = mode == "full"
    elif mode == "full":
        pytest.skip("this channelcut has no full cut (fold) yet")
    return channelcut.cut(m, **kwargs)


def assert_cut(m: onnx.ModelProto, kept: Mapping[str, tuple[int, int]] | None = None, *,
               groups: int | None = None, feeds: Mapping[str, np.ndarray] | None = None,
               input_shapes: Mapping[str, Sequence[int]] | None = None,
               mode: str = "zero", objective: str | None = "flops", **options) -> CutResult:
    """Cut `m` (in `mode`, see `cut`, under `objective`; None: the target's; `options`: more
    channelcut.cut arguments, such as target) and check the result; returns it for further
    asserts.

    `kept`: weighted node name -> (input channels, output channels) after the cut, for EXACTLY
    the weighted layers that lose channels ({} or None: nothing may be cut). `groups`: the
    report's removed channel groups, when given. Always: the input model is untouched, the
    result passes the full ONNX checker, and ONNX Runtime gives the same outputs (same names,
    same shapes, allclose rtol=1e-4, atol `_atol`) on seeded random inputs.
    """
    before = m.SerializeToString()
    result = cut(m, mode, input_shapes=dict(input_shapes) if input_shapes else None,
                 objective=objective, **options)
    assert m.SerializeToString() == before, "cut() modified its input model"
    onnx.checker.check_model(result.model, full_check=True)

    assert getattr(result.report, "mode", mode) == mode
    assert kept_channels(result) == dict(kept or {})
    if groups is not None:
        assert result.report.removed_groups == groups
    if not kept:
        assert result.report.removed_groups == 0
        assert result.report.const_changes == []
    assert all(c.cosine >= 0.9999 for c in result.report.checks)

    feeds = dict(feeds) if feeds is not None else random_feeds(m, input_shapes)
    expected, actual = run(m, feeds), run(result.model, feeds)
    assert list(actual) == list(expected)
    for name, want in expected.items():
        assert actual[name].shape == want.shape, name
        np.testing.assert_allclose(actual[name], want, rtol=1e-4, atol=_atol(want),
                                   err_msg=name)
    return result


def _atol(want: np.ndarray) -> float:
    """1e-5, or 2e-6 of the output's largest finite magnitude (about 16 float32 ulps of it)
    where that is more: a value that is a cancellation of terms of that size (0.25 from terms
    near 100) differs by a few of their ulps when the cut model sums fewer terms in another
    order (test_blocks' basic block on an AVX2 CPU: 3.9e-5 on 0.2508 among values to 150),
    a relative error past 1e-4 that a wrong channel would exceed by orders of magnitude."""
    finite = np.abs(want[np.isfinite(want)]) if np.issubdtype(want.dtype, np.floating) else []
    return max(1e-5, 2e-6 * float(np.max(finite))) if len(finite) else 1e-5
