"""How accurate XLA's float32 exp, division and sigmoid forms are on the default device, against float64 numpy.

    python -m benchmarks.probes.gpu_arith_probe

Written for the GPU, where the BCE gradient test found 2.39 ulp (contract 2) at z = -0.00042: is it exp, the
division, or the formula? Prints the max ulp error of: exp(x) on a sweep of [-87, 0]; a / b for random a, b
(0.5 means correctly rounded); and sigmoid(z) on [-30, 30] computed as jaxloss does (two quotients e / (1 + e)
and 1 / (1 + e)), with one reciprocal (r = 1 / (1 + e), e r), and as ``jax.nn.sigmoid``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def max_ulp(got, ref) -> tuple[float, int]:
    got = np.asarray(got, np.float64)
    spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    err = np.abs(got - ref) / spacing
    i = int(np.argmax(err))
    return float(err[i]), i


def main() -> None:
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    rng = np.random.default_rng(0)
    x = np.linspace(-87.0, 0.0, 2_000_001, dtype=np.float32)
    err, i = max_ulp(jax.jit(jnp.exp)(x), np.exp(x.astype(np.float64)))
    print(f"exp        max {err:.3f} ulp at x = {x[i]:.9g}", flush=True)
    a = rng.uniform(0.5, 2.0, 2_000_000).astype(np.float32)
    b = rng.uniform(1.0, 2.0, 2_000_000).astype(np.float32)
    err, i = max_ulp(jax.jit(jnp.divide)(a, b), a.astype(np.float64) / b.astype(np.float64))
    print(f"a / b      max {err:.3f} ulp (0.5: correctly rounded) at {a[i]:.9g} / {b[i]:.9g}", flush=True)
    z = np.linspace(-30.0, 30.0, 2_000_001, dtype=np.float32)
    ref = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))

    def two_quotients(z):
        e = jnp.exp(-jnp.abs(z))
        return jnp.where(z > 0, 1 / (1 + e), e / (1 + e))

    def one_reciprocal(z):
        e = jnp.exp(-jnp.abs(z))
        r = 1 / (1 + e)
        return jnp.where(z > 0, r, e * r)

    forms = (("two quotients", two_quotients), ("one reciprocal", one_reciprocal), ("nn.sigmoid", jax.nn.sigmoid))
    for name, fn in forms:
        err, i = max_ulp(jax.jit(fn)(z), ref)
        print(f"sigmoid {name:<15} max {err:.3f} ulp at z = {z[i]:.9g}", flush=True)


if __name__ == "__main__":
    main()
