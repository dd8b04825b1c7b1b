"""Value checks that work under jit: :func:`jaxloss.checked`.

The public functions check shapes and dtypes at trace time (plain Python, see
:mod:`jaxloss._checks`) but never look at values: a label of 1.5 or a NaN logit
flows through like any other number. ``jaxloss.checked(fn)`` adds the value
checks, through :mod:`jax.experimental.checkify`, so they run inside compiled
code. The unwrapped functions are untouched and pay nothing.

The checks are chosen by argument *name*, so they apply to every function that
uses the names below (the core functions, :mod:`jaxloss.batch`, or your own):

=================== ==================================================
argument            allowed values
=================== ==================================================
``labels``          in [0, 1] (so never NaN); integer class indices
                    (``softmax_cross_entropy_with_integer_labels``,
                    ``ce_with_logits``): in [0, C), C the number of
                    classes of ``logits`` along ``axis``
``probabilities``   in [0, 1]; in a row loss (``entropy``,
                    ``cross_entropy``, ``relative_entropy``) each row
                    also sums to 1 (within 4 ulp per class)
``reference``       in [0, 1], each row summing to 1
``logits``          not NaN; ``-inf`` and ``+inf`` are allowed (limits)
``target_logits``   likewise
``predictions``     finite
``targets``         finite; in [0, 1] for ``cross_entropy``
``values``          not NaN (an infinite loss is a value; NaN is not)
``weights``         finite and >= 0
``pos_weight``      finite and >= 0
``label_smoothing`` in [0, 1]
=================== ==================================================

A public loss may give an argument its own rule (its declaration's ``rules``,
:mod:`jaxloss._api`): ``targets`` means a distribution in ``cross_entropy``.

Entries that a function never reads are not checked: those where ``where`` is
False, and, in the means, those whose weight is 0 (the documented contract of
:func:`jaxloss.mean`). ``weights`` themselves are checked where ``where`` is True.
In ``ce_with_logits``, ``where`` and ``weights`` select rows: a row left out is not
checked in any class (a padding label such as -100 there is never reported). In the
per-row functions, ``where`` leaves classes out; class indices are always checked.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from . import _api

__all__ = ["checked"]


# The value rule of each argument name: the roles table every public loss is declared with (jaxloss._api).
_RULES: dict[str, _api.Rule] = {name: role.rule for name, role in _api.ROLES.items() if role.rule is not None}


def _public_name(fn) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    module = getattr(fn, "__module__", None) or ""
    if module == "jaxloss.batch":
        return f"jaxloss.batch.{name}"
    if module == "jaxloss" or module.startswith("jaxloss."):
        return f"jaxloss.{name}"
    qualname = getattr(fn, "__qualname__", name)
    return f"{module}.{qualname}" if module else qualname


def _is_real(dtype) -> bool:
    """Float (bfloat16 included: its NumPy kind is 'V'), integer or bool."""
    return any(jnp.issubdtype(dtype, kind) for kind in (jnp.floating, jnp.integer, jnp.bool_))


def _is_dynamic(x) -> bool:
    """Arrays are traced (so one compilation serves every value); everything else is passed to ``fn`` as given."""
    return isinstance(x, jax.Array) or (isinstance(x, np.ndarray) and _is_real(x.dtype))


def _fit(mask: jax.Array | None, shape: tuple[int, ...]) -> jax.Array | None:
    """``mask`` as a selection over an argument of ``shape``; a scalar argument is read if anything is selected."""
    if mask is None:
        return None
    try:
        fits = jnp.broadcast_shapes(mask.shape, shape) == tuple(shape)
    except ValueError:
        fits = False
    if fits:
        return jnp.broadcast_to(mask, shape)
    return jnp.any(mask) if len(shape) == 0 else None


def _unravel(flat: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, ...]:
    """The row-major index of a non-negative flat index, with plain integer ops (no sign handling to compile)."""
    index, stride = [], 1
    for size in reversed(shape):
        index.append(jax.lax.rem(jax.lax.div(flat, np.array(stride, flat.dtype)), np.array(size, flat.dtype)))
        stride *= size
    return tuple(reversed(index))


def _report(fn_name: str, arg: str, rule: _api.Rule, x: jax.Array, bad: jax.Array) -> None:
    if x.size == 0:
        return
    flat = bad.ravel()
    positions = jax.lax.iota(jnp.int32, x.size)
    first = jnp.min(jnp.where(flat, positions, x.size - 1))  # the first offending entry in row-major order
    count = jnp.sum(flat, dtype=jnp.int32)
    index: tuple[jax.Array, ...] = ()
    if x.ndim == 0:
        where = arg
    else:
        where = arg + "[" + ", ".join(["{}"] * x.ndim) + "]"
        index = _unravel(first, x.shape)
    # {!s}: the value as its own dtype prints it (1.2 for a float32 1.2, not float()'s 1.2000000476837158), in
    # every path that formats the message: ours (_throw), JAX's under vmap, and Error.get() after checkify.
    message = f"{fn_name}: {arg} {rule.expected}; got {where} = {{!s}} ({{}} of {x.size} entries offending). {rule.fix}"
    # A masked sum, not an index: indexing a sharded array (an Explicit mesh) is a sharding error.
    value = jax.lax.stop_gradient(jnp.sum(jnp.where(positions == first, x.ravel(), 0)))
    checkify.check(count == 0, message, *index, value, count)


def _mask(value, select) -> jax.Array | None:
    """``select(value)`` for a real array, None otherwise (a bad ``where`` or ``weights`` makes fn raise anyway)."""
    if value is None:
        return None
    try:
        x = jnp.asarray(value)
    except (TypeError, ValueError):
        return None
    if not _is_real(x.dtype):
        return None
    return select(x)


def _class_index_rule(declaration: _api.Declaration, arguments: dict[str, Any], x: jax.Array) -> _api.Rule | None:
    """The rule of integer class indices ``x`` (declaration.class_indices): in [0, C), C the size of the class
    axis of the first array; None when the shapes do not fit (the function raises its own error when traced)."""
    try:
        shape = jnp.shape(arguments[declaration.arrays[0]])
        axis = arguments.get("axis", -1)
        if isinstance(axis, bool) or not -len(shape) <= int(axis) < len(shape):
            return None
    except (TypeError, ValueError, KeyError):
        return None
    k = int(axis) % len(shape)
    if tuple(x.shape) != tuple(shape[:k] + shape[k + 1 :]):
        return None
    return _api.class_index_rule(int(shape[k]), int(axis), declaration.arrays[0])


def _row_shape(declaration: _api.Declaration | None, arguments: dict[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """For a mean over rows (a class axis reduced first: ce_with_logits, batch.ce_with_logits), the rows' shape
    and the class axis: ``where`` and ``weights`` select rows there, and reach every class of a selected row. None
    otherwise."""
    if declaration is None or declaration.returns not in ("mean", "per_example") or "axis" not in declaration.static:
        return None
    try:
        shape = jnp.shape(arguments[declaration.arrays[0]])
        axis = int(arguments.get("axis", -1))
    except (TypeError, ValueError, KeyError):
        return None
    if not -len(shape) <= axis < len(shape):
        return None
    axis %= len(shape)
    return tuple(shape[:axis] + shape[axis + 1 :]), axis


def _fit_rows(mask: jax.Array | None, shape: tuple[int, ...], rows: tuple[tuple[int, ...], int]):
    """A row selection as a selection over an argument of ``shape``: the row shape itself, or the rows with their
    class axis (every class of a selected row)."""
    if mask is None:
        return None
    row_shape, axis = rows
    selected = _fit(mask, row_shape)
    if selected is None or tuple(shape) == row_shape:
        return selected
    if len(shape) == len(row_shape) + 1:
        return jnp.broadcast_to(jnp.expand_dims(selected, axis), shape)
    return None


def _check_values(
    fn_name: str, names: list[str], arguments: dict[str, Any], declaration: _api.Declaration | None = None
) -> None:
    where = _mask(arguments.get("where"), lambda m: m if m.dtype == bool else None)
    nonzero = _mask(arguments.get("weights"), lambda w: w != 0)
    rows = _row_shape(declaration, arguments)
    for arg in names:
        value = arguments.get(arg)
        if value is None:
            continue
        rule = _RULES[arg] if declaration is None else declaration.rule(arg)
        if rule is None:
            continue
        try:
            x = jnp.asarray(value)
        except (TypeError, ValueError):
            continue  # not an array: fn raises its own TypeError when traced
        if not _is_real(x.dtype):
            continue  # complex, ...: likewise
        indices = (
            declaration is not None
            and arg == declaration.class_indices
            and jnp.issubdtype(x.dtype, jnp.integer)
            and not jnp.issubdtype(x.dtype, jnp.bool_)
        )
        if indices:
            assert declaration is not None
            rule = _class_index_rule(declaration, arguments, x)
            if rule is None:
                continue
        bad = ~rule.ok(x)
        masks = [where, nonzero] if rule.data else ([where] if arg == "weights" else [])
        if indices and rows is None:
            masks = []  # a per-row function's `where` leaves classes out, not rows: every label is read
        for mask in masks:
            selected = _fit(mask, x.shape) if rows is None else _fit_rows(mask, x.shape, rows)
            if selected is not None:
                bad = bad & selected
        _report(fn_name, arg, rule, x, bad)


def _call(fn: Callable, static: tuple, dynamic: dict[str, Any]):
    """``fn`` with its value checks staged first; runs inside ``checkify.checkify``."""
    signature = inspect.signature(fn)
    arguments = {name: value for name, _, value in static}
    arguments.update(dynamic)
    bound = inspect.BoundArguments(signature, {p: arguments[p] for p in signature.parameters if p in arguments})
    # The checks are staged before fn: checkify's cost per check grows with the size of the trace so far.
    # They only record; fn's own trace-time errors (shapes, dtypes) still raise when fn is traced below.
    declaration = vars(fn).get("declaration")
    names = [p for p in signature.parameters if p in _RULES]
    _check_values(_public_name(fn), names, arguments, declaration)
    if declaration is not None and declaration.returns == "rows":
        for arg in _ROW_SUMS:
            if arg in declaration.arrays:
                _check_row_sums(_public_name(fn), arguments, arg)
    return fn(*bound.args, **bound.kwargs)


ROW_SUM_ULPS = 4  # per class: a row of n probabilities may sum to 1 within 4 n ulp (each rounded, then added)

# The arguments of a row loss that hold one distribution per row, and so must sum to 1 over the class axis.
_ROW_SUMS = ("probabilities", "reference")

# What to pass instead of unnormalised rows, by the function they went to.
_FROM_LOGITS = {
    "entropy": "jaxloss.entropy_from_logits",
    "cross_entropy": "jaxloss.softmax_cross_entropy",
    "relative_entropy": "jaxloss.kl_divergence_from_logits",
}


def _check_row_sums(fn_name: str, arguments: dict[str, Any], arg: str = "probabilities") -> None:
    """Rows of probabilities (over ``axis``, the entries ``where`` selects) must sum to 1 within ROW_SUM_ULPS ulp
    per class: entropy does not renormalise (SciPy's does), so counts or unnormalised scores give a wrong number."""
    try:
        p = jnp.asarray(arguments.get(arg))
        axis = int(arguments.get("axis", -1))
    except (TypeError, ValueError):
        return  # fn raises its own error when traced
    if not _is_real(p.dtype) or p.ndim == 0 or p.size == 0 or not -p.ndim <= axis < p.ndim:
        return
    dtype = jnp.promote_types(p.dtype, jnp.float32)  # 16-bit rows summed in float32, as entropy computes them
    where = _mask(arguments.get("where"), lambda m: m if m.dtype == bool else None)
    x = p.astype(dtype)
    if where is not None:
        try:
            x = jnp.where(where, x, 0)
        except (TypeError, ValueError):
            return
    n = p.shape[axis]
    tolerance = ROW_SUM_ULPS * n * float(jnp.finfo(dtype).eps)
    sums = jax.lax.stop_gradient(jnp.sum(jnp.moveaxis(x, axis, -1), axis=-1))
    bad = ~(jnp.abs(sums - 1) <= tolerance)  # NaN rows are bad too
    rows = sums.size
    flat = bad.ravel()
    positions = jax.lax.iota(jnp.int32, rows)
    first = jnp.min(jnp.where(flat, positions, rows - 1))
    count = jnp.sum(flat, dtype=jnp.int32)
    index = _unravel(first, sums.shape) if sums.ndim else ()
    row = "row [" + ", ".join(["{}"] * sums.ndim) + "]" if sums.ndim else "the row"
    short = fn_name.rpartition(".")[2]
    letter = "q" if arg == "reference" else "p"
    instead = f", or pass logits to {_FROM_LOGITS[short]}" if short in _FROM_LOGITS else ""
    message = (
        f"{fn_name}: {arg} must sum to 1 along axis {axis} (within {ROW_SUM_ULPS} ulp per class, "
        f"{tolerance:.3g} for {n} classes); got {row} summing to {{!s}} ({{}} of {rows} rows off). {short} does not "
        f"renormalise: divide by the sum first ({letter} / {letter}.sum(axis={axis}, keepdims=True)){instead}."
    )
    value = jnp.sum(jnp.where(positions == first, sums.ravel(), 0))
    checkify.check(count == 0, message, *index, value, count)


def _build(fn: Callable, static: tuple):
    return jax.jit(checkify.checkify(functools.partial(_call, fn, static), errors=checkify.user_checks))


# One compiled function per (fn, non-array arguments), shared by every checked(fn): writing
# jaxloss.checked(jaxloss.mse)(p, t) inside a loop compiles once per shape and dtype.
_cached_build = functools.lru_cache(maxsize=256)(_build)


_MAPPED = (
    " (Under jax.vmap: the index, the value and the count are those of the first mapped slice that fails, "
    "indexed within that slice; the mapped axis is not part of the index.)"
)


def _throw(err) -> None:
    """Raise the first failed check, printing each value in its own dtype (1.2, not 1.2000000476837158)."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(err)):
        # Staged (under an outer checkify or jit): JAX functionalizes the check. Mapped (under an eager vmap):
        # JAX raises here, for the first failing slice, with the index within that slice: say so.
        try:
            err.throw()
        except checkify.JaxRuntimeError as exc:
            message = str(exc).removesuffix(" (`check` failed)")
            raise checkify.JaxRuntimeError(message + _MAPPED) from None
        return
    failure = err.get_exception()
    if failure is None:
        return
    fmt = getattr(failure, "fmt_string", None)
    if fmt is None:
        err.throw()
        return
    values = [np.asarray(a)[()] for a in failure.args]
    kwargs = {k: np.asarray(v)[()] for k, v in failure.kwargs.items()}
    raise checkify.JaxRuntimeError(fmt.format(*values, **kwargs))


def checked(fn: Callable) -> Callable:
    r"""``fn`` with value checks that raise, eagerly and under ``jax.jit``, instead of returning a wrong number.

    The wrapper has ``fn``'s signature; ``fn``'s own trace-time errors (shapes,
    dtypes, Python-number options) come first, unchanged. It then checks the
    values of the arguments it knows by name (see :mod:`jaxloss.validate`: ``labels`` and
    ``probabilities`` in [0, 1], no NaN in ``logits`` (±inf allowed), finite
    ``predictions`` and ``targets``, non-negative finite ``weights`` and
    ``pos_weight``, ``label_smoothing`` in [0, 1]; integer class indices in [0, C);
    rows of probabilities summing to 1). The first failure raises
    :class:`jax.experimental.checkify.JaxRuntimeError` (a ``ValueError``) naming
    the function, the argument, the first offending index and its value, and the
    number of offending entries. Entries left out by ``where`` (or with weight 0
    in a mean) are not checked, since the function never reads them.

    The checks run in compiled code (``jax.jit`` of ``checkify.checkify(fn)``,
    cached per shape, dtype and non-array options), so calling the checked
    function raises directly, with or without jit inside. A Python error cannot
    leave compiled code, so inside *your own* ``jax.jit`` (a training step),
    functionalize the step with checkify and throw outside it::

        step = jax.jit(checkify.checkify(train_step))  # train_step calls checked(jaxloss.bce_with_logits)
        err, out = step(params, batch)
        err.throw()

    (``jax.jit(checked(fn))`` without checkify fails to compile with JAX's
    "check which was not functionalized" error.) ``jax.grad`` and ``jax.vmap`` of a
    checked function work as for ``fn``. Under ``jax.vmap`` the report is that of the
    first mapped slice that fails, and its index is within that slice (the mapped axis
    is not part of it); eagerly, the message says so. Values print in their own dtype
    (``1.2``, not ``1.2000000476837158``). The unwrapped functions contain no check.

    Args:
      fn: a public jaxloss function (``jaxloss.bce_with_logits``,
        ``jaxloss.batch.mse``, ...) or any function whose arguments use the names
        above.

    Returns:
      A function with ``fn``'s signature and results.

    Raises:
      TypeError: at wrapping time, when ``fn`` has no argument with a known name.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> safe_bce = jaxloss.checked(jaxloss.bce_with_logits)
      >>> safe_bce(jnp.array([0.0, 0.0]), jnp.array([0.0, 1.0]))
      Array(0.6931472, dtype=float32)
      >>> try:
      ...     safe_bce(jnp.array([0.0, 0.0, 0.0]), jnp.array([0.0, 1.0, 2.0]))
      ... except ValueError as err:
      ...     print(str(err).split(". ")[0])
      jaxloss.bce_with_logits: labels must be in [0, 1]; got labels[2] = 2.0 (1 of 3 entries offending)
    """
    if getattr(fn, "_jaxloss_checked", False):
        return fn
    if not callable(fn):
        raise TypeError(f"jaxloss.checked: fn must be a function; got {type(fn).__name__}. Pass e.g. jaxloss.mse.")
    fn_name = _public_name(fn)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        raise TypeError(
            f"jaxloss.checked: cannot read the signature of {fn_name}; the checks are chosen by argument name. "
            f"Wrap a function with named arguments."
        ) from None
    names = [name for name in signature.parameters if name in _RULES]
    if not names:
        raise TypeError(
            f"jaxloss.checked: {fn_name} has no argument it knows how to check; expected one of "
            f"{', '.join(_RULES)}, got ({', '.join(signature.parameters)}). Wrap a jaxloss function."
        )

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{fn_name}: {err}") from None
        dynamic = {k: v for k, v in bound.arguments.items() if _is_dynamic(v)}
        # The type is part of the key: 1, 1.0 and True are equal but not interchangeable.
        static = tuple((k, type(v), v) for k, v in bound.arguments.items() if k not in dynamic)
        try:
            run = _cached_build(fn, static)
        except TypeError:  # an unhashable option (a list, ...): trace afresh
            run = _build(fn, static)
        error, out = run(dynamic)
        _throw(error)
        return out

    wrapper._jaxloss_checked = True  # type: ignore[attr-defined]
    return wrapper
