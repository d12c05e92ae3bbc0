"""Thin readers of MNE-Python files (``-epo.fif``, raw FIF/EDF/BrainVision/CTF).

They pick the MNE reader from the file name and turn MNE's low-level errors
into messages that name the file and the fix (FORMATS.md section 6). MNE is
an optional dependency, imported on first use.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from ..utils import logger
from .checks import mne_damage, verify_gzip

__all__ = ["import_mne", "read_epochs", "read_raw"]

_EPOCHS_SUFFIXES = ("-epo.fif", "_epo.fif", "-epo.fif.gz", "_epo.fif.gz")
_RAW_READERS = {
    ".fif": "read_raw_fif",
    ".fif.gz": "read_raw_fif",
    ".edf": "read_raw_edf",
    ".bdf": "read_raw_bdf",
    ".vhdr": "read_raw_brainvision",
    ".set": "read_raw_eeglab",
    ".ds": "read_raw_ctf",
}


def import_mne() -> ModuleType:
    """Import :mod:`mne` or raise ``ImportError`` with the install command.

    Returns
    -------
    mne : module
        The :mod:`mne` module.
    """
    try:
        import mne
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Reading M/EEG files needs MNE-Python: pip install 'neurodecode[meeg]'") from err
    return mne


def _exists(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}. Check the path (and that the download finished).")
    return p


def _corrupt(path: Path, err: BaseException, what: str) -> OSError:
    return OSError(
        f"Could not read the {what} {path}: the file is truncated, corrupt or not an MNE file "
        f"({type(err).__name__}: {err or 'no message'}). Re-download or re-save it with mne."
    )


def read_epochs(path: str | Path, *, preload: bool = True) -> Any:
    """Read an ``mne.Epochs`` file (name ending in ``-epo.fif``).

    Parameters
    ----------
    path : str | Path
        The ``*-epo.fif`` (or ``*_epo.fif``, optionally ``.gz``) file.
    preload : bool
        Load the data into memory.

    Returns
    -------
    epochs : mne.Epochs

    Notes
    -----
    With ``preload=False`` MNE reads only the header, so a file cut inside
    its data would fail later with a message naming neither the file nor the
    cause; the last epoch is therefore read at once, and any failure raises
    an ``OSError`` that names the file. ``.gz`` files are verified whole
    (gzip CRC-32 and length) first.
    """
    p = _exists(path, "Epochs file")
    name = p.name.lower()
    if not name.endswith(_EPOCHS_SUFFIXES):
        raise ValueError(
            f"{p} is not an MNE epochs file: its name must end in '-epo.fif' (got {p.name!r}). "
            "For continuous recordings use neurodecode.io.mne.read_raw and epoch them with mne.Epochs."
        )
    if p.is_dir():
        raise IsADirectoryError(f"Epochs file must be a file, got a folder: {p}")
    mne = import_mne()
    if name.endswith(".gz"):
        verify_gzip(p, what="epochs file", fix="re-download it (or re-save it with mne)")
    try:
        with warnings.catch_warnings(record=True) as caught:  # also silences pandas deprecations in mne
            warnings.simplefilter("always")
            epochs = mne.read_epochs(p, preload=preload, verbose="warning")
            if not preload and len(epochs.events):
                epochs.get_data(item=[len(epochs.events) - 1], verbose="error")  # its data end the file
    except Exception as err:  # MNE raises ValueError/OSError/KeyError... on bad files
        raise _corrupt(p, err, "epochs file") from err
    _report_damage(p, caught, "epochs file")
    return epochs


def _report_damage(path: Path, caught: Any, what: str) -> None:
    damage = mne_damage(caught)
    if damage:
        logger.warning("The %s %s is damaged at its end (MNE: %s); the data it holds were read, but re-download "
                       "it (or re-save it with mne).", what, path, damage[0])


def read_raw(path: str | Path, *, preload: bool = True) -> Any:
    """Read a continuous recording, picking the MNE reader from the extension.

    Supported: ``.fif``/``.fif.gz``, ``.edf``, ``.bdf``, ``.vhdr`` (BrainVision,
    with its ``.vmrk``/``.eeg`` beside it), ``.set`` (EEGLAB) and ``.ds`` (CTF folder).

    Parameters
    ----------
    path : str | Path
        The recording file (or ``.ds`` folder).
    preload : bool
        Load the data into memory (not passed to the CTF reader).

    Returns
    -------
    raw : mne.io.Raw
        The recording.
    """
    p = _exists(path, "Recording")
    name = p.name.lower()
    if name.endswith(_EPOCHS_SUFFIXES):
        raise ValueError(f"{p} holds epochs, not a continuous recording: use read_epochs instead.")
    ext = next((e for e in sorted(_RAW_READERS, key=len, reverse=True) if name.endswith(e)), None)
    if ext is None:
        raise ValueError(
            f"Cannot read {p}: unknown recording format {p.suffix!r}. "
            f"Supported extensions: {sorted(_RAW_READERS)}."
        )
    mne = import_mne()
    reader = getattr(mne.io, _RAW_READERS[ext])
    kwargs: dict = {"verbose": "warning"}
    if ext != ".ds":
        kwargs["preload"] = preload
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = reader(p, **kwargs)
    except Exception as err:
        raise _corrupt(p, err, "recording") from err
    _report_damage(p, caught, "recording")
    return raw
