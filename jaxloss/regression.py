"""Squared-error losses: elementwise (with and without the 1/2) and their mean."""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _api, _checks, reduce

__all__ = ["squared_error", "half_squared_error", "mse"]


_NAMES = ("predictions", "targets")


@_api.loss(returns="elementwise", cli="mse")
def squared_error(predictions: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Elementwise squared error :math:`(p - t)^2`.

    Computed in float32 for 16-bit inputs (so a float16 gap beyond 256 does not
    overflow) and returned in that dtype; the gradient w.r.t. ``predictions`` is
    :math:`2(p - t)`, returned in the input dtype. Infinite inputs give ``inf``
    (or NaN for ``inf - inf``); NaN gives NaN.

    Args:
      predictions: ``[...]`` real floating array.
      targets: same shape as ``predictions`` (a scalar may stand for all);
        float, int or bool.

    Returns:
      ``[...]`` float32 (16-bit or float32 input) or float64.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.squared_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]))
      Array([1., 4.], dtype=float32)
    """
    p, t = _checks.paired("squared_error", _NAMES, predictions, targets)
    return jnp.square(p - t)


@jax.custom_jvp
def _half_square(d):
    return 0.5 * jnp.square(d)


@_half_square.defjvp
def _half_square_jvp(primals, tangents):
    (d,), (dd,) = primals, tangents
    # d/dd (d**2 / 2) = d exactly; autodiff of 0.5 * square(d) forms 2 d first, which overflows for |d| > max/2.
    return _half_square(d), d * dd


@_api.loss(returns="elementwise")
def half_squared_error(predictions: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Elementwise half squared error :math:`\tfrac12 (p - t)^2` — the classic "simple network" loss.

    Subtract, square the gap, take half: the gradient w.r.t. ``predictions`` is
    exactly the gap :math:`p - t` (the factors 2 and 1/2 are exact in binary), and
    w.r.t. ``targets`` exactly :math:`t - p`. Equals ``squared_error / 2`` bit for bit.

    Args:
      predictions: ``[...]`` real floating array.
      targets: same shape as ``predictions`` (a scalar may stand for all).

    Returns:
      ``[...]`` float32 (16-bit or float32 input) or float64.

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> jax.grad(lambda p: jaxloss.half_squared_error(p, 1.0))(3.0)
      Array(2., dtype=float32, weak_type=True)
    """
    p, t = _checks.paired("half_squared_error", _NAMES, predictions, targets)
    return _half_square(p - t)


@_api.loss(returns="mean")
def mse(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis_name: Hashable | None = None,
) -> jax.Array:
    r"""Mean squared error, :math:`\sum_i w_i (p_i - t_i)^2 / \sum_i w_i` over the selected elements.

    See :func:`jaxloss.mean` for ``weights``, ``where`` and ``axis_name``; nothing
    selected gives 0 with zero gradient. Entries left out by ``where`` are replaced
    by 0 before the subtraction, so NaN or inf there reaches neither the value nor
    the gradient. Accumulated in float32 (float64 for float64 input).

    Args:
      predictions: ``[...]`` real floating array.
      targets: same shape as ``predictions`` (a scalar may stand for all).
      weights: optional non-negative weights broadcasting to the loss shape.
      where: optional boolean mask broadcasting to the loss shape.
      axis_name: mapped axis to average over inside ``shard_map`` (psum of the totals).

    Returns:
      A scalar, float32 (16-bit or float32 input) or float64.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.mse(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 2.0, 6.0]))
      Array(3., dtype=float32)
    """
    p, t = _checks.paired("mse", _NAMES, predictions, targets)
    weights = None if weights is None else _checks.broadcast_option("mse", "weights", weights, p.shape, p.dtype)
    where = _checks.broadcast_mask("mse", where, p.shape)
    if where is not None:
        p, t = jnp.where(where, p, 0), jnp.where(where, t, 0)
    return reduce.ratio(*reduce.totals(jnp.square(p - t), weights, where, axis_name))
