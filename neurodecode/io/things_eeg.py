"""Readers and writers of THINGS-EEG2 (Gifford et al. 2022) preprocessed files.

The layout and shapes follow ``FORMATS.md`` section 2. Two on-disk variants of
``preprocessed_eeg_{training,test}.npy`` exist and both are read here:

- **official** (OSF ``3jk45``, ``eeg_dataset/preprocessed_data/sub-XX/``):
  written with ``np.save`` of a dict: a ``.npy`` header, then a pickled 0-d
  object array whose ``.item()`` is the dict. 17 occipital /
  parietal channels, 100 Hz, ``times`` (100,) from -0.2 s, data of shape
  (16540, 4, 17, 100) for training and (200, 80, 17, 100) for test.
- **atm** (ATM / NICE ``Preprocessed_data_250Hz/sub-XX/``): written with
  ``pickle.dump`` of the dict itself (no ``.npy`` header). 63 channels,
  250 Hz; the data are cropped to the last 250 samples
  (0..~1 s) while ``times`` keeps the full -0.2..1.0 s axis (ATM does
  ``times[50:]``); :func:`read_things_eeg2` returns the matching tail of
  ``times``.

Both dicts hold ``preprocessed_eeg_data`` (n_conditions, n_repetitions,
n_channels, n_times), ``ch_names`` and ``times``. Both are read with a
restricted unpickler (:mod:`neurodecode.io._safe_pickle`) that admits only
numpy arrays, dicts, lists, tuples, strings and numbers, so a crafted file
cannot run code.

Only :mod:`neurodecode.utils` is imported here (io is the lowest layer).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_path
from ._safe_pickle import UnsafePickleError, safe_load_pickled

__all__ = ["THINGS_EEG2_KEYS", "LazyImageFiles", "read_things_eeg2", "write_things_eeg2"]

#: Keys every preprocessed THINGS-EEG2 dict must hold.
THINGS_EEG2_KEYS = ("preprocessed_eeg_data", "ch_names", "times")

_REDOWNLOAD = "re-download this file"


def read_things_eeg2(path: str | Path) -> dict[str, Any]:
    """Read one preprocessed THINGS-EEG2 file (official ``np.save`` or ATM pickle).

    Parameters
    ----------
    path : str | Path
        A ``preprocessed_eeg_training.npy`` or ``preprocessed_eeg_test.npy``.

    Returns
    -------
    out : dict
        ``data`` (n_conditions, n_repetitions, n_channels, n_times) as stored
        (not copied), ``ch_names`` (list of str), ``times`` (n_times,) float
        aligned with the last data axis, ``times_full`` (the stored ``times``),
        and ``format`` (``"npy"`` for ``np.save``, ``"pickle"`` for ATM's
        ``pickle.dump``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file and what to do (re-download it) when the file is
        empty, truncated or not a pickle, holds no dict or lacks one of
        :data:`THINGS_EEG2_KEYS`, when ``preprocessed_eeg_data`` is not a 4-D
        array of real numbers, ``ch_names`` is not a list of strings as long
        as the channel axis, or ``times`` is not a finite, increasing 1-D
        axis at least as long as the time axis.
    UnsafePickleError
        If the file names a global outside the allow-list (see Notes).

    Notes
    -----
    These files are object arrays / pickles by construction (the dataset
    authors saved Python dicts). They are read by
    :func:`neurodecode.io._safe_pickle.safe_load_pickled`, whose unpickler
    resolves only numpy arrays, dtypes and scalars and the builtin containers,
    strings and numbers: a file that names any other global (which plain
    unpickling would call, running code) is refused with an error naming the
    file and the global, before anything from it is called. Nothing else in
    neurodecode unpickles data files.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"THINGS-EEG2 preprocessed file not found: {p}")
    if p.stat().st_size == 0:
        raise ValueError(f"THINGS-EEG2 file {p} is empty (0 bytes): the download or copy did not complete; "
                         f"{_REDOWNLOAD}.")
    try:
        # both variants are pickled dicts (see Notes): read by the restricted unpickler only
        obj = safe_load_pickled(p)
    except UnsafePickleError:
        raise  # names the file and the forbidden global already
    except Exception as exc:  # truncated / not a npy or pickle
        cause = ("it is truncated" if isinstance(exc, EOFError) or "truncated" in str(exc)
                 or str(exc).startswith("EOF") else "it is corrupt, or not a .npy / pickle file at all")
        raise ValueError(f"Could not read THINGS-EEG2 file {p}: {cause} ({type(exc).__name__}: {exc}); "
                         f"{_REDOWNLOAD}.") from exc
    fmt = "pickle"
    if isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype == object:
        obj = obj.item()
        fmt = "npy"
    if not isinstance(obj, dict):
        kind = f"an array of shape {obj.shape}" if isinstance(obj, np.ndarray) else f"a {type(obj).__name__}"
        raise ValueError(  # noqa: TRY004 - a damaged file, not a caller's wrong type
            f"THINGS-EEG2 file {p} should hold a dict with keys {list(THINGS_EEG2_KEYS)} but holds {kind}; "
            f"{_REDOWNLOAD}.")
    missing = [k for k in THINGS_EEG2_KEYS if k not in obj]
    if missing:
        raise ValueError(f"THINGS-EEG2 file {p} is missing key(s) {missing} (has {sorted(map(str, obj))}); "
                         f"{_REDOWNLOAD}.")
    data = _numeric(obj["preprocessed_eeg_data"], p, "preprocessed_eeg_data")
    if data.ndim != 4:
        raise ValueError(f"THINGS-EEG2 file {p}: preprocessed_eeg_data must be 4-D (n_conditions, "
                         f"n_repetitions, n_channels, n_times), got shape {data.shape}; {_REDOWNLOAD}.")
    ch_names = _ch_names(obj["ch_names"], p)
    if len(ch_names) != data.shape[2]:
        raise ValueError(f"THINGS-EEG2 file {p}: {len(ch_names)} ch_names but the data have "
                         f"{data.shape[2]} channels (axis 2); {_REDOWNLOAD}.")
    times_full = _numeric(obj["times"], p, "times").astype(float, copy=False)
    if times_full.ndim != 1:
        raise ValueError(f"THINGS-EEG2 file {p}: times must be 1-D (one time per sample), got shape "
                         f"{times_full.shape}; {_REDOWNLOAD}.")
    n_t = data.shape[3]
    if len(times_full) < n_t:
        raise ValueError(f"THINGS-EEG2 file {p}: times has {len(times_full)} samples but the data have "
                         f"{n_t} (axis 3); {_REDOWNLOAD}.")
    if not np.isfinite(times_full).all() or (len(times_full) > 1 and not (np.diff(times_full) > 0).all()):
        raise ValueError(f"THINGS-EEG2 file {p}: times must be finite and increasing (seconds), got "
                         f"{_preview(times_full)}; {_REDOWNLOAD}.")
    times = times_full[len(times_full) - n_t:]  # ATM: data cropped [..., 50:], times kept full
    return {"data": data, "ch_names": ch_names, "times": times, "times_full": times_full,
            "format": fmt}


def _preview(a: np.ndarray, n: int = 4) -> str:
    vals = ", ".join(str(v) for v in a.ravel()[:n].tolist())
    return f"[{vals}{', ...' if a.size > n else ''}]"


def _numeric(value: Any, path: Path, key: str) -> np.ndarray:
    """``value`` as a real numeric array, or a ValueError naming ``path`` and ``key``."""
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"THINGS-EEG2 file {path}: {key} is not a regular array ({exc}); "
                         f"{_REDOWNLOAD}.") from None
    if arr.dtype.kind not in "biuf":
        held = ""
        if arr.dtype == object and arr.size:
            held = f" holding {type(arr.flat[0]).__name__}"
        raise ValueError(f"THINGS-EEG2 file {path}: {key} must hold real numbers but is an array of dtype "
                         f"{arr.dtype}{held} (shape {arr.shape}); {_REDOWNLOAD}.")
    return arr


def _ch_names(value: Any, path: Path) -> list[str]:
    """``ch_names`` as a list of str, or a ValueError naming ``path``."""
    arr = np.asarray(value, dtype=object) if isinstance(value, (list, tuple, np.ndarray)) else None
    bad = None
    if arr is None or arr.ndim != 1:
        bad = f"a {type(value).__name__}" if arr is None else f"an array of shape {arr.shape}"
    else:
        wrong = [c for c in arr.tolist() if not isinstance(c, (str, bytes))]
        if wrong:
            bad = f"{len(wrong)} entries that are not text, e.g. {type(wrong[0]).__name__} {wrong[0]!r}"
    if bad is not None:
        raise ValueError(f"THINGS-EEG2 file {path}: ch_names must be a list of channel names (str) but "
                         f"holds {bad}; {_REDOWNLOAD}.")
    return [c.decode("latin1") if isinstance(c, bytes) else str(c) for c in arr.tolist()]


def write_things_eeg2(path: str | Path, data: np.ndarray, ch_names: Sequence[str], times: Any,
                      variant: str = "official") -> Path:
    """Write a preprocessed THINGS-EEG2 file in the official or ATM form (for tests/miniatures).

    Parameters
    ----------
    path : str | Path
        Output file (``preprocessed_eeg_{training,test}.npy``).
    data : array, shape (n_conditions, n_repetitions, n_channels, n_times)
        Stored as ``preprocessed_eeg_data``.
    ch_names : sequence of str
    times : array
        ``official``: one per sample; ``atm``: the full epoch axis, at least
        ``n_times`` long (the data are its tail, as ATM crops ``[..., 50:]``).
    variant : ``"official"`` | ``"atm"``
        ``official`` uses ``np.save`` of the dict; ``atm`` uses ``pickle.dump``.

    Returns
    -------
    path : Path
        The file written.
    """
    if variant not in ("official", "atm"):
        raise ValueError(f"variant must be 'official' or 'atm', got {variant!r}")
    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"data must be 4-D (n_conditions, n_repetitions, n_channels, n_times), "
                         f"got shape {data.shape}")
    times = np.asarray(times, dtype=float)
    if variant == "official" and len(times) != data.shape[3]:
        raise ValueError(f"official files have one time per sample: {len(times)} != {data.shape[3]}")
    if variant == "atm" and len(times) < data.shape[3]:
        raise ValueError(f"times ({len(times)}) must be at least n_times ({data.shape[3]}) long")
    obj = {"preprocessed_eeg_data": data, "ch_names": list(ch_names), "times": times}
    p = Path(path)
    with atomic_path(p) as tmp, open(tmp, "wb") as f:
        if variant == "official":
            np.save(f, obj, allow_pickle=True)  # safe: writes the official format; reads use safe_load_pickled
        else:
            pickle.dump(obj, f, protocol=4)
    return p


class LazyImageFiles:
    """Image files read on access, as a ``(n, height, width, 3)`` uint8 array-like.

    Parameters
    ----------
    paths : sequence of path
        One image file per row.
    image_size : int | None
        Every image is resized (bicubic) to ``image_size × image_size``;
        ``None`` uses the size of the first image (only its header is read),
        resizing any image of another size to it.
    """

    def __init__(self, paths: Sequence[str | Path], image_size: int | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        if image_size is not None:
            image_size = int(image_size)
            if image_size < 1:
                raise ValueError(f"image_size must be a positive int or None, got {image_size}")
            self._size = (image_size, image_size)
        else:
            self._size = None
        self.image_size = image_size

    def _wh(self) -> tuple[int, int]:
        if self._size is None:
            if not self.paths:
                return (0, 0)
            from PIL import Image

            p = self.paths[0]
            try:
                with Image.open(p) as im:
                    self._size = tuple(im.size)
            except FileNotFoundError:
                raise FileNotFoundError(f"THINGS image not found: {p}") from None
            except (OSError, SyntaxError, ValueError) as exc:  # PIL: truncated / unidentified / bad header
                raise ValueError(f"Could not read image {p} ({type(exc).__name__}: {exc}); the file is "
                                 "truncated or corrupt, re-download it.") from exc
        return self._size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        w, h = self._wh()
        return (len(self.paths), h, w, 3)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> np.ndarray:
        from PIL import Image

        p = self.paths[i]
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != self._wh():
                    im = im.resize(self._wh(), Image.BICUBIC)
                return np.asarray(im, dtype=np.uint8)
        except FileNotFoundError:
            raise FileNotFoundError(f"THINGS image not found: {p}") from None
        except (OSError, SyntaxError, ValueError) as exc:  # PIL: truncated / unidentified / bad header
            raise ValueError(f"Could not read image {p} ({type(exc).__name__}: {exc}); the file is truncated "
                             "or corrupt, re-download it.") from exc

    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            return self._read(int(idx) % len(self) if idx < 0 else int(idx))
        rows = np.arange(len(self))[idx]
        w, h = self._wh()
        out = np.empty((len(rows), h, w, 3), dtype=np.uint8)
        for k, i in enumerate(rows):
            out[k] = self._read(int(i))
        return out

    def __repr__(self) -> str:
        return f"<LazyImageFiles | {len(self)} files | size {self._size}>"
