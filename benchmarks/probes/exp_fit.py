"""The float32 exp polynomial of the CPU entropy kernel (``Shift`` in jaxloss/_kernels/cpu_kernel.cc), checked.

    python -m benchmarks.probes.exp_fit

Fits exp(r) on [-ln2/2, ln2/2] by a degree-6 Chebyshev interpolant (mpmath ``chebyfit``), rounds the coefficients
to float32, and evaluates the polynomial as the kernel does (Horner, one fused multiply-add per step, emulated as
a float64 product and sum rounded once to float32) on 400001 points, reporting the largest error in float32 ulp
against float64 exp. Also checks the two-part ln2 of the kernel's Cody-Waite reduction: the high part times any
n in [-127, 0] is exact in float32, and high + low = ln2 to float64 precision.
"""

from __future__ import annotations

import mpmath
import numpy as np

F32 = np.float32
LN2_HI = float.fromhex("0x1.62e400p-1")
LN2_LO = float.fromhex("0x1.7f7d1cp-20")


def coefficients(degree: int = 6) -> list[np.float32]:
    mpmath.mp.dps = 40
    half = float(mpmath.log(2) / 2) * 1.001
    return [F32(float(c)) for c in mpmath.chebyfit(mpmath.exp, [-half, half], degree + 1)]


def fma32(a, b, c):
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(F32)


def max_ulp(coef) -> float:
    r = np.linspace(-np.log(2) / 2, np.log(2) / 2, 400001).astype(F32)
    p = np.full_like(r, coef[0])
    for c in coef[1:]:
        p = fma32(p, r, c)
    ref = np.exp(r.astype(np.float64))
    return float((np.abs(p - ref) / np.spacing(ref.astype(F32)).astype(np.float64)).max())


def main() -> None:
    coef = coefficients()
    print("coefficients (highest degree first):", ", ".join(repr(float(c)) for c in coef))
    print(f"max error of the polynomial in float32 arithmetic: {max_ulp(coef):.3f} ulp")
    n = np.arange(-127, 1, dtype=np.float64)
    exact = all(float(F32(k * LN2_HI)) == k * LN2_HI for k in n)
    print(f"n * ln2_hi exact in float32 for n in [-127, 0]: {exact}")
    print(f"ln2_hi + ln2_lo - ln2 = {float(mpmath.mpf(LN2_HI) + LN2_LO - mpmath.log(2)):.3e}")


if __name__ == "__main__":
    main()
