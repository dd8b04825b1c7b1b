"""Launch shapes of the GPU entropy kernel (jaxloss/_kernels/pallas.py), timed side by side on the default device.

    python -m benchmarks.probes.tune_entropy [--json out.json] [--repeats 20]

For 2^20 x 256 rows (float32 and bfloat16) it times ``entropy_from_logits(x).mean()`` forward, and value + gradient,
for each (rows-per-program block size, warps) pair; for 8192 x 32768 rows each (chunk width, warps) pair. Beside
them, in the same process: the XLA path of jaxloss (``implementation="xla"``) and the naive
``-(softmax * log_softmax).sum(-1)``. Median of ``--repeats`` calls after two warm-ups, each ending in
``block_until_ready``. Effective bandwidth counts the logits read once (+ the gradient written once).
The module constants of jaxloss._kernels.pallas are set for each variant and JAX's caches cleared; they are
restored at exit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

import jaxloss
from jaxloss import _kernels
from jaxloss._kernels import pallas as _pallas

NARROW = (2**20, 256)
WIDE = (8192, 32768)
# (module constant overrides of jaxloss._kernels.pallas) per variant; unnamed constants keep their defaults.
NARROW_VARIANTS = [
    {"_BLOCK_ELEMENTS": 2048, "_NUM_WARPS": 4},
    {"_BLOCK_ELEMENTS": 4096, "_NUM_WARPS": 4},
    {"_BLOCK_ELEMENTS": 4096, "_NUM_WARPS": 8},
    {"_BLOCK_ELEMENTS": 8192, "_NUM_WARPS": 8},
    {"_BLOCK_ELEMENTS": 4096, "_NUM_WARPS": 4, "_NUM_STAGES": 2},
]
WIDE_VARIANTS = [
    {"_CHUNK": 2048, "_NUM_WARPS_WIDE": 8, "_NUM_STAGES_WIDE": 1},
    {"_CHUNK": 2048, "_NUM_WARPS_WIDE": 8, "_NUM_STAGES_WIDE": 3},
    {"_CHUNK": 4096, "_NUM_WARPS_WIDE": 8, "_NUM_STAGES_WIDE": 2},
    {"_CHUNK": 1024, "_NUM_WARPS_WIDE": 4, "_NUM_STAGES_WIDE": 3},
]
KNOBS = ("_BLOCK_ELEMENTS", "_NUM_WARPS", "_CHUNK", "_NUM_WARPS_WIDE", "_NUM_STAGES", "_NUM_STAGES_WIDE")


def _median(fn, x, repeats):
    for _ in range(2):
        jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fns():
    def mine(lg):
        return jaxloss.entropy_from_logits.__wrapped__(lg).mean()  # traced here, under the current setting

    def naive(lg):
        return -(jax.nn.softmax(lg) * jax.nn.log_softmax(lg)).sum(-1).mean()

    return {"forward": mine, "value_and_grad": jax.value_and_grad(mine)}, {
        "forward": naive,
        "value_and_grad": jax.value_and_grad(naive),
    }


def run(repeats: int, modes=("forward", "value_and_grad"), kernel_modes=("forward",)) -> list[dict]:
    saved = {k: getattr(_pallas, k) for k in KNOBS}
    mine, naive = _fns()
    out = []
    try:
        for shape, variants in ((NARROW, NARROW_VARIANTS), (WIDE, WIDE_VARIANTS)):
            for dtype in (jnp.float32, jnp.bfloat16):
                if shape == WIDE and dtype == jnp.bfloat16:
                    continue
                x = (3.0 * jax.random.normal(jax.random.key(0), shape, jnp.float32)).astype(dtype)
                read = x.size * x.dtype.itemsize
                cases = [("naive", None, naive, modes), ("jaxloss xla", None, mine, modes)]
                cases += [
                    (" ".join(f"{k[1:]}={v}" for k, v in var.items()), var, mine, kernel_modes) for var in variants
                ]
                for name, variant, fns, which in cases:
                    for mode in which:
                        for k, v in saved.items():
                            setattr(_pallas, k, v)
                        for k, v in (variant or {}).items():
                            setattr(_pallas, k, v)
                        setting = "xla" if name == "jaxloss xla" else None  # None: the kernel on a GPU
                        jax.clear_caches()  # the launch constants are read at trace time
                        with _kernels.preferring(setting):
                            try:
                                seconds = _median(jax.jit(fns[mode]), x, repeats)
                            except Exception as err:  # a launch shape the compiler rejects: report, go on
                                print(f"{name} {mode}: {type(err).__name__}: {str(err)[:300]}", flush=True)
                                continue
                        nbytes = read * (2 if mode == "value_and_grad" else 1)
                        row = {
                            "shape": list(shape),
                            "dtype": jnp.dtype(dtype).name,
                            "impl": name,
                            "mode": mode,
                            "median_s": seconds,
                            "effective_Bps": nbytes / seconds,
                        }
                        out.append(row)
                        print(
                            f"{'x'.join(map(str, shape)):>12} {row['dtype']:<9} {mode:<15} {name:<62} "
                            f"{seconds * 1e3:8.3f} ms {nbytes / seconds / 1e9:8.1f} GB/s",
                            flush=True,
                        )
                del x
    finally:
        for k, v in saved.items():
            setattr(_pallas, k, v)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.probes.tune_entropy", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    rows = run(args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "jax": jax.__version__, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
