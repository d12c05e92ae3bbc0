"""The ``"neurodecode"`` logger, the ``verbose`` decorator and ``warn``."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, TypeVar

from ._docs import fill_doc

logger = logging.getLogger("neurodecode")
logger.propagate = False
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(os.environ.get("NEURODECODE_LOGGING_LEVEL", "INFO").upper())

F = TypeVar("F", bound=Callable[..., Any])

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _parse_level(verbose: bool | str | int | None) -> int | None:
    if verbose is None:
        return None
    if isinstance(verbose, bool):
        return logging.INFO if verbose else logging.WARNING
    if isinstance(verbose, str):
        key = verbose.lower()
        if key not in _LEVELS:
            raise ValueError(
                f"verbose must be one of {sorted(_LEVELS)} or a bool/int, got {verbose!r}"
            )
        return _LEVELS[key]
    return int(verbose)


def set_log_level(verbose: bool | str | int | None = None) -> int:
    """Set the neurodecode log level and return the previous one.

    Parameters
    ----------
    verbose : bool | str | int | None
        ``True`` → INFO, ``False`` → WARNING, a level name or number.
        ``None`` reads ``NEURODECODE_LOGGING_LEVEL`` (default INFO).

    Returns
    -------
    old_level : int
        The previous log level, as a number.
    """
    old = logger.level
    level = _parse_level(verbose)
    if level is None:
        level = _LEVELS.get(os.environ.get("NEURODECODE_LOGGING_LEVEL", "info").lower(), logging.INFO)
    logger.setLevel(level)
    return old


@contextmanager
@fill_doc
def use_log_level(verbose: bool | str | int | None):
    """Context manager that changes the log level temporarily.

    Parameters
    ----------
    %(verbose)s
    """
    level = _parse_level(verbose)
    if level is None:
        yield
        return
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def verbose(func: F) -> F:
    """Decorator: apply the function's ``verbose`` argument for one call.

    Raises ``TypeError`` at decoration time if the function has no ``verbose``
    parameter (as MNE's decorator does).

    Parameters
    ----------
    func : callable
        Function with a ``verbose`` parameter.

    Returns
    -------
    wrapper : callable
        ``func`` wrapped so that each call runs under the log level of its
        ``verbose`` argument (see :func:`use_log_level`).
    """
    sig = inspect.signature(func)
    if "verbose" not in sig.parameters:
        raise TypeError(f"{func.__qualname__} has no 'verbose' parameter")

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        bound = sig.bind_partial(*args, **kwargs)
        value = bound.arguments.get("verbose", None)
        with use_log_level(value):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Emit a warning that points at the first frame outside neurodecode.

    Parameters
    ----------
    message : str
        The warning message (also logged at DEBUG level).
    category : type of Warning
        Warning class.
    """
    import neurodecode

    root = os.path.dirname(neurodecode.__file__)
    frame = inspect.currentframe()
    level = 1
    while frame is not None:
        fname = frame.f_code.co_filename
        if not fname.startswith(root):
            break
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
    logger.debug("warning: %s", message)
