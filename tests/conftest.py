"""Shared test configuration: seeded data, dtype tolerances, and x64 control.

Warnings are errors (pyproject ``filterwarnings``). Tests that need float64 use the
``x64`` fixture, which enables it only for their duration.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest


@pytest.fixture
def x64():
    """Enable 64-bit floats for one test."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
