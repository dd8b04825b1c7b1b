"""Exhaustive accuracy sweep of jaxloss's float32 log1p kernel (every float32 in a range, or every k-th one).

    python -m benchmarks.probes.log1p_sweep      # every normal float32 in [-1, 1]: ~2.1e9 values, ~3 min on 2 cores
    python -m benchmarks.probes.log1p_sweep --stride 7 --range big   # every 7th float32 in [1, max]

The reference is numpy's float64 log1p of the same input: its error (< 1 float64 ulp = 2**-29 float32 ulp)
cannot move a float32 ulp figure at the printed precision. Prints the largest error in float32 ulps and where,
for jaxloss's kernel and for XLA's ``jnp.log1p``, side by side.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss._kernels import elementwise as _math

RANGES = {  # [first, last) as float32 bit patterns
    "positive": (0x00800000, 0x3F800001),  # [2**-126, 1]
    "negative": (0x80800000, 0xBF800000),  # (-1, -2**-126]
    "big": (0x3F800000, 0x7F800000),  # [1, max]
}


def ulps(computed: np.ndarray, x: np.ndarray) -> np.ndarray:
    reference = np.log1p(x.astype(np.float64))
    gap = np.spacing(np.abs(reference.astype(np.float32))).astype(np.float64)
    return np.abs(computed.astype(np.float64) - reference) / gap


def sweep(first: int, last: int, stride: int, chunk: int = 1 << 24) -> dict[str, tuple[float, float]]:
    kernels = {"jaxloss": jax.jit(_math.log1p), "jnp.log1p": jax.jit(jnp.log1p)}
    worst = {name: (0.0, float("nan")) for name in kernels}
    step = chunk * stride
    for start in range(first, last, step):
        x = np.arange(start, min(start + step, last), stride, dtype=np.uint32).view(np.float32)
        for name, kernel in kernels.items():
            err = ulps(np.asarray(kernel(x)), x)
            i = int(np.argmax(err))
            if err[i] > worst[name][0]:
                worst[name] = (float(err[i]), float(x[i]))
    return worst


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range", choices=[*RANGES, "unit"], default="unit", help="unit = positive + negative")
    parser.add_argument("--stride", type=int, default=1, help="test every k-th float32 (1 = all)")
    args = parser.parse_args(argv)
    names = ["positive", "negative"] if args.range == "unit" else [args.range]
    for name in names:
        first, last = RANGES[name]
        for kernel, (err, at) in sweep(first, last, args.stride).items():
            print(f"{name:9s} {kernel:10s} max {err:.3f} ulp at x = {at:.9g}")


if __name__ == "__main__":
    main()
