"""``jaxloss.info()``: what this installation runs on, and which kernel each workload uses here."""

from __future__ import annotations

import platform

import jax
import jaxlib

from . import _kernels
from ._kernels import backend, cpu
from ._version import __version__

__all__ = ["__version__", "info"]


def info() -> str:
    """A report of the environment jaxloss runs in: versions, devices, and the path each row workload takes.

    For each workload with a choice of path (``implementation=`` of :func:`jaxloss.entropy_from_logits`,
    :func:`jaxloss.entropy` and :func:`jaxloss.softmax_cross_entropy_with_integer_labels`), the report names
    the path ``implementation=None`` takes for a float32 input reduced over its last axis, and, for each path
    that is not available here, why. Nothing is printed: ``print(jaxloss.info())``, or ``python -m jaxloss info``
    from a shell.

    Returns:
      A multi-line string.

    Example:
      >>> import jaxloss
      >>> report = jaxloss.info()
      >>> report.splitlines()[0].startswith("jaxloss ")
      True
      >>> "entropy_from_logits:" in report
      True
    """
    devices = jax.devices()
    lines = [
        f"jaxloss {__version__}",
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, Python {platform.python_version()} "
        f"({platform.machine()})",
        f"default backend: {jax.default_backend()}; {len(devices)} device(s): "
        + ", ".join(sorted({d.device_kind for d in devices})),
        f"C++ CPU kernels: {cpu.status()}",
    ]
    preference = _kernels.default()
    if preference is not None:
        lines.append(f"{_kernels.ENV}={preference.implementation} (preferred where available)")
    lines.append("paths (float32 input, class axis last):")
    for workload, entry in _kernels.report().items():
        lines.append(f"  {workload}: {entry['chosen']}")
        for path in _kernels.WORKLOADS[workload]:
            reason = entry[path]
            if reason is not None:
                state = f"unavailable - {reason}"
            elif path == "pallas" and not backend.cuda_present():
                state = "available through Pallas' interpreter only (no CUDA GPU here): slow, for tests"
            else:
                state = "available"
            lines.append(f"    {path}: {state}")
    return "\n".join(lines)


def run(args=None) -> int:
    """``jaxloss info``: print :func:`info`; returns the exit code (0)."""
    print(info())
    return 0
