"""The smoke subset: the package imports, ``jaxloss.info()`` reports, and every public function runs once against the
stored references (mpmath, tests/data) within the accuracy contract.

It is what an install without a C++ compiler runs in CI (``.ci/run``, second leg: the XLA formulations only), and
part of the whole suite everywhere else. It needs nothing built: each check holds on every path.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from jaxloss import batch, streaming
from jaxloss._kernels import cpu

try:  # the repository root on sys.path (python -m pytest, or tests/ as a package)
    from tests import ulp
except ImportError:  # pytest's rootdir-less "prepend" import mode puts tests/ itself on sys.path
    import ulp

DATA = pathlib.Path(__file__).resolve().parent / "data"
F32 = np.float32


@functools.cache
def load(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


def bce_grid():
    """The stored BCE grid: every logit with every label, as (labels x logits) arrays, and the mpmath values."""
    data = load("bce_logits")
    z = np.broadcast_to(data["logits"], data["value"].shape)
    y = np.broadcast_to(data["labels"][:, None], data["value"].shape)
    return jnp.asarray(z), jnp.asarray(y), data["value"]


def within(computed, reference, bound, terms: int = 1) -> None:
    error = ulp.max_ulp(
        np.asarray(computed), reference, F32, mask=ulp.ulp_checked(reference, ulp.flush_threshold(terms))
    )
    assert error.error <= bound, error


def check_sigmoid_binary_cross_entropy():
    z, y, ref = bce_grid()
    within(jaxloss.sigmoid_binary_cross_entropy(z, y), ref, ulp.BCE_VALUE_ULP)


def check_bce_with_logits():
    z, y, ref = bce_grid()
    finite = np.isfinite(ref).all(axis=0)
    got = jaxloss.bce_with_logits(z[:, finite], y[:, finite])
    np.testing.assert_allclose(got, ref[:, finite].mean(), rtol=4 * ulp.finfo(F32).eps)


def check_binary_cross_entropy():
    data = load("bce_probs")
    p = np.broadcast_to(data["probabilities"], data["value"].shape)
    y = np.broadcast_to(data["labels"][:, None], data["value"].shape)
    within(jaxloss.binary_cross_entropy(jnp.asarray(p), jnp.asarray(y)), data["value"], ulp.BCE_PROBS_VALUE_ULP)


def check_binary_entropy():
    data = load("binary_entropy")
    within(jaxloss.binary_entropy(jnp.asarray(data["probabilities"])), data["value"], ulp.BINARY_ENTROPY_ULP)


def check_binary_entropy_from_logits():
    data = load("binary_entropy")
    got = jaxloss.binary_entropy_from_logits(jnp.asarray(data["logits"]))
    within(got, data["logit_value"], ulp.BINARY_ENTROPY_ULP)


def check_entropy():
    data = load("entropy_probs")
    for n in data["sizes"]:
        got = jaxloss.entropy(jnp.asarray(data[f"probabilities_n{n}"]))
        within(got, data[f"value_n{n}"], ulp.ENTROPY_ULP, terms=int(n))


def check_entropy_from_logits():
    data = load("entropy_logits")
    for n in data["sizes"]:
        lg = jnp.asarray(data[f"logits_n{n}"])
        within(jaxloss.entropy_from_logits(lg), data[f"value_n{n}"], ulp.ENTROPY_FROM_LOGITS_ULP, terms=int(n))
        if f"grad_n{n}" in data:  # the gradient: within 16 eps of its row's scale max(|g|, H)
            g = np.asarray(jax.grad(lambda v: jaxloss.entropy_from_logits(v).sum())(lg), np.float64)
            ref = data[f"grad_n{n}"]
            scale = np.maximum(np.abs(ref).max(axis=-1, keepdims=True), data[f"value_n{n}"][:, None])
            # (entries below the flush bound, e.g. e^-1e4, may come back as 0: XLA flushes subnormal numbers)
            assert (np.abs(g - ref) <= 16 * ulp.finfo(F32).eps * scale + ulp.flush_threshold(int(n))).all()


CATEGORICAL_ULP = 4  # the categorical losses' values (issue 14): rows of 1 to 32 768 classes, any spread
KL_TINY = 2.0**-20  # below it, KL is checked to an absolute 2**-24 instead


def categorical_rows(n):
    """The stored rows of n classes: logits, class mask, class indices, label distributions."""
    data = load("categorical_logits")
    return (jnp.asarray(data[f"{key}_n{n}"]) for key in ("logits", "where", "labels", "soft_labels"))


def check_softmax_cross_entropy():
    data = load("categorical_logits")
    for n in data["sizes"]:
        z, where, _, y = categorical_rows(n)
        within(jaxloss.softmax_cross_entropy(z, y, where=where), data[f"soft_value_n{n}"], CATEGORICAL_ULP, int(n))


def check_softmax_cross_entropy_with_integer_labels():
    data = load("categorical_logits")
    alpha = float(data["label_smoothing"])
    for n in data["sizes"]:
        z, where, k, _ = categorical_rows(n)
        ce = jaxloss.softmax_cross_entropy_with_integer_labels
        within(ce(z, k, where=where), data[f"int_value_n{n}"], CATEGORICAL_ULP, int(n))
        within(ce(z, k, where=where, label_smoothing=alpha), data[f"int_smooth_value_n{n}"], CATEGORICAL_ULP, int(n))


def check_ce_with_logits():
    data = load("categorical_logits")
    for n in data["sizes"]:
        z, where, k, _ = categorical_rows(n)
        ref = data[f"int_value_n{n}"]
        rows = np.isfinite(ref)  # a class out by where is a -inf logit here (rows are selected by where)
        got = jaxloss.ce_with_logits(jnp.where(where, z, -jnp.inf), k, where=jnp.asarray(rows))
        np.testing.assert_allclose(got, ref[rows].mean(), rtol=CATEGORICAL_ULP * ulp.finfo(F32).eps)


def check_kl_divergence_from_logits():
    data = load("kl_logits")
    for n in data["sizes"]:
        z, t, where = (jnp.asarray(data[f"{key}_n{n}"]) for key in ("logits", "target_logits", "where"))
        got = np.asarray(jaxloss.kl_divergence_from_logits(z, t, where=where), np.float64)
        ref = data[f"value_n{n}"]
        tiny = np.abs(ref) <= KL_TINY
        assert ulp.max_ulp(got, ref, F32, mask=~tiny).error <= CATEGORICAL_ULP
        assert (got >= 0).all() and (np.abs(got[tiny] - ref[tiny]) <= 2.0**-24).all()


def check_cross_entropy():
    data = load("categorical_probs")
    for n in data["sizes"]:
        p, q = jnp.asarray(data[f"p_n{n}"]), jnp.asarray(data[f"q_n{n}"])
        within(jaxloss.cross_entropy(p, q), data[f"ce_value_n{n}"], CATEGORICAL_ULP, int(n))


def check_relative_entropy():
    data = load("categorical_probs")
    for n in data["sizes"]:
        p, q = jnp.asarray(data[f"p_n{n}"]), jnp.asarray(data[f"q_n{n}"])
        within(jaxloss.relative_entropy(p, q), data[f"re_value_n{n}"], CATEGORICAL_ULP, int(n))


def squared_inputs():
    """Predictions and targets from the stored logits (finite ones): float32, with exact float64 references."""
    z = load("bce_logits")["logits"]
    p = z[np.isfinite(z) & (np.abs(z) < 1e4)]
    return p, p[::-1].copy()


def check_squared_error():
    p, t = squared_inputs()
    ref = (p.astype(np.float64) - t) ** 2
    within(jaxloss.squared_error(jnp.asarray(p), jnp.asarray(t)), ref, 2)


def check_half_squared_error():
    p, t = squared_inputs()
    ref = 0.5 * (p.astype(np.float64) - t) ** 2
    within(jaxloss.half_squared_error(jnp.asarray(p), jnp.asarray(t)), ref, 2)


def check_mse():
    p, t = squared_inputs()
    ref = ((p.astype(np.float64) - t) ** 2).mean()
    np.testing.assert_allclose(jaxloss.mse(jnp.asarray(p), jnp.asarray(t)), ref, rtol=1e-6)


def check_mean():
    data = load("bce_logits")
    values = data["value"][:, np.isfinite(data["value"]).all(axis=0)]
    np.testing.assert_allclose(
        jaxloss.mean(jnp.asarray(values, F32)), values.astype(F32).astype(np.float64).mean(), rtol=1e-6
    )


def check_checked():
    z, y, ref = bce_grid()
    within(jaxloss.checked(jaxloss.sigmoid_binary_cross_entropy)(z, y), ref, ulp.BCE_VALUE_ULP)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        jaxloss.checked(jaxloss.sigmoid_binary_cross_entropy)(z[:, :3], jnp.full((6, 3), 2.0))


def check_info():
    report = jaxloss.info()
    assert report.startswith(f"jaxloss {jaxloss.__version__}\n")
    assert f"C++ CPU kernels: {cpu.status()}" in report
    assert "entropy_from_logits: " in report and "entropy: " in report


def check_batch_mse():
    p, t = squared_inputs()
    p, t = p[: len(p) // 4 * 4].reshape(4, -1), t[: len(t) // 4 * 4].reshape(4, -1)
    ref = ((p.astype(np.float64) - t) ** 2).mean(axis=1)
    np.testing.assert_allclose(batch.mse(jnp.asarray(p), jnp.asarray(t)), ref, rtol=1e-6)


def check_batch_bce_with_logits():
    z, y, ref = bce_grid()
    finite = np.isfinite(ref).all(axis=0)
    got = batch.bce_with_logits(z[:, finite], y[:, finite])
    np.testing.assert_allclose(got, ref[:, finite].mean(axis=1), rtol=4 * ulp.finfo(F32).eps)


def check_batch_ce_with_logits():
    data = load("categorical_logits")
    z, where, k, _ = categorical_rows(100)
    ref = data["int_value_n100"]
    keep = np.flatnonzero(np.isfinite(ref))
    keep = keep[: len(keep) // 2 * 2]  # examples of two rows each
    logits = jnp.where(where, z, -jnp.inf)[keep].reshape(-1, 2, z.shape[-1])
    got = batch.ce_with_logits(logits, k[keep].reshape(-1, 2))
    np.testing.assert_allclose(got, ref[keep].reshape(-1, 2).mean(axis=1), rtol=CATEGORICAL_ULP * ulp.finfo(F32).eps)


def check_batch_mean():
    data = load("bce_logits")
    values = data["value"][:, np.isfinite(data["value"]).all(axis=0)].astype(F32)
    np.testing.assert_allclose(batch.mean(jnp.asarray(values)), values.astype(np.float64).mean(axis=1), rtol=1e-6)


def check_batch_per_example():
    p, t = squared_inputs()
    got = batch.per_example(jaxloss.squared_error)(jnp.asarray(p[:8, None]), jnp.asarray(t[:8, None]))
    within(got[:, 0], (p[:8].astype(np.float64) - t[:8]) ** 2, 2)


def check_batch_grad():
    # d/dw of (w x - y)^2 / 2 per example is (w x - y) x.
    x, y = jnp.asarray([1.0, 2.0, -3.0]), jnp.asarray([0.5, 1.0, 2.0])
    g = batch.grad(lambda w, xi, yi: jaxloss.half_squared_error(w * xi, yi))(jnp.float32(2.0), x, y)
    np.testing.assert_array_equal(g, (2.0 * x - y) * x)


def check_batch_value_and_grad():
    x, y = jnp.asarray([1.0, 2.0, -3.0]), jnp.asarray([0.5, 1.0, 2.0])
    value, g = batch.value_and_grad(lambda w, xi, yi: jaxloss.half_squared_error(w * xi, yi))(jnp.float32(2.0), x, y)
    np.testing.assert_array_equal(value, 0.5 * (2.0 * x - y) ** 2)
    np.testing.assert_array_equal(g, (2.0 * x - y) * x)


def check_streaming_evaluate():
    z, y, ref = bce_grid()
    finite = np.isfinite(ref).all(axis=0)
    zs, ys = np.asarray(z[:, finite]).ravel(), np.asarray(y[:, finite]).ravel()
    mean, rows = streaming.evaluate(jaxloss.sigmoid_binary_cross_entropy, zs, ys, batch_size=1000, progress=False)
    assert rows == zs.size
    np.testing.assert_allclose(mean, ref[:, finite].mean(), rtol=4 * ulp.finfo(F32).eps)


def check_streaming_stream():
    values = np.arange(10, dtype=F32)
    result = streaming.stream(jaxloss.squared_error, values, np.zeros(10, F32), batch_size=4, progress=False)
    assert result.rows == 10 and float(result.state.compute()) == float(np.mean(values.astype(np.float64) ** 2))


def check_streaming_violation():
    from jaxloss import _api

    z = np.zeros(10, F32)
    y = np.linspace(0, 2, 10, dtype=F32)  # labels above 1 from index 5 on (10/9 there)
    result = streaming.stream(
        jaxloss.sigmoid_binary_cross_entropy,
        z,
        y,
        batch_size=4,
        progress=False,
        checks={"arrays[1]": _api.ROLES["labels"].rule},
    )
    found = result.violations["arrays[1]"]
    assert isinstance(found, streaming.Violation)
    assert found.failing == 5 and found.first == (5,) and found.value == y[5]


def check_streaming_mean():
    state = streaming.Mean.empty().update(jnp.asarray([1.0, 2.0, 3.0]))
    assert float(state.compute()) == 2.0


CHECKS = {
    name.removeprefix("check_").replace("batch_", "batch.", 1).replace("streaming_", "streaming.", 1): fn
    for name, fn in globals().items()
    if name.startswith("check_")
}
CHECKS["streaming.Mean"] = CHECKS.pop("streaming.mean")
CHECKS["streaming.Violation"] = CHECKS.pop("streaming.violation")


def test_every_public_function_has_a_smoke_check():
    public = {name for name in jaxloss.__all__ if callable(getattr(jaxloss, name))}
    public |= {f"batch.{name}" for name in batch.__all__} | {f"streaming.{name}" for name in streaming.__all__}
    assert public - set(CHECKS) == set(), "public functions without a smoke check"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_smoke(name):
    CHECKS[name]()
