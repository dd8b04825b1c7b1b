"""Shannon entropy: of probability vectors, of softmax(logits), and binary (of p or of sigmoid(logit))."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _api, _checks, _kernels
from ._kernels import elementwise

__all__ = ["entropy", "entropy_from_logits", "binary_entropy", "binary_entropy_from_logits"]


def _in_base(h: jax.Array, factor: float | None) -> jax.Array:
    # 1/ln(base) is computed in double precision and rounded once to h's dtype.
    return h if factor is None else h * jnp.asarray(factor, h.dtype)


def _float_input(fn: str, name: str, x) -> jax.Array:
    x = _checks.as_float_array(fn, name, x)
    return x.astype(_checks.compute_dtype(x))


def _class_axis_input(fn: str, name: str, x, axis, base, where, *, widen: bool = True):
    """(x, axis, 1/ln(base) or None, where) validated for a function that reduces the class axis.

    ``widen=False`` leaves 16-bit input at its width (the kernel it goes to widens it where it reads it).
    """
    x = _float_input(fn, name, x) if widen else _checks.as_float_array(fn, name, x)
    _checks.at_least_1d(fn, name, x)
    axis = _checks.normalize_axis(fn, axis, x.ndim)
    return x, axis, _checks.log_base_factor(fn, base), _checks.broadcast_mask(fn, where, x.shape)


@_api.loss(returns="rows", cli="entropy")
def entropy(
    probabilities: ArrayLike,
    *,
    axis: int = -1,
    base: float | None = None,
    where: ArrayLike | None = None,
    implementation: str | None = None,
) -> jax.Array:
    r"""Shannon entropy of probability vectors along ``axis``: the missing information before the message.

    .. math::
        H(p) = -\sum_i p_i \log_b p_i, \qquad 0 \log 0 = 0.

    Nats by default; ``base=2`` gives bits. Two equally likely messages carry 1 bit,
    a certain outcome 0, a 90/10 split 0.469 bits. The input is not renormalised:
    pass probabilities that sum to 1 (``jaxloss.checked`` verifies [0, 1] under jit).
    To encourage exploration, *subtract* ``beta * entropy`` from the loss.

    Limits: exactly 0 for a one-hot vector; entries ``where`` leaves out count as
    :math:`p_i = 0`; an empty axis gives 0. NaN in a row gives NaN for that row.

    Under differentiation we take :math:`\partial H/\partial p_i = -(\log p_i + 1)`
    for :math:`p_i > 0` and **0 at** :math:`p_i = 0`. The true one-sided limit there
    is :math:`+\infty`, but chained through a softmax (where :math:`\partial p_i/\partial
    l = 0` when :math:`p_i = 0`) the value 0 gives the exact gradient, while
    :math:`+\infty` would turn into NaN. For training, prefer
    :func:`jaxloss.entropy_from_logits`.

    Args:
      probabilities: ``[..., n, ...]`` real floating array, entries in [0, 1].
      axis: the class axis, reduced away.
      base: logarithm base (``None``: nats, 2: bits); positive and not 1.
      where: optional boolean mask broadcasting to ``probabilities.shape``.
      implementation: ``None`` (the best available), ``"xla"`` or ``"cpu"`` (the C++ row kernel: CPU,
        float32/bfloat16/float16, class axis last, one device); naming one that cannot run raises ``ValueError``.

    Returns:
      ``probabilities.shape`` without ``axis``; float32 for 16-bit or float32 input.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.entropy(jnp.array([0.5, 0.5]), base=2)
      Array(1., dtype=float32)
      >>> jaxloss.entropy(jnp.array([1.0, 0.0]), base=2)
      Array(0., dtype=float32)
      >>> print(f"{jaxloss.entropy(jnp.array([0.9, 0.1]), base=2):.3f} bits")
      0.469 bits

    References:
      C. E. Shannon, "A Mathematical Theory of Communication", Bell System Technical
      Journal 27 (1948), 379-423, 623-656.
    """
    p, axis, factor, where = _class_axis_input(
        "entropy", "probabilities", probabilities, axis, base, where, widen=False
    )
    path = _kernels.choose("entropy", implementation, p.shape, p.dtype, axis)
    h = _kernels.entropy_probs(p if where is None else jnp.where(where, p, 0), axis, path)
    return elementwise.positive_zero(_in_base(h, factor))


@_api.loss(returns="rows", cli="entropy-logits")
def entropy_from_logits(
    logits: ArrayLike,
    *,
    axis: int = -1,
    base: float | None = None,
    where: ArrayLike | None = None,
    implementation: str | None = None,
) -> jax.Array:
    r"""Shannon entropy of :math:`\mathrm{softmax}(l)` along ``axis``, exact for any logit spread.

    With :math:`d_i = l_i - \max_j l_j` (kept exactly, as a sum of two floats),
    :math:`e_i = e^{d_i}` and :math:`s = \sum_i e_i - 1` (the top term left out),

    .. math::
        H = \log(1 + s) + \frac{\sum_i e_i\,(-d_i)}{1 + s}

    Both terms are non-negative, so nothing cancels, and ``log1p(s)`` keeps every
    digit when the other classes are far below the top one (e.g. logits
    ``[1e4, 1e4 - 20]``, where ``-(softmax * log_softmax).sum()`` is off by ~5e5 ulp).

    Limits: a class is *out* when ``where`` is False there or its logit is
    :math:`-\infty`; it contributes nothing and gets gradient 0. A row with every
    class out (or an empty axis) has entropy 0 and zero gradient. Logits equal to
    :math:`+\infty` share all the probability equally (entropy :math:`\log k` for
    :math:`k` of them). NaN in a class that is in gives NaN.

    Under differentiation we take the closed form
    :math:`\partial H/\partial l_i = -p_i(\log p_i + H) = p_i(-d_i - \mathbb{E}_p[-d])`,
    finite everywhere (0 for classes that are out), through ``jax.custom_jvp``, so
    forward mode and ``jax.hessian`` work. To encourage exploration, subtract
    ``beta * entropy_from_logits(logits)`` from the loss.

    Paths (``implementation``): ``"xla"``, the formulation above in XLA (any platform, dtype and axis; partitions
    across devices); ``"cpu"``, a C++ row kernel built with the package, one sweep per row (CPU, float32/bfloat16/
    float16, class axis last, one device); ``"pallas"``, a Pallas row kernel that reads each row once (natively
    on CUDA GPUs, same conditions; elsewhere through Pallas' interpreter, for tests). ``None`` takes the best
    available (:func:`jaxloss.info` says which, and why another is not); naming one that cannot run this call
    raises ``ValueError`` saying why. All paths give the same values within the accuracy contract; value,
    gradient and forward mode use the chosen path, second derivatives are computed on the XLA path (the same
    closed forms).

    Args:
      logits: ``[..., n, ...]`` real floating array; ``-inf`` marks a class that is out.
      axis: the class axis, reduced away.
      base: logarithm base (``None``: nats, 2: bits); positive and not 1.
      where: optional boolean mask broadcasting to ``logits.shape``; False = out.
      implementation: ``None`` (the best available), ``"xla"``, ``"cpu"`` or ``"pallas"``; see above.

    Returns:
      ``logits.shape`` without ``axis``; float32 for 16-bit or float32 input.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.entropy_from_logits(jnp.array([0.0, 0.0]), base=2)
      Array(1., dtype=float32)
      >>> jaxloss.entropy_from_logits(jnp.array([3.0, -jnp.inf, 3.0]), base=2)
      Array(1., dtype=float32)

    References:
      C. E. Shannon, "A Mathematical Theory of Communication", Bell System Technical
      Journal 27 (1948), 379-423, 623-656.
    """
    lg, axis, factor, where = _class_axis_input("entropy_from_logits", "logits", logits, axis, base, where, widen=False)
    if where is not None:
        lg = jnp.where(where, lg, -jnp.inf)
    path = _kernels.choose("entropy_from_logits", implementation, lg.shape, lg.dtype, axis)
    h = _kernels.entropy_logits(lg, axis, path)
    return elementwise.positive_zero(_in_base(h, factor))


@_api.loss(returns="elementwise", cli="binary-entropy")
def binary_entropy(probabilities: ArrayLike, *, base: float | None = None) -> jax.Array:
    r"""Elementwise binary entropy :math:`h(p) = -p\log p - (1-p)\log(1-p)`.

    Equal to :func:`jaxloss.entropy` of :math:`[p, 1 - p]`; :math:`\log(1 - p)` is
    computed as ``log1p(-p)``, so small :math:`p` keeps its digits. Nats by default,
    ``base=2`` for bits.

    Limits: :math:`h(0) = h(1) = 0`; NaN gives NaN.

    Under differentiation we take :math:`h'(p) = \log(1-p) - \log p` inside (0, 1);
    at :math:`p = 0` and :math:`p = 1` we take :math:`+1` and :math:`-1` — the values
    the entropy convention :math:`\tfrac{d}{dp}(-p\log p)|_{p=0} = 0` gives (the true
    limits are :math:`\pm\infty`). Chained through a sigmoid this is the exact gradient
    0; prefer :func:`jaxloss.binary_entropy_from_logits` for training.

    Args:
      probabilities: ``[...]`` real floating array with values in [0, 1].
      base: logarithm base (``None``: nats, 2: bits).

    Returns:
      ``[...]`` float32 for 16-bit or float32 input (float64 for float64).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.binary_entropy(jnp.array([0.5, 1.0]), base=2)
      Array([1., 0.], dtype=float32)
    """
    fn = "binary_entropy"
    p = _float_input(fn, "probabilities", probabilities)
    return elementwise.positive_zero(_in_base(elementwise.binary_entropy(p), _checks.log_base_factor(fn, base)))


@_api.loss(returns="elementwise")
def binary_entropy_from_logits(logits: ArrayLike, *, base: float | None = None) -> jax.Array:
    r"""Elementwise binary entropy of :math:`\sigma(x)`, accurate in both tails.

    With :math:`a = |x|` and :math:`e = e^{-a}`,

    .. math::
        h(\sigma(x)) = \log(1 + e) + a\,\frac{e}{1 + e},

    two non-negative terms from one ``exp`` and one ``log1p``: at :math:`x = \pm 30`
    it returns 2.900863e-12 (``entr(p) + entr(1 - p)`` gives -0.0 there).

    Limits: 0 at :math:`x = \pm\infty`, with derivative 0; NaN gives NaN.

    Under differentiation we take the closed form :math:`h'(x) = -x\,\sigma(x)\sigma(-x)`
    (``jax.custom_jvp``; second derivatives are closed forms too).

    Args:
      logits: ``[...]`` real floating array.
      base: logarithm base (``None``: nats, 2: bits).

    Returns:
      ``[...]`` float32 for 16-bit or float32 input (float64 for float64).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.binary_entropy_from_logits(jnp.array([0.0, 30.0]))
      Array([6.9314718e-01, 2.9008631e-12], dtype=float32)
    """
    fn = "binary_entropy_from_logits"
    x = _float_input(fn, "logits", logits)
    return _in_base(elementwise.binary_entropy_logits(x), _checks.log_base_factor(fn, base))
