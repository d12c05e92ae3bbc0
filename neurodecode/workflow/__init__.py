"""Workflows behind the command line: ``neurodecode fit`` and ``neurodecode adapt``.

:func:`run_fit` (data → preprocessing → targets → decoders → retrieval → report)
and :func:`run_adapt` (a fitted decoder adapted to a new subject) and
:func:`run_ablate` (atlas-region ablation of a fitted decoder) are also the
Python entry points for scripted runs.
"""

from ._data import simulated_root
from ._run import FitResult
from .ablate import run_ablate
from .adapt import run_adapt
from .fit import run_fit

__all__ = ["FitResult", "run_ablate", "run_adapt", "run_fit", "simulated_root"]
