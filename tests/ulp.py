"""ULP (unit in the last place) error measurement against high-precision references.

The error of a computed value ``c`` against an exact reference ``r`` (held in
float64) is ``|c - r| / spacing(round(r, dtype))``, where ``spacing`` is
``np.spacing`` in the target ``dtype``: the gap from ``|round(r)|`` to the next
larger representable number.  Conventions:

* ``r == 0``: the error is 0 if ``c == 0`` and ``inf`` otherwise;
* ``r`` and ``c`` both infinite with the same sign: error 0;
* a NaN anywhere, or an infinity on one side only: error ``inf``.

Every accuracy tolerance of the test suite is defined in this module, so the
numbers are stated once.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_dtypes
import numpy as np

# --- the numerics contract (float32 results, ULP against mpmath) -------------
BCE_VALUE_ULP = 2  # sigmoid_binary_cross_entropy, any label
BCE_OPTIONS_VALUE_ULP = 4  # ... with pos_weight != 1 or label_smoothing > 0
BCE_GRAD_HARD_LABEL_ULP = 2  # dL/dz for labels in {0, 1}
BCE_GRAD_ABS = 1.2e-7  # |dL/dz error| for every label
BCE_HESS_ULP = 4  # d2L/dz2 for |z| <= BCE_HESS_MAX_ABS_LOGIT
BCE_HESS_MAX_ABS_LOGIT = 80.0
BCE_PROBS_VALUE_ULP = 2  # binary_cross_entropy (probabilities), wherever finite
ENTROPY_ULP = 4  # entropy, rows of up to 1000 entries
ENTROPY_FROM_LOGITS_ULP = 4  # entropy_from_logits
BINARY_ENTROPY_ULP = 4  # binary_entropy, binary_entropy_from_logits
HALF_INPUT_ULP = 2  # BCE, 16-bit inputs: float32 result vs the exact loss at those inputs
# entropy_from_logits with 16-bit inputs is held to its float32 bound, ENTROPY_FROM_LOGITS_ULP: the result is the
# float32 algorithm on exactly representable inputs, and its row sums round by the backend's order. A 2-ulp bound
# certified one order only: the same float16 row gave 0.90 ulp on XLA:CPU, 1.21 and 2.21 ulp through the Pallas
# kernel's interpreter with 1 and 4 rows per program (a 1-ulp change in t = sum(e u)).
LOG1P_F32_ULP = 1  # the private float32 log1p kernel (exhaustive sweep of [-1, 1]: 0.835)

# Subnormal intermediates.  XLA on CPU flushes subnormal numbers (below 2**-126)
# to zero, intermediates included.  A term with a subnormal factor is therefore
# lost even when the term itself is a normal number: pos_weight * exp(-88) (=
# 1.8e-38 for pos_weight 3), or a softmax tail term exp(d) * (-d) with d < -87.3.
# One such term is below FLUSH_TERM = 2**-119 (a subnormal factor < 2**-126 times
# a cofactor < 128: -d < 104 while exp(d) is subnormal and normal-range in sum;
# pos_weight < 128).  A result made of k such terms is below k * FLUSH_TERM.
# References below that bound are not ULP-checked; the computed value must lie
# within that absolute distance of the reference (zero or a tiny number).  Above
# it every ULP bound holds.  This is the one documented exclusion (README).
FLUSH_TERM = 2.0**-119
FLUSH_THRESHOLD = FLUSH_TERM  # results made of one term (elementwise losses)


def flush_threshold(terms: int = 1) -> float:
    """The bound below which a result made of ``terms`` terms may have lost them all to subnormal flushing."""
    return max(terms, 1) * FLUSH_TERM


def finfo(dtype) -> ml_dtypes.finfo:
    """``finfo`` that also understands bfloat16 and the other ml_dtypes formats."""
    return ml_dtypes.finfo(np.dtype(dtype))


def spacing(reference, dtype) -> np.ndarray:
    """``np.spacing`` of ``|reference|`` rounded to ``dtype``, as float64.

    Works for dtypes numpy has no ``spacing`` loop for (bfloat16).  Values that
    round past the largest finite number use the gap just below it (finite,
    where ``np.spacing`` would give inf).
    """
    info = finfo(dtype)
    with np.errstate(over="ignore"):  # past the largest finite number: clamped below
        magnitude = np.abs(np.asarray(reference, np.float64)).astype(dtype).astype(np.float64)
    magnitude = np.minimum(magnitude, float(info.max))
    _, exponent = np.frexp(magnitude)  # magnitude = m * 2**exponent, m in [0.5, 1)
    gap = np.ldexp(1.0, exponent - 1 - info.nmant)
    # subnormals (and zero) are spaced by the smallest subnormal
    return np.where(magnitude < float(info.smallest_normal), float(info.smallest_subnormal), gap)


def ulp_error(computed, reference, dtype=np.float32) -> np.ndarray:
    """Elementwise |computed - reference| in ULPs of ``dtype`` at the reference."""
    c = np.asarray(computed).astype(np.float64)
    r = np.asarray(reference, np.float64)
    c, r = np.broadcast_arrays(c, r)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(c - r) / spacing(r, dtype)
    err = np.where(r == 0, np.where(c == 0, 0.0, np.inf), err)
    err = np.where(np.isinf(r) & (c == r), 0.0, err)
    return np.where(np.isnan(err), np.inf, err)


class Worst(NamedTuple):
    """The largest error of a comparison and where it happened."""

    error: float
    index: tuple[int, ...]  # index into the (broadcast) compared arrays; () if empty


def worst(errors, mask=None) -> Worst:
    """Largest entry of ``errors`` (restricted to ``mask``) and its index."""
    errors = np.asarray(errors, np.float64)
    if mask is not None:
        errors = np.where(np.broadcast_to(mask, errors.shape), errors, -np.inf)
    if errors.size == 0 or not np.any(errors > -np.inf):
        return Worst(0.0, ())
    flat = int(np.argmax(errors))
    return Worst(float(errors.flat[flat]), np.unravel_index(flat, errors.shape))


def max_ulp(computed, reference, dtype=np.float32, mask=None) -> Worst:
    """Largest ULP error of ``computed`` against ``reference`` (see ``ulp_error``)."""
    return worst(ulp_error(computed, reference, dtype), mask)


def ulp_checked(reference, threshold: float = FLUSH_THRESHOLD) -> np.ndarray:
    """Mask of references that are ULP-checked: exact zeros, infinities and those above ``threshold``."""
    r = np.abs(np.asarray(reference, np.float64))
    return (r == 0) | (r >= threshold)


def flushed(reference, threshold: float = FLUSH_THRESHOLD) -> np.ndarray:
    """Mask of nonzero references below ``threshold`` (see FLUSH_TERM)."""
    r = np.abs(np.asarray(reference, np.float64))
    return (r > 0) & (r < threshold)
