"""Size arithmetic on static shapes is folded before the analysis, so that Slice, Reshape and Pad
read constants; nothing that a dynamic input dimension reaches is folded."""

from __future__ import annotations

import numpy as np

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
