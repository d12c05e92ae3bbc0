"""neurodecode: decode brain signals (fMRI, MEG, EEG) into the stimuli that caused them.

Subpackages load lazily, so ``import neurodecode`` is cheap and changes nothing
global beyond setting up the ``"neurodecode"`` logger.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

_SUBMODULES = (
    "analysis", "config", "datasets", "embeddings", "io", "models", "preprocessing",
    "reports", "tasks", "training", "utils", "workflow",
)

__all__ = [*_SUBMODULES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'neurodecode' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
