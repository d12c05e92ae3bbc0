"""Typed run configs: YAML in, unknown keys rejected, ``--set a.b=c`` overrides.

A run config is a :class:`FitConfig`. Every field has a default, so an empty
config is the embedded demo (simulated NSD, fitted through the real loader).

A run config is what ``neurodecode.workflow`` runs, so this module sits just
below ``workflow`` in the layers: ``data.dataset`` and the ``models.mlp.*``
part names are validated against the dataset and model registries themselves
(``neurodecode.datasets.register_dataset``, ``neurodecode.models.register_*``),
so a dataset or a part is named in one place, its registration. Validating a
config that names model parts imports ``neurodecode.models`` (and torch);
importing this module does not.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A run config is invalid: an unknown key, a wrong type or a bad value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Document every field in the class docstring's Parameters section, from the field itself."""
        super().__pydantic_init_subclass__(**kwargs)
        cls.__doc__ = _document_fields(cls.__doc__ or "", cls.model_fields)


def _type_text(annotation: Any) -> str:
    """A field's annotation as numpydoc type text (``float``, ``'a' | 'b'``, ``list of int | None``)."""
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    if text is None:
        text = repr(annotation).replace("typing.", "").replace("neurodecode.config.", "")
    return text.replace("NoneType", "None")


def _document_fields(doc: str, fields: Mapping[str, Any]) -> str:
    """``doc`` with a numpydoc Parameters section listing ``fields`` (type, default, description)."""
    from pydantic_core import PydanticUndefined

    lines = []
    for name, field in fields.items():
        kind = _type_text(field.annotation)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            lines.append(f"{name} : {kind}")  # a section (not built here: its validators import the registries)
        else:
            default = field.default
            if default is PydanticUndefined and field.default_factory is not None:
                default = field.default_factory()
            lines.append(f"{name} : {kind}, default {default!r}")
        description = (field.description or "").replace("\n", " ")
        if not description and isinstance(field.annotation, type) and field.annotation.__doc__:
            description = f"The ``{name}.*`` keys: {field.annotation.__doc__.strip().splitlines()[0]}"
        lines.append(f"    {description or 'See the config key reference (neurodecode fit --help-config).'}")
    if not lines:
        return doc
    return doc.rstrip() + "\n\nParameters\n----------\n" + "\n".join(lines) + "\n"


# -- datasets a config may name ----------------------------------------------------------------
# A dataset is named in one place, its registration (``neurodecode.datasets.register_dataset``; the
# built-in ones in ``neurodecode/datasets/_builtins.py``). ``datasets`` is a lower layer, so the validators
# below ask its registry directly -- what a run config needs to know of a dataset (modality, image or
# audio stimuli, which first-class data.* / simulate.* keys it takes) is its ``DatasetSpec``. The imports
# are inside the functions so that ``import neurodecode.config`` stays cheap; importing
# ``neurodecode.datasets`` registers the built-in datasets.

#: First-class ``data.*`` keys that apply only to the datasets listing them in ``DatasetSpec.data_keys``
#: (NSD's); the other datasets take their loader options in ``data.options``.
_DATASET_DATA_KEYS = ("roi", "sessions", "zscore", "betas_format", "nonfinite")
#: First-class ``simulate.*`` keys that apply only to the datasets listing them in
#: ``DatasetSpec.simulate_keys`` (NSD's); the others take their simulator parameters in ``simulate.params``.
_DATASET_SIM_KEYS = ("n_sessions", "trials_per_session", "shared_fraction")


def _dataset_spec(name: str) -> Any:
    """The registered ``DatasetSpec`` of ``name``.

    Raises
    ------
    ValueError
        Unknown name (the registry's message lists the registered datasets and the closest match), or a
        spec whose ``data_keys`` / ``simulate_keys`` are not dataset-specific keys of the run config.
    """
    from .datasets import get_dataset

    spec = get_dataset(name)
    for section, keys, allowed in (("data", spec.data_keys, _DATASET_DATA_KEYS),
                                   ("simulate", spec.simulate_keys, _DATASET_SIM_KEYS)):
        bad = [k for k in keys if k not in allowed]
        if bad:
            rest = "options" if section == "data" else "params"
            raise ValueError(f"dataset {spec.name!r}: DatasetSpec.{section}_keys {bad} are not "
                             f"dataset-specific {section}.* keys of the run config (those are "
                             f"{list(allowed)}); pass the loader's / simulator's own options through "
                             f"{section}.{rest}")
    return spec


def _dataset_names() -> list[str]:
    from .datasets import list_datasets

    return list_datasets()


def _dataset_specs() -> list[Any]:
    from .datasets import get_dataset

    return [get_dataset(n) for n in _dataset_names()]


class _ModalityView(Mapping[str, str]):
    """Read-only, live ``{dataset name: modality}`` view of the dataset registry."""

    def __getitem__(self, name: str) -> str:
        if name not in _dataset_names():
            raise KeyError(name)
        return _dataset_spec(name).modality

    def __iter__(self) -> Iterator[str]:
        return iter(_dataset_names())

    def __len__(self) -> int:
        return len(_dataset_names())

    def __repr__(self) -> str:
        return repr(dict(self))


class _AudioView(Sequence[str]):
    """Read-only, live tuple-like view of the registered datasets whose stimuli are sounds."""

    def _names(self) -> list[str]:
        return [spec.name for spec in _dataset_specs() if spec.stimulus == "audio"]

    def __getitem__(self, i: Any) -> Any:
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __repr__(self) -> str:
        return repr(tuple(self._names()))


#: Datasets ``neurodecode fit`` loads, and their modality (a live view of the dataset registry).
DATASETS: Mapping[str, str] = _ModalityView()
#: Datasets whose stimuli are sounds (speech targets) rather than images (a live view of the registry).
AUDIO_DATASETS: Sequence[str] = _AudioView()


def _dataset_schema(schema: dict[str, Any]) -> None:
    schema["examples"] = _dataset_names()


def _owners(key: str, field: str) -> str:
    """Display names of the registered datasets that take the first-class config ``key`` ("NSD")."""
    labels = [spec.label for spec in _dataset_specs() if key in getattr(spec, field)]
    return " / ".join(labels) or "no registered dataset"


class DataConfig(_Section):
    """Which recordings to load."""

    dataset: str = Field(
        "nsd", description="Dataset (loader) by its registered name: built in 'nsd' (fMRI), 'things_eeg2' "
        "(EEG), 'things_meg' (MEG), 'masc' (MEG-MASC speech MEG, BIDS); any dataset registered with "
        "neurodecode.datasets.register_dataset (list: neurodecode.datasets.list_datasets()).",
        json_schema_extra=_dataset_schema)
    root: str | None = Field(
        None, description="Dataset root on disk (NSD: the bucket root with nsddata/, nsddata_betas/; "
        "THINGS-EEG2: the folder with image_set/ and eeg_dataset/; THINGS-MEG: ds004212; MASC: the BIDS "
        "root). null = simulate the dataset (the embedded demo).")
    subjects: list[int] = Field([1, 2], description="Subjects to load (NSD 1..8, THINGS-EEG2 1..10, "
                                "THINGS-MEG 1..4, MASC 1..27).")
    roi: str | None = Field("nsdgeneral", description="NSD only. ROI mask: 'nsdgeneral', any roi/<name>, "
                            "'<name>:<label>,<label>', or null for the brain mask.")
    sessions: list[int] | None = Field(None, description="NSD only. Sessions to load (1-based); null = all "
                                       "found (MASC: data.options.sessions).")
    zscore: Literal["session"] | None = Field(
        "session", description="NSD only. Per-session voxel z-scoring with statistics from training trials "
        "only.")
    betas_format: Literal["auto", "hdf5", "nii.gz", "mindeye2"] = Field(
        "auto", description="NSD only. Which beta files to read ('auto' prefers .hdf5).")
    nonfinite: Literal["error", "drop"] = Field(
        "error", description="NSD only. NaN / infinite betas: 'error' names the file, session and counts; "
        "'drop' drops those trials with a warning (M/EEG loaders: data.options.nonfinite).")
    options: dict[str, Any] = Field(
        {}, description="Extra keyword arguments of the M/EEG loader (things_eeg2: variant; masc: "
        "window_s, tmin, sfreq, sessions, tasks, test_ratio, ...; see the load_* docstrings).")

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one subject is required")
        if len(set(v)) != len(v):
            raise ValueError(f"subjects must be unique, got {v}")
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        _dataset_spec(v)  # unknown name: lists the registered datasets and the closest match
        return v

    @model_validator(mode="after")
    def _nsd_only(self) -> DataConfig:
        info = _dataset_spec(self.dataset)
        given = [k for k in _DATASET_DATA_KEYS if k in self.model_fields_set and k not in info.data_keys]
        if given:
            raise ValueError(f"data.{given[0]} applies to {_owners(given[0], 'data_keys')} only; data.dataset "
                             f"is {self.dataset!r}. Remove it (loader options of this dataset go in "
                             "data.options).")
        if info.data_keys and self.options:
            keys = [f"data.{k}" for k in info.data_keys]
            listed = f"{', '.join(keys[:-1])} and {keys[-1]}" if len(keys) > 1 else keys[0]
            raise ValueError(f"data.options is for the M/EEG loaders; {info.label} is configured by {listed}")
        return self


class SimulateConfig(_Section):
    """The simulated dataset written when ``data.root`` is null (``neurodecode.datasets.simulate``)."""

    n_subjects: int = Field(2, ge=1, le=27, description="Simulated subjects (NSD: at most 8).")
    n_sessions: int = Field(6, ge=1, le=40, description="NSD only. Sessions per subject.")
    trials_per_session: int = Field(750, ge=6, description="NSD only. Trials per session (real NSD: 750).")
    shared_fraction: float = Field(
        0.2, gt=0, lt=1, description="NSD only. Fraction of each subject's images in the shared test pool seen "
        "by all subjects (NSD: 0.1; 0.2 here gives 300 test images, enough for the 300-way protocol).")
    image_size: int = Field(64, ge=8, le=425, description="Side of the procedural images (NSD: 425; not "
                            "used by 'masc').")
    snr: float = Field(0.4, gt=0, description="Signal amplitude relative to the noise where it is planted.")
    seed: int = Field(0, description="Seed of the simulation.")
    response: Literal["linear", "nonlinear"] = Field(
        "nonlinear", description="Generative model of the simulated responses (every dataset): 'nonlinear' "
        "(the default; early visual contrast energy with "
        "compressive spatial summation and tuning curves in higher areas for NSD; rectified, saturating "
        "sources and trial-to-trial latency jitter for M/EEG) or 'linear' (responses linear in the stimulus "
        "features; ridge is near-optimal there). Same as simulate.params.response; see docs/simulator.md.")
    params: dict[str, Any] = Field(
        {}, description="Other parameters of simulate(data.dataset, ...) (e.g. things_eeg2: n_train_concepts, "
        "signal_channels, signal_window; masc: story_duration_s, n_channels; see docs/simulator.md).")

    @model_validator(mode="after")
    def _response(self) -> SimulateConfig:
        # simulate.response and simulate.params.response are one setting; the simulator receives it through
        # params, always explicitly (the simulators record it in simulation.json only when it is not "linear",
        # so linear simulations keep the parameters and caches they always had)
        given = self.params.get("response")
        if given is not None and given not in ("linear", "nonlinear"):
            raise ValueError(f"simulate.params.response must be 'linear' or 'nonlinear', got {given!r}")
        if given is not None and "response" in self.model_fields_set and given != self.response:
            raise ValueError(f"simulate.response is {self.response!r} but simulate.params.response is "
                             f"{given!r}; set one of them")
        if given is not None and given != self.response:
            self.response = given  # re-validates; consistent from then on
        elif given is None:
            self.params = {**self.params, "response": self.response}
        return self


class TargetsConfig(_Section):
    """The embedding space the decoders are aligned to."""

    encoder: str = Field(
        "pixels", description="Images: 'pixels' (contrast-normalised colour thumbnails, no weights needed) or "
        "an open_clip architecture name (e.g. 'ViT-L-14', 'ViT-bigG-14'; needs targets.weights). Speech "
        "(masc): 'melspec' (log-mel spectrogram, no weights) or 'speech' (a wav2vec2-style model folder in "
        "targets.weights).")
    size: int = Field(16, ge=2, le=64, description="Thumbnail side of the pixels encoder (dims = size²·3).")
    weights: str | None = Field(
        None, description="CLIP weights (open_clip encoders only): a local checkpoint file or folder, a Hugging "
        "Face repo id already in the local HF cache (never downloaded), or ${NEURODECODE_CLIP_WEIGHTS}.")
    n_mels: int = Field(20, ge=2, le=256, description="Mel bands of the 'melspec' speech targets.")
    frame_rate: float = Field(10.0, gt=0, le=200, description="Speech targets: feature frames per second of "
                              "audio ('melspec' and 'speech'; the target is the frames of the window, flattened).")
    layer: int = Field(-1, description="'speech' encoder: hidden-state layer (-1 = last).")
    output: Literal["pooled", "tokens"] = Field(
        "pooled", description="'pooled': one vector per image; 'tokens': also compute the encoder's token "
        "sequences (open_clip ViT patch tokens; pixels: size² pixel tokens × RGB), which size and train the "
        "decoder's tokens head. Ridge and evaluation use pooled.")
    tokens: Literal["raw", "projected", "projected_cls"] = Field(
        "raw", description="Which CLIP tokens (open_clip encoders): 'raw' — the patch tokens after the final "
        "LayerNorm (MindEye2's ViT-bigG/14 targets, 256 × 1664); 'projected' — through the visual projection; "
        "'projected_cls' — the pooled embedding then the projected patch tokens (MindEye1's and MindBridge's "
        "ViT-L/14 hidden-state targets, 257 × 768).")
    cache_dir: str | None = Field(
        None, description="Where CLIP embeddings are cached on disk; null = $NEURODECODE_DATA/embeddings.")

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, v: str) -> str:
        if v in ("pixels", "melspec", "speech"):
            return v
        try:
            from .utils.imports import import_optional

            models = import_optional("open_clip", extra="clip", what="CLIP encoders").list_models()
        except ImportError as err:
            raise ValueError(f"encoder {v!r} is an open_clip model but open_clip is unavailable ({err}); "
                             "install open_clip_torch or use encoder 'pixels'") from None
        if v not in models:
            import difflib

            close = difflib.get_close_matches(v, models, n=5)
            raise ValueError(f"unknown encoder {v!r}: use 'pixels' or an open_clip architecture name "
                             f"(close matches: {close}; all: open_clip.list_models())")
        return v

    @model_validator(mode="after")
    def _clip_options(self) -> TargetsConfig:
        if self.encoder in ("pixels", "melspec") and self.weights is not None:
            raise ValueError(f"the {self.encoder!r} encoder takes no weights; that option is for open_clip "
                             "and speech encoders. Set targets.weights=null")
        if self.encoder in ("pixels", "melspec", "speech") and self.tokens != "raw":
            raise ValueError(f"targets.tokens={self.tokens!r} is for open_clip encoders; the {self.encoder!r} "
                             "encoder has no projection. Set targets.tokens=raw")
        if self.encoder in ("melspec", "speech") and self.output == "tokens":
            raise ValueError("targets.output=tokens is for image encoders; speech targets are already frame "
                             "sequences (flattened). Set targets.output=pooled")
        if self.encoder == "speech":
            if self.weights is None:
                raise ValueError("encoder 'speech' needs targets.weights: a local folder of a wav2vec2-style "
                                 "transformers model (config.json + model.safetensors), or a repo id in the "
                                 "local HF cache")
        elif self.encoder != "pixels" and self.encoder != "melspec" and self.weights is None:
            raise ValueError(f"encoder {self.encoder!r} needs targets.weights: a local checkpoint file or folder, "
                             "or a Hugging Face repo id in the local HF cache (nothing is downloaded). Write "
                             "weights: ${NEURODECODE_CLIP_WEIGHTS} and export NEURODECODE_CLIP_WEIGHTS=PATH, or "
                             "--set targets.weights=PATH")
        return self


class RidgeConfig(_Section):
    """Closed-form ridge baseline, one model per subject."""

    enabled: bool = Field(True, description="Fit the ridge baseline.")
    alphas: list[float] = Field(
        [1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6], description="Ridge penalties tried (CV on train only).")
    cv: int | None = Field(None, description="K-fold CV; null = efficient leave-one-out (GCV).")

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, v: list[float]) -> list[float]:
        if not v or any(a <= 0 for a in v):
            raise ValueError(f"alphas must be a non-empty list of positive numbers, got {v}")
        return v


# -- model parts a config may name -------------------------------------------------------------
# A backbone, adapter, head or loss is named in one place, its registration (``neurodecode.models.
# register_backbone``, ``register_adapter``, ``register_head``, ``register_loss``, ``register_token_loss``,
# ``register_lowlevel_loss``). ``models`` is a lower layer, so the validators ask its registries directly,
# and read what a run config checks from the registered class: an adapter's ``output_kind`` and a
# backbone's ``input_kind`` (fMRI vectors or M/EEG (channels, time) sequences) and a loss's
# ``temperature_defaults``. Importing ``neurodecode.models`` (inside the functions, so that ``import
# neurodecode.config`` stays cheap) registers the built-in parts and imports torch.


def _part(kind: str, name: str) -> Any:
    """The ``kind`` part registered as ``name`` (ValueError: the registered ones and the closest match)."""
    from .models.registry import get_part

    return get_part(kind, name)


def _part_names(kind: str) -> list[str]:
    from .models.registry import list_parts

    return list_parts(kind)


def _input_kind(kind: str, name: str) -> str:
    """``"vector"`` (fMRI) or ``"sequence"`` (M/EEG): what an adapter passes on, what a backbone takes."""
    part = _part(kind, name)
    return part.output_kind if kind == "adapter" else part.input_kind


def _parts_schema(kind: str) -> Any:
    def schema(s: dict[str, Any]) -> None:
        s["examples"] = _part_names(kind)
    return schema


class MLPConfig(_Section):
    """Multi-subject contrastive MLP decoder (per-subject adapters → shared MLP)."""

    enabled: bool = Field(True, description="Train the contrastive MLP decoder.")
    hidden_dim: int = Field(512, ge=8, description="Width of the shared latent.")
    n_blocks: int = Field(2, ge=0, le=16, description="Residual MLP blocks.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout rate.")
    max_epochs: int = Field(
        50, ge=1, description="Training epochs (the demo's 50: ≥ 0.9× ridge on the linear simulator, "
        "docs/benchmarks.md).")
    batch_size: int = Field(
        128, ge=2, description="Trials per training step: one subject per batch (batch_composition="
        "per_subject), or batch_size // n_subjects trials of every subject (all_subjects).")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    val_fraction: float = Field(0.1, ge=0, lt=0.5, description="Training images held out for validation.")
    # loss and batches (Trainer)
    loss: str = Field(
        "infonce", description="Training loss of the pooled embedding: 'infonce' (symmetric CLIP loss), "
        "'soft_clip' (MindEye's SoftCLIP), 'mindeye2' (BiMixCo on mixed inputs for the first mixco_fraction "
        "of the epochs, then SoftCLIP with a cosine-scheduled temperature), 'clip_mse' (ATM: clip_weight × "
        "CLIP + (1 - clip_weight) × MSE), 'brainmagick_clip' (brainmagick / neuralbench ClipLoss: brain → "
        "stimulus only, candidates normalised, no temperature), 'mse', or any loss registered with "
        "neurodecode.models.register_loss. See docs/training.md.", json_schema_extra=_parts_schema("loss"))
    temperature: float | None = Field(
        None, description="Temperature of the contrastive loss (> 0; >= 0.01 when learnable, i.e. an inverse "
        "temperature <= 100). null = the loss's default: infonce 0.07, soft_clip 0.125, mindeye2 0.006 "
        "(its BiMixCo and validation temperature), clip_mse 1/ln(1/0.07) ≈ 0.376 (ATM).")
    temperature_mode: Literal["fixed", "learnable", "schedule"] | None = Field(
        None, description="'fixed' (used exactly), 'learnable' (optimised, inverse temperature clamped at "
        "100) or 'schedule' (per-epoch cosine from temperature_schedule[0] to [1]; mindeye2: over its "
        "SoftCLIP epochs). null = the loss's default: infonce learnable, soft_clip fixed, mindeye2 "
        "schedule, clip_mse learnable. soft_clip and mindeye2 allow fixed and schedule only.")
    temperature_schedule: list[float] = Field(
        [0.004, 0.0075], description="[start, end] of the cosine temperature schedule (MindEye2's SoftCLIP "
        "temperatures: 0.004 → 0.0075).")
    mixco_fraction: float = Field(
        0.33, ge=0, le=1, description="loss=mindeye2: fraction of the epochs trained with BiMixCo "
        "(int(mixco_fraction × max_epochs) epochs; MindEye2's mixup_pct = 0.33).")
    clip_weight: float = Field(
        0.1, ge=0, le=1, description="loss=clip_mse: weight λ of the CLIP term; the MSE gets 1 - λ (ATM: "
        "0.1, i.e. its alpha = 0.9 on the MSE).")
    batch_composition: Literal["per_subject", "all_subjects"] = Field(
        "per_subject", description="'per_subject': each batch holds one subject's trials. 'all_subjects' "
        "(MindEye2): each step concatenates batch_size // n_subjects trials of every subject, each through "
        "its adapter, with one loss over the concatenation and no stimulus twice in a step (single "
        "process only).")
    # architecture (BrainDecoder)
    adapter: str = Field(
        "linear", description="Per-subject adapter. fMRI: 'linear' (voxels → hidden, MindEye2) or 'pooled' "
        "(fixed-size pooling then a linear map, MindBridge-style cross-subject). M/EEG: 'subject_layer' "
        "(per-subject channel mixing) or 'spatial_attention' (brainmagick: attention over sensor positions "
        "+ subject layer). Or any adapter registered with neurodecode.models.register_adapter.",
        json_schema_extra=_parts_schema("adapter"))
    backbone: str = Field(
        "mlp", description="Shared backbone. fMRI: 'mlp' (residual MLP blocks) or 'mixer' (MindEye2's "
        "MLP-Mixer). M/EEG: 'dilated_conv' (brainmagick-like dilated convolutions) or 'atm' (ATM's channel-"
        "attention transformer encoder). Or any backbone registered with neurodecode.models.register_backbone.",
        json_schema_extra=_parts_schema("backbone"))
    heads: list[str] = Field(
        ["pooled"], description="Output heads; 'pooled' is required (training, evaluation). 'tokens' "
        "(MindEye2's CLIP token head) needs targets.output=tokens or models.mlp.token_shape. 'lowlevel' "
        "(MindEye2's blurry-image head) learns image-VAE latents (models.mlp.lowlevel_vae) or RGB thumbnails; "
        "`neurodecode reconstruct` starts img2img from it. Heads registered with "
        "neurodecode.models.register_head are accepted too.", json_schema_extra=_parts_schema("head"))
    token_shape: list[int] | None = Field(
        None, description="(n_tokens, token_dim) of the tokens head; null = the targets' token shape "
        "(targets.output=tokens). MindEye2 / ViT-bigG-14: [256, 1664].")
    token_loss: str = Field(
        "mse", description="Loss of the tokens head against the target token sequences (MindEye2-style): "
        "'mse' or 'cosine' (1 - cosine similarity per token), or one registered with "
        "neurodecode.models.register_token_loss.", json_schema_extra=_parts_schema("token_loss"))
    token_weight: float = Field(
        1.0, ge=0, description="Weight of the token loss: total loss = contrastive(pooled) + token_weight × "
        "token loss (MindEye2-like recipe: 1.0).")
    lowlevel_vae: str | None = Field(
        None, description="'lowlevel' head targets: a local diffusers AutoencoderKL folder, a pipeline folder "
        "with a vae/ subfolder (e.g. the reconstruction generator) or a repo id in the local HF cache — the "
        "head then predicts that VAE's latents of the images at lowlevel_size (MindEye2: SD VAE, 224 px → "
        "4×28×28); null = RGB thumbnails of lowlevel_size (no weights).")
    lowlevel_size: int = Field(
        16, ge=4, le=1024, description="Image side the low-level targets are made from: thumbnail side "
        "(no VAE; a multiple of 4) or the VAE's input side (a multiple of 32 for SD's VAE).")
    lowlevel_loss: str = Field(
        "l1", description="Loss of the 'lowlevel' head (MindEye2: l1; or 'mse', or one registered with "
        "neurodecode.models.register_lowlevel_loss).", json_schema_extra=_parts_schema("lowlevel_loss"))
    lowlevel_weight: float = Field(0.5, ge=0, description="Weight of the low-level loss in the total loss.")
    adapter_kwargs: dict[str, Any] = Field({}, description="Extra arguments of the adapter module.")
    backbone_kwargs: dict[str, Any] = Field({}, description="Extra arguments of the backbone module.")
    head_kwargs: dict[str, dict[str, Any]] = Field(
        {}, description="Extra arguments per head name, e.g. {pooled: {projector: true}}: MindEye2's three-layer "
        "projector on the pooled output before the contrastive loss (see docs/recipes.md).")
    # training engine (Trainer)
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="Autocast precision of the forward pass (GPU; weights stay float32).")
    lr_schedule: Literal["onecycle", "cosine", "constant"] = Field(
        "onecycle", description="Learning-rate schedule: one-cycle (warm-up + cosine), cosine annealing or "
        "constant.")
    lr_schedule_kwargs: dict[str, Any] = Field(
        {}, description="Options of the schedule, torch's names: onecycle {pct_start, div_factor, "
        "final_div_factor, anneal_strategy}, cosine {eta_min}; e.g. MindEye2's {pct_start: 0.0133, "
        "final_div_factor: 1000} (see docs/training.md).")
    max_grad_norm: float | None = Field(
        None, gt=0, description="Clip the gradient norm to this value (e.g. MindBridge's 1.0); null = off.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches summed per optimizer step.")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Exponential moving average of the weights (e.g. 0.999); null = off.")
    patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without a lower validation loss; null = off.")
    checkpoint_every: int | None = Field(
        100, ge=1, description="Optimizer steps between resumable checkpoints in <run>/checkpoints "
        "(one is always written at the end); null = only at the end.")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_precision(cls, v: Any) -> Any:
        return "no" if v is False else v  # YAML reads a bare `no` as false

    @field_validator("heads")
    @classmethod
    def _heads(cls, v: list[str]) -> list[str]:
        for name in v:
            _part("head", name)  # unknown name: lists the registered heads and the closest match
        if "pooled" not in v or len(set(v)) != len(v):
            raise ValueError(f"heads must include 'pooled' (the embedding used for training and evaluation) "
                             f"without repeats, got {v}")
        return v

    @field_validator("loss", "adapter", "backbone", "token_loss", "lowlevel_loss")
    @classmethod
    def _registered_part(cls, v: str, info: ValidationInfo) -> str:
        _part(info.field_name, v)  # unknown name: lists the registered parts and the closest match
        return v

    @field_validator("token_shape")
    @classmethod
    def _token_shape(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 2 or min(v) < 1):
            raise ValueError(f"token_shape must be [n_tokens, token_dim] (positive ints), got {v}")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError("temperature must be a finite number > 0 (allowed range: (0, inf))")
        return v

    @field_validator("temperature_schedule")
    @classmethod
    def _temperature_schedule(cls, v: list[float]) -> list[float]:
        if len(v) != 2 or not all(math.isfinite(t) and t > 0 for t in v):
            raise ValueError("temperature_schedule must be [start, end], two finite numbers > 0")
        return v

    @model_validator(mode="after")
    def _loss_settings(self) -> MLPConfig:
        # mirrors neurodecode.models.losses.resolve_temperature with messages in config keys; a loss's
        # (default temperature, default mode, allowed modes) are its registered class's temperature_defaults
        temperature = getattr(_part("loss", self.loss), "temperature_defaults", None)
        if temperature is None:  # mse, or a registered loss without a temperature
            given = [k for k in ("temperature", "temperature_mode") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"models.mlp.{given[0]} does not apply to models.mlp.loss={self.loss!r} (it "
                                 "has no temperature); set it to null")
            return self
        default_t, default_mode, allowed = temperature
        mode = self.temperature_mode or default_mode
        if mode not in allowed:
            raise ValueError(f"models.mlp.temperature_mode={mode!r} is not available for models.mlp.loss="
                             f"{self.loss!r}; allowed: {list(allowed)}")
        t = default_t if self.temperature is None else self.temperature
        if mode == "learnable" and 1.0 / t > 100.0:
            raise ValueError(f"models.mlp.temperature={t!r} is an inverse temperature of {1.0 / t:.4g}, above "
                             "the cap of 100 on a learnable temperature (CLIP's clamp): the allowed range for a "
                             "learnable temperature is [0.01, inf). Use temperature_mode=fixed (or schedule) "
                             "for smaller values, e.g. MindEye2's 0.006.")
        return self


class ModelsConfig(_Section):
    """Decoders to fit."""

    ridge: RidgeConfig = Field(default_factory=RidgeConfig)
    mlp: MLPConfig = Field(default_factory=MLPConfig)


class EvaluationConfig(_Section):
    """Retrieval protocol (MindEye2: 300 candidates × 30 repeats, both directions)."""

    n_candidates: int | None = Field(
        300, ge=2, description="Candidates per retrieval draw (N-way top-1); null = all test items of the "
        "subject (THINGS: 200-way; speech: all test segments).")
    n_repeats: int = Field(30, ge=1, description="Random candidate draws.")
    topk: list[int] = Field([1, 5, 10], description="k for top-k among all test images.")
    n_boot: int = Field(1000, ge=0, description="Bootstrap resamples of test images for the CIs.")
    ci: float = Field(0.95, gt=0, lt=1, description="Confidence level.")
    average_repetitions: bool = Field(True, description="Average test trials over repetitions of a stimulus.")
    scheme: Literal["within", "loso"] = Field(
        "within", description="'within': one model on all subjects (per-subject adapters), tested on each "
        "subject's test trials; 'loso': leave-one-subject-out — per held-out subject, a fresh subject-agnostic "
        "model trained on the other subjects' training trials and tested on the held-out subject.")
    loso_subjects: list[int] | None = Field(
        None, description="With scheme 'loso': the held-out subjects to run (each a fold, trained on all the "
        "other subjects of data.subjects), e.g. [3]; null = every subject. `neurodecode fit --sweep` runs "
        "one job per fold with this key.")
    time_windows: list[float] | None = Field(
        None, description="M/EEG: [width, step] in seconds of a sliding-window sweep (ridge per window, "
        "retrieval with CIs per window, peak reported); null = off.")

    @field_validator("time_windows")
    @classmethod
    def _time_windows(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 2 or min(v) <= 0):
            raise ValueError(f"time_windows must be [width, step] in seconds (positive), got {v}")
        return v


class PreprocessingConfig(_Section):
    """M/EEG preprocessing (``neurodecode.preprocessing.MEEGPreprocessor``), fitted on training trials only.

    Every default is "off"; the M/EEG recipes set brainmagick's defaults (120 Hz, baseline, robust scaling,
    clip at 20).
    """

    picks: list[str] | None = Field(None, description="Channels kept: names, types ('eeg', 'meg', 'mag') or "
                                    "sensor regions ('occipital', 'left_temporal', ...); null = all.")
    l_freq: float | None = Field(None, gt=0, description="High-pass cut-off (Hz); null = none.")
    h_freq: float | None = Field(None, gt=0, description="Low-pass cut-off (Hz); null = none.")
    sfreq: float | None = Field(None, gt=0, description="Resample to this rate (Hz); null = keep.")
    tmin: float | None = Field(None, description="Crop: first time kept (s); null = epoch start.")
    tmax: float | None = Field(None, description="Crop: last time kept (s); null = epoch end.")
    baseline: list[float | None] | None = Field(
        None, description="[start, stop] (s) of the per-trial baseline subtracted; null entries = epoch "
        "edge; null = no baseline.")
    scaler: Literal["robust"] | None = Field(
        None, description="'robust': per-channel median / IQR from training trials, then clipping; null = off.")
    clip: float | None = Field(20.0, gt=0, description="Clip scaled values to ±clip (with scaler).")

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, v: list[float | None] | None) -> list[float | None] | None:
        if v is not None and len(v) != 2:
            raise ValueError(f"baseline must be [start, stop] (seconds, null = epoch edge), got {v}")
        return v

    def is_identity(self) -> bool:
        """Whether no preprocessing step is configured.

        Returns
        -------
        identity : bool
            True when every step (picks, filters, resampling, crop, baseline, scaler) is None.
        """
        return all(getattr(self, k) is None for k in
                   ("picks", "l_freq", "h_freq", "sfreq", "tmin", "tmax", "baseline", "scaler"))


class ReportConfig(_Section):
    """What the HTML report shows."""

    n_examples: int = Field(6, ge=0, description="Query/retrieved image rows shown.")
    n_retrieved: int = Field(5, ge=1, description="Retrieved images per row.")


class AblationConfig(_Section):
    """Region ablation after the fit (``neurodecode ablate`` uses these as its defaults)."""

    atlas: str | None = Field(
        None, description="Atlas to ablate; null = no ablation in `neurodecode fit`. 'nsd:ROI' (an NSD ROI file, "
        "e.g. nsd:streams), 'yeo7:DIR' / 'yeo17:DIR' / 'schaefer400-7:DIR' (nilearn's files in DIR; MNI, mapped "
        "to NSD subjects with their MNI-to-func1pt8 transform), 'seitzman' / 'dosenbach' (coordinate "
        "networks shipped with nilearn), 'sensors' / 'sensors:hemi' and 'times:WIDTH[,STEP]' (M/EEG), or a "
        "labelled NIfTI path ('{subject:02d}' for one file per subject, '{root}' for the data root).")
    strategies: list[Literal["zero", "mean", "permute", "without", "alone"]] = Field(
        ["zero"], description="Lesion the region's features in the test trials (zero / mean / permute) or refit "
        "the ridge decoder without the region / on the region alone.")
    metrics: list[Literal["top1", "2way"]] = Field(
        ["top1", "2way"], description="Retrieval metrics per test item (among all test stimuli of the subject).")
    model: Literal["ridge", "mlp"] = Field(
        "ridge", description="Which fitted decoder to ablate (refit strategies: ridge only).")
    n_null: int = Field(200, ge=1, description="Random same-size regions per region (lesions): the smallest "
                        "p-value is 1/(n_null+1).")
    n_null_retrain: int = Field(20, ge=1, description="Random same-size regions per region for the refit "
                                "strategies (each is a refit).")
    alpha: float = Field(0.05, gt=0, lt=1, description="FDR level (Benjamini-Hochberg across regions).")
    transforms: str | None = Field(
        None, description="MNI → data transform per subject for MNI atlases ('{subject:02d}' and '{root}' "
        "are filled); null = NSD's own nsddata/ppdata/subjXX/transforms/MNI-to-func1pt8.nii.gz when present.")


class FitConfig(_Section):
    """A whole ``neurodecode fit`` run."""

    name: str = Field("demo", description="Run name (the run folder is <output_dir>/<name>).")
    seed: int = Field(0, description="Seed for model initialisation, splits and bootstraps.")
    output_dir: str = Field("runs", description="Where run folders are written.")
    device: str = Field("cpu", description="Torch device for the MLP ('cpu', 'cuda', 'auto').")
    tracking: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        [], description="Experiment trackers (accelerate's) to log to, e.g. [tensorboard]; [] = off. Logged under "
        "<run>/tracking: the MLP's training (per step the loss and learning rate, per epoch the losses, validation "
        "loss and retrieval) and the final test metrics. Offline unless you ask: wandb runs with "
        "WANDB_MODE=offline unless WANDB_MODE is set, mlflow writes a file: store in <run>/tracking/mlruns unless "
        "MLFLOW_TRACKING_URI is set. View tensorboard with `tensorboard --logdir <run>/tracking`. See "
        "docs/training.md.")
    tracking_kwargs: dict[str, dict[str, Any]] = Field(
        {}, description="Extra arguments per tracker in `tracking`: tensorboard → SummaryWriter (flush_secs, ...), "
        "wandb → wandb.init (mode: online, entity, project, tags, ...), mlflow → accelerate's MLflowTracker "
        "(experiment_name, tags, ...). The wandb project / mlflow experiment default to `name`.")
    data: DataConfig = Field(default_factory=DataConfig)
    simulate: SimulateConfig = Field(default_factory=SimulateConfig)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    targets: TargetsConfig = Field(default_factory=TargetsConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    ablation: AblationConfig = Field(default_factory=AblationConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # the run folder is <output_dir>/<name>: a name must not climb out of output_dir or point elsewhere
        if (v.strip() in ("", ".", "..") or any(c in v for c in "/\\\0") or Path(v).is_absolute()
                or PureWindowsPath(v).drive):
            raise ValueError(
                "the run name must be one folder name inside output_dir (no '/', '\\' or drive, not '.' or "
                "'..'): set output_dir to choose where runs go and name to a plain folder name, e.g. "
                "--set output_dir=results/eeg --set name=my-run")
        return v

    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking(cls, v: Any) -> Any:
        if isinstance(v, str):  # --set tracking=tensorboard (or tensorboard,wandb)
            v = [t.strip() for t in v.split(",") if t.strip()]
        if isinstance(v, list):  # each tracker once
            v = list(dict.fromkeys(v))
        return v

    @field_validator("tracking_kwargs")
    @classmethod
    def _tracking_kwargs(cls, v: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        trackers = info.data.get("tracking", [])
        extra = sorted(set(v) - set(trackers))
        if extra:
            raise ValueError(f"tracking_kwargs has options for {extra}, which are not in tracking {trackers}: add "
                             f"them to tracking (e.g. --set tracking=[{','.join([*trackers, *extra])}]) or drop "
                             "the options")
        return v

    @model_validator(mode="after")
    def _dataset_options(self) -> FitConfig:
        ds = self.data.dataset
        info = _dataset_spec(ds)
        modality, audio = info.modality, info.stimulus == "audio"
        given = [k for k in _DATASET_SIM_KEYS
                 if k in self.simulate.model_fields_set and k not in info.simulate_keys]
        if given:
            raise ValueError(f"simulate.{given[0]} applies to the {_owners(given[0], 'simulate_keys')} simulator "
                             f"only; data.dataset is {ds!r}. Pass this simulator's parameters in simulate.params")
        if audio and "image_size" in self.simulate.model_fields_set:
            raise ValueError(f"simulate.image_size does not apply to {ds!r} (its stimuli are sounds)")
        if modality == "fmri" and not self.preprocessing.is_identity():
            how = "normalised by data.zscore" if "zscore" in info.data_keys else "fMRI"
            raise ValueError(f"the preprocessing section is for M/EEG data; {info.label} is {how}")
        speech = self.targets.encoder in ("melspec", "speech")
        if audio and not speech:
            raise ValueError(f"{ds!r} stimuli are speech: set targets.encoder=melspec (no weights) or "
                             "targets.encoder=speech with targets.weights=<wav2vec2 folder>")
        if not audio and speech:
            raise ValueError(f"targets.encoder={self.targets.encoder!r} embeds audio but {ds!r} stimuli are "
                             "images: use 'pixels' or an open_clip encoder")
        mlp = self.models.mlp
        meeg = modality != "fmri"
        if mlp.enabled:
            want = "sequence" if meeg else "vector"  # M/EEG: (channels, time); fMRI: voxel vectors
            for key in ("adapter", "backbone"):
                value = getattr(mlp, key)
                if _input_kind(key, value) != want:
                    fit = {k: " or ".join(n for n in _part_names(k) if _input_kind(k, n) == want)
                           for k in ("adapter", "backbone")}
                    raise ValueError(
                        f"models.mlp.{key}={value!r} does not fit {modality} data ({ds}): use adapter "
                        f"{fit['adapter']} with backbone {fit['backbone']}")
        if self.evaluation.scheme == "loso" and len(self.data.subjects) < 2:
            raise ValueError("evaluation.scheme=loso needs at least 2 subjects in data.subjects")
        if self.evaluation.time_windows is not None and modality == "fmri":
            raise ValueError("evaluation.time_windows is an M/EEG analysis; set it to null for fMRI")
        return self

    @model_validator(mode="after")
    def _loso_subjects(self) -> FitConfig:
        held_out = self.evaluation.loso_subjects
        if held_out is None:
            return self
        if self.evaluation.scheme != "loso":
            raise ValueError("evaluation.loso_subjects picks leave-one-subject-out folds: it needs "
                             "evaluation.scheme=loso (or set it to null)")
        unknown = [s for s in held_out if s not in self.data.subjects]
        if not held_out or unknown or len(set(held_out)) != len(held_out):
            raise ValueError(f"evaluation.loso_subjects must list distinct subjects of data.subjects "
                             f"{self.data.subjects}, e.g. [{self.data.subjects[-1]}]; got {held_out}")
        return self

    @model_validator(mode="after")
    def _subjects_exist(self) -> FitConfig:
        if self.data.root is None:
            extra = [s for s in self.data.subjects if not 1 <= s <= self.simulate.n_subjects]
            if extra:
                raise ValueError(
                    f"data.subjects {extra} are not simulated: simulate.n_subjects is "
                    f"{self.simulate.n_subjects} (subjects 1..{self.simulate.n_subjects}). Raise "
                    "simulate.n_subjects or pick other subjects.")
        mlp, targets = self.models.mlp, self.targets
        if "tokens" in mlp.heads and targets.output != "tokens" and mlp.token_shape is None:
            raise ValueError(
                "models.mlp.heads includes 'tokens' but the targets are pooled vectors: set "
                "targets.output=tokens (an open_clip ViT encoder), give models.mlp.token_shape=[n_tokens, "
                "token_dim], or drop the head (models.mlp.heads=[pooled]).")
        if targets.output == "tokens" and "tokens" not in mlp.heads:
            raise ValueError("targets.output is 'tokens' but models.mlp.heads has no 'tokens' head: add it "
                             "(models.mlp.heads=[pooled,tokens]) or set targets.output=pooled.")
        return self


# -- helpers ------------------------------------------------------------------------------------

def valid_keys(model: type[BaseModel] = FitConfig, prefix: str = "") -> list[str]:
    """All dotted keys a config accepts (``models.mlp.lr``, ...).

    Parameters
    ----------
    model : type of BaseModel
        The config section (default: the whole run config).
    prefix : str
        Prepended to every key (the dotted path of ``model`` in the run config).

    Returns
    -------
    keys : list of str
        Every leaf key, dotted.
    """
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(valid_keys(ann, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def describe_keys(model: type[BaseModel] = FitConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, description) for every leaf key, for ``--help`` and docs.

    Parameters
    ----------
    model : type of BaseModel
        The config section to describe (default: the whole run config).
    prefix : str
        Prepended to every key (the dotted path of ``model`` in the run config).

    Returns
    -------
    rows : list of (str, object, str)
        Dotted key, default value and description of every leaf key.
    """
    rows = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_keys(ann, f"{prefix}{name}."))
        else:
            default = field.get_default(call_default_factory=True)
            rows.append((f"{prefix}{name}", default, field.description or ""))
    return rows


def _list_hint(loc: str, error: Mapping[str, Any]) -> str:
    """How to write a list when a list key got a comma-separated string (``--set data.subjects=1,2``)."""
    value = error.get("input")
    if error.get("type") == "list_type" and isinstance(value, str) and "," in value:
        return f"; write a list in brackets: --set {loc}=[{value}] (or {loc}: [{value}] in YAML)"
    return ""


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"Invalid config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            parent = ".".join(str(x) for x in e["loc"][:-1])
            siblings = [k[len(parent) + 1:] if parent else k for k in valid_keys()
                        if (k.startswith(parent + ".") if parent else True)]
            siblings = sorted({s.split(".")[0] for s in siblings})
            where = f"in '{parent}'" if parent else "at the top level"
            close = difflib.get_close_matches(str(e["loc"][-1]), siblings, n=1, cutoff=0.6)
            hint = f" Did you mean '{parent + '.' if parent else ''}{close[0]}'?" if close else ""
            lines.append(f"  - unknown key '{loc}'.{hint} Valid keys {where}: {', '.join(siblings)}")
        elif not loc or isinstance(e.get("input"), dict):
            lines.append(f"  - {loc or 'config'}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  - {loc}: {e['msg']} (got {e.get('input')!r}){_list_hint(loc, e)}")
    lines.append("Run `neurodecode fit --help-config` to list every key with its default.")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value read as YAML: numbers, lists, null, strings).

    Parameters
    ----------
    text : str
        One ``--set`` argument.

    Returns
    -------
    path : list of str
        The dotted key split at the dots.
    value : object
        The value as YAML reads it (the raw text when it is not valid YAML).
    """
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r} (e.g. --set models.mlp.max_epochs=10)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set got an empty key in {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    _check_flow_keys(value, text)
    return key.split("."), value


def _check_flow_keys(value: Any, text: str) -> None:
    """Refuse ``{hidden:64}``: YAML reads it as the key ``'hidden:64'`` with no value, not ``hidden: 64``."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and v is None and re.fullmatch(r"[A-Za-z_][\w.]*:\S.*", k):
                name, rest = k.split(":", 1)
                raise ConfigError(f"--set {text!r}: YAML reads {{{k}}} as a key named {k!r}; put a space "
                                  f"after the colon: {{{name}: {rest}}}")
            _check_flow_keys(v, text)
    elif isinstance(value, list):
        for v in value:
            _check_flow_keys(v, text)


def _apply(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = {}
            node[part] = nxt
        if not isinstance(nxt, dict):
            raise ConfigError(f"Cannot set '{'.'.join(path)}': '{part}' is a value, not a section")
        node = nxt
    node[path[-1]] = value


_PLACEHOLDER = re.compile(r"^\$\{([A-Z0-9_]+)\}$")


def _resolve_placeholders(tree: Any, source: str, path: str = "") -> None:
    """Replace ``${NEURODECODE_...}`` values by the user's setting (env, then config file)."""
    from .utils import KNOWN_CONFIG, get_config

    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        where = f"{path}{key}"
        if isinstance(value, dict):
            _resolve_placeholders(value, source, where + ".")
        elif isinstance(value, str) and (m := _PLACEHOLDER.match(value)):
            name = m.group(1)
            if name not in KNOWN_CONFIG:
                raise ConfigError(f"{where}: unknown setting ${{{name}}} in {source}; known: {sorted(KNOWN_CONFIG)}")
            resolved = get_config(name)
            if resolved is None:
                flag = " (or --root PATH)" if where == "data.root" else ""
                raise ConfigError(
                    f"{where} is ${{{name}}} in {source}, but {name} is not set. Pass --set {where}=PATH"
                    f"{flag}, export {name}=PATH, or add it to ~/.neurodecode/config.json.")
            tree[key] = resolved


class _DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping gives one key twice (plain YAML silently keeps the last value)."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (``<<`` merges may still override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # unhashable key: the base class raises its own clear error
                    continue
                if first is not key_node.start_mark:
                    raise _DuplicateKeyError(key, first, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


#: The folder of the recipes shipped inside the package (``neurodecode recipes`` lists them).
RECIPE_DIR = Path(__file__).resolve().parent / "pipelines"


def list_recipes() -> dict[str, str]:
    """The recipes shipped with neurodecode, each with its one-line summary.

    Returns
    -------
    recipes : dict of str to str
        Recipe name (what ``neurodecode fit NAME`` takes) → the ``# Summary:`` line of its header.
    """
    out = {}
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        lines = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
        summary = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Summary:")),
                       lines[0] if lines else "")
        out[path.stem] = summary
    return out


def recipe_path(recipe: str | Path) -> Path:
    """The YAML file of a recipe given by name or by path.

    A path to an existing file wins; otherwise a bare name (no folder, no ``.yaml``) is looked up among
    the recipes shipped in the package, so ``neurodecode fit nsd_ridge`` works after a plain
    ``pip install``.

    Parameters
    ----------
    recipe : str | Path
        A recipe name (``"nsd_ridge"``) or a path to a YAML file.

    Returns
    -------
    path : Path
        The recipe file.

    Raises
    ------
    ConfigError
        When neither a file nor a shipped recipe of that name exists; the message lists the shipped recipes.
    """
    p = Path(recipe).expanduser()
    if p.is_file():
        return p
    shipped = RECIPE_DIR / f"{p.stem}.yaml"
    if p.suffix not in (".yaml", ".yml") and len(p.parts) == 1 and shipped.is_file():
        return shipped
    names = ", ".join(list_recipes())
    near = difflib.get_close_matches(p.stem, list(list_recipes()), n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise ConfigError(f"Config file not found: {p}.{hint} Give a path to a YAML recipe or the name of a "
                      f"recipe shipped with neurodecode: {names} (`neurodecode recipes` describes them).")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> FitConfig:
    """Build a :class:`FitConfig` from a YAML file and ``key=value`` overrides.

    Parameters
    ----------
    path : str | Path | None
        A YAML recipe: the name of a recipe shipped with neurodecode (``"nsd_ridge"``, see
        :func:`list_recipes`) or a path to a YAML file; ``None`` = the defaults.
    overrides : list of str
        ``a.b=c`` strings applied on top (values parsed as YAML).

    Returns
    -------
    config : FitConfig
        The validated run config, ``${NEURODECODE_...}`` values resolved.

    Raises
    ------
    ConfigError
        For a missing or malformed file, a key given twice in one mapping (the
        message names the key and both lines), an unknown key (the message
        lists the valid keys) or an invalid value.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = recipe_path(path)
        try:
            loaded = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # safe: a yaml.SafeLoader subclass
        except _DuplicateKeyError as err:
            raise ConfigError(
                f"Config file {p}: key {err.key!r} is given twice (line {err.first.line + 1}, "
                f"then line {err.again.line + 1}); YAML would silently keep the last value. Keep one of them."
            ) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"Config file {p} is not valid YAML: {err}") from err
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {p} must hold a mapping of keys, got {type(loaded).__name__}")
        tree = copy.deepcopy(loaded)
        source = str(p)
    for ov in overrides or []:
        keypath, value = parse_override(ov)
        _apply(tree, keypath, value)
    if overrides:
        source += " + --set " + " ".join(overrides)
    _resolve_placeholders(tree, source)
    try:
        return FitConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def config_to_yaml(config: FitConfig) -> str:
    """The resolved config as YAML (what every run folder stores).

    Parameters
    ----------
    config : FitConfig
        A validated run config.

    Returns
    -------
    text : str
        YAML in field order, without the dataset-specific keys that do not apply to its dataset.
    """
    tree = config.model_dump(mode="json")
    ds = config.data.dataset
    info = _dataset_spec(ds)
    # keys that do not apply to this dataset are left out (they would be rejected)
    for key in _DATASET_DATA_KEYS:
        if key not in info.data_keys:
            tree["data"].pop(key, None)
    for key in _DATASET_SIM_KEYS:
        if key not in info.simulate_keys:
            tree["simulate"].pop(key, None)
    if info.stimulus == "audio":
        tree["simulate"].pop("image_size", None)
    return yaml.safe_dump(tree, sort_keys=False)
