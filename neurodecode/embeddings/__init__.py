"""Stimulus embeddings: the targets decoders learn to predict.

:class:`StimulusEmbeddings` is the lookup table stimulus id → vector. Stimulus
encoders return such a table: :func:`embed_images` (``"pixels"`` or any open_clip
model), :func:`embed_captions` (open_clip text), :func:`embed_audio` (wav2vec2-style
speech models). :class:`EmbeddingCache` keeps computed embeddings on disk.
:func:`embed_melspec` gives weight-free log-mel spectrogram targets of audio.
Heavy libraries (torch, open_clip, transformers) are imported on first use.
"""

from typing import Any

from ._table import StimulusEmbeddings

__all__ = ["ClipEncoder", "EmbeddingCache", "SpeechEncoder", "StimulusEmbeddings", "embed_audio",
           "embed_captions", "embed_images", "hash_weights"]

_LAZY = {
    "ClipEncoder": "clip", "embed_captions": "clip", "EmbeddingCache": "cache", "hash_weights": "cache",
    "SpeechEncoder": "speech", "embed_audio": "speech", "embed_images": "pixels",
}
__all__ += ["embed_melspec", "mel_filterbank", "melspectrogram"]
_LAZY.update({"embed_melspec": "melspec", "mel_filterbank": "melspec", "melspectrogram": "melspec"})
__all__ += ["embed_lowlevel", "load_vae"]
_LAZY.update({"embed_lowlevel": "lowlevel", "load_vae": "lowlevel"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
