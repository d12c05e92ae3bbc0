"""Analyses of decoding results: statistics, time windows, atlases and region ablation.

Atlases and ablation are imported on first use (nilearn / scipy stay unloaded until then).
"""

from typing import Any

from .stats import bootstrap_ci, fdr_bh, noise_ceiling, permutation_pvalue
from .windows import crop_times, decode_time_windows, time_windows

_ABLATION = ("AblationResult", "ablate")
_ATLASES = ("Atlas", "NSDAtlas", "SensorAtlas", "SphereAtlas", "SubjectAtlas", "TimeWindowAtlas", "VolumeAtlas",
            "load_atlas", "load_dosenbach_2010", "load_schaefer_2018", "load_seitzman_2018", "load_yeo_2011",
            "parse_atlas")
__all__ = ["AblationResult", "Atlas", "NSDAtlas", "SensorAtlas", "SphereAtlas", "SubjectAtlas", "TimeWindowAtlas",
           "VolumeAtlas", "ablate", "bootstrap_ci", "crop_times", "decode_time_windows", "fdr_bh", "load_atlas",
           "load_dosenbach_2010", "load_schaefer_2018", "load_seitzman_2018", "load_yeo_2011", "noise_ceiling",
           "parse_atlas", "permutation_pvalue", "time_windows"]

_LAZY = {name: "ablation" for name in _ABLATION} | {name: "atlases" for name in _ATLASES}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
