"""The public API is typed: mypy sees each function's real signature (the decorators keep it, through ParamSpec),
so a misspelled keyword or a wrong argument type is reported before anything runs."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

USAGE = pathlib.Path(__file__).resolve().parent / "typing" / "usage.py"
ROOT = USAGE.parents[2]


def _expected() -> dict[int, str]:
    lines = USAGE.read_text().splitlines()
    return {n: line.split("# expect-error: ", 1)[1] for n, line in enumerate(lines, 1) if "# expect-error: " in line}


def test_mypy_reports_exactly_the_marked_mistakes():
    pytest.importorskip("mypy")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--cache-dir=/dev/null",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(USAGE),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    errors = {}
    for line in result.stdout.splitlines():
        match = re.match(rf"^{re.escape(str(USAGE))}:(\d+): error: (.*)$", line) or re.match(
            r"^tests/typing/usage\.py:(\d+): error: (.*)$", line
        )
        if match:
            errors.setdefault(int(match.group(1)), []).append(match.group(2))
    expected = _expected()
    assert len(expected) == 2
    assert set(errors) == set(expected), result.stdout + result.stderr
    for number, text in expected.items():
        assert any(text in message for message in errors[number]), (number, errors[number])
