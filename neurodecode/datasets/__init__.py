"""Data container, dataset loaders and the simulator."""

from ._splits import DataLeakageError, check_no_leakage
from ._stimuli import StimulusSet
from ._trials import BrainTrials, RaggedData, concatenate_trials
from .nsd import load_nsd

__all__ = ["BrainTrials", "DataLeakageError", "RaggedData", "StimulusSet",
           "check_no_leakage", "concatenate_trials"]
__all__ += ["load_nsd"]
from .simulate import simulate  # noqa: E402

__all__ += ["simulate"]
