"""Build the arbitrary-precision reference data used by ``tests/test_accuracy.py``.

Run from the repository root::

    python tests/make_reference.py

Every input is generated deterministically (``np.random.default_rng(0)``),
rounded to the storage dtype (float32, or a 16-bit format whose values are
stored exactly as float32), and the reference is computed with mpmath at
``mp.dps = 50`` on exactly those stored values.  References are stored as
float64 (the rounding of the float64 reference is ~2**-29 float32 ULP, far
below any tolerance in the suite).

Conventions for the stored references:

* ``0.0`` means the exact value is zero.
* A nonzero exact value whose magnitude is below float64's range is stored as
  the smallest float64 subnormal with its sign, so it is never confused with
  an exact zero.  The test suite treats every reference below float32's
  smallest normal number separately (XLA on CPU flushes subnormals).
* ``inf`` means the exact value is +infinity (e.g. ``-log 0``).

The test suite only loads these files; it never needs mpmath.
"""

from __future__ import annotations

import pathlib
import time

import ml_dtypes
import mpmath
import numpy as np
from mpmath import mp

mp.dps = 50

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
SEED = 0

F32_TINY = float(np.finfo(np.float32).tiny)
F64_SMALLEST_SUBNORMAL = float(np.finfo(np.float64).smallest_subnormal)

# 16-bit formats: the inputs are rounded to these and stored as (exact) float32.
HALF_DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}

LABELS = np.array([0.0, 1.0, 0.5, 0.1, 0.9, 1e-7], dtype=np.float32)
POS_WEIGHTS = np.array([0.3, 3.0], dtype=np.float32)
LABEL_SMOOTHINGS = np.array([0.1], dtype=np.float32)
SPECIAL_LOGITS = (0.0, 1e-8, 16.0, 17.0, 20.0, 30.0, 88.0, 1e4)
CENTRAL_LOGIT_RANGE = 4.0
CENTRAL_LOGIT_COUNT = 1000

ENTROPY_SIZES = (2, 3, 10, 100, 1000)
ENTROPY_LOGIT_SIZES = (2, 10, 100, 1000)
ENTROPY_GRAD_MAX_SIZE = 100  # gradients are stored for rows with n <= this
GAUSSIAN_SCALES = (1e-3, 1.0, 10.0, 100.0, 1e4)
GAUSSIAN_OFFSETS = (0.0, 1e4)
ROWS_PER_CONFIG = 2
UNIFORM_LOGIT_RANGE = 1e4


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def to_mp(x) -> mpmath.mpf:
    """Exact conversion of a float32/float64 scalar to mpmath."""
    return mp.mpf(float(x))


def to_f64(v) -> float:
    """Round an mpmath value to float64, keeping underflowed values nonzero."""
    if mp.isinf(v):
        return float(v)
    f = float(v)
    if f == 0.0 and v != 0:
        return F64_SMALLEST_SUBNORMAL if v > 0 else -F64_SMALLEST_SUBNORMAL
    return f


def to_f64_array(values) -> np.ndarray:
    return np.array([to_f64(v) for v in values], dtype=np.float64)


def as_f32(x) -> np.ndarray:
    """Round to float32 and flush subnormals to zero (XLA on CPU does too)."""
    a = np.asarray(x, dtype=np.float32)
    return np.where(np.abs(a) < F32_TINY, np.float32(0), a).astype(np.float32)


def round_to(x: np.ndarray, dtype) -> np.ndarray:
    """Round float32 values to a 16-bit dtype, returned as exact float32."""
    return np.asarray(x, np.float32).astype(dtype).astype(np.float32)


def softplus(x: mpmath.mpf) -> mpmath.mpf:
    return mp.log1p(mp.exp(x))


def sigmoid(x: mpmath.mpf) -> mpmath.mpf:
    return 1 / (1 + mp.exp(-x))


def xlogx(p: mpmath.mpf) -> mpmath.mpf:
    return mp.zero if p == 0 else p * mp.log(p)


def save(name: str, **arrays) -> None:
    path = DATA_DIR / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    print(f"  wrote {path.relative_to(DATA_DIR.parent.parent)} ({path.stat().st_size / 1024:.0f} KiB)")


# ---------------------------------------------------------------------------
# binary cross-entropy from logits
# ---------------------------------------------------------------------------


def bce_logit_inputs(rng: np.random.Generator) -> np.ndarray:
    magnitudes = np.logspace(-8, 4, 1000)
    # the log grid is sparse where the loss is O(1) and rounding errors add up most
    central = rng.uniform(-CENTRAL_LOGIT_RANGE, CENTRAL_LOGIT_RANGE, CENTRAL_LOGIT_COUNT)
    specials = np.array(SPECIAL_LOGITS)
    z = np.concatenate([magnitudes, -magnitudes, central, specials, -specials])
    return np.unique(as_f32(z))


def bce_logit_references(logits: np.ndarray, labels: np.ndarray, *, with_options: bool = True) -> dict[str, np.ndarray]:
    """Value / first / second derivative of every label x logit pair.

    With ``with_options`` also the pos_weight and label_smoothing variants.

    L = pw*y*softplus(-z) + (1-y)*softplus(z)
    dL/dz = (1-y)*sigmoid(z) - pw*y*sigmoid(-z)
    d2L/dz2 = (pw*y + 1 - y) * sigmoid(z)*sigmoid(-z)
    """
    z_mp = [to_mp(z) for z in logits]
    sp_pos = [softplus(z) for z in z_mp]
    sp_neg = [softplus(-z) for z in z_mp]
    sig_pos = [sigmoid(z) for z in z_mp]
    sig_neg = [sigmoid(-z) for z in z_mp]
    curvature = [a * b for a, b in zip(sig_pos, sig_neg, strict=True)]

    def table(targets, pos_weight=mp.one):
        value, grad = [], []
        for y in targets:
            wy, ny = pos_weight * y, 1 - y
            value.append(to_f64_array(wy * a + ny * b for a, b in zip(sp_neg, sp_pos, strict=True)))
            grad.append(to_f64_array(ny * a - wy * b for a, b in zip(sig_pos, sig_neg, strict=True)))
        return np.stack(value), np.stack(grad)

    labels_mp = [to_mp(y) for y in labels]
    out: dict[str, np.ndarray] = {}
    out["value"], out["grad"] = table(labels_mp)
    out["hess"] = to_f64_array(curvature)
    if not with_options:
        return out

    pw_value, pw_grad = zip(*(table(labels_mp, to_mp(pw)) for pw in POS_WEIGHTS), strict=True)
    out["value_pos_weight"], out["grad_pos_weight"] = np.stack(pw_value), np.stack(pw_grad)

    ls_value, ls_grad = [], []
    for alpha in LABEL_SMOOTHINGS:
        a = to_mp(alpha)
        smoothed = [y * (1 - a) + a / 2 for y in labels_mp]  # exact, from the float32 y and alpha
        v, g = table(smoothed)
        ls_value.append(v)
        ls_grad.append(g)
    out["value_label_smoothing"], out["grad_label_smoothing"] = np.stack(ls_value), np.stack(ls_grad)
    return out


def make_bce_logits(rng: np.random.Generator) -> None:
    logits = bce_logit_inputs(rng)
    options = {"pos_weight": POS_WEIGHTS, "label_smoothing": LABEL_SMOOTHINGS}
    save("bce_logits", logits=logits, labels=LABELS, **options, **bce_logit_references(logits, LABELS))
    for name, dtype in HALF_DTYPES.items():  # 16-bit sets: no option variants
        z16 = np.unique(round_to(logits, dtype))
        y16 = round_to(LABELS, dtype)
        save(f"bce_logits_{name}", logits=z16, labels=y16, **bce_logit_references(z16, y16, with_options=False))


# ---------------------------------------------------------------------------
# binary cross-entropy from probabilities, binary entropy
# ---------------------------------------------------------------------------


def probability_inputs(rng: np.random.Generator) -> np.ndarray:
    toward_zero = 10.0 ** -np.linspace(0.0, 37.5, 600)  # stays above float32's tiny
    toward_one = 1.0 - 10.0 ** -np.linspace(0.3, 7.3, 300)
    dyadic_one = 1.0 - 2.0 ** -np.arange(1, 25)  # exact in float32
    uniform = rng.uniform(0.0, 1.0, 500)
    specials = np.array([0.0, 1.0, 0.5, F32_TINY])
    p = as_f32(np.concatenate([toward_zero, toward_one, dyadic_one, uniform, specials]))
    return np.unique(np.clip(p, 0.0, 1.0))


def bce_prob_reference(p: mpmath.mpf, y: mpmath.mpf) -> mpmath.mpf:
    """-y log p - (1-y) log(1-p) with 0*log(0) = 0."""
    total = mp.zero
    for weight, q in ((y, p), (1 - y, 1 - p)):
        if weight != 0:
            total += mp.inf if q == 0 else -weight * mp.log(q)
    return total


def make_bce_probs(rng: np.random.Generator) -> None:
    p = probability_inputs(rng)
    p_mp = [to_mp(v) for v in p]
    value = np.stack([to_f64_array(bce_prob_reference(q, to_mp(y)) for q in p_mp) for y in LABELS])
    save("bce_probs", probabilities=p, labels=LABELS, value=value)


def binary_entropy_logit_inputs() -> np.ndarray:
    linear = np.linspace(-100.0, 100.0, 801)
    magnitudes = np.logspace(-6, 2, 400)
    specials = np.array([0.0, 30.0, -30.0])
    return np.unique(as_f32(np.concatenate([linear, magnitudes, -magnitudes, specials])))


def make_binary_entropy(rng: np.random.Generator) -> None:
    p = probability_inputs(rng)
    value = to_f64_array(-xlogx(q) - xlogx(1 - q) for q in map(to_mp, p))

    x = binary_entropy_logit_inputs()
    x_mp = [to_mp(v) for v in x]
    logit_value, logit_grad, logit_hess = [], [], []
    for v in x_mp:
        s, t = sigmoid(v), sigmoid(-v)
        logit_value.append(s * softplus(-v) + t * softplus(v))  # -s log s - t log t
        logit_grad.append(-v * s * t)
        logit_hess.append(-s * t - v * s * t * (t - s))
    save(
        "binary_entropy",
        probabilities=p,
        value=value,
        logits=x,
        logit_value=to_f64_array(logit_value),
        logit_grad=to_f64_array(logit_grad),
        logit_hess=to_f64_array(logit_hess),
    )


# ---------------------------------------------------------------------------
# entropy of probability vectors
# ---------------------------------------------------------------------------


def probability_rows(n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """A few probability rows of length n: normalised in float64, cast to float32."""
    rows: list[tuple[str, np.ndarray]] = []
    for concentration in (0.05, 0.3, 1.0, 10.0):
        rows.append((f"dirichlet({concentration})", rng.dirichlet(np.full(n, concentration))))
    with_zeros = rng.dirichlet(np.ones(n))
    with_zeros[rng.permutation(n)[: max(1, n // 2)]] = 0.0
    rows.append(("dirichlet(1) half zeros", with_zeros / with_zeros.sum()))
    one_hot = np.zeros(n)
    one_hot[rng.integers(n)] = 1.0
    rows.append(("one-hot", one_hot))
    near_one_hot = np.full(n, 1e-7 / (n - 1))
    near_one_hot[0] = 1.0 - 1e-7
    rows.append(("near one-hot (1e-7 spread)", near_one_hot))
    rows.append(("uniform 1/n", np.full(n, 1.0 / n)))
    kinds = [kind for kind, _ in rows]
    return kinds, as_f32(np.stack([r / r.sum() for _, r in rows]))


def make_entropy_probs(rng: np.random.Generator) -> None:
    arrays: dict[str, np.ndarray] = {"sizes": np.array(ENTROPY_SIZES)}
    for n in ENTROPY_SIZES:
        kinds, p = probability_rows(n, rng)
        arrays[f"probabilities_n{n}"] = p
        arrays[f"kind_n{n}"] = np.array(kinds)
        arrays[f"value_n{n}"] = to_f64_array(-mp.fsum(xlogx(to_mp(v)) for v in row) for row in p)
    save("entropy_probs", **arrays)


# ---------------------------------------------------------------------------
# entropy from logits
# ---------------------------------------------------------------------------


def logit_rows(n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    rows: list[tuple[str, np.ndarray]] = []
    if n == 2:
        rows.append(("[1e4, 1e4-20]", np.array([1e4, 1e4 - 20.0])))
    if n <= 100:
        for _ in range(ROWS_PER_CONFIG):
            rows.append(("uniform[-1e4,1e4]", rng.uniform(-UNIFORM_LOGIT_RANGE, UNIFORM_LOGIT_RANGE, n)))
    for scale in GAUSSIAN_SCALES:
        for offset in GAUSSIAN_OFFSETS:
            for _ in range(ROWS_PER_CONFIG):
                rows.append((f"normal(offset={offset:g}, scale={scale:g})", offset + scale * rng.standard_normal(n)))
    # rows with classes masked out by -inf; the reference ignores those entries
    for scale in (1.0, 100.0):
        masked = scale * rng.standard_normal(n)
        masked[rng.permutation(n)[: max(1, (9 * n) // 10)]] = -np.inf
        rows.append((f"normal(scale={scale:g}) with -inf", masked))
    if n == 2:
        rows.append(("[0, -inf]", np.array([0.0, -np.inf])))
    kinds = [kind for kind, _ in rows]
    return kinds, as_f32(np.stack([r for _, r in rows]))


def entropy_from_logits_reference(row: np.ndarray) -> tuple[mpmath.mpf, list[mpmath.mpf]]:
    """H(softmax(l)) and dH/dl_i = -p_i (log p_i + H); -inf entries have p_i = 0."""
    finite = [to_mp(v) for v in row if np.isfinite(v)]
    top = max(finite)
    log_z = mp.log(mp.fsum(mp.exp(v - top) for v in finite))
    log_p = [(to_mp(v) - top - log_z) if np.isfinite(v) else None for v in row]
    p = [mp.zero if lp is None else mp.exp(lp) for lp in log_p]
    h = -mp.fsum(pi * lp for pi, lp in zip(p, log_p, strict=True) if lp is not None)
    grad = [mp.zero if lp is None else -pi * (lp + h) for pi, lp in zip(p, log_p, strict=True)]
    return h, grad


def entropy_logit_arrays(rows_by_n: dict[int, tuple[list[str], np.ndarray]]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {"sizes": np.array(sorted(rows_by_n))}
    for n, (kinds, logits) in rows_by_n.items():
        refs = [entropy_from_logits_reference(row) for row in logits]
        arrays[f"logits_n{n}"] = logits
        arrays[f"kind_n{n}"] = np.array(kinds)
        arrays[f"value_n{n}"] = to_f64_array(h for h, _ in refs)
        if n <= ENTROPY_GRAD_MAX_SIZE:
            arrays[f"grad_n{n}"] = np.stack([to_f64_array(g) for _, g in refs])
    return arrays


def make_entropy_logits(rng: np.random.Generator) -> None:
    rows_by_n = {n: logit_rows(n, rng) for n in ENTROPY_LOGIT_SIZES}
    save("entropy_logits", **entropy_logit_arrays(rows_by_n))
    for name, dtype in HALF_DTYPES.items():
        rounded = {}
        for n, (kinds, logits) in rows_by_n.items():
            half = round_to(logits, dtype)
            keep = ~np.any(np.isposinf(half) | np.isnan(half), axis=-1)  # float16 overflow
            rounded[n] = ([k for k, ok in zip(kinds, keep, strict=True) if ok], half[keep])
        save(f"entropy_logits_{name}", **entropy_logit_arrays(rounded))


def main() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    start = time.perf_counter()
    for step in (make_bce_logits, make_bce_probs, make_binary_entropy, make_entropy_probs, make_entropy_logits):
        t0 = time.perf_counter()
        print(f"{step.__name__} ...")
        step(rng)
        print(f"  {time.perf_counter() - t0:.1f} s")
    total = sum(f.stat().st_size for f in DATA_DIR.glob("*.npz"))
    print(f"done in {time.perf_counter() - start:.1f} s; tests/data holds {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
