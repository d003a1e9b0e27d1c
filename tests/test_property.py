"""Property tests: on random graphs with random dead channels, a cut never changes an output.

Hypothesis draws recipes (tests/randomgraphs.py: input channels, a list of ops each with its own
seed, the head, how often weights are zeroed or made non-finite, the interface); every cut is
judged by tests/cutcheck.py, which bench/fuzz.py runs on tens of thousands of graphs: the cut
raises nothing but a ChannelcutError and its own verification accepts it; the cut model passes
the full checker, keeps every graph input and output (name, type, dims, dim_params), has no
more weight bytes, gives the original's outputs in ONNX Runtime with graph optimizations off on
three seeded inputs (one of large magnitude; NaN and Inf at the same positions exactly); and
cutting it again removes nothing. One test per pattern, so that a failure says which one.

With CI=true the examples are derandomized, so a CI run is reproducible;
CHANNELCUT_PROPERTY_EXAMPLES sets how many the two broad tests draw (default 60; the tests of one
pattern draw half as many).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cutcheck import failures, judge
from randomgraphs import (BASE_HEADS, BASE_OPS, GATHER, HEADS, OPS, RULE_OPS, SHUFFLE, Recipe,
                          build, recipes)

EXAMPLES = int(os.environ.get("CHANNELCUT_PROPERTY_EXAMPLES", 60))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CI", "").lower() == "true",
    suppress_health_check=[HealthCheck.too_slow],
)
# The tests of one pattern each draw half as many: bench/fuzz.py runs them at scale.
PATTERN_SETTINGS = settings(SETTINGS, max_examples=max(1, EXAMPLES // 2))
# Finite weights, channels on axis 1, plain interface: the graphs of the first property tests.
PLAIN = {"special": 0.0, "input_is_output": "", "dynamic_batch": False}


def assert_exact(recipe: Recipe, mode: str) -> None:
    found = failures(judge(build(recipe), mode))
    assert not found, "\n".join(str(f) for f in found)


# conv0 has a constant channel (a zero row, bias -1.5) and is added to itself; the full cut
# removes the channel and reinserts the constant on both operands of the Add.
ADD_TO_ITSELF = Recipe(in_channels=1, steps=(("conv", 0), ("add", 0), ("conv", 0)), head="gemm",
                       p_row=0.5, p_col=0.0, extra_output=False)
# bn1 + bn1 with constant channels: reinserted once for both operands, paid for once.
BN_ADDED_TO_ITSELF = Recipe(in_channels=1, steps=(("conv", 3548), ("bn", 0), ("conv", 1),
                                                  ("add", 0), ("conv", 0), ("conv", 0)),
                            head="conv", p_row=0.6, p_col=0.0, extra_output=True)
# Channel 0 of conv1 is unread (weight column 0 of conv2 is zero) two readers from an output.
UNREAD_CHANNEL_ZERO = Recipe(in_channels=1, steps=(("conv", 0), ("conv", 0), ("conv", 652454),
                                                   ("conv", 25)),
                             head="gemm", p_row=0.0, p_col=0.5, extra_output=True)
# conv2 reads nothing of conv1 (all its weights are zero) and conv1 reads no channel 0 of conv0:
# conv0 and conv1 would both lose every channel.
TWO_EMPTIED_TENSORS = Recipe(in_channels=1, steps=(("conv", 0), ("conv", 652454),
                                                   ("conv", 67864857)),
                             head="gemm", p_row=0.0, p_col=0.5, extra_output=False)
# conv4 is read by nothing (conv5 has zero weights) but must keep a channel; conv5 is grouped
# (3 groups, 2 outputs each) and only its group 2 keeps an output: conv4 keeps that group's
# input, not channel 0 (which would keep group 0 alive too).
EMPTIED_BEFORE_A_GROUPED_CONV = Recipe(
    in_channels=1, steps=(("conv", 0), ("conv", 0), ("conv", 0), ("conv", 0), ("conv", 0),
                          ("conv", 4294967295), ("bn", 0)),
    head="gemm", p_row=0.0, p_col=0.6, extra_output=False)

# The smallest cases bench/fuzz.py found for each pattern of issue 10 (all failed on the code
# before its fixes). A full cut of conv0 -> two convs reading one weight, cut again, removes
# 4 more groups.
SHARED_WEIGHT_RECUT = Recipe(in_channels=1, steps=(("conv", 3743126992), ("shared", 183)),
                             head="raw", p_row=0.6, p_col=0.0, extra_output=False)
# Two convs share a weight on inputs that lose different channels: zero-only cut 720 -> 928 bytes.
SHARED_WEIGHT_GROWS = Recipe(in_channels=2, steps=(("matmul", 2127244213), ("act", 392869866),
                                                   ("shared", 189)),
                             head="conv", p_row=0.6, p_col=0.0, extra_output=True)
# Zero-only cut, cut again, removes 2 more groups (8 channels).
ZERO_CUT_RECUT = Recipe(in_channels=2, steps=(("bn", 2851740176), ("avgpool", 1713431358),
                                              ("conv", 1146780049), ("conv", 1875584834),
                                              ("const", 443157552), ("avgpool", 31661626),
                                              ("slice", 89)),
                        head="conv", p_row=0.0, p_col=0.6, extra_output=False)
# NaN in the weights of a channel that a zero weight column does not read: cut, the NaN goes.
NAN_CHANNEL_UNREAD = Recipe(in_channels=1, steps=(("add", 3232108949), ("conv", 1171870400),
                                                  ("conv", 827282748)),
                            head="conv", p_row=0.3, p_col=0.0, extra_output=False, special=0.3)
NAN_AFTER_PRELU = Recipe(in_channels=1, steps=(("resize", 2935923865), ("prelu", 1777471567),
                                               ("conv", 780791381)),
                         head="conv", p_row=0.6, p_col=0.0, extra_output=False, special=0.3)
# x*x -> Conv 1->1 with weight -1e30 -> times x -> Conv 1->6 -> a head reading channel 0: on the
# large input the product overflows, and the unread channels were cut (NaN at 30 positions less).
LARGE_WEIGHT_TIMES_INPUT = Recipe(in_channels=1, steps=(("mul", 3485035698),
                                                        ("broadcast", 28737414),
                                                        ("conv", 581953099)),
                                  head="conv", p_row=0.0, p_col=0.6, extra_output=False,
                                  special=0.1)
# Conv 3x3 valid -> Conv to 2 channels, Transpose (channels to axis 2), Concat on axis 1: the
# output loses a channel (8 -> 7).
TRANSPOSED_CONCAT = Recipe(in_channels=1,
                           steps=(("conv", 506833802), ("axisconcat", 129)), head="raw",
                           p_row=0.0, p_col=0.3, extra_output=False)
# ... then GlobalAveragePool, Flatten, Gemm: the cut model fails in ONNX Runtime.
TRANSPOSED_CONCAT_GEMM = Recipe(in_channels=1,
                                steps=(("conv", 506833802), ("axisconcat", 129)), head="gemm",
                                p_row=0.0, p_col=0.3, extra_output=False)
# A full cut through BN, MatMul on the last axis, Transpose and the mixflat head, cut again,
# removes 3 more groups.
MIXED_AXES_RECUT = Recipe(in_channels=2, steps=(("conv", 1326494862), ("split", 1251337212),
                                                ("avgpool", 1481618864), ("bn", 1469357800),
                                                ("axisconcat", 3716027968),
                                                ("matmul", 3146590501)),
                          head="mixflat", p_row=0.6, p_col=0.0, extra_output=False)
# The mixflat head concatenates Flatten(PRelu) (6 channels of 32) with 7 of one: a full cut,
# reinserting 4 channels at the PRelu, cut again, removes the MatMul's 2 zero outputs (7 -> 5).
BLOCKS_RECUT = Recipe(in_channels=2, steps=(("maxpool", 2808715736), ("bcast", 270953762),
                                            ("prelu", 2592526263), ("matmul", 2985200139)),
                      head="mixflat", p_row=0.6, p_col=0.0, extra_output=False, special=0.1)
# Conv 2->1 (a zero weight), Div, then a depthwise conv: the analysis crashes (reshape).
ONE_CHANNEL_DIV_DEPTHWISE = Recipe(in_channels=2, steps=(("bcast", 3666321497),), head="conv",
                                   p_row=0.0, p_col=0.3, extra_output=False)
# Conv 5->1, GlobalAveragePool, Div, depthwise conv: crash in connected_components.
POOLED_ONE_CHANNEL_DIV = Recipe(in_channels=5, steps=(("bcast", 576158323),), head="raw",
                                p_row=0.6, p_col=0.6, extra_output=False)
SLICE_THEN_ONE_CHANNEL_ADD = Recipe(in_channels=6, steps=(("slice", 3708914385),
                                                          ("bcast", 867283775)),
                                    head="conv", p_row=0.6, p_col=0.3, extra_output=False)
# The input is an output too, declared with dims of unknown size / batch "batch" / batch 1:
# the cut model's input takes those dims.
INPUT_OUTPUT_UNKNOWN = Recipe(in_channels=6, steps=(("split", 892633604),), head="raw",
                              p_row=0.6, p_col=0.0, extra_output=False,
                              input_is_output="unknown", dynamic_batch=True)
INPUT_OUTPUT_RENAMED = Recipe(in_channels=3, steps=(("act", 4019161254),), head="conv",
                              p_row=0.6, p_col=0.3, extra_output=False,
                              input_is_output="renamed")
INPUT_OUTPUT_FIXED = Recipe(in_channels=2, steps=(("maxpool", 1790415858),), head="conv",
                            p_row=0.6, p_col=0.0, extra_output=False, input_is_output="fixed",
                            dynamic_batch=True)
# Conv, BN (a scale 0), Conv, Conv, Gemm head: a full cut, cut again, removes 1 more group
# (on main after the BN scale-0 fix as well).
BN_FULL_RECUT = Recipe(in_channels=1, steps=(("conv", 23563), ("bn", 2198257139), ("conv", 0),
                                             ("conv", 1)),
                       head="gemm", p_row=0.3, p_col=0.0, extra_output=False)
# Three convs on x, two convs sharing one weight whose outputs nothing reads, a 3x3 conv: a full
# cut, cut again, removes 8 more groups.
SHARED_UNUSED_RECUT = Recipe(in_channels=1, steps=(("conv", 2236086385), ("shared", 511847140),
                                                   ("conv", 1510256977)),
                             head="raw", p_row=0.6, p_col=0.0, extra_output=False)
# Border folds into grouped convs (issue 10 item 5): a conv group then computes only its bias,
# yet the first full cut kept it (and its inputs, a grouped conv keeping as many per group); a
# second cut put the biases back at the fold's Add and dropped the group: 4 more groups here.
GROUP_OF_BIASES_RECUT = Recipe(in_channels=1, steps=(("conv", 1326494862), ("conv", 3164949339)),
                               head="raw", p_row=0.6, p_col=0.0, extra_output=False)
# ... after BN with scale 0 and two Splits: 12 more groups.
BN_GROUP_OF_BIASES_RECUT = Recipe(in_channels=1,
                                  steps=(("conv", 0), ("conv", 1), ("conv", 56334),
                                         ("bn", 2198257139), ("conv", 85), ("split", 0),
                                         ("split", 0)),
                                  head="gemm", p_row=0.3, p_col=0.0, extra_output=False)
# A Div by an all-zero 1-channel conv (every quotient +-Inf or NaN) before a grouped conv with
# zero weights: only the quotients of known channels were marked NaN; a second cut, which sees
# the first's reinsertion (constants at the Div) as unknown channels, took the conv's rows for
# their biases (2 more groups).
DIVISION_BY_ZERO_RECUT = Recipe(in_channels=1, steps=(("conv", 2970246929), ("pad", 3094583791),
                                                      ("bcast", 191517558)),
                                head="conv", p_row=0.6, p_col=0.0, extra_output=False)
# ... and a Div by a MatMul output with zero columns: the first cut reinserted those zeros at
# the Div, and a second cut, seeing an unknown divisor, took the next convs' rows (3 groups).
ZERO_DIVISOR_RECUT = Recipe(in_channels=6,
                            steps=(("resize", 3381448080), ("mixconcat", 3043360937),
                                   ("axisconcat", 642284523), ("bcast", 254733608),
                                   ("conv", 3919098841)),
                            head="conv", p_row=0.6, p_col=0.0, extra_output=False)
# params objective: a bias fold (12 bytes saved, 12 added) and the Add's reinsertion were
# refused at once; without the reinsertion the fold saves 16, and a second cut took it (1 group).
FOLD_REFUSED_WITH_REINSERTION = Recipe(
    in_channels=1, steps=(("resize", 1254664063), ("bcast", 1654895561), ("add", 4052452993),
                          ("custom", 2992851795), ("slice", 773984248), ("matmul", 3028115885),
                          ("const", 2010417922)),
    head="conv", p_row=0.6, p_col=0.6, extra_output=False, special=0.3)
# A depthwise conv (multiplier 2, all-zero weights) whose every row is its bias, then a Slice of
# one channel: the conv computed row 0 rather than the kept row 2, and a second cut took 1 group.
ONE_ROW_COMPUTED = Recipe(in_channels=1, steps=(("conv", 2), ("conv", 4294967295), ("slice", 0)),
                          head="gemm", p_row=0.0, p_col=0.3, extra_output=False)
# bench/fuzz.py seed 41: cutting the cut model added a second reinsertion at the output and
# removed one more channel (a zero row of the last conv, kept as its emptied computed rows'
# pick before an upstream pick made its other rows variable); both cuts exact.
SECOND_REINSERTION_AT_THE_OUTPUT = Recipe(
    in_channels=1, steps=(("conv", 3210020627), ("conv", 1180067369), ("mixconcat", 3231468410),
                          ("bn", 201428018), ("conv", 3403505816)),
    head="raw", p_row=0.6, p_col=0.3, extra_output=False, special=0.0)
# bench/fuzz.py seed 43: a BatchNormalization bias of -1e30 in one channel made every channel
# possibly NaN, so the zero-scale channels after it were not zero; a second cut, without that
# channel, removed one of them.
HUGE_BN_BIAS_RECUT = Recipe(
    in_channels=1, steps=(("matmul", 645692115), ("bn", 4028235466), ("split", 4115533262)),
    head="conv", p_row=0.6, p_col=0.0, extra_output=False, special=0.3)
# bench/fuzz.py seed 43: a depthwise conv of zero weights, pooled and flattened into a Gemm:
# the flattened tensor, emptied, kept its first channel instead of one in a conv group that
# kept inputs anyway, and the conv's balancing kept every group alive; a second cut took 2.
EMPTIED_AFTER_A_POOLED_GROUPED_CONV = Recipe(
    in_channels=4, steps=(("bcast", 1961533880), ("const", 4220346959), ("split", 3698574143),
                          ("conv", 3551823806), ("bcast", 2834006767)),
    head="gemm", p_row=0.0, p_col=0.6, extra_output=False, special=0.1)
# bench/fuzz.py seed 44: 0 / (a zero channel) everywhere; the first cut knew the divisor was
# zero and kept what reads the NaN, but put the zero channel back through a reinsertion's Pad
# and Gather on the channel axis, barriers then: a second cut took the divisor for computed.
# Now a reinsertion around one run of kept channels is a Pad alone, which a cut follows.
DIVISOR_BEHIND_A_REINSERTION = Recipe(
    in_channels=1, steps=(("conv", 3500631739), ("broadcast", 909511443),
                          ("resize", 979199695), ("bcast", 386211347)),
    head="conv", p_row=0.6, p_col=0.0, extra_output=False, special=0.0)
# bench/fuzz.py seed 45: a grouped conv of zero weights keeps a constant row per group; its
# other rows fold into an Add after a MatMul whose columns then read constants alone, which a
# second cut took at that Add.
# hypothesis, test_nonfinite_huge_and_tiny_weights: a padded conv read a denormal constant
# channel (bias 1e-40) through denormal weights (-1e-40); the products round to zero, but the
# first cut kept the row as computed, with a border map of zeros, which a second cut removed.
DENORMAL_PRODUCTS = Recipe(
    in_channels=1, steps=(("conv", 15683559), ("conv", 761), ("conv", 761)), head="gemm",
    p_row=0.6, p_col=0.0, extra_output=False, special=0.3)
# bench/fuzz.py seed 47: a padded grouped conv reading a pooled 1x1 input of constants has
# one output position; its rows were kept as computed, with border maps a second cut folded.
ONE_POSITION_PADDED_CONV = Recipe(
    in_channels=1, steps=(("conv", 2468749268), ("avgpool", 3878801650), ("conv", 160426187)),
    head="conv", p_row=0.0, p_col=0.6, extra_output=False, special=0.0)
# bench/fuzz.py seed 48: a Div by a constant (15, 1, 1) holding -1e-40, along the channels of a
# Concat whose tracked channels are on the last axis: x / -1e-40 overflows, and the zero rows
# of the conv after it, 0 * Inf = NaN, were folded as their biases (a refused cut).
DENORMAL_DIVISOR = Recipe(
    in_channels=5, steps=(("mixconcat", 3927928709), ("const", 1884152033),
                          ("conv", 2884420697), ("prelu", 3564120748)),
    head="raw", p_row=0.3, p_col=0.0, extra_output=False, special=0.3)
# bench/fuzz.py seed 48: a padded grouped conv after a custom op, whose input shape is unknown
# (its output's is not), was given a border fold, which needs the input's size (a crash).
BORDER_FOLD_OF_UNKNOWN_SIZE = Recipe(
    in_channels=2, steps=(("custom", 833799452), ("bcast", 450696954), ("shared", 285211866)),
    head="raw", p_row=0.6, p_col=0.0, extra_output=False, special=0.0)
# bench/fuzz.py seed 48, ort-cpu: a padded grouped conv's zero rows were to be put back as
# their biases, its channels all kept; the rewrite passed over a node that lost no channel,
# so the report counted 5 groups removed from an unchanged model, and so did a second cut.
ROWS_COMPUTED_WITHOUT_ONLY = Recipe(
    in_channels=1, steps=(("conv", 1724339655), ("split", 3199384809),
                          ("axisconcat", 1567771053), ("conv", 231712938)),
    head="mixflat", p_row=0.6, p_col=0.0, extra_output=False, special=0.3)
# bench/fuzz.py seed 53 (ort-cpu): every channel a constant; aligned before the picks of the
# emptied tensors, the Concat kept channels that its pick then made needless, and the cut kept
# computing two bias rows of a grouped conv that a cut of the cut put back
ALIGNED_BEFORE_THE_PICKS = Recipe(
    in_channels=3, steps=(("axisconcat", 778922359), ("conv", 2745311996), ("mul", 2898637923),
                          ("avgpool", 1825197692), ("conv", 1184182808),
                          ("concat", 1015072154)),
    head="conv", p_row=0.6, p_col=0.0, extra_output=False, special=0.0)
CONSTANT_COLUMNS_AFTER_A_FOLD = Recipe(
    in_channels=6, steps=(("bcast", 3071093076), ("matmul", 1061176387)), head="raw",
    p_row=0.0, p_col=0.6, extra_output=False, special=0.0)
# The YOLOv8 head after a per-channel Mul: output [1, 9, 32] becomes [1, 5, 32].
YOLO_HEAD = Recipe(in_channels=2, steps=(("const", 3029376520),), head="dfl", p_row=0.6,
                   p_col=0.6, extra_output=True)


# A MatMul over the width axis concatenated with a conv output (issue 10): nothing is zero,
# yet the conv's channels looked unread and were cut, and the head kept its 7 input columns.
MIXED_AXIS_CONCAT = Recipe(in_channels=1,
                           steps=(("conv", 1), ("conv", 315), ("mixconcat", 0)), head="conv",
                           p_row=0.0, p_col=0.0, extra_output=False)


@pytest.mark.parametrize("mode", ["zero", "full"])
@SETTINGS
@example(recipe=MIXED_AXIS_CONCAT)
@example(recipe=ADD_TO_ITSELF)
@example(recipe=BN_ADDED_TO_ITSELF)
@example(recipe=UNREAD_CHANNEL_ZERO)
@example(recipe=TWO_EMPTIED_TENSORS)
@example(recipe=EMPTIED_BEFORE_A_GROUPED_CONV)
@example(recipe=ZERO_CUT_RECUT)
@example(recipe=GROUP_OF_BIASES_RECUT)
@given(recipe=recipes(BASE_OPS, BASE_HEADS, **PLAIN))
def test_cut_is_exact(mode, recipe):
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["full", "params"])
@pytest.mark.parametrize("recipe", [GROUP_OF_BIASES_RECUT, BN_GROUP_OF_BIASES_RECUT,
                                    DIVISION_BY_ZERO_RECUT, ZERO_DIVISOR_RECUT,
                                    FOLD_REFUSED_WITH_REINSERTION, ONE_ROW_COMPUTED,
                                    SECOND_REINSERTION_AT_THE_OUTPUT,
                                    ONE_POSITION_PADDED_CONV],
                         ids=["group", "bn", "div", "divisor", "refused-together", "one-row",
                              "second-reinsertion", "one-position"])
def test_full_cut_is_a_fixed_point_after_a_border_fold_into_a_grouped_conv(mode, recipe):
    """The fixpoint findings of issue 10 item 5, under both objectives that fold (the third
    and fourth divide by zero channels; then a fold refused with a reinsertion, a Slice of a
    depthwise conv's one row, and a needless pick of an emptied tensor)."""
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
@PATTERN_SETTINGS
@example(recipe=BN_FULL_RECUT)
@example(recipe=BN_GROUP_OF_BIASES_RECUT)
@given(recipe=recipes(BASE_OPS, BASE_HEADS, must_use=("bn",), p_row=(0.3, 0.6), **PLAIN))
def test_batchnorm_with_zero_scales(mode, recipe):
    """Network slimming: BatchNormalization scales exactly 0 on some channels."""
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
@PATTERN_SETTINGS
@example(recipe=NAN_CHANNEL_UNREAD)
@example(recipe=NAN_AFTER_PRELU)
@example(recipe=LARGE_WEIGHT_TIMES_INPUT)
@example(recipe=HUGE_BN_BIAS_RECUT)
@example(recipe=EMPTIED_AFTER_A_POOLED_GROUPED_CONV)
@example(recipe=DIVISOR_BEHIND_A_REINSERTION)
@example(recipe=DENORMAL_PRODUCTS)
@example(recipe=DENORMAL_DIVISOR)
@given(recipe=recipes(OPS, HEADS, special=(0.3, 0.6), input_is_output="",
                      dynamic_batch=False))
def test_nonfinite_huge_and_tiny_weights(mode, recipe):
    """NaN, +-Inf, huge, denormal and -0.0 entries in weights, biases and BN parameters."""
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
@PATTERN_SETTINGS
@example(recipe=TRANSPOSED_CONCAT)
@example(recipe=TRANSPOSED_CONCAT_GEMM)
@example(recipe=MIXED_AXES_RECUT)
@example(recipe=BLOCKS_RECUT)
@example(recipe=ZERO_DIVISOR_RECUT)
@given(recipe=recipes(BASE_OPS, ("mixflat", "mixflat", *BASE_HEADS), must_use=("axisconcat",),
                      **PLAIN))
def test_concat_of_channels_on_different_axes(mode, recipe):
    """Concat of an operand whose axis 1 is not its channel axis (through a Transpose, a MatMul
    on the last axis, Squeeze + Flatten)."""
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
@PATTERN_SETTINGS
@example(recipe=YOLO_HEAD)
@given(recipe=recipes(BASE_OPS, ("dfl",), special=0.0, input_is_output="",
                      dynamic_batch=(False, True)))
def test_yolo_detect_head(mode, recipe):
    """YOLOv8's box branch (Reshape, Transpose, Softmax, 1-channel Conv, Reshape) first in an
    axis-1 Concat with the class branch, feeding the graph output."""
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
@PATTERN_SETTINGS
@example(recipe=ONE_CHANNEL_DIV_DEPTHWISE)
@example(recipe=POOLED_ONE_CHANNEL_DIV)
@example(recipe=SLICE_THEN_ONE_CHANNEL_ADD)
@example(recipe=DIVISION_BY_ZERO_RECUT)
@example(recipe=CONSTANT_COLUMNS_AFTER_A_FOLD)
@given(recipe=recipes(BASE_OPS, BASE_HEADS, must_use=("bcast",), **PLAIN))
def test_one_channel_broadcast_into_grouped_conv(mode, recipe):
    """A 1-channel tensor broadcast by Add/Sub/Mul/Div, then a grouped or depthwise conv."""
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
@PATTERN_SETTINGS
@example(recipe=INPUT_OUTPUT_UNKNOWN)
@example(recipe=INPUT_OUTPUT_RENAMED)
@example(recipe=INPUT_OUTPUT_FIXED)
@given(recipe=recipes(BASE_OPS, BASE_HEADS, special=0.0,
                      input_is_output=("same", "fixed", "unknown", "renamed"),
                      dynamic_batch=(False, True)))
def test_graph_input_that_is_an_output(mode, recipe):
    """The input "x" is an output too, declared with the same or other dims."""
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
@PATTERN_SETTINGS
@example(recipe=SHARED_WEIGHT_RECUT)
@example(recipe=SHARED_WEIGHT_GROWS)
@example(recipe=SHARED_UNUSED_RECUT)
@given(recipe=recipes(BASE_OPS, BASE_HEADS, must_use=("shared",), **PLAIN))
def test_shared_and_equal_initializers(mode, recipe):
    """One constant read by two convs, or equal but separate copies of it."""
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full"])
@PATTERN_SETTINGS
@example(recipe=BORDER_FOLD_OF_UNKNOWN_SIZE)
@given(recipe=recipes(BASE_OPS, BASE_HEADS, must_use=("custom",), **PLAIN))
def test_custom_domain_op(mode, recipe):
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full", "align8"])
@PATTERN_SETTINGS
@given(recipe=recipes(BASE_OPS, BASE_HEADS, must_use=(SHUFFLE,), **{**PLAIN, "dynamic_batch": (False, True)}))
def test_channel_shuffle(mode, recipe):
    """ShuffleNet's Reshape -> Transpose -> Reshape: a Gather where the groups end unequal."""
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["zero", "full", "align8", "ort-cpu"])
@PATTERN_SETTINGS
@given(recipe=recipes(OPS, HEADS, must_use=(GATHER,)))
def test_channel_gather(mode, recipe):
    """x[:, indices] (a barrier to the analysis: the channels around it are kept)."""
    assert_exact(recipe, mode)


# Each op of the rule table the other draws never make, drawn by a test of its own (a quarter
# of a pattern test's examples each: bench/fuzz.py --extra-ops rules runs them at scale).
RULE_SETTINGS = settings(SETTINGS, max_examples=max(1, EXAMPLES // 4))


@pytest.mark.parametrize("mode", ["zero", "full"])
@pytest.mark.parametrize("op", RULE_OPS)
@RULE_SETTINGS
@given(data=st.data())
def test_rule_table_ops(op, mode, data):
    """Elementwise ops (Sqrt, Log, Reciprocal, Pow outside their domains too), reductions,
    normalizations, variadic Max/Min/Mean/Sum, ConvTranspose, Softmax and its kin, pooled
    tensors expanded or tiled back, Div of computed tensors (tests/randomgraphs.RULE_OPS)."""
    assert_exact(data.draw(recipes(OPS + RULE_OPS, HEADS, must_use=(op,))), mode)


@pytest.mark.parametrize("mode", ["zero", "full", "align8"])
@SETTINGS
@given(recipe=recipes(OPS, HEADS))
def test_every_pattern(mode, recipe):
    assert_exact(recipe, mode)


@pytest.mark.parametrize("mode", ["ort-cpu"])
@PATTERN_SETTINGS
@example(recipe=ROWS_COMPUTED_WITHOUT_ONLY)
@example(recipe=ALIGNED_BEFORE_THE_PICKS)
@given(recipe=recipes(OPS, HEADS))
def test_every_pattern_in_ort_cpu_forms(mode, recipe):
    """ort-cpu's alignment and its reinsertion form (Concat, Expand, Gather)."""
    assert_exact(recipe, mode)
