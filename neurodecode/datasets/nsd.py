"""``load_nsd``: the Natural Scenes Dataset from its real on-disk layout."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..io.checks import check_affine, check_finite, check_nonfinite_option
from ..io.nsd import (
    NSD_BETA_SCALE,
    LazyHDF5Rows,
    NSDLayout,
    corrupt_file_error,
    get_dataset,
    open_h5,
    read_betas_masked,
    read_betas_nonzero_mask,
    read_betas_shape,
    read_coco_captions,
    read_ctab,
    read_expdesign,
    read_stim_info,
    read_volume,
)
from ..preprocessing.fmri import zscore_sessions
from ..utils import ProgressBar, check_option, fill_doc, logger, verbose, warn
from ._stimuli import StimulusSet
from ._trials import BrainTrials

__all__ = ["load_nsd"]

_ROOT_HINT = ("root should be the NSD bucket root (natural-scenes-dataset/), the folder containing "
              "nsddata/, nsddata_betas/ and nsddata_stimuli/")
_RUN_SIZES = np.array([63, 62] * 6)  # 12 runs, 750 trials
_REDOWNLOAD = "re-download this file"


@verbose
@fill_doc
def load_nsd(
    root: str | Path,
    subject: int,
    *,
    roi: str | tuple[str, Sequence[str | int]] | None = "nsdgeneral",
    sessions: Sequence[int] | int | None = None,
    zscore: Literal["session"] | None = "session",
    betas_format: Literal["auto", "hdf5", "nii.gz", "mindeye2"] = "auto",
    captions: bool = True,
    extra_rois: Literal["all"] | Sequence[str] | None = "all",
    dtype: Any = np.float32,
    nonfinite: Literal["error", "drop"] = "error",
    verbose: bool | str | int | None = None,
) -> BrainTrials:
    """Load one NSD subject's single-trial betas from the real NSD layout.

    Parameters
    ----------
    root : str | Path
        The NSD bucket root (``natural-scenes-dataset/``), containing
        ``nsddata/``, ``nsddata_betas/`` and ``nsddata_stimuli/``.
    subject : int
        Subject number, 1..8.
    roi : str | tuple | None
        Voxels to keep. ``"nsdgeneral"`` (value > 0), any
        ``func1pt8mm/roi/<name>.nii.gz`` (all labels > 0), a label selection
        ``("floc-faces", ["FFA-1", "FFA-2"])`` or ``"floc-faces:FFA-1,FFA-2"``
        (names from the ``.mgz.ctab``, or integer values), or ``None`` for
        ``brainmask.nii.gz`` (> 0), falling back to the nonzero voxels of the
        first session. Value -1 (outside the surface mapping) is never a label.
    sessions : int | sequence of int | None
        1-based session numbers to load (default: every session file found).
    zscore : ``"session"`` | None
        ``"session"`` z-scores every voxel per session with the mean/std of
        that session's training (non-shared) trials; ``None`` returns the
        stored values divided by 300 (percent signal change).
    betas_format : ``"auto"`` | ``"hdf5"`` | ``"nii.gz"`` | ``"mindeye2"``
        ``"auto"`` prefers ``.hdf5`` (read lazily, only masked voxels) and
        falls back to ``.nii.gz`` per session. ``"mindeye2"`` reads MindEye2's
        ``betas_all_subjXX_fp32_renorm.hdf5`` at ``root`` (already z-scored,
        nsdgeneral voxels only).
    captions : bool
        Attach COCO captions to the stimuli when they can be found.
    extra_rois : ``"all"`` | list of str | None
        ROI files whose per-voxel label names are stored in
        ``info["roi_labels"]``.
    dtype : numpy dtype
        Floating dtype of the returned data.
    nonfinite : ``"error"`` | ``"drop"``
        What to do with NaN or infinite betas (possible only in float files,
        e.g. a damaged or re-written session): ``"error"`` (default) raises a
        ``ValueError`` naming the file, the session and the number of NaN and
        infinite values; ``"drop"`` drops the trials holding any, logging a
        WARNING with the file and the counts (before z-scoring, so the
        session statistics stay finite). In a run config: ``data.nonfinite``.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        ``data`` (n_trials, n_voxels); ``events`` with ``subject``,
        ``session``, ``run`` (when sessions have 750 trials),
        ``trial_in_session``, ``global_trial``, ``stimulus_id`` (0-based 73k
        id), ``tenk_id`` (1-based), ``repetition``, ``split`` and ``cocoId``;
        ``info`` with voxel indices, affine, ROI labels and the files read,
        plus ``ncsnr`` (float32, one noise-ceiling SNR per voxel, from
        ``ncsnr.nii.gz``; see :func:`neurodecode.analysis.stats.noise_ceiling`)
        and ``mni_transform`` (path of ``transforms/MNI-to-func1pt8.nii.gz``)
        when those files exist; ``stimuli`` reading ``nsd_stimuli.hdf5``
        lazily.

    Notes
    -----
    Damaged files raise errors that name them (see ``docs/reliability.md``):
    every ``.nii.gz`` is read to the end of its gzip stream, so its CRC-32
    and length are checked before its values are used; each betas file must
    hold as many trials as ``behav/responses.tsv`` lists for its session
    (or, without that file, no more than the other sessions); ROI masks must
    match the betas' grid and affine (the affine of a ``.nii.gz`` betas file,
    else of ``brainmask.nii.gz``).

    Examples
    --------
    >>> trials = load_nsd("/data/natural-scenes-dataset", subject=1)   # doctest: +SKIP
    >>> faces = load_nsd(root, 1, roi="floc-faces:FFA-1,FFA-2")         # doctest: +SKIP
    """
    check_option("zscore", zscore, ("session", None))
    check_option("betas_format", betas_format, ("auto", "hdf5", "nii.gz", "mindeye2"))
    check_nonfinite_option(nonfinite)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating dtype (e.g. np.float32), got {dtype}")
    layout = _check_root(root, betas_format)
    subject = _check_subject(layout, subject, betas_format)
    if betas_format == "mindeye2":
        return _load_mindeye2(layout, subject, roi=roi, sessions=sessions, captions=captions,
                              extra_rois=extra_rois, dtype=dtype, nonfinite=nonfinite)

    files = _session_files(layout, subject, sessions, betas_format)
    shapes = {s: read_betas_shape(p) for s, p in files.items()}
    first_ses, first = next(iter(files.items()))
    grid = shapes[first_ses][0]
    for s, (g, _, _) in shapes.items():
        if tuple(g) != tuple(grid):
            raise ValueError(f"Betas files disagree on the voxel grid: {first} has {tuple(grid)} but "
                             f"{files[s]} has {tuple(g)}; please re-download the wrong one.")
    affine = next((a for _, _, a in shapes.values() if a is not None), None)
    ref = _reference_affine(layout, subject, files, affine)

    mask, mask_file, mask_affine = _roi_mask(layout, subject, roi, grid, first, ref)
    if affine is None:
        affine = mask_affine
    voxel_indices = np.argwhere(mask)  # C-order == np.nonzero order
    n_vox = len(voxel_indices)
    if n_vox == 0:
        raise ValueError(f"The ROI {roi!r} ({mask_file}) selects no voxel; choose another roi.")

    # -- design → events ---------------------------------------------------------------
    n_t = {s: shapes[s][1] for s in files}
    offsets = _global_offsets(layout, subject, n_t, files)
    design = read_expdesign(_require_design(layout))
    ids_all, tenk_all, shared = _design_ids(design, subject, layout.expdesign)
    stim_info = _read_stim_info(layout, ids_all)
    events = _build_events(subject, n_t, offsets, ids_all, tenk_all, shared, stim_info,
                           layout.expdesign)

    # -- betas -------------------------------------------------------------------------
    out = np.empty((len(events), n_vox), dtype=dtype)
    logger.info("Loading NSD subject %d: %d session(s), %d trials x %d voxels (%s)", subject,
                len(files), len(events), n_vox, _roi_repr(roi))
    row = 0
    bad = np.zeros(len(events), dtype=bool)
    for s in ProgressBar(list(files), desc=f"NSD subj{subject:02d}", unit="session"):
        block = out[row:row + n_t[s]]
        read_betas_masked(files[s], mask, out=block, scale=NSD_BETA_SCALE)
        bad[row:row + n_t[s]] = check_finite(block, file=files[s], session=s, nonfinite=nonfinite,
                                             fix=f"please {_REDOWNLOAD}")
        row += n_t[s]
    if bad.any():
        out, events = _drop_rows(out, events, bad, files)
    if zscore == "session":
        zscore_sessions(out, events["session"].to_numpy(), (events["split"] == "train").to_numpy())

    info = {
        "modality": "fmri", "subject": subject, "volume_shape": tuple(int(v) for v in grid),
        "affine": np.asarray(affine, dtype=float) if affine is not None else None,
        "voxel_indices": voxel_indices.astype(np.int64), "roi": roi, "roi_file": mask_file,
        "roi_labels": _roi_labels(layout, subject, voxel_indices, grid, extra_rois, ref),
        "betas_files": [str(p) for p in files.values()], "scale": 1.0 / NSD_BETA_SCALE,
        "zscore": zscore, "tr": None, "betas_format": betas_format,
        **_voxel_maps(layout, subject, voxel_indices, grid, ref),
    }
    stimuli = _load_stimuli(layout, events, stim_info, captions)
    return BrainTrials(out, events, info, stimuli)


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------
def _check_root(root: str | Path, betas_format: str) -> NSDLayout:
    if not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a path (str or Path), got {type(root).__name__}; {_ROOT_HINT}")
    layout = NSDLayout(root)
    if not layout.root.is_dir():
        raise FileNotFoundError(f"NSD root not found: {layout.root}. {_ROOT_HINT}.")
    has_std = (layout.root / "nsddata").is_dir() or (layout.root / "nsddata_betas").is_dir()
    has_me2 = any(layout.root.glob("betas_all_subj*_fp32_renorm.hdf5"))
    if not has_std and not (betas_format == "mindeye2" and has_me2):
        raise FileNotFoundError(
            f"{layout.root} does not look like the NSD root: it has no nsddata/ or nsddata_betas/ "
            f"folder. {_ROOT_HINT}.")
    return layout


def _check_subject(layout: NSDLayout, subject: Any, betas_format: str) -> int:
    found = layout.subjects_found()
    if isinstance(subject, str) and re.fullmatch(r"(subj)?0*[1-8]", subject):
        subject = int(re.sub(r"\D", "", subject))
    if isinstance(subject, bool) or not isinstance(subject, (int, np.integer)) or not 1 <= subject <= 8:
        raise ValueError(f"Unknown NSD subject {subject!r}: NSD subjects are 1..8; subjects found under "
                         f"{layout.root}: {found or 'none'}.")
    subject = int(subject)
    if betas_format == "mindeye2":
        if not layout.mindeye2_betas(subject).is_file():
            raise FileNotFoundError(
                f"No MindEye2 betas for subject {subject}: {layout.mindeye2_betas(subject)} does not "
                f"exist (subjects found: {found or 'none'}). Download betas_all_subj{subject:02d}_"
                "fp32_renorm.hdf5 (HF pscotti/mindeyev2) into the NSD root.")
    elif not layout.betas_dir(subject).is_dir():
        raise FileNotFoundError(
            f"No betas folder for subject {subject}: {layout.betas_dir(subject)} does not exist. "
            f"Subjects found under {layout.root}: {found or 'none'}.")
    return subject


def _session_files(layout: NSDLayout, subject: int, sessions: Any, betas_format: str) -> dict[int, Path]:
    found = layout.sessions_found(subject)
    bdir = layout.betas_dir(subject)
    if not found:
        raise FileNotFoundError(f"No betas_sessionNN.hdf5 / .nii.gz files in {bdir}; download the "
                                "single-trial betas (betas_fithrf_GLMdenoise_RR) of this subject.")
    if sessions is None:
        wanted = found
    else:
        wanted = [sessions] if isinstance(sessions, (int, np.integer)) else list(sessions)
        if not wanted or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                 for s in wanted):
            raise ValueError(f"sessions must be 1-based session numbers (ints), got {sessions!r}")
        wanted = sorted({int(s) for s in wanted})
        missing = [s for s in wanted if s not in found]
        if missing:
            raise ValueError(f"Session(s) {missing} requested but not found in {bdir}; sessions found: "
                             f"{found} (1-based).")
    files = {}
    for s in wanted:
        h5, nii = layout.betas_file(subject, s, "hdf5"), layout.betas_file(subject, s, "nii.gz")
        if betas_format == "hdf5" or (betas_format == "auto" and h5.is_file()):
            path = h5
        else:
            path = nii
        if not path.is_file():
            raise FileNotFoundError(f"Betas file not found: {path} (betas_format={betas_format!r}). "
                                    "Download it or use betas_format='auto'.")
        files[s] = path
    return files


def _require_design(layout: NSDLayout) -> Path:
    if not layout.expdesign.is_file():
        raise FileNotFoundError(
            f"NSD design file not found: {layout.expdesign}. Download "
            "nsddata/experiments/nsd/nsd_expdesign.mat from the NSD bucket into the root.")
    return layout.expdesign


def _global_offsets(layout: NSDLayout, subject: int, n_t: dict[int, int],
                    files: dict[int, Path] | None = None) -> dict[int, int]:
    """First global trial of each session: the trial counts of all earlier sessions summed.

    Counts come from the files (headers only for sessions not loaded); a session
    with no file counts as the most common loaded session length. Every count
    used is checked against ``responses.tsv`` (or the other sessions) first,
    so a session with a wrong number of trials is named instead of shifting
    the trials of the sessions after it.
    """
    typical = int(pd.Series(list(n_t.values())).mode().iloc[0])
    found = set(layout.sessions_found(subject))
    cache = dict(n_t)
    paths = dict(files or {})

    def count(k: int) -> int:
        if k not in cache:
            cache[k] = typical
            if k in found:
                try:
                    paths[k] = _any_file(layout, subject, k)
                    cache[k] = int(read_betas_shape(paths[k])[1])
                except (OSError, ValueError):
                    pass
        return cache[k]

    offsets = {s: sum(count(k) for k in range(1, s)) for s in n_t}
    _check_session_counts(layout, subject, {k: v for k, v in cache.items() if k in paths}, paths)
    return offsets


def _responses_counts(layout: NSDLayout, subject: int) -> dict[int, int] | None:
    """Trials per session listed in ``behav/responses.tsv`` (None when the file is absent)."""
    resp = layout.responses(subject)
    if not resp.is_file():
        return None
    try:
        tab = pd.read_csv(resp, sep="\t", usecols=["SESSION"])
        sessions = pd.to_numeric(tab["SESSION"], errors="raise").astype(np.int64)
    except (ValueError, KeyError, OSError, pd.errors.ParserError) as err:
        warn(f"Could not read the trial counts of {resp} ({type(err).__name__}: {err}); the number of trials "
             "in each betas file is only compared between sessions. Re-download responses.tsv.")
        return None
    return {int(k): int(v) for k, v in sessions.value_counts().items()}


def _check_session_counts(layout: NSDLayout, subject: int, counts: dict[int, int],
                          paths: dict[int, Path]) -> None:
    """Each betas file must hold the trials ``responses.tsv`` lists for its session (else: as many as the others)."""
    if not counts:
        return
    listed = _responses_counts(layout, subject)
    if listed:
        for s in sorted(counts):
            if s in listed and counts[s] != listed[s]:
                raise ValueError(
                    f"The NSD betas file {paths[s]} holds {counts[s]} trials but "
                    f"{layout.responses(subject)} lists {listed[s]} trials for session {s}. The betas file is "
                    f"damaged or belongs to another session or subject (and would shift the trials of every "
                    f"later session); please {_REDOWNLOAD}.")
        return
    others = {s: c for s, c in counts.items()}
    for k in layout.sessions_found(subject):
        if k not in others:
            try:
                others[k] = int(read_betas_shape(_any_file(layout, subject, k))[1])
            except (OSError, ValueError):
                continue
    if len(others) < 2:
        return
    typical = int(pd.Series(list(others.values())).mode().min())
    for s in sorted(counts):
        if counts[s] > typical:
            raise ValueError(
                f"The NSD betas file {paths[s]} holds {counts[s]} trials but the other sessions of subject "
                f"{subject} hold {typical} (NSD sessions have 750). The file is damaged or belongs to another "
                f"session or subject (and would shift the trials of every later session); please "
                f"{_REDOWNLOAD}.")
        if counts[s] < typical:
            logger.warning("The NSD betas file %s holds %d trials but the other sessions of subject %d hold %d: "
                           "it looks incomplete, and the trials of every later session are matched to the "
                           "design from this count; please %s.", paths[s], counts[s], subject, typical,
                           _REDOWNLOAD)


def _drop_rows(out: np.ndarray, events: pd.DataFrame, bad: np.ndarray, files: dict[int, Path]
               ) -> tuple[np.ndarray, pd.DataFrame]:
    """Remove the rows flagged ``bad`` (non-finite trials, ``nonfinite="drop"``)."""
    keep = ~bad
    if not keep.any():
        raise ValueError(f"Every trial of {[str(p) for p in files.values()]} holds a NaN or infinite value, so "
                         "nonfinite='drop' leaves nothing; re-download these files.")
    return out[keep], events.loc[keep].reset_index(drop=True)


def _reference_affine(layout: NSDLayout, subject: int, files: dict[int, Path], affine: np.ndarray | None
                      ) -> tuple[np.ndarray, Path] | None:
    """The data's affine and the file it comes from, to check masks against.

    A ``.nii.gz`` betas file being loaded, else any ``.nii.gz`` betas file of
    the subject (header only), else ``brainmask.nii.gz``; None when there is
    none (``.hdf5`` betas carry no affine).
    """
    if affine is not None:
        src = next(p for p in files.values() if not p.name.endswith((".hdf5", ".h5")))
        return np.asarray(affine, dtype=float), src
    for s in layout.sessions_found(subject):
        nii = layout.betas_file(subject, s, "nii.gz")
        if nii.is_file():
            try:
                aff = read_betas_shape(nii)[2]
            except (OSError, ValueError):
                continue
            if aff is not None:
                return np.asarray(aff, dtype=float), nii
    bm = layout.brainmask(subject)
    if bm.is_file():
        return read_volume(bm, what="brain mask")[1], bm
    return None


def _check_mask_affine(aff: np.ndarray, path: Path, ref: tuple[np.ndarray, Path] | None,
                       what: str = "ROI mask") -> None:
    if ref is None or Path(ref[1]) == Path(path):
        return
    check_affine(aff, ref[0], file=path, ref_file=ref[1], what=what,
                 fix="use the func1pt8mm file of the same subject")


def _any_file(layout: NSDLayout, subject: int, s: int) -> Path:
    h5 = layout.betas_file(subject, s, "hdf5")
    return h5 if h5.is_file() else layout.betas_file(subject, s, "nii.gz")


def _design_ids(design: dict, subject: int, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mo, si, sh = design["masterordering"], design["subjectim"], design["sharedix"]
    if si.shape[0] < subject:
        raise ValueError(f"'subjectim' in {path} has {si.shape[0]} rows, so there is no subject "
                         f"{subject}; please re-download this file.")
    if mo.max() > si.shape[1]:
        raise ValueError(f"'masterordering' in {path} refers to 10k-index {mo.max()} but 'subjectim' "
                         f"has {si.shape[1]} columns; please re-download this file.")
    ids_all = si[subject - 1, mo - 1] - 1  # 0-based 73k id per global trial
    return ids_all.astype(np.int64), mo.astype(np.int64), (sh - 1).astype(np.int64)


def _read_stim_info(layout: NSDLayout, ids: np.ndarray) -> pd.DataFrame | None:
    """``nsd_stim_info_merged.csv`` if present, after checking it describes every image the design uses.

    A truncated copy still parses (pandas reads the rows before the cut), so its length is checked against
    the largest 0-based 73k id of the design: a short table would silently drop COCO ids and captions.
    """
    if not layout.stim_info.is_file():
        return None
    table = read_stim_info(layout.stim_info)
    used_max = int(np.max(ids)) if len(ids) else -1
    if used_max >= len(table):
        raise OSError(f"{layout.stim_info} describes {len(table)} images but the design uses 73k id {used_max} "
                      "(0-based): the file is truncated. Please re-download it from the NSD bucket "
                      "(nsddata/experiments/nsd/nsd_stim_info_merged.csv).")
    return table


def _build_events(subject: int, n_t: dict[int, int], offsets: dict[int, int], ids_all: np.ndarray,
                  tenk_all: np.ndarray | None, shared: np.ndarray, stim_info: pd.DataFrame | None,
                  design_path: Path) -> pd.DataFrame:
    parts = []
    for s, t in n_t.items():
        g = offsets[s] + np.arange(t)
        parts.append(pd.DataFrame({"session": s, "trial_in_session": np.arange(t), "global_trial": g}))
    ev = pd.concat(parts, ignore_index=True)
    g = ev["global_trial"].to_numpy()
    if g.max() >= len(ids_all):
        raise ValueError(f"The betas hold global trial {g.max()} but {design_path} describes only "
                         f"{len(ids_all)} trials; the design and betas do not match (re-download).")
    # repetition over the whole trial sequence up to the last loaded trial: stable across subsets
    upto = ids_all[: g.max() + 1]
    rep_all = pd.Series(upto).groupby(upto).cumcount().to_numpy()
    ev.insert(0, "subject", subject)
    if all(t == int(_RUN_SIZES.sum()) for t in n_t.values()):
        ev.insert(2, "run", np.tile(np.repeat(np.arange(1, 13), _RUN_SIZES), len(n_t)))
    ev["stimulus_id"] = ids_all[g]
    if tenk_all is not None:
        ev["tenk_id"] = tenk_all[g]
    ev["repetition"] = rep_all[g]
    ev["split"] = np.where(np.isin(ev["stimulus_id"].to_numpy(), shared), "test", "train")
    if stim_info is not None and "cocoId" in stim_info.columns:
        coco = pd.Series(stim_info["cocoId"].to_numpy(), index=stim_info["nsdId"].to_numpy())
        ev["cocoId"] = ev["stimulus_id"].map(coco).astype("Int64")
    for col in ("subject", "session", "trial_in_session", "global_trial", "stimulus_id", "repetition"):
        ev[col] = ev[col].astype(np.int64)
    return ev


# ---------------------------------------------------------------------------
# ROIs
# ---------------------------------------------------------------------------
def _parse_roi(roi: Any) -> tuple[str | None, list | None]:
    if roi is None:
        return None, None
    if isinstance(roi, str):
        if ":" in roi:
            name, labs = roi.split(":", 1)
            labels = [lab.strip() for lab in labs.split(",") if lab.strip()]
            return name.strip(), labels or None
        return roi.strip(), None
    if isinstance(roi, (tuple, list)) and len(roi) == 2 and isinstance(roi[0], str):
        labels = roi[1]
        if labels is None:
            return roi[0], None
        labels = [labels] if isinstance(labels, (str, int, np.integer)) else list(labels)
        return roi[0], labels
    raise TypeError(f"roi must be None, a name like 'nsdgeneral' or 'floc-faces:FFA-1,FFA-2', or a tuple "
                    f"(name, [labels]); got {roi!r}")


def _roi_repr(roi: Any) -> str:
    return "brain mask" if roi is None else f"roi={roi!r}"


def _ctab_for(layout: NSDLayout, subject: int, name: str) -> dict[int, str] | None:
    for cand in (name, re.sub(r"^[lr]h\.", "", name)):
        p = layout.ctab_file(subject, cand)
        if p.is_file():
            return read_ctab(p)
    return None


def _roi_mask(layout: NSDLayout, subject: int, roi: Any, grid: tuple, betas_file: Path,
              ref: tuple[np.ndarray, Path] | None = None) -> tuple[np.ndarray, str, np.ndarray | None]:
    name, labels = _parse_roi(roi)
    if name is None:
        bm = layout.brainmask(subject)
        if bm.is_file():
            vol, aff = read_volume(bm, what="brain mask")
            _check_grid(vol.shape, grid, bm, betas_file)
            _check_mask_affine(aff, bm, ref, "brain mask")
            return vol > 0, str(bm), aff
        logger.info("No %s; using the nonzero voxels of %s as the mask", bm.name, betas_file.name)
        return read_betas_nonzero_mask(betas_file), str(betas_file), None
    path = layout.roi_file(subject, name)
    if not path.is_file():
        avail = sorted(p.name[:-7] for p in layout.roi_dir(subject).glob("*.nii.gz")) \
            if layout.roi_dir(subject).is_dir() else []
        raise FileNotFoundError(f"ROI file not found: {path}. ROIs found for subject {subject}: "
                                f"{avail or 'none'}; use one of them or roi=None for the brain mask.")
    vol, aff = read_volume(path, what="ROI volume")
    _check_grid(vol.shape, grid, path, betas_file)
    _check_mask_affine(aff, path, ref)
    vol = np.rint(vol).astype(np.int64)
    if labels is None:
        return vol > 0, str(path), aff
    ctab = _ctab_for(layout, subject, name)
    values = []
    for lab in labels:
        if isinstance(lab, (int, np.integer)) or (isinstance(lab, str) and lab.isdigit()):
            values.append(int(lab))
            continue
        hits = [k for k, v in (ctab or {}).items() if v == lab] or \
               [k for k, v in (ctab or {}).items() if v.lower() == str(lab).lower()]
        if not hits:
            if ctab is None:
                raise ValueError(f"Cannot select label {lab!r} of ROI {name!r}: its label table "
                                 f"{layout.ctab_file(subject, name)} is missing; use integer values "
                                 "or add the .mgz.ctab file.")
            names = [v for k, v in sorted(ctab.items()) if k > 0]
            raise ValueError(f"Unknown label {lab!r} for ROI {name!r}; labels in "
                             f"{layout.ctab_file(subject, name)}: {names}")
        values.append(hits[0])
    if any(v <= 0 for v in values):
        raise ValueError(f"ROI label values must be >= 1 (0 = no ROI, -1 = outside the surface "
                         f"mapping), got {values} for ROI {name!r}")
    return np.isin(vol, values), str(path), aff


def _check_grid(shape: tuple, grid: tuple, mask_file: Path, betas_file: Path) -> None:
    if tuple(shape) != tuple(grid):
        raise ValueError(f"The mask {mask_file} has grid {tuple(shape)} but the betas {betas_file} have "
                         f"grid {tuple(grid)} (X, Y, Z); they must match (use the func1pt8mm files of "
                         "the same subject).")


def _roi_labels(layout: NSDLayout, subject: int, voxel_indices: np.ndarray, grid: tuple,
                extra_rois: Any, ref: tuple[np.ndarray, Path] | None = None) -> dict[str, np.ndarray]:
    if extra_rois is None:
        return {}
    rdir = layout.roi_dir(subject)
    if isinstance(extra_rois, str) and extra_rois == "all":
        names = sorted(p.name[:-7] for p in rdir.glob("*.nii.gz")) if rdir.is_dir() else []
        explicit = False
    elif isinstance(extra_rois, str):
        raise ValueError(f"extra_rois must be 'all', None or a list of ROI names, got {extra_rois!r}")
    else:
        names, explicit = list(extra_rois), True
    out: dict[str, np.ndarray] = {}
    idx = tuple(voxel_indices.T)
    for name in names:
        path = layout.roi_file(subject, name)
        if not path.is_file():
            if explicit:
                raise FileNotFoundError(f"ROI file not found: {path} (asked for in extra_rois).")
            continue
        vol, aff = read_volume(path, what="ROI volume")
        if tuple(vol.shape) != tuple(grid):
            msg = f"ROI {path} has grid {tuple(vol.shape)}, not the betas grid {tuple(grid)}; skipped."
            if explicit:
                raise ValueError(msg.replace("skipped.", "remove it from extra_rois."))
            warn(msg)
            continue
        try:
            _check_mask_affine(aff, path, ref)
        except ValueError as err:
            if explicit:
                raise ValueError(f"{err} (asked for in extra_rois: remove it from extra_rois)") from None
            warn(f"{err} Its labels are not stored in info['roi_labels'].")
            continue
        vals = np.rint(vol[idx]).astype(np.int64)
        ctab = _ctab_for(layout, subject, name) or {}
        uniq, inv = np.unique(vals, return_inverse=True)
        lut = np.array([ctab.get(int(v), str(int(v))) if v > 0 else "" for v in uniq], dtype=str)
        out[name] = lut[inv] if len(uniq) else np.zeros(0, dtype=str)
    return out


def _voxel_maps(layout: NSDLayout, subject: int, voxel_indices: np.ndarray, grid: tuple,
                ref: tuple[np.ndarray, Path] | None = None) -> dict[str, Any]:
    """``ncsnr`` at the loaded voxels and the ``mni_transform`` path, for the files that exist."""
    out: dict[str, Any] = {}
    path = layout.ncsnr(subject)
    if path.is_file():
        vol, aff = read_volume(path, what="ncsnr volume")
        try:
            _check_mask_affine(aff, path, ref, "ncsnr volume")
            affine_ok = True
        except ValueError as err:
            warn(f"{err} info['ncsnr'] is not set.")
            affine_ok = False
        if tuple(vol.shape) != tuple(grid):
            warn(f"{path} has grid {tuple(vol.shape)}, not the betas grid {tuple(grid)}; info['ncsnr'] is "
                 "not set (use the func1pt8mm ncsnr.nii.gz of the same subject).")
        elif affine_ok:
            out["ncsnr"] = np.asarray(vol[tuple(voxel_indices.T)], dtype=np.float32)
    mni = layout.mni_transform(subject)
    if mni.is_file():
        out["mni_transform"] = str(mni)
    return out


# ---------------------------------------------------------------------------
# stimuli
# ---------------------------------------------------------------------------
def _load_stimuli(layout: NSDLayout, events: pd.DataFrame, stim_info: pd.DataFrame | None,
                  captions: bool) -> StimulusSet | None:
    path = layout.stimuli_hdf5
    if not path.is_file():
        logger.info("No stimulus images (%s not found): trials.stimuli is None", path)
        return None
    images = LazyHDF5Rows(path, "imgBrick")
    n = len(images)
    if images.shape[1:] and (len(images.shape) != 4 or images.shape[-1] != 3):
        raise ValueError(f"'imgBrick' in {path} has shape {images.shape}, expected (n_images, height, "
                         "width, 3); please re-download this file.")
    used_max = int(events["stimulus_id"].max()) if len(events) else -1
    if used_max >= n:
        raise ValueError(f"{path} holds {n} images but the trials use stimulus id {used_max} (0-based 73k "
                         "id); the stimuli file is incomplete, please re-download it.")
    caps = _load_captions(layout, stim_info, n) if captions else None
    meta = None
    if stim_info is not None:
        meta = stim_info.set_index("nsdId", drop=False).reindex(np.arange(n))
    return StimulusSet(np.arange(n), images=images, captions=caps, metadata=meta, source=str(path))


def _load_captions(layout: NSDLayout, stim_info: pd.DataFrame | None, n: int) -> dict | None:
    if stim_info is not None and {"cocoId", "cocoSplit"} <= set(stim_info.columns):
        caps: dict[int, list[str]] = {}
        used = []
        for split in pd.unique(stim_info["cocoSplit"].astype(str)):
            p = layout.coco_captions(split)
            if not p.is_file():
                continue
            used.append(p.name)
            by_coco = read_coco_captions(p)
            rows = stim_info[stim_info["cocoSplit"].astype(str) == split]
            for nsd_id, coco_id in zip(rows["nsdId"].to_numpy(), rows["cocoId"].to_numpy()):
                if 0 <= nsd_id < n and int(coco_id) in by_coco:
                    caps[int(nsd_id)] = by_coco[int(coco_id)]
        if used:
            logger.info("Captions for %d images from %s", len(caps), ", ".join(used))
            return caps
    cur = layout.curated_captions
    if cur.is_file():
        try:
            arr = np.load(cur, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise corrupt_file_error(cur, err, "caption file") from err
        arr = np.asarray(arr).reshape(len(arr), -1)
        caps = {i: [str(c).strip() for c in arr[i] if str(c).strip()] for i in range(min(n, len(arr)))}
        logger.info("Captions for %d images from %s", len(caps), cur.name)
        return caps
    logger.info("No captions found (no coco/annotations/captions_*.json joined through %s, no %s); "
                "stimuli have images only", layout.stim_info.name, cur.name)
    return None


# ---------------------------------------------------------------------------
# MindEye2's preprocessed betas
# ---------------------------------------------------------------------------
def _session_length(layout: NSDLayout, subject: int) -> int:
    found = layout.sessions_found(subject)
    if found:
        return int(read_betas_shape(_any_file(layout, subject, found[0]))[1])
    resp = layout.responses(subject)
    if resp.is_file():
        try:
            tab = pd.read_csv(resp, sep="\t", usecols=["SESSION"])
            return int(tab["SESSION"].value_counts().iloc[0])
        except (ValueError, KeyError, OSError) as err:
            raise corrupt_file_error(resp, err, "NSD responses file") from err
    logger.debug("Session length not found on disk; assuming 750 trials per session")
    return 750


def _load_mindeye2(layout: NSDLayout, subject: int, *, roi: Any, sessions: Any, captions: bool,
                   extra_rois: Any, dtype: np.dtype, nonfinite: str = "error") -> BrainTrials:
    path = layout.mindeye2_betas(subject)
    if roi not in ("nsdgeneral", None):
        raise ValueError(f"{path.name} holds nsdgeneral voxels only, so roi must be 'nsdgeneral' with "
                         f"betas_format='mindeye2' (got roi={roi!r}); use the standard betas for other ROIs.")
    t_ses = _session_length(layout, subject)
    with open_h5(path, "MindEye2 betas file") as f:
        dset = get_dataset(f, "betas", path)
        if dset.ndim != 2:
            raise ValueError(f"'betas' in {path} must be 2-D (n_trials, n_voxels), got {dset.shape}; "
                             "please re-download this file.")
        n_rows, n_vox = dset.shape
        n_ses = -(-n_rows // t_ses)
        found = list(range(1, n_ses + 1))
        if sessions is None:
            wanted = found
        else:
            wanted = sorted({int(s) for s in ([sessions] if np.isscalar(sessions) else sessions)})
            missing = [s for s in wanted if s not in found]
            if missing:
                raise ValueError(f"Session(s) {missing} requested but {path} holds sessions {found} "
                                 f"({n_rows} rows, {t_ses} trials per session).")
        n_t = {s: min(t_ses, n_rows - (s - 1) * t_ses) for s in wanted}
        offsets = {s: (s - 1) * t_ses for s in wanted}
        ids_all, tenk_all, shared = _mindeye2_design(layout, subject, n_rows)
        stim_info = _read_stim_info(layout, ids_all)
        events = _build_events(subject, n_t, offsets, ids_all, tenk_all, shared, stim_info,
                               layout.expdesign if layout.expdesign.is_file() else
                               layout.mindeye2_subj_indices())
        out = np.empty((len(events), n_vox), dtype=dtype)
        row = 0
        try:
            for s in ProgressBar(wanted, desc=f"MindEye2 subj{subject:02d}", unit="session"):
                out[row:row + n_t[s]] = dset[offsets[s]:offsets[s] + n_t[s]]
                row += n_t[s]
        except OSError as err:
            raise corrupt_file_error(path, err, "MindEye2 betas file") from err
    bad = check_finite(out, file=path, sessions=events["session"].to_numpy(), nonfinite=nonfinite,
                       fix=f"please {_REDOWNLOAD}")
    if bad.any():
        out, events = _drop_rows(out, events, bad, {0: path})
    info: dict[str, Any] = {
        "modality": "fmri", "subject": subject, "roi": "nsdgeneral", "betas_files": [str(path)],
        "scale": 1.0, "zscore": "mindeye2", "tr": None, "betas_format": "mindeye2",
        "volume_shape": None, "affine": None, "voxel_indices": None, "roi_labels": {},
    }
    roi_path = layout.roi_file(subject, "nsdgeneral")
    if roi_path.is_file():
        vol, aff = read_volume(roi_path, what="ROI volume")
        vox = np.argwhere(vol > 0)
        if len(vox) == n_vox:
            info.update(volume_shape=tuple(int(v) for v in vol.shape), affine=aff,
                        voxel_indices=vox.astype(np.int64), roi_file=str(roi_path),
                        roi_labels=_roi_labels(layout, subject, vox, vol.shape, extra_rois, (aff, roi_path)),
                        **_voxel_maps(layout, subject, vox, vol.shape, (aff, roi_path)))
        else:
            warn(f"{roi_path} has {len(vox)} nsdgeneral voxels but {path.name} has {n_vox} columns; "
                 "voxel positions are not attached.")
    logger.info("Loaded MindEye2 betas of subject %d: %d trials x %d voxels (already z-scored)",
                subject, len(events), n_vox)
    stimuli = _load_stimuli(layout, events, stim_info, captions)
    return BrainTrials(out, events, info, stimuli)


def _mindeye2_design(layout: NSDLayout, subject: int, n_rows: int
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    if layout.expdesign.is_file():
        return _design_ids(read_expdesign(layout.expdesign), subject, layout.expdesign)
    idx_path = layout.mindeye2_subj_indices()
    if not idx_path.is_file():
        raise FileNotFoundError(f"Neither the NSD design file {layout.expdesign} nor MindEye2's "
                                f"{idx_path} exists; one is needed to know the image of each trial.")
    with open_h5(idx_path, "MindEye2 index file") as f:
        ids_all = np.asarray(get_dataset(f, f"subj{subject:02d}", idx_path)[()]).ravel().astype(np.int64)
    shared_file = layout.root / "shared1000.npy"
    if shared_file.is_file():
        shared = np.flatnonzero(np.load(shared_file, allow_pickle=False).astype(bool))
    elif layout.stim_info.is_file():
        tab = read_stim_info(layout.stim_info)
        shared = tab.loc[tab["shared1000"].astype(bool), "nsdId"].to_numpy()
    else:
        raise FileNotFoundError(f"Cannot tell the shared-1000 test images: none of {layout.expdesign}, "
                                f"{shared_file} or {layout.stim_info} exists.")
    return ids_all, None, shared.astype(np.int64)
