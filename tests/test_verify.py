"""Input shapes, seeded inputs and the ONNX Runtime comparison in channelcut.verify."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from channelcut import dynamic_dims, io, verify
from channelcut.errors import ChannelcutError, VerificationError
from channelcut.report import OutputCheck


def make_model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def scale_model(factor: float, op: str = "Mul") -> onnx.ModelProto:
    """y = x op factor, x[N,4] float."""
    return make_model(
        [helper.make_node(op, ["x", "s"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(factor, dtype=np.float32), "s")],
    )


def unary_model(op: str) -> onnx.ModelProto:
    return make_model(
        [helper.make_node(op, ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 50])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )


def image_input_model() -> onnx.ModelProto:
    """x[batch,3,H,8] -> Relu -> y; plus an initializer that old exporters list as an input."""
    w = numpy_helper.from_array(np.ones(3, dtype=np.float32), "w")
    return make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, None, 8]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )


# --- resolve_input_shapes ---------------------------------------------------------------------

def test_dynamic_dims_take_one_and_initializer_inputs_are_skipped():
    assert verify.resolve_input_shapes(image_input_model(), None) == {"x": (1, 3, 1, 8)}


def test_override_sets_dynamic_dims():
    shapes = verify.resolve_input_shapes(image_input_model(), {"x": [2, 3, 16, 8]})
    assert shapes == {"x": (2, 3, 16, 8)}


@pytest.mark.parametrize("override, words", [
    ({"images": [1, 3, 8, 8]}, ["'images'", "not a model input", "x"]),
    ({"x": [1, 3, 8]}, ["3 dims", "[?,3,?,8]"]),
    ({"x": [1, 4, 8, 8]}, ["dim 1 is 4", "fixes it to 3", "[?,3,?,8]"]),
    ({"x": [1, 3, 0, 8]}, ["positive", "[?,3,?,8]"]),
])
def test_bad_override_names_input_and_expected_shape(override, words):
    with pytest.raises(ChannelcutError) as exc:
        verify.resolve_input_shapes(image_input_model(), override)
    message = str(exc.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_input_without_shape_needs_override():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(ChannelcutError, match="--input-shape x:"):
        verify.resolve_input_shapes(model, None)
    assert verify.resolve_input_shapes(model, {"x": (2, 5)}) == {"x": (2, 5)}


# --- parse_input_shape ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("images:1,3,224,224", ("images", (1, 3, 224, 224))),
    ("x:7", ("x", (7,))),
    ("input:0:1, 3", ("input:0", (1, 3))),  # TensorFlow-style names keep their colon
])
def test_parse_input_shape(text, expected):
    assert verify.parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["images", "images:", ":1,3", "x:1,a,3", "x:1,,3", "x:1,-3",
                                  "x:1,0"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(ChannelcutError, match="--input-shape"):
        verify.parse_input_shape(text)


# --- random_inputs ----------------------------------------------------------------------------

def mixed_model() -> onnx.ModelProto:
    names_types = [("f32", TensorProto.FLOAT), ("f16", TensorProto.FLOAT16),
                   ("i64", TensorProto.INT64), ("u8", TensorProto.UINT8), ("b", TensorProto.BOOL)]
    return make_model(
        [helper.make_node("Identity", [n], [n + "_out"]) for n, _ in names_types],
        [helper.make_tensor_value_info(n, t, [100, 100]) for n, t in names_types],
        [helper.make_tensor_value_info(n + "_out", t, None) for n, t in names_types],
    )


def test_random_inputs_types_and_ranges():
    model = mixed_model()
    shapes = verify.resolve_input_shapes(model, None)
    feeds = verify.random_inputs(model, shapes, seed=0)
    assert {k: v.dtype for k, v in feeds.items()} == {
        "f32": np.float32, "f16": np.float16, "i64": np.int64, "u8": np.uint8, "b": np.bool_}
    assert all(v.shape == (100, 100) for v in feeds.values())
    assert abs(feeds["f32"].mean()) < 0.05 and abs(feeds["f32"].std() - 1) < 0.05
    assert (feeds["f32"] < 0).any()
    for name in ("i64", "u8"):
        assert feeds[name].min() == 0 and feeds[name].max() == verify.INT_INPUT_HIGH - 1
    assert 0.4 < feeds["b"].mean() < 0.6


def test_scalar_inputs_of_every_type_are_arrays_onnx_runtime_takes():
    """A 0-d input (a flag, a step count) is fed as a 0-d array: ONNX Runtime refuses a NumPy
    scalar, so a model with one could not be verified."""
    names_types = [("flag", TensorProto.BOOL), ("step", TensorProto.INT64),
                   ("scale", TensorProto.FLOAT), ("bounded", TensorProto.FLOAT)]
    model = make_model(
        [helper.make_node("Identity", [n], [n + "_out"]) for n, _ in names_types],
        [helper.make_tensor_value_info(n, t, []) for n, t in names_types],
        [helper.make_tensor_value_info(n + "_out", t, []) for n, t in names_types],
    )
    shapes = verify.resolve_input_shapes(model, None)
    feeds = verify.random_inputs(model, shapes, ranges={"bounded": (np.zeros(1), np.ones(1))})
    assert all(isinstance(v, np.ndarray) and v.shape == () for v in feeds.values()), feeds
    assert verify.compare(model, model, shapes)[0].cosine == 1.0


def test_random_inputs_are_seeded():
    model = mixed_model()
    shapes = verify.resolve_input_shapes(model, None)
    first, again = (verify.random_inputs(model, shapes, seed=3) for _ in range(2))
    other = verify.random_inputs(model, shapes, seed=4)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["f32"], other["f32"])


def test_random_inputs_reject_string_input():
    model = make_model(
        [helper.make_node("Identity", ["s"], ["t"])],
        [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, None)],
    )
    with pytest.raises(ChannelcutError, match="--no-verify"):
        verify.random_inputs(model, {"s": (2,)})


# --- compare ----------------------------------------------------------------------------------

def test_identical_models_compare_exactly():
    model = scale_model(2.0)
    checks = verify.compare(model, scale_model(2.0), {"x": (3, 4)})
    assert checks == [OutputCheck("y", 1.0, 0.0, 0.0)]


def test_compare_measures_the_difference():
    shapes = {"x": (3, 4)}
    largest = max(np.abs(feeds["x"].astype(np.float64)).max()
                  for feeds in verify.input_sets(scale_model(1.0), shapes))
    [check] = verify.compare(scale_model(1.0), scale_model(1.5), shapes)
    assert check.cosine == pytest.approx(1.0)  # same direction, other length
    assert check.max_abs_error == pytest.approx(0.5 * largest, rel=1e-6)  # the worst input set
    assert check.max_rel_error == pytest.approx(0.5, rel=1e-6)
    [flipped] = verify.compare(scale_model(1.0), scale_model(-1.0), shapes)
    assert flipped.cosine == pytest.approx(-1.0)


def test_compare_uses_the_seed():
    shapes = {"x": (3, 4)}
    a = verify.compare(scale_model(1.0), scale_model(1.5), shapes, seed=0)
    b = verify.compare(scale_model(1.0), scale_model(1.5), shapes, seed=1)
    assert a[0].max_abs_error != b[0].max_abs_error


def test_all_zero_outputs_are_identical():
    [check] = verify.compare(scale_model(0.0), scale_model(0.0), {"x": (3, 4)})
    assert check == OutputCheck("y", 1.0, 0.0, 0.0)
    [check] = verify.compare(scale_model(0.0), scale_model(1.0), {"x": (3, 4)})
    assert check.cosine == 0.0 and check.max_rel_error == math.inf


def test_matching_nans_are_equal_and_differing_nans_are_not():
    shapes = {"x": (2, 50)}
    [same] = verify.compare(unary_model("Log"), unary_model("Log"), shapes)  # NaN where x < 0
    assert same == OutputCheck("y", 1.0, 0.0, 0.0)
    [differ] = verify.compare(unary_model("Log"), unary_model("Abs"), shapes)
    assert differ.nonfinite_mismatches > 0
    with pytest.raises(VerificationError, match="NaN or Inf at"):
        verify.check([differ], 0.5)


def test_every_output_is_compared():
    def two_outputs(second_op: str) -> onnx.ModelProto:
        return make_model(
            [helper.make_node("Relu", ["x"], ["a"]), helper.make_node(second_op, ["x"], ["b"])],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
        )

    checks = verify.compare(two_outputs("Neg"), two_outputs("Identity"), {"x": (4, 4)})
    assert [c.name for c in checks] == ["a", "b"]
    assert checks[0].cosine == 1.0 and checks[1].cosine == pytest.approx(-1.0)


def test_original_that_does_not_run_is_a_user_error():
    broken = unary_model("NoSuchOperator")
    with pytest.raises(ChannelcutError) as exc:
        verify.compare(broken, unary_model("Relu"), {"x": (2, 50)})
    assert not isinstance(exc.value, VerificationError)
    assert "original model" in str(exc.value) and "--no-verify" in str(exc.value)


def test_cut_model_that_does_not_run_is_a_verification_error():
    with pytest.raises(VerificationError, match="cut model does not run"):
        verify.compare(unary_model("Relu"), unary_model("NoSuchOperator"), {"x": (2, 50)})


def test_cut_model_with_other_output_shape_fails():
    small = make_model(
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 50])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(VerificationError, match="shape"):
        verify.compare(unary_model("Relu"), small, {"x": (2, 50)})


def test_large_models_run_from_external_data(monkeypatch):
    weight = numpy_helper.from_array(np.full((64, 64), 0.5, dtype=np.float32), "w")
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight],
    )
    saved = []
    real_save = io.save_model
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 4096)
    monkeypatch.setattr(io, "save_model", lambda m, p: (saved.append(p), real_save(m, p)))
    before = model.SerializeToString()
    checks = verify.compare(model, model, {"x": (2, 64)})
    assert checks == [OutputCheck("y", 1.0, 0.0, 0.0)]
    assert saved == [], "neither model is written to a temporary file: the weights are inputs"
    assert model.SerializeToString() == before


# --- check ------------------------------------------------------------------------------------

def test_check_passes_at_threshold():
    verify.check([OutputCheck("a", 1.0, 0.0, 0.0), OutputCheck("b", 0.9999, 1e-3, 1e-4)], 0.9999)
    verify.check([], 0.9999)


def test_check_names_the_worst_output():
    checks = [OutputCheck("a", 0.99, 0.1, 0.01), OutputCheck("b", 0.5, 2.0, 0.9),
              OutputCheck("c", 1.0, 0.0, 0.0)]
    with pytest.raises(VerificationError) as exc:
        verify.check(checks, 0.9999)
    assert "'b'" in str(exc.value) and "0.5000000" in str(exc.value)


def test_check_fails_on_nan_cosine():
    with pytest.raises(VerificationError, match="'a'"):
        verify.check([OutputCheck("a", math.nan, math.nan, math.nan)], 0.9999)


# --- non-finite values ------------------------------------------------------------------------

def conv_model(weights: np.ndarray, then: tuple[str, np.ndarray] | None = None
               ) -> onnx.ModelProto:
    """x [1, 2, 4, 4] -> Conv (pads 1) -> y, or -> Conv -> `then` op with a constant -> y."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["a" if then else "y"], pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(weights, "w")]
    if then is not None:
        nodes.append(helper.make_node(then[0], ["a", "c"], ["y"]))
        inits.append(numpy_helper.from_array(then[1], "c"))
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)


def test_models_run_as_written_not_as_optimized():
    # Conv -> Mul(Inf): as written the output is +-Inf. ONNX Runtime's optimizer fuses the Mul
    # into the weights (Inf weights: Inf - Inf = NaN), the NaN pattern of the fused model.
    w = np.random.default_rng(1).standard_normal((2, 2, 3, 3)).astype(np.float32)
    c = np.ones((1, 2, 1, 1), np.float32)
    c[0, 0] = np.inf
    fused = conv_model(w * c.reshape(2, 1, 1, 1))
    checks = verify.compare(conv_model(w, ("Mul", c)), fused, {"x": (1, 2, 4, 4)})
    with pytest.raises(VerificationError, match="NaN or Inf at"):
        verify.check(checks, 0.9999)


def test_a_difference_only_large_inputs_show_is_found():
    # (x * 1e35) * 0 is 0 for ordinary inputs and NaN once x * 1e35 overflows (|x| > 3.4e3)
    def times(*factors: float) -> onnx.ModelProto:
        names = ["x", *[f"a{k}" for k in range(1, len(factors))], "y"]
        return make_model(
            [helper.make_node("Mul", [a, f"c{k}"], [b])
             for k, (a, b) in enumerate(zip(names, names[1:]))],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 50])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array(f, np.float32), f"c{k}")
             for k, f in enumerate(factors)])

    checks = verify.compare(times(1e35, 0.0), times(0.0), {"x": (2, 50)})
    with pytest.raises(VerificationError, match="NaN or Inf at"):
        verify.check(checks, 0.9999)
    assert checks[0].cosine == 1.0  # where both are finite they agree


def test_input_sets_are_seeded_and_one_is_large():
    model = scale_model(1.0)
    sets = verify.input_sets(model, {"x": (3, 4)}, seed=5)
    assert len(sets) >= 3
    scales = sorted(float(np.abs(s["x"]).max()) for s in sets)
    assert scales[-1] > 1e3 * scales[0]
    assert all(np.array_equal(a["x"], b["x"])
               for a, b in zip(sets, verify.input_sets(model, {"x": (3, 4)}, seed=5)))


def test_large_inputs_stay_in_a_narrow_type():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [64, 64])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)])
    large = verify.input_sets(model, {"x": (64, 64)})[-1]["x"]
    assert large.dtype == np.float16 and np.isfinite(large).all() and np.abs(large).max() > 8


def test_errors_are_measured_where_both_are_finite():
    [check] = verify.compare(unary_model("Log"), unary_model("Log"), {"x": (2, 50)})
    assert check == OutputCheck("y", 1.0, 0.0, 0.0, 0)


# --- dynamic dims: say which were assumed, verify at two sizes ----------------------------------

def dynamic_conv_model() -> onnx.ModelProto:
    """x [N, 3, H, W] -> Conv (pads 1, channel 1 zero) -> Relu -> Conv -> y."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w1[1] = 0.0
    w2 = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    return make_model(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])


def test_assumed_dims_are_named_with_the_api_argument(caplog):
    import channelcut  # noqa: PLC0415

    with caplog.at_level("WARNING", logger="channelcut"):
        result = channelcut.cut(dynamic_conv_model())
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "'x' N, H, W" in warning and "1x3x1x1" in warning
    assert "input_shapes={'x': [N, 3, H, W]}" in warning and "--input-shape" not in warning
    assert result.report.assumed_dims == warning
    caplog.clear()
    with caplog.at_level("INFO", logger="channelcut"):
        fixed = channelcut.cut(dynamic_conv_model(), input_shapes={"x": [1, 3, 8, 8]})
    assert fixed.report.assumed_dims == ""
    assert not [r for r in caplog.records if "dynamic input dims" in r.getMessage()]


def test_free_dims_are_verified_at_two_sizes(monkeypatch):
    import channelcut  # noqa: PLC0415

    sizes = []
    real_compare = verify.compare

    def recording(original, cut, shapes, seed=0, **more):
        sizes.append(dict(shapes))
        return real_compare(original, cut, shapes, seed, **more)

    monkeypatch.setattr(verify, "compare", recording)
    result = channelcut.cut(dynamic_conv_model())
    assert sizes == [{"x": (1, 3, 1, 1)}, {"x": (3, 3, 3, 3)}]
    assert result.report.removed_groups == 1
    sizes.clear()
    channelcut.cut(dynamic_conv_model(), input_shapes={"x": [2, 3, 8, 8]})
    # the cut model keeps the dims dynamic: it is verified at twice the sizes set too
    assert sizes == [{"x": (2, 3, 8, 8)}, {"x": (4, 3, 16, 16)}]


def test_dims_the_caller_set_are_verified_at_another_size_too():
    # a "cut" that takes row 0 for the sum over a dynamic batch: right at the batch set, 1
    def batch_model(op: str) -> onnx.ModelProto:
        nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)] \
            if op == "sum" else [helper.make_node("Slice", ["x", "zero", "one", "axes"], ["y"])]
        return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in
                           (("axes", [0]), ("zero", [0]), ("one", [1]))])
    original, baked = batch_model("sum"), batch_model("slice")
    shapes = {"x": (1, 4)}
    at_the_set_size = dynamic_dims.compare_sizes(original, baked, shapes, {})
    assert min(c.cosine for c in at_the_set_size) == pytest.approx(1.0)
    both = dynamic_dims.compare_sizes(original, baked, shapes, {},
                                      set_dynamic=dynamic_dims.set_dynamic_dims(original, shapes))
    assert min(c.cosine for c in both) < 0.9999


def test_a_second_size_the_original_cannot_run_is_skipped_with_a_warning(caplog):
    # a Reshape to the fixed shape [1, 12] runs only with N = 1: not at the second size
    model = make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 12], np.int64), "shape")])
    shapes = verify.resolve_input_shapes(model, None)
    with caplog.at_level("WARNING", logger="channelcut"):
        checks = dynamic_dims.compare_sizes(model, model, shapes,
                                             verify.assumed_dims(model, None))
    assert checks[0].cosine == 1.0
    assert any("second input size" in r.getMessage() for r in caplog.records)
