"""Audio features in numpy only: triangular mel filterbanks and (log-)mel spectrograms.

These are weight-free speech targets (brainmagick's Mel-spectrogram target) and
the features the MEG-MASC simulator plants in its recordings. They live here,
below :mod:`neurodecode.datasets`, so the simulator can use them; the
StimulusSet-level entry point is :func:`neurodecode.embeddings.embed_melspec`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["default_n_fft", "hz_to_mel", "mel_filterbank", "mel_to_hz", "melspectrogram"]

#: Added to the power before the logarithm (``log(LOG_EPS + power)``).
LOG_EPS = 1e-10
_FRAME_BLOCK = 2048  # frames transformed at once (bounds the memory of long recordings)


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``.

    Parameters
    ----------
    freq : float | array
        Frequencies in Hz.

    Returns
    -------
    mel : array
        The frequencies in mel (a NumPy float for a scalar input).
    """
    return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=float) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`.

    Parameters
    ----------
    mel : float | array
        Frequencies in mel.

    Returns
    -------
    freq : array
        The frequencies in Hz (a NumPy float for a scalar input).
    """
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=float) / 2595.0) - 1.0)


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def mel_filterbank(n_fft: int, sfreq: float, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters on the bins of a real FFT.

    ``n_mels`` triangles with centres equally spaced on the HTK mel scale
    between ``fmin`` and ``fmax``: filter ``m`` rises linearly (in Hz) from
    centre ``m - 1`` to a peak of 1 at centre ``m`` and falls back to 0 at
    centre ``m + 1`` (the first and last edges are ``fmin`` and ``fmax``).
    Filters are not area-normalised (peak height 1, as in HTK). A filter
    narrower than the FFT's bin spacing, which would catch no bin, is given
    weight 1 on the bin nearest its centre so that no band is empty.

    Parameters
    ----------
    n_fft : int
        FFT length; the filters act on its ``n_fft // 2 + 1`` bins
        (frequencies ``k * sfreq / n_fft``).
    sfreq : float
        Sampling rate of the audio (Hz).
    n_mels : int
        Number of filters.
    fmin : float
        Lower edge of the first filter (Hz), >= 0.
    fmax : float | None
        Upper edge of the last filter (Hz), at most ``sfreq / 2``; None means ``sfreq / 2``.

    Returns
    -------
    filters : ndarray of float64, shape (n_mels, n_fft // 2 + 1)

    Raises
    ------
    ValueError
        Non-positive sizes or rates, or not ``0 <= fmin < fmax <= sfreq / 2``.

    Examples
    --------
    >>> fb = mel_filterbank(512, 16000, 20, fmin=50.0)
    >>> fb.shape
    (20, 257)
    """
    n_fft = _check_count("n_fft", n_fft)
    if n_fft < 2:
        raise ValueError(f"n_fft must be >= 2, got {n_fft}")
    sfreq = _check_positive("sfreq", sfreq)
    n_mels = _check_count("n_mels", n_mels)
    nyquist = sfreq / 2.0
    fmax = nyquist if fmax is None else float(fmax)
    fmin = float(fmin)
    if not 0.0 <= fmin < fmax <= nyquist * (1 + 1e-12):
        raise ValueError(f"the mel band edges must satisfy 0 <= fmin < fmax <= sfreq / 2 = {nyquist:g} Hz, "
                         f"got fmin={fmin:g}, fmax={fmax:g}")
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sfreq / n_fft
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    filters = np.clip(np.minimum(rising, falling), 0.0, None)
    for m in np.flatnonzero(filters.sum(axis=1) == 0):
        filters[m, int(np.argmin(np.abs(freqs - edges[m + 1])))] = 1.0
    return filters


def default_n_fft(sfreq: float, frame_rate: float) -> int:
    """Default FFT length: the smallest power of two >= max(2 hops, 25 ms of audio).

    Parameters
    ----------
    sfreq : float
        Audio sampling rate in Hz.
    frame_rate : float
        Spectrogram frames per second (one hop is ``sfreq / frame_rate`` samples).

    Returns
    -------
    n_fft : int
        The FFT length in samples (a power of two, at least 2).
    """
    need = max(2.0 * sfreq / frame_rate, 0.025 * sfreq, 2.0)
    return int(2 ** math.ceil(math.log2(need)))


def melspectrogram(audio: np.ndarray, sfreq: float, *, n_mels: int = 20, frame_rate: float = 100.0,
                   n_fft: int | None = None, fmin: float = 50.0, fmax: float | None = None,
                   log: bool = True) -> np.ndarray:
    """(Log-)mel spectrogram of mono audio, on a frame grid of ``frame_rate`` frames per second.

    Frame ``k`` is centred on sample ``round(k * sfreq / frame_rate)``, i.e. at
    ``k / frame_rate`` seconds from the first sample (the hop is ``sfreq /
    frame_rate`` samples and need not be an integer). Each frame is the
    ``n_fft``-sample segment around its centre (zeros beyond the signal's
    ends) times a periodic Hann window; its power spectrum ``|rfft|**2 /
    sum(window**2)`` goes through :func:`mel_filterbank`. There are
    ``round(duration_s * frame_rate)`` frames, the same count as
    :meth:`neurodecode.embeddings.SpeechEncoder.embed` with ``target_sfreq``,
    so with ``frame_rate`` equal to a brain recording's sampling rate frame
    ``j`` lines up with brain sample ``j``.

    Parameters
    ----------
    audio : array, shape (n_samples,) or (n_segments, n_samples)
        Mono waveform(s); integer arrays are used as they are (no rescaling).
    sfreq : float
        Sampling rate of ``audio`` (Hz).
    n_mels : int
        Number of mel bands.
    frame_rate : float
        Frames per second, at most ``sfreq``.
    n_fft : int | None
        Window / FFT length in samples; None: the smallest power of two that
        covers both two hops and 25 ms (:func:`default_n_fft`), so successive
        windows overlap and every sample contributes.
    fmin, fmax : float, float | None
        Band edges of the filterbank (Hz); ``fmax=None`` is ``sfreq / 2``.
    log : bool
        Return ``log(1e-10 + power)`` (natural log); False returns the mel power.

    Returns
    -------
    mel : ndarray of float32, shape (n_frames, n_mels) or (n_segments, n_frames, n_mels)

    Raises
    ------
    ValueError
        Invalid parameters, audio that is not 1-D/2-D, or shorter than one frame.

    Examples
    --------
    >>> t = np.arange(16000) / 16000
    >>> melspectrogram(np.sin(2 * np.pi * 440 * t), 16000, frame_rate=100).shape
    (100, 20)
    """
    sfreq = _check_positive("sfreq", sfreq)
    frame_rate = _check_positive("frame_rate", frame_rate)
    if frame_rate > sfreq:
        raise ValueError(f"frame_rate ({frame_rate:g} frames/s) cannot exceed the audio sampling rate "
                         f"({sfreq:g} Hz)")
    n_fft = default_n_fft(sfreq, frame_rate) if n_fft is None else _check_count("n_fft", n_fft)
    filters = mel_filterbank(n_fft, sfreq, n_mels, fmin, fmax)
    x = np.asarray(audio)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio must have shape (n_samples,) or (n_segments, n_samples), got {x.shape}")
    single = x.ndim == 1
    x = np.atleast_2d(x).astype(np.float64, copy=False)
    n_samples = x.shape[1]
    n_frames = int(round(n_samples / sfreq * frame_rate))
    if n_frames < 1:
        raise ValueError(f"audio of {n_samples} samples ({n_samples / sfreq:.4g} s) is shorter than one frame "
                         f"at {frame_rate:g} frames/s")
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite values")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    norm = float((window ** 2).sum())
    half = n_fft // 2
    centres = np.rint(np.arange(n_frames) * (sfreq / frame_rate)).astype(np.int64)
    padded = np.zeros((x.shape[0], n_samples + 2 * half + n_fft))
    padded[:, half:half + n_samples] = x
    out = np.empty((x.shape[0], n_frames, filters.shape[0]), dtype=np.float32)
    offsets = np.arange(n_fft)
    for i in range(x.shape[0]):
        for f0 in range(0, n_frames, _FRAME_BLOCK):
            starts = centres[f0:f0 + _FRAME_BLOCK]  # index in `padded` of the window start
            frames = padded[i, starts[:, None] + offsets[None]] * window
            power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / norm
            mel = power @ filters.T
            out[i, f0:f0 + len(starts)] = np.log(LOG_EPS + mel) if log else mel
    return out[0] if single else out
