"""Shape of a tensor with channels (channelcut.ops.sizes): it reads the dims, not the values,
so the channels stay free unless a reader may see the entry of the channel axis, which the cut
changes. Every model has a dynamic batch (a static Shape is folded before the analysis), and
each cut is also run at a batch of 3."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import onnx_ir as ir
from onnx import TensorProto, helper

from builders import assert_cut, blockers, conv, model, node, random_feeds, run, weights
from channelcut.graph import slice_range
from channelcut.ops.sizes import _sliced

INT_MIN = -2 ** 63
CUT = {"conv_h": (4, 3), "conv_y": (3, 6)}  # channel 1 of h is zero


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def size_model(size_nodes, inits=None, shape_attrs=None, out="picked") -> onnx.ModelProto:
    """conv_h (channel 1 zero) -> conv_y, and Shape(h) (with `shape_attrs`) read by
    `size_nodes`, whose `out` is a second graph output (int64)."""
    nodes = [conv("x", "w1", "h", "b1"), conv("h", "w2", "y"),
             node("Shape", ["h"], ["hs"], **(shape_attrs or {})), *size_nodes]
    return model(nodes, inputs={"x": ("N", 4, 4, 8)},
                 outputs=["y", helper.make_tensor_value_info(out, TensorProto.INT64, None)],
                 inits={"w1": weights(4, 4, 1, 1, zero_rows=[1]), "b1": np.zeros(4, np.float32),
                        "w2": weights(6, 4, 1, 1, seed=5), **(inits or {})})


def assert_cut_at_batch_3(m: onnx.ModelProto, kept: dict) -> None:
    result = assert_cut(m, kept, input_shapes={"x": [1, 4, 4, 8]})
    feeds = random_feeds(m, {"x": [3, 4, 4, 8]})
    for name, value in run(m, feeds).items():
        np.testing.assert_allclose(run(result.model, feeds)[name], value, rtol=1e-5, atol=1e-6)
    if kept:
        assert blockers(result, "Shape") == []
    else:
        assert [b.reason for b in blockers(result, "Shape")] == ["Shape reads the channel count"]


@pytest.mark.parametrize("index, kept", [(0, CUT), (-4, CUT), (2, CUT), (1, {}), (-3, {})],
                         ids=["batch", "batch from the end", "height", "channels",
                              "channels from the end"])
def test_a_gather_of_the_shape_keeps_the_channels_only_where_it_picks_their_count(index, kept):
    m = size_model([node("Gather", ["hs", "index"], ["picked"], axis=0)],
                   {"index": i64(index)})
    assert_cut_at_batch_3(m, kept)


@pytest.mark.parametrize("start, end, step, kept", [
    (2, 4, 1, CUT), (0, 1, 1, CUT), (0, 2, 1, {}), (3, 1, -1, CUT), (3, 0, -1, {}),
    (-2, 99, 1, CUT), (0, 4, 2, CUT), (1, 4, 2, {}),
])
def test_a_slice_of_the_shape_keeps_the_channels_only_where_it_takes_their_count(
        start, end, step, kept):
    # (no axes: they would equal another input, and the cut shares equal constants)
    m = size_model([node("Slice", ["hs", "starts", "ends", "", "steps"], ["picked"])],
                   {"starts": i64(start), "ends": i64(end), "steps": i64(step)})
    assert_cut_at_batch_3(m, kept)


def test_a_negative_step_from_far_before_the_start_takes_the_first_entry():
    # Shape(h, start=1) is (C, H, W); ONNX clamps a start of -10 with step -1 to entry 0, the
    # channel count (Python's slice would take nothing)
    m = size_model([node("Slice", ["hs", "starts", "ends", "", "steps"], ["picked"])],
                   {"starts": i64(-10), "ends": i64(INT_MIN), "steps": i64(-1)},
                   shape_attrs={"start": 1})
    assert_cut_at_batch_3(m, {})


def test_a_shape_that_leaves_out_the_channel_axis_is_read_whole():
    assert_cut_at_batch_3(size_model([node("Identity", ["hs"], ["picked"])],
                                     shape_attrs={"start": 2}), CUT)


@pytest.mark.parametrize("size_nodes, inits", [
    ([node("Identity", ["hs"], ["picked"])], {}),  # the whole shape
    # index N / N, computed at run time: 1, the channel count
    ([node("Shape", ["x"], ["xs"], end=1), node("Div", ["xs", "xs"], ["index"]),
      node("Gather", ["hs", "index"], ["picked"], axis=0)], {}),
], ids=["whole", "computed index"])
def test_a_reader_that_may_see_the_channel_count_keeps_the_channels(size_nodes, inits):
    assert_cut_at_batch_3(size_model(size_nodes, inits), {})


def test_the_shape_as_a_graph_output_keeps_the_channels():
    m = size_model([], out="hs")
    assert_cut_at_batch_3(m, {})


def test_view_of_the_batch_and_minus_one_cuts_at_every_batch():
    # x.view(x.size(0), -1) -> Gemm: the batch is read from the Shape, -1 takes the channels
    nodes = [conv("x", "w1", "h", "b1"), node("Shape", ["h"], ["hs"]),
             node("Gather", ["hs", "zero"], ["n"], axis=0),
             node("Concat", ["n", "minus_one"], ["target"], axis=0),
             node("Reshape", ["h", "target"], ["f"]),
             node("Gemm", ["f", "w"], ["y"], name="gemm_y", transB=1)]
    m = model(nodes, inputs={"x": ("N", 4, 4, 8)}, outputs=["y"],
              inits={"w1": weights(4, 4, 1, 1, zero_rows=[1]), "b1": np.zeros(4, np.float32),
                     "w": weights(10, 128, seed=5), "zero": i64(0), "minus_one": i64(-1)})
    result = assert_cut(m, {"conv_h": (4, 3), "gemm_y": (96, 10)},
                        input_shapes={"x": [1, 4, 4, 8]})
    assert blockers(result) == []
    feeds = random_feeds(m, {"x": [3, 4, 4, 8]})
    np.testing.assert_allclose(run(result.model, feeds)["y"], run(m, feeds)["y"],
                               rtol=1e-5, atol=1e-6)


def test_the_slice_entries_are_onnx_runtime_s():
    # every start, end and step on 1-D tensors of 1..4 entries against ONNX Runtime's Slice
    # (channelcut.graph.slice_range, through the Shape rule's _sliced and alone)
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, [d])
              for name, d in (("data", None), ("starts", 1), ("ends", 1), ("steps", 1))]
    graph = helper.make_graph(
        [helper.make_node("Slice", ["data", "starts", "ends", "axes", "steps"], ["out"])],
        "slice", inputs, [helper.make_tensor_value_info("out", TensorProto.INT64, [None])],
        [onnx.numpy_helper.from_array(i64(0), "axes")])
    session = ort.InferenceSession(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString(),
        providers=["CPUExecutionProvider"])
    bounds = [INT_MIN, -9, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 9, 2 ** 63 - 1]

    class Consts:  # what _sliced reads of a Walk
        def __init__(self, reader):
            self.values = {v.name: v.const_value.numpy() for v in reader.inputs[1:]}

        def const(self, value):
            return self.values[value.name]

    for length in range(1, 5):
        for start in bounds:
            for end in bounds:
                for step in (-3, -2, -1, 1, 2, 3):
                    (expected,) = session.run(None, {
                        "data": np.arange(length, dtype=np.int64), "starts": i64(start),
                        "ends": i64(end), "steps": i64(step)})
                    values = [ir.Value(name=n, const_value=ir.tensor(a)) for n, a in
                              (("s", i64(start)), ("e", i64(end)), ("a", i64(0)),
                               ("t", i64(step)))]
                    reader = ir.Node("", "Slice", [ir.Value(name="d"), *values])
                    assert _sliced(reader, length, Consts(reader)) == set(expected.tolist()), \
                        (length, start, end, step)
                    # the helper the Slice rule and the Shape readers share, in order
                    assert list(slice_range(start, end, step, length)) == expected.tolist()


def interpolate_model(resized: str = "h", sizes_from: str = "h",
                      channel_size: list[onnx.NodeProto] | None = None) -> onnx.ModelProto:
    """F.interpolate(h, size=(8, 16))[:, 2:4] with a dynamic batch, the Resize as
    TorchScript writes it: Resize(h, sizes=Concat(Shape(h)[:2], [8, 16])); `resized` and
    `sizes_from` name the tensors whose Resize and Shape these are (h, or g: conv_g's output,
    as many channels), `channel_size` nodes make the sizes' first two entries (`nc`)
    instead. Channels 0 and 1 of h are not read, 1 is zero too."""
    size_nodes = channel_size or [
        node("Shape", [sizes_from], ["hs"]),
        node("Slice", ["hs", "zero", "two"], ["nc"])]
    other = [conv("x", "wg", "g")] if "g" in (resized, sizes_from) else []
    nodes = [conv("x", "w1", "h", "b1"), *other, *size_nodes,
             node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             node("Resize", [resized, "", "", "sizes"], ["r"], mode="nearest"),
             node("Slice", ["r", "two", "four", "one"], ["y"])]
    return model(nodes, inputs={"x": ("N", 4, 4, 8)}, outputs={"y": ("N", 2, 8, 16)},
                 inits={"w1": weights(4, 4, 1, 1, zero_rows=[1]), "b1": np.zeros(4, np.float32),
                        **({"wg": weights(4, 4, 1, 1, seed=3)} if other else {}),
                        **({} if channel_size else {"zero": i64(0)}), "one": i64(1),
                        "two": i64(2), "hw": i64(8, 16), "four": i64(4)})


def test_interpolate_to_a_size_keeps_the_channel_count_it_reads_and_cuts():
    # the sizes' channel entry is Shape(h)[1]: after the cut, h's own (cut) count
    m = interpolate_model()
    result = assert_cut(m, {"conv_h": (4, 2)}, input_shapes={"x": [1, 4, 4, 8]})
    feeds = random_feeds(m, {"x": [3, 4, 4, 8]})
    np.testing.assert_allclose(run(result.model, feeds)["y"], run(m, feeds)["y"],
                               rtol=1e-5, atol=1e-6)


def test_interpolate_as_the_dynamo_exporter_writes_it_cuts():
    # Concat(Shape(h, end=2), size): the Shape's own output is the sizes' first piece
    m = interpolate_model(channel_size=[node("Shape", ["h"], ["nc"], end=2)])
    result = assert_cut(m, {"conv_h": (4, 2)}, input_shapes={"x": [1, 4, 4, 8]})
    feeds = random_feeds(m, {"x": [3, 4, 4, 8]})
    np.testing.assert_allclose(run(result.model, feeds)["y"], run(m, feeds)["y"],
                               rtol=1e-5, atol=1e-6)


def test_interpolate_to_a_computed_spatial_size_cuts():
    # sizes (N, C, 2H, 2W), 2H and 2W computed in floats as the dynamo exporter scales them:
    # shape inference cannot say the output's H and W, only its channel count, which is h's
    # (the Resize took the unknown output shape for a change of the channel axis); a conv
    # reads the result (a Slice needs its input's shape, and keeps the channels)
    nodes = [conv("x", "w1", "h", "b1"), node("Shape", ["h"], ["nc"], end=2),
             node("Shape", ["h"], ["spatial"], start=2), node("Cast", ["spatial"], ["fs"], to=1),
             node("Mul", ["fs", "twice"], ["scaled"]), node("Cast", ["scaled"], ["hw"], to=7),
             node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             node("Resize", ["h", "", "", "sizes"], ["r"], mode="nearest"),
             conv("r", "w2", "y")]
    m = model(nodes, inputs={"x": ("N", 4, 4, 8)}, outputs={"y": ("N", 6, 8, 16)},
              inits={"w1": weights(4, 4, 1, 1, zero_rows=[1]), "b1": np.zeros(4, np.float32),
                     "w2": weights(6, 4, 1, 1, seed=5), "twice": np.array(2.0, np.float32)})
    result = assert_cut(m, CUT, input_shapes={"x": [1, 4, 4, 8]})
    feeds = random_feeds(m, {"x": [3, 4, 4, 8]})
    np.testing.assert_allclose(run(result.model, feeds)["y"], run(m, feeds)["y"],
                               rtol=1e-5, atol=1e-6)


def test_interpolate_to_the_channel_count_of_another_tensor_keeps_it():
    # Resize(g, Concat(Shape(h)[:2], ...)): cutting h would change g's channel axis
    m = interpolate_model(resized="g", sizes_from="h")
    result = assert_cut(m, {}, input_shapes={"x": [1, 4, 4, 8]})
    assert [b.reason for b in blockers(result, "Shape")] == ["Shape reads the channel count"]


def test_a_resize_to_a_channel_count_computed_from_the_batch_keeps_the_channels():
    # sizes = (N, 4N, 8, 16): 4 channels at the analysed batch of 1, 12 at a batch of 3,
    # where h's channels are spread over 12 (the cut's 2 over 12 read other ones); the
    # Shape is read for the batch alone (it was a barrier before channelcut.ops.sizes)
    m = interpolate_model(channel_size=[
        node("Shape", ["h"], ["n"], end=1), node("Mul", ["n", "four"], ["c"]),
        node("Concat", ["n", "c"], ["nc"], axis=0)])
    result = assert_cut(m, {}, input_shapes={"x": [1, 4, 4, 8]})
    assert [b.reason for b in blockers(result, "Resize")] == [
        "Resize to a computed size that may change the channel axis"]


def resize_model(sizes_nodes: list[onnx.NodeProto], inits: dict, axes=None,
                 batch: int | str = "N") -> onnx.ModelProto:
    """h (channels 0, 1 unread, 1 zero) -> Resize(h, sizes) [with `axes`] -> [:, 2:4]."""
    resize = node("Resize", ["h", "", "", "sizes"], ["r"], mode="nearest",
                  **({"axes": axes} if axes else {}))
    return model([conv("x", "w1", "h", "b1"), *sizes_nodes, resize,
                  node("Slice", ["r", "two", "four", "one"], ["y"])],
                 inputs={"x": (batch, 4, 4, 8)}, outputs={"y": (batch, 2, 8, 16)},
                 inits={"w1": weights(4, 4, 1, 1, zero_rows=[1]), "b1": np.zeros(4, np.float32),
                        "one": i64(1), "two": i64(2), "four": i64(4), **inits}, opset=18)


@pytest.mark.parametrize("case", ["computed, a constant channel count", "axes H, W",
                                  "axes C, H, W"])
def test_resize_sizes_get_the_cut_channel_count_where_they_hold_it(case):
    # a Concat-built sizes' constant channel entry was left at 4 (the cut's 2 channels were
    # resized back to 4, or, with the axes attribute, the entry rewritten was W's: 16 -> 14)
    if case.startswith("computed"):
        m = resize_model([node("Shape", ["h"], ["n"], end=1),
                          node("Concat", ["n", "c", "hw"], ["sizes"], axis=0)],
                         {"c": i64(4), "hw": i64(8, 16)})
        expected = [None, 2, 8, 16]
    elif case == "axes H, W":
        m = resize_model([], {"sizes": i64(8, 16)}, axes=[2, 3], batch=1)
        expected = [8, 16]
    else:
        m = resize_model([], {"sizes": i64(4, 8, 16)}, axes=[1, 2, 3], batch=1)
        expected = [2, 8, 16]
    result = assert_cut(m, {"conv_h": (4, 2)}, input_shapes={"x": [1, 4, 4, 8]})
    resize = next(n for n in result.model.graph.node if n.op_type == "Resize")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer}
    if case.startswith("computed"):
        concat = next(n for n in result.model.graph.node if n.output[0] == resize.input[3])
        assert [int(inits[concat.input[1]][0]), *inits[concat.input[2]]] == expected[1:]
    else:
        assert list(inits[resize.input[3]]) == expected
    feeds = random_feeds(m, {"x": [3 if case.startswith("computed") else 1, 4, 4, 8]})
    np.testing.assert_allclose(run(result.model, feeds)["y"], run(m, feeds)["y"],
                               rtol=1e-5, atol=1e-6)
