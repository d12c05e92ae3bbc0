"""Preprocessing: fMRI (session z-score) and M/EEG helpers."""

from .fmri import zscore_sessions

__all__ = ["zscore_sessions"]
