"""Argument checks with messages that name the parameter and the fix."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ._docs import fill_doc


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Raise ``ValueError`` naming the parameter, the allowed values and the value.

    Parameters
    ----------
    name : str
        Name of the parameter, quoted in the error message.
    value : object
        Value to check.
    allowed : iterable
        The allowed values.

    Returns
    -------
    value : object
        ``value``, unchanged, when it is one of ``allowed``.
    """
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(
            f"Invalid value for the {name!r} parameter. Allowed values are "
            f"{', '.join(repr(a) for a in allowed)}, but got {value!r} instead."
        )
    return value


def check_random_state(seed: None | int | np.random.Generator) -> np.random.Generator:
    """Turn ``seed`` into a :class:`numpy.random.Generator` (never the global RNG).

    Parameters
    ----------
    seed : None | int | numpy.random.Generator
        A generator (returned as is), or a seed for a new generator (``None`` draws
        fresh entropy).

    Returns
    -------
    rng : numpy.random.Generator
        The generator.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, numbers.Integral):
        return np.random.default_rng(seed)
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {type(seed).__name__}")


def check_path(path: str | Path, *, what: str, hint: str = "", must_exist: bool = True,
                kind: str = "any") -> Path:
    """Return ``path`` as a Path; raise ``FileNotFoundError`` naming it and the fix.

    Parameters
    ----------
    path : str | pathlib.Path
        The path (``~`` is expanded).
    what : str
        What the path is, for the error message (e.g. ``"NSD root"``).
    hint : str
        How to fix a missing path, appended to the error message.
    must_exist : bool
        Whether to raise when ``path`` does not exist; when False nothing is checked.
    kind : str
        ``"dir"`` or ``"file"`` to also require a folder or a file; ``"any"`` accepts both.

    Returns
    -------
    path : pathlib.Path
        The expanded path.
    """
    p = Path(path).expanduser()
    if must_exist and not p.exists():
        msg = f"{what} not found: {p}"
        if hint:
            msg += f". {hint}"
        raise FileNotFoundError(msg)
    if must_exist and kind == "dir" and not p.is_dir():
        raise NotADirectoryError(f"{what} must be a folder, got a file: {p}. {hint}".rstrip(". ") )
    if must_exist and kind == "file" and not p.is_file():
        raise IsADirectoryError(f"{what} must be a file, got a folder: {p}. {hint}".rstrip(". "))
    return p


def ensure_finite(array: np.ndarray, *, what: str) -> None:
    """Raise ``ValueError`` if ``array`` holds NaN or inf, counting them.

    Parameters
    ----------
    array : array-like
        The values to check (only float and complex arrays can hold NaN or inf).
    what : str
        What the array is, for the error message.
    """
    arr = np.asarray(array)
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"{what} contains {n_bad} non-finite value(s) (NaN or inf). Remove or impute "
            "them before fitting (e.g. drop the affected trials or features)."
        )


@fill_doc
def resolve_device(device: str | None = "cpu") -> str:
    """Resolve a device name: ``"auto"`` → ``"cuda"`` when a GPU is visible, else ``"cpu"``.

    Other values (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) are checked and
    returned; asking for CUDA without a GPU raises with the fix.

    Parameters
    ----------
    %(device)s

    Returns
    -------
    device : str
        The resolved device name.
    """
    import torch

    device = "cpu" if device is None else str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is visible; use device='cpu' or 'auto'.")
    try:
        torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Unknown torch device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'.") from err
    return device
