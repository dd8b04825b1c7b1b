"""How a public loss is defined: one decorator, and one declaration of its arguments' roles.

A loss is a function whose parameters are named from :data:`ROLES`, the one table of argument names (``logits``,
``labels``, ``weights``, ``axis`` ...) with, for each, its role and valid values. :func:`loss` turns such a function
into a public one:

* jit-compiled, with every parameter whose role is ``static`` a static argument;
* screened first in plain Python (a few microseconds): text where an array belongs and arrays where a compile-time
  option belongs raise jaxloss's ``TypeError`` instead of JAX's; an option given as a Python number outside its
  range raises ``ValueError``; an option at its neutral value (``label_smoothing=0``) is passed as None, so that
  the result is bit-identical to not asking for it; ``implementation=None`` becomes the preference in force
  (:mod:`jaxloss._kernels`), a static argument;
* recorded as a :class:`Declaration` in :data:`DECLARED` (and on the function, ``fn.declaration``).

Everything that needs to know a loss's arguments reads this: :func:`jaxloss.checked` (each role's value rule, or
the function's own where a name means more there: ``rules``; integer class indices in [0, C): ``class_indices``),
the per-example twins in :mod:`jaxloss.batch`, the command line's loss table (``jaxloss eval --loss``), and the
tests that must cover every loss. Adding a loss is its public module (a decorated function), its tests and its
README line; a new argument name is one new row of :data:`ROLES`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks, _kernels

__all__: list[str] = []

P = ParamSpec("P")
R = TypeVar("R")

Kind = Literal["float", "labels", "weights", "mask", "option", "static"]
Returns = Literal["elementwise", "rows", "mean", "per_example"]


# --------------------------------------------------------------------------- value rules (jaxloss.checked)


def _is_float(x) -> bool:
    return jnp.issubdtype(x.dtype, jnp.floating)


def _not_nan(x):
    return ~jnp.isnan(x) if _is_float(x) else jnp.ones(x.shape, bool)


def _finite(x):
    return jnp.isfinite(x) if _is_float(x) else jnp.ones(x.shape, bool)


def _unit(x):
    return (x >= 0) & (x <= 1)  # False for NaN


def _nonnegative_finite(x):
    return _finite(x) & (x >= 0)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A value precondition, checked on request under jit (:func:`jaxloss.checked`)."""

    expected: str  # completes "<arg> ..."
    fix: str
    ok: Callable[[jax.Array], jax.Array]
    data: bool  # an element-wise data argument: unchecked where `where` is False or the weight is 0


_NAN_FIX = "Find where it came from (e.g. jax.config.update('jax_debug_nans', True)) before the loss."
_UNIT = "must be in [0, 1]"


@dataclasses.dataclass(frozen=True)
class Role:
    """What an argument of this name is, wherever it appears.

    kind: ``float`` (a real floating array), ``labels`` (a float, int or bool array promoted to the compute dtype),
    ``weights`` (a non-negative array that broadcasts to the loss shape), ``mask`` (a boolean array that
    broadcasts to it), ``option`` (a number or 0-d array shared by every element), ``static`` (a Python value
    fixed at trace time).
    """

    kind: Kind
    rule: Rule | None = None
    bounds: tuple[float, float | None] | None = None  # [lo, hi] for an option given as a Python number
    neutral: float | None = None  # an option equal to this (as a Python number) is passed as None


ROLES: dict[str, Role] = {
    "predictions": Role("float", Rule("must be finite", _NAN_FIX, _finite, True)),
    "logits": Role("float", Rule("must not be NaN (-inf and +inf are allowed)", _NAN_FIX, _not_nan, True)),
    "probabilities": Role(
        "float",
        Rule(
            _UNIT,
            "Pass probabilities (e.g. jax.nn.sigmoid or softmax outputs), or use the from-logits form.",
            _unit,
            True,
        ),
    ),
    "target_logits": Role("float", Rule("must not be NaN (-inf and +inf are allowed)", _NAN_FIX, _not_nan, True)),
    "reference": Role(
        "labels",
        Rule(_UNIT, "Pass a reference distribution of probabilities (entries in [0, 1]).", _unit, True),
    ),
    "values": Role("float", Rule("must not be NaN", _NAN_FIX, _not_nan, True)),
    "labels": Role(
        "labels", Rule(_UNIT, "Fix the labels upstream (hard labels 0/1 or soft labels in [0, 1]).", _unit, True)
    ),
    "targets": Role("labels", Rule("must be finite", _NAN_FIX, _finite, True)),  # regression; see TARGET_DISTRIBUTION
    "weights": Role(
        "weights", Rule("must be finite and >= 0", "Pass non-negative finite weights.", _nonnegative_finite, False)
    ),
    "pos_weight": Role(
        "weights",
        Rule(
            "must be finite and >= 0",
            "Pass a non-negative finite pos_weight (1 means none).",
            _nonnegative_finite,
            False,
        ),
        bounds=(0.0, None),
    ),
    "label_smoothing": Role(
        "option",
        Rule(_UNIT, "Pass label_smoothing in [0, 1] (0 means none).", _unit, False),
        bounds=(0.0, 1.0),
        neutral=0.0,
    ),
    "where": Role("mask"),
    "axis": Role("static"),
    "base": Role("static"),
    "axis_name": Role("static"),
    "class_axis_name": Role("static"),
    "implementation": Role("static"),
}


# Per-function rules (a declaration's ``rules``) where a role's name means more than its row says.
TARGET_DISTRIBUTION = Rule(
    _UNIT,
    "Pass a target distribution of probabilities (entries in [0, 1]; class indices: "
    "jaxloss.softmax_cross_entropy_with_integer_labels with logits).",
    _unit,
    True,
)


def class_index_rule(
    classes: int, axis: int, of: str = "logits", leave_out: str = "where=labels != -100 in jaxloss.ce_with_logits"
) -> Rule:
    """The rule of integer class indices into ``classes`` classes (the size of ``of`` along ``axis``): in
    [0, classes). Outside it the loss is NaN, never a silently gathered value. ``leave_out`` says how to leave
    padding rows out."""
    return Rule(
        f"must be class indices in [0, {classes}) ({of} has {classes} classes along axis {axis})",
        f"Fix the labels upstream: each row's label names one of its {classes} classes (leave padding rows, "
        f"labelled e.g. -100, out of the loss: {leave_out}).",
        lambda x: (x >= 0) & (x < classes),
        True,
    )


# --------------------------------------------------------------------------- declarations


@dataclasses.dataclass(frozen=True)
class Declaration:
    """A public loss's arguments by role, what it returns, and its name on the command line."""

    name: str  # as the user writes it after "jaxloss.": "bce_with_logits", "batch.mse"
    function: Callable[..., Any] = dataclasses.field(repr=False, compare=False)
    arrays: tuple[str, ...]  # the array arguments (roles float, labels), in order
    options: tuple[str, ...]  # the other dynamic arguments (weights, masks, options)
    static: tuple[str, ...]
    returns: Returns  # elementwise losses, one per row (a class axis reduced), a scalar mean, or one per example
    cli: str | None  # the name `jaxloss eval --loss` gives it, if any
    # The argument that holds class indices when its dtype is integer (into the first array's class `axis`):
    # jaxloss.checked requires them in [0, C); `jaxloss eval` picks this loss for an integer TARGETS file.
    class_indices: str | None = None
    # Value rules that replace the role's rule for this function (an argument name means more here than its
    # role's row in ROLES says: cross_entropy's targets are a distribution, not finite regression targets).
    rules: dict[str, Rule] = dataclasses.field(default_factory=dict, compare=False)

    def rule(self, name: str) -> Rule | None:
        """The value rule of argument ``name`` in this function (its own, else its role's)."""
        return self.rules.get(name, ROLES[name].rule)


DECLARED: dict[str, Declaration] = {}


def _public_name(fun: Callable[..., Any]) -> str:
    return f"batch.{fun.__name__}" if fun.__module__ == "jaxloss.batch" else fun.__name__


def _is_text(x) -> bool:
    if isinstance(x, (str, bytes)):
        return True
    if isinstance(x, np.ndarray) and x.dtype.kind in "USO":
        return True
    return isinstance(x, (list, tuple)) and any(_is_text(v) for v in x)


# What a static option is, and an example of it, for the error when an array is passed instead.
_STATIC_EXAMPLES = {
    "axis": ("a Python number", "-1"),
    "base": ("a Python number", "2"),
    "axis_name": ("a mesh axis name", "'batch'"),
    "class_axis_name": ("a mesh axis name", "'model'"),
    "implementation": ("a string or None", "'xla'"),
}


def screen(fn: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments as ``fn``'s jitted body takes them, after the checks that must run before ``jax.jit`` sees them
    (it would reject text and arrays for static options with its own words)."""
    out = dict(arguments)
    for name, x in arguments.items():
        role = ROLES[name]
        if role.kind == "static":
            if isinstance(x, (jax.Array, np.ndarray)):
                what, example = _STATIC_EXAMPLES.get(name, ("a Python number", "2"))
                raise TypeError(
                    f"jaxloss.{fn}: {name} must be {what} (it is a compile-time option); got an array. "
                    f"Pass e.g. {name}={example}."
                )
            try:
                hash(x)
            except TypeError:  # jax.jit would refuse it in its own words
                what, example = _STATIC_EXAMPLES.get(name, ("a Python number", "2"))
                raise TypeError(
                    f"jaxloss.{fn}: {name} must be {what} (it is a compile-time option, so hashable); got "
                    f"{type(x).__name__} {x!r}. Pass e.g. {name}={example}."
                ) from None
            continue
        # A big-endian NumPy array (read from a file written elsewhere): jax.jit refuses it, so swap it here.
        out[name] = x = _checks.native_byte_order(x)
        if _is_text(x):
            if role.kind == "float":
                _checks.as_float_array(fn, name, x)
            else:
                _checks.as_label_array(fn, name, x, jnp.float32)
        if role.bounds is not None:
            _checks.scalar_in_range(fn, name, x, *role.bounds)
        if role.neutral is not None and _is_python_number(x) and x == role.neutral:
            out[name] = None
    if "implementation" in arguments and arguments["implementation"] is None:
        # The preference in force (JAXLOSS_IMPLEMENTATION, or _kernels.preferring) becomes a static argument:
        # part of the compilation cache's key, so switching paths never reuses a stale trace.
        out["implementation"] = _kernels.default()
    return out


def _is_python_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.ndarray, jax.Array))


def loss(
    *,
    returns: Returns,
    cli: str | None = None,
    class_indices: str | None = None,
    rules: dict[str, Rule] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Make ``fun`` a public loss: jitted, screened, declared (see the module docstring).

    Args:
      returns: what it returns: ``"elementwise"`` losses, one per ``"rows"`` (a class axis reduced), a scalar
        ``"mean"``, or one per example (``"per_example"``, :mod:`jaxloss.batch`).
      cli: its name in ``jaxloss eval --loss`` (elementwise and row losses only), or None. Two losses may share
        a name when one of them declares ``class_indices``: eval picks it for an integer TARGETS file.
      class_indices: the argument that holds class indices when it is an integer array (``"labels"``).
      rules: value rules for this function that replace its arguments' role rules (``{"targets": ...}``).
    """

    def decorate(fun: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fun)
        unknown = [name for name in signature.parameters if name not in ROLES]
        if unknown:
            raise TypeError(f"{fun.__qualname__}: no role for argument(s) {unknown}; add them to jaxloss._api.ROLES")
        strangers = [name for name in [*(rules or {}), class_indices] if name and name not in signature.parameters]
        if strangers:
            raise TypeError(f"{fun.__qualname__}: rules or class_indices name no argument: {strangers}")
        kinds = {name: ROLES[name].kind for name in signature.parameters}
        static = tuple(name for name, kind in kinds.items() if kind == "static")
        name = _public_name(fun)
        declaration = Declaration(
            name=name,
            function=fun,
            arrays=tuple(n for n, k in kinds.items() if k in ("float", "labels")),
            options=tuple(n for n, k in kinds.items() if k in ("weights", "mask", "option")),
            static=static,
            returns=returns,
            cli=cli,
            class_indices=class_indices,
            rules=dict(rules or {}),
        )
        jitted = jax.jit(fun, static_argnames=static)

        @functools.wraps(fun)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as err:  # Python's own words ("got an unexpected keyword argument ..."), named
                raise TypeError(
                    f"jaxloss.{name}: {err}; its arguments are {', '.join(signature.parameters)} (options by keyword)."
                ) from None
            bound.apply_defaults()
            arguments = screen(name, bound.arguments)
            positional = [arguments.pop(p.name) for p in signature.parameters.values() if p.kind == p.POSITIONAL_ONLY]
            return jitted(*positional, **arguments)

        declaration = dataclasses.replace(declaration, function=wrapper)
        # jitted: the compiled function (its cache, .lower(), ...); declaration: what DECLARED holds.
        vars(wrapper).update(jitted=jitted, declaration=declaration)
        DECLARED[name] = declaration
        return wrapper

    return decorate
