"""The row kernels behind ``entropy_from_logits`` and ``entropy``, against float64 and the XLA path, and the one
selector that chooses between them: the Pallas kernel (jaxloss/_kernels/pallas.py) and the C++ CPU kernel
(jaxloss/_kernels/cpu.py, cpu_kernel.cc; every compiled ISA variant is tested in test_cpu_variants.py).

The ``entropy_kernel`` fixture runs each test on every path: ``xla``; ``cpu``, the C++ kernel; and ``pallas``, the
Pallas kernel natively on a CUDA GPU and through Pallas' interpreter elsewhere. The accuracy, derivative and
Hessian tests of ``entropy_from_logits`` in test_accuracy.py, test_gradients.py and test_hessian.py run on all
three too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxloss
from jaxloss import _kernels
from jaxloss._kernels import cpu, pallas

try:  # the repository root on sys.path (python -m pytest, or tests/ as a package)
    from tests import ulp
except ImportError:  # pytest's rootdir-less "prepend" import mode puts tests/ itself on sys.path
    import ulp

F32 = np.float32
INF = np.inf
EPS = np.finfo(F32).eps
# The value contract (<= ENTROPY_FROM_LOGITS_ULP ulp) as a relative tolerance: k ulp <= k eps of the value.
TOL = ulp.ENTROPY_FROM_LOGITS_ULP * EPS
# Row widths: one class, odd widths padded to a power of two, exactly one chunk, and wide rows read in several
# chunks (the last one partial).
WIDTHS = (1, 2, 3, 255, 256, 300, pallas._CHUNK, pallas._CHUNK + 1, 3 * pallas._CHUNK - 5)


def reference(logits):
    """Float64 entropy of softmax per row (last axis), -inf classes out: log1p(s1) + sum(e u) / (1 + s1), where
    s1 = sum(e) - 1 is summed without the top class (log of the plain sum loses the tiny tails even in float64)."""
    lg = np.asarray(logits, np.float64)
    m = lg.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(lg - m)
    u = np.where(e > 0, m - lg, 0.0)
    top = lg == m
    s1 = np.where(top, 0.0, e).sum(axis=-1) + (top.sum(axis=-1) - 1)
    return np.log1p(s1) + (e * u).sum(axis=-1) / (1 + s1)


def reference_gradient(logits):
    """Float64 dH/dl_i = p_i (u_i - E_p[u]) per row (u = max - l), 0 for classes at -inf."""
    lg = np.asarray(logits, np.float64)
    m = lg.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(lg - m)
    z = e.sum(axis=-1, keepdims=True)
    p = e / z
    u = np.where(e > 0, m - lg, 0.0)
    return p * (u - (p * u).sum(axis=-1, keepdims=True))


def logits_for(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=shape)
    if shape[-1] > 2:
        x[..., ::7] = -INF  # masked classes, in every row
        x[..., 1] = 40.0  # one dominant class per row: the top class left out of the normaliser matters
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [F32, ml_dtypes.bfloat16, np.float16], ids=["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("width", WIDTHS)
def test_value_and_gradient_match_float64(width, dtype, entropy_kernel):
    rows = 37 if width <= 300 else 3
    logits = logits_for((rows, width), dtype, seed=width)
    h, g = jax.value_and_grad(lambda lg: jaxloss.entropy_from_logits(lg).sum())(jnp.asarray(logits))
    h_rows = jaxloss.entropy_from_logits(jnp.asarray(logits))
    assert h_rows.dtype == jnp.float32 and g.dtype == logits.dtype
    ref = reference(logits.astype(np.float64))
    error = ulp.max_ulp(h_rows, ref, F32, mask=ref > ulp.flush_threshold(width))
    assert error.error <= ulp.ENTROPY_FROM_LOGITS_ULP, f"{entropy_kernel}, width {width}: {error}"
    np.testing.assert_allclose(h, ref.sum(), rtol=TOL + (rows - 1) * EPS)  # each row, then the float32 sum
    # The gradient entry by entry, within 16 eps of the error scale max(|g|, H) of its row, as in
    # test_gradients.py; it comes back in the logits' dtype: half an ulp of that more, and entries below that
    # dtype's smallest normal number may be flushed to 0.
    g_ref = reference_gradient(logits.astype(np.float64))
    scale = np.maximum(np.abs(g_ref).max(axis=-1, keepdims=True), ref[:, None])
    out = np.finfo(dtype)
    bound = 16 * EPS * scale + float(out.eps) / 2 * np.abs(g_ref) + float(out.tiny)
    error = np.abs(np.asarray(g, np.float64) - g_ref)
    assert (error <= bound).all(), (
        f"{entropy_kernel}, width {width}: gradient off by {(error / scale).max():.3g} x scale"
    )


@pytest.mark.parametrize("width", [300, 3 * pallas._CHUNK - 5])
def test_kernel_agrees_with_the_xla_path(width):
    logits = jnp.asarray(logits_for((5, width), F32, seed=1))
    out = {}
    for how in ("xla", "pallas", "cpu"):
        f = lambda lg, how=how: jaxloss.entropy_from_logits(lg, implementation=how).sum()  # noqa: E731
        h = jaxloss.entropy_from_logits(logits, implementation=how)
        out[how] = (h, jax.grad(f)(logits), jax.jacfwd(f)(logits[:2, :40]))
    h_x, g_x, j_x = out["xla"]
    for how in ("pallas", "cpu"):
        h_k, g_k, j_k = out[how]
        np.testing.assert_allclose(h_k, h_x, rtol=2 * TOL, atol=0)  # each path within TOL of the exact value
        # Gradients: each path within 16 eps of the error scale max(|g|, H) (tests/test_gradients.py), so twice
        # that apart.
        for a, b in ((g_x, g_k), (j_x, j_k)):
            scale = max(np.abs(np.asarray(a)).max(), np.asarray(h_x).max())
            np.testing.assert_allclose(b, a, rtol=0, atol=2 * 16 * EPS * scale, err_msg=how)


@pytest.mark.parametrize("width", [5, 300, 4096, 3 * pallas._CHUNK - 5])
def test_special_rows(width, entropy_kernel):
    rows = np.zeros((6, width), F32)
    rows[0, -1] = np.nan  # NaN last: XLA:CPU's max reduction returned -inf for such a row (>= 4096 entries)
    rows[1, 0] = np.nan
    rows[1, -1] = INF  # ... and max(NaN, inf) = inf: the +inf limit used to turn the NaN into a class that is out
    rows[2] = -INF  # every class out
    rows[3, ::2] = INF  # +inf classes share all the probability
    rows[4, :-1] = -INF  # one class in
    rows[5] = np.arange(width, dtype=F32)  # distinct logits
    g = jax.grad(lambda lg: jaxloss.entropy_from_logits(lg).sum())(jnp.asarray(rows))
    h_rows = np.asarray(jaxloss.entropy_from_logits(jnp.asarray(rows)))
    assert np.isnan(h_rows[:2]).all() and np.isnan(np.asarray(g)[:2]).all()
    np.testing.assert_array_equal(h_rows[2], 0.0)
    np.testing.assert_allclose(h_rows[3], np.log(len(range(0, width, 2))), rtol=2 * EPS)  # log1p(k - 1): one rounding
    np.testing.assert_array_equal(h_rows[4], 0.0)
    np.testing.assert_allclose(h_rows[5], reference(rows[5]), rtol=TOL)
    np.testing.assert_array_equal(np.asarray(g)[2:5], 0.0)
    assert np.isfinite(np.asarray(g)[5]).all()


def test_batched_shapes_and_where_mask(entropy_kernel):
    logits = jnp.asarray(logits_for((2, 3, 300), F32, seed=3))
    mask = jnp.asarray(np.random.default_rng(4).uniform(size=(2, 3, 300)) < 0.8)
    h = jaxloss.entropy_from_logits(logits, where=mask, base=2)
    ref = reference(np.where(np.asarray(mask), np.asarray(logits, np.float64), -INF)) / np.log(2.0)
    np.testing.assert_allclose(h, ref, rtol=TOL)
    per_example = jax.vmap(jaxloss.entropy_from_logits)(logits.reshape(6, 300))
    np.testing.assert_allclose(per_example, reference(np.asarray(logits).reshape(6, 300)), rtol=TOL)


def test_launch_shapes_are_powers_of_two_and_cover_the_row():
    for rows, cols in [(1, 1), (7, 3), (2**20, 256), (8192, 32768), (3, 3 * pallas._CHUNK - 5), (1000, 50257)]:
        per_program, chunk, chunks, warps = pallas.launch_shape(rows, cols)
        for v in (per_program, chunk, warps):
            assert v & (v - 1) == 0, (rows, cols, per_program, chunk, warps)
        assert chunk * chunks >= cols > chunk * (chunks - 1)
        assert per_program * chunk <= max(pallas._BLOCK_ELEMENTS, chunk)


def test_the_selector_names_what_is_available_and_why_not():
    choose, why = _kernels.choose, _kernels.why_unavailable
    assert choose("entropy_from_logits", "xla", (4, 256), jnp.float32, 1) == "xla"
    assert choose("entropy_from_logits", "pallas", (4, 256), jnp.bfloat16, 1) == "pallas"  # interpreted on CPU
    assert "float64" in why("entropy_from_logits", "pallas", (4, 256), jnp.float64, 1)
    assert "last axis" in why("entropy_from_logits", "pallas", (4, 256), jnp.float32, 0)
    assert "empty" in why("entropy_from_logits", "pallas", (0, 256), jnp.float32, 1)
    assert "no 'pallas' kernel" in why("entropy", "pallas", (4, 256), jnp.float32, 1)
    # A named path that cannot run raises, naming the reason and what is available; None falls back silently.
    with pytest.raises(
        ValueError,
        match=r"implementation='cpu' is not available for this call: the kernel reduces "
        r"the last axis; got axis 0 of 2\. Available here: 'xla'; pass implementation=None",
    ):
        jaxloss.entropy_from_logits(jnp.ones((2, 3)), axis=0, implementation="cpu")
    with pytest.raises(
        ValueError,
        match=r"implementation must be None \(the best available\) or one of 'xla', 'cpu'; "
        r"got 'pallas'",
    ):
        jaxloss.entropy(jnp.ones(3), implementation="pallas")
    with pytest.raises(ValueError, match="got 'fast'"):
        jaxloss.entropy_from_logits(jnp.ones(3), implementation="fast")


def test_the_environment_sets_a_preference_read_once(monkeypatch):
    monkeypatch.setenv(_kernels.ENV, "XLA")
    assert _kernels._read_env() == "xla"
    monkeypatch.setenv(_kernels.ENV, "fast")
    with pytest.raises(ValueError, match=r"JAXLOSS_IMPLEMENTATION must be one of xla, cpu, pallas .* got 'fast'"):
        _kernels._read_env()
    # A preference the input cannot take falls back to the best available (float64: XLA), never raises.
    assert _kernels.choose("entropy", _kernels.Prefer("cpu"), (4, 3), jnp.float64, 1) == "xla"


def test_switching_paths_needs_no_cache_clearing():
    """The path is a static argument: one process, the same input, each path in turn and back, each traced once."""
    x = jnp.asarray(logits_for((3, 300), F32, seed=5))
    seen = {how: jaxloss.entropy_from_logits(x, implementation=how) for how in ("xla", "cpu", "pallas", "xla")}
    for how in ("cpu", "pallas"):
        with _kernels.preferring(how):
            np.testing.assert_allclose(jaxloss.entropy_from_logits(x), seen[how], rtol=0, atol=0)
    cache = jaxloss.entropy_from_logits.jitted._cache_size()
    jaxloss.entropy_from_logits(x, implementation="cpu")
    assert jaxloss.entropy_from_logits.jitted._cache_size() == cache  # reused, not retraced


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the program a CPU-only machine compiles")
def test_on_cpu_the_cpu_kernel_is_built_and_compiled_in():
    """The C++ kernel was built with the package here (CI has a compiler: a missing build is a failure, not a
    silent fallback), and a CPU program's value and gradient call it, with no Pallas kernel traced."""
    assert cpu.available(), cpu.status()
    best = cpu.best()
    f = jax.value_and_grad(lambda lg: jaxloss.entropy_from_logits.__wrapped__(lg).sum())
    x = jnp.ones((4, 256), F32)
    assert "pallas_call" not in str(jax.make_jaxpr(f)(x))
    hlo = jax.jit(f).lower(x).compile().as_text()
    assert f'custom_call_target="jaxloss_entropy_logits_grad_{best}"' in hlo
    forward = jax.jit(jaxloss.entropy_from_logits.__wrapped__).lower(x).compile().as_text()
    assert f'custom_call_target="jaxloss_entropy_logits_{best}"' in forward


@pytest.mark.skipif(
    jax.default_backend() != "cpu" or jax.device_count() != 1,
    reason="the CPU kernel is the default only where the CPU, with one device, is the default backend",
)
def test_on_cpu_the_best_path_is_the_cpu_kernel_where_it_applies():
    assert cpu.available(), cpu.status()
    assert _kernels.choose("entropy_from_logits", None, (4, 256), jnp.float32, 1) == "cpu"
    assert _kernels.choose("entropy", None, (2, 3, 5), jnp.float16, 2) == "cpu"
    assert _kernels.choose("entropy", None, (4, 256), jnp.float64, 1) == "xla"  # float64 stays on XLA
    assert _kernels.choose("entropy", None, (4, 256), jnp.float32, 0) == "xla"  # the class axis must be the last
    assert _kernels.choose("entropy", None, (0, 256), jnp.float32, 1) == "xla"


# ----------------------------------------------------------------------------- entropy of probabilities (CPU kernel)


def probabilities_for(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(shape[-1], 0.3), size=shape[:-1])
    p[..., ::5] = 0.0  # zero entries, in every row
    return p.astype(dtype)


def entropy_reference(p):
    p = np.asarray(p, np.float64)
    return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)


@pytest.mark.parametrize("dtype", [F32, ml_dtypes.bfloat16, np.float16], ids=["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("width", [1, 7, 8, 9, 128, 129, 1000, 4099])
def test_entropy_of_probabilities_value_gradient_and_hessian(width, dtype, entropy_path):
    p = probabilities_for((11, width), dtype, seed=width)
    h = jaxloss.entropy(jnp.asarray(p))
    assert h.dtype == jnp.float32
    ref = entropy_reference(p)
    error = ulp.max_ulp(h, ref, F32, mask=ref > ulp.flush_threshold(width))
    assert error.error <= ulp.ENTROPY_ULP, f"{entropy_path}, width {width}: {error}"
    g = np.asarray(jax.grad(lambda q: jaxloss.entropy(q).sum())(jnp.asarray(p, F32)), np.float64)
    p64 = np.asarray(p, np.float64)
    log_p = np.log(np.where(p64 > 0, p64, 1.0))
    # -(log p + 1) cancels near p = 1/e: the error is a few ulp of log p, not of the result.
    np.testing.assert_allclose(g, np.where(p64 > 0, -(log_p + 1), 0.0), rtol=0, atol=2 * EPS * np.abs(log_p).max())
    row = jnp.asarray(p[0, :6], F32)
    hess = np.diag(np.asarray(jax.hessian(jaxloss.entropy)(row)))
    row64 = np.asarray(row, np.float64)
    np.testing.assert_allclose(hess, np.where(row64 > 0, -1 / np.where(row64 > 0, row64, 1.0), 0.0), rtol=4 * EPS)


def test_entropy_of_probabilities_limits(entropy_path):
    p = np.full((5, 19), 1 / 19, F32)
    p[0, 3] = np.nan
    p[1, 4] = -0.25  # not a probability: NaN, as log(-0.25)
    p[2, 5] = INF
    p[3] = 0.0
    p[4, 2] = 1e-40  # subnormal: read as 0 where XLA flushes subnormals (CPU); its term is below 4e-38 anyway
    h = np.asarray(jaxloss.entropy(jnp.asarray(p)))
    g = np.asarray(jax.grad(lambda q: jaxloss.entropy(q).sum())(jnp.asarray(p)))
    assert np.isnan(h[:2]).all() and h[2] == -INF and h[3] == 0.0 and not np.signbit(h[3])
    np.testing.assert_allclose(h[4], entropy_reference(p[4]), rtol=TOL)
    assert np.isnan(g[0, 3]) and np.isnan(g[1, 4]) and g[2, 5] == -INF
    np.testing.assert_array_equal(g[3], 0.0)
    np.testing.assert_allclose(np.delete(g[0], 3), -(np.log(1 / 19) + 1), rtol=4 * EPS)  # other entries unharmed


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the program a CPU-only machine compiles")
def test_on_cpu_entropy_of_probabilities_calls_the_kernel():
    x = jnp.full((4, 256), 1 / 256, F32)
    best = cpu.best()
    hlo = jax.jit(jaxloss.entropy.__wrapped__).lower(x).compile().as_text()
    assert f'custom_call_target="jaxloss_entropy_{best}"' in hlo
    f = jax.value_and_grad(lambda q: jaxloss.entropy.__wrapped__(q).sum())
    assert f'custom_call_target="jaxloss_entropy_grad_{best}"' in jax.jit(f).lower(x).compile().as_text()


# ------------------------------------------------------------------ cross-entropy with integer labels (CPU kernel)


@pytest.mark.skipif(
    jax.default_backend() != "cpu" or jax.device_count() != 1,
    reason="checks the program a one-device CPU machine compiles",
)
def test_on_cpu_cross_entropy_with_integer_labels_calls_the_kernel():
    workload = "softmax_cross_entropy_with_integer_labels"
    assert _kernels.WORKLOADS[workload] == ("xla", "cpu")
    assert _kernels.choose(workload, None, (4, 256), jnp.bfloat16, 1) == "cpu"
    assert _kernels.choose(workload, None, (4, 256), jnp.float32, 0) == "xla"  # the class axis must be the last
    assert _kernels.choose(workload, None, (4, 256), jnp.float64, 1) == "xla"
    assert _kernels.report()[workload]["chosen"] == "cpu"
    assert f"{workload}: cpu" in jaxloss.info()
    best = cpu.best()
    x, k = jnp.ones((4, 256), F32), jnp.arange(4, dtype=jnp.int32)
    # (__wrapped__: the function under the public jit, so the options are passed as the screen would pass them.)
    fwd = jax.jit(lambda z: jaxloss.ce_with_logits.__wrapped__(z, k, label_smoothing=None)).lower(x).compile().as_text()
    assert f'custom_call_target="jaxloss_ce_integer_{best}"' in fwd
    f = jax.value_and_grad(lambda z: jaxloss.ce_with_logits.__wrapped__(z, k, label_smoothing=None))
    # The mean's gradient is written by the kernel that scales each row (no pass over the logits after it).
    assert f'custom_call_target="jaxloss_ce_integer_grad_scaled_{best}"' in jax.jit(f).lower(x).compile().as_text()


@pytest.mark.parametrize("dtype", [F32, ml_dtypes.bfloat16, np.float16], ids=["float32", "bfloat16", "float16"])
def test_cross_entropy_with_integer_labels_paths_agree(dtype):
    """The C++ path against the XLA formulation through the public functions: values, gradients (reverse and
    forward mode, under vmap), and Hessians (the XLA formulation's on both paths, to the bit)."""
    rng = np.random.default_rng(3)
    x = logits_for((9, 37), dtype, seed=3)
    k = rng.integers(0, 37, size=9).astype(np.int32)
    k[2] = 0  # a class at -inf: +inf
    k[4] = 1  # the dominant class
    k[7] = 5  # (a finite class: row 2 is the only infinite one, left out of the mean)
    x, k = jnp.asarray(x), jnp.asarray(k)
    tangent = jnp.asarray(rng.normal(size=x.shape)).astype(x.dtype)
    keep = jnp.arange(9) != 2
    out = {}
    for how in ("xla", "cpu"):

        def mean(z, how=how):
            return jaxloss.ce_with_logits(z, k, where=keep, implementation=how)

        def row_loss(z, c, how=how):
            return jaxloss.softmax_cross_entropy_with_integer_labels(z, c, implementation=how)

        def two_rows(z, how=how):
            return jaxloss.ce_with_logits(z, k[:2], implementation=how)

        rows = row_loss(x, k)
        v, g = jax.value_and_grad(mean)(x)
        # (Not a tangent of ones: sum(p - onehot) = 0 exactly, and both paths return rounding noise around it.)
        _, t = jax.jvp(mean, (x,), (tangent,))
        per_row = jax.vmap(jax.grad(row_loss))(x.astype(F32), k)
        h = jax.hessian(two_rows)(x[:2].astype(F32))
        out[how] = [np.asarray(a, np.float64) for a in (rows, v, g, t, per_row, h)]
    assert np.isposinf(out["cpu"][0][2]) and np.isfinite(out["cpu"][1])
    names = ("rows", "mean", "gradient", "jvp", "vmapped gradient", "hessian")
    for name, a, b in zip(names, out["xla"], out["cpu"], strict=True):
        scale = np.abs(np.where(np.isfinite(a), a, 0)).max()
        np.testing.assert_allclose(b, a, rtol=8 * EPS, atol=8 * EPS * scale, err_msg=name)
    np.testing.assert_array_equal(out["cpu"][5], out["xla"][5])


# --- the weighted mean of cross-entropy with integer labels (_kernels.ce_integer_mean) ----------------------------

# The 16-bit gradient of the mean is rounded once on the kernel path (from float32) and twice on the XLA path (the
# row gradient, then its product with the weight, converted): they may differ by an ulp of the output.
MEAN_GRAD_RTOL = {"float32": 8 * EPS, "bfloat16": 2.0**-7, "float16": 2.0**-10}
MEAN_GRAD_ATOL = {"float32": 0.0, "bfloat16": 0.0, "float16": 2.0**-24}


def mean_case(shape, dtype, seed):
    """Logits, labels (one on a class at -inf: weighted 0) and weights: a mean over the rows left in."""
    x = logits_for(shape, dtype, seed)
    rows = shape[:-1]
    k = np.random.default_rng(seed).integers(0, shape[-1], size=rows).astype(np.int32)
    k = np.where(k % 7 == 0, k + 1, k).astype(np.int32)  # not on a class at -inf (logits_for: every 7th)
    keep = np.ones(rows, bool)
    flat_k, flat_keep = k.reshape(-1), keep.reshape(-1)
    flat_k[0] = 0  # a class at -inf: an infinite loss, weighted 0
    flat_keep[0] = False
    flat_k[1] = 1  # the dominant class
    scale = (keep / keep.sum()).astype(F32)
    return jnp.asarray(x), jnp.asarray(k), jnp.asarray(scale)


@pytest.mark.skipif(not cpu.available(), reason="the C++ kernels are not built")
@pytest.mark.parametrize("shape", [(9, 37), (3, 4, 33), (2, 4099)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [F32, ml_dtypes.bfloat16, np.float16], ids=["float32", "bfloat16", "float16"])
def test_cross_entropy_mean_paths_agree(dtype, shape):
    """The kernel path of the weighted mean against the XLA path: the value within 4 ulp, the gradient (in the
    logits' dtype) within the kernel tests' tolerance, the forward-mode derivative in the logits and the weights,
    the gradient in the weights (the losses), and Hessians (the XLA formulation's on both paths)."""
    x, k, scale = mean_case(shape, dtype, seed=5)
    name = np.dtype(dtype).name
    out = {}
    for how in ("xla", "cpu"):

        def mean(z, s, how=how):
            return _kernels.ce_integer_mean(z, k, s, how)

        v, (gz, gs) = jax.value_and_grad(mean, argnums=(0, 1))(x, scale)
        assert v.dtype == F32 and gz.dtype == x.dtype and gs.dtype == F32
        dx = jnp.asarray(np.random.default_rng(1).normal(size=shape), x.dtype)
        ds = jnp.asarray(np.random.default_rng(2).normal(size=scale.shape), F32) * (scale != 0)
        _, t = jax.jvp(mean, (x, scale), (dx, ds))
        _, t_x = jax.jvp(lambda z, how=how: _kernels.ce_integer_mean(z, k, scale, how), (x,), (dx,))
        out[how] = [np.asarray(a, np.float64) for a in (v, gz, gs, t, t_x)]
    dx, ds = np.asarray(dx, np.float64), np.asarray(ds, np.float64)
    assert np.isfinite(out["cpu"][0])
    assert ulp.ulp_error(np.float32(out["cpu"][0]), out["xla"][0], F32) <= 4, name
    np.testing.assert_allclose(
        out["cpu"][1], out["xla"][1], rtol=MEAN_GRAD_RTOL[name], atol=MEAN_GRAD_ATOL[name], err_msg="gradient"
    )
    losses = out["xla"][2]  # the gradient in the weights: the rows' losses (0 for the row of weight 0)
    assert losses.reshape(-1)[0] == 0 and (losses.reshape(-1)[1:] > 0).all()
    np.testing.assert_allclose(out["cpu"][2], losses, rtol=8 * EPS, err_msg="weights' gradient")
    # The forward-mode derivative sums the gradient (in the logits' dtype on the kernel path: it is the one the
    # kernel writes) times the tangent: within the gradient's tolerance times the sum of the terms' magnitudes.
    g_abs = np.abs(out["xla"][1])
    terms = np.sum(g_abs * np.abs(dx))
    bound_x = 2 * (MEAN_GRAD_RTOL[name] * terms + MEAN_GRAD_ATOL[name] * np.sum(np.abs(dx))) + 16 * EPS * terms
    bound_s = 16 * EPS * np.sum(np.abs(losses * ds))
    assert abs(out["cpu"][4] - out["xla"][4]) <= bound_x, ("jvp in the logits", out["cpu"][4], out["xla"][4])
    assert abs(out["cpu"][3] - out["xla"][3]) <= bound_x + bound_s, ("jvp", out["cpu"][3], out["xla"][3])
    # Rows of weight 0 get a zero gradient (row 0's loss is infinite).
    np.testing.assert_array_equal(out["cpu"][1].reshape(-1, shape[-1])[0], 0.0)


@pytest.mark.skipif(not cpu.available(), reason="the C++ kernels are not built")
@pytest.mark.parametrize("dtype", [F32, ml_dtypes.bfloat16], ids=["float32", "bfloat16"])
def test_cross_entropy_mean_hessian_is_the_xla_paths(dtype):
    x, k, scale = mean_case((3, 6), dtype, seed=8)
    hs = {
        how: np.asarray(jax.hessian(lambda z, how=how: _kernels.ce_integer_mean(z, k, scale, how))(x))
        for how in ("xla", "cpu")
    }
    np.testing.assert_array_equal(hs["cpu"], hs["xla"])
    assert np.isfinite(hs["cpu"]).all() and np.abs(hs["cpu"]).max() > 0
    # mixed second derivatives, logits and weights
    hz = {
        how: np.asarray(jax.jacfwd(jax.grad(lambda z, s, how=how: _kernels.ce_integer_mean(z, k, s, how)), 1)(x, scale))
        for how in ("xla", "cpu")
    }
    np.testing.assert_allclose(hz["cpu"], hz["xla"], rtol=8 * EPS, atol=8 * EPS * np.abs(hz["xla"]).max())


@pytest.mark.skipif(
    jax.default_backend() != "cpu" or jax.device_count() != 1 or not cpu.available(),
    reason="checks the program a one-device CPU machine compiles",
)
@pytest.mark.parametrize("dtype", [F32, ml_dtypes.bfloat16], ids=["float32", "bfloat16"])
def test_cross_entropy_mean_gradient_is_written_by_the_kernel(dtype):
    """Under jax.value_and_grad the gradient the program returns is the scaled handler's output itself: no pass of
    the logits' size (a multiply by the cotangent, a convert) follows the custom call."""
    x = jnp.ones((64, 256), dtype)
    k = jnp.arange(64, dtype=jnp.int32)
    where = jnp.arange(64) % 3 != 0
    scale = where / where.sum()
    f = jax.value_and_grad(lambda z: _kernels.ce_integer_mean(z, k, scale, "cpu"))
    hlo = jax.jit(f).lower(x).compile().as_text()
    assert f'custom_call_target="jaxloss_ce_integer_grad_scaled_{cpu.best()}"' in hlo
    full = f"{np.dtype(dtype).name.replace('float', 'f')}[64,256]"  # f32[64,256], bf16[64,256]
    entry = hlo[hlo.index("ENTRY") :]
    for line in entry.splitlines():
        if "=" not in line or full not in line.split("=", 1)[1].split("(", 1)[0]:
            continue
        op = line.split("=", 1)[1].split("(", 1)[0].split()[-1]
        assert op in ("parameter", "custom-call", "get-tuple-element", "tuple"), line
