"""Dims at every input size (channelcut.symbolic_dims): ONNX's names for dynamic dims, with a
Reshape's inferred -1 solved where the input's size over the other entries is an int or a
single name."""

from __future__ import annotations

import numpy as np

from onnx import TensorProto, helper

from builders import assert_cut, blockers, conv, model, node, random_feeds, run, weights
from channelcut.graph import to_ir


def dims_after(nodes, inits, x_shape=("N", 4, 4, 8), outputs=None) -> dict:
    m = model(nodes, inputs={"x": x_shape}, outputs=outputs or [n.output[0] for n in nodes],
              inits={k: np.array(v, dtype=np.int64) for k, v in inits.items()})
    ir_model = to_ir(m, {"x": tuple(1 if isinstance(d, str) or d is None else d
                                    for d in x_shape)})
    dims = {out.name: out.meta.get("symbolic_dims") for n in ir_model.graph for out in n.outputs}
    return {"x": ir_model.graph.inputs[0].meta.get("symbolic_dims"), **dims}


def test_an_inferred_entry_over_a_dynamic_batch_is_the_batch():
    dims = dims_after([node("Reshape", ["x", "s"], ["f"]), node("Relu", ["f"], ["r"])],
                      {"s": [-1, 128]})
    batch = dims["x"][0]
    assert dims["f"] == dims["r"] == (batch, 128)


def test_an_inferred_entry_that_merges_the_batch_stays_unnamed():
    dims = dims_after([node("Reshape", ["x", "s"], ["m"])], {"s": [-1, 4, 8]})
    assert dims["m"][1:] == (4, 8)
    assert dims["m"][0] not in (dims["x"][0], None, 4) and isinstance(dims["m"][0], str)


def test_a_solved_entry_carries_on_through_later_inference():
    # two -1 head counts meet in a MatMul: ONNX would name their broadcast afresh
    dims = dims_after([node("Reshape", ["x", "s"], ["a"]), node("Reshape", ["x", "s"], ["b"]),
                       node("Transpose", ["b"], ["bt"], perm=[0, 1, 3, 2]),
                       node("MatMul", ["a", "bt"], ["p"])], {"s": [0, -1, 4, 8]})
    batch = dims["x"][0]
    assert dims["a"] == (batch, 4, 4, 8)
    assert dims["p"] == (batch, 4, 4, 4)


def test_an_unnamed_dynamic_dim_is_one_dim_for_all_its_readers():
    dims = dims_after([node("Flatten", ["x"], ["f"], axis=1), node("Relu", ["x"], ["r"])], {},
                      x_shape=(None, 4, 4, 8))
    assert dims["f"][0] == dims["r"][0] == dims["x"][0] and isinstance(dims["x"][0], str)


def test_a_declared_name_never_meets_one_onnx_makes_up():
    # an input declared with ONNX's own fresh-name pattern is not the -1 ONNX names unk__0
    dims = dims_after([node("Reshape", ["x", "s"], ["m"])], {"s": [-1, 4, 8]},
                      x_shape=("unk__0", 4, 4, 8))
    assert dims["m"][0] != dims["x"][0]


def test_fixed_inputs_record_nothing_and_declared_shapes_stay():
    m = model([node("Relu", ["x"], ["r"])], inputs={"x": ("N", 4, 4, 8)}, outputs=["r"])
    ir_model = to_ir(m, {"x": (1, 4, 4, 8)})
    assert ir_model.graph.inputs[0].shape.dims[0] == 1  # the analysed size
    assert ir_model.graph.inputs[0].meta["declared_shape"].dims[0].value == "N"
    fixed = to_ir(model([node("Relu", ["x"], ["r"])], inputs={"x": (1, 4, 4, 8)},
                        outputs=["r"]), {"x": (1, 4, 4, 8)})
    assert all("symbolic_dims" not in n.outputs[0].meta for n in fixed.graph)


def test_entries_solved_in_an_earlier_pass_stay_solved_when_a_later_one_solves():
    # heads split by (*x.shape[:2], -1, 4) and merged back by (*x.shape[:2], -1): the merge
    # is solved only once the split is, in the second pass, and ONNX names each computed -1
    # afresh at every inference; the passes after must keep both solutions (they kept only
    # the last pass's: the split and the merge took turns falling back to fresh names, the
    # merge was taken to mix the channels with a dynamic dim, and test_attention's computed
    # head count was not cut)
    dims = dims_after([node("Shape", ["x"], ["xs"], end=2),
                       node("Concat", ["xs", "split_tail"], ["s"], axis=0),
                       node("Reshape", ["x", "s"], ["heads"]),
                       node("Transpose", ["heads"], ["t"], perm=[0, 2, 1, 3]),
                       node("Transpose", ["t"], ["back"], perm=[0, 2, 1, 3]),
                       node("Concat", ["xs", "merge_tail"], ["m"], axis=0),
                       node("Reshape", ["back", "m"], ["merged"])],
                      {"split_tail": [-1, 4], "merge_tail": [-1]}, x_shape=("N", "S", 16),
                      outputs=[("merged", ("N", "S", 16))])
    batch, length = dims["x"][:2]
    assert dims["heads"] == (batch, length, 4, 4)
    assert dims["t"] == (batch, 4, length, 4)
    assert dims["merged"] == (batch, length, 16)


def test_a_channel_axis_whose_size_varies_with_the_batch_keeps_its_channels():
    # Concat([z, h], axis=1) with z = ConstantOfShape([N, N, 4, 8]): h's channels are at
    # positions 1..4 at the analysed batch of 1 and 3..6 at a batch of 3, where y = cat[:, 2:4]
    # reads z's third channel and h's first (the cut took h's channel 0 for unread and cut
    # it, and the verification at the size set, a batch of 1, did not see it)
    nodes = [conv("x", "w1", "h", "b1"),
             node("Shape", ["x"], ["n"], end=1),
             node("Concat", ["n", "n", "hw"], ["zshape"], axis=0),
             node("ConstantOfShape", ["zshape"], ["z"],
                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
             node("Concat", ["z", "h"], ["cat"], axis=1),
             node("Slice", ["cat", "two", "four", "one"], ["y"])]
    m = model(nodes, inputs={"x": ("N", 4, 4, 8)}, outputs={"y": ("N", 2, 4, 8)},
              inits={"w1": weights(4, 4, 1, 1, zero_rows=[1]), "b1": np.zeros(4, np.float32),
                     "hw": np.array([4, 8], np.int64), "one": np.array([1], np.int64),
                     "two": np.array([2], np.int64), "four": np.array([4], np.int64)})
    result = assert_cut(m, {}, input_shapes={"x": [1, 4, 4, 8]})
    assert "channel axis of 'unk__0' size at other input sizes than the analysed ones" in \
        [b.reason for b in blockers(result, "Concat")]
    feeds = random_feeds(m, {"x": [3, 4, 4, 8]})
    np.testing.assert_allclose(run(result.model, feeds)["y"], run(m, feeds)["y"])
