"""``python -m jaxloss`` (and the ``jaxloss`` console script): ``eval``, ``demo`` (the default) and ``check``.

The commands live in :mod:`jaxloss.cli`; ``main(argv)`` returns the exit code.
"""

from __future__ import annotations

import sys

from jaxloss.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
