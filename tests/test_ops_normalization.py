"""Rules of the normalizations: per-channel ones (BatchNormalization, InstanceNormalization) carry
channels and their constant values; ones that mix values along an axis (Softmax, LogSoftmax,
Hardmax, LpNormalization, LayerNormalization) are transparent over other axes and barriers over
the channel axis; Dropout at inference is the identity."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from builders import (assert_cut, bias, const_input, conv, initializer, model, node, rand, relu,
                      weights)

X = {"x": [1, 3, 8, 8]}
DEAD = [1, 4, 6]


def producer(c: int = 8, dead=DEAD):
    """x -> Conv3x3 pad1 3->c = y, the channels in `dead` exactly zero (zero rows and bias)."""
    w, b = weights(c, 3, 3, 3, zero_rows=dead, seed=1), bias(c, at={i: 0.0 for i in dead}, seed=1)
    return [conv("x", "w0", "y", "b0", pads=1)], {"w0": w, "b0": b}


def head(x: str, zero_cols=(), c: int = 8):
    """x -> Conv1x1 c->4 (output), not reading the channels in `zero_cols`."""
    return [conv(x, "wh", "out")], {"wh": weights(4, c, 1, 1, zero_cols=zero_cols, seed=2)}


# --- BatchNormalization ------------------------------------------------------------------------

def batch_norm_params(c: int = 8):
    """Channel 1: (0 - mean) / std * scale + B < 0, dies in the Relu. Channel 4: > 0, a live
    constant. Channel 6: mean 0 and B 0, exactly zero."""
    scale, b = rand(c, seed=3, low=0.5, high=2.0), rand(c, seed=4)
    mean, var = rand(c, seed=5), rand(c, seed=6, low=0.5, high=2.0)
    mean[1], b[1] = 0.5, -0.25
    mean[4], b[4] = -0.5, 0.25
    mean[6], b[6] = 0.0, 0.0
    return {"scale": scale, "bn_b": b, "mean": mean, "var": var}


def test_batch_norm_carries_constants_into_relu():
    nodes, inits = producer()
    hn, hi = head("a")
    nodes += [node("BatchNormalization", ["y", "scale", "bn_b", "mean", "var"], ["bn"]),
              relu("bn", "a"), *hn]
    m = model(nodes, X, ["out"], inits | batch_norm_params() | hi)
    result = assert_cut(m, {"conv_y": (3, 6), "conv_out": (6, 4)}, groups=2)
    params = batch_norm_params()
    for name in ("scale", "bn_b", "mean", "var"):
        np.testing.assert_array_equal(initializer(result.model, name),
                                      np.delete(params[name], [1, 6]))


def test_batch_norm_without_relu_keeps_nonzero_constants():
    nodes, inits = producer()
    hn, hi = head("bn")
    nodes += [node("BatchNormalization", ["y", "scale", "bn_b", "mean", "var"], ["bn"]), *hn]
    m = model(nodes, X, ["out"], inits | batch_norm_params() | hi)
    assert_cut(m, {"conv_y": (3, 7), "conv_out": (7, 4)}, groups=1)  # only channel 6 is zero


def test_batch_norm_with_computed_parameters_is_a_barrier():
    nodes, inits = producer()
    hn, hi = head("a")
    params = batch_norm_params()
    nodes += [node("BatchNormalization", ["y", "scale", "bn_b", "mean_in", "var"], ["bn"]),
              relu("bn", "a"), *hn]
    del params["mean"]
    m = model(nodes, X | {"mean_in": [8]}, ["out"], inits | params | hi)
    result = assert_cut(m, {}, feeds={"x": rand(1, 3, 8, 8, seed=9),
                                      "mean_in": batch_norm_params()["mean"]})
    assert [(b.op_type, b.channels) for b in result.report.blockers] == [
        ("BatchNormalization", 3)]


def slimmed_batch_norm(var_at_zero_scale: float | None = None):
    """Network slimming: live conv_y (8 channels) -> BatchNormalization whose scale is zero at
    channels 2 (B 0), 5 (B -0.5) and 7 (B 0.7) -> Relu -> conv_out. The BN outputs B there for
    every input; Relu makes channels 2 and 5 zero, channel 7 stays the constant 0.7.
    `var_at_zero_scale`: the running variance of those channels."""
    nodes, inits = producer(dead=())
    hn, hi = head("a")
    params = batch_norm_params()
    params["scale"][[2, 5, 7]] = 0.0
    params["bn_b"][[2, 5, 7]] = [0.0, -0.5, 0.7]
    if var_at_zero_scale is not None:
        params["var"][[2, 5, 7]] = var_at_zero_scale
    nodes += [node("BatchNormalization", ["y", "scale", "bn_b", "mean", "var"], ["bn"]),
              relu("bn", "a"), *hn]
    return model(nodes, X, ["out"], inits | params | hi), params


@pytest.mark.parametrize("mode, cut_channels", [("zero", [2, 5]), ("full", [2, 5, 7])])
def test_batch_norm_zero_scale_cuts_like_a_zero_conv_row(mode, cut_channels):
    m, params = slimmed_batch_norm()
    n = 8 - len(cut_channels)
    result = assert_cut(m, {"conv_y": (3, n), "conv_out": (n, 4)}, groups=len(cut_channels),
                        mode=mode)
    for name in ("scale", "bn_b", "mean", "var"):
        np.testing.assert_array_equal(initializer(result.model, name),
                                      np.delete(params[name], cut_channels))


def test_batch_norm_zero_scale_with_zero_variance_plus_epsilon_is_kept():
    # sqrt(var + eps) = 0: (x - mean) / 0 * 0 is NaN, not B
    m, _ = slimmed_batch_norm(var_at_zero_scale=-1e-5)
    assert_cut(m, {})
    assert_cut(m, {}, mode="full")

@pytest.mark.parametrize("param", ["bn_b", "mean", "scale"])
def test_batch_norm_parameter_beyond_huge_marks_only_its_own_channel(param):
    """A huge parameter in channel 3 (bias 1e30: an ordinary input times it overflows) may make
    NaN or Inf there only: the zero-scale channels 2 and 5 still cut (found by bench/fuzz.py
    seed 43: every channel was taken as possibly NaN, so a second cut, without that channel's
    other side, removed more)."""
    m, params = slimmed_batch_norm()
    params[param][3] = 1e30
    for init in m.graph.initializer:
        if init.name == param:
            init.CopyFrom(helper.make_tensor(param, TensorProto.FLOAT, [8], params[param]))
    assert_cut(m, {"conv_y": (3, 6), "conv_out": (6, 4)}, groups=2)


# --- InstanceNormalization ---------------------------------------------------------------------

def test_instance_norm_of_a_zero_channel_is_its_bias():
    nodes, inits = producer()
    hn, hi = head("a")
    b = bias(8, at={1: 0.0, 4: 0.3, 6: -0.2}, seed=7)
    nodes += [node("InstanceNormalization", ["y", "in_scale", "in_b"], ["inorm"]),
              relu("inorm", "a"), *hn]
    m = model(nodes, X, ["out"], inits | {"in_scale": rand(8, seed=8), "in_b": b} | hi)
    result = assert_cut(m, {"conv_y": (3, 6), "conv_out": (6, 4)}, groups=2)
    np.testing.assert_array_equal(initializer(result.model, "in_b"), np.delete(b, [1, 6]))
    assert initializer(result.model, "in_scale").shape == (6,)


def test_instance_norm_output_channels_unread_are_cut():
    nodes, inits = producer(dead=[])
    hn, hi = head("inorm", zero_cols=[0, 7])
    nodes += [node("InstanceNormalization", ["y", "in_scale", "in_b"], ["inorm"]), *hn]
    m = model(nodes, X, ["out"], inits | {"in_scale": rand(8, seed=8), "in_b": rand(8)} | hi)
    assert_cut(m, {"conv_y": (3, 6), "conv_out": (6, 4)}, groups=2)


# --- ops that mix values along an axis ---------------------------------------------------------

MIXING = [("Softmax", {}), ("LogSoftmax", {}), ("Hardmax", {}), ("LpNormalization", {"p": 2})]


def mixing(op: str, attrs: dict, axis: int, opset: int = 18, dead=()):
    """x -> Conv (channels `dead` zero) -> `op` along `axis` -> head not reading channels 2, 5."""
    nodes, inits = producer(dead=dead)
    hn, hi = head("mixed", zero_cols=[2, 5])
    nodes += [node(op, ["y"], ["mixed"], axis=axis, **attrs), *hn]
    return model(nodes, X, ["out"], inits | hi, opset=opset)


@pytest.mark.parametrize("op, attrs", MIXING)
@pytest.mark.parametrize("axis", [-1, 2])
def test_mixing_over_a_spatial_axis_is_transparent(op, attrs, axis):
    assert_cut(mixing(op, attrs, axis), {"conv_y": (3, 6), "conv_out": (6, 4)}, groups=2)


@pytest.mark.parametrize("op, attrs", MIXING)
@pytest.mark.parametrize("axis", [1, -3])
def test_mixing_over_the_channel_axis_is_a_barrier(op, attrs, axis):
    # The zero channels 1 and 6 before it stay, and the channels 2 and 5 the head does not
    # read go neither: the barrier keeps all four (the report says so).
    result = assert_cut(mixing(op, attrs, axis, dead=[1, 6]), {})
    assert [(b.op_type, b.channels) for b in result.report.blockers] == [(op, 4)]
    assert "channel axis" in result.report.blockers[0].reason


def test_softmax_does_not_carry_a_zero_channel():
    # softmax over W of a zero row is 1/W, not zero: the channel stays.
    assert_cut(mixing("Softmax", {}, axis=-1, dead=[3]), {"conv_y": (3, 6), "conv_out": (6, 4)},
               groups=2)


@pytest.mark.parametrize("axis, kept", [(1, {}), (2, {"conv_y": (3, 6), "conv_out": (6, 4)})])
def test_softmax_opset_11_flattens_from_its_axis(axis, kept):
    # Before opset 13 Softmax normalizes over every axis from `axis` on: axis 1 takes channels.
    assert_cut(mixing("Softmax", {}, axis=axis, opset=11), kept)


# --- LayerNormalization ------------------------------------------------------------------------

def layer_norm(axis: int, dead=(), stats: str | None = None):
    """x -> Conv (channels `dead` zero) -> LayerNormalization from `axis` on -> head not reading
    channels 2, 5. `stats`: "output" makes its Mean output a graph output, "node" feeds it to an
    Identity whose output is one."""
    nodes, inits = producer(dead=dead)
    hn, hi = head("ln", zero_cols=[2, 5])
    shape = [1, 8, 8, 8][axis:]
    outputs = ["out"]
    nodes += [node("LayerNormalization", ["y", "ln_scale", "ln_b"],
                   ["ln", "ln_mean"] if stats else ["ln"], axis=axis), *hn]
    if stats == "output":
        outputs.append("ln_mean")
    elif stats == "node":
        nodes.append(node("Identity", ["ln_mean"], ["mean_copy"]))
        outputs.append("mean_copy")
    return model(nodes, X, outputs,
                 inits | hi | {"ln_scale": rand(*shape, seed=11), "ln_b": rand(*shape, seed=12)})


def test_layer_norm_over_spatial_axes_is_transparent():
    assert_cut(layer_norm(axis=2), {"conv_y": (3, 6), "conv_out": (6, 4)}, groups=2)


def test_layer_norm_over_the_channel_axis_is_a_barrier():
    # the zero channels 1 and 6 before it and the two its reader ignores
    result = assert_cut(layer_norm(axis=1, dead=[1, 6]), {})
    assert [(b.op_type, b.channels) for b in result.report.blockers] == [
        ("LayerNormalization", 4)]


def test_layer_norm_with_its_statistics_read_by_a_node_is_a_barrier():
    result = assert_cut(layer_norm(axis=2, dead=[1, 6], stats="node"), {})
    assert [(b.op_type, b.channels) for b in result.report.blockers] == [
        ("LayerNormalization", 2)]
    assert "depends on all channels" in result.report.blockers[0].reason


def test_layer_norm_with_its_statistics_as_a_graph_output_is_a_barrier():
    result = assert_cut(layer_norm(axis=2, dead=[1, 6], stats="output"), {})
    assert [(b.op_type, b.channels) for b in result.report.blockers] == [
        ("LayerNormalization", 2)]


def test_layer_norm_slices_nothing_of_its_spatial_scale():
    result = assert_cut(layer_norm(axis=2), {"conv_y": (3, 6), "conv_out": (6, 4)}, groups=2)
    assert initializer(result.model, "ln_scale").shape == (8, 8)


# --- Dropout -----------------------------------------------------------------------------------

def test_dropout_at_inference_passes_zero_channels():
    nodes, inits = producer()
    hn, hi = head("dropped")
    nodes += [node("Dropout", ["y", "ratio"], ["dropped"]), *hn]
    m = model(nodes, X, ["out"], inits | hi | {"ratio": np.array(0.3, np.float32)})
    result = assert_cut(m, {"conv_y": (3, 5), "conv_out": (5, 4)}, groups=3)
    assert const_input(result.model, "conv_out").shape == (4, 5, 1, 1)


def dropout_with_mask(mask_as_graph_output: bool):
    nodes, inits = producer()
    hn, hi = head("dropped")
    nodes += [node("Dropout", ["y"], ["dropped", "mask"]), *hn]
    if mask_as_graph_output:
        mask = helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 8, 8, 8])
    else:
        nodes.append(node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT))
        mask = "mask_f"
    return model(nodes, X, ["out", mask], inits | hi)


def test_dropout_with_its_mask_read_by_a_node_is_a_barrier():
    result = assert_cut(dropout_with_mask(mask_as_graph_output=False), {})
    assert [(b.op_type, b.channels) for b in result.report.blockers] == [("Dropout", 3)]


def test_dropout_with_its_mask_as_a_graph_output_is_a_barrier():
    result = assert_cut(dropout_with_mask(mask_as_graph_output=True), {})
    assert [(b.op_type, b.channels) for b in result.report.blockers] == [("Dropout", 3)]
