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
