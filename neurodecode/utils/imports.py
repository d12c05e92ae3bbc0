"""Optional heavy dependencies, imported on first use with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(module: str, *, extra: str, what: str) -> ModuleType:
    """Import ``module`` (after the torchvision repair) or raise ``ImportError`` naming the extra.

    Parameters
    ----------
    module : str
        e.g. ``"open_clip"`` or ``"transformers"``.
    extra : str
        The neurodecode extra that installs it (``pip install 'neurodecode[extra]'``).
    what : str
        What needs it, for the message (e.g. ``"CLIP encoders"``).

    Returns
    -------
    module : module
        The imported module.

    Raises
    ------
    ImportError
        If ``module`` is not installed, naming the extra to install.
    """
    from .._compat import ensure_torchvision

    ensure_torchvision()
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{what} need {module}: pip install 'neurodecode[{extra}]'") from err
