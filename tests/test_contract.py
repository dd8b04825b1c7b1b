"""The cross-cutting contract of every public function: jit and eager agree, one compilation per input
shape and dtype, dtype policy (16-bit in -> float32 loss, gradient in the input dtype; float64 kept),
integer labels promoted, NaN in -> NaN out."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from jaxloss import _api

F32 = np.float32
EPS32 = float(np.finfo(F32).eps)


def _cases():
    """name -> (function, its float inputs as numpy float32 arrays; the first is the one differentiated)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 6)).astype(F32) * 4
    y = rng.uniform(size=(4, 6)).astype(F32)
    p = rng.uniform(0.01, 0.99, size=(4, 6)).astype(F32)
    w = rng.uniform(0.1, 1.0, size=(4, 6)).astype(F32)
    probs = (p / p.sum(-1, keepdims=True)).astype(F32)
    other = (probs[::-1] * 0.5 + 0.5 / 6).astype(F32)  # another distribution per row
    k = rng.integers(0, 6, size=4).astype(np.int32)  # a class index per row
    bce = jaxloss.sigmoid_binary_cross_entropy
    ice = jaxloss.softmax_cross_entropy_with_integer_labels
    return {
        "squared_error": (jaxloss.squared_error, (z, y)),
        "half_squared_error": (jaxloss.half_squared_error, (z, y)),
        "mse": (jaxloss.mse, (z, y)),
        "mse_weighted": (lambda a, b, c: jaxloss.mse(a, b, weights=c), (z, y, w)),
        "mean": (jaxloss.mean, (z,)),
        "sigmoid_binary_cross_entropy": (bce, (z, y)),
        "sigmoid_bce_options": (lambda a, b, c: bce(a, b, pos_weight=c, label_smoothing=0.1), (z, y, w)),
        "bce_with_logits": (jaxloss.bce_with_logits, (z, y)),
        "binary_cross_entropy": (jaxloss.binary_cross_entropy, (p, y)),
        "binary_entropy": (jaxloss.binary_entropy, (p,)),
        "binary_entropy_from_logits": (jaxloss.binary_entropy_from_logits, (z,)),
        "entropy": (lambda a: jaxloss.entropy(a, base=2), (probs,)),
        "entropy_from_logits": (jaxloss.entropy_from_logits, (z,)),
        "softmax_cross_entropy": (jaxloss.softmax_cross_entropy, (z, probs)),
        "softmax_cross_entropy_smoothed": (
            lambda a, b: jaxloss.softmax_cross_entropy(a, b, label_smoothing=0.1),
            (z, y),
        ),
        "softmax_cross_entropy_with_integer_labels": (lambda a: ice(a, k), (z,)),
        "softmax_cross_entropy_with_integer_labels_xla": (lambda a: ice(a, k, implementation="xla"), (z,)),
        "kl_divergence_from_logits": (jaxloss.kl_divergence_from_logits, (z, y * 3)),
        "cross_entropy": (jaxloss.cross_entropy, (probs, other)),
        "relative_entropy": (jaxloss.relative_entropy, (probs, other)),
        "ce_with_logits": (lambda a, b: jaxloss.ce_with_logits(a, k, weights=b[:, 0]), (z, w)),
        "ce_with_logits_distributions": (jaxloss.ce_with_logits, (z, probs)),
    }


CASES = _cases()
REDUCTIONS = {"mse", "mse_weighted", "mean", "bce_with_logits", "ce_with_logits", "ce_with_logits_distributions"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_and_eager_agree(name):
    fn, args = CASES[name]
    jitted = np.asarray(jax.jit(fn)(*args))
    with jax.disable_jit():
        eager = np.asarray(fn(*args))
    # Op-by-op execution may fuse (and so round) differently from the compiled kernel: one rounding at most.
    np.testing.assert_allclose(eager, jitted, rtol=2 * EPS32, atol=0)
    np.testing.assert_array_equal(np.asarray(fn(*args)), jitted)


# Each public loss is a jax.jit behind a thin screen of its arguments (jaxloss._api): its compilation cache.
JITTED = {name: d.function.jitted for name, d in _api.DECLARED.items() if not name.startswith("batch.")}


def test_every_public_loss_is_declared():
    callables = {name for name in jaxloss.__all__ if callable(getattr(jaxloss, name))}
    not_losses = {"checked", "info"}  # a wrapper and a report: no arrays in, no loss out
    assert set(JITTED) == callables - not_losses


@pytest.mark.parametrize("name", sorted(JITTED))
def test_compiles_once_per_shape_and_dtype(name):
    public, jitted = getattr(jaxloss, name), JITTED[name]
    rng = np.random.default_rng(1)
    needs_two = name not in ("entropy", "entropy_from_logits", "binary_entropy", "binary_entropy_from_logits", "mean")
    before = jitted._cache_size()
    for _ in range(3):  # new values, same shape and dtype
        a = rng.uniform(0.05, 0.95, size=(3, 5)).astype(F32)
        b = rng.uniform(0.05, 0.95, size=(3, 5)).astype(F32)
        if name == "softmax_cross_entropy_with_integer_labels":  # class indices, one per row
            b = rng.integers(0, 5, size=3).astype(np.int32)
        public(a, b) if needs_two else public(a)
    assert jitted._cache_size() - before == 1


def test_option_values_do_not_recompile():
    z = jnp.zeros(7, F32)
    jitted = jaxloss.sigmoid_binary_cross_entropy.jitted
    before = jitted._cache_size()
    for alpha in (0.1, 0.2, 0.3):
        jaxloss.sigmoid_binary_cross_entropy(z, z, pos_weight=2.0 + alpha, label_smoothing=alpha)
    assert jitted._cache_size() - before == 1


@pytest.mark.parametrize("half", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", sorted(CASES))
def test_half_inputs_give_float32_loss_and_half_gradient(name, half):
    fn, args = CASES[name]
    low = tuple(jnp.asarray(a, half) for a in args)
    out = fn(*low)
    assert out.dtype == jnp.float32
    upcast = fn(*(x.astype(jnp.float32) for x in low))
    if name in REDUCTIONS:
        # Accumulated in float32: the mean of the upcast inputs to float32 rounding. XLA may fuse the
        # 16-bit convert into the reduction and then round the fused terms differently (seen: 1 ulp on
        # bce_with_logits); a 16-bit accumulation would be off by ~2**-8 relative, 2**13 times this bound.
        np.testing.assert_allclose(out, upcast, rtol=4 * EPS32, atol=0)
    else:
        # Elementwise: the float32 result of the upcast inputs, bit for bit.
        np.testing.assert_array_equal(out, upcast)
    grad = jax.grad(lambda a: fn(a, *low[1:]).sum())(low[0])
    assert grad.dtype == half


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_stays_float64(name, x64):
    fn, args = CASES[name]
    args64 = tuple(jnp.asarray(a, jnp.float64) for a in args)
    assert fn(*args64).dtype == jnp.float64


def test_integer_and_boolean_labels_are_promoted():
    z = jnp.array([-2.0, 0.5, 3.0], F32)
    as_float = jaxloss.sigmoid_binary_cross_entropy(z, jnp.array([0.0, 1.0, 1.0], F32))
    for labels in (jnp.array([0, 1, 1]), jnp.array([False, True, True]), np.array([0, 1, 1], np.int64)):
        np.testing.assert_array_equal(jaxloss.sigmoid_binary_cross_entropy(z, labels), as_float)
    np.testing.assert_array_equal(jaxloss.mse(z, jnp.array([0, 1, 2])), jaxloss.mse(z, jnp.array([0.0, 1.0, 2.0])))


@pytest.mark.parametrize("name", sorted(CASES))
def test_nan_in_any_argument_gives_nan(name):
    fn, args = CASES[name]
    for k in range(len(args)):
        poisoned = [np.array(a) for a in args]
        poisoned[k][0, 0] = np.nan
        out = np.asarray(fn(*poisoned))
        first = out if out.ndim == 0 else out.reshape(out.shape[0], -1)[0, 0] if out.ndim > 1 else out[0]
        assert np.isnan(first), f"{name}: NaN in argument {k} did not reach the result ({out})"
