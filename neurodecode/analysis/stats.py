"""Statistics for decoding results: bootstrap CIs, permutation p-values, FDR and NSD's noise ceiling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.random import Generator

from ..tasks.bootstrap import bootstrap_counts, check_ci, check_n_boot, percentile_interval
from ..utils import check_option, check_random_state, fill_doc, verbose

__all__ = ["bootstrap_ci", "fdr_bh", "noise_ceiling", "permutation_pvalue"]


@verbose
@fill_doc
def bootstrap_ci(values: Any, statistic: Callable[..., Any] = np.mean, *, n_boot: int = 1000,
                 ci: float = 0.95, random_state: None | int | Generator = 0,
                 return_replicates: bool = False,
                 verbose: bool | str | int | None = None) -> tuple[Any, Any] | tuple[Any, Any, np.ndarray]:
    """Percentile bootstrap confidence interval of a statistic over items.

    Parameters
    ----------
    values : array-like, shape (n_items,) | (n_items, n_columns)
        One value per item (e.g. per-item hit indicators of a retrieval metric, or
        per-item correlations). Items (rows) are resampled with replacement; with
        several columns, all columns share the same resamples (paired intervals).
    statistic : callable
        Reduces items to a number, called as ``statistic(sample, axis=-1)`` on an array
        of shape (n_boot, n_items) (or (n_boot, n_columns, n_items)). Callables that do
        not take ``axis`` are called once per replicate. ``np.mean`` (the default) uses a
        vectorised path based on resample counts.
    n_boot : int
        Number of bootstrap resamples.
    ci : float
        Confidence level, strictly between 0 and 1.
    random_state : None | int | numpy.random.Generator
        Seed of the resampling.
    return_replicates : bool
        Also return the bootstrap replicates.
    %(verbose)s

    Returns
    -------
    ci_low, ci_high : float | ndarray
        Bounds of the percentile interval (arrays of shape (n_columns,) for 2-D input).
    replicates : ndarray, shape (n_boot,) | (n_boot, n_columns)
        Only if ``return_replicates``.
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim not in (1, 2) or arr.shape[0] < 1:
        raise ValueError(f"values must have shape (n_items,) or (n_items, n_columns), got {arr.shape}")
    n_boot = check_n_boot(n_boot)
    ci = check_ci(ci)
    rng = check_random_state(random_state)
    n = arr.shape[0]
    cols = arr.reshape(n, -1)
    if statistic is np.mean or statistic is np.average:
        counts = bootstrap_counts(n, n_boot, rng).astype(np.float64)
        reps = counts @ cols / n                                   # (n_boot, n_columns)
    else:
        idx = rng.integers(0, n, size=(n_boot, n))
        samples = cols.T[:, idx].transpose(1, 0, 2)                # (n_boot, n_columns, n)
        try:
            reps = np.asarray(statistic(samples, axis=-1), dtype=float)
            if reps.shape != samples.shape[:2]:
                raise TypeError
        except TypeError:
            reps = np.array([[statistic(s) for s in rep] for rep in samples], dtype=float)
    low, high = percentile_interval(reps, ci)
    if arr.ndim == 1:
        low, high, reps = float(low[0]), float(high[0]), reps[:, 0]
    if return_replicates:
        return low, high, reps
    return low, high


@verbose
@fill_doc
def permutation_pvalue(observed: Any, null_samples: Any, *,
                       alternative: Literal["greater", "less", "two-sided"] = "greater",
                       verbose: bool | str | int | None = None) -> float | np.ndarray:
    """P-value of an observed statistic against permutation (null) samples.

    Uses the +1 correction of Phipson & Smyth (2010), ``(1 + #{null as extreme}) /
    (1 + n_null)``, so the p-value is never 0 and the test is exact under
    exchangeability.

    Parameters
    ----------
    observed : float | array-like, shape (n_tests,)
        Statistic(s) computed on the real data.
    null_samples : array-like, shape (n_null,) | (n_null, n_tests)
        The statistic recomputed under the null (e.g. shuffled labels).
    alternative : "greater" | "less" | "two-sided"
        ``"greater"`` counts null values >= observed; ``"less"`` null values <= observed;
        ``"two-sided"`` is ``min(1, 2 * min(p_greater, p_less))``.
    %(verbose)s

    Returns
    -------
    pvalue : float | ndarray
        A float for a scalar ``observed``, else one p-value per test.
    """
    check_option("alternative", alternative, ("greater", "less", "two-sided"))
    obs = np.asarray(observed, dtype=float)
    null = np.asarray(null_samples, dtype=float)
    if null.ndim == 0 or null.shape[0] < 1:
        raise ValueError("null_samples must hold at least one null statistic")
    if null.shape[1:] != obs.shape:
        raise ValueError(
            f"null_samples must have shape (n_null,) + observed.shape = (n_null, *{obs.shape}), "
            f"got {null.shape}"
        )
    if np.isnan(obs).any() or np.isnan(null).any():
        raise ValueError("observed and null_samples must not contain NaN")
    n_null = null.shape[0]
    p_greater = (1.0 + (null >= obs).sum(0)) / (1.0 + n_null)
    p_less = (1.0 + (null <= obs).sum(0)) / (1.0 + n_null)
    if alternative == "greater":
        p = p_greater
    elif alternative == "less":
        p = p_less
    else:
        p = np.minimum(1.0, 2.0 * np.minimum(p_greater, p_less))
    return float(p) if np.ndim(p) == 0 else np.asarray(p)


@verbose
@fill_doc
def fdr_bh(pvals: Any, alpha: float = 0.05, *,
           verbose: bool | str | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg false discovery rate correction (independent or positively dependent tests).

    Parameters
    ----------
    pvals : array-like
        P-values, any shape.
    alpha : float
        FDR level used for ``reject``.
    %(verbose)s

    Returns
    -------
    reject : ndarray of bool
        True where the null hypothesis is rejected at FDR ``alpha`` (same shape as
        ``pvals``).
    qvals : ndarray of float
        BH-adjusted p-values (q-values), same shape as ``pvals``, monotone in ``pvals``
        and capped at 1. As in :func:`mne.stats.fdr_correction`.
    """
    p = np.asarray(pvals, dtype=float)
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("pvals must be numbers in [0, 1] without NaN")
    flat = p.ravel()
    m = flat.size
    if m == 0:
        return np.zeros(p.shape, dtype=bool), p.copy()
    order = np.argsort(flat, kind="stable")
    ranked = flat[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(ranked, 1.0)
    q = q.reshape(p.shape)
    return q <= alpha, q


def noise_ceiling(ncsnr: Any, n_trials: float = 1) -> float | np.ndarray:
    """Noise ceiling (percent of explainable variance) from NSD's noise-ceiling SNR.

    Uses the formula of Allen et al. (2022), ``NC = 100 * ncsnr**2 / (ncsnr**2 + 1 / n_trials)``:
    the percentage of the variance of the responses (averaged over ``n_trials`` trials per image)
    that the stimulus can explain at best.

    Parameters
    ----------
    ncsnr : float | array-like
        Noise-ceiling SNR per voxel (e.g. ``info["ncsnr"]`` from
        :func:`neurodecode.datasets.load_nsd`, read from NSD's ``ncsnr.nii.gz``). Values must be >= 0;
        NaN gives NaN.
    n_trials : float
        Number of trials averaged per image in the responses that are predicted: 1 for single trials,
        3 when the test betas are averaged over NSD's 3 repetitions. Must be >= 1.

    Returns
    -------
    nc : float | ndarray
        Noise ceiling in percent (0..100), the shape of ``ncsnr`` (a float for a scalar).

    Examples
    --------
    >>> noise_ceiling([0.0, 1.0])
    array([ 0., 50.])
    >>> noise_ceiling(1.0, n_trials=3)
    75.0
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, (int, float, np.integer, np.floating)) \
            or not np.isfinite(n_trials) or n_trials < 1:
        raise ValueError(f"n_trials must be a number >= 1 (trials averaged per image, e.g. 3 for NSD's "
                         f"averaged test betas), got {n_trials!r}")
    snr = np.asarray(ncsnr, dtype=float)
    if (snr < 0).any():  # NaN compares False: NaN stays NaN below
        raise ValueError("ncsnr must be >= 0 (it is a signal-to-noise ratio; NaN is allowed), got negative "
                         "values")
    with np.errstate(divide="ignore"):  # written so that ncsnr = 0 gives 0 and ncsnr = inf gives 100
        nc = 100.0 / (1.0 + 1.0 / (float(n_trials) * snr ** 2))
    return float(nc) if nc.ndim == 0 else nc
