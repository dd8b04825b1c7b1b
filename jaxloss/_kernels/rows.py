"""The row (softmax) algorithm in XLA: the reference formulation of the row statistics behind
``entropy_from_logits`` and ``entropy``, which every native kernel (:mod:`.cpu`, :mod:`.pallas`) reproduces.

For a row of logits l: m = max(l), d = l - m kept exactly as hi + lo (TwoSum), e = exp(d), u = -d,
s1 = sum(e) - 1 with the top class(es) counted exactly, t = sum(e u). Then H = log1p(s1) + t / (1 + s1) and
dH/dl_i = (e_i / z)(u_i - t / z) with z = 1 + s1: every term non-negative, nothing cancels.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .elementwise import log1p, neg_xlogx, neg_xlogx_slope
from .twofloat import two_diff

__all__: list[str] = []


def widened(dtype) -> np.dtype:
    """The dtype a row is computed in: float32 for 16-bit input, else the input's own."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


def shifted(logits, m_raw):
    """(e, u, none) for logits and their row maximum ``m_raw`` (kept as a size-1 axis).

    d = l - max is kept exactly as hi + lo; e = exp(d) >= 0; u = -d >= 0 (1 for a class that is out, where
    e = 0); none = the row has no class in. Elementwise given ``m_raw``: the GPU kernel's gradient uses it
    with the kernel's row maximum.
    """
    none = m_raw == -jnp.inf  # every class out (or an empty axis)
    top_inf = m_raw == jnp.inf
    # Limits: classes at +inf share all the probability; an all-out row is replaced by a safe row
    # (its result is overwritten) so that no inf - inf reaches a value or a derivative.
    # (A NaN is kept in a row taken for all-out: XLA:CPU's max reduction can miss it, see row_sums.)
    out = jnp.where(none, jnp.where(logits == -jnp.inf, 0, logits), logits)
    # (l - inf: -inf for the other classes, NaN kept: XLA's max can skip a NaN beside a +inf.)
    logits = jnp.where(top_inf, jnp.where(logits == jnp.inf, 0, logits - jnp.inf), out)
    m = jnp.where(top_inf | none, 0, m_raw)
    d_hi, d_lo = two_diff(logits, m)
    e = jnp.exp(d_hi)
    e = e + e * d_lo  # exp(hi + lo) to first order; lo is below half an ulp of hi
    # u = -d is 0 exactly at the top classes and nowhere else, so sign(u) marks the others. A class that is
    # out (e = 0, -d = inf) gets u = 1: e u = 0 (never 0 * inf) and it is not a top class. (A subnormal d
    # flushed to 0 makes its class "top": it then counts 1 instead of e = exp(d), which is 1 in any case.)
    u = jnp.where(e == 0, 1, -d_hi - d_lo)
    return e, u, none


def row_sums(e, u, none, axis):
    """(s1, t, none): s1 = sum(e) - 1 (the top term left out), t = sum(e u), both 0 for rows with no class in.

    ``none`` comes back corrected: XLA:CPU's max reduction (YNNPACK, jax 0.10) skips a NaN, and returns -inf
    for a row of >= 4096 entries whose last entry is NaN, so such a row arrives as "all out". Its NaN was kept
    by :func:`shifted` and reaches the count of non-top classes, which is exactly 0 in a row that really is
    all out (every entry then shifted to 0, u = -0.0).
    """
    not_top = jnp.sign(u)
    # s1 = (sum of e over the other classes) + (number of top classes - 1), the count exact as an integer.
    # Everything reduced is a product of the two arrays e and u: XLA keeps them in one reduction kernel.
    n = jnp.asarray(e.shape[axis] - 1, e.dtype)
    count = jnp.sum(not_top, axis=axis, keepdims=True)
    s1 = jnp.sum(e * not_top, axis=axis, keepdims=True) + (n - count)
    t = jnp.sum(e * u, axis=axis, keepdims=True)
    none = none & (count == 0)
    # Rows with every class out are overwritten by the caller anyway; these selects keep the row arithmetic
    # that follows out of XLA:CPU's reduction kernels, where it can run far slower (benchmarks/NOTES.md,
    # fact 4; at 4096 x 256 the difference measured within noise).
    return jnp.where(none, 0, s1), jnp.where(none, 0, t), none


def softmax_parts(logits, axis):
    """Per-row pieces of softmax entropy, all cancellation-free.

    Returns (e, u, s1, t, none) (see :func:`shifted` and :func:`row_sums`): log(sum e) = log1p(s1) keeps
    every digit when the other terms are tiny.
    """
    m_raw = jnp.max(logits, axis=axis, keepdims=True, initial=-jnp.inf)
    e, u, none = shifted(logits, m_raw)
    s1, t, none = row_sums(e, u, none, axis)
    return e, u, s1, t, none


def softmax_row_stats(x2d):
    """(row max, s1, t) over the last axis of a float array, each kept as a size-1 axis: what the GPU kernel
    (:mod:`.pallas`) computes, in XLA."""
    m_raw = jnp.max(x2d, axis=-1, keepdims=True, initial=-jnp.inf)
    e, u, none = shifted(x2d, m_raw)
    s1, t, _ = row_sums(e, u, none, -1)
    return jnp.where(jnp.isnan(s1) | jnp.isnan(t), jnp.nan, m_raw), s1, t  # a row with a NaN: m = NaN


def entropy_from_sums(s1, t, none):
    """H = log1p(s1) + t / (1 + s1) from a row's sums (both terms >= 0); 0 for a row with no class in."""
    return jnp.where(none, 0, log1p(s1) + t / (1 + s1))


def entropy_xla(x, axis):
    """H over ``axis`` (kept as size 1) on the XLA path; ``x`` float32 or float64."""
    _, _, s1, t, none = softmax_parts(x, axis)
    return entropy_from_sums(s1, t, none)


def value_and_grad_xla(x, axis):
    """(H, dH/dl) of float32/float64 logits on the XLA path; the closed form of the gradient is explained below."""
    e, u, s1, t, none = softmax_parts(x, axis)
    return value_and_grad_from(e, u, s1, t, none)


def value_and_grad_from(e, u, s1, t, none):
    z = 1 + s1
    h = entropy_from_sums(s1, t, none)
    # dH/dl_i = -p_i (log p_i + H) = p_i (u_i - mean_p(u)), with p_i = e_i / z and mean_p(u) = t / z;
    # a class that is out (p_i = 0, u_i = inf) gets exactly 0.
    grad = jnp.where(none, 0, (e / z) * (u - t / z))
    return h, grad


def entropy_probs_xla(p, axis):
    """(H over ``axis`` (dropped), dH/dp) on the XLA path; ``p`` float32 or float64."""
    return jnp.sum(neg_xlogx(p), axis=axis), neg_xlogx_slope(p)
