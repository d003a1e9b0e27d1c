"""Spatial rules: pooling, Resize, Pad and reductions work within each channel over other axes,
out[c] <- g(in[c]). A zero channel stays zero when g(0) = 0; a constant channel stays constant
only when g keeps constants (max pooling, averages that do not count padding, nearest and
linear resize, padding with the same value).

Most tests: x[1,4,4,8] -> Conv conv_h (8 channels, channel 2 a zero row with a chosen bias, so
the constant `bias`) -> the ops under test (h in, m out) -> Conv conv_y (6 channels). To see
whether a constant 0.5 survives an op, the tests subtract 0.5 after it: zero (cut) exactly when
the channel is still the constant 0.5 everywhere.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from builders import (
    assert_cut, bias, blockers, conv, find_node, gemm, initializer, model, node, rand, weights,
)

C = 8
X_SHAPE = (1, 4, 4, 8)
ZERO_ROW = 2
HALF = np.float32(0.5)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def conv_op_conv(ops: list[onnx.NodeProto], *, channel_value: float = 0.0,
                 inits: dict | None = None, opset: int = 18,
                 reader: onnx.NodeProto | None = None,
                 reader_weights: np.ndarray | None = None) -> onnx.ModelProto:
    """x -> conv_h (channel 2 the constant `channel_value`) -> ops (h in, m out) -> reader (by
    default conv_y, 1x1 with 6 outputs; its weights are "w2") -> y."""
    return model(
        [conv("x", "w1", "h", "b1"), *ops, reader or conv("m", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(C, 4, 1, 1, zero_rows=[ZERO_ROW]),
               "b1": bias(C, at={ZERO_ROW: channel_value}),
               "w2": weights(6, C, 1, 1, seed=5) if reader_weights is None else reader_weights,
               **(inits or {})},
        opset=opset)


def minus_half(x: str) -> onnx.NodeProto:
    """m = x - 0.5 (the 0.5 initializer is "half")."""
    return node("Sub", [x, "half"], ["m"])


def cut_one(reader: str = "conv_y") -> dict[str, tuple[int, int]]:
    """kept channels when conv_h's channel 2 goes."""
    return {"conv_h": (4, C - 1), reader: (C - 1, 6)}


# --- pooling -----------------------------------------------------------------------------------

@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
])
def test_maxpool_keeps_zero_channels_zero(attrs):
    m = conv_op_conv([node("MaxPool", ["h"], ["m"], **attrs)])
    assert_cut(m, cut_one())


def test_maxpool_with_padding_keeps_a_constant_constant():
    m = conv_op_conv([node("MaxPool", ["h"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                      minus_half("p")], channel_value=0.5, inits={"half": HALF})
    assert_cut(m, cut_one())


def maxpool_with_indices(index_ops: list[onnx.NodeProto], index_output: onnx.ValueInfoProto):
    """conv_h (channel 2 zero) -> MaxPool (m, idx) -> conv_y; idx -> index_ops -> an output."""
    return model(
        [conv("x", "w1", "h"), node("MaxPool", ["h"], ["m", "idx"], kernel_shape=[2, 2]),
         conv("m", "w2", "y"), *index_ops],
        inputs={"x": X_SHAPE}, outputs=["y", index_output],
        inits={"w1": weights(C, 4, 1, 1, zero_rows=[ZERO_ROW]),
               "w2": weights(6, C, 1, 1, seed=5)})


def test_maxpool_with_indices_read_by_a_node_is_a_barrier():
    # Indices count positions over every channel: cutting any channel would change them.
    m = maxpool_with_indices([node("Cast", ["idx"], ["idx_f"], to=TensorProto.FLOAT)],
                             helper.make_tensor_value_info("idx_f", TensorProto.FLOAT,
                                                           [1, C, 3, 7]))
    result = assert_cut(m, {})
    assert blockers(result, "MaxPool")


def test_maxpool_with_indices_as_a_graph_output_is_a_barrier():
    m = maxpool_with_indices([], helper.make_tensor_value_info("idx", TensorProto.INT64,
                                                               [1, C, 3, 7]))
    result = assert_cut(m, {})
    assert blockers(result, "MaxPool")


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_keeps_zero_channels_zero(count_include_pad):
    m = conv_op_conv([node("AveragePool", ["h"], ["m"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                           count_include_pad=count_include_pad)])
    assert_cut(m, cut_one())


@pytest.mark.parametrize("count_include_pad, pads, cut", [
    (0, [1, 1, 1, 1], True),  # padding is left out of the average
    (1, [1, 1, 1, 1], False),  # padding zeros pull border averages below 0.5
    (1, [0, 0, 0, 0], True),  # no padding to count
])
def test_average_pool_of_a_constant(count_include_pad, pads, cut):
    m = conv_op_conv([node("AveragePool", ["h"], ["p"], kernel_shape=[3, 3], pads=pads,
                           count_include_pad=count_include_pad), minus_half("p")],
                     channel_value=0.5, inits={"half": HALF})
    assert_cut(m, cut_one() if cut else {})


@pytest.mark.parametrize("value, subtract, cut", [(0.0, False, True), (0.5, True, True),
                                                  (0.5, False, False)])
def test_global_average_pool(value, subtract, cut):
    ops = [node("GlobalAveragePool", ["h"], ["p" if subtract else "m"])]
    ops += [minus_half("p")] if subtract else []
    m = conv_op_conv(ops, channel_value=value, inits={"half": HALF} if subtract else None)
    assert_cut(m, cut_one() if cut else {})


@pytest.mark.parametrize("pool", [
    node("LpPool", ["h"], ["m"], kernel_shape=[2, 2], strides=[2, 2], p=2),
    node("LpPool", ["h"], ["m"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], p=1),
    node("GlobalLpPool", ["h"], ["m"], p=2),
], ids=["lppool", "lppool-padded", "globallppool"])
@pytest.mark.parametrize("value", [0.5, -0.5])
def test_lp_pool_of_a_constant_is_no_constant_the_cut_can_fold(pool, value):
    """An Lp pool of a constant v is the norm of a window of v's, not v (2x2, p=2: 2|v|):
    only a zero channel stays as it is, so the full cut folds nothing there (bench/fuzz.py
    seed 60 took the pool for a max and folded -0.5 where the original has 1.0)."""
    m = conv_op_conv([pool], channel_value=value)
    assert_cut(m, {}, mode="full")


@pytest.mark.parametrize("pool", [
    node("LpPool", ["h"], ["m"], kernel_shape=[2, 2], strides=[2, 2], p=2),
    node("GlobalLpPool", ["h"], ["m"], p=2),
], ids=["lppool", "globallppool"])
def test_lp_pool_keeps_zero_channels_zero(pool):
    assert_cut(conv_op_conv([pool]), cut_one(), mode="full")


# --- Resize ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_with_scales_keeps_zero_channels_zero(mode):
    m = conv_op_conv([node("Resize", ["h", "", "scales"], ["m"], mode=mode)],
                     inits={"scales": np.array([1, 1, 2, 2], np.float32)})
    assert_cut(m, cut_one())


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_keeps_a_constant_constant(mode):
    m = conv_op_conv([node("Resize", ["h", "", "scales"], ["r"], mode=mode), minus_half("r")],
                     channel_value=0.5,
                     inits={"scales": np.array([1, 1, 2, 2], np.float32), "half": HALF})
    assert_cut(m, cut_one())


CROP_BOX = np.array([0, 0, -0.5, -0.5, 1, 1, 1.5, 1.5], np.float32)  # reaches past H and W


@pytest.mark.parametrize("value, extrapolation, cut", [
    (0.0, 0.0, True),    # zero inside the box, zero outside it
    (0.0, 0.25, False),  # zero inside, 0.25 outside: no constant
    (0.5, 0.5, True),    # the constant is what is written outside
    (0.5, 0.0, False),
])
def test_tf_crop_and_resize_writes_its_extrapolation_value_outside_the_box(
        value, extrapolation, cut):
    m = conv_op_conv([node("Resize", ["h", "roi", "scales"], ["r"], mode="linear",
                           coordinate_transformation_mode="tf_crop_and_resize",
                           extrapolation_value=extrapolation),
                      node("Sub", ["r", "k"], ["m"])],
                     channel_value=value,
                     inits={"roi": CROP_BOX, "scales": np.array([1, 1, 2, 2], np.float32),
                            "k": np.float32(value)})
    assert_cut(m, cut_one() if cut else {})


def test_tf_crop_and_resize_with_a_box_across_the_channels_is_a_barrier():
    roi = np.array([0, 0.5, 0, 0, 1, 1.5, 1, 1], np.float32)  # channel c samples c + 3.5
    m = conv_op_conv([node("Resize", ["h", "roi", "scales"], ["m"], mode="nearest",
                           coordinate_transformation_mode="tf_crop_and_resize")],
                     inits={"roi": roi, "scales": np.array([1, 1, 1, 1], np.float32)})
    result = assert_cut(m, {})
    assert [b.reason for b in blockers(result, "Resize")] == [
        "Resize crops along the channel axis (tf_crop_and_resize)"]


@pytest.mark.parametrize("opset", [13, 18])
def test_resize_with_sizes_rewrites_the_channel_size(opset):
    m = conv_op_conv([node("Resize", ["h", "", "", "sizes"], ["m"], mode="nearest")],
                     inits={"sizes": i64(1, C, 8, 16)}, opset=opset)
    result = assert_cut(m, cut_one())
    resize = find_node(result.model, "resize_m")
    np.testing.assert_array_equal(initializer(result.model, resize.input[3]), [1, C - 1, 8, 16])


# --- Pad ---------------------------------------------------------------------------------------

PADS = [0, 0, 1, 2, 0, 0, 1, 2]  # 1 row and 2 columns before and after


@pytest.mark.parametrize("value, cut", [(0.0, True), (1.0, False)])
def test_pad_of_a_zero_channel_is_zero_iff_padding_with_zero(value, cut):
    m = conv_op_conv([node("Pad", ["h", "pads", "value"], ["m"])],
                     inits={"pads": i64(*PADS), "value": np.float32(value)})
    assert_cut(m, cut_one() if cut else {})


@pytest.mark.parametrize("value, cut", [(0.5, True), (0.0, False)])
def test_pad_of_a_constant_stays_constant_only_with_the_same_value(value, cut):
    m = conv_op_conv([node("Pad", ["h", "pads", "value"], ["p"]), minus_half("p")],
                     channel_value=0.5,
                     inits={"pads": i64(*PADS), "value": np.float32(value), "half": HALF})
    assert_cut(m, cut_one() if cut else {})


def test_pad_without_value_pads_with_zero():
    m = conv_op_conv([node("Pad", ["h", "pads"], ["m"])], inits={"pads": i64(*PADS)})
    assert_cut(m, cut_one())


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_pad_copying_the_border_keeps_a_constant(mode):
    m = conv_op_conv([node("Pad", ["h", "pads"], ["p"], mode=mode), minus_half("p")],
                     channel_value=0.5, inits={"pads": i64(*PADS), "half": HALF})
    assert_cut(m, cut_one())


@pytest.mark.parametrize("value, cut", [(0.0, True), (1.0, False)])
def test_pad_attributes_opset_2(value, cut):
    m = conv_op_conv([node("Pad", ["h"], ["m"], pads=PADS, value=value)], opset=2)
    assert_cut(m, cut_one() if cut else {})


def test_pad_with_axes_input():
    m = conv_op_conv([node("Pad", ["h", "pads", "", "axes"], ["m"])],
                     inits={"pads": i64(1, 2, 1, 2), "axes": i64(2, 3)})
    assert_cut(m, cut_one())


def test_pad_of_the_channel_axis_adds_kept_channels_of_the_fill():
    """One zero channel before and after conv_h's 8: they stay (the Pad makes them), its
    zero channel 2 (position 3 after the Pad) still goes, and the Pad is unchanged. A
    reinsertion writes such a Pad: a cut of the cut model sees through it."""
    m = conv_op_conv([node("Pad", ["h", "pads"], ["m"])],
                     inits={"pads": i64(0, 1, 0, 0, 0, 1, 0, 0)},
                     reader_weights=weights(6, C + 2, 1, 1, seed=5))
    assert_cut(m, {"conv_h": (4, C - 1), "conv_y": (C + 1, 6)})


def test_pad_of_the_channel_axis_in_edge_mode_is_a_barrier():
    m = conv_op_conv([node("Pad", ["h", "pads"], ["m"], mode="edge")],
                     inits={"pads": i64(0, 1, 0, 0, 0, 1, 0, 0)},
                     reader_weights=weights(6, C + 2, 1, 1, seed=5))
    result = assert_cut(m, {})
    assert blockers(result, "Pad")


# --- reductions --------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_over_space_keepdims(opset):
    if opset >= 18:
        reduce = node("ReduceMean", ["h", "axes"], ["m"], keepdims=1)
        inits = {"axes": i64(2, 3)}
    else:
        reduce = node("ReduceMean", ["h"], ["m"], axes=[2, 3], keepdims=1)
        inits = {}
    assert_cut(conv_op_conv([reduce], inits=inits, opset=opset), cut_one())


def test_reduce_mean_over_space_without_keepdims_then_gemm():
    m = conv_op_conv([node("ReduceMean", ["h", "axes"], ["m"], keepdims=0)],
                     inits={"axes": i64(-1, -2)}, reader=gemm("m", "w2", "y"),
                     reader_weights=weights(C, 6, seed=5))
    result = assert_cut(m, cut_one("gemm_y"))
    assert initializer(result.model, "w2").shape == (C - 1, 6)


def test_reduce_sum_of_a_constant_is_the_constant_times_the_count():
    # 0.5 summed over 4 x 8 positions is 16.
    m = conv_op_conv([node("ReduceSum", ["h", "axes"], ["r"], keepdims=1),
                      node("Sub", ["r", "sixteen"], ["m"])], channel_value=0.5,
                     inits={"axes": i64(2, 3), "sixteen": np.float32(16)})
    assert_cut(m, cut_one())


def batch_reduction(ops: list[onnx.NodeProto], batch: int | str, value: float,
                    inits: dict) -> onnx.ModelProto:
    """x[batch, 4, 4, 8] -> conv_h (channel 2 the constant `value`) -> ops (h in, m out,
    reducing over the batch and space to [1, 8, 1, 1]) -> conv_y."""
    return model([conv("x", "w1", "h", "b1"), *ops, conv("m", "w2", "y")],
                 inputs={"x": (batch, 4, 4, 8)}, outputs={"y": (1, 6, 1, 1)},
                 inits={"w1": weights(C, 4, 1, 1, zero_rows=[ZERO_ROW]),
                        "b1": bias(C, at={ZERO_ROW: value}), "w2": weights(6, C, 1, 1, seed=5),
                        **inits}, opset=13)


@pytest.mark.parametrize("batch, cut", [(1, True), ("N", False)])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare",
                                "ReduceLogSumExp"])
def test_a_sum_over_a_dynamic_batch_is_no_constant(op, batch, cut):
    """A constant summed over the batch and space is count x v only at one batch size: with
    a fixed batch the full cut folds it; with batch N (the analysis assumes 1) it must not
    (it folded 0.5 x 16 where a batch of 3 sums to 0.5 x 48)."""
    inputs = ["h", "axes"] if op == "ReduceSum" else ["h"]
    attrs = {} if op == "ReduceSum" else {"axes": [0, 2, 3]}
    m = batch_reduction([node(op, inputs, ["m"], keepdims=1, **attrs)], batch, 0.5,
                        {"axes": i64(0, 2, 3)} if op == "ReduceSum" else {})
    feeds = {"x": rand(1 if batch == 1 else 3, 4, 4, 8)}
    assert_cut(m, cut_one() if cut else {}, mode="full", feeds=feeds)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceL2"])
def test_a_zero_or_an_average_over_a_dynamic_batch_stays_known(op):
    """What is the same at any count stays known: a zero channel's sum, a constant's mean."""
    inputs = ["h", "axes"] if op == "ReduceSum" else ["h"]
    attrs = {} if op == "ReduceSum" else {"axes": [0, 2, 3]}
    value = 0.5 if op == "ReduceMean" else 0.0
    ops = [node(op, inputs, ["r"], keepdims=1, **attrs), node("Sub", ["r", "v"], ["m"])]
    m = batch_reduction(ops, "N", value, {"v": np.float32(value),
                                          **({"axes": i64(0, 2, 3)} if op == "ReduceSum"
                                             else {})})
    assert_cut(m, cut_one(), mode="full", feeds={"x": rand(3, 4, 4, 8)})


def test_a_norms_bound_over_a_dynamic_batch_counts_no_assumed_batch():
    """ReduceL1 of Sigmoid values (each below 1) over the batch and space is below the count:
    16 at the assumed batch of 1, so Relu(L1 - 20) looked zero; a batch of 3 sums to ~47."""
    ops = [node("Sigmoid", ["h"], ["s"]), node("ReduceL1", ["s"], ["l1"], axes=[0, 2, 3],
                                                keepdims=1),
           node("Sub", ["l1", "twenty"], ["d"]), node("Relu", ["d"], ["m"])]
    m = batch_reduction(ops, "N", 5.0, {"twenty": np.float32(20)})
    result = assert_cut(m, None, mode="full", feeds={"x": rand(3, 4, 4, 8)})
    assert result.report.removed_channels == 0


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_over_channels_is_a_barrier(keepdims):
    reader = node("Mul", ["m", "w2"], ["y"])  # reads every element of the mean
    m = conv_op_conv([node("ReduceMean", ["h", "axes"], ["m"], keepdims=keepdims)],
                     inits={"axes": i64(1)}, reader=reader,
                     reader_weights=np.float32(2.0))
    result = assert_cut(m, {})
    assert blockers(result, "ReduceMean")
