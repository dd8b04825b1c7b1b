"""The CPU row kernels behind ``entropy_from_logits``, ``entropy`` and ``softmax_cross_entropy_with_integer_labels``:
C++ XLA FFI custom calls, built with the package.

``cpu_kernel.cc`` computes, for every row of the last axis, a value and (in a second handler) its gradient in one
sweep over the row. Cross-entropy has a third, :func:`value_and_scaled_grad`: the gradient of a weighted sum of the
rows' losses (a mean), each row's gradient times its weight, written in the logits' dtype, so that nothing is left
for XLA to do over the logits' size. ``setup.py`` compiles it once per instruction-set variant (``baseline``; on
x86-64 also ``v3``, AVX2 + FMA, and ``v4``, AVX-512, where built) into the extension module
``jaxloss._kernels._cpu``; nothing is compiled at import, trace or call time, and no code is loaded from anywhere
but this package.

At import every variant the CPU supports is registered with XLA (cheap: no compilation) as
``<target>_<variant>``, e.g. ``jaxloss_entropy_logits_grad_v3``, for platform "cpu". ``variant=None`` picks
:func:`best`. If the extension was not built (no C++ compiler at install), importing this module still works:
:func:`available` is False and :func:`status` says why.

This module imports only jax, numpy, the standard library and the extension: the selection logic (which inputs and
platforms use a kernel) belongs to the rest of jaxloss.
"""

from __future__ import annotations

import importlib
import types

import jax
import jax.numpy as jnp

__all__ = ["KERNELS", "available", "best", "status", "value", "value_and_grad", "value_and_scaled_grad", "variants"]

KERNELS = ("entropy_from_logits", "entropy", "softmax_cross_entropy_with_integer_labels")
# kernel -> the FFI target of its value handler (the value-and-gradient handler is that + "_grad")
_TARGETS = {
    "entropy_from_logits": "jaxloss_entropy_logits",
    "entropy": "jaxloss_entropy",
    "softmax_cross_entropy_with_integer_labels": "jaxloss_ce_integer",
}
# kernels with a scaled value-and-gradient handler (target + "_grad_scaled"): the gradient of sum_r c_r L_r
_SCALED = frozenset({"softmax_cross_entropy_with_integer_labels"})
# kernels that take class indices beside the rows: int32, one per row (shaped ``x.shape[:-1]``)
_LABELED = frozenset({"softmax_cross_entropy_with_integer_labels"})

_cpu: types.ModuleType | None
try:
    # (import_module rather than `from . import _cpu`: when the module is missing, as in an install without a C++
    # compiler, its error says so -- "No module named 'jaxloss._kernels._cpu'" -- even while the package is still
    # being initialised.)
    _cpu = importlib.import_module("._cpu", __package__)
except ImportError as err:  # built without a C++ compiler: the XLA formulations are used
    _cpu = None
    _failure: str | None = str(err) or type(err).__name__
else:
    _failure = None


def _register() -> tuple[str, ...]:
    if _cpu is None:
        return ()
    usable = tuple(v for v in _cpu.variants() if _cpu.supported(v))
    for v in usable:
        for target, capsule in _cpu.handlers(v).items():
            jax.ffi.register_ffi_target(f"{target}_{v}", capsule, platform="cpu")
    return usable


_VARIANTS = _register()


def variants() -> tuple[str, ...]:
    """The variants compiled into this build that this CPU supports, best first; () if the extension was not
    built."""
    return _VARIANTS


def available() -> bool:
    """Whether the extension was built and this CPU runs at least one of its variants."""
    return bool(_VARIANTS)


def best() -> str | None:
    """The variant used by default (``variant=None``): the best one this CPU supports; None if none."""
    return _VARIANTS[0] if _VARIANTS else None


def status() -> str:
    """A line for diagnostics, e.g. ``available: variants v4, v3, baseline; using v4``."""
    if _cpu is None:
        return f"not built: {_failure}"
    if not _VARIANTS:
        return f"not available: no compiled variant ({', '.join(_cpu.variants())}) is supported by this CPU"
    return f"available: variants {', '.join(_VARIANTS)}; using {_VARIANTS[0]}"


def _target(kernel: str, variant: str | None, grad: bool, scaled: bool = False) -> str:
    if kernel not in _TARGETS:
        raise ValueError(f"unknown CPU kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    if not _VARIANTS:
        raise RuntimeError(f"the jaxloss CPU kernels are not available ({status()})")
    variant = _VARIANTS[0] if variant is None else variant
    if variant not in _VARIANTS:
        raise ValueError(f"CPU kernel variant {variant!r} is not available here (available: {', '.join(_VARIANTS)})")
    return f"{_TARGETS[kernel]}{'_grad' if grad else ''}{'_scaled' if scaled else ''}_{variant}"


def _operands(kernel: str, x, labels) -> tuple[jax.Array, ...]:
    x = jnp.asarray(x)
    if kernel not in _LABELED:
        if labels is not None:
            raise TypeError(f"CPU kernel {kernel!r} takes no labels")
        return (x,)
    if labels is None:
        raise TypeError(f"CPU kernel {kernel!r} needs labels: int32 class indices shaped {x.shape[:-1]}")
    labels = jnp.asarray(labels)
    if labels.shape != x.shape[:-1]:
        raise ValueError(f"CPU kernel {kernel!r}: labels must be shaped {x.shape[:-1]}; got {labels.shape}")
    return x, labels.astype(jnp.int32)


def value(kernel: str, x, labels=None, *, variant: str | None = None) -> jax.Array:
    """The kernel's value over the last axis of ``x`` (float32, bfloat16 or float16): float32, shaped
    ``x.shape[:-1]``. ``labels``: the class index of each row, for the kernels that take them."""
    operands = _operands(kernel, x, labels)
    out = jax.ShapeDtypeStruct(operands[0].shape[:-1], jnp.float32)
    return jax.ffi.ffi_call(_target(kernel, variant, False), out, vmap_method="broadcast_all")(*operands)


def value_and_grad(kernel: str, x, labels=None, *, variant: str | None = None) -> tuple[jax.Array, jax.Array]:
    """(value, gradient) of the kernel over the last axis of ``x``: the value as :func:`value`, the gradient of
    each row's value with respect to that row, float32, shaped like ``x``."""
    operands = _operands(kernel, x, labels)
    shape = operands[0].shape
    out = (jax.ShapeDtypeStruct(shape[:-1], jnp.float32), jax.ShapeDtypeStruct(shape, jnp.float32))
    value, grad = jax.ffi.ffi_call(_target(kernel, variant, True), out, vmap_method="broadcast_all")(*operands)
    return value, grad


def value_and_scaled_grad(kernel: str, x, labels, scale, *, variant: str | None = None) -> tuple[jax.Array, jax.Array]:
    """(value, scale * gradient) for the gradient of ``sum_r scale_r L_r`` in one sweep: the value as :func:`value`
    (unweighted, float32, shaped ``x.shape[:-1]``); the gradient times ``scale`` (float32, shaped ``x.shape[:-1]``:
    one weight per row), shaped like ``x`` and in its dtype (16-bit logits: computed in float32 and rounded once).
    A row whose weight is exactly 0 is not read: value 0 and gradient 0, whatever its logits and label."""
    if kernel not in _SCALED:
        raise ValueError(f"CPU kernel {kernel!r} has no scaled gradient handler")
    operands = _operands(kernel, x, labels)
    scale = jnp.asarray(scale)
    if scale.shape != operands[0].shape[:-1]:
        raise ValueError(f"CPU kernel {kernel!r}: scale must be shaped {operands[0].shape[:-1]}; got {scale.shape}")
    shape, dtype = operands[0].shape, operands[0].dtype
    out = (jax.ShapeDtypeStruct(shape[:-1], jnp.float32), jax.ShapeDtypeStruct(shape, dtype))
    target = _target(kernel, variant, True, scaled=True)
    value, grad = jax.ffi.ffi_call(target, out, vmap_method="broadcast_all")(*operands, scale.astype(jnp.float32))
    return value, grad
