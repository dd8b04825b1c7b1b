"""The bad-input matrix: one row per case, each asserting its documented outcome.

Every row is a call (a Python expression) and its outcome: an exception type and the start of its message
(which names the function and the argument), a value, or "the same result as" another call. Rows that
``jaxloss.checked`` turns into errors call it explicitly. Command-line rows are a ``jaxloss eval`` command run
(in this process, ``jaxloss.cli.main``) in a directory holding the files ``CLI_SETUP`` writes, and its outcome:
exit 2 with one error line, or exit 0 with the JSON fields shown; a row whose proof needs a process of its own
(killed mid-write, the fuzzer) names the test that proves it.

The same table renders ``docs/bad_inputs.md``; ``test_the_rendered_matrix_is_up_to_date`` keeps the two in
sync. Regenerate the page with ``python tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import pathlib
import re
import shlex
import sys

import numpy as np
import pytest
from jax.experimental import checkify

from jaxloss import _api, cli

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.md"

# The names a row's call may use (shown at the top of the rendered page).
SETUP = """\
import jax, jax.numpy as jnp, numpy as np, jaxloss
inf, nan = float("inf"), float("nan")
P = jnp.array([0.25, 0.5, 0.75])  # predictions / probabilities
Y = jnp.array([0.0, 1.0, 0.5])  # targets / labels
Z = jnp.array([-1.0, 0.0, 2.0])  # logits
W = jnp.array([1.0, 2.0, 1.0])  # weights
M = jnp.array([True, False, True])  # where
R = jnp.array([[0.5, 0.5], [0.9, 0.1]])  # rows of probabilities (or logits)
K = jnp.array([1, 0])  # class indices, one per row of R"""


# The files the command-line rows use (written into an empty directory, shown at the top of their section).
CLI_SETUP = """\
rng = np.random.default_rng(0)
z = rng.normal(size=1000).astype(np.float32)  # logits
y = (rng.random(1000) < 0.5).astype(np.float32)  # labels 0 / 1
np.save("z.npy", z); np.save("y.npy", y)
np.save("y255.npy", (y * 255).astype(np.uint8))  # labels saved as an 8-bit image
np.save("y2.npy", y * 2)
np.save("neg.npy", -np.ones(1000, np.float32)); np.save("big.npy", np.full(1000, 1e36, np.float32))
np.save("zinf.npy", np.full(1000, np.inf, np.float32))
np.save("z_be.npy", z.astype(">f4"))  # big-endian
np.savez_compressed("wide.npz", logits=np.zeros((4, 2_000_000), np.float32))  # 0.03 MB holding 32 MB
os.symlink("z.npy", "link.npy"); os.link("z.npy", "hard.npy")
zc = rng.normal(size=(1000, 4)).astype(np.float32)  # logits of 4 classes
k = rng.integers(0, 4, 1000).astype(np.int32)  # class indices
np.save("zc.npy", zc); np.save("k.npy", k); np.save("kf.npy", k.astype(np.float32))
np.save("k4.npy", np.where(np.arange(1000) == 500, 4, k)); np.save("kpad.npy", np.where(np.arange(1000) % 10, k, -100))
np.save("keep.npy", np.arange(1000) % 10 != 0)"""


def namespace() -> dict:
    ns: dict = {}
    exec(SETUP, ns)  # the rendered page shows exactly this
    return ns


# --------------------------------------------------------------------------- outcomes


@dataclasses.dataclass(frozen=True)
class Raises:
    """``error`` is raised and its message starts with ``message``."""

    error: type[BaseException]
    message: str

    def render(self) -> str:
        name = "JaxRuntimeError (a ValueError)" if self.error is checkify.JaxRuntimeError else self.error.__name__
        return f"**{name}**: {self.message}…"


@dataclasses.dataclass(frozen=True)
class Value:
    """The result equals ``expected`` (an expression) bit for bit, NaN included, with the same shape; float32."""

    expected: str

    def render(self) -> str:
        return f"`{self.expected}`"


@dataclasses.dataclass(frozen=True)
class Same:
    """The result equals that of the call ``other`` bit for bit."""

    other: str

    def render(self) -> str:
        return f"same as `{self.other}`"


@dataclasses.dataclass(frozen=True)
class Refused:
    """The command exits with 2, prints nothing on stdout, and its one error line starts with ``message``."""

    message: str

    def render(self) -> str:
        return f"**exit 2**: {self.message}…"


@dataclasses.dataclass(frozen=True)
class Output:
    """The command exits with 0 and its JSON holds these fields (``"finite"``: a finite number; ``"as <call>"``:
    the same value as that command gives)."""

    fields: tuple[tuple[str, object], ...]

    def render(self) -> str:
        return "**exit 0**: " + ", ".join(f"`{k}`: {json.dumps(v) if k else v}" for k, v in self.fields)


@dataclasses.dataclass(frozen=True)
class Near:
    """The result is a float32 within ``ulps`` ULP of the exact ``expected`` (a mean's accuracy contract)."""

    expected: str
    ulps: int

    def render(self) -> str:
        return f"`{self.expected}` within {self.ulps} ULP"


@dataclasses.dataclass(frozen=True)
class Finite:
    """The result is a finite float32 number."""

    def render(self) -> str:
        return "a finite float32"


@dataclasses.dataclass(frozen=True)
class ProvenBy:
    """A case that needs a process of its own (a kill, thousands of runs): the named test proves ``what``."""

    test: str
    what: str

    def render(self) -> str:
        return f"{self.what} (`{self.test}`)"


@dataclasses.dataclass(frozen=True)
class Row:
    category: str
    case: str
    call: str
    outcome: Raises | Value | Same | Refused | Output | Near | Finite | ProvenBy


# --------------------------------------------------------------------------- the rows

# function -> (its first array argument, the call with {x} in its place)
FIRST = {
    "squared_error": ("predictions", "jaxloss.squared_error({x}, Y)"),
    "half_squared_error": ("predictions", "jaxloss.half_squared_error({x}, Y)"),
    "mse": ("predictions", "jaxloss.mse({x}, Y)"),
    "sigmoid_binary_cross_entropy": ("logits", "jaxloss.sigmoid_binary_cross_entropy({x}, Y)"),
    "bce_with_logits": ("logits", "jaxloss.bce_with_logits({x}, Y)"),
    "binary_cross_entropy": ("probabilities", "jaxloss.binary_cross_entropy({x}, Y)"),
    "binary_entropy": ("probabilities", "jaxloss.binary_entropy({x})"),
    "binary_entropy_from_logits": ("logits", "jaxloss.binary_entropy_from_logits({x})"),
    "entropy": ("probabilities", "jaxloss.entropy({x})"),
    "entropy_from_logits": ("logits", "jaxloss.entropy_from_logits({x})"),
    "mean": ("values", "jaxloss.mean({x})"),
    "softmax_cross_entropy": ("logits", "jaxloss.softmax_cross_entropy({x}, Y)"),
    "softmax_cross_entropy_with_integer_labels": (
        "logits",
        "jaxloss.softmax_cross_entropy_with_integer_labels({x}, 1)",
    ),
    "kl_divergence_from_logits": ("logits", "jaxloss.kl_divergence_from_logits({x}, Z)"),
    "cross_entropy": ("probabilities", "jaxloss.cross_entropy({x}, Y)"),
    "relative_entropy": ("probabilities", "jaxloss.relative_entropy({x}, P)"),
    "ce_with_logits": ("logits", "jaxloss.ce_with_logits({x}, 1)"),
}
# paired function -> (first argument, its valid value, second argument)
PAIRED = {
    "squared_error": ("predictions", "P", "targets"),
    "half_squared_error": ("predictions", "P", "targets"),
    "mse": ("predictions", "P", "targets"),
    "sigmoid_binary_cross_entropy": ("logits", "Z", "labels"),
    "bce_with_logits": ("logits", "Z", "labels"),
    "binary_cross_entropy": ("probabilities", "P", "labels"),
    "cross_entropy": ("probabilities", "P", "targets"),
    "relative_entropy": ("probabilities", "P", "reference"),
}
ENTROPIES = ("entropy", "entropy_from_logits", "binary_entropy", "binary_entropy_from_logits")


def dtype_rows() -> list[Row]:
    rows = []
    for kind, x, dtype in (
        ("integer", "jnp.array([0, 1, 1])", "int32"),
        ("boolean", "jnp.array([False, True, True])", "bool"),
        ("complex", "jnp.array([0j, 1, 1])", "complex64"),
    ):
        for fn, (arg, call) in FIRST.items():
            message = f"jaxloss.{fn}: {arg} must be a real floating-point array; got dtype {dtype}"
            rows.append(Row("dtype", f"{kind} {arg}", call.format(x=x), Raises(TypeError, message)))
    for fn, (arg, call) in FIRST.items():
        message = f"jaxloss.{fn}: {arg} must be a real floating-point array"
        rows.append(
            Row(
                "dtype",
                f"string {arg}",
                call.format(x='np.array(["0", "1", "1"])'),
                Raises(TypeError, message),
            )
        )
    rows.append(
        Row(
            "dtype",
            "Python string",
            'jaxloss.mse("abc", Y)',
            Raises(TypeError, "jaxloss.mse: predictions must"),
        )
    )
    rows.append(
        Row(
            "dtype",
            "None",
            "jaxloss.entropy(None)",
            Raises(TypeError, "jaxloss.entropy: probabilities must be a real floating-point array; got NoneType"),
        )
    )
    for fn, (_, value, second) in PAIRED.items():
        for kind, y in (("integer", "jnp.array([0, 1, 1])"), ("boolean", "jnp.array([False, True, True])")):
            rows.append(
                Row(
                    "dtype",
                    f"{kind} {second} (accepted, promoted)",
                    f"jaxloss.{fn}({value}, {y})",
                    Same(f"jaxloss.{fn}({value}, jnp.array([0.0, 1.0, 1.0]))"),
                )
            )
        message = f"jaxloss.{fn}: {second} must be a real numeric array (float, int or bool); got dtype complex64"
        rows.append(
            Row(
                "dtype",
                f"complex {second}",
                f"jaxloss.{fn}({value}, jnp.array([0j, 1, 1]))",
                Raises(TypeError, message),
            )
        )
        rows.append(
            Row(
                "dtype",
                f"string {second}",
                f'jaxloss.{fn}({value}, np.array(["0", "1", "1"]))',
                Raises(TypeError, f"jaxloss.{fn}: {second} must be a real numeric array"),
            )
        )
    rows += [
        Row(
            "dtype",
            "integer weights (accepted)",
            "jaxloss.mean(P, weights=jnp.array([1, 2, 1]))",
            Same("jaxloss.mean(P, weights=W)"),
        ),
        Row(
            "dtype",
            "complex weights",
            "jaxloss.mse(P, Y, weights=W + 0j)",
            Raises(
                TypeError, "jaxloss.mse: weights must be a real numeric array (float, int or bool); got dtype complex64"
            ),
        ),
        Row(
            "dtype",
            "bfloat16 inputs (computed in float32)",
            "jaxloss.mse(P.astype(jnp.bfloat16), Y)",
            Same("jaxloss.mse(P.astype(jnp.bfloat16).astype(jnp.float32), Y)"),
        ),
    ]
    return rows


def shape_rows() -> list[Row]:
    rows = []
    for fn, (first, value, second) in PAIRED.items():
        message = f"jaxloss.{fn}: {first} and {second} must have the same shape (no broadcasting); got (3,) and (3, 1)"
        rows.append(
            Row("shape", "(3,) against (3, 1)", f"jaxloss.{fn}({value}, Y[:, None])", Raises(ValueError, message))
        )
    rows += [
        Row(
            "shape",
            "(3,) against (2,)",
            "jaxloss.mse(P, Y[:2])",
            Raises(
                ValueError,
                "jaxloss.mse: predictions and targets must have the same shape (no broadcasting); got (3,) and (2,)",
            ),
        ),
        Row(
            "shape",
            "(2, 1) against (2, 2)",
            "jaxloss.bce_with_logits(R[:, :1], R)",
            Raises(
                ValueError,
                "jaxloss.bce_with_logits: logits and labels must have the same shape (no broadcasting); "
                "got (2, 1) and (2, 2)",
            ),
        ),
    ]
    return rows


def scalar_rows() -> list[Row]:
    return [
        Row(
            "scalar",
            "Python scalar targets stand for all",
            "jaxloss.mse(P, 0.5)",
            Same("jaxloss.mse(P, jnp.full(3, 0.5))"),
        ),
        Row(
            "scalar",
            "0-d array labels stand for all",
            "jaxloss.sigmoid_binary_cross_entropy(Z, jnp.array(1.0))",
            Same("jaxloss.sigmoid_binary_cross_entropy(Z, jnp.ones(3))"),
        ),
        Row(
            "scalar",
            "scalar predictions stand for all",
            "jaxloss.squared_error(0.5, Y)",
            Same("jaxloss.squared_error(jnp.full(3, 0.5), Y)"),
        ),
        Row(
            "scalar",
            "two scalars",
            "jaxloss.binary_cross_entropy(0.5, 1.0)",
            Same("jaxloss.binary_cross_entropy(jnp.array(0.5), jnp.array(1.0))"),
        ),
        Row("scalar", "scalar mean", "jaxloss.mean(2.0)", Value("2.0")),
        Row(
            "scalar",
            "Python int predictions",
            "jaxloss.mse(1, Y)",
            Raises(TypeError, "jaxloss.mse: predictions must be a real floating-point array; got dtype int32"),
        ),
        Row(
            "scalar",
            "scalar probabilities (no class axis)",
            "jaxloss.entropy(jnp.array(0.5))",
            Raises(
                ValueError,
                "jaxloss.entropy: probabilities must have at least one dimension (the class axis); got a scalar",
            ),
        ),
        Row(
            "scalar",
            "scalar logits (no class axis)",
            "jaxloss.entropy_from_logits(0.5)",
            Raises(
                ValueError,
                "jaxloss.entropy_from_logits: logits must have at least one dimension (the class axis); got a scalar",
            ),
        ),
        Row(
            "scalar",
            "batch of scalars (no example axis)",
            "jaxloss.batch.mse(1.0, 2.0)",
            Raises(
                ValueError,
                "jaxloss.batch.mse: predictions must have a leading example axis (shape [B, ...]); got a scalar",
            ),
        ),
        Row("scalar", "Python list predictions", "jaxloss.mse([0.25, 0.5, 0.75], Y)", Same("jaxloss.mse(P, Y)")),
        Row("scalar", "Python list targets", "jaxloss.mse(P, [0.0, 1.0, 0.5])", Same("jaxloss.mse(P, Y)")),
        Row(
            "scalar",
            "Python list labels",
            "jaxloss.sigmoid_binary_cross_entropy(Z, [0, 1, 1])",
            Same("jaxloss.sigmoid_binary_cross_entropy(Z, jnp.array([0.0, 1.0, 1.0]))"),
        ),
    ]


def empty_rows() -> list[Row]:
    e = "jnp.zeros(0)"
    return [
        Row("empty", "elementwise: empty result", f"jaxloss.squared_error({e}, {e})", Value("jnp.zeros(0)")),
        Row("empty", "elementwise: empty result", f"jaxloss.half_squared_error({e}, {e})", Value("jnp.zeros(0)")),
        Row(
            "empty",
            "elementwise: empty result",
            f"jaxloss.sigmoid_binary_cross_entropy({e}, {e})",
            Value("jnp.zeros(0)"),
        ),
        Row("empty", "elementwise: empty result", f"jaxloss.binary_cross_entropy({e}, {e})", Value("jnp.zeros(0)")),
        Row("empty", "elementwise: empty result", f"jaxloss.binary_entropy({e})", Value("jnp.zeros(0)")),
        Row("empty", "elementwise: empty result", f"jaxloss.binary_entropy_from_logits({e})", Value("jnp.zeros(0)")),
        Row("empty", "mean of nothing is 0", f"jaxloss.mean({e})", Value("0.0")),
        Row("empty", "mean of nothing is 0", f"jaxloss.mse({e}, {e})", Value("0.0")),
        Row("empty", "mean of nothing is 0", f"jaxloss.bce_with_logits({e}, {e})", Value("0.0")),
        Row("empty", "empty class axis: entropy 0", f"jaxloss.entropy({e})", Value("0.0")),
        Row("empty", "empty class axis: entropy 0", f"jaxloss.entropy_from_logits({e})", Value("0.0")),
        Row("empty", "rows with an empty class axis", "jaxloss.entropy(jnp.zeros((2, 0)))", Value("jnp.zeros(2)")),
        Row(
            "empty",
            "rows with an empty class axis",
            "jaxloss.entropy_from_logits(jnp.zeros((2, 0)))",
            Value("jnp.zeros(2)"),
        ),
        Row("empty", "no rows", "jaxloss.entropy(jnp.zeros((0, 3)))", Value("jnp.zeros(0)")),
        Row(
            "empty",
            "gradient of an empty mean",
            "jax.grad(jaxloss.mse)(jnp.zeros(0), jnp.zeros(0))",
            Value("jnp.zeros(0)"),
        ),
    ]


def special_rows() -> list[Row]:
    """NaN and +-inf in every argument: the documented value, and what jaxloss.checked says."""
    rows = []

    def row(case, call, outcome):
        rows.append(Row("NaN/inf", case, call, outcome))

    def checked(fn, call_args, message):
        return f"jaxloss.checked(jaxloss.{fn})({call_args})", Raises(checkify.JaxRuntimeError, message)

    for fn in ("squared_error", "half_squared_error"):
        for v, out in (("nan", "nan"), ("inf", "inf"), ("-inf", "inf")):
            row(f"{v} prediction", f"jaxloss.{fn}(jnp.array([{v}]), jnp.array([0.0]))", Value(f"[{out}]"))
            row(f"{v} target", f"jaxloss.{fn}(jnp.array([0.0]), jnp.array([{v}]))", Value(f"[{out}]"))
        row("inf - inf", f"jaxloss.{fn}(jnp.array([inf]), jnp.array([inf]))", Value("[nan]"))
    row(
        "inf prediction, checked",
        *checked(
            "squared_error",
            "jnp.array([0.0, inf]), jnp.array([0.0, 0.0])",
            "jaxloss.squared_error: predictions must be finite; got predictions[1] = inf",
        ),
    )
    row(
        "NaN target, checked",
        *checked(
            "half_squared_error",
            "jnp.array([0.0, 0.0]), jnp.array([nan, 0.0])",
            "jaxloss.half_squared_error: targets must be finite; got targets[0] = nan",
        ),
    )

    for v, out in (("nan", "nan"), ("inf", "inf"), ("-inf", "inf")):
        row(f"{v} prediction", f"jaxloss.mse(jnp.array([{v}, 0.0]), jnp.array([0.0, 0.0]))", Value(out))
        row(f"{v} target", f"jaxloss.mse(jnp.array([0.0, 0.0]), jnp.array([{v}, 0.0]))", Value(out))
    row("NaN weight", "jaxloss.mse(P, Y, weights=jnp.array([nan, 1.0, 1.0]))", Value("nan"))
    row(
        "inf weight, checked",
        *checked(
            "mse",
            "P, Y, weights=jnp.array([inf, 1.0, 1.0])",
            "jaxloss.mse: weights must be finite and >= 0; got weights[0] = inf",
        ),
    )
    row(
        "-inf weight, checked",
        *checked(
            "mse",
            "P, Y, weights=jnp.array([1.0, -inf, 1.0])",
            "jaxloss.mse: weights must be finite and >= 0; got weights[1] = -inf",
        ),
    )
    row(
        "NaN left out by where",
        "jaxloss.mse(jnp.array([0.25, nan, 0.75]), Y, where=M)",
        Same("jaxloss.mse(P[::2], Y[::2])"),
    )
    row(
        "NaN with weight 0",
        "jaxloss.mse(jnp.array([nan, 0.5, 0.75]), Y, weights=jnp.array([0.0, 1.0, 1.0]))",
        Same("jaxloss.mse(P[1:], Y[1:])"),
    )
    row(
        "NaN prediction, checked",
        *checked(
            "mse",
            "jnp.array([0.0, nan]), jnp.array([0.0, 0.0])",
            "jaxloss.mse: predictions must be finite; got predictions[1] = nan",
        ),
    )

    sbce = "jaxloss.sigmoid_binary_cross_entropy"
    row("NaN logit", f"{sbce}(jnp.array([nan]), jnp.array([1.0]))", Value("[nan]"))
    row("+inf logit, label 1", f"{sbce}(jnp.array([inf]), jnp.array([1.0]))", Value("[0.0]"))
    row("-inf logit, label 0", f"{sbce}(jnp.array([-inf]), jnp.array([0.0]))", Value("[0.0]"))
    row("+inf logit, label 0", f"{sbce}(jnp.array([inf]), jnp.array([0.0]))", Value("[inf]"))
    row("-inf logit, label 1", f"{sbce}(jnp.array([-inf]), jnp.array([1.0]))", Value("[inf]"))
    row(
        "gradient at +-inf",
        f"jax.grad(lambda z: {sbce}(z, jnp.array([1.0, 0.0, 0.0])).sum())(jnp.array([inf, -inf, inf]))",
        Value("[0.0, 0.0, 1.0]"),
    )
    row("NaN label", f"{sbce}(jnp.array([0.0]), jnp.array([nan]))", Value("[nan]"))
    row(
        "+-inf logits, checked (allowed)",
        f"jaxloss.checked({sbce})(jnp.array([inf, -inf]), jnp.array([1.0, 0.0]))",
        Value("[0.0, 0.0]"),
    )
    row(
        "NaN logit, checked",
        *checked(
            "sigmoid_binary_cross_entropy",
            "jnp.array([0.0, nan]), jnp.array([1.0, 1.0])",
            "jaxloss.sigmoid_binary_cross_entropy: logits must not be NaN (-inf and +inf are allowed); "
            "got logits[1] = nan",
        ),
    )
    row(
        "inf label, checked",
        *checked(
            "sigmoid_binary_cross_entropy",
            "jnp.array([0.0, 0.0]), jnp.array([inf, 1.0])",
            "jaxloss.sigmoid_binary_cross_entropy: labels must be in [0, 1]; got labels[0] = inf",
        ),
    )
    row(
        "-inf label, checked",
        *checked(
            "sigmoid_binary_cross_entropy",
            "jnp.array([0.0, 0.0]), jnp.array([1.0, -inf])",
            "jaxloss.sigmoid_binary_cross_entropy: labels must be in [0, 1]; got labels[1] = -inf",
        ),
    )
    row("NaN pos_weight", f"{sbce}(jnp.array([0.0]), jnp.array([1.0]), pos_weight=jnp.array([nan]))", Value("[nan]"))
    row(
        "inf pos_weight, checked",
        *checked(
            "sigmoid_binary_cross_entropy",
            "Z, Y, pos_weight=jnp.array(inf)",
            "jaxloss.sigmoid_binary_cross_entropy: pos_weight must be finite and >= 0; got pos_weight = inf",
        ),
    )
    row(
        "-inf pos_weight (Python)",
        f"{sbce}(Z, Y, pos_weight=-inf)",
        Raises(ValueError, "jaxloss.sigmoid_binary_cross_entropy: pos_weight must be >= 0; got -inf"),
    )
    row(
        "NaN label_smoothing (Python)",
        f"{sbce}(Z, Y, label_smoothing=nan)",
        Raises(ValueError, "jaxloss.sigmoid_binary_cross_entropy: label_smoothing must be [0, 1]; got nan"),
    )
    row(
        "inf label_smoothing (Python)",
        f"{sbce}(Z, Y, label_smoothing=inf)",
        Raises(ValueError, "jaxloss.sigmoid_binary_cross_entropy: label_smoothing must be [0, 1]; got inf"),
    )
    row(
        "NaN label_smoothing (array)",
        f"{sbce}(jnp.array([0.0]), jnp.array([1.0]), label_smoothing=jnp.array(nan))",
        Value("[nan]"),
    )
    row(
        "NaN label_smoothing, checked",
        *checked(
            "sigmoid_binary_cross_entropy",
            "Z, Y, label_smoothing=jnp.array(nan)",
            "jaxloss.sigmoid_binary_cross_entropy: label_smoothing must be in [0, 1]; got label_smoothing = nan",
        ),
    )

    bce = "jaxloss.bce_with_logits"
    row("NaN logit", f"{bce}(jnp.array([nan, 0.0]), jnp.array([1.0, 1.0]))", Value("nan"))
    row("+inf logit, label 1", f"{bce}(jnp.array([inf, inf]), jnp.array([1.0, 1.0]))", Value("0.0"))
    row("+inf logit, label 0", f"{bce}(jnp.array([inf, 0.0]), jnp.array([0.0, 0.0]))", Value("inf"))
    row("NaN label", f"{bce}(jnp.array([0.0, 0.0]), jnp.array([nan, 1.0]))", Value("nan"))
    row("NaN weight", f"{bce}(Z, Y, weights=jnp.array([1.0, nan, 1.0]))", Value("nan"))
    row("NaN left out by where", f"{bce}(jnp.array([-1.0, nan, 2.0]), Y, where=M)", Same(f"{bce}(Z[::2], Y[::2])"))
    row(
        "NaN with weight 0",
        f"{bce}(jnp.array([nan, 0.0, 2.0]), Y, weights=jnp.array([0.0, 1.0, 1.0]))",
        Same(f"{bce}(Z[1:], Y[1:])"),
    )
    row(
        "NaN label, checked",
        *checked(
            "bce_with_logits",
            "Z, jnp.array([0.0, nan, 1.0])",
            "jaxloss.bce_with_logits: labels must be in [0, 1]; got labels[1] = nan",
        ),
    )
    row(
        "inf weight, checked",
        *checked(
            "bce_with_logits",
            "Z, Y, weights=jnp.array([1.0, 1.0, inf])",
            "jaxloss.bce_with_logits: weights must be finite and >= 0; got weights[2] = inf",
        ),
    )

    bcp = "jaxloss.binary_cross_entropy"
    row("NaN probability", f"{bcp}(jnp.array([nan]), jnp.array([1.0]))", Value("[nan]"))
    row("NaN label", f"{bcp}(jnp.array([0.5]), jnp.array([nan]))", Value("[nan]"))
    row("probability 0, label 1", f"{bcp}(jnp.array([0.0]), jnp.array([1.0]))", Value("[inf]"))
    row(
        "inf probability, checked",
        *checked(
            "binary_cross_entropy",
            "jnp.array([0.5, inf]), jnp.array([1.0, 1.0])",
            "jaxloss.binary_cross_entropy: probabilities must be in [0, 1]; got probabilities[1] = inf",
        ),
    )
    row(
        "-inf probability, checked",
        *checked(
            "binary_cross_entropy",
            "jnp.array([-inf, 0.5]), jnp.array([1.0, 1.0])",
            "jaxloss.binary_cross_entropy: probabilities must be in [0, 1]; got probabilities[0] = -inf",
        ),
    )
    row(
        "inf label, checked",
        *checked(
            "binary_cross_entropy",
            "jnp.array([0.5, 0.5]), jnp.array([1.0, inf])",
            "jaxloss.binary_cross_entropy: labels must be in [0, 1]; got labels[1] = inf",
        ),
    )

    row("NaN probability", "jaxloss.binary_entropy(jnp.array([nan]))", Value("[nan]"))
    row(
        "inf probability, checked",
        *checked(
            "binary_entropy",
            "jnp.array([0.5, inf])",
            "jaxloss.binary_entropy: probabilities must be in [0, 1]; got probabilities[1] = inf",
        ),
    )
    row(
        "-inf probability, checked",
        *checked(
            "binary_entropy",
            "jnp.array([-inf, 0.5])",
            "jaxloss.binary_entropy: probabilities must be in [0, 1]; got probabilities[0] = -inf",
        ),
    )
    row("NaN logit", "jaxloss.binary_entropy_from_logits(jnp.array([nan]))", Value("[nan]"))
    row("+-inf logits", "jaxloss.binary_entropy_from_logits(jnp.array([inf, -inf]))", Value("[0.0, 0.0]"))
    row(
        "NaN logit, checked",
        *checked(
            "binary_entropy_from_logits",
            "jnp.array([inf, nan])",
            "jaxloss.binary_entropy_from_logits: logits must not be NaN (-inf and +inf are allowed); "
            "got logits[1] = nan",
        ),
    )

    row(
        "NaN in a row",
        "jaxloss.entropy(jnp.array([[nan, 0.5], [0.5, 0.5]]))",
        Value("[nan, jaxloss.entropy(jnp.array([0.5, 0.5]))]"),
    )
    row("NaN left out by where", "jaxloss.entropy(jnp.array([nan, 1.0]), where=jnp.array([False, True]))", Value("0.0"))
    row(
        "inf probability, checked",
        *checked(
            "entropy",
            "jnp.array([[0.5, 0.5], [inf, 0.0]])",
            "jaxloss.entropy: probabilities must be in [0, 1]; got probabilities[1, 0] = inf",
        ),
    )
    row(
        "-inf probability, checked",
        *checked(
            "entropy",
            "jnp.array([0.5, -inf])",
            "jaxloss.entropy: probabilities must be in [0, 1]; got probabilities[1] = -inf",
        ),
    )

    efl = "jaxloss.entropy_from_logits"
    row("NaN in a row", f"{efl}(jnp.array([[nan, 0.5], [0.0, 0.0]]))", Value(f"[nan, {efl}(jnp.zeros(2))]"))
    row("-inf logit: the class is out", f"{efl}(jnp.array([3.0, -inf, 3.0]))", Same(f"{efl}(jnp.array([3.0, 3.0]))"))
    row("every logit -inf: entropy 0", f"{efl}(jnp.array([-inf, -inf]))", Value("0.0"))
    row("+inf logits share the probability", f"{efl}(jnp.array([inf, 1.0, inf]))", Same(f"{efl}(jnp.zeros(2))"))
    row("NaN left out by where", f"{efl}(jnp.array([1.0, nan, 1.0]), where=M)", Same(f"{efl}(jnp.array([1.0, 1.0]))"))
    row("gradient with a -inf logit", f"jax.grad({efl})(jnp.array([0.0, -inf]))", Value("[0.0, 0.0]"))
    row(
        "NaN logit, checked",
        *checked(
            "entropy_from_logits",
            "jnp.array([[0.0, -inf], [nan, inf]])",
            "jaxloss.entropy_from_logits: logits must not be NaN (-inf and +inf are allowed); got logits[1, 0] = nan",
        ),
    )

    for v, out in (("nan", "nan"), ("inf", "inf"), ("-inf", "-inf")):
        row(f"{v} value", f"jaxloss.mean(jnp.array([{v}, 1.0]))", Value(out))
    row("inf and -inf", "jaxloss.mean(jnp.array([inf, -inf]))", Value("nan"))
    row("NaN weight", "jaxloss.mean(P, weights=jnp.array([nan, 1.0, 1.0]))", Value("nan"))
    row("NaN left out by where", "jaxloss.mean(jnp.array([1.0, nan, 3.0]), where=M)", Value("2.0"))
    row("NaN with weight 0", "jaxloss.mean(jnp.array([nan, 2.0]), weights=jnp.array([0.0, 1.0]))", Value("2.0"))
    row("all weights 0", "jaxloss.mean(P, weights=jnp.zeros(3))", Value("0.0"))
    row(
        "NaN value, checked",
        *checked("mean", "jnp.array([1.0, nan])", "jaxloss.mean: values must not be NaN; got values[1] = nan"),
    )
    row("inf value, checked (allowed)", "jaxloss.checked(jaxloss.mean)(jnp.array([inf, 1.0]))", Value("inf"))
    row(
        "inf weight, checked",
        *checked(
            "mean",
            "P, weights=jnp.array([1.0, inf, 1.0])",
            "jaxloss.mean: weights must be finite and >= 0; got weights[1] = inf",
        ),
    )
    row(
        "negative weight, checked",
        *checked(
            "mean",
            "P, weights=jnp.array([1.0, -1.0, 1.0])",
            "jaxloss.mean: weights must be finite and >= 0; got weights[1] = -1.0",
        ),
    )
    return rows


def option_rows() -> list[Row]:
    rows = []
    for case, call, outcome in (
        (
            "axis past the end",
            "jaxloss.entropy(P, axis=1)",
            Raises(
                ValueError,
                "jaxloss.entropy: axis 1 is out of range for an input of 1 dimension(s); pass an axis in [-1, 0]",
            ),
        ),
        (
            "axis before the start",
            "jaxloss.entropy(P, axis=-2)",
            Raises(
                ValueError,
                "jaxloss.entropy: axis -2 is out of range for an input of 1 dimension(s); pass an axis in [-1, 0]",
            ),
        ),
        (
            "axis past the end (2-d)",
            "jaxloss.entropy_from_logits(R, axis=2)",
            Raises(
                ValueError,
                "jaxloss.entropy_from_logits: axis 2 is out of range for an input of 2 dimension(s); "
                "pass an axis in [-2, 1]",
            ),
        ),
        (
            "axis not an int",
            "jaxloss.entropy(R, axis=1.5)",
            Raises(TypeError, "jaxloss.entropy: axis must be an int; got 1.5"),
        ),
        (
            "axis None",
            "jaxloss.entropy_from_logits(R, axis=None)",
            Raises(TypeError, "jaxloss.entropy_from_logits: axis must be an int; got None"),
        ),
    ):
        rows.append(Row("axis", case, call, outcome))
    for fn in ENTROPIES:
        x = "R" if fn in ("entropy", "entropy_from_logits") else "P"
        for base in ("0", "-2", "1"):
            message = f"jaxloss.{fn}: base must be positive, finite and not 1; got {float(base)!r}"
            rows.append(Row("base", f"base={base}", f"jaxloss.{fn}({x}, base={base})", Raises(ValueError, message)))
    rows += [
        Row(
            "base",
            "base=nan",
            "jaxloss.entropy(R, base=nan)",
            Raises(ValueError, "jaxloss.entropy: base must be positive, finite and not 1; got nan"),
        ),
        Row(
            "base",
            "base=inf",
            "jaxloss.binary_entropy(P, base=inf)",
            Raises(ValueError, "jaxloss.binary_entropy: base must be positive, finite and not 1; got inf"),
        ),
        Row(
            "base",
            "base a string",
            'jaxloss.entropy(R, base="2")',
            Raises(TypeError, "jaxloss.entropy: base must be a real number or None (nats); got '2'"),
        ),
        Row(
            "base",
            "base an array",
            "jaxloss.entropy(R, base=jnp.array(2.0))",
            Raises(TypeError, "jaxloss.entropy: base must be a"),
        ),
        Row("base", "base=2 gives bits", "jaxloss.entropy(jnp.array([0.5, 0.5]), base=2)", Value("1.0")),
    ]
    for fn in ("sigmoid_binary_cross_entropy", "bce_with_logits"):
        rows += [
            Row(
                "pos_weight",
                "negative (Python)",
                f"jaxloss.{fn}(Z, Y, pos_weight=-1.0)",
                Raises(ValueError, f"jaxloss.{fn}: pos_weight must be >= 0; got -1.0"),
            ),
            Row(
                "pos_weight",
                "negative (NumPy scalar)",
                f"jaxloss.{fn}(Z, Y, pos_weight=np.float32(-2))",
                Raises(ValueError, f"jaxloss.{fn}: pos_weight must be >= 0; got np.float32(-2.0)"),
            ),
            Row(
                "pos_weight",
                "negative (array), checked",
                f"jaxloss.checked(jaxloss.{fn})(Z, Y, pos_weight=jnp.array([1.0, -1.0, 1.0]))",
                Raises(
                    checkify.JaxRuntimeError,
                    f"jaxloss.{fn}: pos_weight must be finite and >= 0; got pos_weight[1] = -1.0",
                ),
            ),
            Row(
                "pos_weight",
                "does not broadcast",
                f"jaxloss.{fn}(Z, Y, pos_weight=jnp.ones(2))",
                Raises(ValueError, f"jaxloss.{fn}: pos_weight must broadcast to the loss shape (3,); got shape (2,)"),
            ),
            Row(
                "pos_weight",
                "1 is no weight, bit for bit",
                f"jaxloss.{fn}(Z, Y, pos_weight=1.0)",
                Same(f"jaxloss.{fn}(Z, Y)"),
            ),
            Row(
                "label_smoothing",
                "above 1 (Python)",
                f"jaxloss.{fn}(Z, Y, label_smoothing=1.5)",
                Raises(ValueError, f"jaxloss.{fn}: label_smoothing must be [0, 1]; got 1.5"),
            ),
            Row(
                "label_smoothing",
                "below 0 (Python)",
                f"jaxloss.{fn}(Z, Y, label_smoothing=-0.1)",
                Raises(ValueError, f"jaxloss.{fn}: label_smoothing must be [0, 1]; got -0.1"),
            ),
            Row(
                "label_smoothing",
                "above 1 (array), checked",
                f"jaxloss.checked(jaxloss.{fn})(Z, Y, label_smoothing=jnp.array(1.5))",
                Raises(
                    checkify.JaxRuntimeError,
                    f"jaxloss.{fn}: label_smoothing must be in [0, 1]; got label_smoothing = 1.5",
                ),
            ),
            Row(
                "label_smoothing",
                "array of the wrong shape",
                f"jaxloss.{fn}(Z, Y, label_smoothing=jnp.full(2, 0.1))",
                Raises(ValueError, f"jaxloss.{fn}: label_smoothing must be"),
            ),
            Row(
                "label_smoothing",
                "0 is no smoothing, bit for bit",
                f"jaxloss.{fn}(Z, Y, label_smoothing=0.0)",
                Same(f"jaxloss.{fn}(Z, Y)"),
            ),
        ]
    rows.append(
        Row(
            "pos_weight",
            "negative (Python), batch",
            "jaxloss.batch.bce_with_logits(R, R, pos_weight=-1.0)",
            Raises(ValueError, "jaxloss.batch.bce_with_logits: pos_weight must be >= 0; got -1.0"),
        )
    )
    for fn, call in (
        ("mse", "jaxloss.mse(P, Y, weights={w})"),
        ("bce_with_logits", "jaxloss.bce_with_logits(Z, Y, weights={w})"),
        ("mean", "jaxloss.mean(P, weights={w})"),
    ):
        rows.append(
            Row(
                "weights",
                "(2,) for a (3,) loss",
                call.format(w="jnp.ones(2)"),
                Raises(ValueError, f"jaxloss.{fn}: weights must broadcast to the loss shape (3,); got shape (2,)"),
            )
        )
    rows += [
        Row(
            "weights",
            "(3, 1) for a (3,) loss",
            "jaxloss.mse(P, Y, weights=W[:, None])",
            Raises(ValueError, "jaxloss.mse: weights must broadcast to the loss shape (3,); got shape (3, 1)"),
        ),
        Row(
            "weights",
            "a row of weights broadcasts",
            "jaxloss.mean(R, weights=jnp.array([1.0, 3.0]))",
            Same("jaxloss.mean(R, weights=jnp.array([[1.0, 3.0], [1.0, 3.0]]))"),
        ),
        Row(
            "weights",
            "(3,) for a (2, 2) batch",
            "jaxloss.batch.mse(R, R, weights=W)",
            Raises(ValueError, "jaxloss.batch.mse: weights must broadcast to the loss shape (2, 2); got shape (3,)"),
        ),
    ]
    for fn, call in (
        ("mean", "jaxloss.mean(P, where={m})"),
        ("mse", "jaxloss.mse(P, Y, where={m})"),
        ("bce_with_logits", "jaxloss.bce_with_logits(Z, Y, where={m})"),
        ("entropy", "jaxloss.entropy(P, where={m})"),
        ("entropy_from_logits", "jaxloss.entropy_from_logits(Z, where={m})"),
    ):
        rows.append(
            Row(
                "where",
                "integer mask",
                call.format(m="jnp.array([1, 0, 1])"),
                Raises(TypeError, f"jaxloss.{fn}: where must be a boolean array; got dtype int32"),
            )
        )
    rows += [
        Row(
            "where",
            "float mask",
            "jaxloss.mse(P, Y, where=jnp.array([1.0, 0.0, 1.0]))",
            Raises(TypeError, "jaxloss.mse: where must be a boolean array; got dtype float32"),
        ),
        Row(
            "where",
            "mask of the wrong shape",
            "jaxloss.mean(P, where=jnp.ones(2, bool))",
            Raises(ValueError, "jaxloss.mean: where must broadcast to the shape (3,); got shape (2,)"),
        ),
        Row(
            "where",
            "Python list of bools",
            "jaxloss.mse(P, Y, where=[True, False, True])",
            Same("jaxloss.mse(P, Y, where=M)"),
        ),
        Row("where", "nothing selected: 0", "jaxloss.bce_with_logits(Z, Y, where=jnp.zeros(3, bool))", Value("0.0")),
    ]
    return rows


def overflow_rows() -> list[Row]:
    """Weights near the float32 limit: their sum overflows, their mean must not (issue 13)."""
    big = "jnp.array([1.7e38, 1.7e38, 1.7e38])"
    return [
        Row("weights overflow", "weights sum past float32", f"jaxloss.mean(jnp.array([1.0, 2.0, 3.0]), weights={big})",
            Value("2.0")),
        Row("weights overflow", "weights sum past float32, one 0",
            "jaxloss.mean(jnp.array([1.0, 2.0, 3.0]), weights=jnp.array([1.7e38, 1.7e38, 0.0]))", Near("1.5", 4)),
        Row("weights overflow", "weights 1e36", "jaxloss.bce_with_logits(Z, Y, weights=jnp.full(3, 1e36))", Finite()),
    ]  # fmt: skip


def byte_order_rows() -> list[Row]:
    """A big-endian NumPy array (a ">f4" file read with np.load) is read as its values, by every public function."""
    rows = []
    for arg, call in FIRST.values():
        x = "Z" if arg == "logits" else "P"
        big = f"np.asarray({x}).astype('>f4')"
        rows.append(Row("byte order", "big-endian float32", call.format(x=big), Same(call.format(x=x))))
    rows.append(
        Row("byte order", "big-endian labels", "jaxloss.bce_with_logits(Z, np.asarray(Y).astype('>f8'))",
            Same("jaxloss.bce_with_logits(Z, Y)"))
    )  # fmt: skip
    return rows


def cli_rows() -> list[Row]:
    """``jaxloss eval`` on bad files and options: refused in one line (exit 2), or the right result (issue 13)."""
    bce = "jaxloss eval --loss bce-logits"
    same = "--json {0} is the input PRED z.npy (the same file)"
    labels = "jaxloss eval: error: TARGETS {0}: labels must be in [0, 1]; "
    rows = [
        ("--json names an input", f"{bce} z.npy y.npy --json=z.npy",
         Refused("jaxloss eval: error: " + same.format("z.npy"))),
        ("--json is a symlink to an input", f"{bce} z.npy y.npy --json=link.npy",
         Refused("jaxloss eval: error: " + same.format("link.npy"))),
        ("--json is a hard link to an input", f"{bce} z.npy y.npy --json=hard.npy",
         Refused("jaxloss eval: error: " + same.format("hard.npy"))),
        ("labels saved as 0/255", f"{bce} z.npy y255.npy", Refused(labels.format("y255.npy"))),
        ("labels times 2", f"{bce} z.npy y2.npy", Refused(labels.format("y2.npy"))),
        ("labels 0/255, --no-check", f"{bce} z.npy y255.npy --no-check --json",
         Output((("checks", "off"),))),
        ("probabilities outside [0, 1]", "jaxloss eval --loss bce z.npy y.npy",
         Refused("jaxloss eval: error: PRED z.npy: probabilities must be in [0, 1]; ")),
        ("weights all -1", f"{bce} z.npy y.npy --weights neg.npy",
         Refused("jaxloss eval: error: --weights neg.npy: weights must be finite and >= 0; 1,000 values fail, "
                 "the first in row 0: weights[0] = -1.0")),
        ("weights all 1e36", f"{bce} z.npy y.npy --weights big.npy --json",
         Output((("value", "finite"), ("", f"within 8 float32 eps of `{bce} z.npy y.npy --json`")))),
        ("a row wider than --max-memory", "jaxloss eval --loss entropy-logits wide.npz:logits --max-memory 16M",
         Refused("jaxloss eval: error: one row of the inputs takes 8,000,000 bytes")),
        ("an infinite loss, --json", f"{bce} zinf.npy y.npy --json",
         Output((("value", None), ("value_nonfinite", "inf")))),
        ("big-endian >f4 logits", f"{bce} z_be.npy y.npy --json",
         Output((("", f"same as `{bce} z.npy y.npy --json`"),))),
        ("killed (SIGKILL) while writing --json", f"{bce} z.npy y.npy --json=out.json",
         ProvenBy("tests/test_cli.py::test_subprocess_sigkill_mid_write_leaves_no_partial_output",
                  "out.json is absent (or its old content) or complete")),
        ("damaged .npy / .npz headers and data", f"{bce} DAMAGED.npy y.npy --json",
         ProvenBy("tests/test_fuzz.py", "exit 0 with the correct value, or exit 2 with one line; no traceback")),
    ]  # fmt: skip
    return [Row("command line", case, call, outcome) for case, call, outcome in rows]


def categorical_rows() -> list[Row]:
    """The categorical losses (issue 14): class indices against distributions, the class axis, the row and class
    masks, the mesh axes, and the value checks of jaxloss.checked."""
    ice, soft, mean = (
        "jaxloss.softmax_cross_entropy_with_integer_labels",
        "jaxloss.softmax_cross_entropy",
        "jaxloss.ce_with_logits",
    )
    kl, ce, rel = "jaxloss.kl_divergence_from_logits", "jaxloss.cross_entropy", "jaxloss.relative_entropy"
    checked = checkify.JaxRuntimeError
    outside = (
        "names no mapped axis here (it names the mesh axis {} are split over, inside jax.shard_map); got it outside"
    )
    rows = [
        # class indices and distributions
        ("labels", "float labels to the integer form", f"{ice}(R, jnp.array([1.0, 0.0]))",
         Raises(TypeError, f"{ice}: labels must be integer class indices; got dtype float32. Pass "
                           "labels.astype(jnp.int32), or jaxloss.softmax_cross_entropy for one distribution per row")),
        ("labels", "boolean labels to the integer form", f"{ice}(R, jnp.array([True, False]))",
         Raises(TypeError, f"{ice}: labels must be integer class indices; got dtype bool")),
        ("labels", "boolean labels to ce_with_logits", f"{mean}(R, jnp.array([True, False]))",
         Raises(TypeError, "jaxloss.ce_with_logits: labels of dtype bool are ambiguous (class indices or a "
                           "distribution?); got bool. Pass integer class indices")),
        ("labels", "integer labels to ce_with_logits: indices", f"{mean}(R, K)", Same(f"jnp.mean({ice}(R, K))")),
        ("labels", "float labels to ce_with_logits: distributions", f"{mean}(R, jax.nn.one_hot(K, 2))",
         Same(f"{mean}(R, K)")),
        ("labels", "text labels", f'{mean}(R, np.array(["1", "0"]))',
         Raises(TypeError, "jaxloss.ce_with_logits: labels must be a real numeric array (float, int or bool); got "
                           "dtype str32")),
        ("labels", "a string", f'{ice}(R, "1")',
         Raises(TypeError, f"{ice}: labels must be a real numeric array; got str")),
        ("labels", "integer target logits", f"{kl}(R, K[:, None] + 0 * K)",
         Raises(TypeError, "jaxloss.kl_divergence_from_logits: target_logits must be a real floating-point array; "
                           "got dtype int32")),
        ("labels", "integer targets (accepted, promoted)", f"{ce}(R, jnp.array([[0, 1], [1, 0]]))",
         Same(f"{ce}(R, jnp.array([[0.0, 1.0], [1.0, 0.0]]))")),
        ("labels", "a label outside [0, C): NaN, never a gathered value", f"{ice}(R, jnp.array([2, 0]))",
         Same(f"jnp.array([nan, float({ice}(R, K)[1])])")),
        ("labels", "a negative label (padding -100): NaN", f"{ice}(R, jnp.array([1, -100]))",
         Same(f"jnp.array([float({ice}(R, K)[0]), nan])")),
        ("labels", "padding left out of the mean by where",
         f"{mean}(R, jnp.array([1, -100]), where=jnp.array([True, False]))",
         Same(f"{ice}(R, K)[0]")),
        # shapes
        ("shape", "class indices to the distribution form", f"{soft}(R, K)",
         Raises(ValueError, "jaxloss.softmax_cross_entropy: labels must have the shape of logits (2, 2) (one "
                            "distribution per row, no broadcasting); got (2,). For class indices use "
                            "jaxloss.softmax_cross_entropy_with_integer_labels")),
        ("shape", "one index too many", f"{ice}(R, jnp.array([1, 0, 1]))",
         Raises(ValueError, f"{ice}: labels must have the shape of logits without the class axis 1, (2,); got "
                            "(3,). Pass one class index per row")),
        ("shape", "one-hot labels to the integer form", f"{ice}(R, jnp.eye(2, dtype=jnp.int32))",
         Raises(ValueError, f"{ice}: labels must have the shape of logits without the class axis 1, (2,); got "
                            "(2, 2)")),
        ("shape", "a distribution per row of the wrong width", f"{mean}(R, R[:, :1])",
         Raises(ValueError, "jaxloss.ce_with_logits: labels must have the shape of logits (2, 2)")),
        ("shape", "(2, 2) against (2, 1)", f"{kl}(R, R[:, :1])",
         Raises(ValueError, "jaxloss.kl_divergence_from_logits: logits and target_logits must have the same shape "
                            "(no broadcasting); got (2, 2) and (2, 1)")),
        ("shape", "(2, 2) against (2,)", f"{rel}(R, R[0])",
         Raises(ValueError, "jaxloss.relative_entropy: probabilities and reference must have the same shape (no "
                            "broadcasting); got (2, 2) and (2,)")),
        ("shape", "scalar logits (no class axis)", f"{ice}(1.0, 0)",
         Raises(ValueError, f"{ice}: logits must have at least one dimension (the class axis); got a scalar")),
        ("shape", "a scalar stands for a whole array", f"{kl}(R, 0.0)", Same(f"{kl}(R, jnp.zeros((2, 2)))")),
        ("shape", "one row: a vector of classes", f"{ice}(Z, 2)", Same(f"{ice}(Z[None], jnp.array([2]))[0]")),
        ("shape", "an empty class axis: every label out of range", f"{ice}(jnp.zeros((2, 0)), K)",
         Value("jnp.array([nan, nan])")),
        ("shape", "no rows", f"{mean}(jnp.zeros((0, 3)), jnp.zeros(0, jnp.int32))", Value("0.0")),
        # the two masks of ce_with_logits: rows (where, weights) and classes (-inf logits)
        ("masks", "ce_with_logits: where per class", f"{mean}(R, K, where=R > 0.5)",
         Raises(ValueError, "jaxloss.ce_with_logits: where must broadcast to the shape (2,); got shape (2, 2)")),
        ("masks", "ce_with_logits: weights per class", f"{mean}(R, K, weights=R)",
         Raises(ValueError, "jaxloss.ce_with_logits: weights must broadcast to the loss shape (2,); got shape (2, 2)")),
        ("masks", "ce_with_logits: a class left out by a -inf logit",
         f"{mean}(jnp.array([[0.0, -inf]]), jnp.array([0]))",
         Value("0.0")),
        ("masks", "per-row form: where per row", f"{soft}(R, R, where=jnp.array([True, False, True]))",
         Raises(ValueError, "jaxloss.softmax_cross_entropy: where must broadcast to the shape (2, 2); got shape (3,)")),
        ("masks", "a label on a class left out: +inf, never NaN", f"{ice}(R, K, where=jnp.array([True, False]))",
         Value("jnp.array([inf, 0.0])")),
        ("masks", "every class left out: 0", f"{soft}(jnp.full(2, -inf), jnp.array([0.0, 0.0]))", Value("0.0")),
        ("masks", "NaN logit in a row left out is never read",
         f"{mean}(R.at[1, 0].set(nan), K, weights=jnp.array([1.0, 0.0]))",
         Same(f"{ice}(R, K)[0]")),
        ("masks", "NaN logit of a selected row", f"{ice}(R.at[1, 0].set(nan), K)",
         Same(f"jnp.array([float({ice}(R, K)[0]), nan])")),
        # options
        ("options", "axis an array", f"{soft}(R, R, axis=jnp.array(0))",
         Raises(TypeError, "jaxloss.softmax_cross_entropy: axis must be a Python number (it is a compile-time "
                           "option); got an array. Pass e.g. axis=-1")),
        ("options", "axis out of range", f"{ice}(R, K, axis=2)",
         Raises(ValueError, f"{ice}: axis 2 is out of range for an input of 2 dimension(s); pass an axis in "
                            "[-2, 1]")),
        ("options", "class axis 0: one index per column", f"{ice}(R.T, K, axis=0, implementation='xla')",
         Same(f"{ice}(R, K, implementation='xla')")),
        ("options", "base an array", f"{kl}(R, R, base=jnp.array(2.0))",
         Raises(TypeError, "jaxloss.kl_divergence_from_logits: base must be a Python number (it is a compile-time "
                           "option); got an array. Pass e.g. base=2")),
        ("options", "base=1", f"{ce}(R, R, base=1)",
         Raises(ValueError, "jaxloss.cross_entropy: base must be positive, finite and not 1; got 1.0")),
        ("options", "label_smoothing=1.5", f"{mean}(R, K, label_smoothing=1.5)",
         Raises(ValueError, "jaxloss.ce_with_logits: label_smoothing must be [0, 1]; got 1.5")),
        ("options", "label_smoothing per row", f"{ice}(R, K, label_smoothing=jnp.array([0.1, 0.2]))",
         Raises(ValueError, f"{ice}: label_smoothing must be a scalar in [0, 1]; got shape (2,). Pass one "
                            "number")),
        ("options", "label_smoothing=0 is none, bit for bit", f"{soft}(R, R, label_smoothing=0.0)",
         Same(f"{soft}(R, R)")),
        ("options", "implementation an array", f"{mean}(R, K, implementation=jnp.array(1))",
         Raises(TypeError, "jaxloss.ce_with_logits: implementation must be a string or None (it is a compile-time "
                           "option); got an array. Pass e.g. implementation='xla'")),
        ("options", "implementation unknown", f"{ice}(R, K, implementation='gpu')",
         Raises(ValueError, f"{ice}: implementation must be None (the best available) or one of")),
        ("options", "weights given to a per-row form", f"{soft}(R, R, weights=W)",
         Raises(TypeError, "jaxloss.softmax_cross_entropy: got an unexpected keyword argument 'weights'; its "
                           "arguments are logits, labels, axis, where, label_smoothing, class_axis_name")),
        # the mesh axes
        ("mesh axes", "class_axis_name an array", f"{soft}(R, R, class_axis_name=jnp.array(1))",
         Raises(TypeError, "jaxloss.softmax_cross_entropy: class_axis_name must be a mesh axis name (it is a "
                           "compile-time option); got an array. Pass e.g. class_axis_name='model'")),
        ("mesh axes", "class_axis_name a list (unhashable)", f"{mean}(R, K, class_axis_name=['model'])",
         Raises(TypeError, "jaxloss.ce_with_logits: class_axis_name must be a mesh axis name (it is a compile-time "
                           "option, so hashable); got list ['model']")),
        ("mesh axes", "class_axis_name outside shard_map", f"{soft}(R, R, class_axis_name='model')",
         Raises(ValueError, "jaxloss.softmax_cross_entropy: class_axis_name='model' " + outside.format("the classes"))),
        ("mesh axes", "class_axis_name outside shard_map", f"{ice}(R, K, class_axis_name='model')",
         Raises(ValueError, f"{ice}: class_axis_name='model' " + outside.format("the classes"))),
        ("mesh axes", "class_axis_name outside shard_map", f"{kl}(R, R, class_axis_name='model')",
         Raises(ValueError, "jaxloss.kl_divergence_from_logits: class_axis_name='model' "
                            + outside.format("the classes"))),
        ("mesh axes", "class_axis_name outside shard_map", f"{mean}(R, R, class_axis_name='model')",
         Raises(ValueError, "jaxloss.ce_with_logits: class_axis_name='model' " + outside.format("the classes"))),
        ("mesh axes", "axis_name outside shard_map", f"{mean}(R, K, axis_name='batch')",
         Raises(ValueError, "jaxloss.ce_with_logits: axis_name='batch' " + outside.format("the rows"))),
        ("mesh axes", "implementation='cpu' with class_axis_name",
         f"{ice}(R, K, implementation='cpu', class_axis_name='model')",
         Raises(ValueError, f"{ice}: implementation='cpu' cannot run with class_axis_name (the class axis split "
                            "over devices needs collectives, which only the 'xla' path has). Pass "
                            "implementation=None")),
        ("mesh axes", "implementation='cpu' with class_axis_name",
         f"{mean}(R, K, implementation='cpu', class_axis_name='model')",
         Raises(ValueError, "jaxloss.ce_with_logits: implementation='cpu' cannot run with class_axis_name")),
        # jaxloss.checked
        ("checked", "a label outside [0, C)", f"jaxloss.checked({ice})(R, jnp.array([1, 2]))",
         Raises(checked, f"{ice}: labels must be class indices in [0, 2) (logits has 2 classes along axis -1); "
                         "got labels[1] = 2 (1 of 2 entries offending). Fix the labels upstream")),
        ("checked", "padding (-100) not left out", f"jaxloss.checked({mean})(R, jnp.array([1, -100]))",
         Raises(checked, "jaxloss.ce_with_logits: labels must be class indices in [0, 2) (logits has 2 classes along "
                         "axis -1); got labels[1] = -100 (1 of 2 entries offending)")),
        ("checked", "padding left out: not checked",
         f"jaxloss.checked({mean})(R, jnp.array([1, -100]), where=jnp.array([True, False]))",
         Same(f"{ice}(R, K)[0]")),
        ("checked", "a distribution label above 1", f"jaxloss.checked({soft})(R, R * 2)",
         Raises(checked, "jaxloss.softmax_cross_entropy: labels must be in [0, 1]; got labels[1, 0] = 1.8 (1 of 4")),
        ("checked", "a target above 1", f"jaxloss.checked({ce})(R, R * 2)",
         Raises(checked, "jaxloss.cross_entropy: targets must be in [0, 1]; got targets[1, 0] = 1.8 (1 of 4 entries "
                         "offending). Pass a target distribution")),
        ("checked", "probabilities that do not sum to 1", f"jaxloss.checked({ce})(R * 0.5, R)",
         Raises(checked, "jaxloss.cross_entropy: probabilities must sum to 1 along axis -1 (within 4 ulp per class, "
                         "9.54e-07 for 2 classes); got row [0] summing to 0.5 (2 of 2 rows off)")),
        ("checked", "a reference that does not sum to 1", f"jaxloss.checked({rel})(R, R.at[0, 0].set(0.25))",
         Raises(checked, "jaxloss.relative_entropy: reference must sum to 1 along axis -1")),
        ("checked", "a NaN target logit", f"jaxloss.checked({kl})(R, R.at[0, 1].set(nan))",
         Raises(checked, "jaxloss.kl_divergence_from_logits: target_logits must not be NaN (-inf and +inf are "
                         "allowed); got target_logits[0, 1] = nan")),
    ]  # fmt: skip
    return [Row(category, case, call, outcome) for category, case, call, outcome in rows]


def categorical_cli_rows() -> list[Row]:
    ce = "jaxloss eval --loss ce-logits"
    rows = [
        ("integer labels: class indices", f"{ce} zc.npy k.npy --json", Output((("value", "finite"), ("count", 1000)))),
        ("a class index out of range", f"{ce} zc.npy k4.npy",
         Refused("jaxloss eval: error: TARGETS k4.npy: labels must be class indices in [0, 4) (PRED has 4 classes "
                 "along axis -1); 1 value fails, the first in row 500: labels[500] = 4.")),
        ("padding (-100) without --where", f"{ce} zc.npy kpad.npy",
         Refused("jaxloss eval: error: TARGETS kpad.npy: labels must be class indices in [0, 4)")),
        ("padding left out with --where", f"{ce} zc.npy kpad.npy --where keep.npy --json",
         Output((("value", "finite"), ("count", 900)))),
        ("class indices saved as floats", f"{ce} zc.npy kf.npy",
         Refused("jaxloss eval: error: PRED and TARGETS must have the same shape; got (1000, 4) and (1000,) (class "
                 "indices, one per row, must be saved as integers; got float32)")),
        ("integer target logits", "jaxloss eval --loss kl-logits zc.npy k.npy",
         Refused("jaxloss eval: error: TARGETS k.npy: dtype int32 is not allowed here; expected floating-point "
                 "target_logits")),
        ("a vector of logits (no class axis)", f"{ce} z.npy k.npy",
         Refused("jaxloss eval: error: --loss ce-logits needs a class axis other than the row axis 0")),
    ]  # fmt: skip
    return [Row("command line", case, call, outcome) for case, call, outcome in rows]


ROWS: list[Row] = (
    dtype_rows()
    + shape_rows()
    + scalar_rows()
    + empty_rows()
    + special_rows()
    + option_rows()
    + overflow_rows()
    + byte_order_rows()
    + categorical_rows()
    + cli_rows()
    + categorical_cli_rows()
)


# --------------------------------------------------------------------------- the test


def row_id(row: Row) -> str:
    return f"{row.category}: {row.case}: {row.call}"


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs_cli")
    previous = os.getcwd()
    os.chdir(d)
    try:
        exec(CLI_SETUP, {"np": np, "os": os})  # the rendered page shows exactly this
    finally:
        os.chdir(previous)
    return d


def run_cli(command: str, directory: pathlib.Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(directory)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(shlex.split(command)[1:])
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


def check_command(row: Row, directory: pathlib.Path) -> None:
    code, out, err = run_cli(row.call, directory)
    outcome = row.outcome
    if isinstance(outcome, Refused):
        lines = err.splitlines()
        assert (code, out) == (2, ""), (code, out, err)
        assert [line for line in lines if "error:" in line] == lines[-1:], err  # one error line, the last
        assert all(line.startswith("jaxloss eval: ") for line in lines), err  # progress lines at most before it
        assert lines[-1].startswith(outcome.message), f"{lines[-1]!r} does not start with {outcome.message!r}"
        return
    assert code == 0, err
    report = json.loads(out, parse_constant=lambda c: pytest.fail(f"not standard JSON: {c}"))
    for key, want in outcome.fields:
        if not key:  # "same as <command>" (bit for bit) or "within 8 float32 eps of <command>"
            other = json.loads(run_cli(str(want).split("`")[1], directory)[1])
            # Equal weights: the weighted mean rounds differently from the plain one, by a few ulp of the float32
            # totals (both compensated); 8 eps, as for the streamed means in tests/test_cli.py.
            rel = 0.0 if str(want).startswith("same as") else 8 * float(np.finfo(np.float32).eps)
            assert math.isclose(report["value"], other["value"], rel_tol=rel), (report, other)
        elif want == "finite":
            assert isinstance(report[key], float) and math.isfinite(report[key]), report
        else:
            assert report[key] == want, report


@pytest.mark.parametrize("row", [pytest.param(row, id=row_id(row)) for row in ROWS])
def test_row(row: Row, request):
    outcome = row.outcome
    if isinstance(outcome, ProvenBy):
        path, _, name = outcome.test.partition("::")
        text = (DOC.parent.parent / path).read_text()  # the proving test exists (it runs in its own file)
        assert not name or f"def {name}(" in text, f"{outcome.test} does not exist"
        return
    if row.call.startswith("jaxloss "):
        check_command(row, request.getfixturevalue("cli_dir"))
        return
    ns = namespace()
    if isinstance(outcome, Finite):
        got = np.asarray(eval(row.call, ns))
        assert got.dtype == np.float32 and np.isfinite(got).all(), got
        return
    if isinstance(outcome, Near):
        got = np.asarray(eval(row.call, ns))
        want = float(eval(outcome.expected, ns))
        assert got.dtype == np.float32 and abs(float(got) - want) <= outcome.ulps * float(np.spacing(np.float32(want)))
        return
    if isinstance(outcome, Raises):
        with pytest.raises(outcome.error) as info:
            eval(row.call, ns)
        message = str(info.value)
        assert message.startswith(outcome.message), f"{message!r} does not start with {outcome.message!r}"
        return
    got = np.asarray(eval(row.call, ns))
    assert got.dtype == np.float32
    if isinstance(outcome, Value):
        want = np.asarray(eval(outcome.expected, ns), np.float32)
    else:
        want = np.asarray(eval(outcome.other, ns))
    np.testing.assert_array_equal(got, want, strict=True)  # bit for bit, NaN included; same shape and dtype


def test_every_public_function_has_rows():
    functions = {name for name in _api.DECLARED if not name.startswith("batch.")}  # every declared public loss
    called = {name for name in functions if any(f"jaxloss.{name}(" in row.call for row in ROWS)}
    assert called == functions


def test_raised_messages_name_the_function_and_the_argument():
    arguments = ("predictions", "targets", "logits", "labels", "probabilities", "values", "weights", "where")
    arguments += ("target_logits", "reference")
    options = ("pos_weight", "label_smoothing", "axis", "base", "axis_name", "class_axis_name", "implementation")
    for row in ROWS:
        if isinstance(row.outcome, Raises):
            assert re.match(r"jaxloss\.(batch\.)?\w+: ", row.outcome.message), row
            assert any(name in row.outcome.message for name in arguments + options), row


# --------------------------------------------------------------------------- the rendered page


def render() -> str:
    lines = [
        "# What jaxloss does with bad input",
        "",
        "<!-- Generated from the table in tests/test_bad_inputs.py by `python tests/test_bad_inputs.py`. -->",
        "",
        "Every row is a test (`tests/test_bad_inputs.py`): the call, and the documented outcome — an exception",
        "whose message starts as shown (naming the function and the argument), a value, or the same result as",
        "another call. Value checks (labels in [0, 1], no NaN, ...) cost nothing unless you ask for them with",
        "`jaxloss.checked(fn)`, which raises `jax.experimental.checkify.JaxRuntimeError` (a `ValueError`) naming",
        "the first offending index and value.",
        "",
        "The calls use:",
        "",
        "```python",
        SETUP,
        "```",
        "",
        f"{len(ROWS)} rows.",
    ]
    category = None
    for number, row in enumerate(ROWS, 1):
        if row.category != category:
            category = row.category
            lines += ["", f"## {category}", ""]
            if category == "command line":
                lines += [
                    "Each command runs in a directory holding the files this writes (with the setup above, and `os`):",
                    "",
                    "```python",
                    CLI_SETUP,
                    "```",
                    "",
                    "`exit 2`: nothing on stdout; on stderr one error line (after progress lines at most), starting as",
                    "shown. `exit 0`: the `--json` object holds the fields shown (standard JSON: no NaN or Infinity).",
                    "",
                ]
            lines += ["| # | case | call | outcome |", "|---|---|---|---|"]
        outcome = row.outcome.render().replace("|", "\\|")
        call = row.call.replace("|", "\\|")
        lines.append(f"| {number} | {row.case} | `{call}` | {outcome} |")
    return "\n".join(lines).rstrip("\n") + "\n"


def test_the_rendered_matrix_is_up_to_date():
    assert DOC.exists(), "docs/bad_inputs.md is missing: run `python tests/test_bad_inputs.py`"
    assert DOC.read_text() == render(), "docs/bad_inputs.md is stale: run `python tests/test_bad_inputs.py`"


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render())
    print(f"wrote {DOC} ({len(ROWS)} rows)", file=sys.stderr)
