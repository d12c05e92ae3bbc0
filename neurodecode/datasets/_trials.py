"""BrainTrials: the one data container for every modality."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..utils import RaggedData, take_rows
from ._stimuli import StimulusSet

REQUIRED_COLUMNS = ("subject", "session", "stimulus_id", "repetition", "split")
VALID_SPLITS = ("train", "val", "test")


class BrainTrials:
    """Brain responses to stimuli, one row per trial, for any modality.

    Parameters
    ----------
    data : array-like, shape (n_trials, n_voxels) or (n_trials, n_channels, n_times)
        The responses. May be lazy (anything with ``shape`` and row indexing)
        or a :class:`RaggedData` when subjects have different feature sizes.
    events : pandas.DataFrame
        One row per trial with at least ``subject``, ``session``,
        ``stimulus_id``, ``repetition`` and ``split`` (``train``/``val``/``test``).
    info : dict | None
        ``modality`` (``fmri``/``meg``/``eeg``), and per modality: ``tr`` or
        ``sfreq``, ``ch_names``/``ch_pos``, or ``voxel_indices``/``affine``/
        ``volume_shape``/``roi_labels``. For several subjects with different
        feature sets, ``info["subjects_info"]`` maps subject → its own info.
    stimuli : StimulusSet | None
        The stimuli referenced by ``events["stimulus_id"]``.

    Examples
    --------
    >>> trials = nd.datasets.load_nsd(root, subject=1)            # doctest: +SKIP
    >>> train = trials.select(split="train")                        # doctest: +SKIP
    >>> test = trials.select(split="test").average_repetitions()    # doctest: +SKIP
    """

    def __init__(self, data: Any, events: pd.DataFrame, info: dict | None = None,
                 stimuli: StimulusSet | None = None) -> None:
        if not isinstance(events, pd.DataFrame):
            raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
        missing = [c for c in REQUIRED_COLUMNS if c not in events.columns]
        if missing:
            raise ValueError(
                f"events is missing required column(s) {missing}; it must have {list(REQUIRED_COLUMNS)}"
            )
        if len(data) != len(events):
            raise ValueError(
                f"data has {len(data)} trials but events has {len(events)} rows; they must match"
            )
        bad = set(pd.unique(events["split"])) - set(VALID_SPLITS)
        if bad:
            raise ValueError(f"events['split'] has unknown values {sorted(map(str, bad))}; use {VALID_SPLITS}")
        self.data = data
        self.events = events.reset_index(drop=True)
        self.info = dict(info or {})
        self.stimuli = stimuli

    # -- shape and summary ----------------------------------------------------
    def __len__(self) -> int:
        return len(self.events)

    @property
    def n_trials(self) -> int:
        """Number of trials."""
        return len(self.events)

    @property
    def shape(self) -> tuple:
        """Shape of ``data`` (``(n_trials, None)`` when subjects are ragged)."""
        return tuple(self.data.shape)

    @property
    def modality(self) -> str | None:
        """``fmri``, ``meg`` or ``eeg`` (from ``info``)."""
        return self.info.get("modality")

    @property
    def subjects(self) -> list:
        """Subjects in order of first appearance."""
        return self.events["subject"].drop_duplicates().tolist()

    @property
    def is_ragged(self) -> bool:
        """True when subjects have different feature sizes."""
        return isinstance(self.data, RaggedData)

    @property
    def feature_shape(self) -> tuple:
        """Per-trial shape; raises for ragged multi-subject data."""
        if self.is_ragged:
            raise ValueError(
                "Subjects have different feature shapes "
                f"{self.data.feature_shapes}; use trials.by_subject() to get one array per subject."
            )
        return tuple(self.data.shape[1:])

    def __repr__(self) -> str:
        mod = self.modality or "unknown modality"
        if self.is_ragged:
            feats = " | ".join("×".join(f"{n:,}" for n in s) for s in self.data.feature_shapes)
            shape = f"{self.n_trials:,} trials × ({feats}) features"
        else:
            unit = {"fmri": "voxels"}.get(self.modality, "features")
            fs = tuple(self.data.shape[1:])
            if self.modality in ("meg", "eeg") and len(fs) == 2:
                shape = f"{self.n_trials:,} trials × {fs[0]} channels × {fs[1]} times"
            else:
                shape = f"{self.n_trials:,} trials × " + " × ".join(f"{n:,}" for n in fs) + f" {unit}"
        subj = ", ".join(map(str, self.subjects[:8])) + (" …" if len(self.subjects) > 8 else "")
        counts = self.events["split"].value_counts()
        splits = ", ".join(f"{k} {counts[k]:,}" for k in VALID_SPLITS if k in counts)
        lazy = "" if isinstance(self.data, (np.ndarray, RaggedData)) else " | lazy"
        stim = f" | {len(self.stimuli):,} stimuli" if self.stimuli is not None else ""
        return f"<BrainTrials | {mod} | {shape} | subjects: {subj} | {splits}{stim}{lazy}>"

    # -- data access ----------------------------------------------------------
    def get_data(self, dtype: Any = None) -> np.ndarray:
        """Return ``data`` as an in-memory numpy array.

        Raises ``ValueError`` for ragged multi-subject data (use :meth:`by_subject`).

        Parameters
        ----------
        dtype : numpy dtype | None
            Convert to this dtype (no copy when it already has it); None keeps the stored dtype.

        Returns
        -------
        data : ndarray, shape (n_trials, ...)
            The trials' data (the array itself, not a copy, for in-memory data of that dtype).
        """
        if self.is_ragged:
            self.feature_shape  # raises with the hint
        arr = self.data if isinstance(self.data, np.ndarray) else take_rows(self.data, np.arange(len(self)))
        arr = np.asarray(arr)
        return arr.astype(dtype, copy=False) if dtype is not None else arr

    def copy(self) -> BrainTrials:
        """A copy with its own events, info and (for in-memory data) array.

        Returns
        -------
        trials : BrainTrials
            The copy (lazily read data and the stimulus set are shared).
        """
        data = self.data.copy() if isinstance(self.data, np.ndarray) else self.data
        return BrainTrials(data, self.events.copy(), _copy_info(self.info), self.stimuli)

    # -- selection --------------------------------------------------------------
    def __getitem__(self, idx: Any) -> BrainTrials:
        rows = self._as_rows(idx)
        data = take_rows(self.data, rows)
        info = self.info
        if isinstance(self.data, RaggedData) and not isinstance(data, RaggedData):
            subj = self.events["subject"].iloc[rows[0]] if len(rows) else None
            info = self._subject_info(subj)
        return BrainTrials(data, self.events.iloc[rows].reset_index(drop=True), info, self.stimuli)

    def _as_rows(self, idx: Any) -> np.ndarray:
        n = len(self)
        if isinstance(idx, (int, np.integer)):
            if not -n <= idx < n:
                raise IndexError(f"trial {idx} out of range for {n} trials")
            return np.array([idx % n])
        if isinstance(idx, slice):
            return np.arange(n)[idx]
        arr = np.asarray(idx.values if isinstance(idx, pd.Series) else idx)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise IndexError(f"boolean mask has shape {arr.shape}, expected ({n},)")
            return np.flatnonzero(arr)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"cannot index trials with {arr.dtype} values")
        if arr.size and (arr.max() >= n or arr.min() < -n):
            raise IndexError(f"trial index out of range for {n} trials")
        return arr.astype(np.int64) % n if arr.size else arr.astype(np.int64)

    def select(self, **criteria: Any) -> BrainTrials:
        """Trials whose ``events`` columns match ``criteria``.

        Each value is a scalar, a list of accepted values, or a callable taking
        the column (a Series) and returning a boolean mask.

        Parameters
        ----------
        **criteria
            ``column=value`` pairs, one per ``events`` column; a trial must match all of them.

        Returns
        -------
        trials : BrainTrials
            The matching trials, in their original order.

        Examples
        --------
        >>> trials.select(subject=[1, 2], split="train")   # doctest: +SKIP
        >>> trials.select(session=lambda s: s <= 3)         # doctest: +SKIP
        """
        mask = np.ones(len(self), dtype=bool)
        for col, value in criteria.items():
            if col not in self.events.columns:
                raise KeyError(f"Cannot select on {col!r}: events columns are {list(self.events.columns)}")
            series = self.events[col]
            if callable(value):
                m = np.asarray(value(series), dtype=bool)
            elif isinstance(value, (list, tuple, set, np.ndarray, pd.Index)):
                m = series.isin(list(value)).to_numpy()
            else:
                m = (series == value).to_numpy()
            mask &= m
        return self[mask]

    def _subject_info(self, subject: Any) -> dict:
        per = self.info.get("subjects_info")
        if per is not None and subject in per:
            return per[subject]
        return self.info

    def by_subject(self) -> dict[Any, BrainTrials]:
        """Split into one BrainTrials per subject (each with its own ``info``).

        Returns
        -------
        trials : dict
            Subject → that subject's trials, in the order of ``subjects``.
        """
        out = {}
        subj = self.events["subject"].to_numpy()
        for s in self.subjects:
            rows = np.flatnonzero(subj == s)
            sub = self[rows]
            sub.info = _copy_info(self._subject_info(s))
            out[s] = sub
        return out

    # -- combining ----------------------------------------------------------------
    @classmethod
    def concatenate(cls, trials_list: Sequence[BrainTrials]) -> BrainTrials:
        """Stack trials (typically of several subjects) into one BrainTrials.

        Subjects whose feature shapes differ are kept as :class:`RaggedData`;
        each subject's ``info`` is kept under ``info["subjects_info"]``.

        Parameters
        ----------
        trials_list : sequence of BrainTrials
            Trials of one modality (at least one).

        Returns
        -------
        trials : BrainTrials
            All trials, in order (the single input itself when there is only one).
        """
        trials_list = [t for t in trials_list]
        if not trials_list:
            raise ValueError("concatenate needs at least one BrainTrials")
        if len(trials_list) == 1:
            return trials_list[0]
        mods = {t.modality for t in trials_list}
        if len(mods) > 1:
            raise ValueError(f"Cannot concatenate different modalities {sorted(map(str, mods))}")
        events = pd.concat([t.events for t in trials_list], ignore_index=True)
        subjects_info: dict = {}
        for t in trials_list:
            for s in t.subjects:
                subjects_info.setdefault(s, t._subject_info(s))
        blocks: list = []
        index_parts = []
        for t in trials_list:
            if isinstance(t.data, RaggedData):
                offset = len(blocks)
                blocks.extend(t.data.blocks)
                index_parts.append(t.data.index + np.array([offset, 0]))
            else:
                index_parts.append(np.column_stack([np.full(len(t), len(blocks)), np.arange(len(t))]))
                blocks.append(t.data)
        shapes = {tuple(b.shape[1:]) for b in blocks}
        index = np.concatenate(index_parts)
        if len(shapes) == 1 and all(isinstance(b, np.ndarray) for b in blocks) and \
                all(_same_features(subjects_info[s], subjects_info[trials_list[0].subjects[0]])
                    for s in subjects_info):
            data: Any = np.concatenate([b[index[index[:, 0] == i, 1]] for i, b in enumerate(blocks)]) \
                if _is_blockwise(index) else np.stack([blocks[b][r] for b, r in index])
        else:
            data = RaggedData(blocks, index)
        info = {"modality": trials_list[0].modality, "subjects_info": subjects_info}
        stimuli = StimulusSet.merge([t.stimuli for t in trials_list])
        return cls(data, events, info, stimuli)

    def average_repetitions(self, by: Sequence[str] = ("subject", "stimulus_id")) -> BrainTrials:
        """Average trials that share ``by`` (default: the same image for the same subject).

        The result has one row per group, in order of first appearance, with
        ``n_repetitions`` added to ``events`` and ``repetition`` set to -1.

        Parameters
        ----------
        by : sequence of str
            ``events`` columns whose values define a group.

        Returns
        -------
        trials : BrainTrials
            The averaged trials (ragged data is averaged per subject, then concatenated).
        """
        by = list(by)
        keys = self.events[by].astype(str).agg("\x1f".join, axis=1) if len(by) > 1 else self.events[by[0]]
        codes, uniques = pd.factorize(keys, sort=False)
        first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
        events = self.events.iloc[first].reset_index(drop=True).copy()
        counts = np.bincount(codes, minlength=len(uniques))
        events["n_repetitions"] = counts
        events["repetition"] = -1
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts)])
        if self.is_ragged:
            return BrainTrials.concatenate([sub.average_repetitions(by) for sub in self.by_subject().values()])
        data = self.get_data()
        out = np.empty((len(uniques), *data.shape[1:]), dtype=np.result_type(data.dtype, np.float32))
        sorted_data = data[order]
        for k in range(len(uniques)):
            out[k] = sorted_data[bounds[k]:bounds[k + 1]].mean(axis=0)
        return BrainTrials(out, events, self.info, self.stimuli)


def _is_blockwise(index: np.ndarray) -> bool:
    blocks = index[:, 0]
    return bool(np.all(np.diff(blocks) >= 0))


def _same_features(a: dict, b: dict) -> bool:
    """Two subjects share a feature space when their voxel indices / channels agree."""
    for key in ("voxel_indices", "ch_names"):
        va, vb = a.get(key), b.get(key)
        if va is None and vb is None:
            continue
        if va is None or vb is None:
            return False
        if not np.array_equal(np.asarray(va), np.asarray(vb)):
            return False
    return True


def _copy_info(info: dict) -> dict:
    return {k: (v.copy() if isinstance(v, (dict, list, np.ndarray)) else v) for k, v in info.items()}


def concatenate_trials(trials_list: Iterable[BrainTrials]) -> BrainTrials:
    """Concatenate BrainTrials (see :meth:`BrainTrials.concatenate`).

    Parameters
    ----------
    trials_list : iterable of BrainTrials
        Trials of one modality (at least one).

    Returns
    -------
    trials : BrainTrials
        All trials, in order.
    """
    return BrainTrials.concatenate(list(trials_list))

