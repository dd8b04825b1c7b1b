"""Comparing two distributions over many classes: categorical cross-entropy and KL divergence.

From logits (the training forms: softmax cross-entropy with distributions or class indices, KL between two softmax
rows, and ``ce_with_logits``, their mean) and from saved probabilities (cross-entropy and relative entropy). Every
function reduces the class ``axis`` exactly (see :mod:`jaxloss._kernels.categorical` for the algorithm) and can
run with that axis split over devices (``class_axis_name``, inside ``shard_map``).
"""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _api, _checks, _kernels, reduce
from ._kernels import categorical as _cat
from ._kernels import elementwise

__all__ = [
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "kl_divergence_from_logits",
    "cross_entropy",
    "relative_entropy",
    "ce_with_logits",
]


def _in_base(h: jax.Array, factor: float | None) -> jax.Array:
    return h if factor is None else h * jnp.asarray(factor, h.dtype)


def _logits(fn: str, name: str, x, axis: int) -> tuple[jax.Array, int]:
    """Logits as a float32-or-wider array with a class axis, and that axis normalised."""
    x = _checks.as_float_array(fn, name, x)
    _checks.at_least_1d(fn, name, x)
    axis = _checks.normalize_axis(fn, axis, x.ndim)
    return x.astype(_checks.compute_dtype(x)), axis


def _class_mask(fn: str, where, logits: jax.Array) -> jax.Array:
    """Logits with the classes ``where`` leaves out set to -inf (a class that is out)."""
    where = _checks.broadcast_mask(fn, where, logits.shape)
    return logits if where is None else jnp.where(where, logits, -jnp.inf)


def _distribution_labels(fn: str, names: tuple[str, str], logits: jax.Array, labels) -> jax.Array:
    labels = _checks.as_label_array(fn, names[1], labels, logits.dtype)
    if labels.shape != logits.shape:
        raise ValueError(
            f"jaxloss.{fn}: {names[1]} must have the shape of {names[0]} {logits.shape} (one distribution per row, "
            f"no broadcasting); got {labels.shape}. For class indices use "
            f"jaxloss.softmax_cross_entropy_with_integer_labels (or pass integer labels to ce_with_logits)."
        )
    return labels


def _integer_labels(fn: str, labels, logits_shape: tuple[int, ...], axis: int) -> jax.Array:
    labels = _checks.native_byte_order(labels)
    dtype = getattr(labels, "dtype", None)
    if dtype is None:
        labels = jnp.asarray(labels)
        dtype = labels.dtype
    if not jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
        raise TypeError(
            f"jaxloss.{fn}: labels must be integer class indices; got dtype {np.dtype(dtype).name}. "
            f"Pass labels.astype(jnp.int32), or jaxloss.softmax_cross_entropy for one distribution per row."
        )
    rows = logits_shape[:axis] + logits_shape[axis + 1 :]
    if tuple(labels.shape) != rows:
        raise ValueError(
            f"jaxloss.{fn}: labels must have the shape of logits without the class axis {axis}, {rows}; got "
            f"{tuple(labels.shape)}. Pass one class index per row (one-hot labels: argmax them, or use "
            f"jaxloss.softmax_cross_entropy)."
        )
    if np.dtype(dtype).itemsize > 4:
        # Indices beyond int32 cannot name a class of a row JAX can hold; clip them to a value that stays invalid.
        labels = jnp.clip(jnp.asarray(labels), -1, np.iinfo(np.int32).max)
    return jnp.asarray(labels).astype(jnp.int32)


def _smoothing(fn: str, label_smoothing, dtype) -> jax.Array | None:
    if label_smoothing is None:
        return None
    alpha = _checks.as_label_array(fn, "label_smoothing", label_smoothing, dtype)
    if alpha.ndim:
        raise ValueError(
            f"jaxloss.{fn}: label_smoothing must be a scalar in [0, 1]; got shape {alpha.shape}. Pass one number."
        )
    return alpha


def _mix(alpha: jax.Array | None, hard: jax.Array, z: jax.Array, axis: int, axis_name) -> jax.Array:
    """(1 - alpha) L(labels) + alpha L(uniform): the loss is linear in the labels, so smoothing the labels is this
    mix of two exact losses (no rounded smoothed labels)."""
    if alpha is None:
        return hard
    # Opaque to XLA's constant folding: under an outer jit a Python alpha becomes a constant, and the folded
    # (1 - alpha) * hard + ... rounded differently from the same call with alpha an argument.
    alpha = jax.lax.optimization_barrier(alpha)
    return (1 - alpha) * hard + elementwise.times(alpha, _cat.uniform_ce(z, axis, axis_name))


def _integer_path(fn: str, implementation, z: jax.Array, axis: int, class_axis_name) -> str:
    workload = "softmax_cross_entropy_with_integer_labels"
    if class_axis_name is not None:
        if implementation not in (None, "xla") and not isinstance(implementation, _kernels.Prefer):
            raise ValueError(
                f"jaxloss.{fn}: implementation={implementation!r} cannot run with class_axis_name (the class axis "
                f"split over devices needs collectives, which only the 'xla' path has). Pass implementation=None."
            )
        return "xla"
    return _kernels.choose(workload, implementation, z.shape, z.dtype, axis)


def _integer_rows(fn, logits, labels, axis, where, label_smoothing, class_axis_name, implementation):
    raw = _checks.as_float_array(fn, "logits", logits)
    _checks.at_least_1d(fn, "logits", raw)
    axis = _checks.normalize_axis(fn, axis, raw.ndim)
    k = _integer_labels(fn, labels, raw.shape, axis)
    where = _checks.broadcast_mask(fn, where, raw.shape)
    z = raw if where is None else jnp.where(where, raw, -jnp.inf)
    path = _integer_path(fn, implementation, z, axis, class_axis_name)
    _checks.bound_axis_name(fn, "class_axis_name", class_axis_name, "the classes")
    hard = _kernels.ce_integer(z, k, axis, class_axis_name, path)
    alpha = _smoothing(fn, label_smoothing, hard.dtype)
    if alpha is None:
        return hard
    return _mix(alpha, hard, z.astype(hard.dtype), axis, class_axis_name)


@_api.loss(returns="rows", cli="ce-logits")
def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    class_axis_name: Hashable | None = None,
) -> jax.Array:
    r"""Cross-entropy of :math:`\mathrm{softmax}(z)` against one distribution of labels per row (optax semantics).

    With :math:`m = \max_j z_j`, :math:`u_c = m - z_c \ge 0` (kept exactly as two floats),
    :math:`s_1 = \sum_c e^{-u_c} - 1` (the top class counted exactly) and :math:`S = \sum_c y_c`,

    .. math::
        L = -\sum_c y_c \log \mathrm{softmax}(z)_c = S\,\mathrm{log1p}(s_1) + \sum_c y_c u_c,

    two non-negative terms: nothing cancels, for any logit spread.

    Limits: a class is *out* where ``where`` is False or its logit is :math:`-\infty`: with label 0 it
    contributes exactly 0 (and gets gradient 0); a label > 0 there gives :math:`+\infty` (never NaN). A row with
    every class out gives 0 with zero gradient. Logits at :math:`+\infty` share all the probability. NaN in a
    class that is in gives NaN.

    Under differentiation we take the closed form :math:`\partial L/\partial z_i = S p_i - y_i`
    (``jax.custom_jvp``; forward mode and ``jax.hessian`` work, the Hessian being :math:`S(\mathrm{diag}(p) -
    pp^\top)`). At a top class it is computed as :math:`(S - y_i) - S s_1/(1 + s_1)`, so a confident one-hot
    target keeps its digits (:math:`-\sum_{j \ne k} p_j`, where ``softmax - labels`` rounds to 0 once
    :math:`p_k > 1 - 2^{-24}`). :math:`\partial L/\partial y_c = -\log p_c`.

    ``label_smoothing`` :math:`\alpha` replaces the labels by :math:`(1 - \alpha)y + \alpha/K` on the :math:`K`
    classes that are in (optax's ``smooth_labels`` when no class is out), computed as the mix
    :math:`(1 - \alpha)L(y) + \alpha L(\text{uniform})` of two exact losses.

    Args:
      logits: ``[..., C, ...]`` real floating array (16-bit is computed in float32).
      labels: same shape as ``logits``: a distribution per row (float, int or bool; not renormalised).
      axis: the class axis, reduced away.
      where: optional boolean mask broadcasting to ``logits.shape``; False = the class is out.
      label_smoothing: :math:`\alpha \in [0, 1]`; 0 gives a result bit-identical to none.
      class_axis_name: inside ``shard_map`` with the class axis split over this mesh axis, the row statistics
        are combined over it (one ``pmax``, one ``psum``): the result is that of the whole row.

    Returns:
      ``logits.shape`` without ``axis``; float32 for 16-bit or float32 logits.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.softmax_cross_entropy(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0]))
      Array(0.6931472, dtype=float32)
      >>> jaxloss.softmax_cross_entropy(jnp.array([0.0, -jnp.inf]), jnp.array([1.0, 0.0]))
      Array(0., dtype=float32)
    """
    fn = "softmax_cross_entropy"
    z, axis = _logits(fn, "logits", logits, axis)
    y = _distribution_labels(fn, ("logits", "labels"), z, labels)
    z = _class_mask(fn, where, z)
    _checks.bound_axis_name(fn, "class_axis_name", class_axis_name, "the classes")
    return _mix(
        _smoothing(fn, label_smoothing, z.dtype), _cat.soft_ce(z, y, axis, class_axis_name), z, axis, class_axis_name
    )


@_api.loss(returns="rows", cli="ce-logits", class_indices="labels")
def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    class_axis_name: Hashable | None = None,
    implementation: str | None = None,
) -> jax.Array:
    r"""Cross-entropy of :math:`\mathrm{softmax}(z)` against class indices :math:`k` (optax semantics).

    .. math::
        L = \log\sum_c e^{z_c} - z_k = \mathrm{log1p}(s_1) + u_k,

    with :math:`u_k = m - z_k` exact and :math:`s_1` as in :func:`jaxloss.softmax_cross_entropy`: two
    non-negative terms, one sweep over the row (max, shifted sum, the label's logit).

    Limits: a class is *out* where ``where`` is False or its logit is :math:`-\infty`: with label 0 it
    contributes exactly 0 (and gets gradient 0); a label > 0 there gives :math:`+\infty` (never NaN). A row with
    every class out gives 0 with zero gradient. Logits at :math:`+\infty` share all the probability. NaN in a
    class that is in gives NaN.
    A label outside :math:`[0, C)` gives NaN for its row, value and gradient (never a silently gathered value);
    :func:`jaxloss.checked` names the row and the label.

    Under differentiation: :math:`\partial L/\partial z_i = p_i - [i = k]`, the target entry computed as
    :math:`-s_1/(1 + s_1) = -\sum_{j \ne k} p_j` when :math:`k` is a top class (relative accuracy kept for a
    confident prediction, where ``softmax - one_hot`` gives 0).

    Args:
      logits: ``[..., C, ...]`` real floating array.
      labels: integer array, ``logits.shape`` without ``axis``.
      axis: the class axis, reduced away.
      where: optional boolean mask broadcasting to ``logits.shape``; False = the class is out.
      label_smoothing: :math:`\alpha \in [0, 1]`, as in :func:`jaxloss.softmax_cross_entropy`.
      class_axis_name: the mesh axis the class axis is split over inside ``shard_map`` (labels are global
        indices; the shard that holds a label contributes its logit).
      implementation: ``None`` (the best available), ``"xla"`` or ``"cpu"`` (the C++ row kernel, when built);
        see :func:`jaxloss.entropy_from_logits`.

    Returns:
      ``logits.shape`` without ``axis``; float32 for 16-bit or float32 logits.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.softmax_cross_entropy_with_integer_labels(jnp.array([[0.0, 0.0], [30.0, 0.0]]), jnp.array([0, 0]))
      Array([6.931472e-01, 9.357623e-14], dtype=float32)
    """
    return _integer_rows(
        "softmax_cross_entropy_with_integer_labels",
        logits,
        labels,
        axis,
        where,
        label_smoothing,
        class_axis_name,
        implementation,
    )


@_api.loss(returns="rows", cli="kl-logits")
def kl_divergence_from_logits(
    logits: ArrayLike,
    target_logits: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    base: float | None = None,
    class_axis_name: Hashable | None = None,
) -> jax.Array:
    r"""KL divergence :math:`\mathrm{KL}(q \,\|\, p)` of :math:`p = \mathrm{softmax}(z)` (``logits``, the model)
    from :math:`q = \mathrm{softmax}(t)` (``target_logits``, the reference), optax's ``kl_divergence`` direction.

    .. math::
        \mathrm{KL} = \sum_c q_c \log\frac{q_c}{p_c} = \sum_c p_c\, f(\delta_c), \qquad
        f(x) = 1 + (x - 1)e^x \ge 0, \quad \delta_c = \log q_c - \log p_c.

    Every term is non-negative (the result is never negative) and :math:`\delta` is formed from the exact
    difference of the two rows' shifts, so the value keeps its relative accuracy as it approaches 0, and is
    exactly 0 when the two rows differ by a constant.

    Limits: a class out in both rows (``where`` False, or :math:`-\infty` in both) contributes nothing; out in
    ``logits`` only (:math:`p_c = 0 < q_c`) gives :math:`+\infty`; out in ``target_logits`` only contributes
    :math:`0`. A row with no class in ``target_logits`` gives 0; with none in ``logits`` (but some in the target)
    :math:`+\infty`. NaN gives NaN.

    Under differentiation: :math:`\partial/\partial z_i = p_i - q_i`, computed as :math:`-p_i\,\mathrm{expm1}
    (\delta_i)` (or :math:`q_i\,\mathrm{expm1}(-\delta_i)`), which keeps its digits where p and q nearly agree;
    :math:`\partial/\partial t_i = q_i(\delta_i - \mathrm{KL})` (0 where the value is infinite).

    Args:
      logits: ``[..., C, ...]`` model logits.
      target_logits: same shape: the reference distribution's logits.
      axis: the class axis, reduced away.
      where: optional boolean mask broadcasting to the shape; False = the class is out of both.
      base: logarithm base (``None``: nats, 2: bits).
      class_axis_name: the mesh axis the class axis is split over inside ``shard_map``.

    Returns:
      ``logits.shape`` without ``axis``; float32 for 16-bit or float32 logits.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.kl_divergence_from_logits(jnp.array([0.0, 1.0]), jnp.array([5.0, 6.0]))
      Array(0., dtype=float32)
    """
    fn = "kl_divergence_from_logits"
    z, axis = _logits(fn, "logits", logits, axis)
    t = _checks.as_float_array(fn, "target_logits", target_logits)
    _checks.same_shape(fn, ("logits", "target_logits"), z, t)
    if t.shape != z.shape:
        t = jnp.broadcast_to(t, z.shape)
    dtype = _checks.compute_dtype(z, t)
    z, t = _class_mask(fn, where, z.astype(dtype)), _class_mask(fn, where, t.astype(dtype))
    factor = _checks.log_base_factor(fn, base)
    _checks.bound_axis_name(fn, "class_axis_name", class_axis_name, "the classes")
    return _in_base(_cat.kl_logits(z, t, axis, class_axis_name), factor)


def _probability_pair(fn, names, p, q, axis, where):
    p = _checks.as_float_array(fn, names[0], p)
    _checks.at_least_1d(fn, names[0], p)
    axis = _checks.normalize_axis(fn, axis, p.ndim)
    dtype = _checks.compute_dtype(p, q)
    q = _checks.as_label_array(fn, names[1], q, dtype)
    _checks.same_shape(fn, names, p, q)
    if q.shape != p.shape:
        q = jnp.broadcast_to(q, p.shape)
    return p.astype(dtype), q, axis, _checks.broadcast_mask(fn, where, p.shape)


@_api.loss(returns="rows", cli="ce", rules={"targets": _api.TARGET_DISTRIBUTION})
def cross_entropy(
    probabilities: ArrayLike,
    targets: ArrayLike,
    *,
    axis: int = -1,
    base: float | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Cross-entropy :math:`-\sum_c t_c \log p_c` of saved probabilities against a target distribution.

    Every term is non-negative; no epsilon, no clipping: a class whose target is 0 contributes exactly 0
    (even at :math:`p_c = 0`), and :math:`p_c = 0 < t_c` gives :math:`+\infty`. Classes ``where`` leaves out
    contribute nothing. Not renormalised. To train, use :func:`jaxloss.softmax_cross_entropy` (logits).

    Under differentiation: :math:`\partial/\partial p_c = -t_c/p_c` (0 where :math:`t_c = 0`),
    :math:`\partial/\partial t_c = -\log p_c`.

    Args:
      probabilities: ``[..., C, ...]`` the model's probabilities, in [0, 1].
      targets: same shape: the target distribution (float, int or bool).
      axis: the class axis, reduced away.
      base: logarithm base (``None``: nats, 2: bits).
      where: optional boolean mask broadcasting to the shape; False = the class is left out.

    Returns:
      ``probabilities.shape`` without ``axis``; float32 for 16-bit or float32 input.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.cross_entropy(jnp.array([0.5, 0.5, 0.0]), jnp.array([1.0, 0.0, 0.0]), base=2)
      Array(1., dtype=float32)
    """
    fn = "cross_entropy"
    p, t, axis, where = _probability_pair(fn, ("probabilities", "targets"), probabilities, targets, axis, where)
    if where is not None:
        p, t = jnp.where(where, p, 1), jnp.where(where, t, 0)
    return _in_base(_cat.cross_entropy_probs(p, t, axis), _checks.log_base_factor(fn, base))


@_api.loss(returns="rows", cli="relative-entropy")
def relative_entropy(
    probabilities: ArrayLike,
    reference: ArrayLike,
    *,
    axis: int = -1,
    base: float | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Relative entropy :math:`\sum_c p_c \log(p_c / q_c)` of ``probabilities`` p from ``reference`` q
    (SciPy's ``entropy(pk, qk)`` without its renormalisation; KL(p ‖ q) for distributions).

    Computed as :math:`\sum_c w_c + \sum_c (p_c - q_c)` with :math:`w_c = p_c\log(p_c/q_c) - p_c + q_c \ge 0`
    (SciPy's ``kl_div`` terms, formed without cancellation): for two distributions the second sum vanishes and
    the value keeps its relative accuracy near 0, where the plain sum of :math:`p \log(p/q)` does not.

    Limits: :math:`0 \log(0/q) = 0`; :math:`p_c > 0 = q_c` gives :math:`+\infty`; classes ``where`` leaves out
    contribute nothing.

    Under differentiation: :math:`\partial/\partial p_c = \log(p_c/q_c) + 1` and :math:`\partial/\partial q_c =
    -p_c/q_c`, both taken as 0 at :math:`p_c = 0` (the entropy convention: exact when chained through a softmax).

    Args:
      probabilities: ``[..., C, ...]`` p, in [0, 1].
      reference: same shape: q, in [0, 1].
      axis: the class axis, reduced away.
      base: logarithm base (``None``: nats, 2: bits).
      where: optional boolean mask broadcasting to the shape; False = the class is left out.

    Returns:
      ``probabilities.shape`` without ``axis``; float32 for 16-bit or float32 input.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> print(f"{jaxloss.relative_entropy(jnp.array([0.5, 0.5]), jnp.array([0.25, 0.75]), base=2):.6f} bits")
      0.207519 bits
    """
    fn = "relative_entropy"
    p, q, axis, where = _probability_pair(fn, ("probabilities", "reference"), probabilities, reference, axis, where)
    if where is not None:
        p, q = jnp.where(where, p, 0), jnp.where(where, q, 0)
    return _in_base(_cat.relative_entropy_probs(p, q, axis), _checks.log_base_factor(fn, base))


@_api.loss(returns="mean", class_indices="labels")
def ce_with_logits(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    label_smoothing: ArrayLike = 0.0,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis_name: Hashable | None = None,
    class_axis_name: Hashable | None = None,
    implementation: str | None = None,
) -> jax.Array:
    r"""Mean categorical cross-entropy from logits over the selected rows: the loss for a training loop.

    Integer ``labels`` are class indices (:func:`jaxloss.softmax_cross_entropy_with_integer_labels`), floating
    ``labels`` a distribution per row (:func:`jaxloss.softmax_cross_entropy`), as PyTorch's ``cross_entropy``
    decides by dtype. The mean is :math:`\sum_r w_r L_r / \sum_r w_r` (:func:`jaxloss.mean`: nothing selected
    gives 0 with zero gradient).

    Two masks, never confused: ``where`` and ``weights`` select **rows** (their shape is ``logits.shape``
    without ``axis``; padding tokens: ``where=labels != pad_id``); rows left out reach neither the value nor the
    gradient, whatever their logits hold. To leave **classes** out, set their logits to :math:`-\infty`
    (``jnp.where(class_mask, logits, -jnp.inf)``) or use the per-row functions' ``where``; a label on such a
    class gives :math:`+\infty`.

    Args:
      logits: ``[..., C, ...]`` real floating array.
      labels: integer class indices (``logits.shape`` without ``axis``) or float distributions (``logits.shape``).
      axis: the class axis.
      label_smoothing: :math:`\alpha \in [0, 1]` (see :func:`jaxloss.softmax_cross_entropy`).
      weights: optional non-negative per-row weights, broadcasting to the row shape.
      where: optional boolean row selection, broadcasting to the row shape.
      axis_name: the mapped axis the rows are split over inside ``shard_map`` (the totals are psum-ed).
      class_axis_name: the mesh axis the classes are split over inside ``shard_map`` (vocabulary-parallel: one
        ``pmax`` and one ``psum`` of the row statistics).
      implementation: ``None`` (the best available), ``"xla"`` or ``"cpu"`` for integer labels.

    Returns:
      A scalar, float32 (16-bit or float32 logits) or float64.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
      >>> jaxloss.ce_with_logits(logits, jnp.array([0, 2]), where=jnp.array([True, False]))
      Array(0.16984601, dtype=float32)
    """
    fn = "ce_with_logits"
    raw = _checks.as_float_array(fn, "logits", logits)
    _checks.at_least_1d(fn, "logits", raw)
    axis = _checks.normalize_axis(fn, axis, raw.ndim)
    row_shape = raw.shape[:axis] + raw.shape[axis + 1 :]
    selected = _checks.broadcast_mask(fn, where, row_shape)
    w = (
        None
        if weights is None
        else _checks.broadcast_option(fn, "weights", weights, row_shape, _checks.compute_dtype(raw))
    )
    # Rows left out (where False, weight 0) are made safe before the loss: their logits 0 and their labels 0, so
    # that NaN, inf or a padding label there (-100) reaches neither the value nor the gradient.
    keep = None if selected is None else selected
    if w is not None:
        keep = (w != 0) if keep is None else keep & (w != 0)
    kind = getattr(labels, "dtype", None)
    if kind is None:
        kind = jnp.asarray(labels).dtype
    if jnp.issubdtype(kind, jnp.bool_):
        raise TypeError(
            f"jaxloss.{fn}: labels of dtype bool are ambiguous (class indices or a distribution?); got bool. "
            f"Pass integer class indices (labels.astype(jnp.int32)) or a float distribution per row."
        )
    if keep is not None:
        raw = jnp.where(jnp.expand_dims(keep, axis), raw, 0)
    if jnp.issubdtype(kind, jnp.integer):
        k = _integer_labels(fn, labels, raw.shape, axis)
        if keep is not None:
            k = jnp.where(keep, k, 0)
        if weights is None and label_smoothing is None and axis_name is None:
            path = _integer_path(fn, implementation, raw, axis, class_axis_name)
            if path == "cpu":
                # The C++ kernel writes the mean's gradient whole (each row times 1/count): under jax.grad no
                # further pass over the logits' size follows it (_kernels.ce_integer_mean).
                count = raw.size // raw.shape[axis] if keep is None else jnp.sum(keep, dtype=jnp.int32)
                count = jnp.maximum(jnp.asarray(count, jnp.float32), 1)
                scale = jnp.full(row_shape, 1, jnp.float32) if keep is None else keep.astype(jnp.float32)
                return _kernels.ce_integer_mean(raw, k, scale / count, path)
        rows = _integer_rows(fn, raw, k, axis, None, label_smoothing, class_axis_name, implementation)
    else:
        z, axis = _logits(fn, "logits", raw, axis)
        y = _distribution_labels(fn, ("logits", "labels"), z, labels)
        if keep is not None:
            y = jnp.where(jnp.expand_dims(keep, axis), y, 0)
        _checks.bound_axis_name(fn, "class_axis_name", class_axis_name, "the classes")
        rows = _mix(
            _smoothing(fn, label_smoothing, z.dtype),
            _cat.soft_ce(z, y, axis, class_axis_name),
            z,
            axis,
            class_axis_name,
        )
    if w is not None:
        w = w.astype(rows.dtype)
    _checks.bound_axis_name(fn, "axis_name", axis_name, "the rows")
    return reduce.ratio(*reduce.totals(rows, w, selected, axis_name, exact=True))
