"""User settings: argument, then environment, then ``~/.neurodecode/config.json``, then default."""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Every known setting, with its description (the one table users read).
KNOWN_CONFIG = {
    "NEURODECODE_DATA": "Folder for simulated datasets and caches (default ~/.cache/neurodecode).",
    "NEURODECODE_LOGGING_LEVEL": "Default log level: debug, info, warning, error.",
    "NEURODECODE_TQDM": "'off' disables progress bars, 'ascii' forces ASCII bars.",
    "NEURODECODE_NSD_ROOT": "Root of the Natural Scenes Dataset (the bucket root natural-scenes-dataset/).",
    "NEURODECODE_CLIP_WEIGHTS": "open_clip weights for CLIP targets (a checkpoint file or folder, or a Hugging "
                                "Face repo id in the local HF cache); fills ${NEURODECODE_CLIP_WEIGHTS}.",
    "NEURODECODE_THINGS_EEG2_ROOT": "THINGS-EEG2 project folder (image_set/, eeg_dataset/ or "
                                    "Preprocessed_data_250Hz/).",
    "NEURODECODE_THINGS_MEG_ROOT": "THINGS-MEG root (OpenNeuro ds004212, with derivatives/preprocessed/).",
    "NEURODECODE_MASC_ROOT": "MEG-MASC BIDS root (participants.tsv, sub-XX/, stimuli/audio/).",
    "NEURODECODE_ATLAS_DIR": "nilearn data folder holding atlases fetched elsewhere (yeo_2011/, schaefer_2018/); "
                             "fills ${NEURODECODE_ATLAS_DIR} in ablation recipes.",
    "NEURODECODE_SPEECH_WEIGHTS": "A local wav2vec2-style transformers model folder (or a repo id in the local "
                                  "HF cache) for speech targets; fills ${NEURODECODE_SPEECH_WEIGHTS}.",
}


def _config_file() -> Path:
    return Path(os.environ.get("NEURODECODE_CONFIG", Path.home() / ".neurodecode" / "config.json"))


def get_config(key: str, default: str | None = None) -> str | None:
    """Return a setting from the environment, then the JSON config file, then ``default``.

    Parameters
    ----------
    key : str
        One of :data:`KNOWN_CONFIG`.
    default : str | None
        Returned when the key is set nowhere.

    Returns
    -------
    value : str | None
        The setting's value, or ``default``.
    """
    if key not in KNOWN_CONFIG:
        raise KeyError(f"Unknown neurodecode setting {key!r}; known settings: {sorted(KNOWN_CONFIG)}")
    if key in os.environ:
        return os.environ[key]
    f = _config_file()
    if f.is_file():
        try:
            values = json.loads(f.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"The neurodecode config file {f} is not valid JSON ({err}). Fix or delete it.") from err
        if key in values:
            return str(values[key])
    return default


def get_data_dir() -> Path:
    """Folder for simulated data and caches (``NEURODECODE_DATA`` or ``~/.cache/neurodecode``).

    Returns
    -------
    data_dir : pathlib.Path
        The folder (``$XDG_CACHE_HOME/neurodecode`` when ``XDG_CACHE_HOME`` is set and
        ``NEURODECODE_DATA`` is not); it may not exist yet.
    """
    value = get_config("NEURODECODE_DATA")
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "neurodecode"


def get_config_dir() -> Path:
    """Folder of the user's neurodecode settings (where ``config.json`` lives; ``~/.neurodecode``).

    Records kept once per user (e.g. the acceptance of a dataset's terms by ``neurodecode download``)
    live here. ``NEURODECODE_CONFIG`` (a path to ``config.json``) moves it to that file's folder.

    Returns
    -------
    config_dir : pathlib.Path
        The folder; it may not exist yet.
    """
    return _config_file().expanduser().parent
