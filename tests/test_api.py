"""channelcut.cut() as a library call: its arguments are checked like the CLI's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import channelcut
from channelcut.errors import ChannelcutError
from channelcut.report import summary_lines

from builders import (assert_cut, bias, conv, cut, dead_channel_model, model, node, random_feeds,
                      relu, run, weights)


def rounding_model():
    """conv 3->32 with every third filter zero (bias -1, so Relu makes it 0), then a 3x3 conv
    32->32: the second conv sums 21 channels instead of 32, so its float32 results round
    differently from the original's (cosine 1 - 1e-13, not 1.0)."""
    dead = list(range(0, 32, 3))
    return model([conv("x", "w", "y", "b", pads=1), relu("y", "a"), conv("a", "w2", "z", pads=1)],
                 inputs={"x": [1, 3, 16, 16]}, outputs=["z"],
                 inits={"w": weights(32, 3, 3, 3, zero_rows=dead),
                        "b": bias(32, {i: -1.0 for i in dead}), "w2": weights(32, 32, 3, 3)})


def test_threshold_1_means_equal_up_to_rounding():
    result = channelcut.cut(rounding_model(), threshold=1.0)
    (check,) = result.report.checks
    assert check.max_abs_error > 0  # the outputs do differ by rounding: the case that failed
    assert result.report.removed_channels == 2 * 11  # y and a lose 11 channels each


@pytest.mark.parametrize("threshold", [0, 0.0, -0.5, 1.5, 1.0000001, float("nan"), float("inf"),
                                       True, "0.9", None])
def test_threshold_outside_0_1_is_refused(threshold):
    with pytest.raises(ChannelcutError, match=r"threshold .*: give a cosine in \(0, 1\]"):
        channelcut.cut(dead_channel_model(), threshold=threshold, verify=False)


@pytest.mark.parametrize("source", [42, b"not a path", {"graph": None}])
def test_a_model_of_another_type_is_a_clear_error(source):
    with pytest.raises(ChannelcutError, match="give an onnx.ModelProto, the path of an .onnx"):
        channelcut.cut(source)


def test_an_nn_module_is_cut_through_the_pytorch_front_end():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        module[0].weight[::2] = 0.0  # 4 zero filters with bias -1: dead after the ReLU
        module[0].bias[::2] = -1.0
    example = torch.randn(1, 3, 16, 16)
    result = channelcut.cut(module, example_inputs=(example,))
    assert [(layer.in_channels, layer.out_channels) for layer in result.report.layers] == \
        [((3, 3), (8, 4)), ((8, 4), (4, 4))]
    with torch.no_grad():
        want = module(example).numpy()
    (got,) = run(result.model, {"input0": example.numpy()}).values()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # a bare tensor is one input, too
    assert channelcut.cut(module, example_inputs=example).report.removed_channels == \
        result.report.removed_channels


@pytest.mark.parametrize("examples", [None, [], (np.zeros((1, 3, 16, 16), np.float32),), "x"])
def test_an_nn_module_without_float_example_inputs_is_a_clear_error(examples):
    torch = pytest.importorskip("torch")
    module = torch.nn.Conv2d(3, 4, 1)
    with pytest.raises(ChannelcutError, match="a torch.nn.Module needs example_inputs"):
        channelcut.cut(module, example_inputs=examples)


# --- graph inputs and outputs keep their declarations exactly -------------------------------

def boundary(m) -> list:
    return [(v.name, v.type.SerializeToString()) for v in [*m.graph.input, *m.graph.output]]


@pytest.mark.parametrize("output_dims", [["N", 3, 8, 8], [1, 3, 8, 8], ["M", 3, 8, 8], None],
                         ids=["same", "batch 1", "other dim_param", "no shape"])
@pytest.mark.parametrize("mode", ["zero", "full"])
def test_an_input_that_is_also_an_output_keeps_both_declarations(output_dims, mode):
    m = dead_channel_model()  # x[N,3,8,8] -> ... -> y[N,2,8,8], one dead channel
    m.graph.output.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, output_dims))
    result = cut(m, mode)
    assert result.report.removed_channels == 2  # conv1's output and the Relu's lose one each
    assert boundary(result.model) == boundary(m)
    feeds = random_feeds(m, {"x": [2, 3, 8, 8]})  # the batch stays dynamic
    for name, want in run(m, feeds).items():
        np.testing.assert_allclose(run(result.model, feeds)[name], want, rtol=1e-4, atol=1e-5)


def test_an_input_that_is_an_output_keeps_its_dynamic_dims_when_nothing_is_cut():
    m = model([relu("x", "y")], inputs=[("x", ["N", 3, "H", "W"])],
              outputs=[("y", ["N", 3, "H", "W"]), ("x", [1, 3, 4, 4])])
    result = cut(m)
    assert result.report.removed_channels == 0
    assert boundary(result.model) == boundary(m)


# --- the weights never grow ---------------------------------------------------------------

def total_bytes(m) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in m.graph.initializer)


def two_branches_sharing(w: np.ndarray, dead_a: int, dead_b: int):
    """x -> conv (8 filters, `dead_a` zero with bias -1) -> Relu -> a, the same with `dead_b`
    -> b; then one weight `w` [16, 8, 3, 3] read by the convs of a and of b, and their sum."""
    return model([conv("x", "wa", "ha", "ba"), relu("ha", "a"), conv("x", "wb", "hb", "bb"),
                  relu("hb", "b"), conv("a", "w", "ya", pads=1), conv("b", "w", "yb", pads=1),
                  node("Add", ["ya", "yb"], ["z"])],
                 inputs={"x": [1, 3, 8, 8]}, outputs=["z"],
                 inits={"wa": weights(8, 3, 1, 1, zero_rows=[dead_a]), "ba": bias(8, {dead_a: -1}),
                        "wb": weights(8, 3, 1, 1, zero_rows=[dead_b], seed=3),
                        "bb": bias(8, {dead_b: -1}, seed=3), "w": w})


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_a_constant_shared_by_readers_cut_differently_is_not_copied(mode, caplog):
    # a loses channel 0, b channel 1: conv_ya and conv_yb would each need their own slice of
    # w (2 x 7/8 of it) for 2 x 1/8 of the first convs: the weights would grow, so the
    # readers of w keep their channels, and the report says why.
    m = two_branches_sharing(weights(16, 8, 3, 3), dead_a=0, dead_b=1)
    result = assert_cut(m, {}, mode=mode)
    assert result.report.weight_bytes_after == result.report.weight_bytes_before == total_bytes(m)
    assert total_bytes(result.model) == total_bytes(m)
    assert {b.node for b in result.report.blockers} == {"conv_ya", "conv_yb"}
    assert all("'w'" in b.reason for b in result.report.blockers)
    assert "would grow the weights" in caplog.text


def test_a_constant_shared_by_readers_cut_alike_stays_one_constant():
    # both branches lose channel 2: both readers of w need the same slice, which they share
    m = two_branches_sharing(weights(16, 8, 3, 3), dead_a=2, dead_b=2)
    result = assert_cut(m, {"conv_ha": (3, 7), "conv_hb": (3, 7), "conv_ya": (7, 16),
                            "conv_yb": (7, 16)})
    (w,) = [t for t in result.model.graph.initializer if t.name.startswith("w") and t.dims[0] == 16]
    assert list(w.dims) == [16, 7, 3, 3] and w.name == "w"
    assert total_bytes(result.model) == total_bytes(m) - 4 * (2 * 3 + 2 + 16 * 9)
    assert result.report.weight_bytes_after == total_bytes(result.model)


def test_equal_constants_are_shared_by_content():
    # two equal zero biases (as an exporter writes one per layer) become one constant
    m = model([conv("x", "w1", "y1", "b1"), conv("x", "w2", "y2", "b2"),
               node("Add", ["y1", "y2"], ["z"])],
              inputs={"x": [1, 3, 4, 4]}, outputs=["z"],
              inits={"w1": weights(4, 3, 1, 1), "w2": weights(4, 3, 1, 1, seed=5),
                     "b1": np.zeros(4, np.float32), "b2": np.zeros(4, np.float32)})
    result = cut(m)
    assert result.report.removed_groups == 0
    feeds = random_feeds(m)
    np.testing.assert_array_equal(run(result.model, feeds)["z"], run(m, feeds)["z"])
    assert [t.name for t in result.model.graph.initializer] == ["w1", "w2", "b1"]
    assert [c for c in result.report.const_changes if c.name == "b2"][0].pruned_size == 0
    assert result.report.weight_bytes_after == total_bytes(m) - 16


def test_a_scalar_and_a_one_element_constant_stay_apart():
    # equal bytes, different shapes: Gather with index 0 drops the axis, with [0] keeps it
    m = model([node("Gather", ["x", "i"], ["y"], axis=1),
               node("Gather", ["x", "j"], ["z"], axis=1)],
              inputs={"x": [1, 3, 4]}, outputs=["y", "z"],
              inits={"j": np.array([0], np.int64), "i": np.array(0, np.int64)})
    result = cut(m)
    assert [list(t.dims) for t in result.model.graph.initializer] == [[1], []]
    feeds = random_feeds(m)
    assert [v.shape for v in run(result.model, feeds).values()] == [(1, 4), (1, 1, 4)]


def test_channelcut_cut_is_the_function_whatever_was_imported_before():
    # The rewrite lived in a submodule named `cut`: importing it (any op rule does) made
    # `channelcut.cut` that module, and `channelcut.cut(...)` a TypeError.
    code = ("import channelcut, channelcut.rewrite, channelcut.ops; "
            "assert callable(channelcut.cut), channelcut.cut; "
            "from channelcut.api import cut; assert channelcut.cut is cut")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def weights_as_inputs() -> onnx.ModelProto:
    """dead_channel_model with every initializer also a graph input, as
    torch.onnx.export(keep_initializers_as_inputs=True) writes it."""
    m = dead_channel_model()
    m.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                         for t in m.graph.initializer)
    return m


def test_initializers_listed_as_inputs_are_inputs_unless_taken_as_constants(caplog):
    original = weights_as_inputs()
    before = original.SerializeToString()
    result = channelcut.cut(original)
    assert result.report.removed_channels == 0  # a caller may feed other weights
    assert result.report.initializer_inputs == ["w1", "b1", "w2", "b2"]
    assert not result.report.constant_initializers
    assert "--constant-initializers" in caplog.text and "'w1'" in caplog.text

    taken = channelcut.cut(original, constant_initializers=True)
    assert original.SerializeToString() == before
    assert taken.report.removed_channels == 2  # conv1's channel 2 and conv2's input 2
    assert taken.report.constant_initializers
    assert [v.name for v in taken.model.graph.input] == ["x"]
    feeds = random_feeds(taken.model)
    np.testing.assert_allclose(run(taken.model, feeds)["y"], run(original, feeds)["y"],
                               rtol=1e-5, atol=1e-5)
    assert "taken as constants" in " ".join(summary_lines(taken.report))


def test_a_layer_with_computed_weights_is_named_with_what_computes_them(caplog):
    """conv1's weights come out of a DequantizeLinear (a quantized model), conv2's are fed:
    neither can be cut, and the report and a warning say why instead of nothing."""
    m = dead_channel_model()
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    quantized = np.round(numpy_helper.to_array(w1) / 0.05).astype(np.int8)
    m.graph.initializer.remove(w1)
    m.graph.initializer.extend([numpy_helper.from_array(quantized, "w1_q"),
                                numpy_helper.from_array(np.float32(0.05), "w1_scale")])
    m.graph.node.insert(0, helper.make_node("DequantizeLinear", ["w1_q", "w1_scale"], ["w1"],
                                            name="dq"))
    onnx.checker.check_model(m, full_check=True)
    result = channelcut.cut(m)
    assert result.report.removed_channels == 0
    assert result.report.computed_weights == {"DequantizeLinear": 1}
    note = " ".join(summary_lines(result.report))
    assert "1 Conv/Gemm layer reads weights that are computed (1 from DequantizeLinear)" in note
    assert "cut the float model, then quantize it" in note and "quantize it" in caplog.text
    assert channelcut.cut(dead_channel_model()).report.computed_weights == {}
