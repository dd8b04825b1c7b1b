"""Which platforms this process can lower for: the one fact the kernels' selection and the CUDA branch of the
elementwise kernels share."""

from __future__ import annotations

import functools

import jax

__all__: list[str] = []


@functools.cache
def cuda_present() -> bool:
    """Whether a CUDA device is visible (checked once; devices do not come and go within a process)."""
    try:
        return len(jax.devices("cuda")) > 0
    except RuntimeError:
        return False
