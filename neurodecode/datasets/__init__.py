"""Data container, dataset loaders and the simulator."""

from ._splits import DataLeakageError, check_no_leakage
from ._stimuli import StimulusSet
from ._trials import BrainTrials, RaggedData, concatenate_trials

__all__ = ["BrainTrials", "DataLeakageError", "RaggedData", "StimulusSet",
           "check_no_leakage", "concatenate_trials"]
