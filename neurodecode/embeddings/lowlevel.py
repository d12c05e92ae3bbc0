"""Low-level image targets: what a decoder's ``lowlevel`` head learns (the blurry first stage).

Two kinds, both a :class:`StimulusEmbeddings` table whose ``token_shape`` is
``(channels, height, width)``:

- ``vae=None``: RGB thumbnails in [0, 1], shape ``(3, size, size)``: no weights,
  so it works offline everywhere; the decoded thumbnail is the blurry image.
- ``vae=<AutoencoderKL>``: the image-VAE latents of each stimulus resized to
  ``size`` (MindEye2: Stable Diffusion's VAE on 224-px images → 4 × 28 × 28),
  ``latent_dist.mean × scaling_factor``; the decoded latents go through the same
  VAE to give the blurry image (:func:`neurodecode.tasks.reconstruction.decode_lowlevel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import ProgressBar, fill_doc, logger, verbose
from ._table import StimulusEmbeddings

__all__ = ["embed_lowlevel", "load_vae", "vae_downscale"]


def load_vae(path: str | Path, *, device: Any = "cpu") -> Any:
    """Load a diffusers ``AutoencoderKL`` from the local disk (never downloads).

    Parameters
    ----------
    path : str | Path
        A folder with the autoencoder's ``config.json`` and weights, a diffusers
        pipeline folder with a ``vae/`` subfolder (e.g. the reconstruction
        generator), or a Hugging Face repo id already in the local cache.
    device : str | torch.device
        Where to put the model (evaluation mode, float32).

    Returns
    -------
    vae : diffusers.AutoencoderKL
        The autoencoder, on ``device`` and in evaluation mode.

    Raises
    ------
    FileNotFoundError
        When neither ``path`` nor ``path/vae`` holds an autoencoder.
    """
    from ..utils.imports import import_optional
    from .hub import looks_like_repo_id, resolve_hf_snapshot

    diffusers = import_optional("diffusers", extra="generation", what="VAE low-level targets")
    src = Path(str(path)).expanduser()
    if looks_like_repo_id(str(path)):
        src = resolve_hf_snapshot(str(path), what="image VAE", needs=("model_index.json", "config.json"))
    for folder in (src, src / "vae"):
        if (folder / "config.json").is_file():
            vae = diffusers.AutoencoderKL.from_pretrained(folder, local_files_only=True)
            return vae.to(device).eval()
    raise FileNotFoundError(
        f"No image autoencoder at {src}: expected {src / 'config.json'} (an AutoencoderKL folder) or "
        f"{src / 'vae' / 'config.json'} (a diffusers pipeline folder, e.g. stabilityai/sd-vae-ft-mse or the "
        "reconstruction generator). Download it on a machine with network access and give its local path.")


def vae_downscale(vae: Any) -> int:
    """Spatial downsampling factor of an ``AutoencoderKL`` (8 for Stable Diffusion's).

    Parameters
    ----------
    vae : diffusers.AutoencoderKL
        The autoencoder (its ``config.block_out_channels`` sets the factor).

    Returns
    -------
    factor : int
        Image side / latent side.
    """
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, H, W, 3) → float32 (n, 3, size, size) in [0, 1] (bicubic, as MindEye2's transforms)."""
    from PIL import Image

    out = np.empty((len(images), 3, size, size), np.float32)
    for i, im in enumerate(images):
        pil = Image.fromarray(np.asarray(im, dtype=np.uint8))
        out[i] = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC), np.float32).transpose(2, 0, 1)
    return np.clip(out / 255.0, 0.0, 1.0)


@verbose
@fill_doc
def embed_lowlevel(stimuli: Any, stimulus_ids: Sequence[Any], *, size: int = 16, vae: Any = None,
                   batch_size: int = 16, device: Any = "cpu",
                   verbose: bool | str | int | None = None) -> StimulusEmbeddings:
    """Low-level targets of the images of ``stimulus_ids``.

    Parameters
    ----------
    stimuli : StimulusSet
        With images (``get_images``).
    stimulus_ids : sequence
        Unique ids (table rows, in this order).
    size : int
        Image side: the thumbnail side (``vae=None``) or the VAE's input side
        (latents of ``size / 8`` for Stable Diffusion's VAE).
    vae : AutoencoderKL | None
        See the module docstring (:func:`load_vae` loads one).
    batch_size : int
        Images encoded at once (also bounds memory: images are read per batch).
    device : str | torch.device
        Where the VAE runs.
    %(verbose)s

    Returns
    -------
    table : StimulusEmbeddings
        float32 rows of ``prod(token_shape)`` values; ``token_shape`` is
        ``(3, size, size)`` or the latents' ``(C, size/f, size/f)``.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    ids = list(stimulus_ids)
    if not ids:
        raise ValueError("No stimulus ids to embed")
    if vae is not None:
        f = vae_downscale(vae)
        if size % f:
            raise ValueError(f"size={size} is not a multiple of the VAE's downscale factor {f}")
    rows: list[np.ndarray] = []
    shape: tuple[int, ...] | None = None
    starts = range(0, len(ids), batch_size)
    for a in ProgressBar(starts, total=len(starts), desc="low-level targets", unit="batch"):
        x = _resize(stimuli.get_images(ids[a:a + batch_size]), size)
        if vae is not None:
            import torch

            with torch.no_grad():
                t = torch.from_numpy(x * 2.0 - 1.0).to(device=device, dtype=vae.dtype)
                lat = vae.encode(t).latent_dist.mean * float(vae.config.scaling_factor)
            x = lat.float().cpu().numpy()
        shape = tuple(int(v) for v in x.shape[1:])
        rows.append(x.reshape(len(x), -1).astype(np.float32))
    name = "lowlevel-rgb" if vae is None else f"lowlevel-vae-{type(vae).__name__}"
    logger.info("Low-level targets: %s, %d stimuli × %s", name, len(ids), shape)
    return StimulusEmbeddings(ids, np.concatenate(rows), name=name, token_shape=shape)
