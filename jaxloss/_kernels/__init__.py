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
:func:`entropy_probs`, :func:`ce_integer`'s native path, and :func:`ce_integer_mean`'s, at the level of the
weighted mean: the kernel writes the mean's gradient whole) uses the chosen path's (value, gradient); where that
(value, gradient) is differentiated again (second derivatives) the XLA formulation is differentiated, values
included, so that Hessians are the XLA path's to the bit on every path.
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
    "softmax_cross_entropy_with_integer_labels": ("xla", "cpu"),
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


CE_KERNEL = "softmax_cross_entropy_with_integer_labels"


def _ce_xla_value(z, labels, axis):
    return jnp.squeeze(categorical.integer_value(z.astype(rows.widened(z.dtype)), labels, axis, None), axis)


def _ce_xla_value_and_grad(z, labels, axis):
    value, grad = categorical.integer_value_and_grad(z.astype(rows.widened(z.dtype)), labels, axis, None)
    return jnp.squeeze(value, axis), grad


def ce_integer(logits, labels, axis: int, axis_name, implementation: str):
    """Cross-entropy of softmax(logits) against class indices over ``axis`` (dropped), on the path
    ``implementation`` (from :func:`choose`; "xla" wherever ``axis_name`` splits the class axis). 16-bit logits
    are widened to float32 (inside the CPU kernel when it is used, where they are read); the result is float32
    for 16- and 32-bit logits."""
    if implementation == "xla" or axis_name is not None:
        return categorical.integer_ce(logits.astype(rows.widened(logits.dtype)), labels, axis, axis_name)
    return _ce_integer_native(logits, labels, axis, axis_name, implementation)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _ce_integer_native(logits, labels, axis: int, axis_name, implementation: str):
    """The loss from the CPU kernel's value handler (the XLA formulation where not lowered for CPU). The labels
    are integers: they have no tangent."""
    del axis_name  # None on this path
    kernel = functools.partial(cpu.value, CE_KERNEL)
    return jax.lax.platform_dependent(logits, labels, cpu=kernel, default=lambda z, k: _ce_xla_value(z, k, axis))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _ce_native_value_and_grad(logits, labels, axis: int, implementation: str):
    """(L, dL/dlogits) from the CPU kernel's value-and-gradient handler, in one sweep per row."""
    kernel = functools.partial(cpu.value_and_grad, CE_KERNEL)
    return jax.lax.platform_dependent(
        logits, labels, cpu=kernel, default=lambda z, k: _ce_xla_value_and_grad(z, k, axis)
    )


@_ce_native_value_and_grad.defjvp
def _ce_native_value_and_grad_jvp(axis, implementation, primals, tangents):
    # Second derivatives: the XLA formulation's, values included (as _differentiated_as).
    (z, labels), (dz, _) = primals, tangents
    dtype = rows.widened(z.dtype)
    return jax.jvp(lambda v: _ce_xla_value_and_grad(v, labels, axis), (z.astype(dtype),), (dz.astype(dtype),))


@_ce_integer_native.defjvp
def _ce_integer_native_jvp(axis, axis_name, implementation, primals, tangents):
    (z, labels), (dz, _) = primals, tangents
    value, grad = _ce_native_value_and_grad(z, labels, axis, implementation)
    return value, jnp.sum(grad * dz.astype(grad.dtype), axis=axis)


# --------------------------------------------------------------------------- the weighted mean of cross-entropy


def _is_symbolic_zero(tangent) -> bool:
    return type(tangent) is jax.custom_derivatives.SymbolicZero


def _weighted_sum(scale, losses, factor=None):
    """sum_r scale_r L_r (factor_r L_r if given: a tangent), a row of weight 0 adding 0 whatever its loss."""
    out = scale == 0
    # (both selects: the derivative in a weight of 0 is then 0, never 0 * inf)
    return jnp.sum(jnp.where(out, 0, (scale if factor is None else factor) * jnp.where(out, 0, losses)))


def _ce_mean_xla_value_and_grad(z, labels, scale):
    """(L per row, scale_r dL_r/dz in z's dtype) from the XLA formulation (16-bit z widened to float32 first); both
    0 in the rows of weight 0, as the kernel writes them."""
    value, grad = categorical.integer_value_and_grad(z.astype(rows.widened(z.dtype)), labels, z.ndim - 1, None)
    out = scale == 0
    value = jnp.where(out, 0, jnp.squeeze(value, -1))
    return value, jnp.where(out[..., None], 0, scale[..., None] * grad).astype(z.dtype)


@jax.custom_jvp
def _ce_mean_native_value_and_grad(logits, labels, scale):
    """(L per row, scale_r dL_r/dlogits in the logits' dtype) from the CPU kernel's scaled handler, in one sweep per
    row (the XLA formulation where not lowered for CPU). Differentiated (second derivatives) as the XLA
    formulation, values included, as :func:`_differentiated_as`."""
    kernel = functools.partial(cpu.value_and_scaled_grad, CE_KERNEL)
    return jax.lax.platform_dependent(logits, labels, scale, cpu=kernel, default=_ce_mean_xla_value_and_grad)


@_ce_mean_native_value_and_grad.defjvp
def _ce_mean_native_value_and_grad_jvp(primals, tangents):
    (z, labels, scale), (dz, _, dscale) = primals, tangents
    dtype = rows.widened(z.dtype)

    def xla(v, s):
        value, grad = _ce_mean_xla_value_and_grad(v, labels, s)
        return value, grad.astype(z.dtype)

    (value, grad), (dvalue, dgrad) = jax.jvp(xla, (z.astype(dtype), scale), (dz.astype(dtype), dscale))
    return (value, grad.astype(z.dtype)), (dvalue, dgrad.astype(z.dtype))


def _ce_mean_xla(z, labels, scale):
    return _weighted_sum(scale, categorical.integer_ce(z.astype(rows.widened(z.dtype)), labels, z.ndim - 1, None))


@jax.custom_jvp
def _ce_mean_cpu(logits, labels, scale):
    kernel = lambda z, k, s: _weighted_sum(s, cpu.value(CE_KERNEL, z, k))  # noqa: E731
    return jax.lax.platform_dependent(logits, labels, scale, cpu=kernel, default=_ce_mean_xla)


def _ce_mean_cpu_jvp(primals, tangents):
    (z, labels, scale), (dz, _, dscale) = primals, tangents
    losses, scaled_grad = _ce_mean_native_value_and_grad(z, labels, scale)
    out = _weighted_sum(scale, losses)
    tangent = jnp.zeros((), out.dtype)
    if not _is_symbolic_zero(dz):
        # (float32 products: a 16-bit sum of the tangent would lose digits; in reverse mode the transpose is
        # ct * G, the converts cancelling where ct is the constant 1 of jax.grad.)
        tangent = tangent + jnp.sum(scaled_grad.astype(out.dtype) * dz.astype(out.dtype))
    if not _is_symbolic_zero(dscale):
        tangent = tangent + _weighted_sum(scale, losses, dscale)
    return out, tangent


_ce_mean_cpu.defjvp(_ce_mean_cpu_jvp, symbolic_zeros=True)


def ce_integer_mean(logits, labels, scale, implementation: str):
    """``sum_r scale_r L_r``, L_r the cross-entropy of softmax(logits) against the class index ``labels`` of row r,
    the classes on the last axis, on the path ``implementation`` ("cpu" or "xla", from :func:`choose`): a mean
    when ``scale`` (float32, the rows' shape ``logits.shape[:-1]``, or broadcasting to it) is ``where_r / count``.
    A float32 scalar for 16- and 32-bit logits.

    On the "cpu" path the derivative is one kernel call that writes the gradient of the sum whole, each row times
    its weight, in the logits' dtype (16-bit logits: computed in float32, rounded once): under ``jax.grad`` the
    cotangent is the constant 1 and XLA leaves that gradient as the kernel wrote it (no further pass over the
    logits' size). Forward mode sums that same gradient times the tangent (in float32; for 16-bit logits the
    gradient's own rounding to 16 bits stays in it). ``scale`` may be differentiated (tangent
    ``sum_r L_r dscale_r`` over the rows of nonzero weight). Second derivatives are the XLA formulation's, as every
    native path's.

    Rows of weight exactly 0 are left out (on both paths: the derivative in their weight is 0 too). They add 0 to
    the value and get a zero gradient row on the kernel path whatever their logits and labels (the kernel does not
    read them: NaN, inf, a label out of range). The XLA path gives them a value of 0 too, but their gradient rows are
    0 only where their loss has a finite gradient (a label out of range gives NaN there): callers replace the logits
    of such rows by 0 and their labels by 0, as the mean of ``jaxloss.ce_with_logits`` does, and then both paths
    agree.
    """
    labels = jnp.asarray(labels).astype(jnp.int32)
    scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), logits.shape[:-1])
    if implementation == "xla":
        return _ce_mean_xla(logits, labels, scale)
    return _ce_mean_cpu(logits, labels, scale)
