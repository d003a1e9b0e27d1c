"""channel_groups finds coupled channels across residuals and concats; zero_groups zeroes
their producers so that the zero-only cut removes exactly those groups."""

from __future__ import annotations

import channelcut
from builders import assert_cut, bias, conv, model, node, relu, weights
from channelcut.groups import channel_groups, zero_groups


def residual_and_concat():
    """x -> stem -> [block: a -> b] + stem -> relu -> concat(., side conv) -> head conv -> y"""
    inits = {"ws": weights(4, 3, 3, 3, seed=1), "bs": bias(4, seed=1),
             "wa": weights(4, 4, 3, 3, seed=2), "ba": bias(4, seed=2),
             "wb": weights(4, 4, 3, 3, seed=3), "bb": bias(4, seed=3),
             "wc": weights(2, 4, 1, 1, seed=4), "bc": bias(2, seed=4),
             "wh": weights(5, 6, 1, 1, seed=5), "bh": bias(5, seed=5)}
    nodes = [conv("x", "ws", "s", "bs", pads=1), relu("s", "rs"),
             conv("rs", "wa", "a", "ba", pads=1), relu("a", "ra"),
             conv("ra", "wb", "b", "bb", pads=1), node("Add", ["b", "rs"], ["sum"]),
             relu("sum", "r"), conv("r", "wc", "c", "bc"),
             node("Concat", ["r", "c"], ["cat"], axis=1), conv("cat", "wh", "y", "bh")]
    return model(nodes, {"x": [1, 3, 6, 6]}, ["y"], inits)


def test_residual_group_holds_every_producer_of_the_stream():
    groups = channel_groups(residual_and_concat())
    stream = [g for g in groups if ("conv_s", 1) in g.rows]
    assert len(stream) == 1
    assert set(stream[0].rows) == {("conv_s", 1), ("conv_b", 1)}
    assert ("cat", 1) in stream[0].channels  # the concat slot of that channel
    side = next(g for g in groups if ("conv_c", 0) in g.rows)
    assert ("cat", 4) in side.channels  # offset by the 4 channels before it
    head = [g for g in groups if g.rows == (("conv_y", 0),)]
    assert head and head[0].pinned  # a graph output


def test_zeroing_groups_lets_the_zero_only_cut_remove_exactly_them():
    m = residual_and_concat()
    groups = [g for g in channel_groups(m) if not g.pinned]
    chosen = [g for g in groups if ("conv_s", 1) in g.rows or ("conv_c", 0) in g.rows
              or ("conv_a", 2) in g.rows]
    before = m.SerializeToString()
    zeroed = zero_groups(m, chosen)
    assert m.SerializeToString() == before  # zero_groups works on a copy
    result = assert_cut(zeroed, {"conv_s": (3, 3), "conv_a": (3, 3), "conv_b": (3, 3),
                                 "conv_c": (3, 1), "conv_y": (4, 5)}, mode="zero", groups=3)
    assert result.report.weight_bytes_after < result.report.weight_bytes_before
    assert channelcut.cut(m, fold=False).report.removed_groups == 0
