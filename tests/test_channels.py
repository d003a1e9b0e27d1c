"""Channel layout helpers."""

from __future__ import annotations

import numpy as np
import pytest

from channelcut.channels import nonzero_along_last_axis


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("k", [1, 2, 9, 49])
def test_nonzero_along_last_axis_is_exact(dtype, k):
    rng = np.random.default_rng(k)
    array = rng.standard_normal((5, 7, k)).astype(dtype)
    array[rng.random(array.shape) < 0.6] = 0
    array[0] = 0
    if np.dtype(dtype).kind == "f":
        array[1, :, :] = -0.0  # negative zero is zero
        array[2, 0, -1] = np.finfo(dtype).smallest_subnormal  # a denormal is not
        array[2, 1, 0] = np.nan
        array[2, 2, :] = -np.finfo(dtype).smallest_subnormal
    np.testing.assert_array_equal(nonzero_along_last_axis(array), (array != 0).any(axis=-1))


def test_nonzero_along_last_axis_of_a_strided_view():
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(2, 1, 0)
    array[0, 0] = 0
    np.testing.assert_array_equal(nonzero_along_last_axis(array), (array != 0).any(axis=-1))


@pytest.mark.parametrize("k", [1, 40])
def test_nonzero_along_last_axis_of_float16_reads_the_bits_exactly(k):
    """float16 on a long or single-element last axis (a MatMul's transposed weight) is
    compared by its bits: the same verdict as numpy's comparison, on a strided view too."""
    rng = np.random.default_rng(k)
    array = rng.standard_normal((k, 6, 5)).astype(np.float16)
    array[rng.random(array.shape) < 0.5] = 0
    array[:, 0] = -0.0
    array[0, 1, 2] = np.finfo(np.float16).smallest_subnormal
    array[-1, 2, 1] = -np.finfo(np.float16).smallest_subnormal
    array[0, 3, 3], array[-1, 4, 0], array[0, 5, 4] = np.nan, np.inf, -np.inf
    view = array.transpose(1, 2, 0)  # the last axis strided
    np.testing.assert_array_equal(nonzero_along_last_axis(view), (view != 0).any(axis=-1))
