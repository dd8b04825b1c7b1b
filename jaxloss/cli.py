"""The ``jaxloss`` command line: ``eval`` a loss over .npy/.npz files, ``demo`` the main job, ``check`` derivatives.

Input files are data, never code: ``.npy`` headers are parsed with NumPy's format reader,
object dtypes are refused before any data is read, and nothing is ever unpickled
(``allow_pickle=False``); big-endian files are byte-swapped batch by batch. Bad input (a
damaged file, labels outside [0, 1], class indices outside [0, C), negative weights, a row wider than ``--max-memory``,
``--json`` naming an input) gives one line on stderr and exit code 2; Ctrl-C gives one line
and exit code 130. ``.npy`` files and uncompressed ``.npz`` members are
memory-mapped; compressed ``.npz`` members are decompressed batch by batch; no input is
loaded whole.

This module holds the argument parser and the dispatch (exit codes, one-line errors); the
commands live in :mod:`jaxloss._cmd_eval`, :mod:`jaxloss.demo` and :mod:`jaxloss._cmd_check`,
the file readers in :mod:`jaxloss.npyfiles`. The commands (and JAX) are imported only when one
runs: ``jaxloss --help`` and argument errors answer at once. Without a command, the usage is printed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap

from .npyfiles import InputError

__all__ = ["main"]

PROG = "jaxloss"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage block and exit; we want one line.
        raise InputError(f"{message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="jaxloss: exact loss functions for JAX.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{eval,demo,check,info}")
    ev = commands.add_parser(
        "eval",
        add_help=False,
        help="mean loss over .npy / .npz files, streamed in batches",
        description="Mean loss over the rows of .npy files (memory-mapped) or FILE.npz:KEY arrays, streamed in "
        "batches through one compiled step. Prints a table (or one JSON object) on stdout, progress on stderr. "
        "Exit codes: 0 done, 2 bad input, 130 interrupted.",
    )
    # The names come from the losses' declarations (jaxloss._api), which import JAX: the eval command checks
    # --loss, and `jaxloss eval --help` lists them (_EvalHelp), so that nothing else waits for JAX.
    ev.add_argument("--loss", required=True, metavar="LOSS", help="the loss to average (listed below)")
    ev.add_argument(
        "predictions", metavar="PRED", help="predictions, logits or probabilities: FILE.npy or FILE.npz:KEY"
    )
    ev.add_argument(
        "targets",
        metavar="TARGETS",
        nargs="?",
        help="labels or targets (bce-logits, bce, mse); for ce-logits integer class indices (one per row) or float "
        "distributions (PRED's shape); target logits (kl-logits), target distributions (ce), the reference "
        "(relative-entropy)",
    )
    ev.add_argument("-h", "--help", action=_EvalHelp, help="show this help message (and the losses) and exit")
    ev.add_argument(
        "--squeeze",
        action="store_true",
        help="read PRED and TARGETS of shapes (N, 1) and (N,), in either order, as (N,) both (otherwise an error: "
        "no silent broadcasting)",
    )
    ev.add_argument("--where", metavar="MASK", help="boolean selection, one per row or one per loss value")
    ev.add_argument(
        "--weights", metavar="W", help="non-negative finite weights, one per row or one per loss value (checked)"
    )
    ev.add_argument(
        "--axis", type=int, help="class axis of PRED for the losses with one (entropy, ce-logits, ...; default -1)"
    )
    ev.add_argument(
        "--base",
        type=float,
        help="logarithm base for the entropy and divergence losses (2: bits; default: nats)",
    )
    ev.add_argument(
        "--batch-size",
        type=int,
        help="rows per step (default: about 4 MiB of input per batch on a CPU, 64 MiB on a GPU)",
    )
    ev.add_argument(
        "--no-check",
        action="store_true",
        help="skip the value checks (labels and probabilities in [0, 1], class indices in [0, C), weights finite "
        "and >= 0), which run on the device batch by batch; the output says checks off",
    )
    ev.add_argument(
        "--max-memory",
        metavar="SIZE",
        help=f"memory budget for the batches (bytes, or 512M, 2G; default "
        f"{_DEFAULT_MAX_MEMORY_MIB}M): batches are sized to fit, a row that does not fit is refused",
    )
    ev.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="print one JSON object instead of the table; with PATH (put it last or write --json=PATH), write it "
        "there (atomically; never over an input). Standard JSON: a non-finite value is null, with value_nonfinite "
        '"inf", "-inf" or "nan"',
    )
    ev.set_defaults(run="jaxloss._cmd_eval")
    dm = commands.add_parser(
        "demo",
        help="train and evaluate a logistic regression on synthetic data; squared error vs cross-entropy",
    )
    dm.add_argument(
        "--plot", metavar="PNG", help="also draw the squared-error vs cross-entropy curves here (matplotlib)"
    )
    dm.set_defaults(run="jaxloss.demo")
    commands.add_parser(
        "check", help="derivative checks on every backend jax.devices() offers; exit code 1 on a failure"
    ).set_defaults(run="jaxloss._cmd_check")
    commands.add_parser(
        "info", help="versions, devices, and which kernel each workload uses here (jaxloss.info())"
    ).set_defaults(run="jaxloss._info")
    return parser


_DEFAULT_MAX_MEMORY_MIB = 512  # jaxloss._cmd_eval.DEFAULT_MAX_MEMORY, kept here so that --help needs no JAX


class _KeepNames(argparse.HelpFormatter):
    """Help text wrapped between words only: a loss name (entropy-logits) is never split at its hyphen."""

    def _fill_text(self, text, width, indent):
        text = " ".join(text.split())
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


class _EvalHelp(argparse.Action):
    """``jaxloss eval --help``: the usual help, with the losses (from their declarations) listed and as choices."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import _cmd_eval

        losses = ", ".join(_cmd_eval.LOSSES)
        parser.epilog = f"losses: {losses}"
        parser.formatter_class = _KeepNames
        parser.print_help()
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 a check failed, 2 bad input, 130 interrupted)."""
    command = PROG
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_usage(sys.stderr)
            print(f"{PROG}: error: choose a command (e.g. `{PROG} demo`; `{PROG} --help` says more)", file=sys.stderr)
            return 2
        command = f"{PROG} {args.command}"
        return importlib.import_module(args.run).run(args)
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
