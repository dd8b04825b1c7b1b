"""``python -m jaxloss`` (and the ``jaxloss`` console script): ``eval``, ``demo`` (the default) and ``check``.

The parser and dispatch live in :mod:`jaxloss.cli` (``main(argv)`` returns the exit code); the commands
in :mod:`jaxloss._cmd_eval`, :mod:`jaxloss.demo` and :mod:`jaxloss._cmd_check`.
"""

from __future__ import annotations

import sys

from jaxloss.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
