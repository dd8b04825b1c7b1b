"""Every instruction-set variant of the C++ CPU row kernels (jaxloss/_kernels/cpu_kernel.cc, built by setup.py into
jaxloss._kernels._cpu) against float64 references, and against each other.

Each variant compiled into this build that this CPU supports (``cpu.variants()``: e.g. v4, v3, baseline) is called
directly through ``jaxloss._kernels.cpu`` -- not through the library's selection -- so the baseline (SSE2) code is
tested on a machine whose best variant is v4.

Shapes take every branch of the kernels: one row of every width class (fewer than, exactly, and more than the 8
lanes of a vector, the 2 vectors of the max pass, the 4-vector blocks of the sums in both kernels), and multi-row
inputs whose row count is not a multiple of ParallelRows' chunk
(per_chunk = 2^15 / cols rows, threaded for >= 2^16 entries): (10000, 8) is 3 chunks of 4096 rows, the last
partial; (3001, 257) 24 chunks of 127; (37, 4099) 6 chunks of 7.

The whole suite expects the extension to be built (a package built with a C++ compiler): if it was not,
``test_kernels_are_available`` fails, saying why. An install without a compiler runs tests/test_smoke.py instead
(.ci/run, second leg).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxloss._kernels import cpu

try:  # the repository root on sys.path (python -m pytest, or tests/ as a package)
    from tests import ulp
except ImportError:  # pytest's rootdir-less "prepend" import mode puts tests/ itself on sys.path
    import ulp


F32 = np.float32
EPS = float(np.finfo(F32).eps)
K_FLOOR = -87.0  # cpu_kernel.cc: classes with d = l - max(l) below this get e = 0 (the flush exclusion, tests/ulp.py)
DTYPES = [F32, ml_dtypes.bfloat16, np.float16]
DTYPE_IDS = ["float32", "bfloat16", "float16"]
WIDTHS = (1, 2, 3, 7, 8, 9, 15, 16, 17, 127, 128, 129, 255, 256, 257, 4095, 4096, 4099)
# One row of each width; then several rows: single-threaded (37 x 129: < 2^16 entries), a leading batch shape, and
# the threaded branch with a partial last chunk.
SHAPES = [(1, w) for w in WIDTHS] + [(37, 129), (3, 5, 17), (10000, 8), (3001, 257), (37, 4099)]
VARIANTS = cpu.variants()


def test_kernels_are_available():
    assert cpu.available(), f"the C++ CPU kernels were not built with the package: {cpu.status()}"
    assert cpu.best() == VARIANTS[0]
    assert "baseline" in VARIANTS
    assert cpu.status().startswith(f"available: variants {', '.join(VARIANTS)}; using {VARIANTS[0]}")


# --- inputs and float64 references ---------------------------------------------------------------------------


def logits_for(shape, dtype, seed):
    """Normal logits (scale 3); rows wider than 2 also get classes at -inf (every 7th) and a dominant class."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=shape)
    if shape[-1] > 2:
        x[..., ::7] = -np.inf
        x[..., 1] = 40.0
    return x.astype(dtype)


def probabilities_for(shape, dtype, seed):
    """Rows of probabilities with some exact zeros (every 5th entry)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=shape)
    if shape[-1] > 1:
        p[..., ::5] = 0.0
    p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
    return p.astype(dtype)


def logits_reference(logits):
    """Float64 entropy of softmax per row, its gradient, and the error scale of each gradient entry.

    H = log1p(s1) + sum(e u) / (1 + s1) as tests/test_entropy_kernel.py's ``reference`` (s1 summed without the top
    class), and dH/dl_i = -p_i (d_i + t / z), d = l - max(l), p = e / z, z = 1 + s1, t = sum(e u), u = -d;
    classes at -inf get 0.
    """
    lg = np.asarray(logits, np.float64)
    m = lg.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    d = lg - m
    e = np.exp(d)
    u = np.where(e > 0, -d, 0.0)
    top = lg == m
    s1 = np.where(top, 0.0, e).sum(axis=-1) + (top.sum(axis=-1) - 1)
    z = 1 + s1
    t = (e * u).sum(axis=-1)
    h = np.log1p(s1) + t / z
    p = e / z[..., None]
    tz = (t / z)[..., None]
    grad = np.where(e > 0, p * (u - tz), 0.0)
    # Error scale of dH/dl_i as the kernel forms it in float32, (e_i * (-1/z)) * (d_i + t/z): p_i carries the exp's
    # ~1.1 ulp and two roundings (about 2.5 eps relative); d_i + t/z is the sum of two rounded numbers, rounded,
    # so its absolute error is about eps (|d_i| + t/z) -- relative to g_i that is unbounded where d_i ~ -t/z (a
    # cancellation), hence a per-entry bound p_i (|d_i| + t/z + 1) rather than a relative one. 8 eps of that scale
    # is about twice the worst case. Classes with d_i < -87 are dropped by the kernel (e = 0, as XLA flushes
    # subnormals): their whole gradient, p_i (|d_i| + t/z) < 2^-118, is allowed to be lost.
    scale = np.where(e > 0, p * (np.abs(np.where(e > 0, d, 0.0)) + tz + 1), 0.0)
    tol = np.where(d < K_FLOOR, 1.0, 8 * EPS) * scale
    return h, grad, tol


def probabilities_reference(probs):
    """Float64 -sum p log p per row (0 log 0 = 0), its gradient -(log p + 1) (0 at p = 0), and each gradient
    entry's tolerance.

    The kernel's float32 log is within 0.76 ulp (<= 0.76 eps |log p|) and -(lg + 1) adds one rounding (<= 0.5 eps
    (|log p| + 1)): about 1.3 eps (|log p| + 1) in all; the tolerance is 4 eps (|log p| + 1).
    """
    p = np.asarray(probs, np.float64)
    pos = p > 0
    lg = np.log(np.where(pos, p, 1.0))
    h = -(np.where(pos, p * lg, 0.0)).sum(axis=-1)
    grad = np.where(pos, -(lg + 1), 0.0)
    tol = 4 * EPS * (np.abs(lg) + 1)
    return h, grad, tol


def case(kernel, shape, dtype):
    seed = int(np.prod(shape)) + len(shape)
    if kernel == "entropy_from_logits":
        x = logits_for(shape, dtype, seed)
        return x, logits_reference(x.astype(np.float64)), ulp.ENTROPY_FROM_LOGITS_ULP
    x = probabilities_for(shape, dtype, seed)
    return x, probabilities_reference(x.astype(np.float64)), ulp.ENTROPY_ULP


def check_value(h, ref, width, bound, what):
    h = np.asarray(h)
    assert h.dtype == np.float32 and h.shape == ref.shape, what
    threshold = ulp.flush_threshold(width)
    errors = ulp.ulp_error(h, ref, F32)
    error = ulp.worst(errors, ulp.ulp_checked(ref, threshold))
    assert error.error <= bound, f"{what}: value {error}"
    flushed = ulp.flushed(ref, threshold)  # below the flush bound: within that absolute distance
    assert (np.abs(h.astype(np.float64) - ref)[flushed] <= threshold).all(), what


def check_grad(g, ref, tol, what):
    g = np.asarray(g)
    assert g.dtype == np.float32 and g.shape == ref.shape, what
    excess = np.abs(g.astype(np.float64) - ref) - tol
    bad = ~(excess <= 0)  # NaN counts as bad
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(excess, nan=np.inf), -np.inf))), g.shape)
        pytest.fail(
            f"{what}: {int(bad.sum())} gradient entries out of tolerance, e.g. at {i}: {g[i]} vs {ref[i]} "
            f"(tolerance {tol[i]:.3g})"
        )


# --- tests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kernel", cpu.KERNELS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_matches_float64(variant, kernel, dtype, shape):
    x, (h_ref, g_ref, tol), bound = case(kernel, shape, dtype)
    what = f"{variant} {kernel} {np.dtype(dtype).name} {shape}"
    h_only = cpu.value(kernel, jnp.asarray(x), variant=variant)
    h, g = cpu.value_and_grad(kernel, jnp.asarray(x), variant=variant)
    check_value(h_only, h_ref, shape[-1], bound, what + " (value handler)")
    check_value(h, h_ref, shape[-1], bound, what + " (value-and-gradient handler)")
    check_grad(g, g_ref, tol, what)


@pytest.mark.parametrize("shape", [(1, 4099), (3001, 257), (10000, 8)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kernel", cpu.KERNELS)
def test_variants_agree(kernel, dtype, shape):
    """Every variant gives the same numbers up to the contract's bounds (each is within them of the exact value, so
    two are within twice them of each other): the variants differ only in instruction selection (and FMA
    contraction, which the v3/v4 compilers may apply)."""
    if len(VARIANTS) < 2:
        pytest.skip(f"only one variant here ({', '.join(VARIANTS)})")
    x, (_, _, tol), bound = case(kernel, shape, dtype)
    out = {v: [np.asarray(a) for a in cpu.value_and_grad(kernel, jnp.asarray(x), variant=v)] for v in VARIANTS}
    h0, g0 = out[VARIANTS[-1]]  # the baseline
    for v in VARIANTS[:-1]:
        h, g = out[v]
        error = ulp.max_ulp(h, h0, F32, mask=ulp.ulp_checked(h0.astype(np.float64), ulp.flush_threshold(shape[-1])))
        assert error.error <= 2 * bound, f"{v} vs {VARIANTS[-1]}: value {error}"
        check_grad(g, g0.astype(np.float64), 2 * tol, f"{v} vs {VARIANTS[-1]} {kernel} {shape}")


def test_unknown_variant_and_kernel():
    with pytest.raises(ValueError, match="not available"):
        cpu.value("entropy", jnp.ones((2, 3)), variant="sse9")
    with pytest.raises(ValueError, match="unknown CPU kernel"):
        cpu.value("cross_entropy", jnp.ones((2, 3)))
    from jaxloss._kernels import _cpu

    assert _cpu.variants() == tuple(v for v in _cpu.variants() if v in VARIANTS or not _cpu.supported(v))
    assert _cpu.supported("baseline") is True
    with pytest.raises(ValueError):
        _cpu.supported("avx1024")
    with pytest.raises(ValueError):
        _cpu.handlers("avx1024")
    handlers = _cpu.handlers("baseline")
    assert sorted(handlers) == sorted(
        ["jaxloss_entropy_logits", "jaxloss_entropy_logits_grad", "jaxloss_entropy", "jaxloss_entropy_grad"]
    )
