"""Diffusers backends for :mod:`neurodecode.tasks.reconstruction` (stage 2 of the two-stage recipe).

Each backend wraps one diffusers pipeline family and turns "a batch of image
embeddings, optionally a batch of low-level init images, one ``torch.Generator``
per image" into images:

==============  =====================================================  ==========================
backend         diffusers pipeline                                     conditioning argument
==============  =====================================================  ==========================
``unclip``      ``StableUnCLIPImg2ImgPipeline``                        ``image_embeds`` (n, d)
``kandinsky``   ``KandinskyV22Img2ImgPipeline`` / ``KandinskyV22Pipeline``  ``image_embeds`` +
                                                                       ``negative_image_embeds``
``ip_adapter``  ``StableDiffusion(XL)Img2ImgPipeline`` / text-to-image  ``ip_adapter_image_embeds``
                with an IP-Adapter loaded
``versatile``   ``VersatileDiffusionImageVariationPipeline``           CLIP image tokens (n, t, d)
                (diffusers' deprecated module)
==============  =====================================================  ==========================

Nothing here downloads: pipelines come as objects, from a local folder or from
the local Hugging Face cache (``local_files_only=True``).

The unCLIP and Versatile Diffusion pipelines have no ``strength`` argument; their
img2img start (denoise from the noised low-level latents) is done here by
handing the pipeline pre-noised ``latents`` and a scheduler view that starts at
``strength`` (:class:`_StrengthScheduler`), exactly as diffusers' own img2img
pipelines do with ``get_timesteps``.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings.hub import looks_like_repo_id, resolve_hf_snapshot
from ..utils import logger
from ..utils.imports import import_optional

BACKENDS = ("unclip", "kandinsky", "ip_adapter", "versatile")

#: What each backend loads by default, and what to download where.
DEFAULT_REPOS = {
    "unclip": "stabilityai/stable-diffusion-2-1-unclip",
    "kandinsky": "kandinsky-community/kandinsky-2-2-decoder",
    "ip_adapter": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "versatile": "shi-labs/versatile-diffusion",
}
_WHAT = {
    "unclip": "a diffusers folder with model_index.json for stabilityai/stable-diffusion-2-1-unclip "
              "(StableUnCLIPImg2ImgPipeline; stable-diffusion-2-1-unclip-small works the same way)",
    "kandinsky": "a diffusers folder with model_index.json for kandinsky-community/kandinsky-2-2-decoder "
                 "(the decoder: unet/, movq/, scheduler/)",
    "ip_adapter": "a diffusers folder with model_index.json for a Stable Diffusion 1.5 or SDXL checkpoint "
                  "(e.g. stable-diffusion-v1-5/stable-diffusion-v1-5 or "
                  "stabilityai/stable-diffusion-xl-base-1.0), plus ip_adapter= an IP-Adapter weight file "
                  "from h94/IP-Adapter (models/ip-adapter_sd15.safetensors or "
                  "sdxl_models/ip-adapter_sdxl_vit-h.safetensors)",
    "versatile": "a diffusers folder with model_index.json for shi-labs/versatile-diffusion",
}
#: (num_inference_steps, guidance_scale) used when the Reconstructor is given None.
DEFAULT_SAMPLING = {"unclip": (20, 10.0), "kandinsky": (50, 4.0), "ip_adapter": (30, 7.5),
                    "versatile": (20, 3.5)}


def import_diffusers() -> Any:
    """Import diffusers after the torchvision repair, or raise naming the extra."""
    return import_optional("diffusers", extra="generation", what="Diffusion reconstruction backends")


def _versatile_base() -> Any:
    diffusers = import_diffusers()
    cls = getattr(diffusers, "VersatileDiffusionImageVariationPipeline", None)
    if cls is None:
        raise NotImplementedError(
            "The 'versatile' backend needs diffusers' VersatileDiffusionImageVariationPipeline, which this "
            f"diffusers ({diffusers.__version__}) no longer ships (it lived in "
            "diffusers.pipelines.deprecated up to at least 0.42). Install a diffusers version that still "
            "has it (pip install 'diffusers>=0.30,<=0.42.1'), or use backend='unclip' / 'ip_adapter' with "
            "CLIP image embeddings instead.")
    return cls


# --------------------------------------------------------------------------- img2img without `strength`
def _t_start(num_inference_steps: int, strength: float) -> int:
    """First kept denoising step, as diffusers' ``get_timesteps`` computes it."""
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    return max(num_inference_steps - init_timestep, 0)


class _StrengthScheduler:
    """A view of a diffusers scheduler whose ``timesteps`` start at ``strength`` (img2img).

    ``set_timesteps`` sets the full schedule on the wrapped scheduler, then keeps
    the last ``int(num_inference_steps * strength)`` steps (diffusers'
    ``get_timesteps`` rule) and sets the scheduler's begin index, so schedulers
    that count steps (Euler, DPM-Solver) index their sigmas correctly.
    ``init_noise_sigma`` is 1 because the latents handed to the pipeline are
    already noised to the first kept timestep. Everything else is delegated.
    """

    def __init__(self, inner: Any, strength: float) -> None:
        self._inner = inner
        self._strength = float(strength)
        self._timesteps = None

    def set_timesteps(self, num_inference_steps: int, *args: Any, **kwargs: Any) -> None:
        self._inner.set_timesteps(num_inference_steps, *args, **kwargs)
        order = int(getattr(self._inner, "order", 1))
        start = _t_start(int(num_inference_steps), self._strength) * order
        if hasattr(self._inner, "set_begin_index"):
            self._inner.set_begin_index(start)
        self._timesteps = self._inner.timesteps[start:]

    @property
    def timesteps(self) -> Any:
        return self._inner.timesteps if self._timesteps is None else self._timesteps

    @property
    def init_noise_sigma(self) -> float:
        return 1.0

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not yet set (copy, pickle): avoid recursing
            raise AttributeError(name)
        return getattr(self._inner, name)


@contextmanager
def _scheduler_view(pipe: Any, strength: float) -> Iterator[None]:
    """Swap ``pipe.scheduler`` for a :class:`_StrengthScheduler` during one call.

    ``object.__setattr__`` bypasses ``DiffusionPipeline.__setattr__``, which
    would otherwise rewrite the pipeline config with the view's class.
    """
    inner = pipe.scheduler
    object.__setattr__(pipe, "scheduler", _StrengthScheduler(inner, strength))
    try:
        yield
    finally:
        object.__setattr__(pipe, "scheduler", inner)


def _noised_init_latents(pipe: Any, init: Any, generators: list, *, num_inference_steps: int,
                         strength: float, device: Any, dtype: Any) -> Any:
    """VAE-encode ``init`` (B, 3, H, W) in [0, 1] and noise it to the first kept timestep."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    vae = pipe.vae
    x = init.to(device=device, dtype=vae.dtype) * 2.0 - 1.0
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
    latents = latents.to(dtype)
    sched = pipe.scheduler
    sched.set_timesteps(num_inference_steps, device=device)
    order = int(getattr(sched, "order", 1))
    start = _t_start(num_inference_steps, strength) * order
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start)
    t0 = sched.timesteps[start:start + 1].repeat(latents.shape[0])
    noise = randn_tensor(latents.shape, generator=generators, device=latents.device, dtype=latents.dtype)
    return sched.add_noise(latents, noise, t0)


# --------------------------------------------------------------------------- backends
class _Backend:
    """Common part: device/dtype/offload handling and the pipeline call."""

    name = ""
    embed_kind = "pooled"  # "pooled" (n, d) or "tokens" (n, t, d)
    supports_prompt = True

    def __init__(self, pipeline: Any, *, negative_embeds: Any = None) -> None:
        self.pipe = self._coerce(pipeline)
        self.negative_embeds = negative_embeds
        self._derived: dict[str, Any] = {}
        self._offload_device: Any = None
        self._offloaded: Any = None
        self.pipe.set_progress_bar_config(disable=True)

    # -- construction ------------------------------------------------------------
    def _coerce(self, pipeline: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _derive(self, key: str, cls: Any) -> Any:
        """A pipeline of class ``cls`` sharing the main pipeline's components (``from_pipe``)."""
        if key not in self._derived:
            pipe = cls.from_pipe(self.pipe)
            pipe.set_progress_bar_config(disable=True)
            self._derived[key] = pipe
        return self._derived[key]

    # -- device, dtype, offload ----------------------------------------------------
    def _modules(self) -> list:
        import torch

        return [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)]

    def to(self, device: Any, dtype: Any) -> None:
        self.pipe.to(device=device)
        self.to_dtype(dtype)

    def to_dtype(self, dtype: Any) -> None:
        # diffusers warns on every .to(dtype=...), even a no-op one: cast only when needed
        if any(p.dtype != dtype for m in self._modules() for p in m.parameters()):
            self.pipe.to(dtype=dtype)

    def enable_offload(self, device: Any) -> None:
        self._offload_device = device
        self._activate(self.pipe)

    def _activate(self, pipe: Any) -> None:
        """With CPU offload, (re)install the hooks on the pipeline about to run (they are per pipeline)."""
        if self._offload_device is not None and self._offloaded is not pipe:
            pipe.enable_model_cpu_offload(device=self._offload_device)
            self._offloaded = pipe

    @property
    def device(self) -> Any:
        return self.pipe._execution_device

    @property
    def denoiser(self) -> Any:
        return self.pipe.unet

    @property
    def dtype(self) -> Any:
        return self.denoiser.dtype

    @property
    def vae(self) -> Any:
        """The autoencoder whose latents the low-level stage decodes."""
        return self.pipe.vae

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def default_size(self) -> tuple[int, int]:
        size = self.denoiser.config.sample_size
        size = size if isinstance(size, int) else int(size[0])
        return size * self.vae_scale_factor, size * self.vae_scale_factor

    def expected_dim(self) -> int | None:  # pragma: no cover - overridden
        return None

    def describe(self) -> str:
        return type(self.pipe).__name__

    def _call(self, pipe: Any, extra: Mapping[str, Any], **kwargs: Any) -> np.ndarray:
        self._activate(pipe)
        kwargs.update(extra)
        kwargs.update(output_type="np", return_dict=True)
        out = pipe(**kwargs).images
        return np.asarray(out, dtype=np.float32)

    def _negative(self, cond: Any) -> Any:
        """Unconditional embeddings for classifier-free guidance: the user's, else zeros."""
        import torch

        if self.negative_embeds is None:
            return torch.zeros_like(cond)
        neg = torch.as_tensor(np.asarray(self.negative_embeds, dtype=np.float32) if not isinstance(
            self.negative_embeds, torch.Tensor) else self.negative_embeds.float())
        if neg.ndim == cond.ndim and len(neg) == 1:
            neg = neg[0]
        if neg.shape != cond.shape[1:]:
            raise ValueError(f"negative_embeds must have shape {tuple(cond.shape[1:])} (one embedding, used "
                             f"for every image), got {tuple(neg.shape)}")
        return neg.unsqueeze(0).expand_as(cond).to(device=cond.device, dtype=cond.dtype)

    def generate(self, cond: Any, init: Any, generators: list, prompts: list[str], *,
                 num_inference_steps: int, guidance_scale: float, strength: float, height: int, width: int,
                 extra: Mapping[str, Any]) -> np.ndarray:  # pragma: no cover - overridden
        """Images, float32 array (B, height, width, 3) in [0, 1]."""
        raise NotImplementedError


class _UnclipBackend(_Backend):
    name = "unclip"

    def _coerce(self, pipeline: Any) -> Any:
        cls = import_diffusers().StableUnCLIPImg2ImgPipeline
        if isinstance(pipeline, cls):
            return pipeline
        raise TypeError("backend='unclip' needs a diffusers StableUnCLIPImg2ImgPipeline (it takes "
                        f"image_embeds), got {type(pipeline).__name__}. Load one with "
                        f"Reconstructor.from_pretrained('unclip', folder) from {DEFAULT_REPOS['unclip']}.")

    def expected_dim(self) -> int | None:
        dim = self.pipe.unet.config.projection_class_embeddings_input_dim
        return None if dim is None else int(dim) // 2  # image embedding ‖ noise-level embedding

    def generate(self, cond, init, generators, prompts, *, num_inference_steps, guidance_scale, strength,
                 height, width, extra):
        if self.negative_embeds is not None:
            raise ValueError("backend='unclip' uses zero image embeddings as its unconditional input; "
                             "negative_embeds is not supported")
        device = self.device
        kwargs = {"image_embeds": cond.to(device=device, dtype=self.dtype), "prompt": list(prompts),
                  "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                  "generator": generators, "height": height, "width": width}
        if init is None:
            return self._call(self.pipe, extra, **kwargs)
        latents = _noised_init_latents(self.pipe, init, generators, num_inference_steps=num_inference_steps,
                                       strength=strength, device=device, dtype=self.dtype)
        with _scheduler_view(self.pipe, strength):
            return self._call(self.pipe, extra, latents=latents, **kwargs)


class _KandinskyBackend(_Backend):
    name = "kandinsky"
    supports_prompt = False

    def _coerce(self, pipeline: Any) -> Any:
        diffusers = import_diffusers()
        if isinstance(pipeline, diffusers.KandinskyV22Img2ImgPipeline):
            return pipeline
        if isinstance(pipeline, diffusers.KandinskyV22Pipeline):
            return diffusers.KandinskyV22Img2ImgPipeline.from_pipe(pipeline)
        raise TypeError("backend='kandinsky' needs a diffusers KandinskyV22Img2ImgPipeline or "
                        "KandinskyV22Pipeline (the decoder, which takes image_embeds), got "
                        f"{type(pipeline).__name__}. Load one with "
                        "Reconstructor.from_pretrained('kandinsky', folder) from "
                        f"{DEFAULT_REPOS['kandinsky']}.")

    @property
    def vae(self) -> Any:
        return self.pipe.movq

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.movq_scale_factor)

    def default_size(self) -> tuple[int, int]:
        return 512, 512  # the pipelines' own default

    def expected_dim(self) -> int | None:
        dim = self.pipe.unet.config.encoder_hid_dim
        return None if dim is None else int(dim)

    def generate(self, cond, init, generators, prompts, *, num_inference_steps, guidance_scale, strength,
                 height, width, extra):
        cond = cond.to(device=self.device, dtype=self.dtype)
        kwargs = {"image_embeds": cond, "negative_image_embeds": self._negative(cond),
                  "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                  "generator": generators, "height": height, "width": width}
        if init is None:
            text2img = self._derive("text2img", import_diffusers().KandinskyV22Pipeline)
            return self._call(text2img, extra, **kwargs)
        return self._call(self.pipe, extra, image=init, strength=strength, **kwargs)


class _IPAdapterBackend(_Backend):
    name = "ip_adapter"

    def _coerce(self, pipeline: Any) -> Any:
        diffusers = import_diffusers()
        img2img = {diffusers.StableDiffusionImg2ImgPipeline: diffusers.StableDiffusionImg2ImgPipeline,
                   diffusers.StableDiffusionPipeline: diffusers.StableDiffusionImg2ImgPipeline,
                   diffusers.StableDiffusionXLImg2ImgPipeline: diffusers.StableDiffusionXLImg2ImgPipeline,
                   diffusers.StableDiffusionXLPipeline: diffusers.StableDiffusionXLImg2ImgPipeline}
        target = next((dst for src, dst in img2img.items() if isinstance(pipeline, src)), None)
        if target is None:
            raise TypeError(f"backend='ip_adapter' needs a diffusers StableDiffusion(XL)Pipeline or "
                            f"StableDiffusion(XL)Img2ImgPipeline with an IP-Adapter loaded, got "
                            f"{type(pipeline).__name__}.")
        pipe = pipeline if isinstance(pipeline, target) else target.from_pipe(pipeline)
        proj = getattr(pipe.unet, "encoder_hid_proj", None)
        layers = getattr(proj, "image_projection_layers", None)
        if layers is None:
            raise ValueError(
                "backend='ip_adapter' needs an IP-Adapter loaded into the pipeline: pass ip_adapter= the "
                "weight file (h94/IP-Adapter: models/ip-adapter_sd15.safetensors for SD 1.5, "
                "sdxl_models/ip-adapter_sdxl_vit-h.safetensors for SDXL) to Reconstructor.from_pretrained, "
                "or call pipe.load_ip_adapter(folder, subfolder=..., weight_name=..., "
                "image_encoder_folder=None) first.")
        if len(layers) != 1:
            raise ValueError("backend='ip_adapter' supports exactly one loaded IP-Adapter, found "
                             f"{len(layers)}")
        return pipe

    @property
    def _projection(self) -> Any:
        return self.pipe.unet.encoder_hid_proj.image_projection_layers[0]

    @property
    def is_xl(self) -> bool:
        return type(self.pipe).__name__.startswith("StableDiffusionXL")

    @property
    def embed_kind(self) -> str:  # type: ignore[override]
        # The plain IP-Adapter projects one pooled CLIP image embedding; Plus / Full-face ones take tokens.
        return "pooled" if type(self._projection).__name__ == "ImageProjection" else "tokens"

    def expected_dim(self) -> int | None:
        proj = self._projection
        for attr in ("image_embeds", "proj_in", "ff"):
            layer = getattr(proj, attr, None)
            if layer is not None and hasattr(layer, "in_features"):
                return int(layer.in_features)
        return None

    def describe(self) -> str:
        return f"{type(self.pipe).__name__} + IP-Adapter ({type(self._projection).__name__})"

    def generate(self, cond, init, generators, prompts, *, num_inference_steps, guidance_scale, strength,
                 height, width, extra):
        import torch

        cond = cond.to(device=self.device, dtype=self.dtype)
        embeds = cond[:, None]  # (B, 1, d) or (B, 1, t, d): one IP image per prompt
        if guidance_scale > 1.0:
            embeds = torch.cat([self._negative(cond)[:, None], embeds])
        kwargs = {"prompt": list(prompts), "ip_adapter_image_embeds": [embeds],
                  "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                  "generator": generators}
        if init is None:
            diffusers = import_diffusers()
            cls = diffusers.StableDiffusionXLPipeline if self.is_xl else diffusers.StableDiffusionPipeline
            return self._call(self._derive("text2img", cls), extra, height=height, width=width, **kwargs)
        return self._call(self.pipe, extra, image=init, strength=strength, **kwargs)


@functools.cache
def _versatile_class() -> Any:
    """A VersatileDiffusionImageVariationPipeline that conditions on given CLIP image tokens."""
    base = _versatile_base()

    class EmbeddingVariationPipeline(base):  # type: ignore[misc, valid-type]
        """Versatile Diffusion image variation from precomputed (normalised) CLIP image tokens."""

        _nd_embeds: Any = None

        def _encode_prompt(self, prompt, device, num_images_per_prompt, do_classifier_free_guidance,
                           negative_prompt):
            import torch

            if self._nd_embeds is None:
                return super()._encode_prompt(prompt, device, num_images_per_prompt,
                                              do_classifier_free_guidance, negative_prompt)
            cond, neg = self._nd_embeds
            cond = cond.repeat_interleave(num_images_per_prompt, dim=0)
            if not do_classifier_free_guidance:
                return cond
            return torch.cat([neg.repeat_interleave(num_images_per_prompt, dim=0), cond])

    EmbeddingVariationPipeline.__qualname__ = "EmbeddingVariationPipeline"
    return EmbeddingVariationPipeline


class _VersatileBackend(_Backend):
    name = "versatile"
    embed_kind = "tokens"
    supports_prompt = False
    _neg_cache: Any = None

    def _coerce(self, pipeline: Any) -> Any:
        base = _versatile_base()
        cls = _versatile_class()
        if isinstance(pipeline, cls):
            return pipeline
        diffusers = import_diffusers()
        full = getattr(diffusers, "VersatileDiffusionPipeline", None)
        if not isinstance(pipeline, base) and not (full is not None and isinstance(pipeline, full)):
            raise TypeError("backend='versatile' needs a diffusers VersatileDiffusionImageVariationPipeline "
                            f"(or VersatileDiffusionPipeline), got {type(pipeline).__name__}.")
        names = cls._get_signature_keys(cls)[0]
        comps = pipeline.components
        missing = sorted(set(names) - set(comps))
        if missing:
            raise ValueError(f"The Versatile Diffusion pipeline lacks the components {missing}")
        return cls(**{k: comps[k] for k in names})

    @property
    def denoiser(self) -> Any:
        return self.pipe.image_unet

    def describe(self) -> str:
        return "VersatileDiffusionImageVariationPipeline (CLIP image-token conditioning)"

    def expected_dim(self) -> int | None:
        return int(self.pipe.image_unet.config.cross_attention_dim)

    @staticmethod
    def _normalise(tokens: Any) -> Any:
        """Versatile Diffusion's scaling: every token divided by the norm of the first (CLS) token."""
        return tokens / tokens[:, :1].norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def _gray_negative(self, like: Any) -> Any:
        """VD's unconditional input: the image encoder's tokens of a uniform gray 512-px image."""
        import torch

        key = (like.shape[1:], like.dtype, like.device)
        cached = self._neg_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        enc = self.pipe.image_encoder
        fe = self.pipe.image_feature_extractor
        if enc is None or fe is None:
            logger.info("versatile: no image encoder in the pipeline, using zero tokens as the "
                        "unconditional input (pass negative_embeds= to set it)")
            neg = torch.zeros_like(like[:1])
        else:
            pixels = fe(images=[np.zeros((512, 512, 3)) + 0.5], return_tensors="pt").pixel_values
            with torch.no_grad():
                out = enc(pixels.to(device=self.device, dtype=enc.dtype))
                neg = enc.vision_model.post_layernorm(out.last_hidden_state)
                neg = self._normalise(enc.visual_projection(neg))
            if neg.shape[1:] != like.shape[1:]:
                raise ValueError("versatile: the pipeline's image encoder gives tokens of shape "
                                 f"{tuple(neg.shape[1:])}, but the embeddings have shape "
                                 f"{tuple(like.shape[1:])}")
            neg = neg.to(device=like.device, dtype=like.dtype)
        self._neg_cache = (key, neg)
        return neg

    def generate(self, cond, init, generators, prompts, *, num_inference_steps, guidance_scale, strength,
                 height, width, extra):
        import torch

        device = self.device
        cond = self._normalise(cond.to(device=device, dtype=self.dtype))
        if self.negative_embeds is None:
            neg = self._gray_negative(cond).expand_as(cond)
        else:
            neg = self._normalise(self._negative(cond))
        placeholder = torch.zeros(len(cond), 3, 1, 1)  # only its length is read: _encode_prompt is replaced
        kwargs = {"image": placeholder, "num_inference_steps": num_inference_steps,
                  "guidance_scale": guidance_scale, "generator": generators, "height": height, "width": width}
        self.pipe._nd_embeds = (cond, neg)
        try:
            if init is None:
                return self._call(self.pipe, extra, **kwargs)
            latents = _noised_init_latents(self.pipe, init, generators,
                                           num_inference_steps=num_inference_steps, strength=strength,
                                           device=device, dtype=self.dtype)
            with _scheduler_view(self.pipe, strength):
                return self._call(self.pipe, extra, latents=latents, **kwargs)
        finally:
            self.pipe._nd_embeds = None


_BACKEND_CLASSES = {"unclip": _UnclipBackend, "kandinsky": _KandinskyBackend, "ip_adapter": _IPAdapterBackend,
                    "versatile": _VersatileBackend}


def make_backend(name: str, pipeline: Any, *, negative_embeds: Any = None) -> _Backend:
    """Wrap ``pipeline`` into the backend ``name`` (checks the pipeline class)."""
    return _BACKEND_CLASSES[name](pipeline, negative_embeds=negative_embeds)


# --------------------------------------------------------------------------- loading from disk
def resolve_pipeline_folder(backend: str, path_or_repo_id: str | Path) -> Path:
    """Return the local diffusers folder for ``path_or_repo_id`` (never downloads).

    Raises
    ------
    FileNotFoundError
        Saying what to put where.
    """
    what = _WHAT[backend]
    path = Path(path_or_repo_id).expanduser()
    if path.exists():
        if path.is_dir() and (path / "model_index.json").is_file():
            return path
        raise FileNotFoundError(
            f"{path} is not a diffusers pipeline folder (no model_index.json in it). backend={backend!r} "
            f"needs {what}. Download it on a machine with network access (`hf download "
            f"{DEFAULT_REPOS[backend]} --local-dir {path}`) and copy it here, or pass a Hugging Face repo id "
            "in your local HF cache.")
    if isinstance(path_or_repo_id, str) and looks_like_repo_id(path_or_repo_id):
        return resolve_hf_snapshot(path_or_repo_id, what=f"backend={backend!r} diffusion pipeline",
                                   needs=("model_index.json",))
    raise FileNotFoundError(
        f"No diffusers pipeline folder at {path}. backend={backend!r} needs {what}: put that folder at "
        f"{path} (e.g. `hf download {DEFAULT_REPOS[backend]} --local-dir {path}` on a machine with network "
        "access), or pass a Hugging Face repo id that is already in your local HF cache. Nothing is "
        "downloaded.")


def _pipeline_class(backend: str, folder: Path) -> Any:
    diffusers = import_diffusers()
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"Cannot read {folder / 'model_index.json'}: {err}") from err
    saved = str(index.get("_class_name", ""))
    if backend == "unclip":
        return diffusers.StableUnCLIPImg2ImgPipeline
    if backend == "kandinsky":
        return diffusers.KandinskyV22Img2ImgPipeline
    if backend == "ip_adapter":
        xl = "XL" in saved or "text_encoder_2" in index
        return diffusers.StableDiffusionXLImg2ImgPipeline if xl else diffusers.StableDiffusionImg2ImgPipeline
    return _versatile_base()


def _load_ip_adapter(pipe: Any, ip_adapter: Any) -> None:
    """Load an IP-Adapter from a weight file, a state dict or a ``load_ip_adapter`` kwargs mapping."""
    if isinstance(ip_adapter, Mapping) and "image_proj" in ip_adapter:
        pipe.load_ip_adapter(dict(ip_adapter), subfolder="", weight_name="", image_encoder_folder=None)
        return
    if isinstance(ip_adapter, Mapping):
        kwargs = dict(ip_adapter)
        kwargs.setdefault("subfolder", "")
        kwargs.update(image_encoder_folder=None, local_files_only=True)
        source = kwargs.pop("pretrained_model_name_or_path_or_dict", None)
        if source is None:
            raise ValueError("ip_adapter mapping needs 'pretrained_model_name_or_path_or_dict' (a folder or "
                             "repo id) and 'weight_name', as for pipe.load_ip_adapter")
        try:
            pipe.load_ip_adapter(source, **kwargs)
        except OSError as err:
            raise FileNotFoundError(f"IP-Adapter weights {source!r} "
                                    f"({kwargs.get('subfolder')}/{kwargs.get('weight_name')}) are not on "
                                    f"this disk or in the local HF cache: {err}. Download them from "
                                    "h94/IP-Adapter.") from err
        return
    path = Path(ip_adapter).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"IP-Adapter weight file not found: {path}. Put the file from h94/IP-Adapter there "
            "(models/ip-adapter_sd15.safetensors for SD 1.5, sdxl_models/ip-adapter_sdxl_vit-h.safetensors "
            "for SDXL), or pass a mapping of pipe.load_ip_adapter arguments. Nothing is downloaded.")
    pipe.load_ip_adapter(str(path.parent), subfolder="", weight_name=path.name, image_encoder_folder=None,
                         local_files_only=True)


def _dtype_kwarg() -> str:
    """``from_pretrained``'s dtype argument: ``dtype`` in recent diffusers, ``torch_dtype`` before."""
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:  # pragma: no cover
        return "torch_dtype"
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


@contextmanager
def _library_progress_bars() -> Iterator[None]:
    """diffusers' own progress bars ("Loading pipeline components") follow ours: off under ``-q``."""
    from ..utils import progress_disabled

    if not progress_disabled():
        yield
        return
    from diffusers.utils import logging as dlogging

    was_enabled = dlogging.is_progress_bar_enabled()
    dlogging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            dlogging.enable_progress_bar()


def load_pipeline(backend: str, path_or_repo_id: str | Path, *, torch_dtype: Any = None,
                  ip_adapter: Any = None, ip_adapter_scale: float | None = None) -> Any:
    """Load the backend's diffusers pipeline from a local folder or the local HF cache.

    Parameters
    ----------
    backend : {"unclip", "kandinsky", "ip_adapter", "versatile"}
    path_or_repo_id : str | Path
        A diffusers folder (with ``model_index.json``) or a repo id in the local HF cache.
    torch_dtype : torch.dtype | None
        Load the weights in this dtype.
    ip_adapter : str | Path | Mapping | None
        For ``"ip_adapter"``: the IP-Adapter weight file, a state dict, or a
        mapping of ``pipe.load_ip_adapter`` arguments.
    ip_adapter_scale : float | None
        ``pipe.set_ip_adapter_scale`` after loading.

    Returns
    -------
    pipeline : diffusers.DiffusionPipeline
    """
    folder = resolve_pipeline_folder(backend, path_or_repo_id)
    cls = _pipeline_class(backend, folder)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if torch_dtype is not None:
        kwargs[_dtype_kwarg()] = torch_dtype
    try:
        with _library_progress_bars():
            pipe = cls.from_pretrained(str(folder), **kwargs)
    except OSError as err:
        raise FileNotFoundError(f"Could not load the backend={backend!r} pipeline from {folder}: {err}. It "
                                f"must hold {_WHAT[backend]}, with every component folder listed in "
                                "model_index.json."
                                ) from err
    logger.info("Loaded %s from %s", cls.__name__, folder)
    if backend == "ip_adapter":
        if ip_adapter is None:
            raise ValueError("backend='ip_adapter' needs ip_adapter= the IP-Adapter weight file (from "
                             "h94/IP-Adapter: models/ip-adapter_sd15.safetensors for SD 1.5, "
                             "sdxl_models/ip-adapter_sdxl_vit-h.safetensors for SDXL).")
        _load_ip_adapter(pipe, ip_adapter)
        if ip_adapter_scale is not None:
            pipe.set_ip_adapter_scale(float(ip_adapter_scale))
    elif ip_adapter is not None:
        raise ValueError(f"ip_adapter= is only used by backend='ip_adapter', not {backend!r}")
    return pipe


# --------------------------------------------------------------------------- random-weight pipelines
_TINY_CHARS = "abcdefghijklmnopqrstuvwxyz"


def _tiny_tokenizer(model_max_length: int) -> Any:
    """A CLIP tokenizer with a 54-token character vocabulary, built offline from files we write."""
    transformers = import_optional("transformers", extra="generation", what="Stable Diffusion text encoders")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _TINY_CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return transformers.CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                                          model_max_length=model_max_length)


def _text_encoder(hidden: int, layers: int, heads: int, *, projection: int | None = None,
                  max_len: int = 77, vocab_size: int = 49408, act: str = "quick_gelu") -> Any:
    transformers = import_optional("transformers", extra="generation", what="Stable Diffusion text encoders")
    cfg = transformers.CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden,
                                      intermediate_size=hidden * 4, num_attention_heads=heads,
                                      num_hidden_layers=layers, vocab_size=vocab_size,
                                      max_position_embeddings=max_len, hidden_act=act,
                                      projection_dim=projection or hidden)
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return cls(cfg).eval()


def _ddim(prediction_type: str = "epsilon") -> Any:
    return import_diffusers().DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                            clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                            prediction_type=prediction_type)


def _vae(size: str) -> Any:
    diffusers = import_diffusers()
    if size.startswith("tiny"):
        return diffusers.AutoencoderKL(block_out_channels=(32, 64),
                                       down_block_types=("DownEncoderBlock2D",) * 2,
                                       up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                                       layers_per_block=1, norm_num_groups=32, sample_size=32)
    return diffusers.AutoencoderKL(block_out_channels=(128, 256, 512, 512),
                                   down_block_types=("DownEncoderBlock2D",) * 4,
                                   up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
                                   layers_per_block=2, sample_size=1024 if size == "sdxl" else 512)


def _tiny_clip_vision(dim: int) -> tuple[Any, Any]:
    transformers = import_optional("transformers", extra="generation", what="CLIP image encoders")
    enc = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
        hidden_size=dim, projection_dim=dim, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        intermediate_size=37, patch_size=8)).eval()
    return enc, transformers.CLIPImageProcessor(crop_size=32, size=32)


def _random_ip_adapter(unet: Any, image_embed_dim: int, generator: Any) -> dict:
    """A random IP-Adapter state dict (``image_proj`` + ``ip_adapter``) for ``unet``, as h94's files hold."""
    import torch

    cross = int(unet.config.cross_attention_dim)
    blocks = list(unet.config.block_out_channels)
    ip: dict[str, Any] = {}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = blocks[::-1][int(name[len("up_blocks.")])]
        else:
            hidden = blocks[int(name[len("down_blocks.")])]
        for kv in ("k", "v"):
            ip[f"{key}.to_{kv}_ip.weight"] = torch.randn(hidden, cross, generator=generator,
                                                         device="cpu") * cross ** -0.5
        key += 2
    cpu = torch.device("cpu")
    proj = {"proj.weight": torch.randn(cross * 4, image_embed_dim, generator=generator, device=cpu)
            * image_embed_dim ** -0.5, "proj.bias": torch.zeros(cross * 4, device=cpu),
            "norm.weight": torch.ones(cross, device=cpu), "norm.bias": torch.zeros(cross, device=cpu)}
    return {"image_proj": proj, "ip_adapter": ip}


def _random_kandinsky(diffusers: Any, embed_dim: int) -> Any:
    """A tiny random Kandinsky 2.2 img2img pipeline taking ``embed_dim``-d image embeddings."""
    unet = diffusers.UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image", encoder_hid_dim=embed_dim,
        encoder_hid_dim_type="image_proj", down_block_types=("ResnetDownsampleBlock2D",
                                                             "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        cross_attention_dim=32, attention_head_dim=4, resnet_time_scale_shift="scale_shift",
        sample_size=16)
    movq = diffusers.VQModel(block_out_channels=(32, 64),
                             down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
                             up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"), in_channels=3,
                             out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                             norm_type="spatial", num_vq_embeddings=12, vq_embed_dim=4)
    return diffusers.KandinskyV22Img2ImgPipeline(unet=unet, scheduler=_ddim(), movq=movq)


def _random_unclip(diffusers: Any, embed_dim: int) -> Any:
    """A tiny random Stable unCLIP img2img pipeline taking ``embed_dim``-d image embeddings."""
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    enc, fe = _tiny_clip_vision(embed_dim)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64),
        attention_head_dim=(2, 4), class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * embed_dim, cross_attention_dim=32, layers_per_block=1,
        upcast_attention=True, use_linear_projection=True)
    return diffusers.StableUnCLIPImg2ImgPipeline(
        feature_extractor=fe, image_encoder=enc, image_normalizer=StableUnCLIPImageNormalizer(embed_dim),
        image_noising_scheduler=diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=_tiny_tokenizer(16), text_encoder=_text_encoder(32, 2, 4, max_len=16, vocab_size=54),
        unet=unet, scheduler=_ddim("v_prediction"), vae=_vae("tiny"))


def _random_versatile(diffusers: Any, embed_dim: int) -> Any:
    """A tiny random Versatile Diffusion image-variation pipeline."""
    enc, fe = _tiny_clip_vision(embed_dim)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64),
        attention_head_dim=(2, 4), cross_attention_dim=embed_dim, layers_per_block=1)
    return _versatile_base()(image_feature_extractor=fe, image_encoder=enc, image_unet=unet,
                             vae=_vae("tiny"), scheduler=_ddim())


def _random_ip_adapter_pipeline(diffusers: Any, size: str, embed_dim: int, generator: Any) -> Any:
    """A random SD 1.5 / SDXL img2img pipeline (tiny or full layout) with a random IP-Adapter loaded."""
    tiny = size.startswith("tiny")
    xl = size in ("sdxl", "tiny-xl")
    if tiny and not xl:
        unet = diffusers.UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64),
            attention_head_dim=(2, 4), cross_attention_dim=32, layers_per_block=1)
        text, tok = _text_encoder(32, 2, 4, max_len=16, vocab_size=54), _tiny_tokenizer(16)
    elif tiny:
        unet = diffusers.UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(32, 64),
            attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, layers_per_block=1)
        text, tok = _text_encoder(32, 2, 4, max_len=16, vocab_size=54), _tiny_tokenizer(16)
        text2, tok2 = _text_encoder(32, 2, 4, projection=32, max_len=16, vocab_size=54, act="gelu"), \
            _tiny_tokenizer(16)
    elif not xl:  # SD 1.5 layout
        unet = diffusers.UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        text, tok = _text_encoder(768, 12, 12), _tiny_tokenizer(77)
    else:  # SDXL base layout
        unet = diffusers.UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        text, tok = _text_encoder(768, 12, 12), _tiny_tokenizer(77)
        text2, tok2 = _text_encoder(1280, 32, 20, projection=1280, act="gelu"), _tiny_tokenizer(77)
    if xl:
        pipe = diffusers.StableDiffusionXLImg2ImgPipeline(
            vae=_vae(size), text_encoder=text, text_encoder_2=text2, tokenizer=tok, tokenizer_2=tok2,
            unet=unet, scheduler=_ddim(), image_encoder=None, feature_extractor=None,
            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True, add_watermarker=False)
    else:
        pipe = diffusers.StableDiffusionImg2ImgPipeline(
            vae=_vae(size), text_encoder=text, tokenizer=tok, unet=unet, scheduler=_ddim(),
            safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    pipe.load_ip_adapter(_random_ip_adapter(unet, embed_dim, generator), subfolder="", weight_name="",
                         image_encoder_folder=None)
    return pipe


def _build_random(backend: str, size: str, embed_dim: int, generator: Any) -> Any:
    """A random pipeline of ``backend`` (ip_adapter in the layout ``size``; the others are always tiny)."""
    diffusers = import_diffusers()
    if backend == "ip_adapter":
        return _random_ip_adapter_pipeline(diffusers, size, embed_dim, generator)
    build = {"kandinsky": _random_kandinsky, "unclip": _random_unclip, "versatile": _random_versatile}[backend]
    return build(diffusers, embed_dim)


def make_random_pipeline(backend: str, *, size: str = "tiny", embed_dim: int | None = None, seed: int = 0,
                         device: str = "cpu", torch_dtype: Any = None) -> Any:
    """Build a backend's diffusers pipeline with random weights, offline (tests and timing only).

    Parameters
    ----------
    backend : {"unclip", "kandinsky", "ip_adapter", "versatile"}
        Which pipeline family.
    size : {"tiny", "tiny-xl", "sd15", "sdxl"}
        ``"tiny"``: 32-px images, a few hundred thousand parameters per model.
        ``"tiny-xl"``, ``"sd15"`` and ``"sdxl"`` (``ip_adapter`` only): a tiny
        SDXL, and the full Stable Diffusion 1.5 (UNet 860 M, 512 px) and SDXL
        (UNet 2.6 B, 1024 px) layouts.
    embed_dim : int | None
        Dimension of the image embeddings the pipeline takes (default 32 for
        the tiny pipelines, 1024 for SD 1.5, 1280 for SDXL).
    seed : int
        Seed of the weights (the global torch RNG is left as it was).
    device : str
        Where to build the weights (``"cuda"`` builds large models much faster).
    torch_dtype : torch.dtype | None
        Cast the pipeline to this dtype.

    Returns
    -------
    pipeline : diffusers.DiffusionPipeline
        ``StableUnCLIPImg2ImgPipeline``, ``KandinskyV22Img2ImgPipeline``,
        ``StableDiffusion(XL)Img2ImgPipeline`` with a random IP-Adapter loaded,
        or a Versatile Diffusion image-variation pipeline.
    """
    import torch

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    sizes = ("tiny", "tiny-xl", "sd15", "sdxl") if backend == "ip_adapter" else ("tiny",)
    if size not in sizes:
        raise ValueError(f"size={size!r} is not available for backend={backend!r}; use one of {sizes}")
    if embed_dim is None:
        embed_dim = {"sd15": 1024, "sdxl": 1280}.get(size, 32)
    dev = torch.device(device)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    generator = torch.Generator().manual_seed(int(seed) + 1)
    with torch.random.fork_rng(devices=devices), torch.device(dev):
        torch.random.manual_seed(int(seed))
        pipe = _build_random(backend, size, int(embed_dim), generator)
    pipe.to(device=dev)
    if torch_dtype is not None:
        pipe.to(dtype=torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe

