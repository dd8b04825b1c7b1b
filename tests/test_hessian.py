"""Curvature: jax.hessian and Hessian-vector products of the losses against closed forms.

* bce_with_logits: d2/dz2 = diag(sigma(z) sigma(-z)) / N, accurate in both tails (|z| up to 80);
* mse: 2 I / N (and 2 diag(w) / sum w with weights);
* entropy_from_logits of one row, with a = log p + H:
  Hess H = -diag(p (a + 1)) + (p p^T) * (a 1^T + 1 a^T + 1),
  against this closed form (evaluated with mpmath) and against float64 autodiff of the naive
  -sum(softmax * log_softmax);
* Hessian-vector products (forward-over-reverse jvp of grad, and reverse-over-reverse) equal the
  dense Hessian times v.
References are closed forms in float64 (NumPy) or mpmath; float64 runs use the x64 fixture. Every
Hessian is jitted, so each case compiles once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import jaxloss

F32, F64 = np.float32, np.float64
# Elementwise closed forms: a few roundings (exp, 1 + e, square, divide, / N).
ELEMENT_ULPS = 4
# Matrix closed forms (sums over a row): this many eps of the largest entry.
MATRIX_EPS = 8
TAIL_LOGITS = np.array([-80.0, -50.0, -30.0, -17.0, -1.0, -1e-8, 0.0, 1e-8, 2.0, 17.0, 30.0, 50.0, 80.0])

DTYPES = pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])


@pytest.fixture
def float64_on(request, dtype):
    """Enables x64 (the conftest fixture) for the float64 cases only; float32 cases run as users run them."""
    if dtype == F64:
        request.getfixturevalue("x64")
    return dtype


def hessian(f, **options):
    """jax.hessian (forward over reverse), jitted: one compilation per case instead of one per primitive."""
    return jax.jit(jax.hessian(f, **options))


def eps(dtype):
    return float(np.finfo(dtype).eps)


def dsigmoid64(z):
    """sigma(z) sigma(-z) = e / (1 + e)^2 with e = exp(-|z|), in float64: exact in both tails."""
    e = np.exp(-np.abs(np.asarray(z, F64)))
    return e / (1 + e) ** 2


def assert_matrix_close(actual, expected, dtype, what=""):
    actual, expected = np.asarray(actual, F64), np.asarray(expected, F64)
    assert actual.shape == expected.shape, what
    atol = MATRIX_EPS * eps(dtype) * np.max(np.abs(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, err_msg=what)


# ----------------------------------------------------------------------------- BCE


@DTYPES
@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_bce_hessian_is_diag_sigma_sigma_over_n_in_the_tails(float64_on, dtype, labels, rng):
    z = TAIL_LOGITS.astype(dtype)
    n = z.size
    y = (rng.uniform(size=n) < 0.5) if labels == "hard" else rng.uniform(size=n)
    y = y.astype(dtype)
    hess = np.asarray(hessian(jaxloss.bce_with_logits)(z, y))
    assert hess.dtype == dtype and hess.shape == (n, n)
    np.testing.assert_array_equal(hess[~np.eye(n, dtype=bool)], 0)
    expected = dsigmoid64(z) / n
    diag = np.diag(hess).astype(F64)
    assert (diag > 0).all()  # non-zero in both tails, where autodiff of the textbook form gives 0
    np.testing.assert_allclose(diag, expected, rtol=ELEMENT_ULPS * eps(dtype))


@DTYPES
def test_bce_hessian_with_weights_and_pos_weight(float64_on, dtype, rng):
    z = TAIL_LOGITS.astype(dtype)
    n = z.size
    y = (rng.uniform(size=n) < 0.5).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=n).astype(dtype)
    pw = rng.uniform(0.5, 3.0, size=n).astype(dtype)
    hess = hessian(lambda a: jaxloss.bce_with_logits(a, y, weights=w, pos_weight=pw))(z)
    w64, y64, pw64 = (np.asarray(a, F64) for a in (w, y, pw))
    expected = w64 * (1 + (pw64 - 1) * y64) * dsigmoid64(z) / w64.sum()
    np.testing.assert_allclose(np.diag(hess), expected, rtol=2 * ELEMENT_ULPS * eps(dtype))


# ----------------------------------------------------------------------------- MSE


@DTYPES
def test_mse_hessian_is_2i_over_n(float64_on, dtype, rng):
    n = 7
    p, t = rng.normal(size=(2, n)).astype(dtype)
    h_pp, h_pt = hessian(jaxloss.mse, argnums=(0, 1))(p, t)[0]
    two_over_n = np.asarray(2, dtype) / np.asarray(n, dtype)
    np.testing.assert_allclose(h_pp, two_over_n * np.eye(n), rtol=ELEMENT_ULPS * eps(dtype), atol=0)
    np.testing.assert_allclose(h_pt, -two_over_n * np.eye(n), rtol=ELEMENT_ULPS * eps(dtype), atol=0)
    w = rng.uniform(0.5, 2.0, size=n).astype(dtype)
    h_w = hessian(lambda a: jaxloss.mse(a, t, weights=w))(p)
    np.testing.assert_allclose(h_w, np.diag(2 * w.astype(F64) / w.astype(F64).sum()), rtol=ELEMENT_ULPS * eps(dtype))


# ----------------------------------------------------------------------------- entropy_from_logits


def entropy_hessian_closed_form(logits):
    """-diag(p (a + 1)) + (p p^T) * (a 1^T + 1 a^T + 1), a = log p + H, classes with p = 0 giving 0.

    Evaluated with mpmath at 50 digits and rounded to float64: in float64 the formula itself cancels
    (for a peaked row p_0 (a_0 + 1) and p_0^2 (2 a_0 + 1) nearly cancel), jaxloss does not.
    """
    with mpmath.workdps(50):
        inside = [bool(np.isfinite(v)) for v in logits]
        top = max(mpmath.mpf(float(v)) for v, ok in zip(logits, inside, strict=True) if ok)
        e = [
            mpmath.exp(mpmath.mpf(float(v)) - top) if ok else mpmath.mpf(0)
            for v, ok in zip(logits, inside, strict=True)
        ]
        p = [x / mpmath.fsum(e) for x in e]
        log_p = [mpmath.log(x) if x > 0 else mpmath.mpf(0) for x in p]
        h = -mpmath.fsum(pi * li for pi, li in zip(p, log_p, strict=True))
        a = [li + h for li in log_p]
        n = len(p)
        hess = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if p[i] > 0 and p[j] > 0:
                    hess[i, j] = float(p[i] * p[j] * (a[i] + a[j] + 1) - (p[i] * (a[i] + 1) if i == j else 0))
        return hess


def naive_entropy(logits):
    return -jnp.sum(jax.nn.softmax(logits) * jax.nn.log_softmax(logits))


@functools.cache
def naive_hessians64():
    """Float64 autodiff of the naive formula for the NAIVE_ROWS (x64 switched on just for it), computed once."""
    with jax.enable_x64(True):
        rows = jnp.asarray(np.stack([ROWS[row] for row in NAIVE_ROWS]), F64)
        hess = np.asarray(jax.jit(jax.vmap(jax.hessian(naive_entropy)))(rows))
    return dict(zip(NAIVE_ROWS, hess, strict=True))


ROWS = {  # one row each, all of length 5 so that one vmapped Hessian covers them
    "random": np.random.default_rng(0).normal(size=5) * 2,
    "uniform": np.full(5, 5.0),
    "peaked": np.array([12.0, 0.0, -3.0, 1.0, 0.5]),
    "spread_1e4": np.array([1e4, 1e4 - 20, 0.0, 1e4 - 3, 1e4 - 1]),
    "masked_class": np.array([3.0, -np.inf, 1.0, 2.0, 0.5]),
}
NAIVE_ROWS = ("random", "uniform", "peaked")  # where the naive formula is finite and accurate in float64


@functools.cache
def row_hessians(dtype):
    """Hessians of every row of ROWS, from one jitted vmap(hessian(entropy_from_logits)), computed once per dtype.

    (XLA takes a second or two to compile this Hessian; the tests below share it.)
    """
    rows = np.stack(list(ROWS.values())).astype(dtype)
    hess = jax.jit(jax.vmap(jax.hessian(jaxloss.entropy_from_logits)))(rows)
    assert hess.dtype == dtype and hess.shape == (len(ROWS), 5, 5)
    return dict(zip(ROWS, np.asarray(hess), strict=True))


@DTYPES
def test_entropy_from_logits_hessian_closed_form(float64_on, dtype):
    for row, hess in row_hessians(dtype).items():
        assert np.isfinite(hess).all(), row
        assert_matrix_close(hess, entropy_hessian_closed_form(ROWS[row].astype(dtype)), dtype, row)
    masked = row_hessians(dtype)["masked_class"]  # a class that is out: zero row and column
    np.testing.assert_array_equal(masked[1], 0)
    np.testing.assert_array_equal(masked[:, 1], 0)


@DTYPES
def test_entropy_from_logits_hessian_vs_naive_float64_autodiff(float64_on, dtype):
    hessians = row_hessians(dtype)
    for row in NAIVE_ROWS:
        assert_matrix_close(hessians[row], naive_hessians64()[row], dtype, row)


def test_closed_form_reference_matches_naive_autodiff():
    """The two references agree with each other (so neither is wrong in the same way as jaxloss)."""
    for row in NAIVE_ROWS:
        assert_matrix_close(entropy_hessian_closed_form(ROWS[row]), naive_hessians64()[row], F64, row)


# ----------------------------------------------------------------------------- Hessian-vector products


def hvp_forward_over_reverse(f, x, v):
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


def hvp_reverse_over_reverse(f, x, v):
    return jax.grad(lambda a: jnp.vdot(jax.grad(f)(a), v))(x)


def assert_hvp_close(out, hess, v, dtype, what=""):
    """out == hess @ v up to MATRIX_EPS rounding errors of each product sum: |error_j| <= k eps sum_k |H_jk v_k|."""
    hess, v = np.asarray(hess, F64), np.asarray(v, F64)
    np.testing.assert_array_less(
        np.abs(np.asarray(out, F64) - hess @ v),
        MATRIX_EPS * eps(dtype) * (np.abs(hess) @ np.abs(v)) + np.finfo(F64).tiny,
        err_msg=what,
    )


@DTYPES
@pytest.mark.parametrize("loss", ["bce_with_logits", "mse", "mean_weighted"])
def test_hvp_equals_dense_hessian_times_v(float64_on, dtype, loss, rng):
    n = 8
    x = (rng.normal(size=n) * 4).astype(dtype)
    v = rng.normal(size=n).astype(dtype)
    y = (rng.uniform(size=n) < 0.5).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=n).astype(dtype)
    f = {
        "bce_with_logits": lambda a: jaxloss.bce_with_logits(a, y),
        "mse": lambda a: jaxloss.mse(a, y),
        "mean_weighted": lambda a: jaxloss.mean(jaxloss.sigmoid_binary_cross_entropy(a, y), weights=w),
    }[loss]
    dense = hessian(f)(x)
    for hvp in (hvp_forward_over_reverse, hvp_reverse_over_reverse):
        out = jax.jit(hvp, static_argnums=0)(f, x, v)
        assert out.dtype == dtype
        assert_hvp_close(out, dense, v, dtype, hvp.__name__)


@DTYPES
def test_entropy_from_logits_hvp_equals_dense_hessian_times_v(float64_on, dtype, rng, entropy_kernel):
    rows = np.stack(list(ROWS.values())).astype(dtype)  # every row, the spread and masked ones included
    v = rng.normal(size=rows.shape).astype(dtype)
    hessians = row_hessians(dtype)
    for hvp in (hvp_forward_over_reverse, hvp_reverse_over_reverse):
        out = jax.jit(jax.vmap(lambda a, b, hvp=hvp: hvp(jaxloss.entropy_from_logits, a, b)))(rows, v)
        assert out.dtype == dtype
        for i, row in enumerate(ROWS):
            assert_hvp_close(out[i], hessians[row], v[i], dtype, f"{hvp.__name__} {row}")
