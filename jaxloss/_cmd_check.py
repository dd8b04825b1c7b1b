"""``jaxloss check``: derivative checks of every public loss on every backend ``jax.devices()`` offers.

:func:`derivative_checks` lists the checks (``jax.test_util.check_grads`` of order 2 and
closed-form values at the edges); :func:`run` runs them per platform and prints a table.
Exit code 1 when a check fails.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxloss

__all__ = ["derivative_checks", "run"]


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def _close(got, want, rel: float, what: str) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf: equal infinities pass through got == want
        ok = np.all((got == want) | (np.abs(got - want) <= rel * np.abs(want)))
    _expect(bool(ok), f"{what}: got {got}, expected {want}")


def derivative_checks(dtype) -> dict[str, list[tuple[str, Callable[[], None]]]]:
    """Per public function: (name, check) pairs; each check raises AssertionError on failure."""
    from jax.test_util import check_grads

    # Interior points where central differences (step 1e-4) are accurate to check_grads' tolerance.
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=5) * 2, dtype)
    y = jnp.asarray(rng.uniform(0.2, 0.8, size=5), dtype)
    p = jnp.asarray(rng.uniform(0.2, 0.8, size=5), dtype)
    w = jnp.asarray(rng.uniform(0.5, 1.0, size=5), dtype)
    unnormalised = rng.uniform(0.5, 1.5, size=(3, 4))
    probs = jnp.asarray(unnormalised / unnormalised.sum(-1, keepdims=True), dtype)
    logits = jnp.asarray(rng.normal(size=(3, 4)) * 2, dtype)
    inf = jnp.asarray(np.inf, dtype)
    rel = 8 * float(jnp.finfo(dtype).eps)

    def grads(f, *args):
        # Op by op: the same derivative rules at a fraction of the compilations (second order has many).
        with jax.disable_jit():
            check_grads(f, args, order=2, modes=("fwd", "rev"))

    def d(f, argnum=0):
        return jax.grad(f, argnums=argnum)

    bce = jaxloss.sigmoid_binary_cross_entropy
    bce_probs = jaxloss.binary_cross_entropy
    one, zero = jnp.asarray(1, dtype), jnp.asarray(0, dtype)

    def bce_edges():
        _close([bce(inf, one), bce(-inf, zero)], [0, 0], rel, "BCE at the perfect corners (+inf, 1), (-inf, 0)")
        _close([bce(inf, zero), bce(-inf, one)], [np.inf, np.inf], rel, "BCE at the wrong corners")
        _close([d(bce)(inf, one), d(bce)(-inf, zero)], [0, 0], rel, "dBCE/dz at the perfect corners")
        for label in (0.0, 0.25, 1.0):
            _close(d(bce)(zero, jnp.asarray(label, dtype)), 0.5 - label, rel, f"dBCE/dz at z = 0, y = {label}")
        e = np.exp(-30.0)  # sigmoid(30) sigmoid(-30) = e / (1 + e)**2
        _close(d(d(bce))(jnp.asarray(30, dtype), one), e / (1 + e) ** 2, rel, "d2BCE/dz2 at z = 30 (tail curvature)")

    def bce_probs_edges():
        _close([bce_probs(zero, zero), bce_probs(one, one)], [0, 0], rel, "BCE(p, y) at p = y in {0, 1}")
        _close([d(bce_probs)(zero, zero), d(bce_probs)(one, one)], [1, -1], rel, "dBCE/dp at p = y in {0, 1}")

    def masked_mean_edges(f, *args):
        nothing = jnp.zeros(args[0].shape, bool)
        g = jax.grad(lambda a: f(a, *args[1:], where=nothing))(args[0])
        _close(f(*args, where=nothing), 0, rel, "mean over nothing selected")
        _close(g, np.zeros(g.shape), rel, "gradient of the mean over nothing selected")

    def entropy_edges():
        ent = jaxloss.entropy
        _close(ent(jnp.asarray([0.5, 0.5], dtype), base=2), 1, rel, "H(1/2, 1/2) in bits")
        _close(ent(jnp.asarray([1.0, 0.0], dtype)), 0, rel, "H(1, 0)")
        _close(jax.grad(ent)(jnp.asarray([1.0, 0.0], dtype)), [-1, 0], rel, "dH/dp at a one-hot p")
        g = jax.grad(ent)(jnp.asarray([0.5, 0.5, 0.0], dtype))
        _close(g, [np.log(2) - 1, np.log(2) - 1, 0], rel, "dH/dp (0 at p = 0 by convention)")

    def entropy_logits_edges():
        ent = jaxloss.entropy_from_logits
        masked = jnp.asarray([1.0, -np.inf, 1.0], dtype)
        _close(ent(masked, base=2), 1, rel, "H of logits [1, -inf, 1] in bits")
        _close(jax.grad(ent)(masked), [0, 0, 0], rel, "dH/dlogits with a masked (-inf) class")
        where = jnp.asarray([True, False, True])
        g = jax.grad(lambda lg: ent(lg, where=where))(jnp.asarray([0.0, 5.0, 1.0], dtype))
        _expect(bool(g[1] == 0 and np.all(np.isfinite(g))), f"dH/dlogits at a where-masked class: got {g}")
        _close(ent(jnp.full(3, -np.inf, dtype)), 0, rel, "H with every class masked")

    def binary_entropy_edges():
        h = jaxloss.binary_entropy
        _close([h(zero), h(one)], [0, 0], rel, "h(0), h(1)")
        _close([d(h)(zero), d(h)(one)], [1, -1], rel, "h'(0), h'(1) (entropy convention)")

    def binary_entropy_logits_edges():
        h = jaxloss.binary_entropy_from_logits
        _close(h(jnp.asarray(30, dtype)), 2.9008631e-12, 1e-6, "h(sigmoid(30))")
        _close([d(h)(inf), d(h)(-inf)], [0, 0], rel, "h'(+-inf)")

    k = jnp.asarray([0, 3, 1])  # a class index per row of `logits`
    targets = jnp.asarray(np.roll(np.asarray(probs), 1, axis=-1), dtype)  # another distribution per row

    def softmax_ce_edges():
        sce = jaxloss.softmax_cross_entropy
        y = jnp.asarray([1.0, 0.0], dtype)
        _close(sce(jnp.asarray([0.0, -np.inf], dtype), y), 0, rel, "CE with the other class at -inf")
        _close(sce(jnp.asarray([-np.inf, 0.0], dtype), y), np.inf, rel, "CE with the label's class at -inf")
        _close(sce(jnp.full(2, -np.inf, dtype), y), 0, rel, "CE with every class out")
        _close(jax.grad(sce)(jnp.zeros(2, dtype), y), [-0.5, 0.5], rel, "dCE/dz = S softmax(z) - y")
        g = jax.grad(lambda z: sce(z, y, where=jnp.asarray([True, False])))(jnp.asarray([0.0, 5.0], dtype))
        _close(g, [0, 0], rel, "dCE/dz with the other class masked by where")

    def integer_ce_edges():
        ice = jaxloss.softmax_cross_entropy_with_integer_labels
        zero = jnp.asarray(0)
        confident = jnp.asarray([30.0, 0.0], dtype)
        e = np.exp(-30.0)
        _close(ice(confident, zero), np.log1p(e), rel, "CE of a confident prediction, log1p(e^-30)")
        # the target entry -sum of the others (softmax - one_hot cancels to 0 in float32)
        _close(jax.grad(ice)(confident, zero), [-e / (1 + e), e / (1 + e)], rel, "dCE/dz of a confident prediction")
        _expect(bool(np.isnan(ice(confident, jnp.asarray(2)))), "a label outside [0, C) gives NaN")
        smooth = ice(jnp.zeros(4, dtype), zero, label_smoothing=0.5)
        _close(smooth, np.log(4), rel, "CE of uniform logits with label smoothing")

    def kl_edges():
        kl = jaxloss.kl_divergence_from_logits
        z = jnp.asarray([0.0, 1.0, -2.0], dtype)
        _close(kl(z, z + 7), 0, 0, "KL of rows that differ by a constant shift (exactly 0)")
        _close(jax.grad(kl)(z, z + 7), [0, 0, 0], rel, "dKL/dz at equal distributions")
        _close(kl(jnp.asarray([0.0, -np.inf], dtype), jnp.asarray([0.0, 0.0], dtype)), np.inf, rel, "KL, p = 0 < q")
        _close(kl(jnp.asarray([0.0, 0.0], dtype), jnp.asarray([0.0, -np.inf], dtype)), np.log(2), rel, "KL, q = 0")

    def cross_entropy_edges():
        ce = jaxloss.cross_entropy
        p3, t3 = jnp.asarray([0.5, 0.5, 0.0], dtype), jnp.asarray([1.0, 0.0, 0.0], dtype)
        _close(ce(p3, t3, base=2), 1, rel, "CE(p = (1/2, 1/2, 0), one-hot) in bits")
        _close(jax.grad(ce)(p3, t3), [-2, 0, 0], rel, "dCE/dp = -t/p (0 where t = 0, even at p = 0)")
        _close(ce(jnp.asarray([1.0, 0.0], dtype), jnp.asarray([0.0, 1.0], dtype)), np.inf, rel, "CE, p = 0 < t")

    def relative_entropy_edges():
        re = jaxloss.relative_entropy
        p2, q2 = jnp.asarray([0.5, 0.5], dtype), jnp.asarray([0.25, 0.75], dtype)
        _close(re(p2, q2), 0.5 * np.log(2) + 0.5 * np.log(2 / 3), rel, "D(p || q)")
        _close(re(p2, p2), 0, 0, "D(p || p) = 0")
        _close(jax.grad(re)(p2, q2), [np.log(2) + 1, np.log(2 / 3) + 1], rel, "dD/dp = log(p/q) + 1")
        _close(re(jnp.asarray([0.0, 1.0], dtype), jnp.asarray([0.5, 0.5], dtype)), np.log(2), rel, "0 log(0/q) = 0")

    def ce_with_logits_edges():
        nothing = jnp.zeros(k.shape, bool)  # where selects rows here
        _close(jaxloss.ce_with_logits(logits, k, where=nothing), 0, rel, "mean over no row selected")
        g0 = jax.grad(lambda z: jaxloss.ce_with_logits(z, k, where=nothing))(logits)
        _close(g0, np.zeros(g0.shape), rel, "gradient of the mean over no row selected")
        padded = jnp.asarray([0, -100, 1])  # a padding label in a row left out reaches neither value nor gradient
        keep = padded != -100
        g = jax.grad(lambda z: jaxloss.ce_with_logits(z, padded, where=keep))(logits)
        _expect(bool(np.all(np.isfinite(g)) and np.all(g[1] == 0)), f"dCE/dz of a padded row: got {g[1]}")

    mse, mean = jaxloss.mse, jaxloss.mean
    return {
        "sigmoid_binary_cross_entropy": [("check_grads", lambda: grads(bce, z, y)), ("edges", bce_edges)],
        "binary_cross_entropy": [("check_grads", lambda: grads(bce_probs, p, y)), ("edges", bce_probs_edges)],
        "bce_with_logits": [
            ("check_grads", lambda: grads(lambda a, b: jaxloss.bce_with_logits(a, b, weights=w), z, y)),
            ("edges", lambda: masked_mean_edges(jaxloss.bce_with_logits, z, y)),
        ],
        "squared_error": [("check_grads", lambda: grads(jaxloss.squared_error, z, y))],
        "half_squared_error": [
            ("check_grads", lambda: grads(jaxloss.half_squared_error, z, y)),
            (
                "edges",
                lambda: _close(jax.grad(jaxloss.half_squared_error)(z[0], y[0]), z[0] - y[0], 0, "gradient = p - t"),
            ),
        ],
        "mse": [
            ("check_grads", lambda: grads(lambda a, b: mse(a, b, weights=w), z, y)),
            ("edges", lambda: masked_mean_edges(mse, z, y)),
        ],
        "mean": [
            ("check_grads", lambda: grads(lambda a: mean(a, weights=w), z)),
            ("edges", lambda: masked_mean_edges(mean, z)),
        ],
        "entropy": [("check_grads", lambda: grads(jaxloss.entropy, probs)), ("edges", entropy_edges)],
        "entropy_from_logits": [
            ("check_grads", lambda: grads(jaxloss.entropy_from_logits, logits)),
            ("edges", entropy_logits_edges),
        ],
        "binary_entropy": [("check_grads", lambda: grads(jaxloss.binary_entropy, p)), ("edges", binary_entropy_edges)],
        "binary_entropy_from_logits": [
            ("check_grads", lambda: grads(jaxloss.binary_entropy_from_logits, z)),
            ("edges", binary_entropy_logits_edges),
        ],
        "softmax_cross_entropy": [
            ("check_grads", lambda: grads(jaxloss.softmax_cross_entropy, logits, probs)),
            ("edges", softmax_ce_edges),
        ],
        "softmax_cross_entropy_with_integer_labels": [
            (
                "check_grads",
                lambda: grads(
                    lambda z: jaxloss.softmax_cross_entropy_with_integer_labels(z, k, label_smoothing=0.1), logits
                ),
            ),
            ("edges", integer_ce_edges),
        ],
        "kl_divergence_from_logits": [
            ("check_grads", lambda: grads(jaxloss.kl_divergence_from_logits, logits, logits[::-1])),
            ("edges", kl_edges),
        ],
        "cross_entropy": [
            ("check_grads", lambda: grads(jaxloss.cross_entropy, probs, targets)),
            ("edges", cross_entropy_edges),
        ],
        "relative_entropy": [
            ("check_grads", lambda: grads(jaxloss.relative_entropy, probs, targets)),
            ("edges", relative_entropy_edges),
        ],
        "ce_with_logits": [
            ("check_grads", lambda: grads(lambda z: jaxloss.ce_with_logits(z, k, weights=w[:3]), logits)),
            ("check_grads, distributions", lambda: grads(jaxloss.ce_with_logits, logits, probs)),
            ("edges", ce_with_logits_edges),
        ],
    }


def run(args=None) -> int:
    """Run every check on every platform and print the table; returns the exit code (0, or 1 on a failure)."""
    platforms: dict[str, jax.Device] = {}
    for device in [*jax.devices(), *jax.devices("cpu")]:
        platforms.setdefault(device.platform, device)
    print(f"jaxloss {jaxloss.__version__}, jax {jax.__version__}: derivative checks on {', '.join(platforms)}")
    print("check_grads (order 2, forward and reverse; float64 where the platform has it) and closed-form edge values\n")
    results: dict[str, dict[str, tuple[int, int]]] = {}
    failures: list[str] = []
    for platform, device in platforms.items():
        x64 = platform != "tpu"
        with jax.default_device(device), jax.enable_x64(x64):
            for name, checks in derivative_checks(jnp.float64 if x64 else jnp.float32).items():
                passed = 0
                for label, check in checks:
                    try:
                        check()
                        passed += 1
                    except Exception as err:  # a failed check is a row in the table, not a crash
                        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                        failures.append(f"{platform}: {name}: {label}: {message}")
                results.setdefault(name, {})[platform] = (passed, len(checks))
    width = max(len(name) for name in results)
    print(f"{'function':<{width}}  " + "  ".join(f"{p:<10}" for p in platforms))
    for name, row in results.items():
        cells = [("pass" if ok == n else "FAIL") + f" {ok}/{n}" for ok, n in row.values()]
        print(f"{name:<{width}}  " + "  ".join(f"{c:<10}" for c in cells))
    if failures:
        print("\nfailures:")
        for line in failures:
            print(f"  {line}")
        return 1
    print("\nall checks passed")
    return 0
