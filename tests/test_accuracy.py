"""The float32 numerics contract of jaxloss, checked against mpmath references.

The references live in ``tests/data/*.npz`` and are built by
``tests/make_reference.py`` (mpmath, 50 digits, on the exact stored inputs).
Tolerances are defined once, in ``tests/ulp.py``.  Every function is checked
eagerly and under ``jax.jit``; derivatives come from ``jax.grad`` of the public
functions.  References below float32's normal range are not ULP-checked (XLA
on CPU flushes subnormals); there the result must be within
``ulp.FLUSH_THRESHOLD`` of the reference instead.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxloss

try:  # the repository root on sys.path (python -m pytest, or tests/ as a package)
    from tests import ulp
except ImportError:  # pytest's rootdir-less "prepend" import mode puts tests/ itself on sys.path
    import ulp

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
MODES = ("eager", "jit")
HALF_DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
HARD_LABELS = (0.0, 1.0)


# --------------------------------------------------------------------------- helpers


@functools.cache
def load(name: str) -> dict[str, np.ndarray]:
    path = DATA_DIR / f"{name}.npz"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python tests/make_reference.py`")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def transform(fn: Callable, mode: str) -> Callable:
    return jax.jit(fn) if mode == "jit" else fn


def elementwise_grad(fn: Callable) -> Callable:
    """Per-element derivative of an elementwise ``fn(x, *rest)`` with respect to ``x``."""
    return jax.grad(lambda x, *rest: jnp.sum(fn(x, *rest)))


def fmt(x) -> str:
    return f"{float(x):.9g}"


def _report(what: str, kind: str, computed, reference, index, limit, describe) -> str:
    return (
        f"{what}: max {kind} {limit[0]:.4g} > {limit[1]:.4g} at {describe(index)}: "
        f"computed {fmt(computed[index])}, exact {fmt(reference[index])}"
    )


def check_ulp(
    what: str,
    computed,
    reference,
    tolerance: float,
    describe: Callable[[tuple[int, ...]], str],
    *,
    mask=None,
    dtype=np.float32,
    flush_threshold: float = ulp.FLUSH_THRESHOLD,
) -> None:
    """Assert ``computed`` is within ``tolerance`` ULP of ``reference`` where ``mask``.

    Reference values below ``flush_threshold`` (see ``ulp.FLUSH_TERM``) must instead
    be within that absolute distance.  The message names the worst input.
    """
    computed = np.asarray(computed, np.float64)
    reference = np.broadcast_to(np.asarray(reference, np.float64), computed.shape)
    mask = np.ones(computed.shape, bool) if mask is None else np.broadcast_to(mask, computed.shape)
    problems = []

    worst = ulp.max_ulp(computed, reference, dtype, mask=mask & ulp.ulp_checked(reference, flush_threshold))
    if worst.error > tolerance:
        problems.append(_report(what, "ULP", computed, reference, worst.index, (worst.error, tolerance), describe))

    with np.errstate(invalid="ignore"):
        abs_error = np.nan_to_num(np.abs(computed - reference), nan=np.inf)
    worst_tiny = ulp.worst(abs_error, mask & ulp.flushed(reference, flush_threshold))
    if worst_tiny.error > flush_threshold:
        problems.append(
            _report(
                f"{what} (exact value below float32 normal range)",
                "abs error",
                computed,
                reference,
                worst_tiny.index,
                (worst_tiny.error, flush_threshold),
                describe,
            )
        )
    assert not problems, "\n".join(problems)


def check_abs(what: str, computed, reference, tolerance: float, describe, *, mask=None) -> None:
    computed = np.asarray(computed, np.float64)
    reference = np.broadcast_to(np.asarray(reference, np.float64), computed.shape)
    with np.errstate(invalid="ignore"):
        abs_error = np.nan_to_num(np.abs(computed - reference), nan=np.inf)
    worst = ulp.worst(abs_error, mask)
    assert worst.error <= tolerance, _report(
        what, "abs error", computed, reference, worst.index, (worst.error, tolerance), describe
    )


# --------------------------------------------------------------------------- sigmoid BCE


def bce_grid(data) -> tuple[np.ndarray, np.ndarray]:
    """Every (label, logit) pair as two float32 arrays of shape (labels, logits)."""
    shape = (data["labels"].size, data["logits"].size)
    logits = np.broadcast_to(data["logits"][None, :], shape)
    labels = np.broadcast_to(data["labels"][:, None], shape)
    return np.ascontiguousarray(logits), np.ascontiguousarray(labels)


def bce_describe(logits, labels, options: str = "") -> Callable:
    return lambda i: f"logit={fmt(logits[i])}, label={fmt(labels[i])}{options}"


class BceVariant(NamedTuple):
    options: dict  # keyword options of sigmoid_binary_cross_entropy
    key: str  # reference array in bce_logits.npz
    index: int | None  # position of this option value along the reference's first axis
    tolerance: float  # ULP

    def reference(self, data) -> np.ndarray:
        ref = data[self.key]
        return ref if self.index is None else ref[self.index]


def bce_variants() -> dict[str, BceVariant]:
    data = load("bce_logits")
    variants = {"plain": BceVariant({}, "value", None, ulp.BCE_VALUE_ULP)}
    for k, pw in enumerate(data["pos_weight"]):
        variants[f"pos_weight={pw:g}"] = BceVariant(
            {"pos_weight": float(pw)}, "value_pos_weight", k, ulp.BCE_OPTIONS_VALUE_ULP
        )
    for k, alpha in enumerate(data["label_smoothing"]):
        variants[f"label_smoothing={alpha:g}"] = BceVariant(
            {"label_smoothing": float(alpha)}, "value_label_smoothing", k, ulp.BCE_OPTIONS_VALUE_ULP
        )
    return variants


BCE_VARIANTS = bce_variants()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", list(BCE_VARIANTS))
def test_sigmoid_bce_value(variant, mode):
    data, spec = load("bce_logits"), BCE_VARIANTS[variant]
    logits, labels = bce_grid(data)
    loss = transform(functools.partial(jaxloss.sigmoid_binary_cross_entropy, **spec.options), mode)
    computed = loss(logits, labels)
    assert computed.dtype == jnp.float32
    check_ulp(
        f"sigmoid_binary_cross_entropy({variant}) value",
        computed,
        spec.reference(data),
        spec.tolerance,
        bce_describe(logits, labels),
    )


@pytest.mark.parametrize("mode", MODES)
def test_sigmoid_bce_grad(mode):
    data = load("bce_logits")
    logits, labels = bce_grid(data)
    grad = transform(elementwise_grad(jaxloss.sigmoid_binary_cross_entropy), mode)
    computed = grad(logits, labels)
    describe = bce_describe(logits, labels)
    check_abs("d/dz sigmoid_binary_cross_entropy", computed, data["grad"], ulp.BCE_GRAD_ABS, describe)
    check_ulp(
        "d/dz sigmoid_binary_cross_entropy (hard labels)",
        computed,
        data["grad"],
        ulp.BCE_GRAD_HARD_LABEL_ULP,
        describe,
        mask=np.isin(labels, HARD_LABELS),
    )


@pytest.mark.parametrize("mode", MODES)
def test_sigmoid_bce_second_derivative(mode):
    data = load("bce_logits")
    logits, labels = bce_grid(data)
    grad = elementwise_grad(jaxloss.sigmoid_binary_cross_entropy)
    hess = transform(elementwise_grad(grad), mode)
    check_ulp(
        "d2/dz2 sigmoid_binary_cross_entropy",
        hess(logits, labels),
        data["hess"][None, :],
        ulp.BCE_HESS_ULP,
        bce_describe(logits, labels),
        mask=np.abs(logits) <= ulp.BCE_HESS_MAX_ABS_LOGIT,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("half", list(HALF_DTYPES))
def test_sigmoid_bce_half_inputs(half, mode):
    data = load(f"bce_logits_{half}")
    logits, labels = bce_grid(data)
    dtype = HALF_DTYPES[half]
    loss = transform(jaxloss.sigmoid_binary_cross_entropy, mode)
    computed = loss(logits.astype(dtype), labels.astype(dtype))
    assert computed.dtype == jnp.float32, f"{half} inputs gave a {computed.dtype} loss"
    check_ulp(
        f"sigmoid_binary_cross_entropy({half} inputs) value",
        computed,
        data["value"],
        ulp.HALF_INPUT_ULP,
        bce_describe(logits, labels, f" ({half})"),
    )


# --------------------------------------------------------------------------- BCE on probabilities


@pytest.mark.parametrize("mode", MODES)
def test_binary_cross_entropy_value(mode):
    data = load("bce_probs")
    shape = (data["labels"].size, data["probabilities"].size)
    probabilities = np.ascontiguousarray(np.broadcast_to(data["probabilities"][None, :], shape))
    labels = np.ascontiguousarray(np.broadcast_to(data["labels"][:, None], shape))
    loss = transform(jaxloss.binary_cross_entropy, mode)
    check_ulp(
        "binary_cross_entropy value",
        loss(probabilities, labels),
        data["value"],
        ulp.BCE_PROBS_VALUE_ULP,
        lambda i: f"probability={fmt(probabilities[i])}, label={fmt(labels[i])}",
        mask=np.isfinite(data["value"]),
    )


# --------------------------------------------------------------------------- entropies


def row_describe(data, n: int, inputs: np.ndarray, extra: str = "") -> Callable:
    def describe(index):
        row = index[0]
        head = ", ".join(fmt(v) for v in inputs[row, :4]) + (", ..." if n > 4 else "")
        return f"n={n} row {row} ({data[f'kind_n{n}'][row]}{extra}): [{head}]"

    return describe


def entropy_sizes(name: str) -> list[int]:
    return [int(n) for n in load(name)["sizes"]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", entropy_sizes("entropy_probs"))
def test_entropy_value(n, mode, entropy_path):
    data = load("entropy_probs")
    probabilities = data[f"probabilities_n{n}"]
    entropy = transform(jaxloss.entropy, mode)
    check_ulp(
        "entropy value",
        entropy(probabilities),
        data[f"value_n{n}"],
        ulp.ENTROPY_ULP,
        row_describe(data, n, probabilities),
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", entropy_sizes("entropy_logits"))
def test_entropy_from_logits_value(n, mode, entropy_kernel):
    data = load("entropy_logits")
    logits = data[f"logits_n{n}"]
    entropy = transform(jaxloss.entropy_from_logits, mode)
    check_ulp(
        "entropy_from_logits value",
        entropy(logits),
        data[f"value_n{n}"],
        ulp.ENTROPY_FROM_LOGITS_ULP,
        row_describe(data, n, logits),
        flush_threshold=ulp.flush_threshold(terms=n - 1),
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", entropy_sizes("entropy_logits"))
@pytest.mark.parametrize("half", list(HALF_DTYPES))
def test_entropy_from_logits_half_inputs(half, n, mode, entropy_kernel):
    data = load(f"entropy_logits_{half}")
    logits = data[f"logits_n{n}"]
    entropy = transform(jaxloss.entropy_from_logits, mode)
    computed = entropy(logits.astype(HALF_DTYPES[half]))
    assert computed.dtype == jnp.float32, f"{half} inputs gave a {computed.dtype} entropy"
    check_ulp(
        f"entropy_from_logits({half} inputs) value",
        computed,
        data[f"value_n{n}"],
        ulp.ENTROPY_FROM_LOGITS_ULP,  # its float32 bound (see tests/ulp.py)
        row_describe(data, n, logits, f", {half}"),
        flush_threshold=ulp.flush_threshold(terms=n - 1),
    )


@pytest.mark.parametrize("mode", MODES)
def test_binary_entropy_value(mode):
    data = load("binary_entropy")
    p = data["probabilities"]
    check_ulp(
        "binary_entropy value",
        transform(jaxloss.binary_entropy, mode)(p),
        data["value"],
        ulp.BINARY_ENTROPY_ULP,
        lambda i: f"probability={fmt(p[i])}",
    )


@pytest.mark.parametrize("mode", MODES)
def test_binary_entropy_from_logits_value(mode):
    data = load("binary_entropy")
    x = data["logits"]
    check_ulp(
        "binary_entropy_from_logits value",
        transform(jaxloss.binary_entropy_from_logits, mode)(x),
        data["logit_value"],
        ulp.BINARY_ENTROPY_ULP,
        lambda i: f"logit={fmt(x[i])}",
    )
