"""``jaxloss demo``: the library's main job, end to end.

Trains a logistic regression on synthetic data with optax and :func:`jaxloss.bce_with_logits`,
evaluates it over a million held-out rows with :mod:`jaxloss.streaming`, prints a few
entropies in bits, and measures the lecture's claim that binary cross-entropy "appears to speed
up the convergence" compared with the squared error: the same model, seed and optimiser trained
with each, side by side (``--plot FILE`` draws the curves; needs matplotlib). Needs optax
(imported when the demo runs).
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

import jaxloss

from . import streaming
from ._format import device, si

__all__ = ["compare_losses", "run"]


def compare_losses(
    x: ArrayLike,
    y: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    *,
    steps: int = 120,
    learning_rate: float = 2.0,
    every: int = 10,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Train one sigmoid unit twice, same data, initialisation and optimiser: with ``half_squared_error`` on its
    sigmoid output (the "simple network" loss) and with ``bce_with_logits``; print them side by side every
    ``every`` steps and return, per run, (training loss, held-out cross-entropy, held-out accuracy) per step.

    Plain full-batch gradient descent (``optax.sgd``) from zero weights, as in the lecture: with a sigmoid output
    the squared error's gradient carries the factor sigma'(z) <= 1/4, which vanishes where the unit saturates;
    cross-entropy's gradient is sigma(z) - y. Each run's own loss is not comparable with the other's, so both are
    also measured by one yardstick, the held-out cross-entropy (how well the predicted probabilities fit), and by
    held-out accuracy. Whatever the outcome on this data, the figures are what was measured.
    """
    import optax

    x, y, x_test, y_test = map(jnp.asarray, (x, y, x_test, y_test))
    losses = {
        "squared error": lambda z, t: jnp.mean(jaxloss.half_squared_error(jax.nn.sigmoid(z), t)),
        "cross-entropy": jaxloss.bce_with_logits,
    }
    optimizer = optax.sgd(learning_rate)
    history = {}
    for name, loss in losses.items():

        def objective(params, loss=loss):
            return loss(x @ params["w"] + params["b"], y)

        @jax.jit
        def train(params, objective=objective):
            def step(carry, _):
                params, state = carry
                value, grads = jax.value_and_grad(objective)(params)
                updates, state = optimizer.update(grads, state, params)
                params = optax.apply_updates(params, updates)
                z_test = x_test @ params["w"] + params["b"]
                held_out = jaxloss.bce_with_logits(z_test, y_test)
                accuracy = jnp.mean((z_test > 0) == (y_test > 0.5))
                return (params, state), (value, held_out, accuracy)

            return jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)[1]

        params = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}
        loss_history, held_out, accuracy = train(params)
        history[name] = (np.asarray(loss_history), np.asarray(held_out), np.asarray(accuracy))
    head = f"{'own loss':>9} {'test CE':>8} {'test acc':>8}"
    print(f"  {'':>5}  {'trained with squared error':^27}  {'trained with cross-entropy':^27}")
    print(f"  {'step':>5}  {head}  {head}")
    for k in [*range(0, steps, every), steps - 1]:
        row = "  ".join(f"{v[0][k]:>9.4f} {v[1][k]:>8.4f} {v[2][k]:>8.1%}" for v in history.values())
        print(f"  {k + 1:>5}  {row}")
    best = min(float(v[1].min()) for v in history.values())
    for name, (_, held_out, accuracy) in history.items():
        close = np.flatnonzero(held_out <= 1.01 * best)
        when = f"step {int(close[0]) + 1}" if close.size else f"not within {steps} steps"
        print(
            f"  {name}: held-out cross-entropy {held_out[-1]:.4f} nats, accuracy {accuracy[-1]:.1%} after {steps} "
            f"steps; within 1 % of the best held-out cross-entropy ({best:.4f}): {when}"
        )
    return history


def _plot(history: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            f"jaxloss demo: error: --plot needs matplotlib (pip install matplotlib); {path} not written"
        ) from None
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    titles = ("training loss (each run's own)", "held-out cross-entropy (nats)", "held-out accuracy")
    for name, series in history.items():
        steps = np.arange(1, len(series[0]) + 1)
        for ax, values in zip(axes, series, strict=True):
            ax.plot(steps, values, label=f"trained with {name}")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(xlabel="gradient-descent step", title=title)
    axes[0].set_yscale("log")
    axes[2].legend()
    fig.suptitle("One sigmoid unit, same data, start and optimiser: squared error vs cross-entropy")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace | None = None) -> int:
    """Run the demo; ``args.plot`` (``--plot FILE``), if given, names the PNG the convergence curves go to.
    Returns the exit code (0)."""
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

    n_small = 2048
    print(
        f"\nDoes cross-entropy speed up convergence? One sigmoid unit on {n_small:,} of the training rows, "
        f"gradient descent\n(optax.sgd, learning rate 2, zero start), trained with each loss; held-out accuracy on "
        f"{2**16:,} rows:"
    )
    history = compare_losses(x_train[:n_small], y_train[:n_small], x_eval[: 2**16], y_eval[: 2**16])
    plot = getattr(args, "plot", None)
    if plot:
        _plot(history, plot)
        print(f"  curves written to {plot}", file=sys.stderr)
    return 0
