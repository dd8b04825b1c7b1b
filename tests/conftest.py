"""Shared test configuration: seeded data, dtype tolerances, and x64 control.

Warnings are errors (pyproject ``filterwarnings``). Tests that need float64 use the
``x64`` fixture, which enables it only for their duration.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

# Scripts that live beside the tests but are not test modules (run as programs, or in a subprocess):
# keep pytest's doctest collection from importing them (typing/usage.py is read by mypy, never run).
collect_ignore_glob = ["make_reference.py", "multihost_*.py", "sharding_*.py", "*_worker.py", "typing/*.py"]


@pytest.fixture
def x64():
    """Enable 64-bit floats for one test."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(params=["xla", "cpu", "pallas"])
def entropy_kernel(request):
    """Run an ``entropy_from_logits`` test on each of its paths: ``xla``; ``cpu``, the C++ row kernel (where the
    kernel cannot take an input, e.g. float64, ``implementation=None`` falls back to the best available, as
    ``JAXLOSS_IMPLEMENTATION`` does); and ``pallas``, the Pallas row kernel (natively on a CUDA GPU, through
    Pallas' interpreter elsewhere). The path is a static argument: nothing needs JAX's caches cleared."""
    from jaxloss import _kernels

    with _kernels.preferring(request.param):
        yield request.param


@pytest.fixture(params=["xla", "cpu"])
def entropy_path(request):
    """Run an ``entropy`` (of probabilities) test on both of its paths: XLA, and the C++ row kernel."""
    from jaxloss import _kernels

    with _kernels.preferring(request.param):
        yield request.param
