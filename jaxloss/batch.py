"""Per-example losses and gradients: ``jax.vmap`` of the single-example functions over a leading example axis.

The leading axis of every array argument indexes examples. ``mse``, ``bce_with_logits``,
``ce_with_logits`` and ``mean`` return one loss per example, shape ``(B,)``; ``per_example`` does the same for
any single-example loss; ``grad`` and ``value_and_grad`` give per-example gradients of a
user loss ``fn(params, *examples)`` with ``params`` shared and the examples batched, e.g.
for per-example gradient clipping (DP-SGD), influence functions or data valuation.
Each result equals a Python loop over the examples of the single-example function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _api, _checks, categorical, classification, reduce, regression

__all__ = ["bce_with_logits", "ce_with_logits", "grad", "mean", "mse", "per_example", "value_and_grad"]


def _has_example_axis(fn: str, name: str, x: jax.Array) -> None:
    if x.ndim == 0:
        raise ValueError(
            f"jaxloss.batch.{fn}: {name} must have a leading example axis (shape [B, ...]); got a scalar. "
            f"Pass a batch, e.g. {name}[None] for a single example, or use jaxloss.{fn} for a scalar mean."
        )


def _per_example(single: Callable[..., jax.Array], **arguments: Any) -> jax.Array:
    """``jax.vmap`` of the public single-example function ``single`` over the leading (example) axis.

    The arrays are validated for the whole batch (errors name ``jaxloss.batch.<fn>``), brought to one ``[B, ...]``
    shape with the per-element options (weights, masks: the roles of ``single``'s declaration), and mapped
    together; the other options (``label_smoothing``) are shared by every example.
    """
    declaration = vars(single)["declaration"]
    qualified = f"batch.{declaration.name}"
    names = declaration.arrays
    if len(names) == 2:
        a, b = _checks.paired(qualified, names, arguments[names[0]], arguments[names[1]])
        dtype = a.dtype
        # name the argument that has the shape (a scalar may stand for the other)
        scalar_first = np.ndim(arguments[names[0]]) == 0 and np.ndim(arguments[names[1]]) > 0
        _has_example_axis(declaration.name, names[1] if scalar_first else names[0], a)
        mapped: dict[str, jax.Array] = {names[0]: a, names[1]: b}
    else:
        a = _checks.as_float_array(qualified, names[0], arguments[names[0]])
        _has_example_axis(declaration.name, names[0], a)
        weights = arguments.get("weights")
        dtype = _checks.compute_dtype(a, weights)
        mapped = {names[0]: a}
    shared = {}
    for name in declaration.options:
        value = arguments.get(name)
        kind = _api.ROLES[name].kind
        if value is None or kind == "option":
            shared[name] = value
        elif kind == "weights":
            mapped[name] = _checks.broadcast_option(qualified, name, value, a.shape, dtype)
        else:
            mask = _checks.broadcast_mask(qualified, value, a.shape)
            if mask is not None:
                mapped[name] = mask

    def one(m):
        options = {k: v for k, v in m.items() if k not in names}
        return single(*(m[n] for n in names), **options, **shared)  # arrays by position, as single declares them

    return jax.vmap(one)(mapped)


@_api.loss(returns="per_example")
def mean(
    values: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Per-example weighted mean: :func:`jaxloss.mean` of each example (row along axis 0).

    .. math::
        \bar\ell_b = \frac{\sum_i w_{bi}\,[\text{where}_{bi}]\,\ell_{bi}}{\sum_i w_{bi}\,[\text{where}_{bi}]}

    This is ``jax.vmap(jaxloss.mean)`` and equals a Python loop over examples. An example
    with nothing selected has mean 0 and gradient 0, as in :func:`jaxloss.mean`.

    Args:
      values: ``[B, ...]`` per-element losses, real floating dtype.
      weights: optional non-negative per-element weights broadcasting to ``values.shape``.
      where: optional boolean mask broadcasting to ``values.shape``.

    Returns:
      ``[B]`` means, float32 for 16-bit or float32 input (float64 for float64).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.batch.mean(jnp.array([[1.0, 3.0], [2.0, 9.0]]), where=jnp.array([[True, True], [True, False]]))
      Array([2., 2.], dtype=float32)
    """
    return _per_example(reduce.mean, values=values, weights=weights, where=where)


@_api.loss(returns="per_example")
def mse(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Per-example mean squared error: :func:`jaxloss.mse` of each example (row along axis 0).

    .. math::
        \ell_b = \frac{\sum_i w_{bi}\,(p_{bi} - t_{bi})^2}{\sum_i w_{bi}}

    over the elements ``where`` selects. This is ``jax.vmap(jaxloss.mse)`` and equals a
    Python loop over examples; ``jnp.mean`` of the result is ``jaxloss.mse`` of the whole
    batch when every example has the same (unmasked, unweighted) size. Gradients come back
    in the inputs' dtypes.

    Args:
      predictions: ``[B, ...]`` real floating array.
      targets: same shape as ``predictions`` (a scalar may stand for all); float, int or bool.
      weights: optional non-negative per-element weights broadcasting to the loss shape.
      where: optional boolean mask broadcasting to the loss shape.

    Returns:
      ``[B]`` losses, float32 for 16-bit or float32 input (float64 for float64).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.batch.mse(jnp.array([[1.0, 2.0], [0.0, 0.0]]), jnp.array([[1.0, 4.0], [3.0, 1.0]]))
      Array([2., 5.], dtype=float32)
    """
    return _per_example(regression.mse, predictions=predictions, targets=targets, weights=weights, where=where)


@_api.loss(returns="per_example")
def bce_with_logits(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    pos_weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Per-example mean binary cross-entropy from logits: :func:`jaxloss.bce_with_logits` of each example.

    .. math::
        \ell_b = \frac{\sum_i w_{bi}\,\mathrm{BCE}(z_{bi}, y_{bi})}{\sum_i w_{bi}}

    over the elements ``where`` selects, with BCE as in
    :func:`jaxloss.sigmoid_binary_cross_entropy` (same limits and closed-form
    derivatives). This is ``jax.vmap(jaxloss.bce_with_logits)`` and equals a Python loop
    over examples; ``pos_weight``, ``weights`` and ``where`` apply per element,
    ``label_smoothing`` to every example. Gradients come back in the inputs' dtypes.

    Args:
      logits: ``[B, ...]`` real floating array.
      labels: same shape as ``logits`` (a scalar may stand for all); soft labels allowed.
      pos_weight: optional non-negative per-element weight of the positive term (PyTorch semantics).
      label_smoothing: :math:`\alpha \in [0, 1]` (Keras semantics), shared by all examples.
      weights: optional non-negative per-element weights broadcasting to the loss shape.
      where: optional boolean mask broadcasting to the loss shape.

    Returns:
      ``[B]`` losses, float32 for 16-bit or float32 input (float64 for float64).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.batch.bce_with_logits(jnp.array([[0.0, 0.0], [100.0, -100.0]]), jnp.array([[0, 1], [1, 0]]))
      Array([0.6931472, 0.       ], dtype=float32)
    """
    return _per_example(
        classification.bce_with_logits,
        logits=logits,
        labels=labels,
        pos_weight=pos_weight,
        label_smoothing=label_smoothing,
        weights=weights,
        where=where,
    )


@_api.loss(returns="per_example", class_indices="labels")
def ce_with_logits(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    label_smoothing: ArrayLike = 0.0,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    implementation: str | None = None,
) -> jax.Array:
    r"""Per-example mean categorical cross-entropy from logits: :func:`jaxloss.ce_with_logits` of each example.

    .. math::
        \ell_b = \frac{\sum_r w_{br}\,L(z_{br}, y_{br})}{\sum_r w_{br}}

    over the rows ``where`` selects (a sequence's tokens, say), with :math:`L` the softmax cross-entropy of
    one row (:func:`jaxloss.softmax_cross_entropy_with_integer_labels` for integer ``labels``,
    :func:`jaxloss.softmax_cross_entropy` for a distribution per row: the same exact formulation, limits and
    derivatives). This is ``jax.vmap(jaxloss.ce_with_logits)`` and equals a Python loop over examples; an
    example with nothing selected has loss 0 and gradient 0. Gradients come back in the logits' dtype.

    Args:
      logits: ``[B, ..., C, ...]`` real floating array: examples along axis 0, classes along ``axis``.
      labels: integer class indices (``logits.shape`` without ``axis``) or float distributions
        (``logits.shape``).
      axis: the class axis of ``logits`` as passed here (not 0, the example axis); default the last.
      label_smoothing: :math:`\alpha \in [0, 1]`, shared by every example.
      weights: optional non-negative per-row weights broadcasting to ``logits.shape`` without ``axis``.
      where: optional boolean row selection broadcasting to that shape (padding: ``where=labels != pad_id``).
      implementation: ``None`` (the best available), ``"xla"`` or ``"cpu"`` for integer labels.

    Returns:
      ``[B]`` losses, float32 for 16-bit or float32 logits (float64 for float64).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> logits = jnp.array([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], [[0.0, 5.0, 0.0], [1.0, 1.0, 1.0]]])
      >>> labels = jnp.array([[0, 2], [1, -100]])  # -100: padding
      >>> jaxloss.batch.ce_with_logits(logits, labels, where=labels != -100)
      Array([0.6342292, 0.0133859], dtype=float32)
    """
    fn = "batch.ce_with_logits"
    z = _checks.as_float_array(fn, "logits", logits)
    _has_example_axis("ce_with_logits", "logits", z)
    if z.ndim < 2:
        raise ValueError(
            f"jaxloss.{fn}: logits must have an example axis and a class axis (shape [B, ..., C]); got shape "
            f"{z.shape}. Pass logits[:, None] for examples of one row, or use jaxloss.ce_with_logits for one example."
        )
    axis = _checks.normalize_axis(fn, axis, z.ndim)
    if axis == 0:
        raise ValueError(
            f"jaxloss.{fn}: axis 0 is the example axis, not a class axis; got axis=0 for logits of shape {z.shape}. "
            f"Pass the class axis, e.g. axis=-1."
        )
    rows = z.shape[:axis] + z.shape[axis + 1 :]
    kind = getattr(labels, "dtype", None)
    if kind is None and not isinstance(labels, (str, bytes)):
        kind = np.asarray(labels).dtype
    if kind is not None and jnp.issubdtype(kind, jnp.bool_):
        raise TypeError(
            f"jaxloss.{fn}: labels of dtype bool are ambiguous (class indices or a distribution?); got bool. "
            f"Pass integer class indices (labels.astype(jnp.int32)) or a float distribution per row."
        )
    if kind is not None and jnp.issubdtype(kind, jnp.integer):
        y = jnp.asarray(_checks.native_byte_order(labels))
        expected, what = rows, "class indices: logits.shape without the class axis"
    else:
        y = _checks.as_label_array(fn, "labels", labels, _checks.compute_dtype(z))
        expected, what = z.shape, "one distribution per row: logits.shape"
    if y.shape != expected:
        raise ValueError(
            f"jaxloss.{fn}: labels must have shape {expected} ({what}); got {y.shape}. Give every example the same "
            f"rows, one label per row (or one distribution per row, as floats of logits' shape)."
        )
    mapped: dict[str, jax.Array] = {"logits": z, "labels": y}
    if weights is not None:
        mapped["weights"] = _checks.broadcast_option(fn, "weights", weights, rows, _checks.compute_dtype(z))
    mask = _checks.broadcast_mask(fn, where, rows)
    if mask is not None:
        mapped["where"] = mask

    def one(m):
        options = {k: v for k, v in m.items() if k not in ("logits", "labels")}
        return categorical.ce_with_logits(
            m["logits"],
            m["labels"],
            axis=axis - 1,
            label_smoothing=label_smoothing,
            implementation=implementation,
            **options,
        )

    return jax.vmap(one)(mapped)


def per_example(fn: Callable[..., Any], /, *, in_axes: int | Sequence[Any] | None = 0) -> Callable[..., Any]:
    r"""The per-example version of a single-example loss: ``jax.vmap(fn, in_axes=in_axes)``.

    .. math::
        \text{per\_example}(f)(x)_b = f(x_b)

    Positional arguments are mapped as ``in_axes`` says (default: every positional
    argument batched along axis 0); keyword arguments are passed unchanged to every call
    (options such as ``axis=`` or ``base=``, and shared arrays). ``fn`` sees one example,
    with the leading axis removed, so a negative ``axis`` is the safe way to name an axis.
    The result can be jitted and differentiated; it equals a Python loop over examples.

    Args:
      fn: a function of one example.
      in_axes: as for ``jax.vmap``: an int, None (shared) or a tuple with one entry per
        positional argument.

    Returns:
      ``batched(*args, **options)``, stacking ``fn``'s outputs along a new leading axis.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> loss = lambda p, t: jnp.sum(jaxloss.squared_error(p, t))
      >>> jaxloss.batch.per_example(loss)(jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.zeros((2, 2)))
      Array([ 5., 25.], dtype=float32)
    """
    if not callable(fn):
        raise TypeError(f"jaxloss.batch.per_example: fn must be callable; got {type(fn).__name__}. Pass a function.")

    @functools.wraps(fn)
    def batched(*args, **options):
        return jax.vmap(functools.partial(fn, **options) if options else fn, in_axes=in_axes)(*args)

    return batched


def _check_examples(name: str, examples: tuple) -> None:
    if not examples:
        raise ValueError(
            f"jaxloss.batch.{name}: expected fn(params, *examples) with at least one example array batched along "
            f"axis 0; got params only. Pass the examples after params, e.g. f(params, x, y)."
        )
    sizes = set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(examples):
        shape = jnp.shape(leaf)
        if not shape:
            where = f"examples{jax.tree_util.keystr(path)}"
            raise ValueError(
                f"jaxloss.batch.{name}: every example array must have a leading example axis; got a scalar at "
                f"{where}. Pass it inside params (shared) or give it shape [B, ...]."
            )
        sizes.add(shape[0])
    if len(sizes) > 1:
        raise ValueError(
            f"jaxloss.batch.{name}: every example array must have the same leading (example) size; got sizes "
            f"{sorted(sizes)}. Batch all example arrays along axis 0 with the same B."
        )


def _mapped(single: Callable[..., Any]) -> Callable[..., Any]:
    """jit(vmap(single)) with the params shared and every leaf of the example tuple batched along axis 0."""
    return jax.jit(jax.vmap(lambda params, examples: single(params, *examples), in_axes=(None, 0)))


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _is_inexact_array(x) -> bool:
    return _is_array(x) and jnp.issubdtype(x.dtype, jnp.inexact)


class _Filtered:
    """``transform(fn, argnums)`` for params whose pytree holds non-array leaves (an equinox module's activation
    functions, Python numbers, ...), as ``equinox.filter_grad`` treats them: array leaves are traced, other leaves
    are static (closed over, one compilation per distinct set of them), and of the params only the floating
    arrays are differentiated; the params' gradient has None at every other leaf."""

    def __init__(self, transform, fn: Callable[..., Any], argnums):
        self.transform, self.fn = transform, fn
        self.argnums = argnums
        self.compiled: dict[Any, Callable[..., Any]] = {}

    def __call__(self, params, examples):
        leaves, treedef = jax.tree_util.tree_flatten(params)
        diff = [i for i, leaf in enumerate(leaves) if _is_inexact_array(leaf)]
        fixed = [i for i, leaf in enumerate(leaves) if _is_array(leaf) and i not in diff]
        static = tuple((i, leaf) for i, leaf in enumerate(leaves) if not _is_array(leaf))
        key = (treedef, tuple(diff), tuple(fixed), static)
        try:
            run = self.compiled.get(key)
        except TypeError:  # an unhashable static leaf: compile for this call only
            key, run = None, None
        if run is None:
            run = self._compile(treedef, len(leaves), diff, fixed, static)
            if key is not None:
                self.compiled[key] = run
        out = run([leaves[i] for i in diff], [leaves[i] for i in fixed], examples)
        return self._params_gradient(out, treedef, len(leaves), diff)

    def _compile(self, treedef, n, diff, fixed, static):
        def rebuild(diff_leaves, fixed_leaves):
            leaves = [None] * n
            for i, leaf in zip(diff, diff_leaves, strict=True):
                leaves[i] = leaf
            for i, leaf in zip(fixed, fixed_leaves, strict=True):
                leaves[i] = leaf
            for i, leaf in static:
                leaves[i] = leaf
            return jax.tree_util.tree_unflatten(treedef, leaves)

        def single(diff_leaves, fixed_leaves, *examples):
            return self.fn(rebuild(diff_leaves, fixed_leaves), *examples)

        # fn's argument k is single's argument k + 1 for the examples (fixed_leaves sits in between).
        numbers = (self.argnums,) if isinstance(self.argnums, int) else tuple(self.argnums)
        shifted = tuple(0 if k == 0 else k + 1 for k in numbers)
        transformed = self.transform(single, argnums=shifted[0] if isinstance(self.argnums, int) else shifted)
        mapped = jax.vmap(lambda d, f, examples: transformed(d, f, *examples), in_axes=(None, None, 0))
        return jax.jit(mapped)

    def _params_gradient(self, out, treedef, n, diff):
        """Put the gradient of the differentiated leaves back into the shape of params (None elsewhere)."""
        numbers = (self.argnums,) if isinstance(self.argnums, int) else tuple(self.argnums)
        if 0 not in numbers:
            return out
        value, grads = out if self.transform is jax.value_and_grad else (None, out)

        def params_shaped(g):
            leaves: list[Any] = [None] * n
            for i, leaf in zip(diff, g, strict=True):
                leaves[i] = leaf
            return jax.tree_util.tree_unflatten(treedef, leaves)

        if isinstance(self.argnums, int):
            grads = params_shaped(grads)
        else:
            grads = tuple(params_shaped(g) if k == 0 else g for k, g in zip(numbers, grads, strict=True))
        return grads if value is None else (value, grads)


def _per_example_transform(name: str, transform, fn: Callable[..., Any], argnums) -> Callable[..., Any]:
    """jit(vmap(transform(fn, argnums))) with params shared, examples checked and batched along axis 0; params with
    non-array leaves (equinox modules) take the filtered path (:class:`_Filtered`)."""
    if not callable(fn):
        raise TypeError(f"jaxloss.batch.{name}: fn must be callable; got {type(fn).__name__}. Pass a function.")
    mapped = _mapped(transform(fn, argnums=argnums))
    filtered = _Filtered(transform, fn, argnums)

    @functools.wraps(fn)
    def per_example(params, /, *examples):
        _check_examples(name, examples)
        leaves = jax.tree_util.tree_leaves(params)
        if all(_is_array(leaf) for leaf in leaves) and all(_is_inexact_array(leaf) for leaf in leaves):
            return mapped(params, examples)
        return filtered(params, examples)

    return per_example


def grad(fn: Callable[..., Any], /, *, argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    r"""Per-example gradients of a loss ``fn(params, *examples)``: ``jax.vmap(jax.grad(fn, argnums))``.

    .. math::
        g_b = \nabla_{\theta}\, f(\theta, x_b, y_b, \dots)

    ``params`` (any pytree: a dict of arrays, an equinox module, a flax ``nnx`` module) is shared by every
    example. Leaves that are not arrays (an equinox module's activation functions, Python numbers) are held static,
    and of the params only floating-point arrays are differentiated, as ``equinox.filter_grad`` does: the params'
    gradient has the params' structure with None at every other leaf. Every other positional argument
    (arrays or pytrees of arrays) is batched along axis 0 with the same size ``B``.
    ``argnums`` picks what to differentiate, as in ``jax.grad`` (0: the params; 1: the
    first example array, e.g. input saliency). The result equals a Python loop of
    ``jax.grad`` over examples and the Jacobian (``jax.jacrev``) of the per-example loss
    vector; gradients keep the dtype of what is differentiated. The returned function is
    jitted (``fn`` is traced once per input shape) and can be called inside ``jax.jit``.

    Args:
      fn: a scalar loss of one example, ``fn(params, *example_arrays)``.
      argnums: int or tuple of ints, as for ``jax.grad``.

    Returns:
      ``per_example_grad(params, *examples)``: the gradient pytree with a leading axis of size ``B`` on every leaf.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> loss = lambda w, x, y: jaxloss.mse(x @ w, y)
      >>> x, y = jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([1.0, 0.0])
      >>> jaxloss.batch.grad(loss)(jnp.ones(2), x, y)  # one row per example
      Array([[0., 0.],
             [0., 8.]], dtype=float32)
    """
    return _per_example_transform("grad", jax.grad, fn, argnums)


def value_and_grad(fn: Callable[..., Any], /, *, argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    r"""Per-example losses and gradients of ``fn(params, *examples)``: ``jax.vmap(jax.value_and_grad(fn, argnums))``.

    .. math::
        (\ell_b, g_b) = \bigl(f(\theta, x_b, \dots),\ \nabla_{\theta} f(\theta, x_b, \dots)\bigr)

    Same conventions as :func:`jaxloss.batch.grad`: ``params`` shared, examples batched
    along axis 0, the returned function jitted. The values equal
    ``jaxloss.batch.per_example(fn, in_axes=(None, 0, ...))``.

    Args:
      fn: a scalar loss of one example, ``fn(params, *example_arrays)``.
      argnums: int or tuple of ints, as for ``jax.grad``.

    Returns:
      ``f(params, *examples) -> (losses [B], grads)``, each gradient leaf with a leading axis of size ``B``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> loss = lambda w, x, y: jaxloss.bce_with_logits(x @ w, y)
      >>> x, y = jnp.array([[0.5, 1.0], [1.0, 0.5]]), jnp.array([1.0, 0.0])
      >>> losses, grads = jaxloss.batch.value_and_grad(loss)(jnp.zeros(2), x, y)
      >>> losses
      Array([0.6931472, 0.6931472], dtype=float32)
      >>> grads
      Array([[-0.25, -0.5 ],
             [ 0.5 ,  0.25]], dtype=float32)
    """
    return _per_example_transform("value_and_grad", jax.value_and_grad, fn, argnums)
