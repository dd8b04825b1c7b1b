"""jaxloss: exact, fast loss functions for JAX — Shannon entropy, mean squared error, binary cross-entropy.

Every function is pure and jit-compiled, takes arrays by position or by optax's names (``logits=``, ``labels=``,
``predictions=``, ``targets=``) and options by keyword only, and comes with closed-form first and second derivatives.

The public names are loaded on first use (PEP 562), so that ``import jaxloss`` -- and the command line's ``--help``
-- does not import JAX until a function is asked for; ``from jaxloss import entropy`` and ``jaxloss.entropy`` work as
for any module, and type checkers read the imports below.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

if TYPE_CHECKING:
    from . import batch as batch
    from . import streaming as streaming
    from ._info import info as info
    from .categorical import ce_with_logits as ce_with_logits
    from .categorical import cross_entropy as cross_entropy
    from .categorical import kl_divergence_from_logits as kl_divergence_from_logits
    from .categorical import relative_entropy as relative_entropy
    from .categorical import softmax_cross_entropy as softmax_cross_entropy
    from .categorical import softmax_cross_entropy_with_integer_labels as softmax_cross_entropy_with_integer_labels
    from .classification import bce_with_logits as bce_with_logits
    from .classification import binary_cross_entropy as binary_cross_entropy
    from .classification import sigmoid_binary_cross_entropy as sigmoid_binary_cross_entropy
    from .entropy import binary_entropy as binary_entropy
    from .entropy import binary_entropy_from_logits as binary_entropy_from_logits
    from .entropy import entropy as entropy
    from .entropy import entropy_from_logits as entropy_from_logits
    from .reduce import mean as mean
    from .regression import half_squared_error as half_squared_error
    from .regression import mse as mse
    from .regression import squared_error as squared_error
    from .validate import checked as checked

# public name -> the module that defines it (None: the name is a module itself)
_HOMES: dict[str, str | None] = {
    "batch": None,
    "bce_with_logits": "classification",
    "binary_cross_entropy": "classification",
    "binary_entropy": "entropy",
    "binary_entropy_from_logits": "entropy",
    "ce_with_logits": "categorical",
    "checked": "validate",
    "cross_entropy": "categorical",
    "entropy": "entropy",
    "entropy_from_logits": "entropy",
    "half_squared_error": "regression",
    "kl_divergence_from_logits": "categorical",
    "info": "_info",
    "mean": "reduce",
    "mse": "regression",
    "relative_entropy": "categorical",
    "sigmoid_binary_cross_entropy": "classification",
    "softmax_cross_entropy": "categorical",
    "softmax_cross_entropy_with_integer_labels": "categorical",
    "squared_error": "regression",
    "streaming": None,
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'jaxloss' has no attribute {name!r}")
    home = _HOMES[name]
    module = importlib.import_module(f".{home or name}", __name__)
    value = module if home is None else getattr(module, name)
    globals()[name] = value  # once loaded, an ordinary module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


class _Package(types.ModuleType):
    """The import system sets a package attribute for each submodule it loads: ``jaxloss.entropy`` would become the
    module ``jaxloss.entropy`` once anything imports it. A public name that a module defines keeps its meaning (the
    function ``entropy``), whatever was imported first."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _HOMES.get(name) is not None:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
