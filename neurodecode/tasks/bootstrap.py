"""Vectorised item bootstrap shared by the task scorers and :mod:`neurodecode.analysis.stats`.

A bootstrap replicate that resamples ``n`` items with replacement is represented by
its *count vector*: how many times each item was drawn (a multinomial draw). A
statistic that is a (weighted) mean of per-item values then becomes one matrix
product, ``counts @ values / n``, for all replicates at once, and the same count
matrix can be reused for every metric so that their replicates are paired.
"""

from __future__ import annotations

import numpy as np

from ..utils import check_random_state


def check_ci(ci: float) -> float:
    ci = float(ci)
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be strictly between 0 and 1 (e.g. 0.95), got {ci!r}")
    return ci


def check_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    return int(n_boot)


def bootstrap_counts(n_items: int, n_boot: int, random_state=None) -> np.ndarray:
    """Return an int array, shape (n_boot, n_items): draws of each item per replicate.

    Row ``b`` is the multinomial count vector of one resample of ``n_items`` items
    with replacement, so every row sums to ``n_items``.
    """
    rng = check_random_state(random_state)
    idx = rng.integers(0, n_items, size=(n_boot, n_items))
    flat = idx + (np.arange(n_boot)[:, None] * n_items)
    counts = np.bincount(flat.ravel(), minlength=n_boot * n_items)
    return counts.reshape(n_boot, n_items)


def percentile_interval(replicates: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of ``replicates`` (NaN replicates ignored)."""
    alpha = (1.0 - ci) / 2.0
    reps = np.asarray(replicates, dtype=float)
    if np.isnan(reps).any():
        low = np.nanquantile(reps, alpha, axis=0)
        high = np.nanquantile(reps, 1.0 - alpha, axis=0)
    else:
        low = np.quantile(reps, alpha, axis=0)
        high = np.quantile(reps, 1.0 - alpha, axis=0)
    return low, high
