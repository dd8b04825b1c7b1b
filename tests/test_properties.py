"""Property-based tests: identities and bounds that must hold for every valid input.

Inputs are finite floats drawn by hypothesis across the whole range of the dtype (float32 and float64), and
every property runs jitted and eagerly (``jax.disable_jit``). Draws are deterministic (``derandomize=True``, no
example database) and bounded (``EXAMPLES`` per property and variant), so CI is reproducible and fast.

XLA flushes subnormal numbers to zero (on CPU and GPU), so draws exclude subnormals: inside jaxloss they behave
as 0. Where a property needs a result inside the dtype's range (a sum of squares, a mean of huge losses), the
draw is bounded so that the exact result is representable; the bound is stated next to the draw.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxloss

EXAMPLES = {"jit": 40, "eager": 10}  # hypothesis examples per property, dtype and mode (eager runs op by op)
SETTINGS = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
K = 8  # rounding steps allowed when two computed results are compared (each side is within ~4 ulp)
MEAN_ULPS = 4  # a weighted mean of N non-negative values against the exact mean (issue 13)
N = 8  # elementwise length
ROWS, CLASSES = 3, 5  # entropy inputs


def eps(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


def tiny(dtype) -> float:
    """The smallest normal number: below it XLA flushes to zero."""
    return float(jnp.finfo(dtype).tiny)


def big(dtype) -> float:
    return float(jnp.finfo(dtype).max)


def close(got, want, dtype, scale) -> bool:
    """|got - want| <= K eps scale + K tiny, elementwise."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return bool(np.all(np.abs(got - want) <= K * eps(dtype) * np.asarray(scale) + K * tiny(dtype)))


# --------------------------------------------------------------------------- fixtures and strategies


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    if request.param == "float64":
        request.getfixturevalue("x64")
    return np.dtype(request.param)


@functools.cache
def _jitted(fn):
    return jax.jit(fn)


def _run_jit(fn, *args):
    return _jitted(fn)(*args)


def _run_eager(fn, *args):
    with jax.disable_jit():
        return fn(*args)


@pytest.fixture(params=["jit", "eager"])
def mode(request):
    return request.param


def check(prop, mode, *params):
    """Run ``prop(*params, run, data)`` for EXAMPLES[mode] hypothesis examples, jitted or eagerly."""
    run = _run_jit if mode == "jit" else _run_eager

    def examples(data):
        prop(*params, run, data)

    examples.__qualname__ = examples.__name__ = prop.__name__  # names the failing property in reports
    settings(SETTINGS, max_examples=EXAMPLES[mode])(given(data=st.data())(examples))()


def _inward(bound: float, dtype, toward: float) -> float:
    """``bound`` rounded to a value of ``dtype`` on the side of ``toward`` (hypothesis needs exact bounds)."""
    x = np.asarray(bound, dtype)
    if (x > bound and toward < bound) or (x < bound and toward > bound):
        x = np.nextafter(x, np.asarray(toward, dtype))
    return float(x)


def floats(dtype, lo=None, hi=None):
    """Finite, normal (or zero) floats of ``dtype`` in [lo, hi] (the whole range by default)."""
    # Both bounds explicit: a half-open range without subnormals makes hypothesis filter most draws.
    lo = -big(dtype) if lo is None else _inward(lo, dtype, toward=math.inf)
    hi = big(dtype) if hi is None else _inward(hi, dtype, toward=-math.inf)
    return st.floats(
        min_value=lo,
        max_value=hi,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
        width=np.dtype(dtype).itemsize * 8,
    )


def draw_array(data, dtype, shape, lo=None, hi=None) -> np.ndarray:
    return data.draw(hnp.arrays(dtype, shape, elements=floats(dtype, lo, hi)))


def draw_mask(data, shape) -> np.ndarray:
    return data.draw(hnp.arrays(np.bool_, shape))


def draw_probabilities(data, dtype, shape) -> np.ndarray:
    """Rows on the simplex: non-negative draws, scaled and normalised in float64 (an all-zero row becomes uniform)."""
    x = draw_array(data, dtype, shape, 0.0).astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    x = np.where(top > 0, x / np.where(top > 0, top, 1), 1.0)
    return (x / x.sum(axis=-1, keepdims=True)).astype(dtype)


def finite(*arrays) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a, np.float64)))) for a in arrays)


# --------------------------------------------------------------------------- computations (module level: jit caches)


def _sum_of(fn):
    return lambda *args: jnp.sum(fn(*args))


def bce_and_grads(z, y):
    f = jaxloss.sigmoid_binary_cross_entropy
    return f(z, y), *jax.grad(_sum_of(f), argnums=(0, 1))(z, y)


def bce_options_and_grads(z, y, w, a):
    def f(z, y, w, a):
        return jaxloss.sigmoid_binary_cross_entropy(z, y, pos_weight=w, label_smoothing=a)

    return f(z, y, w, a), *jax.grad(_sum_of(f), argnums=(0, 1, 2, 3))(z, y, w, a)


def bce_swapped(z, y):
    """(BCE(z, y), BCE(-z, 1 - y)) and their logit gradients."""
    f = jaxloss.sigmoid_binary_cross_entropy
    g = jax.grad(_sum_of(f))
    return f(z, y), f(-z, 1 - y), g(z, y), g(-z, 1 - y)


def bce_and_entropy(z, y):
    return jaxloss.sigmoid_binary_cross_entropy(z, y), jaxloss.binary_entropy(y)


def bce_probs_and_grads(p, y):
    f = jaxloss.binary_cross_entropy
    return f(p, y), *jax.grad(_sum_of(f), argnums=(0, 1))(p, y)


def binary_entropies_and_grads(p, x):
    h, hx = jaxloss.binary_entropy, jaxloss.binary_entropy_from_logits
    return h(p), jax.grad(_sum_of(h))(p), hx(x), jax.grad(_sum_of(hx))(x)


def entropies_and_grads(p, logits):
    h, hl = jaxloss.entropy, jaxloss.entropy_from_logits
    return h(p), jax.grad(_sum_of(h))(p), hl(logits), jax.grad(_sum_of(hl))(logits)


def entropies(p, logits):
    return jaxloss.entropy(p), jaxloss.entropy_from_logits(logits)


def mse_and_grad(p, t):
    return jaxloss.mse(p, t), jax.grad(jaxloss.mse)(p, t)


def squared_errors(p, t):
    half = jaxloss.half_squared_error
    return half(p, t), jaxloss.squared_error(p, t) / 2, jax.grad(_sum_of(half))(p, t), jnp.subtract(p, t)


def masked_means(v, p, t, z, y, w, m):
    return (
        jaxloss.mean(v, weights=w, where=m),
        jaxloss.mse(p, t, weights=w, where=m),
        jaxloss.bce_with_logits(z, y, weights=w, where=m),
        jaxloss.sigmoid_binary_cross_entropy(z, y),
        jax.grad(lambda v: jaxloss.mean(v, weights=w, where=m))(v),
    )


# --------------------------------------------------------------------------- binary cross-entropy


def bce_is_finite_with_finite_gradients(dtype, run, data):
    z = draw_array(data, dtype, (N,))
    y = draw_array(data, dtype, (N,), 0.0, 1.0)
    value, dz, dy = run(bce_and_grads, z, y)
    assert value.dtype == dz.dtype == dy.dtype == dtype
    assert finite(value, dz, dy)
    assert np.all(np.asarray(value) >= 0)
    assert np.all(np.abs(np.asarray(dz)) <= 1)
    np.testing.assert_array_equal(dy, -z)  # dL/dy = -z exactly (documented)


def bce_with_options_is_finite_with_finite_gradients(dtype, run, data):
    # |z| <= max / (4 N): pos_weight * softplus(-z) <= 2 |z| + 2 log 2, and the gradient w.r.t. the scalar
    # label_smoothing sums N such terms.
    z = draw_array(data, dtype, (N,), -big(dtype) / (4 * N), big(dtype) / (4 * N))
    y = draw_array(data, dtype, (N,), 0.0, 1.0)
    w = draw_array(data, dtype, (N,), 0.0, 2.0)
    alpha = draw_array(data, dtype, (), 0.0, 1.0)
    results = run(bce_options_and_grads, z, y, w, alpha)
    assert finite(*results)
    assert np.all(np.asarray(results[0]) >= 0)


def bce_symmetry(dtype, run, data):
    # Labels k / 2**m, for which 1 - y is exact: then BCE(z, y) = BCE(-z, 1 - y) holds bit for bit. The
    # gradient is antisymmetric, dBCE/dz(z, y) = -dBCE/dz(-z, 1 - y), within rounding: each side is a difference
    # of terms bounded by 1, evaluated in a different form on each side of z = 0.
    bits = 20 if dtype == np.float32 else 50
    z = draw_array(data, dtype, (N,))
    k = data.draw(hnp.arrays(np.int64, (N,), elements=st.integers(0, 2**bits)))
    y = (k / 2**bits).astype(dtype)
    value, swapped, grad, grad_swapped = run(bce_swapped, z, y)
    np.testing.assert_array_equal(value, swapped)
    assert close(grad, -np.asarray(grad_swapped), dtype, 1.0)


def bce_gibbs_inequality_with_equality_at_the_logit_of_the_label(dtype, run, data):
    z = draw_array(data, dtype, (N,))
    y = draw_array(data, dtype, (N,), 0.0, 1.0)
    loss, h = (np.asarray(a, np.float64) for a in run(bce_and_entropy, z, y))
    assert np.all(loss >= h - K * eps(dtype) * h - K * tiny(dtype))  # BCE(z, y) >= h(y)
    with np.errstate(divide="ignore"):
        y64 = y.astype(np.float64)
        z_star = (np.log(y64) - np.log1p(-y64)).astype(dtype)  # logit(y), +-inf at y = 1, 0
    loss, h = run(bce_and_entropy, z_star, y)
    assert close(np.asarray(loss), np.asarray(h), dtype, np.asarray(h))


def test_float64_binary_entropy_where_xla_log1p_is_inaccurate(x64):
    mpmath.mp.dps = 40
    p = 0.40625
    exact = float(-p * mpmath.log(p) - (1 - p) * mpmath.log1p(-mpmath.mpf(p)))
    got = float(jaxloss.binary_entropy(np.array(p)))
    assert abs(got - exact) <= 4 * np.spacing(exact)


def bce_from_probabilities_is_finite_with_finite_gradients(dtype, run, data):
    # Probabilities in [tiny, 1 - eps/2]: the loss and y/p, (1 - y)/(1 - p) are then representable.
    p = draw_array(data, dtype, (N,), tiny(dtype), 1 - eps(dtype) / 2)
    y = draw_array(data, dtype, (N,), 0.0, 1.0)
    value, dp, dy = run(bce_probs_and_grads, p, y)
    assert finite(value, dp, dy)
    assert np.all(np.asarray(value) >= 0)


# --------------------------------------------------------------------------- entropy


def binary_entropies_are_bounded_with_finite_gradients(dtype, run, data):
    p = draw_array(data, dtype, (N,), 0.0, 1.0)
    x = draw_array(data, dtype, (N,))
    h, dh, hx, dhx = run(binary_entropies_and_grads, p, x)
    assert finite(h, dh, hx, dhx)
    for value in (h, hx):
        assert np.all(np.asarray(value) >= 0)
        assert np.all(np.asarray(value) <= math.log(2) * (1 + K * eps(dtype)))


def entropy_is_between_zero_and_log_n_with_finite_gradients(dtype, run, data):
    p = draw_probabilities(data, dtype, (ROWS, CLASSES))
    logits = draw_array(data, dtype, (ROWS, CLASSES))
    h, dh, hl, dhl = run(entropies_and_grads, p, logits)
    assert finite(h, dh, hl, dhl)
    for value in (h, hl):
        assert np.all(np.asarray(value) >= 0)
        assert np.all(np.asarray(value) <= math.log(CLASSES) * (1 + K * eps(dtype)))


def entropy_is_invariant_to_permuting_classes(dtype, run, data):
    p = draw_probabilities(data, dtype, (ROWS, CLASSES))
    logits = draw_array(data, dtype, (ROWS, CLASSES))
    perm = np.array(data.draw(st.permutations(range(CLASSES))))
    h, hl = run(entropies, p, logits)
    h_perm, hl_perm = run(entropies, p[:, perm], logits[:, perm])
    # Sums of non-negative terms in another order: within (n + K) eps of the value.
    for a, b in ((h, h_perm), (hl, hl_perm)):
        assert close(a, b, dtype, (1 + CLASSES / K) * np.abs(np.asarray(a, np.float64)))


def entropy_from_logits_is_invariant_to_a_constant_added_to_a_row(dtype, run, data):
    # Logits k / 2**10 and integer shifts c: l + c is exact, so the entropy must not change by a single bit.
    shift_bits = 10 if dtype == np.float32 else 40
    k = data.draw(hnp.arrays(np.int64, (ROWS, CLASSES), elements=st.integers(-(2**12), 2**12)))
    c = data.draw(hnp.arrays(np.int64, (ROWS, 1), elements=st.integers(-(2**shift_bits), 2**shift_bits)))
    logits = (k / 2**10).astype(dtype)
    shifted = (k / 2**10 + c).astype(dtype)
    np.testing.assert_array_equal((shifted - c.astype(dtype)), logits)  # the construction is exact
    p = np.full((ROWS, CLASSES), 1 / CLASSES, dtype)
    _, h = run(entropies, p, logits)
    _, h_shifted = run(entropies, p, shifted)
    np.testing.assert_array_equal(h, h_shifted)


def entropy_from_logits_equals_entropy_of_softmax(dtype, run, data):
    # Logits within [-30, 30]: every probability is far above the underflow threshold, so softmax rounded to the
    # dtype changes the entropy by at most eps (1 + H) / 2, and entropy(softmax) is accurate.
    logits = draw_array(data, dtype, (ROWS, CLASSES), -30.0, 30.0)
    l64 = logits.astype(np.float64)
    e = np.exp(l64 - l64.max(axis=-1, keepdims=True))
    p = (e / e.sum(axis=-1, keepdims=True)).astype(dtype)
    h, hl = run(entropies, p, logits)
    assert close(hl, h, dtype, CLASSES * (1 + np.asarray(h, np.float64)))


def test_entropy_from_logits_of_logits_a_subnormal_apart():
    logits = np.array([2.0**-126, 2.0**-126 * 1.0078125, 2.0**-126 * 1.0078125], np.float32)  # normal numbers
    h = jaxloss.entropy_from_logits(logits)  # the exact value is log 3 - 2e-77
    assert abs(float(h) - math.log(3)) <= K * eps(np.float32)


# --------------------------------------------------------------------------- squared error


def mse_is_nonnegative_and_zero_exactly_when_predictions_equal_targets(dtype, run, data):
    value, _ = run(mse_and_grad, draw_array(data, dtype, (N,)), draw_array(data, dtype, (N,)))
    assert value >= 0  # whole range: never NaN, overflow gives +inf
    # Bounded so that the sum of squares is representable: |p|, |t| <= sqrt(max / (4 N)).
    bound = math.sqrt(big(dtype) / (4 * N))
    p = draw_array(data, dtype, (N,), -bound, bound)
    same = draw_mask(data, (N,))
    t = np.where(same, p, draw_array(data, dtype, (N,), -bound, bound))
    value, grad = run(mse_and_grad, p, t)
    assert finite(value, grad)
    gap = np.abs(p.astype(np.float64) - t.astype(np.float64))
    if np.all(gap == 0):
        assert value == 0
        np.testing.assert_array_equal(grad, np.zeros_like(p))
    elif np.any(gap >= 2 * math.sqrt(N * tiny(dtype))):  # the mean of the squares is at least 4 tiny
        assert value > 0
    # (smaller gaps: the exact mean is below the smallest normal number and flushes to 0)


def half_squared_error_is_exactly_half_the_squared_error(dtype, run, data):
    p, t = draw_array(data, dtype, (N,)), draw_array(data, dtype, (N,))
    half, squared_over_two, grad, gap = run(squared_errors, p, t)
    np.testing.assert_array_equal(half, squared_over_two)
    # The gradient is exactly p - t (documented) where 2 (p - t) does not overflow; beyond, see
    # test_half_squared_error_gradient_beyond_half_the_float_range covers the rest.
    inside = np.abs(p.astype(np.float64) - t.astype(np.float64)) <= big(dtype) / 2
    np.testing.assert_array_equal(np.asarray(grad)[inside], np.asarray(gap)[inside])


def test_half_squared_error_gradient_beyond_half_the_float_range():
    p, t = np.zeros(1, np.float32), np.full(1, 1.7014118e38, np.float32)
    with jax.disable_jit():
        grad = jax.grad(_sum_of(jaxloss.half_squared_error))(p, t)
    np.testing.assert_array_equal(grad, p - t)


# --------------------------------------------------------------------------- masked means


def masked_means_equal_means_over_the_selected_elements(dtype, run, data):
    # Bounded so that every weighted sum is representable: |values| <= max / (8 N), weights in [0, 4].
    bound = big(dtype) / (8 * N)
    v = draw_array(data, dtype, (N,), -bound, bound)
    p = draw_array(data, dtype, (N,), -math.sqrt(bound) / 2, math.sqrt(bound) / 2)
    t = draw_array(data, dtype, (N,), -math.sqrt(bound) / 2, math.sqrt(bound) / 2)
    z = draw_array(data, dtype, (N,), -bound / 2, bound / 2)
    y = draw_array(data, dtype, (N,), 0.0, 1.0)
    w = draw_array(data, dtype, (N,), 0.0, 4.0)
    m = draw_mask(data, (N,))
    mean, mse, bce, bce_elementwise, grad = run(masked_means, v, p, t, z, y, w, m)
    sq = (p.astype(np.float64) - t.astype(np.float64)) ** 2
    w_sel = np.where(m, w, 0).astype(np.float64)
    total_weight = w_sel.sum()
    for got, values in ((mean, v.astype(np.float64)), (mse, sq), (bce, np.asarray(bce_elementwise, np.float64))):
        if total_weight == 0:
            assert got == 0  # nothing selected: 0 (documented)
            continue
        want = (w_sel * values).sum() / total_weight
        assert close(got, want, dtype, N * ((w_sel * np.abs(values)).sum() / total_weight))  # (no float64 overflow)
    want_grad = w_sel / total_weight if total_weight else np.zeros(N)
    assert close(grad, want_grad, dtype, np.abs(want_grad))


def weighted_mean(v, w):
    return jaxloss.mean(v, weights=w)


def weighted_means_are_finite_and_within_4_ulp_for_any_finite_weights(dtype, run, data):
    """Issue 13: weights anywhere in [0, max] (all but one 0, or all near the maximum, where the plain sums overflow).

    Values in [0, max / (8 N)], so the exact mean and the scaled totals (weights scaled into [0, 4)) are in range.
    The reference is the exact rational mean; the result must lie within MEAN_ULPS of it, plus N tiny: a term
    whose scaled value is below the smallest normal number flushes to 0 (documented in reduce.scaled_totals).
    """
    shape = data.draw(st.sampled_from(["any", "one", "near max"]))
    if shape == "near max":
        w = draw_array(data, dtype, (N,), big(dtype) / 2)
    else:
        w = draw_array(data, dtype, (N,), 0.0)
    if shape == "one":
        w = np.where(np.arange(N) == data.draw(st.integers(0, N - 1)), w, 0).astype(dtype)
    v = draw_array(data, dtype, (N,), 0.0, big(dtype) / (8 * N))
    got = run(weighted_mean, v, w)
    assert np.isfinite(got)
    total_weight = sum(Fraction(float(x)) for x in w)
    if total_weight == 0:
        assert got == 0
        return
    exact = sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(w, v, strict=True)) / total_weight
    ulp = Fraction(float(np.spacing(np.asarray(float(exact), dtype))))
    assert abs(Fraction(float(got)) - exact) <= MEAN_ULPS * ulp + N * Fraction(tiny(dtype))


# --------------------------------------------------------------------------- 16-bit inputs


def all_losses(p, y, z, rows_p, rows_z, w):
    """Every public function on one set of inputs (p, y in [0, 1]; z any; rows for the entropies)."""
    return (
        jaxloss.squared_error(z, p),
        jaxloss.half_squared_error(z, p),
        jaxloss.sigmoid_binary_cross_entropy(z, y),
        jaxloss.sigmoid_binary_cross_entropy(z, y, pos_weight=w),
        jaxloss.binary_cross_entropy(p, y),
        jaxloss.binary_entropy(p),
        jaxloss.binary_entropy_from_logits(z),
        jaxloss.entropy(rows_p),
        jaxloss.entropy_from_logits(rows_z),
        jaxloss.mean(z, weights=w),
        jaxloss.mse(z, p),
        jaxloss.bce_with_logits(z, y, weights=w),
    )


def draw_16bit(data, dtype, shape, unit=False) -> np.ndarray:
    """Any finite value of a 16-bit float type, drawn by its bits; ``unit`` folds it into [0, 1]."""
    bits = data.draw(hnp.arrays(np.uint16, shape))
    x = bits.view(dtype).astype(np.float32)
    x = np.where(np.isfinite(x), x, 0)
    if unit:
        x = np.abs(x)
        x = np.where(x > 1, 1 / np.where(x > 1, x, 1), x)
    return x.astype(dtype)


def sixteen_bit_inputs_give_the_float32_result_of_the_upcast_inputs(dtype16, run, data):
    args = (
        draw_16bit(data, dtype16, (N,), unit=True),
        draw_16bit(data, dtype16, (N,), unit=True),
        draw_16bit(data, dtype16, (N,)),
        draw_16bit(data, dtype16, (ROWS, CLASSES), unit=True),
        draw_16bit(data, dtype16, (ROWS, CLASSES)),
        np.abs(draw_16bit(data, dtype16, (N,), unit=True)),
    )
    got = run(all_losses, *args)
    want = run(all_losses, *(a.astype(np.float32) for a in args))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, w)


# --------------------------------------------------------------------------- batch API


def batch_and_loop(p, t, z, y, w, m):
    batch = (
        jaxloss.batch.mse(p, t, weights=w, where=m),
        jaxloss.batch.bce_with_logits(z, y, weights=w, where=m),
        jaxloss.batch.mean(p, weights=w, where=m),
    )
    examples = range(p.shape[0])
    loop = (
        jnp.stack([jaxloss.mse(p[b], t[b], weights=w[b], where=m[b]) for b in examples]),
        jnp.stack([jaxloss.bce_with_logits(z[b], y[b], weights=w[b], where=m[b]) for b in examples]),
        jnp.stack([jaxloss.mean(p[b], weights=w[b], where=m[b]) for b in examples]),
    )
    return batch, loop


def batch_equals_a_loop_over_examples(dtype, run, data):
    shape = (3, 4)
    bound = math.sqrt(big(dtype) / (8 * N))
    p = draw_array(data, dtype, shape, -bound, bound)
    t = draw_array(data, dtype, shape, -bound, bound)
    z = draw_array(data, dtype, shape, -bound, bound)
    y = draw_array(data, dtype, shape, 0.0, 1.0)
    w = draw_array(data, dtype, shape, 0.0, 4.0)
    m = draw_mask(data, shape)
    batch, loop = run(batch_and_loop, p, t, z, y, w, m)
    for b, lp in zip(batch, loop, strict=True):
        np.testing.assert_array_equal(b, lp)


# --------------------------------------------------------------------------- the tests

PROPERTIES = [
    bce_is_finite_with_finite_gradients,
    bce_with_options_is_finite_with_finite_gradients,
    bce_symmetry,
    bce_gibbs_inequality_with_equality_at_the_logit_of_the_label,
    bce_from_probabilities_is_finite_with_finite_gradients,
    binary_entropies_are_bounded_with_finite_gradients,
    entropy_is_between_zero_and_log_n_with_finite_gradients,
    entropy_is_invariant_to_permuting_classes,
    entropy_from_logits_is_invariant_to_a_constant_added_to_a_row,
    entropy_from_logits_equals_entropy_of_softmax,
    mse_is_nonnegative_and_zero_exactly_when_predictions_equal_targets,
    half_squared_error_is_exactly_half_the_squared_error,
    masked_means_equal_means_over_the_selected_elements,
    weighted_means_are_finite_and_within_4_ulp_for_any_finite_weights,
]


@pytest.mark.parametrize("prop", PROPERTIES, ids=lambda prop: prop.__name__)
def test_property(prop, dtype, mode):
    check(prop, mode, dtype)


@pytest.mark.parametrize("dtype16", [ml_dtypes.bfloat16, np.float16], ids=["bfloat16", "float16"])
def test_16bit_inputs_give_the_float32_result_of_the_upcast_inputs(dtype16, mode):
    check(sixteen_bit_inputs_give_the_float32_result_of_the_upcast_inputs, mode, dtype16)


def test_batch_equals_a_loop_over_examples(dtype, mode):
    check(batch_equals_a_loop_over_examples, mode, dtype)
