"""Layout rules: Concat, Split, Slice, Transpose, Reshape/Flatten, Squeeze/Unsqueeze, Gather,
Expand and Tile move channels (to other positions, pieces or axes) without computing, so a zero
channel stays zero and a cut on one side is the same cut on the other; the op's own constants
and attributes are rewritten to the new sizes."""

from __future__ import annotations

import numpy as np
import pytest

from builders import (
    assert_cut, attribute, bias, blockers, const_input, conv, find_node, gemm, initializer, matmul,
    model, node,
    rand, weights,
)

X_SHAPE = (1, 4, 4, 8)
INT64_MAX = np.iinfo(np.int64).max


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def zero_bias(n: int, zeros=()) -> np.ndarray:
    """A bias that is 0 at `zeros` (so zero weight rows give zero channels)."""
    return bias(n, at={k: 0.0 for k in zeros})


# --- Concat ------------------------------------------------------------------------------------

def test_concat_along_channels_cuts_each_input_at_its_offset():
    m = model(
        [conv("x", "wa", "a", "ba"), conv("x", "wb", "b", "bb"),
         node("Concat", ["a", "b"], ["c"], axis=1), conv("c", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"wa": weights(4, 4, 1, 1, zero_rows=[1]), "ba": zero_bias(4, [1]),
               "wb": weights(4, 4, 1, 1, zero_rows=[0, 3], seed=7), "bb": zero_bias(4, [0, 3]),
               "w2": weights(6, 8, 1, 1, seed=5)})
    result = assert_cut(m, {"conv_a": (4, 3), "conv_b": (4, 2), "conv_y": (5, 6)}, groups=3)
    np.testing.assert_array_equal(result.channel_map["c"][1], [0, 2, 3, 5, 6])


def test_concat_of_a_tensor_with_itself_cuts_both_copies():
    m = model(
        [conv("x", "w1", "h", "b1"), node("Concat", ["h", "h"], ["c"], axis=1),
         conv("c", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(4, 4, 1, 1, zero_rows=[1]), "b1": zero_bias(4, [1]),
               "w2": weights(6, 8, 1, 1, seed=5)})
    assert_cut(m, {"conv_h": (4, 3), "conv_y": (6, 6)}, groups=1)


def test_concat_with_a_graph_input_keeps_the_input_part():
    # conv_y ignores channel 1 of h and channel 0 of z; only h's can go.
    m = model(
        [conv("x", "w1", "h"), node("Concat", ["h", "z"], ["c"], axis=1), conv("c", "w2", "y")],
        inputs={"x": X_SHAPE, "z": (1, 2, 4, 8)}, outputs=["y"],
        inits={"w1": weights(4, 4, 1, 1), "w2": weights(6, 6, 1, 1, zero_cols=[1, 4], seed=5)})
    result = assert_cut(m, {"conv_h": (4, 3), "conv_y": (5, 6)})
    (blocker,) = blockers(result)
    assert (blocker.op_type, blocker.channels) == ("Concat", 1)


def tokens_model(token: np.ndarray, w1: np.ndarray, w2: np.ndarray):
    """x[1,5,4] -> MatMul (8 channels on axis 2) -> Concat a constant token along axis 1
    (tokens) -> [1,6,8] -> MatMul -> y[1,6,6]."""
    return model(
        [matmul("x", "w1", "h"), node("Concat", ["token", "h"], ["t"], axis=1),
         matmul("t", "w2", "y")],
        inputs={"x": (1, 5, 4)}, outputs=["y"], inits={"token": token, "w1": w1, "w2": w2})


def test_concat_along_another_axis_slices_the_constant_part():
    # The second MatMul ignores channel 2, so it goes from both the computed and the constant part.
    m = tokens_model(rand(1, 1, 8, seed=9), weights(4, 8), weights(8, 6, zero_rows=[2], seed=5))
    result = assert_cut(m, {"matmul_h": (4, 7), "matmul_y": (7, 6)})
    np.testing.assert_array_equal(initializer(result.model, "token"),
                                  np.delete(rand(1, 1, 8, seed=9), 2, axis=2))


def test_concat_along_another_axis_with_a_nonzero_constant_channel_keeps_it():
    token = rand(1, 1, 8, seed=9)
    token[0, 0, 2] = 0.5
    m = tokens_model(token, weights(4, 8, zero_cols=[2]), weights(8, 6, seed=5))
    assert_cut(m, {})


def test_concat_along_another_axis_of_zero_channel_and_zero_constant_is_zero():
    token = rand(1, 1, 8, seed=9)
    token[0, 0, 2] = 0.0
    m = tokens_model(token, weights(4, 8, zero_cols=[2]), weights(8, 6, seed=5))
    assert_cut(m, {"matmul_h": (4, 7), "matmul_y": (7, 6)})



# Concat of operands whose channels lie on different axes: an operand whose channels are not on
# the output's channel axis is read whole; the output follows the operands on the concat axis.

def mixed_axis_model(zero_rows=(), head: bool = False):
    """x[1,15,1,1] -> MatMul by M[1,3] (channels on the last axis) and conv_c 15->11 (padded
    to width 3) -> Concat(mm, mm, c) along axis -3 -> [1,41,1,3], then conv_z 41->2 if `head`."""
    nodes = [matmul("x", "m", "mm"), conv("x", "w", "c", pads=[0, 1, 0, 1]),
             node("Concat", ["mm", "mm", "c"], ["cat"], axis=-3)]
    inits = {"m": weights(1, 3), "w": weights(11, 15, 1, 1, zero_rows=zero_rows, seed=3)}
    if head:
        nodes.append(conv("cat", "w2", "z"))
        inits["w2"] = weights(2, 41, 1, 1, seed=5)
    return model(nodes, inputs={"x": (1, 15, 1, 1)}, outputs=["z" if head else "cat"],
                 inits=inits)


def test_concat_of_a_matmul_and_a_conv_keeps_every_output_channel():
    # The MatMul's channels are on the last axis; the conv's, on the concat axis, were taken
    # as unread and cut to one: 41 -> 31 output channels.
    assert_cut(mixed_axis_model(), {})


def test_concat_of_a_matmul_and_a_conv_cuts_the_conv_part_only():
    # Its zero rows go, and conv_z loses the matching columns at offset 30 (it kept them, and
    # ONNX Runtime rejected the model, when the conv part was cut as unread).
    result = assert_cut(mixed_axis_model(zero_rows=[2, 7], head=True),
                        {"conv_c": (15, 9), "conv_z": (39, 2)}, groups=2)
    np.testing.assert_array_equal(result.channel_map["cat"][1],
                                  np.delete(np.arange(41), [32, 37]))


def test_concat_of_a_transposed_operand_keeps_its_channels_and_cuts_the_other():
    # t has conv_a's channels on axis 2, so they stay; conv_b's zero rows, on the concat axis, go.
    m = model(
        [conv("x", "wa", "a"), node("Transpose", ["a"], ["t"], perm=[0, 2, 1, 3]),
         conv("x", "wb", "b"), node("Concat", ["t", "b"], ["cat"], axis=1),
         conv("cat", "w2", "z")],
        inputs={"x": (1, 3, 4, 3)}, outputs=["z"],
        inits={"wa": weights(4, 3, 1, 1, zero_rows=[0]),
               "wb": weights(5, 3, 1, 1, zero_rows=[1, 3], seed=3),
               "w2": weights(2, 9, 1, 1, seed=5)})
    assert_cut(m, {"conv_b": (3, 3), "conv_z": (7, 2)}, groups=2)


def test_concat_of_a_flattened_and_a_squeezed_operand():
    # f = Flatten(conv_a) [1,6] has its channels on axis 1, s = Squeeze(conv_b) [3,6] on axis 0,
    # the concat axis: f is read whole (one row of the output), s's zero channel goes.
    m = model(
        [conv("x", "wa", "a"), node("Flatten", ["a"], ["f"], axis=1),
         conv("x", "wb", "b"), node("Squeeze", ["b", "axes"], ["s"]),
         node("Concat", ["f", "s"], ["cat"], axis=0),
         node("Transpose", ["cat"], ["t"], perm=[1, 0]), matmul("t", "w2", "y")],
        inputs={"x": (1, 2, 1, 6)}, outputs=["y"],
        inits={"wa": weights(6, 2, 1, 6, zero_rows=[2]),
               "wb": weights(3, 2, 1, 1, zero_rows=[1], seed=3),
               "axes": i64(0, 2), "w2": weights(4, 2, seed=5)})
    assert_cut(m, {"conv_b": (2, 2), "matmul_y": (3, 2)}, groups=1)


def test_concat_of_operands_with_different_channel_blocks_cuts_the_one_channel_blocks():
    # f = Flatten(conv_a) has 4 channels of 4 positions, g = Flatten(GAP(conv_b)) 3 of one: the
    # concat barred both, though with f read whole g's zero channel can go (as it did once a
    # cut had made f untracked: the re-cut removed it, bench/fuzz.py)
    m = model(
        [conv("x", "wa", "a"), node("Flatten", ["a"], ["f"], axis=1),
         conv("x", "wb", "b"), node("GlobalAveragePool", ["b"], ["p"]),
         node("Flatten", ["p"], ["g"], axis=1),
         node("Concat", ["f", "g"], ["cat"], axis=1), matmul("cat", "w2", "y")],
        inputs={"x": (1, 3, 2, 2)}, outputs=["y"],
        inits={"wa": weights(4, 3, 1, 1, zero_rows=[2]),
               "wb": weights(3, 3, 1, 1, zero_rows=[1], seed=3), "w2": weights(19, 2, seed=5)})
    assert_cut(m, {"conv_b": (3, 2), "matmul_y": (18, 2)}, groups=1)


def test_concat_after_a_dfl_head_keeps_the_class_branch():
    """YOLOv8's head: box distributions -> Reshape -> Transpose -> Softmax -> 1-channel conv
    (the expected distance) -> Reshape [1,4,A] (its one channel lands on axis 0), concatenated
    first with the class scores [1,nc,A] along axis 1 into a graph output. The class branch
    was cut from 5 channels to 1; the stem's zero channels still go."""
    a = 16  # anchors: a 4x4 map
    m = model(
        [conv("x", "ws", "s"),
         conv("s", "wbox", "box"), node("Reshape", ["box", "shape_dist"], ["dist"]),
         node("Transpose", ["dist"], ["dist_t"], perm=[0, 2, 1, 3]),
         node("Softmax", ["dist_t"], ["prob"], axis=1), conv("prob", "wdfl", "expect"),
         node("Reshape", ["expect", "shape_box"], ["boxes"]),
         conv("s", "wcls", "cls"), node("Reshape", ["cls", "shape_cls"], ["cls_flat"]),
         node("Sigmoid", ["cls_flat"], ["scores"]),
         node("Concat", ["boxes", "scores"], ["y"], axis=1)],
        inputs={"x": (1, 3, 4, 4)}, outputs=["y"],
        inits={"ws": weights(6, 3, 1, 1, zero_rows=[1, 4]),
               "wbox": weights(8, 6, 1, 1, seed=3), "shape_dist": i64(1, 4, 2, a),
               "wdfl": np.arange(2, dtype=np.float32).reshape(1, 2, 1, 1),
               "shape_box": i64(1, 4, a), "wcls": weights(5, 6, 1, 1, seed=5),
               "shape_cls": i64(1, 5, a)})
    assert_cut(m, {"conv_s": (3, 4), "conv_box": (4, 8), "conv_cls": (4, 5)}, groups=2)


# --- Split -------------------------------------------------------------------------------------

def split_model(split, opset: int, sizes: tuple[int, int]):
    """conv_h (8 channels; zero channels 1 and 6) -> Split into a, b -> conv_a, conv_b -> Add."""
    inits = {"w1": weights(8, 4, 1, 1, zero_rows=[1, 6]), "b1": zero_bias(8, [1, 6]),
             "wa": weights(4, sizes[0], 1, 1, seed=5),
             "wb": weights(4, sizes[1], 1, 1, seed=7)}
    if isinstance(split, np.ndarray):
        inputs, attrs = ["h", "split"], {}
        inits["split"] = split
    else:
        inputs, attrs = ["h"], split
    return model(
        [conv("x", "w1", "h", "b1"), node("Split", inputs, ["a", "b"], axis=1, **attrs),
         conv("a", "wa", "ya"), conv("b", "wb", "yb"), node("Add", ["ya", "yb"], ["y"])],
        inputs={"x": X_SHAPE}, outputs=["y"], inits=inits, opset=opset)


def test_split_sizes_as_attribute_opset_11():
    m = split_model({"split": [3, 5]}, 11, (3, 5))
    result = assert_cut(m, {"conv_h": (4, 6), "conv_ya": (2, 4), "conv_yb": (4, 4)}, groups=2)
    assert attribute(result.model, "split_a", "split") == [2, 4]


def test_split_sizes_as_input_opset_13():
    m = split_model(i64(3, 5), 13, (3, 5))
    result = assert_cut(m, {"conv_h": (4, 6), "conv_ya": (2, 4), "conv_yb": (4, 4)}, groups=2)
    np.testing.assert_array_equal(initializer(result.model, "split"), [2, 4])


def test_split_num_outputs_opset_18_becomes_explicit_sizes():
    m = split_model({"num_outputs": 2}, 18, (4, 4))
    result = assert_cut(m, {"conv_h": (4, 6), "conv_ya": (3, 4), "conv_yb": (3, 4)}, groups=2)
    split = find_node(result.model, "split_a")
    assert attribute(result.model, "split_a", "num_outputs") is None
    np.testing.assert_array_equal(initializer(result.model, split.input[1]), [3, 3])


def test_unread_split_output_keeps_one_channel():
    # Nothing reads piece b, so its channels go, but a tensor never loses all of them.
    m = model(
        [conv("x", "w1", "h", "b1"), node("Split", ["h", "split"], ["a", "b", "c"], axis=1),
         conv("a", "wa", "ya"), conv("c", "wc", "yc"), node("Add", ["ya", "yc"], ["y"])],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1), "b1": rand(8), "split": i64(2, 3, 3),
               "wa": weights(4, 2, 1, 1, seed=5), "wc": weights(4, 3, 1, 1, seed=7)})
    result = assert_cut(m, {"conv_h": (4, 6)})
    np.testing.assert_array_equal(initializer(result.model, "split"), [2, 1, 3])


# --- Slice -------------------------------------------------------------------------------------

def slice_model(slice_node, inits: dict, opset: int = 18, width: int = 5):
    """conv_h (8 channels, zero channel 4) -> slice_node (h -> s, `width` channels) -> conv_y."""
    return model(
        [conv("x", "w1", "h", "b1"), slice_node, conv("s", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[4]), "b1": zero_bias(8, [4]),
               "w2": weights(6, width, 1, 1, seed=5), **inits}, opset=opset)


def test_slice_of_a_channel_range_cuts_channels_it_does_not_read():
    # Channels 0, 1 and 7 are never read, channel 4 is zero: 4 of 8 stay, the range becomes 0:4.
    m = slice_model(node("Slice", ["h", "starts", "ends", "axes"], ["s"]),
                    {"starts": i64(2), "ends": i64(7), "axes": i64(1)})
    result = assert_cut(m, {"conv_h": (4, 4), "conv_y": (4, 6)})
    np.testing.assert_array_equal(initializer(result.model, "starts"), [0])
    np.testing.assert_array_equal(initializer(result.model, "ends"), [4])


def test_slice_with_negative_start_and_open_end():
    # Channels -6: (2..7 of 8): 0 and 1 unread, channel 4 zero.
    m = slice_model(node("Slice", ["h", "starts", "ends", "axes"], ["s"]),
                    {"starts": i64(-6), "ends": i64(INT64_MAX), "axes": i64(-3)}, width=6)
    result = assert_cut(m, {"conv_h": (4, 5), "conv_y": (5, 6)})
    np.testing.assert_array_equal(initializer(result.model, "starts"), [0])
    np.testing.assert_array_equal(initializer(result.model, "ends"), [5])


def test_slice_attributes_opset_9():
    m = slice_model(node("Slice", ["h"], ["s"], starts=[2], ends=[7], axes=[1]), {}, opset=9)
    result = assert_cut(m, {"conv_h": (4, 4), "conv_y": (4, 6)})
    assert attribute(result.model, "slice_s", "starts") == [0]
    assert attribute(result.model, "slice_s", "ends") == [4]


def test_slice_of_a_spatial_axis_carries_channels():
    m = model(
        [conv("x", "w1", "h", "b1"), node("Slice", ["h", "starts", "ends", "axes"], ["s"]),
         conv("s", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[4]), "b1": zero_bias(8, [4]),
               "w2": weights(6, 8, 1, 1, seed=5), "starts": i64(1), "ends": i64(3),
               "axes": i64(3)})
    result = assert_cut(m, {"conv_h": (4, 7), "conv_y": (7, 6)})
    np.testing.assert_array_equal(initializer(result.model, "starts"), [1])


def test_slice_with_a_step_along_channels_is_a_barrier():
    m = model(
        [conv("x", "w1", "h", "b1"), node("Slice", ["h", "starts", "ends", "axes", "steps"], ["s"]),
         conv("s", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[4]), "b1": zero_bias(8, [4]),
               "w2": weights(6, 4, 1, 1, seed=5), "starts": i64(0), "ends": i64(8),
               "axes": i64(1), "steps": i64(2)})
    result = assert_cut(m, {})
    assert blockers(result, "Slice")


# --- Transpose ---------------------------------------------------------------------------------

def test_transpose_to_channels_last_then_matmul():
    m = model(
        [conv("x", "w1", "h"), node("Transpose", ["h"], ["t"], perm=[0, 2, 3, 1]),
         matmul("t", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[3]), "w2": weights(8, 6, seed=5)})
    assert_cut(m, {"conv_h": (4, 7), "matmul_y": (7, 6)})


def test_transpose_there_and_back():
    m = model(
        [matmul("x", "w1", "h"), node("Transpose", ["h"], ["t"], perm=[0, 3, 1, 2]),
         conv("t", "w2", "y")],
        inputs={"x": (1, 4, 8, 5)}, outputs=["y"],
        inits={"w1": weights(5, 8, zero_cols=[0, 7]), "w2": weights(6, 8, 1, 1, seed=5)})
    assert_cut(m, {"matmul_h": (5, 6), "conv_y": (6, 6)})


# --- Reshape and Flatten -----------------------------------------------------------------------

def flatten_gemm(flatten, inits: dict | None = None, zero_rows=(1,), w=None, x_shape=X_SHAPE,
                 extra=()):
    """conv_h (4 channels of 4x8) -> flatten -> f[1,128] -> Gemm (10 outputs); `extra` nodes
    go before the flatten."""
    return model(
        [conv("x", "w1", "h", "b1"), *extra, flatten, gemm("f", "w", "y", trans_b=1)],
        inputs={"x": x_shape}, outputs=["y"],
        inits={"w1": weights(4, 4, 1, 1, zero_rows=zero_rows), "b1": zero_bias(4, zero_rows),
               "w": weights(10, 128, seed=5) if w is None else w, **(inits or {})})


def test_flatten_into_gemm_cuts_a_block_of_columns():
    result = assert_cut(flatten_gemm(node("Flatten", ["h"], ["f"], axis=1)),
                        {"conv_h": (4, 3), "gemm_y": (96, 10)})
    assert initializer(result.model, "w").shape == (10, 96)


@pytest.mark.parametrize("shape, rewritten", [
    ((1, -1), (1, -1)), ((1, 128), (1, 96)), ((-1, 128), (-1, 96)),
])
def test_reshape_into_gemm_rewrites_the_target_shape(shape, rewritten):
    m = flatten_gemm(node("Reshape", ["h", "shape"], ["f"]), {"shape": i64(*shape)})
    result = assert_cut(m, {"conv_h": (4, 3), "gemm_y": (96, 10)})
    np.testing.assert_array_equal(initializer(result.model, "shape"), rewritten)


def test_gemm_ignoring_a_whole_block_cuts_a_live_channel():
    w = weights(10, 128, seed=5)
    w[:, 64:96] = 0  # channel 2 is positions 64..95 of the flattened tensor
    m = flatten_gemm(node("Flatten", ["h"], ["f"], axis=1), zero_rows=(), w=w)
    assert_cut(m, {"conv_h": (4, 3), "gemm_y": (96, 10)})


def test_gemm_reading_part_of_a_block_keeps_the_channel():
    w = weights(10, 128, seed=5)
    w[:, 64:95] = 0  # position 95 of channel 2 is still read
    m = flatten_gemm(node("Flatten", ["h"], ["f"], axis=1), zero_rows=(), w=w)
    assert_cut(m, {})


def test_flatten_then_reshape_back_to_channels():
    m = model(
        [conv("x", "w1", "h", "b1"), node("Flatten", ["h"], ["f"], axis=1),
         node("Reshape", ["f", "shape"], ["u"]), conv("u", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(4, 4, 1, 1, zero_rows=[1]), "b1": zero_bias(4, [1]),
               "w2": weights(6, 4, 1, 1, seed=5), "shape": i64(1, 4, 4, 8)})
    result = assert_cut(m, {"conv_h": (4, 3), "conv_y": (3, 6)})
    np.testing.assert_array_equal(initializer(result.model, "shape"), [1, 3, 4, 8])


@pytest.mark.parametrize("flatten, inits, extra", [
    (node("Flatten", ["h"], ["f"], axis=1), {}, ()),
    (node("Reshape", ["h", "shape"], ["f"]), {"shape": i64(0, -1)}, ()),
    (node("Reshape", ["h", "shape"], ["f"]), {"shape": i64(-1, 128)}, ()),  # view(-1, 128)
    (node("Reshape", ["h3", "shape"], ["f"]), {"shape3": i64(-1, 4, 32), "shape": i64(-1, 128)},
     (node("Reshape", ["h", "shape3"], ["h3"]),)),  # (N, 4, 32), then (N, 128)
], ids=["Flatten", "0,-1", "-1,128", "-1,4,32"])
def test_a_dynamic_batch_flattened_into_a_gemm_still_cuts(flatten, inits, extra):
    # (N, 4, 4, 8) -> (N, 128) at every N: channel c is columns 32c..32c+31 of every row
    m = flatten_gemm(flatten, inits, x_shape=("N", 4, 4, 8), extra=extra)
    result = assert_cut(m, {"conv_h": (4, 3), "gemm_y": (96, 10)})
    assert blockers(result) == []
    assert all(c.cosine >= 0.9999 for c in result.report.checks)


def batch_merge_model(batch):
    """conv_h -> Reshape [-1, 4, 8] (the batch merged into the 4 channels: (N*4, 4, 8)) ->
    Reshape [4, -1, 8] -> Unsqueeze -> conv_y, which reads axis 0 of (N*4, 4, 8) as channels:
    at a batch of 1 that is h's channels, at a batch of 3 channel k holds rows 3k..3k+2 of the
    merged axis, channels of several images."""
    return model(
        [conv("x", "w1", "h", "b1"), node("Reshape", ["h", "s1"], ["m"]),
         node("Reshape", ["m", "s2"], ["m2"]), node("Unsqueeze", ["m2", "axes"], ["u"]),
         conv("u", "w2", "y")],
        inputs={"x": (batch, 4, 4, 8)}, outputs=["y"],
        inits={"w1": weights(4, 4, 1, 1, zero_rows=[1]), "b1": zero_bias(4, [1]),
               "w2": weights(6, 4, 1, 1, seed=5), "s1": i64(-1, 4, 8), "s2": i64(4, -1, 8),
               "axes": i64(0)})


def test_a_reshape_that_merges_a_dynamic_batch_into_the_channels_keeps_them():
    # The mapping found at the assumed batch of 1 (channel c at position c of the merged axis)
    # is not the one at a batch of 3: the cut failed verification there (cosine 0.36).
    result = assert_cut(batch_merge_model("N"), {})
    assert [b.op_type for b in blockers(result)] == ["Reshape"]
    assert "dynamic dim" in blockers(result)[0].reason


def test_a_reshape_that_merges_a_batch_of_one_into_the_channels_cuts():
    result = assert_cut(batch_merge_model(1), {"conv_h": (4, 3), "conv_y": (3, 6)})
    np.testing.assert_array_equal(initializer(result.model, "s2"), [3, -1, 8])


def shuffle_model(w1: np.ndarray, w2: np.ndarray, groups: int = 2, b1: np.ndarray | None = None,
                  perm: tuple[int, ...] = (0, 2, 1, 3, 4)):
    """conv_h -> Reshape [1,C,4,8] -> [1,groups,C/groups,4,8] -> Transpose(perm) -> Reshape
    [1,C,4,8] -> conv_y (C: w1's rows): ShuffleNet's channel shuffle between two 1x1 convs."""
    c = w1.shape[0]
    return model(
        [conv("x", "w1", "h", "b1" if b1 is not None else None),
         node("Reshape", ["h", "s1"], ["r"]), node("Transpose", ["r"], ["t"], perm=list(perm)),
         node("Reshape", ["t", "s2"], ["u"]), conv("u", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": w1, "w2": w2, "s1": i64(1, groups, c // groups, 4, 8),
               "s2": i64(1, c, 4, 8), **({} if b1 is None else {"b1": b1})})


def shuffle_order(groups: int, channels: int = 8) -> np.ndarray:
    """Output channel c of the shuffle holds input channel order[c] (numpy's own transpose)."""
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)


def op_types(m) -> list[str]:
    return [n.op_type for n in m.graph.node]


def test_channel_shuffle_maps_channels_through_the_permutation():
    # Reshape [1,8,4,8] -> [1,2,4,4,8] -> Transpose -> [1,4,2,4,8] -> Reshape [1,8,4,8]:
    # channel (i, j) = 4i + j lands at 2j + i. Cutting column j = 1 takes channels 1 and 5 of
    # the producer (both groups of the shuffle lose the same column) and the reader's weight
    # columns 2 and 3 (where they landed). What is kept is still a grid: the shuffle stays.
    w2 = weights(6, 8, 1, 1, seed=5)
    m = shuffle_model(weights(8, 4, 1, 1, zero_rows=[1, 5]), w2)
    result = assert_cut(m, {"conv_h": (4, 6), "conv_y": (6, 6)})
    np.testing.assert_array_equal(const_input(result.model, "conv_y")[:, :, 0, 0],
                                  np.delete(w2, [2, 3], axis=1)[:, :, 0, 0])
    assert op_types(result.model) == ["Conv", "Reshape", "Transpose", "Reshape", "Conv"]
    np.testing.assert_array_equal(const_input(result.model, "reshape_r"), [1, 2, 3, 4, 8])


def assert_shuffle_gathers(result, groups: int, dead: list[int], w2: np.ndarray) -> None:
    """The shuffle became one Gather that reads, for each kept output channel in order, its
    input channel's place in the cut producer; the reader lost the columns where the dead
    channels landed."""
    assert op_types(result.model) == ["Conv", "Gather", "Conv"]
    assert attribute(result.model, "reshape_u", "axis") == 1
    channels = w2.shape[1]
    order = shuffle_order(groups, channels)
    kept_in = [c for c in range(channels) if c not in dead]
    landed = [c for c in range(channels) if order[c] in dead]
    np.testing.assert_array_equal(const_input(result.model, "reshape_u"),
                                  [kept_in.index(c) for c in order if c not in dead])
    np.testing.assert_array_equal(const_input(result.model, "conv_y"),
                                  np.delete(w2, landed, axis=1))


def test_channel_shuffle_cuts_a_channel_of_one_half_as_a_gather():
    # Channel 1 (group 0, column 1) is zero, channel 5 (group 1, column 1) is not. Once this
    # coupled the column (the shuffle's Reshapes need equal groups) and nothing was cut; the
    # chain is a fixed permutation of the channels, so channel 1 goes alone and the three ops
    # become Gather(axis 1) of the kept permutation (RKNN-Toolkit2's model_pruning, which
    # turns a shuffle into a 1x1 permutation conv, cuts it too).
    w2 = weights(6, 8, 1, 1, seed=5)
    result = assert_cut(shuffle_model(weights(8, 4, 1, 1, zero_rows=[1]), w2),
                        {"conv_h": (4, 7), "conv_y": (7, 6)})
    assert_shuffle_gathers(result, 2, [1], w2)


@pytest.mark.parametrize("groups", [2, 4])
def test_channel_shuffle_with_unequal_groups_after_the_cut_is_a_gather(groups):
    # Channels 1 and 2 are zero (zero weight rows, zero bias): not whole columns of the
    # (groups, 8/groups) split, so the groups end unequal.
    w2 = weights(6, 8, 1, 1, seed=5)
    m = shuffle_model(weights(8, 4, 1, 1, zero_rows=[1, 2]), w2, groups,
                      b1=zero_bias(8, [1, 2]))
    result = assert_cut(m, {"conv_h": (4, 6), "conv_y": (6, 6)}, groups=2)
    assert_shuffle_gathers(result, groups, [1, 2], w2)


@pytest.mark.parametrize("target", ["min-flops", "rknn", "portable"])
def test_every_target_writes_the_shuffle_as_a_gather(target):
    # Group 0 (channels 0..15 of 32) is dead, group 1 alive: no column goes whole. The Gather
    # replaces three ops by one, so a target that allows no added op (portable) writes it
    # too; 16 channels stay, aligned for portable's blocks of 16.
    dead = list(range(16))
    w2 = weights(6, 32, 1, 1, seed=5)
    m = shuffle_model(weights(32, 4, 1, 1, zero_rows=dead), w2, b1=zero_bias(32, dead))
    result = assert_cut(m, {"conv_h": (4, 16), "conv_y": (16, 6)}, target=target)
    assert_shuffle_gathers(result, 2, dead, w2)


def test_channel_shuffle_with_dynamic_spatial_dims_stays_coupled():
    # The targets infer H (-1) and copy the batch (0): at another H and W than the analysed
    # 4x8 ((1, 8, 2, 16), say) the first Reshape takes up a size of W into H, which is no
    # permutation of the channels; a Gather would give another shape. A half-dead column stays.
    m = model(
        [conv("x", "w1", "h"), node("Reshape", ["h", "s1"], ["r"]),
         node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
         node("Reshape", ["t", "s2"], ["u"]), conv("u", "w2", "y")],
        inputs={"x": ("N", 4, "H", "W")}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[1]), "w2": weights(6, 8, 1, 1, seed=5),
               "s1": i64(0, 2, 4, -1, 8), "s2": i64(0, -1, 4, 8)})
    assert_cut(m, {}, input_shapes={"x": X_SHAPE})


def test_channel_shuffle_that_also_moves_the_spatial_axes_stays_coupled():
    # The Transpose swaps H and W too: the chain is not a permutation of the channels alone
    # (no Gather can write it), so a half-dead column stays.
    m = shuffle_model(weights(8, 4, 1, 1, zero_rows=[1]), weights(6, 8, 1, 1, seed=5),
                      perm=(0, 2, 1, 4, 3))
    assert_cut(m, {})


# --- Squeeze, Unsqueeze, Gather ----------------------------------------------------------------

def squeeze_all_model(batch):
    """conv_h -> GlobalAveragePool -> Squeeze without axes (every axis of size 1) -> Slice
    [1:3] on axis 0 -> ReduceSum: at a batch of 1 the Slice reads channels 1 and 2 of h, at a
    batch of 3 (the batch axis stays) it reads images 1 and 2, every channel."""
    return model(
        [conv("x", "w1", "h"), node("GlobalAveragePool", ["h"], ["g"]),
         node("Squeeze", ["g"], ["s"]), node("Slice", ["s", "starts", "ends", "axes"], ["p"]),
         node("ReduceSum", ["p"], ["y"], keepdims=0)],
        inputs={"x": (batch, 4, 4, 8)}, outputs={"y": ()},
        inits={"w1": weights(4, 4, 1, 1), "starts": i64(1), "ends": i64(3), "axes": i64(0)},
        opset=11)


def test_squeeze_without_axes_of_a_dynamic_batch_keeps_the_channels():
    # cut at the assumed batch of 1 (channels 0 and 3 unread), the model gave a (2, 2) slice
    # where the original's is (2, 4) at a batch of 3
    result = assert_cut(squeeze_all_model("N"), {})
    assert result.report.checks


def test_squeeze_without_axes_of_a_batch_of_one_cuts_what_the_slice_leaves():
    assert_cut(squeeze_all_model(1), {"conv_h": (4, 2)})


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_move_the_channel_axis(opset):
    if opset >= 13:
        ops = [node("Squeeze", ["g", "axes"], ["s"]), node("Unsqueeze", ["s", "axes"], ["u"])]
        inits = {"axes": i64(2, 3)}
    else:
        ops = [node("Squeeze", ["g"], ["s"], axes=[2, 3]),
               node("Unsqueeze", ["s"], ["u"], axes=[2, 3])]
        inits = {}
    m = model(
        [conv("x", "w1", "h"), node("GlobalAveragePool", ["h"], ["g"]), *ops,
         conv("u", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[1]), "w2": weights(6, 8, 1, 1, seed=5),
               **inits}, opset=opset)
    assert_cut(m, {"conv_h": (4, 7), "conv_y": (7, 6)})


def test_squeeze_without_axes_drops_every_unit_axis_batch_included():
    # g [1,8,1,1] -> Squeeze() [8]: channels on axis 0; Unsqueeze(0, 2, 3) puts them back on 1.
    m = model(
        [conv("x", "w1", "h"), node("GlobalAveragePool", ["h"], ["g"]),
         node("Squeeze", ["g"], ["s"]), node("Unsqueeze", ["s", "axes"], ["u"]),
         conv("u", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[1, 6]), "w2": weights(6, 8, 1, 1, seed=5),
               "axes": i64(0, 2, 3)})
    assert_cut(m, {"conv_h": (4, 6), "conv_y": (6, 6)})


def test_squeeze_to_a_vector_then_gemm():
    m = model(
        [conv("x", "w1", "h"), node("GlobalAveragePool", ["h"], ["g"]),
         node("Squeeze", ["g", "axes"], ["s"]), gemm("s", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[1, 2]), "w2": weights(8, 6, seed=5),
               "axes": i64(2, 3)})
    assert_cut(m, {"conv_h": (4, 6), "gemm_y": (6, 6)})


def test_gather_a_token_shifts_the_channel_axis():
    # h[1,5,8] -> Gather(axis=1, index 0) -> [1,8]: channels move from axis 2 to axis 1.
    m = model(
        [matmul("x", "w1", "h"), node("Gather", ["h", "index"], ["g"], axis=1),
         matmul("g", "w2", "y")],
        inputs={"x": (1, 5, 4)}, outputs=["y"],
        inits={"w1": weights(4, 8, zero_cols=[2]), "w2": weights(8, 6, seed=5),
               "index": np.array(0, np.int64)})
    assert_cut(m, {"matmul_h": (4, 7), "matmul_y": (7, 6)})


def test_gather_along_a_spatial_axis():
    m = model(
        [conv("x", "w1", "h"), node("Gather", ["h", "index"], ["g"], axis=3),
         conv("g", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[5]), "w2": weights(6, 8, 1, 1, seed=5),
               "index": i64(0, 3, 7)})
    assert_cut(m, {"conv_h": (4, 7), "conv_y": (7, 6)})


def test_gather_along_the_channel_axis_is_a_barrier():
    m = model(
        [conv("x", "w1", "h"), node("Gather", ["h", "index"], ["g"], axis=1),
         conv("g", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(8, 4, 1, 1, zero_rows=[2]), "w2": weights(6, 3, 1, 1, seed=5),
               "index": i64(0, 2, 5)})
    result = assert_cut(m, {})
    assert blockers(result, "Gather")


# --- Expand and Tile ---------------------------------------------------------------------------

def gate_model(repeat, inits: dict):
    """x -> conv_y (8 filters, 2 and 5 zero) -> GlobalAveragePool -> [repeat to 1x8x4x8] ->
    Mul with y (a gate, as SE blocks' expand_as) -> conv_z."""
    nodes = [conv("x", "w1", "y", "b1"), node("GlobalAveragePool", ["y"], ["pooled"]), repeat,
             node("Mul", ["y", "gate"], ["gated"]), conv("gated", "w2", "z")]
    return model(nodes, {"x": X_SHAPE}, ["z"],
                 {"w1": weights(8, 4, 1, 1, zero_rows=[2, 5]), "b1": zero_bias(8, [2, 5]),
                  "w2": weights(3, 8, 1, 1, seed=2), **inits})


@pytest.mark.parametrize("target, rewritten", [
    ((1, 8, 4, 8), [1, 6, 4, 8]), ((8, 4, 8), [6, 4, 8]), ((1, 1, 4, 8), [1, 1, 4, 8])])
def test_expand_over_other_axes_carries_channels(target, rewritten):
    m = gate_model(node("Expand", ["pooled", "target"], ["gate"]), {"target": i64(*target)})
    result = assert_cut(m, {"conv_y": (4, 6), "conv_z": (6, 3)}, groups=2)
    assert const_input(result.model, "expand_gate").tolist() == rewritten


def test_tile_over_other_axes_carries_channels():
    m = gate_model(node("Tile", ["pooled", "repeats"], ["gate"]), {"repeats": i64(1, 1, 4, 8)})
    result = assert_cut(m, {"conv_y": (4, 6), "conv_z": (6, 3)}, groups=2)
    assert const_input(result.model, "tile_gate").tolist() == [1, 1, 4, 8]


def test_expand_of_the_channel_axis_is_a_barrier():
    # one channel broadcast to eight: every output channel is the same input channel
    nodes = [conv("x", "w1", "y"), node("Expand", ["y", "target"], ["e"]), conv("e", "w2", "z")]
    m = model(nodes, {"x": X_SHAPE}, ["z"],
              {"w1": weights(1, 4, 1, 1), "w2": weights(3, 8, 1, 1, zero_cols=[2]),
               "target": i64(1, 8, 4, 8)})
    result = assert_cut(m, {})
    assert [(b.op_type, b.channels) for b in blockers(result)] == [("Expand", 1)]
