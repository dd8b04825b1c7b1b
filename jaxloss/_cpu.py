"""The CPU row kernels behind ``entropy_from_logits`` and ``entropy``: C++ XLA FFI custom calls, built on first use.

``_cpu_kernel.cc`` (beside this file) computes, for every row of the last axis, a value and (in a second handler)
its gradient in one sweep over the row:

* ``entropy_from_logits``: the same exact algorithm as the XLA path (TwoSum shift, the top class kept out of the
  normaliser), exp evaluated to about 1.1 ulp, the terms summed in float32 lanes (16 a lane) and those sums in
  double, the entropy formed in double and rounded once;
* ``entropy`` (of probabilities): -sum p log p with a branch-free float32 log (0.76 ulp over every positive
  float32), the terms summed 4 a lane and then in double, and the derivative -(log p + 1), 0 at p = 0.

XLA:CPU spends most of the XLA formulations' time writing and re-reading elementwise terms between its
reductions (benchmarks/NOTES.md); a kernel reads each row once and writes only the result (and the gradient).

Build: the first call that can use a kernel compiles them with the system's C++ compiler (``$CXX``, else ``c++``,
``g++`` or ``clang++``) against the FFI headers that ship with jaxlib (``jax.ffi.include_dir()``), for the host's
CPU (``-march=native``), into a cache directory: ``$JAXLOSS_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxloss``, else
``~/.cache/jaxloss`` (the temporary directory if that is not writable). The file name carries a hash of the
source, the compiler, its flags, the jax version, the FFI header and the CPU's feature flags, so a changed input
builds anew and machines sharing a home directory do not share code built for another CPU. It takes a few
seconds, once. Without a compiler, or if the build fails, the XLA path is used and the reason is logged once
(logger ``jaxloss``); :func:`status` reports it.

Selection is static, like the GPU kernel's (:mod:`jaxloss._pallas`): offered for float32/bfloat16/float16 input
reduced over its last axis, non-empty, in a process whose default backend is the CPU with one device (a custom
call is opaque to XLA's sharding propagation, which would gather a sharded input onto every device), unless
``JAXLOSS_ENTROPY_KERNEL`` is ``xla`` (or ``pallas``, which tests the GPU kernel). The call is lowered only for
the CPU platform (``jax.lax.platform_dependent``); every other platform lowers the XLA formulation.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp

__all__: list[str] = []

_LOG = logging.getLogger("jaxloss")
_SOURCE = Path(__file__).with_name("_cpu_kernel.cc")
# kernel -> (FFI target of the value, of the value and gradient; the library's symbols for them)
_KERNELS = {
    "entropy_from_logits": ("jaxloss_entropy_logits", "JaxlossEntropyLogits"),
    "entropy": ("jaxloss_entropy", "JaxlossEntropy"),
}
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno")
_NATIVE = ("-march=native",)
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))

_failure: str | None = None  # why the kernel is not available, once that is known
_LOCK = threading.Lock()  # one build and one registration per process, whichever thread traces first


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir() -> Path:
    if os.environ.get("JAXLOSS_CACHE_DIR"):
        return Path(os.environ["JAXLOSS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxloss"


def _cpu_flags() -> str:
    """The host CPU's feature flags (Linux), part of the cache key because the build is ``-march=native``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def _build(cxx: str) -> Path:
    include = jax.ffi.include_dir()
    version = _run([cxx, "--version"]).stdout
    key = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), cxx.encode(), version.encode(), " ".join(_FLAGS + _NATIVE).encode()):
        key.update(part)
    key.update(jax.__version__.encode())
    key.update((Path(include) / "xla" / "ffi" / "api" / "c_api.h").read_bytes())
    key.update(_cpu_flags().encode())
    name = f"entropy_kernel_{key.hexdigest()[:20]}.so"
    target = _cache_dir() / name
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(target.parent, os.W_OK):
            raise PermissionError(f"{target.parent} is not writable")
    except OSError:  # no writable cache (a read-only home): build into the temporary directory instead
        target = Path(tempfile.gettempdir()) / f"jaxloss-{os.getuid() if hasattr(os, 'getuid') else 0}" / name
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        errors = []
        for extra in (_NATIVE, ()):  # -march=native is not understood everywhere (e.g. some clang on arm64)
            result = _run([cxx, *_FLAGS, *extra, f"-I{include}", str(_SOURCE), "-o", tmp])
            if result.returncode == 0:
                os.replace(tmp, target)  # atomic: a concurrent build of the same key writes the same file
                return target
            errors.append(result.stderr.strip()[-2000:])
        raise RuntimeError("the compiler failed:\n" + "\n".join(errors))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _library():
    """Compile (or find in the cache) and register the kernels; None, with the reason in ``_failure``, if they
    cannot be."""
    with _LOCK:
        return _load()


@functools.cache
def _load():
    global _failure
    cxx = _compiler()
    if cxx is None:
        _failure = "no C++ compiler found ($CXX, c++, g++, clang++)"
    else:
        try:
            lib = ctypes.cdll.LoadLibrary(str(_build(cxx)))
            for target, symbol in _KERNELS.values():
                for suffix in ("", "_grad"):
                    handler = getattr(lib, symbol + ("Grad" if suffix else ""))
                    jax.ffi.register_ffi_target(target + suffix, jax.ffi.pycapsule(handler), platform="cpu")
            return lib
        except Exception as err:  # a failed build must not break the library: the XLA path computes the same
            _failure = f"{type(err).__name__}: {err}"
    _LOG.warning("jaxloss: the CPU entropy kernels are not available (%s); the XLA formulations are used.", _failure)
    return None


def status() -> str:
    """'available', or why the kernel is not (building it if that was not tried yet)."""
    return "available" if _library() is not None else f"not available: {_failure}"


def offered(shape, dtype, axis: int) -> bool:
    """Whether a kernel may be used for an input of this shape and dtype reduced over ``axis`` (static)."""
    from . import _pallas

    if _pallas.mode() != "auto":
        return False
    if jnp.dtype(dtype) not in _DTYPES:
        return False
    if axis != len(shape) - 1 or any(d < 1 for d in shape):
        return False  # the class axis must be the contiguous one; empty arrays take the XLA path
    # A machine whose default backend is a GPU or TPU keeps the XLA formulations (there the call would only be
    # lowered for CPU devices used explicitly, and building it would cost a compile for nothing).
    return jax.default_backend() == "cpu" and jax.device_count() == 1 and _library() is not None


def _ffi(target: str, x, with_grad: bool):
    out = jax.ShapeDtypeStruct(x.shape[:-1], jnp.float32)
    if with_grad:
        out = (out, jax.ShapeDtypeStruct(x.shape, jnp.float32))
    return jax.ffi.ffi_call(target + ("_grad" if with_grad else ""), out, vmap_method="broadcast_all")(x)


def value(kernel: str, x, xla):
    """The kernel's value over the last axis of ``x`` (that axis dropped), float32, where lowered for CPU;
    ``xla(x)`` elsewhere."""
    target = _KERNELS[kernel][0]
    return jax.lax.platform_dependent(x, cpu=lambda v: _ffi(target, v, False), default=xla)


def value_and_grad(kernel: str, x, xla):
    """(value, gradient) as :func:`value`, the gradient float32 and shaped like ``x``."""
    target = _KERNELS[kernel][0]
    return jax.lax.platform_dependent(x, cpu=lambda v: _ffi(target, v, True), default=xla)
