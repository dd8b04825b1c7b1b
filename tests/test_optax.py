"""jaxloss in real optax training loops: it trains, it is a drop-in for optax.losses, and it does not retrace.

(a) logistic regression with optax.adam and jaxloss.bce_with_logits on seeded, linearly separable data
    reaches >= 98% training accuracy, also with bfloat16 parameters and logits (float32 loss);
(b) a small MLP regression with jaxloss.mse and optax.sgd: the loss falls by >= 10x;
(c) a softmax classifier over 10 classes (a tiny LM head: tokens with padding) with optax.adam and
    jaxloss.ce_with_logits, integer labels and `where=labels != PAD`: the loss falls >= 4x, the padding tokens
    (label -100, logits of any size) change nothing, and >= 95% of the real tokens are classified right;
the same loops written with optax.losses give the same loss trajectory within float32 tolerance.
Each loop is a jitted lax.scan, so one compilation covers every step.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxloss

F32 = np.float32
EPS32 = float(np.finfo(F32).eps)
# Two float32 implementations of one loss agree to an ulp or two per step; along a training
# trajectory the difference in the parameters feeds back, so allow this many eps of the loss.
TRAJECTORY_EPS = 16
SUM_EPS = 8  # a float32 sum of a few hundred terms: pairwise rounding, log2(n) ulp
MIN_ACCURACY = 0.98
MIN_LOSS_DROP = 10.0
LOGREG_STEPS, MLP_STEPS, CLASSIFIER_STEPS = 200, 400, 150
PAD = -100  # the padding label (PyTorch's ignore_index)


# ----------------------------------------------------------------------------- data and models


def separable_data(n=256, d=5):
    """Seeded, linearly separable data: labels from a random hyperplane, points near it removed (margin)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * n, d)).astype(F32)
    w, b = rng.normal(size=(d,)), 0.3
    score = x @ w + b
    keep = np.abs(score) > 0.1 * np.linalg.norm(w)
    x, score = x[keep][:n], score[keep][:n]
    return jnp.asarray(x), jnp.asarray((score > 0).astype(F32))


def regression_data(n=128, d=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(F32)
    y = np.sin(x @ rng.normal(size=(d,))) + 0.5 * x[:, 0]
    return jnp.asarray(x), jnp.asarray(y.astype(F32))


def linear(params, x):
    return x.astype(params["w"].dtype) @ params["w"] + params["b"]


def mlp(params, x):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def mlp_init(d=4, hidden=32):
    k1, k2 = jax.random.split(jax.random.key(0))
    return {
        "w1": jax.random.normal(k1, (d, hidden)) / np.sqrt(d),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden,)) / np.sqrt(hidden),
        "b2": jnp.zeros(()),
    }


# The same loss written with jaxloss and with optax.losses.
LOSSES = {
    "bce": {
        "jaxloss": lambda logits, y: jaxloss.bce_with_logits(logits, y),
        "optax": lambda logits, y: jnp.mean(optax.losses.sigmoid_binary_cross_entropy(logits, y)),
    },
    "mse": {
        "jaxloss": lambda pred, y: jaxloss.mse(pred, y),
        "optax": lambda pred, y: jnp.mean(optax.losses.squared_error(pred, y)),
    },
}


def train(model, loss, optimizer, params, x, y, steps):
    """Full-batch training as one jitted lax.scan; returns (final params, loss before each step)."""

    def objective(p):
        return loss(model(p, x), y)

    @jax.jit
    def run(params):
        def step(carry, _):
            params, state = carry
            value, grads = jax.value_and_grad(objective)(params)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        (params, _), values = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
        return params, values

    return run(params)


def accuracy(params, x, y):
    return float(jnp.mean((linear(params, x) > 0) == (y > 0.5)))


def logreg_init(dtype=jnp.float32):
    return {"w": jnp.zeros(5, dtype), "b": jnp.zeros((), dtype)}


# ----------------------------------------------------------------------------- (a) logistic regression


@pytest.fixture(scope="module")
def logreg_runs():
    x, y = separable_data()
    return (
        x,
        y,
        {
            name: train(linear, fn, optax.adam(0.1), logreg_init(), x, y, LOGREG_STEPS)
            for name, fn in LOSSES["bce"].items()
        },
    )


def test_logistic_regression_with_adam_reaches_98_percent(logreg_runs):
    x, y, runs = logreg_runs
    params, losses = runs["jaxloss"]
    assert accuracy(params, x, y) >= MIN_ACCURACY
    assert losses[-1] < losses[0]
    # Zero init: every logit is 0 and the loss log 2, up to the rounding of a float32 sum of 256 terms.
    np.testing.assert_allclose(losses[0], np.log(2), rtol=SUM_EPS * EPS32)


def test_logistic_regression_matches_optax_losses(logreg_runs):
    _, _, runs = logreg_runs
    ours, theirs = runs["jaxloss"][1], runs["optax"][1]
    np.testing.assert_allclose(ours, theirs, rtol=TRAJECTORY_EPS * EPS32, atol=TRAJECTORY_EPS * EPS32 * ours[0])


def test_bfloat16_params_and_logits_with_float32_loss():
    x, y = separable_data()

    def loss(logits, labels):
        assert logits.dtype == jnp.bfloat16  # the model runs in bfloat16 ...
        value = jaxloss.bce_with_logits(logits, labels)
        assert value.dtype == jnp.float32  # ... the loss comes back in float32
        return value

    params, losses = train(linear, loss, optax.adam(0.1), logreg_init(jnp.bfloat16), x, y, LOGREG_STEPS)
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(params))
    assert losses.dtype == jnp.float32
    assert accuracy(params, x, y) >= MIN_ACCURACY


# ----------------------------------------------------------------------------- (b) MLP regression


@pytest.fixture(scope="module")
def mlp_runs():
    x, y = regression_data()
    return {name: train(mlp, fn, optax.sgd(0.1), mlp_init(), x, y, MLP_STEPS)[1] for name, fn in LOSSES["mse"].items()}


def test_mlp_regression_with_sgd_loss_falls_10x(mlp_runs):
    losses = np.asarray(mlp_runs["jaxloss"])
    assert losses[0] / losses[-1] >= MIN_LOSS_DROP


def test_mlp_regression_matches_optax_losses(mlp_runs):
    ours, theirs = mlp_runs["jaxloss"], mlp_runs["optax"]
    np.testing.assert_allclose(ours, theirs, rtol=TRAJECTORY_EPS * EPS32, atol=TRAJECTORY_EPS * EPS32 * ours[0])


# ----------------------------------------------------------------------------- (c) softmax classifier with padding


def token_data(n=384, d=8, classes=10):
    """Seeded tokens: features, a class from a random linear teacher (argmax, separable), and every 4th token
    padding (label PAD, features scaled up 1e3, so that its logits are large and its loss, were it counted,
    would dominate)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(F32)
    labels = np.argmax(x @ rng.normal(size=(d, classes)), axis=1).astype(np.int32)
    labels[::4] = PAD
    x[::4] *= 1e3
    return jnp.asarray(x), jnp.asarray(labels)


def classifier_init(d=8, classes=10):
    return {"w": jnp.zeros((d, classes)), "b": jnp.zeros(classes)}


CLASSIFIER_LOSSES = {
    "jaxloss": lambda logits, labels: jaxloss.ce_with_logits(logits, labels, where=labels != PAD),
    # optax's per-token loss, the padding tokens given a valid label and then left out of the mean by hand.
    "optax": lambda logits, labels: (
        jnp.sum(
            jnp.where(
                labels != PAD,
                optax.losses.softmax_cross_entropy_with_integer_labels(logits, jnp.where(labels != PAD, labels, 0)),
                0,
            )
        )
        / jnp.sum(labels != PAD)
    ),
}


@pytest.fixture(scope="module")
def classifier_runs():
    x, labels = token_data()
    return (
        x,
        labels,
        {
            name: train(linear, fn, optax.adam(0.05), classifier_init(), x, labels, CLASSIFIER_STEPS)
            for name, fn in CLASSIFIER_LOSSES.items()
        },
    )


def test_softmax_classifier_with_adam_and_padding_trains(classifier_runs):
    x, labels, runs = classifier_runs
    params, losses = runs["jaxloss"]
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses))
    # Zero init: every row's logits are equal and its loss is log 10, padding or not (it is left out).
    np.testing.assert_allclose(losses[0], np.log(10), rtol=SUM_EPS * EPS32)
    assert losses[0] / losses[-1] >= 4
    real = np.asarray(labels) != PAD
    predicted = np.asarray(jnp.argmax(linear(params, x), axis=1))
    assert np.mean(predicted[real] == np.asarray(labels)[real]) >= 0.95


def test_softmax_classifier_matches_optax_losses(classifier_runs):
    _, _, runs = classifier_runs
    ours, theirs = runs["jaxloss"][1], runs["optax"][1]
    np.testing.assert_allclose(ours, theirs, rtol=TRAJECTORY_EPS * EPS32, atol=TRAJECTORY_EPS * EPS32 * ours[0])
    for a, b in zip(jax.tree.leaves(runs["jaxloss"][0]), jax.tree.leaves(runs["optax"][0]), strict=True):
        # Adam feeds back the last-place differences of the losses; measured 2.5 eps of the largest parameter.
        np.testing.assert_allclose(a, b, rtol=0, atol=TRAJECTORY_EPS * EPS32 * float(jnp.max(jnp.abs(b))))


def test_padding_tokens_reach_neither_loss_nor_gradient():
    """The padding tokens' logits can hold anything, inf and NaN included: the loss and its gradient are those of
    the real tokens alone, and the padding tokens' gradient is exactly 0 (so x^T dlogits stays finite)."""
    x, labels = token_data()
    params = {"w": jax.random.normal(jax.random.key(1), (8, 10)), "b": jnp.zeros(10)}
    real = np.asarray(labels) != PAD
    logits = linear(params, x).at[0].set(jnp.inf).at[4].set(jnp.nan)  # tokens 0 and 4 are padding
    loss = CLASSIFIER_LOSSES["jaxloss"]
    value, grad = jax.value_and_grad(loss)(logits, labels)
    value_real, grad_real = jax.value_and_grad(loss)(logits[real], labels[real])
    np.testing.assert_allclose(value, value_real, rtol=SUM_EPS * EPS32)
    np.testing.assert_array_equal(np.asarray(grad)[~real], 0)
    np.testing.assert_allclose(np.asarray(grad)[real], grad_real, rtol=SUM_EPS * EPS32, atol=1e-12)


# ----------------------------------------------------------------------------- retracing


def test_jitted_update_step_traces_once():
    x, y = separable_data()
    optimizer = optax.adam(0.1)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(params, state, xb, yb):
        value, grads = jax.value_and_grad(lambda p: jaxloss.bce_with_logits(linear(p, xb), yb))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    params = logreg_init()
    state = optimizer.init(params)
    for i in range(0, 256, 32):  # eight minibatches, one trace
        params, state, _ = update(params, state, x[i : i + 32], y[i : i + 32])
    with pytest.raises(AssertionError, match=r"traced > 1 times"):  # the guard does fire on a new shape
        update(params, state, x[:16], y[:16])
