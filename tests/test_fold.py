"""The full cut: constant channels folded into their readers, one-sided residual cuts, and the
cost model that decides which folds and reinsertions pay."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import channelcut
from builders import (assert_cut, attribute, bias, const_input, conv, gemm, initializer, matmul,
                      model, node, rand, random_feeds, relu, run, weights)

POSITIVE = {1: 0.7, 4: 0.3}  # zero-weight rows with these biases are constants after Relu


def producer_then(reader_nodes, reader_inits, *, out="y", cin=3, mid=6, size=8):
    """x -> Conv 1x1 (rows 1 and 4 all zero, positive bias) -> Relu -> `reader_nodes` -> out."""
    inits = {"w1": weights(mid, cin, 1, 1, zero_rows=[1, 4]), "b1": bias(mid, POSITIVE),
             **reader_inits}
    nodes = [conv("x", "w1", "c1", "b1"), relu("c1", "r1"), *reader_nodes]
    return model(nodes, {"x": [1, cin, size, size]}, [out], inits)


def ops(m) -> list[str]:
    return [n.op_type for n in m.graph.node]


@pytest.mark.parametrize("objective", ["flops", "params", "latency"])
def test_constant_into_unpadded_1x1_conv_goes_into_its_bias(objective):
    m = producer_then([conv("r1", "w2", "y", "b2")],
                      {"w2": weights(5, 6, 1, 1, seed=3), "b2": bias(5, seed=3)})
    assert_cut(m, {}, mode="zero")  # zero-only: constants stay
    result = channelcut.cut(m, objective=objective)
    assert {layer.node: layer.out_channels for layer in result.report.layers}["conv_c1"] == (6, 4)
    assert ops(result.model) == ["Conv", "Relu", "Conv"]  # no extra op: the bias absorbed it
    assert [s.kind for s in result.report.sites] == ["bias fold"]
    assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 5)}, mode="full")


def test_constant_into_padded_3x3_conv_becomes_a_border_map():
    m = producer_then([conv("r1", "w2", "y", "b2", pads=1)],
                      {"w2": weights(5, 6, 3, 3, seed=3), "b2": bias(5, seed=3)})
    result = assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 5)}, mode="full")
    assert [s.kind for s in result.report.sites] == ["border fold"]
    # the map is a constant subgraph (runtimes fold it at load) plus one Add
    assert sorted(ops(result.model)) == sorted(["Conv", "Relu", "Conv", "ConstantOfShape",
                                                "Conv", "Add"])
    # per inference: conv_c1 (4 of 6 rows) + relu + conv_y (4 of 6 inputs) + the Add; the
    # border map's Conv over a plane of ones is computed once, at load
    pixels = 8 * 8
    assert result.report.flops_before == 2 * pixels * 6 * 3 + pixels * 6 + 2 * pixels * 5 * 6 * 9
    assert result.report.flops_after == 2 * pixels * 4 * 3 + pixels * 4 + 2 * pixels * 5 * 4 * 9 \
        + pixels * 5


def test_border_fold_rows_that_read_only_folded_channels_come_back_as_their_bias():
    """Rows 0 and 1 of the padded reader read only the constant channels 1 and 4: after the
    fold they are their bias plus the border map. The conv computes 3 rows, and the Add gets
    the two biases back (Pad, Gather, Add: 124 bytes against the rows' 296); left in the
    conv, a second cut took them (the Add's operand channels are constants)."""
    w2 = weights(5, 6, 3, 3, seed=3)
    w2[:2, [0, 2, 3, 5]] = 0.0
    m = producer_then([conv("r1", "w2", "y", "b2", pads=1)], {"w2": w2, "b2": bias(5, seed=3)})
    result = assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 5)}, mode="full")
    assert [(s.kind, s.added_bytes, s.saved_bytes) for s in result.report.sites] == [
        ("border fold", 4 * 5 * 9 + 32, 2 * (3 + 1) * 4 + 2 * 5 * 9 * 4),
        ("reinsert", 5 * 12 + 64, 2 * (4 * 9 + 1) * 4)]
    np.testing.assert_array_equal(const_input(result.model, "conv_y"), w2[2:][:, [0, 2, 3, 5]])
    assert channelcut.cut(result.model).report.removed_groups == 0


def test_border_fold_rows_come_back_only_as_far_as_the_alignment_allows():
    """The same with align=2: the conv keeps 4 of its 5 rows (a multiple of 2), as the cut
    keeps for every tensor that loses channels, and so does a second cut."""
    w2 = weights(5, 6, 3, 3, seed=3)
    w2[:2, [0, 2, 3, 5]] = 0.0
    m = producer_then([conv("r1", "w2", "y", "b2", pads=1)], {"w2": w2, "b2": bias(5, seed=3)})
    result = assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 5)}, mode="full", align=2)
    assert [(s.kind, s.groups) for s in result.report.sites][1:] == [("reinsert", 1)]
    assert const_input(result.model, "conv_y").shape == (4, 4, 3, 3)
    assert channelcut.cut(result.model, align=2).report.removed_groups == 0


def test_border_fold_rows_that_a_nan_channel_reaches_are_not_their_bias():
    """As above, but channel 0 is NaN (its bias): 0 * NaN is NaN, so rows 0 and 1 are NaN,
    not their bias, and stay in the conv."""
    w2 = weights(5, 6, 3, 3, seed=3)
    w2[:2, [0, 2, 3, 5]] = 0.0
    m = producer_then([conv("r1", "w2", "y", "b2", pads=1)], {"w2": w2, "b2": bias(5, seed=3)})
    b1 = next(t for t in m.graph.initializer if t.name == "b1")
    b1.CopyFrom(onnx.numpy_helper.from_array(
        np.where(np.arange(6) == 0, np.nan, onnx.numpy_helper.to_array(b1)).astype(np.float32),
        "b1"))
    result = assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 5)}, mode="full")
    assert [s.kind for s in result.report.sites] == ["border fold"]
    assert np.isnan(run(result.model, random_feeds(m))["y"][0, :2]).all()


def test_border_map_rows_of_channels_that_read_no_folded_constant_are_not_computed():
    """Only row 4 of the padded reader reads the constant channels 1 and 4: the border map
    computes that row alone and the Add gets zeros for the other four (Pad, Gather: 124
    bytes against 4 x 36 of border kernel); a second cut took them otherwise."""
    w2 = weights(5, 6, 3, 3, seed=3)
    w2[:4, [1, 4]] = 0.0
    m = producer_then([conv("r1", "w2", "y", "b2", pads=1)], {"w2": w2, "b2": bias(5, seed=3)})
    result = assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 5)}, mode="full")
    assert [(s.kind, s.added_bytes, s.saved_bytes) for s in result.report.sites][1:] == [
        ("reinsert", 5 * 12 + 64, 4 * 9 * 4)]
    [border] = [n for n in result.model.graph.node if n.op_type == "Conv" and
                n.input[0].endswith("constantofshape_1")]
    assert initializer(result.model, border.input[1]).shape == (1, 1, 3, 3)
    assert channelcut.cut(result.model).report.removed_groups == 0


def test_constant_into_strided_dilated_padded_conv():
    m = producer_then([node("Conv", ["r1", "w2"], ["y"], pads=[2, 1, 0, 2], strides=[2, 1],
                            dilations=[1, 2])],
                      {"w2": weights(5, 6, 3, 3, seed=3)}, size=9)
    assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 5)}, mode="full")


def test_constant_into_gemm_after_flatten_goes_into_c():
    m = producer_then([node("Flatten", ["r1"], ["f"], axis=1), gemm("f", "wg", "y", "bg")],
                      {"wg": weights(6 * 16, 7, seed=5), "bg": bias(7, seed=5)}, size=4)
    result = assert_cut(m, {"conv_c1": (3, 4), "gemm_y": (4 * 16, 7)}, mode="full")
    assert const_input(result.model, "gemm_y", 1).shape == (4 * 16, 7)


def test_constant_into_gemm_without_c_creates_one():
    m = producer_then([node("GlobalAveragePool", ["r1"], ["p"]),
                       node("Flatten", ["p"], ["f"], axis=1), gemm("f", "wg", "y", trans_b=1)],
                      {"wg": weights(7, 6, seed=5)})
    result = assert_cut(m, {"conv_c1": (3, 4), "gemm_y": (4, 7)}, mode="full")
    assert len(next(n for n in result.model.graph.node if n.name == "gemm_y").input) == 3


def test_constant_into_matmul_adds_the_contribution():
    d, hidden = 6, 10
    w1, w2 = weights(d, hidden, zero_cols=[2, 7], seed=1), weights(hidden, d, seed=2)
    b1 = bias(hidden, {2: 0.5, 7: -0.5}, seed=1)
    m = model([node("MatMul", ["x", "w1"], ["h"]), node("Add", ["h", "b1"], ["hb"]),
               node("Gelu", ["hb"], ["g"]), node("MatMul", ["g", "w2"], ["y"])],
              {"x": [1, 4, d]}, ["y"], {"w1": w1, "b1": b1, "w2": w2}, opset=20)
    assert_cut(m, {}, mode="zero")  # Gelu(0.5) and Gelu(-0.5) are not zero
    assert_cut(m, {"matmul_h": (d, hidden - 2), "matmul_y": (hidden - 2, d)}, mode="full")


def basic_block(zero_rows=(1, 4), channels=6, size=6):
    """x -> conv a (3x3) -> relu -> conv b (3x3, rows zeroed, positive bias) -> Add x -> relu."""
    c = channels
    inits = {"wa": weights(c, c, 3, 3, seed=1), "ba": bias(c, seed=1),
             "wb": weights(c, c, 3, 3, zero_rows=zero_rows, seed=2),
             "bb": bias(c, {r: 0.25 for r in zero_rows}, seed=2)}
    nodes = [conv("x", "wa", "a", "ba", pads=1), relu("a", "ra"),
             conv("ra", "wb", "b", "bb", pads=1), node("Add", ["b", "x"], ["s"]),
             relu("s", "y")]
    return model(nodes, {"x": [1, c, size, size]}, ["y"], inits)


def test_border_map_leaves_out_the_rows_the_conv_no_longer_computes():
    """Rows 0 and 5 of the padded reader have zero weights: each is its bias, which the cut
    puts back after the conv. Their border map rows are zero too: the map leaves them out
    (14 rows, not 16), the Add adds it to the 14 computed rows, and the reinsertion after it
    puts both rows back, for no op more (the seed demo's last conv: a 32-channel map added
    before the reinsertion, not a 64-channel one after it)."""
    w2 = weights(16, 6, 3, 3, seed=3)
    w2[[0, 5]] = 0.0
    m = producer_then([conv("r1", "w2", "y", "b2", pads=1)], {"w2": w2, "b2": bias(16, seed=3)})
    result = assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 16)}, mode="full")
    assert ops(result.model) == ["Conv", "Relu", "ConstantOfShape", "Conv", "Conv", "Add", "Pad",
                                 "Gather", "Add"]
    [border] = [n for n in result.model.graph.node if n.op_type == "Conv" and
                n.input[0].endswith("constantofshape_1")]
    assert initializer(result.model, border.input[1]).shape == (14, 1, 3, 3)
    assert channelcut.cut(result.model).report.removed_groups == 0


def test_one_sided_residual_cut_in_a_basic_block():
    m = basic_block()
    assert_cut(m, {}, mode="zero")  # the skip path keeps the Add's channels alive
    result = assert_cut(m, {"conv_b": (6, 4)}, mode="full")
    assert [(s.node, s.kind) for s in result.report.sites] == [("add_s", "reinsert")]
    assert {"Pad", "Gather"} <= set(ops(result.model))


@pytest.mark.parametrize("zero_rows, pads", [(range(0, 4), (4, 0)), (range(12, 16), (0, 4)),
                                             ((0, 1, 14, 15), (2, 2))])
def test_constants_around_one_run_of_kept_channels_come_back_through_a_pad_alone(zero_rows,
                                                                                  pads):
    """conv b's kept rows are one run: the Pad puts the zeros before and after it, no Gather
    (an op fewer); the Add of the constants follows. A cut of the cut model follows the Pad's
    channels (the kept run, the added ones pinned) and removes nothing."""
    result = assert_cut(basic_block(zero_rows=zero_rows, channels=16, size=8),
                        {"conv_b": (16, 12)}, mode="full")
    assert ops(result.model) == ["Conv", "Relu", "Conv", "Pad", "Add", "Add", "Relu"]
    pad = next(n for n in result.model.graph.node if n.op_type == "Pad")
    amounts = initializer(result.model, pad.input[1])
    assert (amounts[1], amounts[5]) == pads and not np.delete(amounts, [1, 5]).any()
    again = channelcut.cut(result.model, fold=True)
    assert again.report.removed_channels == 0 and again.report.removed_nodes == 0


def test_latency_objective_reinserts_only_where_the_saved_flops_outweigh_the_copies():
    """A reinsertion copies the whole tensor (Pad, Gather, Add): under `latency` that costs
    about 41 FLOPs per element plus 3 ops, so 2 of 6 rows of a 3x3 conv at 6x6 do not pay
    (the `flops` objective counts only the Add), while 8 of 64 rows at 32x32 do."""
    small = basic_block()
    assert_cut(small, {"conv_b": (6, 4)}, mode="full", objective="flops")
    assert_cut(small, {}, mode="full", objective="latency")
    wide = basic_block(zero_rows=range(8), channels=64, size=32)
    result = assert_cut(wide, {"conv_b": (64, 56)}, mode="full", objective="latency")
    assert [s.kind for s in result.report.sites] == ["reinsert"]


def silu_into_depthwise(size=6):
    """x -> conv (rows 1 and 4 zero, bias) -> x * sigmoid(x) -> depthwise 3x3 (padded) ->
    conv 1x1 -> y: the SiLU of EfficientNet's expand stage."""
    c, cin = 16, 48  # wide enough input that the cut rows outweigh the reinsertion's constants
    inits = {"w1": weights(c, cin, 1, 1, zero_rows=[1, 4, 9, 12]),
             "b1": bias(c, {1: 0.7, 4: -0.3, 9: 0.2, 12: 0.0}),
             "wd": weights(c, 1, 3, 3, seed=2), "bd": bias(c, seed=2),
             "w3": weights(5, c, 1, 1, seed=3), "b3": bias(5, seed=3)}
    nodes = [conv("x", "w1", "a", "b1"), node("Sigmoid", ["a"], ["s"]),
             node("Mul", ["a", "s"], ["m"]), conv("m", "wd", "d", "bd", pads=1, group=c),
             conv("d", "w3", "y", "b3")]
    return model(nodes, {"x": [1, cin, size, size]}, ["y"], inits)


def test_constants_every_operand_lost_are_put_back_once_after_the_node():
    """Both operands of x * sigmoid(x) lose the constant channels; the depthwise conv after
    them needs silu(c) there. One reinsertion after the Mul, which computes 12 channels, not
    one per operand before it. (Channel 12 has bias 0: silu(0) = 0 goes all the way, through
    the depthwise conv, whose bias the last conv absorbs.)"""
    result = assert_cut(silu_into_depthwise(), {"conv_a": (48, 12), "conv_d": (15, 15),
                                                "conv_y": (15, 5)}, mode="full")
    assert ops(result.model).count("Gather") == 1
    mul = next(n for n in result.model.graph.node if n.op_type == "Mul")
    pad = next(n for n in result.model.graph.node if n.op_type == "Pad")
    assert pad.input[0] == mul.output[0]


def test_one_sided_residual_cut_in_a_bottleneck_with_downsample():
    c, mid, out = 4, 24, 8
    inits = {"w1": weights(mid, c, 1, 1, seed=1), "b1": bias(mid, seed=1),
             "w2": weights(mid, mid, 3, 3, seed=2), "b2": bias(mid, seed=2),
             "w3": weights(out, mid, 1, 1, zero_rows=[0, 5, 6], seed=3),
             "b3": bias(out, {0: 0.5, 5: -0.2, 6: 0.0}, seed=3),
             "wd": weights(out, c, 1, 1, seed=4), "bd": bias(out, seed=4)}
    nodes = [conv("x", "w1", "a", "b1"), relu("a", "ra"), conv("ra", "w2", "b", "b2", pads=1),
             relu("b", "rb"), conv("rb", "w3", "c", "b3"), conv("x", "wd", "d", "bd"),
             node("Add", ["c", "d"], ["s"]), relu("s", "y")]
    m = model(nodes, {"x": [1, c, 6, 6]}, ["y"], inits)
    result = assert_cut(m, {"conv_c": (mid, out - 3)}, mode="full")
    assert [s.kind for s in result.report.sites] == ["reinsert"]


def test_a_reinsertion_costs_what_it_writes_for_the_channels_the_output_keeps():
    """a + b, a's row 0 a constant (zero weights, bias 0.5) that b keeps alive, and only
    channels 0-2 of the sum read: the reinsertion writes the Gather order and the constants
    for the 3 channels the sum keeps (and 64 bytes of Pad amounts), 100 bytes against the
    112 that a's row saves. Costed for all 8 channels (160 bytes) it was refused, and cutting
    the cut model again then took it."""
    wa = weights(8, 3, 3, 3, zero_rows=[0], seed=1)
    wh = weights(4, 8, 1, 1, zero_cols=range(3, 8), seed=3)
    inits = {"wa": wa, "ba": bias(8, {0: 0.5}, seed=1), "wb": weights(8, 3, 3, 3, seed=2),
             "bb": bias(8, seed=2), "wh": wh}
    nodes = [conv("x", "wa", "a", "ba", pads=1), conv("x", "wb", "b", "bb", pads=1),
             node("Add", ["a", "b"], ["s"]), conv("s", "wh", "y")]
    m = model(nodes, {"x": [1, 3, 6, 6]}, ["y"], inits)
    # 6 units: channels 3-7 of a, b and s go together (5), and a's reinserted channel 0
    result = assert_cut(m, {"conv_a": (3, 2), "conv_b": (3, 3), "conv_y": (3, 4)}, groups=6,
                        mode="full")
    [site] = result.report.sites
    assert (site.kind, site.added_bytes, site.saved_bytes) == ("reinsert", 100, 112)
    assert channelcut.cut(result.model).report.removed_groups == 0


def test_cost_model_declines_a_fold_that_would_grow_the_weights():
    """Folding the one constant channel into a wide padded 3x3 conv needs a 16x3x3 border
    kernel: more weights than cutting the channel saves (a 1-input producer row and 16x3x3
    reader weights), so every objective keeps the channel."""
    inits = {"w1": np.array([[[[0.0]]], [[[0.8]]]], np.float32), "b1": np.array([1.0, 0.1],
                                                                             np.float32),
             "w2": weights(16, 2, 3, 3, seed=3), "b2": bias(16, seed=3)}
    m = model([conv("x", "w1", "c1", "b1"), relu("c1", "r1"), conv("r1", "w2", "y", "b2", pads=1)],
              {"x": [1, 1, 8, 8]}, ["y"], inits)
    for objective in ("flops", "params", "latency"):
        result = channelcut.cut(m, objective=objective)
        assert result.report.removed_groups == 0, objective
        assert result.report.sites == []
    # Without padding the same constant folds into the bias for free: it goes.
    unpadded = model([conv("x", "w1", "c1", "b1"), relu("c1", "r1"), conv("r1", "w2", "y", "b2")],
                     {"x": [1, 1, 8, 8]}, ["y"], inits)
    assert_cut(unpadded, {"conv_c1": (1, 1), "conv_y": (1, 16)}, mode="full")


def test_pays_compares_the_objective_and_never_grows_weights():
    from channelcut.analysis import Cost
    from channelcut.options import pays

    cheap_flops = Cost(weight_bytes=10, flops=1000)
    assert pays(Cost(weight_bytes=20, flops=5000), cheap_flops, "flops")
    assert not pays(Cost(weight_bytes=5, flops=5000), cheap_flops, "flops")  # weights would grow
    assert not pays(Cost(weight_bytes=20, flops=500), cheap_flops, "flops")
    assert pays(Cost(weight_bytes=20, flops=500), cheap_flops, "params")
    assert not pays(Cost(weight_bytes=20, flops=5000), Cost(weight_bytes=10, flops=10, nodes=1),
                    "latency")


def test_full_cut_never_grows_weights_on_a_random_residual_net():
    rng = np.random.default_rng(7)
    c = 8
    inits, nodes, x = {}, [], "x"
    for k in range(3):
        rows = sorted(rng.choice(c, 3, replace=False).tolist())
        inits[f"wa{k}"] = weights(c, c, 3, 3, zero_rows=rows[:1], seed=10 + k)
        inits[f"ba{k}"] = bias(c, seed=10 + k)
        inits[f"wb{k}"] = weights(c, c, 3, 3, zero_rows=rows, seed=20 + k)
        inits[f"bb{k}"] = bias(c, seed=20 + k)
        nodes += [conv(x, f"wa{k}", f"a{k}", f"ba{k}", pads=1), relu(f"a{k}", f"ra{k}"),
                  conv(f"ra{k}", f"wb{k}", f"b{k}", f"bb{k}", pads=1),
                  node("Add", [f"b{k}", x], [f"s{k}"]), relu(f"s{k}", f"x{k}")]
        x = f"x{k}"
    m = model(nodes, {"x": ["N", c, 6, 6]}, [x], inits)
    result = channelcut.cut(m)
    report = result.report
    assert report.weight_bytes_after <= report.weight_bytes_before
    assert report.flops_after < report.flops_before
    assert min(check.cosine for check in report.checks) >= 0.99999
    inputs = {"x": rand(2, c, 6, 6, seed=3)}  # another batch size than the one analysed
    import onnxruntime as ort
    want = ort.InferenceSession(m.SerializeToString()).run(None, inputs)[0]
    got = ort.InferenceSession(result.model.SerializeToString()).run(None, inputs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --- constants averaged with zero padding: known maps (planes) ---------------------------------

def avg_pool(x: str, y: str, count_include_pad: int = 1):
    """Inception's branch pool: 3x3 average, stride 1, padding 1 counted in the average."""
    return node("AveragePool", [x], [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                count_include_pad=count_include_pad)


def test_constant_averaged_with_padding_into_a_1x1_conv_folds_as_a_map():
    # c1's channels 1 and 4 are constants; the pool makes them constant * (count of valid
    # pixels / 9), which the 1x1 conv adds as a map: Conv(plane, U), plane stored (4x4)
    m = producer_then([avg_pool("r1", "p"), conv("p", "w2", "y", "b2")],
                      {"w2": weights(16, 6, 1, 1, seed=3), "b2": bias(16, seed=3)}, size=4)
    assert_cut(m, {}, mode="zero")
    result = assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 16)}, mode="full")
    assert [s.kind for s in result.report.sites] == ["border fold"]
    assert sorted(ops(result.model)) == sorted(["Conv", "Relu", "AveragePool", "Conv", "Conv",
                                                "Add"])


def test_a_map_fold_that_would_grow_the_weights_is_declined():
    # the same with an 8x8 plane and 5 outputs: storing the plane costs more than the two
    # channels save
    m = producer_then([avg_pool("r1", "p"), conv("p", "w2", "y", "b2")],
                      {"w2": weights(5, 6, 1, 1, seed=3), "b2": bias(5, seed=3)})
    assert_cut(m, {}, mode="full")


def test_constant_averaged_without_counting_padding_stays_a_constant():
    m = producer_then([avg_pool("r1", "p", count_include_pad=0), conv("p", "w2", "y", "b2")],
                      {"w2": weights(5, 6, 1, 1, seed=3), "b2": bias(5, seed=3)})
    result = assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 5)}, mode="full")
    assert [s.kind for s in result.report.sites] == ["bias fold"]


def test_averaged_constant_then_global_average_is_a_constant_again():
    m = producer_then([avg_pool("r1", "p"), node("GlobalAveragePool", ["p"], ["g"]),
                       node("Flatten", ["g"], ["f"], axis=1), gemm("f", "wg", "y", "bg")],
                      {"wg": weights(6, 7, seed=5), "bg": bias(7, seed=5)})
    result = assert_cut(m, {"conv_c1": (3, 4), "gemm_y": (4, 7)}, mode="full")
    assert [s.kind for s in result.report.sites] == ["bias fold"]


@pytest.mark.parametrize("between", ["Relu", "Add"])
def test_an_averaged_constant_read_by_an_op_without_plane_rules_stays(between):
    # Relu and a residual Add see only the zero channels of a map: the constants stay
    if between == "Relu":
        nodes = [avg_pool("r1", "p"), relu("p", "q"), conv("q", "w2", "y", "b2")]
    else:
        nodes = [avg_pool("r1", "p"), node("Add", ["p", "r1"], ["q"]),
                 conv("q", "w2", "y", "b2")]
    m = producer_then(nodes, {"w2": weights(16, 6, 1, 1, seed=3), "b2": bias(16, seed=3)},
                      size=4)
    assert_cut(m, {}, mode="full")


def grouped_reader_of_constants():
    """x -> Conv 1 -> 6 (3x3, padded): rows 0 and 5 the constant 0.75, rows 1-3 zero, row 4
    live -> Conv 6 -> 4 in 2 groups (3x3, padded) -> y. Group 0 reads channels 0-2: its row 0
    has zero weights, its row 1 reads only the constant 0 and the zero 1 and 2; group 1's
    row 2 has zero weights, its row 3 reads the constant 5 and the live 4."""
    w0 = np.zeros((6, 1, 3, 3), np.float32)
    w0[4] = weights(1, 1, 3, 3, seed=1)[0]
    w1 = weights(4, 3, 3, 3, seed=2)
    w1[[0, 2]] = 0.0
    inits = {"w0": w0, "b0": np.array([0.75, 0, 0, 0, -0.03, 0.75], np.float32),
             "w1": w1, "b1": bias(4, seed=2)}
    return model([conv("x", "w0", "c0", "b0", pads=1), conv("c0", "w1", "y", "b1", pads=1,
                                                            group=2)],
                 {"x": [1, 1, 4, 8]}, ["y"], inits)


@pytest.mark.parametrize("objective", ["flops", "params"])
def test_border_fold_into_a_grouped_conv_drops_a_conv_group_left_with_its_bias(objective):
    """The constants 0 and 5 fold into a border map; conv group 0 then computes only its bias
    (rows 0 and 1 read nothing else that stays), and so does row 2. The conv computes row 3
    alone (one group, one input: conv group 0 no longer keeps the zero channel 1 for its
    inputs), and the Add gets the three biases back. A first cut that kept conv group 0 (a
    grouped conv keeps as many inputs per group) left a second cut 4 groups to take."""
    m = grouped_reader_of_constants()
    result = assert_cut(m, {"conv_c0": (1, 1), "conv_y": (1, 4)}, mode="full",
                        objective=objective)
    assert const_input(result.model, "conv_y").shape == (1, 1, 3, 3)
    assert attribute(result.model, "conv_y", "group") == 1
    assert [(s.kind, s.groups) for s in result.report.sites] == [("border fold", 2),
                                                                 ("reinsert", 3)]
    again = channelcut.cut(result.model, objective=objective)
    assert (again.report.removed_groups, again.report.removed_channels) == (0, 0)


def test_border_fold_into_a_grouped_conv_keeps_its_rows_in_zero_only_mode():
    """Zero-only: nothing folds and every row stays with its output; of the zero channels 1-3
    each conv group loses as many as the other can (one)."""
    m = grouped_reader_of_constants()
    result = assert_cut(m, {"conv_c0": (1, 4), "conv_y": (4, 4)}, mode="zero")
    assert channelcut.cut(result.model, fold=False).report.removed_groups == 0


def test_rows_left_with_their_bias_come_back_after_the_conv_when_the_border_map_cancels():
    """Row 0 of the padded reader reads the constant channels 0 and 1 (both 1.0) with
    opposite kernels: their border map is zero, so no Add is written. Rows 1-7 have zero
    weights: the conv computes row 0 alone and the seven biases come back after it (a Pad
    after row 0, the one run the conv computes, and an Add of the biases)."""
    w0 = np.zeros((3, 1, 3, 3), np.float32)
    w0[2] = weights(1, 1, 3, 3, seed=1)[0]
    w1 = np.zeros((8, 3, 3, 3), np.float32)
    kernel = weights(1, 1, 3, 3, seed=4)[0, 0]
    w1[0, 0], w1[0, 1], w1[0, 2] = kernel, -kernel, weights(1, 1, 3, 3, seed=5)[0, 0]
    m = model([conv("x", "w0", "c0", "b0", pads=1), conv("c0", "w1", "y", "b1", pads=1)],
              {"x": [1, 1, 4, 8]}, ["y"],
              {"w0": w0, "b0": np.array([1.0, 1.0, 0.2], np.float32), "w1": w1,
               "b1": bias(8, seed=2)})
    result = assert_cut(m, {"conv_c0": (1, 1), "conv_y": (1, 8)}, mode="full")
    assert const_input(result.model, "conv_y").shape == (1, 1, 3, 3)
    assert ops(result.model) == ["Conv", "Conv", "Pad", "Add"]
    assert channelcut.cut(result.model).report.removed_groups == 0


def test_a_fold_refused_with_a_reinsertion_is_taken_when_it_pays_alone():
    """a (all-zero weights) + k, k constant on channels 1 and 2 and zero elsewhere, into a 1x1
    conv with no bias whose weight reading channel 2 is Inf (Inf x constant: channel 2 stays).
    Under the params objective, the reinsertion of a's channel 2 at the Add costs 100 bytes and
    saves 4; the bias fold of channel 1 costs 12 and, with that reinsertion allowed, is credited
    only with its 12-byte weight column (a's channel 1 goes with the Add's). Both were refused
    at once; without the reinsertion, a's channel 1 is coupled to the sum's and the fold saves
    16: the cut of the cut model then took it (issue 10 item 5)."""
    k = rand(6, 1, 1, seed=2)
    k[[0, 3, 4, 5]] = 0
    wh = weights(3, 6, 1, 1, seed=3)
    wh[1, 2] = np.inf
    m = model([conv("x", "wa", "a"), node("Add", ["a", "k"], ["s"]), conv("s", "wh", "y")],
              {"x": [1, 1, 4, 4]}, ["y"], {"wa": np.zeros((6, 1, 1, 1), np.float32), "k": k,
                                           "wh": wh})
    result = assert_cut(m, {"conv_a": (1, 1), "conv_y": (1, 3)}, groups=5, mode="full",
                        objective="params")
    assert [(s.kind, s.added_bytes, s.saved_bytes) for s in result.report.sites] == [
        ("bias fold", 12, 16)]
    assert channelcut.cut(result.model, objective="params").report.removed_groups == 0


def test_a_grouped_conv_left_to_compute_one_row_computes_one_its_output_keeps():
    """x -> Conv 1 -> 4 -> depthwise Conv, multiplier 2, all-zero weights (padded: every row
    is its bias) -> Slice of channel 2 -> GlobalAveragePool -> Gemm. Every row of the depthwise
    conv could be put back at its output as a constant, but the conv must compute one: it
    computes row 2, which the Slice keeps, so conv group 1 alone stays, reading channel 1.
    Keeping row 0 instead kept conv group 0 and channel 0 too, and a second cut took them
    (issue 10 item 5: "a Slice of one channel plus an all-zero depthwise conv with channel
    multiplier 2")."""
    inits = {"w0": weights(4, 1, 1, 1, seed=1), "b0": bias(4, seed=1),
             "w1": np.zeros((8, 1, 3, 3), np.float32), "b1": bias(8, seed=2),
             "starts": np.array([2], np.int64), "ends": np.array([3], np.int64),
             "axes": np.array([1], np.int64), "wf": weights(1, 5, seed=3), "bf": bias(5, seed=3)}
    nodes = [conv("x", "w0", "c0", "b0"), conv("c0", "w1", "c1", "b1", pads=1, group=4),
             node("Slice", ["c1", "starts", "ends", "axes"], ["s"]),
             node("GlobalAveragePool", ["s"], ["g"]), node("Flatten", ["g"], ["f"]),
             gemm("f", "wf", "y", "bf")]
    m = model(nodes, {"x": [1, 1, 4, 8]}, ["y"], inits)
    for objective in ("flops", "params"):
        result = assert_cut(m, {"conv_c0": (1, 1), "conv_c1": (1, 1)}, mode="full",
                            objective=objective)
        assert attribute(result.model, "conv_c1", "group") == 1
        assert channelcut.cut(result.model, objective=objective).report.removed_groups == 0


def test_nodes_a_cut_adds_take_names_no_node_has():
    """A model that already holds nodes of the names a reinsertion's Pad and Gather would take
    (a model cut before, then cut again): ONNX Runtime refused the cut, two nodes of one name."""
    m = basic_block(zero_rows=range(16), channels=64, size=32)
    first = channelcut.cut(m, target="min-flops", verify=False)
    added = [n.name for n in first.model.graph.node if n.op_type in ("Pad", "Gather")]
    assert added
    taken = onnx.ModelProto()
    taken.CopyFrom(m)
    source = taken.graph.input[0]
    for k, name in enumerate(added):
        taken.graph.node.append(onnx.helper.make_node("Identity", [source.name], [f"spare{k}"],
                                                      name=name))
        spare = taken.graph.output.add()
        spare.CopyFrom(source)
        spare.name = f"spare{k}"
    result = channelcut.cut(taken, target="min-flops")  # verified in ONNX Runtime
    names = [n.name for n in result.model.graph.node]
    assert len(names) == len(set(names))
    assert result.report.removed_groups == first.report.removed_groups


def matmul_fold_with_zero_columns(n: int, constant: int, dead: int) -> onnx.ModelProto:
    """x [1, 16, n] -> MatMul a (n -> n, the first `constant` columns zero) + b (constant
    there) -> MatMul c (n -> 2n, `dead` of its columns zero: every other one from 0) ->
    LayerNormalization over the channels (it reads every one) -> out."""
    wa = weights(n, n, zero_cols=list(range(constant)), seed=1)
    wc = weights(n, 2 * n, zero_cols=list(range(0, 2 * dead, 2)), seed=2)
    ba = bias(n, at={i: 0.5 - 0.75 * (i % 2) for i in range(constant)}, seed=3)
    return model([matmul("x", "wa", "ha", name="a"), node("Add", ["ha", "ba"], ["h"]),
                  matmul("h", "wc", "y", name="c"),
                  node("LayerNormalization", ["y", "scale", "shift"], ["out"], axis=-1)],
                 {"x": [1, 16, n]}, ["out"],
                 {"wa": wa, "ba": ba, "wc": wc, "scale": rand(2 * n, seed=4),
                  "shift": rand(2 * n, seed=5)})


def test_matmul_columns_that_are_their_folded_constant_alone_are_not_computed():
    """matmul_fold_with_zero_columns(64, 2, 48). The full cut folds the constant channels 0
    and 1 into an Add after c; c's zero columns are then that Add's constant alone: c computes
    without them, and they come back as zeros before the Add. A cut of the cut model found
    them there (levit_128s and efficientvit_b0, naively pruned: bench/timm_sweep.py) and took
    1792 channels more."""
    m = matmul_fold_with_zero_columns(64, 2, 48)
    # c's output keeps its 128 channels; the MatMul computes 80 of them
    result = assert_cut(m, {"a": (64, 62), "c": (62, 128)}, mode="full", objective=None)
    assert initializer(result.model, "wc").shape == (62, 128 - 48)
    assert ops(result.model).count("Pad") == 1 and ops(result.model).count("Gather") == 1
    again = channelcut.cut(result.model, fold=True)
    assert again.report.removed_channels == 0 and again.report.removed_nodes == 0


def test_matmul_columns_of_kept_constant_inputs_come_back_through_the_fold_add():
    """x -> conv g (6 groups of 2 rows, all zero weights: its 12 channels are its biases) ->
    NHWC -> MatMul (12 -> 8) -> NCHW -> out. x is the graph input: every group keeps a row,
    6 constant channels stay and the other 6 fold into an Add after the MatMul. Every column
    then reads constants alone: the MatMul computes one (a tensor keeps a channel), a Pad puts
    the other 7 back as zeros and the fold's Add gives them their values. A cut of the cut
    model took those 7 at the Add (bench/fuzz.py seed 45)."""
    m = model([conv("x", "wg", "g", "bg", pads=1, group=6),
               node("Transpose", ["g"], ["t"], perm=[0, 2, 3, 1]),
               matmul("t", "wm", "mm", name="mm"),
               node("Transpose", ["mm"], ["y"], perm=[0, 3, 1, 2])],
              {"x": [1, 6, 4, 8]}, ["y"],
              {"wg": np.zeros((12, 1, 3, 3), np.float32), "bg": bias(12, seed=3),
               "wm": weights(12, 8, seed=4)})
    result = assert_cut(m, {"conv_g": (6, 6), "mm": (6, 8)}, mode="full", objective=None)
    assert initializer(result.model, "wm").shape == (6, 1)
    assert ops(result.model) == ["Conv", "Transpose", "MatMul", "Pad", "Add", "Transpose"]
    again = channelcut.cut(result.model, fold=True)
    assert again.report.removed_channels == 0 and again.report.removed_nodes == 0


def test_matmul_zero_columns_stay_computed_where_the_target_cannot_write_them_back():
    """The rknn target writes a reinsertion as a one-hot 1x1 Conv, NCHW only: the rank-3
    MatMul's zero columns stay computed (no Pad, no Gather: RKNN-Toolkit2 runs a channel Pad
    on the CPU), its constant channels still fold into the Add, and a cut of the cut model
    for the same target removes nothing more."""
    m = matmul_fold_with_zero_columns(512, 16, 384)
    result = assert_cut(m, {"a": (512, 496), "c": (496, 1024)}, mode="full", objective=None,
                        target="rknn")
    assert initializer(result.model, "wc").shape == (496, 1024)
    assert "Pad" not in ops(result.model) and "Gather" not in ops(result.model)
    again = channelcut.cut(result.model, fold=True, target="rknn")
    assert again.report.removed_channels == 0 and again.report.removed_nodes == 0
