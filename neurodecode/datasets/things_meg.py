"""``load_things_meg``: THINGS-MEG (Hebart et al. 2023, OpenNeuro ds004212) preprocessed epochs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..io.checks import check_finite, check_nonfinite_option
from ..io.mne import read_epochs
from ..io.things_eeg import LazyImageFiles
from ..utils import check_path, fill_doc, logger, verbose
from ._stimuli import StimulusSet
from ._trials import BrainTrials
from .mne import _from_mne

__all__ = ["load_things_meg"]

_REQUIRED = ("trial_type", "image_path", "session_nr")
_ROOT_HINT = ("root should be the ds004212 folder that contains "
              "derivatives/preprocessed/preprocessed_P{n}-epo.fif")


def _concept(image_path: str) -> str:
    """THINGS concept of an image path: its folder, or the stem minus ``_NNs`` in flat folders."""
    p = Path(image_path)
    if p.parent.name.startswith("images_") or not p.parent.name:
        return re.sub(r"_\d+[a-z]?$", "", p.stem)
    return p.parent.name


@verbose
@fill_doc
def load_things_meg(
    root: str | Path,
    subject: int,
    *,
    drop_catch: bool = True,
    images_root: str | Path | None = None,
    image_size: int | None = None,
    nonfinite: Literal["error", "drop"] = "error",
    verbose: bool | str | int | None = None,
) -> BrainTrials:
    """Load one THINGS-MEG participant's preprocessed epochs.

    Reads ``<root>/derivatives/preprocessed/preprocessed_P{subject}-epo.fif``
    (271 magnetometers, 200 Hz, -0.1..1.3 s) and its metadata (the
    ``sample_attributes`` table).

    Parameters
    ----------
    root : str | Path
        The ds004212 dataset root.
    subject : int
        Participant number (1..4).
    drop_catch : bool
        Drop catch trials (``trial_type == "catch"``). When kept, they are in
        split ``train`` and flagged by ``trial_type``.
    images_root : str | Path | None
        Folder the metadata's ``image_path`` values are relative to (holding
        ``images_meg/<concept>/*.jpg`` and ``images_test_meg/*.jpg``: the THINGS
        images, a separate download from ds004212). ``None`` uses
        ``<root>/images`` when it exists; without images the StimulusSet lists
        the ids only (image targets then cannot be computed).
    image_size : int | None
        Side of the square images returned; ``None`` keeps each file's size.
    nonfinite : ``"error"`` | ``"drop"``
        What to do with epochs holding NaN or infinite values: ``"error"``
        (default) raises a ``ValueError`` naming the file, the sessions and
        the counts; ``"drop"`` drops those epochs with a WARNING giving the
        counts. In a run config: ``data.options.nonfinite``.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        ``data`` (n_trials, 271, 281) float32. ``events`` hold the metadata
        columns plus ``subject``, ``session`` (``session_nr``),
        ``stimulus_id`` (THINGS image file stem, e.g. ``aardvark_01b``),
        ``concept`` (the image folder, or the file stem without its ``_NNs``
        suffix for test images, which sit in a flat folder), ``repetition`` (0-based, by order of
        appearance) and ``split`` (``test`` for the 200 test images shown 12
        times, else ``train``). ``stimuli`` lists the image ids with
        ``image_path`` and ``concept``, and reads the images lazily from
        ``images_root`` when it exists (images are not part of ds004212).

    Examples
    --------
    >>> trials = load_things_meg("/data/ds004212", subject=1)   # doctest: +SKIP
    """
    root = check_path(root, what="THINGS-MEG root", hint=_ROOT_HINT, kind="dir")
    check_nonfinite_option(nonfinite)
    try:
        n = int(subject)
    except (TypeError, ValueError):
        m = re.fullmatch(r"(?:P|BIGMEG|sub-BIGMEG)?(\d+)", str(subject))
        if m is None:
            raise ValueError(f"subject must be a participant number like 1, got {subject!r}") from None
        n = int(m.group(1))
    folder = root / "derivatives" / "preprocessed"
    path = folder / f"preprocessed_P{n}-epo.fif"
    if not path.is_file():
        found = sorted(p.name for p in folder.glob("preprocessed_P*-epo.fif")) if folder.is_dir() else []
        if found:
            raise ValueError(
                f"THINGS-MEG subject {subject!r} not found: {path} does not exist. "
                f"Files found in {folder}: {found}."
            )
        raise FileNotFoundError(
            f"THINGS-MEG preprocessed epochs not found: {path} (no preprocessed_P*-epo.fif in {folder}). "
            f"{_ROOT_HINT}; download derivatives/preprocessed from OpenNeuro ds004212."
        )
    epochs = read_epochs(path, preload=False)
    meta = epochs.metadata
    if meta is None:
        raise ValueError(f"{path} has no metadata; THINGS-MEG epochs must carry the sample_attributes "
                         "table as epochs.metadata (re-download the preprocessed file).")
    missing = [c for c in _REQUIRED if c not in meta.columns]
    if missing:
        raise ValueError(f"The metadata of {path} lacks column(s) {missing} (it has {list(meta.columns)}); "
                         "it is not the THINGS-MEG sample_attributes table.")
    meta = meta.reset_index(drop=True).copy()
    ttype = meta["trial_type"].astype(str).str.strip().str.lower()
    keep = ~ttype.eq("catch").to_numpy() if drop_catch else np.ones(len(meta), dtype=bool)
    rows = np.flatnonzero(keep)
    paths = meta["image_path"].astype(str).str.replace("\\", "/", regex=False)
    meta["stimulus_id"] = [Path(p).stem for p in paths]
    meta["concept"] = [_concept(p) for p in paths]
    meta["_split"] = np.where(ttype.eq("test"), "test", "train")
    logger.info("THINGS-MEG P%d: %d epochs, keeping %d (%d catch dropped)", n, len(meta), len(rows),
                int((~keep).sum()))
    trials = _from_mne(epochs, stimulus_id="stimulus_id", subject=n, session="session_nr",
                       split="_split", rows=rows, metadata=meta, source=str(path))
    trials.events = trials.events.drop(columns="_split")
    trials.info["dataset"] = "things-meg"
    bad = check_finite(trials.data, file=path, sessions=trials.events["session"].to_numpy(), nonfinite=nonfinite,
                       what="epoch", fix="re-download it")
    if bad.any():
        if bad.all():
            raise ValueError(f"Every epoch of {path} holds a NaN or infinite value, so nonfinite='drop' leaves "
                             "nothing; re-download it.")
        trials = trials[np.flatnonzero(~bad)]
    stim = trials.events.drop_duplicates("stimulus_id")
    folder = Path(images_root).expanduser() if images_root is not None else root / "images"
    images = None
    if folder.is_dir():
        files = [folder / p for p in stim["image_path"].astype(str).str.replace("\\", "/", regex=False)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} THINGS image(s) named by the metadata of {path} are missing "
                                    f"under {folder}, e.g. {missing[:3]}. Point images_root at the folder "
                                    "holding images_meg/ and images_test_meg/.")
        images = LazyImageFiles(files, image_size)
    elif images_root is not None:
        raise FileNotFoundError(f"images_root {folder} does not exist; it should hold the THINGS images "
                                "(images_meg/<concept>/*.jpg, images_test_meg/*.jpg).")
    else:
        logger.info("No %s folder: THINGS-MEG stimuli without images (pass images_root=... for image "
                    "targets)", folder)
    trials.stimuli = StimulusSet(
        stim["stimulus_id"].tolist(), images=images,
        metadata=pd.DataFrame({"image_path": stim["image_path"].to_numpy(),
                               "concept": stim["concept"].to_numpy()},
                              index=pd.Index(stim["stimulus_id"].to_numpy(), name="stimulus_id")),
        source=str(folder if images is not None else path),
    )
    return trials
