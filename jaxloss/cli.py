"""The ``jaxloss`` command line: ``eval`` a loss over .npy/.npz files, ``demo`` the main job, ``check`` derivatives.

Input files are data, never code: ``.npy`` headers are parsed with NumPy's format reader,
object dtypes are refused before any data is read, and nothing is ever unpickled
(``allow_pickle=False``). Bad input gives one line on stderr and exit code 2; Ctrl-C gives
one line and exit code 130. ``.npy`` files and uncompressed ``.npz`` members are
memory-mapped; compressed ``.npz`` members are decompressed batch by batch; no input is
loaded whole.

This module holds the argument parser and the dispatch (exit codes, one-line errors); the
commands live in :mod:`jaxloss._cmd_eval`, :mod:`jaxloss.demo` and :mod:`jaxloss._cmd_check`,
the file readers in :mod:`jaxloss.npyfiles`.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import _cmd_check, _cmd_eval, demo
from .npyfiles import InputError

__all__ = ["main"]

PROG = "jaxloss"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage block and exit; we want one line.
        raise InputError(f"{message} (see `{self.prog} --help`)")


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
    ev.add_argument("--loss", required=True, choices=list(_cmd_eval.LOSSES), help="the loss to average")
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
    ev.set_defaults(run=_cmd_eval.run)
    commands.add_parser("demo", help="train and evaluate a logistic regression on synthetic data").set_defaults(
        run=demo.run
    )
    commands.add_parser(
        "check", help="derivative checks on every backend jax.devices() offers; exit code 1 on a failure"
    ).set_defaults(run=_cmd_check.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 a check failed, 2 bad input, 130 interrupted)."""
    command = PROG
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        command = f"{PROG} {args.command or 'demo'}"
        return getattr(args, "run", demo.run)(args)
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
