"""``jaxloss demo`` (and ``jaxloss`` without a command): the library's main job, end to end.

Trains a logistic regression on synthetic data with optax and :func:`jaxloss.bce_with_logits`,
evaluates it over a million held-out rows with :mod:`jaxloss.streaming`, and prints a few
entropies in bits. Needs optax (imported when the demo runs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxloss

from . import streaming
from ._format import device, si

__all__ = ["run"]


def run(args=None) -> int:
    """Run the demo (``args``, the parsed command line, is not used); returns the exit code (0)."""
    import optax

    print(f"jaxloss {jaxloss.__version__}, jax {jax.__version__}, on {device()}")
    rng = np.random.default_rng(0)
    features, n_train, n_eval = 16, 2**17, 1_000_000
    true_w = rng.normal(size=features).astype(np.float32)
    true_b = np.float32(-0.5)
    x = rng.standard_normal((n_train + n_eval, features), dtype=np.float32)
    true_logits = x @ true_w + true_b
    y = (rng.random(n_train + n_eval) < 1 / (1 + np.exp(-true_logits))).astype(np.float32)
    x_train, y_train, x_eval, y_eval = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    print(
        f"\nSynthetic data (seed 0): {n_train:,} training and {n_eval:,} held-out rows of {features} features,"
        f"\nlabels drawn from a logistic model."
    )

    def logits_of(params, xb):
        return xb @ params["w"] + params["b"]

    def loss_fn(params, xb, yb):
        return jaxloss.bce_with_logits(logits_of(params, xb), yb)

    optimizer = optax.adam(0.05)
    batch, epochs = 4096, 8
    steps = n_train // batch

    @jax.jit
    def epoch(carry, xs, ys):
        def step(carry, xy):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, *xy)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        carry, losses = jax.lax.scan(step, carry, (xs, ys))
        return carry, losses.mean()

    params = {"w": jnp.zeros(features), "b": jnp.zeros(())}
    carry = (params, optimizer.init(params))
    xs = jnp.asarray(x_train.reshape(steps, batch, features))
    ys = jnp.asarray(y_train.reshape(steps, batch))
    print(f"\nTraining a logistic regression with optax.adam and jaxloss.bce_with_logits ({epochs} epochs):")
    bar = streaming.Progress(epochs * steps, label="  train", unit="steps", every=2.0)
    bar.update(0, force=True)
    for e in range(epochs):
        carry, loss = epoch(carry, xs, ys)
        if e == 0:
            bar.started(steps)
        bar.label = f"  train (epoch {e + 1}, mean BCE {float(loss):.4f} nats)"
        bar.update((e + 1) * steps)
    bar.close(epochs * steps)
    params = carry[0]
    error = float(jnp.linalg.norm(params["w"] - true_w) / np.linalg.norm(true_w))
    print(f"  relative distance of the fitted weights to the true ones: {error:.3f}")

    true = {"w": jnp.asarray(true_w), "b": jnp.asarray(true_b)}
    evaluations = (
        ("BCE, fitted model (nats)", lambda xb, yb: jaxloss.sigmoid_binary_cross_entropy(logits_of(params, xb), yb)),
        ("BCE, true model (nats)", lambda xb, yb: jaxloss.sigmoid_binary_cross_entropy(logits_of(true, xb), yb)),
        ("predictive entropy (bits)", lambda xb, yb: jaxloss.binary_entropy_from_logits(logits_of(params, xb), base=2)),
        (
            "MSE of probabilities (Brier)",
            lambda xb, yb: jaxloss.squared_error(jax.nn.sigmoid(logits_of(params, xb)), yb),
        ),
    )
    batch_rows = 2**16
    print(f"\nStreaming evaluation over the {n_eval:,} held-out rows in batches of {batch_rows:,} (jaxloss.streaming):")
    results = []
    for label, loss in evaluations:
        bar = streaming.Progress(n_eval, label=f"  {label}", unit="rows", every=2.0)
        result = streaming.stream(loss, x_eval, y_eval, batch_size=batch_rows, progress=bar)
        results.append((label, float(result.state.compute()), result.state.num_selected(), result.rows_per_second))
    print(f"  {'quantity':<30} {'value':>10} {'rows':>10} {'rows/s':>8}")
    for label, value, count, rate in results:
        print(f"  {label:<30} {value:>10.6f} {count:>10,} {si(rate):>8}")

    print("\nShannon entropy, in bits (jaxloss.entropy(p, base=2)):")
    for probs, what in (
        ([0.5, 0.5], "two equally likely messages"),
        ([1.0, 0.0], "a certain outcome"),
        ([0.9, 0.1], "a 90/10 split"),
    ):
        h = jaxloss.entropy(jnp.array(probs), base=2)
        print(f"  H{tuple(probs)!s:<12} = {float(h):.3f} bits  ({what})")
    return 0
