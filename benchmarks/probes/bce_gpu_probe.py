"""BCE on a GPU: which float32 log1p to use there, measured side by side (speed) and against float64 (accuracy).

    python -m benchmarks.probes.bce_gpu_probe [--out DIR]

jaxloss computes log1p in float32 with its own branch-free kernel (jaxloss._kernels.elementwise._log1p_f32,
0.84 ulp; XLA:CPU's log1p is off by 2.5 ulp). On a GPU, XLA's log1p may be both accurate and cheaper; this script
measures, on the
default device: (1) the ulp error of ``jnp.log1p`` and of the kernel over a strided sweep of [-1, 1] against numpy's
float64 log1p; (2) BCE mean forward and value + gradient at 2^28 elements, float32 and bfloat16, for jaxloss with
each log1p, optax and the max-form. It writes the compiled HLO of jaxloss's BCE forward per dtype under --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxloss
from jaxloss._kernels import elementwise as _math


def ulp_sweep(fn, step: int = 97) -> tuple[float, float]:
    """Max ulp error of float32 fn over every step-th float32 in (-1, 1] (bit patterns; normal numbers), vs numpy."""
    pos = np.arange(0, 0x3F800001, step, dtype=np.int64).astype(np.uint32).view(np.float32)
    x = np.concatenate([-pos[pos <= 1.0], pos])
    x = x[(x > -1.0) & ((x == 0) | (np.abs(x) >= np.finfo(np.float32).tiny))]  # normal numbers (and 0)
    got = np.asarray(jax.jit(fn)(jnp.asarray(x)), np.float64)
    ref = np.log1p(x.astype(np.float64))
    spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    err = np.abs(got - ref) / np.where(spacing > 0, spacing, np.finfo(np.float32).smallest_subnormal)
    i = int(np.argmax(err))
    return float(err[i]), float(x[i])


def accuracy(kernel, cuda_default) -> None:
    """Max ulp of BCE values (float32 and 16-bit inputs) and hard-label gradients against the test references
    (tests/data, exact at the given inputs), with each log1p on CUDA."""
    import ml_dtypes

    from benchmarks.accuracy import bce_grid as grid
    from benchmarks.accuracy import load, masked_max, ulp_checked, ulp_error

    def max_ulp(computed, reference, mask) -> float:  # in float32 ulps: jaxloss's BCE returns float32
        return masked_max(ulp_error(computed, reference, np.float32), mask)

    f32 = load("bce_logits")
    z, y = grid(f32)
    hard = np.isin(y, (0.0, 1.0))
    loss = jax.jit(jaxloss.sigmoid_binary_cross_entropy)
    grad = jax.jit(jax.grad(lambda a, b: jaxloss.sigmoid_binary_cross_entropy(a, b).sum()))
    for name, fn in (("kernel log1p", kernel), ("XLA log1p", jnp.log1p)):
        _math._log1p_f32_cuda = fn
        jax.clear_caches()
        out = [f"value f32 {max_ulp(loss(z, y), f32['value'], ulp_checked(f32['value'])):.3f}"]
        g = grad(jnp.asarray(z), jnp.asarray(y))
        out.append(f"grad hard {max_ulp(g, f32['grad'], hard & ulp_checked(f32['grad'])):.3f}")
        for half, dt in (("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
            d = load(f"bce_logits_{half}")
            zh, yh = grid(d)
            v = loss(zh.astype(dt), yh.astype(dt))
            out.append(f"value {half} {max_ulp(v, d['value'], ulp_checked(d['value'])):.3f}")
        print(f"bce accuracy ({name} on CUDA): " + ", ".join(out) + " ulp", flush=True)
    _math._log1p_f32_cuda = cuda_default


def _median(fn, args, repeats=20):
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.probes.bce_gpu_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".")
    args = p.parse_args()
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    kernel, cuda_default = _math._log1p_f32, _math._log1p_f32_cuda
    for name, fn in (("jnp.log1p", jnp.log1p), ("jaxloss _log1p_f32", kernel), ("jaxloss log1p", _math.log1p)):
        err, at = ulp_sweep(fn)
        print(f"log1p ulp sweep  {name:<20} max {err:.3f} ulp at x = {at:.9g}", flush=True)

    def plain(z, y):
        return jaxloss.bce_with_logits(z, y)

    accuracy(kernel, cuda_default)
    impls = {
        "jaxloss": plain,  # here with the branch-free kernel's log1p on CUDA too
        "optax": lambda z, y: optax.sigmoid_binary_cross_entropy(z, y).mean(),
        "max-form": lambda z, y: jnp.mean(jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-abs(z)))),
    }
    n = 2**28
    k1, k2 = jax.random.split(jax.random.key(0))
    z32 = 3.0 * jax.random.normal(k1, (n,), jnp.float32)
    y32 = jax.random.bernoulli(k2, 0.5, (n,)).astype(jnp.float32)
    for dtype in (jnp.float32, jnp.bfloat16):
        z, y = z32.astype(dtype), y32.astype(dtype)
        for mode in ("forward", "value_and_grad"):
            for name, f in [*impls.items(), ("jaxloss, XLA log1p", plain)]:
                _math._log1p_f32_cuda = jnp.log1p if name == "jaxloss, XLA log1p" else kernel
                jax.clear_caches()
                g = f if mode == "forward" else jax.value_and_grad(f)
                jitted = jax.jit(g)
                seconds = _median(jitted, (z, y))
                nbytes = (2 + (mode == "value_and_grad")) * n * jnp.dtype(dtype).itemsize
                print(
                    f"bce {jnp.dtype(dtype).name:<9} {mode:<15} {name:<20} {seconds * 1e3:8.3f} ms "
                    f"{nbytes / seconds / 1e9:8.1f} GB/s",
                    flush=True,
                )
                if name == "jaxloss" and mode == "forward":
                    path = os.path.join(args.out, f"bce_{jnp.dtype(dtype).name}_forward.hlo.txt")
                    with open(path, "w") as fh:
                        fh.write(jitted.lower(z, y).compile().as_text())
        _math._log1p_f32_cuda = cuda_default


if __name__ == "__main__":
    main()
