"""Every numerical kernel of jaxloss, and the one place that decides which path a row workload runs on.

A leaf package: it imports nothing from the rest of jaxloss. Its modules:

* :mod:`.twofloat` - exact two-float arithmetic (TwoSum and friends);
* :mod:`.elementwise` - log1p, the sigmoid family, BCE from logits, x log x, the binary entropies;
* :mod:`.rows` - the row (softmax) algorithm in XLA, the reference formulation every native kernel reproduces;
* :mod:`.pallas` - the GPU row kernel (Pallas/Triton);
* :mod:`.cpu` - the C++ row kernels (XLA FFI custom calls), compiled when the package is built;
* :mod:`.backend` - which platforms this process has.

Row workloads with a choice of path (``implementation=`` of the public functions):

========================  ==============================================================================
``"xla"``                 the XLA formulation: every platform, dtype and axis; partitions under sharding.
``"cpu"``                 the C++ row kernel: float32/bfloat16/float16, class axis last, non-empty input,
                          one device, built at install. Lowered for the CPU platform only (any other platform
                          in the same program lowers the XLA formulation).
``"pallas"``              the Pallas row kernel (``entropy_from_logits`` only), same input conditions:
                          natively on CUDA GPUs; on a machine without CUDA through Pallas' interpreter (slow:
                          for tests).
``None``                  the best available for the input and the machine: ``"pallas"`` where a CUDA GPU is
                          present, ``"cpu"`` where the default backend is the CPU, else ``"xla"``.
========================  ==============================================================================

``JAXLOSS_IMPLEMENTATION`` (read once, at import) names a preferred path that ``None`` takes where it is
available for the input. The choice is static: it is part of the jitted function's static arguments, so
switching paths needs no ``jax.clear_caches()``.

All paths return the same value and gradient. One ``custom_jvp`` per workload (:func:`entropy_logits`,
:func:`entropy_probs`) uses the chosen path's (value, gradient); where that (value, gradient) is differentiated
again (second derivatives) the XLA formulation is differentiated, values included, so that Hessians are the XLA
path's to the bit on every path.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from . import backend, categorical, cpu, pallas, rows

__all__: list[str] = []

IMPLEMENTATIONS = ("xla", "cpu", "pallas")
# workload -> the implementations it has
WORKLOADS = {
    "entropy_from_logits": ("xla", "cpu", "pallas"),
    "entropy": ("xla", "cpu"),
    "softmax_cross_entropy_with_integer_labels": ("xla",),
}
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(jnp.bfloat16), np.dtype(np.float16))
ENV = "JAXLOSS_IMPLEMENTATION"


@dataclasses.dataclass(frozen=True)
class Prefer:
    """What ``implementation=None`` stands for under a preference: that path where it is available, else the best."""

    implementation: str


def _read_env() -> str | None:
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return None
    if value not in IMPLEMENTATIONS:
        raise ValueError(
            f"jaxloss: the environment variable {ENV} must be one of {', '.join(IMPLEMENTATIONS)} (or unset for the "
            f"best available); got {value!r}."
        )
    return value


_FROM_ENV = _read_env()  # read once, at import
_preference: contextvars.ContextVar[str | None] = contextvars.ContextVar("jaxloss_implementation", default=_FROM_ENV)


def default() -> Prefer | None:
    """What a public function's ``implementation=None`` is replaced by before it is jitted (static): the
    preference in force (``JAXLOSS_IMPLEMENTATION``, or :func:`preferring`), or None for the best available."""
    preferred = _preference.get()
    return None if preferred is None else Prefer(preferred)


@contextlib.contextmanager
def preferring(implementation: str | None) -> Iterator[None]:
    """Within the block, ``implementation=None`` prefers ``implementation`` (tests and benchmarks run one suite on
    each path this way). Being a static argument, it needs no clearing of JAX's caches."""
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise ValueError(f"preferring: expected None or one of {IMPLEMENTATIONS}; got {implementation!r}")
    token = _preference.set(implementation)
    try:
        yield
    finally:
        _preference.reset(token)


def why_unavailable(workload: str, implementation: str, shape: tuple[int, ...], dtype, axis: int) -> str | None:
    """None if ``implementation`` can run ``workload`` on this input (reduced over ``axis``), else the reason."""
    if implementation not in WORKLOADS[workload]:
        return f"{workload} has no {implementation!r} kernel"
    if implementation == "xla":
        return None
    if implementation == "cpu" and not cpu.available():
        return f"the C++ kernels are {cpu.status()}"
    if implementation == "pallas" and not pallas.importable():
        return "Pallas' Triton backend does not import in this jax installation"
    if np.dtype(dtype) not in _KERNEL_DTYPES:
        return f"the kernel takes float32, bfloat16 or float16 input; got {np.dtype(dtype).name}"
    if axis != len(shape) - 1:
        return f"the kernel reduces the last axis; got axis {axis} of {len(shape)}"
    if any(d < 1 for d in shape):
        return f"the input is empty (shape {tuple(shape)})"
    if jax.device_count() > 1:
        # A custom call is opaque to XLA's sharding propagation, which would gather a sharded input onto every
        # device; the XLA formulation partitions.
        return f"this process has {jax.device_count()} devices (the kernels run in one-device processes)"
    return None


def _best(workload: str, shape, dtype, axis: int) -> str:
    if backend.cuda_present() and why_unavailable(workload, "pallas", shape, dtype, axis) is None:
        return "pallas"
    if jax.default_backend() == "cpu" and why_unavailable(workload, "cpu", shape, dtype, axis) is None:
        return "cpu"
    return "xla"


def choose(workload: str, implementation: str | Prefer | None, shape: tuple[int, ...], dtype, axis: int) -> str:
    """The path ``workload`` runs on (static). A named ``implementation`` that cannot run raises ValueError."""
    if isinstance(implementation, Prefer):
        if why_unavailable(workload, implementation.implementation, shape, dtype, axis) is None:
            return implementation.implementation
        implementation = None
    if implementation is None:
        return _best(workload, shape, dtype, axis)
    if implementation not in WORKLOADS[workload]:
        raise ValueError(
            f"jaxloss.{workload}: implementation must be None (the best available) or one of "
            f"{', '.join(repr(i) for i in WORKLOADS[workload])}; got {implementation!r}."
        )
    reason = why_unavailable(workload, implementation, shape, dtype, axis)
    if reason is not None:
        available = [i for i in WORKLOADS[workload] if why_unavailable(workload, i, shape, dtype, axis) is None]
        raise ValueError(
            f"jaxloss.{workload}: implementation={implementation!r} is not available for this call: {reason}. "
            f"Available here: {', '.join(repr(i) for i in available)}; pass implementation=None for the best of them."
        )
    return implementation


def report() -> dict[str, dict[str, str | None]]:
    """For each workload, each implementation's reason to be unavailable (None: available) for a float32 input of
    shape (1024, 256) reduced over its last axis, and under ``"chosen"`` the path ``implementation=None`` takes."""
    shape, dtype, axis = (1024, 256), np.dtype(np.float32), 1
    out: dict[str, dict[str, str | None]] = {}
    for workload, paths in WORKLOADS.items():
        entry: dict[str, str | None] = {i: why_unavailable(workload, i, shape, dtype, axis) for i in paths}
        entry["chosen"] = choose(workload, default(), shape, dtype, axis)
        out[workload] = entry
    return out


# --------------------------------------------------------------------------- shared plumbing


def _differentiated_as(xla: Callable) -> Callable:
    """The JVP rule of a native path's (value, derivative) pair: that of the XLA formulation ``xla(x, axis)``,
    values included (16-bit input widened first, as the kernels do). A native path's sums mixed with XLA's
    terms did not cancel as consistently (a Hessian-vector product of a peaked row was off by 75 times its
    error bound), so second derivatives are the XLA path's wholly."""

    def rule(axis, implementation, primals, tangents):
        (x,), (dx,) = primals, tangents
        dtype = rows.widened(x.dtype)
        return jax.jvp(lambda v: xla(v, axis), (x.astype(dtype),), (dx.astype(dtype),))

    return rule


def _on_cpu(kernel: Callable, xla: Callable, x):
    """``kernel(x)`` where lowered for the CPU platform, ``xla(x)`` on every other platform of the program."""
    return jax.lax.platform_dependent(x, cpu=kernel, default=xla)


# --------------------------------------------------------------------------- entropy from logits


def _logits_xla_value(x, axis):
    return jnp.squeeze(rows.entropy_xla(x.astype(rows.widened(x.dtype)), axis), axis)


def _logits_xla_value_and_grad(x, axis):
    h, grad = rows.value_and_grad_xla(x.astype(rows.widened(x.dtype)), axis)
    return jnp.squeeze(h, axis), grad


def _pallas_stats(logits):
    """(row max, s1, t) from the Pallas kernel over the last axis, shaped like logits with that axis of size 1."""
    keep = (*logits.shape[:-1], 1)
    m_raw, s1, t = pallas.row_stats(logits.reshape(-1, logits.shape[-1]))
    return m_raw.reshape(keep), s1.reshape(keep), t.reshape(keep)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def entropy_logits(logits, axis: int, implementation: str):
    """H(softmax(logits)) over ``axis`` (dropped), on the path ``implementation`` (from :func:`choose`).

    16-bit logits are widened to float32 where they are read (inside a native kernel, at their own width in
    memory); the result is float32 for 16- and 32-bit logits.
    """
    if implementation == "pallas":
        m_raw, s1, t = _pallas_stats(logits)
        return jnp.squeeze(rows.entropy_from_sums(s1, t, m_raw == -jnp.inf), -1)
    if implementation == "cpu":
        kernel = functools.partial(cpu.value, "entropy_from_logits")
        return _on_cpu(kernel, lambda v: _logits_xla_value(v, axis), logits)
    return _logits_xla_value(logits, axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _logits_native_value_and_grad(logits, axis: int, implementation: str):
    """(H, dH/dl) from a native kernel: the CPU kernel computes both in one sweep; from the Pallas kernel's
    row sums, e and u are formed again elementwise, which XLA fuses into the gradient's one pass."""
    if implementation == "pallas":
        m_raw, s1, t = _pallas_stats(logits)
        e, u, none = rows.shifted(logits.astype(rows.widened(logits.dtype)), m_raw)
        h, grad = rows.value_and_grad_from(e, u, s1, t, none)
        return jnp.squeeze(h, -1), grad
    kernel = functools.partial(cpu.value_and_grad, "entropy_from_logits")
    return _on_cpu(kernel, lambda v: _logits_xla_value_and_grad(v, axis), logits)


_logits_native_value_and_grad.defjvp(_differentiated_as(_logits_xla_value_and_grad))


@entropy_logits.defjvp
def _entropy_logits_jvp(axis, implementation, primals, tangents):
    (logits,), (dlogits,) = primals, tangents
    if implementation == "xla":
        h, grad = _logits_xla_value_and_grad(logits, axis)
    else:
        h, grad = _logits_native_value_and_grad(logits, axis, implementation)
    return h, jnp.sum(grad * dlogits.astype(grad.dtype), axis=axis)


# --------------------------------------------------------------------------- entropy of probabilities


def _probs_xla_value_and_grad(p, axis):
    return rows.entropy_probs_xla(p.astype(rows.widened(p.dtype)), axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def entropy_probs(p, axis: int, implementation: str):
    """-sum(p log p) over ``axis`` (dropped), 0 log 0 = 0, on the path ``implementation``; 16-bit ``p`` widened
    to float32 (inside the CPU kernel when it is used). The derivative is ``elementwise.neg_xlogx_slope``."""
    xla = lambda q: _probs_xla_value_and_grad(q, axis)[0]  # noqa: E731
    if implementation == "cpu":
        return _on_cpu(functools.partial(cpu.value, "entropy"), xla, p)
    return xla(p)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _probs_native_value_and_grad(p, axis: int, implementation: str):
    """(H, dH/dp) from the CPU kernel (the XLA formulation where not lowered for CPU)."""
    kernel = functools.partial(cpu.value_and_grad, "entropy")
    return _on_cpu(kernel, lambda q: _probs_xla_value_and_grad(q, axis), p)


_probs_native_value_and_grad.defjvp(_differentiated_as(_probs_xla_value_and_grad))


@entropy_probs.defjvp
def _entropy_probs_jvp(axis, implementation, primals, tangents):
    (p,), (dp,) = primals, tangents
    if implementation == "xla":
        h, slope = _probs_xla_value_and_grad(p, axis)
    else:
        h, slope = _probs_native_value_and_grad(p, axis, implementation)
    return h, jnp.sum(slope * dp.astype(slope.dtype), axis=axis)


# --------------------------------------------------------------------------- cross-entropy with integer labels


def ce_integer(logits, labels, axis: int, axis_name, implementation: str):
    """Cross-entropy of softmax(logits) against class indices over ``axis`` (dropped), on the path
    ``implementation`` (from :func:`choose`; "xla" wherever ``axis_name`` splits the class axis). 16-bit logits
    are widened to float32; the result is float32 for 16- and 32-bit logits."""
    return categorical.integer_ce(logits.astype(rows.widened(logits.dtype)), labels, axis, axis_name)
