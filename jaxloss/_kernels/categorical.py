"""Categorical cross-entropy and KL divergence of softmax rows in XLA: the reference formulation.

For a row of logits z (a class that is out has z = -inf): m = max z, d = z - m kept exactly as hi + lo (TwoSum),
e = exp(d), u = -d >= 0 (+inf for a class that is out), and s1 = sum(e) - 1 with the top class(es) counted exactly,
so that Z = 1 + s1 and log Z = log1p(s1) keep every digit when the other classes are far below the top one.
Then, with S = sum(y):

* cross-entropy    L = S log1p(s1) + sum_c y_c u_c                (every term >= 0: nothing cancels)
* its gradient     dL/dz_i = S p_i - y_i, p = e / Z; at a top class i (d_i = 0, p_i = 1 / Z) written as
                   (S - y_i) - S s1 / Z, so a confident one-hot target keeps its digits: -s1 / Z, not p - 1;
* KL(q || p)       sum_c p_c f(delta_c), f(x) = 1 + (x - 1) e^x >= 0, delta = log q - log p (terms >= 0);
  delta is formed from the exact two-float difference of the two rows' shifts plus log(Z_z / Z_t), itself
  computed from the difference of the two rows' terms, so it keeps its relative accuracy as KL -> 0.

With ``axis_name`` (the class axis split over that mapped axis, inside ``shard_map``) the row maximum is one
``pmax`` and every row sum one ``psum`` (of a tuple: one collective); the label term comes from the shard that
holds the label. Everything here is elementwise given the row statistics, so each shard computes its part of the
gradient locally.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable

import jax
import jax.numpy as jnp

from .elementwise import log1p, times
from .twofloat import two_diff, two_sum

__all__: list[str] = []

Axis = Hashable | None


# --------------------------------------------------------------------------- row statistics


def row_max(z, axis: int, axis_name: Axis):
    """The row maximum (kept as a size-1 axis), over every shard of the class axis; no derivative (every result
    here is invariant under a shift of the row)."""
    m = jnp.max(z, axis=axis, keepdims=True, initial=-jnp.inf)
    if axis_name is not None:
        m = jax.lax.pmax(m, axis_name)
    return jax.lax.stop_gradient(m)


def shift(z, m):
    """(hi, lo, e, top) for logits z and their row maximum m: z - m = hi + lo exactly (hi = -inf for a class that
    is out), e = exp(hi + lo), top = z is a row maximum (e = 1 exactly there).

    Limits: where m = +inf the classes at +inf are the top classes (d = 0) and every other class is out; where
    m = -inf (every class out) the row is shifted by 0, so that no inf - inf arises (its result is replaced by
    the caller). NaN stays NaN.
    """
    top_inf = m == jnp.inf
    z = jnp.where(top_inf, jnp.where(z == jnp.inf, 0, z - jnp.inf), z)  # z - inf: -inf, and NaN kept
    m = jnp.where(top_inf | (m == -jnp.inf), 0, m)
    hi, lo = two_diff(z, m)
    lo = jax.lax.stop_gradient(lo)  # d(hi + lo) = dz exactly: the rounding error has no derivative
    e = jnp.exp(hi)
    e = e + e * lo  # exp(hi + lo) to first order; |lo| is below half an ulp of hi
    return hi, lo, e, hi == 0


def reduce_rows(parts, axis: int, axis_name: Axis):
    """Each array of ``parts`` summed over ``axis`` (kept), then over ``axis_name``: one psum for all of them."""
    sums = tuple(jnp.sum(x, axis=axis, keepdims=True) for x in parts)
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    return sums


def _finish(m_raw, rest, n_top):
    """(s1, none) from a row's sum of e over the non-top classes and over its top classes (each e = 1 exactly
    there: the count, but carrying the derivative of e).

    none: every class is out (m = -inf and nothing else; a NaN in the row keeps ``rest`` NaN, so it is not taken
    for an empty row even where XLA:CPU's max skipped it). s1 is 0 there, so that nothing downstream is infinite.
    """
    none = (m_raw == -jnp.inf) & (rest == 0)
    return jnp.where(none, 0, rest + (n_top - 1)), none


def class_positions(shape, axis: int, axis_name: Axis):
    """The global class index of every entry along ``axis`` (this shard's offset added under ``axis_name``)."""
    iota = jax.lax.broadcasted_iota(jnp.int32, shape, axis)
    if axis_name is None:
        return iota
    return iota + jax.lax.axis_index(axis_name).astype(jnp.int32) * shape[axis]


def class_count(n_local: int, axis_name: Axis):
    """The number of classes in the whole row (``n_local`` times the number of shards)."""
    if axis_name is None:
        return n_local
    return n_local * jax.lax.psum(1, axis_name)


# --------------------------------------------------------------------------- cross-entropy, soft labels


def _others(e, rest, n_top):
    """Per class, the sum of e over the *other* classes at a top class (Z - e_i, equal to s1 in value): written
    with e_i itself (1 there) so that its derivative is that of Z - e_i when the row is differentiated again."""
    return rest + (n_top - e)


def _soft_grad(e, top, rest, n_top, y, total):
    z = 1 + (rest + (n_top - 1))
    p = e / z
    return jnp.where(top, (total - y) - total * (_others(e, rest, n_top) / z), total * p - y)


def soft_value_and_grad(z, y, axis: int, axis_name: Axis):
    """(L, dL/dz, dL/dy) of the cross-entropy of softmax(z) against the (non-negative) labels y, L over ``axis``
    (kept). dL/dy = -log p = log Z + u (+inf for a class that is out)."""
    m = row_max(z, axis, axis_name)
    hi, lo, e, top = shift(z, m)
    u = -(hi + lo)
    yu = times(y, u)  # 0 where y = 0, whatever u is
    rest, n_top, total, label = reduce_rows((jnp.where(top, 0, e), jnp.where(top, e, 0), y, yu), axis, axis_name)
    s1, none = _finish(m, rest, n_top)
    log_z = log1p(s1)
    value = jnp.where(none, 0, times(total, log_z) + label)
    grad = jnp.where(none, 0, _soft_grad(e, top, rest, n_top, y, total))
    dy = jnp.where(none, 0, log_z + u)
    return value, grad, dy


def uniform_value_and_grad(z, axis: int, axis_name: Axis):
    """(L, dL/dz) of the cross-entropy of softmax(z) against the uniform distribution over the classes that are
    in (z > -inf): what label smoothing mixes in. 0 for a row with no class in."""
    m = row_max(z, axis, axis_name)
    hi, lo, e, top = shift(z, m)
    inside = z > -jnp.inf
    u = jnp.where(inside, -(hi + lo), 0)  # finite wherever z is (m = +inf: the finite classes are out: inf)
    u = jnp.where(inside & (hi == -jnp.inf), jnp.inf, u)
    rest, n_top, k, sum_u = reduce_rows(
        (jnp.where(top, 0, e), jnp.where(top, e, 0), inside.astype(e.dtype), u), axis, axis_name
    )
    s1, none = _finish(m, rest, n_top)
    k_safe = jnp.where(k == 0, 1, k)
    value = jnp.where(none, 0, log1p(s1) + sum_u / k_safe)
    grad = jnp.where(none, 0, _soft_grad(e, top, rest, n_top, inside.astype(e.dtype) / k_safe, 1))
    return value, grad


# --------------------------------------------------------------------------- cross-entropy, integer labels


def integer_value_and_grad(z, labels, axis: int, axis_name: Axis):
    """(L, dL/dz) of the cross-entropy of softmax(z) against class indices ``labels`` (the shape of z without
    ``axis``): L = log1p(s1) + u_k over ``axis`` (kept). A label outside [0, C) gives NaN for its row (value and
    gradient); a label on a class that is out gives +inf (gradient p - onehot, finite)."""
    k = jnp.expand_dims(labels.astype(jnp.int32), axis)
    n = z.shape[axis]
    valid = (k >= 0) & (k < class_count(n, axis_name))
    m = row_max(z, axis, axis_name)
    hi, lo, e, top = shift(z, m)
    position = class_positions(z.shape, axis, axis_name)
    is_label = position == k
    # The label's u = -(d_hi + d_lo), from the shard that holds it (0 elsewhere): summed with the other row sums.
    u_label = jnp.where(is_label, -(hi + lo), 0)
    rest, n_top, label = reduce_rows((jnp.where(top, 0, e), jnp.where(top, e, 0), u_label), axis, axis_name)
    s1, none = _finish(m, rest, n_top)
    zz = 1 + s1
    value = jnp.where(none, 0, log1p(s1) + label)
    p = e / zz
    grad = jnp.where(is_label, jnp.where(top, -(_others(e, rest, n_top) / zz), p - 1), p)
    grad = jnp.where(none, 0, grad)
    nan = jnp.asarray(jnp.nan, value.dtype)
    return jnp.where(valid, value, nan), jnp.where(valid, grad, nan)


def integer_value(z, labels, axis: int, axis_name: Axis):
    """L alone (see :func:`integer_value_and_grad`): the label's logit gathered, no one-hot pass."""
    if axis_name is not None:
        return integer_value_and_grad(z, labels, axis, axis_name)[0]
    k = jnp.expand_dims(labels.astype(jnp.int32), axis)
    n = z.shape[axis]
    valid = (k >= 0) & (k < n)
    m = row_max(z, axis, None)
    _, _, e, top = shift(z, m)
    rest, n_top = reduce_rows((jnp.where(top, 0, e), jnp.where(top, e, 0)), axis, None)
    s1, none = _finish(m, rest, n_top)
    z_label = jnp.take_along_axis(z, jnp.clip(k, 0, n - 1), axis=axis)
    hi, lo, _, _ = shift(z_label, m)
    value = jnp.where(none, 0, log1p(s1) + (-(hi + lo)))
    return jnp.where(valid, value, jnp.nan)


# --------------------------------------------------------------------------- KL divergence from logits


def _f_small(x):
    """f(x) = 1 + (x - 1) e^x = sum_{n >= 2} (n - 1) x^n / n! for |x| <= 1 (Horner; enough terms for the dtype)."""
    terms = 13 if x.dtype.itemsize <= 4 else 20
    coefficient = [0.0] * 2 + [(n - 1) / _factorial(n) for n in range(2, terms + 1)]
    acc = jnp.asarray(coefficient[terms], x.dtype)
    for n in range(terms - 1, 1, -1):
        acc = acc * x + coefficient[n]
    return acc * (x * x)


def _factorial(n: int) -> float:
    out = 1.0
    for i in range(2, n + 1):
        out *= i
    return out


def kl_terms(delta, p, q):
    """p f(delta) = p - q + q delta, each term >= 0 and without cancellation: the series near delta = 0, the
    direct form below -1, and p (delta - 1) + q above 1 (where q = p e^delta may be far larger than p)."""
    small = jnp.abs(delta) <= 1
    x = jnp.where(small | (delta == -jnp.inf), 0, delta)
    f_low = jnp.where(delta == -jnp.inf, 1, 1 + (x - 1) * jnp.exp(jnp.minimum(x, 0)))
    low = p * jnp.where(small, _f_small(jnp.where(small, delta, 0)), f_low)
    high = q + jnp.where(delta == jnp.inf, jnp.inf, p * (jnp.where(delta > 1, delta, 2) - 1))
    return jnp.maximum(jnp.where(delta > 1, high, low), 0)


def kl_value_and_grads(z, t, axis: int, axis_name: Axis):
    """(KL(softmax(t) || softmax(z)) over ``axis`` (kept), dKL/dz = p - q, dKL/dt = q (delta - KL)).

    Rows where every class of z and of t is out give 0; where only t has no class in, 0 (no target mass); where
    only z has none, +inf. A class out in both contributes nothing.
    """
    mz, mt = row_max(z, axis, axis_name), row_max(t, axis, axis_name)
    zh, zl, ez, ztop = shift(z, mz)
    th, tl, et, ttop = shift(t, mt)
    # D = u_z - u_t = d_t - d_z, as a two-float (hi + lo); inf - inf (a class out in both) made 0 here and
    # switched off below.
    both_out = (zh == -jnp.inf) & (th == -jnp.inf)
    dh, de = two_sum(jnp.where(both_out, 0, th), -jnp.where(both_out, 0, zh))
    dl = jnp.where(jnp.isfinite(dh), de + (tl - zl), 0)
    dh, dl = two_sum(dh, dl)
    # Z_z - Z_t = sum(e_z - e_t), each term as e_t expm1(-D) where the two are close (no cancellation).
    near = jnp.abs(dh) < 0.5
    dn = jnp.where(near, dh, 0)
    em = jnp.expm1(-dn)
    em = em - dl * (1 + em)
    delta_terms = jnp.where(near, et * em, ez - et)
    rest_z, top_z, rest_t, top_t, dz_sum = reduce_rows(
        (jnp.where(ztop, 0, ez), jnp.where(ztop, ez, 0), jnp.where(ttop, 0, et), jnp.where(ttop, et, 0), delta_terms),
        axis,
        axis_name,
    )
    s1z, none_z = _finish(mz, rest_z, top_z)
    s1t, none_t = _finish(mt, rest_t, top_t)
    zz, zt = 1 + s1z, 1 + s1t
    log_ratio = log1p(dz_sum / zt)  # log(Z_z / Z_t)
    # delta = log q - log p = D + log(Z_z / Z_t), summed as two floats: D and the log ratio may nearly cancel.
    a, b = two_sum(dh, log_ratio)
    delta = jnp.where(jnp.isfinite(a), a + (b + dl), a)
    p, q = ez / zz, et / zt
    terms = jnp.where(both_out, 0, kl_terms(delta, p, q))
    (kl,) = reduce_rows((terms,), axis, axis_name)
    grad_z = jnp.where(
        both_out,
        0,
        jnp.where(
            delta > 0, q * jnp.expm1(-jnp.where(delta > 0, delta, 0)), -p * jnp.expm1(jnp.where(delta > 0, 0, delta))
        ),
    )
    finite = jnp.isfinite(kl)
    grad_t = jnp.where((q == 0) | ~finite, 0, q * (jnp.where(q == 0, 0, delta) - jnp.where(finite, kl, 0)))
    kl = jnp.where(none_t, 0, jnp.where(none_z, jnp.inf, kl))
    dead = none_t | none_z
    return kl, jnp.where(dead, 0, grad_z), jnp.where(dead, 0, grad_t)


# --------------------------------------------------------------------------- from probabilities


def cross_entropy_terms(p, t):
    """-t log p per class with 0 log 0 = 0 (a term whose target is 0 is 0, even at p = 0); +inf where p = 0 < t."""
    return times(t, -jnp.log(p))


def relative_entropy_parts(p, q):
    """(w, p - q) per class: w = p log(p/q) - p + q >= 0 (SciPy's kl_div, without cancellation) and the signed
    rest, so that sum(w) + sum(p - q) = sum(p log(p/q)) with the cancelling part summed on its own (it is 0 for
    two rows with equal sums). log(p/q) is formed as log1p((p - q)/q) where p and q are close (p - q exact),
    as log(p / q) where that is in range, else as log p - log q."""
    zero_p, zero_q = p == 0, q == 0
    qs = jnp.where(zero_q, 1, q)
    ps = jnp.where(zero_p, 1, p)
    close = (ps <= 2 * qs) & (qs <= 2 * ps)
    ratio = ps / qs
    delta = jnp.where(
        close,
        log1p((ps - qs) / qs),
        jnp.where((ratio > 0) & jnp.isfinite(ratio), jnp.log(ratio), jnp.log(ps) - jnp.log(qs)),
    )
    delta = jnp.where(zero_q, jnp.inf, jnp.where(zero_p, -jnp.inf, delta))
    w = jnp.where(zero_p, q, jnp.where(zero_q, jnp.inf, kl_terms(delta, q, p)))
    return w, delta


# --------------------------------------------------------------------------- differentiable row functions
# Each is a custom_jvp whose rule is the closed-form gradient above (so forward mode, reverse mode and
# jax.hessian work); second derivatives differentiate that closed form. The class axis is dropped.


def _rows_dot(parts, axis, axis_name):
    (total,) = reduce_rows((sum(parts[1:], parts[0]),), axis, axis_name)
    return jnp.squeeze(total, axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def soft_ce(z, y, axis: int, axis_name: Axis):
    """Cross-entropy of softmax(z) against labels y (same shape), summed over ``axis``."""
    return jnp.squeeze(soft_value_and_grad(z, y, axis, axis_name)[0], axis)


@soft_ce.defjvp
def _soft_ce_jvp(axis, axis_name, primals, tangents):
    (z, y), (dz, dy) = primals, tangents
    value, grad, grad_y = soft_value_and_grad(z, y, axis, axis_name)
    return jnp.squeeze(value, axis), _rows_dot((grad * dz, times(dy, grad_y)), axis, axis_name)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def uniform_ce(z, axis: int, axis_name: Axis):
    """Cross-entropy of softmax(z) against the uniform distribution over the classes that are in."""
    return jnp.squeeze(uniform_value_and_grad(z, axis, axis_name)[0], axis)


@uniform_ce.defjvp
def _uniform_ce_jvp(axis, axis_name, primals, tangents):
    (z,), (dz,) = primals, tangents
    value, grad = uniform_value_and_grad(z, axis, axis_name)
    return jnp.squeeze(value, axis), _rows_dot((grad * dz,), axis, axis_name)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def integer_ce(z, labels, axis: int, axis_name: Axis):
    """Cross-entropy of softmax(z) against class indices (``labels``: z's shape without ``axis``)."""
    return jnp.squeeze(integer_value(z, labels, axis, axis_name), axis)


@integer_ce.defjvp
def _integer_ce_jvp(axis, axis_name, primals, tangents):
    (z, labels), (dz, _) = primals, tangents
    value, grad = integer_value_and_grad(z, labels, axis, axis_name)
    return jnp.squeeze(value, axis), _rows_dot((grad * dz,), axis, axis_name)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def kl_logits(z, t, axis: int, axis_name: Axis):
    """KL(softmax(t) || softmax(z)) over ``axis``."""
    return jnp.squeeze(kl_value_and_grads(z, t, axis, axis_name)[0], axis)


@kl_logits.defjvp
def _kl_logits_jvp(axis, axis_name, primals, tangents):
    (z, t), (dz, dt) = primals, tangents
    value, grad_z, grad_t = kl_value_and_grads(z, t, axis, axis_name)
    return jnp.squeeze(value, axis), _rows_dot((grad_z * dz, grad_t * dt), axis, axis_name)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def cross_entropy_probs(p, t, axis: int):
    """-sum(t log p) over ``axis``; dp: -t/p (0 where t = 0), dt: -log p."""
    return jnp.sum(cross_entropy_terms(p, t), axis=axis)


@cross_entropy_probs.defjvp
def _cross_entropy_probs_jvp(axis, primals, tangents):
    (p, t), (dp, dt) = primals, tangents
    zero = t == 0
    grad_p = jnp.where(zero, 0, -t / jnp.where(zero, 1, p))
    return cross_entropy_probs(p, t, axis), jnp.sum(times(dp, grad_p) + times(dt, -jnp.log(p)), axis=axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def relative_entropy_probs(p, q, axis: int):
    """sum(p log(p / q)) over ``axis``; dp: log(p/q) + 1 (0 where p = 0), dq: -p/q (0 where p = 0)."""
    w, _ = relative_entropy_parts(p, q)
    return jnp.sum(w, axis=axis) + jnp.sum(p - q, axis=axis)


@relative_entropy_probs.defjvp
def _relative_entropy_probs_jvp(axis, primals, tangents):
    (p, q), (dp, dq) = primals, tangents
    _, delta = relative_entropy_parts(p, q)
    zero = p == 0
    grad_p = jnp.where(zero, 0, delta + 1)
    grad_q = jnp.where(zero, 0, -p / jnp.where(q == 0, 1, q))
    grad_q = jnp.where(~zero & (q == 0), -jnp.inf, grad_q)
    value = relative_entropy_probs(p, q, axis)
    return value, jnp.sum(times(dp, grad_p) + times(dq, grad_q), axis=axis)
