"""``libm_square`` against numpy's scalar power (what gymnasium calls), on any CPU."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from evo_svpg.envs.libm import libm_square


def _scalar_squares(x: np.ndarray) -> np.ndarray:
    return np.array([v**2 for v in x.reshape(-1)], dtype=x.dtype).reshape(x.shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_equals_the_scalar_power_on_many_values_where_x_times_x_does_not(dtype) -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.uniform(-10, 10, 200_000), rng.standard_normal(20_000) * 1e-3, [2.0**0.5, 3.0]]
    ).astype(dtype)
    expected = _scalar_squares(x)
    assert (x * x != expected).sum() > 10  # the plain product is not what gymnasium computes
    np.testing.assert_array_equal(libm_square(x), expected)


@settings(max_examples=300, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from([np.float64, np.float32]),
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements={"allow_nan": True, "allow_infinity": True, "allow_subnormal": True},
    )
)
def test_equals_the_scalar_power_on_edge_values_and_shapes(x: np.ndarray) -> None:
    """Zeros, subnormals, powers of two, overflow, inf and nan included."""
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        expected = _scalar_squares(x)
    got = libm_square(x)
    assert got.dtype == x.dtype
    assert got.shape == x.shape
    np.testing.assert_array_equal(got, expected)


def test_a_zero_dimensional_array_gets_the_libm_result_too() -> None:
    x = np.float64(0.42672114373024106)  # x*x and pow(x, 2) differ in the last bit here
    assert x * x != x**2
    got = libm_square(np.array(x))
    assert got.shape == ()
    assert got == x**2


def test_refuses_other_dtypes() -> None:
    with pytest.raises(TypeError, match="float32 or float64"):
        libm_square(np.arange(3))
