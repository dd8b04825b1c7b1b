"""The CPU row kernels against XLA's naive forms, minimum of many interleaved calls, over several row counts.

    python -m benchmarks.probes.kernel_scale [--calls 60]

For rows x 256 classes (256 to 16384 rows), per element: jaxloss.entropy_from_logits vs the naive
-(softmax * log_softmax).sum(-1), and jaxloss.entropy vs entr(p).sum(-1), forward and value + gradient of the mean.
The minimum over interleaved calls is steadier than the suite's median on a shared machine (benchmarks/NOTES.md).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from jax.scipy.special import entr

import jaxloss


def best_times(fns: dict, args: tuple, calls: int) -> dict[str, float]:
    jitted = {k: jax.jit(f) for k, f in fns.items()}
    for f in jitted.values():
        jax.block_until_ready(f(*args))
    best = dict.fromkeys(jitted, float("inf"))
    for _ in range(calls):
        for k, f in jitted.items():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--rows", default="256,1024,4096,16384")
    opts = parser.parse_args()
    naive = lambda x: -(jax.nn.softmax(x) * jax.nn.log_softmax(x)).sum(-1).mean()  # noqa: E731
    ours_l = lambda x: jaxloss.entropy_from_logits(x).mean()  # noqa: E731
    ent = lambda p: entr(p).sum(-1).mean()  # noqa: E731
    ours_p = lambda p: jaxloss.entropy(p).mean()  # noqa: E731
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}; ns per element, min of {opts.calls} calls")
    for rows in (int(r) for r in opts.rows.split(",")):
        for dtype in (jnp.float32, jnp.bfloat16):
            x = (jax.random.normal(jax.random.key(0), (rows, 256)) * 3).astype(dtype)
            p = jax.nn.softmax(x.astype(jnp.float32)).astype(dtype)
            t = best_times(
                {
                    "logits": ours_l,
                    "naive": naive,
                    "logits v+g": jax.value_and_grad(ours_l),
                    "naive v+g": jax.value_and_grad(naive),
                },
                (x,),
                opts.calls,
            )
            t.update(
                best_times(
                    {
                        "probs": ours_p,
                        "entr": ent,
                        "probs v+g": jax.value_and_grad(ours_p),
                        "entr v+g": jax.value_and_grad(ent),
                    },
                    (p,),
                    opts.calls,
                )
            )
            per = {k: v * 1e9 / (rows * 256) for k, v in t.items()}
            print(
                f"{rows:6d} x 256 {jnp.dtype(dtype).name:9s} "
                + "  ".join(f"{k} {v:.2f}" for k, v in per.items())
                + f"  | ratios: fwd {t['logits'] / t['naive']:.2f} / {t['probs'] / t['entr']:.2f},"
                f" v+g {t['logits v+g'] / t['naive v+g']:.2f} / {t['probs v+g'] / t['entr v+g']:.2f}"
            )


if __name__ == "__main__":
    main()
