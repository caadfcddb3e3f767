# SPDX-License-Identifier: Apache-2.0
"""recops: fast C++/CUDA kernels for deep-learning recommendation models, called from PyTorch."""

from . import _C
from ._runtime import checks_enabled, set_checks
from . import ops
from . import nn
from .data.jagged import Jagged
from .data.keyed_jagged import KeyedJagged

__version__ = "0.1.0"


def has_cuda() -> bool:
    """True if this build of recops contains CUDA kernels (a GPU is still needed to run them)."""
    return bool(_C.has_cuda())


__all__ = ["Jagged", "KeyedJagged", "checks_enabled", "has_cuda", "nn", "ops", "set_checks", "__version__"]
