"""Smoke test of the speed suite: it runs end to end at a tiny size and writes a well-formed result.

Nothing here is timed or compared: the figures of a tiny run mean nothing. What must hold is the shape of
the output that ``benchmarks/plot.py``, the README table and the closing notes read.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import sys

import numpy as np

# Loaded by path: the suite lives beside the package, not in it, and pytest may not put the repository root
# on sys.path (no tests/__init__.py).
_RUN_PY = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
_spec = importlib.util.spec_from_file_location("_jaxloss_benchmarks_run", _RUN_PY)
run = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))  # dataclasses look it up there
_spec.loader.exec_module(run)

# jaxloss and its baseline compute the same loss on well-scaled float32 inputs (not a timing, not accuracy).
VALUE_RTOL = 256 * float(np.finfo(np.float32).eps)
WORKLOADS = run.WORKLOADS
MODES = run.MODES
RESULT_KEYS = {
    "workload",
    "mode",
    "dtype",
    "shape",
    "elements",
    "impl",
    "baseline",
    "median_s",
    "min_s",
    "q1_s",
    "q3_s",
    "timed_calls",
    "cpu_median_s",
    "cpu_ratio_to_baseline",
    "first_call_s",
    "ratio_to_baseline",
    "effective_bytes",
    "effective_Bps",
    "fraction_of_copy",
    "value",
    "value_rel_diff_to_baseline",
}


def test_suite_runs_and_writes_its_result(tmp_path):
    out_path = tmp_path / "tiny.json"
    repeats = 2
    argv = ["--sizes", "512", "--dtype", "float32", "--repeats", str(repeats), "--warmup", "0", "--block", "1"]
    argv += ["--copy-bytes", str(2**16), "--no-torch", "--keep-caches", "--quiet", "--json", str(out_path)]
    returned = run.main(argv)
    written = json.loads(out_path.read_text())
    assert written["results"] == json.loads(json.dumps(returned["results"]))

    meta = written["meta"]
    assert meta["backend"] and meta["device_kind"] and meta["versions"]["jax"]
    assert meta["copy"]["bandwidth_Bps"] > 0 and meta["copy"]["bytes_copied"] == 2**16
    assert meta["copy"]["jitted_copy"]["materialised"] is True
    assert written["torch_skipped"] == "disabled by --no-torch"

    results = written["results"]
    for r in results:
        assert set(r) == RESULT_KEYS, sorted(set(r) ^ RESULT_KEYS)
        assert r["timed_calls"] == repeats
        assert r["median_s"] > 0 and r["first_call_s"] > 0 and r["effective_Bps"] > 0
        assert math.isfinite(r["value"]), r
    # Every workload x mode, each with jaxloss and its baseline side by side; a flat size N gives the
    # entropies rows of 256 classes.
    cases = {(r["workload"], r["mode"], tuple(r["shape"])) for r in results}
    expected = {(w, m, (512,) if w in ("bce", "mse") else (2, 256)) for w in WORKLOADS for m in MODES}
    assert cases == expected
    for case in cases:
        impls = {r["impl"]: r for r in results if (r["workload"], r["mode"], tuple(r["shape"])) == case}
        base = run.BASELINE[case[0]]
        assert {"jaxloss", base} <= set(impls), case
        assert impls[base]["ratio_to_baseline"] == 1.0
        assert impls["jaxloss"]["value_rel_diff_to_baseline"] < VALUE_RTOL, (case, impls["jaxloss"]["value"])
    # The table the README uses renders every case.
    table = run.markdown_table(written)
    assert table.count("\n") == 1 + len(cases)
