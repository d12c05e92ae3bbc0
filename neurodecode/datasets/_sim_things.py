"""Simulated THINGS-EEG2 and THINGS-MEG datasets written in their real on-disk layouts.

Both simulators share the stimuli and the generative model (``docs/simulator.md``, section
"THINGS-EEG2 and THINGS-MEG"):

- **Stimuli.** Each *concept* is a prototype of procedural latents (category, colour, size, count,
  background, ... from :func:`neurodecode.datasets._procedural.sample_latents`); its images are
  variations of the prototype (jittered positions, size, rotation and texture; same category,
  colour, count and background), so the images of a concept look alike. Concepts are named like
  ``red_star_017`` and images like ``red_star_017_01b.jpg`` (THINGS style). Training and test
  concepts are disjoint (zero-shot), as in THINGS-EEG2.
- **Responses.** The features of image ``i`` are ``f_i = [semantic latents ; PCA of low-level
  maps]``, standardised. Per subject, random matrices map ``f_i`` to two spatially smooth patterns
  over the planted channels (``signal_channels``); each pattern has a Hann time course inside
  ``signal_window`` (an early component weighted towards the low-level features and a later one
  weighted towards the semantic features). Every trial adds an evoked response common to all
  images (all channels, non-informative) and fresh spatially and temporally correlated sensor
  noise. The amplitude makes the single-trial SNR of every planted channel (signal std over images
  and window samples / noise std) equal to ``snr``.

:func:`neurodecode.datasets.simulate` calls the ``resolve_*`` functions (which validate the
parameters) and the ``write_*`` functions (which write the files into a temporary folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io.things_eeg import write_things_eeg2 as _write_eeg2_file
from ..utils import ProgressBar, logger
from ..utils.imports import import_optional
from . import _procedural as proc
from ._sim_meeg import (
    LATENCY_MAX,
    LATENCY_SD,
    NR_C50,
    eeg_positions,
    helmet_positions,
    latency_jitter,
    naka_rushton,
    sensor_noise,
    signal_channel_mask,
    spatial_mixing,
    window_profile,
)
from ._sim_meeg import check_float as _check_float
from ._sim_meeg import check_int as _check_int
from ._sim_meeg import check_response as _check_response

__all__ = ["EEG2_ATM_CHANNELS", "EEG2_OFFICIAL_CHANNELS", "meg_ctf_names", "resolve_things_eeg2",
           "resolve_things_meg", "write_things_eeg2", "write_things_meg"]

#: Bumped whenever the generated THINGS content changes, so stale caches are not reused.
THINGS_SIMULATOR_VERSION = 2

#: The 17 occipital/parietal channels of the official preprocessed THINGS-EEG2 files, in file order.
EEG2_OFFICIAL_CHANNELS: tuple[str, ...] = (
    "Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8", "P1", "P5", "PO7", "PO3", "POz", "PO4", "PO8", "P6", "P2")
#: The 63 channels of the ATM / NICE 250 Hz files: BrainProducts actiCAP 64 without the reference (FCz).
EEG2_ATM_CHANNELS: tuple[str, ...] = (
    "Fp1", "Fz", "F3", "F7", "FT9", "FC5", "FC1", "C3", "T7", "TP9", "CP5", "CP1", "Pz", "P3", "P7", "O1",
    "Oz", "O2", "P4", "P8", "TP10", "CP6", "CP2", "Cz", "C4", "T8", "FT10", "FC6", "FC2", "F4", "F8", "Fp2",
    "AF7", "AF3", "AFz", "F1", "F5", "FT7", "FC3", "C1", "C5", "TP7", "CP3", "P1", "P5", "PO7", "PO3", "POz",
    "PO4", "PO8", "P6", "P2", "CPz", "CP4", "TP8", "C6", "C2", "FC4", "FT8", "F6", "AF8", "AF4", "F2")

# time axes of the real files (FORMATS.md 2): official -0.2..0.79 s at 100 Hz; ATM -0.2..0.996 s at
# 250 Hz with the data cropped [..., 50:] (0..0.996 s) and `times` kept full
_OFFICIAL_SFREQ = 100.0
_OFFICIAL_TIMES = np.arange(-20, 80) / 100.0
_ATM_SFREQ = 250.0
_ATM_TIMES_FULL = np.arange(-50, 250) / 250.0
_ATM_CROP = 50
_EEG2_VARIANTS = ("official", "atm", "both")

_MEG_TMIN, _MEG_TMAX = -0.1, 1.3
_MEG_SUFFIX = "-1609"  # CTF system id appended by MNE to CTF channel names (e.g. MLO11-1609)
_MEG_TRIGGER = 64  # UPPT001 value of every image onset (FORMATS.md 3)
_MEG_RUNS_PER_SESSION = 10

_N_THINGS_CONCEPTS = 1854
_LOWRES = 8  # side of the low-level maps (4 x 8 x 8 = 256 values) before the PCA
_N_PCA = 16
#: Generative components: (start, stop) as fractions of the signal window, feature-group gains.
_COMPONENTS: tuple[dict[str, Any], ...] = (
    {"name": "early", "window_fraction": (0.0, 0.65), "lowlevel_gain": 1.0, "semantic_gain": 0.4},
    {"name": "late", "window_fraction": (0.35, 1.0), "lowlevel_gain": 0.4, "semantic_gain": 1.0},
)
#: Evoked response common to all images: (latency s, width s, amplitude in noise std).
_EVOKED: tuple[tuple[float, float, float], ...] = ((0.10, 0.02, 1.0), (0.17, 0.03, -1.4), (0.30, 0.06, 0.8))
_EVOKED_JITTER = 0.2  # per-trial relative amplitude jitter of the evoked response
_PATTERN_SCALE = 0.05  # metres: spatial smoothness of the planted patterns
# response="nonlinear" (docs/simulator.md, "Nonlinear responses"): latent neural sources with rectified,
# saturating (Naka-Rushton) responses to the features, mixed linearly into the sensors, and a per-trial
# latency jitter of the whole response
_N_SOURCES = 32  # latent sources per component
_CHUNK = 256  # trials simulated at once


# ============================================================================
# parameter checks
# ============================================================================
def _check_concepts(n_train: Any, n_test: Any, images_per_concept: Any, max_images: int) -> tuple[int, ...]:
    n_train = _check_int("n_train_concepts", n_train, 2, _N_THINGS_CONCEPTS - 1)
    n_test = _check_int("n_test_concepts", n_test, 1, _N_THINGS_CONCEPTS - 1)
    if n_train + n_test > _N_THINGS_CONCEPTS:
        raise ValueError(f"n_train_concepts + n_test_concepts must be <= {_N_THINGS_CONCEPTS} (the THINGS "
                         f"concepts; training and test concepts are disjoint), got {n_train} + {n_test}")
    ipc = _check_int("images_per_concept", images_per_concept, 1, max_images)
    return n_train, n_test, ipc


def _check_window(window: Any, t_lo: float, t_hi: float, min_sfreq: float, what: str) -> list[float]:
    try:
        start, stop = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"signal_window must be a (start, stop) pair of seconds, got {window!r}") from None
    if not (np.isfinite(start) and np.isfinite(stop)):
        raise ValueError(f"signal_window must be finite, got {window!r}")
    if not t_lo <= start < stop <= t_hi:
        raise ValueError(f"signal_window must satisfy {t_lo} <= start < stop <= {t_hi} s (inside the "
                         f"{what} after stimulus onset), got {window!r}")
    min_len = 5.0 / min_sfreq
    if stop - start < min_len - 1e-9:
        raise ValueError(f"signal_window must last at least {min_len:.3f} s (5 samples at {min_sfreq:g} Hz), "
                         f"got {window!r}")
    return [start, stop]


def _check_signal_channels(signal_channels: Any, default: tuple[str, ...],
                           montages: dict[str, tuple[Sequence[str], np.ndarray]]) -> list[str]:
    """Validate ``signal_channels`` against every written montage; return the entries (deduplicated).

    An entry is a channel name, a sensor region of
    :data:`neurodecode.preprocessing.channels.REGIONS` (``"occipital"``) or a
    ``"<hemisphere>_<region>"`` key (``"left_temporal"``, see ``sensor_regions(info,
    hemisphere=True)``). Regions are kept by name here and expanded to the montage's channels when
    the data are written (:func:`signal_channel_mask`); the planted channel names are recorded in
    the ground truth. Each montage must contain at least one selected channel.
    """
    if signal_channels is None:
        signal_channels = default
    if isinstance(signal_channels, str):
        signal_channels = (signal_channels,)
    try:
        chosen = list(dict.fromkeys(signal_channels))
    except TypeError:
        raise ValueError(f"signal_channels must be None, a str or a sequence of str, got "
                         f"{signal_channels!r}") from None
    if not chosen or not all(isinstance(c, str) for c in chosen):
        raise ValueError(f"signal_channels must name at least one channel or sensor region (str), got "
                         f"{signal_channels!r}")
    for what, (names, pos) in montages.items():
        try:
            signal_channel_mask(names, pos, chosen)
        except ValueError as err:
            raise ValueError(f"Invalid value for the 'signal_channels' parameter for the {what} montage: "
                             f"{err}") from None
    return chosen


# ============================================================================
# stimuli
# ============================================================================
_LATENT_FIELDS = ("category", "colour", "size", "radius", "n_objects", "pos", "rotation", "background",
                  "grating_ori", "grating_freq", "grating_contrast", "blob_phase")


def _take(lat: proc.Latents, idx: np.ndarray) -> proc.Latents:
    return proc.Latents(**{f: np.asarray(getattr(lat, f))[idx] for f in _LATENT_FIELDS})


def _concat(parts: Sequence[proc.Latents]) -> proc.Latents:
    return proc.Latents(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in _LATENT_FIELDS})


def _vary(proto: proc.Latents, concept: np.ndarray, rng: np.random.Generator) -> proc.Latents:
    """Variations of prototypes: image ``k`` varies prototype ``concept[k]``.

    Category, colour, size class, object count and background are kept; positions, radius,
    rotation, grating and blob shape are jittered.
    """
    lat = _take(proto, concept)
    n = len(concept)
    lat.radius = lat.radius * rng.uniform(0.9, 1.1, n)
    r = lat.radius[:, None, None]
    lat.pos = np.clip(lat.pos + rng.normal(0.0, 0.06, lat.pos.shape), r, 1.0 - r)  # NaN rows stay NaN
    lat.rotation = lat.rotation + rng.normal(0.0, 0.6, lat.rotation.shape)
    lat.grating_ori = (lat.grating_ori + rng.normal(0.0, 15.0, n)) % 180.0
    lat.grating_freq = np.clip(lat.grating_freq * rng.uniform(0.85, 1.15, n), 2.0, 8.0)
    lat.grating_contrast = np.clip(lat.grating_contrast + rng.normal(0.0, 0.04, n), 0.0, 0.3)
    lat.blob_phase = lat.blob_phase + rng.normal(0.0, 0.3, lat.blob_phase.shape)
    return lat


def _concept_names(proto: proc.Latents, first: int) -> list[str]:
    """``<colour>_<category>_<number>`` with numbers ``first, first + 1, ...`` (unique across splits)."""
    return [f"{proc.COLOUR_NAMES[c]}_{proc.CATEGORY_NAMES[k]}_{first + i:03d}"
            for i, (c, k) in enumerate(zip(proto.colour, proto.category))]


def _make_stimuli(n_train: int, images_per_concept: int, n_test: int, n_catch: int, image_size: int,
                  rng: np.random.Generator) -> dict[str, Any]:
    """Prototypes, image latents, rendered images and names.

    Images are ordered: training images concept-major (``images_per_concept`` per concept), then one
    image per test concept, then ``n_catch`` catch images (independent latents).
    """
    proto = proc.sample_latents(n_train + n_test, rng)
    concept_of = np.concatenate([np.repeat(np.arange(n_train), images_per_concept),
                                 np.arange(n_train, n_train + n_test)])
    parts = [_vary(proto, concept_of, rng)]
    if n_catch:
        parts.append(proc.sample_latents(n_catch, rng))
    latents = _concat(parts)
    names = _concept_names(proto, 1)
    images = proc.render_images(latents, image_size, desc="Rendering THINGS-like images")
    return {"latents": latents, "images": images, "concept_of": concept_of, "names": names,
            "train_concepts": names[:n_train], "test_concepts": names[n_train:],
            "n_train_images": n_train * images_per_concept, "n_test_images": n_test, "n_catch": n_catch}


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=90)


def _write_images(root: Path, rel_paths: Sequence[str], images: np.ndarray, desc: str) -> None:
    for rel, img in ProgressBar(zip(rel_paths, images), total=len(rel_paths), desc=desc, unit="img"):
        _save_jpeg(root / rel, img)


def _stimulus_table(stim: dict[str, Any], ids: Sequence[str], splits: Sequence[str],
                    paths: Sequence[str]) -> pd.DataFrame:
    lat = pd.DataFrame(stim["latents"].table())
    n_main = len(stim["concept_of"])
    concept = [stim["names"][c] for c in stim["concept_of"]] + [""] * (len(lat) - n_main)
    lat.insert(0, "stimulus_id", list(ids))
    lat.insert(1, "split", list(splits))
    lat.insert(2, "concept", concept)
    lat.insert(3, "path", list(paths))
    return lat


# ============================================================================
# features and the per-subject model
# ============================================================================
def _standardise(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(0, keepdims=True)
    return a / np.maximum(a.std(0, keepdims=True), 1e-8)


def _features(latents: proc.Latents, images: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Standardised ``[semantic ; PCA(low-level)]`` features of every image (float64)."""
    sem, groups = proc.semantic_features(latents)
    res = min(_LOWRES, images.shape[1], images.shape[2])
    low = proc.lowlevel_features(images, res).reshape(len(images), -1).astype(np.float64)
    low -= low.mean(0, keepdims=True)
    n_pca = max(1, min(_N_PCA, len(images) - 1, low.shape[1]))
    _, vecs = np.linalg.eigh(low.T @ low)  # principal axes (cheaper than an SVD of the images)
    comps = vecs[:, ::-1][:, :n_pca].T.copy()
    comps *= np.sign(comps[np.arange(n_pca), np.abs(comps).argmax(1)])[:, None]  # deterministic sign
    feats = np.concatenate([_standardise(sem.astype(np.float64)), _standardise(low @ comps.T)], axis=1)
    n_sem = sem.shape[1]
    info = {"n_features": int(feats.shape[1]), "semantic_dims": int(n_sem), "lowlevel_pca_dims": int(n_pca),
            "lowlevel_resolution": int(res),
            "semantic_groups": {k: [int(v.start), int(v.stop)] for k, v in groups.items()},
            "lowlevel_columns": [int(n_sem), int(feats.shape[1])]}
    return feats, info


def _evoked_waveform(times: np.ndarray) -> np.ndarray:
    t = np.asarray(times, dtype=float)
    return sum(a * np.exp(-0.5 * ((t - lat) / w) ** 2) for lat, w, a in _EVOKED)


def _component_windows(window: Sequence[float]) -> list[tuple[float, float]]:
    start, stop = float(window[0]), float(window[1])
    length = stop - start
    return [(start + c["window_fraction"][0] * length, start + c["window_fraction"][1] * length)
            for c in _COMPONENTS]


def _nonlinear_patterns(feats: np.ndarray, gain: np.ndarray, mix: np.ndarray, rng: np.random.Generator,
                        shared_rng: np.random.Generator | None, similarity: float) -> np.ndarray:
    """Planted patterns (n_img, n_planted) of one component with response="nonlinear".

    ``_N_SOURCES`` latent sources respond to the features through a Naka-Rushton nonlinearity,
    ``a_k = naka_rushton(f @ w_k)`` with ``f @ w_k`` scaled to unit std; the sensors see a linear
    mixture of them (each source has a spatially smooth topography over the planted channels, the
    forward model being linear), as in the linear mode standardised per channel over the images.
    """
    n_feat = feats.shape[1]
    w = rng.standard_normal((n_feat, _N_SOURCES))
    topo = rng.standard_normal((_N_SOURCES, mix.shape[0]))
    if shared_rng is not None and similarity > 0:
        w = np.sqrt(similarity) * shared_rng.standard_normal(w.shape) + np.sqrt(1 - similarity) * w
        topo = np.sqrt(similarity) * shared_rng.standard_normal(topo.shape) + np.sqrt(1 - similarity) * topo
    drive = _standardise(feats @ (w * gain[:, None]))
    return _standardise(naka_rushton(drive) @ (topo @ mix.T))


def _subject_model(feats: np.ndarray, finfo: dict[str, Any], positions: np.ndarray, planted: np.ndarray,
                   window: Sequence[float], snr: float, rng: np.random.Generator, *,
                   shared_rng: np.random.Generator | None = None, similarity: float = 0.0,
                   nl_rng: np.random.Generator | None = None,
                   nl_shared_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Patterns, gains and evoked topography of one subject on a montage (``positions``).

    ``shared_rng`` (the same seed for every subject) draws the part of the feature → sensor
    mapping all subjects share, weighted by ``similarity``. With ``nl_rng`` (response="nonlinear";
    ``nl_shared_rng`` for the shared part) the patterns come from :func:`_nonlinear_patterns`; the
    linear draws are made all the same, so both modes share the evoked topography.
    """
    n_img, n_feat = feats.shape
    lo, hi = finfo["lowlevel_columns"]
    n_sem, n_low = lo, hi - lo
    planted_idx = np.flatnonzero(planted)
    mix = spatial_mixing(positions[planted_idx], _PATTERN_SCALE)
    patterns = []
    for comp in _COMPONENTS:
        gain = np.empty(n_feat)
        gain[:lo] = comp["semantic_gain"] / np.sqrt(n_sem)
        gain[lo:hi] = comp["lowlevel_gain"] / np.sqrt(n_low)
        w = rng.standard_normal((n_feat, len(planted_idx)))
        if shared_rng is not None and similarity > 0:
            w = np.sqrt(similarity) * shared_rng.standard_normal(w.shape) + np.sqrt(1 - similarity) * w
        w = w * gain[:, None]
        if nl_rng is not None:
            patterns.append(_nonlinear_patterns(feats, gain, mix, nl_rng, nl_shared_rng, similarity))
        else:
            patterns.append(_standardise((feats @ w) @ mix.T))  # spatially smooth, unit std per channel
    patterns = np.stack(patterns)  # (n_comp, n_img, n_planted)
    # amplitude: std over images and window samples (fine grid) of the planted signal = snr x noise std
    fine = np.linspace(window[0], window[1], 1001)
    profs = np.stack([window_profile(fine, w) for w in _component_windows(window)])  # (n_comp, n_fine)
    m = profs @ profs.T / profs.shape[1]  # mean over the window of prof_k * prof_l
    c = np.einsum("kic,lic->klc", patterns, patterns) / n_img  # per-channel pattern covariances
    rms = np.sqrt(np.maximum(np.einsum("klc,kl->c", c, m), 1e-12))
    gains = snr / rms
    topo = spatial_mixing(positions, 0.06) @ rng.standard_normal(len(positions))
    topo = topo / max(float(np.abs(topo).max()), 1e-12)  # peak |topography| = 1
    return {"patterns": (patterns * gains[None, None, :]).astype(np.float32), "planted_idx": planted_idx,
            "gains": gains, "evoked_topo": topo.astype(np.float32)}


def _shifted_profiles(times: np.ndarray, windows: Sequence[tuple[float, float]],
                      shift: np.ndarray) -> np.ndarray:
    """Hann bumps of ``windows`` delayed by ``shift`` (s) per trial: (n_trials, n_windows, n_times)."""
    t = np.asarray(times, dtype=float)[None, :] - np.asarray(shift, dtype=float)[:, None]
    out = np.zeros((len(shift), len(windows), t.shape[1]), np.float32)
    for k, (a, b) in enumerate(windows):
        phase = (t - a) / (b - a)
        out[:, k] = np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * phase) ** 2, 0.0)
    return out


def _simulate_trials(out: np.ndarray, trial_images: np.ndarray, model: dict[str, Any], ch_idx: np.ndarray,
                     positions: np.ndarray, times: np.ndarray, sfreq: float, window: Sequence[float],
                     rng: np.random.Generator, desc: str, jitter: np.ndarray | None = None) -> None:
    """Fill ``out`` (n_trials, n_channels, n_times) with evoked + planted signal + sensor noise.

    ``ch_idx`` maps the written channels onto the model's montage; ``times`` are those of ``out``.
    ``jitter`` (response="nonlinear"): per-trial latency (s) by which the whole response (evoked
    and stimulus-specific) is delayed; the noise draws are the same as without it.
    """
    n_trials, n_t = len(trial_images), len(times)
    pos_of = {int(m): k for k, m in enumerate(model["planted_idx"])}
    cols = np.array([pos_of[int(c)] for c in ch_idx if int(c) in pos_of], dtype=int)
    rows = np.array([k for k, c in enumerate(ch_idx) if int(c) in pos_of], dtype=int)
    profs = np.zeros((len(_COMPONENTS), n_t), np.float32)
    t = np.asarray(times, dtype=float)
    for k, w in enumerate(_component_windows(window)):
        inside = (t >= w[0]) & (t <= w[1])
        if inside.any():
            profs[k] = window_profile(t, w)
    evoked = (model["evoked_topo"][ch_idx, None] * _evoked_waveform(t)[None, :]).astype(np.float32)
    patterns = model["patterns"][:, :, cols] if len(cols) else None
    windows = _component_windows(window)
    starts = range(0, n_trials, _CHUNK)
    for s in ProgressBar(starts, total=len(starts), desc=desc, unit="chunk"):
        k = min(_CHUNK, n_trials - s)
        block = sensor_noise(rng, k, positions, n_t, sfreq)
        amp = (1.0 + _EVOKED_JITTER * rng.standard_normal(k)).astype(np.float32)
        if jitter is None:
            block += amp[:, None, None] * evoked[None]
        else:
            lag = jitter[s:s + k]
            wave = np.stack([_evoked_waveform(t - d) for d in lag]).astype(np.float32)  # (k, n_t)
            block += (amp[:, None] * wave)[:, None, :] * model["evoked_topo"][ch_idx][None, :, None]
        if patterns is not None:
            imgs = trial_images[s:s + k]
            if jitter is None:
                block[:, rows] += np.einsum("kic,kt->ict", patterns[:, imgs], profs)
            else:
                prof_i = _shifted_profiles(t, windows, jitter[s:s + k])  # (k_trials, n_comp, n_t)
                block[:, rows] += np.einsum("kic,ikt->ict", patterns[:, imgs], prof_i)
        out[s:s + k] = block


# ============================================================================
# THINGS-EEG2
# ============================================================================
def resolve_things_eeg2(*, n_subjects: int = 2, seed: int = 0, n_train_concepts: int = 200,
                        images_per_concept: int = 10, n_test_concepts: int = 200, n_train_reps: int = 4,
                        n_test_reps: int = 40, variant: str = "official", image_size: int = 64,
                        snr: float = 0.5, signal_channels: str | Sequence[str] | None = None,
                        signal_window: Sequence[float] = (0.1, 0.25),
                        subject_similarity: float = 0.5, response: str = "nonlinear") -> dict[str, Any]:
    """Validate the THINGS-EEG2 simulation parameters and return them resolved (JSON-able).

    Parameters
    ----------
    n_subjects : int
        Subjects ``sub-01`` ... (1..10).
    seed : int
        Seed of every random draw.
    n_train_concepts : int
        Training concepts (real: 1654); disjoint from the test concepts.
    images_per_concept : int
        Training images per concept (1..98; real: 10).
    n_test_concepts : int
        Test concepts, one image each (real: 200). ``n_train_concepts + n_test_concepts <= 1854``.
    n_train_reps, n_test_reps : int
        Repetitions per training image (1..50; real: 4) and per test image (1..200; real: 80). The
        default of 40 test repetitions keeps the default simulation under 300 MB.
    variant : ``"official"`` | ``"atm"`` | ``"both"``
        Which preprocessed files to write: the official 17-channel 100 Hz ``np.save`` files, the
        ATM / NICE 63-channel 250 Hz pickles, or both (from the same planted model).
    image_size : int
        Image side in pixels (8..1024; real: 500).
    snr : float
        Single-trial SNR of the planted channels (signal std / noise std inside the window), [0, 100).
    signal_channels : str | sequence of str | None
        Channels that carry stimulus information: channel names or sensor regions (see
        :mod:`neurodecode.preprocessing.channels`). ``None``: ``("occipital", "parietal")``, which
        are all 17 channels of the official files.
    signal_window : (float, float)
        Window (s) of the stimulus information; inside 0..0.79 s (official) or 0..0.996 s (ATM).

    subject_similarity : float
        In [0, 1]: how much of each subject's feature → sensor mapping is shared by all subjects
        (the mapping is ``sqrt(s)·shared + sqrt(1 - s)·own``). 0 makes subjects unrelated (cross-subject
        decoding at chance), 1 identical; the default 0.5 leaves leave-one-subject-out decoding
        possible but well below within-subject decoding, as in real M/EEG.
    response : ``"nonlinear"`` (default) | ``"linear"``
        Generative model of the stimulus responses. ``"linear"``: sensor patterns linear in the
        features. ``"nonlinear"``: latent sources with rectified, saturating (Naka-Rushton) responses
        to the features, mixed linearly into the sensors, and a per-trial latency jitter of the whole
        response (N(0, 20 ms), clipped at +-40 ms). Recorded in the parameters only when not
        ``"linear"``. See ``docs/simulator.md``.

    Returns
    -------
    params : dict
    """
    n_subjects = _check_int("n_subjects", n_subjects, 1, 10)
    seed = _check_int("seed", seed, 0)
    n_train, n_test, ipc = _check_concepts(n_train_concepts, n_test_concepts, images_per_concept, 98)
    n_train_reps = _check_int("n_train_reps", n_train_reps, 1, 50)
    n_test_reps = _check_int("n_test_reps", n_test_reps, 1, 200)
    if variant not in _EEG2_VARIANTS:
        raise ValueError(f"Invalid value for the 'variant' parameter. Allowed values are "
                         f"{', '.join(repr(v) for v in _EEG2_VARIANTS)}, but got {variant!r} instead.")
    variants = ["official", "atm"] if variant == "both" else [variant]
    image_size = _check_int("image_size", image_size, 8, 1024)
    snr = _check_float("snr", snr, 0.0, 100.0, hi_open=True)
    subject_similarity = _check_float("subject_similarity", subject_similarity, 0.0, 1.0, hi_open=False)
    t_hi = min(_OFFICIAL_TIMES[-1] if v == "official" else _ATM_TIMES_FULL[-1] for v in variants)
    min_sfreq = min(_OFFICIAL_SFREQ if v == "official" else _ATM_SFREQ for v in variants)
    window = _check_window(signal_window, 0.0, float(np.round(t_hi, 6)), min_sfreq, "epoch")
    montages = {}
    if "official" in variants:
        montages["official (17-channel)"] = (EEG2_OFFICIAL_CHANNELS, eeg_positions(EEG2_OFFICIAL_CHANNELS))
    if "atm" in variants:
        montages["ATM (63-channel)"] = (EEG2_ATM_CHANNELS, eeg_positions(EEG2_ATM_CHANNELS))
    chosen = _check_signal_channels(signal_channels, ("occipital", "parietal"), montages)
    return _with_response({
        "things_simulator_version": THINGS_SIMULATOR_VERSION, "n_subjects": n_subjects, "seed": seed,
        "n_train_concepts": n_train, "images_per_concept": ipc, "n_test_concepts": n_test,
        "n_train_reps": n_train_reps, "n_test_reps": n_test_reps, "variant": variant, "variants": variants,
        "image_size": image_size, "snr": snr, "subject_similarity": subject_similarity,
        "signal_channels": chosen, "signal_window": window,
    }, response)


def _with_response(params: dict[str, Any], response: Any) -> dict[str, Any]:
    """Add ``response`` to resolved parameters when it is not "linear" (keeps linear caches valid)."""
    response = _check_response(response)
    if response != "linear":
        params["response"] = response
    return params


def _eeg2_image_paths(stim: dict[str, Any], ipc: int) -> tuple[list[str], list[str], list[str], dict]:
    """Relative paths, stems and splits of the EEG2 images (loader order), and image_metadata."""
    n_train = len(stim["train_concepts"])
    rel, ids, splits = [], [], []
    meta: dict[str, list[str]] = {k: [] for k in ("train_img_concepts", "train_img_concepts_THINGS",
                                                  "train_img_files", "test_img_concepts",
                                                  "test_img_concepts_THINGS", "test_img_files")}
    for ci, name in enumerate(stim["train_concepts"]):
        folder = f"{ci + 1:05d}_{name}"
        for j in range(ipc):
            fname = f"{name}_{j + 1:02d}b.jpg"
            rel.append(f"image_set/training_images/{folder}/{fname}")
            ids.append(fname[:-4])
            splits.append("train")
            meta["train_img_concepts"].append(folder)
            meta["train_img_concepts_THINGS"].append(f"{ci + 1:05d}_{name}")
            meta["train_img_files"].append(fname)
    for ti, name in enumerate(stim["test_concepts"]):
        folder = f"{ti + 1:05d}_{name}"
        fname = f"{name}_{ipc + 1:02d}s.jpg"
        rel.append(f"image_set/test_images/{folder}/{fname}")
        ids.append(fname[:-4])
        splits.append("test")
        meta["test_img_concepts"].append(folder)
        meta["test_img_concepts_THINGS"].append(f"{n_train + ti + 1:05d}_{name}")
        meta["test_img_files"].append(fname)
    return rel, ids, splits, meta


def write_things_eeg2(root: Path, p: dict[str, Any]) -> dict[str, Any]:
    """Write a simulated THINGS-EEG2 project folder into ``root``; return the ground truth.

    Writes ``image_set/{training,test}_images/NNNNN_<concept>/<concept>_NN{b,s}.jpg``,
    ``image_set/image_metadata.npy``, and per subject
    ``eeg_dataset/preprocessed_data/sub-XX/preprocessed_eeg_{training,test}.npy`` (official:
    17 channels, 100 Hz, -0.2..0.79 s, ``np.save`` of a dict) and/or
    ``Preprocessed_data_250Hz/sub-XX/...`` (ATM: 63 channels, 250 Hz, data 0..0.996 s with the full
    -0.2..0.996 s ``times``, ``pickle.dump``), plus ``simulation_stimuli.csv``. The data are float32
    (the real official files are float64; float32 halves the size).
    """
    seed = p["seed"]

    def rng_for(*key: int) -> np.random.Generator:
        return np.random.default_rng([seed, 21, *key])

    ipc, n_train, n_test = p["images_per_concept"], p["n_train_concepts"], p["n_test_concepts"]
    stim = _make_stimuli(n_train, ipc, n_test, 0, p["image_size"], rng_for(1))
    rel, ids, splits, meta = _eeg2_image_paths(stim, ipc)
    _write_images(root, rel, stim["images"], "Writing THINGS-EEG2 images")
    # writes THINGS-EEG2's own pickled-dict format; neurodecode never reads this file back
    np.save(root / "image_set" / "image_metadata.npy", meta, allow_pickle=True)  # safe: a write, never read
    table = _stimulus_table(stim, ids, splits, rel)
    (root / "simulation_stimuli.csv").write_text(table.to_csv(index=False), encoding="utf-8")
    feats, finfo = _features(stim["latents"], stim["images"])
    del stim["images"]

    # the model lives on the 63-channel montage; the official 17 channels are a subset of it
    names63 = list(EEG2_ATM_CHANNELS)
    pos63 = eeg_positions(names63)
    planted63 = signal_channel_mask(names63, pos63, p["signal_channels"])
    specs = {
        "official": {"ch_idx": np.array([names63.index(c) for c in EEG2_OFFICIAL_CHANNELS]),
                     "times": _OFFICIAL_TIMES, "data_times": _OFFICIAL_TIMES, "sfreq": _OFFICIAL_SFREQ,
                     "dtype": np.float32, "dir": "eeg_dataset/preprocessed_data"},
        "atm": {"ch_idx": np.arange(len(names63)), "times": _ATM_TIMES_FULL,
                "data_times": _ATM_TIMES_FULL[_ATM_CROP:], "sfreq": _ATM_SFREQ, "dtype": np.float32,
                "dir": "Preprocessed_data_250Hz"},
    }
    train_imgs = np.arange(n_train * ipc)
    test_imgs = n_train * ipc + np.arange(n_test)
    subjects: dict[str, Any] = {}
    for subject in ProgressBar(range(1, p["n_subjects"] + 1), total=p["n_subjects"], desc="Subjects",
                               unit="subject"):
        nonlinear = p.get("response", "linear") == "nonlinear"
        model = _subject_model(feats, finfo, pos63, planted63, p["signal_window"], p["snr"],
                               rng_for(2, subject), shared_rng=rng_for(2, 0),
                               similarity=p["subject_similarity"],
                               nl_rng=rng_for(4, subject) if nonlinear else None, nl_shared_rng=rng_for(4, 0))
        sub = f"sub-{subject:02d}"
        info: dict[str, Any] = {"planted_channels": {}, "files": []}
        for vi, v in enumerate(("official", "atm")):
            if v not in p["variants"]:
                continue
            sp = specs[v]
            names = [names63[i] for i in sp["ch_idx"]]
            pos = pos63[sp["ch_idx"]]
            info["planted_channels"][v] = [n for n, i in zip(names, sp["ch_idx"]) if planted63[i]]
            for si, (fname, imgs, n_rep) in enumerate((
                    ("preprocessed_eeg_training.npy", train_imgs, p["n_train_reps"]),
                    ("preprocessed_eeg_test.npy", test_imgs, p["n_test_reps"]))):
                data = np.empty((len(imgs), n_rep, len(names), len(sp["data_times"])), dtype=sp["dtype"])
                lags = latency_jitter(rng_for(5, subject, vi, si), len(imgs) * n_rep) if nonlinear else None
                _simulate_trials(data.reshape(-1, len(names), len(sp["data_times"])), np.repeat(imgs, n_rep),
                                 model, sp["ch_idx"], pos, sp["data_times"], sp["sfreq"], p["signal_window"],
                                 rng_for(3, subject, vi, si), f"{sub} {v} {fname[17:-4]}", jitter=lags)
                path = root / sp["dir"] / sub / fname
                _write_eeg2_file(path, data, names, sp["times"], variant=v)
                info["files"].append(path.relative_to(root).as_posix())
                del data
        info["signal_gain_median"] = float(np.median(model["gains"]))
        info["evoked_topography_peak_channel"] = names63[int(np.argmax(np.abs(model["evoked_topo"])))]
        subjects[str(subject)] = info
        logger.info("THINGS-EEG2 %s written (%s)", sub, ", ".join(p["variants"]))
    return {
        "stimuli": _stim_truth(stim, ipc),
        "model": _model_truth(p, finfo),
        "variants": {v: {"ch_names": [names63[i] for i in specs[v]["ch_idx"]], "sfreq": specs[v]["sfreq"],
                         "times_first_last": [float(specs[v]["times"][0]), float(specs[v]["times"][-1])],
                         "data_times_first_last": [float(specs[v]["data_times"][0]),
                                                   float(specs[v]["data_times"][-1])],
                         "dtype": np.dtype(specs[v]["dtype"]).name}
                     for v in p["variants"]},
        "subjects": subjects,
    }


def _stim_truth(stim: dict[str, Any], ipc: int) -> dict[str, Any]:
    return {"train_concepts": stim["train_concepts"], "test_concepts": stim["test_concepts"],
            "images_per_concept": ipc, "n_train_images": stim["n_train_images"],
            "n_test_images": stim["n_test_images"], "n_catch_images": stim["n_catch"],
            "concept_naming": "<colour>_<category>_<number>; numbers 1..n_train are training concepts, "
                              "n_train+1.. test concepts (disjoint)"}


def _model_truth(p: dict[str, Any], finfo: dict[str, Any]) -> dict[str, Any]:
    return {
        "features": finfo, "signal_channels": p["signal_channels"], "signal_window": p["signal_window"],
        "snr": p["snr"],
        "components": [{"name": c["name"], "window": list(w), "semantic_gain": c["semantic_gain"],
                        "lowlevel_gain": c["lowlevel_gain"]}
                       for c, w in zip(_COMPONENTS, _component_windows(p["signal_window"]))],
        "evoked": [{"latency": a, "width": b, "amplitude": c} for a, b, c in _EVOKED],
        "evoked_trial_jitter": _EVOKED_JITTER, "pattern_smoothness_m": _PATTERN_SCALE,
        "noise": "sensor_noise: unit variance, 4 cm spatial / 20 ms temporal Gaussian correlation",
        **({"response": "nonlinear", "nonlinear": {
            "n_sources_per_component": _N_SOURCES, "naka_rushton_c50": NR_C50,
            "latency_jitter_sd_s": LATENCY_SD, "latency_jitter_max_s": LATENCY_MAX,
            "notes": ("pattern = standardise(naka_rushton(standardise(f @ w)) @ topographies); every trial's "
                      "response (evoked and stimulus-specific) is delayed by its latency jitter"),
        }} if p.get("response", "linear") == "nonlinear" else {}),
    }


# ============================================================================
# THINGS-MEG
# ============================================================================
def meg_ctf_names(positions: np.ndarray) -> list[str]:
    """CTF-like channel names for helmet ``positions``: ``M`` + L/R/Z + F/C/T/P/O + row/column digits.

    The hemisphere and region come from the positions
    (:func:`neurodecode.preprocessing.channels.channel_regions`); within a group, sensors are
    numbered from the top of the helmet down (``MLO11``, ``MLO12``, ... ``MLO21``; midline
    ``MZO01``), and ``-1609`` is appended as MNE does for CTF systems.
    """
    from ..preprocessing.channels import channel_regions

    pos = np.asarray(positions, dtype=float)
    regions = channel_regions({"ch_names": [f"S{i}" for i in range(len(pos))], "ch_pos": pos})
    names = [""] * len(pos)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (region, hemi) in enumerate(regions):
        groups.setdefault((region, hemi), []).append(i)
    for (region, hemi), idx in groups.items():
        idx = sorted(idx, key=lambda i: (-pos[i, 2], float(np.arctan2(pos[i, 1], pos[i, 0]))))
        h = {"left": "L", "right": "R", "midline": "Z"}.get(hemi, "X")
        r = region[0].upper() if region != "unknown" else "U"
        for k, i in enumerate(idx):
            num = f"{k + 1:02d}" if h == "Z" else f"{k // 9 + 1}{k % 9 + 1}"
            names[i] = f"M{h}{r}{num}{_MEG_SUFFIX}"
    return names


def _meg_times(sfreq: float) -> np.ndarray:
    n = round((_MEG_TMAX - _MEG_TMIN) * sfreq) + 1
    return _MEG_TMIN + np.arange(n) / sfreq


def resolve_things_meg(*, n_subjects: int = 2, seed: int = 0, n_train_concepts: int = 200,
                       images_per_concept: int = 6, n_test_concepts: int = 50, n_test_reps: int = 12,
                       n_channels: int = 64, sfreq: float = 200.0, n_sessions: int = 2,
                       catch_fraction: float = 0.05, image_size: int = 64, snr: float = 0.5,
                       signal_channels: str | Sequence[str] | None = None,
                       signal_window: Sequence[float] = (0.1, 0.25),
                       subject_similarity: float = 0.5, response: str = "nonlinear") -> dict[str, Any]:
    """Validate the THINGS-MEG simulation parameters and return them resolved (JSON-able).

    Parameters
    ----------
    n_subjects : int
        Participants ``P1`` ... (1..4).
    seed : int
        Seed of every random draw.
    n_train_concepts : int
        Concepts of the ``exp`` trials (real: 1854, of which ATM keeps the 1654 not in the test set).
    images_per_concept : int
        Exemplars per training concept, each shown once (1..12; real: 12). The default (6) keeps
        the default simulation under 300 MB.
    n_test_concepts : int
        Test concepts, one image each, disjoint from the training concepts (real: 200 images).
        ``n_train_concepts + n_test_concepts <= 1854``.
    n_test_reps : int
        Presentations of every test image (1..100; real: 12, one per session).
    n_channels : int
        Magnetometers on the helmet (16..400; real: 271).
    sfreq : float
        Sampling rate of the epochs (50..1200 Hz; real: 200).
    n_sessions : int
        Sessions the trials are spread over (1..12; real: 12).
    catch_fraction : float
        Fraction of all trials that are catch trials, [0, 0.5) (real: about 0.09).
    image_size : int
        Image side in pixels (8..1024).
    snr : float
        Single-trial SNR of the planted channels (signal std / noise std inside the window), [0, 100).
    signal_channels : str | sequence of str | None
        Channel names (``MLO11-1609``...) or sensor regions; ``None``: ``("occipital",)``.
    signal_window : (float, float)
        Window (s) of the stimulus information, inside 0..1.3 s.

    subject_similarity : float
        In [0, 1]: how much of each subject's feature → sensor mapping is shared by all subjects
        (the mapping is ``sqrt(s)·shared + sqrt(1 - s)·own``). 0 makes subjects unrelated (cross-subject
        decoding at chance), 1 identical; the default 0.5 leaves leave-one-subject-out decoding
        possible but well below within-subject decoding, as in real M/EEG.
    response : ``"nonlinear"`` (default) | ``"linear"``
        Generative model of the stimulus responses. ``"linear"``: sensor patterns linear in the
        features. ``"nonlinear"``: latent sources with rectified, saturating (Naka-Rushton) responses
        to the features, mixed linearly into the sensors, and a per-trial latency jitter of the whole
        response (N(0, 20 ms), clipped at +-40 ms). Recorded in the parameters only when not
        ``"linear"``. See ``docs/simulator.md``.

    Returns
    -------
    params : dict
    """
    n_subjects = _check_int("n_subjects", n_subjects, 1, 4)
    seed = _check_int("seed", seed, 0)
    n_train, n_test, ipc = _check_concepts(n_train_concepts, n_test_concepts, images_per_concept, 12)
    n_test_reps = _check_int("n_test_reps", n_test_reps, 1, 100)
    n_channels = _check_int("n_channels", n_channels, 16, 400)
    sfreq = _check_float("sfreq", sfreq, 50.0, 1200.0, hi_open=False)
    n_sessions = _check_int("n_sessions", n_sessions, 1, 12)
    catch_fraction = _check_float("catch_fraction", catch_fraction, 0.0, 0.5, hi_open=True)
    image_size = _check_int("image_size", image_size, 8, 1024)
    snr = _check_float("snr", snr, 0.0, 100.0, hi_open=True)
    subject_similarity = _check_float("subject_similarity", subject_similarity, 0.0, 1.0, hi_open=False)
    window = _check_window(signal_window, 0.0, _MEG_TMAX, sfreq, "epoch (-0.1..1.3 s)")
    n_main = n_train * ipc + n_test * n_test_reps
    if n_main < n_sessions:
        raise ValueError(f"{n_main} trials cannot be spread over n_sessions={n_sessions} sessions")
    pos = helmet_positions(n_channels)
    chosen = _check_signal_channels(signal_channels, ("occipital",),
                                    {f"{n_channels}-sensor MEG": (meg_ctf_names(pos), pos)})
    return _with_response({
        "things_simulator_version": THINGS_SIMULATOR_VERSION, "n_subjects": n_subjects, "seed": seed,
        "n_train_concepts": n_train, "images_per_concept": ipc, "n_test_concepts": n_test,
        "n_test_reps": n_test_reps, "n_channels": n_channels, "sfreq": sfreq, "n_sessions": n_sessions,
        "catch_fraction": catch_fraction, "image_size": image_size, "snr": snr,
        "subject_similarity": subject_similarity, "signal_channels": chosen, "signal_window": window,
    }, response)


#: Columns of the simulated sample_attributes table (the real column order, minus key_id / key_time).
_META_COLUMNS = ("trial_type", "image_nr", "category_nr", "exemplar_nr", "test_image_nr",
                 "things_category_nr", "things_image_nr", "things_exemplar_nr", "image_path", "onset",
                 "image_on", "image_off", "responded", "RT", "session_nr", "run_nr")


def _meg_design(p: dict[str, Any], n_catch: int, n_catch_images: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trial order of one participant: (image index, session 1-based, run 1-based) per trial."""
    n_train_img = p["n_train_concepts"] * p["images_per_concept"]
    n_test, n_sess = p["n_test_concepts"], p["n_sessions"]
    test_first = n_train_img
    catch_first = n_train_img + n_test
    per_session: list[list[int]] = [[] for _ in range(n_sess)]
    for s, block in enumerate(np.array_split(rng.permutation(n_train_img), n_sess)):
        per_session[s] += block.tolist()
    for r in range(p["n_test_reps"]):  # repetition r in session r % n_sessions (real: one per session)
        per_session[r % n_sess] += (test_first + np.arange(n_test)).tolist()
    catch_imgs = catch_first + rng.integers(0, max(n_catch_images, 1), n_catch)
    for s, block in enumerate(np.array_split(catch_imgs, n_sess)):
        per_session[s] += block.tolist()
    imgs, sess, runs = [], [], []
    for s, trials in enumerate(per_session):
        order = rng.permutation(np.asarray(trials, dtype=int))
        n_runs = max(1, min(_MEG_RUNS_PER_SESSION, len(order) // 20))
        for r, block in enumerate(np.array_split(order, n_runs)):
            imgs += block.tolist()
            sess += [s + 1] * len(block)
            runs += [r + 1] * len(block)
    return np.asarray(imgs, dtype=int), np.asarray(sess, dtype=int), np.asarray(runs, dtype=int)


def _meg_metadata(p: dict[str, Any], imgs: np.ndarray, sess: np.ndarray, runs: np.ndarray,
                  rel_paths: Sequence[str], rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """``sample_attributes``-like metadata and the continuous-recording sample of every onset."""
    ipc = p["images_per_concept"]
    n_train_img = p["n_train_concepts"] * ipc
    n_test = p["n_test_concepts"]
    n = len(imgs)
    is_exp = imgs < n_train_img
    is_test = (imgs >= n_train_img) & (imgs < n_train_img + n_test)
    is_catch = ~(is_exp | is_test)
    nan = np.full(n, np.nan)
    meta = pd.DataFrame({"trial_type": np.where(is_exp, "exp", np.where(is_test, "test", "catch"))})
    img_nr = np.where(is_catch, np.nan, imgs + 1.0)
    meta["image_nr"] = img_nr
    cat = np.where(is_exp, imgs // ipc + 1.0, np.nan)
    ex = np.where(is_exp, imgs % ipc + 1.0, np.nan)
    meta["category_nr"] = cat
    meta["exemplar_nr"] = ex
    meta["test_image_nr"] = np.where(is_test, imgs - n_train_img + 1.0, np.nan)
    meta["things_category_nr"] = cat
    meta["things_image_nr"] = img_nr
    meta["things_exemplar_nr"] = ex
    meta["image_path"] = [rel_paths[i] for i in imgs]
    # timing: 0.5 s image, 1.0 +- 0.2 s blank; runs start 60 s apart in a continuous recording
    soa = 0.5 + rng.uniform(0.8, 1.2, n)
    onset = np.zeros(n)
    run_key = sess * 100 + runs
    starts = np.flatnonzero(np.r_[True, run_key[1:] != run_key[:-1]])
    ends = np.r_[starts[1:], n]
    glob = np.zeros(n)
    t0 = 10.0
    for a, b in zip(starts, ends):
        onset[a:b] = 2.0 + np.r_[0.0, np.cumsum(soa[a:b - 1])]
        glob[a:b] = t0 + onset[a:b]
        t0 = glob[b - 1] + 60.0
    meta["onset"] = np.round(onset, 4)
    meta["image_on"] = np.round(onset, 4)
    meta["image_off"] = np.round(onset + 0.5, 4)
    responded = np.where(is_catch, rng.random(n) < 0.95, rng.random(n) < 0.01)
    meta["responded"] = responded.astype(int)
    meta["RT"] = np.where(responded, np.round(rng.uniform(0.35, 0.9, n), 4), nan)
    meta["session_nr"] = sess
    meta["run_nr"] = runs
    samples = np.round(glob * p["sfreq"]).astype(np.int64)
    return meta[list(_META_COLUMNS)], samples


def write_things_meg(root: Path, p: dict[str, Any]) -> dict[str, Any]:
    """Write a simulated THINGS-MEG (ds004212-like) folder into ``root``; return the ground truth.

    Writes ``derivatives/preprocessed/preprocessed_P{n}-epo.fif`` (``mag`` channels with CTF-like
    names and helmet positions, -0.1..1.3 s at ``sfreq``, ``metadata`` = the sample_attributes
    table), ``sourcedata/sample_attributes_P{n}.csv`` (the same table), the images under
    ``images/`` (``images/<image_path>``), and ``simulation_stimuli.csv``.
    """
    for module in ("mne",):  # before any file is written
        import_optional(module, extra="meeg", what="simulated THINGS-MEG files")
    seed = p["seed"]

    def rng_for(*key: int) -> np.random.Generator:
        return np.random.default_rng([seed, 22, *key])

    ipc, n_train, n_test = p["images_per_concept"], p["n_train_concepts"], p["n_test_concepts"]
    n_main = n_train * ipc + n_test * p["n_test_reps"]
    frac = p["catch_fraction"]
    n_catch = round(frac * n_main / (1.0 - frac)) if frac > 0 else 0
    n_catch_images = min(n_catch, 20)
    stim = _make_stimuli(n_train, ipc, n_test, n_catch_images, p["image_size"], rng_for(1))
    rel, ids, splits = _meg_image_files(stim["train_concepts"], stim["test_concepts"], ipc, n_catch_images)
    _write_images(root / "images", rel, stim["images"], "Writing THINGS-MEG images")
    table = _stimulus_table(stim, ids, splits, [f"images/{r}" for r in rel])
    (root / "simulation_stimuli.csv").write_text(table.to_csv(index=False), encoding="utf-8")
    feats, finfo = _features(stim["latents"], stim["images"])
    del stim["images"]

    pos = helmet_positions(p["n_channels"])
    names = meg_ctf_names(pos)
    planted = signal_channel_mask(names, pos, p["signal_channels"])
    times = _meg_times(p["sfreq"])
    folder = root / "derivatives" / "preprocessed"
    folder.mkdir(parents=True, exist_ok=True)
    subjects: dict[str, Any] = {}
    for subject in ProgressBar(range(1, p["n_subjects"] + 1), total=p["n_subjects"], desc="Participants",
                               unit="participant"):
        imgs, sess, runs = _meg_design(p, n_catch, n_catch_images, rng_for(2, subject))
        meta, samples = _meg_metadata(p, imgs, sess, runs, rel, rng_for(3, subject))
        nonlinear = p.get("response", "linear") == "nonlinear"
        model = _subject_model(feats, finfo, pos, planted, p["signal_window"], p["snr"], rng_for(4, subject),
                               shared_rng=rng_for(4, 0), similarity=p["subject_similarity"],
                               nl_rng=rng_for(6, subject) if nonlinear else None, nl_shared_rng=rng_for(6, 0))
        data = np.empty((len(imgs), len(names), len(times)), dtype=np.float32)
        lags = latency_jitter(rng_for(7, subject), len(imgs)) if nonlinear else None
        _simulate_trials(data, imgs, model, np.arange(len(names)), pos, times, p["sfreq"], p["signal_window"],
                         rng_for(5, subject), f"P{subject} epochs", jitter=lags)
        _save_meg_epochs(folder / f"preprocessed_P{subject}-epo.fif", data, _meg_info(names, pos, p["sfreq"]),
                         samples, meta)
        del data
        src = root / "sourcedata" / f"sample_attributes_P{subject}.csv"
        src.parent.mkdir(parents=True, exist_ok=True)
        meta.to_csv(src, index=False)
        counts = meta["trial_type"].value_counts()
        subjects[str(subject)] = {
            "planted_channels": [n for n, m in zip(names, planted) if m],
            "n_epochs": len(meta), "n_exp": int(counts.get("exp", 0)),
            "n_test": int(counts.get("test", 0)), "n_catch": int(counts.get("catch", 0)),
            "signal_gain_median": float(np.median(model["gains"])),
            "evoked_topography_peak_channel": names[int(np.argmax(np.abs(model["evoked_topo"])))],
        }
        logger.info("THINGS-MEG P%d written: %d epochs", subject, len(meta))
    return {
        "stimuli": {**_stim_truth(stim, ipc), "image_root": "images",
                    "image_paths": "metadata image_path is relative to images/ (images/<image_path>)"},
        "model": _model_truth(p, finfo),
        "sensors": {"ch_names": names, "positions": np.round(pos, 6).tolist(), "sfreq": p["sfreq"],
                    "tmin": _MEG_TMIN, "n_times": len(times)},
        "subjects": subjects,
    }


def _meg_image_files(train_concepts: Sequence[str], test_concepts: Sequence[str], ipc: int,
                     n_catch_images: int) -> tuple[list[str], list[str], list[str]]:
    """Image paths (relative to ``images/``), stimulus ids and splits of a simulated THINGS-MEG.

    Training images ``images_meg/<concept>/<concept>_NNb.jpg`` (``ipc`` per concept), one test image
    per test concept ``images_test_meg/<concept>_NNs.jpg`` (flat, as in the real data; NN = ipc + 1),
    then ``images_catch_meg/catch_NNN.jpg``.
    """
    rel, ids, splits = [], [], []
    for name in train_concepts:
        for j in range(ipc):
            rel.append(f"images_meg/{name}/{name}_{j + 1:02d}b.jpg")
            ids.append(f"{name}_{j + 1:02d}b")
            splits.append("train")
    for name in test_concepts:  # the real test paths are flat: images_test_meg/<file>
        rel.append(f"images_test_meg/{name}_{ipc + 1:02d}s.jpg")
        ids.append(f"{name}_{ipc + 1:02d}s")
        splits.append("test")
    for k in range(n_catch_images):
        rel.append(f"images_catch_meg/catch_{k + 1:03d}.jpg")
        ids.append(f"catch_{k + 1:03d}")
        splits.append("catch")
    return rel, ids, splits


def _meg_info(names: list[str], pos: np.ndarray, sfreq: float) -> Any:
    """``mne.Info`` of ``mag`` channels at ``pos`` with radial coil normals (from the helmet centre)."""
    import mne

    info = mne.create_info(names, sfreq, "mag")
    for ch, xyz in zip(info["chs"], pos):
        ez = (xyz - np.array([0.0, 0.0, 0.04])) / np.linalg.norm(xyz - np.array([0.0, 0.0, 0.04]))
        ex = np.cross([0.0, 0.0, 1.0], ez)
        ex = ex / np.linalg.norm(ex) if np.linalg.norm(ex) > 1e-6 else np.array([1.0, 0.0, 0.0])
        ch["loc"][:3] = xyz
        ch["loc"][3:12] = np.concatenate([ex, np.cross(ez, ex), ez])
    info["description"] = "neurodecode simulated THINGS-MEG (preprocessed epochs)"
    return info


def _save_meg_epochs(path: Path, data: np.ndarray, info: Any, samples: np.ndarray,
                     meta: pd.DataFrame) -> None:
    """Save the epochs (one ``image`` event per trial at ``samples``, ``metadata=meta``) as ``-epo.fif``."""
    import mne

    events = np.column_stack([samples, np.zeros(len(samples), np.int64),
                              np.full(len(samples), _MEG_TRIGGER, np.int64)])
    epochs = mne.EpochsArray(data, info, events, tmin=_MEG_TMIN, event_id={"image": _MEG_TRIGGER},
                             baseline=None, metadata=meta, verbose="error")
    epochs.save(path, overwrite=True, verbose="error")
