"""Simulated MEG-MASC dataset (BIDS, speech) in its real on-disk layout.

``simulate("masc", out_dir, ...)`` writes (FORMATS.md section 4.1; the real
recordings are KIT ``.con`` files, the simulation writes FIF through MNE-BIDS)::

    <root>/participants.tsv, dataset_description.json, README
    <root>/stimuli/audio/<story>_<k>.wav                 mono int16 at audio_sfreq
    <root>/sub-XX/ses-S/meg/sub-XX_ses-S_task-T_meg.fif  (+ _events.tsv, _channels.tsv, _meg.json, ...)

Generative model
----------------
*Audio.* A vocabulary of 60 pseudo-words, each with a fixed recipe: 2-3
consonant-vowel syllables (sometimes a final consonant), 0.2-0.6 s long, a
fundamental frequency of 100-220 Hz with a slight declination, vowels and
sonorants rendered as harmonic complexes whose harmonics are weighted by
formant resonances, stops and fricatives as band-passed noise bursts, and
raised-cosine envelopes. A story (``lw1``, ``cable_spool_fort``,
``easy_money``, ``The_Black_Willow``; task ``t`` is story ``t``) is a sequence
of "sentences" of 4-10 words (Zipf-like word frequencies; gaps of 0.05-0.25 s
between words, pauses of 0.5-0.9 s between sentences), cut into wav files of
about 12 s, with a quiet background noise floor. Every subject hears the same
stories in both sessions.

*Recording.* One recording per (subject, session, story): the story's wav
files are played back to back after a 1-2 s pre-roll, separated by 0.5-1.5 s of
silence (timings drawn per recording). The log-mel spectrogram ``mel`` of
what is played (``n_mels`` bands from 50 Hz, on the MEG time base, each band
z-scored over the recording) drives the planted channels::

    meg[c, t] = gain[c] * (snr * s[c, t] / std(s[c]) + noise[c, t] + drift[c, t])
    s[c, t]   = sum_l  h(l) * W[c, :] @ mel[t - l]

with ``h = window_profile(lags, signal_window)`` (a Hann bump over the lags in
``signal_window``), ``W`` random per subject and non-zero only for the
channels of ``signal_channels``; ``noise`` is unit-variance, spatially and
temporally correlated sensor noise (fresh in every recording); ``drift`` is a
per-recording DC offset, linear trend and very slow (< 0.02 Hz) oscillation
that preprocessing must remove; ``gain`` is ~1e-13 T per channel and subject.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import ProgressBar, logger
from ..utils.imports import import_optional
from . import _sim_meeg as meeg
from ._sim_meeg import check_float as _check_float
from ._sim_meeg import check_int as _check_int

__all__ = ["STORIES", "resolve_masc", "write_masc"]

#: Story of each task, in task order (MEG-MASC).
STORIES: tuple[str, ...] = ("lw1", "cable_spool_fort", "easy_money", "The_Black_Willow")
DEFAULT_SIGNAL_CHANNELS = ("left_temporal", "right_temporal")
_VERSION = 2  # bump when the generated content changes
_N_VOCAB = 60
_SOUND_TARGET_S = 12.0  # approximate length of one wav file
_LEAD_S, _TAIL_S = 0.3, 0.3  # silence at the start / end of each wav
_NOISE_FLOOR = 5e-4  # rms of the background noise of the audio (full scale = 1)
_MEL_FMIN = 50.0
_GAIN_T = 1e-13  # sensor noise level (Tesla)
# response="nonlinear" (docs/simulator.md, "Nonlinear responses"): auditory sources with tonotopic tuning,
# sustained + onset (half-wave rectified derivative) drives, a Naka-Rushton nonlinearity, a slowly drifting
# response latency, and a linear mixing into the sensors
_N_SOURCES = 16
_ONSET_SIGMA_S = 0.01  # s: derivative-of-Gaussian scale of the onset (acoustic edge) drive
_JITTER_TIMESCALE_S = 0.3  # s: correlation time of the latency drift (about one word)

# vowel letter -> (ARPAbet-like phoneme label, formants F1..F3 in Hz)
_VOWELS: dict[str, tuple[str, tuple[float, float, float]]] = {
    "a": ("aa", (730.0, 1090.0, 2440.0)), "e": ("eh", (530.0, 1840.0, 2480.0)),
    "i": ("iy", (270.0, 2290.0, 3010.0)), "o": ("ow", (570.0, 840.0, 2410.0)),
    "u": ("uw", (300.0, 870.0, 2240.0)),
}
# consonant letter -> (manner, voiced, centre frequency (stops/fricatives) or formants (sonorants))
_CONSONANTS: dict[str, tuple[str, bool, Any]] = {
    "p": ("stop", False, 800.0), "t": ("stop", False, 4000.0), "k": ("stop", False, 2000.0),
    "b": ("stop", True, 600.0), "d": ("stop", True, 3000.0), "g": ("stop", True, 1600.0),
    "s": ("fricative", False, 6000.0), "f": ("fricative", False, 4500.0), "z": ("fricative", True, 5000.0),
    "m": ("sonorant", True, (250.0, 1000.0, 2200.0)), "n": ("sonorant", True, (250.0, 1500.0, 2500.0)),
    "l": ("sonorant", True, (350.0, 1200.0, 2600.0)), "r": ("sonorant", True, (420.0, 1300.0, 1600.0)),
}
_CODAS = ("n", "m", "s", "l")


def _lag_kernel(window: Sequence[float], sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Lags (s) from 0 to the end of ``window`` on the MEG grid, and the Hann-bump weights (sum 1)."""
    lags = np.arange(int(math.ceil(window[1] * sfreq)) + 1) / sfreq
    weights = meeg.window_profile(lags, window)
    weights[weights < 1e-12] = 0.0  # sin(pi)**2 at the window's end is ~1e-33, not 0
    if not weights.any():
        raise ValueError(f"signal_window {tuple(window)} s is too narrow for sfreq={sfreq:g} Hz: no lag sample "
                         "falls strictly inside it")
    return lags, weights / weights.sum()


def resolve_masc(*, n_subjects: int = 2, seed: int = 0, n_sessions: int = 2, n_stories: int = 2,
                 story_duration_s: float = 60.0, n_channels: int = 64, sfreq: float = 200.0,
                 audio_sfreq: int = 16000, snr: float = 1.0,
                 signal_channels: Sequence[str] = DEFAULT_SIGNAL_CHANNELS,
                 signal_window: Sequence[float] = (0.05, 0.25), n_mels: int = 20,
                 subject_similarity: float = 0.5, response: str = "nonlinear") -> dict[str, Any]:
    """Validate the MEG-MASC simulation parameters and return them resolved (JSON-able).

    Parameters
    ----------
    n_subjects : int
        Subjects ``sub-01`` .. (1..27, as in MEG-MASC).
    seed : int
        Seed of every random draw (>= 0).
    n_sessions : int
        Sessions ``ses-0`` (and ``ses-1``) per subject (1..2); both replay the same stories.
    n_stories : int
        Stories (= tasks ``0`` ..) per session (1..4), taken in the order of :data:`STORIES`.
    story_duration_s : float
        Approximate audio duration of each story in seconds (5..3600; the real
        stories last ~10-25 minutes). Cut into wav files of about 12 s.
    n_channels : int
        MEG magnetometers (16..400; the real KIT system has 208).
    sfreq : float
        MEG sampling rate in Hz (50..2000; the real data: 1000).
    audio_sfreq : int
        Sampling rate of the wav files in Hz (8000..48000).
    snr : float
        Signal std / noise std of every planted channel (0 <= snr < 100).
    signal_channels : sequence of str
        Channels that carry the speech response: channel names (``"MEG 001"``)
        or sensor regions (``"temporal"``, ``"left_temporal"``, ...; see
        :mod:`neurodecode.preprocessing.channels`).
    signal_window : (float, float)
        Lags (seconds, ``0 <= start < stop <= 1``) over which the mel
        spectrogram drives the planted channels.
    n_mels : int
        Mel bands of the planted spectrogram (1..128).
    subject_similarity : float
        In [0, 1]: the part of each subject's mel → sensor weights shared by all subjects
        (``sqrt(s)·shared + sqrt(1 - s)·own``); 0 = unrelated subjects, 1 = identical weights.
    response : ``"nonlinear"`` (default) | ``"linear"``
        Generative model of the speech response. ``"linear"``: a linear temporal response function
        of the mel spectrogram. ``"nonlinear"``: tonotopically tuned auditory sources driven by the
        band envelope and its half-wave rectified derivative (onsets), through a Naka-Rushton
        nonlinearity, with a slowly drifting response latency (std 20 ms, at most 40 ms), mixed
        linearly into the sensors. Recorded in the parameters only when not ``"linear"``. See
        ``docs/simulator.md``.

    Returns
    -------
    params : dict
        The resolved parameters, with ``simulator_version``.

    Raises
    ------
    ValueError
        A value out of range, or ``signal_channels`` that select no channel.
    TypeError
        A count that is not an int.
    """
    n_subjects = _check_int("n_subjects", n_subjects, 1, 27)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n_sessions = _check_int("n_sessions", n_sessions, 1, 2)
    n_stories = _check_int("n_stories", n_stories, 1, len(STORIES))
    story_duration_s = _check_float("story_duration_s", story_duration_s, 5.0, 3600.0)
    n_channels = _check_int("n_channels", n_channels, 16, 400)
    sfreq = _check_float("sfreq", sfreq, 50.0, 2000.0)
    audio_sfreq = _check_int("audio_sfreq", audio_sfreq, 8000, 48000)
    snr = _check_float("snr", snr, 0.0, 100.0, hi_open=True)
    n_mels = _check_int("n_mels", n_mels, 1, 128)
    subject_similarity = _check_float("subject_similarity", subject_similarity, 0.0, 1.0)
    if isinstance(signal_channels, str):
        signal_channels = (signal_channels,)
    signal_channels = list(dict.fromkeys(signal_channels))
    if not signal_channels or not all(isinstance(c, str) for c in signal_channels):
        raise ValueError(f"signal_channels must be a non-empty sequence of channel names or sensor regions, "
                         f"got {signal_channels!r}")
    meeg.signal_channel_mask(meeg.meg_channel_names(n_channels), meeg.helmet_positions(n_channels),
                             signal_channels)  # raises ValueError for unknown names / empty selections
    if isinstance(signal_window, str) or not hasattr(signal_window, "__len__") or len(signal_window) != 2:
        raise ValueError(f"signal_window must be (start, stop) in seconds, got {signal_window!r}")
    start = _check_float("signal_window start", signal_window[0], 0.0, 1.0)
    stop = _check_float("signal_window stop", signal_window[1], 0.0, 1.0)
    if not stop > start:
        raise ValueError(f"signal_window must be (start, stop) with stop > start, got {tuple(signal_window)}")
    _lag_kernel((start, stop), sfreq)
    response = meeg.check_response(response)
    out = {
        "simulator_version": _VERSION, "n_subjects": n_subjects, "seed": int(seed), "n_sessions": n_sessions,
        "n_stories": n_stories, "story_duration_s": story_duration_s, "n_channels": n_channels,
        "sfreq": sfreq, "audio_sfreq": audio_sfreq, "snr": snr, "signal_channels": signal_channels,
        "signal_window": [start, stop], "n_mels": n_mels, "subject_similarity": subject_similarity,
    }
    if response != "linear":  # linear simulations keep the parameters (and caches) they always had
        out["response"] = response
    return out


# ============================================================================
# Audio
# ============================================================================
def _make_vocabulary(rng: np.random.Generator, n_words: int) -> list[dict[str, Any]]:
    """Pseudo-word recipes: spelling, phonemes with relative timing, f0, gain."""
    cons, vows = list(_CONSONANTS), list(_VOWELS)
    words: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(words) < n_words:
        n_syl = int(rng.integers(2, 4))
        letters: list[str] = []
        for _ in range(n_syl):
            letters += [cons[int(rng.integers(len(cons)))], vows[int(rng.integers(len(vows)))]]
        if rng.random() < 0.3:
            letters.append(_CODAS[int(rng.integers(len(_CODAS)))])
        spelling = "".join(letters)
        duration = float(rng.uniform(0.2, 0.6))
        # relative durations: vowels longer than consonants
        weights = np.array([rng.uniform(1.6, 2.4) if c in _VOWELS else rng.uniform(0.7, 1.1) for c in letters])
        f0 = float(rng.uniform(100.0, 220.0))
        gain = float(rng.uniform(0.6, 1.0))
        if spelling in seen:
            continue
        seen.add(spelling)
        bounds = np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        words.append({"word": spelling, "letters": letters, "duration": duration, "bounds": bounds.tolist(),
                      "f0": f0, "gain": gain})
    return words


def _phoneme_label(letter: str, position: int, n: int) -> str:
    base = _VOWELS[letter][0] if letter in _VOWELS else letter
    suffix = "S" if n == 1 else ("B" if position == 0 else ("E" if position == n - 1 else "I"))
    return f"{base}_{suffix}"


def _ramp(n: int, sr: int, ramp_s: float = 0.008) -> np.ndarray:
    k = min(int(ramp_s * sr), n // 2)
    env = np.ones(n)
    if k > 0:
        up = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
        env[:k], env[n - k:] = up, up[::-1]
    return env


def _harmonics(phase: np.ndarray, f0: float, formants: Sequence[float], sr: int) -> np.ndarray:
    """Harmonic complex on ``phase`` weighted by formant resonances (unit rms)."""
    top = min(5000.0, 0.45 * sr)
    k = np.arange(1, max(2, int(top // (f0 * 1.1))) + 1)
    freq = k * f0
    gains, widths = (1.0, 0.6, 0.3), (90.0, 110.0, 170.0)
    amp = sum(g / (1.0 + ((freq - f) / b) ** 2) for f, g, b in zip(formants, gains, widths)) * k ** -0.3
    y = (amp[:, None] * np.sin(k[:, None] * phase[None])).sum(axis=0)
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def _band_noise(rng: np.random.Generator, n: int, centre: float, sr: int) -> np.ndarray:
    """Gaussian-band-passed white noise around ``centre`` Hz (unit rms)."""
    centre = min(centre, 0.4 * sr)
    spec = np.fft.rfft(rng.standard_normal(max(n, 2)))
    freqs = np.fft.rfftfreq(max(n, 2), 1.0 / sr)
    spec *= np.exp(-0.5 * ((freqs - centre) / (0.35 * centre)) ** 2)
    y = np.fft.irfft(spec, max(n, 2))[:n]
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def _render_word(recipe: dict[str, Any], sr: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Waveform (peak = gain * 0.5) and phoneme boundaries (samples) of one pseudo-word."""
    n = max(int(round(recipe["duration"] * sr)), 8)
    bounds = np.rint(np.asarray(recipe["bounds"]) * n).astype(int)
    t = np.arange(n) / sr
    f0_t = recipe["f0"] * (1.05 - 0.1 * t / (n / sr))  # slight declination
    phase = 2 * np.pi * np.cumsum(f0_t) / sr
    f0 = recipe["f0"]
    out = np.zeros(n)
    for i, letter in enumerate(recipe["letters"]):
        i0, i1 = int(bounds[i]), int(bounds[i + 1])
        m = i1 - i0
        if m <= 0:
            continue
        if letter in _VOWELS:
            y = _harmonics(phase[i0:i1], f0, _VOWELS[letter][1], sr)
        else:
            manner, voiced, spec = _CONSONANTS[letter]
            if manner == "sonorant":
                y = 0.5 * _harmonics(phase[i0:i1], f0, spec, sr)
            elif manner == "fricative":
                y = 0.35 * _band_noise(rng, m, spec, sr)
                if voiced:
                    y += 0.15 * _harmonics(phase[i0:i1], f0, (250.0, 1200.0, 2500.0), sr)
            else:  # stop: closure (voicing bar if voiced) then a decaying burst
                y = np.zeros(m)
                closure = m // 2
                if voiced:
                    y[:closure] = 0.08 * _harmonics(phase[i0:i0 + closure], f0, (200.0, 600.0, 2500.0), sr) \
                        if closure > 0 else 0.0
                burst = m - closure
                decay = np.exp(-np.arange(burst) / max(0.015 * sr, 1.0))
                y[closure:] = 0.6 * _band_noise(rng, burst, spec, sr) * decay
        out[i0:i1] += y * _ramp(m, sr)
    out *= _ramp(n, sr, 0.005)
    out *= 0.5 * recipe["gain"] / (np.abs(out).max() + 1e-12)
    return out, bounds


def _make_story(story: str, uid: int, vocab: list[dict[str, Any]], p: dict[str, Any],
                rng: np.random.Generator) -> dict[str, Any]:
    """Word sequence, sentence structure and wav files (int16) of one story."""
    sr = p["audio_sfreq"]
    n_sounds = max(1, int(round(p["story_duration_s"] / _SOUND_TARGET_S)))
    target = p["story_duration_s"] / n_sounds
    zipf = 1.0 / (np.arange(len(vocab)) + 2.0)
    zipf /= zipf.sum()
    sounds = []
    seq = 0
    word_index = 0
    for k in range(n_sounds):
        placed: list[tuple[int, float, int, int]] = []  # (vocab index, onset s in wav, word_index, sequence_id)
        t, prev_pause = _LEAD_S, 0.0
        while True:
            n_w = int(rng.integers(4, 11))
            choice = rng.choice(len(vocab), size=n_w, p=zipf)
            gaps = rng.uniform(0.05, 0.25, n_w - 1)
            dur = sum(vocab[int(c)]["duration"] for c in choice) + gaps.sum()
            pause = float(rng.uniform(0.5, 0.9))
            over = t + dur + _TAIL_S - target
            if placed and over > 0 and over > target - (t - prev_pause + _TAIL_S):
                break  # the sentence would overshoot the target by more than stopping now undershoots it
            for j, c in enumerate(choice):
                placed.append((int(c), t, word_index, seq))
                word_index += 1
                t += vocab[int(c)]["duration"] + (gaps[j] if j < n_w - 1 else 0.0)
            seq += 1
            t += pause
            prev_pause = pause
            if t + _TAIL_S >= target:
                break
        last = placed[-1]
        n_samples = int(round((last[1] + vocab[last[0]]["duration"] + _TAIL_S) * sr))
        audio = _NOISE_FLOOR * rng.standard_normal(n_samples)
        words = []
        for vi, onset, widx, sid in placed:
            wave, bounds = vocab[vi]["wave"], vocab[vi]["bounds_samples"]
            i0 = int(round(onset * sr))
            audio[i0:i0 + len(wave)] += wave
            words.append({"vocab": vi, "start": i0, "word_index": widx, "sequence_id": sid,
                          "n_samples": len(wave), "bounds": bounds})
        pcm = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype(np.int16)
        sounds.append({"sound_id": k, "file": f"stimuli/audio/{story}_{k}.wav", "pcm": pcm, "words": words})
    return {"story": story, "uid": uid, "sounds": sounds, "n_words": word_index, "n_sentences": seq}


# ============================================================================
# Recordings
# ============================================================================
def _event(kind: str, story: dict[str, Any], sound: dict[str, Any], **extra: Any) -> str:
    d = {"kind": kind, "story": story["story"], "story_uid": story["uid"], "sound_id": sound["sound_id"],
         "sound": sound["file"], **extra}
    return repr(d)


def _recording_layout(story: dict[str, Any], vocab: list[dict[str, Any]], sfreq: float, sr: int,
                      rng: np.random.Generator) -> dict[str, Any]:
    """Sound onsets (on the MEG sample grid), the played audio and the annotations of one recording."""
    t_meg = int(round(rng.uniform(1.0, 2.0) * sfreq))
    onsets_audio = []
    for s in story["sounds"]:
        i0 = int(round(t_meg * sr / sfreq))
        onsets_audio.append(i0)
        t_meg = int(math.ceil((i0 + len(s["pcm"])) * sfreq / sr + rng.uniform(0.5, 1.5) * sfreq))
    n_times = int(t_meg + round(1.0 * sfreq))
    n_audio = int(round(n_times * sr / sfreq))
    played = _NOISE_FLOOR * rng.standard_normal(n_audio)  # background between the wav files
    onset, duration, desc = [], [], []
    for s, i0 in zip(story["sounds"], onsets_audio):
        pcm = s["pcm"].astype(np.float64) / 32767.0
        played[i0:i0 + len(pcm)] = pcm
        onset.append(i0 / sr)
        duration.append(len(pcm) / sr)
        desc.append(_event("sound", story, s))
        for w in s["words"]:
            recipe = vocab[w["vocab"]]
            w0 = i0 + w["start"]
            common = {"sequence_id": w["sequence_id"], "condition": "sentence", "word": recipe["word"],
                      "word_index": w["word_index"], "pronounced": 1.0}
            onset.append(w0 / sr)
            duration.append(w["n_samples"] / sr)
            desc.append(_event("word", story, s, **common))
            b = w["bounds"]
            letters = recipe["letters"]
            for j, letter in enumerate(letters):
                # + 1 us: MNE sorts annotations by (onset, duration), which would put the (shorter) first
                # phoneme before its word; MEG-MASC lists each word right before its phonemes
                onset.append((w0 + b[j]) / sr + (1e-6 if j == 0 else 0.0))
                duration.append((b[j + 1] - b[j]) / sr)
                desc.append(_event("phoneme", story, s, **common,
                                   phoneme=_phoneme_label(letter, j, len(letters))))
    return {"n_times": n_times, "played": played, "onset": np.array(onset), "duration": np.array(duration),
            "description": desc, "sound_onsets_s": [i0 / sr for i0 in onsets_audio]}


def _source_model(n_ch: int, n_mels: int, planted: np.ndarray, similarity: float, own: np.random.Generator,
                  shared: np.random.Generator) -> dict[str, np.ndarray]:
    """Auditory sources of one subject (response="nonlinear").

    Source ``k`` has a Gaussian tonotopic tuning over the mel bands (preferred band uniform, width
    1-3 bands per 20 bands), an onset weight ``beta_k`` in [0, 1] and a topography over the planted
    channels (``sqrt(s)·shared + sqrt(1 - s)·own``); the tuning is drawn from ``shared`` (tonotopy is
    common to all listeners) and jittered per subject.
    """
    band = np.arange(n_mels)[None, :]
    centre = shared.uniform(0, n_mels - 1, _N_SOURCES) + own.normal(0, 0.5, _N_SOURCES)
    width = shared.uniform(1.0, 3.0, _N_SOURCES) * max(n_mels / 20.0, 0.5)
    tuning = np.exp(-0.5 * ((band - centre[:, None]) / width[:, None]) ** 2)
    tuning /= tuning.sum(1, keepdims=True)
    beta = shared.uniform(0.0, 1.0, _N_SOURCES)
    topo = (np.sqrt(similarity) * shared.standard_normal((n_ch, _N_SOURCES))
            + np.sqrt(1 - similarity) * own.standard_normal((n_ch, _N_SOURCES))) * planted[:, None]
    return {"tuning": tuning, "beta": beta, "topo": topo}


def _zscore(a: np.ndarray) -> np.ndarray:
    sd = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _latency_drift(rng: np.random.Generator, n_times: int, sfreq: float) -> np.ndarray:
    """A slowly varying response latency (s): smoothed Gaussian noise, std LATENCY_SD, clipped."""
    from scipy.ndimage import gaussian_filter1d

    tau = gaussian_filter1d(rng.standard_normal(n_times), _JITTER_TIMESCALE_S * sfreq, mode="wrap")
    tau *= meeg.LATENCY_SD / max(float(tau.std()), 1e-12)
    return np.clip(tau, -meeg.LATENCY_MAX, meeg.LATENCY_MAX)


def _planted_signal(played: np.ndarray, n_times: int, W: np.ndarray, planted: np.ndarray, kernel: np.ndarray,
                    p: dict[str, Any], sources: dict[str, np.ndarray] | None = None,
                    jitter_rng: np.random.Generator | None = None) -> np.ndarray:
    """(n_channels, n_times) speech response, unit std in every planted channel, 0 elsewhere.

    Linear: ``W @ (h * mel)``. With ``sources`` (response="nonlinear", :func:`_source_model`): source
    ``k`` is driven by ``u_k = h * ((1 - beta_k) z(e_k) + beta_k z([de_k/dt]+))`` with
    ``e_k = tuning_k @ mel``,
    responds ``naka_rushton(z(u_k))``, delayed by a slowly varying latency drawn from ``jitter_rng``,
    and the sensors see ``topo @ a``.
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import fftconvolve

    from ..preprocessing.audio import melspectrogram

    mel = melspectrogram(played, p["audio_sfreq"], n_mels=p["n_mels"], frame_rate=p["sfreq"],
                         fmin=_MEL_FMIN).astype(np.float64)
    if len(mel) < n_times:  # rounding of the frame count: hold the last frame
        mel = np.concatenate([mel, np.repeat(mel[-1:], n_times - len(mel), axis=0)])
    mel = mel[:n_times]
    std = mel.std(axis=0)
    mel = (mel - mel.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if sources is None:
        drive = fftconvolve(mel, kernel[:, None], axes=0)[:n_times]  # causal: lag l uses mel[t - l]
        sig = W @ drive.T
    else:
        env = mel @ sources["tuning"].T  # (n_times, n_sources): band-limited log-envelope
        onset = np.maximum(gaussian_filter1d(env, _ONSET_SIGMA_S * p["sfreq"], axis=0, order=1), 0.0)
        beta = sources["beta"][None, :]
        u = (1 - beta) * _zscore(env) + beta * _zscore(onset)
        u = fftconvolve(u, kernel[:, None], axes=0)[:n_times]
        act = meeg.naka_rushton(_zscore(u))
        if jitter_rng is not None:  # response at t is the one due at t - tau(t)
            t = np.arange(n_times, dtype=float)
            src = t - _latency_drift(jitter_rng, n_times, p["sfreq"]) * p["sfreq"]
            act = np.stack([np.interp(src, t, a) for a in act.T], axis=1)
        sig = sources["topo"] @ act.T
    sig -= sig.mean(axis=1, keepdims=True)
    sd = sig[planted].std(axis=1, keepdims=True)
    sig[planted] /= np.where(sd > 0, sd, 1.0)
    sig[~planted] = 0.0
    return sig


def _make_info(n_channels: int, sfreq: float) -> Any:
    import mne
    from mne.transforms import Transform

    names = meeg.meg_channel_names(n_channels)
    pos = meeg.helmet_positions(n_channels)
    info = mne.create_info(names, sfreq, "mag")
    centre = np.array([0.0, 0.0, 0.04])  # centre of the helmet sphere
    for ch, r in zip(info["chs"], pos):
        ez = (r - centre) / np.linalg.norm(r - centre)  # radial coil normal
        helper = np.array([0.0, 0.0, 1.0]) if abs(ez[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        ex = np.cross(helper, ez)
        ex /= np.linalg.norm(ex)
        ey = np.cross(ez, ex)
        ch["loc"][:] = np.concatenate([r, ex, ey, ez])
    # sensor positions are given in head coordinates: the device frame coincides with the head frame
    with info._unlock():
        info["dev_head_t"] = Transform("meg", "head", np.eye(4))
    info["line_freq"] = 50.0
    return info


def write_masc(root: Path, p: dict[str, Any]) -> dict[str, Any]:
    """Write a complete simulated MEG-MASC into ``root``; return the ground truth for the JSON."""
    for module in ("mne", "mne_bids"):  # before any file is written
        import_optional(module, extra="meeg", what="simulated MEG-MASC files")
    seed, sr, sfreq = p["seed"], p["audio_sfreq"], p["sfreq"]

    def rng_for(*key: int) -> np.random.Generator:
        return np.random.default_rng([seed, *key])

    vocab, stories = _write_stories(root, p, rng_for)
    n_ch = p["n_channels"]
    names = meeg.meg_channel_names(n_ch)
    pos = meeg.helmet_positions(n_ch)
    planted = meeg.signal_channel_mask(names, pos, p["signal_channels"])
    lags, kernel = _lag_kernel(p["signal_window"], sfreq)
    info = _make_info(n_ch, sfreq)

    jobs = [(sub, ses, t) for sub in range(1, p["n_subjects"] + 1) for ses in range(p["n_sessions"])
            for t in range(p["n_stories"])]
    subjects: dict[str, Any] = {}
    recordings: dict[str, Any] = {}
    weights: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    nonlinear = p.get("response", "linear") == "nonlinear"
    sources: dict[int, dict[str, np.ndarray]] = {}
    for sub, ses, t in ProgressBar(jobs, total=len(jobs), desc="Simulating MEG-MASC", unit="recording"):
        if sub not in weights:
            weights[sub] = _subject_weights(p, planted, rng_for(4, sub), rng_for(4, 0))
            if nonlinear:
                sources[sub] = _source_model(n_ch, p["n_mels"], planted, p["subject_similarity"],
                                             rng_for(10, sub), rng_for(10, 0))
            subjects[f"{sub:02d}"] = {"n_channels": n_ch, "signal_channels": [c for c, m in zip(names, planted)
                                                                             if m]}
        W, gain = weights[sub]
        lay = _recording_layout(stories[t], vocab, sfreq, sr, rng_for(5, sub, ses, t))
        sig = _planted_signal(lay["played"], lay["n_times"], W, planted, kernel, p, sources.get(sub),
                              rng_for(11, sub, ses, t) if nonlinear else None)
        data = _recording_data(sig, gain, pos, p, rng_for(6, sub, ses, t))
        basename = _write_recording(root, data, info, lay, sub, ses, t)
        recordings[basename] = {"n_times": lay["n_times"], "duration_s": lay["n_times"] / sfreq,
                                "sound_onsets_s": lay["sound_onsets_s"]}
    _write_readme(root, p, stories)
    return _masc_truth(p, subjects, stories, vocab, recordings, lags, kernel, nonlinear)


def _write_stories(root: Path, p: dict[str, Any],
                   rng_for: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Render the vocabulary, build the stories (shared by every subject and session), write their wavs.

    Returns the vocabulary and the stories.
    """
    from scipy.io import wavfile

    sr = p["audio_sfreq"]
    vocab = _make_vocabulary(rng_for(1), _N_VOCAB)
    render_rng = rng_for(2)
    for recipe in vocab:
        recipe["wave"], recipe["bounds_samples"] = _render_word(recipe, sr, render_rng)
    stories = [_make_story(STORIES[t], t, vocab, p, rng_for(3, t)) for t in range(p["n_stories"])]
    audio_dir = root / "stimuli" / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for story in stories:
        for s in story["sounds"]:
            wavfile.write(root / s["file"], sr, s["pcm"])
    logger.info("Wrote %d stories (%d wav files, %d words)", len(stories),
                sum(len(s["sounds"]) for s in stories), sum(s["n_words"] for s in stories))
    return vocab, stories


def _subject_weights(p: dict[str, Any], planted: np.ndarray, rng: np.random.Generator,
                     shared_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mel-to-sensor weights (n_channels, n_mels; 0 off the planted channels) and sensor gains (T).

    The weights mix a part shared by every subject (``shared_rng``) and an own part (``rng``):
    ``sqrt(similarity) * shared + sqrt(1 - similarity) * own``.
    """
    n_ch = len(planted)
    sim = p["subject_similarity"]
    shared = shared_rng.standard_normal((n_ch, p["n_mels"]))
    W = (np.sqrt(sim) * shared + np.sqrt(1 - sim) * rng.standard_normal((n_ch, p["n_mels"]))) \
        * planted[:, None]
    gain = _GAIN_T * rng.lognormal(0.0, 0.15, n_ch)
    return W, gain


def _recording_data(sig: np.ndarray, gain: np.ndarray, pos: np.ndarray, p: dict[str, Any],
                    rng: np.random.Generator) -> np.ndarray:
    """Sensor data (T) of one recording: ``(snr * sig + noise + DC + linear trend + slow sinusoid) * gain``.

    ``sig`` (n_channels, n_times) is the unit planted signal; ``rng`` draws the noise and the drifts.
    """
    n_ch, n_times = sig.shape
    sfreq = p["sfreq"]
    noise = meeg.sensor_noise(rng, 1, pos, n_times, sfreq)[0].astype(np.float64)
    tt = np.arange(n_times) / sfreq
    span = n_times / sfreq
    dc = rng.normal(0.0, 20.0, (n_ch, 1))
    trend = rng.normal(0.0, 5.0, (n_ch, 1)) * (tt / span - 0.5)
    slow_f = rng.uniform(0.002, 0.02)
    slow = rng.normal(0.0, 3.0, (n_ch, 1)) * np.sin(2 * np.pi * slow_f * tt + rng.uniform(0, 2 * np.pi,
                                                                                          (n_ch, 1)))
    return (p["snr"] * sig + noise + dc + trend + slow) * gain[:, None]


def _write_recording(root: Path, data: np.ndarray, info: Any, lay: dict[str, Any], sub: int, ses: int,
                     t: int) -> str:
    """Write one recording (single-precision FIF with its annotations) with MNE-BIDS; return its basename."""
    import mne
    import mne_bids

    raw = mne.io.RawArray(data, info.copy(), verbose=False)
    raw.set_meas_date(datetime.datetime(2021, 3, 1, 9, 0, tzinfo=datetime.timezone.utc)
                      + datetime.timedelta(days=7 * sub + 2 * ses, minutes=20 * t))
    raw.set_annotations(mne.Annotations(lay["onset"], lay["duration"], lay["description"]))
    # MNE-BIDS saves FIF in the raw's original precision (double for a RawArray): go through a
    # single-precision file, as real recordings are stored, to halve the size on disk
    tmp_fif = root / ".tmp_raw.fif"
    raw.save(tmp_fif, fmt="single", overwrite=True, verbose=False)
    raw = mne.io.read_raw_fif(tmp_fif, preload=True, verbose=False)
    tmp_fif.unlink()
    bids_path = mne_bids.BIDSPath(subject=f"{sub:02d}", session=str(ses), task=str(t), root=root,
                                  datatype="meg")
    mne_bids.write_raw_bids(raw, bids_path, format="FIF", allow_preload=True, overwrite=True, verbose=False)
    return bids_path.basename


def _masc_truth(p: dict[str, Any], subjects: dict[str, Any], stories: list[dict[str, Any]],
                vocab: list[dict[str, Any]], recordings: dict[str, Any], lags: np.ndarray, kernel: np.ndarray,
                nonlinear: bool) -> dict[str, Any]:
    """The ground truth of a simulated MEG-MASC for ``simulation.json``."""
    sr = p["audio_sfreq"]
    return {
        "signal_channels": subjects[f"{1:02d}"]["signal_channels"],
        "signal_regions": p["signal_channels"],
        "signal_window": p["signal_window"],
        "lag_kernel": {"lags_s": lags.tolist(), "weights": kernel.tolist()},
        "subjects": subjects,
        "stories": {s["story"]: {"task": str(s["uid"]), "n_sounds": len(s["sounds"]), "n_words": s["n_words"],
                                 "n_sentences": s["n_sentences"],
                                 "sounds": [x["file"] for x in s["sounds"]],
                                 "sound_durations_s": [len(x["pcm"]) / sr for x in s["sounds"]]}
                    for s in stories},
        "n_words": int(sum(s["n_words"] for s in stories)),
        "vocabulary": [w["word"] for w in vocab],
        "recordings": recordings,
        "model": {"mel": {"n_mels": p["n_mels"], "fmin_hz": _MEL_FMIN, "frame_rate": "sfreq",
                          "function": "neurodecode.preprocessing.audio.melspectrogram",
                          "normalization": "each band z-scored over the recording"},
                  "signal": "snr * (W @ (h * mel)) / std, W ~ N(0, 1) on the planted channels (per subject)",
                  "noise": "unit-variance spatially/temporally correlated sensor noise",
                  "drift": "DC ~ N(0, 20), linear trend ~ N(0, 5), 0.002-0.02 Hz sinusoid ~ N(0, 3) (noise units)",
                  "gain_tesla": _GAIN_T, "audio_noise_floor_rms": _NOISE_FLOOR,
                  **({"response": "nonlinear", "nonlinear": {
                      "n_sources": _N_SOURCES, "naka_rushton_c50": meeg.NR_C50,
                      "onset_sigma_s": _ONSET_SIGMA_S, "latency_sd_s": meeg.LATENCY_SD,
                      "latency_max_s": meeg.LATENCY_MAX, "latency_timescale_s": _JITTER_TIMESCALE_S,
                      "signal": ("snr * (topo @ a(t - tau(t))) / std, a_k = naka_rushton(z(h * ((1-beta_k) "
                                 "z(e_k) + beta_k z([de_k/dt]+)))), e_k = tonotopic tuning_k @ mel"),
                  }} if nonlinear else {})},
    }


def _write_readme(root: Path, p: dict[str, Any], stories: list[dict[str, Any]]) -> None:
    lines = [
        "Simulated MEG-MASC (neurodecode.datasets.simulate('masc'))",
        "==========================================================",
        "",
        "NOT real data. The BIDS layout of MEG-MASC (Gwilliams et al. 2023) with synthetic speech-like",
        "stories and MEG recordings whose planted channels follow the log-mel spectrogram of the audio.",
        "",
        f"Subjects: {p['n_subjects']}; sessions: {p['n_sessions']}; tasks (stories): "
        + ", ".join(f"{s['uid']} = {s['story']}" for s in stories),
        f"MEG: {p['n_channels']} magnetometers at {p['sfreq']:g} Hz; audio: {p['audio_sfreq']} Hz mono int16.",
        f"Planted channels: {p['signal_channels']}, lags {p['signal_window']} s, snr {p['snr']:g}.",
        "Events: trial_type is a Python dict literal (kind = sound | word | phoneme).",
        "Parameters and ground truth: simulation.json.",
    ]
    (root / "README").write_text("\n".join(lines) + "\n", encoding="utf-8")
