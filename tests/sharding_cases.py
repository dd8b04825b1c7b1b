"""Sharded evaluation on 8 simulated CPU devices: same results as on one device.

Not collected by the default test run (the file name does not start with ``test_``):
``tests/test_sharding.py`` runs it in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, which must be set before JAX starts.
To run it by hand::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu python -m pytest tests/sharding_cases.py

* Every public function and every ``jaxloss.batch`` function, its inputs sharded along the batch
  axis over an 8-device mesh (``NamedSharding``) under ``jax.jit``, gives the single-device result:
  elementwise results bit for bit, per-row reductions within ROW_ULPS, scalar means (a cross-device
  all-reduce) within MEAN_ULPS.
* Inside ``jax.shard_map`` the scalar means with ``axis_name=`` return the global mean (psum of
  (sum w*l, sum w)), also when devices hold different numbers of selected elements (one none at
  all), and so does their gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxloss
from jaxloss import batch

DEVICES = 8
ELEMENTWISE_ULPS = 0  # the same instructions on each shard: bit for bit
ROW_ULPS = 2  # a reduction along an unsharded axis (entropy rows, per-example means, per-example matmuls)
MEAN_ULPS = 4  # a reduction across devices: partial sums are added in another order
B, N = 64, 6  # 8 examples per device
AXIS = "batch"


def ulp_distance(a, b) -> np.ndarray:
    """Distance in float32 units in the last place; 0 for equal values (and for two NaNs), huge for one NaN."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape

    def key(x):  # float32 bits -> integers in the order of the floats (-0.0 and +0.0 both 0)
        i = x.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(2**31) - i, i)

    both_nan = np.isnan(a) & np.isnan(b)
    one_nan = np.isnan(a) ^ np.isnan(b)
    d = np.abs(key(a) - key(b))
    return np.where(both_nan, 0, np.where(one_nan, 2**62, d))


def assert_ulps(actual, expected, ulps, what=""):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        d = ulp_distance(a, e)
        assert d.max(initial=0) <= ulps, f"{what}: {d.max()} ulp apart (allowed {ulps}); got {a}, expected {e}"


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == DEVICES, (
        f"needs {DEVICES} devices; got {jax.device_count()}. Run through tests/test_sharding.py, or set "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES} before starting Python."
    )
    return jax.make_mesh((DEVICES,), (AXIS,))


# ----------------------------------------------------------------------------- data


def uneven_mask(rng, shape):
    """A mask whose selected count differs from device to device: device k keeps about k/8 of its rows' entries."""
    rows_per_device = shape[0] // DEVICES
    keep = np.repeat(np.arange(DEVICES) / DEVICES, rows_per_device)[:, None]
    return rng.uniform(size=shape) < keep  # device 0 selects nothing


def make_data():
    rng = np.random.default_rng(0)
    f32 = np.float32
    z = (rng.normal(size=(B, N)) * 8).astype(f32)
    z[0, 0], z[1, 1], z[2, 2], z[3, 3] = 30.0, -100.0, np.inf, -np.inf
    y = (rng.uniform(size=(B, N)) < 0.5).astype(f32)
    y[2, 2], y[3, 3] = 1.0, 0.0  # the finite limits at +-inf
    probs = rng.dirichlet(np.ones(N), size=B).astype(f32)
    probs[5] = np.eye(N, dtype=f32)[2]  # a one-hot row: exact zeros
    bp = rng.uniform(size=(B, N)).astype(f32)
    bp[6, :2] = [0.0, 1.0]
    return {
        "p": rng.normal(size=(B, N)).astype(f32),
        "t": rng.normal(size=(B, N)).astype(f32),
        "z": z,
        "y": y,
        "soft": rng.uniform(size=(B, N)).astype(f32),
        "probs": probs,
        "bp": bp,
        "w": rng.uniform(0.1, 2.0, size=(B, N)).astype(f32),
        "m": uneven_mask(rng, (B, N)),
        "x": rng.normal(size=(B, N)).astype(f32),
        "label": (rng.uniform(size=(B,)) < 0.5).astype(f32),
    }


DATA = make_data()
PARAMS = {
    "w1": jnp.asarray(np.random.default_rng(1).normal(size=(N, 4)), jnp.float32),
    "b1": jnp.zeros(4, jnp.float32),
    "w2": jnp.asarray(np.random.default_rng(2).normal(size=(4,)), jnp.float32),
}


def mlp_loss(params, x, label):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jaxloss.bce_with_logits(h @ params["w2"], label)


class Case(NamedTuple):
    fn: Any
    args: tuple[str, ...]  # names in DATA, batched along axis 0; "params" is replicated
    ulps: int
    reduces_across_devices: bool = False
    jit: bool = True  # False: fn jits itself and must not be wrapped in jax.jit (jaxloss.checked)


CASES = {
    # elementwise
    "squared_error": Case(jaxloss.squared_error, ("p", "t"), ELEMENTWISE_ULPS),
    "half_squared_error": Case(jaxloss.half_squared_error, ("p", "t"), ELEMENTWISE_ULPS),
    "sigmoid_binary_cross_entropy": Case(jaxloss.sigmoid_binary_cross_entropy, ("z", "y"), ELEMENTWISE_ULPS),
    "sigmoid_binary_cross_entropy/options": Case(
        lambda z, y, w: jaxloss.sigmoid_binary_cross_entropy(z, y, pos_weight=w, label_smoothing=0.1),
        ("z", "soft", "w"),
        ELEMENTWISE_ULPS,
    ),
    "binary_cross_entropy": Case(jaxloss.binary_cross_entropy, ("bp", "soft"), ELEMENTWISE_ULPS),
    "binary_entropy": Case(lambda q: jaxloss.binary_entropy(q, base=2), ("bp",), ELEMENTWISE_ULPS),
    "binary_entropy_from_logits": Case(jaxloss.binary_entropy_from_logits, ("z",), ELEMENTWISE_ULPS),
    # reduced along the (unsharded) class axis
    "entropy": Case(jaxloss.entropy, ("probs",), ROW_ULPS),
    "entropy/where": Case(lambda q, m: jaxloss.entropy(q, where=m, base=2), ("probs", "m"), ROW_ULPS),
    "entropy_from_logits": Case(jaxloss.entropy_from_logits, ("z",), ROW_ULPS),
    "entropy_from_logits/where": Case(
        lambda z, m: jaxloss.entropy_from_logits(z, where=m, base=2), ("z", "m"), ROW_ULPS
    ),
    # scalar means: reduced across devices
    "mean": Case(jaxloss.mean, ("p",), MEAN_ULPS, True),
    "mean/weights_where": Case(lambda v, w, m: jaxloss.mean(v, weights=w, where=m), ("p", "w", "m"), MEAN_ULPS, True),
    "mse": Case(jaxloss.mse, ("p", "t"), MEAN_ULPS, True),
    "mse/weights_where": Case(
        lambda p, t, w, m: jaxloss.mse(p, t, weights=w, where=m), ("p", "t", "w", "m"), MEAN_ULPS, True
    ),
    "bce_with_logits": Case(jaxloss.bce_with_logits, ("z", "y"), MEAN_ULPS, True),
    "bce_with_logits/options": Case(
        lambda z, y, w, m: jaxloss.bce_with_logits(z, y, pos_weight=w, label_smoothing=0.1, weights=w, where=m),
        ("z", "soft", "w", "m"),
        MEAN_ULPS,
        True,
    ),
    # jaxloss.batch: one result per example, sharded like the examples
    "batch.mean": Case(lambda v, w, m: batch.mean(v, weights=w, where=m), ("p", "w", "m"), ROW_ULPS),
    "batch.mse": Case(lambda p, t, w, m: batch.mse(p, t, weights=w, where=m), ("p", "t", "w", "m"), ROW_ULPS),
    "batch.bce_with_logits": Case(
        lambda z, y, w, m: batch.bce_with_logits(z, y, pos_weight=w, weights=w, where=m), ("z", "y", "w", "m"), ROW_ULPS
    ),
    "batch.per_example": Case(batch.per_example(jaxloss.entropy_from_logits), ("z",), ROW_ULPS),
    "batch.grad": Case(batch.grad(mlp_loss), ("params", "x", "label"), ROW_ULPS),
    "batch.value_and_grad": Case(batch.value_and_grad(mlp_loss), ("params", "x", "label"), ROW_ULPS),
    # jaxloss.checked: value checks in compiled code (checkify), then the wrapped function's result.
    "checked/bce_with_logits": Case(
        lambda z, y, w, m: jaxloss.checked(jaxloss.bce_with_logits)(z, y, weights=w, where=m),
        ("z", "soft", "w", "m"),
        MEAN_ULPS,
        True,
        jit=False,
    ),
    "checked/batch.mse": Case(
        lambda p, t, m: jaxloss.checked(batch.mse)(p, t, where=m), ("p", "t", "m"), ROW_ULPS, jit=False
    ),
}


def test_info_reports_the_xla_path_and_why_on_several_devices():
    """jaxloss.info() computes nothing to shard; with 8 devices it must say that the kernels are not used, and why."""
    report = jaxloss.info()
    assert "8 device(s)" in report
    assert "entropy_from_logits: xla" in report and "entropy: xla" in report
    assert "cpu: unavailable - this process has 8 devices (the kernels run in one-device processes)" in report


# Public callables that are not computations on arrays, each with the test that covers it here.
NOT_COMPUTATIONS = {"info": test_info_reports_the_xla_path_and_why_on_several_devices}


def test_every_public_function_has_a_case():
    """Case names are "function" or "function/variant"; a new public function must bring a case."""
    covered = {name.split("/")[0] for name in CASES} | set(NOT_COMPUTATIONS)
    functions = {name for name in jaxloss.__all__ if callable(getattr(jaxloss, name))}  # modules are not callable
    assert functions - covered == set(), "public functions without a sharding case"
    assert {f"batch.{name}" for name in batch.__all__} - covered == set(), "jaxloss.batch functions without a case"


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_equals_single_device(mesh, name):
    case = CASES[name]
    sharded_spec, replicated = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
    single = [PARAMS if a == "params" else DATA[a] for a in case.args]
    sharded = [
        jax.device_put(v, replicated if a == "params" else sharded_spec) for a, v in zip(case.args, single, strict=True)
    ]
    if not case.jit:
        out = case.fn(*sharded)
        assert_ulps(out, case.fn(*single), case.ulps, name)
        if not case.reduces_across_devices:
            assert out.addressable_shards[0].data.shape[0] == B // DEVICES, f"{name}: result not sharded by example"
        return

    f = jax.jit(case.fn)
    compiled = f.lower(*sharded).compile()
    out = compiled(*sharded)
    expected = jax.jit(case.fn)(*single)  # on one device
    assert_ulps(out, expected, case.ulps, name)

    hlo = compiled.as_text()
    if case.reduces_across_devices:  # a scalar mean: partial totals on each device, then one all-reduce
        assert "all-reduce" in hlo, f"{name}: no cross-device reduction in the compiled program"
    else:  # per-example results stay where the examples are: no communication at all
        assert "all-reduce" not in hlo and "all-gather" not in hlo, f"{name}: unexpected communication"
        for leaf in jax.tree.leaves(out):
            assert len(leaf.addressable_shards) == DEVICES
            assert leaf.addressable_shards[0].data.shape[0] == B // DEVICES, f"{name}: result not sharded by example"


# ----------------------------------------------------------------------------- shard_map with axis_name

MEANS = {
    "mean": (lambda v, w, m, **kw: jaxloss.mean(v, weights=w, where=m, **kw), ("p", "w", "m")),
    "mse": (lambda p, t, w, m, **kw: jaxloss.mse(p, t, weights=w, where=m, **kw), ("p", "t", "w", "m")),
    "mse_unweighted": (lambda p, t, m, **kw: jaxloss.mse(p, t, where=m, **kw), ("p", "t", "m")),
    "bce_with_logits": (
        lambda z, y, w, m, **kw: jaxloss.bce_with_logits(z, y, pos_weight=w, weights=w, where=m, **kw),
        ("z", "y", "w", "m"),
    ),
}


def global_mean(mesh, fn, n_args):
    """fn on each device's shard with axis_name: the global mean, replicated."""
    return jax.jit(
        jax.shard_map(
            lambda *shards: fn(*shards, axis_name=AXIS), mesh=mesh, in_specs=(P(AXIS),) * n_args, out_specs=P()
        )
    )


def shard(mesh, arrays):
    """Place each array on the mesh, split along the batch axis (shard_map takes inputs already placed)."""
    return [jax.device_put(a, NamedSharding(mesh, P(AXIS))) for a in arrays]


@pytest.mark.parametrize("name", list(MEANS))
def test_shard_map_axis_name_gives_the_global_mean(mesh, name):
    fn, names = MEANS[name]
    args = [DATA[a] for a in names]
    counts = DATA["m"].reshape(DEVICES, -1).sum(axis=1)
    assert counts[0] == 0 and len(set(counts)) == DEVICES  # uneven, one device with nothing selected

    out = global_mean(mesh, fn, len(args))(*shard(mesh, args))
    expected = jax.jit(fn)(*args)  # one device, whole batch
    assert_ulps(out, expected, MEAN_ULPS, name)

    # Without axis_name each device returns its own mean; their average is not the global mean here.
    local = jax.jit(
        jax.shard_map(lambda *s: fn(*s)[None], mesh=mesh, in_specs=(P(AXIS),) * len(args), out_specs=P(AXIS))
    )(*shard(mesh, args))
    assert local.shape == (DEVICES,)
    assert abs(float(jnp.mean(local)) - float(expected)) > 1e-3 * abs(float(expected))


@pytest.mark.parametrize("name", ["mse_unweighted", "bce_with_logits"])
def test_shard_map_gradient_is_the_global_gradient(mesh, name):
    fn, names = MEANS[name]
    args = [DATA[a] for a in names]
    with jax.set_mesh(mesh):  # an Explicit mesh (jax.make_mesh's default): grad builds its cotangent on it
        sharded = jax.grad(global_mean(mesh, fn, len(args)))(*shard(mesh, args))
    single = jax.jit(jax.grad(fn))(*args)
    assert_ulps(sharded, single, MEAN_ULPS, name)
    assert np.all(np.asarray(sharded)[~DATA["m"]] == 0)


def test_shard_map_nothing_selected_anywhere(mesh):
    fn, names = MEANS["mse"]
    args = shard(mesh, [DATA[a] for a in names[:-1]] + [np.zeros((B, N), bool)])
    f = global_mean(mesh, fn, len(args))
    assert float(f(*args)) == 0.0
    with jax.set_mesh(mesh):
        grad = jax.grad(lambda p: f(p, *args[1:]))(args[0])
    np.testing.assert_array_equal(grad, 0)
