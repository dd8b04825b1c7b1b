"""Sphinx configuration for the jaxloss documentation.

Build (both run in CI, warnings are errors):

    python -m sphinx -W --keep-going -b html docs docs/_build/html
    python -m sphinx -W -b doctest docs docs/_build/doctest
"""

from __future__ import annotations

import doctest
import os

# The "Many devices and hosts" guide runs on 8 simulated CPU devices. XLA reads this flag once, when the CPU backend
# starts; nothing has imported jax yet (Sphinx reads this file before it loads any extension or imports jaxloss), so
# every page's doctests and autodoc's import see 8 devices. With more than one device the row kernels step aside
# for the XLA formulations (see the guide), so the examples here also check that path.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
).strip()

import jaxloss  # after XLA_FLAGS

project = "jaxloss"
author = "The jaxloss Authors"
copyright = "The jaxloss Authors"
release = jaxloss.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# MyST: $…$ math, ::: fences, and heading anchors so that pages can link to sections (#numerics-contract).
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# autodoc + napoleon: Google-style docstrings, signatures as written (the decorators keep them).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# doctest: the docstrings' "Example:" sections and the pages' ```{doctest} blocks, with one shared set of imports.
doctest_global_setup = """
import jax
import jax.numpy as jnp
import numpy as np

import jaxloss
"""
doctest_default_flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS | doctest.DONT_ACCEPT_TRUE_FOR_1

html_theme = "furo"
html_title = f"jaxloss {release}"


# Two guards, so that the site stays what CI claims it is:
# 1. every example is checked: a Python code block that is not a doctest ({doctest}, or {testcode} with
#    {testoutput}) is a warning, so `-W` fails. bad_inputs.md is generated and its calls are tested by
#    tests/test_bad_inputs.py.
# 2. the API reference documents every public name (jaxloss.__all__, jaxloss.batch.__all__,
#    jaxloss.streaming.__all__).
_UNCHECKED_EXEMPT = {"bad_inputs"}


def _check_examples(app, doctree):
    from docutils import nodes
    from sphinx.util import logging

    if app.env.docname in _UNCHECKED_EXEMPT:
        return
    for node in doctree.findall(nodes.literal_block):
        if node.get("language") in {"python", "py", "python3", "pycon"} and "testnodetype" not in node:
            logging.getLogger(__name__).warning(
                "a Python example that no doctest checks: write it as a {doctest} block (>>> with outputs) or "
                "as {testcode} with {testoutput}",
                location=node,
            )


def _public_names():
    import types

    for module in (jaxloss, jaxloss.batch, jaxloss.streaming):
        for name in module.__all__:
            if not isinstance(getattr(module, name), types.ModuleType):
                yield f"{module.__name__}.{name}"


def _check_api_coverage(app, env):
    from sphinx.util import logging

    documented = set(env.get_domain("py").objects)
    for name in _public_names():
        if name not in documented:
            logging.getLogger(__name__).warning(f"public name {name} is missing from the API reference (docs/api.rst)")


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    # A NamedTuple's fields are documented by its docstring's "Attributes:" section; autodoc would list each a second
    # time (as "Alias for field number 0"), a duplicate object description.
    return True if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number") else None


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("doctree-read", _check_examples)
    app.connect("env-check-consistency", _check_api_coverage)
