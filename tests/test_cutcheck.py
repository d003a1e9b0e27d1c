"""The judge the property tests and bench/fuzz.py share (tests/cutcheck.py): what it calls a
mismatch. A float32 difference that both models lose in float64 is the rounding of an
ill-conditioned graph; a different model, or NaN and Inf elsewhere, stays a mismatch."""

from __future__ import annotations

import numpy as np
import onnx

from builders import model, node
from cutcheck import output_problem, reference


def f32(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def cancelling() -> onnx.ModelProto:
    """y = (x * 1e4 + 1) - x * 1e4: 1 in exact arithmetic; in float32 the 1 is lost once
    x * 1e4 is large (the judge's large-magnitude input)."""
    return model([node("Mul", ["x", "big"], ["m"]), node("Add", ["m", "one"], ["a"]),
                  node("Sub", ["a", "m"], ["y"])],
                 {"x": [1, 8]}, ["y"], {"big": f32(1e4), "one": f32(1.0)})


def constant(value: float, scale: float = 0.0) -> onnx.ModelProto:
    """y = x * scale + value: the same interface as `cancelling`."""
    return model([node("Mul", ["x", "zero"], ["m"]), node("Add", ["m", "c"], ["y"])],
                 {"x": [1, 8]}, ["y"], {"zero": f32(scale), "c": f32(value)})


def test_a_difference_float64_does_not_have_is_rounding():
    original = cancelling()
    ref = reference(original)
    assert not np.allclose(ref.outputs[2]["y"], 1.0)  # float32 lost the 1
    assert output_problem(original, constant(1.0), ref) is None


def test_a_different_model_stays_a_mismatch_in_float64():
    problem = output_problem(cancelling(), constant(1.001), reference(cancelling()))
    assert problem is not None and "in float64" in problem


def test_nan_elsewhere_stays_a_mismatch():
    """x * inf is +-Inf: an Inf the cut model lacks is not a rounding question, float64 is
    not asked."""
    original = constant(0.0, scale=np.inf)
    problem = output_problem(original, constant(0.0), reference(original))
    assert problem is not None and "Inf" in problem and "float64" not in problem
