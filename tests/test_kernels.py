"""The private float32 log1p kernel that BCE, softplus and the binary entropies are built on.

A strided sweep over float32 bit patterns (every 1009th float in [-1, 1] and every 4099th above 1)
against numpy's float64 log1p, whose own error is below 2**-29 float32 ulp. The whole range is swept by
``python benchmarks/log1p_sweep.py`` (not a test: ~3 minutes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss._kernels import elementwise

try:
    from tests import ulp
except ImportError:
    import ulp

F32 = np.float32


def _floats(first: int, last: int, stride: int) -> np.ndarray:
    return np.arange(first, last, stride, dtype=np.uint32).view(F32)


@pytest.mark.parametrize(
    "first, last, stride",
    [(0x00800000, 0x3F800001, 1009), (0x80800000, 0xBF800000, 1009), (0x3F800000, 0x7F800000, 4099)],
    ids=["(0, 1]", "(-1, 0)", "[1, max]"],
)
def test_log1p_float32_within_one_ulp(first, last, stride):
    x = _floats(first, last, stride)
    got = np.asarray(jax.jit(elementwise.log1p)(x))
    worst = ulp.max_ulp(got, np.log1p(x.astype(np.float64)))
    assert worst.error <= ulp.LOG1P_F32_ULP, f"{worst.error:.3f} ulp at x = {x[worst.index]!r}"


def test_log1p_float32_special_values():
    x = np.array([0.0, -0.0, np.inf, -1.0, -2.0, -np.inf, np.nan, 1e-30, -1e-30, 3.4e38], F32)
    got = np.asarray(jax.jit(elementwise.log1p)(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.log1p(x)
    np.testing.assert_array_equal(got, want)  # assert_array_equal treats NaN == NaN
    assert np.signbit(got[1])  # log1p(-0.0) = -0.0


def test_log1p_derivative_is_one_over_one_plus_x():
    x = jnp.array([-0.9, -0.3, 0.0, 0.5, 3.0, 1e6], F32)
    g = jax.vmap(jax.grad(elementwise.log1p))(x)
    np.testing.assert_allclose(g, 1 / (1 + np.asarray(x, np.float64)), rtol=np.finfo(F32).eps)
    h = jax.vmap(jax.grad(jax.grad(elementwise.log1p)))(x)
    np.testing.assert_allclose(h, -1 / (1 + np.asarray(x, np.float64)) ** 2, rtol=4 * np.finfo(F32).eps)
