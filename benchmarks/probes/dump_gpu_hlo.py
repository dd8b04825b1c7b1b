"""Write the compiled HLO of jaxloss's value + gradient programs (BCE at 2^28, entropy_from_logits at 2^20 x 256)
for the default device into DIR, to read how XLA fused them: python -m benchmarks.probes.dump_gpu_hlo DIR"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp

import jaxloss


def main(out: str) -> None:
    cases = {
        "bce": ((2**28,), lambda z, y: jaxloss.bce_with_logits(z, y), 2),
        "entropy_from_logits": ((2**20, 256), lambda lg: jaxloss.entropy_from_logits(lg).mean(), 1),
    }
    for name, (shape, fn, n_args) in cases.items():
        for dtype in (jnp.float32, jnp.bfloat16):
            args = [jax.ShapeDtypeStruct(shape, dtype)] * n_args
            text = jax.jit(jax.value_and_grad(fn)).lower(*args).compile().as_text()
            path = os.path.join(out, f"{name}_vg_{jnp.dtype(dtype).name}.hlo.txt")
            with open(path, "w") as f:
                f.write(text)
            print(path, text.count(" fusion("), "fusions", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
