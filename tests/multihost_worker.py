"""One of the two processes of the multi-host test in ``tests/test_sharding.py`` (not a test module).

Usage: ``python tests/multihost_worker.py PROCESS_ID PORT RESULT_JSON``

Each process simulates LOCAL_DEVICES CPU devices, joins the other through ``jax.distributed.initialize``
(coordinator on ``127.0.0.1:PORT``, CPU collectives over gloo), loads only its own rows of a seeded
data set into a global array sharded over all 8 devices, and writes to RESULT_JSON the global means
computed under ``jax.jit`` (sharded inputs) and inside ``jax.shard_map`` (``axis_name=``), plus the
per-example losses gathered from both processes. The test compares them with a single process.

Nothing here imports JAX at module level: the device count must be set before JAX starts.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

NUM_PROCESSES = 2
LOCAL_DEVICES = 4
AXIS = "batch"
B, N = 32, 5  # 4 rows per device, 16 per process


def make_data() -> dict[str, np.ndarray]:
    """The global data set (NumPy, seeded). Process 0 selects most of its elements, process 1 few, and its
    last device none, so a mean of per-process means would be wrong."""
    rng = np.random.default_rng(0)
    keep = np.where(np.arange(B) < B // 2, 0.9, 0.2)[:, None]
    where = rng.uniform(size=(B, N)) < keep
    where[-B // 8 :] = False
    return {
        "p": rng.normal(size=(B, N)).astype(np.float32),
        "t": rng.normal(size=(B, N)).astype(np.float32),
        "z": (rng.normal(size=(B, N)) * 6).astype(np.float32),
        "y": (rng.uniform(size=(B, N)) < 0.5).astype(np.float32),
        "w": rng.uniform(0.1, 2.0, size=(B, N)).astype(np.float32),
        "m": where,
    }


def global_means(jaxloss) -> dict:
    """The scalar means compared across process layouts: fn(data, **kw), kw = {} or {axis_name: ...}."""
    return {
        "mean": lambda d, **kw: jaxloss.mean(d["p"], weights=d["w"], where=d["m"], **kw),
        "mse": lambda d, **kw: jaxloss.mse(d["p"], d["t"], where=d["m"], **kw),
        "bce_with_logits": lambda d, **kw: jaxloss.bce_with_logits(d["z"], d["y"], weights=d["w"], where=d["m"], **kw),
    }


def per_example(jaxloss, d):
    return jaxloss.batch.bce_with_logits(d["z"], d["y"], where=d["m"])


def _set_local_device_count(count: int) -> None:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={count}"])
    os.environ["JAX_PLATFORMS"] = "cpu"


def run(process_id: int) -> dict:
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxloss

    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (
        NUM_PROCESSES,
        NUM_PROCESSES * LOCAL_DEVICES,
        LOCAL_DEVICES,
    )
    mesh = jax.make_mesh((jax.device_count(),), (AXIS,))
    sharding = NamedSharding(mesh, P(AXIS))
    full = make_data()

    # This process loads only the rows its own devices hold.
    starts = sorted(index[0].start for index in sharding.addressable_devices_indices_map((B, N)).values())
    rows = slice(starts[0], starts[-1] + B // jax.device_count())
    data = {k: jax.make_array_from_process_local_data(sharding, v[rows], (B, N)) for k, v in full.items()}

    results: dict = {"rows": [rows.start, rows.stop], "process_count": jax.process_count()}
    results["devices"] = jax.device_count()
    for name, fn in global_means(jaxloss).items():
        jitted = jax.jit(fn)(data)  # sharded inputs, XLA inserts the cross-process all-reduce
        mapped = jax.jit(
            jax.shard_map(lambda d, fn=fn: fn(d, axis_name=AXIS), mesh=mesh, in_specs=P(AXIS), out_specs=P())
        )(data)
        results[f"jit/{name}"] = float(jitted.addressable_data(0))
        results[f"shard_map/{name}"] = float(mapped.addressable_data(0))
    losses = jax.jit(lambda d: per_example(jaxloss, d))(data)
    results["per_example"] = np.asarray(multihost_utils.process_allgather(losses, tiled=True)).tolist()
    return results


def main(argv: list[str]) -> int:
    process_id, port, out = int(argv[0]), int(argv[1]), argv[2]
    _set_local_device_count(LOCAL_DEVICES)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=NUM_PROCESSES,
        process_id=process_id,
        initialization_timeout=60,
        shutdown_timeout_seconds=30,
    )
    try:
        results = run(process_id)
    finally:
        jax.distributed.shutdown()
    with open(out + ".tmp", "w") as f:
        json.dump(results, f)
    os.replace(out + ".tmp", out)  # the result file appears complete or not at all
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
