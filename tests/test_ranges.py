"""Channels dead only because of their value range (issue 12): bounded activations, weighted
sums of bounded inputs, declared input ranges; checked in ONNX Runtime on inputs at the edges."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest

from channelcut import cli
from channelcut.verify import random_inputs
from builders import assert_cut, bias, conv, cut, model, node, relu, run, weights

C = 6


def edge_feeds(shape: tuple[int, ...], lo: float, hi: float, seed: int = 0) -> dict:
    """Inputs that reach both edges of [lo, hi]: a third at lo, a third at hi, the rest inside
    (the convs below then see their extreme sums somewhere)."""
    rng = np.random.default_rng(seed)
    pick = rng.random(shape)
    x = np.where(pick < 1 / 3, lo, np.where(pick > 2 / 3, hi, rng.uniform(lo, hi, shape)))
    return {"x": x.astype(np.float32)}


def assert_same(m: onnx.ModelProto, cut_model: onnx.ModelProto, feeds: dict) -> None:
    want, got = run(m, feeds), run(cut_model, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def relu6_depthwise(margin: float, fill: float | None = None) -> onnx.ModelProto:
    """x -> conv -> ReLU6 -> [Pad(fill)] -> depthwise 3x3 (padded) -> ReLU6 -> conv -> y;
    the depthwise biases of channels 1 and 4 are `margin` below -6 * sum(positive weights),
    so those ReLU6 outputs are always 0 (for margin > 0) whatever x is."""
    wd = weights(C, 1, 3, 3, seed=3)
    bd = np.full(C, 0.5, np.float32)
    bd[[1, 4]] = -(6 * np.clip(wd[[1, 4]], 0, None).reshape(2, -1).sum(1) + margin)
    pad = [] if fill is None else [node("Pad", ["r", "pads", "fill"], ["p"])]
    return model(
        [conv("x", "w1", "a"), node("Clip", ["a", "zero", "six"], ["r"]), *pad,
         conv("p" if pad else "r", "wd", "d", "bd", pads=1, group=C),
         node("Clip", ["d", "zero", "six"], ["r2"]), conv("r2", "w2", "y")],
        inputs={"x": [1, 3, 8, 8]}, outputs=["y"],
        inits={"w1": weights(C, 3, 1, 1), "wd": wd, "bd": bd, "w2": weights(4, C, 1, 1, seed=5),
               "zero": np.float32(0), "six": np.float32(6),
               **({} if fill is None else {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                                           "fill": np.float32(fill)})})


@pytest.mark.parametrize("mode", ["zero", "full"])
def test_relu6_depthwise_negative_bias_cuts_two_channels(mode: str) -> None:
    m = relu6_depthwise(margin=0.1)
    # x of magnitude 100 drives the first ReLU6 to both 0 and 6
    feeds = edge_feeds((1, 3, 8, 8), -100.0, 100.0)
    result = assert_cut(m, {"conv_a": (3, 4), "conv_d": (4, 4), "conv_y": (4, 4)}, mode=mode,
                        feeds=feeds)
    assert result.report.range_channels == 2
    (fact,) = result.report.range_cuts
    assert (fact.tensor, fact.op_type, fact.channels, fact.value) == ("r2", "Clip", [1, 4], 0.0)
    assert fact.bound[1] < 0  # the depthwise conv's upper bound is what proves it
    assert result.report.to_dict()["range_channels"] == 2


def test_relu6_depthwise_bias_not_negative_enough_keeps_every_channel() -> None:
    # 0.05 above the bound: the depthwise sum can reach +0.05 where the input is 6 everywhere
    m = relu6_depthwise(margin=-0.05)
    result = assert_cut(m, {}, feeds=edge_feeds((1, 3, 8, 8), -100.0, 100.0))
    assert result.report.range_channels == 0


def test_pad_fill_joins_the_interval() -> None:
    # a fill of 7 lies above the ReLU6's 6: the padded depthwise input may be 7, and the
    # bias 0.1 below -6 * sum(w+) no longer keeps the sum negative
    m = relu6_depthwise(margin=0.1, fill=7.0)
    assert_cut(m, {}, feeds=edge_feeds((1, 3, 8, 8), -100.0, 100.0))
    m = relu6_depthwise(margin=0.1, fill=3.0)  # a fill inside [0, 6] changes no bound
    result = assert_cut(m, {"conv_a": (3, 4), "conv_d": (4, 4), "conv_y": (4, 4)},
                        feeds=edge_feeds((1, 3, 8, 8), -100.0, 100.0))
    assert result.report.range_channels == 2


def sigmoid_conv_relu(bias_at: dict[int, float]) -> onnx.ModelProto:
    """x -> Sigmoid -> conv (biases of some rows set) -> Relu -> conv -> y."""
    w = weights(C, 3, 3, 3, seed=2)
    b = np.full(C, 0.2, np.float32)
    for row, value in bias_at.items():
        b[row] = value
    return model([node("Sigmoid", ["x"], ["s"]), conv("s", "w", "a", "b", pads=1),
                  relu("a", "r"), conv("r", "w2", "y")],
                 inputs={"x": [1, 3, 8, 8]}, outputs=["y"],
                 inits={"w": w, "b": b, "w2": weights(4, C, 1, 1, seed=4)})


def test_sigmoid_conv_relu_cuts_rows_whose_sum_stays_negative() -> None:
    w = weights(C, 3, 3, 3, seed=2)
    positive = np.clip(w, 0, None).reshape(C, -1).sum(1)
    # rows 0 and 3: below -sum(w+) (Sigmoid <= 1), dead; row 5 just above, alive
    m = sigmoid_conv_relu({0: -positive[0] - 0.01, 3: -positive[3] - 0.5, 5: -positive[5] + 0.05})
    feeds = edge_feeds((1, 3, 8, 8), -30.0, 30.0)  # Sigmoid at 0 and at 1 (to float32)
    result = assert_cut(m, {"conv_a": (3, 4), "conv_y": (4, 4)}, feeds=feeds)
    assert result.report.range_channels == 2
    assert [c.channels for c in result.report.range_cuts] == [[0, 3]]


def bounded_input_model() -> tuple[onnx.ModelProto, np.ndarray]:
    """x (in [0, 1] by declaration) -> conv -> Relu -> conv -> y; rows 1 and 2 have biases
    below -sum(w+), so their Relu is 0 for every x in [0, 1] (not for larger x)."""
    w = weights(C, 3, 1, 1, seed=6)
    b = np.full(C, 0.1, np.float32)
    positive = np.clip(w, 0, None).reshape(C, -1).sum(1)
    b[1], b[2] = -positive[1] - 0.02, -positive[2] - 0.3
    m = model([conv("x", "w", "a", "b"), relu("a", "r"), conv("r", "w2", "y")],
              inputs={"x": [1, 3, 4, 4]}, outputs=["y"],
              inits={"w": w, "b": b, "w2": weights(3, C, 1, 1, seed=7)})
    return m, b


def test_declared_input_range_cuts_and_unbounded_input_does_not() -> None:
    m, _ = bounded_input_model()
    assert_cut(m, {})  # unbounded x: nothing is dead
    result = assert_cut(m, {"conv_a": (3, 4), "conv_y": (4, 3)}, input_ranges={"x": (0.0, 1.0)},
                        feeds=edge_feeds((1, 3, 4, 4), 0.0, 1.0))
    assert result.report.range_channels == 2
    assert result.report.input_ranges == {"x": [[0.0, 1.0]]}
    # all of x at one edge: every bound of the convs is reached
    for edge in (0.0, 1.0):
        assert_same(m, result.model, {"x": np.full((1, 3, 4, 4), edge, np.float32)})


def test_cli_input_range_report_and_json(tmp_path, capsys) -> None:
    m, _ = bounded_input_model()
    src, out, report = tmp_path / "m.onnx", tmp_path / "cut.onnx", tmp_path / "r.json"
    onnx.save(m, src)
    code = cli.main(["cut", str(src), "-o", str(out), "--input-range", "x:0,1",
                     "--report-json", str(report)])
    text = capsys.readouterr().out
    assert code == 0
    lines = text.splitlines()
    assert any(line.startswith("input range:") and "x in [0, 1]" in line for line in lines)
    assert any(line.startswith("by range:") and "2 channels cut" in line for line in lines)
    data = json.loads(report.read_text())
    assert data["range_channels"] == 2
    assert data["input_ranges"] == {"x": [[0.0, 1.0]]}
    assert data["range_cuts"][0]["channels"] == [1, 2]
    assert_same(m, onnx.load(out), edge_feeds((1, 3, 4, 4), 0.0, 1.0))


@pytest.mark.parametrize("text,words", [("x:1", ["NAME:LO,HI"]), ("x:2,1", ["LO must be"]),
                                        ("nope:0,1", ["no such input", "nope"])])
def test_cli_bad_input_range_is_one_line(tmp_path, capsys, text: str, words: list[str]) -> None:
    m, _ = bounded_input_model()
    src = tmp_path / "m.onnx"
    onnx.save(m, src)
    code = cli.main(["cut", str(src), "-o", str(tmp_path / "o.onnx"), "--input-range", text])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert all(w in lines[0] for w in words), lines[0]


def test_clip_above_its_top_is_a_constant_folded_in_the_full_cut() -> None:
    """ReLU6 -> conv with positive weights and bias 7 -> ReLU6: always 6 (not 0): zero-only
    keeps it, the full cut folds it into the next conv."""
    w = np.abs(weights(C, 3, 1, 1, seed=8))
    b = np.zeros(C, np.float32)
    b[2] = 7.0
    m = model([node("Clip", ["x", "zero", "six"], ["r"]), conv("r", "w", "a", "b"),
               node("Clip", ["a", "zero", "six"], ["r2"]), conv("r2", "w2", "y", "b2")],
              inputs={"x": [1, 3, 4, 4]}, outputs=["y"],
              inits={"w": w, "b": b, "w2": weights(4, C, 1, 1, seed=9), "b2": np.zeros(4, np.float32),
                     "zero": np.float32(0), "six": np.float32(6)})
    feeds = edge_feeds((1, 3, 4, 4), -10.0, 10.0)
    assert assert_cut(m, {}, feeds=feeds).report.range_channels == 0
    result = assert_cut(m, {"conv_a": (3, 5), "conv_y": (5, 4)}, mode="full", feeds=feeds)
    assert [(c.channels, c.value) for c in result.report.range_cuts] == [([2], 6.0)]


def test_concat_and_maxpool_follow_their_inputs_intervals() -> None:
    """Two ReLU6 tensors concatenated and max-pooled keep [0, 6]: a depthwise conv with a
    negative enough bias after them is dead on both halves."""
    wd = weights(2 * C, 1, 1, 1, seed=10)
    bd = np.full(2 * C, 0.3, np.float32)
    for c in (0, C + 2):
        bd[c] = -(6 * max(float(wd[c].sum()), 0.0) + 0.1)
    m = model([conv("x", "w0", "a"), node("Clip", ["a", "zero", "six"], ["r"]),
               conv("x2", "w1", "a2"), node("Clip", ["a2", "zero", "six"], ["q"]),
               node("Concat", ["r", "q"], ["cat"], axis=1),
               node("MaxPool", ["cat"], ["mp"], kernel_shape=[2, 2]),
               conv("mp", "wd", "d", "bd", group=2 * C), relu("d", "rd"), conv("rd", "w2", "y")],
              inputs={"x": [1, C, 4, 4], "x2": [1, C, 4, 4]}, outputs=["y"],
              inits={"wd": wd, "bd": bd, "w2": weights(3, 2 * C, 1, 1, seed=11),
                     "w0": weights(C, C, 1, 1, seed=12), "w1": weights(C, C, 1, 1, seed=13),
                     "zero": np.float32(0), "six": np.float32(6)})
    feeds = {**edge_feeds((1, C, 4, 4), -10.0, 10.0),
             "x2": edge_feeds((1, C, 4, 4), -10.0, 10.0, seed=1)["x"]}
    result = assert_cut(m, {"conv_a": (6, 5), "conv_a2": (6, 5), "conv_d": (10, 10),
                            "conv_y": (10, 3)}, feeds=feeds)
    assert result.report.range_channels == 2


def test_verification_inputs_stay_inside_declared_ranges_and_reach_the_edges() -> None:
    m, _ = bounded_input_model()
    per_channel = (np.array([0.0, -1.0, 2.0]), np.array([1.0, 1.0, 2.5]))
    feeds = random_inputs(m, {"x": (2, 3, 4, 4)}, ranges={"x": per_channel})
    x = feeds["x"]
    for c in range(3):
        lo, hi = per_channel[0][c], per_channel[1][c]
        assert x[:, c].min() == np.float32(lo) and x[:, c].max() == np.float32(hi)


def test_cut_by_range_needs_the_declared_range_in_verification() -> None:
    """The check runs inside the declared range: drawn outside it, the cut model (right for
    x in [0, 1]) would differ."""
    m, _ = bounded_input_model()
    result = cut(m, "zero", input_ranges={"x": (0.0, 1.0)})
    assert all(c.cosine >= 0.9999 for c in result.report.checks)
    outside = {"x": np.full((1, 3, 4, 4), 5.0, np.float32)}
    assert not np.allclose(run(m, outside)["y"], run(result.model, outside)["y"])


# --- property: random graphs under a declared input range ------------------------------------

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Steps drawn mostly from convs and activations: bounded sources (the input, a Sigmoid, a
# ReLU6) feeding convs that feed clamps are what ranges prove dead.
from randomgraphs import OPS, Recipe, build, recipes  # noqa: E402

RANGE_RECIPES = recipes(OPS + ("conv", "act") * 4, special=0.0)


def _spread_seeds(recipe):
    """Hypothesis favours seed 0, which makes every "act" a Sigmoid: spread the seeds (still
    a function of the drawn ones, so examples replay and shrink)."""
    return replace(recipe, steps=tuple((op, (seed * 2654435761 + i) % 2**32)
                                       for i, (op, seed) in enumerate(recipe.steps)))


RANGE_RECIPES = RANGE_RECIPES.map(_spread_seeds)

RANGES = [(0.0, 1.0), (-1.0, 1.0), (-2.1179, 2.64), (0.0, 6.0), (-0.5, -0.25)]


def _upstream_of_divisors(m: onnx.ModelProto) -> set[str]:
    """The tensors a Div's divisor is computed from. A clamp there makes the divisor exactly 0
    at the edges of the input range, and the original model itself computes 0 / 0 there: the
    analysis then keeps what the NaN reaches (README, non-finite values), and outputs that are
    NaN at the edges would tell nothing of the cut, so the generator does not draw it."""
    producer = {out: n for n in m.graph.node for out in n.output}
    found, todo = set(), [n.input[1] for n in m.graph.node if n.op_type == "Div"]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        if name in producer:
            todo.extend(producer[name].input)
    return found


def clamp_convs(m: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Put a Relu, a ReLU6 (Clip 0..6) or a HardSwish after half of the convs (the generator
    seldom draws one right there): the clamps that turn a bounded sum into a constant. Not
    where a divisor comes from (see `_upstream_of_divisors`)."""
    rng = np.random.default_rng(seed)
    divisors = _upstream_of_divisors(m)
    nodes, six = [], False
    for n in m.graph.node:
        nodes.append(n)
        if n.op_type != "Conv" or rng.random() < 0.5 or n.output[0] in divisors:
            continue
        y, clamped = n.output[0], n.output[0] + "_clamped"
        for other in list(m.graph.node) + nodes:
            for k, name in enumerate(other.input):
                if name == y and other is not n:
                    other.input[k] = clamped
        for out in m.graph.output:
            if out.name == y:
                out.name = clamped
        op = rng.choice(["Relu", "Clip", "HardSwish"])
        if op == "Clip":
            six = True
        inputs = [y, "clamp_zero", "clamp_six"] if op == "Clip" else [y]
        nodes.append(onnx.helper.make_node(op, inputs, [clamped], name=f"clamp_{y}"))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    if six:
        m.graph.initializer.extend([onnx.numpy_helper.from_array(np.float32(0), "clamp_zero"),
                                    onnx.numpy_helper.from_array(np.float32(6), "clamp_six")])
    return m


def push_biases_down(m: onnx.ModelProto, seed: int, bounds: tuple[float, float]
                     ) -> onnx.ModelProto:
    """Move a third of the conv biases to just below or above what makes their row's upper
    bound 0 (the bound the analysis computes under `bounds`; ONNX Runtime then judges it):
    rows a clamp after them turns into zero appear next to rows that only nearly are."""
    from channelcut.analysis import walk_graph
    from channelcut.graph import to_ir
    from channelcut.ranges import by_value, resolve_input_ranges
    from channelcut.verify import resolve_input_shapes

    graph = to_ir(m, resolve_input_shapes(m, None))
    walk = walk_graph(graph, by_value(graph, resolve_input_ranges(m, {"x": bounds})))
    upper = {v.name: info.hi for v, info in walk.infos.items()}
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type != "Conv" or len(n.input) < 3 or n.input[2] not in inits or \
                n.output[0] not in upper:
            continue
        b = onnx.numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
        hi = upper[n.output[0]]
        move = (rng.random(b.size) < 1 / 3) & np.isfinite(hi)
        # the new upper bound is -shift: dead for a positive shift, alive (barely) otherwise
        shift = rng.choice([-0.5, -0.01, 1e-3, 0.05], size=b.size)
        b[move] -= (hi + shift)[move]
        inits[n.input[2]].CopyFrom(onnx.numpy_helper.from_array(b.astype(np.float32),
                                                                n.input[2]))
    return m


@pytest.mark.parametrize("mode", ["zero", "full"])
@settings(max_examples=int(__import__("os").environ.get("CHANNELCUT_PROPERTY_EXAMPLES", 40)),
          deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=__import__("os").environ.get("CI", "").lower() == "true")
# hypothesis found it: a ReLU6 put on a divisor made the original compute 0 / 0 at the edges
@example(recipe=Recipe(in_channels=2, steps=(("bn", 0), ("bn", 1), ("conv", 2),
                                             ("bcast", 1500846702)),
                       head="gemm", p_row=0.0, p_col=0.3, extra_output=False),
         bounds=(0.0, 1.0), seed=0)
@given(recipe=RANGE_RECIPES, bounds=st.sampled_from(RANGES), seed=st.integers(0, 2**16))
def test_random_graphs_under_an_input_range_keep_outputs_at_the_edges(mode, recipe, bounds,
                                                                       seed) -> None:
    m = push_biases_down(clamp_convs(build(recipe), seed), seed, bounds)
    lo, hi = bounds
    result = cut(m, mode, verify=False, input_ranges={"x": bounds})
    onnx.checker.check_model(result.model, full_check=True)
    shape = tuple(d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim)
    for feeds in ({"x": np.full(shape, lo, np.float32)}, {"x": np.full(shape, hi, np.float32)},
                  edge_feeds(shape, lo, hi, seed), edge_feeds(shape, lo, hi, seed + 1)):
        assert_same(m, result.model, feeds)


# --- the RKNN facade: mean/std bound the model's input ----------------------------------------

def test_rknn_mean_std_bound_the_input_and_cut_what_it_proves_dead(capsys) -> None:
    """Raw uint8 pixels normalised by mean 128, std 128 lie in [-1, 0.9921875]: conv rows whose
    bias is below -sum|w| are dead there (not for an unbounded input, which the same model
    without mean/std keeps)."""
    torch = pytest.importorskip("torch")
    from channelcut.rknn import RKNN

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(),
                                 torch.nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        mass = module[0].weight.abs().sum(dim=(1, 2, 3))
        module[0].bias[:] = 0.5
        module[0].bias[[2, 5]] = -mass[[2, 5]] - 0.01
    images = [np.zeros((1, 4, 4, 3), np.uint8), np.full((1, 4, 4, 3), 255, np.uint8),
              np.random.default_rng(0).choice([0, 255], (1, 4, 4, 3)).astype(np.uint8)]

    def build(pruning: bool, **config) -> tuple[RKNN, list[str]]:
        rknn = RKNN(verbose=True)
        assert rknn.config(model_pruning=pruning, **config) == 0
        assert rknn.load_pytorch(module, [[3, 4, 4]]) == 0
        assert rknn.build(do_quantization=False) == 0
        assert rknn.init_runtime() == 0
        return rknn, capsys.readouterr().out.splitlines()

    reference, _ = build(False, mean_values=[[128] * 3], std_values=[[128] * 3])
    pruned, lines = build(True, mean_values=[[128] * 3], std_values=[[128] * 3])
    assert "I cut by range: 2 channels" in lines
    assert any(line.startswith("I assumed input range: ") for line in lines)
    for image in images:
        np.testing.assert_allclose(pruned.inference([image])[0],
                                   reference.inference([image])[0], rtol=1e-4, atol=1e-5)
    _, lines = build(True)  # no mean/std: the input is unbounded, nothing is dead
    assert not any("cut by range" in line for line in lines)


def test_a_channel_that_may_be_nan_is_never_made_constant_by_its_range() -> None:
    """Channel 1's first conv has a NaN bias: the ReLU6 and the depthwise conv after it may be
    NaN there, so the second ReLU6 is not provably 0 on channel 1 (on channel 4 it is)."""
    m = relu6_depthwise(margin=0.1)
    b1 = np.zeros(C, np.float32)
    b1[1] = np.nan
    m.graph.initializer.append(onnx.numpy_helper.from_array(b1, "b1"))
    next(n for n in m.graph.node if n.output[0] == "a").input.append("b1")
    result = assert_cut(m, {"conv_a": (3, 5), "conv_d": (5, 5), "conv_y": (5, 4)},
                        feeds=edge_feeds((1, 3, 8, 8), -100.0, 100.0))
    assert [c.channels for c in result.report.range_cuts] == [[4]]


def test_gemm_after_sigmoid_and_batchnorm_after_relu6() -> None:
    """Sigmoid -> Flatten -> Gemm: rows 0 and 2 of the Gemm stay below 0 (their Relu is 0);
    ReLU6 -> BatchNormalization with a negative enough shift -> Relu: channel 1 is 0."""
    w = weights(6, 5, seed=14)  # Gemm B [K=6, N=5]
    c = np.full(5, 0.3, np.float32)
    c[[0, 2]] = -np.clip(w[:, [0, 2]], 0, None).sum(axis=0) - 0.05
    scale, mean = np.array([1.0, 2.0, 0.5], np.float32), np.zeros(3, np.float32)
    var, shift = np.ones(3, np.float32), np.array([0.5, -12.5, 0.2], np.float32)
    m = model([node("Sigmoid", ["x"], ["s"]), node("Flatten", ["s"], ["f"]),
               node("Gemm", ["f", "w", "c"], ["g"]), relu("g", "rg"),
               node("Gemm", ["rg", "w2"], ["y"]),
               conv("x2", "w3", "a"), node("Clip", ["a", "zero", "six"], ["r"]),
               node("BatchNormalization", ["r", "scale", "shift", "mean", "var"], ["bn"]),
               relu("bn", "rb"), conv("rb", "w4", "y2")],
              inputs={"x": [1, 6], "x2": [1, 2, 4, 4]}, outputs={"y": [1, 3], "y2": [1, 2, 4, 4]},
              inits={"w": w, "c": c, "w2": weights(5, 3, seed=15), "w3": weights(3, 2, 1, 1),
                     "zero": np.float32(0), "six": np.float32(6), "scale": scale,
                     "shift": shift, "mean": mean, "var": var,
                     "w4": weights(2, 3, 1, 1, seed=16)})
    feeds = {"x": edge_feeds((1, 6), -30.0, 30.0)["x"],
             "x2": edge_feeds((1, 2, 4, 4), -20.0, 20.0, seed=3)["x"]}
    result = assert_cut(m, {"gemm_g": (6, 3), "gemm_y": (3, 3), "conv_a": (2, 2),
                            "conv_y2": (2, 2)}, feeds=feeds)
    assert sorted((c.tensor, c.channels) for c in result.report.range_cuts) == \
        [("rb", [1]), ("rg", [0, 2])]


def test_conv_transpose_after_relu6() -> None:
    """ReLU6 -> ConvTranspose (stride 2): each output position sums a subset of the terms, at
    most b + 6 * sum(w+); rows 1 and 3 stay below 0, so their Relu is 0."""
    wt = weights(C, 4, 2, 2, seed=17)  # [Cin, Cout, kh, kw]
    bt = np.full(4, 0.2, np.float32)
    for o in (1, 3):
        bt[o] = -6 * np.clip(wt[:, o], 0, None).sum() - 0.01
    m = model([conv("x", "w1", "a"), node("Clip", ["a", "zero", "six"], ["r"]),
               node("ConvTranspose", ["r", "wt", "bt"], ["t"], strides=[2, 2]),
               relu("t", "rt"), conv("rt", "w2", "y")],
              inputs={"x": [1, 3, 4, 4]}, outputs=["y"],
              inits={"w1": weights(C, 3, 1, 1), "wt": wt, "bt": bt, "zero": np.float32(0),
                     "six": np.float32(6), "w2": weights(2, 4, 1, 1, seed=18)})
    result = assert_cut(m, {"convtranspose_t": (6, 2), "conv_y": (2, 2)},
                        feeds=edge_feeds((1, 3, 4, 4), -50.0, 50.0))
    assert [c.channels for c in result.report.range_cuts] == [[1, 3]]


def saturated_border(dw_weight: float) -> onnx.ModelProto:
    """x -> conv_a (1x1; rows 0-2 zero, bias 2: constant 2 after the ReLU) -> ReLU ->
    depthwise 3x3 (padded, every tap `dw_weight`, no bias) -> ReLU6 -> conv_y (1x1) -> y.
    A constant 2 through the depthwise conv is a border map: 4 taps read it in a corner, 6 on
    an edge, 9 inside, so its values are 2 * dw_weight * {4, 6, 9}."""
    c = 5
    return model(
        [conv("x", "wa", "a", "ba"), relu("a", "r"),
         conv("r", "wd", "d", pads=1, group=c), node("Clip", ["d", "zero", "six"], ["r2"]),
         conv("r2", "wy", "y")],
        inputs={"x": [1, 3, 8, 8]}, outputs=["y"],
        inits={"wa": weights(c, 3, 1, 1, zero_rows=[0, 1, 2]),
               "ba": np.array([2, 2, 2, 0.1, 0.1], np.float32),
               "wd": np.full((c, 1, 3, 3), dw_weight, np.float32),
               "wy": weights(4, c, 1, 1, seed=5),
               "zero": np.float32(0), "six": np.float32(6)})


def test_a_border_map_every_window_of_which_saturates_is_a_constant() -> None:
    """With taps of 0.8 the map is 6.4, 9.6 and 14.4: above ReLU6's 6 in every window, so the
    three channels are 6 everywhere and conv_y takes them into its bias. Bounding each term by
    0 where padding may stand in (the centre tap included, which never is) gave [0, 14.4]."""
    result = assert_cut(saturated_border(0.8), {"conv_a": (3, 2), "conv_d": (2, 2),
                                                 "conv_y": (2, 4)}, mode="full")
    assert result.report.range_channels == 3


def test_a_border_map_whose_corner_stays_below_the_clip_is_kept() -> None:
    """With taps of 0.7 a corner is 5.6: below 6, so the channels are maps, not constants."""
    result = assert_cut(saturated_border(0.7), {}, mode="full")
    assert result.report.range_channels == 0


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_weighted_sums_are_the_same_in_any_number_of_chunks(monkeypatch, dtype):
    """The interval sums of a MatMul's transposed weight (as the bounds rule reads it), a
    chunk of rows at a time in reused arrays, the last chunk short: bitwise the sums of one
    chunk, and the bounds of sum w * x over x in [lo, hi] computed term by term."""
    from channelcut.ops import bounds_weighted  # noqa: PLC0415

    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((40, 70)).astype(dtype)  # [k, n]: 70 rows of 40 terms
    matrix[:, 5] = 0
    matrix[3] = -0.0
    lo, hi = -rng.random(40), rng.random(40)
    lo[7], hi[9] = -np.inf, np.inf
    w = matrix.T[None, :, :, None]
    whole = bounds_weighted._weighted_sum(w, lo, hi, False)
    monkeypatch.setattr(bounds_weighted, "CHUNK_WEIGHTS", 40 * 8)  # 8 rows, then 6
    chunked = bounds_weighted._weighted_sum(w, lo, hi, False)
    for a, b in zip(whole, chunked):
        assert a.tobytes() == b.tobytes()
    with np.errstate(invalid="ignore"):  # 0 * inf: replaced next
        terms = np.stack([matrix.T * lo, matrix.T * hi]).astype(np.float64)  # [2, n, k]
    terms = np.where(matrix.T == 0, 0.0, terms)  # a zero weight reads a finite value
    np.testing.assert_allclose(whole[0], terms.min(axis=0).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(whole[1], terms.max(axis=0).sum(axis=1), rtol=1e-12)




def test_a_per_channel_op_on_the_input_bounds_its_elements_by_the_hull_of_its_channels():
    """A BatchNormalization reading the graph input (its output has no channels of its own)
    gives each element one interval: the hull over its channels, not its first channel's.
    Channel 1 reaches 10 where channel 0 stays in [0, 1]: the grouped conv's output 2 (10 * x1
    - 2) is alive though channel 0's interval proved it dead (and cut it). On the hull output
    0 (x0 - 2, dead) is not proven dead either: nothing is cut."""
    m = model(
        [node("BatchNormalization", ["x", "scale", "shift", "mean", "var"], ["n"]),
         conv("n", "w", "a", "b", group=2), node("Clip", ["a", "zero", "six"], ["r"]),
         conv("r", "w2", "y")],
        inputs={"x": [1, 2, 4, 4]}, outputs=["y"],
        inits={"scale": np.array([1, 10], np.float32), "shift": np.array([0, 0.1], np.float32),
               "mean": np.zeros(2, np.float32), "var": np.ones(2, np.float32),
               "w": np.ones((4, 1, 1, 1), np.float32),
               "b": np.array([-2, 0.5, -2, 0.5], np.float32),
               "zero": np.float32(0), "six": np.float32(6), "w2": weights(3, 4, 1, 1)})
    result = assert_cut(m, {}, input_ranges={"x": (0.0, 1.0)},
                        feeds=edge_feeds((1, 2, 4, 4), 0.0, 1.0))
    assert result.report.range_channels == 0


def test_an_unbounded_side_leaves_the_other_bounded_and_squares_are_not_negative() -> None:
    """Intervals that keep an RMSNorm's or an L2 norm's divisor above zero (a division by a
    value whose interval holds zero may be Inf: every channel of it is marked non-finite).
    relu(h) + relu(g) >= 0 and relu(h) - (-1) >= 1, though unbounded above (a sum's error is
    bounded per side); h * h and h ** 2 >= 0; mean(h ** 2) + 1e-6 >= 1e-6 and its sqrt about
    1e-3; 1 / that is finite, and so is h / it."""
    from channelcut.analysis import walk_graph
    from channelcut.graph import to_ir
    from channelcut.verify import resolve_input_shapes

    m = model([conv("x", "w1", "h", "b1"), conv("x", "w2", "g", "b2"), relu("h", "rh"),
               relu("g", "rg"), node("Add", ["rh", "rg"], ["sum"]),
               node("Sub", ["rh", "minus_one"], ["shifted"]), node("Mul", ["h", "h"], ["square"]),
               node("Pow", ["h", "two"], ["pow"]),
               node("ReduceMean", ["pow", "axes"], ["mean"], keepdims=1),
               node("Add", ["mean", "eps"], ["mse"]), node("Sqrt", ["mse"], ["rms"]),
               node("Reciprocal", ["rms"], ["inv"]), node("Mul", ["h", "inv"], ["scaled"]),
               node("Div", ["h", "rms"], ["normed"]),
               node("Concat", ["sum", "shifted", "square", "scaled", "normed"], ["y"], axis=1)],
              inputs={"x": (1, 3, 4, 4)}, outputs=["y"],
              inits={"w1": weights(4, 3, 1, 1), "b1": bias(4), "w2": weights(4, 3, 1, 1, seed=2),
                     "b2": bias(4, seed=3), "minus_one": np.array(-1.0, np.float32),
                     "two": np.array(2.0, np.float32), "axes": np.array([2, 3], np.int64),
                     "eps": np.array(1e-6, np.float32)})
    graph = to_ir(m, resolve_input_shapes(m, None))
    walk = walk_graph(graph)
    infos = {v.name: info for v, info in walk.infos.items()}
    for name, low in (("sum", 0.0), ("shifted", 1.0), ("square", 0.0), ("pow", 0.0),
                      ("mean", 0.0), ("mse", 1e-6), ("rms", 1e-3)):
        info = infos[name]
        assert (info.lo >= low * (1 - 1e-4) - 1e-20).all(), (name, info.lo)
        assert (info.hi == np.inf).all(), (name, info.hi)
    assert infos["inv"].finite.all() and (infos["inv"].hi <= 1e3 * (1 + 1e-4)).all()
    assert infos["normed"].finite.all()
