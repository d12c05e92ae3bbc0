"""Feature networks of MindEye2's reconstruction metrics, with weights from the local disk only.

Each network is built from its torchvision (or open_clip) architecture and loaded from
a weight file you downloaded once; nothing is fetched from the network. Random
weights are used only with ``allow_random=True`` (tests). Preprocessing is MindEye2's
(``src/final_evaluations.ipynb``): a bilinear resize of the shorter side, *no* crop, then
the normalisation of the network's training data.

=========== ===================================== ========== ============== ===================
network     architecture                          input px   normalisation  features
=========== ===================================== ========== ============== ===================
alexnet     torchvision ``alexnet``               256        ImageNet       ``features.4``,
                                                                            ``features.11``
inception   torchvision ``inception_v3``          342        ImageNet       ``avgpool``
clip        open_clip ``ViT-L-14-quickgelu``      224        CLIP           ``encode_image``
effnet      torchvision ``efficientnet_b1``       255        ImageNet       ``avgpool``
swav        torchvision ``resnet50`` (SwAV)       224        ImageNet       ``avgpool``
=========== ===================================== ========== ============== ===================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...utils import ProgressBar, check_option, fill_doc, logger, resolve_device, verbose
from ...utils.imports import import_optional
from ._images import _ImageSet, _resize, resized_hw

NetworkName = Literal["alexnet", "inception", "clip", "effnet", "swav"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Name of the CLIP "layer": the projected image embedding returned by ``encode_image``.
CLIP_LAYER = "encode_image"


@dataclass(frozen=True)
class NetworkSpec:
    """How MindEye2 runs one feature network, and where its weights come from.

    Parameters
    ----------
    name : str
        Key used by :class:`FeatureExtractor` and ``evaluate_reconstructions(networks=...)``.
    label : str
        Human-readable architecture.
    layers : tuple of str
        Module names whose outputs are returned (flattened).
    input_size : int
        Shorter side after the bilinear resize (no crop follows).
    mean, std : tuple of float
        Per-channel normalisation.
    weights_file : str
        File name of the weights MindEye2 used.
    download : str
        Where to get that file (URL or Hugging Face repo).
    """

    name: str
    label: str
    layers: tuple[str, ...]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_file: str
    download: str


NETWORKS: dict[str, NetworkSpec] = {
    "alexnet": NetworkSpec(
        "alexnet", "torchvision AlexNet (AlexNet_Weights.IMAGENET1K_V1)", ("features.4", "features.11"), 256,
        IMAGENET_MEAN, IMAGENET_STD, "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "inception": NetworkSpec(
        "inception", "torchvision Inception v3 (Inception_V3_Weights.IMAGENET1K_V1)", ("avgpool",), 342,
        IMAGENET_MEAN, IMAGENET_STD, "inception_v3_google-0cc3c7bd.pth",
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"),
    "clip": NetworkSpec(
        "clip", "OpenAI CLIP ViT-L/14 (open_clip 'ViT-L-14-quickgelu')", (CLIP_LAYER,), 224,
        CLIP_MEAN, CLIP_STD, "open_clip_pytorch_model.bin",
        "the Hugging Face repo timm/vit_large_patch14_clip_224.openai (open_clip's copy of OpenAI's "
        "ViT-L/14 weights)"),
    "effnet": NetworkSpec(
        "effnet", "torchvision EfficientNet-B1 (EfficientNet_B1_Weights.IMAGENET1K_V2, torchvision's DEFAULT)",
        ("avgpool",), 255, IMAGENET_MEAN, IMAGENET_STD, "efficientnet_b1-c27df63c.pth",
        "https://download.pytorch.org/models/efficientnet_b1-c27df63c.pth"),
    "swav": NetworkSpec(
        "swav", "ResNet-50 trained with SwAV (torch.hub facebookresearch/swav:main resnet50)", ("avgpool",), 224,
        IMAGENET_MEAN, IMAGENET_STD, "swav_800ep_pretrain.pth.tar",
        "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"),
}

# state_dict keys a checkpoint may lack (unused by the features) or carry in excess
_ALLOWED_MISSING = {"inception": ("AuxLogits.",), "swav": ("fc.",)}
_ALLOWED_UNEXPECTED = {"swav": ("projection_head.", "prototypes.")}


def _import_torchvision() -> Any:
    return import_optional("torchvision", extra="generation", what="Reconstruction feature metrics")


def weights_hint(network: str) -> str:
    """One sentence naming the file to download for ``network`` and where from.

    Parameters
    ----------
    network : str
        A key of :data:`NETWORKS` (``"alexnet"``, ``"inception"``, ``"clip"``, ...).

    Returns
    -------
    hint : str
        The sentence, for error messages.
    """
    spec = NETWORKS[network]
    return (f"Download {spec.weights_file} ({spec.label}) from {spec.download} on a machine with network "
            f"access and pass its local path (nothing is downloaded by neurodecode).")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's default generator inside a fork, so the global RNG state is left untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(int(seed))
        yield


def _read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.tar`` file (never unpickles code)."""
    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path), device="cpu")
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # any unpickling failure is reported the same way
            raise ValueError(f"Could not read the weights {path} as a state_dict "
                             f"(torch.load(weights_only=True)): {err}") from err
    for key in ("state_dict", "model", "module"):  # common checkpoint wrappers
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping):
        raise TypeError(f"The weights {path} hold a {type(sd).__name__}, not a state_dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _build_torchvision(network: str) -> Any:
    tv = _import_torchvision()
    models = tv.models
    if network == "alexnet":
        return models.alexnet(weights=None)
    if network == "inception":
        # torchvision builds the pretrained model with transform_input=True (the Google weights
        # expect inputs in [-1, 1]; it maps ImageNet-normalised input back) and aux_logits=True.
        # init_weights=False: PyTorch's default initialisation (its truncated-normal init takes
        # seconds and is overwritten by the weights anyway).
        return models.inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    if network == "effnet":
        return models.efficientnet_b1(weights=None)
    if network == "swav":
        return models.resnet50(weights=None)
    raise ValueError(network)  # pragma: no cover - guarded by the caller


def _load_weights(model: Any, network: str, path: Path) -> None:
    sd = _read_state_dict(path)
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise ValueError(f"The weights {path} do not fit {NETWORKS[network].label}: {str(err)[:600]}. "
                         f"{weights_hint(network)}") from err
    missing = [k for k in result.missing_keys if not k.startswith(_ALLOWED_MISSING.get(network, ()))]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(_ALLOWED_UNEXPECTED.get(network, ()))]
    if missing or unexpected:
        raise ValueError(
            f"The weights {path} do not fit {NETWORKS[network].label}: "
            f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) "
            f"{unexpected[:5]}. {weights_hint(network)}")


def _check_weights_path(network: str, weights: str | Path) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"Weights for the {network!r} metric network: {path} is {what}. "
                                + weights_hint(network))
    return path


class FeatureExtractor:
    """One of MindEye2's metric networks, returning flattened features of RGB images.

    Parameters
    ----------
    network : ``"alexnet"`` | ``"inception"`` | ``"clip"`` | ``"effnet"`` | ``"swav"``
        Which network (see :data:`NETWORKS`).
    weights : str | Path | None
        Local weight file. torchvision networks: a ``state_dict`` saved by torch
        (``.pth``, ``.pt``, ``.tar``, ``.bin``) or as ``.safetensors``; ``"module."``
        prefixes and ``{"state_dict": ...}`` wrappers are accepted. SwAV: the original
        ``swav_800ep_pretrain.pth.tar`` (its projection head and prototypes are ignored, as
        ``torch.hub`` does). CLIP: an open_clip checkpoint file, a folder holding one, or a
        Hugging Face repo id already in the local cache (see
        :func:`neurodecode.embeddings.clip.resolve_clip_weights`). ``None``: random
        weights, only with ``allow_random=True``.
    model : torch.nn.Module | ClipEncoder | None
        An already built network instead of ``weights`` (for CLIP, any module with an
        ``encode_image`` method, or a :class:`~neurodecode.embeddings.ClipEncoder`; for the
        others, a torchvision model whose module names include :attr:`layers`).
    clip_model_name : str
        open_clip architecture when CLIP is built from ``weights``. OpenAI's ViT-L/14
        (MindEye2's ``clip.load("ViT-L/14")``) uses QuickGELU, hence the default
        ``"ViT-L-14-quickgelu"``.
    device : str
        Torch device (``"cpu"``, ``"cuda"``, ``"auto"``).
    batch_size : int
        Images per forward pass.
    antialias : bool
        Antialias the resize when it downsamples. ``False`` reproduces MindEye2's
        environment (torchvision 0.15 resized tensors without antialiasing).
    allow_random : bool
        Build with random weights when ``weights`` and ``model`` are None (tests only:
        the scores are meaningless).
    random_state : int
        Seed of the random initialisation (the global torch RNG is left untouched).
    verbose : bool | str | int | None
        Log level while building.

    Attributes
    ----------
    spec : NetworkSpec
        Preprocessing and weight provenance.
    layers : tuple of str
        Keys of the dict returned by :meth:`extract`.
    model_ : torch.nn.Module
        The network, in eval mode on ``device``.
    weights_path_ : Path | None
        The weight file loaded (None for ``model=`` or random weights).
    random_weights_ : bool
        True when the network was built with random weights.

    Examples
    --------
    >>> alex = FeatureExtractor("alexnet", "~/weights/alexnet-owt-7be5be79.pth")  # doctest: +SKIP
    >>> feats = alex.extract(images)  # doctest: +SKIP
    >>> feats["features.4"].shape  # doctest: +SKIP
    (1000, 184512)
    """

    @verbose
    def __init__(self, network: NetworkName, weights: str | Path | None = None, *, model: Any = None,
                 clip_model_name: str = "ViT-L-14-quickgelu", device: str = "cpu", batch_size: int = 32,
                 antialias: bool = False, allow_random: bool = False, random_state: int = 0,
                 verbose: bool | str | int | None = None) -> None:
        check_option("network", network, tuple(NETWORKS))
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.network = network
        self.spec = NETWORKS[network]
        self.layers = self.spec.layers
        self.weights = weights
        self.clip_model_name = clip_model_name
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.antialias = bool(antialias)
        self.allow_random = bool(allow_random)
        self.random_state = int(random_state)
        self.weights_path_: Path | None = None
        self.random_weights_ = False
        if model is not None and weights is not None:
            raise ValueError("Pass either weights= (a file to load) or model= (a built network), not both")
        if model is None and weights is None and not allow_random:
            raise ValueError(
                f"The {network!r} metric network needs weights= (a local file) or model=; random weights "
                f"are only used with allow_random=True (tests). {weights_hint(network)}")
        if network == "clip":
            self.model_ = self._build_clip(model, weights)
        else:
            self.model_ = self._build_torchvision(model, weights)
        self.model_.eval().requires_grad_(False)
        self.model_.to(self.device)

    # ---------------------------------------------------------------- building
    def _build_torchvision(self, model: Any, weights: str | Path | None) -> Any:
        if model is not None:
            if not callable(getattr(model, "named_modules", None)):
                raise TypeError(f"model= for the {self.network!r} metric must be a torch.nn.Module (a torchvision "
                                f"model), got {type(model).__name__}")
            names = dict(model.named_modules())
            missing = [layer for layer in self.layers if layer not in names]
            if missing:
                raise ValueError(f"model= has no module(s) {missing} needed for the {self.network!r} metric")
            return model
        if weights is not None:
            path = _check_weights_path(self.network, weights)
            net = _build_torchvision(self.network)
            _load_weights(net, self.network, path)
            self.weights_path_ = path
            logger.info("Loaded %s weights from %s", self.spec.label, path)
            return net
        with _seeded(self.random_state):
            net = _build_torchvision(self.network)
        self.random_weights_ = True
        logger.warning("The %r metric network uses RANDOM weights (allow_random=True): its scores are "
                       "meaningless except for tests.", self.network)
        return net

    def _build_clip(self, model: Any, weights: str | Path | None) -> Any:
        if model is not None:
            model = getattr(model, "model_", model)  # a ClipEncoder
            if not callable(getattr(model, "encode_image", None)):
                raise TypeError("model= for the 'clip' metric must have an encode_image method (an open_clip "
                                f"model or a ClipEncoder), got {type(model).__name__}")
            return model
        from ...embeddings.clip import ClipEncoder

        try:
            enc = ClipEncoder(self.clip_model_name, weights, device="cpu", allow_random=self.allow_random,
                              random_state=self.random_state, batch_size=self.batch_size)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} {weights_hint('clip')}") from err
        self.weights_path_ = enc.weights_path_
        self.random_weights_ = enc.weights_path_ is None
        return enc.model_

    # ---------------------------------------------------------------- running
    def __repr__(self) -> str:
        src = ("random weights" if self.random_weights_ else
               str(self.weights_path_) if self.weights_path_ is not None else "model=")
        return f"<FeatureExtractor | {self.network} | {', '.join(self.layers)} | {src} | {self.device}>"

    def preprocess(self, x: Any) -> Any:
        """MindEye2's preprocessing of a float tensor batch (b, 3, h, w) in [0, 1].

        Parameters
        ----------
        x : Tensor, shape (b, 3, h, w)
            Float images in [0, 1].

        Returns
        -------
        x : Tensor, shape (b, 3, h', w')
            Bilinearly resized so the shorter side is ``spec.input_size`` (no crop), then
            normalised with ``spec.mean`` and ``spec.std``.
        """
        import torch

        x = _resize(x, self.spec.input_size, antialias=self.antialias)
        mean = torch.tensor(self.spec.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _forward(self, x: Any) -> dict[str, Any]:
        if self.network == "clip":
            out = self.model_.encode_image(x)
            return {CLIP_LAYER: out}
        captured: dict[str, Any] = {}
        modules = dict(self.model_.named_modules())
        handles = []
        for layer in self.layers:
            def hook(_mod: Any, _inp: Any, out: Any, layer: str = layer) -> None:
                captured[layer] = out.detach().clone()  # clone: a later in-place op must not alter it
            handles.append(modules[layer].register_forward_hook(hook))
        try:
            self.model_(x)
        finally:
            for h in handles:
                h.remove()
        return captured

    @verbose
    @fill_doc
    def extract(self, images: Any, *, verbose: bool | str | int | None = None) -> dict[str, np.ndarray]:
        """Flattened features of ``images``, one array per layer.

        Parameters
        ----------
        images : array-like, shape (n_images, height, width, 3) or (n_images, 3, height, width)
            uint8 (0-255) or float (0-1) RGB images.
        %(verbose)s

        Returns
        -------
        features : dict of str to ndarray of float32, shape (n_images, n_features)
            ``layer -> features`` for every layer of :attr:`layers`.
        """
        import torch

        imgs = images if isinstance(images, _ImageSet) else _ImageSet(images, "images")
        if self.network == "clip":
            hw = resized_hw(imgs.hw, self.spec.input_size)
            if hw != (self.spec.input_size, self.spec.input_size):
                raise ValueError(f"The CLIP metric needs square images (MindEye2 resizes the shorter side to "
                                 f"224 without cropping); got {imgs.hw[0]}x{imgs.hw[1]} -> {hw[0]}x{hw[1]}")
        try:
            dtype = next(self.model_.parameters()).dtype
        except (StopIteration, AttributeError):
            dtype = torch.float32
        chunks: dict[str, list[np.ndarray]] = {layer: [] for layer in self.layers}
        starts = range(0, imgs.n, self.batch_size)
        with torch.inference_mode():
            for start in ProgressBar(starts, total=len(starts), desc=f"Features ({self.network})", unit="batch"):
                x = self.preprocess(imgs.batch(start, start + self.batch_size).to(self.device))
                out = self._forward(x.to(dtype))
                for layer in self.layers:
                    chunks[layer].append(out[layer].float().flatten(1).cpu().numpy())
        return {layer: np.concatenate(c) for layer, c in chunks.items()}

    __call__ = extract

    @property
    def fingerprint(self) -> str:
        """Short description of the weights, for the protocol record."""
        if self.random_weights_:
            return f"random (seed {self.random_state})"
        if self.weights_path_ is not None:
            return str(self.weights_path_)
        return f"model= ({type(self.model_).__name__})"
