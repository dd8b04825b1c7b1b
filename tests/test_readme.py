"""Every Python example in README.md runs as written, each in a fresh interpreter, and prints what the README says.

Printed output is checked two ways, as the README shows it: a ``print(...)  # expected`` line must print exactly the
comment (whitespace aside), and a block followed by "prints" and a plain code block must print exactly that text.

Blocks that read the files the README's `eval` example writes under /tmp (if the README has one) are run after
that bash block makes them (at a reduced size: the same script with a smaller n), so they run as written too.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(python|bash)\n(.*?)^```", README, re.S | re.M)
PYTHON = [code for lang, code in BLOCKS if lang == "python" and ">>>" not in code]
# A python block followed by "prints" and a plain block: that block is its whole expected output.
PRINTS = dict(re.findall(r"^```python\n(.*?)^```\n\nprints\n\n```\n(.*?)^```", README, re.S | re.M))
# `print(...)  # expected` (the comment is the expected output; a comment starting with "(" after a tuple print too)
ANNOTATED = re.compile(r"^(\s*)(print\(.*\))\s+#\s?(.*)$")
MARK = "\x1fREADME-EXPECT"
TIMEOUT_S = 240


def _run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def eval_files():
    """The files the README's eval example writes, at 1/100 of the size."""
    writer = next((code for lang, code in BLOCKS if lang == "bash" and "np.save(" in code), None)
    if writer is None:  # the README no longer writes files (the eval example lives in docs/guides/eval.md)
        return
    script = writer.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0].replace("n = 10**7", "n = 10**5")
    script = script.replace("size=10**6", "size=10**4")
    _run([sys.executable, "-c", script], ROOT, dict(os.environ))


def test_readme_has_examples():
    # The README is a front page: the quickstart session and one complete program; the rest are doctests in docs/.
    assert len(PYTHON) >= 1


def _instrumented(code: str) -> tuple[str, list[str]]:
    """``code`` with each annotated print bracketed by marker lines, and the expected outputs in order."""
    lines, expected = [], []
    for line in code.splitlines():
        match = ANNOTATED.match(line)
        if match:
            indent, call, comment = match.groups()
            expected.append(comment)
            line = f"{indent}print({MARK!r}, flush=True); {call}; print({MARK!r}, flush=True)"
        lines.append(line)
    return "\n".join(lines) + "\n", expected


def _normalized(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines())


def _annotated_outputs(stdout: str) -> list[str]:
    parts = stdout.split(MARK + "\n")
    return [_normalized(parts[i]) for i in range(1, len(parts), 2)]


def test_the_output_checks_catch_a_wrong_comment():
    code, expected = _instrumented("x = 2\nprint(x + 1)  # 4\nprint('a', 1)  # a 1\n")
    stdout = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert expected == ["4", "a 1"]
    assert _annotated_outputs(stdout) == ["3", "a 1"]  # 3 != 4: test_readme_python_block_runs would fail


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_python_block_runs(index, eval_files, tmp_path):
    code, expected = _instrumented(PYTHON[index])
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    stdout = _run([sys.executable, "-c", code], tmp_path, env).stdout
    assert _annotated_outputs(stdout) == [_normalized(e) for e in expected]
    if PYTHON[index] in PRINTS:
        assert _normalized(stdout.replace(MARK + "\n", "")) == _normalized(PRINTS[PYTHON[index]])


def test_readme_quickstart_doctest():
    """The >>> session in the quickstart, checked like a doctest."""
    import doctest

    import jaxloss  # noqa: F401  (imported by the examples)

    sessions = [code for lang, code in BLOCKS if lang == "python" and ">>>" in code]
    assert sessions
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for i, text in enumerate(sessions):
        runner.run(parser.get_doctest(text, {}, f"README[{i}]", "README.md", 0))
    assert runner.failures == 0
