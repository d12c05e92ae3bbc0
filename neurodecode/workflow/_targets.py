"""Targets of a run: stimulus embeddings (images: pixels / CLIP; speech: log-mel / wav2vec2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import FitConfig
from ..utils import get_data_dir, logger, resolve_device
from ._data import dataset_spec


def _cache_dir(config: FitConfig) -> Path:
    tc = config.targets
    return Path(tc.cache_dir) if tc.cache_dir is not None else get_data_dir() / "embeddings"


def _speech_targets(config: FitConfig, trials: Any, ids: list[Any], train_ids: list[Any]):
    """Speech targets, each feature standardised with statistics of the training stimuli only."""
    from ..embeddings import StimulusEmbeddings

    tc = config.targets
    if tc.encoder == "melspec":
        from ..embeddings import embed_melspec

        raw = embed_melspec(trials.stimuli, ids, n_mels=tc.n_mels, frame_rate=tc.frame_rate,
                            standardize=False)
    else:
        from ..embeddings import embed_audio

        raw = embed_audio(trials.stimuli, ids, weights=tc.weights, layer=tc.layer, target_sfreq=tc.frame_rate,
                          cache_dir=_cache_dir(config), device=resolve_device(config.device))
    frames = raw.lookup(ids, as_tokens=True).astype(np.float32)            # (n, n_frames, n_features)
    train = raw.lookup(train_ids, as_tokens=True).astype(np.float64)
    mean = train.mean(axis=(0, 1))
    std = train.std(axis=(0, 1))
    frames = (frames - mean) / np.where(std > 0, std, 1.0)
    logger.info("Targets: %s, %d frames × %d features per segment (standardised on %d training segments)",
                raw.name, frames.shape[1], frames.shape[2], len(train_ids))
    return StimulusEmbeddings(ids, frames.reshape(len(ids), -1).astype(np.float32), name=raw.name,
                              token_shape=frames.shape[1:])


def stimulus_targets(config: FitConfig, trials: Any) -> tuple[Any, tuple[int, ...] | None]:
    """The pooled target table, and the token shape of the encoder when ``targets.output`` is tokens."""
    from ..embeddings.pixels import embed_images

    tc = config.targets
    ids = trials.events["stimulus_id"].drop_duplicates().tolist()
    if dataset_spec(config).stimulus == "audio":
        train_ids = trials.events.loc[trials.events["split"] == "train", "stimulus_id"].drop_duplicates().tolist()
        return _speech_targets(config, trials, ids, train_ids), None
    if tc.encoder == "pixels":
        pooled = embed_images(trials.stimuli, ids, encoder="pixels", size=tc.size)
        return pooled, ((tc.size * tc.size, 3) if tc.output == "tokens" else None)
    from ..embeddings import ClipEncoder

    enc = ClipEncoder(tc.encoder, tc.weights, device=resolve_device(config.device), tokens=tc.tokens)
    pooled = embed_images(trials.stimuli, ids, encoder=enc, output="pooled", cache_dir=_cache_dir(config))
    token_shape = None
    if tc.output == "tokens":
        # The token sequence's shape sizes the decoder's tokens head (one image is enough).
        first = trials.stimuli.get_images(ids[:1])
        token_shape = tuple(int(v) for v in enc.embed_images(first, outputs=("tokens",))["tokens"].shape[1:])
        logger.info("Targets: %s pooled (%d dims) + tokens %s", tc.encoder, pooled.dim, token_shape)
    return pooled, token_shape


def token_targets(config: FitConfig, trials: Any) -> Any:
    """Token-sequence targets of the stimuli of ``trials`` (pixel tokens, or CLIP tokens via the disk cache)."""
    from ..embeddings.pixels import embed_images

    tc = config.targets
    ids = trials.events["stimulus_id"].drop_duplicates().tolist()
    if tc.encoder == "pixels":
        return embed_images(trials.stimuli, ids, encoder="pixels", size=tc.size, output="tokens")
    from ..embeddings import ClipEncoder

    enc = ClipEncoder(tc.encoder, tc.weights, device=resolve_device(config.device), tokens=tc.tokens)
    return embed_images(trials.stimuli, ids, encoder=enc, output="tokens", cache_dir=_cache_dir(config))


def scoring_targets(config: FitConfig, trials: Any, test: Any, embed_dim: int) -> Any:
    """The table a decoder of ``embed_dim`` outputs is scored against: pooled targets or flattened tokens.

    A model whose output is as wide as the targets' token sequence (MindEye2's ``clip_voxels``, 256 × 1664,
    against the CLIP image tokens, as the original scores retrieval) is scored on the flattened tokens of the
    test stimuli; any other on the pooled targets (a width mismatch is then named by the caller's check).

    Parameters
    ----------
    config : FitConfig
        The run's config (``targets``).
    trials : BrainTrials
        All trials (the pooled table covers their stimuli).
    test : BrainTrials
        The test trials (the token table covers only their stimuli).
    embed_dim : int
        The decoder's output width.

    Returns
    -------
    targets : StimulusEmbeddings
        The pooled targets, or the test stimuli's tokens flattened.
    """
    pooled, token_shape = stimulus_targets(config, trials)
    if int(embed_dim) == int(pooled.dim) or token_shape is None or int(np.prod(token_shape)) != int(embed_dim):
        return pooled
    tokens = token_targets(config, test)
    logger.info("The decoder outputs %d-d embeddings, the targets' token sequence %s flattened: retrieval is "
                "scored on %s", embed_dim, tuple(token_shape), tokens.name)
    return tokens


def lowlevel_targets(config: FitConfig, trials: Any) -> Any:
    """Targets of the ``lowlevel`` head: VAE latents (``models.mlp.lowlevel_vae``) or RGB thumbnails."""
    from ..embeddings.lowlevel import embed_lowlevel, load_vae

    mc = config.models.mlp
    if trials.stimuli is None or "image" not in trials.stimuli.kinds:
        raise ValueError(f"models.mlp.heads has 'lowlevel' but the {config.data.dataset} stimuli have no images; "
                         "remove 'lowlevel' from models.mlp.heads")
    ids = trials.events["stimulus_id"].drop_duplicates().tolist()
    device = resolve_device(config.device)
    if mc.lowlevel_vae is None:
        if mc.lowlevel_size % 4:
            raise ValueError(f"models.mlp.lowlevel_size={mc.lowlevel_size}: RGB thumbnail targets need a multiple "
                             "of 4 (the lowlevel head upsamples twice)")
        return embed_lowlevel(trials.stimuli, ids, size=mc.lowlevel_size)
    vae = load_vae(mc.lowlevel_vae, device=device)
    table = embed_lowlevel(trials.stimuli, ids, size=mc.lowlevel_size, vae=vae, device=device)
    h, w = table.token_shape[1:]
    if h % 4 or w % 4:
        raise ValueError(f"models.mlp.lowlevel_size={mc.lowlevel_size} gives {h}×{w} latents; the lowlevel head "
                         "needs sides that are multiples of 4 (e.g. lowlevel_size 224 → 28×28 with SD's VAE)")
    return table
