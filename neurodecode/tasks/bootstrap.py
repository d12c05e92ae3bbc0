"""Vectorised item bootstrap shared by the task scorers and :mod:`neurodecode.analysis.stats`.

A bootstrap replicate that resamples ``n`` items with replacement is represented by
its *count vector*: how many times each item was drawn (a multinomial draw). A
statistic that is a (weighted) mean of per-item values then becomes one matrix
product, ``counts @ values / n``, for all replicates at once, and the same count
matrix can be reused for every metric so that their replicates are paired.

:func:`random_derangement` draws the wrong pairings of the shuffled-pairing baselines.
"""

from __future__ import annotations

import numpy as np

from ..utils import check_random_state


def check_ci(ci: float) -> float:
    """Validate a confidence level.

    Parameters
    ----------
    ci : float
        The confidence level, strictly between 0 and 1 (e.g. 0.95).

    Returns
    -------
    ci : float
        The level as a float.

    Raises
    ------
    ValueError
        If ``ci`` is not strictly between 0 and 1.
    """
    ci = float(ci)
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be strictly between 0 and 1 (e.g. 0.95), got {ci!r}")
    return ci


def check_n_boot(n_boot: int) -> int:
    """Validate a number of bootstrap replicates.

    Parameters
    ----------
    n_boot : int
        The number of replicates, a positive integer.

    Returns
    -------
    n_boot : int
        The number as an int.

    Raises
    ------
    ValueError
        If ``n_boot`` is a bool, not an integer value, or < 1.
    """
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    return int(n_boot)


def bootstrap_counts(n_items: int, n_boot: int, random_state=None) -> np.ndarray:
    """Return an int array, shape (n_boot, n_items): draws of each item per replicate.

    Row ``b`` is the multinomial count vector of one resample of ``n_items`` items
    with replacement, so every row sums to ``n_items``.

    Parameters
    ----------
    n_items : int
        Number of items resampled.
    n_boot : int
        Number of bootstrap replicates.
    random_state : None | int | numpy.random.Generator
        Seed or generator of the resampling (see :func:`neurodecode.utils.check_random_state`).

    Returns
    -------
    counts : array of int, shape (n_boot, n_items)
        How many times each item was drawn in each replicate.
    """
    rng = check_random_state(random_state)
    idx = rng.integers(0, n_items, size=(n_boot, n_items))
    flat = idx + (np.arange(n_boot)[:, None] * n_items)
    counts = np.bincount(flat.ravel(), minlength=n_boot * n_items)
    return counts.reshape(n_boot, n_items)


def percentile_interval(replicates: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of ``replicates`` (NaN replicates ignored).

    Parameters
    ----------
    replicates : array, shape (n_boot, ...)
        Bootstrap replicates of one or more statistics.
    ci : float
        Confidence level in (0, 1); the bounds are the ``(1 - ci) / 2`` and ``(1 + ci) / 2``
        quantiles.

    Returns
    -------
    low : array, shape (...)
        Lower bound of each statistic.
    high : array, shape (...)
        Upper bound of each statistic.
    """
    alpha = (1.0 - ci) / 2.0
    reps = np.asarray(replicates, dtype=float)
    if np.isnan(reps).any():
        low = np.nanquantile(reps, alpha, axis=0)
        high = np.nanquantile(reps, 1.0 - alpha, axis=0)
    else:
        low = np.quantile(reps, alpha, axis=0)
        high = np.quantile(reps, 1.0 - alpha, axis=0)
    return low, high


def random_derangement(n_items: int, random_state=None) -> np.ndarray:
    """A uniformly random permutation of ``range(n_items)`` with no fixed point.

    Used by the shuffled-pairing baselines of the task scorers: item ``i`` is scored against
    the reference of item ``perm[i]``, never its own. Drawn by rejection (a random permutation
    is a derangement with probability ~1/e, 1/2 for two items).

    Parameters
    ----------
    n_items : int
        Number of items, at least 2.
    random_state : None | int | numpy.random.Generator
        Seed or generator (see :func:`neurodecode.utils.check_random_state`).

    Returns
    -------
    perm : array of int, shape (n_items,)
        ``perm[i] != i`` for every ``i``.
    """
    n_items = int(n_items)
    if n_items < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n_items}")
    rng = check_random_state(random_state)
    idx = np.arange(n_items)
    while True:
        perm = rng.permutation(n_items)
        if not np.any(perm == idx):
            return perm
