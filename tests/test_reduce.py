"""jaxloss.reduce: the weighted mean is finite and exact for any finite weights (issue 13); its accuracy promise.

The mean divides two totals that are both scaled by 2**-E, E the exponent of the largest selected weight
(``reduce.scaled_totals``). Scaling by a power of two is exact, so the tests demand bit-for-bit equality where
the unscaled float computation would be in range, and a finite, ulp-accurate mean where it would overflow.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from jaxloss import reduce

F32 = np.float32
MEAN_ULPS = 4  # a mean of n <= 16 non-negative terms: each total rounds a few times, then one division
MSE_REL = 1e-6  # README: "MSE. Relative error <= 1e-6 against float64 for up to 10^7 float32 elements."


def exact_mean(values, weights) -> Fraction:
    pairs = [(Fraction(float(v)), Fraction(float(w))) for v, w in zip(values, weights, strict=True) if w != 0]
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs)


def ulps(got, exact: Fraction, dtype) -> float:
    return float(abs(Fraction(float(got)) - exact)) / float(np.spacing(np.asarray(float(exact), dtype)))


MEANS = {
    "mean": lambda v, t, w: jaxloss.mean(v, weights=w),
    "mse": lambda v, t, w: jaxloss.mse(v, t, weights=w),
    "bce_with_logits": lambda v, t, w: jaxloss.bce_with_logits(v, t, weights=w),
}


# ----------------------------------------------------------------------------- issue 13: the rows of the table


def test_weights_near_the_float32_maximum_give_a_finite_mean():
    for fn in (jaxloss.mean, jax.jit(jaxloss.mean)):
        assert float(fn(jnp.array([1.0, 2.0, 3.0]), weights=jnp.full(3, 1.7e38, F32))) == 2.0
        got = fn(jnp.array([1.0, 2.0, 3.0]), weights=jnp.array([1.7e38, 1.7e38, 0.0], F32))
        # 1.4999999: the float32 sum w + 2w rounds once, exactly as it does for weights [1, 1] * 1.7e38 / 2**126.
        assert ulps(got, Fraction(3, 2), F32) <= 1
        assert got == fn(jnp.array([1.0, 2.0]), weights=jnp.full(2, 1.7e38 / 2**126, F32))
        assert float(fn(jnp.array([5.0, 7.0]), weights=jnp.full(2, np.finfo(F32).max))) == 6.0


@pytest.mark.parametrize("name", MEANS)
def test_scaling_every_weight_by_a_power_of_two_changes_nothing_bit_for_bit(name):
    """Unscaled, the totals overflow from k = 100 (16 weights in [0.5, 2), values up to 1e9); the mean may not move."""
    fn = jax.jit(MEANS[name])
    rng = np.random.default_rng(0)
    v = rng.normal(size=16).astype(F32) * 3
    t = (rng.random(16) < 0.5).astype(F32)
    if name == "mean":
        v = v * F32(1e8)
    w = rng.uniform(0.5, 2, 16).astype(F32)
    w[3] = 0
    base = fn(v, t, w)
    assert np.isfinite(base)
    for k in (-120, -60, -1, 1, 60, 100, 120, 126):
        assert fn(v, t, w * F32(2.0**k)) == base, k


def test_bce_with_logits_weighted_1e36_is_finite_and_unchanged_by_the_scale():
    rng = np.random.default_rng(1)
    z = rng.normal(size=1000).astype(F32) * 4
    y = (rng.random(1000) < 0.5).astype(F32)
    got = jaxloss.bce_with_logits(z, y, weights=jnp.full(1000, 1e36, F32))
    assert np.isfinite(got)
    assert got == jaxloss.bce_with_logits(z, y, weights=jnp.full(1000, F32(1e36) / 2**119, F32))
    # Equal power-of-two weights scale to 1: then the weighted mean is the unweighted one, bit for bit.
    assert jaxloss.bce_with_logits(z, y, weights=jnp.full(1000, 2.0**120, F32)) == jaxloss.bce_with_logits(z, y)


def test_float64_weights_near_1e308(x64):
    v = jnp.array([1.0, 2.0, 3.0, 4.0])
    assert float(jaxloss.mean(v, weights=jnp.full(4, 1e308))) == 2.5
    w = jnp.array([1e308, 1.7e308, 0.0, 1e-300])
    exact = exact_mean(np.asarray(v), np.asarray(w))
    assert ulps(jaxloss.mean(v, weights=w), exact, np.float64) <= MEAN_ULPS
    for k in (-1000, -500, 500, 1000):
        assert jaxloss.mean(v, weights=jnp.full(4, 0.75) * 2.0**k) == jaxloss.mean(v, weights=jnp.full(4, 0.75))


def test_a_tiny_weight_beside_a_huge_one_still_counts():
    """w 2**-E underflows for w = 2**-10 beside 3.3e38; the product is then formed as w (l / 4) (4 2**-E)."""
    got = jaxloss.mean(jnp.array([0.0, 2.0**121]), weights=jnp.array([3.3e38, 2.0**-10], F32))
    assert ulps(got, exact_mean([0.0, 2.0**121], [F32(3.3e38), 2.0**-10]), F32) <= 1
    near_max = jaxloss.mean(jnp.array([0.0, 3e38], F32), weights=jnp.array([3.3e38, 1.5], F32))
    assert ulps(near_max, exact_mean([0.0, F32(3e38)], [F32(3.3e38), 1.5]), F32) <= 1
    inf = jaxloss.mean(jnp.array([0.0, np.inf], F32), weights=jnp.array([3.3e38, 2.0**-100], F32))
    assert float(inf) == np.inf  # not 0 * inf
    small = jaxloss.mean(jnp.array([0.3, 0.6], F32), weights=jnp.full(2, np.finfo(F32).tiny))
    assert ulps(small, exact_mean(np.array([0.3, 0.6], F32), [np.finfo(F32).tiny] * 2), F32) <= 1


def test_gradient_contract_holds_at_huge_weights():
    v = jnp.array([1.0, 2.0, np.nan, 4.0], F32)
    w = jnp.array([1e38, 2e38, 0.0, 1e38], F32)
    m = jnp.array([True, True, True, False])
    value, grad = jax.value_and_grad(lambda v: jaxloss.mean(v, weights=w, where=m))(v)
    assert ulps(value, Fraction(5, 3), F32) <= 1  # the NaN has weight 0 and the 4.0 is masked: never read
    np.testing.assert_allclose(grad, [1 / 3, 2 / 3, 0, 0], rtol=np.finfo(F32).eps)
    assert grad[2] == 0 and grad[3] == 0
    assert np.isnan(jaxloss.mean(v, weights=jnp.array([1e38, 2e38, 1e38, 0.0], F32)))  # a selected NaN: NaN
    nothing = jax.value_and_grad(lambda v: jaxloss.mean(v, weights=jnp.zeros(4, F32)))(v)
    assert float(nothing[0]) == 0 and not np.any(nothing[1])


def test_psum_scales_every_device_by_the_global_largest_weight():
    """One device holds weights near the float maximum, the others ordinary ones: pmax first, then psum."""
    rng = np.random.default_rng(2)
    v = rng.uniform(0, 10, (4, 8)).astype(F32)
    w = rng.uniform(0.5, 2, (4, 8)).astype(F32)
    w[1] *= F32(2.0**126)
    w[2] *= F32(2.0**-120)

    @jax.jit
    def global_means(v, w):
        return jax.vmap(lambda v, w: jaxloss.mean(v, weights=w, axis_name="devices"), axis_name="devices")(v, w)

    means = np.asarray(global_means(v, w))
    assert np.all(means == means[0])  # every device: one result, bit for bit
    exact = exact_mean(v.ravel(), w.ravel())
    assert ulps(means[0], exact, F32) <= MEAN_ULPS
    # The same global mean through mse, whose totals go through the same reduce.totals.
    zero = jnp.zeros_like(v)
    mse = jax.vmap(lambda p, w: jaxloss.mse(p, zero[0], weights=w, axis_name="d"), axis_name="d")(jnp.sqrt(v), w)
    assert np.all(np.asarray(mse) == np.asarray(mse)[0])


def test_scaled_totals_are_exact_powers_of_two_apart():
    v = jnp.arange(1.0, 9.0, dtype=F32)
    w = jnp.linspace(0.5, 1.5, 8, dtype=F32)
    t0, w0, e0 = reduce.scaled_totals(v, w, None)
    t1, w1, e1 = reduce.scaled_totals(v, w * F32(2.0**100), None)
    assert int(e1) == int(e0) + 100 and t1 == t0 and w1 == w0
    t, w_, e = reduce.scaled_totals(v, None, None)
    assert int(e) == 0 and float(w_) == 8 and float(t) == 36


# ----------------------------------------------------------------------------- README accuracy promise


@pytest.mark.parametrize("draw", ["uniform", "normal"])
def test_mse_of_1e7_float32_elements_within_1e_6_of_float64(draw):
    rng = np.random.default_rng(3)
    n = 10**7
    if draw == "uniform":
        p, t = rng.random(n, dtype=F32), rng.random(n, dtype=F32)
    else:
        p, t = rng.standard_normal(n, dtype=F32) * F32(100), rng.standard_normal(n, dtype=F32)
    exact = math.fsum(np.square(p.astype(np.float64) - t.astype(np.float64))) / n  # each square exact in float64
    got = float(jaxloss.mse(p, t))
    assert abs(got - exact) <= MSE_REL * exact
