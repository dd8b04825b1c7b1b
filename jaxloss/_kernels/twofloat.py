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


def power_of_two(k, dtype):
    """2**k as a float of ``dtype``, built from its bits; k must lie in the normal range [minexp, maxexp - 1]."""
    info = jnp.finfo(dtype)
    int_type = jnp.int32 if info.bits == 32 else jnp.int64
    biased = (k.astype(int_type) - (info.minexp - 1)) << info.nmant
    return jax.lax.bitcast_convert_type(biased, dtype)


def split_terms(x, bound, n: int):
    """x = h1 + h2 + r exactly, h1 on the grid g1 = 2**(E + ceil(log2 n) + 1 - p) and h2 on g2 = g1 2**(ceil(log2 n)
    - p), where 2**E >= ``bound`` >= |x| (p: the mantissa's bits). Any sum of n of the h1, and of n of the h2, is
    then exact, in any order and on any number of devices: only the sum of the remainders r (|r| <= g2 / 2) rounds.
    Where the bound is 0, infinite or NaN the terms are left whole (r = x)."""
    dtype = x.dtype
    mantissa = jnp.finfo(dtype).nmant + 1
    log_n = max(n - 1, 1).bit_length()
    bound = jnp.asarray(bound, dtype)
    usable = jnp.isfinite(bound) & (bound > 0)
    _, exponent = jnp.frexp(jnp.where(usable, bound, 1))  # bound < 2**exponent
    g1 = exponent + log_n + 1 - mantissa
    g2 = g1 + log_n - mantissa
    finite = usable & jnp.isfinite(x)
    info = jnp.finfo(dtype)

    def scale(k):  # 2**k, k kept in the normal range (a bound near the float range's ends)
        return power_of_two(jnp.clip(k, info.minexp, info.maxexp - 1), dtype)

    h1 = jnp.where(finite, jnp.round(x * scale(-g1)) * scale(g1), 0)
    r1 = x - h1
    h2 = jnp.where(finite, jnp.round(r1 * scale(-g2)) * scale(g2), 0)
    return h1, h2, r1 - h2


def add_three(h1, h2, r):
    """h1 + h2 + r with one rounding in practice (TwoSum of the two exact partial sums, then the remainder)."""
    hi, lo = two_sum(h1, h2)
    return hi + (lo + r)
