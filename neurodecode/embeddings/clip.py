"""open_clip image and text encoders with weights from the local disk only.

:class:`ClipEncoder` wraps an `open_clip <https://github.com/mlfoundations/open_clip>`_
model and returns, for images and texts, the pooled (projected) embedding and the
final token sequence. :func:`embed_clip_images` and :func:`embed_captions` embed
the stimuli of a :class:`~neurodecode.datasets.StimulusSet` into a
:class:`~neurodecode.embeddings.StimulusEmbeddings` table, optionally through the
on-disk :class:`~neurodecode.embeddings.EmbeddingCache`.

Weights never come from the network: a local file (``.pt`` / ``.pth`` / ``.bin``
/ ``.safetensors``), a folder holding one, or a Hugging Face repo id already in
the local HF cache. Random weights need ``allow_random=True`` (tests only).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..utils import ProgressBar, check_option, fill_doc, logger, resolve_device, verbose
from ..utils.imports import import_optional
from .hub import looks_like_repo_id, resolve_hf_snapshot

TokenMode = Literal["raw", "projected", "projected_cls"]
_TOKEN_MODES = ("raw", "projected", "projected_cls")
_PRECISIONS = ("fp32", "fp16", "bf16", "amp")
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
#: File names looked for in a folder or in a Hugging Face snapshot, in order.
CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors",
                     "pytorch_model.bin")


def import_open_clip():
    """Import ``open_clip`` or raise ``ImportError`` naming the ``clip`` extra.

    Returns
    -------
    open_clip : module
        The ``open_clip`` module.
    """
    return import_optional("open_clip", extra="clip", what="CLIP encoders")


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """open_clip warns 'initialized randomly' before we load the weights ourselves."""
    filt = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


def resolve_clip_weights(weights: str | Path) -> Path:
    """Return the local weight file for ``weights`` (never downloads).

    Parameters
    ----------
    weights : str | Path
        A weight file (``.safetensors``, ``.pt``, ``.pth``, ``.bin``), a folder
        holding one of :data:`CLIP_WEIGHT_FILES`, or a Hugging Face repo id
        (``"laion/CLIP-ViT-L-14-laion2B-s32B-b82K"``, optionally prefixed
        ``hf-hub:``) already in the local Hugging Face cache.

    Returns
    -------
    path : Path
        The weight file.

    Raises
    ------
    FileNotFoundError
        Naming where the file was expected and how to put it there.
    """
    if isinstance(weights, str) and looks_like_repo_id(weights):
        folder = resolve_hf_snapshot(weights, what="open_clip", needs=CLIP_WEIGHT_FILES)
        return next(folder / n for n in CLIP_WEIGHT_FILES if (folder / n).is_file())
    path = Path(weights).expanduser()
    if path.is_dir():
        for name in CLIP_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        found = sorted(p.name for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if len(found) == 1:
            return path / found[0]
        raise FileNotFoundError(
            f"No open_clip weight file in the folder {path}: expected one of {list(CLIP_WEIGHT_FILES)}"
            + (f" (found several candidates {found}; pass weights= the file itself)" if found else "")
            + ". Put the checkpoint there, or pass weights= the path of the file.")
    if not path.is_file():
        raise FileNotFoundError(
            f"open_clip weight file not found: {path}. Put the checkpoint (.safetensors, .pt, .pth or .bin, "
            "e.g. open_clip_model.safetensors from the model's Hugging Face page) at exactly this path, or "
            "pass weights= a Hugging Face repo id that is in your local HF cache. Nothing is downloaded.")
    if path.suffix.lower() not in _WEIGHT_SUFFIXES and path.suffix.lower() not in (".npz",):
        raise ValueError(f"Unsupported open_clip weight file {path.name!r}: use one of {_WEIGHT_SUFFIXES}")
    return path


def _project(x: Any, proj: Any) -> Any:
    """Apply a projection stored as a matrix (Parameter) or as a module (nn.Linear)."""
    import torch

    return proj(x) if isinstance(proj, torch.nn.Module) else x @ proj


@fill_doc
class ClipEncoder:
    """An open_clip model embedding images and texts, with weights from disk.

    Parameters
    ----------
    model_name : str
        An open_clip architecture (``open_clip.list_models()``), e.g.
        ``"ViT-L-14"``, ``"ViT-H-14"``, ``"ViT-bigG-14"``, ``"ViT-B-32"``.
    weights : str | Path | None
        A local weight file, a folder holding one, or a Hugging Face repo id in
        the local HF cache (see :func:`resolve_clip_weights`). None: random
        weights, only with ``allow_random=True``.
    device : str
        Torch device (``"cpu"``, ``"cuda"``, ``"auto"``).
    precision : ``"fp32"`` | ``"fp16"`` | ``"bf16"``
        Model precision (outputs are always float32 numpy arrays).
    tokens : ``"raw"`` | ``"projected"`` | ``"projected_cls"``
        Which image token sequence ``embed_images`` returns (see Notes).
    allow_random : bool
        Allow ``weights=None`` (random weights, for tests).
    random_state : int
        Seed of the random initialisation (the global torch RNG is untouched).
    batch_size : int
        Images or texts per forward pass.
    %(verbose)s

    Attributes
    ----------
    model_ : torch.nn.Module
        The open_clip model, in eval mode.
    preprocess_ : callable
        The model's own eval transform (PIL image → tensor).
    weights_path_ : Path | None
        The weight file loaded.

    Notes
    -----
    ``embed_images`` returns ``pooled``, the projected image embedding
    (``model.encode_image``; shape ``(n, embed_dim)``: 768 for ViT-L-14, 1280 for
    ViT-bigG-14), and ``tokens``, from the vision transformer run with
    ``visual.output_tokens = True``: the patch tokens after the final layer norm.

    - ``tokens="raw"``: shape ``(n, grid**2, width)``; ViT-L-14 at 224 px:
      ``(n, 256, 1024)``; ViT-bigG-14: ``(n, 256, 1664)`` (MindEye2's target).
    - ``"projected"``: the same through ``visual.proj``: ``(n, 256, 768)`` for ViT-L-14.
    - ``"projected_cls"``: the pooled embedding (for CLS-pooled ViTs, the
      projected CLS token) prepended: ``(n, 257, 768)`` for ViT-L-14 (MindEye1's target).

    ``embed_texts`` returns ``pooled`` (``model.encode_text``) and ``tokens``, the
    text transformer's final sequence after ``ln_final``, shape
    ``(n, context_length, width)`` (ViT-L-14: ``(n, 77, 768)``), projected with
    ``text_projection`` unless ``tokens="raw"``.

    Examples
    --------
    >>> enc = ClipEncoder("ViT-L-14", "/models/open_clip_model.safetensors")  # doctest: +SKIP
    >>> out = enc.embed_images(images)  # doctest: +SKIP
    >>> out["pooled"].shape, out["tokens"].shape  # doctest: +SKIP
    ((8, 768), (8, 256, 1024))
    """

    @verbose
    def __init__(self, model_name: str = "ViT-L-14", weights: str | Path | None = None, *,
                 device: str = "cpu", precision: Literal["fp32", "fp16", "bf16"] = "fp32",
                 tokens: TokenMode = "raw", allow_random: bool = False, random_state: int = 0,
                 batch_size: int = 32, verbose: bool | str | int | None = None) -> None:
        import torch

        open_clip = import_open_clip()
        check_option("precision", precision, _PRECISIONS)
        check_option("tokens", tokens, _TOKEN_MODES)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        models = open_clip.list_models()
        if model_name not in models:
            close = difflib.get_close_matches(model_name, models, n=5)
            raise ValueError(f"Unknown open_clip model_name {model_name!r}. Close matches: {close}; all: "
                             "open_clip.list_models() (or register a config with open_clip.add_model_config).")
        if weights is None and not allow_random:
            raise ValueError(
                f"ClipEncoder({model_name!r}) needs weights=: a local checkpoint file or folder, or a Hugging "
                "Face repo id in your local HF cache (nothing is downloaded). Random weights are only "
                "used with allow_random=True (tests).")
        path = None if weights is None else resolve_clip_weights(weights)
        self.model_name = model_name
        self.weights = weights
        self.device = resolve_device(device)
        self.precision = precision
        self.tokens = tokens
        self.allow_random = allow_random
        self.random_state = int(random_state)
        self.batch_size = int(batch_size)
        self.weights_path_ = path
        with torch.random.fork_rng(devices=[]), _quiet_random_init():
            torch.random.manual_seed(self.random_state)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=None, precision=precision, device="cpu")
        if path is not None:
            try:
                open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
            except RuntimeError as err:
                raise RuntimeError(
                    f"The weights {path} do not fit the open_clip model {model_name!r}: {str(err)[:800]}. "
                    "Pass the model_name the checkpoint was trained with.") from err
            logger.info("Loaded open_clip %s weights from %s", model_name, path)
        else:
            logger.warning("open_clip %s uses RANDOM weights (allow_random=True); embeddings are "
                           "meaningless except for tests.", model_name)
        self.model_ = model.to(self.device).eval()
        self.preprocess_ = preprocess
        self.tokenizer_ = open_clip.get_tokenizer(model_name)
        self._config = open_clip.get_model_config(model_name)
        self._weights_hash: str | None = None

    def __repr__(self) -> str:
        src = self.weights_path_ if self.weights_path_ is not None else "random weights"
        return f"<ClipEncoder | {self.model_name} | {src} | {self.device} {self.precision}>"

    @property
    def embed_dim(self) -> int:
        """Dimension of the pooled embeddings."""
        return int(self._config["embed_dim"])

    @property
    def weights_hash(self) -> str:
        """sha256 of the weight file, or of the config and seed for random weights."""
        if self._weights_hash is None:
            from .cache import hash_config, hash_weights

            if self.weights_path_ is not None:
                self._weights_hash = hash_weights(self.weights_path_)
            else:
                self._weights_hash = hash_config({"open_clip": self.model_name, "random_state": self.random_state,
                                                  "config": self._config})
        return self._weights_hash

    def _batches(self, n: int, desc: str) -> Any:
        starts = range(0, n, self.batch_size)
        return ProgressBar(starts, total=len(starts), desc=desc, unit="batch")

    def _to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().float().cpu().numpy()

    # -- images ------------------------------------------------------------------
    @verbose
    @fill_doc
    def embed_images(self, images: Any, *, outputs: Sequence[str] = ("pooled", "tokens"),
                     verbose: bool | str | int | None = None) -> dict[str, np.ndarray]:
        """Embed images through the model's own preprocessing.

        Parameters
        ----------
        images : array, shape (n_images, height, width, 3)
            uint8 RGB images (any size: the model's transform resizes and crops).
        outputs : sequence of ``"pooled"`` | ``"tokens"``
            What to return (tokens are large: skip them when not needed).
        %(verbose)s

        Returns
        -------
        out : dict
            ``"pooled"``: float32 array, shape (n_images, embed_dim);
            ``"tokens"``: float32 array, shape (n_images, n_tokens, token_dim)
            (see the class Notes for which tokens).
        """
        import torch
        from PIL import Image

        outputs = [check_option("outputs", o, ("pooled", "tokens")) for o in outputs]
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must have shape (n, height, width, 3), got {images.shape}")
        if images.dtype != np.uint8:
            images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
        visual = self.model_.visual
        want_tokens = "tokens" in outputs
        if want_tokens and not hasattr(visual, "output_tokens"):
            raise NotImplementedError(f"Token outputs need a ViT open_clip model; {self.model_name} "
                                      f"has a {type(visual).__name__} image tower. Use outputs=('pooled',).")
        dtype = next(self.model_.parameters()).dtype
        pooled_all, tokens_all = [], []
        with torch.inference_mode():
            for start in self._batches(len(images), "Embedding images (CLIP)"):
                batch = images[start:start + self.batch_size]
                x = torch.stack([self.preprocess_(Image.fromarray(img)) for img in batch])
                x = x.to(self.device, dtype=dtype)
                if want_tokens:
                    visual.output_tokens = True
                    try:
                        pooled, tokens = visual(x)
                    finally:
                        visual.output_tokens = False
                    if self.tokens != "raw":
                        if visual.proj is None:
                            raise NotImplementedError(f"{self.model_name} has no visual.proj to project tokens")
                        tokens = tokens @ visual.proj
                    if self.tokens == "projected_cls":
                        tokens = torch.cat([pooled[:, None, :], tokens], dim=1)
                    tokens_all.append(self._to_numpy(tokens))
                else:
                    pooled = self.model_.encode_image(x)
                pooled_all.append(self._to_numpy(pooled))
        out = {}
        if "pooled" in outputs:
            out["pooled"] = np.concatenate(pooled_all) if pooled_all else np.zeros((0, self.embed_dim), np.float32)
        if want_tokens:
            out["tokens"] = np.concatenate(tokens_all) if tokens_all else np.zeros((0, 0, 0), np.float32)
        return out

    # -- texts ---------------------------------------------------------------------
    def _text_forward(self, text: Any) -> tuple[Any, Any]:
        """(pooled, tokens) of tokenised texts, tokens after the final layer norm."""
        model = self.model_
        if hasattr(model, "text") and hasattr(model.text, "output_tokens"):  # CustomTextCLIP
            model.text.output_tokens = True
            try:
                pooled, tokens = model.text(text)
            finally:
                model.text.output_tokens = False
            proj = getattr(model.text, "text_projection", None)
        elif hasattr(model, "token_embedding"):  # CLIP: encode_text without the pooling
            from open_clip.transformer import text_global_pool

            cast_dtype = model.transformer.get_cast_dtype()
            x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding.to(cast_dtype)
            x = model.transformer(x, attn_mask=model.attn_mask)
            tokens = model.ln_final(x)
            pooled = text_global_pool(tokens, text, model.text_pool_type,
                                      eos_token_id=getattr(model, "text_eos_id", None))
            proj = model.text_projection
            if proj is not None:
                pooled = _project(pooled, proj)
        else:
            raise NotImplementedError(f"Text tokens are not available for the {self.model_name} text tower")
        if self.tokens != "raw" and proj is not None:
            tokens = _project(tokens, proj)
        return pooled, tokens

    @verbose
    @fill_doc
    def embed_texts(self, texts: Sequence[str], *, outputs: Sequence[str] = ("pooled", "tokens"),
                    verbose: bool | str | int | None = None) -> dict[str, np.ndarray]:
        """Embed texts with the model's own tokenizer.

        Parameters
        ----------
        texts : sequence of str
            E.g. captions.
        outputs : sequence of ``"pooled"`` | ``"tokens"``
            What to return.
        %(verbose)s

        Returns
        -------
        out : dict
            ``"pooled"``: float32 array, shape (n_texts, embed_dim);
            ``"tokens"``: float32 array, shape (n_texts, context_length, dim).
        """
        import torch

        outputs = [check_option("outputs", o, ("pooled", "tokens")) for o in outputs]
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
        texts = [str(t) for t in texts]
        pooled_all, tokens_all = [], []
        with torch.inference_mode():
            for start in self._batches(len(texts), "Embedding texts (CLIP)"):
                tok = self.tokenizer_(texts[start:start + self.batch_size]).to(self.device)
                if "tokens" in outputs:
                    pooled, tokens = self._text_forward(tok)
                    tokens_all.append(self._to_numpy(tokens))
                else:
                    pooled = self.model_.encode_text(tok)
                pooled_all.append(self._to_numpy(pooled))
        out = {}
        if "pooled" in outputs:
            out["pooled"] = np.concatenate(pooled_all) if pooled_all else np.zeros((0, self.embed_dim), np.float32)
        if "tokens" in outputs:
            out["tokens"] = np.concatenate(tokens_all) if tokens_all else np.zeros((0, 0, 0), np.float32)
        return out


# -- StimulusSet level ------------------------------------------------------------------
def _get_encoder(encoder: str | ClipEncoder, weights: Any, device: str, precision: str, tokens: str,
                 allow_random: bool, batch_size: int | None) -> ClipEncoder:
    if isinstance(encoder, ClipEncoder):
        return encoder
    return ClipEncoder(encoder, weights, device=device, precision=precision, tokens=tokens,  # type: ignore[arg-type]
                       allow_random=allow_random, batch_size=batch_size or 32)


def _cached(enc: ClipEncoder, what: str, output: str, stimuli: Any, ids: list[Any], compute: Any,
            cache_dir: str | Path | None) -> np.ndarray:
    if cache_dir is None:
        return compute(ids)
    from .cache import EmbeddingCache

    kind = output if output == "pooled" else f"tokens-{enc.tokens}"
    key = f"open_clip:{enc.model_name}:{enc.precision}:{what}"
    return np.asarray(EmbeddingCache(cache_dir).get_or_compute(
        key, enc.weights_hash, ids, compute, kind=kind, dataset=str(getattr(stimuli, "source", "") or "")))


def _to_table(ids: list[Any], values: np.ndarray, name: str):
    from ._table import StimulusEmbeddings

    if values.ndim == 3:
        return StimulusEmbeddings(ids, values.reshape(len(values), -1), name=name, token_shape=values.shape[1:])
    return StimulusEmbeddings(ids, values, name=name)


@verbose
@fill_doc
def embed_clip_images(stimuli: Any, stimulus_ids: Sequence[Any] | None = None, *,
                      encoder: str | ClipEncoder = "ViT-L-14", weights: str | Path | None = None,
                      output: Literal["pooled", "tokens"] = "pooled", cache_dir: str | Path | None = None,
                      device: str = "cpu", precision: Literal["fp32", "fp16", "bf16"] = "fp32",
                      tokens: TokenMode = "raw", allow_random: bool = False, batch_size: int | None = None,
                      verbose: bool | str | int | None = None):
    """Embed the images of a StimulusSet with an open_clip model.

    Parameters
    ----------
    stimuli : StimulusSet
        Where the images come from (read batch by batch).
    stimulus_ids : sequence | None
        Which stimuli (default: all), duplicates dropped.
    encoder : str | ClipEncoder
        An open_clip model name, or a loaded :class:`ClipEncoder` (then
        ``weights``, ``device``, ``precision``, ``tokens`` are ignored).
    weights : str | Path | None
        See :class:`ClipEncoder`.
    output : ``"pooled"`` | ``"tokens"``
        Pooled vectors ``(n, embed_dim)``, or token sequences stored flattened
        with ``token_shape`` set (``lookup(ids, as_tokens=True)``).
    cache_dir : str | Path | None
        Cache the embeddings in this folder (:class:`EmbeddingCache`); None: no cache.
    device, precision, tokens, allow_random : see :class:`ClipEncoder`
    batch_size : int | None
        Images per forward pass (default 32).
    %(verbose)s

    Returns
    -------
    embeddings : StimulusEmbeddings
        One row per stimulus id.
    """
    check_option("output", output, ("pooled", "tokens"))
    if stimuli is None or "image" not in getattr(stimuli, "kinds", []):
        raise ValueError("embed_images needs a StimulusSet with images (trials.stimuli was None or had none).")
    enc = _get_encoder(encoder, weights, device, precision, tokens, allow_random, batch_size)
    ids = list(stimuli.ids if stimulus_ids is None else dict.fromkeys(stimulus_ids))
    chunk = max(enc.batch_size, 256)

    def compute(some_ids: list[Any]) -> np.ndarray:
        parts = [enc.embed_images(stimuli.get_images(some_ids[s:s + chunk]), outputs=(output,))[output]
                 for s in range(0, len(some_ids), chunk)]
        return np.concatenate(parts)

    values = _cached(enc, "image", output, stimuli, ids, compute, cache_dir)
    logger.info("Embedded %d images with open_clip %s (%s, shape %s)", len(ids), enc.model_name, output,
                values.shape[1:])
    suffix = "" if output == "pooled" else f" tokens ({enc.tokens})"
    return _to_table(ids, values, f"{enc.model_name} image{suffix}")


@verbose
@fill_doc
def embed_captions(stimuli: Any, stimulus_ids: Sequence[Any] | None = None, *,
                   encoder: str | ClipEncoder = "ViT-L-14", weights: str | Path | None = None,
                   output: Literal["pooled", "tokens"] = "pooled", cache_dir: str | Path | None = None,
                   device: str = "cpu", precision: Literal["fp32", "fp16", "bf16"] = "fp32",
                   tokens: TokenMode = "raw", allow_random: bool = False, batch_size: int | None = None,
                   verbose: bool | str | int | None = None):
    """Embed the captions of a StimulusSet: the mean of each stimulus's caption embeddings.

    Parameters
    ----------
    stimuli : StimulusSet
        With captions (e.g. the COCO captions of NSD).
    stimulus_ids : sequence | None
        Which stimuli (default: all); each must have at least one caption.
    encoder, weights, output, cache_dir, device, precision, tokens, allow_random, batch_size
        As in :func:`embed_clip_images` (texts instead of images).
    %(verbose)s

    Returns
    -------
    embeddings : StimulusEmbeddings
        One row per stimulus: the unweighted mean over its captions of the
        pooled (or token) text embeddings.
    """
    check_option("output", output, ("pooled", "tokens"))
    if stimuli is None or "caption" not in getattr(stimuli, "kinds", []):
        raise ValueError("embed_captions needs a StimulusSet with captions (this one has none).")
    ids = list(stimuli.ids if stimulus_ids is None else dict.fromkeys(stimulus_ids))
    captions = {i: stimuli.get_captions(i) for i in ids}
    empty = [i for i, c in captions.items() if not c]
    if empty:
        raise ValueError(f"{len(empty)} stimuli have no caption (e.g. {empty[:5]}); pass stimulus_ids "
                         "that all have captions.")
    enc = _get_encoder(encoder, weights, device, precision, tokens, allow_random, batch_size)

    def compute(some_ids: list[Any]) -> np.ndarray:
        texts = [c for i in some_ids for c in captions[i]]
        emb = enc.embed_texts(texts, outputs=(output,))[output]
        bounds = np.cumsum([0] + [len(captions[i]) for i in some_ids])
        return np.stack([emb[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])

    values = _cached(enc, "caption-mean", output, stimuli, ids, compute, cache_dir)
    logger.info("Embedded the captions of %d stimuli with open_clip %s (%s)", len(ids), enc.model_name, output)
    suffix = "" if output == "pooled" else f" tokens ({enc.tokens})"
    return _to_table(ids, values, f"{enc.model_name} caption mean{suffix}")
