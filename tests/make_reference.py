"""Build the arbitrary-precision reference data used by ``tests/test_accuracy.py`` and ``tests/test_categorical.py``.

Run from the repository root::

    python tests/make_reference.py               # every file
    python tests/make_reference.py categorical   # only the categorical files (cross-entropy, KL; ~20 s)

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
import sys
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


# ---------------------------------------------------------------------------
# categorical cross-entropy and KL divergence (issue 14)
# ---------------------------------------------------------------------------
# Rows of logits (float32, -inf for a class that is out) with a class mask ``where`` (False = out), integer labels,
# soft label distributions, and the exact values and gradients of every row function of jaxloss.categorical.
# Gradients are stored in full for rows of up to CATEGORICAL_FULL_GRAD classes; for longer rows on the columns
# ``gcols_n{n}`` only (the label, the top classes, masked classes and a random sample), to keep the files small.

CATEGORICAL_SIZES = (1, 2, 3, 10, 100, 1000, 32768)
CATEGORICAL_FULL_GRAD = 100
CATEGORICAL_GRAD_COLUMNS = 192
CATEGORICAL_SMOOTHING = np.float32(0.1)
KL_SIZES = (2, 3, 10, 100, 1000)
HALF_CATEGORICAL_SIZES = (10, 100)
LONG_ROW_KINDS = ("normal(scale=1)", "normal(scale=10000)", "normal(scale=1) with -inf and where=False")
KL_LONG_ROW_KINDS = ("independent normal(scale=1)", "near-equal: t = z + 0.001 normal", "shifted: t = z + 1024")
PROBABILITY_PAIR_SIZES = (2, 10, 100, 1000)


def _quantized(x: np.ndarray, step: float) -> np.ndarray:
    """x rounded to multiples of ``step`` (a power of 2): exact in float32 and compressible in the npz."""
    return np.round(np.asarray(x) / step) * step


def softmax_mp(row: np.ndarray, inside: np.ndarray) -> tuple[list, list]:
    """(log p, p) of softmax over the classes that are in (log p = None, p = 0 elsewhere)."""
    logits = [to_mp(v) if ok else None for v, ok in zip(row, inside, strict=True)]
    present = [v for v in logits if v is not None]
    if not present:
        return [None] * len(row), [mp.zero] * len(row)
    top = max(present)
    log_z = mp.log(mp.fsum(mp.exp(v - top) for v in present))
    log_p = [None if v is None else v - top - log_z for v in logits]
    return log_p, [mp.zero if lp is None else mp.exp(lp) for lp in log_p]


def soft_ce_mp(log_p: list, p: list, y: list, where: np.ndarray) -> tuple[mpmath.mpf, list]:
    """-sum y log p (+inf where a label > 0 is on a class that is out) and S p - y; all out: 0, zero gradient.

    The derivative with respect to the logit of a class ``where`` leaves out is 0 (the loss does not depend on
    it); a class out by a -inf logit has p = 0 and derivative -y there."""
    if all(lp is None for lp in log_p):
        return mp.zero, [mp.zero] * len(p)
    value = mp.zero
    for yc, lp in zip(y, log_p, strict=True):
        if yc != 0:
            value = mp.inf if lp is None or value == mp.inf else value - yc * lp
    total = mp.fsum(y)
    return value, [total * pc - yc if ok else mp.zero for pc, yc, ok in zip(p, y, where, strict=True)]


def categorical_logit_rows(n: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """(kind, logits, where, integer label) rows of n classes."""
    rows: list[tuple[str, np.ndarray, np.ndarray, int]] = []
    everywhere = np.ones(n, bool)

    def add(kind, z, where=everywhere, label=None):
        z = np.asarray(z, np.float64)
        finite = z[np.isfinite(z)]
        if n >= 1000 and finite.size:  # compressible: a grid of 2**-bits of the row's spread
            spread = max(float(np.max(finite) - np.min(finite)), 1.0)
            bits = 8 if n > 1000 else 12
            z = np.where(np.isfinite(z), _quantized(z, 2.0 ** (np.ceil(np.log2(spread)) - bits)), z)
        z = as_f32(z)
        if label is None:
            candidates = np.flatnonzero(where & np.isfinite(z))
            label = int(rng.choice(candidates)) if candidates.size else 0
        rows.append((kind, z, np.asarray(where, bool), int(label)))

    if n == 1:
        for v in (0.0, -3.5, 1e4):
            add(f"one class [{v:g}]", [v], label=0)
        add("one class, masked", [1.0], np.zeros(1, bool), label=0)
        return rows
    scales = (1.0, 1e4) if n == 32768 else (1e-3, 1.0, 10.0, 100.0, 1e4)
    for scale in scales:
        add(f"normal(scale={scale:g})", scale * rng.standard_normal(n))
    if n <= 1000:
        add("normal(offset=1e4, scale=10)", 1e4 + 10 * rng.standard_normal(n))
    if n <= 100:
        add("uniform[-1e4,1e4]", rng.uniform(-1e4, 1e4, n))
    add("ties: all equal", np.full(n, 2.5))
    tie = rng.standard_normal(n)
    tie[: 2 if n > 2 else 1] = 7.0
    add("ties: two top classes", tie, label=0)
    # confident: the label's probability above 1 - 2**-24 (the target gradient is -sum of the others)
    for margin in (20.0, 30.0, 60.0):
        z = rng.standard_normal(n)
        k = int(rng.integers(n))
        z[k] = margin
        add(f"confident (label at {margin:g}, others normal)", z, label=k)
    if n <= 1000:
        z = 1e4 + rng.standard_normal(n)
        z[0] = 1e4 + 40
        add("confident at 1e4 (label at +40)", z, label=0)
    # classes out: -inf logits and where=False, labels 0 there (a label on one: +inf)
    for scale in (1.0, 30.0) if n >= 3 else (1.0,):
        z = scale * rng.standard_normal(n)
        z[rng.permutation(n)[: n // 3]] = -np.inf
        where = everywhere.copy()
        where[rng.permutation(n)[: n // 3]] = False
        if n == 2:
            z[1], where = -np.inf, everywhere
        add(f"normal(scale={scale:g}) with -inf and where=False", z, where)
    z = rng.standard_normal(n)
    where = everywhere.copy()
    where[0] = False
    add("label on a masked class (+inf)", z, where, label=0)
    z = rng.standard_normal(n)
    z[-1] = -np.inf
    add("label on a -inf class (+inf)", z, label=n - 1)
    add("all classes masked", rng.standard_normal(n), np.zeros(n, bool), label=0)
    return rows


def soft_label_row(n: int, inside: np.ndarray, label: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A label distribution on the classes that are in (sparse for long rows); mass on the masked label for a
    '+inf' row."""
    y = np.zeros(n)
    candidates = np.flatnonzero(inside)
    if candidates.size:
        support = candidates if n <= 100 else rng.choice(candidates, min(16, candidates.size), replace=False)
        y[support] = rng.dirichlet(np.full(support.size, 0.5))
    if "+inf" in kind:
        y = 0.7 * y
        y[label] = 0.3
    if "confident" in kind:  # mostly on the confident class, a little elsewhere
        y = 0.01 * y
        y[label] += 0.99
    return as_f32(y)


def gradient_columns(n: int, rows, rng: np.random.Generator) -> np.ndarray:
    if n <= CATEGORICAL_FULL_GRAD:
        return np.arange(n)
    special = {0, 1, n - 1}
    for _, z, where, label in rows:
        special.add(label)
        special.update(np.flatnonzero(z == np.max(z)).tolist()[:2])
        special.update(np.flatnonzero(~where | ~np.isfinite(z)).tolist()[:2])
    others = rng.choice(n, CATEGORICAL_GRAD_COLUMNS, replace=False)
    return np.unique(np.concatenate([np.array(sorted(special)), others]))


def make_categorical_logits(rng: np.random.Generator) -> None:
    alpha = to_mp(CATEGORICAL_SMOOTHING)
    arrays: dict[str, np.ndarray] = {"sizes": np.array(CATEGORICAL_SIZES), "label_smoothing": CATEGORICAL_SMOOTHING}
    for n in CATEGORICAL_SIZES:
        rows = categorical_logit_rows(n, rng)
        if n > 1000:  # a few long rows: the stored logits cost ~25 KiB each
            rows = [
                r for r in rows if r[0].split(" (")[0] in LONG_ROW_KINDS or r[0].startswith("confident (label at 30")
            ]
        cols = gradient_columns(n, rows, rng)
        out: dict[str, list] = {}
        for key in ("int", "soft", "int_smooth", "soft_smooth"):
            out[f"{key}_value"], out[f"{key}_grad"] = [], []
        soft = []
        for kind, z, where, label in rows:
            inside = where & np.isfinite(z)
            log_p, p = softmax_mp(z, where & (z > -np.inf))
            y_soft = soft_label_row(n, inside, label, kind, rng)
            soft.append(y_soft)
            k_in = sum(1 for lp in log_p if lp is not None)
            uniform = [mp.one / k_in if lp is not None else mp.zero for lp in log_p] if k_in else [mp.zero] * n
            onehot = [mp.one if c == label else mp.zero for c in range(n)]
            labels = {"int": onehot, "soft": [to_mp(v) for v in y_soft]}
            for key, y in labels.items():
                for suffix, yy in (
                    ("", y),
                    ("_smooth", [(1 - alpha) * a + alpha * u for a, u in zip(y, uniform, strict=True)]),
                ):
                    value, grad = soft_ce_mp(log_p, p, yy, where)
                    out[f"{key}{suffix}_value"].append(to_f64(value))
                    out[f"{key}{suffix}_grad"].append(to_f64_array(grad[c] for c in cols))
        arrays[f"kind_n{n}"] = np.array([kind for kind, *_ in rows])
        arrays[f"logits_n{n}"] = np.stack([z for _, z, _, _ in rows])
        arrays[f"where_n{n}"] = np.stack([w for _, _, w, _ in rows])
        arrays[f"labels_n{n}"] = np.array([k for *_, k in rows], np.int32)
        arrays[f"soft_labels_n{n}"] = np.stack(soft)
        arrays[f"gcols_n{n}"] = cols
        for key in ("int", "soft", "int_smooth", "soft_smooth"):
            arrays[f"{key}_value_n{n}"] = np.array(out[f"{key}_value"])
            arrays[f"{key}_grad_n{n}"] = np.stack(out[f"{key}_grad"])
    save("categorical_logits", **arrays)


def make_categorical_logits_bfloat16(rng: np.random.Generator) -> None:
    """Rows of 10 to 1000 classes rounded to bfloat16 (classes out as -inf logits, no where), with integer and soft
    labels (the soft ones rounded to bfloat16 too), and KL pairs rounded to bfloat16: for benchmarks/accuracy.py's
    bfloat16 rows (16-bit logits are computed in float32 by jaxloss; peers compute in bfloat16)."""
    arrays: dict[str, np.ndarray] = {"sizes": np.array(HALF_CATEGORICAL_SIZES)}
    half = HALF_DTYPES["bfloat16"]
    for n in HALF_CATEGORICAL_SIZES:
        rows = [r for r in categorical_logit_rows(n, rng) if "masked class" not in r[0]]
        logits = np.stack([round_to(np.where(w, z, -np.inf), half) for _, z, w, _ in rows])
        keep = ~np.any(np.isposinf(logits) | np.isnan(logits), axis=-1)
        rows = [r for r, ok in zip(rows, keep, strict=True) if ok]
        logits = logits[keep]
        cols = gradient_columns(n, rows, rng)
        labels = np.array([k for *_, k in rows], np.int32)
        soft = np.stack(
            [
                round_to(soft_label_row(n, np.isfinite(z), k, kind, rng), half)
                for (kind, _, _, k), z in zip(rows, logits, strict=True)
            ]
        )
        out: dict[str, list] = {f"{a}_{b}": [] for a in ("int", "soft") for b in ("value", "grad")}
        everywhere = np.ones(n, bool)
        for z, k, y in zip(logits, labels, soft, strict=True):
            log_p, p = softmax_mp(z, z > -np.inf)
            for key, yy in (
                ("int", [mp.one if c == k else mp.zero for c in range(n)]),
                ("soft", [to_mp(v) for v in y]),
            ):
                value, grad = soft_ce_mp(log_p, p, yy, everywhere)
                out[f"{key}_value"].append(to_f64(value))
                out[f"{key}_grad"].append(to_f64_array(grad[c] for c in cols))
        arrays[f"kind_n{n}"] = np.array([kind for kind, *_ in rows])
        arrays[f"logits_n{n}"], arrays[f"labels_n{n}"], arrays[f"soft_labels_n{n}"] = logits, labels, soft
        arrays[f"gcols_n{n}"] = cols
        for key, values in out.items():
            arrays[f"{key}_n{n}"] = np.array(values) if key.endswith("value") else np.stack(values)
        pairs = [r for r in kl_logit_rows(n, rng) if not r[0].startswith(("where", "all classes"))]
        z = np.stack([round_to(r[1], half) for r in pairs])
        t = np.stack([round_to(r[2], half) for r in pairs])
        refs = [kl_mp(a, b, everywhere) for a, b in zip(z, t, strict=True)]
        arrays[f"kl_kind_n{n}"] = np.array([r[0] for r in pairs])
        arrays[f"kl_logits_n{n}"], arrays[f"kl_target_logits_n{n}"] = z, t
        arrays[f"kl_value_n{n}"] = to_f64_array(ref[0] for ref in refs)
        arrays[f"kl_grad_n{n}"] = np.stack([to_f64_array(ref[1][c] for c in cols) for ref in refs])
    save("categorical_logits_bfloat16", **arrays)


def kl_logit_rows(n: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(kind, logits z, target logits t, where) pairs of n classes."""
    rows = []
    everywhere = np.ones(n, bool)

    def add(kind, z, t, where=everywhere):
        rows.append((kind, as_f32(z), as_f32(t), np.asarray(where, bool)))

    for scale in (1.0, 10.0, 100.0):
        add(f"independent normal(scale={scale:g})", scale * rng.standard_normal(n), scale * rng.standard_normal(n))
    add("independent uniform[-1e4,1e4]", rng.uniform(-1e4, 1e4, n), rng.uniform(-1e4, 1e4, n))
    for eps in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        z = as_f32(rng.standard_normal(n))
        add(f"near-equal: t = z + {eps:g} normal", z, z + eps * rng.standard_normal(n))
    z = as_f32(5 * rng.standard_normal(n))
    add("near-equal: t = z + 1 ulp", z, np.nextafter(z, np.float32(np.inf)))
    z = as_f32(1e4 + rng.standard_normal(n))
    add("near-equal at 1e4: t = z + 1e-3 normal", z, z + 1e-3 * rng.standard_normal(n))
    for c in (1.0, -3.5, 1024.0, 2.0**-6):
        z = _quantized(8 * rng.standard_normal(n), 2.0**-10)
        add(f"shifted: t = z + {c:g}", z, z + c)
    for lo, hi in ((-2.0, 2.0), (-2.0, -1.0), (-1.05, -0.95), (0.95, 1.05), (1.0, 2.0)):
        z = as_f32(rng.standard_normal(n))
        add(f"delta in [{lo:g}, {hi:g}]", z, z + rng.uniform(lo, hi, n))
    z = rng.standard_normal(n)
    z[0] = 25.0
    t = z + 1e-3 * rng.standard_normal(n)
    add("confident rows, near-equal", z, t)
    z, t = rng.standard_normal((2, n))
    where = everywhere.copy()
    where[rng.permutation(n)[: max(1, n // 3)]] = False
    add("where=False classes", z, t, where)
    z, t = rng.standard_normal((2, n))
    z[0], t[0] = -np.inf, -np.inf
    add("a class -inf in both", z, t)
    z, t = rng.standard_normal((2, n))
    t[0] = -np.inf
    add("a class -inf in the target only", z, t)
    z, t = rng.standard_normal((2, n))
    z[0] = -np.inf
    add("a class -inf in the logits only (+inf)", z, t)
    add("all classes masked", *rng.standard_normal((2, n)), np.zeros(n, bool))
    return rows


def kl_mp(z, t, where) -> tuple[mpmath.mpf, list, list, list, list]:
    """KL(softmax(t) || softmax(z)), d/dz = p - q, d/dt = q (delta - KL) (0 where q = 0 or KL infinite), p, q."""
    log_p, p = softmax_mp(z, where & (z > -np.inf))
    log_q, q = softmax_mp(t, where & (t > -np.inf))
    n = len(z)
    none_t, none_z = all(v is None for v in log_q), all(v is None for v in log_p)
    if none_t or none_z:
        return (mp.inf if none_t is False else mp.zero), [mp.zero] * n, [mp.zero] * n, p, q
    kl = mp.zero
    deltas = []
    for lp, lq, qc in zip(log_p, log_q, q, strict=True):
        if lq is None:
            deltas.append(None)
        elif lp is None:
            deltas.append(mp.inf)
            kl = mp.inf
        else:
            deltas.append(lq - lp)
            if kl != mp.inf:
                kl += qc * (lq - lp)
    grad_z = [pc - qc for pc, qc in zip(p, q, strict=True)]
    if kl == mp.inf:
        grad_t = [mp.zero] * n
    else:
        grad_t = [mp.zero if d is None else qc * (d - kl) for d, qc in zip(deltas, q, strict=True)]
    return kl, grad_z, grad_t, p, q


def make_kl_logits(rng: np.random.Generator) -> None:
    arrays: dict[str, np.ndarray] = {"sizes": np.array(KL_SIZES)}
    for n in KL_SIZES:
        rows = kl_logit_rows(n, rng)
        if n >= 1000:
            rows = [r for r in rows if r[0] in KL_LONG_ROW_KINDS or r[0].startswith("delta in [-2, -1]")]
        cols = (
            np.arange(n)
            if n <= CATEGORICAL_FULL_GRAD
            else np.unique(np.concatenate([[0, 1, n - 1], rng.choice(n, CATEGORICAL_GRAD_COLUMNS, replace=False)]))
        )
        refs = [kl_mp(z, t, where) for _, z, t, where in rows]
        arrays[f"kind_n{n}"] = np.array([kind for kind, *_ in rows])
        arrays[f"logits_n{n}"] = np.stack([z for _, z, _, _ in rows])
        arrays[f"target_logits_n{n}"] = np.stack([t for _, _, t, _ in rows])
        arrays[f"where_n{n}"] = np.stack([w for *_, w in rows])
        arrays[f"gcols_n{n}"] = cols
        arrays[f"value_n{n}"] = to_f64_array(ref[0] for ref in refs)
        for k, key in enumerate(("grad", "grad_target", "p", "q"), start=1):  # p, q: to tell where grads cancel
            arrays[f"{key}_n{n}"] = np.stack([to_f64_array(ref[k][c] for c in cols) for ref in refs])
    save("kl_logits", **arrays)


def probability_pairs(n: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(kind, p, q) pairs of float32 probability rows (normalised in float64, then rounded)."""
    pairs = []

    def norm(x):
        x = np.asarray(x, np.float64)
        return x / x.sum()

    for concentration in (0.1, 1.0, 10.0):
        pairs.append((f"independent dirichlet({concentration:g})", *rng.dirichlet(np.full(n, concentration), 2)))
    for eps in (1e-6, 1e-4, 1e-2):
        p = rng.dirichlet(np.ones(n))
        pairs.append((f"near-equal (relative {eps:g})", p, norm(p * (1 + eps * rng.standard_normal(n)))))
    p = rng.dirichlet(np.ones(n))
    pairs.append(("equal rows", p, p))
    p, q = rng.dirichlet(np.ones(n), 2)
    p[0] = 0.0
    pairs.append(("p has a zero (relative entropy: 0 log 0; cross-entropy: +inf)", norm(p), q))
    p, q = rng.dirichlet(np.ones(n), 2)
    q[0] = 0.0
    pairs.append(("q has a zero (relative entropy: +inf; cross-entropy target 0)", p, norm(q)))
    onehot = np.zeros(n)
    onehot[0] = 1.0
    pairs.append(("one-hot against dirichlet", onehot, rng.dirichlet(np.ones(n))))
    near = np.full(n, 1e-7 / (n - 1))
    near[0] = 1 - 1e-7
    pairs.append(("near one-hot against one-hot-ish", near, norm(np.where(np.arange(n) == 0, 1.0, 1e-6))))
    return [(kind, as_f32(a), as_f32(b)) for kind, a, b in pairs]


def make_categorical_probs(rng: np.random.Generator) -> None:
    arrays: dict[str, np.ndarray] = {"sizes": np.array(PROBABILITY_PAIR_SIZES)}
    for n in PROBABILITY_PAIR_SIZES:
        pairs = probability_pairs(n, rng)
        ce, re = [], []
        ce_dp, ce_dt, re_dp, re_dq = [], [], [], []
        for _, p, q in pairs:
            pm, qm = [to_mp(v) for v in p], [to_mp(v) for v in q]
            # cross_entropy(p, t=q): -sum t log p
            ce.append(mp.fsum((mp.inf if a == 0 else -b * mp.log(a)) for a, b in zip(pm, qm, strict=True) if b != 0))
            ce_dp.append([mp.zero if b == 0 else (-mp.inf if a == 0 else -b / a) for a, b in zip(pm, qm, strict=True)])
            ce_dt.append([mp.inf if a == 0 else -mp.log(a) for a in pm])
            # relative_entropy(p, q): sum p log(p / q)
            re.append(mp.fsum((mp.inf if b == 0 else a * mp.log(a / b)) for a, b in zip(pm, qm, strict=True) if a != 0))
            re_dp.append(
                [mp.zero if a == 0 else (mp.inf if b == 0 else mp.log(a / b) + 1) for a, b in zip(pm, qm, strict=True)]
            )
            re_dq.append([mp.zero if a == 0 else (-mp.inf if b == 0 else -a / b) for a, b in zip(pm, qm, strict=True)])
        arrays[f"kind_n{n}"] = np.array([kind for kind, _, _ in pairs])
        arrays[f"p_n{n}"] = np.stack([p for _, p, _ in pairs])
        arrays[f"q_n{n}"] = np.stack([q for _, _, q in pairs])
        arrays[f"ce_value_n{n}"] = to_f64_array(ce)
        arrays[f"re_value_n{n}"] = to_f64_array(re)
        if n <= CATEGORICAL_FULL_GRAD:
            for key, grads in (("ce_dp", ce_dp), ("ce_dt", ce_dt), ("re_dp", re_dp), ("re_dq", re_dq)):
                arrays[f"{key}_n{n}"] = np.stack([to_f64_array(g) for g in grads])
    save("categorical_probs", **arrays)


def main(argv: list[str] | None = None) -> None:
    """Build every data file, or (``python tests/make_reference.py categorical``) only the named groups.

    The original five files share one generator (``SEED``); each categorical file has its own (``[SEED, k]``), so
    that adding or rebuilding one of them leaves every other file byte-identical.
    """
    groups = set(sys.argv[1:] if argv is None else argv) or {"all"}
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps = []
    if groups & {"all", "binary"}:
        rng = np.random.default_rng(SEED)
        steps += [(s, rng) for s in (make_bce_logits, make_bce_probs, make_binary_entropy, make_entropy_probs)]
        steps += [(make_entropy_logits, rng)]
    if groups & {"all", "categorical"}:
        categorical = (
            make_categorical_logits,
            make_kl_logits,
            make_categorical_probs,
            make_categorical_logits_bfloat16,
        )
        for k, s in enumerate(categorical, start=1):
            steps.append((s, np.random.default_rng([SEED, k])))
    for step, rng in steps:
        t0 = time.perf_counter()
        print(f"{step.__name__} ...")
        step(rng)
        print(f"  {time.perf_counter() - t0:.1f} s")
    total = sum(f.stat().st_size for f in DATA_DIR.glob("*.npz"))
    print(f"done in {time.perf_counter() - start:.1f} s; tests/data holds {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
