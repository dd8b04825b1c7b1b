"""Exact two-float arithmetic: a rounded result and its rounding error, both floats (Knuth's TwoSum).

Used by the row algorithm (the shift ``l - max`` kept exactly) and by the compensated totals of
:class:`jaxloss.streaming.Mean` (a total as an unevaluated pair ``[hi, lo]``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__: list[str] = []


def two_diff(a, b):
    """(hi, lo) with hi = fl(a - b) and hi + lo = a - b exactly (Knuth's TwoSum).

    lo = 0 where TwoSum's own steps overflow: where hi is infinite, and where |hi| + |a| passes the float range
    (e.g. a = 1.2e38, b = 3.4e38 in float32). There |hi| > 1e38 and lo is far below anything that reaches a result.
    """
    hi = a - b
    bb = hi - a
    lo = (a - (hi - bb)) + (-b - bb)
    return hi, jnp.where(jnp.isfinite(lo), lo, 0)


def two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth's TwoSum); e = 0 where s is not finite."""
    s = a + b
    b_virtual = s - a
    e = (a - (s - b_virtual)) + (b - b_virtual)
    # inf - inf in the error term would turn an infinite total into NaN.
    return s, jnp.where(jnp.isfinite(s), e, 0)


def add_pairs(x: jax.Array, y: jax.Array) -> jax.Array:
    """The sum of two unevaluated sums ``x = [hi, lo]`` and ``y = [hi, lo]``, renormalised (hi = fl(hi + lo))."""
    s, e = two_sum(x[0], y[0])
    return jnp.stack(two_sum(s, e + (x[1] + y[1])))


def split(a):
    """Veltkamp split: a = hi + lo with each half holding at most half the significand bits."""
    bits = jnp.finfo(a.dtype).nmant + 1
    factor = jnp.asarray(2.0 ** ((bits + 1) // 2) + 1, a.dtype)
    c = factor * a
    hi = c - (c - a)
    return hi, a - hi


def two_product(a, b):
    """(p, e) with p = fl(a * b) and p + e = a * b exactly (Dekker), without relying on an FMA."""
    p = a * b
    a_hi, a_lo = split(a)
    b_hi, b_lo = split(b)
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def divide_pairs(t: jax.Array, w: jax.Array) -> jax.Array:
    """(t[0] + t[1]) / (w[0] + w[1]) rounded once: a quotient and one Newton-style correction."""
    q = t[0] / w[0]
    p, p_err = two_product(q, w[0])
    # t - q * w, exactly up to the last two tiny terms; t[0] - p is exact (the two are within a factor 2).
    r = (((t[0] - p) - p_err) + t[1] - q * w[1]) / w[0]
    # Overflow in the split (|q| or |w| near the float maximum) or an infinite total: keep the plain quotient.
    return jnp.where(jnp.isfinite(r), q + r, q)
