"""``jaxloss eval``: the mean of a loss over the rows of .npy / .npz files, streamed in batches.

Checks the options against the loss, opens the files with :mod:`jaxloss.npyfiles`, streams
them through :func:`jaxloss.streaming.stream` and prints a table (or one JSON object) on stdout.
Bad input raises :class:`jaxloss.npyfiles.InputError`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from . import _api, npyfiles, streaming
from ._format import device
from .npyfiles import InputError, open_array, require_kind

__all__ = ["LOSSES", "Loss", "run"]

_COMMAND = "jaxloss eval"  # how warnings and the progress line name this command


class Loss(NamedTuple):
    fn: Callable[..., jax.Array]
    targets: str | None  # what the second file holds, or None when the loss takes one array
    reduces_axis: bool  # entropy over a class axis: one loss per row
    takes_base: bool


# The losses `--loss` names: every public loss declared with a command-line name (jaxloss._api), in the order of
# their names.
LOSSES = {
    d.cli: Loss(d.function, d.arrays[1] if len(d.arrays) > 1 else None, d.returns == "rows", "base" in d.static)
    for d in sorted(_api.DECLARED.values(), key=lambda d: d.cli or "")
    if d.cli is not None
}


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


def run(args) -> int:
    """Run ``jaxloss eval`` with the parsed ``args``; returns the exit code (0)."""
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
    require_kind(f"PRED {args.predictions}", np.dtype(pred.dtype), "f", "floating-point predictions")
    if len(pred.shape) == 0 or pred.shape[0] == 0:
        raise InputError(f"PRED {args.predictions}: has no rows (shape {pred.shape}); nothing to evaluate")
    arrays = [pred]
    if args.targets is not None:
        targets = open_array(args.targets, "TARGETS")
        require_kind(f"TARGETS {args.targets}", np.dtype(targets.dtype), "fiub", "numbers (float, int or bool)")
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
        require_kind(f"--{name} {option}", np.dtype(x.dtype), kinds, hint)
        if tuple(x.shape) not in ((pred.shape[0],), loss_shape):
            raise InputError(
                f"--{name} {option}: shape {tuple(x.shape)} fits neither one entry per row ({pred.shape[0]},) "
                f"nor one per loss value {loss_shape}"
            )
        extra[name] = x

    rows = int(pred.shape[0])
    bar = streaming.Progress(rows, label=_COMMAND, unit="rows")
    try:
        result = streaming.stream(loss, *arrays, batch_size=args.batch_size, progress=bar, **extra)
    except (TypeError, ValueError) as err:  # raised by the loss's own checks while tracing
        raise InputError(str(err).splitlines()[0]) from None
    finally:
        for x in [*arrays, *extra.values()]:
            npyfiles.close(x)
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
        "device": device(),
        "rows_per_second": result.rows_per_second,
        "seconds": result.seconds,
    }
    if json_path is not None:
        try:
            Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as err:
            raise InputError(f"--json {json_path}: cannot write ({err.strerror or err})") from None
    if nans:
        print(f"{_COMMAND}: warning: {nans:,} of {count:,} loss values are NaN, so the mean is NaN", file=sys.stderr)
    elif count == 0:
        print(f"{_COMMAND}: warning: nothing selected; the mean of nothing is reported as 0", file=sys.stderr)
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
