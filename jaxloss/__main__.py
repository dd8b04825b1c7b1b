"""``python -m jaxloss``: a short demonstration on the default backend."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

import jaxloss


def demo() -> int:
    device = jax.devices()[0]
    print(f"jaxloss {jaxloss.__version__} on {device.platform} ({device.device_kind}), jax {jax.__version__}")
    print("\nShannon entropy, in bits:")
    for probs, what in (
        ([0.5, 0.5], "two equally likely messages"),
        ([1.0, 0.0], "a certain outcome"),
        ([0.9, 0.1], "a 90/10 split"),
    ):
        h = jaxloss.entropy(jnp.array(probs), base=2)
        print(f"  H{tuple(probs)!s:<12} = {float(h):.3f} bits  ({what})")
    print("\nBinary cross-entropy from logits, y = 1:")
    print(f"  {'logit':>8} {'loss':>12} {'dloss/dz':>12} {'d2loss/dz2':>12}")
    bce = jaxloss.sigmoid_binary_cross_entropy
    d1 = jax.grad(bce)
    d2 = jax.grad(d1)
    for z in (-30.0, -2.0, 0.0, 2.0, 30.0, float("inf")):
        print(f"  {z:>8} {float(bce(z, 1.0)):>12.6g} {float(d1(z, 1.0)):>12.6g} {float(d2(z, 1.0)):>12.6g}")
    print("\nHalf squared error (gradient = the gap p - t):")
    print(f"  {'p':>5} {'t':>5} {'loss':>8} {'grad':>8}")
    for p, t in ((3.0, 1.0), (0.5, 2.0)):
        loss, grad = jax.value_and_grad(jaxloss.half_squared_error)(p, t)
        print(f"  {p:>5} {t:>5} {float(loss):>8.4g} {float(grad):>8.4g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return demo()


if __name__ == "__main__":
    sys.exit(main())
