"""Size arithmetic on static shapes is folded before the analysis, so that Slice, Reshape and Pad
read constants; nothing that a dynamic input dimension reaches is folded."""

from __future__ import annotations

import numpy as np
import onnx

from builders import assert_cut, bias, conv, cut, model, node, random_feeds, run, weights
from channelcut.graph import to_ir


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def chunk_model(batch: int | str = 1):
    """torch.chunk(y, 2, dim=1) as the TorchScript exporter writes it: the split point is
    Shape(y)[1] / 2, computed at run time. Channels 1 and 2 of y are zero (rows of w0)."""
    nodes = [conv("x", "w0", "y", "b0"),
             node("Shape", ["y"], ["shape"]),
             node("Gather", ["shape", "one"], ["channels"], axis=0),
             node("Div", ["channels", "two"], ["half"]),
             node("Slice", ["y", "zero", "half", "one"], ["first"]),
             node("Slice", ["y", "half", "channels", "one"], ["second"]),
             conv("first", "w1", "a"), conv("second", "w2", "b"),
             node("Add", ["a", "b"], ["out"])]
    b0 = bias(8, at={1: 0.0, 2: 0.0})
    return model(nodes, {"x": [batch, 3, 6, 6]}, ["out"],
                 {"w0": weights(8, 3, 3, 3, zero_rows=[1, 2]), "b0": b0,
                  "w1": weights(5, 4, 1, 1, seed=1), "w2": weights(5, 4, 1, 1, seed=2),
                  "zero": ints(0), "one": ints(1), "two": ints(2)})


def test_chunk_of_a_static_shape_is_folded_and_cut():
    result = assert_cut(chunk_model(), {"conv_y": (3, 6), "conv_a": (2, 5)}, groups=2)
    assert "Shape" not in {n.op_type for n in result.model.graph.node}


def test_shape_reached_by_a_dynamic_batch_is_kept():
    # Shape(y) holds the batch size, which is dynamic: nothing is folded, the Shape node
    # stays a barrier, and the model still takes any batch.
    m = chunk_model(batch="N")
    result = cut(m, input_shapes={"x": [1, 3, 6, 6]})
    assert "Shape" in {n.op_type for n in result.model.graph.node}
    assert result.report.removed_groups == 0
    feeds = random_feeds(m, {"x": [3, 3, 6, 6]})
    np.testing.assert_allclose(run(result.model, feeds)["out"], run(m, feeds)["out"],
                               rtol=1e-5, atol=1e-6)


def test_pad_with_computed_amounts_gets_its_shape_and_later_shapes_fold():
    # pads = [0, 0, 0, 0, 0, 0, W mod 4, W mod 4]: known only once the Mod is folded; the
    # Shape of the padded tensor is then folded in the same sweep.
    nodes = [node("Shape", ["x"], ["shape"]),
             node("Gather", ["shape", "three"], ["width"], axis=0),
             node("Mod", ["width", "four"], ["extra"]),
             node("Concat", ["zeros6", "extra", "extra"], ["pads"], axis=0),
             node("Pad", ["x", "pads"], ["padded"]),
             node("Shape", ["padded"], ["padded_shape"]),
             node("Reshape", ["padded", "padded_shape"], ["same"]),
             node("Relu", ["same"], ["out"])]
    m = model(nodes, {"x": [1, 2, 3, 6]}, ["out"],
              {"three": ints(3), "four": ints(4), "zeros6": np.zeros(6, np.int64)})
    graph_model = to_ir(m, {"x": (1, 2, 3, 6)})
    assert [n.op_type for n in graph_model.graph] == ["Pad", "Reshape", "Relu"]
    pads = graph_model.graph.node(0).inputs[1].const_value.numpy()
    np.testing.assert_array_equal(pads, [0, 0, 0, 0, 0, 0, 2, 2])


def test_random_ops_are_not_folded():
    nodes = [node("RandomNormalLike", ["k"], ["noise"], seed=1.0),
             node("Add", ["x", "noise"], ["out"])]
    m = model(nodes, {"x": [1, 4]}, ["out"], {"k": np.zeros((1, 4), np.float32)})
    assert [n.op_type for n in to_ir(m, {"x": (1, 4)}).graph] == ["RandomNormalLike", "Add"]


def test_a_value_that_would_grow_the_weights_stays_computed():
    # Expand of a 1-element constant to 4096 elements would grow the weights if folded: it
    # stays; the Shape it reads (a barrier to x's channels if left) becomes 4 integers. The
    # report's weights before are the model's; as nothing is cut to pay for those 32 bytes,
    # the weight guard returns the original model (weights never grow).
    nodes = [node("Shape", ["x"], ["shape"]), node("Expand", ["k", "shape"], ["big"]),
             node("Add", ["x", "big"], ["out"])]
    m = model(nodes, {"x": [1, 4, 32, 32]}, ["out"], {"k": np.ones(1, np.float32)})
    graph_model = to_ir(m, {"x": (1, 4, 32, 32)})
    assert [n.op_type for n in graph_model.graph] == ["Expand", "Add"]
    result = cut(m)
    assert (result.report.weight_bytes_before, result.report.weight_bytes_after) == (4, 4)
    assert result.model == m


def test_only_what_a_channel_rule_reads_is_stored():
    # Shape -> Gather -> Range -> Less feeds a Where mask (no channel rule): that chain stays
    # computed, from the stored shape; the Slice's end, Reshape(width), is stored.
    nodes = [node("Shape", ["x"], ["shape"]),
             node("Gather", ["shape", "three"], ["width"], axis=0),
             node("Range", ["zero", "width", "one"], ["positions"]),
             node("Less", ["positions", "two"], ["left"]),
             node("Where", ["left", "x", "x"], ["masked"]),
             node("Reshape", ["width", "one_dim"], ["end"]),
             node("Slice", ["masked", "zero_1d", "end", "three_1d"], ["out"])]
    m = model(nodes, {"x": [1, 2, 3, 6]}, ["out"],
              {"three": np.array(3, np.int64), "zero": np.array(0, np.int64),
               "one": np.array(1, np.int64), "two": np.array(2, np.int64),
               "one_dim": ints(1), "zero_1d": ints(0), "three_1d": ints(3)})
    graph_model = to_ir(m, {"x": (1, 2, 3, 6)})
    assert [n.op_type for n in graph_model.graph] == ["Gather", "Range", "Less", "Where",
                                                       "Slice"]
    np.testing.assert_array_equal(graph_model.graph.node(4).inputs[2].const_value.numpy(), [6])


def padded_pair(pad_nodes, inits):
    """x -> conv_y (8 filters, 1 and 5 zero) -> Pad(pads computed by `pad_nodes` into "pads")
    -> conv_z, as timm's hgnetv2 pads its stem: size arithmetic on constants alone, no Shape."""
    nodes = [conv("x", "w1", "y"), *pad_nodes, node("Pad", ["y", "pads"], ["p"]),
             conv("p", "w2", "z")]
    return model(nodes, {"x": [1, 3, 8, 8]}, ["z"],
                 {"w1": weights(8, 3, 3, 3, zero_rows=[1, 5]), "w2": weights(4, 8, 2, 2, seed=1),
                  **inits})


def test_pads_built_from_constants_of_shape_are_folded_and_the_pad_cut():
    # F.pad(y, (0, 1, 0, 1)) as the TorchScript exporter writes it: ConstantOfShape -> Concat
    # -> Reshape -> Slice (reversed) -> Transpose -> Reshape -> Cast gives [0,0,0,0,0,0,1,1].
    zero = onnx.helper.make_tensor("zero", onnx.TensorProto.INT64, [1], [0])
    nodes = [node("ConstantOfShape", ["four"], ["zeros"], value=zero),
             node("Concat", ["torch_pads", "zeros"], ["flat"], axis=0),
             node("Reshape", ["flat", "pairs"], ["rows"]),
             node("Slice", ["rows", "minus_one", "minus_big", "zero_axis", "minus_one"],
                  ["reversed"]),
             node("Transpose", ["reversed"], ["columns"], perm=[1, 0]),
             node("Reshape", ["columns", "minus_one"], ["onnx_pads"]),
             node("Cast", ["onnx_pads"], ["pads"], to=onnx.TensorProto.INT64)]
    m = padded_pair(nodes, {"four": ints(4), "torch_pads": ints(0, 1, 0, 1),
                            "pairs": ints(-1, 2), "minus_one": ints(-1),
                            "minus_big": ints(-(2**63) + 1), "zero_axis": ints(0)})
    result = assert_cut(m, {"conv_y": (3, 6), "conv_z": (6, 4)}, groups=2)
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Pad", "Conv"]


def test_pads_built_by_expand_are_folded_and_the_pad_cut():
    nodes = [node("Expand", ["zero", "six"], ["zeros"]),
             node("Concat", ["zeros", "one_one"], ["pads"], axis=0)]
    m = padded_pair(nodes, {"zero": ints(0), "six": ints(6), "one_one": ints(1, 1)})
    assert_cut(m, {"conv_y": (3, 6), "conv_z": (6, 4)}, groups=2)


def test_a_weight_computed_from_one_another_conv_reads_stays_computed():
    # conv_b's weights are 2 * conv_a's: stored, they would add conv_a's weight bytes again
    # (conv_a still reads the original), so the Mul stays and the weights do not grow.
    nodes = [conv("x", "w", "a"), node("Mul", ["w", "two"], ["w2"]), conv("x", "w2", "b"),
             node("Add", ["a", "b"], ["out"])]
    m = model(nodes, {"x": [1, 4, 6, 6]}, ["out"],
              {"w": weights(8, 4, 3, 3), "two": np.array(2.0, np.float32)})
    assert [n.op_type for n in to_ir(m, {"x": (1, 4, 6, 6)}).graph] == ["Conv", "Mul", "Conv",
                                                                         "Add"]
    result = cut(m)
    assert result.report.weight_bytes_after <= result.report.weight_bytes_before


def test_weights_standardised_by_training_mode_batch_norm_stay_computed():
    # timm's ScaledStdConv2d (nfnet): the conv's weights are BatchNormalization (training
    # mode) over the reshaped weight, computed from initializers alone. ONNX Runtime's
    # inference kernel does not compute that op as the spec does (nor as its own constant
    # folding does), so folding it with the reference evaluator would change what the model
    # computes there: it stays computed, nothing it feeds is cut, and FLOPs still count.
    w = weights(8, 3, 3, 3, zero_rows=[1, 5])
    nodes = [node("Reshape", ["w", "rows"], ["flat"]),
             node("BatchNormalization", ["flat", "gain", "zeros8", "zeros8", "ones8"],
                  ["standard", "mean", "var"], training_mode=1, momentum=0.0, epsilon=1e-6),
             node("Reshape", ["standard", "w_shape"], ["w_std"]),
             conv("x", "w_std", "y"), node("Relu", ["y"], ["r"]), conv("r", "w2", "z")]
    m = model(nodes, {"x": [1, 3, 8, 8]}, {"z": [1, 4, 6, 6]},
              {"w": w, "rows": ints(1, 8, -1), "w_shape": ints(8, 3, 3, 3),
               "gain": np.full(8, 0.5, np.float32), "zeros8": np.zeros(8, np.float32),
               "ones8": np.ones(8, np.float32), "w2": weights(4, 8, 1, 1, seed=3)})
    result = cut(m)  # verified in ONNX Runtime
    assert result.report.removed_groups == 0
    assert "BatchNormalization" in [n.op_type for n in result.model.graph.node]
    conv_y, relu, conv_z = 2 * 8 * 36 * 27, 8 * 36, 2 * 4 * 36 * 8
    assert (result.report.flops_before, result.report.flops_unknown_before) == \
        (conv_y + relu + conv_z, 0)
