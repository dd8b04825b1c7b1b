"""Many devices and hosts, each in a subprocess so the rest of the suite keeps its single CPU device.

* ``tests/sharding_cases.py`` runs in a child pytest with 8 simulated CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=8``, which must be set before JAX starts):
  every public function and every ``jaxloss.batch`` function sharded along the batch axis equals
  the single-device result, and the scalar means with ``axis_name=`` inside ``shard_map`` are global.
* Two processes on this machine (``tests/multihost_worker.py``), 4 simulated devices each, joined by
  ``jax.distributed.initialize`` with CPU collectives: global means over data split across the two
  processes equal the result of this single process. Bounded in time; children are killed on
  failure and their files removed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxloss

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARDED_DEVICES = 8
MEAN_ULPS = 4  # the same tolerance as tests/sharding_cases.py: partial sums added in another order
CASES_TIMEOUT_S = 300
MULTIHOST_TIMEOUT_S = 120


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def tail(text: str, n: int = 6000) -> str:
    return text if len(text) <= n else "...\n" + text[-n:]


def test_sharded_cases_on_8_simulated_devices():
    env = child_env()
    env["XLA_FLAGS"] = f"{env['XLA_FLAGS']} --xla_force_host_platform_device_count={SHARDED_DEVICES}".strip()
    cmd = [sys.executable, "-m", "pytest", str(HERE / "sharding_cases.py"), "-q", "-rfE", "-p", "no:cacheprovider"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CASES_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:  # subprocess.run has killed the child
        pytest.fail(f"tests/sharding_cases.py did not finish in {CASES_TIMEOUT_S} s:\n{tail(str(err.stdout or ''))}")
    assert proc.returncode == 0, (
        f"tests/sharding_cases.py failed on {SHARDED_DEVICES} devices:\n{tail(proc.stdout)}\n{tail(proc.stderr, 3000)}"
    )
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, tail(proc.stdout)


# ----------------------------------------------------------------------------- two processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ulp_distance32(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)

    def key(x):
        i = x.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(2**31) - i, i)

    return np.abs(key(a) - key(b))


def run_workers(tmp: Path, n: int) -> list[dict]:
    """Start n workers, wait for all (or the first failure, or the timeout), kill what is left, return results."""
    port = free_port()
    logs = [open(tmp / f"worker{i}.log", "w") for i in range(n)]  # closed in the finally below
    procs = []
    try:
        for i in range(n):
            cmd = [sys.executable, str(HERE / "multihost_worker.py"), str(i), str(port), str(tmp / f"result{i}.json")]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=logs[i], stderr=subprocess.STDOUT))
        deadline = time.monotonic() + MULTIHOST_TIMEOUT_S
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    status = [p.returncode for p in procs]
    if status != [0] * n:
        text = "\n".join(
            f"--- worker {i} (exit {s}):\n{tail((tmp / f'worker{i}.log').read_text(), 3000)}"
            for i, s in enumerate(status)
        )
        pytest.fail(f"multi-host workers failed or timed out after {MULTIHOST_TIMEOUT_S} s:\n{text}")
    return [json.loads((tmp / f"result{i}.json").read_text()) for i in range(n)]


def test_two_processes_global_mean_equals_single_process():
    import multihost_worker as worker

    with tempfile.TemporaryDirectory(prefix="jaxloss-multihost-") as tmp:
        results = run_workers(Path(tmp), worker.NUM_PROCESSES)
    assert not Path(tmp).exists()

    # The two processes held disjoint halves of the rows and saw all 8 devices.
    assert sorted(r["rows"] for r in results) == [[0, worker.B // 2], [worker.B // 2, worker.B]]
    assert all(r["devices"] == worker.NUM_PROCESSES * worker.LOCAL_DEVICES for r in results)

    # This process, one device, the whole data set.
    data = worker.make_data()
    counts = [data["m"][: worker.B // 2].sum(), data["m"][worker.B // 2 :].sum()]
    assert counts[0] > 3 * counts[1] > 0  # uneven selection across processes
    for name, fn in worker.global_means(jaxloss).items():
        expected = jax.jit(fn)(data)
        for r in results:
            for how in ("jit", "shard_map"):
                got = r[f"{how}/{name}"]
                assert ulp_distance32(got, expected) <= MEAN_ULPS, f"{how}/{name}: {got} vs single process {expected}"
        assert results[0][f"shard_map/{name}"] == results[1][f"shard_map/{name}"]  # one replicated value
    expected = np.asarray(jax.jit(lambda d: worker.per_example(jaxloss, d))(data))
    for r in results:
        np.testing.assert_array_equal(np.asarray(r["per_example"], np.float32), expected)
