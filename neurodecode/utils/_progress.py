"""Progress bars (tqdm) that honour ``NEURODECODE_TQDM`` and the log level."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from ._logging import logger


def progress_disabled() -> bool:
    """Whether progress bars are off: ``NEURODECODE_TQDM=off``, or a log level above INFO (``-q``).

    Returns
    -------
    disabled : bool
        True when neither neurodecode's nor a library's progress bars should be shown.
    """
    env = os.environ.get("NEURODECODE_TQDM", "auto").lower()
    if env in ("off", "0", "false", "no"):
        return True
    return logger.getEffectiveLevel() > logging.INFO


_disabled = progress_disabled


def ProgressBar(iterable: Iterable | None = None, *, total: int | None = None,
                desc: str | None = None, unit: str = "it", **kwargs: Any):
    """Return a tqdm progress bar.

    Disabled when ``NEURODECODE_TQDM=off`` or the neurodecode log level is
    above INFO. ``NEURODECODE_TQDM=ascii`` forces ASCII bars.

    Parameters
    ----------
    iterable : iterable | None
        Iterable to wrap; ``None`` for a bar updated by hand.
    total : int | None
        Expected number of iterations (by default ``len(iterable)`` when it has one).
    desc : str | None
        Label shown before the bar.
    unit : str
        Name of one iteration.
    **kwargs
        Passed to :class:`tqdm.auto.tqdm` (``leave`` defaults to False).

    Returns
    -------
    bar : tqdm.auto.tqdm
        The progress bar.
    """
    from tqdm.auto import tqdm

    ascii_ = os.environ.get("NEURODECODE_TQDM", "").lower() == "ascii"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=_disabled(),
                ascii=ascii_ or None, leave=kwargs.pop("leave", False),
                dynamic_ncols=True, **kwargs)
