"""Argument validation shared by the public functions.

Every check here runs in plain Python on static information (shapes, dtypes,
Python scalars), so it raises at trace time, under ``jax.jit`` too. Messages
follow one pattern: what was called, what was expected, what arrived, the fix.
Value checks on traced arrays (labels in [0, 1], ...) live in
:mod:`jaxloss.validate`, behind :func:`jaxloss.checked`. How a public function is
defined (jit, screening, its declaration) is :mod:`jaxloss._api`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []


def _describe(x) -> str:
    dtype = getattr(x, "dtype", None)
    return f"{type(x).__name__} of dtype {dtype}" if dtype is not None else type(x).__name__


def native_byte_order(x):
    """A NumPy array in a non-native byte order (a big-endian ">f4" file on a little-endian machine) as the same
    values in the native order, which is all JAX accepts; anything else unchanged."""
    if isinstance(x, np.ndarray) and not x.dtype.isnative:
        return x.astype(x.dtype.newbyteorder("="))
    return x


def as_float_array(fn: str, name: str, x) -> jax.Array:
    """``x`` as a JAX array of a real floating dtype; integers, booleans, complex and strings raise TypeError."""
    x = native_byte_order(x)
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        if isinstance(x, (bool, str, bytes)) or not isinstance(x, (numbers.Real, Sequence)):
            raise TypeError(
                f"jaxloss.{fn}: {name} must be a real floating-point array; got {_describe(x)}. "
                f"Pass a float array such as jnp.asarray(..., dtype=jnp.float32)."
            )
        if isinstance(x, numbers.Real):
            # A bare Python number is exact and weakly typed: it takes the other argument's dtype.
            return jnp.asarray(float(x))
        try:
            x = jnp.asarray(x)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"jaxloss.{fn}: {name} must be a real floating-point array; got {_describe(x)} "
                f"that JAX cannot convert ({err}). Pass a float array."
            ) from None
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"jaxloss.{fn}: {name} must be a real floating-point array; got dtype {np.dtype(dtype).name}. "
            f"Cast it first, e.g. {name}.astype(jnp.float32)."
        )
    return jnp.asarray(x)


def as_label_array(fn: str, name: str, x, dtype) -> jax.Array:
    """Labels (or targets): floats, integers and booleans are accepted and promoted to ``dtype``."""
    x = native_byte_order(x)
    x_dtype = getattr(x, "dtype", None)
    if x_dtype is None:
        if isinstance(x, (str, bytes)) or not isinstance(x, (numbers.Real, Sequence, np.ndarray)):
            raise TypeError(
                f"jaxloss.{fn}: {name} must be a real numeric array; got {_describe(x)}. Pass a float or integer array."
            )
        try:
            x = jnp.asarray(x)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"jaxloss.{fn}: {name} must be a real numeric array; got {_describe(x)} "
                f"that JAX cannot convert ({err})."
            ) from None
        x_dtype = x.dtype
    if not (
        jnp.issubdtype(x_dtype, jnp.floating)
        or jnp.issubdtype(x_dtype, jnp.integer)
        or jnp.issubdtype(x_dtype, jnp.bool_)
    ):
        raise TypeError(
            f"jaxloss.{fn}: {name} must be a real numeric array (float, int or bool); got dtype "
            f"{np.dtype(x_dtype).name}. Cast it first, e.g. {name}.astype(jnp.float32)."
        )
    return jnp.asarray(x).astype(dtype)


def compute_dtype(*arrays) -> np.dtype:
    """The dtype the loss is computed and returned in: the promoted float dtype, 16-bit widened to float32.

    Python scalars are weakly typed and do not widen the result; integer and
    boolean arrays (labels) do not take part.
    """
    # A Python list (of numbers, or of tracers under jit) is read as an array; jnp.result_type cannot type it.
    candidates = [jnp.asarray(a) if isinstance(a, (list, tuple)) else a for a in arrays]
    floats = [a for a in candidates if a is not None and jnp.issubdtype(jnp.result_type(a), jnp.floating)]
    dtype = np.dtype(jnp.result_type(*floats)) if floats else np.dtype(jnp.result_type(float))
    if dtype.itemsize < 4:
        dtype = np.dtype(jnp.float32)
    return dtype


def same_shape(fn: str, names: tuple[str, str], a: jax.Array, b: jax.Array) -> None:
    """Paired arrays must have identical shapes; a 0-d array (a scalar) may stand for any shape."""
    if a.shape != b.shape and a.ndim != 0 and b.ndim != 0:
        raise ValueError(
            f"jaxloss.{fn}: {names[0]} and {names[1]} must have the same shape (no broadcasting); "
            f"got {a.shape} and {b.shape}. Reshape one of them (e.g. {names[1]}.reshape({names[0]}.shape)); "
            f"only a scalar may stand for a whole array."
        )


def pair_shape(a: jax.Array, b: jax.Array) -> tuple[int, ...]:
    return a.shape if a.ndim else b.shape


def paired(fn: str, names: tuple[str, str], x, y) -> tuple[jax.Array, jax.Array]:
    """(x, y) validated and broadcast to one shape in the compute dtype.

    ``x`` (predictions, logits, probabilities) must be a real float array; ``y`` (targets, labels) may
    also be int or bool. Identical shapes are required; a scalar stands for the whole array.
    """
    x = as_float_array(fn, names[0], x)
    dtype = compute_dtype(x, y)
    y = as_label_array(fn, names[1], y, dtype)
    same_shape(fn, names, x, y)
    shape = pair_shape(x, y)
    return jnp.broadcast_to(x.astype(dtype), shape), jnp.broadcast_to(y, shape)


def broadcast_option(fn: str, name: str, x, shape: tuple[int, ...], dtype) -> jax.Array:
    """``weights``, ``pos_weight``: a real array that broadcasts to ``shape``."""
    x = as_label_array(fn, name, x, dtype)
    try:
        jnp.broadcast_shapes(x.shape, shape)
        if jnp.broadcast_shapes(x.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"jaxloss.{fn}: {name} must broadcast to the loss shape {tuple(shape)}; got shape {x.shape}. "
            f"Give it the loss shape or a shape that broadcasts to it (trailing axes match or are 1)."
        ) from None
    return jnp.broadcast_to(x, shape)


def broadcast_mask(fn: str, where, shape: tuple[int, ...]) -> jax.Array | None:
    """``where``: a boolean array that broadcasts to ``shape`` (None means everything)."""
    if where is None:
        return None
    dtype = getattr(where, "dtype", None)
    if dtype is None:
        where = jnp.asarray(where)
        dtype = where.dtype
    if not jnp.issubdtype(dtype, jnp.bool_):
        raise TypeError(
            f"jaxloss.{fn}: where must be a boolean array; got dtype {np.dtype(dtype).name}. "
            f"Pass a comparison result or where.astype(bool)."
        )
    where = jnp.asarray(where)
    try:
        ok = jnp.broadcast_shapes(where.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"jaxloss.{fn}: where must broadcast to the shape {tuple(shape)}; got shape {where.shape}. "
            f"Give it that shape or one that broadcasts to it (trailing axes match or are 1)."
        )
    return jnp.broadcast_to(where, shape)


def normalize_axis(fn: str, axis: int, ndim: int) -> int:
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise TypeError(f"jaxloss.{fn}: axis must be an int; got {axis!r}. Pass e.g. axis=-1.")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"jaxloss.{fn}: axis {axis} is out of range for an input of {ndim} dimension(s); "
            f"pass an axis in [{-ndim}, {ndim - 1}]."
        )
    return int(axis) % ndim


def at_least_1d(fn: str, name: str, x: jax.Array) -> None:
    if x.ndim == 0:
        raise ValueError(
            f"jaxloss.{fn}: {name} must have at least one dimension (the class axis); got a scalar. "
            f"Pass a vector of per-class values, e.g. {name}[None]."
        )


def log_base_factor(fn: str, base) -> float | None:
    """``1 / ln(base)`` as a Python float (rounded once when cast), or None for nats."""
    if base is None:
        return None
    if isinstance(base, bool) or not isinstance(base, numbers.Real):
        raise TypeError(f"jaxloss.{fn}: base must be a real number or None (nats); got {base!r}. Pass e.g. base=2.")
    base = float(base)
    if not (base > 0 and base != 1 and math.isfinite(base)):
        raise ValueError(
            f"jaxloss.{fn}: base must be positive, finite and not 1; got {base!r}. "
            f"Use base=2 for bits, base=None for nats."
        )
    return 1.0 / math.log(base)


def scalar_in_range(fn: str, name: str, value, lo: float, hi: float | None) -> None:
    """Range check for an option given as a Python or NumPy scalar; traced values are checked by jaxloss.checked."""
    if isinstance(value, (numbers.Real, np.number)) and not isinstance(value, bool):
        v = float(value)
        if not (v >= lo and (hi is None or v <= hi)):
            allowed = f"[{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
            raise ValueError(f"jaxloss.{fn}: {name} must be {allowed}; got {value!r}.")


def bound_axis_name(fn: str, option: str, name, split: str) -> None:
    """``axis_name`` / ``class_axis_name``: the name of an axis the caller maps over (``jax.shard_map``, or
    ``jax.vmap(..., axis_name=...)``); outside one, JAX's collectives would raise a NameError of their own words."""
    if name is None:
        return
    try:
        jax.lax.axis_size(name)
    except NameError:
        raise ValueError(
            f"jaxloss.{fn}: {option}={name!r} names no mapped axis here (it names the mesh axis {split} are split "
            f"over, inside jax.shard_map); got it outside one. Call the loss inside shard_map with that mesh axis, "
            f"or pass {option}=None."
        ) from None
    except TypeError:
        raise TypeError(
            f"jaxloss.{fn}: {option} must be a mesh axis name (a string, or a tuple of them) or None; got "
            f"{name!r}. Pass e.g. {option}='model'."
        ) from None
