"""``jaxloss eval``: the mean of a loss over the rows of .npy / .npz files, streamed in batches.

Checks the options against the loss, opens the files with :mod:`jaxloss.npyfiles`, streams
them through :func:`jaxloss.streaming.stream` (with the value checks of :data:`CHECKED_ROLES`,
on the device, batch by batch) and prints a table (or one JSON object) on stdout; ``--json=PATH``
is written atomically (a temporary file in the same directory, fsync, rename). Bad input raises
:class:`jaxloss.npyfiles.InputError`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from . import _api, npyfiles, streaming
from . import categorical as categorical  # imported for their declarations (in _api.DECLARED), which
from . import classification as classification  # LOSSES reads: `import jaxloss` may load them only on first use
from . import entropy as entropy
from . import regression as regression
from ._format import device
from .npyfiles import InputError, open_array, require_kind

__all__ = ["CHECKED_ROLES", "DEFAULT_MAX_MEMORY", "LOSSES", "Loss", "run"]

_COMMAND = "jaxloss eval"  # how warnings and the progress line name this command


class Loss(NamedTuple):
    fn: Callable[..., jax.Array]
    targets: str | None  # what the second file holds, or None when the loss takes one array
    reduces_axis: bool  # entropy over a class axis: one loss per row
    takes_base: bool
    roles: tuple[str, ...]  # the declared names of its array arguments: ("logits", "labels")
    declaration: _api.Declaration
    # The loss of the same name for an integer TARGETS file, which then holds class indices (one per row):
    # ce-logits is softmax_cross_entropy for distributions, softmax_cross_entropy_with_integer_labels for indices.
    indices: Loss | None = None


def _loss(d: _api.Declaration) -> Loss:
    second = d.arrays[1] if len(d.arrays) > 1 else None
    return Loss(d.function, second, d.returns == "rows", "base" in d.static, d.arrays, d)


def _losses() -> dict[str, Loss]:
    """The losses `--loss` names: every public loss declared with a command-line name (jaxloss._api), in the order
    of their names. A name two losses share is that of the one without class indices, with the other as its
    ``indices``."""
    named: dict[str, list[_api.Declaration]] = {}
    for d in sorted(_api.DECLARED.values(), key=lambda d: (d.cli or "", d.class_indices is not None)):
        if d.cli is not None:
            named.setdefault(d.cli, []).append(d)
    losses = {}
    for cli, declarations in named.items():
        if len(declarations) > 2 or (len(declarations) == 2 and declarations[1].class_indices is None):
            raise RuntimeError(f"jaxloss eval --loss {cli}: declared by {[d.name for d in declarations]}")
        losses[cli] = _loss(declarations[0])
        if len(declarations) == 2:
            losses[cli] = losses[cli]._replace(indices=_loss(declarations[1]))
    return losses


LOSSES = _losses()

# The value checks eval runs unless --no-check: these roles' rules (jaxloss._api.ROLES, the rules jaxloss.checked
# applies). A value outside its range gives a wrong mean with no sign of it (labels 0/255 make a negative
# cross-entropy). NaN and inf in logits, predictions and targets are not refused: they show in the result (NaN
# counted and reported, inf as inf). Also checked: an argument the loss gives a rule of its own (cross_entropy's
# targets, a distribution: jaxloss._api.Declaration.rules), and class indices (in [0, C), C the classes of PRED).
CHECKED_ROLES = ("labels", "probabilities", "reference", "weights")

# Peak memory eval plans for, by default: batches of every input (host and device copies, the next batch read while
# one computes) and the loss's intermediates, over the ~200 MB that Python with JAX takes before reading anything.
DEFAULT_MAX_MEMORY = 512 * 2**20
# Bytes of memory per byte of a device batch: (peak RSS - RSS before reading) / batch bytes, measured at a batch of
# one row of 5*10^7 float32 values from a compressed .npz: 4.1 (entropy-logits), 5.1 (entropy), 5.2
# (binary-entropy). 8 leaves room.
_MEMORY_PER_BATCH_BYTE = 8
_SIZE = re.compile(r"(?P<number>[0-9]+(\.[0-9]*)?(e[0-9]+)?)\s*(?P<unit>[kmgt]?)(i?b)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``--max-memory``: bytes, or with a suffix k, M, G, T (powers of 1024; "512M", "2GiB", "1.5G")."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise InputError(f"--max-memory {text!r}: expected a size such as 512M, 2G or 1000000 (bytes)")
    size = float(match["number"]) * 1024 ** "_kmgt".index(match["unit"].lower() or "_")
    if not 1 <= size < 2**63:
        raise InputError(f"--max-memory {text!r}: expected a size of at least 1 byte, such as 512M or 2G")
    return int(size)


def _file_of(spec: str) -> str:
    """The file a PRED / TARGETS / --where / --weights argument names (FILE.npy, FILE.npz or FILE.npz:KEY)."""
    head, sep, _ = spec.rpartition(":")
    return head if sep and head.endswith(".npz") else spec


def _refuse_output_over_input(json_path: str, inputs: list[tuple[str, str]]) -> None:
    """--json must not name an input: compared by device and inode, so a symlink or hard link is caught too."""
    try:
        out = os.stat(json_path)
    except OSError:
        return  # nothing there (or nothing we can stat): it cannot be an input
    for what, spec in inputs:
        try:
            source = os.stat(_file_of(spec))
        except OSError:
            continue  # a missing input is reported when it is opened
        if (source.st_dev, source.st_ino) == (out.st_dev, out.st_ino):
            raise InputError(
                f"--json {json_path} is the input {what} {spec} (the same file); writing the result would destroy "
                f"it: name another output path"
            )


def _write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that the file is either absent (or its old content) or complete: a temporary
    file in the same directory, flushed and fsynced, then renamed over ``path`` (a kill mid-write leaves only the
    hidden temporary file ``.NAME.*.tmp``)."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)  # as open(path, "w") would create it (mkstemp makes it 0600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        directory = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


def _finite_or_null(x: float) -> tuple[float | None, str | None]:
    """A float for standard JSON: itself, or None and "inf" / "-inf" / "nan"."""
    if math.isfinite(x):
        return x, None
    return None, "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


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


def _batch_size(asked: int | None, data: list, max_memory: int, default_budget: bool) -> int | None:
    """--batch-size, or the automatic one, within --max-memory; a row too wide for the budget is refused."""
    per_row = _MEMORY_PER_BATCH_BYTE * streaming.row_bytes(data)
    flag = f"--max-memory {max_memory / 2**20:,.0f}M" + (" (the default)" if default_budget else "")
    if per_row > max_memory:
        raise InputError(
            f"one row of the inputs takes {streaming.row_bytes(data):,} bytes, and evaluating it needs about "
            f"{per_row / 2**20:,.0f} MiB, more than {flag}; raise it (e.g. --max-memory "
            f"{math.ceil(per_row / 2**30)}G) if the machine has the memory"
        )
    fits = max_memory // per_row
    if asked is not None:
        if asked > fits:
            raise InputError(
                f"--batch-size {asked:,} needs about {asked * per_row / 2**20:,.0f} MiB, more than {flag}; "
                f"pass --batch-size {2 ** int(math.log2(fits)):,} or less, or raise --max-memory"
            )
        return asked
    auto = streaming._auto_batch_size(data)
    return auto if auto <= fits else 2 ** int(math.log2(fits))


def _column_and_vector(a, b) -> bool:
    """Shapes (N, 1) and (N,), in either order."""
    a, b = tuple(a), tuple(b)
    return sorted((a, b), key=len) == [(a[0],), (a[0], 1)]


class _Column:
    """An (N, 1) array read as (N,) (``--squeeze``): rows sliced from the array underneath, the last axis dropped."""

    def __init__(self, base):
        self.base, self.dtype = base, base.dtype
        self.shape, self.ndim = (base.shape[0],), 1

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        return np.asarray(self.base[index])[..., 0]


def run(args) -> int:
    """Run ``jaxloss eval`` with the parsed ``args``; returns the exit code (0)."""
    if args.loss not in LOSSES:  # as argparse words it (the parser leaves --loss to this command: no JAX there)
        raise InputError(f"argument --loss: invalid choice: {args.loss!r} (choose from {', '.join(LOSSES)})")
    spec = LOSSES[args.loss]
    if spec.targets is not None and args.targets is None:
        raise InputError(f"--loss {args.loss} needs a second file with the {spec.targets}")
    if spec.targets is None and args.targets is not None:
        raise InputError(f"--loss {args.loss} takes one file; got a second one ({args.targets})")
    if args.axis is not None and not spec.reduces_axis:
        with_axis = ", ".join(name for name, loss in LOSSES.items() if loss.reduces_axis)
        raise InputError(f"--axis applies to the losses with a class axis ({with_axis}) only; got --loss {args.loss}")
    if args.base is not None:
        if not spec.takes_base:
            bases = ", ".join(name for name, loss in LOSSES.items() if loss.takes_base)
            raise InputError(f"--base applies to {bases} only; got --loss {args.loss}")
        if not (args.base > 0 and args.base != 1 and math.isfinite(args.base)):
            raise InputError(f"--base must be positive, finite and not 1; got {args.base:g} (2 gives bits)")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer; got {args.batch_size}")
    max_memory = DEFAULT_MAX_MEMORY if args.max_memory is None else parse_size(args.max_memory)
    json_path = args.json if args.json not in (None, "-") else None
    if json_path is not None:
        named = [("PRED", args.predictions), ("TARGETS", args.targets), ("--where", args.where)]
        named.append(("--weights", args.weights))
        _refuse_output_over_input(json_path, [(what, spec) for what, spec in named if spec is not None])
        _writable(json_path)

    pred = open_array(args.predictions, "PRED")
    require_kind(f"PRED {args.predictions}", np.dtype(pred.dtype), "f", "floating-point predictions")
    if len(pred.shape) == 0 or pred.shape[0] == 0:
        raise InputError(f"PRED {args.predictions}: has no rows (shape {pred.shape}); nothing to evaluate")
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
    arrays = [pred]
    index_rule = None  # the rule of class indices in TARGETS, when it holds them
    if args.targets is not None:
        targets = open_array(args.targets, "TARGETS")
        kind = np.dtype(targets.dtype).kind
        if _api.ROLES[spec.roles[1]].kind == "float":
            require_kind(f"TARGETS {args.targets}", np.dtype(targets.dtype), "f", f"floating-point {spec.targets}")
        require_kind(f"TARGETS {args.targets}", np.dtype(targets.dtype), "fiub", "numbers (float, int or bool)")
        indexed = spec.indices or (spec if spec.declaration.class_indices is not None else None)
        if indexed is not None and kind in "iu":  # class indices: one per row
            spec = indexed
            index_rule = _api.class_index_rule(
                int(pred.shape[options["axis"]]), options["axis"], "PRED", leave_out="--where MASK"
            )
            if tuple(targets.shape) != loss_shape:
                raise InputError(
                    f"TARGETS {args.targets}: integer labels are class indices, one per row of PRED "
                    f"{tuple(pred.shape)} (shape {loss_shape}); got shape {tuple(targets.shape)} (for one "
                    f"distribution per row, save the labels as floats of PRED's shape)"
                )
        if index_rule is None and getattr(args, "squeeze", False) and _column_and_vector(pred.shape, targets.shape):
            columns: list[Any] = [_Column(x) if len(x.shape) == 2 else x for x in (pred, targets)]
            pred, targets = columns
            arrays[0] = pred
        if index_rule is None and tuple(targets.shape) != tuple(pred.shape):
            hint = ""
            if _column_and_vector(pred.shape, targets.shape):
                hint = " (for (N, 1) against (N,), pass --squeeze)"
            elif spec.indices is not None and tuple(targets.shape) == loss_shape:
                hint = f" (class indices, one per row, must be saved as integers; got {np.dtype(targets.dtype)})"
            raise InputError(
                f"PRED and TARGETS must have the same shape; got {tuple(pred.shape)} and {tuple(targets.shape)}" + hint
            )
        arrays.append(targets)
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
        require_kind(f"--{name} {option}", np.dtype(x.dtype), kinds, hint)
        if tuple(x.shape) not in ((pred.shape[0],), loss_shape):
            raise InputError(
                f"--{name} {option}: shape {tuple(x.shape)} fits neither one entry per row ({pred.shape[0]},) "
                f"nor one per loss value {loss_shape}"
            )
        extra[name] = x

    # What each checked array is called on the command line, and the rule it must pass.
    names = {"arrays[0]": ("PRED", args.predictions, spec.roles[0])}
    if args.targets is not None:
        names["arrays[1]"] = ("TARGETS", args.targets, spec.roles[1])
    if "weights" in extra:
        names["weights"] = ("--weights", args.weights, "weights")
    checks: dict[str, streaming.Rule] = {}
    rules = {key: spec.declaration.rule(role) for key, (_, _, role) in names.items()}
    if index_rule is not None:
        rules["arrays[1]"] = index_rule
    if not args.no_check:
        checks = {
            key: rule
            for key, (_, _, role) in names.items()
            if (role in CHECKED_ROLES or role in spec.declaration.rules or rules[key] is index_rule)
            and (rule := rules[key]) is not None
        }

    batch_size = _batch_size(args.batch_size, [*arrays, *extra.values()], max_memory, args.max_memory is None)
    rows = int(pred.shape[0])
    bar = streaming.Progress(rows, label=_COMMAND, unit="rows")
    try:
        result = streaming.stream(loss, *arrays, batch_size=batch_size, progress=bar, checks=checks, **extra)
    except (TypeError, ValueError) as err:  # raised by the loss's own checks while tracing
        raise InputError(str(err).splitlines()[0]) from None
    finally:
        for x in [*arrays, *extra.values()]:
            npyfiles.close(x.base if isinstance(x, _Column) else x)
    for key, found in result.violations.items():
        what, path, role = names[key]
        rule = rules[key]
        assert rule is not None
        index = ", ".join(map(str, found.first))
        some = "1 value fails" if found.failing == 1 else f"{found.failing:,} values fail"
        raise InputError(
            f"{what} {path}: {role} {rule.expected}; {some}, the first in row {found.first[0]:,}: "
            f"{role}[{index}] = {found.value}. {rule.fix} (--no-check skips this check.)"
        )
    state = result.state
    value = float(state.compute())
    count, nans = state.num_selected(), state.num_nan()
    json_value, nonfinite = _finite_or_null(value)
    report = {
        "loss": args.loss,
        "value": json_value,  # null when the mean is not finite; value_nonfinite says which
        "value_nonfinite": nonfinite,  # null, or "inf", "-inf", "nan"
        "count": count,
        "nan_count": nans,
        "rows": rows,
        "dtype": str(state.total.dtype),
        "checks": "off" if args.no_check else "on",
        "device": device(),
        "rows_per_second": _finite_or_null(result.rows_per_second)[0],
        "seconds": result.seconds,
    }
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"  # standard JSON: no NaN or Infinity
    if json_path is not None:
        try:
            _write_atomically(json_path, text)
        except OSError as err:
            raise InputError(f"--json {json_path}: cannot write ({err.strerror or err})") from None
    if nans:
        print(f"{_COMMAND}: warning: {nans:,} of {count:,} loss values are NaN, so the mean is NaN", file=sys.stderr)
    elif count == 0:
        print(f"{_COMMAND}: warning: nothing selected; the mean of nothing is reported as 0", file=sys.stderr)
    if args.no_check:
        print(f"{_COMMAND}: warning: value checks skipped (--no-check)", file=sys.stderr)
    if args.json == "-":
        print(json.dumps(report, allow_nan=False))
    else:
        digits = 17 if state.total.dtype == np.float64 else 9
        cells = {
            "loss": args.loss,
            "value": f"{value:.{digits}g}",
            "count": f"{count:,}",
            "nan": f"{nans:,}",
            "checks": report["checks"],
            "device": report["device"],
            "rows/s": f"{result.rows_per_second:,.0f}",
        }
        widths = {k: max(len(k), len(v)) for k, v in cells.items()}
        print("  ".join(k.ljust(widths[k]) for k in cells).rstrip())
        print("  ".join(v.ljust(widths[k]) for k, v in cells.items()).rstrip())
    return 0
