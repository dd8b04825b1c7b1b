"""Speed of jaxloss beside its peers, side by side, on the default device.

Run from the repository root::

    python -m benchmarks.run [--sizes 1048576,128x32768] [--dtype float32,bfloat16] [--json out.json]
                             [--repeats 20] [--workloads bce,mse,...] [--modes forward,value_and_grad]

What is timed, in one process: BCE mean, MSE mean, ``entropy_from_logits`` and ``entropy`` (both averaged
over rows, so that every implementation returns one scalar), and ``ce_with_logits`` with integer labels (the
mean categorical cross-entropy over rows; optax: ``softmax_cross_entropy_with_integer_labels(...).mean()``),
forward alone and value + gradient with respect to the predictions (``jax.value_and_grad(f)``). Each is
computed by jaxloss, by optax where optax has the loss, by plain ``jnp`` formulations, and by torch when it is
importable (eager, on CUDA when JAX runs on a GPU and torch sees one). The ratio column is time / time of the
baseline: optax for BCE, MSE and ``ce_with_logits``, the naive ``-(softmax * log_softmax).sum(-1)`` for
``entropy_from_logits``, ``entr(p).sum(-1)`` for ``entropy``.

Method: every implementation is wrapped in one outer ``jax.jit``. Its first call is timed after
``jax.clear_caches()`` (trace + compile + one run: "first call"). Then ``--warmup`` calls, then the
implementations of one case take turns in rounds of ``--block`` calls (each round led by the next one)
until each has ``--repeats`` timed calls; each call is timed alone, ending in ``block_until_ready``.
The median is reported (min and quartiles are in the JSON). Taking turns keeps drift on a shared
machine out of the ratios. The JSON also records the median process CPU time per call (all threads of
this process: on a CPU backend the figure that other programs on the machine disturb least; on an
accelerator it is host time only).

Inputs are seeded (``jax.random.key(0)``) and drawn on the device: logits and predictions ~ N(0, 3^2),
hard labels in {0, 1} in the input dtype, probabilities = softmax of N(0, 3^2) logits cast to the dtype,
class indices (``ce_with_logits``) uniform in [0, C), int32.

Bandwidth: "effective" bytes count every input read once plus the gradient written once (forward: inputs
only). The reference is a device-to-device copy of ``--copy-bytes`` (default 1 GiB) measured in the same
run: torch ``y.copy_(x)`` on CUDA, else CuPy ``cupy.copyto``, else on a GPU a jitted ``jnp.copy`` whose
output buffer is checked to be a new one; on CPU a NumPy ``np.copyto`` (one thread; the jitted copy is
recorded beside it). A copy moves 2 bytes per byte copied (read + write).

Sizes: a token ``N`` is a flat size, ``RxC`` a row shape. Elementwise losses (BCE, MSE) run at the element
count of every token; row losses (the entropies, cross-entropy) at every ``RxC`` token and at
``(N // 256) x 256`` for a flat ``N``. Defaults: ``1048576`` on CPU (BCE and MSE at 2^20, the row losses at
4096 x 256; without ``--sizes``, cross-entropy also at 256 x 32768, a vocabulary-sized row) and
``268435456,8192x32768`` on an accelerator (BCE and MSE at 2^28, the row losses at 2^20 x 256 and 8192 x 32768).
At the accelerator sizes one case holds a few GiB (1 GiB per float32 array: inputs, gradient and the
implementations' intermediates) plus the 2 GiB of the copy reference while it is measured.

Smoke check (CI)::

    python -m benchmarks.run --smoke

runs every workload x mode once at a tiny size (float32, 512 elements; the row losses at 2 x 256), writes and
re-reads the JSON, and checks its shape (the fields ``benchmarks/plot.py``, the README table and the notes read)
and that jaxloss agrees with its baseline on every case. It exits non-zero on a failed check. Its timings mean
nothing and are not printed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

WORKLOADS = ("bce", "mse", "entropy_from_logits", "entropy", "ce_with_logits")
MODES = ("forward", "value_and_grad")
DTYPES = ("float32", "bfloat16", "float16")
BASELINE = {
    "bce": "optax",
    "mse": "optax",
    "entropy_from_logits": "jnp naive",
    "entropy": "jnp entr",
    "ce_with_logits": "optax",
}
ROW_WIDTH_FOR_FLAT = 256
DEFAULT_SIZES = {"cpu": "1048576", "accelerator": "268435456,8192x32768"}
# Row shapes a workload also runs at when --sizes is not given (beside those of DEFAULT_SIZES), per backend kind.
DEFAULT_EXTRA_SHAPES = {"cpu": {"ce_with_logits": [(256, 32768)]}, "accelerator": {}}
GIB = 2**30


# --------------------------------------------------------------------------- implementations


@dataclass(frozen=True)
class Impl:
    """One implementation of one workload: ``fn(*inputs) -> scalar``, differentiated w.r.t. ``inputs[0]``."""

    name: str
    framework: str  # "jax" or "torch"
    fn: Callable


def _jax_impls(workload: str) -> list[Impl]:
    import optax
    from jax.scipy.special import entr

    import jaxloss

    if workload == "bce":
        return [
            Impl("jaxloss", "jax", lambda z, y: jaxloss.bce_with_logits(z, y)),
            Impl("optax", "jax", lambda z, y: optax.sigmoid_binary_cross_entropy(z, y).mean()),
            # The textbook "max form" (TensorFlow's): one exp and one log1p per element.
            Impl("jnp max-form", "jax", lambda z, y: jnp.mean(jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-abs(z))))),
        ]
    if workload == "mse":
        return [
            Impl("jaxloss", "jax", lambda p, t: jaxloss.mse(p, t)),
            Impl("optax", "jax", lambda p, t: optax.squared_error(p, t).mean()),
        ]
    if workload == "entropy_from_logits":
        return [
            Impl("jaxloss", "jax", lambda lg: jaxloss.entropy_from_logits(lg).mean()),
            Impl("jnp naive", "jax", lambda lg: -(jax.nn.softmax(lg) * jax.nn.log_softmax(lg)).sum(-1).mean()),
        ]
    if workload == "entropy":
        return [
            Impl("jaxloss", "jax", lambda p: jaxloss.entropy(p).mean()),
            Impl("jnp entr", "jax", lambda p: entr(p).sum(-1).mean()),
        ]
    if workload == "ce_with_logits":  # integer labels
        return [
            Impl("jaxloss", "jax", lambda lg, k: jaxloss.ce_with_logits(lg, k)),
            Impl("optax", "jax", lambda lg, k: optax.softmax_cross_entropy_with_integer_labels(lg, k).mean()),
        ]
    raise ValueError(f"benchmarks.run: unknown workload {workload!r}; expected one of {WORKLOADS}.")


def _torch_impl(workload: str, torch) -> Impl:
    f = torch.nn.functional
    fns = {
        "bce": lambda z, y: f.binary_cross_entropy_with_logits(z, y),
        "mse": lambda p, t: f.mse_loss(p, t),
        "entropy_from_logits": lambda lg: -(f.softmax(lg, -1) * f.log_softmax(lg, -1)).sum(-1).mean(),
        "entropy": lambda p: torch.special.entr(p).sum(-1).mean(),
        "ce_with_logits": lambda lg, k: f.cross_entropy(lg, k),
    }
    return Impl("torch", "torch", fns[workload])


def import_torch():
    """torch, or None with the reason (torch is an optional peer)."""
    try:
        import torch
    except ImportError as err:
        return None, f"torch not importable ({err})"
    return torch, None


# --------------------------------------------------------------------------- inputs


def parse_sizes(text: str) -> list[tuple[int, ...]]:
    """'1048576,128x32768' -> [(1048576,), (128, 32768)]; '1e6' and '2**20' are accepted for flat sizes."""
    sizes = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        try:
            if "x" in token:
                shape = tuple(int(part) for part in token.split("x"))
                if len(shape) != 2:
                    raise ValueError
            else:
                base, _, power = token.replace("^", "**").partition("**")
                shape = (int(base) ** int(power) if power else int(float(base)),)
        except ValueError:
            raise SystemExit(
                f"benchmarks.run: --sizes expects N, B^P or RxC tokens separated by commas; got {token!r}. "
                "Write e.g. --sizes 1048576,2^20,128x32768."
            ) from None
        if min(shape) < 1:
            raise SystemExit(f"benchmarks.run: sizes must be positive; got {token!r}.")
        sizes.append(shape)
    return sizes


def shapes_for(workload: str, sizes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The distinct shapes a workload runs at (see the module docstring)."""
    out: list[tuple[int, ...]] = []
    for shape in sizes:
        if workload in ("bce", "mse"):
            candidate = (math.prod(shape),)
        elif len(shape) == 2:
            candidate = shape
        else:
            candidate = (max(shape[0] // ROW_WIDTH_FOR_FLAT, 1), ROW_WIDTH_FOR_FLAT)
        if candidate not in out:
            out.append(candidate)
    return out


def make_inputs(workload: str, shape: tuple[int, ...], dtype) -> tuple[jax.Array, ...]:
    """Seeded, non-zero inputs drawn on the default device."""
    k1, k2 = jax.random.split(jax.random.key(0))
    x = 3.0 * jax.random.normal(k1, shape, jnp.float32)
    if workload == "bce":
        y = jax.random.bernoulli(k2, 0.5, shape)
        return x.astype(dtype), y.astype(dtype)
    if workload == "mse":
        return x.astype(dtype), jax.random.normal(k2, shape, jnp.float32).astype(dtype)
    if workload == "entropy_from_logits":
        return (x.astype(dtype),)
    if workload == "ce_with_logits":
        return x.astype(dtype), jax.random.randint(k2, shape[:-1], 0, shape[-1], jnp.int32)
    return (jax.nn.softmax(x, axis=-1).astype(dtype),)  # entropy: rows of probabilities


def effective_bytes(inputs: Sequence, mode: str) -> int:
    """Inputs read once, plus (value + grad) the gradient w.r.t. the first input written once."""
    read = sum(int(x.size) * x.dtype.itemsize for x in inputs)
    return read + (int(inputs[0].size) * inputs[0].dtype.itemsize if mode == "value_and_grad" else 0)


# --------------------------------------------------------------------------- timing


@dataclass
class Runner:
    """A prepared implementation of one case: ``call()`` runs it once and waits for the result."""

    impl: Impl
    call: Callable[[], object]
    value: Callable[[object], float]
    first_call_s: float = float("nan")
    samples: list[float] = field(default_factory=list)
    cpu_samples: list[float] = field(default_factory=list)


def _jax_runner(impl: Impl, mode: str, inputs) -> Runner:
    fn = impl.fn if mode == "forward" else jax.value_and_grad(impl.fn)
    jitted = jax.jit(fn)

    def call():
        return jax.block_until_ready(jitted(*inputs))

    def value(out):
        return float(out if mode == "forward" else out[0])

    return Runner(impl, call, value)


def _torch_runner(impl: Impl, mode: str, inputs, torch, device) -> Runner:
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[str(inputs[0].dtype)]
    targs = [
        torch.from_numpy(np.asarray(x, np.int64)).to(device=device)  # class indices: int64, as torch wants them
        if jnp.issubdtype(x.dtype, jnp.integer)
        else torch.from_numpy(np.asarray(x, np.float32)).to(device=device, dtype=tdtype)
        for x in inputs
    ]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    if mode == "forward":

        def call():
            with torch.no_grad():
                out = impl.fn(*targs)
            sync()
            return out
    else:
        lead = targs[0].requires_grad_(True)

        def call():
            loss = impl.fn(*targs)
            (grad,) = torch.autograd.grad(loss, lead)
            sync()
            return loss, grad

    def value(out):
        return float((out if mode == "forward" else out[0]).detach().float().cpu())

    return Runner(impl, call, value)


def time_case(runners: Sequence[Runner], *, repeats: int, warmup: int, block: int, clear_caches: bool = True) -> None:
    """First call of each runner (fresh caches), warm-up, then ``repeats`` timed calls taken in turns."""
    for r in runners:
        if clear_caches:
            jax.clear_caches()
        start = time.perf_counter()
        r.call()
        r.first_call_s = time.perf_counter() - start
        for _ in range(warmup):
            r.call()
    turn = 0
    while any(len(r.samples) < repeats for r in runners):
        # Each round starts with the next implementation, so that none is always the first after a switch.
        for r in runners[turn % len(runners) :] + runners[: turn % len(runners)]:
            for _ in range(min(block, repeats - len(r.samples))):
                start, cpu = time.perf_counter(), time.process_time()
                r.call()
                r.samples.append(time.perf_counter() - start)
                r.cpu_samples.append(time.process_time() - cpu)
        turn += 1


def _median_time(fn: Callable[[], object], sync: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn(); sync()`` after two untimed calls."""
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _copy_entry(method: str, nbytes: int, seconds: float) -> dict:
    return {"method": method, "bytes_copied": nbytes, "seconds": seconds, "bandwidth_Bps": 2 * nbytes / seconds}


def _torch_copy(n: int, repeats: int) -> dict | None:
    torch, _ = import_torch()
    if torch is None or not torch.cuda.is_available():
        return None
    src = torch.ones(n, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    seconds = _median_time(lambda: dst.copy_(src), torch.cuda.synchronize, repeats)
    return _copy_entry("torch y.copy_(x) (CUDA)", 4 * n, seconds)


def _cupy_copy(n: int, repeats: int) -> dict | None:
    try:
        import cupy
    except ImportError:
        return None
    src = cupy.ones(n, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    seconds = _median_time(lambda: cupy.copyto(dst, src), cupy.cuda.Device().synchronize, repeats)
    return _copy_entry("cupy.copyto(y, x)", 4 * n, seconds)


def _numpy_copy(n: int, repeats: int) -> dict:
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    seconds = _median_time(lambda: np.copyto(dst, src), lambda: None, repeats)
    return _copy_entry("numpy np.copyto(dst, src) (one thread)", 4 * n, seconds)


def _jitted_copy(n: int, repeats: int) -> dict:
    src = jnp.ones(n, jnp.float32)
    copy = jax.jit(jnp.copy)
    out = copy(src)
    materialised = out.unsafe_buffer_pointer() != src.unsafe_buffer_pointer()
    seconds = _median_time(lambda: jax.block_until_ready(copy(src)), lambda: None, repeats)
    return {**_copy_entry("jax.jit(jnp.copy)", 4 * n, seconds), "materialised": bool(materialised)}


def copy_bandwidth(nbytes: int, repeats: int = 10) -> dict:
    """Device-to-device copy speed (bytes read + written per second) and how it was measured.

    Accelerator: torch ``y.copy_(x)``, else CuPy, else the jitted copy (checked to write a new buffer).
    CPU: ``np.copyto``. The jitted copy is always recorded beside the reference as ``jitted_copy``.
    """
    n = max(nbytes // 4, 1)
    if jax.default_backend() == "cpu":
        result = _numpy_copy(n, repeats)
    else:
        result = _torch_copy(n, repeats) or _cupy_copy(n, repeats)
    jitted = _jitted_copy(n, repeats)
    if result is None:
        if not jitted["materialised"]:
            raise RuntimeError("benchmarks.run: the jitted copy returned its input buffer; there is no copy reference.")
        result = dict(jitted)
    result["jitted_copy"] = jitted
    return result


# --------------------------------------------------------------------------- the run


def meta(argv: Sequence[str], copy: dict) -> dict:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    device = jax.devices()[0]
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.run " + " ".join(argv),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("jax", "jaxlib", "optax", "numpy", "jaxloss", "torch", "cupy")},
        "copy": copy,
    }


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    backend = jax.default_backend()
    sizes = parse_sizes(args.sizes or DEFAULT_SIZES["cpu" if backend == "cpu" else "accelerator"])
    torch, torch_skip = (None, "disabled by --no-torch") if args.no_torch else import_torch()
    torch_device = None
    if torch is not None:
        torch_device = "cuda" if backend == "gpu" and torch.cuda.is_available() else "cpu"
        if backend != "cpu" and torch_device == "cpu":
            torch, torch_skip = None, f"torch sees no device for JAX's backend {backend!r}"
    copy = copy_bandwidth(args.copy_bytes, repeats=max(5, min(args.repeats, 20)))
    results = []
    for workload in args.workloads:
        impls = _jax_impls(workload)
        if torch is not None:
            impls.append(_torch_impl(workload, torch))
        shapes = shapes_for(workload, sizes)
        if args.sizes is None:
            extra = DEFAULT_EXTRA_SHAPES["cpu" if backend == "cpu" else "accelerator"].get(workload, [])
            shapes += [s for s in extra if s not in shapes]
        for shape in shapes:
            for dtype_name in args.dtype:
                inputs = make_inputs(workload, shape, jnp.dtype(dtype_name))
                for mode in args.modes:
                    runners = [
                        _jax_runner(i, mode, inputs)
                        if i.framework == "jax"
                        else _torch_runner(i, mode, inputs, torch, torch_device)
                        for i in impls
                    ]
                    time_case(
                        runners,
                        repeats=args.repeats,
                        warmup=args.warmup,
                        block=args.block,
                        clear_caches=not args.keep_caches,
                    )
                    results.extend(_records(workload, mode, dtype_name, shape, inputs, runners, copy))
                    _print_case(results[-len(runners) :], file=args.log)
                    if args.json:  # after every case, so that a run cut short keeps what it measured
                        partial = {"meta": meta(argv, copy), "torch_skipped": torch_skip, "results": results}
                        _write_json(args.json, partial)
                del inputs
    out = {"meta": meta(argv, copy), "torch_skipped": torch_skip, "results": results}
    return out


def _write_json(path: str, out: dict) -> None:
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


def _records(workload, mode, dtype_name, shape, inputs, runners, copy) -> list[dict]:
    nbytes = effective_bytes(inputs, mode)
    medians = {r.impl.name: statistics.median(r.samples) for r in runners}
    cpu_medians = {r.impl.name: statistics.median(r.cpu_samples) for r in runners}
    values = {r.impl.name: r.value(r.call()) for r in runners}
    base = BASELINE[workload]
    records = []
    for r in runners:
        q = statistics.quantiles(r.samples, n=4) if len(r.samples) > 1 else [r.samples[0]] * 3
        median = medians[r.impl.name]
        value = values[r.impl.name]
        records.append(
            {
                "workload": workload,
                "mode": mode,
                "dtype": dtype_name,
                "shape": list(shape),
                "elements": math.prod(shape),
                "impl": r.impl.name,
                "baseline": base,
                "median_s": median,
                "min_s": min(r.samples),
                "q1_s": q[0],
                "q3_s": q[2],
                "timed_calls": len(r.samples),
                "cpu_median_s": statistics.median(r.cpu_samples),
                "cpu_ratio_to_baseline": statistics.median(r.cpu_samples) / cpu_medians[base]
                if base in cpu_medians
                else None,
                "first_call_s": r.first_call_s,
                "ratio_to_baseline": median / medians[base] if base in medians else None,
                "effective_bytes": nbytes,
                "effective_Bps": nbytes / median,
                "fraction_of_copy": nbytes / median / copy["bandwidth_Bps"],
                "value": value,
                "value_rel_diff_to_baseline": abs(value - values[base]) / max(abs(values[base]), 1e-30)
                if base in values
                else None,
            }
        )
    return records


def _print_case(records: Sequence[dict], file) -> None:
    if file is None:
        return
    r0 = records[0]
    shape = "x".join(map(str, r0["shape"]))
    print(f"{r0['workload']:<20} {r0['mode']:<15} {r0['dtype']:<9} {shape:>12}", file=file)
    for r in records:
        ratio = "" if r["ratio_to_baseline"] is None else f"{r['ratio_to_baseline']:6.3f}x"
        print(
            f"    {r['impl']:<13} {r['median_s'] * 1e3:10.3f} ms {ratio:>8} {r['effective_Bps'] / 1e9:8.2f} GB/s "
            f"{100 * r['fraction_of_copy']:6.1f}% of copy   first call {r['first_call_s'] * 1e3:8.1f} ms",
            file=file,
            flush=True,
        )


def markdown_table(out: dict) -> str:
    """One line per case: each implementation's median time and its ratio to the baseline."""
    results = out["results"]
    impls = list(dict.fromkeys(r["impl"] for r in results))
    lines = [
        "| workload | mode | dtype | shape | " + " | ".join(impls) + " | jaxloss / baseline | jaxloss % of copy |",
        "|---" * (4 + len(impls) + 2) + "|",
    ]
    cases = dict.fromkeys((r["workload"], r["mode"], r["dtype"], tuple(r["shape"])) for r in results)
    for case in cases:
        rows = {r["impl"]: r for r in results if (r["workload"], r["mode"], r["dtype"], tuple(r["shape"])) == case}
        cells = [f"{rows[i]['median_s'] * 1e3:.3f} ms" if i in rows else "—" for i in impls]
        mine = rows.get("jaxloss")
        ratio = (
            f"**{mine['ratio_to_baseline']:.3f}x** ({mine['baseline']})" if mine and mine["ratio_to_baseline"] else "—"
        )
        frac = f"{100 * mine['fraction_of_copy']:.1f}%" if mine else "—"
        shape = "x".join(map(str, case[3]))
        lines.append(f"| {case[0]} | {case[1]} | {case[2]} | {shape} | " + " | ".join(cells) + f" | {ratio} | {frac} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- smoke check (--smoke)

SMOKE_SIZE = 512  # a flat size: BCE and MSE at 512 elements, the entropies at 2 x 256
SMOKE_REPEATS = 2
SMOKE_COPY_BYTES = 2**16
# jaxloss and its baseline compute the same loss on well-scaled float32 inputs (an agreement check, not accuracy).
SMOKE_VALUE_RTOL = 256 * float(np.finfo(np.float32).eps)
RESULT_KEYS = frozenset(
    {
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
)


def smoke_argv(json_path: str) -> list[str]:
    """The tiny run of ``--smoke``: every workload and mode, float32, no torch, JSON written to ``json_path``."""
    argv = ["--sizes", str(SMOKE_SIZE), "--dtype", "float32", "--repeats", str(SMOKE_REPEATS), "--warmup", "0"]
    argv += ["--block", "1", "--copy-bytes", str(SMOKE_COPY_BYTES), "--no-torch", "--keep-caches", "--quiet"]
    return [*argv, "--json", json_path]


def smoke_failures(returned: dict, written: dict) -> list[str]:
    """What is wrong with a smoke run's result (``returned`` by ``main``, ``written`` to its JSON); [] if nothing."""
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    check(written["results"] == json.loads(json.dumps(returned["results"])), "the JSON differs from the returned run")
    meta = written["meta"]
    check(meta["backend"] and meta["device_kind"] and meta["versions"]["jax"], f"meta incomplete: {meta}")
    copy = meta["copy"]
    check(copy["bandwidth_Bps"] > 0 and copy["bytes_copied"] == SMOKE_COPY_BYTES, f"copy reference: {copy}")
    check(copy["jitted_copy"]["materialised"] is True, f"the jitted copy did not write a new buffer: {copy}")
    check(written["torch_skipped"] == "disabled by --no-torch", f"torch_skipped: {written['torch_skipped']!r}")
    results = written["results"]
    for r in results:
        keys = set(r)
        check(keys == RESULT_KEYS, f"record fields differ by {sorted(keys ^ RESULT_KEYS)}: {r}")
        check(r.get("timed_calls") == SMOKE_REPEATS, f"timed_calls != {SMOKE_REPEATS}: {r}")
        positive = ("median_s", "first_call_s", "effective_Bps")
        check(all(isinstance(r.get(k), float) and r[k] > 0 for k in positive), f"non-positive {positive}: {r}")
        check(isinstance(r.get("value"), float) and math.isfinite(r["value"]), f"non-finite value: {r}")
    # Every workload x mode, each with jaxloss and its baseline side by side; the flat size gives the entropies
    # rows of ROW_WIDTH_FOR_FLAT classes.
    cases = {(r["workload"], r["mode"], tuple(r["shape"])) for r in results}
    rows = SMOKE_SIZE // ROW_WIDTH_FOR_FLAT
    expected = {
        (w, m, (SMOKE_SIZE,) if w in ("bce", "mse") else (rows, ROW_WIDTH_FOR_FLAT)) for w in WORKLOADS for m in MODES
    }
    check(cases == expected, f"cases differ: missing {sorted(expected - cases)}, extra {sorted(cases - expected)}")
    for case in sorted(cases):
        impls = {r["impl"]: r for r in results if (r["workload"], r["mode"], tuple(r["shape"])) == case}
        base = BASELINE[case[0]]
        if not {"jaxloss", base} <= set(impls):
            failures.append(f"{case}: jaxloss or its baseline {base!r} missing (have {sorted(impls)})")
            continue
        check(impls[base]["ratio_to_baseline"] == 1.0, f"{case}: baseline ratio {impls[base]['ratio_to_baseline']}")
        diff = impls["jaxloss"]["value_rel_diff_to_baseline"]
        check(
            diff is not None and diff < SMOKE_VALUE_RTOL,
            f"{case}: jaxloss {impls['jaxloss']['value']!r} vs {base} {impls[base]['value']!r} "
            f"(relative difference {diff}, allowed < {SMOKE_VALUE_RTOL:.1e})",
        )
    # The table the README uses renders every case.
    table = markdown_table(written)
    check(table.count("\n") == 1 + len(cases), f"the markdown table has {table.count(chr(10)) - 1} case lines")
    return failures


def smoke() -> dict:
    """``--smoke``: the tiny run and its checks; SystemExit (non-zero) listing every failed check."""
    with tempfile.TemporaryDirectory(prefix="jaxloss-bench-smoke-") as tmp:
        json_path = os.path.join(tmp, "smoke.json")
        returned = main(smoke_argv(json_path))
        with open(json_path) as f:
            written = json.load(f)
    failures = smoke_failures(returned, written)
    if failures:
        raise SystemExit("benchmarks.run --smoke: FAILED\n  " + "\n  ".join(failures))
    print(
        f"benchmarks.run --smoke: OK, {len(written['results'])} results, {len(WORKLOADS) * len(MODES)} cases "
        f"({', '.join(WORKLOADS)} x {', '.join(MODES)}; float32, {SMOKE_SIZE} elements, backend "
        f"{written['meta']['backend']}): output well-formed, jaxloss within {SMOKE_VALUE_RTOL:.1e} of its baseline "
        "on every case. No timings: a run this small measures nothing."
    )
    return returned


def _csv(allowed: Sequence[str], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{what} must be a comma-separated subset of {','.join(allowed)}; got {text!r}"
            )
        return items

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        default=None,
        help="N, B^P or RxC tokens, comma-separated (default: 1048576 on CPU, 268435456,8192x32768 otherwise)",
    )
    p.add_argument("--dtype", type=_csv(DTYPES, "--dtype"), default=["float32", "bfloat16"], help="input dtypes")
    p.add_argument("--workloads", type=_csv(WORKLOADS, "--workloads"), default=list(WORKLOADS))
    p.add_argument("--modes", type=_csv(MODES, "--modes"), default=list(MODES))
    p.add_argument("--repeats", type=int, default=20, help="timed calls per implementation (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first one")
    p.add_argument("--block", type=int, default=5, help="calls per turn when implementations take turns")
    p.add_argument("--copy-bytes", type=int, default=GIB, help="size of the reference copy (default 1 GiB)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--markdown", action="store_true", help="print a markdown table at the end")
    p.add_argument("--no-torch", action="store_true", help="leave torch out even when importable")
    p.add_argument(
        "--keep-caches",
        action="store_true",
        help="do not clear JAX's caches before each first call (faster; first-call times then flatter jaxloss)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-case lines")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="CI check, alone: every workload once at a tiny size; checks the output and that jaxloss agrees with "
        "its baseline; exits non-zero on failure; no timings",
    )
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.smoke:
        if argv != ["--smoke"]:
            raise SystemExit("benchmarks.run: --smoke takes no other options.")
        return smoke()
    if args.repeats < 1 or args.block < 1 or args.warmup < 0:
        raise SystemExit("benchmarks.run: --repeats and --block must be >= 1 and --warmup >= 0.")
    args.log = None if args.quiet else sys.stdout
    out = run(args, argv)
    copy = out["meta"]["copy"]
    if not args.quiet:
        print(
            f"\ncopy reference: {copy['method']}, {copy['bytes_copied'] / GIB:.2f} GiB: "
            f"{copy['bandwidth_Bps'] / 1e9:.2f} GB/s (read + write); jitted copy "
            f"{copy['jitted_copy']['bandwidth_Bps'] / 1e9:.2f} GB/s. {out['torch_skipped'] or ''}"
        )
    if args.markdown:
        print(markdown_table(out))
    if args.json:
        _write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
