"""jaxloss: exact, fast loss functions for JAX — Shannon entropy, mean squared error, binary cross-entropy.

Every function is pure and jit-compiled, takes arrays by position or by optax's names (``logits=``, ``labels=``,
``predictions=``, ``targets=``) and options by keyword only, and comes with closed-form first and second derivatives.
"""

from . import batch as batch
from . import streaming as streaming
from ._info import __version__ as __version__
from ._info import info as info
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

__all__ = [
    "batch",
    "bce_with_logits",
    "binary_cross_entropy",
    "binary_entropy",
    "binary_entropy_from_logits",
    "checked",
    "entropy",
    "entropy_from_logits",
    "half_squared_error",
    "info",
    "mean",
    "mse",
    "sigmoid_binary_cross_entropy",
    "squared_error",
    "streaming",
]
