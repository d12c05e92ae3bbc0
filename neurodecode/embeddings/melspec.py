"""Weight-free speech targets: log-mel spectrograms of a StimulusSet's audio.

brainmagick's Mel-spectrogram target: no model weights are needed, the
features are a fixed transform of the waveform. The numpy computation lives in
:mod:`neurodecode.preprocessing.audio` (so the MEG-MASC simulator can use it);
:func:`mel_filterbank` and :func:`melspectrogram` are re-exported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..preprocessing.audio import mel_filterbank, melspectrogram
from ..utils import ProgressBar, fill_doc, logger, verbose

__all__ = ["embed_melspec", "mel_filterbank", "melspectrogram"]

_CHUNK = 256  # stimuli read and transformed at once


@verbose
@fill_doc
def embed_melspec(stimuli: Any, stimulus_ids: Any = None, *, n_mels: int = 20, frame_rate: float = 10.0,
                  standardize: bool = True, verbose: bool | str | int | None = None):
    """Log-mel spectrograms of the audio segments of a StimulusSet.

    Each segment becomes ``log(1e-10 + mel power)`` on frames centred at
    ``k / frame_rate`` s from its start (see :func:`melspectrogram`; bands
    from 50 Hz to the Nyquist frequency), i.e. ``round(duration_s *
    frame_rate)`` frames of ``n_mels`` bands.

    Parameters
    ----------
    stimuli : StimulusSet
        With ``audio`` (equal-length segments, shape (n, n_samples)) and ``sfreq_audio``.
    stimulus_ids : sequence | None
        Which stimuli (default: all), duplicates dropped.
    n_mels : int
        Number of mel bands.
    frame_rate : float
        Frames per second. Use the brain data's sampling rate to put the
        frames on its time base (frame ``j`` at ``j / frame_rate`` s).
    standardize : bool
        Z-score each mel band over all frames of all the stimuli passed in
        (``stimulus_ids``), so the statistics depend on which stimuli are
        embedded together. This is a fixed transform of the audio — no brain
        data is involved — so computing it on train and test stimuli together
        leaks no brain information. A band with zero variance is only centred.
    %(verbose)s

    Returns
    -------
    embeddings : StimulusEmbeddings
        Rows are the flattened ``(n_frames, n_mels)`` spectrograms (C order)
        with ``token_shape = (n_frames, n_mels)`` and name ``"melspec
        {n_mels}x{n_frames}"``; ``lookup(ids, as_tokens=True)`` gives the 3-D array.

    Raises
    ------
    ValueError
        The StimulusSet has no audio or no ``sfreq_audio``, or invalid parameters.

    Examples
    --------
    >>> emb = embed_melspec(trials.stimuli, n_mels=20, frame_rate=10)  # doctest: +SKIP
    >>> emb.lookup(ids, as_tokens=True).shape  # doctest: +SKIP
    (n, n_frames, 20)
    """
    from ._table import StimulusEmbeddings

    if stimuli is None or "audio" not in getattr(stimuli, "kinds", []):
        raise ValueError("embed_melspec needs a StimulusSet with audio (this one has none).")
    if not stimuli.sfreq_audio:
        raise ValueError("The StimulusSet has audio but no sfreq_audio; set StimulusSet(..., sfreq_audio=...).")
    ids = list(stimuli.ids if stimulus_ids is None else dict.fromkeys(stimulus_ids))
    if not ids:
        raise ValueError("embed_melspec got no stimulus ids to embed.")
    sfreq = float(stimuli.sfreq_audio)
    chunks = []
    starts = range(0, len(ids), _CHUNK)
    for start in ProgressBar(starts, total=len(starts), desc="Mel spectrograms", unit="chunk"):
        audio = stimuli.get_audio(ids[start:start + _CHUNK])
        chunks.append(melspectrogram(np.asarray(audio), sfreq, n_mels=n_mels, frame_rate=frame_rate))
    values = np.concatenate(chunks)  # (n, n_frames, n_mels) float32
    if standardize:
        mean = values.mean(axis=(0, 1), dtype=np.float64)
        std = values.std(axis=(0, 1), dtype=np.float64)
        std[std == 0] = 1.0
        values = ((values - mean) / std).astype(np.float32)
    n_frames = values.shape[1]
    logger.info("Log-mel spectrograms of %d audio segments: %d frames × %d bands each", len(ids), n_frames,
                n_mels)
    return StimulusEmbeddings(ids, values.reshape(len(values), -1), name=f"melspec {n_mels}x{n_frames}",
                              token_shape=(n_frames, n_mels))
