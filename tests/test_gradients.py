"""Derivatives of every public function: check_grads at interior points (float64, order 2, forward and
reverse), and the closed-form values at the edges (0, +-inf, tails, masked, empty).

Each derivative is taken three ways where it matters: reverse (jax.grad), forward (jax.jvp /
jax.jacfwd) and second order (grad of grad, jax.hessian); a custom_jvp rule that only works in one
mode fails here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxloss

INF = np.inf
F32 = np.float32
EPS32 = float(np.finfo(F32).eps)


def elementwise_derivatives(f, z, *rest):
    """(value, d/dz reverse, d/dz forward, d2/dz2 forward-over-reverse) of an elementwise f(z, *rest)."""
    scalar = lambda zi, *ri: f(zi, *ri)  # noqa: E731
    d1 = jax.vmap(jax.grad(scalar))(z, *rest)
    d1_fwd = jax.jvp(lambda zz: f(zz, *rest), (z,), (jnp.ones_like(z),))[1]
    d2 = jax.vmap(jax.jacfwd(jax.grad(scalar)))(z, *rest)
    return f(z, *rest), d1, d1_fwd, d2


# ----------------------------------------------------------------------------- check_grads at interior points


def _interior_cases(rng):
    z = rng.normal(size=6) * 3
    y = rng.uniform(0.05, 0.95, size=6)
    p = rng.uniform(0.05, 0.95, size=6)
    pw = rng.uniform(0.5, 2.0, size=6)
    w = rng.uniform(0.1, 1.0, size=6)
    probs = rng.dirichlet(np.ones(5), size=3)
    logits = rng.normal(size=(3, 5)) * 2
    bce = jaxloss.sigmoid_binary_cross_entropy
    return {
        "squared_error": (jaxloss.squared_error, (z, y)),
        "half_squared_error": (jaxloss.half_squared_error, (z, y)),
        "mse": (jaxloss.mse, (z, y)),
        "mse_weighted": (lambda a, b, c: jaxloss.mse(a, b, weights=c), (z, y, w)),
        "mean_weighted": (lambda a, c: jaxloss.mean(a, weights=c), (z, w)),
        "sigmoid_bce": (bce, (z, y)),
        "sigmoid_bce_pos_weight": (lambda a, b, c: bce(a, b, pos_weight=c), (z, y, pw)),
        "sigmoid_bce_smoothing": (lambda a, b: bce(a, b, label_smoothing=0.2), (z, y)),
        "bce_with_logits": (jaxloss.bce_with_logits, (z, y)),
        "bce_with_logits_all_options": (
            lambda a, b, c, d: jaxloss.bce_with_logits(a, b, pos_weight=c, weights=d, label_smoothing=0.1),
            (z, y, pw, w),
        ),
        "binary_cross_entropy": (jaxloss.binary_cross_entropy, (p, y)),
        "binary_entropy": (lambda a: jaxloss.binary_entropy(a, base=2), (p,)),
        "binary_entropy_from_logits": (jaxloss.binary_entropy_from_logits, (z,)),
        "entropy": (jaxloss.entropy, (probs,)),
        "entropy_axis0_bits": (lambda a: jaxloss.entropy(a, axis=0, base=2), (probs,)),
        "entropy_from_logits": (jaxloss.entropy_from_logits, (logits,)),
        "entropy_from_logits_axis0": (lambda a: jaxloss.entropy_from_logits(a, axis=0), (logits,)),
        "entropy_from_logits_masked": (
            lambda a: jaxloss.entropy_from_logits(a, where=jnp.array([True, False, True, True, False])),
            (logits,),
        ),
    }


@pytest.mark.parametrize("name", sorted(_interior_cases(np.random.default_rng(0))))
def test_check_grads_order2_fwd_rev(name, x64):
    fn, args = _interior_cases(np.random.default_rng(0))[name]
    args = tuple(jnp.asarray(a, dtype=jnp.float64) for a in args)
    check_grads(fn, args, order=2, modes=("fwd", "rev"))


# ----------------------------------------------------------------------------- BCE from logits at the edges


def sigmoid64(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def test_bce_infinite_logit_corners():
    z = jnp.array([-INF, INF, INF, -INF], F32)
    y = jnp.array([0.0, 1.0, 0.0, 1.0], F32)
    value, d1, d1_fwd, d2 = elementwise_derivatives(jaxloss.sigmoid_binary_cross_entropy, z, y)
    np.testing.assert_array_equal(value, [0.0, 0.0, INF, INF])  # perfect predictions cost 0; wrong ones inf
    np.testing.assert_array_equal(d1, [0.0, 0.0, 1.0, -1.0])
    np.testing.assert_array_equal(d1_fwd, d1)
    np.testing.assert_array_equal(d2, [0.0, 0.0, 0.0, 0.0])


def test_bce_gradient_at_zero_is_half_minus_label():
    y = jnp.array([0.0, 0.25, 0.5, 1.0, 1e-7], F32)
    z = jnp.zeros_like(y)
    _, d1, d1_fwd, d2 = elementwise_derivatives(jaxloss.sigmoid_binary_cross_entropy, z, y)
    np.testing.assert_array_equal(d1, 0.5 - y)  # the max/abs textbook form gives -y here
    np.testing.assert_array_equal(d1_fwd, 0.5 - y)
    np.testing.assert_array_equal(d2, np.full(5, 0.25, F32))


def test_bce_label_derivative_is_minus_logit_exactly():
    z = jnp.array([-88.0, -17.0, -1e-8, 0.0, 0.3, 16.0, 30.0, 1e4], F32)
    y = jnp.full_like(z, 0.3)
    dy = jax.vmap(jax.grad(jaxloss.sigmoid_binary_cross_entropy, argnums=1))(z, y)
    np.testing.assert_array_equal(dy, -z)
    dy_fwd = jax.jvp(lambda yy: jaxloss.sigmoid_binary_cross_entropy(z, yy), (y,), (jnp.ones_like(y),))[1]
    np.testing.assert_array_equal(dy_fwd, -z)


def test_bce_curvature_nonzero_in_both_tails():
    z = np.array([-80.0, -30.0, 30.0, 80.0], F32)
    for y in (0.0, 1.0):
        _, _, _, d2 = elementwise_derivatives(jaxloss.sigmoid_binary_cross_entropy, jnp.asarray(z), jnp.full(4, y, F32))
        expected = sigmoid64(z) * sigmoid64(-z)
        assert np.all(np.asarray(d2) > 0)
        np.testing.assert_allclose(d2, expected, rtol=4 * EPS32)


def test_bce_hard_label_gradient_tails():
    z = np.array([-87.0, -30.0, -17.0, 17.0, 30.0, 87.0], F32)
    grad = jax.vmap(jax.grad(jaxloss.sigmoid_binary_cross_entropy))
    for y, expected in ((0.0, sigmoid64(z)), (1.0, -sigmoid64(-z))):
        np.testing.assert_allclose(grad(jnp.asarray(z), jnp.full(6, y, F32)), expected, rtol=2 * EPS32)
    # sigmoid(-88) = 6.05e-39 is subnormal: XLA on CPU flushes it to 0, other backends may keep it.
    tiny = float(np.finfo(F32).tiny)
    d = jax.grad(jaxloss.sigmoid_binary_cross_entropy)(jnp.float32(-88.0), jnp.float32(0.0))
    assert d == 0.0 or abs(float(d) - sigmoid64(-88.0)) <= 2 * EPS32 * sigmoid64(-88.0) + tiny


def test_bce_neutral_options_are_bit_identical():
    rng = np.random.default_rng(0)
    z = jnp.asarray(np.concatenate([rng.normal(size=64) * 20, [0.0, INF, -INF, 88.0, -88.0]]), F32)
    y = jnp.asarray(rng.uniform(size=z.shape), F32)
    plain = jaxloss.sigmoid_binary_cross_entropy(z, y)
    for kwargs in ({"pos_weight": 1.0}, {"pos_weight": jnp.ones_like(z)}, {"label_smoothing": 0.0}):
        np.testing.assert_array_equal(jaxloss.sigmoid_binary_cross_entropy(z, y, **kwargs), plain)
    g_plain = jax.grad(lambda zz: jaxloss.sigmoid_binary_cross_entropy(zz, y).sum())(z)
    g_pw = jax.grad(lambda zz: jaxloss.sigmoid_binary_cross_entropy(zz, y, pos_weight=1.0).sum())(z)
    np.testing.assert_array_equal(g_pw, g_plain)


def test_bce_pos_weight_and_smoothing_formulas():
    z = jnp.array([-3.0, 0.0, 2.0], jnp.float32)
    y = jnp.array([1.0, 0.5, 0.0], jnp.float32)
    sp = lambda x: np.logaddexp(0.0, np.asarray(x, np.float64))  # noqa: E731
    pw = 3.0
    expected = pw * y * sp(-z) + (1 - y) * sp(z)
    np.testing.assert_allclose(jaxloss.sigmoid_binary_cross_entropy(z, y, pos_weight=pw), expected, rtol=4 * EPS32)
    a = 0.2
    ys = np.asarray(y, np.float64) * (1 - a) + a / 2
    np.testing.assert_allclose(
        jaxloss.sigmoid_binary_cross_entropy(z, y, label_smoothing=a), ys * sp(-z) + (1 - ys) * sp(z), rtol=4 * EPS32
    )


# ----------------------------------------------------------------------------- entropy at the edges


def test_entropy_gradient_convention_at_zero(entropy_path):
    p = jnp.array([0.7, 0.3, 0.0], F32)
    g = jax.grad(jaxloss.entropy)(p)
    log_p = np.log(np.asarray(p[:2], np.float64))
    # -(log p + 1) cancels: the error is a few ulp of log p, not of the result.
    np.testing.assert_allclose(g[:2], -(log_p + 1), rtol=0, atol=2 * EPS32 * np.abs(log_p).max())
    assert g[2] == 0.0  # defined as 0 at p = 0 (the true limit is +inf)
    g_fwd = jax.jacfwd(jaxloss.entropy)(p)
    np.testing.assert_array_equal(g_fwd, g)


def test_entropy_through_softmax_matches_entropy_from_logits_gradient(entropy_kernel):
    # A class whose softmax probability underflows to 0: the convention makes the chained gradient exact.
    logits = jnp.array([0.0, 1.0, -200.0], F32)
    via_probs = jax.grad(lambda lg: jaxloss.entropy(jax.nn.softmax(lg)))(logits)
    direct = jax.grad(jaxloss.entropy_from_logits)(logits)
    assert np.all(np.isfinite(via_probs))
    np.testing.assert_allclose(via_probs, direct, atol=4 * EPS32)


def test_entropy_one_hot_is_zero_with_exact_gradient(entropy_path):
    p = jnp.eye(4, dtype=F32)
    h = jaxloss.entropy(p)
    np.testing.assert_array_equal(h, np.zeros(4))
    assert not np.signbit(np.asarray(h)).any()  # +0.0, not -0.0
    # -(log 1 + 1) = -1 on the hot class, 0 (the convention) elsewhere: the +0.0 fix must not cut the gradient.
    np.testing.assert_array_equal(jax.grad(lambda q: jaxloss.entropy(q).sum())(p), -np.eye(4))


def entropy_logits_reference(logits):
    """Float64 entropy of softmax and its gradient -p (log p + H), -inf classes out."""
    lg = np.asarray(logits, np.float64)
    m = lg.max()
    e = np.exp(lg - m)
    p = e / e.sum()
    logp = np.where(p > 0, lg - m - np.log(e.sum()), 0.0)
    h = -(p * logp).sum()
    return h, np.where(p > 0, -p * (logp + h), 0.0)


@pytest.mark.parametrize(
    "row",
    [
        [1e4, 1e4 - 20],
        [0.0, -INF, 1.0, -INF],
        [-INF, 3.0],
        [5.0, 5.0, 5.0, -INF],
        [-30.0, 40.0, 39.0],
    ],
)
def test_entropy_from_logits_value_and_gradient(row, entropy_kernel):
    logits = jnp.asarray(row, F32)
    h_ref, g_ref = entropy_logits_reference(logits)
    h, g = jax.value_and_grad(jaxloss.entropy_from_logits)(logits)
    np.testing.assert_allclose(h, h_ref, rtol=4 * EPS32, atol=0)
    assert np.all(np.isfinite(g))
    # g_i = p_i (u_i - E[u]) cancels when classes tie; the error scale is p * |log p| + H, not g itself.
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=16 * EPS32 * max(np.abs(g_ref).max(), h_ref))
    g_fwd = jax.jacfwd(jaxloss.entropy_from_logits)(logits)
    np.testing.assert_allclose(g_fwd, g, rtol=EPS32, atol=0)


def test_entropy_from_logits_every_class_out(entropy_kernel):
    logits = jnp.array([[-INF, -INF, -INF], [1.0, 2.0, 3.0]], F32)
    mask = jnp.array([[True, True, True], [False, False, False]])
    for kwargs in ({}, {"where": mask}):
        h, g = jax.value_and_grad(lambda lg, kw=kwargs: jaxloss.entropy_from_logits(lg, **kw)[0])(logits)
        assert h == 0.0
        np.testing.assert_array_equal(g, np.zeros((2, 3)))
    h = jaxloss.entropy_from_logits(logits, where=mask)
    np.testing.assert_array_equal(h, [0.0, 0.0])
    hess = jax.hessian(lambda lg: jaxloss.entropy_from_logits(lg)[0])(logits)
    np.testing.assert_array_equal(hess, np.zeros((2, 3, 2, 3)))


def test_entropy_from_logits_masked_class_ignores_nan_and_gets_zero_gradient(entropy_kernel):
    logits = jnp.array([0.0, jnp.nan, 1.0], F32)
    mask = jnp.array([True, False, True])
    h, g = jax.value_and_grad(lambda lg: jaxloss.entropy_from_logits(lg, where=mask))(logits)
    h_ref, _ = entropy_logits_reference([0.0, 1.0])
    np.testing.assert_allclose(h, h_ref, rtol=4 * EPS32)
    assert g[1] == 0.0 and np.all(np.isfinite(g))


def test_entropy_from_logits_positive_infinity_shares_probability(entropy_kernel):
    h = jaxloss.entropy_from_logits(jnp.array([INF, 0.0, INF, INF], F32))
    np.testing.assert_allclose(h, np.log(3.0), rtol=2 * EPS32)
    g = jax.grad(jaxloss.entropy_from_logits)(jnp.array([INF, 0.0], F32))
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_entropy_from_logits_row_spanning_the_float_range(entropy_kernel):
    # l - max = -2.2e38 is finite, but TwoSum's own step (l - max) - l overflows to -inf: it used to give NaN.
    big = np.finfo(F32).max
    logits = jnp.array([[1.1585344e38, big, big, big, big], [-big, big, 0.0, -big, big]], F32)
    h, g = jax.value_and_grad(lambda lg: jaxloss.entropy_from_logits(lg).sum())(logits)
    np.testing.assert_allclose(h, np.log(4.0) + np.log(2.0), rtol=2 * EPS32)
    np.testing.assert_array_equal(g, np.zeros((2, 5)))


def test_entropy_from_logits_hessian_closed_form(x64, entropy_kernel):
    logits = jnp.array([0.3, -1.2, 2.0, -INF, 0.0])
    p = np.asarray(jax.nn.softmax(logits))
    h = -(p[p > 0] * np.log(p[p > 0])).sum()
    a = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)) + h, 0.0)
    expected = -np.diag(p * (a + 1)) + np.outer(p, p) * (a[:, None] + a[None, :] + 1)
    np.testing.assert_allclose(jax.hessian(jaxloss.entropy_from_logits)(logits), expected, atol=1e-14)


def test_binary_entropy_from_logits_edges():
    x = jnp.array([-INF, -30.0, 0.0, 30.0, INF], F32)
    value, d1, d1_fwd, d2 = elementwise_derivatives(jaxloss.binary_entropy_from_logits, x)
    xf = np.asarray(x[1:4], np.float64)
    np.testing.assert_allclose(value[1:4], [2.900863e-12, np.log(2), 2.900863e-12], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(value)[[0, 4]], [0.0, 0.0])
    np.testing.assert_allclose(d1[1:4], -xf * sigmoid64(xf) * sigmoid64(-xf), rtol=4 * EPS32)
    np.testing.assert_array_equal(np.asarray(d1)[[0, 4]], [0.0, 0.0])
    np.testing.assert_array_equal(d1_fwd, d1)
    assert d2[2] == -0.25 and d2[0] == 0.0 and d2[4] == 0.0


def test_binary_entropy_derivative_convention():
    p = jnp.array([0.0, 0.25, 0.5, 1.0], F32)
    g = jax.vmap(jax.grad(jaxloss.binary_entropy))(p)
    np.testing.assert_allclose(g[1], np.log(3.0), rtol=2 * EPS32)
    np.testing.assert_array_equal(np.asarray(g)[[0, 2, 3]], [1.0, 0.0, -1.0])
    chained = jax.grad(lambda x: jaxloss.binary_entropy(jax.nn.sigmoid(x)))(jnp.float32(-200.0))
    assert chained == 0.0  # sigmoid underflows to p = 0; the chained gradient stays finite


# ----------------------------------------------------------------------------- BCE from probabilities


def test_binary_cross_entropy_limits_and_finite_gradients():
    p = jnp.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], F32)
    y = jnp.array([0.0, 1.0, 1.0, 0.0, 0.5, 0.5], F32)
    value = jaxloss.binary_cross_entropy(p, y)
    np.testing.assert_array_equal(value, [0.0, 0.0, INF, INF, INF, INF])
    g = jax.vmap(jax.grad(jaxloss.binary_cross_entropy))(p, y)
    finite = np.isfinite(np.asarray(value))
    assert np.all(np.isfinite(np.asarray(g)[finite]))
    np.testing.assert_array_equal(g[:2], [1.0, -1.0])


def test_binary_cross_entropy_gradient_interior():
    p = jnp.array([1e-6, 0.3, 0.999], F32)
    y = jnp.array([0.2, 0.7, 1.0], F32)
    g = jax.vmap(jax.grad(jaxloss.binary_cross_entropy))(p, y)
    p64, y64 = np.asarray(p, np.float64), np.asarray(y, np.float64)
    np.testing.assert_allclose(g, -y64 / p64 + (1 - y64) / (1 - p64), rtol=4 * EPS32)


# ----------------------------------------------------------------------------- squared error and means


def test_half_squared_error_gradient_is_the_gap_exactly():
    rng = np.random.default_rng(0)
    p = jnp.asarray(rng.normal(size=100) * 1e3, F32)
    t = jnp.asarray(rng.normal(size=100), F32)
    gp = jax.grad(lambda q: jaxloss.half_squared_error(q, t).sum())(p)
    gt = jax.grad(lambda s: jaxloss.half_squared_error(p, s).sum())(t)
    np.testing.assert_array_equal(gp, p - t)
    np.testing.assert_array_equal(gt, t - p)
    np.testing.assert_array_equal(jaxloss.half_squared_error(p, t), jaxloss.squared_error(p, t) / 2)


@pytest.mark.parametrize("fn", ["mean", "mse", "bce_with_logits"])
def test_means_with_nothing_selected_are_zero_with_zero_gradient(fn):
    x = jnp.array([1.0, jnp.nan, -jnp.inf], F32)
    t = jnp.array([0.0, 1.0, 1.0], F32)
    f = {
        "mean": lambda a, where: jaxloss.mean(a, where=where),
        "mse": lambda a, where: jaxloss.mse(a, t, where=where),
        "bce_with_logits": lambda a, where: jaxloss.bce_with_logits(a, t, where=where),
    }[fn]
    value, grad = jax.value_and_grad(f)(x, jnp.zeros(3, bool))
    assert value == 0.0
    np.testing.assert_array_equal(grad, np.zeros(3))
    # Masked-out NaN and inf reach neither the value nor the gradient.
    value, grad = jax.value_and_grad(f)(x, jnp.array([True, False, False]))
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad)) and grad[1] == 0 and grad[2] == 0
    # An empty input is "nothing selected": 0.
    empty = jnp.zeros((0,), F32)
    t = empty
    assert f(empty, None) == 0.0


def test_mean_weights_and_mask_formula():
    v = jnp.array([1.0, 2.0, 3.0, 4.0], F32)
    w = jnp.array([1.0, 0.0, 2.0, 1.0], F32)
    m = jnp.array([True, True, True, False])
    assert jaxloss.mean(v, weights=w, where=m) == (1 * 1 + 2 * 3) / 3
    g = jax.grad(lambda a: jaxloss.mean(a, weights=w, where=m))(v)
    np.testing.assert_allclose(g, [1 / 3, 0, 2 / 3, 0], rtol=EPS32)
    assert jaxloss.mean(jnp.zeros((0,), F32)) == 0.0
    np.testing.assert_allclose(jax.hessian(jaxloss.mse)(v, w), 2 * np.eye(4) / 4, rtol=EPS32)
