"""Whole network blocks (plain conv stacks, ResNet, DenseNet, MobileNetV2, SE, MLP, ...) with
chosen dead channels: the exact channels cut per layer, and ONNX Runtime outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import channelcut
from builders import (assert_cut, attribute, bias, const_input, conv, gemm, matmul, model, node,
                      relu, weights)

X = {"x": [1, 3, 8, 8]}


def zero_rows(w: np.ndarray, rows, b: np.ndarray | None = None, value: float = 0.0):
    """Rows of `w` zero; their bias entries `value` (zero, or negative to die in a Relu)."""
    w[list(rows)] = 0.0
    if b is not None:
        b[list(rows)] = value


# --- the seed's three-conv network -------------------------------------------------------------

def seed_network(c: int = 64):
    """Conv3x3 pad1 3->c + Relu, Conv1x1 pad1 c->c + Relu, Conv2x2 pad1 c->c + Relu (output)."""
    w1, b1 = weights(c, 3, 3, 3, seed=1), bias(c, seed=1)
    w2, b2 = weights(c, c, 1, 1, seed=2), bias(c, seed=2)
    w3, b3 = weights(c, c, 2, 2, seed=3), bias(c, seed=3)
    return (w1, b1, w2, b2, w3, b3), lambda: model(
        [conv("x", "w1", "y1", "b1", pads=1), relu("y1", "a1"),
         conv("a1", "w2", "y2", "b2", pads=1), relu("y2", "a2"),
         conv("a2", "w3", "y3", "b3", pads=1), relu("y3", "out")],
        X, ["out"], {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3})


def test_seed_network_zero_rows_negative_biases_and_unread_channels():
    (w1, b1, w2, b2, w3, b3), build = seed_network()
    zero_rows(w1, [1, 9], b1, 0.0)  # exactly zero
    zero_rows(w1, [5], b1, -0.5)  # Relu of a negative constant
    zero_rows(w2, [0, 7], b2, -1.0)  # zero rows, negative bias: zero after Relu
    zero_rows(w2, [3], b2, 0.5)  # a non-zero constant into the padded conv3: stays
    w3[:, [10, 20]] = 0.0  # conv2's channels 10 and 20 are read by nobody
    zero_rows(w3, [4], b3, -1.0)  # dead, but a graph output keeps it

    result = assert_cut(build(), {"conv_y1": (3, 61), "conv_y2": (61, 60), "conv_y3": (60, 64)},
                        groups=7)
    assert [(b.op_type, b.node, b.channels) for b in result.report.blockers] == [
        ("graph output", "out", 1)]
    assert const_input(result.model, "conv_y2").shape == (60, 61, 1, 1)
    assert const_input(result.model, "conv_y3").shape == (64, 60, 2, 2)


def test_seed_network_without_dead_channels_is_unchanged():
    _, build = seed_network(16)
    result = assert_cut(build(), {})
    assert result.report.blockers == []
    assert result.report.weight_bytes_after == result.report.weight_bytes_before


# --- residual blocks ---------------------------------------------------------------------------

def stem(c: int = 16, dead=(), seed: int = 10):
    """x -> Conv3x3 3->c + Relu = h, with the channels in `dead` exactly zero."""
    w, b = weights(c, 3, 3, 3, seed=seed), bias(c, seed=seed)
    zero_rows(w, dead, b)
    return [conv("x", "ws", "s", "bs", pads=1), relu("s", "h")], {"ws": w, "bs": b}


def basic_block(skip_dead, branch_dead, inner_dead=(4,), c: int = 16):
    """ResNet basic block: h + Conv3x3(Relu(Conv3x3(h))) -> Relu -> Conv1x1 head (output)."""
    nodes, inits = stem(c, skip_dead)
    w1, b1 = weights(c, c, 3, 3, seed=11), bias(c, seed=11)
    w2, b2 = weights(c, c, 3, 3, seed=12), bias(c, seed=12)
    zero_rows(w1, inner_dead, b1, -1.0)
    zero_rows(w2, branch_dead, b2)
    nodes += [conv("h", "w1", "y1", "b1", pads=1), relu("y1", "a1"),
              conv("a1", "w2", "y2", "b2", pads=1), node("Add", ["h", "y2"], ["sum"]),
              relu("sum", "r"), conv("r", "wh", "out")]
    inits |= {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "wh": weights(8, c, 1, 1, seed=13)}
    return model(nodes, X, ["out"], inits)


def test_basic_block_channels_dead_on_both_sides_of_the_residual_are_cut():
    m = basic_block(skip_dead=[2, 11], branch_dead=[2, 11])
    assert_cut(m, {"conv_s": (3, 14), "conv_y1": (14, 15), "conv_y2": (15, 14),
                   "conv_out": (14, 8)}, groups=3)


def test_basic_block_branch_dead_but_skip_alive_keeps_the_add_channels():
    m = basic_block(skip_dead=[], branch_dead=[2, 11])
    # Only the branch's inner channel 4 goes; the Add still needs channels 2 and 11.
    result = assert_cut(m, {"conv_y1": (16, 15), "conv_y2": (15, 16)}, groups=1)
    assert result.report.blockers == []


def test_basic_block_skip_dead_but_branch_alive_keeps_the_add_channels():
    m = basic_block(skip_dead=[2, 11], branch_dead=[], inner_dead=())
    # conv_y1 reads the zero skip channels, but they are coupled to the live Add output.
    assert_cut(m, {})


def bottleneck(skip_dead, last_dead, mid_dead=(3,), c: int = 16, mid: int = 8):
    """ResNet bottleneck: h + Conv1x1(Relu(Conv3x3(Relu(Conv1x1(h))))) -> Relu -> head."""
    nodes, inits = stem(c, skip_dead)
    w1, b1 = weights(mid, c, 1, 1, seed=21), bias(mid, seed=21)
    w2, b2 = weights(mid, mid, 3, 3, seed=22), bias(mid, seed=22)
    w3, b3 = weights(c, mid, 1, 1, seed=23), bias(c, seed=23)
    zero_rows(w2, mid_dead, b2, -0.25)
    zero_rows(w3, last_dead, b3)
    nodes += [conv("h", "w1", "y1", "b1"), relu("y1", "a1"),
              conv("a1", "w2", "y2", "b2", pads=1), relu("y2", "a2"),
              conv("a2", "w3", "y3", "b3"), node("Add", ["y3", "h"], ["sum"]),
              relu("sum", "r"), conv("r", "wh", "out")]
    inits |= {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3,
              "wh": weights(8, c, 1, 1, seed=24)}
    return model(nodes, X, ["out"], inits)


def test_bottleneck_channels_dead_on_both_sides_of_the_residual_are_cut():
    result = assert_cut(bottleneck(skip_dead=[0, 7, 15], last_dead=[0, 7, 15]),
                        {"conv_s": (3, 13), "conv_y1": (13, 8), "conv_y2": (8, 7),
                         "conv_y3": (7, 13), "conv_out": (13, 8)}, groups=4)
    w3 = const_input(result.model, "conv_y3")
    assert w3.shape == (13, 7, 1, 1)


def test_bottleneck_only_branch_dead_keeps_the_residual_channels():
    assert_cut(bottleneck(skip_dead=[], last_dead=[0, 7, 15]),
               {"conv_y2": (8, 7), "conv_y3": (7, 16)}, groups=1)


# --- DenseNet concat ---------------------------------------------------------------------------

def test_densenet_concat_cuts_each_part_at_its_offset():
    nodes, inits = stem(8, dead=[1, 6])
    wg, bg = weights(8, 8, 3, 3, seed=31), bias(8, seed=31)
    zero_rows(wg, [0, 7], bg, -2.0)
    wr = weights(4, 16, 1, 1, seed=32)
    nodes += [conv("h", "wg", "yg", "bg", pads=1), relu("yg", "g"),
              node("Concat", ["h", "g"], ["cat"], axis=1), conv("cat", "wr", "out")]
    m = model(nodes, X, ["out"], inits | {"wg": wg, "bg": bg, "wr": wr})

    result = assert_cut(m, {"conv_s": (3, 6), "conv_yg": (6, 6), "conv_out": (12, 4)}, groups=4)
    kept = [0, 2, 3, 4, 5, 7] + [8 + c for c in range(1, 7)]
    np.testing.assert_array_equal(const_input(result.model, "conv_out"), wr[:, kept])
    np.testing.assert_array_equal(const_input(result.model, "conv_yg"),
                                  np.delete(np.delete(wg, [0, 7], axis=0), [1, 6], axis=1))


# --- MobileNetV2 inverted residual -------------------------------------------------------------

def clip6(x: str, y: str) -> onnx.NodeProto:
    return node("Clip", [x, "zero", "six"], [y])


def inverted_residual(expand_dead, dw_bias: float = -0.5):
    """h -> 1x1 expand 8->32 (BN folded) -> Relu6 -> 3x3 depthwise -> Relu6 -> 1x1 project
    32->8, + h -> 1x1 head."""
    nodes, inits = stem(8)
    we, be = weights(32, 8, 1, 1, seed=41), bias(32, seed=41)
    wd, bd = weights(32, 1, 3, 3, seed=42), bias(32, seed=42)
    zero_rows(we, expand_dead, be, -1.0)
    bd[list(expand_dead)] = dw_bias
    nodes += [conv("h", "we", "ye", "be"), clip6("ye", "ae"),
              conv("ae", "wd", "yd", "bd", pads=1, group=32), clip6("yd", "ad"),
              conv("ad", "wp", "yp", "bp"), node("Add", ["h", "yp"], ["sum"]),
              conv("sum", "wh", "out")]
    inits |= {"we": we, "be": be, "wd": wd, "bd": bd,
              "wp": weights(8, 32, 1, 1, seed=43), "bp": bias(8, seed=43),
              "wh": weights(4, 8, 1, 1, seed=44),
              "zero": np.array(0, np.float32), "six": np.array(6, np.float32)}
    return model(nodes, X, ["out"], inits)


def test_inverted_residual_dead_expand_channels_shrink_the_depthwise_group():
    result = assert_cut(inverted_residual([3, 4, 17]),
                        {"conv_ye": (8, 29), "conv_yd": (29, 29), "conv_yp": (29, 8)}, groups=3)
    assert attribute(result.model, "conv_yd", "group") == 29
    assert const_input(result.model, "conv_yd").shape == (29, 1, 3, 3)


def test_inverted_residual_depthwise_bias_revives_the_channel():
    # Depthwise of a zero channel is its bias: 0.5 survives the Relu6, so the projection
    # reads a non-zero constant and (in the zero-only cut) the channel stays.
    assert_cut(inverted_residual([3], dw_bias=0.5), {})


# --- squeeze and excitation --------------------------------------------------------------------

def test_squeeze_excitation_dead_channel_goes_through_the_gate():
    nodes, inits = stem(16, dead=[5])
    w1, b1 = weights(4, 16, 1, 1, seed=51), bias(4, seed=51)
    zero_rows(w1, [2], b1, -1.0)
    nodes += [node("GlobalAveragePool", ["h"], ["pooled"]),
              conv("pooled", "w1", "f1", "b1"), relu("f1", "a1"),
              conv("a1", "w2", "f2", "b2"), node("Sigmoid", ["f2"], ["gate"]),
              node("Mul", ["h", "gate"], ["scaled"]), conv("scaled", "wh", "out")]
    inits |= {"w1": w1, "b1": b1, "w2": weights(16, 4, 1, 1, seed=52), "b2": bias(16, seed=52),
              "wh": weights(8, 16, 1, 1, seed=53)}
    m = model(nodes, X, ["out"], inits)
    assert_cut(m, {"conv_s": (3, 15), "conv_f1": (15, 3), "conv_f2": (3, 15),
                   "conv_out": (15, 8)}, groups=2)


# --- Flatten -> Gemm ---------------------------------------------------------------------------

def test_flatten_gemm_drops_weight_columns_in_blocks_of_h_times_w():
    w, b = weights(8, 3, 3, 3, seed=61), bias(8, seed=61)
    zero_rows(w, [2, 5], b, -1.0)
    wg = weights(10, 8 * 16, seed=62)
    m = model([conv("x", "w", "y", "b", pads=1, strides=[2, 2]), relu("y", "a"),
               node("Flatten", ["a"], ["flat"], axis=1), gemm("flat", "wg", "out", "bg", trans_b=1)],
              X, ["out"], {"w": w, "b": b, "wg": wg, "bg": bias(10, seed=62)})
    result = assert_cut(m, {"conv_y": (3, 6), "gemm_out": (96, 10)}, groups=2)
    dropped = np.r_[2 * 16:3 * 16, 5 * 16:6 * 16]
    np.testing.assert_array_equal(const_input(result.model, "gemm_out"),
                                  np.delete(wg, dropped, axis=1))


# --- transformer MLP ---------------------------------------------------------------------------

def mlp(activation: list[onnx.NodeProto], opset: int) -> onnx.ModelProto:
    """[1, T, D] -> MatMul D->4D -> Add bias -> activation (h -> act) -> MatMul 4D->D -> Add."""
    d, hidden, dead = 8, 32, [3, 10, 20]
    w1, b1 = weights(d, hidden, zero_cols=dead, seed=71), bias(hidden, at={c: 0.0 for c in dead})
    nodes = [matmul("x", "w1", "m1"), node("Add", ["m1", "b1"], ["h"]), *activation,
             matmul("act", "w2", "m2"), node("Add", ["m2", "b2"], ["out"])]
    inits = {"w1": w1, "b1": b1, "w2": weights(hidden, d, seed=72), "b2": bias(d, seed=72),
             "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32),
             "sqrt2": np.array(np.sqrt(2.0), np.float32)}
    used = {i for n in nodes for i in n.input}
    return model(nodes, {"x": [1, 4, d]}, ["out"],
                 {k: v for k, v in inits.items() if k in used}, opset=opset)


def test_transformer_mlp_gelu_op_hidden_channels_cut():
    m = mlp([node("Gelu", ["h"], ["act"])], opset=20)
    result = assert_cut(m, {"matmul_m1": (8, 29), "matmul_m2": (29, 8)}, groups=3)
    assert initializer_shape(result.model, "b1") == (29,)


def test_transformer_mlp_erf_gelu_decomposition_hidden_channels_cut():
    m = mlp([node("Div", ["h", "sqrt2"], ["scaled"]), node("Erf", ["scaled"], ["erf"]),
             node("Add", ["erf", "one"], ["shifted"]), node("Mul", ["h", "shifted"], ["prod"]),
             node("Mul", ["prod", "half"], ["act"])], opset=18)
    assert_cut(m, {"matmul_m1": (8, 29), "matmul_m2": (29, 8)}, groups=3)


def initializer_shape(m: onnx.ModelProto, name: str) -> tuple[int, ...]:
    return next(tuple(t.dims) for t in m.graph.initializer if t.name == name)


# --- where channels are dead -------------------------------------------------------------------

def two_convs(w1, b1, w2, pads2: int = 0, k2: int = 1):
    return model([conv("x", "w1", "y1", "b1", pads=1), relu("y1", "a1"),
                  conv("a1", "w2", "out", pads=pads2)],
                 X, ["out"], {"w1": w1, "b1": b1, "w2": w2})


def test_channel_unread_by_its_reader_is_cut_at_the_producer():
    w2 = weights(4, 8, 1, 1, zero_cols=[1, 6], seed=82)
    result = assert_cut(two_convs(weights(8, 3, 3, 3, seed=81), bias(8, seed=81), w2),
                        {"conv_y1": (3, 6), "conv_out": (6, 4)}, groups=2)
    assert result.report.blockers == []


def test_constant_channel_into_padded_conv_stays():
    w1, b1 = weights(8, 3, 3, 3, seed=83), bias(8, seed=83)
    zero_rows(w1, [2], b1, 0.5)  # the Relu passes 0.5: a non-zero constant channel
    assert_cut(two_convs(w1, b1, weights(4, 8, 3, 3, seed=84), pads2=1), {})


def test_constant_channel_into_unpadded_conv_stays_in_the_zero_only_cut():
    w1, b1 = weights(8, 3, 3, 3, seed=83), bias(8, seed=83)
    zero_rows(w1, [2], b1, 0.5)
    assert_cut(two_convs(w1, b1, weights(4, 8, 1, 1, seed=85)), {})


def test_zero_channel_before_layer_norm_over_it_stays():
    w1 = weights(8, 16, zero_cols=[2, 9], seed=91)
    m = model([matmul("x", "w1", "m1"),
               node("LayerNormalization", ["m1", "gamma", "beta"], ["ln"], axis=-1),
               matmul("ln", "w2", "out")],
              {"x": [1, 4, 8]}, ["out"],
              {"w1": w1, "gamma": bias(16, seed=92), "beta": bias(16, seed=93),
               "w2": weights(16, 8, seed=94)})
    result = assert_cut(m, {})
    assert [(b.op_type, b.channels) for b in result.report.blockers] == [
        ("LayerNormalization", 2)]
    assert "channel axis" in result.report.blockers[0].reason


def test_zero_channel_in_a_graph_output_stays():
    w, b = weights(8, 3, 3, 3, seed=95), bias(8, seed=95)
    zero_rows(w, [1, 4], b)
    result = assert_cut(model([conv("x", "w", "out", "b", pads=1)], X, ["out"], {"w": w, "b": b}),
                        {})
    assert [(b.op_type, b.node, b.channels) for b in result.report.blockers] == [
        ("graph output", "out", 2)]


# --- grouped conv ------------------------------------------------------------------------------

def grouped(stem_dead, grouped_dead=()):
    """h (8 channels) -> Conv3x3 group=2 8->8 + Relu -> Conv1x1 8->4 head."""
    nodes, inits = stem(8, stem_dead)
    wg, bg = weights(8, 4, 3, 3, seed=101), bias(8, seed=101)
    zero_rows(wg, grouped_dead, bg, -1.0)
    nodes += [conv("h", "wg", "yg", "bg", pads=1, group=2), relu("yg", "g"),
              conv("g", "wh", "out")]
    return model(nodes, X, ["out"], inits | {"wg": wg, "bg": bg,
                                             "wh": weights(4, 8, 1, 1, seed=102)})


def test_grouped_conv_unequal_groups_cut_nothing():
    result = assert_cut(grouped(stem_dead=[1]), {})  # only conv group 0 would lose a channel
    [blocker] = result.report.blockers
    assert (blocker.op_type, blocker.node, blocker.channels) == ("Conv", "conv_yg", 1)
    assert "grouped Conv" in blocker.reason


def test_grouped_conv_equal_groups_are_cut():
    result = assert_cut(grouped(stem_dead=[1, 5], grouped_dead=[0, 4]),
                        {"conv_s": (3, 6), "conv_yg": (6, 6), "conv_out": (6, 4)}, groups=4)
    assert attribute(result.model, "conv_yg", "group") == 2
    assert const_input(result.model, "conv_yg").shape == (6, 3, 3, 3)


# --- the API around the cut --------------------------------------------------------------------

def test_input_model_is_not_modified():
    (w1, b1, w2, b2, w3, b3), build = seed_network(16)
    zero_rows(w1, [1, 2], b1)
    m = build()
    before = m.SerializeToString()
    result = channelcut.cut(m)
    assert result.report.removed_groups == 2
    assert m.SerializeToString() == before
    assert m.graph.initializer[0].dims == [16, 3, 3, 3]


def test_input_model_with_constant_nodes_is_not_modified():
    """onnx-ir reads a proto's tensors in place and writes a name it gives one back into the
    proto: lifting a Constant node to an initializer named the caller's Constant tensor (every
    TorchScript export has Constant nodes; found by bench/timm_sweep.py)."""
    (w1, b1, w2, b2, w3, b3), build = seed_network(16)
    zero_rows(w1, [1, 2], b1)
    m = build()
    first = m.graph.node[0]
    scale = onnx.helper.make_node("Constant", [], ["two"], name="two",
                                  value=onnx.numpy_helper.from_array(np.float32(2.0)))
    m.graph.node.insert(0, scale)
    m.graph.node.insert(1, node("Mul", [first.input[0], "two"], ["x2"]))
    first.input[0] = "x2"
    before = m.SerializeToString()
    assert channelcut.cut(m).report.removed_groups == 2
    assert m.SerializeToString() == before


def test_unknown_op_is_a_barrier_and_the_rest_is_still_cut():
    nodes, inits = stem(8, dead=[1])
    w2 = weights(8, 8, 1, 1, seed=111)
    w2[3] = 0.0  # dead, but read by an op channelcut knows nothing about
    nodes += [conv("h", "w2", "y2"),
              node("Gelu", ["y2"], ["custom"], domain="com.microsoft"),
              conv("custom", "w3", "out")]
    m = model(nodes, X, [("out", [1, 4, 8, 8])], inits | {"w2": w2, "w3": weights(4, 8, 1, 1)},
              extra_opsets={"com.microsoft": 1})
    result = assert_cut(m, {"conv_s": (3, 7), "conv_y2": (7, 8)}, groups=1)
    assert [(b.op_type, b.node, b.channels) for b in result.report.blockers] == [
        ("Gelu", "gelu_custom", 1)]
    assert "no channel rule" in result.report.blockers[0].reason


def test_zero_only_cut_keeps_the_model_runnable_with_dynamic_batch():
    w, b = weights(8, 3, 3, 3, seed=121), bias(8, seed=121)
    zero_rows(w, [0], b)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    m = model([conv("x", "w", "y", "b", pads=1), relu("y", "a"), conv("a", "w2", "out")],
              [x], ["out"], {"w": w, "b": b, "w2": weights(4, 8, 1, 1, seed=122)})
    result = assert_cut(m, {"conv_y": (3, 7), "conv_out": (7, 4)}, groups=1,
                        input_shapes={"x": [2, 3, 8, 8]})
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
