"""Simulated datasets written in a real dataset's own on-disk layout.

:func:`simulate` writes procedural stimuli (images + captions) and brain
responses generated from them, with known signal planted in chosen ROIs, into
the exact file layout of a real dataset, so that the real loader reads it like
real data. Each dataset's simulator is the ``simulator`` of its entry in the dataset
registry (:mod:`neurodecode.datasets.registry`); this module holds NSD's.
See ``docs/simulator.md`` for the generative model.
"""

from __future__ import annotations

import glob
import inspect
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import ProgressBar, atomic_write_json, atomic_write_text, fill_doc, get_data_dir, logger, verbose
from ..utils.locks import hold_lock
from . import _procedural as proc
from ._sim_meeg import check_int as _check_int
from ._sim_meeg import check_response
from .registry import Simulator, SimulatorView, get_dataset

#: Bumped whenever the generated content changes, so stale caches are not reused.
#: 2: NSD gets the 7-network whole-cortex atlas (``simulation/atlases/``) and network ``signal_rois``.
SIMULATOR_VERSION = 3
_JSON_NAME = "simulation.json"


#: A dataset simulator: ``resolve`` validates parameters, ``write`` writes the files (the registry's type).
_Simulator = Simulator
#: ``{name: Simulator}``: a live view of the dataset registry (``neurodecode.datasets.registry``).
_SIMULATORS = SimulatorView()


# ============================================================================
# Public entry point
# ============================================================================
@verbose
@fill_doc
def simulate(name: str, out_dir: str | Path | None = None, *, n_subjects: int = 2, seed: int = 0,
             overwrite: bool = False, verbose: bool | str | int | None = None, **params: Any) -> Path:
    """Write a simulated dataset in a real dataset's on-disk layout.

    The images are procedural (shapes with colours, sizes, positions and a
    textured background), every image has 5 captions written from the same
    latents, and the brain responses are generated from the stimuli: a
    population-receptive-field model in early visual ROIs, random linear
    tuning to the semantic latents in higher visual streams (and in any
    planted cortical network), no stimulus signal elsewhere, plus spatially
    smooth noise, session offsets and drifts. NSD subjects also get a
    7-network whole-cortex atlas (``simulation/atlases/subjXX_networks7``).
    ``simulation.json`` at the root records the parameters and the planted
    ground truth. See ``docs/simulator.md``.

    Parameters
    ----------
    name : str
        Dataset whose layout is written: a registered dataset
        (:func:`neurodecode.datasets.list_datasets`), built in ``"nsd"``,
        ``"things_eeg2"``, ``"things_meg"`` or ``"masc"``.
    out_dir : str | Path | None
        Root of the simulated dataset (for NSD, the folder that plays the bucket
        root ``natural-scenes-dataset/``). ``None`` uses
        ``get_data_dir() / "simulated" / name``.
    n_subjects : int
        Number of simulated subjects (NSD: 1..8).
    seed : int
        Seed of every random draw: the same parameters and seed give
        byte-identical arrays.
    overwrite : bool
        Replace an existing dataset in ``out_dir`` whose parameters differ (or
        which is incomplete or not a simulation). Without it such a folder raises
        ``FileExistsError``. An existing simulation with identical parameters is
        always reused (nothing is written). One process writes a folder at a
        time (a lock file ``.<out_dir name>.lock`` beside it while it
        writes): a second call into the same ``out_dir`` waits for the first,
        then reuses its dataset or is refused as above. Temporary folders of
        a killed simulation (``.<name>.simulating-*``) are removed by the next
        call into the same ``out_dir``.
    %(verbose)s
    **params
        Dataset-specific parameters (the M/EEG simulators' parameters are
        listed in ``docs/simulator.md`` and in the docstrings of
        ``neurodecode.datasets._sim_things`` / ``_sim_masc``). For ``"nsd"``
        (all keyword-only):

        - ``n_sessions`` (int, default 4): sessions per subject (1..40).
        - ``trials_per_session`` (int, default 750, the real count): trials per
          session; smaller values make quick tests. Every image is shown 3
          times, so each subject sees ``ceil(n_sessions * trials_per_session / 3)``
          images.
        - ``shared_fraction`` (float, default 0.1): fraction of each subject's
          images drawn from the shared pool that every subject sees (the test
          split; at most 1000 images as in NSD).
        - ``image_size`` (int, default 64): image side in pixels (425 is the
          real NSD size).
        - ``grid`` (None | "real" | (X, Y, Z) | list of (X, Y, Z)): functional
          grid of each subject. ``None`` draws (28, 34, 28) ± 2 per axis per
          subject; ``"real"`` uses the real func1pt8mm grids of NSD subjects.
        - ``formats`` (tuple of "hdf5", "nii.gz"; default ("hdf5",)): betas
          file formats written (identical values).
        - ``snr`` (float, default 0.4): median single-trial signal-to-noise
          ratio (signal std / noise std) of the planted voxels.
        - ``signal_rois`` (sequence of str): ROIs that carry stimulus signal:
          ``"nsdgeneral"``, stream names (``"early"``, ``"midventral"``,
          ``"midlateral"``, ``"midparietal"``, ``"ventral"``, ``"lateral"``,
          ``"parietal"``), prf-visualrois labels (``"V1v"`` ... ``"hV4"``) or
          ``"V1"``, ``"V2"``, ``"V3"``, or cortical networks of the simulated
          atlas (:data:`NETWORK_LABELS`: ``"Visual"``, ``"Somatomotor"``,
          ``"DorsalAttention"``, ``"VentralAttention"``, ``"Limbic"``,
          ``"Frontoparietal"``, ``"Default"``). A network plants signal in all
          its cortical voxels, also outside nsdgeneral (semantic tuning
          :data:`NETWORK_TUNING` there). Default: early, midventral, ventral,
          lateral (the parietal and midlateral streams carry noise only).
        - ``response`` (``"nonlinear"`` | ``"linear"``, default ``"nonlinear"``;
          every simulator takes it): the generative model of the responses.
          ``"linear"`` is the model above (ridge is near-optimal on it).
          ``"nonlinear"``, the default: early areas respond to local
          contrast energy with compressive spatial summation ``(pRF · energy) ** n``
          (n < 1; :data:`CSS_EXPONENT`), hV4 adds retinotopic hue tuning, higher
          streams and planted networks have Gaussian tuning curves in a continuous
          feature space; M/EEG simulators use rectified, saturating sources and
          trial-to-trial latency jitter. The anatomy, planted ROIs / sensors, SNR
          and noise are the same as in the linear mode. Recorded in
          ``simulation.json`` only when not ``"linear"``.

    Returns
    -------
    out_dir : Path
        The dataset root.

    Raises
    ------
    ValueError
        Unknown ``name`` or an invalid parameter value.
    TypeError
        A parameter that the dataset's simulator does not accept.
    FileExistsError
        ``out_dir`` holds other content (different parameters, an interrupted
        or non-simulated dataset) and ``overwrite`` is False.

    Examples
    --------
    >>> from neurodecode.datasets import simulate
    >>> root = simulate("nsd", "/tmp/nsd_sim", n_subjects=1, n_sessions=1,
    ...                 trials_per_session=60, image_size=16)  # doctest: +SKIP
    """
    spec = get_dataset(name).simulator  # unknown name: lists the registered datasets
    accepted = [k for k in inspect.signature(spec.resolve).parameters if k not in ("n_subjects", "seed")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(f"simulate({name!r}) got unexpected parameter(s) {unknown}; the {name!r} simulator "
                        f"accepts {accepted} (plus n_subjects, seed, overwrite, verbose).")
    params = spec.resolve(n_subjects=n_subjects, seed=seed, **params)
    params = json.loads(json.dumps(params))  # tuples -> lists, as read back from JSON
    out = Path(get_data_dir() / "simulated" / name if out_dir is None else out_dir).expanduser()

    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out_dir {out} exists and is a file; pass a folder path.")
    if _same_simulation(out, name, params):  # complete (simulation.json is written last): no lock needed
        logger.info("Simulated %s dataset with these parameters already in %s: reusing it", name, out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # One simulator per folder: a second process waits here, then reuses the dataset the first wrote
    # (same parameters) or is refused (other parameters, without overwrite).
    with hold_lock(out.parent / f".{out.name}.lock", what=f"simulating into {out}"):
        _remove_stale_siblings(out)
        if out.exists():
            if _same_simulation(out, name, params):  # written by the process we waited for
                logger.info("Simulated %s dataset with these parameters already in %s: reusing it", name, out)
                return out
            if any(out.iterdir()) and not overwrite:
                raise FileExistsError(_mismatch_message(out, name, params, _read_existing(out)))

        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.simulating-", dir=out.parent))
        try:
            logger.info("Simulating the %s dataset (%d subject(s), seed %d) into %s", name, n_subjects, seed,
                        out)
            truth = spec.write(tmp, params)
            record = {"name": name, "parameters": params, "ground_truth": truth,
                      "written_by": "neurodecode.datasets.simulate"}
            atomic_write_json(tmp / _JSON_NAME, record)  # written last: marks the folder complete
            _swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("Simulated %s dataset written to %s", name, out)
    return out


def _remove_stale_siblings(out: Path) -> None:
    """Remove ``.<out>.simulating-*`` / ``.<out>.old-*`` folders of killed simulations (the caller holds the lock)."""
    for prefix in (f".{out.name}.simulating-", f".{out.name}.old-"):
        for path in out.parent.glob(f"{glob.escape(prefix)}*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                logger.info("Removed %s, left by a simulation that was killed", path)


def _same_simulation(out: Path, name: str, params: dict) -> bool:
    existing = _read_existing(out) if out.is_dir() else None
    return existing is not None and existing.get("name") == name and existing.get("parameters") == params


def _read_existing(out: Path) -> dict | None:
    f = out / _JSON_NAME
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _mismatch_message(out: Path, name: str, params: dict, existing: dict | None) -> str:
    if existing is None:
        why = (f"it is not empty and holds no {_JSON_NAME} (an interrupted simulation or other data)")
    elif existing.get("name") != name:
        why = f"it holds a simulated {existing.get('name')!r} dataset, not {name!r}"
    else:
        old = existing.get("parameters") or {}
        diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        shown = ", ".join(f"{k}: {old.get(k)!r} on disk vs {params.get(k)!r} requested" for k in diff[:5])
        why = f"it holds a simulation with different parameters ({shown})"
    return (f"Cannot simulate into {out}: {why}. Pass overwrite=True to replace it, or choose another "
            "out_dir.")


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder onto ``out`` (replacing an old ``out``)."""
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, trash / out.name)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(trash / out.name, out)  # put the old dataset back
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


# ============================================================================
# NSD
# ============================================================================
#: Real func1pt8mm grids of NSD subjects 1..8 (FORMATS.md 1.2).
NSD_REAL_GRIDS = ((81, 104, 83), (82, 106, 84), (81, 106, 82), (85, 99, 80),
                  (79, 97, 78), (85, 113, 83), (78, 95, 81), (80, 103, 78))
_DEFAULT_GRID = (28, 34, 28)
_MAX_SESSIONS = 40
_TRIALS_REAL = 750
_N_10K, _N_TRIALS_DESIGN, _N_SHARED_DESIGN = 10000, 30000, 1000

PRF_LABELS = {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}
STREAM_LABELS = {1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral",
                 6: "lateral", 7: "parietal"}
ECC_LABELS = {1: "ecc0pt5", 2: "ecc1", 3: "ecc2", 4: "ecc4", 5: "ecc4+"}
_AREA_ALIASES = {"V1": ("V1v", "V1d"), "V2": ("V2v", "V2d"), "V3": ("V3v", "V3d")}
DEFAULT_SIGNAL_ROIS = ("early", "midventral", "ventral", "lateral")
_FORMATS = ("hdf5", "nii.gz")

# pRF size (fraction of the image half-width): sigma = base + slope * eccentricity
_RF_SIZE = {"V1": (0.05, 0.10), "V2": (0.07, 0.15), "V3": (0.10, 0.22), "hV4": (0.16, 0.32)}
# semantic tuning of the higher streams: feature group -> gain
STREAM_TUNING: dict[str, dict[str, float]] = {
    "hV4": {"colour": 1.0, "background": 0.4},
    "midventral": {"colour": 1.0, "category": 0.6, "background": 0.3},
    "midlateral": {"count": 1.0, "size": 1.0, "position": 0.5},
    "midparietal": {"position": 1.0, "count": 0.5},
    "ventral": {"category": 1.0, "colour": 0.5},
    "lateral": {"category": 0.7, "count": 0.7, "size": 0.5},
    "parietal": {"position": 1.0, "count": 1.0},
}
#: Yeo-7 cortical networks of the simulated whole-cortex atlas (ids in Yeo order).
NETWORK_LABELS = {1: "Visual", 2: "Somatomotor", 3: "DorsalAttention", 4: "VentralAttention", 5: "Limbic",
                  6: "Frontoparietal", 7: "Default"}
#: semantic tuning (feature group -> gain) of planted network voxels outside nsdgeneral's streams
NETWORK_TUNING: dict[str, float] = {"category": 1.0, "colour": 0.5, "count": 0.5, "background": 1.0}
# Anchor directions on the brain ellipsoid (x lateral in the right hemisphere, mirrored for the left;
# y anterior; z up). A cortical voxel joins the network of the anchor of its hemisphere with the largest
# cosine + bias; the biases balance the network sizes (~8-19 % of the cortex each, Visual ~30 %).
_NETWORK_ANCHORS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "Visual": ((0.3, -0.95, 0.0), (0.4, -0.5, -0.85)),  # occipital pole, ventral occipito-temporal
    "Somatomotor": ((0.4, -0.05, 0.92), (0.85, -0.05, 0.5)),  # dorsal and lateral central
    "DorsalAttention": ((0.45, -0.55, 0.7), (0.9, -0.55, -0.1)),  # superior parietal, MT+
    "VentralAttention": ((0.95, 0.15, 0.1),),  # lateral central (insula, supramarginal)
    "Limbic": ((0.6, 0.45, -0.65), (0.15, 0.6, -0.8)),  # temporal pole, orbitofrontal
    "Frontoparietal": ((0.6, 0.7, 0.35),),  # lateral prefrontal
    "Default": ((0.1, 0.95, 0.15), (0.08, -0.45, 0.9), (0.8, -0.45, 0.35), (0.8, -0.05, -0.6)),
}
_NETWORK_BIAS = {"Visual": -0.229, "Somatomotor": 0.054, "DorsalAttention": 0.112, "VentralAttention": 0.075,
                 "Limbic": -0.108, "Frontoparietal": 0.065, "Default": 0.031}
_NETWORK_JITTER = 0.03  # per-subject std of the anchor directions
_VISUAL_STREAMS = (1, 2, 3, 5)  # early, midventral, midlateral, ventral: always in the Visual network
_MIN_PATCH = 5  # smaller patches of a network join the surrounding network
_LOWRES = 16  # side of the low-resolution feature maps seen by the pRFs
# response="nonlinear" (docs/simulator.md, "Nonlinear responses"):
#: compressive spatial summation exponent n of the early areas (Kay et al. 2013: n < 1, falling up the
#: hierarchy); the response is (pRF-weighted contrast energy) ** n
CSS_EXPONENT = {"V1": 0.5, "V2": 0.4, "V3": 0.35, "hV4": 0.3}
_POLARITY_MAX = 0.15  # |gamma| <= this: weight of the signed (polarity) contrast relative to the energy
_TUNING_SIGMA = 0.8  # median width of the Gaussian tuning curves (std units of the tuning coordinates)
_TUNING_JITTER = 0.3  # std of the preferred points around the stimuli they are drawn from
_COLOUR_SIGMA = 0.8  # median width of hV4's hue tuning (std units of the local colour coordinates)
_NOISE_SIGMA_VOX = 1.0
_NOISE_BLOCK = 125  # trials of noise generated at once


def _signal_roi_names() -> list[str]:
    return ["nsdgeneral", *STREAM_LABELS.values(), *PRF_LABELS.values(), *_AREA_ALIASES,
            *NETWORK_LABELS.values()]


def _resolve_nsd(*, n_subjects: int = 2, seed: int = 0, n_sessions: int = 4,
                 trials_per_session: int = _TRIALS_REAL, shared_fraction: float = 0.1,
                 image_size: int = 64, grid: Any = None, formats: Sequence[str] = ("hdf5",),
                 snr: float = 0.4, signal_rois: Sequence[str] = DEFAULT_SIGNAL_ROIS,
                 response: str = "nonlinear") -> dict[str, Any]:
    """Validate the NSD simulation parameters and return them resolved (JSON-able).

    ``response`` is recorded only when it is not ``"linear"``, so the resolved parameters (and
    therefore cached linear simulations) are the same as before the parameter existed.
    """
    n_subjects = _check_int("n_subjects", n_subjects, 1, 8)
    seed = _check_int("seed", seed, 0)
    n_sessions = _check_int("n_sessions", n_sessions, 1, _MAX_SESSIONS)
    trials_per_session = _check_int("trials_per_session", trials_per_session, 3, _TRIALS_REAL)
    n_trials = n_sessions * trials_per_session
    n_img = math.ceil(n_trials / 3)
    if not isinstance(shared_fraction, (int, float)) or not 0 < shared_fraction < 1:
        raise ValueError(f"shared_fraction must be a number in (0, 1), got {shared_fraction!r}")
    n_shared = min(max(1, round(shared_fraction * n_img)), _N_SHARED_DESIGN)
    if n_img - n_shared < 1:
        raise ValueError(f"shared_fraction={shared_fraction} leaves no subject-specific images out of "
                         f"{n_img}; use a smaller shared_fraction or more trials.")
    if n_img - n_shared > _N_10K - _N_SHARED_DESIGN:
        raise ValueError(f"{n_img - n_shared} subject-specific images do not fit NSD's 9000 subject-specific "
                         "10k-indices; raise shared_fraction or simulate fewer trials.")
    image_size = _check_int("image_size", image_size, 8, 1024)
    if isinstance(formats, str):
        formats = (formats,)
    formats = list(dict.fromkeys(formats))
    if not formats or any(f not in _FORMATS for f in formats):
        raise ValueError(f"Invalid value for the 'formats' parameter: each entry must be one of "
                         f"{_FORMATS!r} (at least one), but got {formats!r} instead.")
    if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not 0 <= snr < 100:
        raise ValueError(f"snr must be a number in [0, 100), got {snr!r}")
    if isinstance(signal_rois, str):
        signal_rois = (signal_rois,)
    allowed = _signal_roi_names()
    bad = [r for r in signal_rois if r not in allowed]
    if bad:
        raise ValueError(f"Invalid value for the 'signal_rois' parameter: {bad!r} not allowed. Allowed "
                         f"names are {', '.join(repr(a) for a in allowed)}.")
    response = check_response(response)
    grids = _resolve_grids(grid, n_subjects, seed)
    out = {
        "simulator_version": SIMULATOR_VERSION, "n_subjects": n_subjects, "seed": seed,
        "n_sessions": n_sessions, "trials_per_session": trials_per_session,
        "shared_fraction": float(shared_fraction), "image_size": image_size, "grid": grids,
        "formats": formats, "snr": float(snr), "signal_rois": list(dict.fromkeys(signal_rois)),
    }
    if response != "linear":
        out["response"] = response
    return out


def _resolve_grids(grid: Any, n_subjects: int, seed: int) -> list[list[int]]:
    if grid is None:
        rng = np.random.default_rng([seed, 7001])
        jitter = rng.integers(-2, 3, size=(8, 3))
        return [[int(d + j) for d, j in zip(_DEFAULT_GRID, jitter[s])] for s in range(n_subjects)]
    if isinstance(grid, str):
        if grid != "real":
            raise ValueError(f"Invalid value for the 'grid' parameter: a string must be 'real', got {grid!r}")
        return [list(g) for g in NSD_REAL_GRIDS[:n_subjects]]
    arr = np.asarray(grid)
    if arr.shape == (3,):
        arr = np.tile(arr, (n_subjects, 1))
    if arr.shape != (n_subjects, 3) or arr.dtype.kind not in "iu":
        raise ValueError(f"grid must be None, 'real', one (X, Y, Z) tuple of ints or one per subject "
                         f"({n_subjects}), got {grid!r}")
    if arr.min() < 10 or arr.max() > 256:
        raise ValueError(f"grid dimensions must be in 10..256 voxels, got {grid!r}")
    return arr.astype(int).tolist()


# ----------------------------------------------------------------------------
# design
# ----------------------------------------------------------------------------
def _nsd_design(p: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Masterordering, subjectim, sharedix and the 73k brick composition."""
    n_sub, tps, n_sess = p["n_subjects"], p["trials_per_session"], p["n_sessions"]
    n_trials = n_sess * tps
    n_img = math.ceil(n_trials / 3)
    n_shared = min(max(1, round(p["shared_fraction"] * n_img)), _N_SHARED_DESIGN)
    n_spec = n_img - n_shared
    n_pad = _N_SHARED_DESIGN - n_shared  # sharedix entries filled with never-shown images
    n_brick = _N_SHARED_DESIGN + n_sub * n_spec
    ids = rng.permutation(n_brick) + 1  # 1-based 73k ids in random order
    sharedix = ids[:_N_SHARED_DESIGN]  # [:n_shared] shown to everybody, the rest never shown
    specific = ids[_N_SHARED_DESIGN:].reshape(n_sub, n_spec) if n_spec else np.zeros((n_sub, 0), int)
    pad = sharedix[n_shared:]
    fill = pad if n_pad else sharedix  # ids for the unused 10k-indices

    subjectim = np.empty((8, _N_10K), dtype=np.int64)
    n_unused = _N_10K - _N_SHARED_DESIGN - n_spec
    for s in range(8):
        subjectim[s, :_N_SHARED_DESIGN] = sharedix
        if s < n_sub:
            subjectim[s, _N_SHARED_DESIGN:_N_SHARED_DESIGN + n_spec] = specific[s]
            subjectim[s, _N_SHARED_DESIGN + n_spec:] = np.resize(fill, n_unused)
        else:
            subjectim[s, _N_SHARED_DESIGN:] = np.resize(fill, _N_10K - _N_SHARED_DESIGN)

    # trial sequence: 3 repetitions per used 10k-index, spaced by ~n_img trials with jitter
    used = np.concatenate([np.arange(1, n_shared + 1), np.arange(1001, 1001 + n_spec)])
    base = rng.permutation(n_img) / n_img
    keys = base[None, :] + np.arange(3)[:, None] + rng.uniform(-0.3, 0.3, (3, n_img))
    order = np.argsort(keys.ravel(), kind="stable")[:n_trials]
    seq = np.tile(used, 3)[order]
    unused = np.setdiff1d(np.arange(1, _N_10K + 1), used)
    masterordering = rng.choice(unused if len(unused) else used, _N_TRIALS_DESIGN)
    masterordering[:n_trials] = seq
    return {"masterordering": masterordering, "subjectim": subjectim, "sharedix": sharedix,
            "n_images_per_subject": n_img, "n_shared": n_shared, "n_specific": n_spec, "n_pad": n_pad,
            "n_brick": n_brick, "n_trials": n_trials, "used_10k": used}


def _run_sizes(tps: int) -> np.ndarray:
    """Trials per run: ~62.5 trials per run, long and short runs alternating (63, 62, ... for 750)."""
    n_runs = max(1, round(tps / 62.5))
    sizes = [len(a) for a in np.array_split(np.arange(tps), n_runs)]
    big = [s for s in sizes if s == sizes[0]]
    small = [s for s in sizes if s != sizes[0]]
    out = []
    while big or small:
        if big:
            out.append(big.pop())
        if small:
            out.append(small.pop())
    return np.array(out)


def _responses_table(subject: int, design: dict, p: dict, rng: np.random.Generator) -> pd.DataFrame:
    tps, n_sess, n_trials = p["trials_per_session"], p["n_sessions"], design["n_trials"]
    tenk = design["masterordering"][:n_trials]
    k73 = design["subjectim"][subject - 1, tenk - 1]
    runs = _run_sizes(tps)
    run = np.tile(np.repeat(np.arange(1, len(runs) + 1), runs), n_sess)
    trial = np.tile(np.concatenate([np.arange(1, r + 1) for r in runs]), n_sess)
    session = np.repeat(np.arange(1, n_sess + 1), tps)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    last_sess: dict[int, int] = {}
    isold = np.zeros(n_trials, int)
    isold_cur = np.zeros(n_trials, int)
    mem_recent = np.full(n_trials, np.nan)
    mem_first = np.full(n_trials, np.nan)
    for g, k in enumerate(tenk.tolist()):
        if k in last:
            isold[g] = 1
            mem_recent[g] = g - last[k]
            mem_first[g] = g - first[k]
            isold_cur[g] = int(last_sess[k] == session[g])
        else:
            first[k] = g
        last[k] = g
        last_sess[k] = session[g]
    correct = (rng.random(n_trials) < np.where(isold == 1, 0.75, 0.85)).astype(int)
    said_old = np.where(correct == 1, isold, 1 - isold)
    t0 = 737000.0 + (session - 1) * 7 + (run - 1) * 6 / 1440 + trial * 4 / 86400
    return pd.DataFrame({
        "SUBJECT": subject, "SESSION": session, "RUN": run, "TRIAL": trial, "73KID": k73, "10KID": tenk,
        "TIME": np.round(t0, 8), "ISOLD": isold, "ISCORRECT": correct,
        "RT": np.round(rng.lognormal(np.log(850), 0.25, n_trials), 1),
        "CHANGEMIND": (rng.random(n_trials) < 0.02).astype(int), "MEMORYRECENT": mem_recent,
        "MEMORYFIRST": mem_first, "ISOLDCURRENT": isold_cur,
        "ISCORRECTCURRENT": np.where(said_old == isold_cur, 1, 0), "TOTAL1": 1, "TOTAL2": 0,
        "BUTTON": np.where(said_old == 1, 1, 2), "MISSINGDATA": 0,
    })


def _stim_info_table(design: dict, p: dict, rng: np.random.Generator) -> pd.DataFrame:
    n = design["n_brick"]
    n_sub, n_trials = p["n_subjects"], design["n_trials"]
    coco = np.sort(rng.choice(np.arange(1, 600000), n, replace=False))[rng.permutation(n)]
    split = np.where(rng.random(n) < 0.08, "val2017", "train2017")
    table = pd.DataFrame({
        "cocoId": coco, "cocoSplit": split, "cropBox": "(0, 0, 0, 0)", "loss": 0.0,
        "nsdId": np.arange(n), "flagged": False, "BOLD5000": False,
        "shared1000": np.isin(np.arange(n), design["sharedix"] - 1),
    })
    tenk = design["masterordering"][:n_trials]
    for k in range(1, 9):
        shown = np.zeros(n, int)
        reps = np.zeros((n, 3), int)
        if k <= n_sub:
            designated = design["subjectim"][k - 1, design["used_10k"] - 1] - 1
            shown[designated] = 1
            ids = design["subjectim"][k - 1, tenk - 1] - 1
            rep = pd.Series(ids).groupby(ids).cumcount().to_numpy()
            keep = rep < 3
            reps[ids[keep], rep[keep]] = np.flatnonzero(keep) + 1  # 1-based global trial
        table[f"subject{k}"] = shown
        for r in range(3):
            table[f"subject{k}_rep{r}"] = reps[:, r]
    return table


# ----------------------------------------------------------------------------
# anatomy: brain mask, cortical shell, ROIs, retinotopy
# ----------------------------------------------------------------------------
def _affine(shape: Sequence[int]) -> np.ndarray:
    aff = np.diag([1.8, 1.8, 1.8, 1.0])
    aff[:3, 3] = -1.8 * (np.asarray(shape) - 1) / 2
    return aff


def _nsd_anatomy(shape: Sequence[int], rng: np.random.Generator) -> dict[str, Any]:
    """Brain mask, ROI volumes (-1 / 0 / k) and per-voxel area labels of one subject."""
    c = np.meshgrid(*[np.linspace(-1, 1, d) for d in shape], indexing="ij")
    cx, cy, cz = c
    rho = np.sqrt((cx / 0.92) ** 2 + (cy / 0.94) ** 2 + (cz / 0.88) ** 2)
    brain = rho <= 1.0
    # "cortex": an outer shell ~3.5 voxels thick (at most 40% of the radius) maps to the surface
    thickness = min(0.4, 3.5 / ((min(shape) - 1) / 2))
    shell = brain & (rho >= 1.0 - thickness)
    general = shell & (cy < -0.15) & (cz > -0.8)
    idx = np.flatnonzero(general)
    gx, gy, gz = cx.ravel()[idx], cy.ravel()[idx], cz.ravel()[idx]
    # distance from the occipital pole orders the hierarchy (V1 first)
    d = np.sqrt(gx ** 2 + (gy + 1) ** 2 + (gz - np.median(gz)) ** 2) + rng.uniform(0, 1e-3, len(idx))
    q = np.argsort(np.argsort(d)) / max(len(idx) - 1, 1)
    zc = gz - np.median(gz)
    angle = np.degrees(np.arctan2(zc, np.abs(gx) + 1e-6))
    ventral_dir, parietal_dir = angle < -20, angle > 35
    area = np.full(len(idx), "", dtype=object)
    area[q < 0.12] = "V1"
    area[(q >= 0.12) & (q < 0.24)] = "V2"
    area[(q >= 0.24) & (q < 0.36)] = "V3"
    mid, high = (q >= 0.36) & (q < 0.62), q >= 0.62
    area[mid & (zc < 0) & (q < 0.49)] = "hV4"
    prf = np.zeros(len(idx), int)
    for k, a in enumerate(("V1", "V2", "V3")):
        prf[area == a] = np.where(zc[area == a] < 0, 2 * k + 1, 2 * k + 2)
    prf[area == "hV4"] = 7
    streams = np.zeros(len(idx), int)
    streams[q < 0.36] = 1
    streams[mid & ventral_dir] = 2
    streams[mid & ~ventral_dir & ~parietal_dir] = 3
    streams[mid & parietal_dir] = 4
    streams[mid & (area == "hV4")] = 2  # hV4 lies in the mid-ventral stream
    streams[high & ventral_dir] = 5
    streams[high & ~ventral_dir & ~parietal_dir] = 6
    streams[high & parietal_dir] = 7
    missing = [PRF_LABELS[k] for k in PRF_LABELS if not (prf == k).any()]
    missing += [STREAM_LABELS[k] for k in STREAM_LABELS if not (streams == k).any()]
    if missing:
        raise ValueError(f"The grid {tuple(shape)} is too small: ROI(s) {missing} got no voxel. Use a larger "
                         "grid (e.g. the default (28, 34, 28)).")

    # retinotopy of the pRF voxels (V1-V3, hV4): contralateral field, ventral -> upper field
    rf = area != ""
    u = np.zeros(len(idx))
    v = np.zeros(len(idx))
    sigma = np.zeros(len(idx))
    ecc = np.zeros(len(idx))
    for a in ("V1", "V2", "V3", "hV4"):
        m = area == a
        t = np.argsort(np.argsort(d[m])) / max(m.sum() - 1, 1)
        e = np.clip(0.05 + 0.95 * t ** 0.8 + rng.normal(0, 0.05, m.sum()), 0.02, 1.2)
        phi = np.arctan2(zc[m], np.abs(gx[m]) + 1e-6)
        hemi = np.where(gx[m] < 0, 1.0, -1.0)  # left hemisphere sees the right visual field
        u[m] = e * hemi * np.cos(phi)
        v[m] = e * np.sin(phi)
        ecc[m] = e
        base, slope = _RF_SIZE[a]
        sigma[m] = (base + slope * e) * rng.lognormal(0, 0.1, m.sum())

    def volume(labels_in_general: np.ndarray) -> np.ndarray:
        vol = np.where(shell, 0, -1).astype(np.int16).ravel()
        vol[idx] = labels_in_general
        return vol.reshape(shape)

    # eccentricity in degrees: the NSD images span 8.4 deg, i.e. a half-width of 4.2 deg
    ecc_deg = ecc * 4.2
    ecc_lab = np.where(rf, np.digitize(ecc_deg, [0.5, 1, 2, 4], right=True) + 1, 0)
    rois = {
        "nsdgeneral": (volume(np.ones(len(idx), int)), {1: "nsdgeneral"}),
        "prf-visualrois": (volume(prf), PRF_LABELS),
        "prf-eccrois": (volume(ecc_lab), ECC_LABELS),
        "streams": (volume(streams), STREAM_LABELS),
    }
    return {"brain": brain, "shell": shell, "general_idx": idx, "area": area, "prf": prf,
            "streams": streams, "rf_u": u, "rf_v": v, "rf_sigma": sigma, "rf_ecc": ecc, "rois": rois,
            "hemi_left": cx < 0}


def _network_atlas(shape: Sequence[int], anat: dict, rng: np.random.Generator) -> np.ndarray:
    """Yeo-7-like networks partitioning the cortical shell: int16 volume, 0 off the shell, 1..7.

    Visual holds every nsdgeneral voxel of the early, midventral, midlateral and ventral streams.
    Every other shell voxel joins the network of the nearest anchor direction of its hemisphere
    (largest cosine + a per-network bias; :data:`_NETWORK_ANCHORS`, jittered per subject by ``rng``),
    and patches under :data:`_MIN_PATCH` voxels join their surroundings, so each network is a union
    of a few contiguous patches that roughly mirror each other across the hemispheres.
    """
    c = np.meshgrid(*[np.linspace(-1, 1, d) for d in shape], indexing="ij")
    shell_idx = np.flatnonzero(anat["shell"])
    u = np.stack([c[0].ravel()[shell_idx] / 0.92, c[1].ravel()[shell_idx] / 0.94,
                  c[2].ravel()[shell_idx] / 0.88], 1)
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    left = anat["hemi_left"].ravel()[shell_idx]
    labels = np.zeros(len(shell_idx), np.int16)
    for side, sign in ((left, -1.0), (~left, 1.0)):
        anchors, net, bias = [], [], []
        for k, name in NETWORK_LABELS.items():
            for a in _NETWORK_ANCHORS[name]:
                anchors.append((sign * a[0], a[1], a[2]))
                net.append(k)
                bias.append(_NETWORK_BIAS[name])
        a = np.asarray(anchors) + rng.normal(0, _NETWORK_JITTER, (len(anchors), 3))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        score = u[side] @ a.T + np.asarray(bias)[None, :]
        labels[side] = np.asarray(net, np.int16)[np.argmax(score, axis=1)]
    in_shell = np.searchsorted(shell_idx, anat["general_idx"])
    labels[in_shell[np.isin(anat["streams"], _VISUAL_STREAMS)]] = 1
    vol = np.zeros(int(np.prod(shape)), np.int16)
    vol[shell_idx] = labels
    vol = _absorb_islands(vol.reshape(shape))
    missing = [name for k, name in NETWORK_LABELS.items() if not (vol == k).any()]
    if missing:
        raise ValueError(f"The grid {tuple(shape)} is too small: network(s) {missing} got no voxel. Use a "
                         "larger grid (e.g. the default (28, 34, 28)).")
    return vol


def _absorb_islands(vol: np.ndarray) -> np.ndarray:
    """Give patches of fewer than :data:`_MIN_PATCH` voxels (not Visual) their neighbours' network."""
    from scipy.ndimage import binary_dilation, label

    full = np.ones((3, 3, 3), bool)
    out = vol.copy()
    for k in range(2, len(NETWORK_LABELS) + 1):
        comp, n = label(vol == k, structure=full)
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        for c in np.flatnonzero(sizes[1:] < _MIN_PATCH) + 1:
            island = comp == c
            around = out[binary_dilation(island, structure=full) & ~island]
            around = around[(around > 0) & (around != k)]
            if len(around):
                out[island] = np.bincount(around).argmax()
    return out


def _signal_mask(anat: dict, signal_rois: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Booleans over brain voxels (ascending flat index): which carry stimulus signal, and which of
    those carry the networks' semantic tuning.

    Voxels planted through a network name other than ``Visual`` (and not also through an
    nsdgeneral / stream / pRF name) are network-tuned even inside nsdgeneral, so a planted network
    carries the same kind of information everywhere; the others keep their stream / pRF tuning.
    """
    general = np.zeros(len(anat["general_idx"]), bool)
    names = {v: k for k, v in PRF_LABELS.items()}
    snames = {v: k for k, v in STREAM_LABELS.items()}
    nets = {v: k for k, v in NETWORK_LABELS.items()}
    brain_idx = np.flatnonzero(anat["brain"])
    mask = np.zeros(len(brain_idx), bool)
    network_tuned = np.zeros(len(brain_idx), bool)
    for r in signal_rois:
        if r == "nsdgeneral":
            general[:] = True
        elif r in snames:
            general |= anat["streams"] == snames[r]
        elif r in names:
            general |= anat["prf"] == names[r]
        elif r in nets:
            in_net = anat["networks"].ravel()[brain_idx] == nets[r]
            mask |= in_net
            if r != "Visual":
                network_tuned |= in_net
        else:
            for sub in _AREA_ALIASES[r]:
                general |= anat["prf"] == names[sub]
    by_name = np.searchsorted(brain_idx, anat["general_idx"][general])
    mask[by_name] = True
    network_tuned[by_name] = False
    return mask, network_tuned


# ----------------------------------------------------------------------------
# responses
# ----------------------------------------------------------------------------
def _prf_weights(anat: dict, rf: np.ndarray) -> np.ndarray:
    """Gaussian population receptive fields of the voxels ``rf`` on the low-res feature grid.

    Returns float32 weights (n_rf, _LOWRES ** 2), each row summing to 1: the voxel's pRF centre
    (``rf_u``, ``rf_v`` in [-1, 1]) and size (``rf_sigma``) from the anatomy.
    """
    centres = (np.arange(_LOWRES) + 0.5) / _LOWRES * 2 - 1
    py, px = np.meshgrid(centres, centres, indexing="ij")
    du = px.ravel()[None, :] - anat["rf_u"][rf, None]
    dv = py.ravel()[None, :] - anat["rf_v"][rf, None]
    w = np.exp(-(du ** 2 + dv ** 2) / (2 * anat["rf_sigma"][rf, None] ** 2))
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _voxel_signals(anat: dict, low: np.ndarray, sem: np.ndarray, groups: dict[str, slice],
                   rng: np.random.Generator) -> np.ndarray:
    """Unit-variance stimulus signal of every nsdgeneral voxel, shape (n_images, n_general)."""
    n_img = low.shape[0]
    n = len(anat["general_idx"])
    area, streams = anat["area"], anat["streams"]
    out = np.zeros((n_img, n), np.float32)
    # population receptive fields on the low-res feature maps
    rf = area != ""
    if rf.any():
        w = _prf_weights(anat, rf)
        n_rf = int(rf.sum())
        is_v4 = area[rf] == "hV4"
        # channel weights: luminance, contrast, red-green, blue-yellow
        ch = np.stack([rng.normal(0, 0.6, n_rf), rng.normal(1.0, 0.2, n_rf),
                       rng.normal(0, np.where(is_v4, 1.0, 0.5)), rng.normal(0, np.where(is_v4, 1.0, 0.5))], 1)
        resp = np.zeros((n_img, n_rf), np.float32)
        for c in range(4):
            resp += (low[:, c, :] @ w.T) * ch[None, :, c].astype(np.float32)
        out[:, rf] = _standardise(resp)
    # semantic tuning of the mid/high streams (and hV4, which mixes both)
    for key, tuning in STREAM_TUNING.items():
        if key == "hV4":
            m = area == "hV4"
        else:
            m = (streams == {v: k for k, v in STREAM_LABELS.items()}[key]) & ~rf
        if not m.any():
            continue
        weights = np.zeros((sem.shape[1], int(m.sum())), np.float32)
        for g, gain in tuning.items():
            sl = groups[g]
            block = rng.normal(0, 1, (sl.stop - sl.start, int(m.sum()))) * (rng.random((sl.stop - sl.start,
                                                                                   int(m.sum()))) < 0.6)
            weights[sl] = gain * block
        sig = _standardise(sem @ weights)
        out[:, m] = np.sqrt(0.5) * (out[:, m] + sig) if key == "hV4" else sig
    return out


def _network_weights(sem: np.ndarray, groups: dict[str, slice], n: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Semantic tuning of ``n`` planted voxels outside nsdgeneral: the signal is ``sem_c @ w``.

    Returns ``sem_c`` (n_images, n_features), the features centred over the images, and ``w``
    (n_features, n) sparse random weights (:data:`NETWORK_TUNING`) scaled so that every voxel's
    signal has unit variance across the images. Signals are computed per block of trials from
    these, so memory stays O(n_features x n).
    """
    sem_c = (sem - sem.mean(0, keepdims=True)).astype(np.float32)
    w = np.zeros((sem.shape[1], n), np.float32)
    for g, gain in NETWORK_TUNING.items():
        sl = groups[g]
        k = sl.stop - sl.start
        w[sl] = gain * rng.normal(0, 1, (k, n)) * (rng.random((k, n)) < 0.6)
    cov = sem_c.T.astype(np.float64) @ sem_c / max(len(sem_c), 1)
    sd = np.sqrt(np.maximum(np.einsum("ij,ij->j", w, cov @ w), 0.0))
    w /= np.maximum(sd, 1e-8).astype(np.float32)[None, :]
    return sem_c, w


class _TuningCurves:
    """Gaussian tuning curves of ``n`` voxels in the continuous tuning space (response="nonlinear").

    Voxel ``v`` responds ``exp(-D_v(s) / (2 sigma_v**2))`` to a stimulus with tuning coordinates
    ``s`` (:func:`~neurodecode.datasets._procedural.tuning_coordinates`), with the gain-weighted
    squared distance ``D_v(s) = sum_g a_g * mean_{dims of g} (s - c_v)**2`` over the feature groups
    ``g`` of ``gains`` (``a_g = gain_g**2 / sum gain**2``) around the voxel's preferred point ``c_v``
    (the coordinates of a random stimulus, jittered). The responses are then standardised over the
    images (``mean``/``std``, computed in blocks so memory stays O(n_images x block)).
    """

    def __init__(self, coords: np.ndarray, groups: dict[str, slice], gains: dict[str, float], n: int,
                 rng: np.random.Generator) -> None:
        dim_w = np.zeros(coords.shape[1])
        total = sum(g * g for g in gains.values())
        for g, gain in gains.items():
            sl = groups[g]
            dim_w[sl] = gain * gain / total / (sl.stop - sl.start)
        keep = np.flatnonzero(dim_w > 0)
        self.dim_w = dim_w[keep].astype(np.float32)
        self.coords = coords[:, keep].astype(np.float32)
        pick = rng.integers(0, len(coords), n)
        self.centres = (self.coords[pick] + rng.normal(0, _TUNING_JITTER, (n, len(keep)))).astype(np.float32)
        self.sigma = (_TUNING_SIGMA * rng.lognormal(0, 0.25, n)).astype(np.float32)
        self.mean = np.zeros(n, np.float32)
        self.std = np.ones(n, np.float32)
        acc, acc2 = np.zeros(n), np.zeros(n)
        for i0 in range(0, len(coords), 256):
            r = self._raw(np.arange(i0, min(i0 + 256, len(coords)))).astype(np.float64)
            acc += r.sum(0)
            acc2 += (r * r).sum(0)
        m = acc / max(len(coords), 1)
        self.mean = m.astype(np.float32)
        self.std = np.sqrt(np.maximum(acc2 / max(len(coords), 1) - m * m, 1e-16)).astype(np.float32)

    def _raw(self, images: np.ndarray) -> np.ndarray:
        x = self.coords[images] * np.sqrt(self.dim_w)[None, :]
        c = self.centres * np.sqrt(self.dim_w)[None, :]
        d2 = (x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)
        return np.exp(-np.maximum(d2, 0.0) / (2.0 * self.sigma[None, :] ** 2))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Standardised responses (len(images), n) to the stimuli ``images`` (indices into ``coords``)."""
        return ((self._raw(np.asarray(images)) - self.mean) / np.maximum(self.std, 1e-8)).astype(np.float32)


def _colour_tuning(low: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """pRF-weighted Gaussian hue tuning of local surface colour: (n_img, n_vox), before the exponent.

    ``low`` (n_img, 4, n_blocks) holds the block luminance, contrast, red-green and blue-yellow
    (:func:`~neurodecode.datasets._procedural.lowlevel_features`); the colour of block ``x`` is
    ``c(x) = (lum, rg, by)`` (each standardised over all blocks and images) and voxel ``v`` responds
    ``sum_x w_v(x) exp(-||c(x) - h_v||^2 / (2 sigma_v^2))`` around its preferred colour ``h_v`` (the colour
    of a random block of a random image, jittered).
    """
    col = low[:, [0, 2, 3], :].astype(np.float32)  # (n_img, 3, n_blocks)
    mu = col.mean(axis=(0, 2), keepdims=True)
    sd = np.maximum(col.std(axis=(0, 2), keepdims=True), 1e-6)
    col = np.transpose((col - mu) / sd, (0, 2, 1))  # (n_img, n_blocks, 3)
    n_img, n_blocks, _ = col.shape
    n = w.shape[0]
    pref = col[rng.integers(0, n_img, n), rng.integers(0, n_blocks, n)]
    pref = pref + rng.normal(0, _TUNING_JITTER, (n, 3))
    sigma = (_COLOUR_SIGMA * rng.lognormal(0, 0.25, n)).astype(np.float32)
    pref = pref.astype(np.float32)
    out = np.empty((n_img, n), np.float32)
    step = max(1, int(4e6 // max(n_blocks * n, 1)))  # images per block: ~16 MB of tuned responses
    for i0 in range(0, n_img, step):
        c = col[i0:i0 + step]  # (k, n_blocks, 3)
        d2 = (c * c).sum(-1)[..., None] + (pref * pref).sum(-1)[None, None, :] - 2.0 * (c @ pref.T)
        tuned = np.exp(-np.maximum(d2, 0.0) / (2.0 * sigma ** 2))  # (k, n_blocks, n)
        out[i0:i0 + step] = np.einsum("kbv,vb->kv", tuned, w)
    return out


def _voxel_signals_nonlinear(anat: dict, energy: np.ndarray, low: np.ndarray, coords: np.ndarray,
                             cgroups: dict[str, slice], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance nonlinear stimulus signal of every nsdgeneral voxel (response="nonlinear").

    Early areas (V1-V3, hV4): compressive spatial summation (CSS) of local contrast energy,
    ``r = (sum_x w(x) sum_c alpha_c (E_c(x) + gamma_c d_c(x))) ** n`` (``energy`` from
    :func:`~neurodecode.datasets._procedural.contrast_energy`). hV4 adds, with equal weight, the
    pRF-weighted hue tuning of the local surface colour (:func:`_colour_tuning`) raised to the same
    exponent. Mid/high streams: Gaussian tuning curves (:class:`_TuningCurves`) with the stream's
    feature-group gains (:data:`STREAM_TUNING`; its ``hV4`` entry is the linear model's).
    """
    n_img = energy.shape[0]
    n = len(anat["general_idx"])
    area, streams = anat["area"], anat["streams"]
    out = np.zeros((n_img, n), np.float32)
    rf = area != ""
    if rf.any():
        w = _prf_weights(anat, rf)
        n_rf = int(rf.sum())
        is_v4 = area[rf] == "hV4"
        # channel gains (luminance, red-green, blue-yellow energy; colour stronger in hV4), polarity weights
        alpha = np.stack([rng.lognormal(0, 0.25, n_rf),
                          np.where(is_v4, 1.0, 0.5) * rng.lognormal(0, 0.4, n_rf),
                          np.where(is_v4, 1.0, 0.5) * rng.lognormal(0, 0.4, n_rf)], 1)
        gamma = rng.uniform(-_POLARITY_MAX, _POLARITY_MAX, (n_rf, 3))
        drive = np.zeros((n_img, n_rf), np.float64)
        for c in range(3):
            drive += (energy[:, c, :] @ w.T) * alpha[None, :, c]
            drive += (energy[:, 3 + c, :] @ w.T) * (alpha[:, c] * gamma[:, c])[None, :]
        expo = np.array([CSS_EXPONENT[a] for a in area[rf]]) * rng.lognormal(0, 0.1, n_rf)
        out[:, rf] = _standardise(np.maximum(drive, 0.0) ** expo[None, :])
        if is_v4.any():
            tuned = _colour_tuning(low, w[is_v4], rng) ** expo[is_v4][None, :]
            cols = np.flatnonzero(rf)[is_v4]
            out[:, cols] = np.sqrt(0.5) * (out[:, cols] + _standardise(tuned))
    for key, tuning in STREAM_TUNING.items():
        if key == "hV4":  # retinotopic colour tuning above
            continue
        m = (streams == {v: k for k, v in STREAM_LABELS.items()}[key]) & ~rf
        if m.any():
            out[:, m] = _TuningCurves(coords, cgroups, tuning, int(m.sum()), rng)(np.arange(n_img))
    return out


def _standardise(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(0, keepdims=True)
    return (a / np.maximum(a.std(0, keepdims=True), 1e-8)).astype(np.float32)


def _smooth_noise_scale(sigma: float) -> float:
    """Std of white noise after the 3-D Gaussian filter (to renormalise it to 1)."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros((15, 15, 15))
    impulse[7, 7, 7] = 1.0
    return float(np.sqrt((gaussian_filter(impulse, sigma) ** 2).sum()))


def _simulate_subject(subject: int, root: Path, p: dict, design: dict, low: np.ndarray, sem: np.ndarray,
                      groups: dict[str, slice], rng: np.random.Generator,
                      net_rng: np.random.Generator, nonlinear: dict[str, Any] | None = None,
                      nl_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Write ROIs, network atlas, brainmask, ncsnr and betas of one subject; return its ground truth.

    ``rng`` draws everything of the original model; ``net_rng`` only the network atlas and the tuning
    of planted voxels outside nsdgeneral, so simulations without network ``signal_rois`` keep the
    same arrays. With ``response="nonlinear"``, ``nonlinear`` holds the contrast energy maps and tuning
    coordinates of every image and ``nl_rng`` draws the nonlinear model; ``rng`` makes exactly the same
    draws as in the linear mode, so both modes share the anatomy, the noise and the nuisance terms.
    """
    from ..io.nsd import NSDLayout, write_betas, write_volume

    layout = NSDLayout(root)
    shape = tuple(p["grid"][subject - 1])
    aff = _affine(shape)
    anat = _nsd_anatomy(shape, rng)
    anat["networks"] = _network_atlas(shape, anat, net_rng)
    brain_idx = np.flatnonzero(anat["brain"])
    n_brain = len(brain_idx)
    gen_in_brain = np.searchsorted(brain_idx, anat["general_idx"])
    atlas_vol, atlas_tsv = _write_anatomy(layout, root, subject, anat, aff)

    # which images this subject sees, their signals
    n_trials, tps = design["n_trials"], p["trials_per_session"]
    ids73 = design["subjectim"][subject - 1, design["masterordering"][:n_trials] - 1] - 1
    uniq, trial_img = np.unique(ids73, return_inverse=True)
    signal_mask, network_tuned = _signal_mask(anat, p["signal_rois"])  # over brain voxels
    signals = _voxel_signals(anat, low[uniq], sem[uniq], groups, rng)
    if nonlinear is not None:  # the linear draws above keep rng in step; the signal itself is replaced
        signals = _voxel_signals_nonlinear(anat, nonlinear["energy"][uniq], low[uniq],
                                           nonlinear["coords"][uniq], nonlinear["groups"], nl_rng)
    planted_general = signal_mask[gen_in_brain] & ~network_tuned[gen_in_brain]

    # per-voxel noise level, SNR, amplitude, baseline (PSC units)
    noise_sd, snr_v, baseline, loading = _voxel_levels(anat["shell"].ravel()[brain_idx], signal_mask,
                                                       p["snr"], rng)
    # planted nsdgeneral voxels keep their stream / pRF signal, except those planted only through a
    # non-Visual network; those and planted voxels elsewhere get the networks' semantic tuning, computed
    # per block of trials
    is_general = np.zeros(n_brain, bool)
    is_general[gen_in_brain] = True
    extra_cols = np.flatnonzero(signal_mask & (~is_general | network_tuned))
    model = _BetaModel(shape=shape, brain_idx=brain_idx, noise_sd=noise_sd,
                       amp=(snr_v * noise_sd).astype(np.float32), baseline=baseline, loading=loading,
                       gen_cols=gen_in_brain[planted_general], sig_rows=signals[:, planted_general],
                       extra_cols=extra_cols, noise_norm=_smooth_noise_scale(_NOISE_SIGMA_VOX),
                       extra_signal=_network_signal(len(extra_cols), uniq, sem, groups, nonlinear,
                                                    net_rng, nl_rng))
    del signals

    ncsnr = np.zeros(int(np.prod(shape)), np.float32)
    ncsnr[brain_idx] = snr_v
    write_volume(layout.ncsnr(subject), ncsnr.reshape(shape), aff)

    desc = f"subj{subject:02d} sessions"
    for s in ProgressBar(range(p["n_sessions"]), total=p["n_sessions"], desc=desc, unit="session"):
        betas = _session_betas(model, trial_img[s * tps:(s + 1) * tps], tps, rng)
        for fmt in p["formats"]:
            write_betas(layout.betas_file(subject, s + 1, fmt), betas, aff)
    return _subject_truth(anat, shape=shape, aff=aff, brain_idx=brain_idx, signal_mask=signal_mask,
                          planted_general=planted_general, is_general=is_general,
                          n_network_tuned=len(extra_cols), snr_v=snr_v, n_images=len(uniq),
                          atlas=(atlas_vol.relative_to(root), atlas_tsv.relative_to(root)))


def _write_anatomy(layout: Any, root: Path, subject: int, anat: dict, aff: np.ndarray) -> tuple[Path, Path]:
    """Write the ROI volumes (also lh./rh. halves), label tables, brain mask and network atlas.

    Returns the network atlas' volume and label table paths.
    """
    from ..io.nsd import write_ctab, write_volume

    for name, (vol, labels) in anat["rois"].items():
        write_volume(layout.roi_file(subject, name), vol, aff)
        for hemi, side in (("lh", anat["hemi_left"]), ("rh", ~anat["hemi_left"])):
            write_volume(layout.roi_file(subject, name, hemi), np.where(side, vol, -1).astype(np.int16), aff)
        write_ctab(layout.ctab_file(subject, name), labels)
    write_volume(layout.brainmask(subject), anat["brain"].astype(np.uint8), aff)
    # whole-cortex network atlas: an ordinary labelled volume + label table, outside NSD's own folders
    atlas_vol, atlas_tsv = _network_atlas_paths(root, subject)
    write_volume(atlas_vol, anat["networks"], aff)
    atomic_write_text(atlas_tsv, "index\tname\n" + "".join(f"{k}\t{v}\n" for k, v in
                                                          NETWORK_LABELS.items()))
    return atlas_vol, atlas_tsv


def _voxel_levels(shell: np.ndarray, signal_mask: np.ndarray, snr: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per brain voxel: noise SD (x1.5 in the cortical ``shell``), SNR (0 unless in ``signal_mask``;
    median ``snr`` among planted voxels), baseline (PSC) and global-fluctuation loading, drawn in this order.
    """
    n_brain = len(shell)
    noise_sd = np.where(shell, 1.5, 1.0) * rng.lognormal(0, 0.25, n_brain)
    sig_cols = np.flatnonzero(signal_mask)
    snr_v = np.zeros(n_brain)
    snr_v[sig_cols] = snr * rng.lognormal(0, 0.35, len(sig_cols))
    baseline = rng.normal(0.5, 0.6, n_brain)
    loading = rng.uniform(0.5, 1.5, n_brain)
    return noise_sd, snr_v, baseline, loading


def _network_signal(n_extra: int, uniq: np.ndarray, sem: np.ndarray, groups: dict[str, slice],
                    nonlinear: dict[str, Any] | None, net_rng: np.random.Generator,
                    nl_rng: np.random.Generator | None) -> Any:
    """The unit signal of the ``n_extra`` network-tuned voxels, as a function of image rows (None if 0).

    Nonlinear: Gaussian tuning curves (:data:`NETWORK_TUNING`, drawn from ``nl_rng``); linear: the
    semantic features times the networks' weights (drawn from ``net_rng``).
    """
    if n_extra and nonlinear is not None:
        return _TuningCurves(nonlinear["coords"][uniq], nonlinear["groups"], NETWORK_TUNING, n_extra, nl_rng)
    if n_extra:
        sem_c, w_extra = _network_weights(sem[uniq], groups, n_extra, net_rng)
        return lambda images: sem_c[images] @ w_extra
    return None


class _BetaModel:
    """The per-voxel terms of one subject's single-trial betas (see :func:`_session_betas`)."""

    def __init__(self, *, shape: tuple[int, ...], brain_idx: np.ndarray, noise_sd: np.ndarray,
                 amp: np.ndarray, baseline: np.ndarray, loading: np.ndarray, gen_cols: np.ndarray, sig_rows: np.ndarray,
                 extra_cols: np.ndarray, noise_norm: float, extra_signal: Any) -> None:
        self.shape, self.brain_idx, self.noise_sd, self.amp = shape, brain_idx, noise_sd, amp
        self.baseline, self.loading, self.noise_norm = baseline, loading, noise_norm
        self.gen_cols, self.sig_rows = gen_cols, sig_rows  # planted nsdgeneral voxels, signal per image
        self.extra_cols, self.extra_signal = extra_cols, extra_signal  # network-tuned voxels


def _session_betas(m: _BetaModel, imgs: np.ndarray, tps: int, rng: np.random.Generator) -> np.ndarray:
    """int16 betas (*shape, tps) of one session (PSC x 300) for the image rows ``imgs`` of its trials.

    Smoothed noise + planted signal, times a session gain drift, plus baseline, a session offset and a
    per-trial global fluctuation; the noise is drawn in fixed blocks of trials (bounds the memory).
    """
    from scipy.ndimage import gaussian_filter

    n_brain = len(m.brain_idx)
    offset = rng.normal(0, 0.8, n_brain) * m.noise_sd  # session offset (removed by session z-scoring)
    scale = rng.lognormal(0, 0.2, n_brain)  # session gain drift
    fluct = rng.normal(0, 0.5, tps)  # per-trial global fluctuation
    betas = np.zeros((int(np.prod(m.shape)), tps), np.int16)
    for t0 in range(0, tps, _NOISE_BLOCK):  # fixed-size blocks bound the memory on large grids
        t1 = min(t0 + _NOISE_BLOCK, tps)
        white = rng.standard_normal((t1 - t0, *m.shape), dtype=np.float32)
        noise = gaussian_filter(white, sigma=(0, *(3 * [_NOISE_SIGMA_VOX])), mode="nearest")
        del white
        vals = noise.reshape(t1 - t0, -1)[:, m.brain_idx] * (m.noise_sd / m.noise_norm).astype(np.float32)
        del noise
        vals[:, m.gen_cols] += m.sig_rows[imgs[t0:t1]] * m.amp[m.gen_cols]
        if m.extra_signal is not None:
            vals[:, m.extra_cols] += m.extra_signal(imgs[t0:t1]) * m.amp[m.extra_cols]
        vals *= scale.astype(np.float32)
        vals += (m.baseline + offset).astype(np.float32)
        vals += np.outer(fluct[t0:t1], m.loading).astype(np.float32)
        betas[m.brain_idx, t0:t1] = np.clip(np.rint(vals.T * 300.0), -32768, 32767).astype(np.int16)
    return betas.reshape(*m.shape, tps)


def _subject_truth(anat: dict, *, shape: tuple[int, ...], aff: np.ndarray, brain_idx: np.ndarray,
                   signal_mask: np.ndarray, planted_general: np.ndarray, is_general: np.ndarray,
                   n_network_tuned: int, snr_v: np.ndarray, n_images: int,
                   atlas: tuple[Path, Path]) -> dict[str, Any]:
    """The ground truth of one subject for ``simulation.json`` (``atlas``: paths relative to the root)."""
    counts = {name: {lab: int((vol == k).sum()) for k, lab in labels.items()}
              for name, (vol, labels) in anat["rois"].items()}
    net_in_brain = anat["networks"].ravel()[brain_idx]
    planted = {lab: int((planted_general & (anat["streams"] == k)).sum()) for k, lab in STREAM_LABELS.items()}
    planted.update({lab: int((planted_general & (anat["prf"] == k)).sum()) for k, lab in PRF_LABELS.items()})
    planted.update({lab: int((signal_mask & (net_in_brain == k)).sum()) for k, lab in NETWORK_LABELS.items()})
    sig_cols = np.flatnonzero(signal_mask)
    return {
        "grid": list(shape), "affine": aff.tolist(), "n_brain_voxels": len(brain_idx),
        "n_nsdgeneral_voxels": len(anat["general_idx"]), "n_signal_voxels": int(signal_mask.sum()),
        "n_signal_voxels_outside_nsdgeneral": int((signal_mask & ~is_general).sum()),
        "n_network_tuned_voxels": n_network_tuned,
        "signal_voxels_per_roi": planted, "roi_voxel_counts": counts,
        "median_ncsnr_signal_voxels": float(np.median(snr_v[sig_cols])) if len(sig_cols) else 0.0,
        "n_images_seen": n_images,
        "network_atlas": {
            "volume": atlas[0].as_posix(),
            "labels": atlas[1].as_posix(),
            "voxel_counts": {lab: int((anat["networks"] == k).sum()) for k, lab in NETWORK_LABELS.items()},
            "n_cortex_voxels": int(anat["shell"].sum()),
        },
    }


def _network_atlas_paths(root: Path, subject: int) -> tuple[Path, Path]:
    """``<root>/simulation/atlases/subjXX_networks7.{nii.gz,tsv}`` (not part of the real NSD layout)."""
    base = Path(root) / "simulation" / "atlases" / f"subj{subject:02d}_networks7"
    return base.with_name(base.name + ".nii.gz"), base.with_name(base.name + ".tsv")


def _write_nsd(root: Path, p: dict[str, Any]) -> dict[str, Any]:
    """Write a complete simulated NSD into ``root``; return the ground truth for the JSON."""
    from ..io.nsd import NSDLayout, write_coco_captions, write_expdesign, write_stim_info, write_stimuli_hdf5

    seed = p["seed"]

    def rng_for(*key: int) -> np.random.Generator:
        return np.random.default_rng([seed, *key])

    layout = NSDLayout(root)
    design = _nsd_design(p, rng_for(1))
    n_brick = design["n_brick"]
    logger.info("Design: %d images per subject (%d shared, %d own), %d trials in %d session(s), %d images "
                "in the brick", design["n_images_per_subject"], design["n_shared"], design["n_specific"],
                design["n_trials"], p["n_sessions"], n_brick)
    write_expdesign(layout.expdesign, design["masterordering"], design["subjectim"], design["sharedix"])

    latents = proc.sample_latents(n_brick, rng_for(2))
    images = proc.render_images(latents, p["image_size"])
    write_stimuli_hdf5(layout.stimuli_hdf5, images)
    low = proc.lowlevel_features(images, _LOWRES)
    nonlinear = None
    if p.get("response", "linear") == "nonlinear":
        coords, cgroups = proc.tuning_coordinates(latents)
        nonlinear = {"energy": proc.contrast_energy(images, _LOWRES), "coords": coords, "groups": cgroups}
    del images
    sem, groups = proc.semantic_features(latents)
    captions = proc.make_captions(latents, rng_for(3))

    table = _stim_info_table(design, p, rng_for(4))
    write_stim_info(layout.stim_info, table)
    for split in ("train2017", "val2017"):
        rows = np.flatnonzero(table["cocoSplit"].to_numpy() == split)
        write_coco_captions(layout.coco_captions(split),
                            {int(table["cocoId"].iat[i]): captions[i] for i in rows})
    lat = pd.DataFrame(latents.table())
    lat.insert(0, "nsdId", np.arange(n_brick))
    lat.insert(1, "cocoId", table["cocoId"].to_numpy())
    lat["caption"] = [c[0] for c in captions]
    (root / "simulation_stimuli.csv").write_text(lat.to_csv(index=False), encoding="utf-8")

    subjects = {}
    for subject in range(1, p["n_subjects"] + 1):
        resp = _responses_table(subject, design, p, rng_for(5, subject))
        path = layout.responses(subject)
        path.parent.mkdir(parents=True, exist_ok=True)
        resp.to_csv(path, sep="\t", index=False, na_rep="NaN")
        subjects[str(subject)] = _simulate_subject(subject, root, p, design, low, sem, groups,
                                                   rng_for(6, subject), rng_for(8, subject), nonlinear,
                                                   rng_for(9, subject))
    return _nsd_truth(p, design, subjects, nonlinear=nonlinear is not None)


def _nsd_truth(p: dict[str, Any], design: dict[str, Any], subjects: dict[str, Any], *,
               nonlinear: bool) -> dict[str, Any]:
    """The ground truth of a simulated NSD (``simulation.json``): design, generative model, subjects."""
    n_brick = design["n_brick"]
    shown_shared = design["sharedix"][: design["n_shared"]]
    model_extra = {}
    if nonlinear:
        model_extra["nonlinear"] = {
            "response": "nonlinear", "css_exponent": CSS_EXPONENT, "polarity_max": _POLARITY_MAX,
            "tuning_sigma": _TUNING_SIGMA, "tuning_jitter": _TUNING_JITTER, "colour_sigma": _COLOUR_SIGMA,
            "tuning_groups": proc.TUNING_GROUPS,
            "notes": ("early areas: (sum_x w(x) sum_c alpha_c (E_c(x) + gamma_c d_c(x))) ** n on local "
                      "contrast energy; hV4 adds (sum_x w(x) exp(-|c(x) - h|^2 / 2 sigma_c^2)) ** n, the "
                      "hue tuning of the local colour; higher streams and planted networks: Gaussian "
                      "tuning curves exp(-D / 2 sigma^2) in the tuning coordinates; see docs/simulator.md"),
        }
    return {
        "design": {
            "n_images_per_subject": design["n_images_per_subject"], "n_shared_shown": design["n_shared"],
            "n_specific_per_subject": design["n_specific"], "n_brick": n_brick,
            "n_trials_per_subject": design["n_trials"],
            "shared_shown_73k_ids_1based": shown_shared.tolist(),
            "notes": ("10k-indices 1..n_shared_shown are the shared pool, 1001.. the subject-specific "
                      "images. sharedix holds 1000 ids: the shown shared pool first, then never-shown "
                      "padding images. "
                      "Unused 10k-indices map to never-shown images; masterordering beyond the simulated "
                      "trials uses unused 10k-indices. Global trial g = (session-1)*trials_per_session + t."),
        },
        "model": {
            "lowlevel_resolution": _LOWRES, "lowlevel_channels": ["luminance", "contrast", "red-green",
                                                                   "blue-yellow"],
            "rf_size": {k: list(v) for k, v in _RF_SIZE.items()}, "stream_tuning": STREAM_TUNING,
            "semantic_groups": proc.SEMANTIC_GROUPS, "noise_smoothing_sigma_vox": _NOISE_SIGMA_VOX,
            "beta_scale": 300.0, "signal_rois": p["signal_rois"], **model_extra,
            "networks": {
                "labels": {str(k): v for k, v in NETWORK_LABELS.items()}, "tuning": NETWORK_TUNING,
                "anchors": {k: [list(a) for a in v] for k, v in _NETWORK_ANCHORS.items()},
                "anchor_bias": _NETWORK_BIAS, "anchor_jitter": _NETWORK_JITTER,
                "visual_streams": [STREAM_LABELS[k] for k in _VISUAL_STREAMS],
                "notes": ("simulation/atlases/subjXX_networks7.nii.gz partitions the cortical shell "
                          "(0 elsewhere); a network in signal_rois plants signal in all its voxels: "
                          "Visual's nsdgeneral voxels (and voxels also planted by a stream / pRF name) keep their "
                          "stream/pRF signal, the others get 'tuning'."),
            },
        },
        "subjects": subjects,
    }

