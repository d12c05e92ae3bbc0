"""Data container, dataset loaders, the dataset registry and the simulator."""

from ._splits import DataLeakageError, check_no_leakage
from ._stimuli import StimulusSet
from ._trials import BrainTrials, RaggedData, concatenate_trials
from .nsd import load_nsd

__all__ = ["BrainTrials", "DataLeakageError", "RaggedData", "StimulusSet",
           "check_no_leakage", "concatenate_trials"]
__all__ += ["load_nsd"]
from .simulate import simulate  # noqa: E402

__all__ += ["simulate"]
from .things_eeg import load_things_eeg2  # noqa: E402

__all__ += ["load_things_eeg2"]
from .mne import from_mne  # noqa: E402
from .things_meg import load_things_meg  # noqa: E402

__all__ += ["from_mne", "load_things_meg"]
from .masc import load_masc  # noqa: E402

__all__ += ["load_masc"]
from . import _builtins  # noqa: E402,F401  (registers the built-in datasets)
from .registry import (  # noqa: E402
    Conformance,
    DatasetSpec,
    Simulator,
    get_dataset,
    list_datasets,
    register_dataset,
    unregister_dataset,
)

__all__ += ["Conformance", "DatasetSpec", "Simulator", "get_dataset", "list_datasets", "register_dataset",
            "unregister_dataset"]
from .download import DownloadReport, download, downloadable_datasets  # noqa: E402

__all__ += ["DownloadReport", "download", "downloadable_datasets"]
