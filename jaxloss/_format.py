"""Short human-readable text for progress lines and command output: rates with SI prefixes, the device."""

from __future__ import annotations

import jax

__all__ = ["device", "si"]


def si(x: float) -> str:
    """``x`` to 3 significant digits with a k, M or G prefix.

    >>> si(12345.0), si(2.5e6), si(999.0)
    ('12.3k', '2.5M', '999')
    """
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"


def device() -> str:
    """The default device, as ``platform:id (kind)``, e.g. ``cpu:0 (cpu)``."""
    first = jax.devices()[0]
    return f"{first.platform}:{first.id} ({first.device_kind})"
