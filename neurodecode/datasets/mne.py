"""``from_mne``: any ``mne.Epochs`` (or ``-epo.fif`` file) as :class:`BrainTrials`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io.mne import import_mne, read_epochs
from ..utils import ProgressBar, fill_doc, logger, verbose
from ._trials import VALID_SPLITS, BrainTrials

__all__ = ["from_mne"]

def _picks_to_idx(*args: Any, **kwargs: Any) -> np.ndarray:
    try:
        from mne._fiff.pick import _picks_to_idx as f  # mne >= 1.6
    except ImportError:  # pragma: no cover
        from mne.io.pick import _picks_to_idx as f
    return f(*args, **kwargs)


_MEG_TYPES = ("mag", "grad", "ref_meg")
_CHUNK = 256


@verbose
@fill_doc
def from_mne(
    epochs: Any,
    *,
    stimulus_id: str | None = None,
    subject: Any = 1,
    session: str | int | None = None,
    split: str | Callable[[pd.DataFrame], Any] | None = None,
    repetition: str | None = None,
    picks: Any = None,
    verbose: bool | str | int | None = None,
) -> BrainTrials:
    """Convert ``mne.Epochs`` into :class:`BrainTrials`.

    Parameters
    ----------
    epochs : mne.Epochs | str | Path
        The epochs, or the path of a ``*-epo.fif`` file (read lazily, then
        converted to float32 in chunks).
    stimulus_id : str | None
        Column of ``epochs.metadata`` holding the stimulus of each epoch.
        ``None`` uses the event names (``epochs.event_id``), or the integer
        event codes when the names are just the codes.
    subject : int | str
        Subject label written to every row.
    session : str | int | None
        A ``metadata`` column name, or a constant. ``None`` uses the
        ``session`` column of ``metadata`` when there is one, else 1.
    split : str | callable | None
        A ``metadata`` column holding ``train``/``val``/``test``; or a callable
        taking the events DataFrame and returning one split label per row (a
        boolean array means "is test"); ``None`` uses the ``split`` column
        when there is one, else ``train`` for all.
    repetition : str | None
        A ``metadata`` column; ``None`` numbers the repetitions of each
        stimulus (per subject) by order of appearance, from 0.
    picks : str | list | None
        Channels to keep (as in ``mne.Epochs.pick``); default all data channels.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        ``data`` (n_epochs, n_channels, n_times) float32; ``events`` with the
        ``metadata`` columns plus ``event_code``, ``event_name``, ``sample``
        and the required columns; ``info`` with ``modality`` (``meg``/``eeg``),
        ``sfreq``, ``ch_names``, ``ch_types``, ``ch_pos`` (n_channels, 3),
        NaN where unknown), ``times`` and ``tmin``.

    Examples
    --------
    >>> trials = from_mne("sub-01-epo.fif", stimulus_id="image")    # doctest: +SKIP
    """
    return _from_mne(epochs, stimulus_id=stimulus_id, subject=subject, session=session,
                     split=split, repetition=repetition, picks=picks)


def _from_mne(epochs: Any, *, stimulus_id: Any = None, subject: Any = 1, session: Any = None,
              split: Any = None, repetition: Any = None, picks: Any = None,
              rows: np.ndarray | None = None, metadata: pd.DataFrame | None = None,
              source: str | None = None) -> BrainTrials:
    """Implementation; ``rows`` selects epochs without copying them, ``metadata`` overrides."""
    mne = import_mne()
    epochs, source = _as_epochs(epochs, source, mne)
    where = f" in {source}" if source else ""
    n_all = len(epochs.events)
    rows = np.arange(n_all) if rows is None else np.asarray(rows, dtype=np.int64)
    meta = _selected_metadata(epochs.metadata if metadata is None else metadata, n_all, rows, where)

    codes, names = _event_codes_names(epochs.events[rows, 2], epochs.event_id)
    ev = meta.copy()
    for col, val in (("event_code", codes), ("event_name", names),
                     ("sample", epochs.events[rows, 0].astype(np.int64))):
        if col not in ev.columns:
            ev[col] = val
    ev["subject"] = subject
    if stimulus_id is None:
        ev["stimulus_id"] = _default_stimulus_ids(codes, names)
    else:
        ev["stimulus_id"] = _metadata_column(meta, stimulus_id, "stimulus_id", where).to_numpy()
    ev["session"] = _session_values(meta, session, where)
    if repetition is None:
        ev["repetition"] = ev.groupby(["subject", "stimulus_id"], sort=False).cumcount().to_numpy()
    else:
        ev["repetition"] = _metadata_column(meta, repetition, "repetition", where).to_numpy().astype(np.int64)
    ev["split"] = _split_labels(ev, meta, split, where)
    _check_split_values(ev["split"], where)

    pick_idx, ch_names, ch_types, ch_pos = _picked_channels(epochs, picks, where, mne)
    data = _read_epochs_data(epochs, rows, pick_idx, where)
    info = {
        "modality": _modality(ch_types),
        "sfreq": float(epochs.info["sfreq"]),
        "ch_names": ch_names,
        "ch_types": ch_types,
        "ch_pos": ch_pos,
        "times": np.asarray(epochs.times, dtype=np.float64).copy(),
        "tmin": float(epochs.times[0]),
        "source": source,
    }
    ordered = ["subject", "session", "stimulus_id", "repetition", "split"]
    ev = ev[ordered + [c for c in ev.columns if c not in ordered]]
    return BrainTrials(data, ev, info)


def _as_epochs(epochs: Any, source: str | None, mne: Any) -> tuple[Any, str | None]:
    """``epochs`` as an ``mne.BaseEpochs`` (a path is read lazily) and where it comes from (or None)."""
    if isinstance(epochs, (str, Path)):
        source = str(Path(epochs).expanduser())
        epochs = read_epochs(epochs, preload=False)
    if not isinstance(epochs, mne.BaseEpochs):
        raise TypeError(
            f"epochs must be mne.Epochs or the path of a '-epo.fif' file, got {type(epochs).__name__}"
        )
    if source is None and getattr(epochs, "filename", None):
        source = str(epochs.filename)
    return epochs, source


def _selected_metadata(meta: pd.DataFrame | None, n_all: int, rows: np.ndarray, where: str) -> pd.DataFrame:
    """The metadata rows ``rows`` (renumbered from 0); an empty frame when there is no metadata."""
    if meta is None:
        meta = pd.DataFrame(index=range(n_all))
    if len(meta) != n_all:
        raise ValueError(f"metadata has {len(meta)} rows but there are {n_all} epochs{where}")
    return meta.reset_index(drop=True).iloc[rows].reset_index(drop=True)


def _metadata_column(meta: pd.DataFrame, name: str, what: str, where: str) -> pd.Series:
    """Column ``name`` of the metadata; a ``KeyError`` naming the argument ``what`` when it is missing."""
    if name not in meta.columns:
        raise KeyError(
            f"{what}={name!r} is not a column of the epochs metadata{where}; "
            f"its columns are {list(meta.columns)}. Pass the right column name, or set "
            "epochs.metadata to a DataFrame that has it."
        )
    return meta[name]


def _event_codes_names(event_codes: np.ndarray, event_id: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """int64 event codes and their names from ``event_id`` (the code as text when it has no name)."""
    codes = np.asarray(event_codes).astype(np.int64)
    names_by_code = {int(v): k for k, v in event_id.items()}
    names = np.array([names_by_code.get(int(c), str(int(c))) for c in codes], dtype=object)
    return codes, names


def _default_stimulus_ids(codes: np.ndarray, names: np.ndarray) -> np.ndarray:
    """The event names, or the integer codes when every name is just its code."""
    return codes if all(n == str(c) for n, c in zip(names, codes)) else names


def _session_values(meta: pd.DataFrame, session: Any, where: str) -> Any:
    """The ``session`` column: a metadata column (str), ``metadata["session"]`` or 1 (None), a constant."""
    if isinstance(session, str):
        return _metadata_column(meta, session, "session", where).to_numpy()
    if session is None:
        return meta["session"].to_numpy() if "session" in meta.columns else 1
    return session


def _split_labels(ev: pd.DataFrame, meta: pd.DataFrame, split: Any, where: str) -> Any:
    """The ``split`` column from ``split``: a callable of the events (a bool array means "is test"),
    a metadata column name, or None (``metadata["split"]`` if present, else ``"train"``)."""
    if callable(split):
        labels = np.asarray(split(ev.copy()))
        if labels.shape != (len(ev),):
            raise ValueError(f"split callable returned shape {labels.shape}, expected ({len(ev)},)")
        if labels.dtype == bool:
            labels = np.where(labels, "test", "train")
    elif isinstance(split, str):
        labels = _metadata_column(meta, split, "split", where).astype(str).to_numpy()
    elif split is None:
        labels = meta["split"].astype(str).to_numpy() if "split" in meta.columns else "train"
    else:
        raise TypeError(f"split must be a column name, a callable or None, got {type(split).__name__}")
    return labels


def _check_split_values(splits: pd.Series, where: str) -> None:
    """Raise a ``ValueError`` listing the split values that are not in VALID_SPLITS."""
    bad = sorted(set(map(str, pd.unique(splits))) - set(VALID_SPLITS))
    if bad:
        raise ValueError(f"split values {bad}{where} are not in {VALID_SPLITS}; map them first "
                         "(e.g. pass a callable as split=).")


def _picked_channels(epochs: Any, picks: Any, where: str,
                     mne: Any) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """Indices, names, types and positions ((n, 3), NaN when unknown) of the picked channels."""
    info_mne = epochs.info
    try:
        pick_idx = _picks_to_idx(info_mne, "data" if picks is None else picks, exclude=[])
    except ValueError as err:
        if picks is not None:
            raise ValueError(f"Invalid picks={picks!r}{where}: {err}") from err
        pick_idx = np.arange(len(epochs.ch_names))
    pick_idx = np.asarray(pick_idx, dtype=np.int64)
    ch_names = [epochs.ch_names[i] for i in pick_idx]
    ch_types = [mne.channel_type(info_mne, int(i)) for i in pick_idx]
    ch_pos = np.array([info_mne["chs"][int(i)]["loc"][:3] for i in pick_idx], dtype=np.float64)
    ch_pos = ch_pos.reshape(-1, 3)
    unknown = ~np.isfinite(ch_pos).all(axis=1) | np.all(ch_pos == 0, axis=1)
    ch_pos[unknown] = np.nan
    return pick_idx, ch_names, ch_types, ch_pos


def _modality(ch_types: list[str]) -> str | None:
    """``"meg"`` if any MEG channel, else ``"eeg"`` if any EEG channel, else the first type in sort order."""
    if any(t in _MEG_TYPES for t in ch_types):
        return "meg"
    if any(t == "eeg" for t in ch_types):
        return "eeg"
    return min(ch_types) if ch_types else None


def _read_epochs_data(epochs: Any, rows: np.ndarray, pick_idx: np.ndarray, where: str) -> np.ndarray:
    """float32 (len(rows), len(pick_idx), n_times), read in chunks (only float32 held if not preloaded)."""
    n_times = len(epochs.times)
    data = np.empty((len(rows), len(pick_idx), n_times), dtype=np.float32)
    starts = range(0, len(rows), _CHUNK)
    for s in ProgressBar(starts, total=len(starts), desc="Reading epochs", unit="chunk"):
        part = rows[s:s + _CHUNK]
        try:
            data[s:s + len(part)] = epochs.get_data(picks=pick_idx, item=part, verbose="error")
        except (ValueError, OSError, EOFError) as err:  # "buffer size must be a multiple...": cut file
            raise OSError(f"Could not read the data of epochs {int(part[0])}..{int(part[-1])}{where}: the file "
                          f"is truncated or corrupt ({type(err).__name__}: {err}). Re-download it (or re-save "
                          "it with mne).") from err
    logger.info("Read %d epochs × %d channels × %d times%s", len(rows), len(pick_idx), n_times, where)
    return data
