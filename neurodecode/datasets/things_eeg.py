"""``load_things_eeg2``: THINGS-EEG2 preprocessed epochs from the real on-disk layout."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..io.checks import check_finite, check_nonfinite_option
from ..io.things_eeg import LazyImageFiles, read_things_eeg2
from ..utils import check_option, fill_doc, logger, verbose
from ._stimuli import StimulusSet
from ._trials import BrainTrials

__all__ = ["load_things_eeg2"]

_ROOT_HINT = ("root should be the THINGS-EEG2 project folder, containing image_set/ and either "
              "eeg_dataset/preprocessed_data/ (official, 100 Hz) or Preprocessed_data_250Hz/ (ATM, 250 Hz)")
_SPLIT_FILES = {"train": ("training", "preprocessed_eeg_training.npy"),
                "test": ("test", "preprocessed_eeg_test.npy")}
_IMG_EXT = (".jpg", ".jpeg", ".png")
_REDOWNLOAD_EEG = "re-download the preprocessed file"


def _variant_dir(root: Path, variant: str, subject: int) -> Path:
    sub = f"sub-{int(subject):02d}"
    if variant == "official":
        return root / "eeg_dataset" / "preprocessed_data" / sub
    return root / "Preprocessed_data_250Hz" / sub


def _concept(folder: str) -> str:
    return folder.split("_", 1)[1] if "_" in folder else folder


def _image_table(root: Path, kind: str) -> pd.DataFrame:
    """Images of ``image_set/{training,test}_images`` in sorted folder / file order."""
    d = root / "image_set" / f"{kind}_images"
    if not d.is_dir():
        raise FileNotFoundError(f"THINGS-EEG2 image folder not found: {d}. {_ROOT_HINT}")
    rows = []
    for ci, folder in enumerate(sorted(p for p in d.iterdir() if p.is_dir())):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in _IMG_EXT)
        if not files:
            raise ValueError(f"THINGS-EEG2 image folder {folder} holds no image; re-download image_set.")
        empty = [f for f in files if f.stat().st_size == 0]
        if empty:
            raise ValueError(f"THINGS-EEG2 image {empty[0]} is empty (0 bytes)"
                             f"{f' (and {len(empty) - 1} more in {folder})' if len(empty) > 1 else ''}; "
                             "re-download image_set.")
        if kind == "test":
            files = files[:1]
        for ii, f in enumerate(files):
            rows.append({"stimulus_id": f.stem, "concept": _concept(folder.name), "concept_index": ci,
                         "image_index": ii, "path": f})
    if not rows:
        raise ValueError(f"THINGS-EEG2 image folder {d} holds no concept folder; re-download image_set.")
    return pd.DataFrame(rows)


def _count_mismatch(path: Path, n_cond: int, table: pd.DataFrame, folder: Path) -> ValueError:
    """The error for an EEG file whose condition count differs from the images of ``folder``."""
    per = table.groupby("concept_index", sort=True).size()
    odd = ""
    if per.nunique() > 1:  # a concept folder with missing (or extra) images
        usual = int(per.mode().iloc[0])
        names = table.groupby("concept_index", sort=True)["path"].first()
        off = [f"{Path(names[i]).parent.name} ({n})" for i, n in per.items() if n != usual]
        odd = (f" Most concept folders hold {usual} images but {len(off)} hold another number: "
               f"{', '.join(off[:5])}{' ...' if len(off) > 5 else ''}.")
    return ValueError(f"THINGS-EEG2 file {path} has {n_cond} conditions but {folder} holds {len(table)} "
                      f"images; the EEG and image_set do not match.{odd} Condition i is the i-th image in sorted "
                      "order, so every image must be present: re-download image_set (or the EEG file if "
                      "image_set is complete).")


def _ch_pos(ch_names: list[str]) -> np.ndarray | None:
    """(n_channels, 3) positions from MNE's standard_1005 montage (NaN if unknown), or None."""
    try:
        import mne  # optional
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():  # MNE >= 1.12 renames it colin27_1005 (same positions)
            warnings.simplefilter("ignore", FutureWarning)
            pos = mne.channels.make_standard_montage("standard_1005").get_positions()["ch_pos"]
    except Exception:  # noqa: BLE001  # pragma: no cover - broken mne install
        return None
    lower = {k.lower(): v for k, v in pos.items()}
    return np.array([lower.get(c.lower(), np.full(3, np.nan)) for c in ch_names], dtype=float)


@verbose
@fill_doc
def load_things_eeg2(
    root: str | Path,
    subject: int,
    *,
    variant: Literal["auto", "official", "atm"] = "auto",
    split: str | Sequence[str] = ("train", "test"),
    images: bool = True,
    image_size: int | None = None,
    nonfinite: Literal["error", "drop"] = "error",
    verbose: bool | str | int | None = None,
) -> BrainTrials:
    """Load one THINGS-EEG2 subject's preprocessed epochs, one trial per repetition.

    Parameters
    ----------
    root : str | Path
        The project folder holding ``image_set/`` and the preprocessed EEG:
        ``eeg_dataset/preprocessed_data/sub-XX/preprocessed_eeg_{training,test}.npy``
        (official, 17 channels, 100 Hz) and/or
        ``Preprocessed_data_250Hz/sub-XX/preprocessed_eeg_{training,test}.npy``
        (ATM / NICE, 63 channels, 250 Hz).
    subject : int
        Subject number, 1..10.
    variant : ``"auto"`` | ``"official"`` | ``"atm"``
        Which preprocessed files to read. ``"auto"`` uses the official folder
        of this subject when it exists, else the ATM one.
    split : ``"train"`` | ``"test"`` | sequence of them
        Which files to load (train rows come first).
    images : bool
        Attach a :class:`StimulusSet` whose images are read lazily from the
        jpgs (concept names are attached in any case, in its ``metadata``).
        With ``False`` the StimulusSet has no images.
    image_size : int | None
        Side of the square images returned; ``None`` keeps the first image's
        size (500 × 500 in THINGS).
    nonfinite : ``"error"`` | ``"drop"``
        What to do with trials (repetitions) holding NaN or infinite values
        (after the cast to float32, so values too large for it count as
        infinite): ``"error"`` (default) raises a ``ValueError`` naming the
        file, subject, split and counts; ``"drop"`` drops those trials with a
        WARNING giving the counts. In a run config: ``data.options.nonfinite``.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        ``data`` float32 (n_trials, n_channels, n_times): training conditions ×
        4 repetitions then test conditions × 80 repetitions, flattened
        condition-major. ``events``: ``subject``, ``session`` (always 0: the
        preprocessed files mix the sessions and the repetitions are shuffled,
        so the session of a repetition is unknown), ``stimulus_id`` (the image
        file stem, e.g. ``aardvark_01b``), ``concept``, ``concept_index``,
        ``image_index``, ``condition`` (row in the file), ``repetition``
        (0-based), ``split``. ``info``: ``modality="eeg"``, ``sfreq`` (from the
        spacing of ``times``), ``ch_names``, ``times``, ``tmin``, ``ch_pos``
        (standard_1005 positions when MNE is installed, else None),
        ``variant`` and ``files``.

    Notes
    -----
    Index conventions (FORMATS.md 2): training condition ``i`` is concept
    ``i // 10``, image ``i % 10`` in sorted folder / file order of
    ``image_set/training_images``; test row ``i`` is test concept ``i``. The
    files are pickled dicts, read with a restricted unpickler that admits only
    arrays, dicts, lists, strings and numbers (a crafted file is refused, never
    run; see :func:`neurodecode.io.things_eeg.read_things_eeg2`).

    Examples
    --------
    >>> trials = load_things_eeg2("/data/things-eeg2", subject=1)      # doctest: +SKIP
    >>> test = trials.select(split="test").average_repetitions()        # doctest: +SKIP
    """
    check_option("variant", variant, ("auto", "official", "atm"))
    check_nonfinite_option(nonfinite)
    splits = _requested_splits(split)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"THINGS-EEG2 root not found: {root}. {_ROOT_HINT}")
    if isinstance(subject, bool) or not isinstance(subject, (int, np.integer)) or subject < 1:
        raise ValueError(f"subject must be a positive int (1..10), got {subject!r}")
    variant, sub_dir = _subject_dir(root, variant, subject)

    parts, ev_parts, files = [], [], []
    ref: tuple[Path, list[str], np.ndarray] | None = None
    tables = {}
    for s in splits:
        kind, fname = _SPLIT_FILES[s]
        path = sub_dir / fname
        rec = read_things_eeg2(path)
        data = rec["data"]
        ref = _check_same_axes(ref, path, rec)
        table = _image_table(root, kind)
        n_cond, n_rep = data.shape[:2]
        if n_cond != len(table):
            raise _count_mismatch(path, n_cond, table, root / "image_set" / f"{kind}_images")
        tables[s] = table
        parts.append(data)
        ev_parts.append(_split_events(table, n_cond, n_rep, int(subject), s))
        files.append(str(path))
        logger.info("THINGS-EEG2 sub-%02d %s: %d conditions x %d repetitions from %s",
                    int(subject), s, n_cond, n_rep, path)

    if ref is None:  # pragma: no cover - splits is never empty here
        raise ValueError("split must name at least one of 'train', 'test'")
    n_ch, n_t = len(ref[1]), len(ref[2])
    out, bad = _stack_trials(parts, splits, files, n_ch, n_t, subject=int(subject), nonfinite=nonfinite)
    events = pd.concat(ev_parts, ignore_index=True)
    events = events[["subject", "session", "stimulus_id", "concept", "concept_index", "image_index",
                     "condition", "repetition", "split"]]
    if bad.any():
        if bad.all():
            raise ValueError(f"Every trial of {', '.join(files)} holds a NaN or infinite value, so "
                             f"nonfinite='drop' leaves nothing; {_REDOWNLOAD_EEG}.")
        keep = np.flatnonzero(~bad)
        out = out[keep]
        events = events.iloc[keep].reset_index(drop=True)

    times = np.asarray(ref[2], dtype=float)
    info = {"modality": "eeg", "sfreq": _sfreq_of(times), "ch_names": list(ref[1]), "times": times,
            "tmin": float(times[0]) if n_t else float("nan"), "ch_pos": _ch_pos(list(ref[1])),
            "variant": variant, "subject": int(subject), "files": files}
    stimuli = _image_stimuli(tables, splits, root, images=images, image_size=image_size)
    return BrainTrials(out, events, info, stimuli)


def _requested_splits(split: str | Sequence[str]) -> list[str]:
    """The requested splits, checked, in file order (train first)."""
    splits = [split] if isinstance(split, str) else list(split)
    if not splits:
        raise ValueError("split must name at least one of 'train', 'test'")
    for s in splits:
        check_option("split", s, ("train", "test"))
    return [s for s in ("train", "test") if s in splits]


def _subject_dir(root: Path, variant: str, subject: int) -> tuple[str, Path]:
    """The variant (``"auto"`` resolved: official when present, else ATM) and the subject's folder."""
    if variant == "auto":
        found = [v for v in ("official", "atm") if _variant_dir(root, v, subject).is_dir()]
        if not found:
            raise FileNotFoundError(
                f"No preprocessed data for subject {subject} under {root}: neither "
                f"{_variant_dir(root, 'official', subject)} nor {_variant_dir(root, 'atm', subject)} exists. "
                f"{_ROOT_HINT}")
        variant = found[0]
    sub_dir = _variant_dir(root, variant, subject)
    if not sub_dir.is_dir():
        raise FileNotFoundError(f"THINGS-EEG2 subject folder not found: {sub_dir} ({variant} variant). "
                                f"{_ROOT_HINT}")
    return variant, sub_dir


def _check_same_axes(ref: tuple[Path, list[str], np.ndarray] | None, path: Path,
                     rec: dict) -> tuple[Path, list[str], np.ndarray]:
    """The reference (path, channels, times) of the first file, checking that ``rec`` has the same."""
    if ref is None:
        return (path, rec["ch_names"], rec["times"])
    if rec["ch_names"] != ref[1]:
        raise ValueError(f"THINGS-EEG2 channels differ: {ref[0]} has {len(ref[1])} channels "
                         f"{ref[1][:5]}... but {path} has {len(rec['ch_names'])} "
                         f"{rec['ch_names'][:5]}...; both files must come from the same preprocessing.")
    if len(rec["times"]) != len(ref[2]) or not np.allclose(rec["times"], ref[2]):
        raise ValueError(f"THINGS-EEG2 time axes differ between {ref[0]} and {path}; both files "
                         "must come from the same preprocessing.")
    return ref


def _split_events(table: pd.DataFrame, n_cond: int, n_rep: int, subject: int, split: str) -> pd.DataFrame:
    """One row per (condition, repetition), condition-major, from the image ``table`` of one split."""
    cond = np.repeat(np.arange(n_cond), n_rep)
    ev = table.drop(columns="path").iloc[cond].reset_index(drop=True)
    ev.insert(0, "subject", subject)
    ev.insert(1, "session", 0)
    ev["condition"] = cond
    ev["repetition"] = np.tile(np.arange(n_rep), n_cond)
    ev["split"] = split
    return ev


def _stack_trials(parts: list[np.ndarray], splits: list[str], files: list[str], n_ch: int, n_t: int, *,
                  subject: int, nonfinite: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 (n_trials, n_ch, n_t) of the (condition, repetition, ...) arrays, and the non-finite trials.

    With ``nonfinite="error"`` a non-finite trial raises (naming the file, subject and split).
    """
    out = np.empty((sum(p.shape[0] * p.shape[1] for p in parts), n_ch, n_t), dtype=np.float32)
    bad = np.zeros(len(out), dtype=bool)
    k = 0
    for p, s, path in zip(parts, splits, files):
        n = p.shape[0] * p.shape[1]
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, reported just below
            out[k:k + n] = p.reshape(n, n_ch, n_t)
        bad[k:k + n] = check_finite(out[k:k + n], file=f"{path} (subject {subject}, split {s})",
                                    nonfinite=nonfinite, what="trial", fix=_REDOWNLOAD_EEG)
        k += n
    return out, bad


def _sfreq_of(times: np.ndarray) -> float:
    """Sampling rate from the median spacing of ``times``, rounded to 6 decimals (NaN for < 2 times)."""
    sfreq = float(1.0 / np.median(np.diff(times))) if len(times) > 1 else float("nan")
    return float(np.round(sfreq, 6))


def _image_stimuli(tables: dict[str, pd.DataFrame], splits: list[str], root: Path, *, images: bool,
                   image_size: int | None) -> StimulusSet:
    """The StimulusSet of the images of ``splits`` (read lazily when ``images``), with concept prompts."""
    stim = pd.concat([tables[s].assign(split=s) for s in splits], ignore_index=True)
    meta = stim[["concept", "concept_index", "image_index", "split"]].copy()
    meta.index = pd.Index(stim["stimulus_id"], name="stimulus_id")
    meta["prompt"] = "This picture is " + meta["concept"]
    lazy = LazyImageFiles(stim["path"].tolist(), image_size) if images else None
    return StimulusSet(stim["stimulus_id"].tolist(), images=lazy, metadata=meta,
                       source=str(root / "image_set"))
