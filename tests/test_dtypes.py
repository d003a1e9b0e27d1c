"""Float16 and bfloat16 weights, as most LLM exports store them, are sliced like float32 ones
and keep their type.

float16 models run in ONNX Runtime's CPU provider as they are, though on x86 it has no
float16 MatMul, Pow, Add or Mul: it inserts Casts to float32 and computes those in float32
(tests/test_memory.py: one float32 weight at a time). It computes almost nothing in bfloat16
(Cast, Transpose, Concat, Identity run; Conv, MatMul, Add do not), so bfloat16 weights are stored
and Cast to float32 where they are read, as exports for CPUs write them: the cut slices the
stored bfloat16 tensor, not a float32 copy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import channelcut
from builders import (assert_cut, bias, conv, initializer, kept_channels, model, node,
                      random_feeds, relu, run, weights)
from test_attention import B, D, E, S, decoder

FP16, BF16 = TensorProto.FLOAT16, TensorProto.BFLOAT16


def in_float16(m: onnx.ModelProto) -> onnx.ModelProto:
    """`m` computing in float16: float32 initializers, inputs and outputs become float16."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    for i, t in enumerate(m.graph.initializer):
        if t.data_type == TensorProto.FLOAT:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in [*m.graph.input, *m.graph.output]:
        v.type.tensor_type.elem_type = FP16
    del m.graph.value_info[:]
    onnx.checker.check_model(m, full_check=True)
    return m


def stored_in_bfloat16(m: onnx.ModelProto, names: set[str] | None = None) -> onnx.ModelProto:
    """`m` with its float32 weights (rank 1 and up; those in `names` when given) stored in
    bfloat16 and Cast to float32 before the nodes that read them."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    casts = []
    for i, t in enumerate(m.graph.initializer):
        if t.data_type != TensorProto.FLOAT or not t.dims or (names and t.name not in names):
            continue
        name, array = t.name, numpy_helper.to_array(t).astype(ml_dtypes.bfloat16)
        m.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, f"{name}_bf16"))
        casts.append(node("Cast", [f"{name}_bf16"], [name], to=TensorProto.FLOAT))
    nodes = casts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.checker.check_model(m, full_check=True)
    return m


def dtypes(m: onnx.ModelProto) -> dict[str, int]:
    return {t.name: t.data_type for t in m.graph.initializer}


def conv_chain(w1_zero_rows: list[int], b1_at: dict[int, float] | None = None
               ) -> onnx.ModelProto:
    """x -> conv (8 out, rows zeroed) -> Relu -> conv (4 out) -> y, all float32."""
    inits = {"w1": weights(8, 3, 3, 3, zero_rows=w1_zero_rows, seed=1),
             "b1": bias(8, b1_at, seed=1), "w2": weights(4, 8, 1, 1, seed=2),
             "b2": bias(4, seed=2)}
    return model([conv("x", "w1", "h", "b1", pads=1), relu("h", "r"),
                  conv("r", "w2", "y", "b2")], {"x": [1, 3, 8, 8]}, ["y"], inits)


def test_float16_conv_channels_cut_in_float16():
    m = in_float16(conv_chain([2, 5], {2: 0.0, 5: 0.0}))
    result = assert_cut(m, {"conv_h": (3, 6), "conv_y": (6, 4)}, groups=2)
    assert set(dtypes(result.model).values()) == {FP16}
    assert result.report.checks and all(c.cosine >= 0.9999 for c in result.report.checks)


def test_float16_decoder_heads_cut_in_float16():
    m = in_float16(decoder(4, zero_v=[1, 3]))
    result = assert_cut(m, {"matmul_q": (E, 8), "matmul_k": (E, 8), "matmul_v": (E, 8),
                            "matmul_o": (8, E)}, groups=2)
    kinds = dtypes(result.model)
    assert {kinds[w] for w in ("wq", "wk", "wv", "wo")} == {FP16}


def test_float16_inf_weight_keeps_the_zero_channel_it_reads():
    # 0 * inf is NaN: the original's output is NaN where the dead channel meets the inf
    # weight, and the cut must keep that; float16's largest finite value is 65504, so the
    # check of weight magnitudes must not compare in float16 (its bound overflows to inf)
    m = conv_chain([2], {2: 0.0})
    w2 = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "w2")).copy()
    w2[1, 2] = np.inf
    m.graph.initializer.remove(next(t for t in m.graph.initializer if t.name == "w2"))
    m.graph.initializer.append(numpy_helper.from_array(w2, "w2"))
    assert_cut(in_float16(m), {})


def test_bfloat16_conv_weights_sliced_in_bfloat16():
    m = stored_in_bfloat16(conv_chain([2, 5], {2: 0.0, 5: 0.0}))
    result = assert_cut(m, {"conv_h": (3, 6), "conv_y": (6, 4)}, groups=2)
    sliced = {t.name: (t.data_type, list(t.dims)) for t in result.model.graph.initializer}
    assert sliced == {"w1_bf16": (BF16, [6, 3, 3, 3]), "b1_bf16": (BF16, [6]),
                      "w2_bf16": (BF16, [4, 6, 1, 1]), "b2_bf16": (BF16, [4])}
    assert [n.op_type for n in result.model.graph.node].count("Cast") == 4


def test_bfloat16_decoder_heads_and_float32_shapes():
    m = stored_in_bfloat16(decoder(4, zero_o=[2]), names={"wq", "wk", "wv", "wo"})
    result = assert_cut(m, {"matmul_q": (E, 12), "matmul_k": (E, 12), "matmul_v": (E, 12),
                            "matmul_o": (12, E)}, groups=1)
    kinds = dtypes(result.model)
    assert {kinds[f"{w}_bf16"] for w in ("wq", "wk", "wv", "wo")} == {BF16}
    assert list(initializer(result.model, "shape_q")) == [B, S, 3, D]


def test_bfloat16_weight_cast_once_for_two_convs():
    # one stored weight, one Cast, two readers that lose the same columns: each gets the
    # sliced weight, still one bfloat16 tensor (equal slices are shared)
    inits = {"w1": weights(8, 3, 1, 1, zero_rows=[0, 1], seed=1), "w2": weights(4, 8, 1, 1),
             "w3": weights(8, 3, 1, 1, zero_rows=[0, 1], seed=3)}
    nodes = [conv("x", "w1", "a"), conv("a", "w2", "y"), conv("x", "w3", "c"),
             conv("c", "w2", "z")]
    m = stored_in_bfloat16(model(nodes, {"x": [1, 3, 4, 4]}, ["y", "z"], inits), {"w2"})
    result = assert_cut(m, {"conv_a": (3, 6), "conv_y": (6, 4), "conv_c": (3, 6),
                            "conv_z": (6, 4)})
    assert {t.name: (t.data_type, list(t.dims)) for t in result.model.graph.initializer
            if t.name.startswith("w2")} == {"w2_bf16": (BF16, [4, 6, 1, 1])}


def test_bfloat16_bias_that_a_fold_changes_is_read_in_float32():
    # the full cut folds conv1's constant channel (zero weights, bias 0.5, Relu) into conv2's
    # bias: b2 + W2[:, 2] * 0.5 is no bfloat16, so conv2 reads the new bias in float32
    m = stored_in_bfloat16(conv_chain([2], {2: 0.5}))
    result = assert_cut(m, {"conv_h": (3, 7), "conv_y": (7, 4)}, groups=1, mode="full")
    kinds = dtypes(result.model)
    assert kinds["w1_bf16"] == kinds["w2_bf16"] == BF16
    y = next(n for n in result.model.graph.node if n.name == "conv_y")
    assert kinds[y.input[2]] == TensorProto.FLOAT
    assert "b2_bf16" not in kinds  # nor its Cast: nothing reads them
    assert [n.op_type for n in result.model.graph.node].count("Cast") == 3


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_bench_decoder_with_external_data_cut_exactly(tmp_path, dtype):
    """bench/llm_scale.py's decoder, small: every zeroed head and MLP channel goes, from a
    file with external data, and the weights keep their type."""
    bench = _bench_module()
    built = bench.build(tmp_path / "m.onnx", bench.Shape(2, 128, 2, 320), dtype)
    result = channelcut.cut(str(built.path))
    s, kept = built.shape, kept_channels(result)
    assert sum(s.heads - kept[f"matmul_l{i}_attn_q"][1] // bench.HEAD_DIM
               for i in range(s.layers)) == built.dead_heads == 2
    assert sum(s.hidden - kept[f"matmul_l{i}_mlp_g"][1] for i in range(s.layers)) \
        == built.dead_channels
    want = FP16 if dtype == "fp16" else TensorProto.FLOAT
    assert {t.data_type for t in result.model.graph.initializer if len(t.dims) == 2} == {want}
    assert result.report.checks and all(c.cosine >= 0.9999 for c in result.report.checks)
    original = onnx.load(str(built.path))
    feeds = random_feeds(original)
    np.testing.assert_allclose(run(result.model, feeds)["y"], run(original, feeds)["y"],
                               rtol=1e-3, atol=1e-3)


def _bench_module():
    """bench/llm_scale.py, by path (bench/ is no package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "llm_scale.py"
    spec = importlib.util.spec_from_file_location("llm_scale", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("value, finite", [(np.inf, False), (-np.inf, False), (np.nan, False),
                                           (65504.0, True), (-65504.0, True), (6e-8, True),
                                           (-0.0, True)])
def test_float16_bounds_are_read_from_the_bits(value, finite):
    """The float16 check reads exponent bits (numpy's float16 max is element by element): the
    same verdict as on float32, for contiguous and strided arrays, past one chunk."""
    from channelcut.finite import bounded  # noqa: PLC0415

    array = np.zeros((1100, 1000), np.float16)
    array[1050, 998] = value
    assert bounded(array) is finite
    assert bounded(array[:, ::2]) is finite
    assert bounded(array.astype(np.float32)) is finite
