# SPDX-License-Identifier: Apache-2.0
"""recops: fast C++/CUDA kernels for deep-learning recommendation models, called from PyTorch.

recops.distributed, .models, .retrieval and .train are imported on first use of the attribute
(`recops.models.HSTU`), not by `import recops`.
"""

from importlib import import_module as _import_module
from importlib.util import find_spec as _find_spec

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


# Imported on first attribute access. "data" is imported already (Jagged and KeyedJagged live there).
# "train" may be absent from a tree: then it is no attribute, as for any unknown name.
_LAZY_SUBPACKAGES = ("data", "distributed", "models", "retrieval", "train")


def __getattr__(name: str):
    if name in _LAZY_SUBPACKAGES:
        try:
            return _import_module(f"{__name__}.{name}")  # also binds it in this module's namespace
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":  # the subpackage exists; something it imports does not
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    lazy = [n for n in _LAZY_SUBPACKAGES if n in globals() or _find_spec(f"{__name__}.{n}")]
    return sorted(set(globals()) | set(lazy))


__all__ = ["Jagged", "KeyedJagged", "checks_enabled", "has_cuda", "nn", "ops", "set_checks", "__version__"]
