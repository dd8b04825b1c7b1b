"""Every instruction-set variant of the C++ CPU row kernels (jaxloss/_kernels/cpu_kernel.cc, built by setup.py into
jaxloss._kernels._cpu) against float64 references, and against each other: entropy from logits, entropy of
probabilities, and cross-entropy with integer labels (with its limits: labels out of range, on a class that is out,
rows with NaN, every class at -inf, classes at +inf).

Each variant compiled into this build that this CPU supports (``cpu.variants()``: e.g. v4, v3, baseline) is called
directly through ``jaxloss._kernels.cpu`` -- not through the library's selection -- so the baseline (SSE2) code is
tested on a machine whose best variant is v4.

Shapes take every branch of the kernels: one row of every width class (fewer than, exactly, and more than the
lanes of a vector -- 8, or 16 in the AVX-512 variant v4 --, the 2 vectors of the max pass, the 4-vector blocks of the
sums in every kernel), and multi-row inputs whose row count is not a multiple of ParallelRows' chunk
(per_chunk = 2^15 / cols rows, threaded for >= 2^16 entries): (10000, 8) is 3 chunks of 4096 rows, the last
partial; (3001, 257) 24 chunks of 127; (37, 4099) 6 chunks of 7. Cross-entropy also runs at 2 x 32768, a
vocabulary-sized row (two chunks of one row: threaded).

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
WIDTHS = (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 4095, 4096, 4099)
# One row of each width; then several rows: single-threaded (37 x 129: < 2^16 entries), a leading batch shape, and
# the threaded branch with a partial last chunk.
SHAPES = [(1, w) for w in WIDTHS] + [(37, 129), (3, 5, 17), (10000, 8), (3001, 257), (37, 4099)]
VARIANTS = cpu.variants()
ENTROPY_KERNELS = ("entropy_from_logits", "entropy")
CE = "softmax_cross_entropy_with_integer_labels"
CE_ULP = 4  # the value contract of softmax_cross_entropy_with_integer_labels (mpmath, rows up to 32768 classes)


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
    with np.errstate(invalid="ignore"):  # inf - inf where the value is infinite (checked above)
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
@pytest.mark.parametrize("kernel", ENTROPY_KERNELS)
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
@pytest.mark.parametrize("kernel", ENTROPY_KERNELS)
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
        [
            "jaxloss_entropy_logits",
            "jaxloss_entropy_logits_grad",
            "jaxloss_entropy",
            "jaxloss_entropy_grad",
            "jaxloss_ce_integer",
            "jaxloss_ce_integer_grad",
            "jaxloss_ce_integer_grad_scaled",
        ]
    )
    assert set(cpu.KERNELS) == {*ENTROPY_KERNELS, CE}
    with pytest.raises(TypeError, match="needs labels"):
        cpu.value(CE, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="takes no labels"):
        cpu.value("entropy", jnp.ones((2, 3)), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match=r"labels must be shaped \(2,\)"):
        cpu.value_and_grad(CE, jnp.ones((2, 3)), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"scale must be shaped \(2,\)"):
        cpu.value_and_scaled_grad(CE, jnp.ones((2, 3)), jnp.zeros(2, jnp.int32), jnp.ones(3))
    with pytest.raises(ValueError, match="no scaled gradient handler"):
        cpu.value_and_scaled_grad("entropy", jnp.ones((2, 3)), None, jnp.ones(2))


# --- cross-entropy with integer labels --------------------------------------------------------------------------


def labels_for(x, seed):
    """A class index per row: random, but every 5th row (from the second) on class 1 (the dominant class of
    ``logits_for``, a top class where the row is wider than 2) and every 5th (from the third) on class 0 (at -inf
    there: an infinite loss)."""
    rows, n = x.shape[:-1], x.shape[-1]
    k = np.random.default_rng(seed + 1).integers(0, n, size=rows).reshape(-1)
    r = np.arange(k.size)
    k = np.where(r % 5 == 1, min(1, n - 1), np.where(r % 5 == 2, 0, k))
    return k.reshape(rows).astype(np.int32)


def ce_reference(logits, labels):
    """Float64 loss log1p(s1) + (m - l_k) per row and its gradient p - onehot(k) (at a top label -s1/z), with
    each gradient entry's tolerance; for rows whose maximum is finite and labels in range.

    The kernel forms p_i = e_i * (1/z) in float32 (e within about 1.1 ulp, two roundings: about 2.5 eps relative)
    and the label's entry in double (e_k/z - 1, or -s1/z: the error of s1, a few eps relative); the tolerance is
    8 eps (p_i + |g_k|) -- about three times that. Classes with d < -87 get e = 0 (as XLA flushes them): their
    p_i < 2^-125 may be lost.
    """
    lg = np.asarray(logits, np.float64)
    k = np.asarray(labels)[..., None]
    m = lg.max(axis=-1, keepdims=True)
    d = lg - m
    e = np.exp(d)
    top = lg == m
    s1 = np.where(top, 0.0, e).sum(axis=-1, keepdims=True) + (top.sum(axis=-1, keepdims=True) - 1)
    z = 1 + s1
    lk = np.take_along_axis(lg, k, axis=-1)
    value = (np.log1p(s1) + (m - lk))[..., 0]
    p = e / z
    onehot = np.arange(lg.shape[-1]) == k
    label_grad = np.where(lk == m, -s1 / z, np.take_along_axis(p, k, axis=-1) - 1)
    grad = np.where(onehot, label_grad, p)
    tol = 8 * EPS * (p + np.where(onehot, np.abs(grad), 0.0)) + np.where(d < K_FLOOR, p, 0.0)
    return value, grad, tol


@pytest.mark.parametrize("shape", [*SHAPES, (2, 32768)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_entropy_matches_float64(variant, dtype, shape):
    seed = int(np.prod(shape)) + len(shape)
    x = logits_for(shape, dtype, seed)
    k = labels_for(x, seed)
    h_ref, g_ref, tol = ce_reference(x.astype(np.float64), k)
    what = f"{variant} {CE} {np.dtype(dtype).name} {shape}"
    h_only = cpu.value(CE, jnp.asarray(x), jnp.asarray(k), variant=variant)
    h, g = cpu.value_and_grad(CE, jnp.asarray(x), jnp.asarray(k), variant=variant)
    check_value(h_only, h_ref, shape[-1], CE_ULP, what + " (value handler)")
    check_value(h, h_ref, shape[-1], CE_ULP, what + " (value-and-gradient handler)")
    check_grad(g, g_ref, tol, what)
    if shape[-1] > 2 and k.size > 2:
        assert np.isinf(np.asarray(h).reshape(-1)[2]), what  # a label on a class at -inf
        assert np.isfinite(np.asarray(g)).all(), what


@pytest.mark.parametrize("shape", [(1, 4099), (3001, 257), (10000, 8), (2, 32768)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cross_entropy_variants_agree(dtype, shape):
    if len(VARIANTS) < 2:
        pytest.skip(f"only one variant here ({', '.join(VARIANTS)})")
    seed = int(np.prod(shape))
    x = logits_for(shape, dtype, seed)
    k = labels_for(x, seed)
    _, _, tol = ce_reference(x.astype(np.float64), k)
    out = {
        v: [np.asarray(a) for a in cpu.value_and_grad(CE, jnp.asarray(x), jnp.asarray(k), variant=v)] for v in VARIANTS
    }
    h0, g0 = out[VARIANTS[-1]]
    for v in VARIANTS[:-1]:
        h, g = out[v]
        error = ulp.max_ulp(h, h0, F32, mask=ulp.ulp_checked(h0.astype(np.float64), ulp.flush_threshold(shape[-1])))
        assert error.error <= 2 * CE_ULP, f"{v} vs {VARIANTS[-1]}: value {error}"
        check_grad(g, g0.astype(np.float64), 2 * tol, f"{v} vs {VARIANTS[-1]} {CE} {shape}")


def ce_limit_rows(n):
    """(logits, labels, value, gradient) of rows that take every special branch of the kernel, n >= 4 classes."""
    base = np.linspace(-2.0, 1.0, n)
    rows, labels, values, grads = [], [], [], []

    def add(row, label, value, grad):
        rows.append(row)
        labels.append(label)
        values.append(value)
        grads.append(grad)

    nan_row = np.full(n, np.nan)
    add(base, -1, np.nan, nan_row)  # label below the classes
    add(base, n, np.nan, nan_row)  # label past them
    add(np.where(np.arange(n) == 0, np.nan, base), 1, np.nan, nan_row)  # a NaN in the row
    add(np.full(n, -np.inf), 2, 0.0, np.zeros(n))  # every class out
    two_inf = np.where(np.arange(n) < 2, np.inf, base)
    two_inf[3] = -np.inf
    g = np.where(np.arange(n) < 2, 0.5, 0.0)
    g[1] = -0.5
    add(two_inf, 1, np.log(2.0), g)  # two classes at +inf, the label on one: they share the probability
    g = np.where(np.arange(n) < 2, 0.5, 0.0)
    g[2] = -1.0
    add(two_inf, 2, np.inf, g)  # ... the label on a finite class: out, +inf
    add(two_inf, 3, np.inf, g * (np.arange(n) != 2) - (np.arange(n) == 3))  # ... on a class at -inf
    out = base.copy()
    out[2] = -np.inf
    e = np.exp(out - out.max())
    p = e / e.sum()
    add(out, 2, np.inf, p - (np.arange(n) == 2))  # a finite row, the label on a class at -inf
    tied = base.copy()
    tied[0] = tied[-1]  # two top classes
    e = np.exp(tied - tied.max())
    p = e / e.sum()
    s1 = e.sum() - 1
    g = p.copy()
    g[0] = -s1 / e.sum()
    add(tied, 0, np.log1p(s1), g)  # the label on one of two tied top classes
    return np.array(rows), np.array(labels, np.int32), np.array(values), np.array(grads)


@pytest.mark.parametrize("n", [4, 9, 33])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_entropy_limits(variant, dtype, n):
    x, k, value, grad = ce_limit_rows(n)
    x = x.astype(dtype)
    exact_x = x.astype(np.float64)  # the logits as the kernel reads them
    h_only = np.asarray(cpu.value(CE, jnp.asarray(x), jnp.asarray(k), variant=variant))
    h, g = (np.asarray(a) for a in cpu.value_and_grad(CE, jnp.asarray(x), jnp.asarray(k), variant=variant))
    what = f"{variant} {np.dtype(dtype).name} n={n}"
    # NaN and 0 rows (values), and the gradients of every row with an infinite class: exact
    np.testing.assert_array_equal(h_only[:4], value[:4], err_msg=what)
    np.testing.assert_array_equal(h[:4], value[:4], err_msg=what)
    np.testing.assert_array_equal(g[:7], grad[:7], err_msg=what)
    for hh in (h_only, h):
        np.testing.assert_allclose(hh[4], np.log(2.0), rtol=EPS, err_msg=what)
        assert np.isposinf(hh[5:8]).all(), what
    # Rows of finite logits: against the float64 reference at the rounded logits.
    ref_v, ref_g, tol = ce_reference(exact_x[7:], k[7:])
    check_grad(g[7:], ref_g, tol, what)
    check_value(h[8:], ref_v[1:], n, CE_ULP, what)
    check_value(h_only[8:], ref_v[1:], n, CE_ULP, what)
    # ... and the same rows from the XLA formulation the kernel reproduces: the same specials, close values.
    from jaxloss._kernels import categorical

    xv, xg = categorical.integer_value_and_grad(jnp.asarray(x, F32), jnp.asarray(k), 1, None)
    xv, xg = np.asarray(xv)[:, 0], np.asarray(xg)
    np.testing.assert_array_equal(np.isnan(xv), np.isnan(h), err_msg=what)
    np.testing.assert_array_equal(np.isinf(xv), np.isinf(h), err_msg=what)
    np.testing.assert_array_equal(np.isnan(xg), np.isnan(g), err_msg=what)
    np.testing.assert_allclose(g, xg, rtol=8 * EPS, atol=8 * EPS, err_msg=what)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_entropy_one_class_and_confident_rows(variant):
    """One class: the loss and gradient are 0. A confident row (the label far on top): the loss is the tiny s1 and
    the label's gradient -s1/z keeps its digits (p - 1 would be 0 in float32)."""
    h, g = cpu.value_and_grad(CE, jnp.full((3, 1), 2.5), jnp.zeros(3, jnp.int32), variant=variant)
    np.testing.assert_array_equal(np.asarray(h), 0.0)
    np.testing.assert_array_equal(np.asarray(g), 0.0)
    x = np.array([[30.0, 0.0, -1.0, -2.0]], F32)
    h, g = (np.asarray(a) for a in cpu.value_and_grad(CE, jnp.asarray(x), jnp.zeros(1, jnp.int32), variant=variant))
    ref_v, ref_g, _ = ce_reference(x.astype(np.float64), np.zeros(1, np.int32))
    assert ref_g[0, 0] < 0 and abs(ref_g[0, 0]) < EPS
    np.testing.assert_allclose(h, ref_v, rtol=4 * EPS)
    np.testing.assert_allclose(g, ref_g, rtol=4 * EPS)


# --- cross-entropy, the scaled handler (the gradient of a weighted mean, in the logits' dtype) -------------------

SCALED_SHAPES = [(1, 1), (1, 17), (1, 4099), (37, 129), (3, 5, 17), (3001, 257), (37, 4099), (2, 32768)]
# The narrowing of the float32 gradient to 16 bits: half an ulp of the output, relative (and the smallest
# subnormal's half for float16); float32 entries below 2^-126 are flushed (XLA's mode) in every dtype.
NARROWING = {
    np.dtype(F32): (0.0, 0.0),
    np.dtype(ml_dtypes.bfloat16): (2.0**-8, 0.0),
    np.dtype(np.float16): (2.0**-11, 2.0**-25),
}


def scale_for(rows, seed):
    """A weight per row: random in (0, 1], every 4th row (from the first) 0."""
    c = np.random.default_rng(seed + 2).uniform(0.01, 1.0, size=rows).astype(F32)
    c.reshape(-1)[::4] = 0.0
    return c


def check_scaled_grad(g, ref, tol, c, dtype, what):
    """g (the kernel's, dtype) against c * ref (float64) within c * tol, the narrowing and the flush bound."""
    g = np.asarray(g)
    assert g.dtype == np.dtype(dtype), what
    rel, sub = NARROWING[np.dtype(dtype)]
    want = c[..., None].astype(np.float64) * ref
    bound = c[..., None] * tol * (1 + rel) + rel * np.abs(want) + sub + 2.0**-126
    excess = np.abs(g.astype(np.float64) - want) - bound
    bad = ~(excess <= 0)
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(excess, nan=np.inf), -np.inf))), g.shape)
        pytest.fail(f"{what}: {int(bad.sum())} entries out of tolerance, e.g. at {i}: {g[i]} vs {want[i]}")


@pytest.mark.parametrize("shape", SCALED_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_entropy_scaled_matches_float64(variant, dtype, shape):
    seed = int(np.prod(shape)) + len(shape)
    x = logits_for(shape, dtype, seed)
    k = labels_for(x, seed)
    c = scale_for(shape[:-1], seed)
    h_ref, g_ref, tol = ce_reference(x.astype(np.float64), k)
    what = f"{variant} scaled {np.dtype(dtype).name} {shape}"
    h, g = cpu.value_and_scaled_grad(CE, jnp.asarray(x), jnp.asarray(k), jnp.asarray(c), variant=variant)
    h, g = np.asarray(h), np.asarray(g)
    assert g.shape == x.shape and g.dtype == x.dtype, what
    zero = c == 0
    np.testing.assert_array_equal(h[zero], 0.0, err_msg=what)  # rows of weight 0: value 0 ...
    np.testing.assert_array_equal(g[zero], 0.0, err_msg=what)  # ... and gradient 0
    check_value(np.where(zero, h_ref, h).astype(F32), h_ref, shape[-1], CE_ULP, what)
    check_scaled_grad(g, g_ref, tol, c, dtype, what)
    # Computed in float32 and rounded once: the 16-bit gradient is the float32 one (the same logits widened)
    # narrowed, to the bit; with weight 1 the float32 one is the unscaled handler's, to the bit.
    h32, g32 = cpu.value_and_scaled_grad(CE, jnp.asarray(x, F32), jnp.asarray(k), jnp.asarray(c), variant=variant)
    np.testing.assert_array_equal(np.asarray(h32), h, err_msg=what)
    np.testing.assert_array_equal(np.asarray(g32).astype(dtype), g, err_msg=what)
    ones = np.ones(shape[:-1], F32)
    _, g1 = cpu.value_and_scaled_grad(CE, jnp.asarray(x, F32), jnp.asarray(k), jnp.asarray(ones), variant=variant)
    _, g_plain = cpu.value_and_grad(CE, jnp.asarray(x, F32), jnp.asarray(k), variant=variant)
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g_plain), err_msg=what)


@pytest.mark.parametrize("n", [4, 9, 33])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_entropy_scaled_limits(variant, dtype, n):
    """The unscaled handler's limits, each row's gradient times its weight; and a row of weight 0 gives 0 (value
    and gradient) whatever it holds: a label out of range, a NaN, classes at +-inf."""
    x, k, _, grad = ce_limit_rows(n)
    x = x.astype(dtype)
    rows = len(k)
    for c_value in (0.25, 0.0):
        c = np.full(rows, c_value, F32)
        h, g = cpu.value_and_scaled_grad(CE, jnp.asarray(x), jnp.asarray(k), jnp.asarray(c), variant=variant)
        h, g = np.asarray(h), np.asarray(g)
        what = f"{variant} {np.dtype(dtype).name} n={n} weight {c_value}"
        if c_value == 0:
            np.testing.assert_array_equal(h, 0.0, err_msg=what)
            np.testing.assert_array_equal(g, 0.0, err_msg=what)
            continue
        h0, g0 = (np.asarray(a) for a in cpu.value_and_grad(CE, jnp.asarray(x), jnp.asarray(k), variant=variant))
        np.testing.assert_array_equal(h, h0, err_msg=what)  # the values are the unscaled handler's
        np.testing.assert_array_equal(g[:7], (grad[:7] * c_value).astype(dtype), err_msg=what)  # NaN rows, exact rows
        # (a power of two: the product is exact, the narrowing of the unscaled gradient's)
        np.testing.assert_array_equal(g, (g0 * c_value).astype(dtype), err_msg=what)
    # Mixed: the out-of-range and NaN rows weighted 0, the others 1.
    c = np.ones(rows, F32)
    c[:3] = 0
    h, g = (
        np.asarray(a)
        for a in cpu.value_and_scaled_grad(CE, jnp.asarray(x), jnp.asarray(k), jnp.asarray(c), variant=variant)
    )
    assert not np.isnan(h).any() and not np.isnan(g).any()
    np.testing.assert_array_equal(g[:3], 0.0)
    # A NaN weight: a NaN gradient row (every dtype: the 16-bit narrowing keeps it NaN), the loss itself unweighted.
    c[7:] = np.nan
    h2, g2 = (
        np.asarray(a)
        for a in cpu.value_and_scaled_grad(CE, jnp.asarray(x), jnp.asarray(k), jnp.asarray(c), variant=variant)
    )
    assert np.isnan(g2[7:]).all()
    np.testing.assert_array_equal(h2, h)


def test_cross_entropy_scaled_variants_agree():
    if len(VARIANTS) < 2:
        pytest.skip(f"only one variant here ({', '.join(VARIANTS)})")
    shape = (3001, 257)
    x = logits_for(shape, F32, 7)
    k = labels_for(x, 7)
    c = scale_for(shape[:-1], 7)
    _, _, tol = ce_reference(x.astype(np.float64), k)
    out = {
        v: [
            np.asarray(a)
            for a in cpu.value_and_scaled_grad(CE, jnp.asarray(x), jnp.asarray(k), jnp.asarray(c), variant=v)
        ]
        for v in VARIANTS
    }
    h0, g0 = out[VARIANTS[-1]]
    for v in VARIANTS[:-1]:
        h, g = out[v]
        error = ulp.max_ulp(h, h0, F32, mask=ulp.ulp_checked(h0.astype(np.float64), ulp.flush_threshold(shape[-1])))
        assert error.error <= 2 * CE_ULP, f"{v} vs {VARIANTS[-1]}: value {error}"
        check_grad(g, g0.astype(np.float64), 2 * c[:, None] * tol + 2.0**-126, f"{v} vs {VARIANTS[-1]} scaled")
