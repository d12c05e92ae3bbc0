"""Workflows behind the command line: ``neurodecode fit`` and ``neurodecode adapt``.

:func:`run_fit` (data → preprocessing → targets → decoders → retrieval → report)
and :func:`run_adapt` (a fitted decoder adapted to a new subject) are also the
Python entry points for scripted runs.
"""

from ._data import simulated_root
from ._run import FitResult
from .adapt import run_adapt
from .fit import run_fit

__all__ = ["FitResult", "run_adapt", "run_fit", "simulated_root"]
