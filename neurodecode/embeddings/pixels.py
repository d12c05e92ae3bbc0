"""A weight-free low-level image embedding: contrast-normalised colour thumbnails.

This is the target space of the embedded demo and a useful low-level baseline
(the "pixels" encoder): it needs no pretrained weights, so it works offline on
any machine, and it is a fixed function of each image (nothing is fitted, so no
test statistics can leak into it). Pretrained CLIP/speech encoders are the
targets for real decoding (see ``neurodecode.embeddings`` encoders).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..utils import ProgressBar, fill_doc, logger, verbose


def pixel_features(images: np.ndarray, size: int = 16, grayscale: bool = False) -> np.ndarray:
    """Embed images as contrast-normalised thumbnails.

    Parameters
    ----------
    images : array, shape (n_images, height, width, 3)
        uint8 RGB images (or floats in [0, 1]).
    size : int
        Thumbnail side in pixels; the embedding has ``size * size * 3`` dims
        (``size * size`` when ``grayscale``).
    grayscale : bool
        Average the colour channels first.

    Returns
    -------
    features : array, shape (n_images, n_dims)
        float32, each row with zero mean and unit L2 norm.
    """
    from PIL import Image

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (n, height, width, 3), got {images.shape}")
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    if images.dtype != np.uint8:
        images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    n_dims = size * size * (1 if grayscale else 3)
    out = np.empty((len(images), n_dims), dtype=np.float32)
    for i, img in enumerate(images):
        pil = Image.fromarray(img)
        if grayscale:
            pil = pil.convert("L")
        thumb = np.asarray(pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.float32)
        out[i] = thumb.reshape(-1) / 255.0
    out -= out.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.where(norms > 0, norms, 1.0)
    return out


@verbose
@fill_doc
def embed_images(stimuli: Any, stimulus_ids: Any = None, *, encoder: Any = "pixels", size: int = 16,
                 grayscale: bool = False, batch_size: int | None = None, weights: Any = None,
                 output: str = "pooled", cache_dir: Any = None, verbose: Any = None, **clip_kwargs: Any):
    """Embed the images of a :class:`~neurodecode.datasets.StimulusSet`.

    Parameters
    ----------
    stimuli : StimulusSet
        Where the images come from (read lazily, batch by batch).
    stimulus_ids : sequence | None
        Which stimuli to embed (default: all).
    encoder : str | ClipEncoder
        ``"pixels"``: contrast-normalised colour thumbnails (no weights needed).
        Any other name is an open_clip model (e.g. ``"ViT-L-14"``), or pass a
        loaded :class:`~neurodecode.embeddings.ClipEncoder`: see
        :func:`~neurodecode.embeddings.clip.embed_clip_images`.
    size, grayscale : int, bool
        Options of the ``pixels`` encoder (see :func:`pixel_features`).
    batch_size : int | None
        Images per batch (default 256 for pixels, 32 for CLIP).
    weights : str | Path | None
        CLIP weights: a local file or folder, or a Hugging Face repo id in the
        local HF cache (never downloaded).
    output : ``"pooled"`` | ``"tokens"``
        ``"pooled"``: one vector per image. ``"tokens"``: a token sequence per
        image (CLIP: the ViT's patch tokens; ``pixels``: the same
        contrast-normalised thumbnail read as ``size * size`` one-pixel
        "patch" tokens × RGB, i.e. ``token_shape == (size * size, 3)``, or
        ``(size * size, 1)`` when ``grayscale``). A weight-free stand-in for
        CLIP tokens, e.g. to train a decoder's tokens head on the simulator.
    cache_dir : str | Path | None
        CLIP only: cache the embeddings on disk in this folder.
    %(verbose)s
    **clip_kwargs
        ``device``, ``precision``, ``tokens``, ``allow_random`` of
        :class:`~neurodecode.embeddings.ClipEncoder`.

    Returns
    -------
    embeddings : StimulusEmbeddings
        One row per stimulus id.
    """
    if encoder != "pixels":
        from .clip import embed_clip_images

        return embed_clip_images(stimuli, stimulus_ids, encoder=encoder, weights=weights, output=output,
                                 cache_dir=cache_dir, batch_size=batch_size, **clip_kwargs)
    if output not in ("pooled", "tokens"):
        raise ValueError(f"output must be 'pooled' or 'tokens', got {output!r}")
    if weights is not None or clip_kwargs:
        extra = sorted(clip_kwargs) + (["weights"] if weights is not None else [])
        raise ValueError(f"The 'pixels' encoder takes no {extra}; those options are for CLIP encoders.")
    batch_size = 256 if batch_size is None else int(batch_size)
    from ._table import StimulusEmbeddings

    if stimuli is None or "image" not in getattr(stimuli, "kinds", []):
        raise ValueError("embed_images needs a StimulusSet with images (trials.stimuli was None or had none).")
    ids = list(stimuli.ids if stimulus_ids is None else dict.fromkeys(stimulus_ids))
    chunks = []
    starts = range(0, len(ids), batch_size)
    for start in ProgressBar(starts, total=len(starts), desc="Embedding images", unit="batch"):
        batch = stimuli.get_images(ids[start:start + batch_size])
        chunks.append(pixel_features(batch, size=size, grayscale=grayscale))
    values = np.concatenate(chunks) if chunks else np.zeros((0, size * size * (1 if grayscale else 3)), np.float32)
    logger.info("Embedded %d images with the '%s' encoder (%d dims)", len(ids), encoder, values.shape[1])
    name = f"pixels{size}{'-gray' if grayscale else ''}"
    if output == "tokens":  # rows are (y, x, channel) in C order: size² pixel tokens × channels
        return StimulusEmbeddings(ids, values, name=f"{name} tokens",
                                  token_shape=(size * size, 1 if grayscale else 3))
    return StimulusEmbeddings(ids, values, name=name)
