"""Accuracy of jaxloss beside its peers, in ULPs against mpmath references.

Run from the repository root::

    python -m benchmarks.accuracy [--markdown] [--only "softmax CE" --only KL]

Every implementation is measured in the same run, under ``jax.jit`` on the
default backend, on the stored inputs of ``tests/data`` (built by
``tests/make_reference.py``: mpmath at 50 digits on the exact float32 /
bfloat16 / float16 inputs).  Errors are in ULPs of the dtype each result comes
back in (the definition of the test suite's ``tests/ulp.py``, restated here so
that nothing under ``benchmarks/`` imports ``tests/``); derivatives come from
``jax.grad`` (torch: autograd).  Points whose exact value lies below FLUSH_TERM
(2**-119) are left out of the ULP columns (XLA on CPU flushes subnormal
intermediates).  Non-finite results where the exact value is finite are counted
in their own column and left out of the ULP maxima.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import pathlib
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
from jax.scipy.special import entr, xlog1py, xlogy

import jaxloss

try:
    import torch
except ImportError:  # torch is an optional peer
    torch = None

# The loosest float32 value tolerance of the README's numerics contract (tests/ulp.py: 4 ULP for BCE with options,
# entropy, entropy_from_logits and the binary entropies).
OUTLIER_ULP = 4
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
HALF_NAMES = ("bfloat16", "float16")
HARD_LABELS = (0.0, 1.0)
DATA_DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"  # data files only; no test code


@functools.cache
def load(name: str) -> dict[str, np.ndarray]:
    """The stored inputs and mpmath references ``tests/data/<name>.npz``, as a dict of arrays."""
    path = DATA_DIR / f"{name}.npz"
    if not path.exists():
        raise SystemExit(f"benchmarks.accuracy: {path} is missing: run `python tests/make_reference.py`")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def bce_grid(data) -> tuple[np.ndarray, np.ndarray]:
    """Every (label, logit) pair of a BCE data file as two float32 arrays of shape (labels, logits)."""
    shape = (data["labels"].size, data["logits"].size)
    logits = np.broadcast_to(data["logits"][None, :], shape)
    labels = np.broadcast_to(data["labels"][:, None], shape)
    return np.ascontiguousarray(logits), np.ascontiguousarray(labels)


# --------------------------------------------------------------------------- ULP measurement
# The definition of tests/ulp.py: |computed - exact| / spacing(exact rounded to dtype), where spacing is the gap from
# that magnitude to the next larger number of the dtype (clamped to the largest finite number; subnormals and zero
# spaced by the smallest subnormal). Exact 0: error 0 if computed == 0, else inf. Equal infinities: 0. NaN: inf.
# Exact values below FLUSH_TERM are not ULP-checked: XLA on CPU flushes subnormal intermediates (below 2**-126) to
# zero, and one term with a subnormal factor times a cofactor < 128 is below 2**-119.
FLUSH_TERM = 2.0**-119


def spacing(reference, dtype) -> np.ndarray:
    """ULP of ``|reference|`` rounded to ``dtype`` (bfloat16 included), as float64."""
    info = ml_dtypes.finfo(np.dtype(dtype))
    with np.errstate(over="ignore"):
        magnitude = np.abs(np.asarray(reference, np.float64)).astype(dtype).astype(np.float64)
    magnitude = np.minimum(magnitude, float(info.max))
    _, exponent = np.frexp(magnitude)  # magnitude = m * 2**exponent, m in [0.5, 1)
    gap = np.ldexp(1.0, exponent - 1 - info.nmant)
    return np.where(magnitude < float(info.smallest_normal), float(info.smallest_subnormal), gap)


def ulp_error(computed, reference, dtype=np.float32) -> np.ndarray:
    """Elementwise |computed - reference| in ULPs of ``dtype`` at the reference."""
    c, r = np.broadcast_arrays(np.asarray(computed).astype(np.float64), np.asarray(reference, np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(c - r) / spacing(r, dtype)
    err = np.where(r == 0, np.where(c == 0, 0.0, np.inf), err)
    err = np.where(np.isinf(r) & (c == r), 0.0, err)
    return np.where(np.isnan(err), np.inf, err)


def ulp_checked(reference) -> np.ndarray:
    """Mask of references that are ULP-checked: exact zeros, infinities and those at or above FLUSH_TERM."""
    r = np.abs(np.asarray(reference, np.float64))
    return (r == 0) | (r >= FLUSH_TERM)


def masked_max(errors, mask) -> float:
    """Largest entry of ``errors`` where ``mask`` holds (0.0 where it holds nowhere)."""
    errors = np.where(np.broadcast_to(mask, np.shape(errors)), np.asarray(errors, np.float64), -np.inf)
    return float(errors.max()) if errors.size and np.any(errors > -np.inf) else 0.0


# --------------------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Chunk:
    """One batch of inputs with its references (None where none is stored)."""

    args: tuple[np.ndarray, ...]  # float32 arrays holding exact values of the input dtype
    value: np.ndarray
    grad: np.ndarray | None = None  # derivative with respect to args[0]
    hess: np.ndarray | None = None  # second derivative (elementwise losses only)
    grad_ulp_mask: np.ndarray | None = None  # where the derivative is ULP-measured (None: everywhere)
    grad_cols: np.ndarray | None = None  # the class columns the derivative reference holds (None: all)


@dataclass(frozen=True)
class Case:
    """A function on one input set, and the implementations compared on it."""

    name: str
    dtype: str
    chunks: list[Chunk]
    implementations: dict[str, Callable]  # name -> plain JAX function, or torch_bce_evaluator
    elementwise: bool = True  # second derivative is meaningful


@dataclass
class Stats:
    """Per implementation: max ULP and non-finite counts for (value, d/dx, d2/dx2)."""

    ulp: list[float | None] = field(default_factory=lambda: [None, None, None])
    nonfinite: list[int] = field(default_factory=lambda: [0, 0, 0])
    grad_abs: float | None = None
    value_over: int = 0  # ULP-checked values more than OUTLIER_ULP off
    value_points: int = 0  # ULP-checked values
    out_dtype: str = ""


def jnp_bce_probs(p, y):
    return -(xlogy(y, p) + xlog1py(1 - y, -p))


def entr_sum(p):
    return entr(p).sum(-1)


def naive_entropy_from_logits(logits):
    return -(jax.nn.softmax(logits) * jax.nn.log_softmax(logits)).sum(-1)


def entr_softmax(logits):
    return entr(jax.nn.softmax(logits)).sum(-1)


def entr_binary(p):
    return entr(p) + entr(1 - p)


def entr_sigmoid(x):
    return entr(jax.nn.sigmoid(x)) + entr(jax.nn.sigmoid(-x))


def naive_ce_integer(logits, labels):
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None].astype(jnp.int32), -1)[..., 0]


def naive_ce(logits, labels):
    return -(labels * jax.nn.log_softmax(logits)).sum(-1)


def optax_kl(logits, target_logits):
    return optax.kl_divergence(jax.nn.log_softmax(logits), jax.nn.softmax(target_logits))


def naive_kl(logits, target_logits):
    return (jax.nn.softmax(target_logits) * (jax.nn.log_softmax(target_logits) - jax.nn.log_softmax(logits))).sum(-1)


CE_INTEGER_PEERS = {
    "jaxloss": jaxloss.softmax_cross_entropy_with_integer_labels,
    "optax": optax.softmax_cross_entropy_with_integer_labels,
    "-take(log_softmax, labels)": naive_ce_integer,
}
CE_PEERS = {
    "jaxloss": jaxloss.softmax_cross_entropy,
    "optax": optax.softmax_cross_entropy,
    "-(labels * log_softmax).sum(-1)": naive_ce,
}
KL_PEERS = {
    "jaxloss": jaxloss.kl_divergence_from_logits,
    "optax kl_divergence(log_softmax, softmax)": optax_kl,
    "(q * (log_softmax(t) - log_softmax(z))).sum(-1)": naive_kl,
}


def categorical_chunks(data, which: str, *, confident_target: bool = False, half: bool = False) -> list[Chunk]:
    """One chunk per row length of a categorical data file: (logits, labels) with classes that are out given as
    -inf logits (the peers have no ``where``). ``which``: "int" (class indices), "onehot" or "soft".
    Rows with a label on a class that ``where`` leaves out are skipped (a ``where``-only semantics).
    ``confident_target``: only the rows whose target probability exceeds 1 - 2**-24, the derivative measured at
    the target entry alone."""
    chunks = []
    for n in (int(n) for n in data["sizes"]):
        kinds = data[f"kind_n{n}"]
        z = data[f"logits_n{n}"]
        if not half:
            z = np.where(data[f"where_n{n}"], z, -np.inf).astype(np.float32)
        keep = np.array(["masked class" not in k for k in kinds])
        k = data[f"labels_n{n}"]
        cols = data[f"gcols_n{n}"]
        key = "int" if which in ("int", "onehot") else "soft"
        value, grad = data[f"{key}_value_n{n}"], data[f"{key}_grad_n{n}"]
        if confident_target:
            target = grad[np.arange(len(k)), np.searchsorted(cols, k)]
            keep &= np.array([kd.startswith("confident") for kd in kinds]) & (-(2.0**-24) < target) & (target < 0)
            keep &= np.isin(k, cols)
        if not keep.any():
            continue
        labels = {"int": k, "onehot": (np.arange(n)[None] == k[:, None]).astype(np.float32)}.get(which)
        labels = data[f"soft_labels_n{n}"] if labels is None else labels
        mask = None
        if confident_target:
            mask = cols[None, :] == k[keep][:, None]
        elif which == "soft":
            mask = np.zeros((int(keep.sum()), cols.size), bool)  # S p - y cancels: abs error only
        chunks.append(Chunk((z[keep], labels[keep]), value[keep], grad[keep], grad_ulp_mask=mask, grad_cols=cols))
    return chunks


def kl_chunks(data, half: bool = False) -> list[Chunk]:
    prefix = "kl_" if half else ""
    chunks = []
    for n in (int(n) for n in data["sizes"]):
        z, t = data[f"{prefix}logits_n{n}"], data[f"{prefix}target_logits_n{n}"]
        if not half:
            w = data[f"where_n{n}"]
            z, t = np.where(w, z, -np.inf).astype(np.float32), np.where(w, t, -np.inf).astype(np.float32)
        cols = data[f"gcols_n{n}"]
        value, grad = data[f"{prefix}value_n{n}"], data[f"{prefix}grad_n{n}"]
        # dKL/dz = p - q cancels where p ~ q: ULP-measured only where |p - q| >= max(p, q) / 2
        if half:
            mask = np.zeros(grad.shape, bool)
        else:
            p, q = data[f"p_n{n}"], data[f"q_n{n}"]
            mask = np.abs(grad) >= np.maximum(p, q) / 2
        chunks.append(Chunk((z, t), value, grad, grad_ulp_mask=mask, grad_cols=cols))
    return chunks


def bce_chunk(data, *, labels=None, value="value", grad="grad", index=None) -> Chunk:
    logits, all_labels = bce_grid(data)
    rows = np.isin(data["labels"], labels) if labels is not None else np.ones(data["labels"].size, bool)

    def pick(key):
        ref = data[key] if index is None else data[key][index]
        return ref[rows]

    # derivative ULPs only where the label is hard (0 or 1 after smoothing): elsewhere the exact
    # derivative (1-y) sigmoid(z) - y sigmoid(-z) crosses zero, and only its absolute error is meaningful
    hard = np.isin(all_labels[rows], HARD_LABELS) & (value != "value_label_smoothing")
    hess = data["hess"][None, :] if value == "value" else None
    hess = None if hess is None else np.broadcast_to(hess, logits[rows].shape)
    return Chunk((logits[rows], all_labels[rows]), pick(value), pick(grad), hess, grad_ulp_mask=hard)


def entropy_logit_chunks(data) -> list[Chunk]:
    return [
        Chunk((data[f"logits_n{n}"],), data[f"value_n{n}"], data.get(f"grad_n{n}"))
        for n in (int(n) for n in data["sizes"])
    ]


def cases() -> Iterator[Case]:
    bce = {"jaxloss": jaxloss.sigmoid_binary_cross_entropy, "optax": optax.sigmoid_binary_cross_entropy}
    if torch is not None:
        bce["torch"] = torch_bce_evaluator
    data = load("bce_logits")
    hard, soft = HARD_LABELS, [y for y in data["labels"] if y not in HARD_LABELS]
    yield Case("sigmoid BCE, hard labels", "float32", [bce_chunk(data, labels=hard)], bce)
    yield Case("sigmoid BCE, soft labels", "float32", [bce_chunk(data, labels=soft)], bce)
    for k, pw in enumerate(data["pos_weight"]):
        fn = functools.partial(jaxloss.sigmoid_binary_cross_entropy, pos_weight=float(pw))
        chunks = [bce_chunk(data, value="value_pos_weight", grad="grad_pos_weight", index=k)]
        yield Case(f"sigmoid BCE, pos_weight={pw:g}", "float32", chunks, {"jaxloss": fn})
    for k, alpha in enumerate(data["label_smoothing"]):
        fn = functools.partial(jaxloss.sigmoid_binary_cross_entropy, label_smoothing=float(alpha))
        chunks = [bce_chunk(data, value="value_label_smoothing", grad="grad_label_smoothing", index=k)]
        yield Case(f"sigmoid BCE, label_smoothing={alpha:g}", "float32", chunks, {"jaxloss": fn})
    for half in HALF_NAMES:
        yield Case("sigmoid BCE, all labels", half, [bce_chunk(load(f"bce_logits_{half}"))], bce)

    data = load("bce_probs")
    shape = (data["labels"].size, data["probabilities"].size)
    args = (np.broadcast_to(data["probabilities"], shape), np.broadcast_to(data["labels"][:, None], shape))
    peers = {"jaxloss": jaxloss.binary_cross_entropy, "jnp xlogy/xlog1py": jnp_bce_probs}
    yield Case("BCE on probabilities", "float32", [Chunk(args, data["value"])], peers)

    data = load("entropy_probs")
    chunks = [Chunk((data[f"probabilities_n{n}"],), data[f"value_n{n}"]) for n in data["sizes"]]
    peers = {"jaxloss": jaxloss.entropy, "entr(p).sum(-1)": entr_sum}
    yield Case("entropy (n <= 1000)", "float32", chunks, peers, elementwise=False)

    peers = {
        "jaxloss": jaxloss.entropy_from_logits,
        "-(softmax * log_softmax).sum(-1)": naive_entropy_from_logits,
        "entr(softmax).sum(-1)": entr_softmax,
    }
    for dtype in ("float32", *HALF_NAMES):
        data = load("entropy_logits" if dtype == "float32" else f"entropy_logits_{dtype}")
        yield Case("entropy from logits", dtype, entropy_logit_chunks(data), peers, elementwise=False)

    data = load("categorical_logits")
    half_data = load("categorical_logits_bfloat16")
    name = "softmax CE, integer labels"
    yield Case(name, "float32", categorical_chunks(data, "int"), CE_INTEGER_PEERS, elementwise=False)
    yield Case(name, "bfloat16", categorical_chunks(half_data, "int", half=True), CE_INTEGER_PEERS, elementwise=False)
    chunks = categorical_chunks(data, "int", confident_target=True)
    name = "softmax CE, integer labels: target entry of d/dz, p_target > 1 - 2^-24"
    yield Case(name, "float32", chunks, CE_INTEGER_PEERS, elementwise=False)
    yield Case("softmax CE, one-hot labels", "float32", categorical_chunks(data, "onehot"), CE_PEERS, elementwise=False)
    chunks = categorical_chunks(data, "onehot", confident_target=True)
    name = "softmax CE, one-hot labels: target entry of d/dz, p_target > 1 - 2^-24"
    yield Case(name, "float32", chunks, CE_PEERS, elementwise=False)
    yield Case("softmax CE, soft labels", "float32", categorical_chunks(data, "soft"), CE_PEERS, elementwise=False)
    chunks = categorical_chunks(half_data, "soft", half=True)
    yield Case("softmax CE, soft labels", "bfloat16", chunks, CE_PEERS, elementwise=False)
    yield Case("KL from logits", "float32", kl_chunks(load("kl_logits")), KL_PEERS, elementwise=False)
    yield Case("KL from logits", "bfloat16", kl_chunks(half_data, half=True), KL_PEERS, elementwise=False)

    data = load("binary_entropy")
    peers = {"jaxloss": jaxloss.binary_entropy, "entr(p) + entr(1-p)": entr_binary}
    yield Case("binary entropy", "float32", [Chunk((data["probabilities"],), data["value"])], peers)
    chunk = Chunk((data["logits"],), data["logit_value"], data["logit_grad"], data["logit_hess"])
    peers = {"jaxloss": jaxloss.binary_entropy_from_logits, "entr(sigmoid) pair": entr_sigmoid}
    yield Case("binary entropy from logits", "float32", [chunk], peers)


# --------------------------------------------------------------------------- evaluation
# An evaluator maps (args, need_grad, need_hess) to [value, d/dx, d2/dx2] as NumPy arrays (None if not needed).
Evaluator = Callable[[tuple[np.ndarray, ...], bool, bool], list]


def jax_evaluator(fn: Callable, elementwise: bool) -> Evaluator:
    """(value, derivative, second derivative) of ``fn`` with respect to its first argument, jitted."""
    d1 = jax.grad(lambda x, *rest: jnp.sum(fn(x, *rest)))
    d2 = jax.grad(lambda x, *rest: jnp.sum(d1(x, *rest)))
    value, d1, d2 = jax.jit(fn), jax.jit(d1), jax.jit(d2)

    def evaluate(args, need_grad, need_hess):
        outs = [value(*args), d1(*args) if need_grad else None, d2(*args) if need_hess and elementwise else None]
        return [None if o is None else np.asarray(o) for o in outs]

    return evaluate


def torch_bce_evaluator(elementwise: bool) -> Evaluator:
    """torch.nn.functional.binary_cross_entropy_with_logits with autograd derivatives, in the input dtype."""
    del elementwise
    to_numpy_dtype = {torch.float32: np.float32, torch.bfloat16: ml_dtypes.bfloat16, torch.float16: np.float16}
    from_name = {str(np.dtype(v)): k for k, v in to_numpy_dtype.items()}

    def as_tensor(a):
        return torch.tensor(np.asarray(a, np.float32)).to(from_name[str(a.dtype)])

    def evaluate(args, need_grad, need_hess):
        z = as_tensor(args[0]).requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, as_tensor(args[1]), reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), z, create_graph=True)
        (hess,) = torch.autograd.grad(grad.sum(), z)
        outs = [loss, grad if need_grad else None, hess if need_hess else None]
        return [None if o is None else o.detach().float().numpy().astype(to_numpy_dtype[o.dtype]) for o in outs]

    return evaluate


def measure(case: Case, fn: Callable) -> Stats:
    dtype = DTYPES[case.dtype]
    evaluate = fn(case.elementwise) if fn is torch_bce_evaluator else jax_evaluator(fn, case.elementwise)
    stats = Stats()
    for chunk in case.chunks:
        # floating inputs in the case's dtype; integer labels stay integers
        args = tuple(
            np.asarray(a).astype(dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a)
            for a in chunk.args
        )
        outs = evaluate(args, chunk.grad is not None, chunk.hess is not None)
        if chunk.grad_cols is not None and outs[1] is not None:
            outs[1] = outs[1][..., chunk.grad_cols]
        stats.out_dtype = str(outs[0].dtype)
        for k, (out, ref) in enumerate(zip(outs, (chunk.value, chunk.grad, chunk.hess), strict=True)):
            if out is None or ref is None:
                continue
            ref = np.broadcast_to(ref, out.shape)
            bad = ~np.isfinite(out) & np.isfinite(ref)
            stats.nonfinite[k] += int(bad.sum())
            mask = ulp_checked(ref) & ~bad
            if k == 1:
                stats.grad_abs = max(stats.grad_abs or 0.0, masked_max(np.abs(out.astype(np.float64) - ref), mask))
                if chunk.grad_ulp_mask is not None:
                    mask &= chunk.grad_ulp_mask
            if not mask.any():
                continue
            errors = ulp_error(out, ref, out.dtype)
            stats.ulp[k] = max(stats.ulp[k] or 0.0, masked_max(errors, mask))
            if k == 0:
                stats.value_over += int(np.sum(mask & (errors > OUTLIER_ULP)))
                stats.value_points += int(np.sum(mask))
    return stats


# --------------------------------------------------------------------------- report

COLUMNS = (
    "function",
    "inputs",
    "implementation",
    "result dtype",
    "value max ULP",
    f"values > {OUTLIER_ULP} ULP",
    "d/dx max ULP",
    "d/dx max abs err",
    "d²/dx² max ULP",
    "non-finite (value / d / d²)",
)


def fmt_ulp(x: float | None) -> str:
    if x is None:
        return "—"
    if not np.isfinite(x):
        return "inf"
    if x < 100:
        return f"{x:.2f}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_abs(x: float | None) -> str:
    return "—" if x is None else f"{x:.1e}"


def rows(only: list[str] | None = None) -> Iterator[tuple[str, ...]]:
    for case in cases():
        if only and not case.name.startswith(tuple(only)):
            continue
        for name, fn in case.implementations.items():
            s = measure(case, fn)
            has = (
                True,
                any(c.grad is not None for c in case.chunks),
                case.elementwise and any(c.hess is not None for c in case.chunks),
            )
            nonfinite = " / ".join(str(n) if h else "—" for n, h in zip(s.nonfinite, has, strict=True))
            ulps = [fmt_ulp(u) if h else "—" for u, h in zip(s.ulp, has, strict=True)]
            over = f"{s.value_over} of {s.value_points}"
            yield (
                case.name,
                case.dtype,
                name,
                s.out_dtype,
                ulps[0],
                over,
                ulps[1],
                fmt_abs(s.grad_abs),
                ulps[2],
                nonfinite,
            )


def versions() -> str:
    names = ["jax", "jaxlib", "optax"] + (["torch"] if torch is not None else [])
    parts = [f"{n} {importlib.metadata.version(n)}" for n in names]
    backend = jax.default_backend()
    device = f"{backend} ({platform.processor() or platform.machine()})" if backend == "cpu" else backend
    return ", ".join(parts) + f"; {device}" + ("" if torch is not None else "; torch not installed")


NOTES = (
    "ULP = |computed - exact| / spacing of the exact value in the result's dtype; exact = mpmath, 50 digits,",
    "on the stored inputs (`tests/data`, built by `python tests/make_reference.py`). All jitted.",
    f"`values > {OUTLIER_ULP} ULP` counts the ULP-checked values off by more than that (a max can be one point).",
    "d/dx ULP for BCE is over hard labels {0, 1}; the abs-error column covers every label.",
    "Categorical rows: 1 to 32768 classes (bfloat16: 10 and 100), classes out given as -inf logits to every",
    "implementation; d/dx is d/dlogits, ULP-measured entry by entry for hard labels, only at the target entry",
    "in the `p_target > 1 - 2^-24` rows (where `softmax - one_hot` cancels), not for soft labels (S p - y",
    "cancels: abs error only), and for KL only where |p - q| >= max(p, q) / 2.",
    "Exact values below 2^-119 (1.5e-36) are left out of the ULP columns (XLA on CPU flushes subnormal",
    "intermediates); non-finite results where the exact value is finite are counted, not maximised.",
    "Derivatives come back in the input dtype (jax.grad), so 16-bit derivative ULPs are 16-bit ULPs.",
)


def render(table: list[tuple[str, ...]], markdown: bool) -> str:
    lines = []
    if markdown:
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "|".join("---" if i < 4 else "---:" for i in range(len(COLUMNS))) + "|")
        lines += ["| " + " | ".join(f"`{c}`" if i == 2 else c for i, c in enumerate(r)) + " |" for r in table]
        lines += ["", f"Measured with {versions()}. Reproduce: `python -m benchmarks.accuracy --markdown`.", ""]
        lines += [" ".join(NOTES)]
    else:
        widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(COLUMNS)]
        align = ["<" if i < 4 else ">" for i in range(len(COLUMNS))]

        def line(cells):
            return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True))

        lines.append(line(COLUMNS))
        lines.append("  ".join("-" * w for w in widths))
        lines += [line(r) for r in table]
        lines += ["", versions(), *NOTES]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    parser.add_argument(
        "--only", action="append", metavar="PREFIX", help="measure only the functions whose name starts so (repeatable)"
    )
    args = parser.parse_args(argv)
    print(render(list(rows(args.only)), args.markdown))


if __name__ == "__main__":
    main()
