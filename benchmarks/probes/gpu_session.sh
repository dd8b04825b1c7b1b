#!/usr/bin/env bash
# One call on a lent GPU machine (device tool): versions, the kernel's launch-shape sweep, the side-by-side suite,
# then the entropy_from_logits tests with the kernel running natively. Everything lands in $OUT (or ./gpu_out).
# Run from the repository root: bash benchmarks/probes/gpu_session.sh
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  python3 -c "import jax, jaxlib, optax, torch, triton, numpy; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__,
'optax', optax.__version__, 'torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__, jax.devices())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout -s INT 100 python3 -m benchmarks.probes.tune_entropy --json "$OUT/tune.json" > "$OUT/tune.txt" 2>&1
echo "tune rc=$?"
cat "$OUT/tune.txt"
timeout -s INT 250 python3 -m benchmarks.run --json "$OUT/gpu.json" --markdown > "$OUT/run.txt" 2>&1
echo "run rc=$?"
tail -45 "$OUT/run.txt"
# The kernel's tests, natively: its own file, and the accuracy / gradient / Hessian tests on the kernel path.
timeout -s INT "${TEST_SECONDS:-140}" python3 -m pytest -q -p no:cacheprovider -W default --maxfail=15 -rf \
  tests/test_entropy_kernel.py tests/test_accuracy.py tests/test_gradients.py tests/test_hessian.py \
  -k "pallas or agrees or launch or offered" > "$OUT/pytest.txt" 2>&1
echo "pytest rc=$?"
tail -25 "$OUT/pytest.txt"
