"""Readers for MEG-MASC (Gwilliams et al. 2023), the BIDS speech MEG dataset.

The layout follows ``FORMATS.md`` section 4.1::

    <root>/participants.tsv, <root>/dataset_description.json
    <root>/stimuli/audio/<story>_<k>.wav
    <root>/sub-XX/ses-S/meg/sub-XX_ses-S_task-T_meg.con   (.fif in simulations)
    <root>/sub-XX/ses-S/meg/sub-XX_ses-S_task-T_events.tsv

The ``trial_type`` column of ``*_events.tsv`` holds a Python dict literal per
row (``{'kind': 'word', 'story': 'lw1', 'sound': 'stimuli/audio/lw1_0.wav',
'word': 'tara', ...}``). It is parsed with :func:`ast.literal_eval`, never
``eval``: a file cannot run code when it is read.

Only :mod:`neurodecode.utils` is imported at module level (io is the lowest
layer); scipy is imported on first use.
"""

from __future__ import annotations

import ast
import math
import re
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import logger

__all__ = ["MASC_STORIES", "WavSegments", "find_masc_wav", "masc_recordings", "parse_trial_type",
           "read_masc_events", "read_participants", "read_wav"]

#: Story played in each MASC task (``task-0`` .. ``task-3``).
MASC_STORIES = {0: "lw1", 1: "cable_spool_fort", 2: "easy_money", 3: "The_Black_Willow"}

MASC_ROOT_HINT = (
    "A MEG-MASC root is the BIDS folder (OSF ag3kj 'bids_anonym') holding participants.tsv, "
    "stimuli/audio/<story>_<k>.wav and sub-XX/ses-S/meg/sub-XX_ses-S_task-T_meg.con (or .fif) "
    "with its *_events.tsv"
)

# Names that a dict written by ``str(dict)`` may contain besides literals (float NaN / inf).
_FLOAT_NAMES = {"nan": math.nan, "NaN": math.nan, "inf": math.inf, "Infinity": math.inf}
# MNE's own annotations (not MASC events) that may end up in an events.tsv.
_MNE_ANNOT = re.compile(r"^(BAD|EDGE)([ _]|$)", re.IGNORECASE)
_MISSING = ("", "n/a", "nan", "none")
_RECORDING = re.compile(
    r"^sub-(?P<sub>[^_/]+)_ses-(?P<ses>[^_/]+)_task-(?P<task>[^_/]+)(?:_run-(?P<run>[^_/]+))?"
    r"_meg\.(?P<ext>con|sqd|fif|ds)$", re.IGNORECASE)


class _FloatNames(ast.NodeTransformer):
    """Replace the names ``nan``/``inf`` by float constants (and nothing else)."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _FLOAT_NAMES:
            return ast.copy_location(ast.Constant(_FLOAT_NAMES[node.id]), node)
        return node


def parse_trial_type(text: Any, *, where: str = "") -> dict:
    """Parse one MASC ``trial_type`` value (a Python dict literal) safely.

    Parameters
    ----------
    text : str
        e.g. ``"{'kind': 'word', 'word': 'tara', 'word_index': 0}"``.
    where : str
        Where the text comes from (file and row), for error messages.

    Returns
    -------
    event : dict
        The parsed dict. Bare ``nan``/``inf`` names (as written by
        ``str(dict)`` for float NaN / infinity) become floats.

    Raises
    ------
    ValueError
        If the text is empty, is not a literal (e.g. a function call such as
        ``__import__('os')...``), or is a literal but not a dict.

    Notes
    -----
    Uses :func:`ast.literal_eval`, which only builds literals (strings,
    numbers, tuples, lists, dicts, sets, booleans, None); it never runs code.
    brainmagick and the MASC authors call ``eval`` on these strings.
    """
    loc = f" in {where}" if where else ""
    if not isinstance(text, str) or text.strip().lower() in _MISSING:
        raise ValueError(f"Empty trial_type{loc}: expected a Python dict literal such as "
                         f"\"{{'kind': 'word', 'word': 'tara'}}\", got {text!r}.")
    short = text if len(text) <= 120 else text[:117] + "..."
    try:
        tree = ast.parse(text.strip(), mode="eval")
        value = ast.literal_eval(_FloatNames().visit(tree))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise ValueError(f"Malformed trial_type{loc}: {short!r} is not a Python dict literal "
                         f"({type(err).__name__}: {err}). Only literals are accepted "
                         "(it is parsed with ast.literal_eval, never eval).") from None
    if not isinstance(value, dict):
        raise ValueError(  # noqa: TRY004 - a malformed file, not a caller's wrong type
            f"Malformed trial_type{loc}: {short!r} is a {type(value).__name__}, not a dict literal.")
    return value


def read_masc_events(path: str | Path) -> pd.DataFrame:
    """Read a MASC ``*_events.tsv`` into one column per ``trial_type`` key.

    Parameters
    ----------
    path : str | Path
        ``sub-XX_ses-S_task-T_events.tsv`` (columns ``onset``, ``duration``,
        ``trial_type``, ``value``, ``sample``).

    Returns
    -------
    events : pandas.DataFrame
        One row per event, in file order (MNE's own ``BAD``/``EDGE``
        annotations and empty ``trial_type`` rows are skipped), with
        ``onset``, ``duration`` (s, in the recording), ``sample`` (when
        present), one column per dict key (always ``kind``, ``story``,
        ``sound``, ``word``, ``word_index``, ``phoneme``; missing values are
        NaN / None), plus ``sound_onset`` (recording time at which the wav of
        this row started: the onset of the latest ``sound`` event, at or
        before this row, with the same ``sound`` value) and ``sound_time``
        (``onset - sound_onset``: the time of this row inside its wav). For
        ``sound`` rows ``sound_time`` is 0; rows without a preceding sound
        event (or of another kind) have NaN.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the table has no ``onset`` or ``trial_type`` column, a
        ``trial_type`` is not a dict literal (the message names the file and
        row), or no row has a ``kind``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"MASC events file not found: {p}. {MASC_ROOT_HINT}.")
    try:
        table = pd.read_csv(p, sep="\t", dtype={"trial_type": object}, keep_default_na=False,
                            na_values={"onset": ["n/a"], "duration": ["n/a"], "sample": ["n/a"]})
    except Exception as err:  # pandas raises several types on bad files
        raise ValueError(f"Could not read MASC events file {p} ({type(err).__name__}: {err}).") from err
    missing = [c for c in ("onset", "trial_type") if c not in table.columns]
    if missing:
        raise ValueError(f"MASC events file {p} has no column(s) {missing} (it has {list(table.columns)}); "
                         "MASC events.tsv files have onset, duration, trial_type, value, sample, where "
                         "trial_type is a Python dict literal.")
    rows: list[dict] = []
    keep: list[int] = []
    n_skipped = 0
    for i, text in enumerate(table["trial_type"].tolist()):
        s = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text).strip()
        if s.lower() in _MISSING or _MNE_ANNOT.match(s):
            n_skipped += 1
            continue
        rows.append(parse_trial_type(s, where=f"{p}, row {i} (line {i + 2})"))
        keep.append(i)
    if n_skipped:
        logger.info("MASC events %s: skipped %d row(s) without a MASC trial_type (n/a, BAD/EDGE)",
                    p.name, n_skipped)
    base = table.iloc[keep].reset_index(drop=True)
    out = pd.DataFrame({"onset": pd.to_numeric(base["onset"], errors="coerce").astype(float)})
    out["duration"] = (pd.to_numeric(base["duration"], errors="coerce").astype(float)
                       if "duration" in base.columns else np.nan)
    if "sample" in base.columns:
        out["sample"] = pd.to_numeric(base["sample"], errors="coerce")
    if out["onset"].isna().any():
        i = int(np.flatnonzero(out["onset"].isna().to_numpy())[0])
        raise ValueError(f"MASC events file {p}: onset of row {keep[i]} is not a number.")
    keys: dict[str, None] = {}
    for d in rows:
        keys.update(dict.fromkeys(map(str, d)))
    for key in ("kind", "story", "sound", "word", "word_index", "phoneme"):
        keys.setdefault(key, None)
    for key in keys:
        col = key if key not in out.columns else f"trial_type_{key}"
        out[col] = pd.Series([d.get(key) for d in rows], dtype=object)
    if rows and out["kind"].isna().all():
        raise ValueError(f"MASC events file {p}: no trial_type has a 'kind' key; MASC dicts have "
                         "kind ('word', 'phoneme' or 'sound'), story, sound, word, ...")
    out["kind"] = out["kind"].astype(object)
    _add_sound_time(out)
    return out


def _add_sound_time(events: pd.DataFrame) -> None:
    """Add ``sound_onset`` / ``sound_time`` in place (see :func:`read_masc_events`)."""
    n = len(events)
    sound_onset = np.full(n, np.nan)
    kinds = events["kind"].to_numpy()
    sounds = events["sound"].to_numpy()
    onsets = events["onset"].to_numpy(dtype=float)
    is_sound = np.array([k == "sound" for k in kinds], dtype=bool)
    # sound events first at equal onsets, so a word at the very start of its wav finds it
    order = np.lexsort((~is_sound, onsets))
    latest: dict[Any, float] = {}
    for i in order:
        key = sounds[i]
        if not isinstance(key, str):
            continue
        if is_sound[i]:
            latest[key] = onsets[i]
            sound_onset[i] = onsets[i]
        elif key in latest:
            sound_onset[i] = latest[key]
    events["sound_onset"] = sound_onset
    events["sound_time"] = onsets - sound_onset


def _wav_declared_frames(path: Path) -> int | None:
    """Sample frames the ``data`` chunk of a RIFF/WAVE header declares (None if not found)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    return size // block_align if block_align else None
                else:
                    f.seek(size + (size & 1), 1)
    except OSError:
        return None


def read_wav(path: str | Path) -> tuple[np.ndarray, float]:
    """Read a wav file as a mono float32 waveform in [-1, 1].

    Parameters
    ----------
    path : str | Path
        A PCM (8/16/24/32-bit integer) or float wav file.

    Returns
    -------
    wave : array, shape (n_samples,)
        float32; integer samples are divided by their full scale (e.g. 32768
        for int16); several channels are averaged.
    sfreq : float
        Sampling rate in Hz.

    Notes
    -----
    A file shorter than its header declares (a truncated download) is read up
    to its end with a WARNING that names it and gives both lengths; NaN or
    infinite samples in a float wav raise a ``ValueError`` naming the file.
    """
    from scipy.io import wavfile

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Wav file not found: {p}")
    try:
        with warnings.catch_warnings(record=True) as caught:  # WavFileWarning: unknown chunks (LIST), EOF
            warnings.simplefilter("always", wavfile.WavFileWarning)
            rate, data = wavfile.read(p, mmap=False)
    except Exception as err:
        raise ValueError(f"Could not read wav file {p} ({type(err).__name__}: {err}); "
                         "re-download it or convert it to PCM wav.") from err
    data = np.asarray(data)
    declared = _wav_declared_frames(p)
    eof = any("EOF" in str(w.message) for w in caught)
    if rate > 0 and (eof or (declared is not None and len(data) < declared)):
        total = f"{declared} samples ({declared / rate:.2f} s)" if declared is not None else "more samples"
        logger.warning("Wav file %s is truncated: its header declares %s but it holds %d (%.2f s). Words "
                       "past its end get no segment; re-download it.", p, total, len(data), len(data) / rate)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
        raise ValueError(f"Wav file {p} holds {n_nan} NaN and {n_inf} infinite sample(s); it is damaged, "
                         "re-download it.")
    if data.dtype == np.uint8:
        wave = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype.kind == "i":
        wave = data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))
    elif data.dtype.kind == "f":
        wave = data.astype(np.float32, copy=False)
    else:
        raise ValueError(f"Wav file {p} has unsupported sample type {data.dtype}.")
    if wave.ndim == 2:
        wave = wave.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32), float(rate)


def _listdir_ci(folder: Path) -> dict[str, Path]:
    try:
        return {q.name.lower(): q for q in folder.iterdir()}
    except OSError:
        return {}


def find_masc_wav(root: str | Path, sound: str) -> Path:
    """Find the wav file a MASC ``sound`` value refers to.

    Tries, in order: ``root / sound`` as given; the same path matched
    case-insensitively, part by part; a file under ``root/stimuli/audio/``
    whose name up to the first dot equals that of ``sound``
    (case-insensitive), preferring ``.wav``.

    Parameters
    ----------
    root : str | Path
        The MASC BIDS root.
    sound : str
        The ``sound`` key of a ``trial_type`` dict, e.g. ``stimuli/audio/lw1_0.wav``.

    Returns
    -------
    path : Path

    Raises
    ------
    FileNotFoundError
        Naming every path tried.
    """
    root = Path(root).expanduser()
    rel = str(sound).strip().replace("\\", "/").lstrip("/")
    tried = []
    direct = root / rel
    tried.append(str(direct))
    if direct.is_file():
        return direct
    # case-insensitive, part by part
    cur: Path | None = root
    for part in [q for q in rel.split("/") if q not in ("", ".")]:
        cur = _listdir_ci(cur).get(part.lower()) if cur is not None else None
        if cur is None:
            break
    tried.append(f"{direct} (case-insensitive)")
    if cur is not None and cur.is_file():
        return cur
    # by stem under stimuli/audio
    stem = rel.rsplit("/", 1)[-1].split(".", 1)[0].lower()
    audio_dir = _listdir_ci(root).get("stimuli")
    audio_dir = _listdir_ci(audio_dir).get("audio") if audio_dir is not None else None
    tried.append(f"{root / 'stimuli' / 'audio' / stem}.* (by stem)")
    if audio_dir is not None and stem:
        hits = sorted((q for q in audio_dir.iterdir()
                       if q.is_file() and q.name.split(".", 1)[0].lower() == stem),
                      key=lambda q: (q.suffix.lower() != ".wav", q.name))
        if hits:
            return hits[0]
    raise FileNotFoundError(f"MASC audio file for sound {sound!r} not found; tried: {'; '.join(tried)}. "
                            "Download the stimuli folder of MEG-MASC (OSF ag3kj) into the BIDS root.")


def _label(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def masc_recordings(root: str | Path) -> pd.DataFrame:
    """List the MASC recordings found on disk.

    Parameters
    ----------
    root : str | Path
        The MASC BIDS root (see the module docstring).

    Returns
    -------
    recordings : pandas.DataFrame
        One row per data file ``sub-XX/ses-S/meg/sub-XX_ses-S_task-T_meg.<con|fif|sqd|ds>``,
        sorted, with ``subject``, ``session``, ``task`` (int when the BIDS
        label is a number), their BIDS labels ``subject_label``,
        ``session_label``, ``task_label``, ``path`` (the data file) and
        ``events`` (the ``*_events.tsv`` beside it, or None).

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist or holds no ``sub-*`` folder.
    """
    p = Path(root).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"MEG-MASC root not found: {p}. {MASC_ROOT_HINT}.")
    subs = sorted(q for q in p.glob("sub-*") if q.is_dir())
    if not subs:
        has = "has participants.tsv but" if (p / "participants.tsv").is_file() else "has no participants.tsv and"
        raise FileNotFoundError(f"{p} is not a MEG-MASC BIDS root: it {has} no sub-* folder. "
                                f"{MASC_ROOT_HINT}.")
    rows = []
    for sub in subs:
        for f in sorted(sub.glob("ses-*/meg/*_meg.*")):
            m = _RECORDING.match(f.name)
            if m is None:
                continue
            events = f.with_name(f.name[: m.start("ext") - len("meg.")] + "events.tsv")
            rows.append({"subject": _label(m["sub"]), "session": _label(m["ses"]), "task": _label(m["task"]),
                         "subject_label": m["sub"], "session_label": m["ses"], "task_label": m["task"],
                         "run_label": m["run"], "path": f, "events": events if events.is_file() else None})
    cols = ["subject", "session", "task", "subject_label", "session_label", "task_label", "run_label",
            "path", "events"]
    out = pd.DataFrame(rows, columns=cols)
    return out.reset_index(drop=True)


def read_participants(root: str | Path) -> list[str]:
    """Subject labels (without ``sub-``) listed in ``participants.tsv`` (empty if absent).

    Parameters
    ----------
    root : str | Path
        The BIDS root folder of the dataset.

    Returns
    -------
    subjects : list of str
        The ``participant_id`` values without ``sub-``, in file order; empty when there is no
        ``participants.tsv``.
    """
    p = Path(root).expanduser() / "participants.tsv"
    if not p.is_file():
        return []
    try:
        table = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
    except Exception as err:
        raise ValueError(f"Could not read {p} ({type(err).__name__}: {err}).") from err
    if "participant_id" not in table.columns:
        raise ValueError(f"{p} has no participant_id column (it has {list(table.columns)}).")
    return [str(s).strip().removeprefix("sub-") for s in table["participant_id"] if str(s).strip()]


class WavSegments:
    """Equal-length slices of in-memory waveforms, as an ``(n_segments, n_samples)`` float32 array-like.

    Rows are cut on access, so overlapping segments (e.g. 3 s windows at
    every word) cost no memory beyond the waveforms themselves.

    Parameters
    ----------
    waves : sequence of array, shape (n_samples_w,)
        The waveforms (float32).
    wave_index : array of int, shape (n_segments,)
        Which waveform each segment comes from.
    starts : array of int, shape (n_segments,)
        First sample of each segment in its waveform.
    n_samples : int
        Samples per segment; every ``start + n_samples`` must fit in its waveform.
    """

    def __init__(self, waves: Sequence[np.ndarray], wave_index: Any, starts: Any, n_samples: int) -> None:
        self.waves = [np.asarray(w, dtype=np.float32) for w in waves]
        self.wave_index = np.asarray(wave_index, dtype=np.int64).ravel()
        self.starts = np.asarray(starts, dtype=np.int64).ravel()
        self.n_samples = int(n_samples)
        if len(self.wave_index) != len(self.starts):
            raise ValueError(f"wave_index ({len(self.wave_index)}) and starts ({len(self.starts)}) "
                             "must have one entry per segment")
        if len(self.starts):
            if self.wave_index.min() < 0 or self.wave_index.max() >= len(self.waves):
                raise ValueError(f"wave_index must lie in [0, {len(self.waves)})")
            lengths = np.array([len(w) for w in self.waves])[self.wave_index]
            if (self.starts < 0).any() or (self.starts + self.n_samples > lengths).any():
                raise ValueError("every segment must lie inside its waveform (start >= 0 and "
                                 "start + n_samples <= len(wave))")

    shape = property(lambda self: (len(self.starts), self.n_samples))
    dtype = np.dtype(np.float32)
    ndim = 2

    def __len__(self) -> int:
        return len(self.starts)

    def _row(self, i: int) -> np.ndarray:
        s = self.starts[i]
        return self.waves[self.wave_index[i]][s:s + self.n_samples].copy()

    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, tuple):  # (rows, samples...): cut the rows, then index the rest
            rows = self[idx[0]]
            rest = idx[1:]
            return rows[rest] if rows.ndim == 1 else rows[(slice(None), *rest)]
        if isinstance(idx, (int, np.integer)):
            n = len(self)
            if not -n <= idx < n:
                raise IndexError(f"segment {idx} out of range for {n} segments")
            return self._row(int(idx) % n)
        rows = np.arange(len(self))[idx]
        out = np.empty((len(rows), self.n_samples), dtype=np.float32)
        for k, i in enumerate(rows):
            out[k] = self._row(int(i))
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype, copy=False) if dtype is not None else out

    def __repr__(self) -> str:
        return f"<WavSegments | {len(self)} segments × {self.n_samples} samples | {len(self.waves)} waveforms>"
