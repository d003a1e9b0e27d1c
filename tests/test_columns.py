"""Intervals per column (channelcut.columns): a divisor that only one column's interval shows to
be above zero, as ReLU linear attention builds it."""

from __future__ import annotations

import numpy as np
import pytest

from builders import assert_cut, bias, conv, model, node, weights

C = 8
X_SHAPE = (1, 4, 4, 8)
INT64_MAX = np.iinfo(np.int64).max


def linear_attention(fill: float, eps: float | None, on_input: bool = False):
    """EfficientViT's LiteMLA on h = conv_h(x), q = k = relu(h), v = h: o = q @ (k^T @
    Pad(v, value=fill) over the width), m = o[..., :-1] / (o[..., -1:] + eps), then conv_k
    (zero weights; bias 0 on channels 0-2, 0.5 on 3-5) and conv_y. With fill 1 the last column
    of o is a sum of products of ReLU outputs, at least 0; the other columns have v's signs.
    `on_input`: h is the graph input x itself, so that no value of the attention has channels."""
    channels = X_SHAPE[1] if on_input else C
    nodes = [node("Identity", ["x"], ["h"]) if on_input else conv("x", "w1", "h", "b1"),
             node("Relu", ["h"], ["r"]),
             node("Transpose", ["r"], ["kt"], perm=[0, 1, 3, 2]),
             node("Pad", ["h", "pads", "fill"], ["v"]), node("MatMul", ["kt", "v"], ["kv"]),
             node("MatMul", ["r", "kv"], ["o"]),
             node("Slice", ["o", "zero", "minus_one", "last"], ["num"]),
             node("Slice", ["o", "minus_one", "end", "last"], ["den"])]
    inits = {**({} if on_input else {"w1": weights(C, 4, 1, 1), "b1": bias(C)}),
             "pads": np.array([0, 0, 0, 0, 0, 0, 0, 1], np.int64),
             "fill": np.array(fill, np.float32), "zero": np.array([0], np.int64),
             "minus_one": np.array([-1], np.int64), "end": np.array([INT64_MAX], np.int64),
             "last": np.array([3], np.int64),
             "wk": np.zeros((6, channels, 1, 1), np.float32),
             "bk": np.array([0, 0, 0, 0.5, 0.5, 0.5], np.float32),
             "w2": weights(3, 6, 1, 1, seed=5)}
    if eps is None:
        nodes.append(node("Div", ["num", "den"], ["m"]))
    else:
        nodes += [node("Add", ["den", "eps"], ["d"]), node("Div", ["num", "d"], ["m"])]
        inits["eps"] = np.array(eps, np.float32)
    return model([*nodes, conv("m", "wk", "k", "bk"), conv("k", "w2", "y")],
                 inputs={"x": X_SHAPE}, outputs=["y"], inits=inits)


@pytest.mark.parametrize("mode, kept", [
    ("zero", {"conv_h": (4, 1), "conv_k": (1, 3), "conv_y": (3, 3)}),
    # conv_k's rows 3-5 are the constant 0.5: folded into conv_y's bias
    ("full", {"conv_h": (4, 1), "conv_k": (1, 1), "conv_y": (1, 3)})])
def test_linear_attention_divides_by_its_last_column_plus_eps_above_zero(mode, kept):
    """The divisor is at least 1e-5: m is finite, so conv_k's zero weights ignore it. The
    attention is unread (conv_h keeps one channel of 8) and conv_k's zero rows (channels 0-2,
    bias 0) go. One interval for all of o holds v's signs: the quotient was taken for possibly
    NaN and nothing went (timm's efficientvit_b0: 277 channel groups cut instead of 2064)."""
    assert_cut(linear_attention(1.0, 1e-5), kept, mode=mode)


@pytest.mark.parametrize("fill, eps", [(1.0, None), (-1.0, 1e-5), (0.0, -1e-5)])
def test_a_last_column_that_may_reach_zero_keeps_the_quotient(fill, eps):
    """Without eps the last column may be 0 (every ReLU output 0 at a row); padded with -1 it
    is at most 0, and eps does not lift it; padded with 0 it is 0, less 1e-5 below. The
    quotient may be NaN or Inf there: conv_k's zero rows stay."""
    assert_cut(linear_attention(fill, eps), {})


def test_the_same_on_a_graph_input_lets_zero_reads_go():
    """No value of the attention has channels (finite.leaves_domain asks the columns)."""
    assert_cut(linear_attention(1.0, 1e-5, on_input=True),
               {"conv_k": (X_SHAPE[1], 3), "conv_y": (3, 3)})
    assert_cut(linear_attention(1.0, None, on_input=True), {})
