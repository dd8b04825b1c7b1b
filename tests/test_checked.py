"""jaxloss.checked: value checks through checkify, eager and under jit, and zero cost for unwrapped functions."""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxloss
from jaxloss import _api

ERROR = checkify.JaxRuntimeError  # a ValueError
inf, nan = float("inf"), float("nan")

Z = jnp.array([0.0, 1.5, -2.0])  # logits
Y = jnp.array([0.0, 1.0, 0.25])  # labels
P = jnp.array([0.1, 0.5, 0.9])  # probabilities
W = jnp.array([1.0, 2.0, 0.5])  # weights
M = jnp.array([True, False, True])  # where
ROWS = jnp.array([[0.25, 0.75], [0.5, 0.5]])
LIMIT_LOGITS = jnp.array([inf, -inf, 0.0])
CLASS_LOGITS = jnp.array([[0.0, 1.5, -2.0], [inf, -inf, 0.0]])  # two rows of three classes (limits allowed)
INDICES = jnp.array([2, 0])  # one class index per row

# One valid call of every public function: the checked result must be the unwrapped one, bit for bit.
VALID = {
    "squared_error": (jaxloss.squared_error, (Z, Y), {}),
    "half_squared_error": (jaxloss.half_squared_error, (Z, Y), {}),
    "sigmoid_binary_cross_entropy": (
        jaxloss.sigmoid_binary_cross_entropy,
        (LIMIT_LOGITS, Y),
        {"pos_weight": W, "label_smoothing": jnp.array(0.1)},
    ),
    "binary_cross_entropy": (jaxloss.binary_cross_entropy, (P, Y), {}),
    "binary_entropy": (jaxloss.binary_entropy, (jnp.array([0.0, 0.5, 1.0]),), {"base": 2}),
    "binary_entropy_from_logits": (jaxloss.binary_entropy_from_logits, (LIMIT_LOGITS,), {}),
    "entropy": (jaxloss.entropy, (ROWS.T,), {"axis": 0, "base": 2}),  # columns that sum to 1
    "entropy_from_logits": (jaxloss.entropy_from_logits, (jnp.array([[0.0, -inf], [inf, 1.0]]),), {}),
    "mean": (jaxloss.mean, (jnp.array([1.0, inf, 3.0]),), {"weights": W, "where": M}),
    "mse": (jaxloss.mse, (Z, Y), {"weights": W, "where": M}),
    "bce_with_logits": (
        jaxloss.bce_with_logits,
        (Z, Y),
        {"pos_weight": 2.0, "label_smoothing": 0.1, "weights": W, "where": M},
    ),
    "softmax_cross_entropy": (
        jaxloss.softmax_cross_entropy,
        (CLASS_LOGITS, ROWS[:, [0, 1, 1]] * jnp.array([1.0, 1.0, 0.0])),
        {"label_smoothing": jnp.array(0.1), "where": jnp.array([True, True, False])},
    ),
    "softmax_cross_entropy_with_integer_labels": (
        jaxloss.softmax_cross_entropy_with_integer_labels,
        (CLASS_LOGITS, INDICES),
        {"label_smoothing": 0.1},
    ),
    "kl_divergence_from_logits": (jaxloss.kl_divergence_from_logits, (CLASS_LOGITS, CLASS_LOGITS[::-1]), {"base": 2}),
    "cross_entropy": (jaxloss.cross_entropy, (ROWS, jnp.array([[1, 0], [0, 1]])), {"base": 2}),
    "relative_entropy": (jaxloss.relative_entropy, (ROWS, ROWS[::-1]), {}),
    "ce_with_logits": (
        jaxloss.ce_with_logits,
        (CLASS_LOGITS, INDICES),
        {"weights": jnp.array([1.0, 2.0]), "where": jnp.array([True, False]), "label_smoothing": 0.1},
    ),
}


def public_functions() -> set[str]:
    """Every public loss outside jaxloss.batch, as declared (jaxloss._api)."""
    return {name for name in _api.DECLARED if not name.startswith("batch.")}


def primitives(closed_jaxpr) -> set[str]:
    """Every primitive name in a jaxpr, sub-jaxprs (jit, custom_jvp, ...) included."""
    names: set[str] = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(closed_jaxpr.jaxpr)
    return names


def bound(fn, kwargs):
    return lambda *args: fn(*args, **kwargs)


def jit_checkify(fn, args, kwargs):
    """``jax.jit(checkify.checkify(fn))`` with every array traced.

    Arrays are passed as arguments, not closed over: XLA folds constants (x / 1.5 becomes x * (1 / 1.5)), which
    would change last bits and hide nothing about the checks.
    """
    arrays = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array)}
    options = {k: v for k, v in kwargs.items() if k not in arrays}
    return jax.jit(checkify.checkify(lambda a, k: fn(*a, **k, **options)))(args, arrays)


# --------------------------------------------------------------------------- valid input passes unchanged


def test_valid_table_covers_every_public_function():
    assert set(VALID) == public_functions()


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_input_gives_the_unwrapped_result(name):
    fn, args, kwargs = VALID[name]
    expected = fn(*args, **kwargs)
    got = jaxloss.checked(fn)(*args, **kwargs)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected, strict=True)


@pytest.mark.parametrize("name", ["bce_with_logits", "entropy_from_logits", "mean", "sigmoid_binary_cross_entropy"])
def test_valid_input_under_an_outer_jit(name):  # a sample: each compiles the checks into a new program
    fn, args, kwargs = VALID[name]
    err, got = jit_checkify(jaxloss.checked(fn), args, kwargs)
    assert err.get() is None
    np.testing.assert_array_equal(got, fn(*args, **kwargs), strict=True)


# --------------------------------------------------------------------------- invalid values raise, naming everything

# (id, function, args, kwargs, the start of the message)
INVALID = [
    (
        "label above 1",
        jaxloss.sigmoid_binary_cross_entropy,
        (Z, jnp.array([0.0, 1.0, 1.5])),
        {},
        "jaxloss.sigmoid_binary_cross_entropy: labels must be in [0, 1]; got labels[2] = 1.5 (1 of 3 entries",
    ),
    (
        "first of several offending labels",
        jaxloss.bce_with_logits,
        (Z, jnp.array([0.0, 2.0, -1.0])),
        {},
        "jaxloss.bce_with_logits: labels must be in [0, 1]; got labels[1] = 2.0 (2 of 3 entries",
    ),
    (
        "NaN label",
        jaxloss.binary_cross_entropy,
        (P, jnp.array([0.0, nan, 1.0])),
        {},
        "jaxloss.binary_cross_entropy: labels must be in [0, 1]; got labels[1] = nan",
    ),
    (
        "integer label 2",
        jaxloss.sigmoid_binary_cross_entropy,
        (Z, jnp.array([0, 2, 1])),
        {},
        "jaxloss.sigmoid_binary_cross_entropy: labels must be in [0, 1]; got labels[1] = 2 (1 of 3",
    ),
    (
        "Python scalar label",
        jaxloss.bce_with_logits,
        (Z, 1.5),
        {},
        "jaxloss.bce_with_logits: labels must be in [0, 1]; got labels = 1.5 (1 of 1 entries",
    ),
    (
        "probability above 1",
        jaxloss.binary_cross_entropy,
        (jnp.array([0.5, 1.25, 0.0]), Y),
        {},
        "jaxloss.binary_cross_entropy: probabilities must be in [0, 1]; got probabilities[1] = 1.25",
    ),
    (
        "negative probability",
        jaxloss.binary_entropy,
        (jnp.array([0.5, -0.25]),),
        {},
        "jaxloss.binary_entropy: probabilities must be in [0, 1]; got probabilities[1] = -0.25",
    ),
    (
        "2-d index",
        jaxloss.entropy,
        (jnp.array([[0.5, 0.5], [1.25, -0.25]]),),
        {},
        "jaxloss.entropy: probabilities must be in [0, 1]; got probabilities[1, 0] = 1.25 (2 of 4 entries",
    ),
    (
        "infinite probability",
        jaxloss.entropy,
        (jnp.array([inf, 0.0]),),
        {},
        "jaxloss.entropy: probabilities must be in [0, 1]; got probabilities[0] = inf",
    ),
    (
        "NaN logit",
        jaxloss.sigmoid_binary_cross_entropy,
        (jnp.array([inf, nan, 0.0]), Y),
        {},
        "jaxloss.sigmoid_binary_cross_entropy: logits must not be NaN (-inf and +inf are allowed); got logits[1] = nan",
    ),
    (
        "NaN logit in a mean",
        jaxloss.bce_with_logits,
        (jnp.array([0.0, 0.0, nan]), Y),
        {},
        "jaxloss.bce_with_logits: logits must not be NaN",
    ),
    (
        "NaN logit, binary entropy",
        jaxloss.binary_entropy_from_logits,
        (jnp.array([-inf, nan]),),
        {},
        "jaxloss.binary_entropy_from_logits: logits must not be NaN",
    ),
    (
        "NaN logit, entropy",
        jaxloss.entropy_from_logits,
        (jnp.array([[0.0, -inf], [nan, inf]]),),
        {},
        "jaxloss.entropy_from_logits: logits must not be NaN (-inf and +inf are allowed); got logits[1, 0] = nan",
    ),
    (
        "infinite prediction",
        jaxloss.squared_error,
        (jnp.array([0.0, inf, 0.0]), Y),
        {},
        "jaxloss.squared_error: predictions must be finite; got predictions[1] = inf",
    ),
    (
        "infinite target",
        jaxloss.half_squared_error,
        (Z, jnp.array([0.0, 0.0, -inf])),
        {},
        "jaxloss.half_squared_error: targets must be finite; got targets[2] = -inf",
    ),
    (
        "NaN prediction in mse",
        jaxloss.mse,
        (jnp.array([nan, 0.0, 0.0]), Y),
        {},
        "jaxloss.mse: predictions must be finite; got predictions[0] = nan",
    ),
    (
        "NaN value in a mean",
        jaxloss.mean,
        (jnp.array([1.0, nan]),),
        {},
        "jaxloss.mean: values must not be NaN; got values[1] = nan",
    ),
    (
        "negative weight",
        jaxloss.mean,
        (Z,),
        {"weights": jnp.array([1.0, -1.0, 1.0])},
        "jaxloss.mean: weights must be finite and >= 0; got weights[1] = -1.0",
    ),
    (
        "NaN weight",
        jaxloss.mse,
        (Z, Y),
        {"weights": jnp.array([1.0, 1.0, nan])},
        "jaxloss.mse: weights must be finite and >= 0; got weights[2] = nan",
    ),
    (
        "infinite weight",
        jaxloss.bce_with_logits,
        (Z, Y),
        {"weights": jnp.array([inf, 1.0, 1.0])},
        "jaxloss.bce_with_logits: weights must be finite and >= 0; got weights[0] = inf",
    ),
    (
        "negative pos_weight array",
        jaxloss.sigmoid_binary_cross_entropy,
        (Z, Y),
        {"pos_weight": jnp.array(-1.0)},
        "jaxloss.sigmoid_binary_cross_entropy: pos_weight must be finite and >= 0; got pos_weight = -1.0",
    ),
    (
        "per-element pos_weight",
        jaxloss.bce_with_logits,
        (Z, Y),
        {"pos_weight": jnp.array([1.0, 2.0, -3.0])},
        "jaxloss.bce_with_logits: pos_weight must be finite and >= 0; got pos_weight[2] = -3.0",
    ),
    (
        "class index too large",
        jaxloss.softmax_cross_entropy_with_integer_labels,
        (CLASS_LOGITS, jnp.array([0, 3])),
        {},
        "jaxloss.softmax_cross_entropy_with_integer_labels: labels must be class indices in [0, 3) (logits has 3 "
        "classes along axis -1); got labels[1] = 3 (1 of 2 entries offending). Fix the labels upstream",
    ),
    (
        "negative class index, class axis 0",
        jaxloss.softmax_cross_entropy_with_integer_labels,
        (CLASS_LOGITS.T, jnp.array([-1, 0])),
        {"axis": 0},
        "jaxloss.softmax_cross_entropy_with_integer_labels: labels must be class indices in [0, 3) (logits has 3 "
        "classes along axis 0); got labels[0] = -1 (1 of 2",
    ),
    (
        "padding label in a mean",
        jaxloss.ce_with_logits,
        (CLASS_LOGITS, jnp.array([-100, 1])),
        {},
        "jaxloss.ce_with_logits: labels must be class indices in [0, 3) (logits has 3 classes along axis -1); got "
        "labels[0] = -100 (1 of 2",
    ),
    (
        "distribution label above 1 in a mean",
        jaxloss.ce_with_logits,
        (CLASS_LOGITS, jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])),
        {},
        "jaxloss.ce_with_logits: labels must be in [0, 1]; got labels[1, 2] = 2.0 (1 of 6",
    ),
    (
        "negative distribution label",
        jaxloss.softmax_cross_entropy,
        (CLASS_LOGITS, jnp.array([[0.0, 1.0, 0.0], [-0.5, 1.5, 0.0]])),
        {},
        "jaxloss.softmax_cross_entropy: labels must be in [0, 1]; got labels[1, 0] = -0.5 (2 of 6",
    ),
    (
        "label_smoothing array above 1, integer labels",
        jaxloss.softmax_cross_entropy_with_integer_labels,
        (CLASS_LOGITS, INDICES),
        {"label_smoothing": jnp.array(1.5)},
        "jaxloss.softmax_cross_entropy_with_integer_labels: label_smoothing must be in [0, 1]; got label_smoothing",
    ),
    (
        "NaN target logit",
        jaxloss.kl_divergence_from_logits,
        (CLASS_LOGITS, CLASS_LOGITS.at[0, 1].set(nan)),
        {},
        "jaxloss.kl_divergence_from_logits: target_logits must not be NaN (-inf and +inf are allowed); got "
        "target_logits[0, 1] = nan",
    ),
    (
        "cross-entropy target above 1",
        jaxloss.cross_entropy,
        (ROWS, jnp.array([[0.0, 2.0], [0.0, 1.0]])),
        {},
        "jaxloss.cross_entropy: targets must be in [0, 1]; got targets[0, 1] = 2.0 (1 of 4 entries offending). Pass "
        "a target distribution",
    ),
    (
        "cross-entropy probability above 1",
        jaxloss.cross_entropy,
        (jnp.array([[1.5, -0.5]]), jnp.array([[1.0, 0.0]])),
        {},
        "jaxloss.cross_entropy: probabilities must be in [0, 1]; got probabilities[0, 0] = 1.5 (2 of 2",
    ),
    (
        "negative reference",
        jaxloss.relative_entropy,
        (ROWS, jnp.array([[0.25, 0.75], [-0.5, 1.5]])),
        {},
        "jaxloss.relative_entropy: reference must be in [0, 1]; got reference[1, 0] = -0.5 (2 of 4",
    ),
    (
        "weights of a categorical mean",
        jaxloss.ce_with_logits,
        (CLASS_LOGITS, INDICES),
        {"weights": jnp.array([1.0, -2.0])},
        "jaxloss.ce_with_logits: weights must be finite and >= 0; got weights[1] = -2.0",
    ),
    (
        "label_smoothing array above 1",
        jaxloss.sigmoid_binary_cross_entropy,
        (Z, Y),
        {"label_smoothing": jnp.array(1.5)},
        "jaxloss.sigmoid_binary_cross_entropy: label_smoothing must be in [0, 1]; got label_smoothing = 1.5",
    ),
    (
        "negative label_smoothing array",
        jaxloss.bce_with_logits,
        (Z, Y),
        {"label_smoothing": jnp.array(-0.5)},
        "jaxloss.bce_with_logits: label_smoothing must be in [0, 1]; got label_smoothing = -0.5",
    ),
    (
        "bfloat16 value printed in its dtype",
        jaxloss.binary_entropy,
        (jnp.array([0.5, 1.5], jnp.bfloat16),),
        {},
        "jaxloss.binary_entropy: probabilities must be in [0, 1]; got probabilities[1] = 1.5 (1 of 2",
    ),
]


@pytest.mark.parametrize(("fn", "args", "kwargs", "message"), [row[1:] for row in INVALID], ids=[r[0] for r in INVALID])
def test_invalid_values_raise(fn, args, kwargs, message):
    with pytest.raises(ERROR, match="^" + re.escape(message)):
        jaxloss.checked(fn)(*args, **kwargs)


OUTER_JIT = ("2-d index", "per-element pos_weight", "NaN weight")  # a sample: each compiles a checkified function


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "message"),
    [row[1:] for row in INVALID if row[0] in OUTER_JIT],
    ids=[row[0] for row in INVALID if row[0] in OUTER_JIT],
)
def test_invalid_values_under_an_outer_jit(fn, args, kwargs, message):
    err, _ = jit_checkify(jaxloss.checked(fn), args, kwargs)
    with pytest.raises(ERROR, match=re.escape(message.split(" (")[0].split(" = ")[0])):
        err.throw()


def test_the_message_ends_with_the_fix():
    with pytest.raises(ERROR) as info:
        jaxloss.checked(jaxloss.bce_with_logits)(Z, jnp.array([0.0, 1.0, 3.0]))
    assert str(info.value).endswith("Fix the labels upstream (hard labels 0/1 or soft labels in [0, 1]).")


def test_float64(x64):
    z = jnp.zeros(3, jnp.float64)
    good = jaxloss.checked(jaxloss.sigmoid_binary_cross_entropy)(z, jnp.array([0.0, 0.5, 1.0]))
    assert good.dtype == jnp.float64
    with pytest.raises(ERROR, match=re.escape("got labels[2] = 1.0000000000000002 (1 of 3")):
        jaxloss.checked(jaxloss.sigmoid_binary_cross_entropy)(z, jnp.array([0.0, 0.5, 1 + 2**-52]))


# --------------------------------------------------------------------------- entries the function never reads


def test_entries_left_out_by_where_are_not_checked():
    logits, labels = jnp.array([nan, 0.0, 0.0]), jnp.array([7.0, 1.0, 0.0])
    where = jnp.array([False, True, True])
    got = jaxloss.checked(jaxloss.bce_with_logits)(logits, labels, weights=jnp.array([nan, 1.0, 1.0]), where=where)
    assert got == jaxloss.bce_with_logits(logits[1:], labels[1:])
    rows = jnp.array([[5.0, 1.0], [0.5, 0.5]])  # the selected entries of each row sum to 1; 5.0 is never read
    mask = jnp.array([[False, True], [True, True]])
    np.testing.assert_array_equal(jaxloss.checked(jaxloss.entropy)(rows, where=mask), jaxloss.entropy(rows, where=mask))
    logits = jnp.array([[nan, 1.0]])
    assert jaxloss.checked(jaxloss.entropy_from_logits)(logits, where=jnp.array([False, True])) == 0


def test_entries_with_weight_zero_are_not_checked():
    values = jnp.array([nan, 2.0, 4.0])
    assert jaxloss.checked(jaxloss.mean)(values, weights=jnp.array([0.0, 1.0, 1.0])) == 3.0
    got = jaxloss.checked(jaxloss.mse)(jnp.array([inf, 1.0]), jnp.array([0.0, 3.0]), weights=jnp.array([0, 1]))
    assert got == 4.0


def test_a_selected_entry_is_still_checked():
    with pytest.raises(ERROR, match=re.escape("jaxloss.mean: values must not be NaN; got values[2] = nan")):
        jaxloss.checked(jaxloss.mean)(jnp.array([nan, 1.0, nan]), where=jnp.array([False, True, True]))


# --------------------------------------------------------------------------- transformations


def test_outer_jit_without_checkify_is_refused_by_jax():
    # A Python exception cannot leave compiled code: checkify must wrap the outer jit (documented in checked).
    with pytest.raises(ValueError, match="not functionalized"):
        jax.jit(jaxloss.checked(jaxloss.mse))(Z, Y)


def test_grad_equals_the_unwrapped_grad_and_checks_still_raise():
    got = jax.grad(jaxloss.checked(jaxloss.bce_with_logits), argnums=(0, 1))(Z, Y)
    expected = jax.grad(jaxloss.bce_with_logits, argnums=(0, 1))(Z, Y)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e, strict=True)
    with pytest.raises(ERROR, match=re.escape("jaxloss.bce_with_logits: labels must be in [0, 1]; got labels[0]")):
        jax.grad(jaxloss.checked(jaxloss.bce_with_logits))(Z, jnp.array([-1.0, 0.0, 0.0]))


def test_vmap():
    safe = jax.vmap(jaxloss.checked(jaxloss.entropy))
    np.testing.assert_array_equal(safe(ROWS), jaxloss.entropy(ROWS), strict=True)
    with pytest.raises(ERROR, match=re.escape("jaxloss.entropy: probabilities must be in [0, 1]")):
        safe(jnp.array([[0.5, 0.5], [1.5, -0.5]]))


def test_values_print_in_their_own_precision():
    """Issue 13: a float32 1.2 used to print as 1.2000000476837158 (float()'s digits)."""
    safe = jaxloss.checked(jaxloss.bce_with_logits)
    with pytest.raises(ERROR, match=re.escape("got labels[1] = 1.2 (1 of 3 entries offending)")):
        safe(jnp.zeros(3), jnp.array([0.0, 1.2, 0.0]))
    with pytest.raises(ERROR, match=re.escape("got labels[2] = 1.20312 (1 of 3")):
        safe(jnp.zeros(3, jnp.bfloat16), jnp.array([0.0, 0.0, 1.2], jnp.bfloat16))
    # The same digits where JAX formats the message: after checkify, under the caller's jit.
    err, _ = jax.jit(checkify.checkify(safe))(jnp.zeros(3), jnp.array([0.0, 1.2, 0.0]))
    assert "labels[1] = 1.2 (" in err.get()


def test_under_vmap_the_message_says_the_index_is_within_the_mapped_slice():
    safe = jax.vmap(jaxloss.checked(jaxloss.sigmoid_binary_cross_entropy))
    labels = jnp.zeros((3, 4)).at[1, 2].set(1.2)
    with pytest.raises(ERROR) as info:
        safe(jnp.zeros((3, 4)), labels)
    message = str(info.value)
    assert "got labels[2] = 1.2 (1 of 4 entries offending)" in message
    assert "within that slice" in message and "(`check` failed)" not in message
    err, _ = jax.jit(checkify.checkify(safe))(jnp.zeros((3, 4)), labels)
    assert "labels[2] = 1.2 (" in err.get()


def test_compiles_once_per_shape_and_options():
    traces = []

    def loss(logits, labels, *, label_smoothing=0.0):
        traces.append(1)
        return jaxloss.bce_with_logits(logits, labels, label_smoothing=label_smoothing)

    for k in range(3):  # a fresh wrapper each time, as in `jaxloss.checked(loss)(...)` inside a loop
        jaxloss.checked(loss)(Z + k, Y, label_smoothing=0.1)
    assert len(traces) == 1
    jaxloss.checked(loss)(Z, Y, label_smoothing=0.2)  # another non-array option: one more trace
    assert len(traces) == 2


def test_unhashable_arguments_are_passed_through():
    predictions = [0.0, 1.0, 0.25]  # a list is not hashable: traced afresh, and fn sees the list itself
    got = jaxloss.checked(jaxloss.mse)(predictions, Z)
    np.testing.assert_array_equal(got, jaxloss.mse(predictions, Z), strict=True)
    with pytest.raises(ERROR, match=re.escape("jaxloss.mse: predictions must be finite; got predictions[1] = inf")):
        jaxloss.checked(jaxloss.mse)([0.0, inf, 0.0], Z)


# --------------------------------------------------------------------------- the wrapper itself


def test_trace_time_errors_are_the_unwrapped_ones():
    for call in (
        lambda f: f(Z, Y[:, None]),
        lambda f: f(jnp.array([1, 2, 3]), Y),
        lambda f: f(Z, Y, where=jnp.array([1, 0, 1])),
    ):
        with pytest.raises((TypeError, ValueError)) as plain:
            call(jaxloss.mse)
        with pytest.raises(type(plain.value)) as wrapped:
            call(jaxloss.checked(jaxloss.mse))
        # JAX may append a note on traceback filtering: compare the messages themselves.
        assert str(wrapped.value).splitlines()[0] == str(plain.value).splitlines()[0]
    with pytest.raises(ValueError, match=re.escape("jaxloss.bce_with_logits: label_smoothing must be [0, 1]; got 1.5")):
        jaxloss.checked(jaxloss.bce_with_logits)(Z, Y, label_smoothing=1.5)


def test_bad_call_names_the_function():
    with pytest.raises(TypeError, match=re.escape("jaxloss.mse: missing a required argument: 'targets'")):
        jaxloss.checked(jaxloss.mse)(Z)


def test_signature_name_and_idempotence():
    safe = jaxloss.checked(jaxloss.bce_with_logits)
    assert inspect.signature(safe) == inspect.signature(jaxloss.bce_with_logits)
    assert safe.__name__ == "bce_with_logits"
    assert jaxloss.checked(safe) is safe


def test_a_function_with_nothing_to_check_is_refused():
    with pytest.raises(TypeError, match=r"jaxloss\.checked: .* has no argument it knows how to check"):
        jaxloss.checked(lambda x, y: x + y)
    with pytest.raises(TypeError, match=r"jaxloss\.checked: fn must be a function; got int"):
        jaxloss.checked(3)


def test_batch_functions_are_named_as_batch():
    batch_mse = jaxloss.batch.mse
    predictions = jnp.zeros((2, 3))
    targets = jnp.array([[0.0, 0.0, 0.0], [nan, 1.0, 2.0]])
    with pytest.raises(ERROR, match=re.escape("jaxloss.batch.mse: targets must be finite; got targets[1, 0] = nan")):
        jaxloss.checked(batch_mse)(predictions, targets)
    good = targets.at[1, 0].set(0.0)
    np.testing.assert_array_equal(jaxloss.checked(batch_mse)(predictions, good), batch_mse(predictions, good))
    bce = jaxloss.checked(jaxloss.batch.bce_with_logits)
    with pytest.raises(
        ERROR, match=re.escape("jaxloss.batch.bce_with_logits: labels must be in [0, 1]; got labels[1, 2]")
    ):
        bce(jnp.zeros((2, 3)), jnp.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.5]]))


# --------------------------------------------------------------------------- unwrapped functions pay nothing


@pytest.mark.parametrize("name", sorted(VALID))
def test_unwrapped_functions_contain_no_check(name):
    fn, args, kwargs = VALID[name]
    plain = bound(fn, kwargs)
    jaxpr_before = jax.make_jaxpr(plain)(*args)
    hlo_before = jax.jit(plain).lower(*args).as_text()
    assert "check" not in primitives(jaxpr_before)
    # Positive control: the same detector sees the checks in the checked function.
    assert "check" in primitives(jax.make_jaxpr(bound(jaxloss.checked(fn), kwargs))(*args))
    jaxloss.checked(fn)(*args, **kwargs)  # using checked leaves the unwrapped function as it was
    assert str(jax.make_jaxpr(plain)(*args)) == str(jaxpr_before)
    assert jax.jit(plain).lower(*args).as_text() == hlo_before


def test_checked_entropy_flags_rows_that_do_not_sum_to_one():
    """entropy does not renormalise (SciPy's does): checked(entropy) names the first row whose sum is off 1 by more
    than ROW_SUM_ULPS ulp per class, its sum, how many rows, and how to normalise."""
    from jaxloss import validate

    safe = jaxloss.checked(jaxloss.entropy)
    rng = np.random.default_rng(0)
    softmax = np.asarray(jax.nn.softmax(jnp.asarray(rng.normal(size=(64, 1000)), jnp.float32)))
    np.testing.assert_array_equal(safe(softmax), jaxloss.entropy(softmax))  # float32 softmax rows pass
    scores = np.array([[0.2, 0.2, 0.2], [0.5, 0.25, 0.25], [0.3, 0.3, 0.3]], np.float32)
    with pytest.raises(ValueError) as info:
        safe(scores)
    message = str(info.value)
    assert message.startswith(
        "jaxloss.entropy: probabilities must sum to 1 along axis -1 (within 4 ulp per class, 1.43e-06 for 3 classes); "
        "got row [0] summing to 0.6 (2 of 3 rows off)."
    ), message
    assert "p / p.sum(axis=-1, keepdims=True)" in message and "entropy_from_logits" in message
    # Entries left out by `where` count as 0: the selected ones must sum to 1.
    halves = np.array([[0.5, 0.5, 0.7]], np.float32)
    safe(halves, where=np.array([[True, True, False]]))
    # Just outside the bound fails, just inside passes.
    n, eps = 3, float(np.finfo(np.float32).eps)
    edge = validate.ROW_SUM_ULPS * n * eps
    safe(np.array([[0.5, 0.5 - edge / 2, 0.0]], np.float32))
    with pytest.raises(ValueError, match="summing to"):
        safe(np.array([[0.5, 0.5 - 3 * edge, 0.0]], np.float32))


def test_checked_binary_cross_entropy_has_no_row_rule():
    """Elementwise probabilities (binary_cross_entropy) are not rows of a distribution."""
    safe = jaxloss.checked(jaxloss.binary_cross_entropy)
    out = safe(jnp.array([0.2, 0.2]), jnp.array([1.0, 0.0]))
    np.testing.assert_array_equal(out, jaxloss.binary_cross_entropy(jnp.array([0.2, 0.2]), jnp.array([1.0, 0.0])))


# --------------------------------------------------------------------------- categorical losses: what each name means


def test_mse_targets_are_still_only_required_finite():
    """cross_entropy's targets are a distribution (its declaration's own rule); the role's rule is unchanged."""
    assert jaxloss.checked(jaxloss.mse)(jnp.zeros(2), jnp.array([3.0, -5.0])) == 17.0
    assert jaxloss.cross_entropy.declaration.rule("targets") is _api.TARGET_DISTRIBUTION
    assert jaxloss.mse.declaration.rule("targets") is _api.ROLES["targets"].rule


def test_class_indices_left_out_of_a_mean_are_not_checked():
    """ce_with_logits selects rows: a padding label (-100) and NaN logits in a row left out (where False, or weight
    0) are never read, so never reported; the same label in a selected row is."""
    safe = jaxloss.checked(jaxloss.ce_with_logits)
    logits = CLASS_LOGITS.at[1, 0].set(nan)
    labels = jnp.array([1, -100])
    expected = jaxloss.ce_with_logits(CLASS_LOGITS[:1], labels[:1])
    assert safe(logits, labels, where=labels != -100) == expected
    assert safe(logits, labels, weights=jnp.array([1.0, 0.0])) == expected
    soft = jnp.array([[0.0, 1.0, 0.0], [7.0, 0.0, 0.0]])  # a row of distributions left out: every class exempt
    assert safe(logits, soft, where=jnp.array([True, False])) == jaxloss.ce_with_logits(CLASS_LOGITS[:1], soft[:1])
    with pytest.raises(ERROR, match=re.escape("got labels[1] = -100 (1 of 2")):
        safe(CLASS_LOGITS, labels, where=jnp.array([True, True]))
    # The class axis first: rows are along axis 1, a row mask of shape (2,) still reaches the right rows.
    assert safe(logits.T, labels, axis=0, where=labels != -100) == expected


def test_integer_labels_are_checked_whatever_the_class_mask():
    """A per-row function's `where` leaves classes out, not rows: every label is read (a label on a class left out
    is a valid +inf), and a (C,)-shaped class mask is never mistaken for a row mask when rows == classes."""
    safe = jaxloss.checked(jaxloss.softmax_cross_entropy_with_integer_labels)
    logits = jnp.zeros((3, 3))
    mask = jnp.array([True, True, False])
    got = safe(logits, jnp.array([0, 1, 2]), where=mask)
    np.testing.assert_array_equal(
        got, jaxloss.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1, 2]), where=mask)
    )
    assert np.isinf(got[2])
    with pytest.raises(ERROR, match=re.escape("got labels[2] = 3 (1 of 3")):
        safe(logits, jnp.array([0, 1, 3]), where=mask)


def test_int64_and_unsigned_class_indices(x64):
    safe = jaxloss.checked(jaxloss.softmax_cross_entropy_with_integer_labels)
    with pytest.raises(ERROR, match=re.escape("got labels[0] = 4294967296 (1 of 2")):
        safe(CLASS_LOGITS, jnp.array([2**32, 0], jnp.int64))
    with pytest.raises(ERROR, match=re.escape("got labels[1] = 3 (1 of 2")):
        safe(CLASS_LOGITS, jnp.array([0, 3], jnp.uint8))


@pytest.mark.parametrize(
    ("fn", "arg", "hint"),
    [
        (jaxloss.cross_entropy, "probabilities", "jaxloss.softmax_cross_entropy"),
        (jaxloss.relative_entropy, "probabilities", "jaxloss.kl_divergence_from_logits"),
        (jaxloss.relative_entropy, "reference", "jaxloss.kl_divergence_from_logits"),
    ],
)
def test_rows_of_probabilities_must_sum_to_one(fn, arg, hint):
    """The row-sum rule of entropy, for the rows of cross_entropy's probabilities and of both of relative_entropy's
    distributions (a target need not sum to 1: cross_entropy is linear in it, as optax's is)."""
    name = fn.__name__
    safe = jaxloss.checked(fn)
    good = {"probabilities": ROWS, fn.declaration.arrays[1]: ROWS[::-1]}
    np.testing.assert_array_equal(safe(**good), fn(**good))
    bad = dict(good)
    bad[arg] = jnp.array([[0.25, 0.75], [0.5, 0.25]])
    with pytest.raises(ERROR) as info:
        safe(**bad)
    message = str(info.value)
    assert message.startswith(
        f"jaxloss.{name}: {arg} must sum to 1 along axis -1 (within 4 ulp per class, 9.54e-07 for 2 classes); got row "
        f"[1] summing to 0.75 (1 of 2 rows off). {name} does not renormalise"
    ), message
    assert message.endswith(f"or pass logits to {hint}."), message
    # Classes left out by `where` count as 0: the selected ones must sum to 1.
    wide = {k: jnp.concatenate([v, jnp.full((2, 1), 0.5)], axis=1) for k, v in good.items()}
    keep = jnp.array([True, True, False])
    np.testing.assert_array_equal(safe(**wide, where=keep), fn(**wide, where=keep))


def test_cross_entropy_targets_need_not_sum_to_one():
    safe = jaxloss.checked(jaxloss.cross_entropy)
    multi_hot = jnp.array([[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(safe(ROWS, multi_hot), jaxloss.cross_entropy(ROWS, multi_hot))
