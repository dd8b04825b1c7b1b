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

Second derivatives: every gradient is a custom_jvp whose rule is the closed-form Hessian S (diag(p) - p p^T)
applied by :func:`softmax_hvp` (differentiating the gradient formulas instead loses a confident class's digits:
eps |dz| where the product is (1 - p) |dz|). The KL's row sums of terms bounded by 1 are summed by
:func:`split_terms` (one rounding, whatever the order), so that q and log(Z_z / Z_t) reach its gradients with
about an ulp each, and a row split over devices sums to the same float as the whole row.

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
from jax.custom_derivatives import SymbolicZero

from .elementwise import linear, log1p, times
from .twofloat import add_three, split_terms, two_diff, two_sum

__all__: list[str] = []

Axis = Hashable | None


# --------------------------------------------------------------------------- row statistics


def row_max(z, axis: int, axis_name: Axis, *extra):
    """The row maximum (kept as a size-1 axis), over every shard of the class axis; no derivative (every result
    here is invariant under a shift of the row). With ``extra`` arrays, also their row maxima (bounds for
    :func:`reduce_rows`), from the same ``pmax``: returns (m, *maxima)."""
    maxima = tuple(jnp.max(x, axis=axis, keepdims=True, initial=-jnp.inf) for x in (z, *extra))
    if axis_name is not None:
        maxima = jax.lax.pmax(maxima, axis_name)
    maxima = tuple(jax.lax.stop_gradient(x) for x in maxima)
    return maxima if extra else maxima[0]


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


def reduce_rows(parts, axis: int, axis_name: Axis, bounds=None):
    """Each array of ``parts`` summed over ``axis`` (kept), then over ``axis_name``: one psum for all of them.

    ``bounds`` maps a part's position to a bound of its terms' magnitude (a number, or an array of row bounds,
    the same on every device): that part is summed by :func:`split_terms`, so that its sum is the same whatever
    the order of the additions, on one device or split over many, and within one rounding of the exact sum (a
    plain float32 sum of a few hundred terms is off by a few ulps, and by different ulps on different devices)."""
    bounds = bounds or {}
    n = parts[0].shape[axis] * (1 if axis_name is None else jax.lax.psum(1, axis_name))
    pieces = []
    for position, x in enumerate(parts):
        pieces.append(split_terms(x, bounds[position], n) if position in bounds else (x,))
    sums = tuple(jnp.sum(v, axis=axis, keepdims=True) for group in pieces for v in group)
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    out, i = [], 0
    for group in pieces:
        if len(group) == 1:
            out.append(sums[i])
        else:
            out.append(add_three(*sums[i : i + 3]))
        i += len(group)
    return tuple(out)


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
    """S p - y, at a top class whose probability exceeds 1/2 as (S - y) - S (Z - e) / Z: there p = 1 - (Z - e)/Z
    and S p - y for a confident one-hot target is -S (Z - e)/Z, a tiny number that p - 1 would round away. A top
    class with p <= 1/2 (many classes near the top) takes S p - y: the other form would cancel there."""
    z = 1 + (rest + (n_top - 1))
    p = e / z
    others = _others(e, rest, n_top)
    confident = top & (others < e)  # e = 1 at a top class: (Z - e) / Z < 1/2
    return jnp.where(confident, (total - y) - total * (others / z), total * p - y)


def _soft_raw(z, y, axis: int, axis_name: Axis):
    """(L, dL/dz, dL/dy) of the cross-entropy of softmax(z) against the (non-negative) labels y, L over ``axis``
    (kept). dL/dy = -log p = log Z + u (+inf for a class that is out)."""
    m, y_max, low = row_max(z, axis, axis_name, y, jnp.where(y > 0, -z, -jnp.inf))
    hi, lo, e, top = shift(z, m)
    u = -(hi + lo)
    yu = times(y, u)  # 0 where y = 0, whatever u is
    rest, n_top, total, label = reduce_rows(
        (jnp.where(top, 0, e), jnp.where(top, e, 0), y, yu),
        axis,
        axis_name,
        bounds={0: 1.0, 2: y_max, 3: y_max * (m + low)},  # y u <= max(y) (m - min z) over the classes with y > 0
    )
    s1, none = _finish(m, rest, n_top)
    log_z = log1p(s1)
    value = jnp.where(none, 0, times(total, log_z) + label)
    grad = jnp.where(none, 0, _soft_grad(e, top, rest, n_top, y, total))
    dy = jnp.where(none, 0, log_z + u)
    return value, grad, dy


def _uniform_raw(z, axis: int, axis_name: Axis):
    """(L, dL/dz) of the cross-entropy of softmax(z) against the uniform distribution over the classes that are
    in (z > -inf): what label smoothing mixes in. 0 for a row with no class in."""
    inside = z > -jnp.inf
    m, low = row_max(z, axis, axis_name, jnp.where(inside, -z, -jnp.inf))
    hi, lo, e, top = shift(z, m)
    u = jnp.where(inside, -(hi + lo), 0)  # finite wherever z is (m = +inf: the finite classes are out: inf)
    u = jnp.where(inside & (hi == -jnp.inf), jnp.inf, u)
    rest, n_top, k, sum_u = reduce_rows(
        (jnp.where(top, 0, e), jnp.where(top, e, 0), inside.astype(e.dtype), u),
        axis,
        axis_name,
        bounds={0: 1.0, 3: m + low},
    )
    s1, none = _finish(m, rest, n_top)
    k_safe = jnp.where(k == 0, 1, k)
    value = jnp.where(none, 0, log1p(s1) + sum_u / k_safe)
    grad = jnp.where(none, 0, _soft_grad(e, top, rest, n_top, inside.astype(e.dtype) / k_safe, 1))
    return value, grad


# --------------------------------------------------------------------------- cross-entropy, integer labels


def _integer_raw(z, labels, axis: int, axis_name: Axis):
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
    rest, n_top, label = reduce_rows(
        (jnp.where(top, 0, e), jnp.where(top, e, 0), u_label), axis, axis_name, bounds={0: 1.0}
    )
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
        return _integer_raw(z, labels, axis, axis_name)[0]
    k = jnp.expand_dims(labels.astype(jnp.int32), axis)
    n = z.shape[axis]
    valid = (k >= 0) & (k < n)
    m = row_max(z, axis, None)
    _, _, e, top = shift(z, m)
    rest, n_top = reduce_rows((jnp.where(top, 0, e), jnp.where(top, e, 0)), axis, None, bounds={0: 1.0})
    s1, none = _finish(m, rest, n_top)
    z_label = jnp.take_along_axis(z, jnp.clip(k, 0, n - 1), axis=axis)
    hi, lo, _, _ = shift(z_label, m)
    value = jnp.where(none, 0, log1p(s1) + (-(hi + lo)))
    return jnp.where(valid, value, jnp.nan)


# --------------------------------------------------------------------------- KL divergence from logits


def _f_small(x):
    """f(x) = 1 + (x - 1) e^x = sum_{n >= 2} (n - 1) x^n / n! for 0 <= x <= 1 (Horner on positive terms; enough
    terms for the dtype). (For x < 0 the series alternates and cancels: see :func:`_g_series`.)"""
    terms = 13 if x.dtype.itemsize <= 4 else 20
    coefficient = [0.0] * 2 + [(n - 1) / _factorial(n) for n in range(2, terms + 1)]
    acc = jnp.asarray(coefficient[terms], x.dtype)
    for n in range(terms - 1, 1, -1):
        acc = acc * x + coefficient[n]
    return acc * (x * x)


def _g_series(y):
    """g(y) = e^y - 1 - y = sum_{n >= 2} y^n / n! for 0 <= y <= 2: every term positive, nothing cancels (Horner;
    enough terms for the dtype at y = 2). f(x) = e^x g(-x) for x < 0, so p f(delta) = q g(-delta) there."""
    terms = 17 if y.dtype.itemsize <= 4 else 26
    acc = jnp.asarray(1 / _factorial(terms), y.dtype)
    for n in range(terms - 1, 1, -1):
        acc = acc * y + 1 / _factorial(n)
    return acc * (y * y)


def _factorial(n: int) -> float:
    out = 1.0
    for i in range(2, n + 1):
        out *= i
    return out


def kl_terms(delta, p, q):
    """p f(delta) = p - q + q delta (with q = p e^delta), each term >= 0 and formed from positive parts only:

    * 0 <= delta <= 1: p sum_{n>=2} (n - 1) delta^n / n!;
    * -2 <= delta < 0: q (e^-delta - 1 + delta) = q sum_{n>=2} (-delta)^n / n! (1 + (delta - 1) e^delta would
      lose up to 2 bits near delta = -1, where its two parts are 1 and -0.74);
    * delta < -2: p (1 + (delta - 1) e^delta), the subtracted part below 0.41 of 1: no real cancellation
      (q = 0, delta = -inf: p);
    * delta > 1: p + q (delta - 1) (q may be far larger than p; +inf for delta = +inf with q > 0).
    """
    positive = (delta >= 0) & (delta <= 1)
    negative = (delta < 0) & (delta >= -2)
    x = jnp.where(delta < -2, delta, -3)  # finite wherever it is not used
    f_low = jnp.where(delta == -jnp.inf, 1, 1 + (x - 1) * jnp.exp(x))
    series_pos = p * _f_small(jnp.where(positive, delta, 0))
    series_neg = q * _g_series(jnp.where(negative, -delta, 0))
    high = p + jnp.where(delta == jnp.inf, jnp.inf, q * (jnp.where(delta > 1, delta, 2) - 1))
    out = jnp.where(positive, series_pos, jnp.where(negative, series_neg, jnp.where(delta > 1, high, p * f_low)))
    return jnp.where(jnp.isnan(delta + p + q), jnp.nan, jnp.maximum(out, 0))  # no branch above takes a NaN


def _kl_raw(z, t, axis: int, axis_name: Axis):
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
        bounds={0: 1.0, 2: 1.0, 4: 1.0},
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
    largest = jnp.max(jnp.where(jnp.isnan(terms), 0, terms), axis=axis, keepdims=True, initial=0)
    if axis_name is not None:
        largest = jax.lax.pmax(largest, axis_name)
    (kl,) = reduce_rows((terms,), axis, axis_name, bounds={0: jax.lax.stop_gradient(largest)})
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


# --------------------------------------------------------------------------- second derivatives
# Each gradient above is wrapped in a custom_jvp whose rule is the closed-form Hessian S (diag(p) - p p^T) applied
# to the tangent, written so that a confident class keeps its digits in forward and in reverse mode (autodiff of
# the gradient formulas leaves about eps |dz| there, where the product is (1 - p) |dz|).


def _softmax_parts(z, axis: int, axis_name: Axis):
    """(p, top, none): p = softmax(z) over ``axis`` (0 for a class that is out and for a row with none in), top =
    a row maximum (in a row with a class in), none = no class in."""
    m = row_max(z, axis, axis_name)
    _, _, e, top = shift(z, m)
    rest, n_top = reduce_rows((jnp.where(top, 0, e), jnp.where(top, e, 0)), axis, axis_name, bounds={0: 1.0})
    s1, none = _finish(m, rest, n_top)
    return jnp.where(none, 0, e / (1 + s1)), top & ~none, none


def softmax_hvp(p, top, dz, axis: int, axis_name: Axis):
    """(diag(p) - p p^T) dz over ``axis``, as a map whose transpose is as accurate as itself.

    H 1 = 0 and 1^T H = 0, so H = (I - t 1^T) H (I - 1 t^T) for t = top / n_top (the mean over the top classes):
    the tangent is first shifted by its value at the top, w = dz - t^T dz, then u = p w - p (p^T w) (at a single
    top class w = 0 and u = -p (p^T w), with p^T w = sum_{j != top} p_j (dz_j - dz_top): no cancellation), then
    u - t (1^T u) (1^T u is a rounding residue). Reverse mode transposes this into the same three steps in the
    opposite order. (Either outer step alone already keeps a confident class's digits in both modes, the
    transpose of one being the other; both keep the map symmetric.) Classes with p = 0 take no part (their
    tangent may be anything)."""
    dz = jnp.where(p > 0, dz, 0)
    topf = top.astype(dz.dtype)
    r_sum, n_top = reduce_rows((topf * dz, topf), axis, axis_name)
    n_top = jnp.where(n_top == 0, 1, n_top)
    w = dz - r_sum / n_top
    (pw,) = reduce_rows((p * w,), axis, axis_name)
    u = p * w - p * pw
    (su,) = reduce_rows((u,), axis, axis_name)
    return u - topf * (su / n_top)


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


def _tangent(x, like):
    """A tangent as an array (zeros where JAX passed a symbolic zero)."""
    return jnp.zeros_like(like) if _is_zero(x) else x


# Each (value, gradient) pair is one custom_jvp, so that a first derivative computes the row statistics once (one
# pmax and one psum where the class axis is split), and a second derivative applies the closed-form Hessian.


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def soft_value_and_grad(z, y, axis: int, axis_name: Axis):
    """(L, dL/dz, dL/dy) of the cross-entropy of softmax(z) against the (non-negative) labels y, L over ``axis``
    (kept). dL/dy = -log p = log Z + u (+inf for a class that is out). See :func:`_soft_raw`."""
    return _soft_raw(z, y, axis, axis_name)


@functools.partial(soft_value_and_grad.defjvp, symbolic_zeros=True)
def _soft_value_and_grad_jvp(axis, axis_name, primals, tangents):
    (z, y), (dz, dy) = primals, tangents
    value, grad, grad_y = soft_value_and_grad(z, y, axis, axis_name)
    p, top, none = _softmax_parts(z, axis, axis_name)
    dvalue = jnp.zeros_like(value)
    dgrad = jnp.zeros_like(grad)
    if not _is_zero(dz):
        (total, dv) = reduce_rows((y, grad * dz), axis, axis_name)
        dvalue = dvalue + dv
        dgrad = dgrad + total * softmax_hvp(p, top, dz, axis, axis_name)
    if not _is_zero(dy):
        (d_total, dv) = reduce_rows((dy, linear(grad_y, (grad_y, dy))), axis, axis_name)
        dvalue = dvalue + dv
        dgrad = dgrad + (d_total * p - dy)
    # d(-log p_c) = sum_j p_j dz_j - dz_c (0 for a class that is out, whose -log p is +inf throughout).
    (p_dz,) = reduce_rows((p * _tangent(dz, z),), axis, axis_name)
    dgrad_y = jnp.where(p > 0, p_dz - _tangent(dz, z), 0)
    return (value, grad, grad_y), (dvalue, jnp.where(none, 0, dgrad), jnp.where(none, 0, dgrad_y))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def uniform_value_and_grad(z, axis: int, axis_name: Axis):
    """(L, dL/dz) of the cross-entropy of softmax(z) against the uniform distribution over the classes that are
    in (see :func:`_uniform_raw`)."""
    return _uniform_raw(z, axis, axis_name)


@uniform_value_and_grad.defjvp
def _uniform_value_and_grad_jvp(axis, axis_name, primals, tangents):
    (z,), (dz,) = primals, tangents
    value, grad = uniform_value_and_grad(z, axis, axis_name)
    p, top, none = _softmax_parts(z, axis, axis_name)
    (dvalue,) = reduce_rows((grad * dz,), axis, axis_name)
    return (value, grad), (dvalue, jnp.where(none, 0, softmax_hvp(p, top, dz, axis, axis_name)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def integer_value_and_grad(z, labels, axis: int, axis_name: Axis):
    """(L, dL/dz) of the cross-entropy of softmax(z) against class indices ``labels`` (see :func:`_integer_raw`)."""
    return _integer_raw(z, labels, axis, axis_name)


@integer_value_and_grad.defjvp
def _integer_value_and_grad_jvp(axis, axis_name, primals, tangents):
    (z, labels), (dz, _) = primals, tangents
    value, grad = integer_value_and_grad(z, labels, axis, axis_name)
    p, top, none = _softmax_parts(z, axis, axis_name)
    (dvalue,) = reduce_rows((grad * dz,), axis, axis_name)
    dgrad = jnp.where(none, 0, softmax_hvp(p, top, dz, axis, axis_name))
    return (value, grad), (dvalue, jnp.where(jnp.isnan(grad), jnp.nan, dgrad))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def kl_value_and_grads(z, t, axis: int, axis_name: Axis):
    """(KL(softmax(t) || softmax(z)) over ``axis`` (kept), dKL/dz = p - q, dKL/dt = q (delta - KL)); see
    :func:`_kl_raw`."""
    return _kl_raw(z, t, axis, axis_name)


@functools.partial(kl_value_and_grads.defjvp, symbolic_zeros=True)
def _kl_value_and_grads_jvp(axis, axis_name, primals, tangents):
    (z, t), (dz, dt) = primals, tangents
    kl, grad_z, grad_t = kl_value_and_grads(z, t, axis, axis_name)
    p, top_p, none_z = _softmax_parts(z, axis, axis_name)
    q, top_q, none_t = _softmax_parts(t, axis, axis_name)
    dz, dt = _tangent(dz, z), _tangent(dt, t)
    (dkl,) = reduce_rows((linear(grad_z, (grad_z, dz), (grad_t, dt)),), axis, axis_name)
    dgrad_z = softmax_hvp(p, top_p, dz, axis, axis_name) - softmax_hvp(q, top_q, dt, axis, axis_name)
    # dKL/dt = q (delta - KL) differentiated by JAX (no cancellation-prone closed form needed there).
    _, dgrad_t = jax.jvp(lambda a, b: _kl_raw(a, b, axis, axis_name)[2], (z, t), (dz, dt))
    return (kl, grad_z, grad_t), (dkl, jnp.where(none_z | none_t, 0, dgrad_z), dgrad_t)


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


@functools.partial(soft_ce.defjvp, symbolic_zeros=True)
def _soft_ce_jvp(axis, axis_name, primals, tangents):
    # Symbolic zeros (``linear``): a tangent that is not there contributes nothing, so dL/dy = +inf on a class
    # that is out never meets a zero tangent (0 * inf), and the rule stays linear in the tangents (reverse mode).
    (z, y), (dz, dy) = primals, tangents
    value, grad, grad_y = soft_value_and_grad(z, y, axis, axis_name)
    return jnp.squeeze(value, axis), _rows_dot((linear(grad, (grad, dz), (grad_y, dy)),), axis, axis_name)


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


@functools.partial(cross_entropy_probs.defjvp, symbolic_zeros=True)
def _cross_entropy_probs_jvp(axis, primals, tangents):
    (p, t), (dp, dt) = primals, tangents
    zero = t == 0
    grad_p = jnp.where(zero, 0, -t / jnp.where(zero, 1, p))
    return cross_entropy_probs(p, t, axis), jnp.sum(linear(p, (grad_p, dp), (-jnp.log(p), dt)), axis=axis)


def _largest_finite(x, axis: int):
    return jnp.max(jnp.where(jnp.isfinite(x), jnp.abs(x), 0), axis=axis, keepdims=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def relative_entropy_probs(p, q, axis: int):
    """sum(p log(p / q)) over ``axis``; dp: log(p/q) + 1 (0 where p = 0), dq: -p/q (0 where p = 0)."""
    w, _ = relative_entropy_parts(p, q)
    # Both sums split exactly (twofloat.split_terms): p - q of two rows with nearly equal sums cancels, and its sum
    # keeps its relative accuracy only when no partial sum rounds. Infinite terms give the infinite sum.
    d = p - q
    w_sum, d_sum = reduce_rows((w, d), axis, None, bounds={0: _largest_finite(w, axis), 1: _largest_finite(d, axis)})
    return jnp.squeeze(w_sum + d_sum, axis)


@functools.partial(relative_entropy_probs.defjvp, symbolic_zeros=True)
def _relative_entropy_probs_jvp(axis, primals, tangents):
    (p, q), (dp, dq) = primals, tangents
    _, delta = relative_entropy_parts(p, q)
    zero = p == 0
    grad_p = jnp.where(zero, 0, delta + 1)
    grad_q = jnp.where(zero, 0, -p / jnp.where(q == 0, 1, q))
    grad_q = jnp.where(~zero & (q == 0), -jnp.inf, grad_q)
    value = relative_entropy_probs(p, q, axis)
    return value, jnp.sum(linear(p, (grad_p, dp), (grad_q, dq)), axis=axis)
