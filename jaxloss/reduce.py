"""Weighted, masked means: ``sum(w * values) / sum(w)`` over the selected elements."""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _api, _checks
from ._kernels import twofloat

__all__ = ["mean"]


power_of_two = twofloat.power_of_two  # 2**k built from its bits (also used by jaxloss._mean)


def weight_exponent(largest: jax.Array) -> jax.Array:
    """The int32 E by which the weights are divided: 2**-E * largest lies in [1, 4) for every normal ``largest``.

    E is floor(log2(largest)), read from the float's exponent bits (exact; no ``log2`` rounding), clipped so that
    2**-E is a normal float: E = maxexp - 2 (127 in float32) for the largest weights, E = minexp - 1 (-127) for
    0 and subnormals (which XLA:CPU flushes to 0 anyway); inf and NaN give maxexp - 2, whose scaled sums stay
    inf and NaN.
    """
    info = jnp.finfo(largest.dtype)
    int_type = jnp.int32 if info.bits == 32 else jnp.int64
    bits = jax.lax.bitcast_convert_type(largest, int_type)
    exponent = ((bits >> info.nmant) & ((1 << info.nexp) - 1)) + (info.minexp - 1)
    return jnp.clip(exponent, info.minexp - 1, info.maxexp - 2).astype(jnp.int32)


def scaled_totals(
    values: jax.Array,
    weights: jax.Array | None,
    where: jax.Array | None,
    axis_name: Hashable | None = None,
    headroom: int = 0,
    exact: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""(T, W, E): the weighted total and the weight total over the selected elements, both times 2**-E.

    .. math::
        T = \sum_i (w_i 2^{-E})\,\ell_i, \qquad W = \sum_i w_i 2^{-E}, \qquad T / W = \bar\ell

    E is the binary exponent of the largest selected weight (:func:`weight_exponent`), so the scaled weights lie
    in [0, 4): W cannot overflow (n < 2**31 entries give W < 2**33) whatever finite weights arrive, and T
    overflows only where the values' own sum would. Scaling by a power of two is exact, so T and W are
    bit for bit the scaled unscaled sums wherever those are in range: the mean is unchanged where it was
    finite, and finite where the unscaled sums overflowed (weights of 1e36 .. 3.4e38 in float32, 1e308 in
    float64) or underflowed (all weights near the smallest normal).

    Each product is formed in an order that cannot leave the float range early: (w 2**-E) ell while w 2**-E is
    a normal float; for a weight so far below the largest that w 2**-E would underflow (then E > 0), as
    (w (ell / 4)) (4 * 2**-E), where |w ell / 4| < 2**E cannot overflow. Both are the correctly rounded
    w ell 2**-E unless that itself leaves the normal range, so a term is lost only where its own scaled value is
    below the smallest normal number ``tiny``: that moves the mean by at most n * tiny, since W >= 1.

    Without weights E = 0 and W is the exact count. Masked entries, and entries whose weight is 0, are
    replaced by 0 before they are multiplied, so a NaN or inf there reaches neither the totals nor a gradient.
    With ``axis_name`` the largest weight is ``pmax``-ed over that mapped axis first, so every device scales by
    the same E, and then T and W are ``psum``-ed: the ratio is the global mean, exactly as without scaling.
    E carries no gradient (it is piecewise constant in the weights).

    ``exact=True`` (static) sums T and W exactly split (``twofloat.split_terms``, on grids fixed by the largest
    |value| and the number of terms; the bound is ``pmax``-ed with the largest weight): every partial sum of the
    split parts is exact, so the totals are the same float in any order of the additions, on one device or split
    over many (a plain float32 sum rounds differently per order, a few ulps apart), and within about one rounding.
    It costs a pass for the bound and three sums instead of one: :func:`jaxloss.ce_with_logits` takes it for its
    rows (few, and compared across meshes), the elementwise means do not.

    ``headroom`` G > 0 (static) multiplies every term and the weight total by a further 2**-G (E grows by G): where
    the values' own sum overflows while their mean does not, ``G = headroom_for(n)`` brings it back in range
    exactly (:class:`jaxloss.streaming.Mean` does so for a batch whose total overflowed).
    """
    exponent = jnp.int32(0)
    if weights is None:
        selected = values if where is None else jnp.where(where, values, 0)
        count = (
            jnp.asarray(values.size, dtype=values.dtype)
            if where is None
            else jnp.sum(where, dtype=jnp.int32).astype(values.dtype)
        )

        def sums(headroom):  # (T, W) with every value times 2**-headroom
            if headroom == 0:
                return jnp.sum(selected), count
            g = power_of_two(jnp.int32(-headroom), values.dtype)
            return jnp.sum(selected * g), count * g

        if exact:
            biggest = jnp.max(jax.lax.stop_gradient(jnp.where(jnp.isfinite(selected), jnp.abs(selected), 0)), initial=0)
            if axis_name is not None:
                biggest = jax.lax.pmax(biggest, axis_name)
            n = values.size * (1 if axis_name is None else jax.lax.psum(1, axis_name))
            g = None if headroom == 0 else power_of_two(jnp.int32(-headroom), values.dtype)
            terms = selected if g is None else selected * g
            parts = tuple(jnp.sum(x) for x in twofloat.split_terms(terms, biggest if g is None else biggest * g, n))
            parts = (*parts, count if g is None else count * g)
            if axis_name is not None:
                parts = jax.lax.psum(parts, axis_name)  # one collective
            return twofloat.add_three(*parts[:3]), parts[3], exponent + headroom

    else:
        if where is not None:
            weights = jnp.where(where, weights, 0)
            values = jnp.where(where, values, 0)
        largest = jnp.max(jnp.abs(jax.lax.stop_gradient(weights)), initial=0)
        if exact:  # a bound of the values too, for the split totals (from the same pmax)
            biggest = jnp.max(
                jax.lax.stop_gradient(jnp.where((weights == 0) | ~jnp.isfinite(values), 0, jnp.abs(values))),
                initial=0,
            )
            if axis_name is not None:
                largest, biggest = jax.lax.pmax((largest, biggest), axis_name)
        elif axis_name is not None:
            largest = jax.lax.pmax(largest, axis_name)  # one E on every device: the psum below stays exact
        exponent = weight_exponent(largest)
        info = jnp.finfo(values.dtype)
        scale = power_of_two(-exponent, values.dtype)
        scale4 = power_of_two(jnp.minimum(2 - exponent, info.maxexp - 1), values.dtype)  # finite: no 0 * inf
        # A weight of zero switches its value off, inf or NaN included (documented).
        off = weights == 0
        safe = jnp.where(off, 0, values)
        scaled = weights * scale

        def sums(headroom):  # (T, W) with every term and the weight total times a further 2**-headroom
            g = None if headroom == 0 else power_of_two(jnp.int32(-headroom), values.dtype)
            w = scaled if g is None else scaled * g  # exact: scaled >= 2**-G wherever it is >= 1
            # w ell 2**-E, rounded once: (w 2**-E) ell, or w (ell / 4) (4 2**-E) where w 2**-E would underflow.
            small = (weights * (safe * 0.25)) * scale4
            term = jnp.where(scaled >= info.tiny, w * safe, small if g is None else small * g)
            total = jnp.sum(jnp.where(off, 0, term))
            return total, jnp.sum(scaled) if g is None else jnp.sum(scaled) * g

        if exact:
            g = None if headroom == 0 else power_of_two(jnp.int32(-headroom), values.dtype)
            w = scaled if g is None else scaled * g
            small = (weights * (safe * 0.25)) * scale4
            term = jnp.where(off, 0, jnp.where(scaled >= info.tiny, w * safe, small if g is None else small * g))
            # Scaled weights lie in [0, 4), so |term| <= 4 max|ell| (times 2**-G).
            unit = 4.0 if g is None else 4.0 * g
            n = values.size * (1 if axis_name is None else jax.lax.psum(1, axis_name))
            parts = (*twofloat.split_terms(term, unit * biggest, n), *twofloat.split_terms(w, unit, n))
            parts = tuple(jnp.sum(x) for x in parts)
            if axis_name is not None:
                parts = jax.lax.psum(parts, axis_name)  # one collective
            return twofloat.add_three(*parts[:3]), twofloat.add_three(*parts[3:]), exponent + headroom

    total, count = sums(headroom)
    if axis_name is not None:
        total, count = jax.lax.psum((total, count), axis_name)
    return total, count, exponent + headroom


def headroom_for(n: int) -> int:
    """G with 4 n 2**-G <= 1: the scaled weights lie in [0, 4), so n terms times 2**-G sum to at most the largest
    value, and no partial sum can overflow."""
    return max(2, (4 * max(n, 1) - 1).bit_length())


def totals(
    values: jax.Array,
    weights: jax.Array | None,
    where: jax.Array | None,
    axis_name: Hashable | None = None,
    exact: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """(T, W) of :func:`scaled_totals`: numerator and denominator of the mean, in ``values``' dtype (float32 or wider).

    Both carry the same power-of-two scale (1 without weights, where W is the exact count), so ``ratio(T, W)``
    is the mean; with ``axis_name`` they are the global (pmax-scaled, then psum-ed) totals.
    """
    total, count, _ = scaled_totals(values, weights, where, axis_name, exact=exact)
    return total, count


def ratio(total: jax.Array, count: jax.Array) -> jax.Array:
    """total / count, and 0 (with zero gradient) when nothing is selected."""
    empty = count == 0
    return jnp.where(empty, 0, total / jnp.where(empty, 1, count))


def prepare(
    fn: str, values: ArrayLike, weights: ArrayLike | None, where: ArrayLike | None
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Validated (values, weights, where) for a mean: float32 or wider, options broadcast to the loss shape."""
    values = _checks.as_float_array(fn, "values", values)
    dtype = _checks.compute_dtype(values, weights)
    values = values.astype(dtype)
    shape = values.shape
    if weights is not None:
        weights = _checks.broadcast_option(fn, "weights", weights, shape, dtype)
    where = _checks.broadcast_mask(fn, where, shape)
    return values, weights, where


@_api.loss(returns="mean")
def mean(
    values: ArrayLike,
    /,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis_name: Hashable | None = None,
) -> jax.Array:
    r"""Weighted mean of ``values`` over the elements ``where`` selects.

    .. math::
        \bar\ell = \frac{\sum_i w_i\,[\text{where}_i]\,\ell_i}{\sum_i w_i\,[\text{where}_i]}

    with :math:`w_i = 1` when ``weights`` is None. The totals are accumulated in
    float32 (16-bit inputs are widened first) or float64 when the input is float64.

    Limits: when nothing is selected (all of ``where`` False, all weights 0, or an
    empty input) the mean is 0 and its gradient is 0 — not NaN. Entries that
    ``where`` leaves out, or whose weight is 0, are never read into the result:
    a NaN or inf there does not reach the value or the gradient. A NaN among the
    selected values gives NaN.

    The totals are sums: values whose sum leaves the float range (e.g. two values of 3e38 in float32)
    give ``inf`` even when their mean is finite. The weights cannot overflow them: both totals are
    scaled by the power of two that brings the largest selected weight into [1, 4) (exact, so the
    result is bit for bit the unscaled one wherever that was finite), and any finite non-negative
    weights, up to the float maximum, give a finite mean (see :func:`scaled_totals`).

    Under differentiation the mean is linear in ``values``: the gradient is
    :math:`w_i [\text{where}_i] / \sum_j w_j [\text{where}_j]`.

    Args:
      values: per-element losses, any shape ``[...]``, real floating dtype.
      weights: optional finite, non-negative weights that broadcast to ``values.shape``
        (an infinite weight gives NaN; ``jaxloss.checked`` reports both).
      where: optional boolean mask that broadcasts to ``values.shape``.
      axis_name: inside ``jax.shard_map`` (or ``pmap``), the mapped axis to
        average over: the largest weight is ``pmax``-ed first, so that every device
        scales its totals by the same power of two, and the per-device totals are
        then ``psum``-ed, so the result is the exact global mean even when devices
        hold different numbers of selected elements or weights of different size.

    Returns:
      A scalar in ``values``' dtype (float32 for 16-bit input).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.mean(jnp.array([1.0, 2.0, 3.0, 100.0]), where=jnp.array([True, True, True, False]))
      Array(2., dtype=float32)
    """
    values, weights, where = prepare("mean", values, weights, where)
    return ratio(*totals(values, weights, where, axis_name))
