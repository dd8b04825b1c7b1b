"""The ``jaxloss`` command line: ``eval`` a loss over .npy/.npz files, ``demo`` the main job, ``check`` derivatives.

Input files are data, never code: ``.npy`` headers are parsed with NumPy's format reader,
object dtypes are refused before any data is read, and nothing is ever unpickled
(``allow_pickle=False``). Bad input gives one line on stderr and exit code 2; Ctrl-C gives
one line and exit code 130. ``.npy`` files and uncompressed ``.npz`` members are
memory-mapped; compressed ``.npz`` members are decompressed batch by batch; no input is
loaded whole.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxloss

from . import streaming

__all__ = ["main"]

PROG = "jaxloss"


class InputError(Exception):
    """Bad input (a file, an option, a shape): reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage block and exit; we want one line.
        raise InputError(f"{message} (see `{self.prog} --help`)")


# ----------------------------------------------------------------------------- reading arrays


def _npy_header(f, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an open .npy stream, refusing anything that is not plain numbers."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        raise InputError(
            f"{what}: not a .npy file (it does not start with the NPY magic string); "
            f"pickles and other formats are refused, never unpickled"
        ) from None
    try:
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise InputError(f"{what}: unsupported .npy format version {version[0]}.{version[1]} (expected 1.0 or 2.0)")
    except ValueError as err:
        detail = str(err) if len(str(err)) <= 120 else str(err)[:117] + "..."
        raise InputError(f"{what}: corrupt .npy header ({detail!r})") from None
    if dtype.hasobject:
        raise InputError(
            f"{what}: holds Python objects (dtype {dtype}); refused: jaxloss reads numbers only and "
            f"never unpickles (allow_pickle=False)"
        )
    return shape, fortran, dtype


def _expect_bytes(what: str, shape, dtype: np.dtype, available: int) -> None:
    needed = math.prod(shape) * dtype.itemsize
    if available < needed:
        raise InputError(
            f"{what}: truncated: the header promises shape {shape} of {dtype} ({needed:,} bytes of data), "
            f"the file holds {max(available, 0):,}"
        )


def _open_npy(path: str, what: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            shape, _, dtype = _npy_header(f, what)
            offset = f.tell()
        _expect_bytes(what, shape, dtype, os.path.getsize(path) - offset)
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)  # nothing to map
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as err:
        raise InputError(f"{what}: cannot read {path} ({err.strerror or err})") from None


class _ZipRows:
    """Rows of a compressed .npz member, decompressed in order, one requested slice at a time."""

    def __init__(self, path: str, member: str, what: str, shape, dtype: np.dtype, data_offset: int):
        self.path, self.member, self.what = path, member, what
        self.shape, self.dtype, self.ndim = tuple(shape), dtype, len(shape)
        self.row_bytes = math.prod(self.shape[1:]) * dtype.itemsize
        self.data_offset = data_offset
        self._archive = self._file = None
        self._next = 0  # the row the open stream is positioned at

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, n: int) -> bytes:
        try:
            data = self._file.read(n)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
            raise InputError(f"{self.what}: corrupt compressed data ({err})") from None
        if len(data) < n:
            raise InputError(f"{self.what}: truncated: the compressed data ends before the rows its header promises")
        return data

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("rows of a compressed .npz member are read as contiguous slices")
        start, stop, _ = index.indices(self.shape[0])
        stop = max(stop, start)
        if self._file is None or start < self._next:
            self.close()
            self._archive = zipfile.ZipFile(self.path)
            self._file = self._archive.open(self.member)
            self._read(self.data_offset)
            self._next = 0
        if start > self._next:
            self._read((start - self._next) * self.row_bytes)
        data = self._read((stop - start) * self.row_bytes)
        self._next = stop
        return np.frombuffer(data, self.dtype).reshape((stop - start, *self.shape[1:]))

    def close(self) -> None:
        for handle in (self._file, self._archive):
            if handle is not None:
                handle.close()
        self._archive = self._file = None


def _open_npz(path: str, key: str | None, what: str):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InputError(f"{what}: not a valid .npz archive (corrupt or truncated zip file)") from None
    except OSError as err:
        raise InputError(f"{what}: cannot read {path} ({err.strerror or err})") from None
    with archive:
        keys = sorted(name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy"))
        if key is None:
            if len(keys) != 1:
                listed = ", ".join(keys) if keys else "none"
                raise InputError(f"{what}: name the array as {path}:KEY; the archive holds {len(keys)} ({listed})")
            key = keys[0]
        if key not in keys:
            listed = ", ".join(keys) if keys else "none"
            raise InputError(f"{what}: no array named {key!r} in {path}; it holds: {listed}")
        info = archive.getinfo(key + ".npy")
        try:
            with archive.open(info) as f:
                shape, fortran, dtype = _npy_header(f, what)
                data_offset = f.tell()
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise InputError(f"{what}: corrupt .npz member {key!r} ({err})") from None
        _expect_bytes(what, shape, dtype, info.file_size - data_offset)
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        if info.compress_type == zipfile.ZIP_STORED:  # np.savez: the member's bytes lie in the file as they are
            with open(path, "rb") as raw:
                raw.seek(info.header_offset)
                local = raw.read(30)
            signature, *_, name_length, extra_length = struct.unpack("<IHHHHHIIIHH", local)
            if signature != 0x04034B50:
                raise InputError(f"{what}: corrupt .npz archive (bad local header for {key!r})")
            start = info.header_offset + 30 + name_length + extra_length + data_offset
            _expect_bytes(what, shape, dtype, os.path.getsize(path) - start)
            order = "F" if fortran else "C"
            return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape, order=order)
        if fortran:
            raise InputError(
                f"{what}: a Fortran-ordered array in a compressed .npz cannot be read row by row; "
                f"save it with np.savez (uncompressed) or as .npy"
            )
        return _ZipRows(path, info.filename, what, shape, dtype, data_offset)


def open_array(spec: str, what: str):
    """The array ``spec`` names (``file.npy``, ``file.npz:key`` or a one-array ``file.npz``), not loaded."""
    path, key = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".npz"):
        path, key = head, tail
    what = f"{what} {spec}"
    if not os.path.exists(path):
        raise InputError(f"{what}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{what}: is a directory, not a .npy or .npz file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{what}: the file is empty")
    if path.endswith(".npz"):
        return _open_npz(path, key, what)
    return _open_npy(path, what)


def _kind_check(what: str, dtype: np.dtype, allowed: str, hint: str) -> None:
    if dtype.kind not in allowed:
        raise InputError(f"{what}: dtype {dtype} is not allowed here; expected {hint}")


# ----------------------------------------------------------------------------- eval


class Loss(NamedTuple):
    fn: Callable[..., jax.Array]
    targets: str | None  # what the second file holds, or None when the loss takes one array
    reduces_axis: bool  # entropy over a class axis: one loss per row
    takes_base: bool


LOSSES = {
    "bce-logits": Loss(jaxloss.sigmoid_binary_cross_entropy, "labels", False, False),
    "bce": Loss(jaxloss.binary_cross_entropy, "labels", False, False),
    "mse": Loss(jaxloss.squared_error, "targets", False, False),
    "entropy": Loss(jaxloss.entropy, None, True, True),
    "entropy-logits": Loss(jaxloss.entropy_from_logits, None, True, True),
    "binary-entropy": Loss(jaxloss.binary_entropy, None, False, True),
}


def _device() -> str:
    device = jax.devices()[0]
    return f"{device.platform}:{device.id} ({device.device_kind})"


def _writable(path: str) -> None:
    """Fail before a long run, not after it, when --json cannot be written."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"--json {path}: is a directory; name a file")
    parent = target.parent
    if not parent.is_dir():
        raise InputError(f"--json {path}: cannot write there: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise InputError(f"--json {path}: cannot write there: permission denied")


def _eval(args) -> int:
    spec = LOSSES[args.loss]
    if spec.targets is not None and args.targets is None:
        raise InputError(f"--loss {args.loss} needs a second file with the {spec.targets}")
    if spec.targets is None and args.targets is not None:
        raise InputError(f"--loss {args.loss} takes one file; got a second one ({args.targets})")
    if args.axis is not None and not spec.reduces_axis:
        raise InputError(f"--axis applies to --loss entropy and entropy-logits only; got --loss {args.loss}")
    if args.base is not None:
        if not spec.takes_base:
            raise InputError(f"--base applies to the entropy losses only; got --loss {args.loss}")
        if not (args.base > 0 and args.base != 1 and math.isfinite(args.base)):
            raise InputError(f"--base must be positive, finite and not 1; got {args.base:g} (2 gives bits)")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer; got {args.batch_size}")
    json_path = args.json if args.json not in (None, "-") else None
    if json_path is not None:
        _writable(json_path)

    pred = open_array(args.predictions, "PRED")
    _kind_check(f"PRED {args.predictions}", np.dtype(pred.dtype), "f", "floating-point predictions")
    if len(pred.shape) == 0 or pred.shape[0] == 0:
        raise InputError(f"PRED {args.predictions}: has no rows (shape {pred.shape}); nothing to evaluate")
    arrays = [pred]
    if args.targets is not None:
        targets = open_array(args.targets, "TARGETS")
        _kind_check(f"TARGETS {args.targets}", np.dtype(targets.dtype), "fiub", "numbers (float, int or bool)")
        if tuple(targets.shape) != tuple(pred.shape):
            raise InputError(
                f"PRED and TARGETS must have the same shape; got {tuple(pred.shape)} and {tuple(targets.shape)}"
            )
        arrays.append(targets)

    options: dict[str, Any] = {}
    loss_shape = tuple(pred.shape)
    if spec.reduces_axis:
        axis = -1 if args.axis is None else args.axis
        ndim = len(pred.shape)
        if not -ndim <= axis < ndim:
            raise InputError(
                f"--axis {axis} is out of range for PRED of shape {tuple(pred.shape)}; "
                f"pass an axis in [{-ndim}, {ndim - 1}]"
            )
        if axis % ndim == 0:
            raise InputError(
                f"--loss {args.loss} needs a class axis other than the row axis 0; PRED has shape "
                f"{tuple(pred.shape)} (save it as (rows, classes) and use --axis -1)"
            )
        options["axis"] = axis
        loss_shape = loss_shape[: axis % ndim] + loss_shape[axis % ndim + 1 :]
    if args.base is not None:
        options["base"] = args.base
    loss = functools.partial(spec.fn, **options) if options else spec.fn

    extra = {}
    for name, option, kinds, hint in (
        ("weights", args.weights, "fiu", "non-negative numbers (float or int)"),
        ("where", args.where, "b", "booleans (save mask.astype(bool))"),
    ):
        if option is None:
            continue
        x = open_array(option, f"--{name}")
        _kind_check(f"--{name} {option}", np.dtype(x.dtype), kinds, hint)
        if tuple(x.shape) not in ((pred.shape[0],), loss_shape):
            raise InputError(
                f"--{name} {option}: shape {tuple(x.shape)} fits neither one entry per row ({pred.shape[0]},) "
                f"nor one per loss value {loss_shape}"
            )
        extra[name] = x

    rows = int(pred.shape[0])
    bar = streaming.Progress(rows, label=f"{PROG} eval", unit="rows")
    try:
        result = streaming.stream(loss, *arrays, batch_size=args.batch_size, progress=bar, **extra)
    except (TypeError, ValueError) as err:  # raised by the loss's own checks while tracing
        raise InputError(str(err).splitlines()[0]) from None
    finally:
        for x in [*arrays, *extra.values()]:
            if isinstance(x, _ZipRows):
                x.close()
    state = result.state
    value = float(state.compute())
    count, nans = state.num_selected(), state.num_nan()
    report = {
        "loss": args.loss,
        "value": None if math.isnan(value) else value,
        "count": count,
        "nan_count": nans,
        "rows": rows,
        "dtype": str(state.total.dtype),
        "device": _device(),
        "rows_per_second": result.rows_per_second,
        "seconds": result.seconds,
    }
    if json_path is not None:
        try:
            Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as err:
            raise InputError(f"--json {json_path}: cannot write ({err.strerror or err})") from None
    if nans:
        print(f"{PROG} eval: warning: {nans:,} of {count:,} loss values are NaN, so the mean is NaN", file=sys.stderr)
    elif count == 0:
        print(f"{PROG} eval: warning: nothing selected; the mean of nothing is reported as 0", file=sys.stderr)
    if args.json == "-":
        print(json.dumps(report))
    else:
        digits = 17 if state.total.dtype == np.float64 else 9
        cells = {
            "loss": args.loss,
            "value": f"{value:.{digits}g}",
            "count": f"{count:,}",
            "nan": f"{nans:,}",
            "device": report["device"],
            "rows/s": f"{result.rows_per_second:,.0f}",
        }
        widths = {k: max(len(k), len(v)) for k, v in cells.items()}
        print("  ".join(k.ljust(widths[k]) for k in cells).rstrip())
        print("  ".join(v.ljust(widths[k]) for k, v in cells.items()).rstrip())
    return 0


# ----------------------------------------------------------------------------- demo


def _demo(args) -> int:
    import optax

    print(f"jaxloss {jaxloss.__version__}, jax {jax.__version__}, on {_device()}")
    rng = np.random.default_rng(0)
    features, n_train, n_eval = 16, 2**17, 1_000_000
    true_w = rng.normal(size=features).astype(np.float32)
    true_b = np.float32(-0.5)
    x = rng.standard_normal((n_train + n_eval, features), dtype=np.float32)
    true_logits = x @ true_w + true_b
    y = (rng.random(n_train + n_eval) < 1 / (1 + np.exp(-true_logits))).astype(np.float32)
    x_train, y_train, x_eval, y_eval = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    print(
        f"\nSynthetic data (seed 0): {n_train:,} training and {n_eval:,} held-out rows of {features} features,"
        f"\nlabels drawn from a logistic model."
    )

    def logits_of(params, xb):
        return xb @ params["w"] + params["b"]

    def loss_fn(params, xb, yb):
        return jaxloss.bce_with_logits(logits_of(params, xb), yb)

    optimizer = optax.adam(0.05)
    batch, epochs = 4096, 8
    steps = n_train // batch

    @jax.jit
    def epoch(carry, xs, ys):
        def step(carry, xy):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, *xy)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        carry, losses = jax.lax.scan(step, carry, (xs, ys))
        return carry, losses.mean()

    params = {"w": jnp.zeros(features), "b": jnp.zeros(())}
    carry = (params, optimizer.init(params))
    xs = jnp.asarray(x_train.reshape(steps, batch, features))
    ys = jnp.asarray(y_train.reshape(steps, batch))
    print(f"\nTraining a logistic regression with optax.adam and jaxloss.bce_with_logits ({epochs} epochs):")
    bar = streaming.Progress(epochs * steps, label="  train", unit="steps", every=2.0)
    bar.update(0, force=True)
    for e in range(epochs):
        carry, loss = epoch(carry, xs, ys)
        if e == 0:
            bar.started(steps)
        bar.label = f"  train (epoch {e + 1}, mean BCE {float(loss):.4f} nats)"
        bar.update((e + 1) * steps)
    bar.close(epochs * steps)
    params = carry[0]
    error = float(jnp.linalg.norm(params["w"] - true_w) / np.linalg.norm(true_w))
    print(f"  relative distance of the fitted weights to the true ones: {error:.3f}")

    true = {"w": jnp.asarray(true_w), "b": jnp.asarray(true_b)}
    evaluations = (
        ("BCE, fitted model (nats)", lambda xb, yb: jaxloss.sigmoid_binary_cross_entropy(logits_of(params, xb), yb)),
        ("BCE, true model (nats)", lambda xb, yb: jaxloss.sigmoid_binary_cross_entropy(logits_of(true, xb), yb)),
        ("predictive entropy (bits)", lambda xb, yb: jaxloss.binary_entropy_from_logits(logits_of(params, xb), base=2)),
        (
            "MSE of probabilities (Brier)",
            lambda xb, yb: jaxloss.squared_error(jax.nn.sigmoid(logits_of(params, xb)), yb),
        ),
    )
    batch_rows = 2**16
    print(f"\nStreaming evaluation over the {n_eval:,} held-out rows in batches of {batch_rows:,} (jaxloss.streaming):")
    results = []
    for label, loss in evaluations:
        bar = streaming.Progress(n_eval, label=f"  {label}", unit="rows", every=2.0)
        result = streaming.stream(loss, x_eval, y_eval, batch_size=batch_rows, progress=bar)
        results.append((label, float(result.state.compute()), result.state.num_selected(), result.rows_per_second))
    print(f"  {'quantity':<30} {'value':>10} {'rows':>10} {'rows/s':>8}")
    for label, value, count, rate in results:
        print(f"  {label:<30} {value:>10.6f} {count:>10,} {streaming._si(rate):>8}")

    print("\nShannon entropy, in bits (jaxloss.entropy(p, base=2)):")
    for probs, what in (
        ([0.5, 0.5], "two equally likely messages"),
        ([1.0, 0.0], "a certain outcome"),
        ([0.9, 0.1], "a 90/10 split"),
    ):
        h = jaxloss.entropy(jnp.array(probs), base=2)
        print(f"  H{tuple(probs)!s:<12} = {float(h):.3f} bits  ({what})")
    return 0


# ----------------------------------------------------------------------------- check


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def _close(got, want, rel: float, what: str) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf: equal infinities pass through got == want
        ok = np.all((got == want) | (np.abs(got - want) <= rel * np.abs(want)))
    _expect(bool(ok), f"{what}: got {got}, expected {want}")


def _derivative_checks(dtype) -> dict[str, list[tuple[str, Callable[[], None]]]]:
    """Per public function: (name, check) pairs; each check raises AssertionError on failure."""
    from jax.test_util import check_grads

    # Interior points where central differences (step 1e-4) are accurate to check_grads' tolerance.
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=5) * 2, dtype)
    y = jnp.asarray(rng.uniform(0.2, 0.8, size=5), dtype)
    p = jnp.asarray(rng.uniform(0.2, 0.8, size=5), dtype)
    w = jnp.asarray(rng.uniform(0.5, 1.0, size=5), dtype)
    probs = rng.uniform(0.5, 1.5, size=(3, 4))
    probs = jnp.asarray(probs / probs.sum(-1, keepdims=True), dtype)
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
    }


def _check(args) -> int:
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
            for name, checks in _derivative_checks(jnp.float64 if x64 else jnp.float32).items():
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


# ----------------------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="jaxloss: exact loss functions for JAX. Without a command, runs the demo.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{eval,demo,check}")
    ev = commands.add_parser(
        "eval",
        help="mean loss over .npy / .npz files, streamed in batches",
        description="Mean loss over the rows of .npy files (memory-mapped) or FILE.npz:KEY arrays, streamed in "
        "batches through one compiled step. Prints a table (or one JSON object) on stdout, progress on stderr. "
        "Exit codes: 0 done, 2 bad input, 130 interrupted.",
    )
    ev.add_argument("--loss", required=True, choices=list(LOSSES), help="the loss to average")
    ev.add_argument(
        "predictions", metavar="PRED", help="predictions, logits or probabilities: FILE.npy or FILE.npz:KEY"
    )
    ev.add_argument("targets", metavar="TARGETS", nargs="?", help="labels or targets (bce-logits, bce, mse)")
    ev.add_argument("--where", metavar="MASK", help="boolean selection, one per row or one per loss value")
    ev.add_argument("--weights", metavar="W", help="non-negative weights, one per row or one per loss value")
    ev.add_argument("--axis", type=int, help="class axis of PRED for entropy, entropy-logits (default -1)")
    ev.add_argument("--base", type=float, help="logarithm base for the entropy losses (2: bits; default: nats)")
    ev.add_argument(
        "--batch-size",
        type=int,
        help="rows per step (default: about 4 MiB of input per batch on a CPU, 64 MiB on a GPU)",
    )
    ev.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="print one JSON object instead of the table; with PATH (put it last or write --json=PATH), write it there",
    )
    ev.set_defaults(run=_eval)
    commands.add_parser("demo", help="train and evaluate a logistic regression on synthetic data").set_defaults(
        run=_demo
    )
    commands.add_parser(
        "check", help="derivative checks on every backend jax.devices() offers; exit code 1 on a failure"
    ).set_defaults(run=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 a check failed, 2 bad input, 130 interrupted)."""
    command = PROG
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        command = f"{PROG} {args.command or 'demo'}"
        return getattr(args, "run", _demo)(args)
    except InputError as err:
        print(f"{command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        newline = "\n" if sys.stderr.isatty() else ""  # end a progress line drawn in place
        print(f"{newline}{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `jaxloss eval ... | head -1`
        sys.stdout = open(os.devnull, "w")  # the interpreter would complain again when it flushes at exit
        return 1
    finally:
        sys.stderr.flush()
