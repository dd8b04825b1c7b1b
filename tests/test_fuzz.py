"""Fuzzing ``jaxloss eval`` with damaged .npy / .npz files: every case is a correct result or one line and exit 2.

Each case takes a valid pair of files (logits, labels), damages one of them with a seeded mutation — a byte
changed in the header or the data, a truncation, a changed header length, an edited shape or dtype, a byte
changed anywhere in a zip archive — and runs ``jaxloss eval --loss bce-logits`` on it, in this process
(``jaxloss.cli.main``; a Python start with JAX costs ~2 s). The outcome must be one of:

* exit 0 with the correct value: the mean that a float64 reference computes from the file as NumPy reads it
  (``np.load``; for a zip member whose checksum no longer matches, as zipfile reads it without the check), cast
  to the dtype JAX computes in, to within ``REL``; and when NumPy reads the file as valid input (float logits,
  numeric labels in [0, 1], equal shapes), exit 0 is required, not merely allowed;
* exit 2 with one error line on stderr (after progress lines at most) and no traceback.

The CI run takes ``CI_CASES`` cases; ``JAXLOSS_FUZZ_LONG=1`` also runs the ``fuzz_long`` test (``LONG_CASES``,
a few minutes). A few cases run as real ``python -m jaxloss eval`` subprocesses.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import traceback
import warnings
import zipfile
from unittest import mock

import jax
import numpy as np
import pytest

from jaxloss import cli

F32 = np.float32
# bce is computed per element in float32 to a few ulp (the closed form has no cancellation), and the mean is
# compensated: the streamed float32 mean lands within a few ulp of the float64 mean of the same float32 inputs.
REL = 8 * float(np.finfo(F32).eps)
N = 48
CI_CASES = 300
LONG_CASES = 10_000
DTYPES = ["<f8", ">f4", ">f8", "<f2", "<i4", "|u1", "|b1", "<c8", "|O", "<U1", "<M8[s]", "|V4", "<i8", "|S4", "f4",
          "<f4 ", "(<f4, 2)", "[('a', '<f4')]", "'<f4'", "<f16", "<x4", ""]  # fmt: skip
SHAPES = ["(47,)", "(49,)", "(0,)", "()", "(-1,)", "(48, 1)", "(24, 2)", "(2**40,)", "(4.8,)", "(48,48)", "[48]",
          "(48L,)", "(9999999999999999999,)", "(0, 9999999999999999999)", "(1,)", "(48,) "]  # fmt: skip
FAMILIES = ("header byte", "data byte", "truncate", "header length", "shape", "dtype", "fortran", "version",
            "zip byte", "zip truncate")  # fmt: skip


def npy_bytes(x: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, x)
    return f.getvalue()


def header_end(raw: bytes) -> int:
    """Where the data of a valid version 1.0 .npy starts."""
    return 10 + int.from_bytes(raw[8:10], "little")


def edit_header(raw: bytes, old: str, new: str) -> bytes:
    """Replace ``old`` by ``new`` in the header, keeping the header length field as it was when the header still
    fits (so that the data moves, or not, as a sloppy writer would do it), else fixing it."""
    end = header_end(raw)
    header = raw[10:end].decode("latin1")
    if old not in header:
        return raw
    header = header.replace(old, new, 1)
    body = header.rstrip("\n ").encode("latin1")
    length = end - 10
    if len(body) + 1 <= length:
        body = body + b" " * (length - len(body) - 1) + b"\n"
    else:
        length = len(body) + 1
        body += b"\n"
    return raw[:8] + length.to_bytes(2, "little") + body + raw[end:]


def mutate_npy(rng: np.random.Generator, raw: bytes, family: str) -> bytes:
    b = bytearray(raw)
    end = header_end(raw)
    if family == "header byte":
        b[int(rng.integers(0, end))] = int(rng.integers(0, 256))
    elif family == "data byte":
        b[int(rng.integers(end, len(b)))] = int(rng.integers(0, 256))
    elif family == "truncate":
        return bytes(b[: int(rng.integers(0, len(b)))])
    elif family == "header length":
        length = int.from_bytes(raw[8:10], "little")
        new = int(
            rng.choice([0, 1, length - 16, length - 1, length + 1, length + 16, 65535, int(rng.integers(0, 200))])
        )
        b[8:10] = max(new, 0).to_bytes(2, "little")
    elif family == "shape":
        return edit_header(raw, f"({N},)", str(rng.choice(SHAPES)))
    elif family == "dtype":
        return edit_header(raw, "'<f4'", repr(str(rng.choice(DTYPES))) if rng.random() < 0.7 else rng.choice(DTYPES))
    elif family == "fortran":
        return edit_header(raw, "False", str(rng.choice(["True", "1", "None", "'False'", "Fals"])))
    elif family == "version":
        b[6], b[7] = int(rng.integers(0, 5)), int(rng.integers(0, 3))
    return bytes(b)


def mutate(rng: np.random.Generator, x: np.ndarray, container: str, family: str) -> bytes:
    """The bytes of the file holding ``x`` (.npy, or .npz member "a"), damaged by one mutation of ``family``."""
    raw = npy_bytes(x)
    if container == "npy":
        return mutate_npy(rng, raw, "header byte" if family.startswith("zip") else family)
    member = raw if family.startswith("zip") else mutate_npy(rng, raw, family)
    f = io.BytesIO()
    method = zipfile.ZIP_STORED if container == "npz stored" else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(f, "w", method) as archive:
        archive.writestr("a.npy", member)
    z = bytearray(f.getvalue())
    if family == "zip byte":
        z[int(rng.integers(0, len(z)))] = int(rng.integers(0, 256))
    elif family == "zip truncate":
        z = z[: int(rng.integers(0, len(z)))]
    return bytes(z)


def load(path: str, *, check_crc: bool = True):
    """The array as NumPy reads the file (no pickles), or None when it cannot."""
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore")
            if not check_crc:
                stack.enter_context(mock.patch.object(zipfile.ZipExtFile, "_update_crc", lambda self, data: None))
            f = stack.enter_context(open(path, "rb"))  # closed on every path (np.load leaks it on some errors)
            if path.endswith(".npz"):
                with np.load(f, allow_pickle=False) as archive:
                    x = archive["a"]
            else:
                x = np.load(f, allow_pickle=False)
            return x if isinstance(x, np.ndarray) else None  # (np.load gives what is not .npy to pickle, or bytes)
    except Exception:
        return None


def device_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype.newbyteorder("=")))


def flush_subnormals(x: np.ndarray) -> np.ndarray:
    """XLA on a CPU computes float32 with subnormals flushed to zero (a label of -1e-40 is -0, hence valid)."""
    if x.dtype != np.float32:
        return x
    return np.where(np.abs(x) < np.finfo(x.dtype).tiny, x * 0, x)


def reference(z, y) -> tuple[str, float | None]:
    """("accept", mean) when the arrays are valid input, ("refuse", None) when eval must refuse them."""
    if z is None or y is None or z.dtype.kind != "f" or y.dtype.kind not in "fiub" or z.shape != y.shape:
        return "refuse", None
    if z.ndim == 0 or z.shape[0] == 0:
        return "refuse", None
    with np.errstate(over="ignore", invalid="ignore"):
        z, y = (flush_subnormals(x.astype(device_dtype(x.dtype))).astype(np.float64) for x in (z, y))
    if not np.all((y >= 0) & (y <= 1)):
        return "refuse", None
    with np.errstate(over="ignore", invalid="ignore"):
        # softplus(z) - y z = (1 - y) softplus(z) + y softplus(-z), with the exact limits at labels 0 and 1
        mixed = (1 - y) * np.logaddexp(0, z) + y * np.logaddexp(0, -z)
        bce = np.where(y == 0, np.logaddexp(0, z), np.where(y == 1, np.logaddexp(0, -z), mixed))
        if np.isnan(bce).any():
            return "accept", math.nan
        return "accept", float(np.mean(bce)) if np.isinf(bce).any() else math.fsum(bce.ravel()) / bce.size


def run_inprocess(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except BaseException:  # a traceback is an outcome of its own
            return -1, out.getvalue(), err.getvalue() + traceback.format_exc()
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> bool:
    lines = err.splitlines()
    return (
        bool(lines)
        and "Traceback" not in err
        and lines[-1].startswith("jaxloss eval: error: ")
        and all(line.startswith("jaxloss eval: ") and "error:" not in line for line in lines[:-1])
    )


def classify(code: int, out: str, err: str, expected: tuple[str, float | None], lenient) -> str:
    if code == 2 and out == "" and one_error_line(err):
        return "exit 2, one line" if expected[0] == "refuse" else "other: refused valid input"
    if code != 0:
        return "other: exit code or stderr"
    value = json.loads(out)
    got = value["value"]
    if got is None:
        got = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}[value["value_nonfinite"]]
    for kind, want in (expected, lenient):
        if kind != "accept":
            continue
        if (math.isnan(want) and math.isnan(got)) or got == want or math.isclose(got, want, rel_tol=REL):
            return "exit 0, correct"
    return "other: wrong value"


def make_case(rng: np.random.Generator, tmp, container: str | None = None) -> tuple[list[str], tuple, tuple, str]:
    z = (rng.normal(size=N) * 3).astype(F32)
    y = (rng.random(N) < 0.5).astype(F32)
    if rng.random() < 0.3:
        y = rng.random(N).astype(F32)  # soft labels
    container = container or str(rng.choice(["npy", "npz stored", "npz compressed"]))
    family = str(rng.choice(FAMILIES))
    which = int(rng.integers(0, 2))
    ext = ".npy" if container == "npy" else ".npz"
    paths = [str(tmp / f"z{ext}"), str(tmp / f"y{ext}")]
    for i, (x, path) in enumerate(zip((z, y), paths, strict=True)):
        if i == which:
            data = mutate(rng, x, container, family)
        elif container == "npy":
            data = npy_bytes(x)
        else:
            f = io.BytesIO()
            np.savez(f, a=x)
            data = f.getvalue()
        with open(path, "wb") as f:
            f.write(data)
    strict = reference(load(paths[0]), load(paths[1]))
    lenient = reference(load(paths[0], check_crc=False), load(paths[1], check_crc=False))
    argv = ["eval", "--loss", "bce-logits", *paths, "--json", "--batch-size", str(int(rng.choice([7, 16, 64])))]
    return argv, strict, lenient, f"{container} / {family} / {'zy'[which]}"


def fuzz(seed: int, cases: int, tmp) -> collections.Counter:
    rng = np.random.default_rng(seed)
    outcomes: collections.Counter = collections.Counter()
    failures = []
    for number in range(cases):
        argv, strict, lenient, what = make_case(rng, tmp)
        code, out, err = run_inprocess(argv)
        outcome = classify(code, out, err, strict, lenient)
        outcomes[outcome] += 1
        if outcome.startswith("other") and len(failures) < 5:
            failures.append(f"case {number} ({what}): {outcome}: exit {code}, expected {strict}: {err[-600:]}")
    print(f"\nfuzz seed {seed}: {cases} cases: {dict(outcomes)}", file=sys.__stderr__)
    assert not failures, "\n".join(failures)
    return outcomes


def test_fuzz_damaged_files_give_a_correct_result_or_one_line_and_exit_2(tmp_path):
    outcomes = fuzz(0, CI_CASES, tmp_path)
    assert sum(outcomes.values()) == CI_CASES
    assert outcomes["exit 0, correct"] >= CI_CASES // 10  # the mutations do not only make refusals
    assert outcomes["exit 2, one line"] >= CI_CASES // 10


@pytest.mark.fuzz_long
@pytest.mark.skipif(not os.environ.get("JAXLOSS_FUZZ_LONG"), reason="set JAXLOSS_FUZZ_LONG=1 to run")
def test_fuzz_long(tmp_path):
    outcomes = fuzz(1, LONG_CASES, tmp_path)
    assert sum(outcomes.values()) == LONG_CASES


def test_fuzz_subprocess_a_few_real_runs(tmp_path):
    """The same oracle on a few .npy cases run as real ``python -m jaxloss eval`` processes: exit codes, stderr."""
    rng = np.random.default_rng(2)
    seen = collections.Counter()
    for _ in range(3):
        argv, strict, lenient, _what = make_case(rng, tmp_path, "npy")
        result = subprocess.run(
            [sys.executable, "-m", "jaxloss", *argv], capture_output=True, text=True, timeout=120, check=False
        )
        outcome = classify(result.returncode, result.stdout, result.stderr, strict, lenient)
        assert not outcome.startswith("other"), (outcome, result.stderr)
        seen[outcome] += 1
    assert sum(seen.values()) == 3
