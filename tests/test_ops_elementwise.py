"""Elementwise rules: channels line up through the op, and per-channel constants propagate
through it (in float32, as ONNX Runtime computes them) to decide what is cut.

Most tests use one shape: x[1,4,4,8] -> Conv conv_h (8 channels) -> the op under test -> m ->
Conv conv_y (6 channels). A conv_h row of zeros makes its channel the constant bias[c]; the
op decides whether that constant is zero (cut: conv_h loses a row, conv_y a column) or not.
These are zero-only cuts (assert_cut's default mode): a non-zero constant channel is kept.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from channelcut import cli

from builders import (
    assert_cut, bias, blockers, const_input, conv, cut, find_node, initializer, model, node,
    random_feeds, relu, run, weights,
)

C = 8
X_SHAPE = (1, 4, 4, 8)
ZERO_ROW = 2  # the conv_h channel whose weights are all zero


def conv_op_conv(ops: list[onnx.NodeProto], *, biases: dict[int, float] | None = None,
                 zero_rows: tuple[int, ...] = (ZERO_ROW,), inits: dict | None = None,
                 inputs: dict | None = None, unread: tuple[int, ...] = (),
                 opset: int = 18) -> onnx.ModelProto:
    """x -> conv_h (zero rows, chosen biases) -> ops (h in, m out) -> conv_y -> y; conv_y has
    zero weights for the `unread` channels of m."""
    return model(
        [conv("x", "w1", "h", "b1"), *ops, conv("m", "w2", "y")],
        inputs={"x": X_SHAPE, **(inputs or {})}, outputs=["y"],
        inits={"w1": weights(C, 4, 1, 1, zero_rows=zero_rows), "b1": bias(C, at=biases),
               "w2": weights(6, C, 1, 1, zero_cols=unread, seed=5), **(inits or {})},
        opset=opset)


def cut_channels(n: int) -> dict[str, tuple[int, int]]:
    """kept channels when n of conv_h's channels go: conv_h (in, out), conv_y (in, out)."""
    return {"conv_h": (4, C - n), "conv_y": (C - n, 6)} if n else {}


def per_channel(values: dict[int, float], default: float = 1.0, shape=(1, C, 1, 1)) -> np.ndarray:
    """A per-channel constant broadcast over [N, C, H, W]: `default` except at `values`."""
    array = np.full(C, default, np.float32)
    for channel, value in values.items():
        array[channel] = value
    return array.reshape(shape)


# --- activations -------------------------------------------------------------------------------

@pytest.mark.parametrize("bias, cut", [(-1.0, True), (0.0, True), (0.5, False)])
def test_relu_of_zero_row_is_cut_iff_bias_is_not_positive(bias, cut):
    m = conv_op_conv([node("Relu", ["h"], ["m"])], biases={ZERO_ROW: bias})
    assert_cut(m, cut_channels(1 if cut else 0))


def test_relu_cuts_each_non_positive_channel_in_one_group_each():
    m = conv_op_conv([node("Relu", ["h"], ["m"])], zero_rows=(1, 4, 6),
                     biases={1: -0.25, 4: 0.0, 6: 0.75})
    assert_cut(m, cut_channels(2), groups=2)


@pytest.mark.parametrize("op, attrs, bias, cut", [
    ("LeakyRelu", {"alpha": 0.1}, -1.0, False),  # -0.1 is not zero
    ("LeakyRelu", {"alpha": 0.1}, 0.0, True),
    ("Sigmoid", {}, 0.0, False),  # 0.5
    ("Sigmoid", {}, -1.0, False),
    ("HardSwish", {}, 0.0, True),
    ("HardSwish", {}, -3.5, True),  # below -3 HardSwish is exactly 0
    ("HardSwish", {}, -1.0, False),
    ("Tanh", {}, 0.0, True),
    ("Tanh", {}, -1.0, False),
    ("Elu", {}, 0.0, True),
    ("Erf", {}, 0.0, True),
    ("Softplus", {}, 0.0, False),  # log(2)
    ("Neg", {}, 0.0, True),
    ("Abs", {}, -1.0, False),
    ("Identity", {}, 0.0, True),
])
def test_unary_op_value_of_the_constant_decides(op, attrs, bias, cut):
    m = conv_op_conv([node(op, ["h"], ["m"], **attrs)], biases={ZERO_ROW: bias})
    assert_cut(m, cut_channels(1 if cut else 0))


@pytest.mark.parametrize("approximate, bias, cut", [
    ("none", 0.0, True), ("tanh", 0.0, True), ("none", -1.0, False),
])
def test_gelu(approximate, bias, cut):
    m = conv_op_conv([node("Gelu", ["h"], ["m"], approximate=approximate)],
                     biases={ZERO_ROW: bias}, opset=20)
    assert_cut(m, cut_channels(1 if cut else 0))


def test_sigmoid_half_minus_half_is_zero_and_cut():
    # Sigmoid(0) = 0.5 exactly in float32; a per-channel constant of 0.5 cancels it.
    m = conv_op_conv([node("Sigmoid", ["h"], ["s"]), node("Sub", ["s", "half"], ["m"])],
                     biases={ZERO_ROW: 0.0}, inits={"half": per_channel({}, 0.5)})
    result = assert_cut(m, cut_channels(1))
    assert initializer(result.model, "half").shape == (1, C - 1, 1, 1)


# --- Clip --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias, cut", [(-1.0, True), (0.0, True), (2.0, False)])
def test_clip_bounds_as_inputs(bias, cut):
    m = conv_op_conv([node("Clip", ["h", "lo", "hi"], ["m"])], biases={ZERO_ROW: bias},
                     inits={"lo": np.float32(0), "hi": np.float32(6)})
    assert_cut(m, cut_channels(1 if cut else 0))


@pytest.mark.parametrize("bias, cut", [(-1.0, True), (2.0, False)])
def test_clip_bounds_as_attributes_opset_6(bias, cut):
    m = conv_op_conv([node("Clip", ["h"], ["m"], min=0.0, max=6.0)], biases={ZERO_ROW: bias},
                     opset=6)
    assert_cut(m, cut_channels(1 if cut else 0))


def test_clip_with_omitted_min_keeps_a_negative_constant():
    m = conv_op_conv([node("Clip", ["h", "", "hi"], ["m"])], biases={ZERO_ROW: -1.0},
                     inits={"hi": np.float32(6)})
    assert_cut(m, {})


def test_clip_with_computed_bound_carries_channels_but_no_values():
    # The bound comes from a graph input: a zero channel clipped to [lo, 6] may be lo.
    m = conv_op_conv([node("Clip", ["h", "lo", "hi"], ["m"])], biases={ZERO_ROW: 0.0},
                     inits={"hi": np.float32(6)}, inputs={"lo": ()})
    assert_cut(m, {})


# --- broadcasting ops with constant operands ---------------------------------------------------

def test_add_of_constant_that_cancels_the_bias_is_zero_and_the_constant_is_sliced():
    b = 0.375
    m = conv_op_conv([node("Add", ["h", "s"], ["m"])], biases={ZERO_ROW: b},
                     inits={"s": per_channel({ZERO_ROW: -b}, 0.25)})
    result = assert_cut(m, cut_channels(1))
    s = initializer(result.model, "s")
    assert s.shape == (1, C - 1, 1, 1)
    assert not np.any(s == -b)  # the cancelling entry is the one that went
    assert {c.name: (c.src_size, c.pruned_size) for c in result.report.const_changes}["s"] == \
        (C * 4, (C - 1) * 4)


def test_add_of_constant_that_does_not_cancel_keeps_the_channel():
    m = conv_op_conv([node("Add", ["h", "s"], ["m"])], biases={ZERO_ROW: 0.375},
                     inits={"s": per_channel({ZERO_ROW: 0.375}, 0.25)})
    assert_cut(m, {})


def test_add_of_scalar_constant_shifts_every_channel_and_is_not_sliced():
    m = conv_op_conv([node("Add", ["h", "s"], ["m"])], zero_rows=(1, 5),
                     biases={1: 1.5, 5: 2.0}, inits={"s": np.array([-1.5], np.float32)})
    result = assert_cut(m, cut_channels(1))
    assert initializer(result.model, "s").shape == (1,)


def test_sub_of_equal_constant_is_zero_in_either_order():
    b = 0.625
    s = per_channel({ZERO_ROW: b}, 3.0)
    for order in (["h", "s"], ["s", "h"]):
        m = conv_op_conv([node("Sub", order, ["m"])], biases={ZERO_ROW: b}, inits={"s": s})
        result = assert_cut(m, cut_channels(1))
        assert initializer(result.model, "s").shape == (1, C - 1, 1, 1)


def test_mul_by_a_zero_constant_channel_cuts_a_live_channel():
    # conv_h channel 3 has non-zero weights, but Mul makes it 0.
    m = conv_op_conv([node("Mul", ["h", "s"], ["m"])], zero_rows=(),
                     inits={"s": per_channel({3: 0.0}, 2.0)})
    result = assert_cut(m, cut_channels(1))
    assert initializer(result.model, "s").shape == (1, C - 1, 1, 1)


def test_mul_of_a_zero_channel_by_a_constant_is_zero():
    m = conv_op_conv([node("Mul", ["h", "s"], ["m"])], biases={ZERO_ROW: 0.0},
                     inits={"s": per_channel({}, 2.0, shape=(C, 1, 1))})
    result = assert_cut(m, cut_channels(1))
    assert initializer(result.model, "s").shape == (C - 1, 1, 1)


def test_mul_of_two_branches_is_zero_where_either_is_and_couples_both():
    # h has zero channel 2, g zero channel 6 (bias 0); the product loses both; conv_h and conv_g
    # lose the same two rows because Mul couples their channels.
    m = model(
        [conv("x", "w1", "h", "b1"), conv("x", "wg", "g", "bg"), node("Mul", ["h", "g"], ["m"]),
         conv("m", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(C, 4, 1, 1, zero_rows=[2]), "b1": per_channel({2: 0.0}, 0.5, (C,)),
               "wg": weights(C, 4, 1, 1, zero_rows=[6], seed=7),
               "bg": per_channel({6: 0.0}, -0.5, (C,)), "w2": weights(6, C, 1, 1, seed=5)})
    assert_cut(m, {"conv_h": (4, 6), "conv_g": (4, 6), "conv_y": (6, 6)}, groups=2)


def test_div_of_a_zero_channel_by_a_constant_is_zero():
    m = conv_op_conv([node("Div", ["h", "d"], ["m"])], biases={ZERO_ROW: 0.0},
                     inits={"d": per_channel({ZERO_ROW: 4.0}, 2.0)})
    result = assert_cut(m, cut_channels(1))
    assert initializer(result.model, "d").shape == (1, C - 1, 1, 1)


def test_div_of_a_constant_channel_is_kept():
    m = conv_op_conv([node("Div", ["h", "d"], ["m"])], biases={ZERO_ROW: 1.0},
                     inits={"d": per_channel({}, 2.0)})
    assert_cut(m, {})


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_division_by_a_zero_channel_is_nonfinite_whatever_the_dividend(mode):
    """m = h / z with z a computed zero (a conv with zero weights): every channel of m is
    +-Inf or NaN, so the next conv's rows, with zero weights and a bias (0 for rows 0-2),
    are NaN, not their bias: nothing goes. Only a known dividend's quotient was marked, so a
    full cut folded those rows into conv_y's bias (finite outputs where the original's are
    NaN) and a zero-only cut dropped rows 0-2."""
    m = model([conv("x", "w1", "h", "b1"), conv("x", "wz", "z"), node("Div", ["h", "z"], ["m"]),
               conv("m", "wk", "k", "bk"), conv("k", "w2", "y")],
              inputs={"x": X_SHAPE}, outputs=["y"],
              inits={"w1": weights(C, 4, 1, 1), "b1": bias(C),
                     "wz": np.zeros((1, 4, 1, 1), np.float32),
                     "wk": np.zeros((6, C, 1, 1), np.float32),
                     "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
                     "w2": weights(3, 6, 1, 1, seed=5)})
    result = assert_cut(m, {}, mode=mode)
    assert np.isnan(run(result.model, random_feeds(m))["y"]).all()


@pytest.mark.parametrize("mode", ["zero", "full"])
@pytest.mark.parametrize("divisor", ["constant", "known"])
def test_division_by_a_denormal_overflows_and_is_nonfinite(mode, divisor):
    """m = h / d with d's channel 3 a denormal, -1e-40 (a constant operand, or a conv row
    with zero weights and that bias): h[3] / -1e-40 is +-Inf wherever |h[3]| > 0.04, so
    conv_k's rows (zero weights, a bias) are NaN there, not their bias: nothing goes
    (bench/fuzz.py seed 48: the divisor, along another axis than the channels tracked,
    was taken to divide finitely; the cut's outputs had finite values where the original's
    were NaN, and its verification refused it)."""
    small = per_channel({3: -1e-40}, 2.0, (C,))
    if divisor == "constant":
        nodes, inits = [], {"d": small.reshape(1, C, 1, 1)}
    else:  # over sigmoid(x) in (0, 1) with weights >= 0: d's other channels are at least 2
        nodes = [node("Sigmoid", ["x"], ["s"]), conv("s", "wd", "d", "bd")]
        inits = {"wd": np.abs(weights(C, 4, 1, 1, zero_rows=[3], seed=3)), "bd": small}
    m = model([conv("x", "w1", "h", "b1"), *nodes, node("Div", ["h", "d"], ["m"]),
               conv("m", "wk", "k", "bk"), conv("k", "w2", "y")],
              inputs={"x": X_SHAPE}, outputs=["y"],
              inits={"w1": weights(C, 4, 1, 1), "b1": bias(C), **inits,
                     "wk": np.zeros((6, C, 1, 1), np.float32),
                     "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
                     "w2": weights(3, 6, 1, 1, seed=5)})
    # conv_k reads m's other channels with zero weights: they go, as with a zero divisor
    result = assert_cut(m, {"conv_h": (4, 1), "conv_k": (1, 6), **(
        {"conv_d": (4, 1)} if divisor == "known" else {})}, mode=mode)
    assert np.isnan(run(result.model, random_feeds(m))["y"]).any()


def test_zero_divisor_channels_stay_with_the_nan_they_make():
    """m = h / d with d's channels 2 and 5 zero (zero rows of a 3x3 conv): m is NaN or +-Inf
    there, so conv_k's rows (zero weights, a bias) are NaN, not their bias. conv_k reads the
    other 6 channels of m with zero weights: they go. d keeps its zero channels: taken and
    put back at the Div as zeros (the conv saves 2 rows of 36 weights), they are an unknown
    operand to a cut of the cut model, which assumes a computed divisor is not zero and took
    conv_k's rows for their biases. d reads sigmoid(x) in (0, 1) through weights >= 0: its
    other channels are at least their bias, 0.5, so their quotients are finite."""
    m = model([conv("x", "w1", "h", "b1"), node("Sigmoid", ["x"], ["s"]),
               conv("s", "wd", "d", "bd", pads=1),
               node("Div", ["h", "d"], ["m"]), conv("m", "wk", "k", "bk"), conv("k", "w2", "y")],
              inputs={"x": X_SHAPE}, outputs=["y"],
              inits={"w1": weights(C, 4, 1, 1), "b1": bias(C),
                     "wd": np.abs(weights(C, 4, 3, 3, zero_rows=[2, 5], seed=3)),
                     "bd": per_channel({2: 0.0, 5: 0.0}, 0.5, (C,)),
                     "wk": np.zeros((6, C, 1, 1), np.float32),
                     "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
                     "w2": weights(3, 6, 1, 1, seed=5)})
    result = assert_cut(m, {"conv_h": (4, 2), "conv_d": (4, 2), "conv_k": (2, 6)}, mode="full")
    assert cut(result.model, "full").report.removed_groups == 0


@pytest.mark.parametrize("mode", ["zero", "full"])
@pytest.mark.parametrize("op, edge", [
    ("Div", "pad"), ("Div", "matmul"), ("Reciprocal", "pad"), ("Reciprocal", "matmul"),
    ("Log", "pad"), ("Sqrt", "pad")])
def test_values_constants_put_outside_a_domain_make_nan_there(op, edge, mode):
    """d = sigmoid(conv_d(x)) is in (0, 1), but constants put values past the op's domain into
    it at some widths, for every input: a Pad's border (fill 0; -1 for Sqrt), or a MatMul over
    the width whose weight columns 0 and 5 are zero. m = h / d, 1 / d, log(d) or sqrt(d) is
    +-Inf or NaN there, so conv_k's rows (zero weights, a bias) are NaN, not their bias:
    nothing goes. Only a divisor known to be zero was checked (and, for log and sqrt, none):
    both cuts took conv_k's rows for their biases and verification refused them (bench/fuzz.py
    seed 48: a Div by a MatMul over the width; a property-test draw: by a Pad's zero fill)."""
    if edge == "pad":
        fill = -1.0 if op == "Sqrt" else 0.0
        nodes = [conv("x", "wd", "dc", "bd"), node("Sigmoid", ["dc"], ["ds"]),
                 node("Pad", ["ds", "pads", "fill"], ["d"])]
        inits = {"wd": weights(C, 4, 1, 3, seed=3),
                 "pads": np.array([0, 0, 0, 1, 0, 0, 0, 1], np.int64),
                 "fill": np.array(fill, np.float32)}
    else:
        nodes = [conv("x", "wd", "dc", "bd"), node("Sigmoid", ["dc"], ["ds"]),
                 node("MatMul", ["ds", "wm"], ["d"])]
        inits = {"wd": weights(C, 4, 1, 1, seed=3),
                 "wm": np.abs(weights(8, 8, zero_cols=[0, 5], seed=4))}
    if op == "Div":  # m = h / d
        nodes += [conv("x", "w1", "h", "b1"), node("Div", ["h", "d"], ["m"])]
        inits |= {"w1": weights(C, 4, 1, 1), "b1": bias(C)}
    else:
        nodes.append(node(op, ["d"], ["m"]))
    m = model([*nodes, conv("m", "wk", "k", "bk"), conv("k", "w2", "y")],
              inputs={"x": X_SHAPE}, outputs=["y"],
              inits={"bd": bias(C, seed=6), **inits,
                     "wk": np.zeros((6, C, 1, 1), np.float32),
                     "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
                     "w2": weights(3, 6, 1, 1, seed=5)})
    result = assert_cut(m, {}, mode=mode)
    y = run(result.model, random_feeds(m))["y"]
    assert np.isnan(y).any() and not np.isnan(y).all()


@pytest.mark.parametrize("mode", ["zero", "full"])
@pytest.mark.parametrize("order", ["unbounded first", "unbounded second"])
def test_a_divisor_that_is_an_unbounded_value_times_one_that_may_be_zero_may_be_zero(order,
                                                                                    mode):
    """d = a * relu(r) is 0 wherever r <= 0, whatever a (a conv of the unbounded input): the
    products of the interval ends hold inf * 0, which is 0 only where the end is a value
    (0 times a finite value), so d's interval is unbounded, either operand first, and holds
    zero. m = h / d is +-Inf there and conv_k's zero weights make NaN of it, not its bias:
    nothing goes."""
    operands = ["a", "r"] if order == "unbounded first" else ["r", "a"]
    m = model([conv("x", "wa", "a", "ba"), conv("x", "wr", "rc", "br"), relu("rc", "r"),
               node("Mul", operands, ["d"]), conv("x", "w1", "h", "b1"),
               node("Div", ["h", "d"], ["m"]), conv("m", "wk", "k", "bk"),
               conv("k", "w2", "y")],
              inputs={"x": X_SHAPE}, outputs=["y"],
              inits={"wa": weights(C, 4, 1, 1, seed=2), "ba": bias(C, seed=3),
                     "wr": weights(C, 4, 1, 1, seed=4), "br": bias(C, seed=5),
                     "w1": weights(C, 4, 1, 1), "b1": bias(C),
                     "wk": np.zeros((6, C, 1, 1), np.float32),
                     "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
                     "w2": weights(3, 6, 1, 1, seed=6)})
    result = assert_cut(m, {}, mode=mode)
    y = run(result.model, random_feeds(m))["y"]
    assert np.isnan(y).any()


@pytest.mark.parametrize("op", ["Div", "Reciprocal", "Log", "Sqrt", "Pow", "Pow-computed"])
def test_a_value_without_channels_past_a_domain_makes_nan(op):
    """The same with no channels tracked: d = Pad(sigmoid(x)) reads the graph input, and so do
    m = op(d) (Div: sigmoid(x) / d; Pow: d ** -1, and d ** (d - 1), a computed exponent,
    0 ** -1 at the ends) and the Pad's fill, 0 (-1 for Sqrt), at the width's ends.
    m is NaN or +-Inf there for every input, so conv_k's rows (zero weights, a bias) are NaN
    there: nothing goes. Only channels were checked, so m was taken to be finite."""
    fill = -1.0 if op == "Sqrt" else 0.0
    nodes = [node("Sigmoid", ["x"], ["s"]), node("Pad", ["s", "pads", "fill"], ["d"])]
    if op == "Div":
        nodes += [node("Pad", ["s", "pads", "one"], ["n"]), node("Div", ["n", "d"], ["m"])]
    elif op == "Pow":
        nodes.append(node("Pow", ["d", "minus_one"], ["m"]))
    elif op == "Pow-computed":
        nodes += [node("Sub", ["d", "one"], ["e"]), node("Pow", ["d", "e"], ["m"])]
    else:
        nodes.append(node(op, ["d"], ["m"]))
    m = model([*nodes, conv("m", "wk", "k", "bk"), conv("k", "w2", "y")],
              inputs={"x": X_SHAPE}, outputs=["y"],
              inits={"pads": np.array([0, 0, 0, 1, 0, 0, 0, 1], np.int64),
                     "fill": np.array(fill, np.float32),
                     **({"one": np.array(1, np.float32)} if op in ("Div", "Pow-computed")
                        else {}),
                     **({"minus_one": np.array(-1, np.float32)} if op == "Pow" else {}),
                     "wk": np.zeros((6, 4, 1, 1), np.float32),
                     "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
                     "w2": weights(3, 6, 1, 1, seed=5)})
    result = assert_cut(m, {}, mode="full")
    y = run(result.model, random_feeds(m))["y"]
    assert np.isnan(y).any() and not np.isnan(y).all()


@pytest.mark.parametrize("op, fill, exponent", [
    ("Div", 1.0, None), ("Reciprocal", 1.0, None), ("Log", 1.0, None), ("Sqrt", 0.0, None),
    ("Pow", 0.0, 0.5), ("Pow", 2.0, -1.0), ("Pow", -1.0, 3.0)])
def test_a_value_without_channels_inside_a_domain_lets_zero_reads_go(op, fill, exponent):
    """Its counterpart: d = Pad(relu(x) + 1) is at least 1, and the Pad's fill keeps it inside
    the op's domain (no zero divisor, log of 1, sqrt of 0, 0 ** 0.5, 2 ** -1, (-1) ** 3: a
    whole exponent takes any base). m is finite, so conv_k's zero rows, channels 0-2 (bias
    0), are zero and go. (Not sigmoid(x): it is 0 in float32 below about -104.)"""
    nodes = [node("Relu", ["x"], ["r"]), node("Add", ["r", "one"], ["s"]),
             node("Pad", ["s", "pads", "fill"], ["d"])]
    inits = {"pads": np.array([0, 0, 0, 1, 0, 0, 0, 1], np.int64),
             "fill": np.array(fill, np.float32), "one": np.array(1, np.float32)}
    if op == "Div":
        nodes += [node("Pad", ["s", "pads", "fill"], ["n"]), node("Div", ["n", "d"], ["m"])]
    elif op == "Pow":
        nodes.append(node("Pow", ["d", "exponent"], ["m"]))
        inits["exponent"] = np.array(exponent, np.float32)
    else:
        nodes.append(node(op, ["d"], ["m"]))
    m = model([*nodes, conv("m", "wk", "k", "bk"), conv("k", "w2", "y")],
              inputs={"x": X_SHAPE}, outputs=["y"],
              inits={**inits, "wk": np.zeros((6, 4, 1, 1), np.float32),
                     "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
                     "w2": weights(3, 6, 1, 1, seed=5)})
    assert_cut(m, {"conv_k": (4, 3), "conv_y": (3, 3)})


@pytest.mark.parametrize("base, exponent, finite", [
    ("relu + 1", 0.5, True), ("relu + 1", -1.0, True), ("relu", 0.5, True),
    ("relu + 1", "per channel", True),  # -0.5 at one channel, 2 elsewhere
    ("relu", -1.0, False),  # 0 ** -1 = Inf
    ("relu + 1e-30", -2.0, False),  # 1e-30 ** -2 overflows
    ("conv", 0.5, False),  # (-1) ** 0.5 = NaN
    ("conv", 3.0, True)])  # a whole exponent takes any base
def test_a_constant_exponent_of_tracked_channels_marks_only_bases_outside_its_domain(
        base, exponent, finite):
    """m = b ** p for b one of conv_h's tracked channels, through a Relu and an Add: conv_k's
    weights are zero, so where m is finite its rows are their biases (channels 0-2 zero, they
    go) and nothing reads m; where the base's interval lets p make NaN or Inf (a fractional p
    of a base that may be negative, a negative one of a base that may be zero or so small its
    power overflows) they stay: 0 times NaN is NaN. Every negative or fractional p kept them,
    whatever the base."""
    nodes = [conv("x", "w1", "h", "b1")]
    inits = {"w1": weights(C, 4, 1, 1), "b1": bias(C)}
    if base != "conv":
        nodes.append(relu("h", "r" if base != "relu" else "b"))
    if base.startswith("relu +"):
        nodes.append(node("Add", ["r", "shift"], ["b"]))
        inits["shift"] = np.array(1.0 if base == "relu + 1" else 1e-30, np.float32)
    if exponent == "per channel":
        inits["p"] = per_channel({3: -0.5}, 2.0)
    else:
        inits["p"] = np.array(exponent, np.float32)
    m = power_read_by_zero_weights(nodes, ["b" if base != "conv" else "h", "p"], inits)
    assert_cut_where_the_power_is_finite(m, finite)


def power_read_by_zero_weights(nodes: list, pow_inputs: list[str], inits: dict):
    """`nodes`, then m = Pow(*pow_inputs) read by conv_k (zero weights; bias 0 on channels
    0-2, 0.5 on 3-5), then conv_y."""
    return model([*nodes, node("Pow", pow_inputs, ["m"]),
                  conv("m", "wk", "k", "bk"), conv("k", "w2", "y")],
                 inputs={"x": X_SHAPE}, outputs=["y"],
                 inits={**inits, "wk": np.zeros((6, C, 1, 1), np.float32),
                        "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
                        "w2": weights(3, 6, 1, 1, seed=5)})


def assert_cut_where_the_power_is_finite(m, finite: bool, scale: float = 1.0) -> None:
    """A finite power is not read (conv_k's zero weights): conv_h keeps one channel, conv_k's
    zero rows go; else nothing goes and y has NaN (on inputs times `scale`)."""
    if finite:
        assert_cut(m, {"conv_h": (4, 1), "conv_k": (1, 3), "conv_y": (3, 3)})
    else:
        result = assert_cut(m, {})
        feeds = {"x": scale * random_feeds(m)["x"]}
        assert np.isnan(run(result.model, feeds)["y"]).any()


@pytest.mark.parametrize("base, exponent, finite", [
    (0.5, "conv", False),  # 0.5 ** -200 overflows (bench/fuzz.py seed 67, its large inputs)
    (2.0, "conv", False),  # 2 ** 200 too
    (1.0, "conv", True),  # 1 ** e is 1 for every e
    (0.5, "sigmoid", True),  # 0.5 ** [0, 1] lies in [0.5, 1]
    (2.0, "sigmoid", True)])
def test_a_computed_exponent_of_a_constant_base_marks_the_powers_that_may_overflow(
        base, exponent, finite):
    """m = c ** e for e one of conv_h's tracked channels (or their Sigmoid): conv_k's weights
    are zero, so where m is finite nothing reads it and conv_h's channels go but one; a
    computed exponent is exp(e ln c), as easily Inf as Exp, and 0 times Inf is NaN. Only a
    base at or below zero was checked, and the zero-only cut of 0.5 ** conv took 3 of its 4
    channels for unread: NaN at 27 positions of the cut model where the original had 30."""
    nodes = [conv("x", "w1", "h", "b1")]
    if exponent == "sigmoid":
        nodes.append(node("Sigmoid", ["h"], ["s"]))
    m = power_read_by_zero_weights(nodes, ["c", "s" if exponent == "sigmoid" else "h"],
                                   {"w1": weights(C, 4, 1, 1), "b1": bias(C),
                                    "c": np.array(base, np.float32)})
    assert_cut_where_the_power_is_finite(m, finite, scale=300)  # exponents of a few hundred


@pytest.mark.parametrize("norm", ["ReduceL2", "ReduceL1", "ReduceSumSquare"])
def test_a_norm_plus_eps_is_a_divisor_above_zero(norm):
    """ConvNeXt-V2's global response norm: g = norm of h over the plane, m = h * g /
    (mean of g over the channels + 1e-6). A norm is at least 0, so the divisor is at least
    1e-6 and m is finite: conv_k's zero rows, channels 0-2 (bias 0), are zero and go. With no
    bounds for the norm its interval was unbounded, the quotient possibly NaN, and nothing
    went (timm's convnextv2_atto naively pruned: 80 channel groups cut instead of 4600)."""
    m = model([conv("x", "w1", "h", "b1"), node(norm, ["h", "plane"], ["g"]),
               node("ReduceMean", ["g", "channels"], ["n"]), node("Add", ["n", "eps"], ["d"]),
               node("Div", ["g", "d"], ["q"]), node("Mul", ["h", "q"], ["m"]),
               conv("m", "wk", "k", "bk"), conv("k", "w2", "y")],
              inputs={"x": X_SHAPE}, outputs=["y"],
              inits={"w1": weights(C, 4, 1, 1), "b1": bias(C), "eps": np.array(1e-6, np.float32),
                     "plane": np.array([2, 3], np.int64), "channels": np.array([1], np.int64),
                     "wk": np.zeros((6, C, 1, 1), np.float32),
                     "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
                     "w2": weights(3, 6, 1, 1, seed=5)})
    assert_cut(m, {"conv_k": (C, 3), "conv_y": (3, 3)})


@pytest.mark.parametrize("op, const, bias, cut", [
    ("Max", 0.0, -1.0, True),  # Max(-1, 0) = 0
    ("Max", 0.0, 1.0, False),
    ("Min", 0.0, 1.0, True),
    ("Min", 0.0, -1.0, False),
    ("Pow", 2.0, 0.0, True),
    ("Pow", 0.0, 0.0, False),  # 0 ** 0 = 1
])
def test_max_min_pow_with_a_scalar_constant(op, const, bias, cut):
    m = conv_op_conv([node(op, ["h", "c"], ["m"])], biases={ZERO_ROW: bias},
                     inits={"c": np.array(const, np.float32)})
    assert_cut(m, cut_channels(1 if cut else 0))


def test_prelu_slope_decides_and_is_sliced():
    # Channels 2 and 5 are the constant -1; slope 0 makes channel 2 zero, slope 0.25 keeps 5.
    slope = per_channel({2: 0.0}, 0.25, shape=(C, 1, 1))
    m = conv_op_conv([node("PRelu", ["h", "slope"], ["m"])], zero_rows=(2, 5),
                     biases={2: -1.0, 5: -1.0}, inits={"slope": slope})
    result = assert_cut(m, cut_channels(1))
    kept_slope = initializer(result.model, "slope")
    assert kept_slope.shape == (C - 1, 1, 1)
    assert np.all(kept_slope == 0.25)


# --- Cast --------------------------------------------------------------------------------------

def test_cast_through_float16_is_transparent():
    m = conv_op_conv([node("Cast", ["h"], ["h16"], to=TensorProto.FLOAT16),
                      node("Cast", ["h16"], ["m"], to=TensorProto.FLOAT)],
                     biases={ZERO_ROW: 0.0})
    assert_cut(m, cut_channels(1))


def test_cast_to_float16_rounds_a_tiny_constant_to_zero():
    # 1e-8 is below float16's smallest subnormal: the runtime's value is exactly 0.
    m = conv_op_conv([node("Cast", ["h"], ["h16"], to=TensorProto.FLOAT16),
                      node("Cast", ["h16"], ["m"], to=TensorProto.FLOAT)],
                     biases={ZERO_ROW: 1e-8})
    assert_cut(m, cut_channels(1))


def test_cast_to_int_is_a_barrier():
    m = conv_op_conv([node("Cast", ["h"], ["hi"], to=TensorProto.INT32),
                      node("Cast", ["hi"], ["m"], to=TensorProto.FLOAT)],
                     biases={ZERO_ROW: 0.0})
    result = assert_cut(m, {})
    assert blockers(result, "Cast")


# --- operands that are not constants ------------------------------------------------------------

def test_graph_input_operand_with_full_channel_axis_pins_the_group():
    # conv_y ignores channel 2 of m = h + z, so only z (which cannot lose channels) keeps it.
    m = conv_op_conv([node("Add", ["h", "z"], ["m"])], unread=(ZERO_ROW,),
                     inputs={"z": X_SHAPE[:1] + (C,) + X_SHAPE[2:]})
    result = assert_cut(m, {})
    (blocker,) = blockers(result)
    assert (blocker.op_type, blocker.channels) == ("Add", 1)


def test_unread_channel_of_a_sum_with_a_broadcast_graph_input_is_cut():
    m = conv_op_conv([node("Add", ["h", "z"], ["m"])], unread=(ZERO_ROW,),
                     inputs={"z": (1, 1, 4, 8)})
    assert_cut(m, cut_channels(1))


def test_graph_input_operand_broadcast_over_channels_does_not_pin():
    # z[1,1,4,8] is the same for every channel: zero * z is still zero, and nothing to slice.
    m = conv_op_conv([node("Mul", ["h", "z"], ["m"])], biases={ZERO_ROW: 0.0},
                     inputs={"z": (1, 1, 4, 8)})
    assert_cut(m, cut_channels(1))


def test_graph_input_operand_broadcast_over_channels_makes_values_unknown():
    m = conv_op_conv([node("Add", ["h", "z"], ["m"])], biases={ZERO_ROW: 0.0},
                     inputs={"z": (1, 1, 4, 8)})
    assert_cut(m, {})


# --- the full cut: non-zero constants fold into the reader ------------------------------------

@pytest.mark.parametrize("op, attrs, bias_value", [
    ("LeakyRelu", {"alpha": 0.1}, -1.0), ("Sigmoid", {}, 0.0), ("Softplus", {}, 0.0),
])
def test_full_cut_folds_a_nonzero_constant_into_the_reader_bias(op, attrs, bias_value):
    m = conv_op_conv([node(op, ["h"], ["m"], **attrs)], biases={ZERO_ROW: bias_value})
    result = assert_cut(m, cut_channels(1), mode="full")
    reader = find_node(result.model, "conv_y")
    assert len(reader.input) == 3 and initializer(result.model, reader.input[2]).shape == (6,)


# --- the full cut: a constant channel cut from one operand is reinserted -----------------------

def test_full_cut_reinsertion_never_grows_weights():
    # Channel 2 of a is the constant 0.5; b is live, so the Add keeps the channel and the full
    # cut may only drop it from conv_a by adding 0.5 back after it. conv_y pads, so the
    # constant cannot fold into it.
    m = model(
        [conv("x", "wa", "a", "ba", pads=1), conv("x", "wb", "b"),
         node("Add", ["a", "b"], ["s"]), conv("s", "w2", "y", pads=1)],
        inputs={"x": (1, 2, 4, 8)}, outputs=["y"],
        inits={"wa": weights(C, 2, 3, 3, zero_rows=[ZERO_ROW]), "ba": bias(C, at={ZERO_ROW: 0.5}),
               "wb": weights(C, 2, 1, 1, seed=3), "w2": weights(6, C, 3, 3, seed=5)})
    result = cut(m, "full")
    assert result.report.weight_bytes_after <= result.report.weight_bytes_before
    np.testing.assert_allclose(run(result.model, random_feeds(m))["y"],
                               run(m, random_feeds(m))["y"], rtol=1e-4, atol=1e-5)


# --- a one-channel tensor broadcast over the channels of another -------------------------------

# One channel against four, then a grouped conv (2 groups) or a depthwise one (4 groups):
# conv_a's rows 1 and 3 are zero, conv_b's only row is zero. Add/Sub: s = +-a, channels 1 and 3
# zero (one per conv group, so the groups stay balanced). Mul: s is zero everywhere, a tensor
# keeps one channel. Div: 0/a is unknown where a is (NaN where a is zero): nothing goes.
BROADCAST_CUTS = {
    ("Add", 4): {"conv_a": (4, 2), "conv_d": (2, 2), "conv_y": (2, 3)},
    ("Add", 2): {"conv_a": (4, 2), "conv_d": (2, 4)},
    ("Sub", 4): {"conv_a": (4, 2), "conv_d": (2, 2), "conv_y": (2, 3)},
    ("Sub", 2): {"conv_a": (4, 2), "conv_d": (2, 4)},
    ("Mul", 4): {"conv_a": (4, 1), "conv_d": (1, 1), "conv_y": (1, 3)},
    ("Mul", 2): {"conv_a": (4, 1), "conv_d": (1, 1), "conv_y": (1, 3)},
    ("Div", 4): {},
    ("Div", 2): {},
}


def one_channel_broadcast(op: str, groups: int) -> onnx.ModelProto:
    """x -> conv_a (4 channels) and conv_b (1 zero channel) -> op(b, a) -> conv_d (grouped,
    4 outputs) -> conv_y -> y. The broadcast operand comes first, as in the models that
    crashed: the output's channels must come from a, not from b."""
    return model(
        [conv("x", "wa", "a"), conv("x", "wb", "b"), node(op, ["b", "a"], ["s"]),
         conv("s", "wd", "d", group=groups, pads=1), conv("d", "wy", "y")],
        inputs={"x": (1, 4, 6, 6)}, outputs=["y"],
        inits={"wa": weights(4, 4, 1, 1, zero_rows=[1, 3]),
               "wb": np.zeros((1, 4, 1, 1), np.float32),
               "wd": weights(4, 4 // groups, 3, 3, seed=2), "wy": weights(3, 4, 1, 1, seed=3)})


@pytest.mark.parametrize("mode", ["zero", "full"])
@pytest.mark.parametrize("op, groups", list(BROADCAST_CUTS))
def test_one_channel_broadcast_into_a_grouped_conv(op, groups, mode):
    result = assert_cut(one_channel_broadcast(op, groups), BROADCAST_CUTS[op, groups], mode=mode)
    # b's one channel is broadcast: it stays, whatever its value
    assert [b.reason for b in blockers(result, op)] == ["a channel broadcast over all channels"]


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_one_channel_broadcast_against_a_constant_gets_fresh_channels(mode):
    # h's zero channel 2 (the only one read) is broadcast over the constant's 8 channels:
    # m = h2 * k is zero everywhere, its channels are m's own (all go but the one a tensor
    # keeps), and the constant is sliced with them.
    m = model(
        [conv("x", "w1", "h"), node("Slice", ["h", "starts", "ends", "axes"], ["h2"]),
         node("Mul", ["h2", "k"], ["m"]), conv("m", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(C, 4, 1, 1, zero_rows=[ZERO_ROW]),
               "starts": np.array([ZERO_ROW]), "ends": np.array([ZERO_ROW + 1]),
               "axes": np.array([1]), "k": per_channel({}, 2.0), "w2": weights(6, C, 1, 1)})
    result = assert_cut(m, {"conv_h": (4, 1), "conv_y": (1, 6)}, mode=mode)
    assert initializer(result.model, "k").shape == (1, 1, 1, 1)


@pytest.mark.parametrize("flags", [[], ["--zero-only"]])
def test_one_channel_broadcast_cuts_from_the_cli_without_a_traceback(flags, tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.delenv("CHANNELCUT_STRICT")  # as a user runs it
    path, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(one_channel_broadcast("Mul", 4), str(path))
    code = cli.main(["cut", str(path), "-o", str(out), *flags])
    _, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
    assert const_input(onnx.load(str(out)), "conv_a").shape == (1, 4, 1, 1)


def test_unread_channels_of_a_one_channel_tensor_plus_a_constant_are_cut():
    # m = h0 + k: h0 is one live channel, m's 8 channels are its own; conv_y reads none of
    # m's channels 3 and 5, so they go and k loses them.
    k = per_channel({c: float(c) for c in range(C)})
    m = model(
        [conv("x", "w1", "h"), node("Slice", ["h", "starts", "ends", "axes"], ["h0"]),
         node("Add", ["h0", "k"], ["m"]), conv("m", "w2", "y")],
        inputs={"x": X_SHAPE}, outputs=["y"],
        inits={"w1": weights(C, 4, 1, 1), "starts": np.array([0]), "ends": np.array([1]),
               "axes": np.array([1]), "k": k, "w2": weights(6, C, 1, 1, zero_cols=[3, 5])})
    result = assert_cut(m, {"conv_h": (4, 1), "conv_y": (6, 6)})
    np.testing.assert_array_equal(initializer(result.model, "k"), np.delete(k, [3, 5], axis=1))
