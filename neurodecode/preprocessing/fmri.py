"""fMRI preprocessing: per-session, per-voxel z-scoring on training trials."""

from __future__ import annotations

import numpy as np

from ..utils import fill_doc, logger, verbose

__all__ = ["zscore_sessions"]


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    """A slice when ``rows`` are contiguous (so the update stays a view)."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


@verbose
@fill_doc
def zscore_sessions(data: np.ndarray, sessions: np.ndarray, train_mask: np.ndarray, *,
                    verbose: bool | str | int | None = None) -> np.ndarray:
    """Z-score every voxel within each session, using training trials only.

    For each session, the mean and standard deviation (``ddof=0``) of every
    voxel are computed over that session's trials where ``train_mask`` is
    True, and applied to **all** its trials. Test trials therefore never enter
    the normalisation statistics. A voxel with zero standard deviation is
    only centred (its std is taken as 1).

    Parameters
    ----------
    data : array of float, shape (n_trials, n_voxels)
        Modified in place.
    sessions : array, shape (n_trials,)
        Session label of each trial.
    train_mask : array of bool, shape (n_trials,)
        True for trials allowed in the statistics (e.g. ``split == "train"``).
    %(verbose)s

    Returns
    -------
    data : array, shape (n_trials, n_voxels)
        The same array, z-scored.

    Raises
    ------
    ValueError
        If the shapes disagree, ``data`` is not floating point, or a session
        has no training trial.

    Examples
    --------
    >>> x = np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> _ = zscore_sessions(x, np.array([1, 1, 2, 2]), np.array([True, True, True, False]))
    """
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        raise ValueError(f"data must be a 2-D numpy array (n_trials, n_voxels), got "
                         f"{type(data).__name__} with shape {getattr(data, 'shape', None)}")
    if data.dtype.kind != "f":
        raise ValueError(f"data must be floating point to be z-scored in place, got {data.dtype}")
    sessions = np.asarray(sessions)
    train_mask = np.asarray(train_mask, dtype=bool)
    if sessions.shape != (len(data),) or train_mask.shape != (len(data),):
        raise ValueError(f"sessions {sessions.shape} and train_mask {train_mask.shape} must both have "
                         f"shape ({len(data)},), one value per trial (row of data)")
    for ses in np.unique(sessions):
        rows = np.flatnonzero(sessions == ses)
        train = train_mask[rows]
        if not train.any():
            raise ValueError(f"Session {ses} has no training trial, so its z-scoring statistics "
                             "cannot be computed without test trials; load more trials or use "
                             "zscore=None.")
        sel = _as_slice(rows)
        block = data[sel]
        ref = block[train] if not train.all() else block
        mean = ref.mean(axis=0, dtype=np.float64)
        std = ref.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0
        if isinstance(sel, slice):
            block -= mean.astype(data.dtype)
            block /= std.astype(data.dtype)
        else:
            data[sel] = ((block - mean) / std).astype(data.dtype)
        logger.debug("session %s: z-scored %d trials with statistics of %d training trials",
                     ses, len(rows), int(train.sum()))
    return data
