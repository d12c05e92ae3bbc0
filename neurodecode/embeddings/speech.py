"""Speech encoder (wav2vec2-style, via transformers) with outputs on the brain's time base.

:class:`SpeechEncoder` runs a ``transformers.Wav2Vec2Model`` loaded from a local
folder (``config.json`` + weights), takes the hidden states of one layer (about
50 frames per second for 16 kHz models) and resamples them by linear
interpolation to the sampling rate of the brain data (e.g. 120 Hz MEG), so frame
``j`` of the output lines up with brain sample ``j`` of the segment.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import ProgressBar, fill_doc, logger, resolve_device, verbose
from ..utils.imports import import_optional
from .hub import looks_like_repo_id, resolve_hf_snapshot

#: Weight files a transformers model folder holds (one is enough).
SPEECH_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                       "pytorch_model.bin.index.json")


def _import_transformers():
    return import_optional("transformers", extra="speech", what="Speech encoders")


def resolve_speech_weights(weights: str | Path) -> Path:
    """Return the local model folder for ``weights`` (never downloads).

    Parameters
    ----------
    weights : str | Path
        A folder with ``config.json`` and ``model.safetensors`` (or
        ``pytorch_model.bin``), e.g. written by ``Wav2Vec2Model.save_pretrained``,
        or a Hugging Face repo id (``"facebook/wav2vec2-base"``) already in the
        local HF cache.

    Returns
    -------
    folder : Path

    Raises
    ------
    FileNotFoundError
        Naming the folder expected and the files it must hold.
    """
    if isinstance(weights, str) and looks_like_repo_id(weights):
        return resolve_hf_snapshot(weights, what="speech model", needs=SPEECH_WEIGHT_FILES)
    folder = Path(weights).expanduser()
    fix = ("It must be a folder holding config.json and model.safetensors (or pytorch_model.bin), e.g. "
           "written by Wav2Vec2Model.save_pretrained(folder), or the snapshots/<revision>/ folder of the model "
           "in a Hugging Face cache. Nothing is downloaded.")
    if not folder.exists():
        raise FileNotFoundError(f"Speech model folder not found: {folder}. {fix}")
    if not folder.is_dir():
        raise NotADirectoryError(f"Speech model weights must be a folder, got a file: {folder}. {fix}")
    missing = [n for n in ("config.json",) if not (folder / n).is_file()]
    if not any((folder / n).is_file() for n in SPEECH_WEIGHT_FILES):
        missing.append("model.safetensors (or pytorch_model.bin)")
    if missing:
        raise FileNotFoundError(f"The speech model folder {folder} lacks {missing}. {fix}")
    return folder


def _receptive_field(kernels: Any, strides: Any) -> tuple[int, int]:
    """(receptive field, hop) in input samples of a stack of 1-D convolutions."""
    rf, hop = 1, 1
    for k, s in zip(kernels, strides):
        rf += (int(k) - 1) * hop
        hop *= int(s)
    return rf, hop


def resample_frames(frames: np.ndarray, frame_times: np.ndarray, target_times: np.ndarray) -> np.ndarray:
    """Linearly interpolate ``frames`` along time (axis 1), holding the edge values.

    Parameters
    ----------
    frames : array, shape (n, n_frames, dim)
    frame_times : array, shape (n_frames,)
        Increasing times of the frames in seconds.
    target_times : array, shape (n_times,)

    Returns
    -------
    out : array of float32, shape (n, n_times, dim)
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.shape[1] == 1:
        return np.repeat(frames, len(target_times), axis=1)
    t = np.clip(target_times, frame_times[0], frame_times[-1])
    right = np.clip(np.searchsorted(frame_times, t, side="right"), 1, len(frame_times) - 1)
    left = right - 1
    w = ((t - frame_times[left]) / (frame_times[right] - frame_times[left])).astype(np.float32)
    return frames[:, left] * (1 - w)[None, :, None] + frames[:, right] * w[None, :, None]


@fill_doc
class SpeechEncoder:
    """A wav2vec2-style speech model (transformers) from a local folder.

    Parameters
    ----------
    weights : str | Path | None
        A local model folder or a Hugging Face repo id in the local HF cache
        (see :func:`resolve_speech_weights`). None: random weights, only with
        ``allow_random=True``.
    layer : int
        Which entry of ``hidden_states`` to return: 0 is the input of the
        transformer (projected CNN features), ``i`` the output of layer ``i``,
        -1 the last layer.
    allow_random : bool
        Allow ``weights=None`` (tests); the architecture then comes from ``config``.
    config : dict | None
        ``transformers.Wav2Vec2Config`` arguments for random weights.
    random_state : int
        Seed of the random initialisation (the global torch RNG is untouched).
    device : str
        Torch device (``"cpu"``, ``"cuda"``, ``"auto"``).
    batch_size : int
        Segments per forward pass.
    %(verbose)s

    Attributes
    ----------
    model_ : transformers.Wav2Vec2Model
    sfreq_model : float
        Input sampling rate the model expects (``preprocessor_config.json``,
        default 16000 Hz).
    frame_rate : float
        Output frames per second (``sfreq_model / hop``; 50 Hz for wav2vec2).
    do_normalize : bool
        Whether each segment is z-scored before the model (as its feature extractor does).
    """

    @verbose
    def __init__(self, weights: str | Path | None = None, *, layer: int = -1, allow_random: bool = False,
                 config: dict[str, Any] | None = None, random_state: int = 0, device: str = "cpu",
                 batch_size: int = 8, verbose: bool | str | int | None = None) -> None:
        import torch

        transformers = _import_transformers()
        if weights is None and not allow_random:
            raise ValueError("SpeechEncoder needs weights=: a local model folder (config.json + "
                             "model.safetensors) or a Hugging Face repo id in your local HF cache (nothing is "
                             "downloaded). Random weights are only used with allow_random=True (tests).")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.weights = weights
        self.layer = int(layer)
        self.allow_random = allow_random
        self.random_state = int(random_state)
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        folder = None if weights is None else resolve_speech_weights(weights)
        self.weights_path_ = folder
        if folder is not None:
            try:
                model = transformers.Wav2Vec2Model.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError) as err:
                raise OSError(f"Could not load a Wav2Vec2Model from {folder}: {err}") from err
            logger.info("Loaded speech model %s from %s", type(model).__name__, folder)
        else:
            cfg = transformers.Wav2Vec2Config(**(config or {}))
            with torch.random.fork_rng(devices=[]):
                torch.random.manual_seed(self.random_state)
                model = transformers.Wav2Vec2Model(cfg)
            logger.warning("Speech model uses RANDOM weights (allow_random=True); embeddings are meaningless "
                           "except for tests.")
        self.config_ = model.config
        n_states = int(model.config.num_hidden_layers) + 1
        if not -n_states <= self.layer < n_states:
            raise ValueError(f"layer={layer} is out of range: this model has {n_states} hidden states "
                             f"(0 … {n_states - 1}, or negative from the end)")
        self.model_ = model.to(self.device).eval()
        pre = {}
        if folder is not None and (folder / "preprocessor_config.json").is_file():
            pre = json.loads((folder / "preprocessor_config.json").read_text())
        self.sfreq_model = float(pre.get("sampling_rate", 16000))
        self.do_normalize = bool(pre.get("do_normalize", True))
        rf, hop = _receptive_field(model.config.conv_kernel, model.config.conv_stride)
        self.receptive_field = rf
        self.hop = hop
        self.frame_rate = self.sfreq_model / hop
        self._weights_hash: str | None = None

    def __repr__(self) -> str:
        src = self.weights_path_ if self.weights_path_ is not None else "random weights"
        return (f"<SpeechEncoder | {type(self.model_).__name__} | layer {self.layer} | {src} | "
                f"{self.frame_rate:g} frames/s>")

    @property
    def weights_hash(self) -> str:
        """sha256 of the model folder's weight and config files, or of the config for random weights."""
        if self._weights_hash is None:
            from .cache import hash_config, hash_weights

            if self.weights_path_ is not None:
                self._weights_hash = hash_weights(self.weights_path_)
            else:
                self._weights_hash = hash_config({"speech": self.config_.to_dict(),
                                                  "random_state": self.random_state})
        return self._weights_hash

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Time in seconds of each output frame: the centre of its receptive field.

        Parameters
        ----------
        n_frames : int
            Number of output frames of the model.

        Returns
        -------
        times : ndarray, shape (n_frames,)
            Seconds from the segment start, at the model's own frame rate.
        """
        return (np.arange(n_frames) * self.hop + (self.receptive_field - 1) / 2) / self.sfreq_model

    @verbose
    @fill_doc
    def embed(self, audio: Any, sfreq_audio: float, *, target_sfreq: float | None = None,
              verbose: bool | str | int | None = None) -> np.ndarray:
        """Hidden states of ``layer`` for equal-length audio segments.

        Parameters
        ----------
        audio : array, shape (n_segments, n_samples)
            Mono waveforms (one row per segment).
        sfreq_audio : float
            Sampling rate of ``audio`` in Hz; resampled (polyphase) to the
            model's rate (:attr:`sfreq_model`) when different.
        target_sfreq : float | None
            Resample the output frames to this rate (e.g. the M/EEG sampling
            rate) by linear interpolation along time: then ``n_frames ==
            round(duration_s * target_sfreq)`` and frame ``j`` is at ``j /
            target_sfreq`` s from the segment start. None: the model's own
            frames (:attr:`frame_rate`, times :meth:`frame_times`).
        %(verbose)s

        Returns
        -------
        features : ndarray of float32, shape (n_segments, n_frames, hidden_size)
        """
        import torch
        from scipy.signal import resample_poly

        audio = np.asarray(audio, dtype=np.float64)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2:
            raise ValueError(f"audio must have shape (n_segments, n_samples), got {audio.shape}")
        if not sfreq_audio or sfreq_audio <= 0:
            raise ValueError(f"sfreq_audio must be a positive sampling rate in Hz, got {sfreq_audio}")
        if target_sfreq is not None and target_sfreq <= 0:
            raise ValueError(f"target_sfreq must be positive (Hz) or None, got {target_sfreq}")
        duration = audio.shape[1] / float(sfreq_audio)
        if float(sfreq_audio) != self.sfreq_model:
            ratio = Fraction(self.sfreq_model / float(sfreq_audio)).limit_denominator(1000)
            audio = resample_poly(audio, ratio.numerator, ratio.denominator, axis=1)
            logger.debug("Resampled audio %g → %g Hz", sfreq_audio, self.sfreq_model)
        if audio.shape[1] < self.receptive_field:
            raise ValueError(f"Audio segments of {duration:.4f} s are shorter than the model's receptive field "
                             f"({self.receptive_field / self.sfreq_model:.4f} s)")
        if self.do_normalize:
            audio = (audio - audio.mean(axis=1, keepdims=True)) / np.sqrt(audio.var(axis=1, keepdims=True) + 1e-7)
        dtype = next(self.model_.parameters()).dtype
        out = []
        starts = range(0, len(audio), self.batch_size)
        with torch.inference_mode():
            for start in ProgressBar(starts, total=len(starts), desc="Embedding audio", unit="batch"):
                x = torch.as_tensor(audio[start:start + self.batch_size], dtype=dtype, device=self.device)
                hidden = self.model_(x, output_hidden_states=True).hidden_states[self.layer]
                out.append(hidden.float().cpu().numpy())
        feats = np.concatenate(out) if out else np.zeros((0, 0, int(self.config_.hidden_size)), np.float32)
        if target_sfreq is None or len(feats) == 0:
            return feats.astype(np.float32, copy=False)
        n_times = int(round(duration * float(target_sfreq)))
        return resample_frames(feats, self.frame_times(feats.shape[1]), np.arange(n_times) / float(target_sfreq))


@verbose
@fill_doc
def embed_audio(stimuli: Any, stimulus_ids: Any = None, *, weights: str | Path | SpeechEncoder | None = None,
                layer: int = -1, target_sfreq: float | None = None, cache_dir: str | Path | None = None,
                allow_random: bool = False, device: str = "cpu", batch_size: int = 8,
                verbose: bool | str | int | None = None):
    """Embed the audio segments of a StimulusSet with a speech model.

    Parameters
    ----------
    stimuli : StimulusSet
        With ``audio`` (equal-length segments) and ``sfreq_audio``.
    stimulus_ids : sequence | None
        Which stimuli (default: all), duplicates dropped.
    weights : str | Path | SpeechEncoder | None
        The model folder / cached HF repo id, or a loaded :class:`SpeechEncoder`
        (then ``layer``, ``allow_random``, ``device``, ``batch_size`` are ignored).
    layer : int
        Hidden-state index (see :class:`SpeechEncoder`).
    target_sfreq : float | None
        The brain data's sampling rate, to put the features on its time base.
    cache_dir : str | Path | None
        Cache the embeddings in this folder (:class:`EmbeddingCache`); None: no cache.
    allow_random, device, batch_size : see :class:`SpeechEncoder`
    %(verbose)s

    Returns
    -------
    embeddings : StimulusEmbeddings
        Rows are the flattened ``(n_frames, hidden_size)`` features, with
        ``token_shape = (n_frames, hidden_size)``; use
        ``lookup(ids, as_tokens=True)`` for the 3-D array.
    """
    from ._table import StimulusEmbeddings

    if stimuli is None or "audio" not in getattr(stimuli, "kinds", []):
        raise ValueError("embed_audio needs a StimulusSet with audio (this one has none).")
    if not stimuli.sfreq_audio:
        raise ValueError("The StimulusSet has audio but no sfreq_audio; set StimulusSet(..., sfreq_audio=...).")
    enc = weights if isinstance(weights, SpeechEncoder) else SpeechEncoder(
        weights, layer=layer, allow_random=allow_random, device=device, batch_size=batch_size)
    ids = list(stimuli.ids if stimulus_ids is None else dict.fromkeys(stimulus_ids))

    def compute(some_ids: list[Any]) -> np.ndarray:
        return enc.embed(stimuli.get_audio(some_ids), stimuli.sfreq_audio, target_sfreq=target_sfreq)

    if cache_dir is None:
        values = compute(ids)
    else:
        from .cache import EmbeddingCache

        kind = f"layer{enc.layer}-sfreq{stimuli.sfreq_audio:g}-target{target_sfreq if target_sfreq else 'native'}"
        values = np.asarray(EmbeddingCache(cache_dir).get_or_compute(
            f"speech:{type(enc.model_).__name__}", enc.weights_hash, ids, compute, kind=kind,
            dataset=str(stimuli.source or ""), chunk_size=max(enc.batch_size, 64)))
    logger.info("Embedded %d audio segments: %d frames × %d features each", len(ids), values.shape[1],
                values.shape[2])
    return StimulusEmbeddings(ids, values.reshape(len(values), -1), name=f"speech layer {enc.layer}",
                              token_shape=values.shape[1:])
