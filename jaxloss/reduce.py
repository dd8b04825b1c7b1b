"""Weighted, masked means: ``sum(w * values) / sum(w)`` over the selected elements."""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _api, _checks

__all__ = ["mean"]


def totals(values: jax.Array, weights: jax.Array | None, where: jax.Array | None, axis_name=None):
    """(sum(w * values), sum(w)) over the selected elements, in ``values``' dtype (float32 or wider).

    Without weights the denominator is an exact integer count. Masked entries are replaced by 0
    before they are multiplied, so a NaN or inf there reaches neither the total nor a gradient.
    With ``axis_name`` both totals are ``psum``-ed over that mapped axis (inside ``shard_map``).
    """
    if weights is None:
        if where is None:
            total = jnp.sum(values)
            count = jnp.asarray(values.size, dtype=values.dtype)
        else:
            total = jnp.sum(jnp.where(where, values, 0))
            count = jnp.sum(where, dtype=jnp.int32).astype(values.dtype)
    else:
        if where is not None:
            weights = jnp.where(where, weights, 0)
            values = jnp.where(where, values, 0)
        # A weight of zero switches its value off, inf or NaN included (documented).
        total = jnp.sum(jnp.where(weights == 0, 0, weights * jnp.where(weights == 0, 0, values)))
        count = jnp.sum(weights)
    if axis_name is not None:
        total, count = jax.lax.psum((total, count), axis_name)
    return total, count


def ratio(total: jax.Array, count: jax.Array) -> jax.Array:
    """total / count, and 0 (with zero gradient) when nothing is selected."""
    empty = count == 0
    return jnp.where(empty, 0, total / jnp.where(empty, 1, count))


def prepare(fn: str, values, weights, where):
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
    give ``inf`` even when their mean is finite.

    Under differentiation the mean is linear in ``values``: the gradient is
    :math:`w_i [\text{where}_i] / \sum_j w_j [\text{where}_j]`.

    Args:
      values: per-element losses, any shape ``[...]``, real floating dtype.
      weights: optional finite, non-negative weights that broadcast to ``values.shape``
        (an infinite weight gives NaN; ``jaxloss.checked`` reports both).
      where: optional boolean mask that broadcasts to ``values.shape``.
      axis_name: inside ``jax.shard_map`` (or ``pmap``), the mapped axis to
        average over: the per-device totals are ``psum``-ed, so the result is the
        exact global mean even when devices hold different numbers of selected
        elements.

    Returns:
      A scalar in ``values``' dtype (float32 for 16-bit input).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.mean(jnp.array([1.0, 2.0, 3.0, 100.0]), where=jnp.array([True, True, True, False]))
      Array(2., dtype=float32)
    """
    values, weights, where = prepare("mean", values, weights, where)
    return ratio(*totals(values, weights, where, axis_name))
