"""The CPU row kernels behind ``entropy_from_logits`` and ``entropy``: C++ XLA FFI custom calls, built with the
package.

``cpu_kernel.cc`` computes, for every row of the last axis, a value and (in a second handler) its gradient in one
sweep over the row. ``setup.py`` compiles it once per instruction-set variant (``baseline``; on x86-64 also ``v3``,
AVX2 + FMA, and ``v4``, AVX-512, where built) into the extension module ``jaxloss._kernels._cpu``; nothing is
compiled at import, trace or call time, and no code is loaded from anywhere but this package.

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

__all__ = ["KERNELS", "available", "best", "status", "value", "value_and_grad", "variants"]

KERNELS = ("entropy_from_logits", "entropy")
# kernel -> the FFI target of its value handler (the value-and-gradient handler is that + "_grad")
_TARGETS = {"entropy_from_logits": "jaxloss_entropy_logits", "entropy": "jaxloss_entropy"}

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


def _target(kernel: str, variant: str | None, grad: bool) -> str:
    if kernel not in _TARGETS:
        raise ValueError(f"unknown CPU kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    if not _VARIANTS:
        raise RuntimeError(f"the jaxloss CPU kernels are not available ({status()})")
    variant = _VARIANTS[0] if variant is None else variant
    if variant not in _VARIANTS:
        raise ValueError(f"CPU kernel variant {variant!r} is not available here (available: {', '.join(_VARIANTS)})")
    return f"{_TARGETS[kernel]}{'_grad' if grad else ''}_{variant}"


def value(kernel: str, x, *, variant: str | None = None) -> jax.Array:
    """The kernel's value over the last axis of ``x`` (float32, bfloat16 or float16): float32, shaped
    ``x.shape[:-1]``."""
    x = jnp.asarray(x)
    out = jax.ShapeDtypeStruct(x.shape[:-1], jnp.float32)
    return jax.ffi.ffi_call(_target(kernel, variant, False), out, vmap_method="broadcast_all")(x)


def value_and_grad(kernel: str, x, *, variant: str | None = None) -> tuple[jax.Array, jax.Array]:
    """(value, gradient) of the kernel over the last axis of ``x``: the value as :func:`value`, the gradient of
    each row's value with respect to that row, float32, shaped like ``x``."""
    x = jnp.asarray(x)
    out = (jax.ShapeDtypeStruct(x.shape[:-1], jnp.float32), jax.ShapeDtypeStruct(x.shape, jnp.float32))
    value, grad = jax.ffi.ffi_call(_target(kernel, variant, True), out, vmap_method="broadcast_all")(x)
    return value, grad
