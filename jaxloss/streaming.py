"""Mergeable streaming accumulators: exact means over data sets larger than one batch or one device.

:class:`Mean` is a functional state (a ``NamedTuple``, hence a pytree) in the style of CLU's
metrics, without their weak spots: the totals are compensated (a float32 mean of 1e8 streamed
values lands within half an ulp, where a naive float32 running total is off by hundreds), and
the counts are exact integers far beyond 2^24 (where a float32 count stops moving) and 2^31
(where an int32 count wraps).
:func:`evaluate` streams arrays (NumPy memmaps included) through one compiled step.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from . import _mean
from ._format import si
from ._mean import Mean

__all__ = ["Mean", "Violation", "evaluate", "stream"]

# Automatic batch size, in bytes of input per step: on a CPU a batch that stays in cache streams fastest
# (measured: 0.5-1M rows of two float32 vectors beat 4M by 3-5x); an accelerator wants fewer, larger copies.
_BATCH_BYTES = {"cpu": 2**22}
_BATCH_BYTES_ACCELERATOR = 2**26


# ----------------------------------------------------------------------------- evaluate


class Progress:
    """A one-line progress report with a rate, on a text stream (stderr by default).

    On a terminal the line is redrawn in place at most ten times a second; otherwise
    (a log file, a pipe) a line is written at the start, every ``every`` seconds and at
    the end. The rate counts from :meth:`started` (call it once the first, compiling step
    is done), so it measures the steady state, not the compiler.
    """

    def __init__(
        self, total: int, *, label: str, unit: str = "rows", stream: TextIO | _Silent | None = None, every: float = 5.0
    ) -> None:
        self.total: int = total
        self.label: str = label
        self.unit: str = unit
        self.stream: TextIO | _Silent = sys.stderr if stream is None else stream
        self.tty: bool = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every: float = 0.1 if self.tty else every
        self.start: float = time.perf_counter()
        self.base: tuple[float, int] | None = None  # (time, done) when the steady state began
        self.last: float = -math.inf
        self.width: int = 0

    def started(self, done: int) -> None:
        """Mark the end of the first (compiling) step: the rate counts from here."""
        self.base = (time.perf_counter(), done)

    def rate(self, done: int, now: float | None = None) -> float:
        """Items per second since :meth:`started` (over the whole run before it, or when nothing followed it)."""
        now = time.perf_counter() if now is None else now
        if self.base is not None and done > self.base[1] and now > self.base[0]:
            return (done - self.base[1]) / (now - self.base[0])
        return done / max(now - self.start, 1e-9)

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        share = f"{100 * done / self.total:3.0f}% " if self.total else ""
        speed = f"{si(self.rate(done, now))} {self.unit}/s" if done else "starting"
        text = f"{self.label}: {share}{done:,}/{self.total:,} {self.unit}, {speed}, {now - self.start:.1f} s"
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class _Silent:
    """A text stream that drops what it is given (``progress=False``)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class Violation(NamedTuple):
    """What a value check of :func:`stream` found in one array: how many elements fail, and the first one."""

    failing: int  # elements that fail the check (in the rows checked)
    first: tuple[int, ...]  # the first one's index in the whole array (row first)
    value: Any  # its value, a NumPy scalar in the array's dtype


class Stream(NamedTuple):
    """What :func:`stream` measured: the final state, the rows streamed, the steady-state rate, failed checks."""

    state: Mean
    rows: int
    seconds: float  # wall time of the whole stream, compilation included
    rows_per_second: float  # after the first (compiling) step; over everything when there is one step
    violations: Mapping[str, Violation] = types.MappingProxyType({})  # by the name of each array failing its check


class Rule(Protocol):
    """A value check (e.g. a role's rule in ``jaxloss._api.ROLES``): ``ok`` is True where a value is allowed;
    ``data`` says whether the values ``where`` leaves out or a weight of 0 drops are exempt."""

    @property
    def ok(self) -> Callable[[jax.Array], jax.Array]: ...

    @property
    def data(self) -> bool: ...


def _rows(fn: str, name: str, x) -> tuple[Any, int]:
    if not hasattr(x, "shape") or not hasattr(x, "dtype") or not hasattr(x, "__getitem__"):
        x = np.asarray(x)
    if len(x.shape) == 0:
        raise ValueError(
            f"jaxloss.{fn}: {name} must have a leading row axis; got a scalar. Pass an array of shape (N, ...)."
        )
    dtype = np.dtype(x.dtype)
    if not (dtype.kind in "fiub" or dtype == jnp.bfloat16):
        raise TypeError(
            f"jaxloss.{fn}: {name} must hold real numbers (float, int or bool); got dtype {dtype}. "
            f"Convert it, e.g. {name}.astype(np.float32)."
        )
    return x, int(x.shape[0])


@functools.partial(jax.jit, static_argnums=2)
def _device_rows(x: jax.Array, start, size: int) -> jax.Array:
    """``size`` rows of a device array from a traced ``start``: one compilation for every full batch."""
    return jax.lax.dynamic_slice_in_dim(x, start, size)


def _device_dtype(dtype) -> np.dtype:
    """The dtype JAX computes a host array of ``dtype`` in: native byte order (a big-endian ">f4" file is
    byte-swapped batch by batch as it streams), 64-bit types narrowed unless x64 is on."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.dtype(dtype).newbyteorder("=")))


def _host_batch(x, start: int, stop: int, size: int):
    """Rows [start, stop) of ``x`` as a ``size``-row batch (zero-padded), in the dtype JAX will use."""
    if isinstance(x, jax.Array):  # already on a device: slice there
        if stop - start == size:
            return _device_rows(x, start, size)
        return jnp.pad(x[start:stop], [(0, size - (stop - start))] + [(0, 0)] * (x.ndim - 1))
    dtype = _device_dtype(x.dtype)
    source = np.dtype(x.dtype)
    rows = x[start:stop]  # reads just these rows (from disk for a memmap)
    if source.kind in "iu" and dtype.kind in "iu" and source.itemsize > dtype.itemsize:
        # int64 narrowed to int32 (x64 off) would wrap (2**32 + 1 becoming a valid class index 1): saturate, so
        # that a value out of the narrow range stays out of range, and is reported as such by a check.
        wide, narrow = np.iinfo(source), np.iinfo(dtype)
        rows = np.clip(np.asarray(rows), max(wide.min, narrow.min), min(wide.max, narrow.max))
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes +-inf, as in JAX (and is reported)
        batch = np.asarray(rows, dtype=dtype)
    if dtype == np.bool_:  # a file's bool bytes may hold any value; NumPy reads nonzero as True: make that 1
        batch = batch.view(np.uint8) != 0
    if stop - start < size:
        padded = np.zeros((size, *batch.shape[1:]), dtype)
        padded[: stop - start] = batch
        batch = padded
    return batch


def row_bytes(data: Sequence[Any]) -> int:
    """Bytes one row of every array in ``data`` takes in a device batch (in the dtypes JAX computes in)."""
    return sum(math.prod(x.shape[1:]) * _device_dtype(x.dtype).itemsize for x in data)


def _auto_batch_size(data) -> int:
    """The power of two of rows that keeps one batch of every array near _BATCH_BYTES for the default device."""
    target = _BATCH_BYTES.get(jax.devices()[0].platform, _BATCH_BYTES_ACCELERATOR)
    return 2 ** max(0, int(math.log2(max(target // max(row_bytes(data), 1), 1))))


def _per_row(x: jax.Array, ndim: int) -> jax.Array:
    """A per-row array (shape [B]) reshaped to broadcast against values of rank ``ndim``."""
    return x.reshape(x.shape + (1,) * (ndim - x.ndim)) if x.ndim == 1 else x


@functools.partial(jax.jit, static_argnums=0)
def _step(loss, state: Mean, n_valid, arrays, weights, where) -> Mean:
    return _step_values(loss, (), state, n_valid, (), arrays, weights, where)


def _step_values(loss, rules, state: Mean, n_valid, data, arrays, weights, where) -> Mean:
    fn = "streaming.evaluate"
    values = jnp.asarray(loss(*arrays))
    rows = arrays[0].shape[0]
    if rules:
        values = _poisoned(values, rules, data, n_valid, weights, where)
    if values.ndim == 0 or values.shape[0] != rows:
        raise ValueError(
            f"jaxloss.{fn}: loss must return one value per row (shape ({rows}, ...) for a batch of {rows} rows); "
            f"got shape {values.shape}. Pass the elementwise or per-row form (jaxloss.squared_error, not jaxloss.mse; "
            f"jaxloss.sigmoid_binary_cross_entropy, not jaxloss.bce_with_logits; "
            f"jaxloss.softmax_cross_entropy_with_integer_labels or jaxloss.softmax_cross_entropy, not "
            f"jaxloss.ce_with_logits), or a per-example one (jaxloss.batch.ce_with_logits)."
        )
    for name, x in (("weights", weights), ("where", where)):
        if x is not None and x.shape not in ((rows,), values.shape):
            raise ValueError(
                f"jaxloss.{fn}: {name} must hold one entry per row (shape (N,)) or one per loss value "
                f"(shape (N, {', '.join(map(str, values.shape[1:]))})); got rows of shape {x.shape[1:]}."
            )
    valid = _per_row(jnp.arange(rows) < n_valid, values.ndim)  # the padding of the last batch is left out
    if where is None and weights is None:
        # The common case in one pass over the losses: the padding becomes 0 and the count is known.
        values, _, _ = _mean.prepare(fn, state, values, None, None)
        per_row = values.size // rows
        return _mean.accumulate(state, jnp.where(valid, values, 0), None, None, n_valid * per_row)
    selected = valid if where is None else valid & _per_row(where, values.ndim)
    if weights is not None:
        weights = jnp.broadcast_to(_per_row(weights, values.ndim), values.shape)
    return _mean.update(state, values, weights, jnp.broadcast_to(selected, values.shape))


def _poisoned(values: jax.Array, rules, data, n_valid, weights, where) -> jax.Array:
    """``values`` with every row that holds a value failing a check made NaN. A select inside the loss's own pass
    (XLA fuses it; counting the failures is a second pass over the inputs, ~20 % of the step on a CPU): a batch
    whose NaN count did not grow has no failure, and only a batch whose did is counted (:func:`_count_failures`).
    A value a check exempts (``where`` False, a weight of 0, the padding) is never made NaN."""
    rows = values.shape[0]
    bad = jnp.zeros(rows, bool)
    for i, rule in rules:
        bad = bad | _failures(rule, data[i], n_valid, weights, where).reshape(rows, -1).any(axis=1)
    return jnp.where(_per_row(bad, values.ndim), jnp.nan, values)


def _failures(rule, x: jax.Array, n_valid, weights, where) -> jax.Array:
    """Where ``x`` (one batch) fails ``rule``, flattened: in the real rows (not the padding), and for a data rule
    only where ``where`` selects and the weight is not 0 (as in jaxloss.checked)."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.int8)  # the rules compare with numbers (a bool label is 0 or 1)
    rows = x.shape[0]
    keep = _per_row(jnp.arange(rows) < n_valid, x.ndim)
    if rule.data:
        for exempt in (where, None if weights is None else weights != 0):
            if exempt is not None and exempt.shape in ((rows,), x.shape):
                keep = keep & _per_row(exempt, x.ndim)
    return (~rule.ok(x) & keep).ravel()


@functools.partial(jax.jit, static_argnums=(0, 1))
def _step_checked(loss, rules, state: Mean, n_valid, data, arrays, weights, where) -> Mean:
    """:func:`_step` with the losses of rows failing a value check made NaN (:func:`_poisoned`)."""
    return _step_values(loss, rules, state, n_valid, data, arrays, weights, where)


@functools.partial(jax.jit, static_argnums=0)
def _count_failures(rules, n_valid, data, weights, where) -> jax.Array:
    """The number of failures of each value check in one batch (< 2**31 elements, so an int32 count is exact)."""
    return jnp.stack([jnp.sum(_failures(rule, data[i], n_valid, weights, where), dtype=jnp.int32) for i, rule in rules])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _first_failure(rule, position: int, n_valid, data, weights, where):
    """The flat index in the batch of the first value failing ``rule``, and that value (run only on a batch that
    has one, so the common step pays for a count, not for a search)."""
    index = jnp.argmax(_failures(rule, data[position], n_valid, weights, where))
    return index, data[position].ravel()[index]


def stream(
    loss: Callable[..., jax.Array],
    /,
    *arrays: Any,
    batch_size: int | None = None,
    weights: Any = None,
    where: Any = None,
    progress: bool | Progress = False,
    checks: Mapping[str, Rule] | None = None,
) -> Stream:
    """:func:`evaluate`, returning the final :class:`Mean` state and the measured rate (used by the command line).

    Takes the same arguments as :func:`evaluate`; ``progress`` may also be a :class:`Progress`
    to draw on. ``checks`` maps an array's name (``"arrays[1]"``, ``"weights"``) to a value
    check (a :class:`Rule`, e.g. ``jaxloss._api.ROLES["labels"].rule``), run on the device
    batch by batch. Returns a :class:`Stream`: ``state`` (merge it with other streams' states),
    ``rows``, ``seconds``, ``rows_per_second`` and ``violations``: for each array that fails
    its check, the number of failing elements and the first one (index and value).

    Example:
      >>> import numpy as np, jaxloss
      >>> result = jaxloss.streaming.stream(
      ...     jaxloss.squared_error, np.arange(4.0), np.zeros(4), batch_size=3, progress=False)
      >>> float(result.state.compute()), result.state.num_selected(), result.rows
      (3.5, 4, 4)
    """
    fn = "streaming.evaluate"
    if not callable(loss):
        raise TypeError(
            f"jaxloss.{fn}: loss must be a callable; got {type(loss).__name__}. Pass e.g. jaxloss.squared_error."
        )
    if not arrays:
        raise TypeError(f"jaxloss.{fn}: pass at least one array to evaluate the loss on.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1
    ):
        raise ValueError(f"jaxloss.{fn}: batch_size must be a positive int or None (automatic); got {batch_size!r}.")
    named = [(f"arrays[{i}]", a) for i, a in enumerate(arrays)]
    named += [(name, a) for name, a in (("weights", weights), ("where", where)) if a is not None]
    checked = {name: _rows(fn, name, a) for name, a in named}
    lengths = {name: n for name, (_, n) in checked.items()}
    n_rows = lengths["arrays[0]"]
    if len(set(lengths.values())) > 1:
        got = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise ValueError(f"jaxloss.{fn}: every array must have the same number of rows; got {got}.")
    if where is not None and np.dtype(checked["where"][0].dtype) != np.bool_:
        raise TypeError(
            f"jaxloss.{fn}: where must be a boolean array; got dtype {np.dtype(checked['where'][0].dtype)}. "
            f"Pass where.astype(bool)."
        )
    data = [checked[name][0] for name, _ in named]
    positions = {name: i for i, (name, _) in enumerate(named)}
    unknown = sorted(set(checks or {}) - set(positions))
    if unknown:
        raise ValueError(f"jaxloss.{fn}: checks name no array: {unknown}; the arrays are {sorted(positions)}.")
    rules = tuple((positions[name], rule) for name, rule in (checks or {}).items())
    if batch_size is None:
        batch_size = _auto_batch_size(data)
    size = min(int(batch_size), max(n_rows, 1))

    def put(k: int):
        start, stop = k * size, min((k + 1) * size, n_rows)
        batch = jax.device_put([_host_batch(x, start, stop, size) for x in data])  # asynchronous
        return stop - start, batch

    def unpack(batch):
        rest = batch[len(arrays) :]
        w = rest.pop(0) if weights is not None else None
        m = rest.pop(0) if where is not None else None
        return tuple(batch[: len(arrays)]), w, m

    if isinstance(progress, Progress):
        bar = progress
    else:
        bar = Progress(n_rows, label="jaxloss.evaluate", unit="rows", stream=None if progress else _Silent())
    state = Mean.empty()
    counts = [0] * len(rules)
    firsts: list[tuple[tuple[int, ...], Any] | None] = [None] * len(rules)
    n_batches = -(-n_rows // size)
    start = time.perf_counter()
    bar.update(0, force=True)
    following = put(0) if n_batches else (0, [])
    done = 0
    for k in range(n_batches):
        n_valid, batch = following
        arrays_k, weights_k, where_k = unpack(batch)
        nans_before = state.nan_count
        if rules:  # dispatched asynchronously
            state = _step_checked(loss, rules, state, n_valid, batch, arrays_k, weights_k, where_k)
        else:
            state = _step(loss, state, n_valid, arrays_k, weights_k, where_k)
        if k + 1 < n_batches:
            following = put(k + 1)  # read and copy the next batch while this one computes
        state = jax.block_until_ready(state)
        # A failing value made its row's loss NaN: only a batch whose NaN count grew can hold one (or a NaN input).
        if rules and not np.array_equal(np.asarray(state.nan_count), np.asarray(nans_before)):
            failed = _count_failures(rules, n_valid, batch, weights_k, where_k)
            for j, n in enumerate(np.asarray(failed).tolist()):
                counts[j] += n
                if n and firsts[j] is None:
                    position, rule = rules[j]
                    index, value = _first_failure(rule, position, n_valid, batch, weights_k, where_k)
                    shape = data[position].shape
                    flat = k * size * math.prod(shape[1:]) + int(index)
                    at = tuple(int(i) for i in np.unravel_index(flat, shape))
                    firsts[j] = (at, np.asarray(value)[()])
        done += n_valid
        if k == 0:
            bar.started(done)
        bar.update(done)
    end = time.perf_counter()
    bar.close(done)
    rate = bar.rate(done, end)
    violations = {}
    for name, count, first in zip(checks or {}, counts, firsts, strict=True):
        if count:
            assert first is not None
            violations[name] = Violation(count, *first)
    return Stream(state, n_rows, end - start, rate, violations)


def evaluate(
    loss: Callable[..., jax.Array],
    /,
    *arrays: Any,
    batch_size: int | None = None,
    weights: Any = None,
    where: Any = None,
    progress: bool = False,
) -> tuple[jax.Array, int]:
    r"""Mean of ``loss(*arrays)`` over a data set, streamed in batches of rows through one compiled step.

    .. math::
        \bar\ell = \frac{\sum_i w_i\,[\text{where}_i]\,\ell_i}{\sum_i w_i\,[\text{where}_i]}

    Row :math:`r` of every array (its leading axis) is one example; ``loss`` maps a
    batch of rows to one value per row (or per element: ``[B, ...]``), e.g.
    :func:`jaxloss.sigmoid_binary_cross_entropy`, :func:`jaxloss.squared_error`,
    :func:`jaxloss.binary_entropy`, or ``functools.partial(jaxloss.entropy, base=2)``
    (one entropy per row), :func:`jaxloss.softmax_cross_entropy_with_integer_labels`
    (logits ``[N, C]`` and class indices ``[N]``). Scalar means such as :func:`jaxloss.mse`
    and :func:`jaxloss.ce_with_logits` are rejected: pass their elementwise or per-row form
    (or a per-example one, :func:`jaxloss.batch.ce_with_logits`: one mean per example).
    The arrays may be anything indexable by row slices — NumPy arrays,
    ``np.load(..., mmap_mode="r")`` memmaps, JAX arrays — and only one batch of rows
    is read at a time.

    Each batch is copied to the default device with ``jax.device_put`` (asynchronous)
    while the previous batch computes. The last, partial batch is zero-padded and its
    padding masked out, so the step compiles once. The mean is accumulated in a
    :class:`Mean` (compensated totals, exact counts): streaming does not cost accuracy.
    Nothing selected gives 0, like :func:`jaxloss.mean`; a NaN loss gives NaN.

    Args:
      loss: a JAX-traceable function of one batch of each array, returning ``[B, ...]``.
      *arrays: row-indexable arrays with the same number of rows ``N``.
      batch_size: rows per step; None picks the power of two that keeps one batch of
        all the arrays near 4 MiB on a CPU (512k rows of two float32 vectors) and
        64 MiB on an accelerator.
      weights: optional non-negative weights, shape ``(N,)`` (one per row) or the
        loss's shape ``(N, ...)``.
      where: optional boolean selection, shape ``(N,)`` or ``(N, ...)`` like ``weights``.
      progress: draw a progress line with the rate (rows/s) on stderr (off by default: a library prints nothing
        unasked; the command line turns it on).

    Returns:
      ``(mean, count)``: the mean as a scalar array (float32, float64 under x64) and the
      number of loss values it averages, as an int.

    Example:
      >>> import numpy as np, jaxloss
      >>> logits, labels = np.zeros(1000, np.float32), np.ones(1000, np.float32)
      >>> mean, count = jaxloss.streaming.evaluate(
      ...     jaxloss.sigmoid_binary_cross_entropy, logits, labels, batch_size=300, progress=False)
      >>> print(f"{float(mean):.6f} over {count} rows")
      0.693147 over 1000 rows
    """
    result = stream(loss, *arrays, batch_size=batch_size, weights=weights, where=where, progress=progress)
    return result.state.compute(), result.state.num_selected()
