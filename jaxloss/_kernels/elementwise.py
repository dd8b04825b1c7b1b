"""Elementwise kernels with closed-form derivatives: log1p, the sigmoid family, BCE from logits, x log x and the
binary entropies.

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

from . import backend

__all__: list[str] = []


def linear(out, *terms):
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
        if backend.cuda_present():  # where CUDA is present, lowered per platform: CUDA takes _log1p_f32_cuda
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
    return out, linear(out, (bce_grad(z, y), dz), (-z, dy))


@functools.partial(bce_grad.defjvp, symbolic_zeros=True)
def _bce_grad_jvp(primals, tangents):
    (z, y), (dz, dy) = primals, tangents
    out = bce_grad(z, y)
    # d2L/dz2 = ((1 - y) + y) sigmoid(z) sigmoid(-z) = dsigmoid(z); d2L/dz dy = -(sigmoid(z) + sigmoid(-z)) = -1.
    return out, linear(out, (dsigmoid(z), dz), (-1, dy))


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
    return out, linear(out, (bce_weighted_grad(z, y, p), dz), (d_y, dy), (d_p, dp))


@functools.partial(bce_weighted_grad.defjvp, symbolic_zeros=True)
def _bce_weighted_grad_jvp(primals, tangents):
    (z, y, p), (dz, dy, dp) = primals, tangents
    s_pos, s_neg = sigmoid(z), sigmoid(-z)
    # d/dz: ((1 - y) + p y) sigmoid'(z) = (1 + (p - 1) y) sigmoid'(z); exactly sigmoid'(z) at p = 1.
    d_z = (1 + (p - 1) * y) * dsigmoid(z)
    d_y = -(s_pos + p * s_neg)
    d_p = -y * s_neg
    out = bce_weighted_grad(z, y, p)
    return out, linear(out, (d_z, dz), (d_y, dy), (d_p, dp))


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
