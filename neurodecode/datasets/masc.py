"""``load_masc``: MEG-MASC (Gwilliams et al. 2023) speech MEG, one segment per word.

Layout and event format: ``FORMATS.md`` section 4.1 and :mod:`neurodecode.io.masc`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..io.checks import check_nonfinite_option, mne_damage
from ..io.masc import (
    MASC_ROOT_HINT,
    MASC_STORIES,
    WavSegments,
    find_masc_wav,
    masc_recordings,
    read_masc_events,
    read_participants,
    read_wav,
)
from ..utils import ProgressBar, check_path, fill_doc, logger, verbose, warn
from ..utils.imports import import_optional
from ._stimuli import StimulusSet
from ._trials import BrainTrials

__all__ = ["load_masc"]

#: Silence (s) between two words of one wav that starts a new sentence-like unit
#: when the events carry no ``sequence_id`` / ``sentence`` key.
PAUSE_S = 0.3
_CHUNK_CHANNELS = 32  # channels filtered / resampled at a time (bounds memory on 1 kHz files)
_EVENT_COLUMNS = ["subject", "session", "task", "story", "stimulus_id", "word", "word_index", "onset",
                  "sound", "sound_time", "block", "repetition", "split"]


# -- argument helpers -----------------------------------------------------------------------------
def _subject_number(subject: Any) -> int:
    if isinstance(subject, bool):
        raise ValueError(  # noqa: TRY004 - a bool is a wrong value here, as the other checks say
            f"subject must be a participant number like 1 or 'sub-01', got {subject!r}")
    if isinstance(subject, (int, np.integer)):
        return int(subject)
    m = re.fullmatch(r"(?:sub-)?(\d+)", str(subject).strip())
    if m is None:
        raise ValueError(f"subject must be a participant number like 1 or 'sub-01', got {subject!r}")
    return int(m.group(1))


def _labels(value: Any, name: str) -> list[int | str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, (int, np.integer, str)) else list(value)
    if not values:
        raise ValueError(f"{name} must name at least one {name[:-1]} (or be None for all), got {value!r}")
    out: list[int | str] = []
    for v in values:
        if isinstance(v, bool):
            raise ValueError(f"{name} must hold ints like 0 or labels like '0', got {v!r}")  # noqa: TRY004
        s = str(int(v)) if isinstance(v, (int, np.integer)) else str(v).strip()
        s = s.split("-", 1)[1] if s.startswith(("ses-", "task-")) else s
        out.append(int(s) if s.isdigit() else s)
    return out


def _bids_file(root: Path, sub: str, ses: Any, task: Any) -> Path:
    return root / f"sub-{sub}" / f"ses-{ses}" / "meg" / f"sub-{sub}_ses-{ses}_task-{task}_meg.con"


def _block_split(story: str, wav_key: str, block: int, seed: int, test_ratio: float,
                 val_ratio: float) -> str:
    """Deterministic split of one block from a hash of (story, wav, block, seed)."""
    digest = hashlib.sha256(f"masc|{story}|{wav_key}|{block}|{int(seed)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    if u < test_ratio:
        return "test"
    if u < test_ratio + val_ratio:
        return "val"
    return "train"


def _unit_starts(words: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the words (sorted by ``sound_time``) that start a sentence-like unit."""
    n = len(words)
    if n == 0:
        return np.zeros(0, dtype=bool)
    for col in ("sequence_id", "sentence"):
        if col in words.columns and words[col].notna().any():
            vals = words[col].ffill().bfill().astype(str).to_numpy()
            return np.r_[True, vals[1:] != vals[:-1]]
    t = words["sound_time"].to_numpy(dtype=float)
    dur = pd.to_numeric(words["duration"], errors="coerce").fillna(0.0).clip(lower=0.0).to_numpy()
    gaps = t[1:] - (t[:-1] + dur[:-1])
    return np.r_[True, gaps >= PAUSE_S]


def _make_blocks(words: pd.DataFrame, min_block_s: float) -> np.ndarray:
    """Block boundaries (wav time, s) for one wav: block j covers ``[b[j], b[j+1])``, the last to +inf."""
    t = words["sound_time"].to_numpy(dtype=float)
    starts = t[_unit_starts(words)]
    bounds = [0.0]
    if len(starts):
        current = starts[0]
        for s in starts[1:]:
            if s - current >= min_block_s:
                bounds.append(float(s))
                current = s
    return np.asarray(bounds, dtype=float)


def _num_str(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _word_keys(words: pd.DataFrame) -> list[str]:
    """The part of ``stimulus_id`` after ``story/wav``: word_index, else sequence.word, else onset in ms."""
    wi = words["word_index"]
    if wi.notna().all() and wi.map(_num_str).is_unique:
        return wi.map(_num_str).tolist()
    if "sequence_id" in words.columns and words["sequence_id"].notna().all() and wi.notna().all():
        keys = words["sequence_id"].map(_num_str) + "." + wi.map(_num_str)
        if keys.is_unique:
            return keys.tolist()
    ms = np.rint(words["sound_time"].to_numpy(dtype=float) * 1000).astype(np.int64)
    keys, seen = [], {}
    for m in ms:
        k = f"{m}ms"
        seen[k] = seen.get(k, 0) + 1
        keys.append(k if seen[k] == 1 else f"{k}.{seen[k] - 1}")
    return keys


# -- MEG -------------------------------------------------------------------------------------------
def _read_meg(rec: Any, root: Path, *, picks: Any, l_freq: float | None, h_freq: float | None,
              sfreq: float | None, nonfinite: str = "error") -> dict:
    """Read one recording with MNE-BIDS, pick, filter and resample it (by channel chunks).

    Damage is never silent: MNE's warnings about a truncated file become a
    WARNING naming it, a data read that fails raises an ``OSError`` naming it,
    and NaN / infinite samples raise (``nonfinite="error"``) or are set to 0
    before filtering and returned as ``bad`` (samples at the recorded rate) so
    the segments that overlap them can be dropped (``"drop"``).
    """
    mne_bids = import_optional("mne_bids", extra="meeg", what="load_masc")
    import mne

    bids_path = mne_bids.BIDSPath(subject=rec.subject_label, session=rec.session_label, task=rec.task_label,
                                  run=rec.run_label, root=root, datatype="meg")
    try:
        with warnings.catch_warnings(record=True) as caught:  # MNE-BIDS warns about benign sidecar details
            warnings.simplefilter("always")
            raw = mne_bids.read_raw_bids(bids_path, verbose=False)
    except Exception as err:
        raise OSError(f"Could not read the MASC recording {rec.path} with mne_bids.read_raw_bids "
                      f"({type(err).__name__}: {err}). The file is truncated, corrupt or not a MEG recording: "
                      "re-download it.") from err
    damage = mne_damage(caught)
    if damage:
        logger.warning("MASC recording %s looks truncated or damaged (MNE: %s); it is read up to the damage "
                       "(%.1f s), words after that get no segment. Re-download it.", rec.path, damage[0],
                       raw.n_times / raw.info["sfreq"])
    try:
        raw.pick(picks, verbose=False)
    except ValueError as err:
        raise ValueError(f"picks={picks!r} selects no channel of {rec.path} ({err}); MASC holds 208 "
                         "KIT magnetometers, picked with picks='meg'.") from err
    o_sfreq = float(raw.info["sfreq"])
    target = o_sfreq if sfreq is None else float(sfreq)
    n_ch = len(raw.ch_names)
    chunks = []
    bad = np.zeros(raw.n_times, dtype=bool)
    n_nan = n_inf = n_bad_ch = 0
    for c0 in range(0, n_ch, _CHUNK_CHANNELS):
        try:
            x = raw.get_data(picks=np.arange(c0, min(c0 + _CHUNK_CHANNELS, n_ch)))
        except Exception as err:  # MNE: "buffer size must be a multiple...", "cannot reshape array..."
            raise OSError(f"Could not read the data of the MASC recording {rec.path}: the file is truncated or "
                          f"corrupt ({type(err).__name__}: {err}). Re-download it.") from err
        fin = np.isfinite(x)
        if not fin.all():
            n_nan += int(np.isnan(x).sum())
            n_inf += int(np.isinf(x).sum())
            n_bad_ch += int((~fin.all(axis=1)).sum())
            bad |= ~fin.all(axis=0)
            x[~fin] = 0.0  # so filtering and resampling do not spread them
        del fin
        if l_freq is not None or h_freq is not None:
            x = mne.filter.filter_data(x, o_sfreq, l_freq, h_freq, verbose=False)
        if target != o_sfreq:
            x = mne.filter.resample(x, up=target, down=o_sfreq, npad="auto", verbose=False)
        chunks.append(x.astype(np.float32))
        del x
    if n_nan or n_inf:
        where = (f"{rec.path} (session {rec.session_label}, task {rec.task_label}) holds {n_nan} NaN and {n_inf} "
                 f"infinite sample(s) in {n_bad_ch} channel(s), over {int(bad.sum())} of {len(bad)} time points")
        if nonfinite == "error":
            raise ValueError(f"{where}. The recording is damaged: re-download it, or pass nonfinite='drop' to "
                             "drop the segments that overlap them (with a warning).")
        logger.warning("%s: the segments that overlap them are dropped (nonfinite='drop').", where)
    data = np.concatenate(chunks, axis=0) if len(chunks) > 1 else chunks[0]
    pos = np.array([ch["loc"][:3] for ch in raw.info["chs"]], dtype=float).reshape(n_ch, 3)
    pos[~np.isfinite(pos).all(axis=1) | (pos == 0).all(axis=1)] = np.nan
    out = {"data": data, "sfreq": target, "ch_names": list(raw.ch_names),
           "ch_types": list(raw.get_channel_types()), "ch_pos": pos,
           "bad": bad if bad.any() else None, "o_sfreq": o_sfreq}
    del raw
    return out


# -- audio -----------------------------------------------------------------------------------------
class _Audio:
    """Wav files of one call: path resolution, reading and resampling, each done once."""

    def __init__(self, root: Path, sfreq: float) -> None:
        self.root = root
        self.sfreq = float(sfreq)
        self.paths: dict[str, Path] = {}
        self.index: dict[Path, int] = {}
        self.waves: list[np.ndarray] = []

    def path(self, sound: str) -> Path:
        if sound not in self.paths:
            self.paths[sound] = find_masc_wav(self.root, sound)
        return self.paths[sound]

    def wave(self, path: Path) -> int:
        if path not in self.index:
            wave, rate = read_wav(path)
            if rate != self.sfreq:
                from scipy.signal import resample_poly

                ratio = (Fraction(int(self.sfreq), int(rate)) if self.sfreq.is_integer() and rate.is_integer()
                         else Fraction(self.sfreq / rate).limit_denominator(10_000))
                wave = resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)
                logger.debug("Resampled %s from %g to %g Hz", path.name, rate, self.sfreq)
            self.index[path] = len(self.waves)
            self.waves.append(wave)
        return self.index[path]

    def relpath(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


# -- pieces of load_masc ---------------------------------------------------------------------------
_DROP_REASONS = ("recording", "wav", "split", "after_recording", "after_wav", "nonfinite")


@dataclass(frozen=True)
class _Windows:
    """The window and split parameters of one :func:`load_masc` call (as passed, not converted)."""

    window_s: float
    tmin: float
    meg_offset_s: float
    word_stride: int
    test_ratio: float
    val_ratio: float
    split_seed: int
    min_block_s: float


@dataclass(frozen=True)
class _MegGeometry:
    """Sample geometry of one recording: rate, window length, length and non-finite samples."""

    sfreq: float
    n_times: int
    n_samples: int
    o_sfreq: float
    bad_cum: np.ndarray | None  # cumulative count of non-finite samples at the recorded rate, or None
    n_bad: int  # length of the non-finite mask (samples at the recorded rate)


@dataclass
class _Collected:
    """What :func:`load_masc` gathers over the recordings."""

    parts: list[np.ndarray] = field(default_factory=list)
    ev_parts: list[pd.DataFrame] = field(default_factory=list)
    stim_rows: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    blocks: dict[Path, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    ref: dict | None = None
    totals: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("words", "no_sound", *_DROP_REASONS), 0))


def _check_masc_args(*, window_s: float, tmin: float, meg_offset_s: float, sfreq: float | None,
                     audio_sfreq: float, word_stride: int, test_ratio: float, val_ratio: float,
                     min_block_s: float, nonfinite: str) -> None:
    """Raise the documented ``ValueError`` for the first invalid numeric argument of :func:`load_masc`."""
    if not (np.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
    if not np.isfinite(tmin):
        raise ValueError(f"tmin must be a finite number of seconds, got {tmin!r}")
    if not np.isfinite(meg_offset_s):
        raise ValueError(f"meg_offset_s must be a finite number of seconds, got {meg_offset_s!r}")
    if sfreq is not None and not (np.isfinite(sfreq) and sfreq > 0):
        raise ValueError(f"sfreq must be a positive rate in Hz or None, got {sfreq!r}")
    if not (np.isfinite(audio_sfreq) and audio_sfreq > 0):
        raise ValueError(f"audio_sfreq must be a positive rate in Hz, got {audio_sfreq!r}")
    if isinstance(word_stride, bool) or not isinstance(word_stride, (int, np.integer)) or word_stride < 1:
        raise ValueError(f"word_stride must be a positive int, got {word_stride!r}")
    for name, r in (("test_ratio", test_ratio), ("val_ratio", val_ratio)):
        if not (0.0 <= r <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1], got {r!r}")
    if test_ratio + val_ratio > 1.0:
        raise ValueError(f"test_ratio + val_ratio must be at most 1, got {test_ratio} + {val_ratio}")
    if not (np.isfinite(min_block_s) and min_block_s >= 0):
        raise ValueError(f"min_block_s must be a non-negative number of seconds, got {min_block_s!r}")
    check_nonfinite_option(nonfinite)


def _check_channels(ref: dict | None, meg: dict, path: Path) -> dict:
    """The reference channels and rate (the first recording's), checking that ``meg`` has the same."""
    if ref is None:
        ref = {k: meg[k] for k in ("sfreq", "ch_names", "ch_types", "ch_pos")}
        ref["path"] = path
        return ref
    if meg["ch_names"] != ref["ch_names"]:
        diff = sorted(set(meg["ch_names"]) ^ set(ref["ch_names"]))[:6]
        raise ValueError(f"MASC channels differ between {ref['path']} ({len(ref['ch_names'])} "
                         f"channels) and {path} ({len(meg['ch_names'])} channels); differing "
                         f"names include {diff}. Use picks= to select common channels.")
    if meg["sfreq"] != ref["sfreq"]:
        raise ValueError(f"MASC sampling rates differ between {ref['path']} ({ref['sfreq']} Hz) and "
                         f"{path} ({meg['sfreq']} Hz); pass sfreq= to resample both.")
    return ref


def _words_with_sound(ev: pd.DataFrame, events_path: Path) -> tuple[pd.DataFrame, int]:
    """The ``word`` rows of ``ev`` whose time in their wav is known, and how many were dropped (warned)."""
    words = ev[ev["kind"] == "word"].copy()
    valid = words["sound"].map(lambda s: isinstance(s, str)) & words["sound_time"].notna()
    n_bad = int((~valid).sum())
    if n_bad:
        logger.warning("%s: %d of %d word(s) have no preceding sound event (or sound key), so their time in "
                       "the audio is unknown: dropped. The events file may be damaged; re-download it.",
                       events_path, n_bad, len(words))
    return words[valid], n_bad


def _warn_after_recording(words: pd.DataFrame, rec: Any, rec_s: float) -> int:
    """Number of words whose onset lies after the end (``rec_s``) of the recording (warned)."""
    after = int((words["onset"].to_numpy(dtype=float) >= rec_s).sum())
    if after:
        logger.warning("MASC recording %s is %.2f s long but %d of %d word(s) of %s lie after its end (last "
                       "at %.2f s): it is shorter than its events say (truncated?), their segments are "
                       "dropped. Re-download it.", rec.path, rec_s, after, len(words), rec.events.name,
                       float(words["onset"].max()))
    return after


def _warn_after_wav(words: pd.DataFrame, path: Path, wave_s: float, events_name: str) -> int:
    """Number of words whose time in the wav lies after its end (``wave_s``) (warned)."""
    late = int((words["sound_time"].to_numpy(dtype=float) >= wave_s).sum())
    if late:
        logger.warning("Wav file %s is %.2f s long but %d of %d word(s) of %s lie after its end (last at "
                       "%.2f s): it is shorter than the events say (truncated?), their segments are "
                       "dropped. Re-download it.", path, wave_s, late, len(words), events_name,
                       float(words["sound_time"].max()))
    return late


def _wav_blocks(words: pd.DataFrame, story: str, wav_key: str,
                win: _Windows) -> tuple[np.ndarray, np.ndarray]:
    """Block boundaries of one wav (``words`` sorted by ``sound_time``) and the split of each block."""
    bounds = _make_blocks(words, win.min_block_s)
    splits = np.array([_block_split(story, wav_key, j, win.split_seed, win.test_ratio, win.val_ratio)
                       for j in range(len(bounds))])
    return bounds, splits


def _meg_window(onset: float, geom: _MegGeometry, win: _Windows) -> tuple[int, str | None]:
    """First sample of the MEG window of a word at ``onset``, and why it is dropped (None: kept).

    The reason is ``"recording"`` for a window outside the recording, ``"nonfinite"`` for one that
    overlaps a non-finite sample.
    """
    start = int(np.rint((onset + win.tmin + win.meg_offset_s) * geom.sfreq))
    if start < 0 or start + geom.n_times > geom.n_samples:
        return start, "recording"
    if geom.bad_cum is not None:
        o0 = min(max(int(np.floor(start * geom.o_sfreq / geom.sfreq)), 0), geom.n_bad)
        o1 = min(max(int(np.ceil((start + geom.n_times) * geom.o_sfreq / geom.sfreq)), o0), geom.n_bad)
        if geom.bad_cum[o1] > geom.bad_cum[o0]:
            return start, "nonfinite"
    return start, None


def _audio_window(sound_time: float, bounds: np.ndarray, splits: np.ndarray, *, wave_len: int,
                  audio_sfreq: float, n_audio: int, win: _Windows) -> tuple[int, str | None, str | None]:
    """First wav sample of a word's audio window, its split, and why it is dropped (None: kept).

    The reason is ``"wav"`` for a window outside the wav, ``"split"`` for one that overlaps blocks of
    different splits (then the split is None).
    """
    w0 = sound_time + win.tmin
    a0 = int(np.rint(w0 * audio_sfreq))
    if a0 < 0 or a0 + n_audio > wave_len:
        return a0, None, "wav"
    j0 = max(int(np.searchsorted(bounds, w0, side="right")) - 1, 0)
    j1 = max(int(np.searchsorted(bounds, w0 + win.window_s, side="left")) - 1, j0)
    seg_splits = set(splits[j0:j1 + 1].tolist())
    if len(seg_splits) != 1:
        return a0, None, "split"
    return a0, seg_splits.pop(), None


def _wav_segments(sound: str, words: pd.DataFrame, rec: Any, *, subject: int, story_default: str,
                  audio: _Audio, blocks: dict, geom: _MegGeometry, win: _Windows, n_audio: int,
                  counts: dict[str, int]) -> list[dict]:
    """The segment rows of the words of one wav in one recording; drops are counted in ``counts``."""
    path = audio.path(sound)
    wi = audio.wave(path)
    wave_len = len(audio.waves[wi])
    counts["after_wav"] += _warn_after_wav(words, path, wave_len / audio.sfreq, rec.events.name)
    w = words.sort_values("sound_time", kind="stable")
    wav_key = path.name.split(".", 1)[0]
    stories = w["story"].dropna()
    story = str(stories.iloc[0]) if len(stories) else story_default
    if path not in blocks:
        blocks[path] = _wav_blocks(w, story, wav_key, win)
    bounds, splits = blocks[path]
    rel = audio.relpath(path)
    rows: list[dict] = []
    for k, (row, key) in enumerate(zip(w.itertuples(index=False), _word_keys(w))):
        if k % win.word_stride:
            continue
        start, reason = _meg_window(row.onset, geom, win)
        if reason is None:
            a0, split, reason = _audio_window(row.sound_time, bounds, splits, wave_len=wave_len,
                                              audio_sfreq=audio.sfreq, n_audio=n_audio, win=win)
        if reason is not None:
            counts[reason] += 1
            continue
        j = max(int(np.searchsorted(bounds, row.sound_time, side="right")) - 1, 0)
        rows.append({
            "subject": subject, "session": rec.session, "task": rec.task, "story": story,
            "stimulus_id": f"{story}/{wav_key}/{key}", "word": row.word,
            "word_index": row.word_index, "onset": float(row.onset), "sound": rel,
            "sound_time": float(row.sound_time), "block": f"{story}/{wav_key}/b{j}",
            "split": split, "_start": start, "_wave": wi, "_a0": a0,
        })
    return rows


def _cut_windows(data: np.ndarray, starts: np.ndarray, n_times: int) -> np.ndarray:
    """float32 (len(starts), n_channels, n_times): the windows of ``data`` starting at ``starts``."""
    seg = np.empty((len(starts), data.shape[0], n_times), dtype=np.float32)
    for i, s in enumerate(starts):
        seg[i] = data[:, s:s + n_times]
    return seg


def _log_recording(rec: Any, n_words: int, n_segments: int, n_bad: int, counts: dict[str, int]) -> None:
    """One line per recording: segments and drops (a WARNING when some are due to damage)."""
    damaged = n_bad + counts["after_recording"] + counts["after_wav"] + counts["nonfinite"]
    logger.log(logging.WARNING if damaged else logging.INFO,
               "MASC sub-%s ses-%s task-%s: %d words, %d segments (dropped: %d windows past the recording, %d "
               "past the wav, %d straddling splits%s)", rec.subject_label, rec.session_label, rec.task_label,
               n_words, n_segments, counts["recording"], counts["wav"], counts["split"],
               f"; because of damage: {n_bad} words without a sound event, {counts['after_recording']} "
               f"words after the end of the recording, {counts['after_wav']} after the end of their wav, "
               f"{counts['nonfinite']} windows with non-finite samples" if damaged else "")


def _load_recording(rec: Any, root: Path, col: _Collected, win: _Windows, audio: _Audio, *, subject: int,
                    n_audio: int, picks: Any, l_freq: float | None, h_freq: float | None,
                    sfreq: float | None, nonfinite: str) -> None:
    """Read one recording and add its segments, events, stimuli and counts to ``col``."""
    if rec.events is None:
        expected = rec.path.with_name(rec.path.name.rsplit("_meg.", 1)[0] + "_events.tsv")
        raise FileNotFoundError(f"MASC events file not found: {expected} (next to {rec.path}). "
                                f"{MASC_ROOT_HINT}.")
    ev = read_masc_events(rec.events)
    meg = _read_meg(rec, root, picks=picks, l_freq=l_freq, h_freq=h_freq, sfreq=sfreq, nonfinite=nonfinite)
    bad, o_sf = meg.pop("bad"), meg.pop("o_sfreq")
    col.ref = _check_channels(col.ref, meg, rec.path)
    sf = meg["sfreq"]
    n_times = round(win.window_s * sf)
    if n_times < 1:
        raise ValueError(f"window_s={win.window_s} s at sfreq={sf} Hz gives no sample; use a longer window.")
    data = meg.pop("data")
    col.files.append(str(rec.path))
    geom = _MegGeometry(sf, n_times, data.shape[1], o_sf, None if bad is None else np.r_[0, np.cumsum(bad)],
                        0 if bad is None else len(bad))

    words, n_bad = _words_with_sound(ev, rec.events)
    col.totals["words"] += len(words) + n_bad
    col.totals["no_sound"] += n_bad
    counts = dict.fromkeys(_DROP_REASONS, 0)
    counts["after_recording"] = _warn_after_recording(words, rec, data.shape[1] / sf)
    story_default = MASC_STORIES.get(rec.task, f"task-{rec.task}") if isinstance(rec.task, int) \
        else f"task-{rec.task}"
    seg_rows: list[dict] = []
    for sound, w in words.groupby("sound", sort=False):
        seg_rows += _wav_segments(sound, w, rec, subject=subject, story_default=story_default, audio=audio,
                                  blocks=col.blocks, geom=geom, win=win, n_audio=n_audio, counts=counts)
    seg_rows.sort(key=lambda r: r["onset"])
    starts = np.array([r.pop("_start") for r in seg_rows], dtype=np.int64)
    if len(starts):
        col.parts.append(_cut_windows(data, starts, n_times))
    del data
    for r in seg_rows:
        col.stim_rows.append({"stimulus_id": r["stimulus_id"], "_wave": r.pop("_wave"), "_a0": r.pop("_a0"),
                              **{c: r[c] for c in ("story", "sound", "word", "word_index", "sound_time",
                                                   "block", "split")}})
    col.ev_parts.append(pd.DataFrame(seg_rows, columns=[c for c in _EVENT_COLUMNS if c != "repetition"]))
    for key, value in counts.items():
        col.totals[key] += value
    _log_recording(rec, len(words) + n_bad, len(seg_rows), n_bad, counts)


def _no_segment_message(sub_label: str, totals: dict[str, int], window_s: float, tmin: float) -> str:
    """The error message when no word of the participant gives a segment (with every drop count)."""
    return (f"load_masc found no segment for sub-{sub_label}: {totals['words']} word events, "
            f"{totals['no_sound']} without a sound event, {totals['recording']} windows past the recording, "
            f"{totals['wav']} past the wav ({totals['after_recording']} words after the end of the recording, "
            f"{totals['after_wav']} after the end of their wav), {totals['nonfinite']} with non-finite samples, "
            f"{totals['split']} straddling blocks of different splits "
            f"(window_s={window_s}, tmin={tmin}). Check the events.tsv files, use a shorter window_s or a "
            "larger min_block_s.")


def _stack_parts(parts: list[np.ndarray], n_channels: int, n_times: int) -> np.ndarray:
    """Concatenate the per-recording segments, emptying ``parts`` as it goes (bounds peak memory)."""
    out = np.empty((sum(len(p) for p in parts), n_channels, n_times), dtype=np.float32)
    k = 0
    while parts:
        p = parts.pop(0)
        out[k:k + len(p)] = p
        k += len(p)
        del p
    return out


def _events_table(ev_parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The events of every recording, with ``repetition`` counted per ``stimulus_id`` in load order."""
    events = pd.concat(ev_parts, ignore_index=True)
    events["subject"] = events["subject"].astype(np.int64)
    events["repetition"] = events.groupby("stimulus_id", sort=False).cumcount().astype(np.int64)
    return events[_EVENT_COLUMNS]


def _masc_stimuli(stim_rows: list[dict], audio: _Audio, n_audio: int, *, root: Path, audio_sfreq: float,
                  tmin: float, window_s: float, word_stride: int) -> StimulusSet:
    """The StimulusSet of the distinct ``stimulus_id`` (first occurrence), its audio cut lazily."""
    stim = pd.DataFrame(stim_rows).drop_duplicates("stimulus_id", keep="first").reset_index(drop=True)
    meta = stim[["story", "sound", "word", "word_index", "sound_time", "block", "split"]].copy()
    meta.index = pd.Index(stim["stimulus_id"].to_numpy(), name="stimulus_id")
    segments = WavSegments(audio.waves, stim["_wave"].to_numpy(), stim["_a0"].to_numpy(), n_audio)
    source = f"{root / 'stimuli' / 'audio'} [window {tmin:g}..{tmin + window_s:g} s, stride {word_stride}]"
    return StimulusSet(stim["stimulus_id"].tolist(), audio=segments, sfreq_audio=float(audio_sfreq),
                       metadata=meta, source=source)


# -- loader ----------------------------------------------------------------------------------------
@verbose
@fill_doc
def load_masc(
    root: str | Path,
    subject: int | str,
    *,
    sessions: int | str | Sequence[int | str] | None = None,
    tasks: int | str | Sequence[int | str] | None = None,
    window_s: float = 3.0,
    tmin: float = 0.0,
    meg_offset_s: float = 0.0,
    sfreq: float | None = 120.0,
    l_freq: float | None = None,
    h_freq: float | None = None,
    picks: str | Sequence[str] = "meg",
    word_stride: int = 1,
    test_ratio: float = 0.2,
    val_ratio: float = 0.0,
    split_seed: int = 0,
    min_block_s: float = 6.0,
    audio_sfreq: float = 16000,
    nonfinite: Literal["error", "drop"] = "error",
    verbose: bool | str | int | None = None,
) -> BrainTrials:
    """Load one MEG-MASC participant as word-locked MEG segments with their audio.

    Each recording (one story in one session) is read with
    :func:`mne_bids.read_raw_bids`, reduced to ``picks``, optionally
    band-pass filtered, resampled to ``sfreq`` and cut into one window per
    word onset: ``[onset + tmin, onset + tmin + window_s)``. The stimulus of a
    segment is the same window of the story's wav file.

    Parameters
    ----------
    root : str | Path
        The MASC BIDS root (``participants.tsv``, ``stimuli/audio/``,
        ``sub-XX/ses-S/meg/``).
    subject : int | str
        Participant number (1..27) or label (``"01"``, ``"sub-01"``).
    sessions, tasks : int | str | sequence | None
        Sessions (0, 1) and tasks (0..3: ``lw1``, ``cable_spool_fort``,
        ``easy_money``, ``The_Black_Willow``) to load; None: all found on disk.
        A requested session or task with no recording at all raises; a single
        missing combination is skipped with a warning.
    window_s : float
        Segment duration in seconds (brainmagick: 3 s).
    tmin : float
        Start of the window relative to the word onset, in seconds.
    meg_offset_s : float
        Delay of the MEG window after the audio window, in seconds: the MEG
        segment is ``[onset + tmin + meg_offset_s, … + window_s)`` while its
        audio stays ``[onset + tmin, … + window_s)``, so that the brain
        response is paired with the sound that caused it (brainmagick's
        ``task.offset_meg_ms: 150`` is ``meg_offset_s=0.15``). Default 0.
    sfreq : float | None
        Resample the MEG to this rate (Hz) before cutting; None keeps the
        recorded rate (1 kHz for MASC).
    l_freq, h_freq : float | None
        Band-pass edges (Hz) applied at the recorded rate before resampling
        (:func:`mne.filter.filter_data`); None: no filter on that side.
    picks : str | sequence of str
        Channels, as for :meth:`mne.io.Raw.pick` (default ``"meg"``: the 208
        magnetometers, without the reference sensors).
    word_stride : int
        Keep every ``word_stride``-th word of each wav (in wav order), to
        thin out overlapping windows.
    test_ratio, val_ratio : float
        Approximate fraction of blocks assigned to ``test`` and ``val``.
    split_seed : int
        Seed of the block assignment.
    min_block_s : float
        Sentence-like units are merged into blocks of at least this many
        seconds (see Notes).
    audio_sfreq : float
        Rate (Hz) of the returned audio segments; wav files at another rate
        are resampled with :func:`scipy.signal.resample_poly`.
    nonfinite : ``"error"`` | ``"drop"``
        What to do with NaN or infinite MEG samples: ``"error"`` (default)
        raises a ``ValueError`` naming the recording, its session and task and
        the counts; ``"drop"`` sets them to 0 before filtering and drops the
        segments whose window overlaps one, with a WARNING giving the counts.
        In a run config: ``data.options.nonfinite``.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        ``data`` float32 (n_segments, n_channels, round(window_s * sfreq)).
        ``events``: ``subject``, ``session``, ``task`` (ints), ``story``,
        ``stimulus_id``, ``word``, ``word_index``, ``onset`` (s in the
        recording), ``sound`` (wav path relative to root), ``sound_time`` (s
        of the word in its wav), ``block``, ``repetition`` (0-based count of
        earlier segments with the same ``stimulus_id``, e.g. 1 in session 1)
        and ``split``. ``info``: ``modality="meg"``, ``sfreq``, ``ch_names``,
        ``ch_types``, ``ch_pos`` (n_channels, 3; NaN when unknown), ``times``
        and ``tmin`` (the MEG's, relative to the word onset: ``tmin +
        meg_offset_s``), ``audio_tmin``, ``meg_offset_s``, ``window_s``,
        ``files``, ``dataset="masc"``, ``subject``.
        ``stimuli``: a :class:`StimulusSet` with ``audio`` (n_stimuli,
        round(window_s * audio_sfreq)) float32, cut lazily from the wavs, and
        ``metadata`` (story, sound, word, word_index, sound_time, block, split).

    Raises
    ------
    FileNotFoundError
        Missing root, a folder that is not a MASC BIDS root, a missing
        recording, events.tsv or wav file.
    ValueError
        Unknown subject (lists the available ones), malformed ``trial_type``
        (names file and row), channels differing between recordings (names
        both files), bad arguments, or no segment left.

    Notes
    -----
    **Word times in the audio.** A ``sound`` event marks when its wav started
    in the recording; a word's time in its wav is its onset minus the onset
    of the latest preceding ``sound`` event with the same ``sound`` value.

    **Stimulus ids** are ``"{story}/{wav stem}/{word key}"``, where the word
    key is ``word_index`` when it is unique within the wav, else
    ``"{sequence_id}.{word_index}"`` when that is unique, else the word's
    time in the wav in milliseconds (``"1230ms"``). They only depend on the
    audio, so the same window heard in another session, or by another
    subject, has the same id (``repetition`` counts them).

    **Splits without audio leakage** (as brainmagick, which splits by
    sentence blocks). Words of one wav are grouped into sentence-like units:
    a new unit starts when the ``sequence_id`` (or ``sentence``) key changes
    or, without such keys, after a silence of at least ``PAUSE_S = 0.3`` s
    between the end of a word (onset + duration) and the next onset.
    Consecutive units are merged until a block spans at least
    ``min_block_s``; the blocks tile the wav (the first starts at 0 s, the
    last runs to the end). Each block goes to ``test``, ``val`` or
    ``train`` from a SHA-256 hash of (story, wav, block number,
    ``split_seed``), so every subject and session gets the same assignment.
    A segment is kept only if every block its audio window overlaps has the
    same split, hence train, val and test segments never share an audio
    sample. The blocks of a wav are computed once per call, from its first
    recording.

    Segments whose window runs outside the recording or outside the wav are
    dropped; the counts are logged. Damage is a WARNING with counts (see
    ``docs/reliability.md``): a wav or recording shorter than its header or
    than the events say (words after its end), words without a sound event,
    and segments dropped for non-finite samples. A recording whose data
    cannot be read raises an ``OSError`` naming it.

    Examples
    --------
    >>> trials = load_masc("/data/masc/bids_anonym", subject=1)      # doctest: +SKIP
    >>> trials.stimuli.get_audio(trials.events["stimulus_id"][:4]).shape  # doctest: +SKIP
    (4, 48000)
    """
    root = check_path(root, what="MEG-MASC root", hint=MASC_ROOT_HINT, kind="dir")
    n = _subject_number(subject)
    ses_req = _labels(sessions, "sessions")
    task_req = _labels(tasks, "tasks")
    _check_masc_args(window_s=window_s, tmin=tmin, meg_offset_s=meg_offset_s, sfreq=sfreq,
                     audio_sfreq=audio_sfreq, word_stride=word_stride, test_ratio=test_ratio,
                     val_ratio=val_ratio, min_block_s=min_block_s, nonfinite=nonfinite)
    win = _Windows(window_s, tmin, meg_offset_s, word_stride, test_ratio, val_ratio, split_seed, min_block_s)

    recs = _select_recordings(root, n, ses_req, task_req)
    sub_label = str(recs["subject_label"].iloc[0])
    audio = _Audio(root, float(audio_sfreq))
    n_audio = round(window_s * audio_sfreq)
    col = _Collected()
    for rec in ProgressBar(list(recs.itertuples(index=False)), desc=f"MEG-MASC sub-{sub_label}",
                           unit="recording"):
        _load_recording(rec, root, col, win, audio, subject=n, n_audio=n_audio, picks=picks, l_freq=l_freq,
                        h_freq=h_freq, sfreq=sfreq, nonfinite=nonfinite)

    if col.ref is None:  # pragma: no cover - _select_recordings never returns an empty table
        raise FileNotFoundError(f"No MASC recording selected under {root}.")
    if sum(len(p) for p in col.parts) == 0:
        raise ValueError(_no_segment_message(sub_label, col.totals, window_s, tmin))
    ref, files = col.ref, col.files
    sf = ref["sfreq"]
    n_times = round(window_s * sf)
    out = _stack_parts(col.parts, len(ref["ch_names"]), n_times)
    events = _events_table(col.ev_parts)
    stimuli = _masc_stimuli(col.stim_rows, audio, n_audio, root=root, audio_sfreq=audio_sfreq, tmin=tmin,
                            window_s=window_s, word_stride=word_stride)
    info = {"modality": "meg", "sfreq": float(sf), "ch_names": list(ref["ch_names"]),
            "ch_types": list(ref["ch_types"]), "ch_pos": ref["ch_pos"],
            # the MEG's time axis (relative to the word onset); the audio window starts at audio_tmin
            "times": float(tmin + meg_offset_s) + np.arange(n_times) / float(sf),
            "tmin": float(tmin + meg_offset_s), "audio_tmin": float(tmin), "meg_offset_s": float(meg_offset_s),
            "window_s": float(window_s), "files": files, "dataset": "masc", "subject": n,
            "audio_sfreq": float(audio_sfreq)}
    counts = events["split"].value_counts()
    logger.info("MEG-MASC sub-%s: %d segments (%s) of %d stimuli from %d recording(s); %d dropped "
                "straddling splits", sub_label, len(events),
                ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "val", "test")), len(stimuli),
                len(files), col.totals["split"])
    return BrainTrials(out, events, info, stimuli)


def _select_recordings(root: Path, n: int, sessions: list | None, tasks: list | None) -> pd.DataFrame:
    """The recordings of subject ``n`` for the requested sessions / tasks (errors as documented)."""
    recs = masc_recordings(root)
    listed = read_participants(root)
    mine = recs[recs["subject"].map(lambda s: s == n)]
    if mine.empty:
        label = next((s for s in listed if s.isdigit() and int(s) == n), None)
        if label is None:
            available = sorted({int(s) if s.isdigit() else s for s in listed}
                               | set(recs["subject"].tolist()), key=str)
            raise ValueError(f"MEG-MASC subject {n} not found under {root}: it is not in participants.tsv "
                             f"and has no sub-* folder with recordings. Available subjects: {available}.")
        raise FileNotFoundError(f"MEG-MASC subject {n} is listed in participants.tsv but has no recording: "
                                f"{_bids_file(root, label, 0, 0)} does not exist. Download sub-{label}.")
    label = str(mine["subject_label"].iloc[0])
    sel = mine
    if sessions is not None:
        sel = sel[sel["session"].isin(sessions)]
    if tasks is not None:
        sel = sel[sel["task"].isin(tasks)]
    found = sorted(set(zip(mine["session"], mine["task"])), key=str)
    if sel.empty:
        ses = sessions[0] if sessions else mine["session"].iloc[0]
        task = tasks[0] if tasks else mine["task"].iloc[0]
        raise FileNotFoundError(f"No MEG-MASC recording for sub-{label} sessions={sessions} tasks={tasks}: "
                                f"e.g. {_bids_file(root, label, ses, task)} does not exist. Recordings found "
                                f"(session, task): {found}.")
    for name, req, col in (("session", sessions, "session"), ("task", tasks, "task")):
        for v in req or []:
            if not (sel[col] == v).any():
                ses = v if col == "session" else (sessions or [mine["session"].iloc[0]])[0]
                task = v if col == "task" else (tasks or [mine["task"].iloc[0]])[0]
                raise FileNotFoundError(f"No MEG-MASC recording for sub-{label} {name} {v}: "
                                        f"{_bids_file(root, label, ses, task)} does not exist. Recordings "
                                        f"found (session, task): {found}.")
    if sessions is not None and tasks is not None:
        have = set(zip(sel["session"], sel["task"]))
        for s in sessions:
            for t in tasks:
                if (s, t) not in have:
                    warn(f"MEG-MASC sub-{label}: no recording for session {s} task {t} "
                         f"({_bids_file(root, label, s, t)}); skipped.")
    order = sorted(range(len(sel)), key=lambda i: (_sort_key(sel["session"].iloc[i]),
                                                   _sort_key(sel["task"].iloc[i])))
    return sel.iloc[order].reset_index(drop=True)


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))
