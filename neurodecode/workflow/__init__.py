"""Workflows behind the command line: ``neurodecode fit`` and ``neurodecode adapt``.

:func:`run_fit` (data → preprocessing → targets → decoders → retrieval → report)
and :func:`run_adapt` (a fitted decoder adapted to a new subject) and
:func:`run_ablate` (atlas-region ablation of a fitted decoder) are also the
Python entry points for scripted runs; :func:`run_evaluate` scores a published
checkpoint on the user's data with the same run folder. :func:`run_sweep` runs a grid of fits
through submitit (local processes or a SLURM job array) and
:func:`run_summarize` tabulates run folders over seeds.
"""

from ._data import simulated_root
from ._run import FitResult
from .ablate import run_ablate
from .adapt import run_adapt
from .evaluate import run_evaluate
from .export import export_run, model_card_from_run
from .fit import run_fit
from .summarize import SummaryResult, collect_runs, run_summarize
from .sweep import Sweep, SweepJob, SweepResult, expand_sweep, parse_grid, parse_seeds, run_sweep

__all__ = ["FitResult", "Sweep", "SweepJob", "SweepResult", "SummaryResult", "collect_runs", "expand_sweep",
           "parse_grid", "parse_seeds", "run_ablate", "run_adapt", "run_fit", "run_summarize", "run_sweep",
           "simulated_root"]
__all__ += ["export_run", "model_card_from_run"]
__all__ += ["run_evaluate"]
