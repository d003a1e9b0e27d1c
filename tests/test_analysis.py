"""Unit tests of analysis building blocks: the union-find over channel couplings, the
reshape channel mapping, and the removal fixed point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channelcut.analysis import connected_components
from channelcut.channels import ChannelInfo, identity_positions
from channelcut.ops.layout import map_reshape

from builders import (assert_cut, bias, blockers, conv, cut, kept_channels, model, node,
                      random_feeds, relu, run, weights)
from channelcut.errors import ChannelcutError


# --- connected_components ----------------------------------------------------------------------

def reference_components(n: int, edges: list[tuple[int, int]]) -> list[frozenset[int]]:
    """Plain sequential union-find: the partition of 0..n-1 as a sorted list of sets."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: dict[int, set[int]] = {}
    for x in range(n):
        groups.setdefault(find(x), set()).add(x)
    return sorted((frozenset(g) for g in groups.values()), key=min)


def partition(labels: np.ndarray) -> list[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for index, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(index)
    return sorted((frozenset(g) for g in groups.values()), key=min)


def components(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    labels = connected_components(n, a, b)
    assert labels.shape == (n,)
    assert labels.dtype == np.int64
    if n:
        assert sorted(set(labels.tolist())) == list(range(labels.max() + 1))  # labels 0..k-1
    return labels


def test_no_edges_every_node_alone():
    labels = components(5, [])
    assert partition(labels) == [frozenset({i}) for i in range(5)]


def test_no_nodes():
    assert components(0, []).size == 0


def test_self_loops_and_duplicate_edges():
    labels = components(4, [(1, 1), (2, 3), (3, 2), (2, 3)])
    assert partition(labels) == [frozenset({0}), frozenset({1}), frozenset({2, 3})]


def test_two_components():
    labels = components(6, [(0, 2), (2, 4), (1, 3), (5, 3)])
    assert partition(labels) == [frozenset({0, 2, 4}), frozenset({1, 3, 5})]


def test_node_joined_to_two_smaller_roots_needs_a_second_round():
    # Node 2 hooks under min(0, 1) = 0 in round one; 1 only meets 0 in round two.
    labels = components(3, [(2, 0), (2, 1)])
    assert partition(labels) == [frozenset({0, 1, 2})]


@pytest.mark.parametrize("order", ["forward", "backward", "interleaved"])
def test_long_chain_is_one_component(order):
    n = 257
    edges = [(i, i + 1) for i in range(n - 1)]
    if order == "backward":
        edges = [(b, a) for a, b in reversed(edges)]
    elif order == "interleaved":
        edges = edges[::2] + edges[1::2]
    labels = components(n, edges)
    assert np.all(labels == 0)


def test_chain_through_shuffled_ids_is_one_component():
    rng = np.random.default_rng(7)
    perm = rng.permutation(500)
    edges = [(int(perm[i]), int(perm[i + 1])) for i in range(499)]
    rng.shuffle(edges)
    assert np.all(components(500, edges) == 0)


def test_star_and_isolated_nodes():
    labels = components(8, [(7, 0), (7, 3), (7, 5), (7, 1)])
    assert partition(labels) == [frozenset({0, 1, 3, 5, 7}), frozenset({2}), frozenset({4}),
                                 frozenset({6})]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))))
def test_matches_sequential_union_find(case):
    n, edges = case
    assert partition(components(n, edges)) == reference_components(n, edges)


# --- map_reshape -------------------------------------------------------------------------------

def info(axis: int, positions: np.ndarray) -> ChannelInfo:
    return ChannelInfo(axis=axis, positions=np.asarray(positions, dtype=np.int64), base=0)


def test_flatten_makes_blocks_of_spatial_positions():
    axis, positions = map_reshape(info(1, identity_positions(4)), (1, 4, 2, 3), (1, 24))
    assert axis == 1
    np.testing.assert_array_equal(positions, np.arange(24).reshape(4, 6))


def test_flatten_keeps_a_permuted_channel_order():
    # Channels stored out of order (as after a Concat): channel k at position p_k.
    axis, positions = map_reshape(info(1, [[2], [0], [1]]), (1, 3, 2, 2), (1, 12))
    assert axis == 1
    np.testing.assert_array_equal(positions, [[8, 9, 10, 11], [0, 1, 2, 3], [4, 5, 6, 7]])


def test_unflatten_blocks_back_to_single_positions():
    axis, positions = map_reshape(info(1, identity_positions(4, 6)), (1, 24), (1, 4, 2, 3))
    assert axis == 1
    np.testing.assert_array_equal(positions, identity_positions(4))


def test_partial_unflatten_halves_each_block():
    axis, positions = map_reshape(info(1, identity_positions(4, 6)), (1, 24), (1, 12, 2))
    assert axis == 1
    np.testing.assert_array_equal(positions, identity_positions(4, 3))


def test_merging_spatial_axes_keeps_channel_axis():
    axis, positions = map_reshape(info(1, identity_positions(4)), (1, 4, 2, 3), (1, 4, 6))
    assert axis == 1
    np.testing.assert_array_equal(positions, identity_positions(4))


def test_channels_last_flatten_of_tokens():
    # [N, H, W, C] -> [N, H*W, C]: channels stay on the last axis.
    axis, positions = map_reshape(info(3, identity_positions(8)), (1, 2, 4, 8), (1, 8, 8))
    assert axis == 2
    np.testing.assert_array_equal(positions, identity_positions(8))


def test_outer_dims_may_change_when_inner_dims_match():
    axis, positions = map_reshape(info(2, identity_positions(4)), (2, 3, 4, 5), (6, 4, 5))
    assert axis == 1
    np.testing.assert_array_equal(positions, identity_positions(4))


@pytest.mark.parametrize("in_shape, out_shape", [
    ((1, 8, 2, 2), (1, 2, 4, 2, 2)),  # channel shuffle: the channel axis is split in two
    ((1, 4, 6), (1, 2, 12)),  # two channels merge into one position
    ((2, 4, 3), (8, 3)),  # channels merge with the batch axis
    ((2, 3, 4, 5), (6, 4, 1, 5)),  # outer and inner dims both regrouped
])
def test_reshapes_that_mix_channels_are_refused(in_shape, out_shape):
    axis = 2 if len(in_shape) == 4 and in_shape[0] == 2 else 1
    source = info(axis, identity_positions(in_shape[axis]))
    assert map_reshape(source, in_shape, out_shape) is None


def test_unflatten_that_splits_a_block_is_refused():
    # Blocks of 6 positions cannot each become whole positions of size 12.
    assert map_reshape(info(1, identity_positions(4, 6)), (1, 24), (1, 2, 12)) is None


def test_unflatten_of_misaligned_blocks_is_refused():
    # Channel blocks {1,2}, {3,4}, {5,0} straddle the pairs an unflatten to [1, 3, 2] makes.
    source = info(1, [[1, 2], [3, 4], [5, 0]])
    assert map_reshape(source, (1, 6), (1, 3, 2)) is None


# --- solve: the removal fixed point ------------------------------------------------------------

def conv_chain(unread: int):
    """x -> conv_a (4) -> conv_b (reads every channel of a but `unread`) -> conv_y -> y."""
    return model(
        [conv("x", "wa", "a"), conv("a", "wb", "b"), conv("b", "wy", "y")],
        inputs={"x": (1, 4, 4, 8)}, outputs=["y"],
        inits={"wa": weights(4, 4, 1, 1), "wb": weights(4, 4, 1, 1, zero_cols=[unread], seed=3),
               "wy": weights(6, 4, 1, 1, seed=5)})


def test_unread_channel_two_readers_from_the_output_is_cut():
    assert_cut(conv_chain(unread=1), {"conv_a": (4, 3), "conv_b": (3, 4)})


def test_unread_channel_zero_two_readers_from_the_output_is_cut():
    assert_cut(conv_chain(unread=0), {"conv_a": (4, 3), "conv_b": (3, 4)})


def test_a_tensor_kept_alive_keeps_only_what_its_readers_need():
    # conv_y reads b with zero weights, so b keeps one channel only to stay non-empty; that
    # channel's row does not read channel 0 of a.
    m = model(
        [conv("x", "wa", "a"), conv("a", "wb", "b"), conv("b", "wy", "y", "by")],
        inputs={"x": (1, 4, 4, 8)}, outputs=["y"],
        inits={"wa": weights(3, 4, 1, 1), "wb": weights(4, 3, 1, 1, zero_cols=[0], seed=3),
               "wy": np.zeros((6, 4, 1, 1), np.float32), "by": bias(6)})
    assert_cut(m, {"conv_a": (4, 2), "conv_b": (2, 1), "conv_y": (1, 6)})


def test_a_branch_no_output_depends_on_is_deleted_whole():
    # conv_d reads x but nothing reads d: the node and its weights go, not all but one channel.
    m = model(
        [conv("x", "wa", "a"), conv("x", "wd", "d", "bd"), conv("a", "wy", "y")],
        inputs={"x": (1, 4, 4, 8)}, outputs=["y"],
        inits={"wa": weights(3, 4, 1, 1), "wd": weights(5, 4, 3, 3, seed=2), "bd": bias(5),
               "wy": weights(2, 3, 1, 1, seed=3)})
    result = cut(m)
    assert [n.name for n in result.model.graph.node] == ["conv_a", "conv_y"]
    feeds = random_feeds(m)
    np.testing.assert_array_equal(run(result.model, feeds)["y"], run(m, feeds)["y"])
    assert result.report.removed_nodes == 1
    assert {(c.name, c.src_size, c.pruned_size) for c in result.report.const_changes} == {
        ("wd", 5 * 4 * 9 * 4, 0), ("bd", 5 * 4, 0)}
    assert result.report.weight_bytes_after == result.report.weight_bytes_before - 740


# --- alignment ---------------------------------------------------------------------------------

def aligned_chain(dead: list[int]):
    """x -> conv_a (20 channels, `dead` rows zero, no bias) -> relu -> conv_y -> y."""
    return model([conv("x", "wa", "a"), node("Relu", ["a"], ["r"]), conv("r", "wy", "y")],
                 inputs={"x": (1, 4, 4, 8)}, outputs=["y"],
                 inits={"wa": weights(20, 4, 1, 1, zero_rows=dead), "wy": weights(6, 20, 1, 1)})


def test_align_keeps_a_multiple_of_n_channels_choosing_dead_ones():
    dead = [0, 2, 3, 5, 8, 13, 17]  # 13 of 20 live: 16 with align 8, 14 with align 2
    assert_cut(aligned_chain(dead), {"conv_a": (4, 13), "conv_y": (13, 6)}, groups=7)
    result = cut(aligned_chain(dead), align=8)
    assert kept_channels(result) == {"conv_a": (4, 16), "conv_y": (16, 6)}
    assert result.report.removed_groups == 4 and result.report.align == 8
    assert cut(aligned_chain(dead), align=2).report.removed_groups == 6
    feeds = random_feeds(result.model)
    np.testing.assert_allclose(run(result.model, feeds)["y"],
                               run(aligned_chain(dead), feeds)["y"], rtol=1e-5, atol=1e-6)


def test_align_larger_than_what_goes_keeps_everything():
    result = cut(aligned_chain([1, 2, 3]), align=16)  # 17 live: the next multiple is 32 > 20
    assert result.report.removed_groups == 0 and result.report.layers == []


def test_a_channel_kept_for_alignment_makes_a_pick_for_an_emptied_tensor_needless():
    """conv_u's row 0 is zero and y reads none of its row 1, so u and then t (its channel 0
    unread, 1 zero) would be emptied, each keeping one channel. But c (a's 16 channels and
    u's 2) may lose none under portable's alignment, so u's row 1 stays and reads t's
    channel 2: t keeps that one channel, not also the one an emptied t would have kept
    (found by bench/fuzz.py on ort-cpu, where a cut of the cut removed it)."""
    wu = weights(2, 3, 1, 1, zero_rows=[0], zero_cols=[0], seed=3)
    m = model([conv("x", "wa", "a"), conv("x", "wt", "t"), conv("t", "wu", "u"),
               node("Concat", ["a", "u"], ["c"], axis=1), conv("c", "wy", "y")],
              inputs={"x": (1, 1, 4, 4)}, outputs=["y"],
              inits={"wa": weights(16, 1, 1, 1), "wt": weights(3, 1, 1, 1, zero_rows=[1], seed=2),
                     "wu": wu, "wy": weights(2, 18, 1, 1, zero_cols=[17], seed=4)})
    result = assert_cut(m, {"conv_t": (1, 1), "conv_u": (1, 2)}, mode="full", target="portable")
    again = cut(result.model, "full", objective="flops", target="portable", verify=False)
    assert again.report.removed_groups == 0


@pytest.mark.parametrize("align", [0, -8, 2.5, True])
def test_align_must_be_a_positive_whole_number(align):
    with pytest.raises(ChannelcutError, match="align"):
        cut(aligned_chain([1]), align=align)


# --- a rule that records bad facts is a barrier, not a crash -----------------------------------

def _relu_with_bad_facts(bad: str):
    """A Relu rule with one bug: output channels that do not cover the tensor, a coupling of
    unequal lengths, or an id past the last channel."""
    from channelcut.ops.elementwise import transparent

    def analyse(node, walk):
        source = walk.info(node.inputs[0])
        if bad == "layout":
            walk.new(node.outputs[0], source.axis, 1)
            return
        out = transparent(node, walk, lambda x: np.maximum(x, 0))
        if bad == "coupling":
            walk.couple(source.ids[:1], out.ids)
        else:
            walk.couple(source.ids, out.ids + out.n)

    return analyse


@pytest.mark.parametrize("bad", ["layout", "coupling", "id"])
def test_a_rule_recording_bad_ids_becomes_a_barrier(bad, monkeypatch):
    from channelcut.ops import RULES, Rule

    monkeypatch.delenv("CHANNELCUT_STRICT")
    monkeypatch.setitem(RULES, "Relu", Rule(_relu_with_bad_facts(bad)))
    # conv_y's row 2 is zero: without the Relu it would go; the Relu's facts are not trusted,
    # so conv_h and everything after the Relu keep their channels, and no traceback
    m = model([conv("x", "w1", "h"), node("Relu", ["h"], ["r"]), conv("r", "w2", "y"),
               conv("y", "w3", "z")],
              inputs={"x": [1, 3, 4, 4]}, outputs=["z"],
              inits={"w1": weights(4, 3, 1, 1, zero_rows=[1]), "w2": weights(4, 4, 1, 1),
                     "w3": weights(2, 4, 1, 1, zero_cols=[2])})
    result = assert_cut(m, {"conv_y": (4, 3), "conv_z": (3, 2)})
    assert [b.reason.split(":")[0] for b in blockers(result, "Relu")] == ["analysis failed"]


# --- barriers: what is provable after an op the analysis does not understand -------------------

def after_custom_op(*extra, conv_input: str = "c", inits=None):
    """x -> Gelu of ORT's com.microsoft domain (no channel rule, and ONNX infers no shape for
    it) -> conv_y (8 filters, 0, 2, 4 and 6 zero; input channel 1 read by none) -> [extra] ->
    relu -> conv_z."""
    nodes = [node("Gelu", ["x"], ["c"], domain="com.microsoft"),
             conv("c", "w1", "y"), *extra, node("Relu", [conv_input], ["r"]),
             conv("r", "w2", "z")]
    return model(nodes, {"x": [1, 3, 8, 8]}, {"z": [1, 4, 6, 6]},
                 {"w1": weights(8, 3, 3, 3, zero_rows=[0, 2, 4, 6], zero_cols=[1]),
                  "w2": weights(4, 8, 1, 1, seed=2), **(inits or {})},
                 extra_opsets={"com.microsoft": 1}, check=False)


def test_a_conv_after_a_custom_op_cuts_its_zero_filters_and_names_the_op():
    # The conv's channel counts come from its weights: its zero filters go although its
    # input's shape is unknown; its input channels stay (their producer is not understood),
    # and the unread one is reported as kept by the custom op.
    result = assert_cut(after_custom_op(conv_input="y"), {"conv_y": (3, 4), "conv_z": (4, 4)})
    [blocker] = result.report.blockers
    assert (blocker.op_type, blocker.node, blocker.channels) == ("Gelu", "gelu_c", 1)
    assert "com.microsoft" in blocker.reason


def test_a_broadcast_after_a_custom_op_aligns_operands_by_rank():
    # ONNX infers no shape for the custom op; the conv after it proves its input's rank, and
    # the Add's operands align by rank and channel count alone.
    m = after_custom_op(node("Add", ["y", "b"], ["yb"]), conv_input="yb",
                        inits={"b": -np.abs(weights(1, 8, 1, 1, seed=4))})
    assert_cut(m, {"conv_y": (3, 4), "conv_z": (4, 4)})


def test_a_rule_stopped_by_an_unknown_shape_names_the_op_that_made_it_unknown():
    # Flatten needs every dim; the report says which op upstream lost them.
    nodes = [node("Gelu", ["x"], ["c"], domain="com.microsoft"), conv("c", "w1", "y"),
             node("Flatten", ["y"], ["f"]), node("Gemm", ["f", "w2"], ["z"])]
    m = model(nodes, {"x": [1, 3, 8, 8]}, {"z": [1, 5]},
              {"w1": weights(8, 3, 3, 3, zero_rows=[0, 2, 4, 6]),
               "w2": weights(288, 5, seed=2)},
              extra_opsets={"com.microsoft": 1}, check=False)
    result = assert_cut(m, {})
    [blocker] = result.report.blockers
    assert (blocker.op_type, blocker.channels) == ("Flatten", 4)
    assert blocker.reason == "Flatten shapes unknown (input shape unknown after Gelu node 'gelu_c')"


def test_a_matmul_after_a_custom_op_and_a_transpose_cuts_by_rank():
    # channels last after the conv: Transpose and MatMul need only the ranks
    m = after_custom_op(node("Transpose", ["y"], ["t"], perm=[0, 2, 3, 1]),
                        node("MatMul", ["t", "wm"], ["mm"]),
                        node("Transpose", ["mm"], ["back"], perm=[0, 3, 1, 2]),
                        conv_input="back", inits={"wm": weights(8, 8, zero_cols=[3], seed=5)})
    assert_cut(m, {"conv_y": (3, 4), "matmul_mm": (4, 7), "conv_z": (7, 4)})


def test_a_classifier_head_after_a_custom_op_is_cut_through_flatten():
    # After the custom op the batch dim is unknown too; Flatten only merges it into the outer
    # rows, so the pooled channels still map one to one onto the Gemm's columns.
    nodes = [node("Gelu", ["x"], ["c"], domain="com.microsoft"), conv("c", "w1", "y"),
             node("GlobalAveragePool", ["y"], ["pooled"]), node("Flatten", ["pooled"], ["f"]),
             node("Gemm", ["f", "w2"], ["z"])]
    m = model(nodes, {"x": [1, 3, 8, 8]}, {"z": [1, 5]},
              {"w1": weights(8, 3, 3, 3, zero_rows=[0, 2, 4, 6]),
               "w2": weights(8, 5, seed=2)},
              extra_opsets={"com.microsoft": 1}, check=False)
    assert_cut(m, {"conv_y": (3, 4), "gemm_z": (4, 5)})


# --- non-finite values: 0 * NaN is NaN -----------------------------------------------------------

# The finite branch beside each model below: channel 1 of conv_c is read by a zero column only.
FINITE_BRANCH = {"conv_c": (3, 3), "conv_z": (3, 2)}


def nonfinite_model(wa: np.ndarray, wb: np.ndarray, ba: np.ndarray | None = None,
                    mid: list | None = None, after: np.ndarray | None = None,
                    inits: dict | None = None):
    """x -> conv_a (wa, ba) -> [mid: a -> m] -> conv_b (wb) [-> conv_e (after)] -> y, and
    beside it the finite branch x -> conv_c -> conv_d -> z."""
    source = "m" if mid else "a"
    nodes = [conv("x", "wa", "a", "ba" if ba is not None else None), *(mid or []),
             conv(source, "wb", "b" if after is not None else "y")]
    tensors = {"wa": wa, "wb": wb, "wc": weights(4, 3, 1, 1, seed=3),
               "wd": weights(2, 4, 1, 1, zero_cols=[1], seed=4), **(inits or {})}
    if ba is not None:
        tensors["ba"] = ba
    if after is not None:
        nodes.append(conv("b", "we", "y"))
        tensors["we"] = after
    nodes += [conv("x", "wc", "c"), conv("c", "wd", "z")]
    return model(nodes, inputs={"x": (1, 3, 4, 4)}, outputs=["y", "z"], inits=tensors)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_a_zero_weight_does_not_ignore_a_channel_made_with_a_nan_weight(mode):
    wa = weights(4, 3, 1, 1)
    wa[2, 0] = np.nan
    m = nonfinite_model(wa, weights(2, 4, 1, 1, zero_cols=[2]))
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_a_channel_with_an_inf_bias_is_neither_constant_nor_ignored(mode):
    m = nonfinite_model(weights(4, 3, 1, 1, zero_rows=[1]), weights(2, 4, 1, 1, zero_cols=[1]),
                        ba=bias(4, at={1: np.inf}))
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_nan_of_a_constant_operand_travels_to_the_zero_column_behind_it(mode):
    nan_at_2 = np.ones((1, 4, 1, 1), np.float32)
    nan_at_2[0, 2] = np.nan
    m = nonfinite_model(weights(4, 3, 1, 1), weights(2, 4, 1, 1, zero_cols=[2]),
                        mid=[node("Add", ["a", "cn"], ["s"]), relu("s", "m")],
                        inits={"cn": nan_at_2})
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_a_known_value_that_computes_to_nan_is_not_finite(mode):
    # channel 2 of conv_a is the constant -1; Log makes it NaN everywhere
    m = nonfinite_model(weights(4, 3, 1, 1, zero_rows=[2]), weights(2, 4, 1, 1, zero_cols=[2]),
                        ba=bias(4, at={2: -1.0}), mid=[node("Log", ["a"], ["m"])])
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_a_constant_that_overflows_float32_is_not_a_constant(mode):
    # a[0] is the constant 1e20; b[0] = 1e20 * a[0] is Inf in float32, read by a zero column
    wb = weights(4, 4, 1, 1, zero_cols=[0])
    wb[0] = 0.0
    wb[0, 0] = 1e20
    m = nonfinite_model(weights(4, 3, 1, 1, zero_rows=[0]), wb, ba=bias(4, at={0: 1e20}),
                        after=weights(2, 4, 1, 1, zero_cols=[0]))
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode)


def test_a_fold_that_would_overflow_is_not_made():
    # b[0] = 1e20 * a[0] - 1e20 * a[1] with a[0] = a[1] = 1e20 is Inf - Inf = NaN at run time;
    # folded in float64 it would be 0
    wb = weights(3, 4, 1, 1, zero_cols=[0, 1])
    wb[0] = 0.0
    wb[0, :2, 0, 0] = [1e20, -1e20]
    m = nonfinite_model(weights(4, 3, 1, 1, zero_rows=[0, 1]), wb,
                        ba=bias(4, at={0: 1e20, 1: 1e20}))
    assert_cut(m, FINITE_BRANCH, groups=1, mode="full")


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_a_huge_weight_overflows_on_large_inputs_and_is_kept(mode):
    # 1e35 * x overflows for |x| > 3.4e3: behind a zero column that is NaN
    wa = weights(4, 3, 1, 1)
    wa[0] = 1e35
    m = nonfinite_model(wa, weights(2, 4, 1, 1, zero_cols=[0]))
    large = {"x": 1e4 * random_feeds(m)["x"]}
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode, feeds=large)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_a_large_weight_overflows_once_its_product_meets_the_input_again(mode):
    # 1e30 * x is finite for |x| = 1e4 (below 2^128), but squared it is Inf: behind a zero
    # column that is NaN (bench/fuzz.py: 1e30 * x*x, times x again)
    wa = weights(4, 3, 1, 1)
    wa[0] = 1e30
    m = nonfinite_model(wa, weights(2, 4, 1, 1, zero_cols=[0]),
                        mid=[node("Mul", ["a", "a"], ["m"])])
    large = {"x": 1e4 * random_feeds(m)["x"]}
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode, feeds=large)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_exp_overflows_on_large_inputs_and_is_kept(mode):
    # exp(x) is Inf from x = 89 on: behind a zero column that is NaN
    m = nonfinite_model(weights(4, 3, 1, 1), weights(2, 4, 1, 1, zero_cols=[2]),
                        mid=[node("Exp", ["a"], ["m"])])
    large = {"x": 1e4 * random_feeds(m)["x"]}
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode, feeds=large)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_a_zero_channel_read_through_a_nan_weight_is_kept(mode):
    # a[2] is zero (zero row, no bias), but b[0] = ... + NaN * a[2] is NaN
    wb = weights(2, 4, 1, 1)
    wb[0, 2] = np.nan
    m = nonfinite_model(weights(4, 3, 1, 1, zero_rows=[2]), wb)
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode)


def test_a_constant_channel_read_through_an_inf_weight_is_not_folded():
    # a[2] is the constant 0.5; b[0] reads it through -Inf: the fold must not make it finite
    wb = weights(2, 4, 1, 1)
    wb[0, 2] = -np.inf
    m = nonfinite_model(weights(4, 3, 1, 1, zero_rows=[2]), wb, ba=bias(4, at={2: 0.5}))
    assert_cut(m, FINITE_BRANCH, groups=1, mode="full")


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_a_nan_weight_row_marks_its_own_channel_only(mode):
    # a[2] is NaN (a NaN weight in its row), a[1] is finite: conv_b's zero column drops a[1]
    wa = weights(4, 3, 1, 1)
    wa[2, 0] = np.nan
    m = nonfinite_model(wa, weights(2, 4, 1, 1, zero_cols=[1, 2]))
    assert_cut(m, {"conv_a": (3, 3), "conv_y": (3, 2), **FINITE_BRANCH}, groups=2, mode=mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_nan_reaches_only_the_channels_it_flows_into(mode):
    # a[2] + NaN makes s[2] NaN; a Relu keeps channels apart: conv_b drops m[1], keeps m[2]
    nan_at_2 = np.ones((1, 4, 1, 1), np.float32)
    nan_at_2[0, 2] = np.nan
    m = nonfinite_model(weights(4, 3, 1, 1), weights(2, 4, 1, 1, zero_cols=[1, 2]),
                        mid=[node("Add", ["a", "cn"], ["s"]), relu("s", "m")],
                        inits={"cn": nan_at_2})
    result = cut(m, mode)
    assert kept_channels(result) == {"conv_a": (3, 3), "conv_y": (3, 2), **FINITE_BRANCH}


def test_a_constant_channel_padded_with_another_value_is_unknown_not_nonfinite():
    # a[2] is the constant 0.5; after Pad with 0 it is unknown (not a constant), yet finite:
    # conv_b's zero column still drops it
    m = nonfinite_model(weights(4, 3, 1, 1, zero_rows=[2]), weights(2, 4, 1, 1, zero_cols=[2]),
                        ba=bias(4, at={2: 0.5}), mid=[node("Pad", ["a", "pads"], ["m"])],
                        inits={"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})
    assert_cut(m, {"conv_a": (3, 3), "conv_y": (3, 2), **FINITE_BRANCH}, groups=2)


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_nan_stays_with_the_channels_a_reader_gives_a_barrier_output(mode):
    # a[2] is NaN (a NaN weight in its row); a Gather along the channels is a barrier, and
    # conv_b gives its output channels again from its weights: they may all carry NaN, so
    # conv_b's zero row b[1] is 0 * NaN, not the zero channel conv_e could drop (bench/fuzz.py
    # seed 47: a cut of the cut, whose reinsertion is a Gather, took such columns; the output
    # is NaN either way here, the fact was wrong)
    wa = weights(4, 3, 1, 1)
    wa[2, 0] = np.nan
    m = nonfinite_model(wa, weights(3, 4, 1, 1, zero_rows=[1]),
                        mid=[node("Gather", ["a", "order"], ["m"], axis=1)],
                        after=weights(2, 3, 1, 1), inits={"order": np.array([1, 2, 3, 0])})
    assert_cut(m, FINITE_BRANCH, groups=1, mode=mode)
