"""Analyses of decoding results: statistics and time-window decoding (ROI / network ablation: later)."""

from .stats import bootstrap_ci, fdr_bh, permutation_pvalue
from .windows import crop_times, decode_time_windows, time_windows

__all__ = ["bootstrap_ci", "crop_times", "decode_time_windows", "fdr_bh", "permutation_pvalue",
           "time_windows"]
