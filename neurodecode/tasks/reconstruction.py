"""Two-stage latent-diffusion reconstruction of seen images from decoded brain embeddings.

**Stage 1** (the brain side, done elsewhere in neurodecode) gives, per trial,

- a semantic embedding: pooled ``(n, d)`` and/or tokens ``(n, t, d)``, e.g.
  :class:`~neurodecode.models.DecoderOutput` ``embedding`` / ``tokens``,
  optionally mapped into the generator's image-embedding space by a *prior*
  (``prior=``: any callable or ``nn.Module``; :class:`EmbeddingPrior` is a small
  MLP trained with MSE / cosine on (brain, image) embedding pairs, as ATM does;
  MindEye's diffusion prior plugs in the same way);
- a low-level estimate: predicted VAE latents ``(n, 4, h, w)``
  (:class:`~neurodecode.models.DecoderOutput` ``lowlevel``) decoded by the
  backend's autoencoder into a blurry image (:meth:`Reconstructor.decode_lowlevel`),
  or a blurry image given directly.

**Stage 2** (:class:`Reconstructor`) runs a diffusers pipeline conditioned on the
embedding, starting img2img-style from the blurry image (``strength``), with one
``torch.Generator`` per image, several samples per trial and best-of-N
selection (MindEye1's "second-order selection"):

==============  ===================================================  =====================
backend         pipeline                                             embedding
==============  ===================================================  =====================
``unclip``      ``StableUnCLIPImg2ImgPipeline`` (SD 2.1 unCLIP)        pooled (n, 1024)
``kandinsky``   ``KandinskyV22Img2ImgPipeline`` (Kandinsky 2.2)       pooled (n, 1280)
``ip_adapter``  ``StableDiffusion(XL)Img2ImgPipeline`` + IP-Adapter   pooled (n, 1024 / 1280)
``versatile``   Versatile Diffusion image variation (MindEye1)       tokens (n, 257, 768)
==============  ===================================================  =====================

Weights never come from the network: pipelines are passed as objects, or
loaded from a local folder or the local Hugging Face cache
(:meth:`Reconstructor.from_pretrained`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..utils import (
    ProgressBar,
    atomic_path,
    atomic_write_json,
    check_option,
    fill_doc,
    logger,
    resolve_device,
    verbose,
)
from ._diffusion_backends import (
    BACKENDS,
    DEFAULT_REPOS,
    DEFAULT_SAMPLING,
    load_pipeline,
    make_backend,
    make_random_pipeline,
)

__all__ = ["BACKENDS", "ClipSelector", "EmbeddingPrior", "ReconstructionResult", "Reconstructor",
           "decode_lowlevel", "make_random_pipeline"]

Backend = Literal["unclip", "kandinsky", "ip_adapter", "versatile"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_PRIOR_LOSSES = ("mse", "cosine", "mse+cosine")
#: Sample ``k`` of a trial with seed ``s`` uses seed ``s + k * SAMPLE_SEED_STRIDE``.
SAMPLE_SEED_STRIDE = 1_000_003
_MAX_SEED = 2 ** 63 - 1


# --------------------------------------------------------------------------- small helpers
def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _to_tensor(x: Any, name: str) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.ascontiguousarray(_to_numpy(x, name), dtype=np.float32))


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] → uint8; uint8 images unchanged."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.round(images.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def _torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _resolve_dtype(dtype: Any, device: str) -> str:
    """``"auto"`` → bfloat16 (float16 without bf16 support) on CUDA, float32 elsewhere."""
    import torch

    name = str(dtype).removeprefix("torch.")
    check_option("dtype", name, _DTYPES)
    cuda = device.startswith("cuda")
    if name == "auto":
        if not cuda:
            return "float32"
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if name != "float32" and not cuda:
        logger.info("dtype=%r is only used on CUDA; running in float32 on %s", name, device)
        return "float32"
    return name


def _safe_name(value: Any) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("_")
    return name or "item"


# --------------------------------------------------------------------------- stage 1: prior
def _mlp(in_dim: int, out_dim: int, hidden_dim: int, n_layers: int, generator: Any) -> Any:
    """``[Linear → LayerNorm → GELU] × (n_layers − 1) → Linear``, initialised from ``generator``."""
    import torch
    from torch import nn

    from ..models import init_parameters_

    with torch.device("meta"):
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(n_layers - 1):
            layers += [nn.Linear(dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU()]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        module = nn.Sequential(*layers)
    module = module.to_empty(device="cpu")
    return init_parameters_(module, generator)


def _mlp_forward(module: Any, x: Any, *, dropout: float, generator: Any = None) -> Any:
    """Run the MLP; in training (``generator`` given) apply dropout after each GELU from ``generator``."""
    import torch
    from torch import nn

    for layer in module:
        x = layer(x)
        if generator is not None and dropout > 0 and isinstance(layer, nn.GELU):
            keep = torch.rand(x.shape, generator=generator, device=x.device) >= dropout
            x = x * keep / (1.0 - dropout)
    return x


class EmbeddingPrior:
    """An MLP mapping brain-decoded embeddings to the generator's image embeddings.

    The simple counterpart of MindEye's diffusion prior and ATM's EEG-conditioned
    prior: a regression from (brain, image) embedding pairs, trained with MSE,
    cosine, or both. It works on pooled ``(n, d)`` and token ``(n, t, d)``
    embeddings (applied to the last dimension). Follows the scikit-learn
    conventions: ``__init__`` only stores, :meth:`fit` builds and trains
    ``module_``. A fitted prior is a callable and can be passed as
    ``Reconstructor(prior=...)``.

    Parameters
    ----------
    hidden_dim : int
        Width of the hidden layers.
    n_layers : int
        Number of linear layers (1: a linear map).
    dropout : float
        Dropout after each hidden activation while training, in [0, 1).
    loss : {"mse", "cosine", "mse+cosine"}
        Training loss: mean squared error, ``1 − cosine``, or their sum.
    n_epochs : int
        Passes over the training pairs.
    lr : float
        AdamW learning rate.
    weight_decay : float
        AdamW weight decay.
    batch_size : int
        Pairs per optimisation step.
    random_state : int
        Seed of the weights, the shuffling and the dropout (a ``torch.Generator``;
        the global RNGs are untouched).
    device : str
        Torch device for training (``"cpu"``, ``"cuda"``, ``"auto"``).

    Attributes
    ----------
    module_ : torch.nn.Sequential
        The fitted MLP (eval mode, on ``device``).
    in_dim_, out_dim_ : int
        Input and output embedding dimensions.
    history_ : list of float
        Mean training loss per epoch.

    Examples
    --------
    >>> prior = EmbeddingPrior(n_epochs=20).fit(brain_train, clip_train)   # doctest: +SKIP
    >>> recon = Reconstructor("unclip", pipe, prior=prior)                  # doctest: +SKIP
    """

    def __init__(self, *, hidden_dim: int = 1024, n_layers: int = 2, dropout: float = 0.1,
                 loss: Literal["mse", "cosine", "mse+cosine"] = "mse", n_epochs: int = 50, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 256, random_state: int = 0,
                 device: str = "cpu") -> None:
        self.hidden_dim = hidden_dim
        self.n_layers = n_layers
        self.dropout = dropout
        self.loss = loss
        self.n_epochs = n_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state
        self.device = device

    def __repr__(self) -> str:
        state = f"{self.in_dim_}→{self.out_dim_}" if hasattr(self, "module_") else "not fitted"
        return f"<EmbeddingPrior | {state} | {self.n_layers} layers, loss={self.loss}>"

    def _loss(self, pred: Any, target: Any) -> Any:
        import torch.nn.functional as F

        out = 0.0
        if "mse" in self.loss:
            out = out + F.mse_loss(pred, target)
        if "cosine" in self.loss:
            out = out + (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()
        return out

    @verbose
    @fill_doc
    def fit(self, brain: Any, image: Any, *, verbose: bool | str | int | None = None) -> EmbeddingPrior:
        """Train on aligned (brain, image) embedding pairs.

        Parameters
        ----------
        brain : array | Tensor, shape (n, d_in) | (n, t, d_in)
            Decoded embeddings (row ``i`` decodes the stimulus of row ``i`` of ``image``).
        image : array | Tensor, shape (n, d_out) | (n, t, d_out)
            Target image embeddings, in the generator's space.
        %(verbose)s

        Returns
        -------
        self : EmbeddingPrior
        """
        import torch

        check_option("loss", self.loss, _PRIOR_LOSSES)
        if int(self.n_layers) < 1 or int(self.n_epochs) < 1 or int(self.batch_size) < 1:
            raise ValueError(f"n_layers, n_epochs and batch_size must be positive, got {self.n_layers}, "
                             f"{self.n_epochs}, {self.batch_size}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        x, y = _to_tensor(brain, "brain"), _to_tensor(image, "image")
        if x.ndim not in (2, 3) or y.ndim != x.ndim or x.shape[:-1] != y.shape[:-1]:
            raise ValueError("brain and image must be aligned (n, d) or (n, t, d) arrays with the same "
                             f"leading dimensions, got {tuple(x.shape)} and {tuple(y.shape)}")
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            raise ValueError("brain and image embeddings must be finite (found NaN or inf)")
        device = resolve_device(self.device)
        gen = torch.Generator().manual_seed(int(self.random_state))
        self.in_dim_, self.out_dim_ = int(x.shape[-1]), int(y.shape[-1])
        module = _mlp(self.in_dim_, self.out_dim_, int(self.hidden_dim), int(self.n_layers), gen).to(device)
        opt = torch.optim.AdamW(module.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        n = len(x)
        bs = min(int(self.batch_size), n)
        self.history_: list[float] = []
        module.train()
        for _ in ProgressBar(range(int(self.n_epochs)), desc="Training the embedding prior", unit="epoch"):
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                xb, yb = x[idx].to(device), y[idx].to(device)
                loss = self._loss(_mlp_forward(module, xb, dropout=float(self.dropout), generator=gen), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.history_.append(total / n)
        self.module_ = module.eval()
        logger.info("EmbeddingPrior %d→%d: %s %.4g → %.4g over %d epochs", self.in_dim_, self.out_dim_,
                    self.loss, self.history_[0], self.history_[-1], len(self.history_))
        return self

    def __call__(self, x: Any) -> Any:
        """Map embeddings; a Tensor in gives a float32 Tensor (on the input's device), an array an array."""
        import torch

        if not hasattr(self, "module_"):
            raise RuntimeError("This EmbeddingPrior is not fitted yet: call fit(brain, image) first")
        is_tensor = isinstance(x, torch.Tensor)
        t = x.detach() if is_tensor else _to_tensor(x, "x")
        if t.shape[-1] != self.in_dim_:
            raise ValueError(f"EmbeddingPrior was fitted on {self.in_dim_}-d inputs, got shape "
                             f"{tuple(t.shape)}")
        param = next(self.module_.parameters())
        with torch.no_grad():
            out = _mlp_forward(self.module_, t.to(device=param.device, dtype=param.dtype), dropout=0.0)
        out = out.float()
        return out.to(t.device) if is_tensor else out.cpu().numpy()

    def transform(self, x: Any) -> np.ndarray:
        """Map embeddings, float32 array of shape ``x.shape[:-1] + (out_dim_,)``.

        Parameters
        ----------
        x : array | Tensor, shape (n, in_dim_) | (n, t, in_dim_)
            Decoded embeddings, in the space the prior was fitted on.

        Returns
        -------
        mapped : array of float32, shape (..., out_dim_)
            The embeddings mapped into the generator's space.
        """
        return _to_numpy(self(_to_tensor(x, "x")), "x").astype(np.float32)


# --------------------------------------------------------------------------- selection
class ClipSelector:
    """Best-of-N score: CLIP cosine between each sample and the decoded embedding (MindEye1).

    Parameters
    ----------
    encoder : ClipEncoder
        An :class:`~neurodecode.embeddings.ClipEncoder` whose pooled image
        embedding lives in the same space as the decoded embedding.

    Notes
    -----
    Called as ``selector(images, target)`` with ``images`` uint8 (n_samples, H,
    W, 3) and ``target`` the decoded embedding, shape (d,) (a token sequence
    (t, d) uses its first token, the CLS/pooled one); returns (n_samples,) scores.
    """

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def __repr__(self) -> str:
        return f"<ClipSelector | {self.encoder!r}>"

    def __call__(self, images: np.ndarray, target: np.ndarray) -> np.ndarray:
        emb = self.encoder.embed_images(images, outputs=("pooled",), verbose="warning")["pooled"]
        t = np.asarray(target, dtype=np.float64)
        t = t[0] if t.ndim == 2 else t
        if t.shape != emb.shape[1:]:
            raise ValueError(f"ClipSelector: the CLIP model gives {emb.shape[1]}-d image embeddings but the "
                             f"decoded embedding has shape {np.asarray(target).shape}; use the CLIP model "
                             "the decoder was trained against, or pass selection_embeds= in that space")
        emb = emb.astype(np.float64)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb @ (t / max(float(np.linalg.norm(t)), 1e-12))


def _as_selector(selector: Any) -> Callable[[np.ndarray, np.ndarray], Any] | None:
    if selector is None:
        return None
    if hasattr(selector, "embed_images") and not callable(selector):  # a ClipEncoder
        return ClipSelector(selector)
    if not callable(selector):
        raise TypeError("selector must be None, a ClipEncoder or a callable (images, embedding) -> scores, "
                        f"got {type(selector).__name__}")
    return selector


# --------------------------------------------------------------------------- low-level stage
def _latent_channels(vae: Any) -> int:
    cfg = vae.config
    return int(getattr(cfg, "vq_embed_dim", None) or cfg.latent_channels)


def _is_vq(vae: Any) -> bool:
    return hasattr(vae, "quantize")


@verbose
@fill_doc
def decode_lowlevel(vae: Any, latents: Any, *, scaled: bool = True, batch_size: int = 8, device: Any = None,
                    verbose: bool | str | int | None = None) -> np.ndarray:
    """Decode predicted autoencoder latents into (blurry) RGB images.

    Parameters
    ----------
    vae : diffusers.AutoencoderKL | diffusers.VQModel
        The autoencoder the latents belong to (SD-VAE for MindEye2's low-level
        head; Kandinsky's MoVQ).
    latents : array | Tensor, shape (n, latent_channels, h, w)
        Predicted latents (:class:`~neurodecode.models.DecoderOutput` ``lowlevel``).
    scaled : bool
        The latents are multiplied by ``vae.config.scaling_factor`` (the
        convention of diffusers pipelines and MindEye2's low-level targets), so
        they are divided by it before decoding. Ignored for a ``VQModel``
        (Kandinsky never scales MoVQ latents).
    batch_size : int
        Latents per decoder call.
    device : str | torch.device | None
        Where to run; default the autoencoder's device.
    %(verbose)s

    Returns
    -------
    images : array of uint8, shape (n, h · f, w · f, 3)
        ``f`` is the autoencoder's downsampling factor (8 for SD: 4×28×28 → 224 px).
    """
    import torch

    z = _to_tensor(latents, "latents")
    channels = _latent_channels(vae)
    if z.ndim != 4 or z.shape[1] != channels:
        raise ValueError(f"latents must have shape (n, {channels}, h, w) for this {type(vae).__name__}, got "
                         f"{tuple(z.shape)}")
    param = next(vae.parameters())
    device = param.device if device is None else torch.device(device)
    out = []
    starts = range(0, len(z), int(batch_size))
    with torch.no_grad():
        for start in ProgressBar(starts, total=len(starts), desc="Decoding low-level latents", unit="batch"):
            zb = z[start:start + int(batch_size)].to(device=device, dtype=param.dtype)
            if _is_vq(vae):
                img = vae.decode(zb, force_not_quantize=True).sample
            else:
                img = vae.decode(zb / vae.config.scaling_factor if scaled else zb).sample
            out.append(((img.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy())
    if not out:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return _to_uint8(np.concatenate(out))


def _resize01(images_u8: np.ndarray, height: int, width: int) -> Any:
    """uint8 (n, h, w, 3) → float tensor (n, 3, height, width) in [0, 1] (bicubic, antialiased)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(0, 1)


# --------------------------------------------------------------------------- result
@dataclass
class ReconstructionResult:
    """What :meth:`Reconstructor.reconstruct` returns.

    Parameters
    ----------
    images : array of uint8, shape (n, H, W, 3)
        The selected reconstruction of each trial.
    samples : array of uint8, shape (n, n_samples, H, W, 3)
        Every sample drawn.
    scores : array of float, shape (n, n_samples)
        Selector scores (NaN when there was no selection).
    best : array of int, shape (n,)
        Index of the selected sample.
    seeds : array of int64, shape (n, n_samples)
        The ``torch.Generator`` seed of every sample.
    ids : list of str
        Trial / stimulus identifiers (file name stems).
    lowlevel_images : array of uint8, shape (n, h, w, 3) | None
        The blurry low-level images the generation started from.
    backend : str
        The backend used.
    config : dict
        Sampling settings (steps, guidance, strength, size, dtype, device, pipeline...).
    timing : dict
        Seconds spent in ``"stage1_s"`` (prior and low-level decoding),
        ``"generate_s"``, ``"select_s"``, ``"total_s"``, and ``"images_per_s"``
        (samples generated per second of generation).
    """

    images: np.ndarray
    samples: np.ndarray
    scores: np.ndarray
    best: np.ndarray
    seeds: np.ndarray
    ids: list[str]
    lowlevel_images: np.ndarray | None = None
    backend: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        shape = "×".join(str(s) for s in self.images.shape[1:3]) if self.images.ndim == 4 else "?"
        return (f"<ReconstructionResult | {len(self)} images {shape} px | {self.samples.shape[1]} sample(s) "
                f"each | backend={self.backend!r}>")

    @verbose
    @fill_doc
    def save(self, out_dir: str | Path, *, samples: bool | None = None,
             verbose: bool | str | int | None = None) -> Path:
        """Write PNGs and an atomic ``manifest.json``.

        Files per trial: ``<id>_recon.png``, ``<id>_lowlevel.png`` (when there was
        a low-level image) and ``<id>_sample{k}.png``.

        Parameters
        ----------
        out_dir : str | Path
            Output folder (created).
        samples : bool | None
            Write every sample; None: only when there were several per trial.
        %(verbose)s

        Returns
        -------
        manifest : Path
            ``out_dir / "manifest.json"``: ids, files, seeds, backend, steps,
            strength, guidance, scores, selected sample, timing and config.
        """
        from PIL import Image

        from .. import __version__

        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        names = [_safe_name(i) for i in self.ids]
        if len(set(names)) != len(names):
            raise ValueError("ids must give distinct file names (after replacing characters other than "
                             "letters, digits, '.', '_' and '-' by '_')")
        write_samples = self.samples.shape[1] > 1 if samples is None else bool(samples)

        def png(name: str, array: np.ndarray) -> str:
            with atomic_path(out / name) as tmp:
                Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
            return name

        files: dict[str, dict[str, Any]] = {}
        for i, (item, stem) in enumerate(zip(self.ids, names)):
            entry: dict[str, Any] = {"recon": png(f"{stem}_recon.png", self.images[i])}
            if self.lowlevel_images is not None:
                entry["lowlevel"] = png(f"{stem}_lowlevel.png", self.lowlevel_images[i])
            if write_samples:
                entry["samples"] = [png(f"{stem}_sample{k}.png", s) for k, s in enumerate(self.samples[i])]
            files[str(item)] = entry

        def clean(v: np.ndarray) -> list:
            return [[None if not math.isfinite(float(x)) else float(x) for x in row] for row in v]

        manifest = {
            "ids": [str(i) for i in self.ids],
            "files": files,
            "seeds": {str(i): [int(s) for s in row] for i, row in zip(self.ids, self.seeds)},
            "scores": {str(i): row for i, row in zip(self.ids, clean(self.scores))},
            "best_sample": {str(i): int(b) for i, b in zip(self.ids, self.best)},
            "backend": self.backend,
            "num_inference_steps": self.config.get("num_inference_steps"),
            "strength": self.config.get("strength"),
            "guidance_scale": self.config.get("guidance_scale"),
            "config": self.config,
            "timing": self.timing,
            "neurodecode_version": __version__,
        }
        path = atomic_write_json(out / "manifest.json", manifest)
        logger.info("Saved %d reconstructions to %s", len(self), out)
        return path


# --------------------------------------------------------------------------- stage 2
def _split_embeds(embeds: Any) -> tuple[Any, Any, Any]:
    """(pooled, tokens, lowlevel) from an array, a mapping or a DecoderOutput-like object."""
    if hasattr(embeds, "embedding") and hasattr(embeds, "tokens"):
        parts = (embeds.embedding, embeds.tokens, getattr(embeds, "lowlevel", None))
    elif isinstance(embeds, Mapping):
        unknown = set(embeds) - {"pooled", "embedding", "tokens", "lowlevel"}
        if unknown:
            raise ValueError("embeds mapping keys must be among 'pooled' (or 'embedding'), 'tokens', "
                             f"'lowlevel'; got {sorted(unknown)}")
        parts = (embeds.get("pooled", embeds.get("embedding")), embeds.get("tokens"), embeds.get("lowlevel"))
    else:
        arr = _to_tensor(embeds, "embeds")
        if arr.ndim == 2:
            parts = (arr, None, None)
        elif arr.ndim == 3:
            parts = (None, arr, None)
        else:
            raise ValueError("embeds must have shape (n, d) (pooled) or (n, t, d) (tokens), got "
                             f"{tuple(arr.shape)}")
    pooled, tokens, low = (None if p is None else _to_tensor(p, "embeds") for p in parts)
    if pooled is not None and pooled.ndim != 2:
        raise ValueError(f"pooled embeddings must have shape (n, d), got {tuple(pooled.shape)}")
    if tokens is not None and tokens.ndim != 3:
        raise ValueError(f"token embeddings must have shape (n, t, d), got {tuple(tokens.shape)}")
    if pooled is not None and tokens is not None and len(pooled) != len(tokens):
        raise ValueError(f"pooled and token embeddings differ in length: {len(pooled)} and {len(tokens)}")
    return pooled, tokens, low


def _sample_seeds(seeds: Any, n: int, n_samples: int) -> np.ndarray:
    """(n, n_samples) int64: trial ``i`` sample ``k`` → ``seeds[i] + k * SAMPLE_SEED_STRIDE``."""
    if isinstance(seeds, (int, np.integer)):
        base = int(seeds) + np.arange(n, dtype=np.int64)
    else:
        base = np.asarray(seeds)
        if base.dtype.kind not in "iu" or base.shape != (n,):
            raise ValueError(f"seeds must be an int (seed of the first trial; trial i uses seed + i) or {n} "
                             f"integers (one per trial), got {seeds!r}")
        base = base.astype(np.int64)
    out = base[:, None] + SAMPLE_SEED_STRIDE * np.arange(n_samples, dtype=np.int64)[None, :]
    if (out < 0).any() or (out > _MAX_SEED).any():
        raise ValueError("seeds must be non-negative and below 2**63")
    return out


class Reconstructor:
    """Stage 2 of two-stage reconstruction: a diffusers pipeline conditioned on decoded embeddings.

    Parameters
    ----------
    backend : {"unclip", "kandinsky", "ip_adapter", "versatile"}
        Pipeline family (see the module docstring and ``docs/reconstruction.md``).
    pipeline : diffusers.DiffusionPipeline | str | Path
        The pipeline object (see :meth:`from_pretrained` for what each backend
        takes), or a local folder / cached repo id, loaded as by
        :meth:`from_pretrained`. A pipeline object is moved to ``device`` and
        ``dtype`` in place.
    prior : callable | torch.nn.Module | None
        Maps the stage-1 embedding into the generator's image-embedding space
        (a Tensor in, a Tensor or array out), e.g. a fitted :class:`EmbeddingPrior`.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    dtype : {"auto", "float32", "bfloat16", "float16"}
        Weights and activations. Half precision is used on CUDA only (other
        devices run float32, with a log message); ``"auto"`` is bfloat16 on GPUs
        that support it, float16 on older ones, float32 elsewhere.
    cpu_offload : bool
        ``pipeline.enable_model_cpu_offload()``: keep each model on the CPU until
        it runs (lower GPU memory, slower). Needs CUDA; ignored (logged) otherwise.
    num_inference_steps : int | None
        Denoising steps of the full schedule (img2img runs ``int(steps · strength)``
        of them). None: the backend's default (unclip 20, kandinsky 50,
        ip_adapter 30, versatile 20).
    guidance_scale : float | None
        Classifier-free guidance (1: none). None: backend default (unclip 10,
        kandinsky 4, ip_adapter 7.5, versatile 3.5).
    strength : float
        How far img2img re-noises the low-level image, in (0, 1]: 1 ignores it
        almost entirely, small values keep its layout. Unused without a
        low-level input (then generation starts from pure noise).
    n_samples : int
        Images drawn per trial; the best by ``selector`` is kept.
    batch_size : int
        Images per pipeline call (classifier-free guidance doubles the UNet batch).
    selector : callable | ClipEncoder | None
        ``selector(images, embedding) -> scores``: images uint8 (n_samples, H, W,
        3) of one trial, the trial's decoded embedding; the argmax is kept. A
        :class:`~neurodecode.embeddings.ClipEncoder` becomes a
        :class:`ClipSelector` (CLIP cosine, MindEye1). None: the first sample is
        kept (a warning is logged when ``n_samples > 1``).
    height, width : int | None
        Output size in pixels; None: the pipeline's native size (unet sample size
        × autoencoder factor; 512 for Kandinsky).
    negative_embeds : array | Tensor | None
        Unconditional embedding for classifier-free guidance, one for every
        image: shape (d,) or (t, d) (a leading axis of 1 is accepted). None:
        zeros (Kandinsky, IP-Adapter), the tokens of a gray image (Versatile
        Diffusion, as its pipeline does). Kandinsky's own is its prior's
        embedding of an empty prompt. unCLIP always uses zeros.
    lowlevel_vae : diffusers.AutoencoderKL | diffusers.VQModel | None
        Autoencoder that decodes low-level latents; None: the backend's own
        (the pipeline VAE; MoVQ for Kandinsky).
    pipeline_kwargs : dict | None
        Extra keyword arguments for every pipeline call (``negative_prompt``,
        ``noise_level`` for unCLIP, ``eta``...).
    verbose : bool | str | int | None
        Log level while setting up.

    Attributes
    ----------
    pipeline_ : diffusers.DiffusionPipeline
        The pipeline that runs (img2img variant where the backend has one).
    device_ : str
    dtype_ : str

    Examples
    --------
    >>> recon = Reconstructor.from_pretrained("unclip", "/models/sd21-unclip-h", n_samples=4,
    ...                                       selector=clip_encoder)              # doctest: +SKIP
    >>> out = model(x, subject=1)                                                   # doctest: +SKIP
    >>> res = recon.reconstruct(out, seeds=0, ids=stimulus_ids)                     # doctest: +SKIP
    >>> res.save("recons/")                                                         # doctest: +SKIP
    """

    @verbose
    def __init__(self, backend: Backend, pipeline: Any, *, prior: Any = None, device: str = "auto",
                 dtype: DType = "auto", cpu_offload: bool = False, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, strength: float = 0.75, n_samples: int = 1,
                 batch_size: int = 4, selector: Any = None, height: int | None = None,
                 width: int | None = None, negative_embeds: Any = None, lowlevel_vae: Any = None,
                 pipeline_kwargs: Mapping[str, Any] | None = None,
                 verbose: bool | str | int | None = None) -> None:
        check_option("backend", backend, BACKENDS)
        steps, guidance = DEFAULT_SAMPLING[backend]
        self.num_inference_steps = int(steps if num_inference_steps is None else num_inference_steps)
        self.guidance_scale = float(guidance if guidance_scale is None else guidance_scale)
        self.strength = float(strength)
        self.n_samples = int(n_samples)
        self.batch_size = int(batch_size)
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if int(self.num_inference_steps * self.strength) < 1:
            raise ValueError(f"strength={strength} × num_inference_steps={self.num_inference_steps} leaves "
                             "no denoising step; raise one of them")
        if self.n_samples < 1 or self.batch_size < 1:
            raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples} and {batch_size}")
        self.backend = backend
        self.prior = prior
        self.selector = _as_selector(selector)
        self.cpu_offload = bool(cpu_offload)
        self.pipeline_kwargs = dict(pipeline_kwargs or {})
        self.device_ = resolve_device(device)
        self.dtype_ = _resolve_dtype(dtype, self.device_)
        torch_dtype = _torch_dtype(self.dtype_)
        if isinstance(pipeline, (str, Path)):
            pipeline = load_pipeline(backend, pipeline, torch_dtype=torch_dtype)
        self._backend = make_backend(backend, pipeline, negative_embeds=negative_embeds)
        if self.cpu_offload and self.device_.startswith("cuda"):
            self._backend.to_dtype(torch_dtype)
            self._backend.enable_offload(self.device_)
        else:
            if self.cpu_offload:
                logger.info("cpu_offload=True needs CUDA; ignored on %s", self.device_)
            self._backend.to(self.device_, torch_dtype)
        self.lowlevel_vae = lowlevel_vae
        if lowlevel_vae is not None and not self.cpu_offload:
            lowlevel_vae.to(device=self.device_, dtype=torch_dtype)
        default_h, default_w = self._backend.default_size()
        self.height = int(height or default_h)
        self.width = int(width or default_w)
        logger.info("Reconstructor: %s on %s (%s), %d steps, guidance %.3g, strength %.3g, %d sample(s), "
                    "%d×%d px",
                    self._backend.describe(), self.device_, self.dtype_, self.num_inference_steps,
                    self.guidance_scale, self.strength, self.n_samples, self.height, self.width)

    @classmethod
    @verbose
    @fill_doc
    def from_pretrained(cls, backend: Backend, path_or_repo_id: str | Path | None = None, *,
                        ip_adapter: Any = None, ip_adapter_scale: float | None = None, device: str = "auto",
                        dtype: DType = "auto", verbose: bool | str | int | None = None,
                        **kwargs: Any) -> Reconstructor:
        """Load the backend's pipeline from a local folder or the local HF cache (never downloads).

        Parameters
        ----------
        backend : {"unclip", "kandinsky", "ip_adapter", "versatile"}
            What to load:

            - ``"unclip"``: ``StableUnCLIPImg2ImgPipeline`` from
              ``stabilityai/stable-diffusion-2-1-unclip`` (CLIP ViT-H/14 image
              embeddings, 1024-d; ``-unclip-small``: ViT-L/14, 768-d).
            - ``"kandinsky"``: ``KandinskyV22Img2ImgPipeline`` from
              ``kandinsky-community/kandinsky-2-2-decoder`` (CLIP ViT-bigG/14, 1280-d).
            - ``"ip_adapter"``: ``StableDiffusion(XL)Img2ImgPipeline`` from an SD 1.5
              / SDXL folder, plus ``ip_adapter=`` (h94/IP-Adapter weights).
            - ``"versatile"``: Versatile Diffusion from ``shi-labs/versatile-diffusion``
              (CLIP ViT-L/14 image tokens, 257 × 768).
        path_or_repo_id : str | Path | None
            A diffusers folder holding ``model_index.json``, or a Hugging Face repo
            id already in the local cache. None: the backend's default repo id.
        ip_adapter : str | Path | Mapping | None
            ``"ip_adapter"`` only: the IP-Adapter weight file
            (``.../models/ip-adapter_sd15.safetensors``), a state dict, or a
            mapping of ``pipe.load_ip_adapter`` arguments
            (``pretrained_model_name_or_path_or_dict``, ``subfolder``, ``weight_name``).
        ip_adapter_scale : float | None
            ``pipe.set_ip_adapter_scale`` (diffusers' default 1.0).
        device, dtype : str
            As for :class:`Reconstructor`; weights are loaded in ``dtype``.
        %(verbose)s
        **kwargs
            Other :class:`Reconstructor` parameters.

        Returns
        -------
        reconstructor : Reconstructor

        Raises
        ------
        FileNotFoundError
            When the folder, the cached snapshot or a component is missing; the
            message says what to download and where to put it.
        """
        check_option("backend", backend, BACKENDS)
        source = DEFAULT_REPOS[backend] if path_or_repo_id is None else path_or_repo_id
        dev = resolve_device(device)
        resolved = _resolve_dtype(dtype, dev)
        pipe = load_pipeline(backend, source, torch_dtype=_torch_dtype(resolved), ip_adapter=ip_adapter,
                             ip_adapter_scale=ip_adapter_scale)
        return cls(backend, pipe, device=dev, dtype=resolved, verbose=verbose, **kwargs)

    def __repr__(self) -> str:
        return (f"<Reconstructor | {self.backend}: {self._backend.describe()} | "
                f"{self.device_} {self.dtype_} | {self.num_inference_steps} steps, "
                f"strength {self.strength:g}, {self.n_samples} sample(s)>")

    @property
    def pipeline_(self) -> Any:
        return self._backend.pipe

    @property
    def embed_kind(self) -> str:
        """``"pooled"`` (n, d) or ``"tokens"`` (n, t, d): what the backend is conditioned on."""
        return self._backend.embed_kind

    @property
    def embed_dim(self) -> int | None:
        """Dimension of the image embeddings the pipeline takes (after the prior)."""
        return self._backend.expected_dim()

    # -- stage 1 ---------------------------------------------------------------------
    def _apply_prior(self, x: Any) -> Any:
        import torch

        prior = self.prior
        if prior is None:
            return x
        inp = x
        if isinstance(prior, torch.nn.Module):
            param = next(prior.parameters(), None)
            if param is not None:
                inp = x.to(device=param.device, dtype=param.dtype)
            if prior.training:
                logger.warning("The prior module is in training mode (dropout active); call prior.eval() "
                               "first")
        with torch.no_grad():
            out = prior(inp)
        out = _to_tensor(out, "prior output")
        if len(out) != len(x):
            raise ValueError(f"The prior returned {len(out)} embeddings for {len(x)} inputs")
        return out

    def _condition(self, pooled: Any, tokens: Any) -> Any:
        kind = self._backend.embed_kind
        x = pooled if kind == "pooled" else tokens
        if x is None:
            have = "token embeddings (n, t, d)" if kind == "pooled" else "pooled embeddings (n, d)"
            want = "pooled (n, d)" if kind == "pooled" else "token (n, t, d)"
            raise ValueError(f"backend={self.backend!r} ({self._backend.describe()}) is conditioned on "
                             f"{want} embeddings, but only {have} were given")
        x = self._apply_prior(x)
        want_ndim = 2 if kind == "pooled" else 3
        if x.ndim != want_ndim:
            raise ValueError(f"backend={self.backend!r} needs {kind} embeddings with {want_ndim} dimensions "
                             f"after the prior, got shape {tuple(x.shape)}")
        dim = self._backend.expected_dim()
        if dim is not None and x.shape[-1] != dim:
            raise ValueError(
                f"backend={self.backend!r} ({self._backend.describe()}) takes {dim}-d image embeddings, got "
                f"{x.shape[-1]}-d. Pass prior= a mapping from the decoded embedding to the generator's image "
                "embedding space (e.g. a fitted EmbeddingPrior), or decode into that space directly.")
        if not bool(np.isfinite(x.numpy()).all()):
            raise ValueError("The conditioning embeddings contain NaN or inf")
        return x

    def _lowlevel_images(self, lowlevel: Any, n: int) -> np.ndarray:
        arr = _to_numpy(lowlevel, "lowlevel")
        if arr.ndim != 4 or len(arr) != n:
            raise ValueError(f"lowlevel must hold one entry per trial ({n}): images (n, H, W, 3) or "
                             f"autoencoder latents (n, C, h, w); got shape {arr.shape}")
        vae = self.lowlevel_vae if self.lowlevel_vae is not None else self._backend.vae
        channels = _latent_channels(vae)
        if arr.shape[-1] == 3 and arr.shape[1] != channels:
            images = arr
        elif arr.shape[1] == channels:
            return self.decode_lowlevel(arr)
        elif arr.shape[1] == 3:
            images = arr.transpose(0, 2, 3, 1)
        else:
            raise ValueError(f"lowlevel of shape {arr.shape} is neither images (n, H, W, 3) nor latents "
                             f"(n, {channels}, h, w) of the backend's {type(vae).__name__}")
        if images.dtype != np.uint8 and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
            raise ValueError("lowlevel images must be uint8 or floats in [0, 1]")
        return _to_uint8(images)

    @verbose
    @fill_doc
    def decode_lowlevel(self, latents: Any, *, scaled: bool = True,
                        verbose: bool | str | int | None = None) -> np.ndarray:
        """Decode low-level latents with ``lowlevel_vae`` or the backend's autoencoder.

        See :func:`decode_lowlevel` for the parameters; returns uint8 (n, H, W, 3).

        Parameters
        ----------
        latents : array | Tensor, shape (n, latent_channels, h, w)
            Predicted latents (:class:`~neurodecode.models.DecoderOutput` ``lowlevel``).
        scaled : bool
            The latents are multiplied by the autoencoder's ``scaling_factor`` (see
            :func:`decode_lowlevel`).
        %(verbose)s

        Returns
        -------
        images : array of uint8, shape (n, H, W, 3)
            The decoded (blurry) images.
        """
        vae = self.lowlevel_vae if self.lowlevel_vae is not None else self._backend.vae
        device = self._backend.device if vae is self._backend.vae else None
        return decode_lowlevel(vae, latents, scaled=scaled, batch_size=self.batch_size, device=device)

    # -- stage 2 ---------------------------------------------------------------------
    @verbose
    @fill_doc
    def reconstruct(self, embeds: Any, lowlevel: Any = None, *, seeds: int | Sequence[int] = 0,
                    ids: Sequence[Any] | None = None, prompts: str | Sequence[str] | None = None,
                    selection_embeds: Any = None,
                    verbose: bool | str | int | None = None) -> ReconstructionResult:
        """Generate images from decoded embeddings (and low-level estimates).

        Parameters
        ----------
        embeds : array | Tensor | Mapping | DecoderOutput
            Pooled (n, d) or token (n, t, d) embeddings; a mapping with
            ``"pooled"`` / ``"tokens"`` / ``"lowlevel"``; or a
            :class:`~neurodecode.models.DecoderOutput` (its ``lowlevel`` latents
            are used when ``lowlevel`` is None).
        lowlevel : array | Tensor | None
            Blurry images (n, H, W, 3) (uint8, or floats in [0, 1]) or the
            autoencoder latents (n, C, h, w) to decode into them. None: generate
            from noise.
        seeds : int | sequence of int
            An int: trial ``i`` uses seed ``seeds + i``; or one seed per trial.
            Sample ``k`` of a trial with seed ``s`` uses ``s + k·1000003``, so a
            trial's images do not depend on the batch or the other trials.
        ids : sequence | None
            Trial identifiers (default ``"0"``, ``"1"``, ...), used as file names by
            :meth:`ReconstructionResult.save`.
        prompts : str | sequence of str | None
            Text prompts for the SD-based backends (``unclip``, ``ip_adapter``),
            e.g. decoded captions; default empty. Not used by the others.
        selection_embeds : array | None
            What the selector compares samples with, one row per trial; default
            the pooled input embedding (before the prior), else the conditioning.
        %(verbose)s

        Returns
        -------
        result : ReconstructionResult
        """
        import torch

        t_start = time.perf_counter()
        pooled, tokens, low_from_embeds = _split_embeds(embeds)
        cond = self._condition(pooled, tokens)
        n = len(cond)
        if n == 0:
            raise ValueError("embeds holds no trials")
        ids_list = [str(i) for i in (range(n) if ids is None else ids)]
        if len(ids_list) != n:
            raise ValueError(f"ids must have one entry per trial ({n}), got {len(ids_list)}")
        if len(set(ids_list)) != n:
            raise ValueError("ids must be unique")
        prompt_list = self._prompts(prompts, n)
        seed_grid = _sample_seeds(seeds, n, self.n_samples)
        if selection_embeds is not None:
            target = _to_numpy(selection_embeds, "selection_embeds")
            if len(target) != n:
                raise ValueError(f"selection_embeds must have one row per trial ({n}), got {len(target)}")
        else:
            target = _to_numpy(pooled if pooled is not None else cond, "embeds")
        if lowlevel is None:
            lowlevel = low_from_embeds
        low_images = init = None
        if lowlevel is not None:
            low_images = self._lowlevel_images(lowlevel, n)
            init = _resize01(low_images, self.height, self.width)
        t_gen = time.perf_counter()

        jobs = [(i, k) for i in range(n) for k in range(self.n_samples)]
        samples = np.zeros((n, self.n_samples, self.height, self.width, 3), np.uint8)
        starts = range(0, len(jobs), self.batch_size)
        with torch.no_grad():
            for start in ProgressBar(starts, total=len(starts), desc=f"Reconstructing ({self.backend})",
                                     unit="batch"):
                batch = jobs[start:start + self.batch_size]
                idx = torch.tensor([i for i, _ in batch])
                gens = [torch.Generator("cpu").manual_seed(int(seed_grid[i, k])) for i, k in batch]
                out = self._backend.generate(
                    cond[idx], None if init is None else init[idx], gens, [prompt_list[i] for i, _ in batch],
                    num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                    strength=self.strength, height=self.height, width=self.width, extra=self.pipeline_kwargs)
                out = _to_uint8(out)
                if out.shape[1:3] != (self.height, self.width):
                    raise RuntimeError(f"The pipeline returned {out.shape[1]}×{out.shape[2]} images, "
                                       f"expected {self.height}×{self.width}")
                for (i, k), img in zip(batch, out):
                    samples[i, k] = img
        t_sel = time.perf_counter()
        scores, best = self._select(samples, target)
        t_end = time.perf_counter()
        gen_s = t_sel - t_gen
        timing = {"stage1_s": t_gen - t_start, "generate_s": gen_s, "select_s": t_end - t_sel,
                  "total_s": t_end - t_start,
                  "images_per_s": len(jobs) / gen_s if gen_s > 0 else float("inf")}
        logger.info("Reconstructed %d trial(s) × %d sample(s) in %.1f s (%.3g images/s)", n, self.n_samples,
                    timing["total_s"], timing["images_per_s"])
        return ReconstructionResult(
            images=samples[np.arange(n), best], samples=samples, scores=scores, best=best, seeds=seed_grid,
            ids=ids_list, lowlevel_images=low_images, backend=self.backend,
            config=self._config(init is not None), timing=timing)

    def _prompts(self, prompts: Any, n: int) -> list[str]:
        if prompts is None:
            return [""] * n
        if isinstance(prompts, str):
            prompts = [prompts] * n
        prompts = [str(p) for p in prompts]
        if len(prompts) != n:
            raise ValueError(f"prompts must be one string or one per trial ({n}), got {len(prompts)}")
        if any(prompts) and not self._backend.supports_prompt:
            raise ValueError(f"backend={self.backend!r} takes no text prompt; prompts are for 'unclip' and "
                             "'ip_adapter'")
        return prompts

    def _select(self, samples: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, n_samples = samples.shape[:2]
        scores = np.full((n, n_samples), np.nan)
        if n_samples == 1:
            return scores, np.zeros(n, dtype=np.int64)
        if self.selector is None:
            logger.warning("n_samples=%d but no selector: keeping the first sample of each trial (pass "
                           "selector= a ClipEncoder or a callable to pick the best)", n_samples)
            return scores, np.zeros(n, dtype=np.int64)
        for i in range(n):
            s = _to_numpy(self.selector(samples[i], target[i]), "selector scores").astype(np.float64).ravel()
            if s.shape != (n_samples,):
                raise ValueError(f"The selector must return {n_samples} scores (one per sample), got shape "
                                 f"{s.shape}")
            scores[i] = s
        best = np.argmax(np.where(np.isfinite(scores), scores, -np.inf), axis=1)
        return scores, best.astype(np.int64)

    def _config(self, img2img: bool) -> dict[str, Any]:
        return {
            "backend": self.backend, "pipeline": self._backend.describe(),
            "num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
            "strength": self.strength if img2img else None, "img2img": img2img, "n_samples": self.n_samples,
            "batch_size": self.batch_size, "height": self.height, "width": self.width, "device": self.device_,
            "dtype": self.dtype_, "cpu_offload": self.cpu_offload,
            "prior": None if self.prior is None else repr(self.prior)[:200],
            "selector": None if self.selector is None else repr(self.selector)[:200],
            "seed_stride": SAMPLE_SEED_STRIDE,
            "pipeline_kwargs": {k: repr(v)[:200] for k, v in self.pipeline_kwargs.items()},
        }

