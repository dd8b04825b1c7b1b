"""Binary cross-entropy: from logits (the training form) and from probabilities (for saved outputs)."""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _api, _checks, reduce
from ._kernels import elementwise

__all__ = ["sigmoid_binary_cross_entropy", "binary_cross_entropy", "bce_with_logits"]


def _bce_elementwise(
    fn: str, logits: ArrayLike, labels: ArrayLike, pos_weight, label_smoothing, where=None
) -> tuple[jax.Array, jax.Array | None]:
    """The elementwise loss and its shape; entries ``where`` leaves out are made safe (z = y = 0) first."""
    z, y = _checks.paired(fn, ("logits", "labels"), logits, labels)
    shape, dtype = z.shape, z.dtype
    where = _checks.broadcast_mask(fn, where, shape)
    if where is not None:
        z, y = jnp.where(where, z, 0), jnp.where(where, y, 0)
    if pos_weight is None:

        def loss(labels):
            return elementwise.bce(z, labels)

    else:
        p = _checks.broadcast_option(fn, "pos_weight", pos_weight, shape, dtype)

        def loss(labels):
            return elementwise.bce_weighted(z, labels, p)

    if label_smoothing is None:
        return loss(y), where
    alpha = _checks.as_label_array(fn, "label_smoothing", label_smoothing, dtype)
    if alpha.ndim:
        raise ValueError(
            f"jaxloss.{fn}: label_smoothing must be a scalar in [0, 1]; got shape {alpha.shape}. Pass one number."
        )
    # Keras smoothing y -> y (1 - alpha) + alpha / 2, written as a mix of two losses: L is linear in y, so
    # L(z, y') = (1 - alpha) L(z, y) + alpha L(z, 1/2). No rounded y' (whose error grows with |z|), no cancellation.
    return (1 - alpha) * loss(y) + elementwise.times(alpha, loss(jnp.full_like(y, 0.5))), where


@_api.loss(returns="elementwise", cli="bce-logits")
def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    pos_weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
) -> jax.Array:
    r"""Elementwise binary cross-entropy from logits, through log-sigmoid so that no input overflows.

    .. math::
        \ell(z, y) = -\,w_+\, y \log\sigma(z) - (1 - y)\log\sigma(-z)
                   = w_+\, y\,\mathrm{softplus}(-z) + (1 - y)\,\mathrm{softplus}(z)

    with :math:`w_+` = ``pos_weight`` (1 when None). Both softplus terms come from
    one ``exp`` and one ``log1p``: :math:`\mathrm{softplus}(\pm z) = \max(\pm z, 0) +
    \log(1 + e^{-|z|})`. Every term is non-negative, so there is no cancellation
    for hard or soft labels (no ``softplus(z) - y z``). No epsilon, no clipping.

    Limits: :math:`\ell(-\infty, 0) = \ell(+\infty, 1) = 0` with gradient 0;
    :math:`\ell(+\infty, 0) = \ell(-\infty, 1) = +\infty` with gradient :math:`\pm 1`.
    A term whose weight is 0 is 0 even at an infinite logit. NaN in any argument gives NaN.

    Under differentiation we take the closed forms (``jax.custom_jvp``, so forward
    mode, ``jax.hessian`` and ``jax.jacfwd`` work):
    :math:`\partial\ell/\partial z = (1 - y)\sigma(z) - w_+ y\,\sigma(-z)` (exactly
    :math:`0.5 - y` at :math:`z = 0`), :math:`\partial^2\ell/\partial z^2 =
    (1 + (w_+ - 1)y)\,\sigma(z)\sigma(-z)` (non-zero in both tails) and
    :math:`\partial\ell/\partial y = w_+\mathrm{softplus}(-z) - \mathrm{softplus}(z)`,
    which is exactly :math:`-z` without ``pos_weight``.

    Args:
      logits: ``[...]`` real floating array (16-bit inputs are computed in float32).
      labels: same shape as ``logits`` (a scalar may stand for all); float, int or
        bool; soft labels in [0, 1] are allowed.
      pos_weight: optional non-negative weight of the positive term, broadcasting to
        the loss shape (PyTorch ``BCEWithLogitsLoss`` semantics). With 1 the result
        is bit-identical to None.
      label_smoothing: :math:`\alpha \in [0, 1]`; labels become :math:`y(1-\alpha) +
        \alpha/2` (Keras semantics). With 0 the result is bit-identical to no smoothing.

    Returns:
      ``[...]`` losses, float32 for 16-bit or float32 logits (float64 for float64).
      Gradients come back in the inputs' dtypes.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.sigmoid_binary_cross_entropy(jnp.array([0.0, 100.0, -jnp.inf]), jnp.array([1.0, 1.0, 0.0]))
      Array([0.6931472, 0.       , 0.       ], dtype=float32)

    References:
      PyTorch ``BCEWithLogitsLoss`` (``pos_weight``); Keras ``BinaryCrossentropy`` (``label_smoothing``).
    """
    return _bce_elementwise("sigmoid_binary_cross_entropy", logits, labels, pos_weight, label_smoothing)[0]


@_api.loss(returns="mean")
def bce_with_logits(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    pos_weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis_name: Hashable | None = None,
) -> jax.Array:
    r"""Mean binary cross-entropy from logits, :math:`\sum_i w_i \ell(z_i, y_i) / \sum_i w_i` over the selection.

    :math:`\ell` is :func:`jaxloss.sigmoid_binary_cross_entropy` (same limits,
    options and closed-form derivatives); the mean is :func:`jaxloss.mean`
    (nothing selected gives 0 with zero gradient; ``axis_name`` psums the totals
    inside ``shard_map``). Entries ``where`` leaves out are replaced by
    :math:`z = y = 0` before the loss, so NaN or inf there reaches neither the value
    nor the gradient. The Hessian w.r.t. the logits is
    :math:`\mathrm{diag}(\sigma(z)\sigma(-z))/N`.

    Args:
      logits: ``[...]`` real floating array.
      labels: same shape as ``logits`` (a scalar may stand for all); soft labels allowed.
      pos_weight: optional non-negative weight of the positive term (PyTorch semantics).
      label_smoothing: :math:`\alpha \in [0, 1]`, Keras semantics.
      weights: optional non-negative per-element weights broadcasting to the loss shape.
      where: optional boolean mask broadcasting to the loss shape.
      axis_name: mapped axis to average over inside ``shard_map``.

    Returns:
      A scalar, float32 (16-bit or float32 input) or float64.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.bce_with_logits(jnp.array([0.0, 0.0]), jnp.array([0.0, 1.0]))
      Array(0.6931472, dtype=float32)
    """
    loss, selected = _bce_elementwise("bce_with_logits", logits, labels, pos_weight, label_smoothing, where)
    w = (
        None
        if weights is None
        else _checks.broadcast_option("bce_with_logits", "weights", weights, loss.shape, loss.dtype)
    )
    return reduce.ratio(*reduce.totals(loss, w, selected, axis_name))


@_api.loss(returns="elementwise", cli="bce")
def binary_cross_entropy(probabilities: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Elementwise binary cross-entropy from probabilities, exact, with :math:`0 \log 0 = 0` and no epsilon.

    .. math::
        \ell(p, y) = -\,y \log p - (1 - y)\log(1 - p)

    with :math:`\log(1 - p)` computed as ``log1p(-p)``. This is the form for
    evaluating saved probabilities; to train, pass logits to
    :func:`jaxloss.sigmoid_binary_cross_entropy` (a probability of exactly 0 or 1
    carries no gradient information).

    Limits: :math:`\ell(0, 0) = \ell(1, 1) = 0`; :math:`+\infty` where the true loss
    is infinite (:math:`p = 0` with :math:`y > 0`, :math:`p = 1` with :math:`y < 1`).

    Under differentiation: :math:`\partial\ell/\partial p = -y/p + (1 - y)/(1 - p)`,
    with each term taken as 0 where its label weight (:math:`y` or :math:`1 - y`)
    is 0, so the gradient is finite wherever the loss is finite;
    :math:`\partial\ell/\partial y = \log(1 - p) - \log p`, which is infinite at
    :math:`p \in \{0, 1\}`.

    Args:
      probabilities: ``[...]`` real floating array with values in [0, 1].
      labels: same shape (a scalar may stand for all); float, int or bool in [0, 1].

    Returns:
      ``[...]`` losses, float32 for 16-bit or float32 input (float64 for float64).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.binary_cross_entropy(jnp.array([0.0, 1.0, 0.5]), jnp.array([0.0, 1.0, 1.0]))
      Array([0.       , 0.       , 0.6931472], dtype=float32)
    """
    fn = "binary_cross_entropy"
    p, y = _checks.paired(fn, ("probabilities", "labels"), probabilities, labels)
    off_pos, off_neg = y == 0, y == 1
    # Double where: the switched-off term's input is made safe first, so neither its value nor its
    # derivative can produce 0 * inf.
    pos = jnp.where(off_pos, 0, -y * jnp.log(jnp.where(off_pos, 1, p)))
    neg = jnp.where(off_neg, 0, -(1 - y) * elementwise.log1p(-jnp.where(off_neg, 0, p)))
    return pos + neg
