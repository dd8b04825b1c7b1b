"""jaxloss.batch: per-example losses and gradients equal a Python loop of the single-example function.

Per-example losses are compared with a loop over examples, per-example gradients with a loop of
``jax.grad`` and with ``jax.jacrev`` of the per-example loss vector, eager and jitted. The DP-SGD
recipe (clip each example's gradient to norm C, then average) is checked against a loop and
against ``optax.per_example_global_norm_clip``.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxloss
from jaxloss import batch

EPS32 = float(np.finfo(np.float32).eps)

F32 = np.float32
# vmap may fuse a reduction or a matmul differently from the loop: a few ulp of the largest entry.
LOOP_ULPS = 4
B, D = 6, 9


def assert_close(actual, expected, dtype=F32, ulps=LOOP_ULPS):
    """|actual - expected| <= ulps * eps * (|expected| + max(max |expected|, 1)) per leaf; inf, NaN exact."""
    eps = float(jnp.finfo(dtype).eps)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert a.shape == e.shape
        finite = np.isfinite(e)
        np.testing.assert_array_equal(a[~finite], e[~finite])  # inf and NaN exactly where expected
        scale = max(float(np.max(np.abs(e[finite]), initial=0.0)), 1.0)
        np.testing.assert_allclose(a[finite], e[finite], rtol=ulps * eps, atol=ulps * eps * scale)


def loop(fn, *arrays, **options):
    """The reference: a Python loop over examples of the single-example function."""
    n = len(arrays[0])
    return jnp.stack([fn(*(a[i] for a in arrays), **options) for i in range(n)])


@pytest.fixture
def data(rng):
    p = rng.normal(size=(B, D)).astype(F32)
    t = rng.normal(size=(B, D)).astype(F32)
    w = rng.uniform(0.1, 2.0, size=(B, D)).astype(F32)
    m = rng.uniform(size=(B, D)) < 0.7
    m[2] = False  # an example with nothing selected
    y = (rng.uniform(size=(B, D)) < 0.5).astype(F32)
    return p, t, w, m, y


JITTED = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def maybe_jit(fn, jit):
    return jax.jit(fn) if jit else fn


# ----------------------------------------------------------------------------- per-example losses


@JITTED
def test_mse_equals_loop(data, jit):
    p, t, w, m, _ = data
    f = maybe_jit(lambda a, b, c, d: batch.mse(a, b, weights=c, where=d), jit)
    out = f(p, t, w, m)
    assert out.shape == (B,) and out.dtype == F32
    assert_close(out, loop(lambda a, b, c, d: jaxloss.mse(a, b, weights=c, where=d), p, t, w, m))
    assert_close(maybe_jit(batch.mse, jit)(p, t), loop(jaxloss.mse, p, t))
    assert out[2] == 0  # nothing selected: 0, as jaxloss.mse


@JITTED
def test_bce_with_logits_equals_loop(data, jit):
    p, _, w, m, y = data
    z = p * 20
    z[0, 0], z[1, 0] = np.inf, -np.inf  # exact limits: loss 0 with zero gradient
    y[0, 0], y[1, 0] = 1, 0
    m[0, 0] = m[1, 0] = True
    z[3, 1], m[3, 1] = np.nan, False  # masked out: reaches neither value nor gradient
    pw = w + 0.5
    opts = dict(pos_weight=pw, weights=w, where=m)

    def single(a, b, c, d, e):
        return jaxloss.bce_with_logits(a, b, pos_weight=c, weights=d, where=e)

    f = maybe_jit(lambda a, b: batch.bce_with_logits(a, b, **opts), jit)
    out = f(z, y)
    assert out.shape == (B,) and out.dtype == F32
    assert_close(out, loop(single, z, y, pw, w, m))
    assert np.isfinite(out).all()
    g = jax.grad(lambda a: jnp.sum(f(a, y)))(z)
    assert np.isfinite(g).all() and g[0, 0] == 0 and g[1, 0] == 0 and g[3, 1] == 0

    smoothed = maybe_jit(lambda a, b: batch.bce_with_logits(a, b, label_smoothing=0.1), jit)(p, y)
    assert_close(smoothed, loop(lambda a, b: jaxloss.bce_with_logits(a, b, label_smoothing=0.1), p, y))
    assert_close(maybe_jit(batch.bce_with_logits, jit)(p, y), loop(jaxloss.bce_with_logits, p, y))


@JITTED
def test_mean_equals_loop(data, jit):
    p, _, w, m, _ = data
    f = maybe_jit(lambda a, b, c: batch.mean(a, weights=b, where=c), jit)
    assert_close(f(p, w, m), loop(lambda a, b, c: jaxloss.mean(a, weights=b, where=c), p, w, m))
    assert_close(maybe_jit(batch.mean, jit)(p), jnp.mean(p, axis=1))


def test_mean_of_batch_mse_is_mse(data):
    p, t, *_ = data
    assert_close(jnp.mean(batch.mse(p, t)), jaxloss.mse(p, t))


def test_higher_rank_examples_and_broadcast_options(rng):
    p = rng.normal(size=(4, 3, 5)).astype(F32)
    t = rng.normal(size=(4, 3, 5)).astype(F32)
    w = rng.uniform(size=(5,)).astype(F32)  # broadcasts to every example and row
    out = batch.mse(p, t, weights=w)
    assert out.shape == (4,)
    assert_close(out, loop(lambda a, b: jaxloss.mse(a, b, weights=w), p, t))
    # A scalar target stands for all, as in jaxloss.mse.
    assert_close(batch.mse(p, 0.0), loop(lambda a: jaxloss.mse(a, 0.0), p))
    assert_close(batch.bce_with_logits(p, 1), loop(lambda a: jaxloss.bce_with_logits(a, 1), p))


def test_one_element_examples_and_empty_batch():
    v = jnp.array([1.0, -2.0, 3.0])
    np.testing.assert_array_equal(batch.mean(v), v)  # each example is a single value
    np.testing.assert_array_equal(batch.mse(v, 0.0), v**2)
    assert batch.mse(jnp.zeros((0, 3)), jnp.zeros((0, 3))).shape == (0,)
    np.testing.assert_array_equal(batch.mean(jnp.zeros((2, 0))), [0.0, 0.0])  # empty examples: 0


def test_float64(x64, rng):
    p = rng.normal(size=(B, D))
    t = rng.normal(size=(B, D))
    out = batch.mse(p, t)
    assert out.dtype == np.float64
    assert_close(out, loop(jaxloss.mse, p, t), dtype=np.float64)
    np.testing.assert_allclose(out, np.mean((p - t) ** 2, axis=1), rtol=LOOP_ULPS * np.finfo(np.float64).eps)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16bit_inputs_float32_loss_gradients_in_input_dtype(data, dtype):
    p, t, *_, y = data
    p16, t16 = jnp.asarray(p, dtype), jnp.asarray(t, dtype)
    for f, args in ((batch.mse, (p16, t16)), (batch.bce_with_logits, (p16, y)), (batch.mean, (p16,))):
        out = f(*args)
        assert out.dtype == F32
        assert_close(out, loop(lambda *a, f=f: getattr(jaxloss, f.__name__)(*a), *args))
        g = jax.grad(lambda a, f=f, args=args: jnp.sum(f(a, *args[1:])))(args[0])
        assert g.dtype == dtype


def test_gradients_of_masked_and_empty_examples_are_zero(data):
    p, t, _, m, _ = data
    p[m == 0] = np.nan  # never read
    g = jax.grad(lambda a: jnp.sum(batch.mse(a, t, where=m)))(p)
    assert np.isfinite(g).all()
    np.testing.assert_array_equal(np.asarray(g)[~m], 0)
    np.testing.assert_array_equal(g[2], 0)  # the example with nothing selected


# ----------------------------------------------------------------------------- ce_with_logits (categorical)

T, C = 5, 7  # rows (tokens) per example, classes


@pytest.fixture
def sequences(rng):
    """[B, T, C] logits, [B, T] class indices with padding (-100), the rows kept, per-row weights."""
    z = (rng.normal(size=(B, T, C)) * 4).astype(F32)
    k = rng.integers(0, C, size=(B, T)).astype(np.int32)
    k[1, 3:] = -100  # padding
    k[2, :] = -100  # an example that is all padding
    z[1, 4, 0] = np.nan  # in a padded row: never read
    w = rng.uniform(0.1, 2.0, size=(B, T)).astype(F32)
    return z, k, k != -100, w


@JITTED
def test_ce_with_logits_equals_loop(sequences, jit):
    z, k, keep, w = sequences
    opts = dict(where=keep, weights=w, label_smoothing=0.1)
    f = maybe_jit(lambda a, b: batch.ce_with_logits(a, b, **opts), jit)
    out = f(z, k)
    assert out.shape == (B,) and out.dtype == F32
    assert_close(
        out,
        loop(lambda a, b, c, d: jaxloss.ce_with_logits(a, b, where=c, weights=d, label_smoothing=0.1), z, k, keep, w),
    )
    assert np.isfinite(out).all() and out[2] == 0  # nothing selected: 0, as jaxloss.ce_with_logits
    g = jax.grad(lambda a: jnp.sum(f(a, k)))(z)
    assert np.isfinite(g).all()
    np.testing.assert_array_equal(np.asarray(g)[~keep], 0)  # rows left out get no gradient
    expected = jnp.stack(
        [
            jax.grad(
                lambda a, i=i: jaxloss.ce_with_logits(
                    a, k[i], **{n: v[i] if np.ndim(v) else v for n, v in opts.items()}
                )
            )(z[i])
            for i in range(B)
        ]
    )
    assert_close(g, expected)


@JITTED
def test_ce_with_logits_distributions_and_class_axis(sequences, jit, rng):
    z, k, keep, _ = sequences
    z = np.nan_to_num(z)
    y = rng.dirichlet(np.ones(C), size=(B, T)).astype(F32)  # one distribution per row
    assert_close(maybe_jit(batch.ce_with_logits, jit)(z, y), loop(jaxloss.ce_with_logits, z, y))
    # The class axis named in the batch's own terms (axis 1 of [B, C, T]): examples stay along axis 0.
    moved = np.moveaxis(z, -1, 1)
    got = maybe_jit(lambda a, b: batch.ce_with_logits(a, b, axis=1, where=keep), jit)(moved, k)
    assert_close(got, batch.ce_with_logits(z, k, where=keep))
    # One row per example ([B, C] logits, [B] labels) and a row mask broadcast to every example.
    assert_close(
        batch.ce_with_logits(z[:, 0], np.abs(k[:, 0]) % C), loop(jaxloss.ce_with_logits, z[:, 0], np.abs(k[:, 0]) % C)
    )
    assert_close(
        batch.ce_with_logits(z, np.abs(k) % C, where=keep[0]),
        loop(lambda a, b: jaxloss.ce_with_logits(a, b, where=keep[0]), z, np.abs(k) % C),
    )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_ce_with_logits_16bit_logits(sequences, dtype):
    z, k, keep, _ = sequences
    z16 = jnp.asarray(np.nan_to_num(z), dtype)
    out = batch.ce_with_logits(z16, k, where=keep)
    assert out.dtype == F32
    assert_close(out, loop(lambda a, b, c: jaxloss.ce_with_logits(a, b, where=c), z16, k, keep))
    assert jax.grad(lambda a: jnp.sum(batch.ce_with_logits(a, k, where=keep)))(z16).dtype == dtype


def test_ce_with_logits_float64(x64, sequences):
    z, k, keep, _ = sequences
    out = batch.ce_with_logits(z.astype(np.float64), k, where=keep)
    assert out.dtype == np.float64
    assert_close(
        out,
        loop(lambda a, b, c: jaxloss.ce_with_logits(a, b, where=c), z.astype(np.float64), k, keep),
        dtype=np.float64,
    )


def test_ce_with_logits_errors():
    z = jnp.zeros((2, 3, 4))
    k = jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.ce_with_logits: logits must have a leading example axis"):
        batch.ce_with_logits(jnp.float32(0), 0)
    with pytest.raises(
        ValueError, match=r"jaxloss\.batch\.ce_with_logits: logits must have an example axis and a class"
    ):
        batch.ce_with_logits(jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.ce_with_logits: axis 0 is the example axis"):
        batch.ce_with_logits(z, jnp.zeros((3, 4), jnp.int32), axis=0)
    with pytest.raises(
        ValueError, match=r"jaxloss\.batch\.ce_with_logits: labels must have shape \(2, 3\) \(class indices"
    ):
        batch.ce_with_logits(z, jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(
        ValueError, match=r"jaxloss\.batch\.ce_with_logits: labels must have shape \(2, 3, 4\) \(one distribution"
    ):
        batch.ce_with_logits(z, jnp.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"jaxloss\.batch\.ce_with_logits: labels of dtype bool are ambiguous"):
        batch.ce_with_logits(z, jnp.zeros((2, 3), bool))
    with pytest.raises(TypeError, match=r"jaxloss\.batch\.ce_with_logits: logits must be a real floating"):
        batch.ce_with_logits(z.astype(jnp.int32), k)
    with pytest.raises(
        ValueError, match=r"jaxloss\.batch\.ce_with_logits: weights must broadcast to the loss shape \(2, 3\)"
    ):
        batch.ce_with_logits(z, k, weights=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.ce_with_logits: where must broadcast to the shape \(2, 3\)"):
        batch.ce_with_logits(z, k, where=jnp.ones((2, 3, 4), bool))
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.ce_with_logits: label_smoothing must be \[0, 1\]"):
        batch.ce_with_logits(z, k, label_smoothing=2.0)
    with pytest.raises(TypeError, match=r"jaxloss\.batch\.ce_with_logits: axis must be a Python number"):
        batch.ce_with_logits(z, k, axis=jnp.int32(-1))


def test_checked_ce_with_logits_per_example():
    z = jnp.zeros((2, 3, 4))
    k = jnp.array([[0, 1, 2], [3, 4, -100]])
    safe = jaxloss.checked(batch.ce_with_logits)
    message = "jaxloss.batch.ce_with_logits: labels must be class indices in [0, 4) (logits has 4 classes along axis"
    with pytest.raises(ValueError, match=re.escape(message + " -1); got labels[1, 1] = 4 (2 of 6")):
        safe(z, k)
    keep = jnp.array([[True, True, True], [True, False, False]])
    np.testing.assert_array_equal(safe(z, k, where=keep), batch.ce_with_logits(z, k, where=keep))


# ----------------------------------------------------------------------------- per_example


def test_per_example_with_options_and_in_axes(rng):
    logits = rng.normal(size=(B, 4, 7)).astype(F32)
    f = batch.per_example(jaxloss.entropy_from_logits)
    out = f(logits, base=2)  # keyword options are shared, not batched
    assert out.shape == (B, 4)
    assert_close(out, loop(lambda a: jaxloss.entropy_from_logits(a, base=2), logits))
    assert_close(jax.jit(f, static_argnames="base")(logits, base=2), out)

    target = rng.normal(size=(7,)).astype(F32)  # shared by every example
    g = batch.per_example(lambda p, t: jnp.sum(jaxloss.squared_error(p, t)), in_axes=(0, None))
    x = logits[:, 0]
    assert_close(g(x, target), loop(lambda a: jnp.sum(jaxloss.squared_error(a, target)), x))


def test_per_example_rejects_non_callable():
    with pytest.raises(TypeError, match=r"jaxloss\.batch\.per_example: fn must be callable"):
        batch.per_example(3)


# ----------------------------------------------------------------------------- per-example gradients


def mlp_loss(params, x, y):
    """A one-example loss with a pytree of params: a tiny MLP with a BCE head."""
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jaxloss.bce_with_logits(h @ params["w2"] + params["b2"], y)


@pytest.fixture
def mlp(rng):
    params = {
        "w1": jnp.asarray(rng.normal(size=(D, 5)) / 3, F32),
        "b1": jnp.asarray(rng.normal(size=(5,)), F32),
        "w2": jnp.asarray(rng.normal(size=(5,)), F32),
        "b2": jnp.asarray(0.3, F32),
    }
    x = rng.normal(size=(B, D)).astype(F32)
    y = (rng.uniform(size=(B,)) < 0.5).astype(F32)
    return params, x, y


def loop_grads(fn, params, *examples, argnums=0):
    single = jax.jit(jax.grad(fn, argnums=argnums))
    per = [single(params, *(e[i] for e in examples)) for i in range(len(examples[0]))]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *per)


@JITTED
def test_grad_equals_loop_and_jacrev(mlp, jit):
    params, x, y = mlp
    grads = maybe_jit(batch.grad(mlp_loss), jit)(params, x, y)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for leaf, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params), strict=True):
        assert leaf.shape == (B, *p.shape) and leaf.dtype == p.dtype
    assert_close(grads, loop_grads(mlp_loss, params, x, y))
    losses = batch.per_example(mlp_loss, in_axes=(None, 0, 0))
    assert_close(grads, jax.jacrev(lambda p: losses(p, x, y))(params))


@JITTED
def test_value_and_grad_equals_loop(mlp, jit):
    params, x, y = mlp
    values, grads = maybe_jit(batch.value_and_grad(mlp_loss), jit)(params, x, y)
    assert values.shape == (B,)
    assert_close(values, loop(lambda a, b: mlp_loss(params, a, b), x, y))
    assert_close(grads, batch.grad(mlp_loss)(params, x, y))


def test_mean_of_per_example_grads_is_grad_of_mean(mlp):
    params, x, y = mlp
    mean_grad = jax.grad(lambda p: jnp.mean(batch.per_example(mlp_loss, in_axes=(None, 0, 0))(p, x, y)))(params)
    assert_close(jax.tree.map(lambda g: jnp.mean(g, axis=0), batch.grad(mlp_loss)(params, x, y)), mean_grad)


def test_grad_argnums(mlp):
    params, x, y = mlp
    # argnums=1: the gradient w.r.t. each example's input (saliency), one row per example.
    saliency = batch.grad(mlp_loss, argnums=1)(params, x, y)
    assert saliency.shape == x.shape
    assert_close(saliency, loop_grads(mlp_loss, params, x, y, argnums=1))
    both = batch.grad(mlp_loss, argnums=(0, 1))(params, x, y)
    assert_close(both[0], batch.grad(mlp_loss)(params, x, y))
    assert_close(both[1], saliency)


def test_grad_with_pytree_examples(mlp):
    params, x, y = mlp

    def loss(p, example):
        return mlp_loss(p, example["x"], example["y"])

    assert_close(batch.grad(loss)(params, {"x": x, "y": y}), batch.grad(mlp_loss)(params, x, y))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_grad_keeps_param_dtype(mlp, dtype):
    params, x, y = mlp
    low = jax.tree.map(lambda a: a.astype(dtype), params)
    values, grads = batch.value_and_grad(lambda p, a, b: mlp_loss(p, a.astype(dtype), b))(low, x, y)
    assert values.dtype == F32  # 16-bit logits, float32 loss
    assert all(g.dtype == dtype for g in jax.tree.leaves(grads))


def test_grad_errors(mlp):
    params, x, y = mlp
    g = batch.grad(mlp_loss)
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.grad: .*same leading \(example\) size; got sizes \[5, 6\]"):
        g(params, x, y[:5])
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.grad: .*leading example axis; got a scalar"):
        g(params, x, 1.0)
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.value_and_grad: .*at least one example array"):
        batch.value_and_grad(lambda p: jnp.sum(p))(params["w2"])
    with pytest.raises(TypeError, match=r"jaxloss\.batch\.grad: fn must be callable"):
        batch.grad("loss")


# ----------------------------------------------------------------------------- errors of the losses


def test_loss_errors():
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.mse: predictions must have a leading example axis"):
        batch.mse(jnp.float32(1.0), 1.0)
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.mse: predictions and targets must have the same shape"):
        batch.mse(x, jnp.ones((3, 1)))
    with pytest.raises(TypeError, match=r"jaxloss\.batch\.bce_with_logits: logits must be a real floating"):
        batch.bce_with_logits(jnp.ones((3, 2), jnp.int32), x)
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.bce_with_logits: label_smoothing must be \[0, 1\]"):
        batch.bce_with_logits(x, x, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"jaxloss\.batch\.mean: weights must broadcast to the loss shape"):
        batch.mean(x, weights=jnp.ones((4,)))
    with pytest.raises(TypeError, match=r"jaxloss\.batch\.mean: where must be a boolean array"):
        batch.mean(x, where=jnp.ones((3, 2)))


# ----------------------------------------------------------------------------- per-example clipping (DP-SGD)


def clipped_mean_grad(loss, params, x, y, clip_norm):
    """The DP-SGD recipe (without noise): clip each example's gradient to norm C, then average."""
    grads = batch.grad(loss)(params, x, y)
    norms = jax.vmap(optax.tree.norm)(grads)  # [B]: each example's global gradient norm
    scale = clip_norm / jnp.maximum(norms, clip_norm)  # min(1, C / norm)
    return jax.tree.map(lambda g: jnp.tensordot(scale, g, axes=1) / len(scale), grads), norms


def test_per_example_clipping_equals_loop_and_optax(mlp):
    params, x, y = mlp
    clip = 0.5
    clipped, norms = jax.jit(clipped_mean_grad, static_argnums=0)(mlp_loss, params, x, y, clip)
    assert (np.asarray(norms) > clip).sum() >= 2 and (np.asarray(norms) < clip).sum() >= 1  # both branches

    @jax.jit
    def clip_one(xi, yi):  # one example at a time: its gradient, scaled by min(1, C / norm)
        g = jax.grad(mlp_loss)(params, xi, yi)
        return jax.tree.map(lambda a: a * jnp.minimum(1.0, clip / optax.tree.norm(g)), g)

    expected = jax.tree.map(lambda *a: np.sum(a, axis=0) / B, *[clip_one(x[i], y[i]) for i in range(B)])
    assert_close(clipped, expected)

    summed, n_clipped = optax.per_example_global_norm_clip(jax.tree.leaves(batch.grad(mlp_loss)(params, x, y)), clip)
    assert_close(jax.tree.leaves(clipped), [s / B for s in summed])
    assert n_clipped == (np.asarray(norms) > clip).sum()

    # Every clipped per-example gradient has norm <= C; a huge C gives the plain mean gradient.
    grads = batch.grad(mlp_loss)(params, x, y)
    scale = clip / np.maximum(np.asarray(norms), clip)
    assert (scale * np.asarray(norms) <= clip * (1 + LOOP_ULPS * np.finfo(F32).eps)).all()
    unclipped, _ = clipped_mean_grad(mlp_loss, params, x, y, 1e30)
    assert_close(unclipped, jax.tree.map(lambda g: jnp.mean(g, axis=0), grads))


# ----------------------------------------------------------------------------- models as they are written


def _eqx_model_and_data():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(3, 1, 8, 2, activation=jax.nn.tanh, key=jax.random.key(0))  # holds functions: non-array leaves
    x = jax.random.normal(jax.random.key(1), (6, 3))
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(jnp.float32)
    return eqx, model, x, y


def _eqx_loss(model, xi, yi):
    return jaxloss.bce_with_logits(model(xi)[0], yi)


def test_grad_of_an_equinox_module_equals_a_loop_of_filter_grad():
    """Non-array leaves (the MLP's activation functions) are static, as equinox.filter_grad treats them; the
    per-example gradients have the module's own structure and equal a Python loop of eqx.filter_grad."""
    eqx, model, x, y = _eqx_model_and_data()
    got = batch.grad(_eqx_loss)(model, x, y)
    loop = [eqx.filter_grad(_eqx_loss)(model, x[i], y[i]) for i in range(x.shape[0])]
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(loop[0])
    for leaf, *per_example in zip(jax.tree_util.tree_leaves(got), *map(jax.tree_util.tree_leaves, loop), strict=True):
        # vmap and a loop may round the same sums in another order: a few ulp of the largest entry.
        np.testing.assert_allclose(leaf, jnp.stack(per_example), rtol=0, atol=8 * EPS32 * float(jnp.abs(leaf).max()))
    losses, grads = batch.value_and_grad(_eqx_loss)(model, x, y)
    np.testing.assert_allclose(
        losses, jnp.stack([_eqx_loss(model, x[i], y[i]) for i in range(x.shape[0])]), rtol=8 * EPS32
    )
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(loop[0])


def test_equinox_module_gradient_w_r_t_the_inputs_and_one_compilation():
    eqx, model, x, y = _eqx_model_and_data()
    saliency = batch.grad(_eqx_loss, argnums=1)(model, x, y)
    loop = jnp.stack([jax.grad(_eqx_loss, argnums=1)(model, x[i], y[i]) for i in range(x.shape[0])])
    np.testing.assert_allclose(saliency, loop, rtol=0, atol=8 * EPS32 * float(jnp.abs(loop).max()))
    # New parameter values with the same static leaves reuse the compiled function: fn is traced once.
    traces = []

    def counting(model, xi, yi):
        traces.append(None)
        return _eqx_loss(model, xi, yi)

    per_example = batch.grad(counting)
    per_example(model, x, y)
    first = len(traces)
    per_example(jax.tree_util.tree_map(lambda a: a + 0.1 if eqx.is_inexact_array(a) else a, model), x, y)
    assert first >= 1 and len(traces) == first


def test_grad_of_a_flax_nnx_module_equals_a_loop():
    """A flax.nnx module passed as params (its Param leaves are arrays): per-example gradients equal a loop of
    nnx.grad, with the module's structure."""
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
    x = jax.random.normal(jax.random.key(2), (5, 3))
    y = (x[:, 1] > 0).astype(jnp.float32)

    def loss(m, xi, yi):
        return jaxloss.bce_with_logits(m(xi)[0], yi)

    got = batch.grad(loss)(model, x, y)
    loop = [nnx.grad(loss)(model, x[i], y[i]) for i in range(x.shape[0])]
    got_leaves = jax.tree_util.tree_leaves(got)
    loop_leaves = [jax.tree_util.tree_leaves(g) for g in loop]
    assert len(got_leaves) == len(loop_leaves[0]) == 4
    for k, leaf in enumerate(got_leaves):
        expected = jnp.stack([leaves[k] for leaves in loop_leaves])
        np.testing.assert_allclose(leaf, expected, rtol=0, atol=8 * EPS32 * float(jnp.abs(expected).max()))
