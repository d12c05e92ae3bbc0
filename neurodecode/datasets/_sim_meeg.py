"""Building blocks shared by the M/EEG simulators: sensor layouts, noise, planted time courses.

Used by ``_sim_things`` (THINGS-EEG2, THINGS-MEG) and ``_sim_masc`` (MEG-MASC).
Every function takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "LATENCY_MAX",
    "LATENCY_SD",
    "NR_C50",
    "RESPONSE_MODES",
    "check_float",
    "check_int",
    "check_response",
    "eeg_positions",
    "helmet_positions",
    "latency_jitter",
    "meg_channel_names",
    "naka_rushton",
    "sensor_noise",
    "signal_channel_mask",
    "spatial_mixing",
    "window_profile",
]


#: Values of every simulator's ``response`` parameter: ``"linear"`` (responses linear in the stimulus
#: features) or ``"nonlinear"`` (rectified, compressive, tuned responses; M/EEG also latency jitter).
#: See docs/simulator.md.
RESPONSE_MODES: tuple[str, ...] = ("linear", "nonlinear")
#: response="nonlinear": semi-saturation of the Naka-Rushton nonlinearity (drive in std units)
NR_C50 = 1.0
#: response="nonlinear": response latency jitter (s), Gaussian with this std, clipped at +-LATENCY_MAX
LATENCY_SD = 0.02
LATENCY_MAX = 0.04


def naka_rushton(u: np.ndarray, c50: float = NR_C50) -> np.ndarray:
    """Rectified, saturating response ``[u]+**2 / ([u]+**2 + c50**2)``: 0 for u <= 0, -> 1 for large u.

    The contrast-response / firing-rate nonlinearity of Naka & Rushton (1966) and Albrecht &
    Hamilton (1982) with exponent 2, applied to a drive in units of its std.
    """
    r = np.maximum(u, 0.0) ** 2
    return r / (r + c50 * c50)


def latency_jitter(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` response latency shifts (s): N(0, LATENCY_SD) clipped at +-LATENCY_MAX."""
    return np.clip(rng.normal(0.0, LATENCY_SD, n), -LATENCY_MAX, LATENCY_MAX)


def check_response(value: Any) -> str:
    """``value`` as one of :data:`RESPONSE_MODES` (ValueError naming the allowed values otherwise)."""
    if not isinstance(value, str) or value not in RESPONSE_MODES:
        raise ValueError(f"Invalid value for the 'response' parameter. Allowed values are "
                         f"{', '.join(repr(v) for v in RESPONSE_MODES)}, but got {value!r} instead.")
    return value


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi`` (TypeError for a non-int, ValueError out of range)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in {rng}, got {value}")
    return int(value)


def check_float(name: str, value: Any, lo: float, hi: float, *, hi_open: bool = False) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (or ``[lo, hi)``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not (math.isfinite(value) and lo <= value and (value < hi if hi_open else value <= hi)):
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}{')' if hi_open else ']'}, got {value!r}")
    return value


def spatial_mixing(positions: np.ndarray, scale: float) -> np.ndarray:
    """Cholesky factor of a Gaussian spatial covariance with length ``scale`` (metres).

    Sensors with unknown (NaN) positions are independent of all others.
    """
    pos = np.asarray(positions, dtype=float)
    n = len(pos)
    ok = np.isfinite(pos).all(axis=1)
    cov = np.eye(n)
    if ok.sum() > 1:
        d = np.linalg.norm(pos[ok, None, :] - pos[None, ok, :], axis=-1)
        cov[np.ix_(ok, ok)] = np.exp(-0.5 * (d / scale) ** 2)
    return np.linalg.cholesky(cov + 1e-6 * np.eye(n))


def helmet_positions(n: int, radius: float = 0.11) -> np.ndarray:
    """``n`` sensor positions spread evenly over the upper half of a sphere (a MEG helmet).

    Head coordinates in metres (x right, y anterior, z up), deterministic
    (a Fibonacci lattice), covering z from slightly below the ears to the vertex.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    k = np.arange(n) + 0.5
    z = 1.0 - k / n * 1.15          # from the top (1) down to -0.15
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1) * radius + np.array([0.0, 0.0, 0.04])


def meg_channel_names(n: int) -> list[str]:
    """KIT-style names ``MEG 001`` ... (MEG-MASC's KIT system names its sensors this way)."""
    return [f"MEG {i + 1:03d}" for i in range(n)]


def eeg_positions(ch_names: Sequence[str]) -> np.ndarray:
    """Standard 10-05 positions (head coordinates, metres) of EEG channel names; NaN when unknown.

    Needs MNE; without it every position is NaN (regions then come from the names).
    """
    try:
        import mne
    except ImportError:  # pragma: no cover - mne is in the eeg/meg extras
        return np.full((len(ch_names), 3), np.nan)
    import warnings

    with warnings.catch_warnings(), mne.utils.use_log_level("error"):
        warnings.simplefilter("ignore")  # the montage is renamed in recent MNE
        pos = mne.channels.make_standard_montage("standard_1005").get_positions()["ch_pos"]
    lower = {k.lower(): v for k, v in pos.items()}
    return np.array([lower.get(c.lower(), np.full(3, np.nan)) for c in ch_names], dtype=float)


def sensor_noise(rng: np.random.Generator, n_trials: int, positions: np.ndarray, n_times: int,
                 sfreq: float, *, spatial_scale: float = 0.04, time_scale: float = 0.02,
                 dtype: type = np.float32) -> np.ndarray:
    """Unit-variance noise, smooth in time and correlated between nearby sensors.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n_trials, n_times : int
        Output shape ``(n_trials, n_channels, n_times)``.
    positions : array, shape (n_channels, 3)
        Sensor positions (metres); unknown (NaN) positions get independent noise.
    sfreq : float
        Sampling rate (Hz).
    spatial_scale : float
        Length (metres) of the Gaussian spatial correlation.
    time_scale : float
        Standard deviation (seconds) of the Gaussian temporal smoothing kernel.

    Returns
    -------
    noise : array, shape (n_trials, n_channels, n_times)
    """
    from scipy.ndimage import gaussian_filter1d

    mix = spatial_mixing(positions, spatial_scale).astype(np.float32)
    n_ch = len(mix)
    sigma = max(time_scale * sfreq, 1e-3)
    half = int(np.ceil(4 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    gain = np.float32(kernel.sum() / np.sqrt((kernel ** 2).sum()))
    out = np.empty((n_trials, n_ch, n_times), dtype=dtype)
    step = 256
    for s in range(0, n_trials, step):
        k = min(step, n_trials - s)
        white = rng.standard_normal((k, n_ch, n_times), dtype=np.float32)
        # Gaussian temporal smoothing (kernel sums to 1), rescaled back to unit variance
        smooth = gaussian_filter1d(white, sigma, axis=-1, mode="wrap") * gain
        out[s:s + k] = np.einsum("ij,kjt->kit", mix, smooth, optimize=True)
    return out


def window_profile(times: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """A smooth bump (Hann window) that is non-zero only inside ``window = (start, stop)`` seconds."""
    start, stop = float(window[0]), float(window[1])
    if not stop > start:
        raise ValueError(f"a signal window must be (start, stop) with stop > start, got {tuple(window)}")
    times = np.asarray(times, dtype=float)
    inside = (times >= start) & (times <= stop)
    prof = np.zeros(len(times))
    phase = (times[inside] - start) / (stop - start)
    prof[inside] = np.sin(np.pi * phase) ** 2
    if not inside.any():
        raise ValueError(f"signal window {tuple(window)} s holds no sample of the epoch "
                         f"({times[0]:.3f}..{times[-1]:.3f} s)")
    return prof


def signal_channel_mask(ch_names: Sequence[str], positions: np.ndarray,
                        signal_channels: Sequence[str]) -> np.ndarray:
    """Boolean mask of the channels named by ``signal_channels`` (names or sensor regions)."""
    from ..preprocessing.channels import resolve_channels

    names = list(ch_names)
    chosen = set(resolve_channels({"ch_names": names, "ch_pos": positions}, list(signal_channels)))
    mask = np.array([c in chosen for c in names])
    if not mask.any():
        raise ValueError(f"signal_channels {list(signal_channels)} select no channel")
    return mask
