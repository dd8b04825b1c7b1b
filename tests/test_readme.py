"""Every Python example in README.md runs as written, each in a fresh interpreter.

Blocks that read the files the README's `eval` example writes under /tmp are run after that bash block
makes them (at a reduced size: the same script with a smaller n), so they run as written too.
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
TIMEOUT_S = 240


def _run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def eval_files():
    """The files the README's eval example writes, at 1/100 of the size."""
    writer = next(code for lang, code in BLOCKS if lang == "bash" and "np.save(" in code)
    script = writer.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0].replace("n = 10**7", "n = 10**5")
    script = script.replace("size=10**6", "size=10**4")
    _run([sys.executable, "-c", script], ROOT, dict(os.environ))


def test_readme_has_examples():
    assert len(PYTHON) >= 5


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_python_block_runs(index, eval_files, tmp_path):
    code = PYTHON[index]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    _run([sys.executable, "-c", code], tmp_path, env)


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
