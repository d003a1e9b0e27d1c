"""Targets (issue 11): per runtime, the alignment applied, the rewrites allowed and the form each
takes, and the ort-cpu guard keeping the fastest model (timed by an injected measure)."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import channelcut
from builders import (assert_cut, bias, conv, cut, kept_channels, model, node, random_feeds,
                      relu, run, weights)
from channelcut import cli, guard, targets
from channelcut.errors import ChannelcutError
from channelcut.targets import cpu_vector_channels
from test_fold import POSITIVE, basic_block, ops, producer_then

ORT_ALIGN = targets.get("ort-cpu").alignment()


def fastest_is(name: str):
    """A measure (see channelcut.guard) that times the candidate `name` fastest and the others
    slower in the order given; records what it got."""
    def measure(models, feeds):
        measure.models, measure.feeds = dict(models), feeds
        return {n: 1e-3 if n == name else 2e-3 + 1e-4 * k for k, n in enumerate(models)}
    return measure


# --- alignment -----------------------------------------------------------------------------

def test_ort_cpu_alignment_is_the_vector_width_of_this_cpu():
    assert cpu_vector_channels("flags\t\t: fpu sse2 avx avx2 avx512f avx512bw\n", "x86_64") == 16
    assert cpu_vector_channels("flags\t\t: fpu sse2 avx avx2 fma\n", "x86_64") == 8
    assert cpu_vector_channels("", "x86_64") == 8  # SSE: MLAS's NCHWc block of 8
    assert cpu_vector_channels("Features\t: fp asimd\n", "aarch64") == 16
    with open("/proc/cpuinfo") as f:
        assert ORT_ALIGN == (16 if " avx512f" in f.read() else 8)


def two_layers(b_rows: int = 24):
    """x -> conv_a (32 rows, 27 zero) -> relu -> conv_b (24 rows, 19 zero) -> relu -> conv_y:
    5 live channels in each; 32 is a multiple of 8 and 16, 24 only of 8 (`wide`: conv_b has
    20 rows, a multiple of neither)."""
    dead_a, dead_b = list(range(27)), list(range(5, b_rows))
    return model([conv("x", "wa", "a"), relu("a", "ra"), conv("ra", "wb", "b"), relu("b", "rb"),
                  conv("rb", "wy", "y")], {"x": [1, 4, 4, 4]}, ["y"],
                 {"wa": weights(32, 4, 1, 1, zero_rows=dead_a),
                  "wb": weights(b_rows, 32, 1, 1, zero_rows=dead_b, seed=2),
                  "wy": weights(6, b_rows, 1, 1, seed=3)})


@pytest.mark.parametrize("target, a, b", [
    ("min-flops", 5, 5),  # no alignment
    ("rknn", 5, 5),  # no Concat reads them: the NPU's cycles step in blocks either way
    ("portable", 16, 16),  # as ort-cpu: 16 or more channels keep a multiple of 16
    ("ort-cpu", ORT_ALIGN, 8 if ORT_ALIGN == 8 else 16),  # every tensor: MLAS pads 24 to 32
])
def test_each_target_keeps_its_multiple_where_the_tensor_had_one(target, a, b):
    result = assert_cut(two_layers(), {"conv_a": (4, a), "conv_b": (a, b), "conv_y": (b, 6)},
                        mode="full", objective=None, target=target,
                        measure=fastest_is("cut"))
    assert result.report.target == target
    assert result.report.align == targets.get(target).alignment()


def concat_of_two():
    """x -> conv_p and conv_q (16 rows each, 11 zero) -> relu -> Concat -> conv_y."""
    return model([conv("x", "wp", "p"), relu("p", "rp"), conv("x", "wq", "q"), relu("q", "rq"),
                  node("Concat", ["rp", "rq"], ["c"], axis=1), conv("c", "wy", "y")],
                 {"x": [1, 4, 4, 4]}, ["y"],
                 {"wp": weights(16, 4, 1, 1, zero_rows=range(11)),
                  "wq": weights(16, 4, 1, 1, zero_rows=range(5, 16), seed=2),
                  "wy": weights(6, 32, 1, 1, seed=3)})


@pytest.mark.parametrize("target, first, last", [("min-flops", 5, 5), ("rknn", 8, 5),
                                                ("portable", 16, 16)])
def test_rknn_aligns_the_inputs_of_a_concat_to_8(target, first, last):
    """RKNN-Toolkit2 pads unaligned Concat inputs itself (densenet121: 33.3 MB unaligned,
    13.4 MB aligned to 8); the last input stays as the analysis leaves it (its alignment
    splits nothing: test_rknn_never_aligns_the_last_input_of_a_concat)."""
    cuts = {"conv_p": (4, first), "conv_q": (4, last), "conv_y": (first + last, 6)}
    assert_cut(concat_of_two(), {k: v for k, v in cuts.items() if first < 16}, mode="full",
               objective=None, target=target)


def concat_read_by(tail: list, rows: int = 16, dead: int = 11, reader_cin: int | None = None):
    """x -> conv_p and conv_q (`rows` rows each, `dead` zero) -> relu -> Concat (c) -> `tail`
    (nodes from c to y)."""
    return model([conv("x", "wp", "p"), relu("p", "rp"), conv("x", "wq", "q"), relu("q", "rq"),
                  node("Concat", ["rp", "rq"], ["c"], axis=1), *tail],
                 {"x": [1, 4, 4, 4]}, ["y"],
                 {"wp": weights(rows, 4, 1, 1, zero_rows=range(dead)),
                  "wq": weights(rows, 4, 1, 1, zero_rows=range(rows - dead, rows), seed=2),
                  "wy": weights(6, reader_cin or 2 * rows, 1, 1, seed=3),
                  "shape": np.array([1, 2, rows, 4, 4], np.int64),
                  "back": np.array([1, 2 * rows, 4, 4], np.int64)})


POOLED_TAIL = [relu("c", "rc"), node("GlobalAveragePool", ["rc"], ["g"]), conv("g", "wy", "y")]


@pytest.mark.parametrize("case, tail, kept", [
    # a conv reads the Concat through channelwise ops: 5 + 5 split into two convs cost 2 + 2
    # input blocks against 2 for the aligned 16
    ("through relu", [relu("c", "rc"), conv("rc", "wy", "y")], 8),
    # a pooling reads it (densenet121's last Concat, through BN and Relu): no conv to split,
    # but unaligned the compiler copies the Concat, ~2 C^2 bytes, more than the 3 rows
    # aligning keeps (groups-pruned densenet121: 10.86 MB against 11.49 MB)
    ("pooled", POOLED_TAIL, 8),
    # nothing of these reads it: neither a split nor a copy to avoid
    ("output", [node("MaxPool", ["c"], ["y"], kernel_shape=[1, 1])], None),
])
def test_rknn_aligns_a_concat_where_a_conv_or_a_pooling_reads_it(case, tail, kept):
    m = concat_read_by(tail)
    result = cut(m, "full", target="rknn")
    if kept is None:  # the output keeps every channel: the cut is the zero-only one's
        assert kept_channels(result) == {}
        return
    assert kept_channels(result) == {"conv_p": (4, kept), "conv_q": (4, 5),
                                     "conv_y": (kept + 5, 6)}
    unaligned = kept_channels(cut(m, "full", target="min-flops"))
    assert unaligned == {"conv_p": (4, 5), "conv_q": (4, 5), "conv_y": (10, 6)}
    want, got = run(m, random_feeds(m)), run(result.model, random_feeds(m))
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target, kept", [("rknn", 8), ("rknn-int8", 16)])
def test_rknn_int8_builds_align_concat_inputs_to_16(target, kept):
    """int8's layout holds 16 channels a block (groups-pruned densenet121 int8: 15.7 MB aligned
    to 8, above the uncut 12.3 MB; 7.7 MB aligned to 16)."""
    m = concat_read_by([conv("c", "wy", "y")], rows=32, dead=27)
    assert_cut(m, {"conv_p": (4, kept), "conv_q": (4, 5), "conv_y": (kept + 5, 6)},
               mode="full", objective=None, target=target)


def test_rknn_leaves_a_concat_unaligned_where_its_parts_cost_no_more_blocks():
    """63 + 63 channels: split in two convs, 2 + 2 input blocks of 32; aligned, 128 channels
    are 4 blocks too, so aligning would only keep channels (shufflenet_v2: 3.43 MB unaligned,
    4.29 MB aligned); 5 + 5 (the test above) pays."""
    m = concat_read_by([conv("c", "wy", "y")], rows=64, dead=1)
    assert_cut(m, {"conv_p": (4, 63), "conv_q": (4, 63), "conv_y": (126, 6)}, mode="full",
               objective=None, target="rknn")
    assert targets.rknn_concat_splits is targets.get("rknn").align_reader


def test_rknn_never_aligns_the_last_input_of_a_concat():
    """The last input of a Concat does not split the conv reading it and costs no cycle
    unaligned; the compiler then copies the Concat (about 2 * C^2 bytes of .rknn: Concat(16, 9)
    +7.7 KB), but aligning it would keep channels the analysis proves dead, which
    RKNN-Toolkit2's own pruning removes (it leaves the last input unaligned: groups-pruned
    densenet121, 0.039 GFLOPs; the rknn target's .rknn is then the toolkit's, 10.86 MB, the
    same cycles). With a heavy producer (256 -> 16, 3x3) as with a light one, the last input
    keeps its 5 and the first its 8."""
    m = model([conv("x", "wp", "p"), relu("p", "rp"), conv("x", "wq", "q", pads=1),
                relu("q", "rq"), node("Concat", ["rp", "rq"], ["c"], axis=1),
                conv("c", "wy", "y")], {"x": [1, 256, 4, 4]}, ["y"],
              {"wp": weights(16, 256, 1, 1, zero_rows=range(11)),
               "wq": weights(16, 256, 3, 3, zero_rows=range(5, 16), seed=2),
               "wy": weights(6, 32, 1, 1, seed=3)})
    assert_cut(m, {"conv_p": (256, 8), "conv_q": (256, 5), "conv_y": (13, 6)}, mode="full",
               objective=None, target="rknn")
    concat = next(n for n in ir.from_proto(m).graph if n.op_type == "Concat")
    assert targets.rknn_concat_splits(concat, [5, 5]) == (0,)
    assert targets.rknn_concat_splits(concat, [5, 8]) == (0,)  # the last needs nothing
    assert targets.rknn_concat_splits(concat, [8, 5]) == ()  # nothing to split
    light = next(n for n in ir.from_proto(concat_of_two()).graph if n.op_type == "Concat")
    assert targets.rknn_concat_splits(light, [8, 5]) == ()
    assert targets.rknn_concat_splits(light, [5, 5]) == (0,)


def test_rknn_leaves_a_channel_shuffle_unaligned():
    """Concat, Reshape, Transpose, Reshape (shufflenet_v2): no conv reads the Concat itself,
    and the compiler writes the shuffle as convs either way (groups-pruned shufflenet_v2_x1_0:
    3.43 MB and 0.590 M cycles unaligned, 4.29 MB and 0.647 M aligned to 8)."""
    shuffle = [node("Reshape", ["c", "shape"], ["r5"]),
               node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
               node("Reshape", ["t5", "back"], ["s"]), conv("s", "wy", "y")]
    m = concat_read_by(shuffle)
    unaligned = kept_channels(channelcut.cut(m, target="min-flops"))
    # the shuffle is a proven permutation (channelcut.ops.shuffle): each half keeps its 5
    assert unaligned["conv_p"] == (4, 5)
    assert_cut(m, unaligned, mode="full", objective=None, target="rknn")


def test_portable_aligns_a_tensor_no_block_divides():
    """MLAS runs 20 channels blocked (padded to 32); cut below 16 they would leave that path:
    portable keeps 16 of them, as ort-cpu does; an explicit --align applies instead."""
    assert_cut(two_layers(20), {"conv_a": (4, 16), "conv_b": (16, 16), "conv_y": (16, 6)},
               mode="full", objective=None, target="portable")
    assert_cut(two_layers(20), {"conv_a": (4, 8), "conv_b": (8, 8), "conv_y": (8, 6)},
               mode="full", objective=None, target="portable", align=8)


def test_ort_cpu_aligns_a_tensor_no_block_divides():
    """MLAS pads 20 channels to 24 or 32 and runs them in its blocked layout; cut to 5, the conv
    that reads them would take an NCHW input behind a reorder: ort-cpu keeps a multiple of its
    block (8 or 16) in every tensor that loses channels, the zero-only cut too."""
    m = two_layers(20)
    assert_cut(m, {"conv_a": (4, ORT_ALIGN), "conv_b": (ORT_ALIGN, ORT_ALIGN),
                   "conv_y": (ORT_ALIGN, 6)}, mode="full", objective=None, target="ort-cpu",
               measure=fastest_is("cut"))
    assert_cut(m, {"conv_a": (4, ORT_ALIGN), "conv_b": (ORT_ALIGN, ORT_ALIGN),
                   "conv_y": (ORT_ALIGN, 6)}, mode="full", objective=None, target="ort-cpu",
               measure=fastest_is("zero-only"))


def test_zero_only_keeps_the_seed_table_and_reports_the_aligned_cut():
    m = two_layers()
    result = assert_cut(m, {"conv_a": (4, 5), "conv_b": (5, 5), "conv_y": (5, 6)},
                        mode="zero", objective=None, target="portable")
    assert result.report.align == 1
    gain = result.report.aligned
    aligned = channelcut.cut(m, fold=False, align="target", target="portable")
    assert kept_channels(aligned) == {"conv_a": (4, 16), "conv_b": (16, 16), "conv_y": (16, 6)}
    assert (gain.align, gain.weight_bytes_after, gain.flops_after) == (
        16, aligned.report.weight_bytes_after, aligned.report.flops_after)
    # nothing to gain where the target does not align, or aligns nothing here
    assert channelcut.cut(m, fold=False, target="min-flops").report.aligned is None
    assert channelcut.cut(m, fold=False, target="rknn").report.aligned is None


# --- rewrites allowed, and their form ------------------------------------------------------

ALL_TARGETS = list(targets.TARGETS)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_bias_fold_adds_no_op_and_every_target_makes_it(target):
    """A constant channel read by an unpadded 1x1 conv goes into its bias, also creating the
    bias input when the conv has none: slicing and a bias every runtime runs natively."""
    for reader, inits in ((conv("r1", "w2", "y", "b2"), {"b2": bias(5, seed=3)}),
                          (conv("r1", "w2", "y"), {})):
        m = producer_then([reader], {"w2": weights(5, 6, 1, 1, seed=3), **inits})
        result = assert_cut(m, {"conv_c1": (3, 4), "conv_y": (4, 5)}, mode="full",
                            objective="flops", target=target, measure=fastest_is("cut"))
        assert ops(result.model) == ["Conv", "Relu", "Conv"]
        assert [s.kind for s in result.report.sites] == ["bias fold"]


@pytest.mark.parametrize("target, form", [("min-flops", "map"), ("ort-cpu", "map"),
                                          ("rknn", "carrier"), ("portable", "carrier")])
def test_border_fold_as_a_map_or_a_carrier(target, form):
    """A constant read by a padded conv: on ONNX Runtime a border map, Conv(ConstantOfShape
    (ones)) + Add, folded at load; RKNN-Toolkit2 compiles a map into a full-size constant, so
    rknn and portable keep one constant channel and fold the other into its weight column."""
    m = producer_then([conv("r1", "w2", "y", "b2", pads=1)],
                      {"w2": weights(5, 6, 3, 3, seed=3), "b2": bias(5, seed=3)})
    kept = 4 if form == "map" else 5  # rows 1 and 4 are constants; the carrier is one of them
    # flops: the latency objective would refuse a map on an 8x8 toy; the form is what is tested
    result = assert_cut(m, {"conv_c1": (3, kept), "conv_y": (kept, 5)}, mode="full",
                        objective="flops", target=target, measure=fastest_is("cut"))
    assert [s.kind for s in result.report.sites] == [
        "border fold" if form == "map" else "carrier fold"]
    assert ops(result.model) == (["Conv", "Relu", "Conv"] if form == "carrier" else
                                 ["Conv", "Relu", "ConstantOfShape", "Conv", "Conv", "Add"])


def test_one_carrier_serves_every_padded_reader():
    """Two padded convs (one strided and dilated) read the constants: one channel stays for
    both, each folds the other into its own weights."""
    inits = {"w1": weights(6, 3, 1, 1, zero_rows=[1, 4]), "b1": bias(6, POSITIVE),
             "w2": weights(5, 6, 3, 3, seed=3), "w3": weights(4, 6, 3, 3, seed=4)}
    m = model([conv("x", "w1", "c1", "b1"), relu("c1", "r1"), conv("r1", "w2", "y2", pads=1),
               node("Conv", ["r1", "w3"], ["y3"], pads=[2, 1, 0, 2], strides=[2, 1],
                    dilations=[1, 2])], {"x": [1, 3, 9, 9]}, ["y2", "y3"], inits)
    result = assert_cut(m, {"conv_c1": (3, 5), "conv_y2": (5, 5), "conv_y3": (5, 4)}, mode="full",
                        objective="flops", target="rknn")
    assert sorted(s.kind for s in result.report.sites) == ["carrier fold", "carrier fold"]


def test_no_carrier_for_a_grouped_conv():
    m = producer_then([conv("r1", "w2", "y", "b2", pads=1, group=2)],
                      {"w2": weights(4, 3, 3, 3, seed=3), "b2": bias(4, seed=3)})
    assert_cut(m, {}, mode="full", objective="flops", target="rknn")


def matmul_gelu_matmul(d: int, hidden: int, dead: list[int]) -> onnx.ModelProto:
    """x -> MatMul (the `dead` columns zero) -> Add bias -> Gelu -> MatMul -> y: the dead
    hidden channels are constants the second MatMul reads (a fold there needs an Add)."""
    w1, w2 = weights(d, hidden, zero_cols=dead, seed=1), weights(hidden, d, seed=2)
    b1 = bias(hidden, {c: 0.5 if k % 2 else -0.5 for k, c in enumerate(dead)}, seed=1)
    return model([node("MatMul", ["x", "w1"], ["h"]), node("Add", ["h", "b1"], ["hb"]),
                  node("Gelu", ["hb"], ["g"]), node("MatMul", ["g", "w2"], ["y"])],
                 {"x": [1, 4, d]}, ["y"], {"w1": w1, "b1": b1, "w2": w2}, opset=20)


@pytest.mark.parametrize("target, folded", [("min-flops", True), ("ort-cpu", True),
                                            ("rknn", False), ("portable", False)])
def test_matmul_fold_adds_an_add_so_only_targets_that_allow_added_ops_make_it(target, folded):
    """rknn allows it but charges the Add a layer's .rknn bytes: 2 channels free less."""
    d, hidden = 6, 10
    kept = {"matmul_h": (d, hidden - 2), "matmul_y": (hidden - 2, d)} if folded else {}
    result = assert_cut(matmul_gelu_matmul(d, hidden, [2, 7]), kept, mode="full",
                        objective="flops", target=target, measure=fastest_is("cut"))
    assert ops(result.model).count("Add") == (2 if folded else 1)


def test_rknn_adds_a_layer_only_where_it_frees_more_than_the_layer_costs_in_the_file():
    """RKNN-Toolkit2 writes 8-10 KB of commands per layer (bench/RKNN_FINDINGS.md): the fold's
    Add must free that many bytes of an fp16 file; 48 of 128 hidden channels (96 KB fp32) do,
    8 (16 KB) do not."""
    assert targets.get("rknn").options().node_bytes == targets.RKNN_LAYER_BYTES > 0
    d, hidden = 64, 128
    result = assert_cut(matmul_gelu_matmul(d, hidden, list(range(0, 96, 2))),
                        {"matmul_h": (d, hidden - 48), "matmul_y": (hidden - 48, d)},
                        mode="full", objective=None, target="rknn")
    assert ops(result.model).count("Add") == 2
    assert_cut(matmul_gelu_matmul(d, hidden, list(range(0, 16, 2))), {}, mode="full",
               objective=None, target="rknn")
    assert_cut(matmul_gelu_matmul(d, hidden, list(range(0, 16, 2))),
               {"matmul_h": (d, hidden - 8), "matmul_y": (hidden - 8, d)}, mode="full",
               objective=None, target="min-flops")


@pytest.mark.parametrize("target, form", [("min-flops", "pad-gather"), ("ort-cpu", "concat"),
                                          ("rknn", "conv"), ("portable", None)])
def test_reinsertion_as_each_runtime_runs_it(target, form):
    """A one-sided residual cut reinserts the constants: Pad, Gather and Add in general; on
    ort-cpu the constants come as an Expand concatenated after the kept channels, then the
    Gather (a pass over the output fewer); RKNN-Toolkit2 runs a channel Pad on the CPU and
    turns a Gather into a one-hot 1x1 conv, so rknn writes that conv directly (constants in
    its bias); portable adds no op, no cut. (The zero rows are every fourth: the kept
    channels are not one run, which a Pad alone would put in place.)"""
    m = basic_block(zero_rows=range(0, 64, 4), channels=64, size=32)  # 48 kept: aligned
    result = assert_cut(m, {"conv_b": (64, 48)} if form else {}, mode="full", objective=None,
                        target=target, measure=fastest_is("cut"))
    assert [s.kind for s in result.report.sites] == (["reinsert"] if form else [])
    reinserted = {"pad-gather": ["Pad", "Gather"], "concat": ["Expand", "Concat", "Gather"]}
    for op_type in ("Pad", "Gather", "Concat", "Expand"):
        assert (op_type in ops(result.model)) == (op_type in reinserted.get(form, [])), op_type
    assert ops(result.model).count("Conv") == (3 if form == "conv" else 2)
    if form == "conv":
        onehot = next(i for i in result.model.graph.initializer if i.name.endswith("_onehot"))
        assert list(onehot.dims) == [64, 48, 1, 1]


def test_ort_cpu_concatenates_constants_that_follow_the_kept_channels_without_a_gather():
    """The 16 zero rows are the last: the 48 kept channels are one run, and Concat(kept,
    Expand(constants)) alone puts every channel in place."""
    m = basic_block(zero_rows=range(48, 64), channels=64, size=32)
    result = assert_cut(m, {"conv_b": (64, 48)}, mode="full", objective=None, target="ort-cpu",
                        measure=fastest_is("cut"))
    assert ops(result.model) == ["Conv", "Relu", "Conv", "Expand", "Concat", "Add", "Relu"]


def test_ort_cpu_reinserts_with_a_pad_where_the_batch_is_dynamic():
    """An Expand to the analysed shape would bake the batch of 1 in: with a dynamic batch the
    reinsertion is Pad, Gather and Add, and the cut model runs at batch 3."""
    m = basic_block(zero_rows=range(0, 64, 4), channels=64, size=32)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    result = assert_cut(m, {"conv_b": (64, 48)}, mode="full", objective=None, target="ort-cpu",
                        measure=fastest_is("cut"))
    assert "Expand" not in ops(result.model) and {"Pad", "Gather"} <= set(ops(result.model))
    feeds = random_feeds(m, {"x": [3, 64, 32, 32]})
    np.testing.assert_allclose(run(result.model, feeds)["y"], run(m, feeds)["y"], rtol=1e-4,
                               atol=1e-5)


def test_target_costs_reach_the_solver():
    """ort-cpu judges by latency: the reinsertion that pays in FLOPs on a 6x6 toy does not
    pay for its copies there; nor on rknn, where its one-hot conv costs the compiler's
    blocked cycles and a layer's file bytes."""
    assert_cut(basic_block(), {"conv_b": (6, 4)}, mode="full", objective=None,
               target="min-flops")
    for target in ("ort-cpu", "rknn"):
        assert_cut(basic_block(), {}, mode="full", objective=None, target=target,
                   measure=fastest_is("cut"))


@pytest.mark.parametrize("channels, blocks", [(12, 1 * 2), (18, 2 * 2), (64, 4 * 2),
                                              (96, 6 * 3)])
def test_rknn_one_hot_conv_costs_the_compilers_blocked_cycles(channels, blocks):
    """RKNN-Toolkit2's fp16 conv: ceil(Cout/16) * max(ceil(Cin/32), 2) cycles per position
    (exact on 1499 layers; naive mobilenet_v2's 12 -> 18 one-hot conv at 56x56: 12544), in
    FLOPs at the NPU's 16 x 32 multiply-adds a cycle; never less than its own MACs. Other
    forms count what they add."""
    from channelcut.analysis import Cost, Site
    from channelcut.graph import to_ir

    m = model([node("Add", ["x", "x"], ["y"])], {"x": [1, channels, 7, 7]}, ["y"], {})
    add = next(iter(to_ir(m, {}).graph))
    site = Site(add, "reinsert", Cost(weight_bytes=100.0, flops=10.0, moved=5.0, nodes=3))
    rknn = targets.get("rknn").options()
    cost = rknn.cost(site)
    assert cost.flops == max(2 * 16 * 32 * blocks * 49, 2 * channels * channels * 49)
    assert cost.nodes == 1
    assert cost.weight_bytes == 4.0 * channels * (channels + 1) + targets.RKNN_LAYER_BYTES
    assert targets.get("min-flops").options().cost(site) == Cost(100.0, 10.0, 5.0, 3)


def test_unknown_target_is_a_user_error():
    with pytest.raises(ChannelcutError, match="unknown target 'gpu': use one of min-flops"):
        channelcut.cut(two_layers(), target="gpu")


# --- the ort-cpu guard ---------------------------------------------------------------------

def two_branches():
    """x -> 1x1 conv (rows 1, 4 constant after Relu) -> padded 3x3 conv -> y1 (a border fold),
    and x -> 1x1 conv (rows 1, 4 constant, row 2 zero) -> 1x1 conv -> y2 (bias folds): the
    guard's four candidates all differ (without added ops, y1's fold is a carrier)."""
    inits = {"w1": weights(6, 3, 1, 1, zero_rows=[1, 4]), "b1": bias(6, POSITIVE),
             "w2": weights(5, 6, 3, 3, seed=3), "b2": bias(5, seed=3),
             "w3": weights(6, 3, 1, 1, zero_rows=[1, 2, 4], seed=4),
             "b3": bias(6, {1: 0.7, 2: 0.0, 4: 0.3}, seed=4),
             "w4": weights(5, 6, 1, 1, seed=5), "b4": bias(5, seed=5)}
    nodes = [conv("x", "w1", "c1", "b1"), relu("c1", "r1"), conv("r1", "w2", "y1", "b2", pads=1),
             conv("x", "w3", "c3", "b3"), relu("c3", "r3"), conv("r3", "w4", "y2", "b4")]
    return model(nodes, {"x": [1, 3, 8, 8]}, ["y1", "y2"], inits)


GUARD_KEPT = {  # the candidate kept -> the layers that lose channels in the result
    "cut": {"conv_c1": (3, 4), "conv_y1": (4, 5), "conv_c3": (3, 3), "conv_y2": (3, 5)},
    "no added ops": {"conv_c1": (3, 5), "conv_y1": (5, 5),  # a carrier instead of the map
                     "conv_c3": (3, 3), "conv_y2": (3, 5)},
    "zero-only": {"conv_c3": (3, 5), "conv_y2": (5, 5)},
    "original": {},
}


@pytest.mark.parametrize("fastest", list(GUARD_KEPT))
def test_guard_keeps_the_fastest_candidate(fastest):
    m, measure = two_branches(), fastest_is(fastest)
    # objective flops: under latency the border map would not pay on an 8x8 toy
    result = channelcut.cut(m, objective="flops", target="ort-cpu", measure=measure)
    assert kept_channels(result) == GUARD_KEPT[fastest] and result.report.kept == fastest
    feeds = random_feeds(m)
    for name, want in run(m, feeds).items():
        np.testing.assert_allclose(run(result.model, feeds)[name], want, rtol=1e-4, atol=1e-5)
    assert list(result.report.latencies) == list(GUARD_KEPT)
    assert result.report.latencies[fastest] == 1e-3
    assert result.report.mode == ("zero" if fastest == "zero-only" else "full")
    assert ("ConstantOfShape" in ops(result.model)) == (fastest == "cut")
    # every candidate timed on one input set, the original as given
    assert measure.models["original"].SerializeToString() == m.SerializeToString()
    assert set(measure.feeds) == {"x"}
    if fastest == "original":
        assert result.model.SerializeToString() == m.SerializeToString() and result.model is not m
        assert result.report.removed_channels == 0 and result.report.const_changes == []
        assert result.report.weight_bytes_after == result.report.weight_bytes_before


def test_guard_times_a_candidate_that_comes_out_the_same_once():
    """two_layers has no constant channels: folds change nothing, every cut is the zero-only
    one."""
    measure = fastest_is("cut")
    result = channelcut.cut(two_layers(), target="ort-cpu", measure=measure)
    assert list(measure.models) == ["cut", "original"] and result.report.kept == "cut"
    assert measure.models["cut"] is result.model


def residual_with_a_dead_half():
    """x (64 channels) -> 3x3 conv a (32 rows, 16 zero) -> relu -> 3x3 conv b (16 rows
    constant) -> Add x -> relu: conv b's 16 constant rows go only if the Add gets them back,
    which saves 72 FLOPs per element of the 64x32x32 sum and moves 2 elements for each."""
    inits = {"wa": weights(32, 64, 3, 3, zero_rows=range(16), seed=1),
             "wb": weights(64, 32, 3, 3, zero_rows=range(16), seed=2),
             "bb": bias(64, {r: 0.25 for r in range(16)}, seed=2)}
    nodes = [conv("x", "wa", "a", pads=1), relu("a", "ra"), conv("ra", "wb", "b", "bb", pads=1),
             node("Add", ["b", "x"], ["s"]), relu("s", "y")]
    return model(nodes, {"x": [1, 64, 32, 32]}, ["y"], inits)


@pytest.mark.parametrize("kept, conv_b", [("cut", (16, 48)), ("fewer added ops", (16, 64))])
def test_guard_times_the_cut_with_fewer_added_ops(kept, conv_b):
    """The reinsertion pays at the latency objective's charge per element moved (41 FLOPs per
    element against 72 saved), not at guard.FEWER_MOVES times it: the guard times both."""
    measure = fastest_is(kept)
    result = assert_cut(residual_with_a_dead_half(), {"conv_a": (64, 16), "conv_b": conv_b},
                        mode="full", objective=None, target="ort-cpu", measure=measure)
    assert list(measure.models) == ["cut", "fewer added ops", "original"]
    assert ("Pad" in ops(result.model)) == (kept == "cut") and result.report.kept == kept


def test_no_guard_off_ort_cpu():
    def measure(models, feeds):
        raise AssertionError("only ort-cpu is timed")
    assert channelcut.cut(two_layers(), target="portable", measure=measure).report.kept == ""


def test_fastest_prefers_the_simplest_candidate_within_the_margin():
    """A rewrite is kept only where it is measurably faster than every simpler candidate (the
    candidates are listed from the cut to the original)."""
    assert guard.fastest({"cut": 1.0, "zero-only": 1.0, "original": 1.0}) == "original"
    assert guard.fastest({"cut": 2.0, "zero-only": 1.5, "original": 1.0}) == "original"
    assert guard.fastest({"cut": 0.90, "no added ops": 0.91, "original": 1.0}) == "no added ops"
    assert guard.fastest({"cut": 0.90, "no added ops": 0.95, "original": 1.0}) == "cut"
    assert guard.fastest({"cut": 0.99, "original": 1.0}) == "original"
    assert guard.fastest({"cut": 0.99, "original": 1.0}, margin=0.0) == "cut"


class FakeCpu:
    """A clock and the calls it times: call `name` costs costs[name][k % len] seconds on its
    k-th call (a co-runner's cache evictions or a busy SMT sibling make some calls dearer)."""

    def __init__(self, costs: dict[str, list[float]]) -> None:
        self.now, self.calls = 0.0, dict.fromkeys(costs, 0)
        self.runs = {name: (lambda name=name, cost=cost: self._call(name, cost))
                     for name, cost in costs.items()}

    def _call(self, name: str, cost: list[float]) -> None:
        self.now += cost[self.calls[name] % len(cost)]
        self.calls[name] += 1

    def clock(self) -> float:
        return self.now


def test_guard_decision_survives_a_loaded_cpu():
    """Two thirds of the cut's runs slowed 3x by the load, which put the old median at 3 ms and
    kept the original (1.1 ms): the lower quartile still sees the cut's 1 ms."""
    cpu = FakeCpu({"cut": [1e-3, 3e-3, 3e-3], "original": [1.1e-3]})
    times = guard.alternated(cpu.runs, budget=0.05, clock=cpu.clock)
    assert times == pytest.approx({"cut": 1e-3, "original": 1.1e-3})
    assert guard.fastest(times) == "cut"
    # the warm-up call is not counted: at least MIN_ROUNDS timed calls each, all alike
    assert cpu.calls["cut"] == cpu.calls["original"] >= guard.MIN_ROUNDS + 1


def test_guard_runs_more_rounds_while_the_halves_disagree():
    """Candidates whose order flips from round to round are timed up to EXTEND times as long;
    a clear winner is not; both by the budget's count of rounds (1 ms + 2 ms a round)."""
    rounds = int(0.03 / 3e-3)
    clear = FakeCpu({"cut": [1e-3], "original": [2e-3]})
    guard.alternated(clear.runs, budget=0.03, clock=clear.clock)
    assert clear.calls == {"cut": rounds + 1, "original": rounds + 1}
    # after the warm-up, the cut is 10% faster than the original on even rounds and slower on
    # odd ones: the halves never agree, the rounds run to their limit
    close = FakeCpu({"cut": [1.2e-3, 1e-3], "original": [1.1e-3]})
    guard.alternated(close.runs, budget=0.03, clock=close.clock)
    rounds = int(0.03 / 2.3e-3)  # its warm-up round: 1.2 ms + 1.1 ms
    assert close.calls["cut"] == close.calls["original"] == rounds * guard.EXTEND + 1


def test_guard_times_cpu_not_the_wait():
    """A candidate descheduled for long (here: asleep) is not timed slower than one that computes
    for less: the guard counts this process's CPU time."""
    def compute(seconds=2e-3):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass
    assert guard.cpu_clock() is time.process_time
    times = guard.alternated({"asleep": lambda: time.sleep(0.02), "computing": compute},
                             budget=0.0)
    assert times["asleep"] < times["computing"]


def test_ort_latencies_times_each_model():
    m = two_layers()
    times = guard.ort_latencies({"a": m, "b": m}, random_feeds(m), budget=0.01)
    assert list(times) == ["a", "b"] and all(t > 0 for t in times.values())


# --- command line and facade ---------------------------------------------------------------

def test_cli_target_decides_alignment_and_reports_the_guard(tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(two_layers(), src)
    for target, a, b in (("rknn", 5, 5), ("portable", 16, 16)):
        assert cli.main(["cut", str(src), "-o", str(out), "--target", target]) == 0
        sizes = {i.name: i.dims[0] for i in onnx.load(out).graph.initializer}
        assert (sizes["wa"], sizes["wb"]) == (a, b)

    monkeypatch.setattr(guard, "ort_latencies", fastest_is("original"))
    capsys.readouterr()
    assert cli.main(["cut", str(src), "-o", str(out), "--target", "ort-cpu"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the summary wraps at 80 columns
    assert "ONNX Runtime CPU, 1 thread, CPU time per run: cut 2.000 ms, original 1.000 ms; kept: " \
           "original" in text
    assert onnx.load(out).SerializeToString() == onnx.load(src).SerializeToString()

    # the default target aligns to 16; with --zero-only it cuts like the seed and says so
    assert cli.main(["cut", str(src), "-o", str(out), "--zero-only"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "aligned as portable runs best (blocks of 16; --align target), it would be: " \
           "weights" in text
    assert cli.main(["cut", str(src), "-o", str(out), "--target", "tpu"]) == cli.EXIT_USER_ERROR


def test_facade_cuts_for_the_npu_it_builds_for(capsys):
    from channelcut.rknn import RKNN

    m = producer_then([conv("r1", "w2", "y", "b2", pads=1)],
                      {"w2": weights(5, 6, 3, 3, seed=3), "b2": bias(5, seed=3)})
    rknn = RKNN()
    assert rknn.config(target_platform="rk3588", model_pruning="full") == 0
    assert rknn.load_onnx(m) == 0 and rknn.build() == 0
    assert rknn._cut_target == "rknn"
    # no border map for the NPU: one constant channel stays and carries the other
    assert [n.op_type for n in rknn._core.graph.node] == ["Conv", "Relu", "Conv"]
    assert {i.name: i.dims[0] for i in rknn._core.graph.initializer}["w1"] == 5


def test_facade_cuts_for_int8_when_it_quantizes(tmp_path):
    """build(do_quantization=True) cuts for rknn-int8 (Concat inputs aligned to 16), a float
    build for rknn."""
    from channelcut.rknn import RKNN

    m = concat_read_by([conv("c", "wy", "y")], rows=32, dead=27)
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 4
    rng = np.random.default_rng(0)
    for index in range(4):
        np.save(tmp_path / f"{index}.npy", rng.uniform(0, 255, (4, 4, 4)).astype(np.float32))
    (tmp_path / "dataset.txt").write_text("".join(f"{i}.npy\n" for i in range(4)))
    removed = {}
    for quantize, target in ((False, "rknn"), (True, "rknn-int8")):
        rknn = RKNN()
        assert rknn.config(target_platform="rk3588", model_pruning="full") == 0
        assert rknn.load_onnx(m) == 0
        assert rknn.build(do_quantization=quantize, dataset=tmp_path / "dataset.txt") == 0
        assert rknn._report.target == target
        removed[target] = rknn._report.removed_channels
    # conv_p keeps 8 or 16 of 32 rows; a cut channel counts in the conv's output,
    # its Relu's and the Concat's
    # (the last input keeps its 5: test_rknn_never_aligns_the_last_input_of_a_concat)
    assert removed == {"rknn": 3 * (32 - 8 + 32 - 5), "rknn-int8": 3 * (32 - 16 + 32 - 5)}
