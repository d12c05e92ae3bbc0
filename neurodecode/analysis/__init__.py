"""Analyses of decoding results: statistics (and, later, ROI / network / time-window ablation)."""

from .stats import bootstrap_ci, fdr_bh, permutation_pvalue

__all__ = ["bootstrap_ci", "fdr_bh", "permutation_pvalue"]
