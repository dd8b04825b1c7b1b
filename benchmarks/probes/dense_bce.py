"""Dense accuracy sweep of BCE-from-logits values, jaxloss beside optax.

``python -m benchmarks.probes.dense_bce`` draws 400,000 uniform float32 logits in [-4, 4] (seeded) -- the region where
``log1p(exp(-|z|))`` carries all of the error -- and reports, for hard labels, the worst error in float32 ULPs
against a float64 reference (float64 ``logaddexp`` is exact to ~1e-16, far below a float32 ULP) and the share of
values more than 2 ULP off. The stored mpmath grid (``tests/data``) is what the test suite asserts; this sweep
checks that the bound is not an artefact of that grid.

A second sweep does the same for the gradient dL/dz with hard labels (sigma(z) - y, reference float64
``1 / (1 + exp(-z))`` or ``-1 / (1 + exp(z))``, no cancellation) over 4,000,001 evenly spaced logits in [-30, 30].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxloss


def main() -> None:
    rng = np.random.default_rng(1)
    z = rng.uniform(-4, 4, 400_000).astype(np.float32)
    z64 = z.astype(np.float64)
    implementations = {
        "jaxloss": jaxloss.sigmoid_binary_cross_entropy,
        "optax": jax.jit(optax.sigmoid_binary_cross_entropy),
    }
    print(f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}")
    for y in (0.0, 1.0):
        reference = np.logaddexp(0.0, z64) if y == 0 else np.logaddexp(0.0, -z64)
        spacing = np.spacing(reference.astype(np.float32)).astype(np.float64)
        for name, fn in implementations.items():
            computed = np.asarray(fn(jnp.asarray(z), jnp.full(z.shape, y, jnp.float32)), np.float64)
            ulps = np.abs(computed - reference) / spacing
            print(
                f"y={y:g} {name:8s} max {ulps.max():.2f} ULP at z={z[ulps.argmax()]:.7g}; "
                f"share > 2 ULP: {(ulps > 2).mean():.2e}"
            )
    z = np.linspace(-30, 30, 4_000_001, dtype=np.float32)
    z64 = z.astype(np.float64)
    for name, loss in implementations.items():
        grad = jax.jit(jax.vmap(jax.grad(lambda a, b, loss=loss: loss(a, b))))
        for y in (0.0, 1.0):
            reference = 1 / (1 + np.exp(-z64)) if y == 0 else -1 / (1 + np.exp(z64))
            spacing = np.spacing(np.abs(reference).astype(np.float32)).astype(np.float64)
            computed = np.asarray(grad(jnp.asarray(z), jnp.full(z.shape, y, jnp.float32)), np.float64)
            ulps = np.abs(computed - reference) / spacing
            print(
                f"dL/dz y={y:g} {name:8s} max {ulps.max():.2f} ULP at z={z[ulps.argmax()]:.7g}; "
                f"share > 2 ULP: {(ulps > 2).mean():.2e}"
            )


if __name__ == "__main__":
    main()
