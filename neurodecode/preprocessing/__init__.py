"""Preprocessing: fMRI (session z-score) and M/EEG helpers."""

from .channels import REGIONS, channel_regions, resolve_channels, sensor_regions
from .fmri import zscore_sessions
from .meeg import (
    MEEGPreprocessor,
    RobustScaler,
    apply_baseline,
    crop,
    filter_trials,
    pick_channels,
    resample_trials,
)

__all__ = [
    "REGIONS", "MEEGPreprocessor", "RobustScaler", "apply_baseline", "channel_regions", "crop",
    "filter_trials", "pick_channels", "resample_trials", "resolve_channels", "sensor_regions",
    "zscore_sessions",
]
