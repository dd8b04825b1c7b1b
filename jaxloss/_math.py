"""Private elementwise and row kernels with closed-form derivatives.

Each kernel is a ``jax.custom_jvp`` whose tangent rule is written in a
cancellation-free closed form (reusing the primal work where it can). The rules
are themselves built from custom-JVP kernels, so forward mode, reverse mode and
second derivatives (``jax.hessian``) are exact closed forms too, with no
differentiation through ``abs``/``max`` kinks and no ``0 * inf`` from a guarded
branch. The public functions in :mod:`jaxloss.entropy` and
:mod:`jaxloss.classification` document the conventions.

Shared building block: with ``a = |z|`` and ``e = exp(-a)`` (never overflows),

* ``softplus(z) = max(z, 0) + log1p(e)``
* ``sigmoid(|z|) = 1 / (1 + e)`` and ``sigmoid(-|z|) = e / (1 + e)``
* ``sigmoid(z) * sigmoid(-z) = e / (1 + e)**2``
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from . import _checks

__all__: list[str] = []


def _linear(out, *terms):
    """sum(coefficient * tangent) over the (coefficient, tangent) pairs whose tangent is not a symbolic zero.

    Rules with several inputs use symbolic zeros: an input that is not differentiated
    contributes nothing, rather than inf * 0 = NaN (dL/dy = -z is infinite at z = +-inf).
    """
    acc = None
    for coefficient, tangent in terms:
        if isinstance(tangent, SymbolicZero):
            continue
        term = coefficient * tangent
        acc = term if acc is None else acc + term
    return jnp.zeros_like(out) if acc is None else acc


def _exp_neg_abs(z):
    return jnp.exp(-jnp.abs(z))


# musl's log1pf (from FreeBSD's s_log1pf.c): with 1 + x = 2**k (1 + f), sqrt(2)/2 <= 1 + f < sqrt(2),
# log1p(x) = k ln2 + log(1 + f) + c / u, where c = x - (u - 1) is the rounding error of u = fl(1 + x) and
# log(1 + f) = f - f**2/2 + s (f**2/2 + R(s**2)), s = f / (2 + f). Near 0 (k = 0) f is x itself: no rounding.
_LN2_HI, _LN2_LO = 6.9313812256e-01, 9.0580006145e-06  # ln 2 split so that k * _LN2_HI is exact
_LG = (0xAAAAAA * 2.0**-24, 0xCCCE13 * 2.0**-25, 0x91E9EE * 2.0**-25, 0xF89E26 * 2.0**-26)


def _log1p_f32(x):
    """log1p for float32 x: within 0.84 ulp of the exact value for every float32 in [-1, 1] (exhaustive sweep).

    Branch-free (selects only), so XLA fuses it into one loop with its producers and consumers; about 1.5x
    faster on CPU than the XLA-log1p-plus-correction form below, and more accurate (that one: 1.61 ulp).
    """
    f32 = jnp.float32
    one = jax.lax.optimization_barrier(jnp.ones((), f32))  # keeps XLA from folding (1 + x) - 1 into x
    near = (x >= f32(-0.29289323)) & (x < f32(0.41421354))  # sqrt(2)/2 <= 1 + x < sqrt(2): k = 0, f = x exactly
    u = one + x
    iu = jax.lax.bitcast_convert_type(u, jnp.int32) + (0x3F800000 - 0x3F3504F3)
    k = (iu >> 23) - 0x7F
    c = jnp.where(k >= 2, one - (u - x), x - (u - one)) / u  # both differences are exact in their range of k
    c = jnp.where(near | (k >= 25), 0, c)
    f_far = jax.lax.bitcast_convert_type((iu & 0x007FFFFF) + 0x3F3504F3, f32) - one
    f = jnp.where(near, x, f_far)
    dk = jnp.where(near, 0, k).astype(f32)
    d = 2 + f
    s = f / d
    # s * s from a second quotient, bit-identical (both scaled by 2 exactly): XLA does not fuse a division
    # with two users into one loop, it writes it to memory; two single-use divisions stay in registers.
    s_again = (f * 2) / (d * 2)
    z = s_again * s_again
    w = z * z
    r = z * (f32(_LG[0]) + w * f32(_LG[2])) + w * (f32(_LG[1]) + w * f32(_LG[3]))
    hfsq = f32(0.5) * f * f
    out = s * (hfsq + r) + (dk * f32(_LN2_LO) + c) - hfsq + f + dk * f32(_LN2_HI)
    out = jnp.where(jnp.abs(x) < f32(2.0**-24), x, out)  # log1p(x) = x there (keeps -0.0; NaN stays NaN)
    out = jnp.where(x == jnp.inf, x, out)
    out = jnp.where(x == -1, -jnp.inf, out)
    return jnp.where(x < -1, jnp.nan, out)


def _log1p_f32_cuda(x):
    """float32 log1p on CUDA GPUs: XLA's own (libdevice's log1pf), measured by ``python -m benchmarks.bce_gpu_probe``
    on an H200: the kernel above is arithmetic-bound there and XLA's is both cheaper and as accurate."""
    return jnp.log1p(x)


@jax.custom_jvp
def log1p(x):
    """log(1 + x) for x > -1 (-inf at -1, NaN below), to within 1 ulp for float32 and 1.5 ulp for float64.

    Derivative 1 / (1 + x), as a custom JVP: the float32 kernel works on the bits of 1 + x, which autodiff
    cannot see through.

    float32: :func:`_log1p_f32`. float64: XLA's CPU log1p is off by up to 128 ulp on [-0.4142, -0.3585] (and in
    float32 by 2.5 ulp on [0.4, 0.65)). On [-0.5, -0.25] and from 0.4 up we take, with u = fl(1 + x),
    log(u) - ((u - 1) - x) / u: (u - 1) is exact (u >= 1/2), so the quotient is u's rounding error, corrected
    to first order. The 1 is hidden from XLA's algebraic simplifier, which would otherwise fold (1 + x) - 1
    into x and drop the correction.
    """
    if x.dtype == jnp.float32:
        from . import _pallas

        if _pallas._cuda_present():  # where CUDA is present, lowered per platform: CUDA takes _log1p_f32_cuda
            return jax.lax.platform_dependent(x, cuda=lambda v: _log1p_f32_cuda(v), default=_log1p_f32)
        return _log1p_f32(x)
    xla = ((x > -0.25) & (x < 0.4)) | (x < -0.5)
    xc = jnp.where(x < -0.5, -0.5, x)  # the corrected branch's input kept where u >= 1/2 (no 0/0 at x = -1)
    one = jax.lax.optimization_barrier(jnp.ones((), x.dtype))
    u = one + xc
    corrected = jnp.log(u) - ((u - one) - xc) / u
    return jnp.where(xla, jnp.log1p(x), corrected)


@log1p.defjvp
def _log1p_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return log1p(x), dx / (1 + x)


# --------------------------------------------------------------------------- sigmoid family


@jax.custom_jvp
def sigmoid(z):
    """sigmoid(z), each tail computed without cancellation; sigmoid(+-inf) = 1, 0."""
    e = _exp_neg_abs(z)
    return jnp.where(z >= 0, 1 / (1 + e), e / (1 + e))


@jax.custom_jvp
def dsigmoid(z):
    """sigmoid'(z) = sigmoid(z) * sigmoid(-z) = e / (1 + e)**2: tiny but nonzero in both tails."""
    e = _exp_neg_abs(z)
    return e / jnp.square(1 + e)


@jax.custom_jvp
def softplus(z):
    """log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)); never overflows, exact in both tails."""
    return jnp.maximum(z, 0) + log1p(_exp_neg_abs(z))


@sigmoid.defjvp
def _sigmoid_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    return sigmoid(z), dsigmoid(z) * dz


@dsigmoid.defjvp
def _dsigmoid_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    s = dsigmoid(z)
    # d/dz [sigmoid(z) sigmoid(-z)] = s * (sigmoid(-z) - sigmoid(z)); both factors are bounded.
    return s, s * (sigmoid(-z) - sigmoid(z)) * dz


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    return softplus(z), sigmoid(z) * dz


@jax.custom_jvp
def positive_zero(h):
    """h with -0.0 turned into +0.0 (e.g. -1 * log 1); the derivative is the identity, also at h = 0."""
    return jnp.where(h == 0, 0, h)


@positive_zero.defjvp
def _positive_zero_jvp(primals, tangents):
    (h,), (dh,) = primals, tangents
    return positive_zero(h), dh


def times(w, x):
    """w * x with 0 * x = 0 for x = +-inf (a zero weight switches its term off).

    Double where: x is made finite first, so no 0 * inf reaches a derivative either.
    """
    off = w == 0
    return jnp.where(off, 0, w * jnp.where(off, 0, x))


# --------------------------------------------------------------------------- BCE from logits
# L(z, y) = wpos * softplus(-z) + wneg * softplus(z), wpos = pos_weight * y, wneg = 1 - y.
# softplus(+-z) share one exp and one log1p: t = log1p(exp(-|z|)), softplus(+-z) = max(+-z, 0) + t, so
# L = (wpos + wneg) t + wpos max(-z, 0) + wneg max(z, 0), and at most one of the last two terms is non-zero:
# the loss is t (times 1 + (p - 1) y, exactly 1 without pos_weight) plus one product, all terms >= 0.


def _bce_value(z, y, p):
    t = log1p(_exp_neg_abs(z))
    wpos = y if p is None else p * y
    t_weight = t if p is None else times(1 + (p - 1) * y, t)
    # The one product that can be non-zero: (1 - y) z for z > 0, wpos (-z) for z <= 0; a zero weight gives 0
    # also at |z| = inf. (This is the primal of a custom JVP: no derivative flows through the select.)
    weight = jnp.where(z > 0, 1 - y, wpos)
    loss = t_weight + jnp.where(weight == 0, 0, weight * jnp.abs(z))
    # Both weights zero (pos_weight = 0 with y = 1) must still carry a NaN logit through.
    return jnp.where(jnp.isnan(z), z, loss)


@jax.custom_jvp
def bce(z, y):
    """Plain BCE from logits (pos_weight absent)."""
    return _bce_value(z, y, None)


def _bce_grad_value(z, y, p):
    """dL/dz = (1 - y) sigmoid(z) - p y sigmoid(-z), in the form without cancellation on each side of 0.

    z > 0: the two-term form (for y in {0, 1} exactly one sigmoid survives).
    z <= 0: sigmoid(-z) = 1 - sigmoid(z) gives c sigmoid(z) - p y with c = 1 + (p - 1) y; sigmoid(z) <= 1/2
    there, so nothing cancels for hard labels, and at z = 0 the result is 0.5 - y rounded once.
    ``p`` None means pos_weight absent (c = 1 exactly).
    """
    # With e = exp(-|z|): for z > 0, sigmoid(z) = 1/(1+e) and sigmoid(-z) = e/(1+e); for z <= 0, sigmoid(z) = e/(1+e).
    e = _exp_neg_abs(z)
    big, small = 1 / (1 + e), e / (1 + e)
    wpos = y if p is None else p * y
    c = 1 if p is None else 1 + (p - 1) * y
    # z > 0: (1 - y) big - wpos small; z <= 0: c small - wpos, written so that each quotient has one user
    # (XLA writes a division with several users to memory and reads it back): the coefficient of `small` is
    # selected, (-wpos) - (-c) small = c small - wpos exactly.
    return jnp.where(z > 0, (1 - y) * big, -wpos) - jnp.where(z > 0, wpos, -c) * small


@jax.custom_jvp
def bce_grad(z, y):
    """dL/dz for the plain loss."""
    return _bce_grad_value(z, y, None)


@functools.partial(bce.defjvp, symbolic_zeros=True)
def _bce_jvp(primals, tangents):
    (z, y), (dz, dy) = primals, tangents
    out = bce(z, y)
    # dL/dy = softplus(-z) - softplus(z) = -z exactly.
    return out, _linear(out, (bce_grad(z, y), dz), (-z, dy))


@functools.partial(bce_grad.defjvp, symbolic_zeros=True)
def _bce_grad_jvp(primals, tangents):
    (z, y), (dz, dy) = primals, tangents
    out = bce_grad(z, y)
    # d2L/dz2 = ((1 - y) + y) sigmoid(z) sigmoid(-z) = dsigmoid(z); d2L/dz dy = -(sigmoid(z) + sigmoid(-z)) = -1.
    return out, _linear(out, (dsigmoid(z), dz), (-1, dy))


@jax.custom_jvp
def bce_weighted(z, y, p):
    """BCE from logits with pos_weight p multiplying the positive term; bit-identical to bce at p = 1."""
    return _bce_value(z, y, p)


@jax.custom_jvp
def bce_weighted_grad(z, y, p):
    """dL/dz = (1 - y) sigmoid(z) - p y sigmoid(-z); bit-identical to bce_grad at p = 1."""
    return _bce_grad_value(z, y, p)


@functools.partial(bce_weighted.defjvp, symbolic_zeros=True)
def _bce_weighted_jvp(primals, tangents):
    (z, y, p), (dz, dy, dp) = primals, tangents
    out = bce_weighted(z, y, p)
    sp_neg = softplus(-z)
    d_y = times(p, sp_neg) - softplus(z)  # p softplus(-z) - softplus(z)
    d_p = times(y, sp_neg)  # y softplus(-z)
    return out, _linear(out, (bce_weighted_grad(z, y, p), dz), (d_y, dy), (d_p, dp))


@functools.partial(bce_weighted_grad.defjvp, symbolic_zeros=True)
def _bce_weighted_grad_jvp(primals, tangents):
    (z, y, p), (dz, dy, dp) = primals, tangents
    s_pos, s_neg = sigmoid(z), sigmoid(-z)
    # d/dz: ((1 - y) + p y) sigmoid'(z) = (1 + (p - 1) y) sigmoid'(z); exactly sigmoid'(z) at p = 1.
    d_z = (1 + (p - 1) * y) * dsigmoid(z)
    d_y = -(s_pos + p * s_neg)
    d_p = -y * s_neg
    out = bce_weighted_grad(z, y, p)
    return out, _linear(out, (d_z, dz), (d_y, dy), (d_p, dp))


# --------------------------------------------------------------------------- entropy terms


def _safe(x, bad, value):
    """x with the entries where ``bad`` holds replaced by ``value`` (the inner half of a double where)."""
    return jnp.where(bad, value, x)


@jax.custom_jvp
def neg_xlogx(p):
    """-p log p with 0 log 0 = 0."""
    zero = p == 0
    return jnp.where(zero, 0, -p * jnp.log(_safe(p, zero, 1)))


def neg_xlogx_slope(p):
    """d/dp (-p log p) = -(log p + 1); at p = 0 the limit is +inf and we take 0: chained through a softmax
    (dp/dl = 0 there) 0 is the exact gradient, whereas inf * 0 would be NaN."""
    zero = p == 0
    return jnp.where(zero, 0, -(jnp.log(_safe(p, zero, 1)) + 1))


def _neg_xlogx_jvp(primals, tangents):
    (p,), (dp,) = primals, tangents
    return neg_xlogx(p), neg_xlogx_slope(p) * dp


neg_xlogx.defjvp(_neg_xlogx_jvp)


@jax.custom_jvp
def binary_entropy(p):
    """-p log p - (1 - p) log(1 - p), with log(1 - p) = log1p(-p) accurate for small p."""
    zero, one = p == 0, p == 1
    a = jnp.where(zero, 0, -p * jnp.log(_safe(p, zero, 1)))
    b = jnp.where(one, 0, -(1 - p) * log1p(-_safe(p, one, 0)))
    return a + b


@binary_entropy.defjvp
def _binary_entropy_jvp(primals, tangents):
    (p,), (dp,) = primals, tangents
    zero, one = p == 0, p == 1
    edge = zero | one
    q = _safe(p, edge, 0.5)
    # h'(p) = log(1 - p) - log(p) inside; at p = 0 and 1, +-1 (the entropy convention d(-x log x)/dx = 0 at x = 0).
    slope = jnp.where(zero, 1, jnp.where(one, -1, log1p(-q) - jnp.log(q)))
    return binary_entropy(p), slope * dp


_SCALE = 32.0  # an exponent offset: a - 32 is exact for 64 <= a < 128 (both on the 2**-17 grid)


@jax.custom_jvp
def binary_entropy_logits(x):
    """h(sigmoid(x)) = log1p(e) + |x| e / (1 + e), e = exp(-|x|): two positive terms, exact in both tails.

    For |x| > 64 the value (1 + |x|) e is formed as ((1 + |x|) exp(32 - |x|)) exp(-32): e itself is subnormal
    from |x| = 87.3 (flushed to 0 on CPU) while h stays a normal number up to |x| = 91.8.
    """
    a = jnp.abs(x)
    e = jnp.exp(-a)
    near = log1p(e) + times(e / (1 + e), a)
    # Far out, log1p(e) = e and e / (1 + e) = e to ~1e-28, so h = (1 + a) e, formed without a subnormal e.
    far = a > 2 * _SCALE
    a_far = jnp.where(far, a, 2 * _SCALE)
    h_far = ((1 + a_far) * jnp.exp(_SCALE - a_far)) * jnp.exp(jnp.asarray(-_SCALE, a.dtype))
    return jnp.where(far, jnp.where(jnp.isinf(a), 0, h_far), near)


@binary_entropy_logits.defjvp
def _binary_entropy_logits_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    # h'(x) = -x sigmoid(x) sigmoid(-x); 0 at +-inf.
    s = dsigmoid(x)
    return binary_entropy_logits(x), -times(s, x) * dx


# --------------------------------------------------------------------------- entropy from logits (one row axis)


def _two_diff(a, b):
    """(hi, lo) with hi = fl(a - b) and hi + lo = a - b exactly (Knuth's TwoSum).

    lo = 0 where TwoSum's own steps overflow: where hi is infinite, and where |hi| + |a| passes the float range
    (e.g. a = 1.2e38, b = 3.4e38 in float32). There |hi| > 1e38 and lo is far below anything that reaches a result.
    """
    hi = a - b
    bb = hi - a
    lo = (a - (hi - bb)) + (-b - bb)
    return hi, jnp.where(jnp.isfinite(lo), lo, 0)


def _shifted(logits, m_raw):
    """(e, u, none) for logits and their row maximum ``m_raw`` (kept as a size-1 axis).

    d = l - max is kept exactly as hi + lo; e = exp(d) >= 0; u = -d >= 0 (1 for a class that is out, where
    e = 0); none = the row has no class in. Elementwise given ``m_raw``: the GPU kernel's gradient uses it
    with the kernel's row maximum.
    """
    none = m_raw == -jnp.inf  # every class out (or an empty axis)
    top_inf = m_raw == jnp.inf
    # Limits: classes at +inf share all the probability; an all-out row is replaced by a safe row
    # (its result is overwritten) so that no inf - inf reaches a value or a derivative.
    # (A NaN is kept in a row taken for all-out: XLA:CPU's max reduction can miss it, see _row_sums.)
    out = jnp.where(none, jnp.where(logits == -jnp.inf, 0, logits), logits)
    # (l - inf: -inf for the other classes, NaN kept: XLA's max can skip a NaN beside a +inf.)
    logits = jnp.where(top_inf, jnp.where(logits == jnp.inf, 0, logits - jnp.inf), out)
    m = jnp.where(top_inf | none, 0, m_raw)
    d_hi, d_lo = _two_diff(logits, m)
    e = jnp.exp(d_hi)
    e = e + e * d_lo  # exp(hi + lo) to first order; lo is below half an ulp of hi
    # u = -d is 0 exactly at the top classes and nowhere else, so sign(u) marks the others. A class that is
    # out (e = 0, -d = inf) gets u = 1: e u = 0 (never 0 * inf) and it is not a top class. (A subnormal d
    # flushed to 0 makes its class "top": it then counts 1 instead of e = exp(d), which is 1 in any case.)
    u = jnp.where(e == 0, 1, -d_hi - d_lo)
    return e, u, none


def _row_sums(e, u, none, axis):
    """(s1, t, none): s1 = sum(e) - 1 (the top term left out), t = sum(e u), both 0 for rows with no class in.

    ``none`` comes back corrected: XLA:CPU's max reduction (YNNPACK, jax 0.10) skips a NaN, and returns -inf
    for a row of >= 4096 entries whose last entry is NaN, so such a row arrives as "all out". Its NaN was kept
    by :func:`_shifted` and reaches the count of non-top classes, which is exactly 0 in a row that really is
    all out (every entry then shifted to 0, u = -0.0).
    """
    not_top = jnp.sign(u)
    # s1 = (sum of e over the other classes) + (number of top classes - 1), the count exact as an integer.
    # Everything reduced is a product of the two arrays e and u: XLA keeps them in one reduction kernel.
    n = jnp.asarray(e.shape[axis] - 1, e.dtype)
    count = jnp.sum(not_top, axis=axis, keepdims=True)
    s1 = jnp.sum(e * not_top, axis=axis, keepdims=True) + (n - count)
    t = jnp.sum(e * u, axis=axis, keepdims=True)
    none = none & (count == 0)
    # Rows with every class out are overwritten by the caller anyway; these selects keep the row arithmetic
    # that follows out of XLA:CPU's reduction kernels, where it can run far slower (benchmarks/NOTES.md,
    # fact 4; at 4096 x 256 the difference measured within noise).
    return jnp.where(none, 0, s1), jnp.where(none, 0, t), none


def _softmax_parts(logits, axis):
    """Per-row pieces of softmax entropy, all cancellation-free.

    Returns (e, u, s1, t, none) (see :func:`_shifted` and :func:`_row_sums`): log(sum e) = log1p(s1) keeps
    every digit when the other terms are tiny.
    """
    m_raw = jnp.max(logits, axis=axis, keepdims=True, initial=-jnp.inf)
    e, u, none = _shifted(logits, m_raw)
    s1, t, none = _row_sums(e, u, none, axis)
    return e, u, s1, t, none


def softmax_row_stats(x2d):
    """(row max, s1, t) over the last axis of a float array, each kept as a size-1 axis: what the GPU kernel
    (:mod:`jaxloss._pallas`) computes, in XLA."""
    m_raw = jnp.max(x2d, axis=-1, keepdims=True, initial=-jnp.inf)
    e, u, none = _shifted(x2d, m_raw)
    s1, t, _ = _row_sums(e, u, none, -1)
    return jnp.where(jnp.isnan(s1) | jnp.isnan(t), jnp.nan, m_raw), s1, t  # a row with a NaN: m = NaN


def _kernel_stats(logits):
    """(row max, s1, t) from the row kernel over the last axis, shaped like logits with that axis of size 1."""
    from . import _pallas

    keep = (*logits.shape[:-1], 1)
    m_raw, s1, t = _pallas.row_stats(logits.reshape(-1, logits.shape[-1]))
    return m_raw.reshape(keep), s1.reshape(keep), t.reshape(keep)


def _use_kernel(logits, axis) -> bool:
    from . import _pallas

    return _pallas.offered(logits.shape, logits.dtype, axis)


def _use_cpu_kernel(logits, axis) -> bool:
    from . import _cpu

    return _cpu.offered(logits.shape, logits.dtype, axis)


def _entropy_from_sums(s1, t, none):
    """H = log1p(s1) + t / (1 + s1) from a row's sums (both terms >= 0); 0 for a row with no class in."""
    return jnp.where(none, 0, log1p(s1) + t / (1 + s1))


def _entropy_xla(x, axis):
    """H over ``axis`` (kept as size 1) on the XLA path; ``x`` float32 or float64."""
    _, _, s1, t, none = _softmax_parts(x, axis)
    return _entropy_from_sums(s1, t, none)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def entropy_logits(logits, axis):
    """H(softmax(logits)) over ``axis`` (kept as size 1): log1p(s1) + t / (1 + s1), both terms >= 0.

    16-bit logits are widened to float32 here (inside the GPU or CPU kernel when one is used, so they are read
    from memory at their own width); the result is float32 for 16- and 32-bit logits.
    """
    dtype = _checks.compute_dtype(logits)
    if _use_kernel(logits, axis):
        m_raw, s1, t = _kernel_stats(logits)
        return _entropy_from_sums(s1, t, m_raw == -jnp.inf)
    if _use_cpu_kernel(logits, axis):
        from . import _cpu

        xla = lambda x: _entropy_xla(x.astype(dtype), axis)[..., 0]  # noqa: E731
        return _cpu.value("entropy_from_logits", logits, xla)[..., None]
    return _entropy_xla(logits.astype(dtype), axis)


def _value_and_grad_xla(x, axis):
    """(H, dH/dl) of float32/float64 logits on the XLA path; the closed form of the gradient is explained below."""
    e, u, s1, t, none = _softmax_parts(x, axis)
    return _value_and_grad_from(e, u, s1, t, none)


def _value_and_grad_from(e, u, s1, t, none):
    z = 1 + s1
    h = _entropy_from_sums(s1, t, none)
    # dH/dl_i = -p_i (log p_i + H) = p_i (u_i - mean_p(u)), with p_i = e_i / z and mean_p(u) = t / z;
    # a class that is out (p_i = 0, u_i = inf) gets exactly 0.
    grad = jnp.where(none, 0, (e / z) * (u - t / z))
    return h, grad


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _value_and_grad_kernel(logits, axis):
    """(H, dH/dl) with the row sums from the GPU kernel; e and u again elementwise, which XLA fuses into the
    gradient's one pass. Differentiated (second derivatives) as the XLA path, values included, so that
    Hessians are the XLA path's to the bit: kernel sums mixed with XLA's terms did not cancel as consistently
    (a Hessian-vector product of a peaked row was off by 75 times its error bound)."""
    m_raw, s1, t = _kernel_stats(logits)
    e, u, none = _shifted(logits.astype(_checks.compute_dtype(logits)), m_raw)
    return _value_and_grad_from(e, u, s1, t, none)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _value_and_grad_cpu(logits, axis):
    """(H, dH/dl) from the CPU kernel (the XLA path where not lowered for CPU); differentiated as the XLA path,
    like :func:`_value_and_grad_kernel`."""
    from . import _cpu

    dtype = _checks.compute_dtype(logits)

    def xla(x):
        h, grad = _value_and_grad_xla(x.astype(dtype), axis)
        return h[..., 0], grad

    h, grad = _cpu.value_and_grad("entropy_from_logits", logits, xla)
    return h[..., None], grad


def _differentiated_as(xla):
    """The JVP rule of a kernel's (value, derivative) over a row axis: that of the XLA formulation
    ``xla(x, axis)``, values included (16-bit input widened first, as the kernels do)."""

    def rule(axis, primals, tangents):
        (x,), (dx,) = primals, tangents
        dtype = _checks.compute_dtype(x)
        return jax.jvp(lambda v: xla(v, axis), (x.astype(dtype),), (dx.astype(dtype),))

    return rule


_value_and_grad_kernel.defjvp(_differentiated_as(_value_and_grad_xla))
_value_and_grad_cpu.defjvp(_differentiated_as(_value_and_grad_xla))


@entropy_logits.defjvp
def _entropy_logits_jvp(axis, primals, tangents):
    (logits,), (dlogits,) = primals, tangents
    dtype = _checks.compute_dtype(logits)
    if _use_kernel(logits, axis):
        h, grad = _value_and_grad_kernel(logits, axis)
    elif _use_cpu_kernel(logits, axis):
        h, grad = _value_and_grad_cpu(logits, axis)
    else:
        h, grad = _value_and_grad_xla(logits.astype(dtype), axis)
    return h, jnp.sum(grad * dlogits.astype(dtype), axis=axis, keepdims=True)


# --------------------------------------------------------------------------- entropy of probabilities (one row axis)


def _entropy_probs_xla(p, axis):
    """(H over ``axis`` (dropped), dH/dp) on the XLA path; ``p`` float32 or float64."""
    return jnp.sum(neg_xlogx(p), axis=axis), neg_xlogx_slope(p)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def entropy_probs(p, axis):
    """-sum(p log p) over ``axis`` (dropped), 0 log 0 = 0; 16-bit ``p`` widened to float32 here (inside the CPU
    kernel when it is used). The derivative is :func:`neg_xlogx_slope`."""
    dtype = _checks.compute_dtype(p)
    xla = lambda q: _entropy_probs_xla(q.astype(dtype), axis)[0]  # noqa: E731
    if _use_cpu_kernel(p, axis):
        from . import _cpu

        return _cpu.value("entropy", p, xla)
    return xla(p)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _entropy_probs_cpu(p, axis):
    """(H, dH/dp) from the CPU kernel (the XLA path where not lowered for CPU); differentiated as the XLA path."""
    from . import _cpu

    dtype = _checks.compute_dtype(p)
    return _cpu.value_and_grad("entropy", p, lambda q: _entropy_probs_xla(q.astype(dtype), axis))


_entropy_probs_cpu.defjvp(_differentiated_as(_entropy_probs_xla))


@entropy_probs.defjvp
def _entropy_probs_jvp(axis, primals, tangents):
    (p,), (dp,) = primals, tangents
    dtype = _checks.compute_dtype(p)
    if _use_cpu_kernel(p, axis):
        h, slope = _entropy_probs_cpu(p, axis)
    else:
        h, slope = _entropy_probs_xla(p.astype(dtype), axis)
    return h, jnp.sum(slope * dp.astype(dtype), axis=axis)
