"""BrainDecoder: per-subject adapters → shared backbone → output heads (pooled, tokens, low-level)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import check_option, fill_doc, logger, verbose
from .adapters import LinearAdapter, PooledAdapter, SpatialAttention, SubjectLayer  # noqa: F401 (old names)
from .backbones import (  # noqa: F401 (old names)
    ChannelAttentionEncoder,
    DilatedConvNet,
    MLPMixer,
    ResidualMLP,
    _dropout,
    _ResidualBlock,
    init_parameters_,
)
from .heads import LowLevelHead, PooledHead, SequenceHead, TokenHead  # noqa: F401 (old names)
from .hub import HubMixin, resolve_pretrained, write_model_card
from .pretrained import CONFIG_NAME, WEIGHTS_NAME, read_pretrained, write_pretrained
from .priors import DiffusionPrior  # noqa: F401 (registers the "dalle2" prior)
from .registry import (
    ADAPTER_REGISTRY,
    BACKBONE_REGISTRY,
    HEAD_REGISTRY,
    DecoderSpec,
    RegisteredNames,
    get_adapter,
    get_backbone,
    get_head,
    get_prior,
)

#: Registered backbones, adapters and heads (live views of the registries, tuple-like).
BACKBONES: RegisteredNames = BACKBONE_REGISTRY.view()
ADAPTERS: RegisteredNames = ADAPTER_REGISTRY.view()
HEADS: RegisteredNames = HEAD_REGISTRY.view()


class _OutputNames(Sequence[str]):
    """What :meth:`BrainDecoder.predict` can return: every registered head, and ``"all"`` (live)."""

    def __getitem__(self, i: Any) -> Any:
        return (*HEADS, "all")[i]

    def __len__(self) -> int:
        return len(HEADS) + 1

    def __repr__(self) -> str:
        return repr((*HEADS, "all"))


OUTPUTS: Sequence[str] = _OutputNames()


_NO_PRIOR = ("this model has no diffusion prior: build it with prior='dalle2' (prior_kwargs) or load a "
             "published checkpoint that holds one (mindeye2, or mindeye1's prior files, parts='all')")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be {'a positive int' if minimum == 1 else f'an int >= {minimum}'}, "
                         f"got {value!r}")
    return int(value)


@dataclass
class DecoderOutput:
    """What :meth:`BrainDecoder.forward` returns.

    Parameters
    ----------
    embedding : Tensor, shape (batch, embed_dim)
        The decoded (pooled) stimulus embedding; for a time-resolved model the
        flattened ``(n_frames, dim)`` sequence (``embed_dim = n_frames · dim``).
    latent : Tensor, shape (batch, hidden_dim) | (batch, n_virtual, n_times)
        The shared latent after the subject adapter (before the backbone);
        M/EEG adapters give a (batch, channels, time) latent.
    tokens : Tensor, shape (batch, n_tokens, token_dim) | None
        Token-sequence output, when the model has a ``"tokens"`` head.
    lowlevel : Tensor, shape (batch, channels, height, width) | None
        Predicted VAE latents, when the model has a ``"lowlevel"`` head.
    outputs : dict
        Every head's output by head name (``"pooled"`` is ``embedding``), registered heads included.
    """

    embedding: torch.Tensor
    latent: torch.Tensor
    tokens: torch.Tensor | None = None
    lowlevel: torch.Tensor | None = None
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    """Config values as JSON types (arrays and tuples become lists, mapping keys strings)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _legacy_keys_hook(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Rename weights saved before adapters/backbones/heads became modules (neurodecode ≤ 0.1 layout)."""
    renames = (("adapters.", "adapter.linears."), ("blocks.", "backbone.blocks."),
               ("head_norm.", "heads.pooled.norm."), ("head.", "heads.pooled.proj."))
    for key in list(state_dict):
        rest = key[len(prefix):] if key.startswith(prefix) else None
        if rest is None:
            continue
        for old, new in renames:
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                break


class BrainDecoder(HubMixin, nn.Module):
    """Decode brain responses of several subjects into one stimulus-embedding space.

    A composable version of MindEye2's recipe: each subject has its own
    adapter (voxels or sensors → a shared space), followed by a backbone
    shared across subjects and one or more heads. The default — linear
    adapters, residual MLP, pooled head — is neurodecode's original model, and
    folders saved by earlier versions still load.

    ===========================  ===================================  ========================
    adapter                      backbone                             input
    ===========================  ===================================  ========================
    ``"linear"``, ``"pooled"``   ``"mlp"``, ``"mixer"``               (batch, n_voxels)
    ``"subject_layer"``,         ``"dilated_conv"``, ``"atm"``        (batch, n_chans, n_times)
    ``"spatial_attention"``
    ===========================  ===================================  ========================

    Parameters
    ----------
    n_inputs : dict
        Subject → number of input features: voxels, or ``n_chans · n_times``
        for M/EEG (flattened, so :class:`~neurodecode.training.Trainer` and
        :meth:`predict` work unchanged). Subjects are keyed by
        ``str(subject)``, so ``1`` and ``"1"`` name the same subject.
    embed_dim : int
        Dimension of the target (pooled) embeddings (flattened length for
        time-resolved targets).
    hidden_dim : int
        Width of the shared latent and backbone output.
    n_blocks : int
        Depth of the backbone (residual blocks, mixer blocks, dilated conv
        blocks or transformer layers).
    dropout : float
        Dropout probability in the backbone, in [0, 1).
    backbone : {"mlp", "mixer", "dilated_conv", "atm", "mindeye2"} | str
        A registered backbone (:func:`~neurodecode.models.list_backbones`):
        :class:`~neurodecode.models.backbones.ResidualMLP`,
        :class:`~neurodecode.models.backbones.MLPMixer`,
        :class:`~neurodecode.models.backbones.DilatedConvNet` or
        :class:`~neurodecode.models.backbones.ChannelAttentionEncoder`.
    seed : int | None
        If given, weights are initialised from a ``torch.Generator`` seeded
        with it (reproducible, leaves the global torch RNG alone); otherwise
        torch's global RNG is used, as for any ``nn.Module``.
    adapter : {"linear", "pooled", "subject_layer", "spatial_attention"} | str | None
        A registered subject adapter (:mod:`neurodecode.models.adapters`) whose
        ``output_kind`` is the backbone's ``input_kind``. ``None``: the
        backbone's ``default_adapter`` (``"linear"`` for the MLP/mixer
        backbones, ``"subject_layer"`` for the M/EEG backbones).
    heads : sequence of {"pooled", "tokens", "lowlevel"} | str
        Registered output heads; ``"pooled"`` (the ``embedding`` output) is required.
    token_shape : tuple of int | None
        ``(n_tokens, token_dim)`` of the ``"tokens"`` head (MindEye2: (256, 1664)).
    lowlevel_shape : tuple of int | None
        ``(channels, height, width)`` of the ``"lowlevel"`` head (default (4, 28, 28),
        SD-VAE latents of 224-px images).
    n_times : int | None
        Time samples per trial, required by the M/EEG adapters: subject ``s``
        then has ``n_inputs[s] // n_times`` channels.
    embed_shape : tuple of int | None
        Shape of one target embedding. ``(n_frames, dim)`` — a time-resolved
        target such as speech features, whose rows are the flattened frames
        (:class:`~neurodecode.embeddings.StimulusEmbeddings` ``token_shape``) —
        makes an M/EEG model time-resolved: the sequence backbone keeps its
        time axis (``pool=None``) and a
        :class:`~neurodecode.models.heads.SequenceHead` maps it onto the
        target's frames, so the contrastive loss scores the whole (time × dim)
        map instead of a time-pooled vector. ``None`` or ``(embed_dim,)``:
        pooled targets (the backbone pools over time). fMRI (vector) backbones
        predict the flattened rows either way.
    adapter_kwargs, backbone_kwargs, head_kwargs : dict | None
        Extra arguments for the adapter, the backbone, and per head name
        (``{"tokens": {"mode": "linear"}}``). ``SpatialAttention`` needs
        ``adapter_kwargs={"positions": {subject: array (n_chans, 2)}}``.
    prior : {"dalle2"} | str | None
        A registered diffusion prior (``"dalle2"``: :class:`~neurodecode.models.priors.DiffusionPrior`;
        ``"dalle2_network"``: :class:`~neurodecode.models.priors.DiffusionPriorNetworkPrior`) over the pooled
        head's tokens (its linear output viewed as ``projector_tokens`` tokens, MindEye2's ``backbone``);
        :meth:`sample_prior` samples image tokens from it. None (default): no prior.
    prior_kwargs : dict | None
        Arguments of the prior; ``num_tokens`` defaults to the pooled head's ``projector_tokens`` and
        ``dim`` to ``embed_dim / num_tokens``.

    Examples
    --------
    >>> model = BrainDecoder(n_inputs={1: 15724, 2: 14278}, embed_dim=768)   # doctest: +SKIP
    >>> out = model(torch.randn(4, 15724), subject=1)                        # doctest: +SKIP
    >>> out.embedding.shape                                                  # doctest: +SKIP
    torch.Size([4, 768])
    >>> pred = model.predict(test_trials)                                    # doctest: +SKIP
    >>> meg = BrainDecoder({1: 208 * 120}, embed_dim=768, n_times=120, backbone="dilated_conv",
    ...                    adapter="spatial_attention",
    ...                    adapter_kwargs={"positions": {1: xy}})             # doctest: +SKIP
    """

    config_name = CONFIG_NAME
    weights_name = WEIGHTS_NAME

    def __init__(self, n_inputs: Mapping[Any, int], embed_dim: int, hidden_dim: int = 512,
                 n_blocks: int = 2, dropout: float = 0.1, backbone: str = "mlp",
                 seed: int | None = None, *, adapter: str | None = None,
                 heads: Sequence[str] = ("pooled",), token_shape: Sequence[int] | None = None,
                 lowlevel_shape: Sequence[int] | None = None, n_times: int | None = None,
                 embed_shape: Sequence[int] | None = None,
                 adapter_kwargs: Mapping[str, Any] | None = None,
                 backbone_kwargs: Mapping[str, Any] | None = None,
                 head_kwargs: Mapping[str, Mapping[str, Any]] | None = None, prior: str | None = None,
                 prior_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        n_in = self._check_sizes(n_inputs, embed_dim, hidden_dim, n_blocks, dropout, n_times)
        backbone_cls = get_backbone(backbone)
        adapter = backbone_cls.default_adapter if adapter is None else adapter
        adapter_cls = self._check_pair(backbone, adapter)
        heads = self._check_heads(heads)
        shapes = {"token_shape": token_shape, "lowlevel_shape": lowlevel_shape}
        for name in heads:  # a head may require or default its decoder arguments (e.g. token_shape)
            check = getattr(get_head(name), "check_decoder_args", None)
            if check is not None:
                check(shapes)
        sequence = backbone_cls.input_kind == "sequence"
        if sequence:
            self._check_sequence_input(adapter, n_in, n_times)
        embed_shape = self._check_embed_shape(embed_shape, int(embed_dim))
        time_resolved = sequence and embed_shape is not None and len(embed_shape) == 2
        if time_resolved and not all(getattr(get_head(h), "time_resolved", False) for h in heads):
            raise ValueError(f"heads {list(heads)}: a time-resolved model (embed_shape={embed_shape}) has only "
                             "the 'pooled' head (the flattened frames × dim output)")
        token_shape, lowlevel_shape = shapes["token_shape"], shapes["lowlevel_shape"]
        self.config = {"n_inputs": n_in, "embed_dim": int(embed_dim), "hidden_dim": int(hidden_dim),
                       "n_blocks": int(n_blocks), "dropout": float(dropout), "backbone": backbone,
                       "seed": seed, "adapter": adapter, "heads": list(heads),
                       "token_shape": None if token_shape is None else [int(v) for v in token_shape],
                       "lowlevel_shape": None if lowlevel_shape is None else [int(v) for v in lowlevel_shape],
                       "n_times": None if n_times is None else int(n_times),
                       "embed_shape": None if embed_shape is None else list(embed_shape),
                       "adapter_kwargs": _jsonable(dict(adapter_kwargs or {})),
                       "backbone_kwargs": _jsonable(dict(backbone_kwargs or {})),
                       "head_kwargs": _jsonable(dict(head_kwargs or {})), "prior": prior,
                       "prior_kwargs": _jsonable(dict(prior_kwargs or {}))}
        h_kw = {k: dict(v) for k, v in (head_kwargs or {}).items()}
        unknown = sorted(set(h_kw) - set(heads))
        if unknown:
            raise ValueError(f"head_kwargs names heads {unknown} that the model does not have "
                             f"({list(heads)})")
        # built on the meta device, then initialised once from the generator (no global RNG use)
        spec = DecoderSpec(
            n_inputs=dict(n_in), embed_dim=int(embed_dim), hidden_dim=int(hidden_dim), n_blocks=int(n_blocks),
            dropout=float(dropout), n_times=None if n_times is None else int(n_times), embed_shape=embed_shape,
            time_resolved=time_resolved, token_shape=None if token_shape is None else tuple(token_shape),
            lowlevel_shape=None if lowlevel_shape is None else tuple(lowlevel_shape), device="meta")
        self._build_parts(spec, adapter_cls, backbone_cls, heads, dict(adapter_kwargs or {}),
                          dict(backbone_kwargs or {}), h_kw)
        self.prior = self._build_prior(spec, prior, dict(prior_kwargs or {}))
        self.to_empty(device="cpu")
        self.reset_parameters(None if seed is None else torch.Generator().manual_seed(int(seed)))
        self._register_load_state_dict_pre_hook(_legacy_keys_hook, with_module=True)

    # -- construction helpers ------------------------------------------------------------
    @staticmethod
    def _check_sizes(n_inputs: Any, embed_dim: Any, hidden_dim: Any, n_blocks: Any, dropout: Any,
                     n_times: Any) -> dict[str, int]:
        """Check the size arguments; return ``n_inputs`` keyed by ``str(subject)``."""
        if not isinstance(n_inputs, Mapping) or not n_inputs:
            raise ValueError("n_inputs must be a non-empty dict subject → number of input features, "
                             f"got {n_inputs!r}")
        n_in = {str(subject): _positive_int(f"n_inputs[{subject!r}]", n) for subject, n in n_inputs.items()}
        _positive_int("embed_dim", embed_dim)
        _positive_int("hidden_dim", hidden_dim)
        _positive_int("n_blocks", n_blocks, 0)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if n_times is not None:
            _positive_int("n_times", n_times)
        return n_in

    @staticmethod
    def _check_pair(backbone: str, adapter: str) -> type:
        """The adapter class, if the adapter's output is what the backbone takes (vectors or sequences)."""
        backbone_cls, adapter_cls = get_backbone(backbone), get_adapter(adapter)
        kind = backbone_cls.input_kind
        if adapter_cls.output_kind != kind:
            fits = [a for a in ADAPTERS if get_adapter(a).output_kind == kind]
            what = "fMRI vectors" if kind == "vector" else "M/EEG, (batch, channels, time)"
            raise ValueError(f"adapter={adapter!r} cannot feed backbone={backbone!r}: it takes {kind} input "
                             f"({what}); adapters that give it: {fits}")
        return adapter_cls

    @staticmethod
    def _check_heads(heads: str | Sequence[str]) -> tuple[str, ...]:
        """Registered head names, with ``"pooled"``, no repeats, in registration order."""
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        for h in heads:
            get_head(h)  # unknown name: lists the registered heads and the closest match
        if "pooled" not in heads or len(set(heads)) != len(heads):
            raise ValueError(f"heads must hold 'pooled' (the embedding output) and no repeats, got {heads!r}")
        return tuple(h for h in HEADS if h in heads)

    @staticmethod
    def _check_sequence_input(adapter: str, n_in: dict[str, int], n_times: int | None) -> None:
        """M/EEG input: ``n_times`` given and every ``n_inputs`` a multiple of it."""
        if n_times is None:
            raise ValueError(f"adapter={adapter!r} takes (batch, channels, time) input: give n_times, "
                             "the number of time samples per trial")
        bad = {s: n for s, n in n_in.items() if n % int(n_times)}
        if bad:
            raise ValueError(f"n_inputs must be n_chans · n_times for M/EEG; {bad} is not divisible by "
                             f"n_times={n_times}")

    def _build_parts(self, spec: DecoderSpec, adapter_cls: type, backbone_cls: type, heads: Sequence[str],
                     adapter_kwargs: dict[str, Any], backbone_kwargs: dict[str, Any],
                     head_kwargs: dict[str, dict[str, Any]]) -> None:
        """Build adapter → backbone → heads from their registered classes (on ``spec.device``)."""
        self.adapter = adapter_cls.from_decoder(spec, **adapter_kwargs)
        self.backbone = backbone_cls.from_decoder(spec, self.adapter.out_features, **backbone_kwargs)
        self.heads = nn.ModuleDict({name: get_head(name).from_decoder(spec, **head_kwargs.get(name, {}))
                                    for name in heads})

    def _build_prior(self, spec: DecoderSpec, prior: str | None, kwargs: dict[str, Any]) -> nn.Module | None:
        """The registered prior over the pooled head's tokens (``num_tokens``/``dim`` from the head)."""
        if prior is None:
            if kwargs:
                raise ValueError("prior_kwargs given without a prior (prior=None)")
            return None
        prior_cls = get_prior(prior)
        head = self.heads["pooled"]
        if not isinstance(head, PooledHead):
            raise ValueError(f"prior={prior!r} reads the pooled head's tokens; this model's pooled head is a "
                             f"{type(head).__name__} (time-resolved models have no prior)")
        n_tokens = head.projector_tokens
        kwargs.setdefault("num_tokens", n_tokens)
        kwargs.setdefault("dim", spec.embed_dim // n_tokens)
        if (kwargs["num_tokens"], kwargs["dim"]) != (n_tokens, spec.embed_dim // n_tokens):
            raise ValueError(f"prior_kwargs num_tokens={kwargs['num_tokens']}, dim={kwargs['dim']}: the "
                             f"pooled head gives {n_tokens} tokens of {spec.embed_dim // n_tokens} "
                             f"(embed_dim {spec.embed_dim}, projector_tokens {n_tokens})")
        return prior_cls.from_decoder(spec, **kwargs)

    # -- properties --------------------------------------------------------------------
    @property
    def subjects(self) -> list[str]:
        """Subjects the model has an adapter for (as strings)."""
        return list(self.config["n_inputs"])

    @property
    def n_inputs(self) -> dict[str, int]:
        """Subject → number of input features (flattened)."""
        return dict(self.config["n_inputs"])

    @property
    def embed_dim(self) -> int:
        """Output embedding dimension."""
        return self.config["embed_dim"]

    @property
    def adapters(self) -> nn.Module:
        """The subject adapter; ``model.adapters[subject]`` is that subject's module (linear/pooled)."""
        return self.adapter

    @property
    def head(self) -> nn.Linear:
        """The pooled head's final ``nn.Linear`` (name kept from the original layout)."""
        return self.heads["pooled"].proj

    @property
    def head_norm(self) -> nn.LayerNorm:
        """The pooled head's LayerNorm (name kept from the original layout)."""
        return self.heads["pooled"].norm

    @property
    def blocks(self) -> nn.ModuleList:
        """The backbone's blocks (residual, mixer or dilated-conv blocks; transformer layers for ATM)."""
        return self.backbone.blocks if hasattr(self.backbone, "blocks") else self.backbone.layers

    @staticmethod
    def _check_embed_shape(embed_shape: Sequence[int] | None, embed_dim: int) -> tuple[int, ...] | None:
        if embed_shape is None:
            return None
        try:
            shape = tuple(int(v) for v in embed_shape)
        except (TypeError, ValueError):
            shape = ()
        if len(shape) not in (1, 2) or min(shape, default=0) < 1 or int(np.prod(shape)) != embed_dim:
            raise ValueError(f"embed_shape must be (embed_dim,) or (n_frames, dim) with n_frames · dim == "
                             f"embed_dim ({embed_dim}), got {embed_shape!r}")
        return shape

    @property
    def is_time_resolved(self) -> bool:
        """Whether the model outputs a flattened (n_frames, dim) sequence from an unpooled backbone."""
        return isinstance(self.heads["pooled"], SequenceHead)

    @property
    def is_sequence(self) -> bool:
        """Whether the model takes (batch, channels, time) M/EEG input."""
        return self.adapter.output_kind == "sequence"

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every weight (PyTorch defaults, identity subject layers) from ``generator``.

        Parameters
        ----------
        generator : torch.Generator | None
            Source of the random draws (``None``: the global RNG).
        """
        init_parameters_(self, generator)

    def _check_subject(self, subject: Any) -> str:
        key = str(subject)
        if key not in self.config["n_inputs"]:
            raise ValueError(f"Subject {subject!r} is unknown to this model; it has adapters for subjects "
                             f"{self.subjects}. Add an adapter (new-subject adaptation) or select "
                             "trials of known subjects.")
        return key

    def _input_shape(self, key: str) -> tuple[int, ...]:
        n = self.config["n_inputs"][key]
        if self.is_sequence:
            t = self.config["n_times"]
            return (n // t, t)
        return (n,)

    # -- forward ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, subject: Any,
                generator: torch.Generator | None = None) -> DecoderOutput:
        """Decode one batch of a single subject.

        Parameters
        ----------
        x : Tensor, shape (batch, n_inputs[subject]) | (batch, n_chans, n_times)
            M/EEG models take ``(batch, n_chans, n_times)`` or its flattened
            ``(batch, n_chans · n_times)`` form.
        subject : int | str
            The subject all rows of ``x`` come from.
        generator : torch.Generator | None
            Source of dropout masks in training mode (for reproducible training).

        Returns
        -------
        output : DecoderOutput
        """
        key = self._check_subject(subject)
        shape = self._input_shape(key)
        n_expected = self.config["n_inputs"][key]
        if self.is_sequence and x.ndim == 2 and x.shape[1] == n_expected:
            x = x.reshape(len(x), *shape)
        if tuple(x.shape[1:]) != shape:
            want = ", ".join(str(v) for v in shape)
            raise ValueError(f"Subject {subject!r} expects input of shape (batch, {want}), got "
                             f"{tuple(x.shape)}")
        latent = self.adapter(x, key, generator)
        h = self.backbone(latent, generator)
        outputs = {name: head(h, generator) for name, head in self.heads.items()}
        return DecoderOutput(embedding=outputs["pooled"], latent=latent, tokens=outputs.get("tokens"),
                             lowlevel=outputs.get("lowlevel"), outputs=outputs)

    @torch.no_grad()
    def sample_prior(self, x: torch.Tensor, subject: Any, *, timesteps: int = 20,
                     generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                     eta: float = 1.0, cond_scale: float = 1.0) -> torch.Tensor:
        """Sample image tokens from the diffusion prior, conditioned on one batch of one subject.

        adapter → backbone → the pooled head's tokens (:meth:`~neurodecode.models.heads.PooledHead.tokens`,
        MindEye2's ``backbone``) → ``prior.sample``. Call :meth:`eval` first, as the original's inference does
        (in training mode the adapter's and backbone's dropout applies).

        Parameters
        ----------
        x : Tensor, shape (batch, n_inputs[subject]) | (batch, n_chans, n_times)
            Brain responses of one subject.
        subject : int | str
            The subject all rows of ``x`` come from.
        timesteps : int
            Sampling steps (MindEye2: 20, DDIM; the prior's training steps: the full DDPM chain).
        generator : torch.Generator | None
            Source of the sampler's draws when ``noise`` is None.
        noise : Tensor | None
            Fixed draws, ``(n_steps + 1, batch, num_tokens, dim)`` (see
            :meth:`~neurodecode.models.priors.DiffusionPrior.sample`).
        eta : float
            DDIM stochasticity (MindEye2: 1).
        cond_scale : float
            Classifier-free guidance scale (MindEye2: 1, none).

        Returns
        -------
        tokens : Tensor, shape (batch, num_tokens, dim)
            The sampled image tokens (MindEye2: ViT-bigG/14 tokens for its unCLIP decoder).
        """
        if self.prior is None:
            raise ValueError(_NO_PRIOR)
        key = self._check_subject(subject)
        if self.is_sequence and x.ndim == 2:
            x = x.reshape(len(x), *self._input_shape(key))
        cond = self.heads["pooled"].tokens(self.backbone(self.adapter(x, key, None), None))
        return self.prior.sample(cond, timesteps=timesteps, generator=generator, noise=noise, eta=eta,
                                 cond_scale=cond_scale)

    # -- inference on BrainTrials ------------------------------------------------------
    @verbose
    @fill_doc
    def predict(self, trials: Any, *, output: str = "pooled", batch_size: int = 256,
                device: str | torch.device = "cpu",
                verbose: bool | str | int | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Decoded outputs of every trial, in trial order.

        Works on single- and multi-subject (ragged) BrainTrials: each subject's
        trials go through its own adapter and come back to their original rows.

        Parameters
        ----------
        trials : BrainTrials
            fMRI models flatten features beyond the first axis; M/EEG models
            take ``(n_trials, n_chans, n_times)`` (or its flattened form).
        output : {"pooled", "tokens", "lowlevel", "all"} | str
            Which head's output to return (any registered head the model has); ``"all"`` returns a dict
            of every head's.
        batch_size : int
            Trials per forward pass.
        device : str | torch.device
            Where to run (the model is moved there).
        %(verbose)s

        Returns
        -------
        predictions : ndarray of float32 | dict
            ``"pooled"``: shape (n_trials, embed_dim); ``"tokens"``: (n_trials,
            n_tokens, token_dim); ``"lowlevel"``: (n_trials, channels, height,
            width); ``"all"``: a dict head name → array.
        """
        check_option("output", output, OUTPUTS)
        names = list(self.heads) if output == "all" else [output]
        for name in names:
            if name not in self.heads:
                raise ValueError(f"output={output!r} needs a {name!r} head; this model has heads "
                                 f"{list(self.heads)}")
        out = {name: np.empty((len(trials), *self.heads[name].out_shape), dtype=np.float32) for name in names}
        for rows, xb, subject in self._trial_batches(trials, batch_size, device):
            res = self(xb, subject)
            for name in names:
                out[name][rows] = res.outputs[name].float().cpu().numpy()
        return out if output == "all" else out[output]

    def _trial_batches(self, trials: Any, batch_size: int, device: str | torch.device) -> Any:
        """``(rows, batch, subject)`` over each subject's trials, in eval mode and without gradients."""
        subj_col = trials.events["subject"].to_numpy()
        for subject in trials.subjects:
            self._check_subject(subject)
        was_training = self.training
        self.eval()
        self.to(device)
        try:
            with torch.no_grad():
                for subject, sub in trials.by_subject().items():
                    rows = np.flatnonzero(subj_col == subject)
                    X = np.asarray(sub.get_data(), dtype=np.float32).reshape(len(sub), -1)
                    n_expected = self.config["n_inputs"][str(subject)]
                    if X.shape[1] != n_expected:
                        raise ValueError(f"Subject {subject!r} has {X.shape[1]} features in trials but the "
                                         f"model's adapter expects {n_expected}")
                    X = X.reshape(len(X), *self._input_shape(str(subject)))
                    for start in range(0, len(X), batch_size):
                        xb = torch.from_numpy(X[start:start + batch_size]).to(device)
                        yield rows[start:start + batch_size], xb, subject
                    logger.debug("BrainDecoder: subject %s, %d trials", subject, len(X))
        finally:
            self.train(was_training)

    @verbose
    @fill_doc
    def predict_prior(self, trials: Any, *, timesteps: int = 20, seed: int | None = 0, batch_size: int = 64,
                      device: str | torch.device = "cpu",
                      verbose: bool | str | int | None = None) -> np.ndarray:
        """Image tokens sampled from the diffusion prior for every trial, in trial order.

        :meth:`sample_prior` on each subject's trials (eval mode), with one generator for the whole call, so
        the same trials, ``seed`` and ``batch_size`` give the same samples.

        Parameters
        ----------
        trials : BrainTrials
            As for :meth:`predict`.
        timesteps : int
            Sampling steps (MindEye2 and MindEye1: 20, DDIM).
        seed : int | None
            Seed of the sampler's generator (None: torch's global generator).
        batch_size : int
            Trials per sampling loop.
        device : str | torch.device
            Where to run (the model is moved there).
        %(verbose)s

        Returns
        -------
        tokens : ndarray of float32, shape (n_trials, num_tokens, dim)
            The sampled image tokens (the generator's image embedding: MindEye1's Versatile Diffusion
            tokens, MindEye2's ViT-bigG/14 tokens).
        """
        if self.prior is None:
            raise ValueError(_NO_PRIOR)
        generator = None if seed is None else torch.Generator(device=device).manual_seed(int(seed))
        out = np.empty((len(trials), self.prior.num_tokens, self.prior.dim), dtype=np.float32)
        for rows, xb, subject in self._trial_batches(trials, batch_size, device):
            tokens = self.sample_prior(xb, subject, timesteps=timesteps, generator=generator)
            out[rows] = tokens.float().cpu().numpy()
        return out

    # -- persistence -------------------------------------------------------------------
    @verbose
    @fill_doc
    def save_pretrained(self, save_directory: str | Path, *,
                        model_card: Mapping[str, Any] | str | bool | None = None,
                        verbose: bool | str | int | None = None) -> Path:
        """Write ``model.safetensors``, ``config.json`` (class, version, config) and a ``README.md`` model card.

        The folder is what the Hugging Face Hub takes as a model repo (see :meth:`push_to_hub`).

        Parameters
        ----------
        save_directory : str | Path
            Created if needed; files are replaced atomically.
        model_card : mapping | str | False | None
            What the model card says beyond the architecture: a mapping of
            :data:`neurodecode.models.hub.CARD_KEYS` (recipe, data, results with CIs, license, ...; see
            :func:`neurodecode.models.hub.render_model_card`), the card's full text, ``False`` (no card) or
            None (a minimal card).
        %(verbose)s

        Returns
        -------
        save_directory : Path
        """
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        folder = write_pretrained(save_directory, state, {"config": self.config}, class_name=type(self).__name__)
        write_model_card(folder, type(self).__name__, summary=self._card_summary(), model_card=model_card)
        return folder

    def _card_summary(self) -> str:
        c = self.config
        subjects = ", ".join(f"{s} ({n})" for s, n in self.n_inputs.items())
        time = f", {c['n_times']} time samples per input" if c.get("n_times") else ""
        return (f"A multi-subject `BrainDecoder` (neurodecode): per-subject `{c.get('adapter')}` adapters, a "
                f"shared `{c.get('backbone')}` backbone ({c.get('n_blocks')} blocks, hidden size "
                f"{c.get('hidden_dim')}, dropout {c.get('dropout')}) and the heads {', '.join(c.get('heads') or ())}, "
                f"mapping brain responses onto a {c.get('embed_dim')}-dimensional stimulus-embedding space. "
                f"Subjects (inputs per subject): {subjects}{time}."
                + (f" A `{c['prior']}` diffusion prior samples image tokens from the pooled head's tokens."
                   if c.get("prior") else ""))

    @classmethod
    @verbose
    @fill_doc
    def from_pretrained(cls, save_directory: str | Path, *, device: str | torch.device = "cpu",
                        revision: str | None = None, allow_download: bool = False, token: str | bool | None = None,
                        verbose: bool | str | int | None = None) -> BrainDecoder:
        """Rebuild a model saved by :meth:`save_pretrained` (safetensors, never pickle).

        Parameters
        ----------
        save_directory : str | Path
            Folder holding ``config.json`` and ``model.safetensors``, or a Hugging Face repo id
            (``"org/name"``) resolved through the local Hugging Face cache.
        device : str | torch.device
            Where to load the weights.
        %(revision)s
        %(allow_download)s
        %(token)s
        %(verbose)s

        Returns
        -------
        model : BrainDecoder
            In eval mode.
        """
        save_directory = resolve_pretrained(save_directory, class_name=cls.__name__, revision=revision,
                                            allow_download=allow_download, token=token)
        cfg, state = read_pretrained(save_directory, class_name=cls.__name__, device=str(device))
        config = dict(cfg["config"])
        config["seed"] = 0  # weights come from the file; a private generator leaves the global RNG alone
        model = cls(**config)
        model.config["seed"] = cfg["config"].get("seed")
        model.load_state_dict(state, strict=True)
        model.to(device)
        model.eval()
        logger.info("Loaded %s from %s", cls.__name__, save_directory)
        return model

    # -- new subjects (MindBridge reset-tuning, MindEye2 fine-tuning) -----------------------
    def subject_parameter_names(self, subject: Any) -> list[str]:
        """Names (as in ``named_parameters()``) of the parameters that belong to ``subject`` only.

        Linear adapter: its ``nn.Linear``; pooled adapter: its embedder (low-rank
        bottleneck, linear unless ``shared_linear``, LayerNorm); subject layer:
        its matrix; spatial attention: its subject layer (the queries and the
        1×1 convolution are shared). Everything else is shared across subjects.
        The adapter says which (``adapter.subject_prefix(key)``).

        Parameters
        ----------
        subject : int | str
            A subject the model has an adapter for.

        Returns
        -------
        names : list of str
            The parameter names, in ``named_parameters()`` order.
        """
        key = self._check_subject(subject)
        exact = f"adapter.{self.adapter.subject_prefix(key)}".rstrip(".")
        return [n for n, _ in self.named_parameters() if n == exact or n.startswith(exact + ".")]

    def _install_subject(self, key: str, n_inputs: int, generator: torch.Generator | None,
                         positions: Any = None) -> None:
        """Create ``key``'s adapter weights afresh (from ``generator``): ``adapter.install_subject``."""
        install = getattr(self.adapter, "install_subject", None)
        if install is None:
            raise NotImplementedError(f"the {self.config['adapter']!r} adapter cannot add or reset subjects: "
                                      "it has no install_subject(key, n, generator, positions=) method")
        n = n_inputs // self.config["n_times"] if self.is_sequence else n_inputs
        install(key, n, generator, positions=positions)

    def add_subject(self, subject: Any, n_inputs: int, *, positions: Any = None,
                    seed: int | None = None) -> BrainDecoder:
        """Give the model a freshly initialised adapter for a new subject (in place).

        The shared backbone and heads are untouched; the new subject may have
        any number of inputs (voxels, or ``n_chans · n_times`` for M/EEG). Used
        by :func:`neurodecode.training.adapt_subject` (MindBridge reset-tuning).

        Parameters
        ----------
        subject : int | str
            The new subject (keyed by ``str(subject)``).
        n_inputs : int
            Its number of input features.
        positions : array-like, shape (n_chans, 2) | None
            Sensor positions; required by the ``"spatial_attention"`` adapter.
        seed : int | None
            Seeds the new weights (``torch.Generator``); None uses the global RNG.

        Returns
        -------
        self : BrainDecoder
        """
        key = str(subject)
        if key in self.config["n_inputs"]:
            raise ValueError(f"Subject {subject!r} already has an adapter; use reset_subject() to "
                             "re-initialise it")
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, (int, np.integer)) or n_inputs < 1:
            raise ValueError(f"n_inputs must be a positive int, got {n_inputs!r}")
        n_inputs = int(n_inputs)
        if self.is_sequence and n_inputs % self.config["n_times"]:
            raise ValueError(f"n_inputs must be n_chans · n_times for M/EEG; {n_inputs} is not divisible "
                             f"by n_times={self.config['n_times']}")
        self._install_subject(key, n_inputs, None if seed is None else torch.Generator().manual_seed(int(seed)),
                              positions)
        self.config["n_inputs"][key] = n_inputs
        if positions is not None:
            self.config["adapter_kwargs"].setdefault("positions", {})[key] = _jsonable(positions)
        logger.info("Added subject %s (%d inputs) to the %s adapter", key, n_inputs, self.config["adapter"])
        return self

    def reset_subject(self, subject: Any, seed: int | None = None) -> BrainDecoder:
        """Re-initialise one subject's adapter weights (MindBridge "reset"), in place.

        Parameters
        ----------
        subject : int | str
            A subject the model has an adapter for.
        seed : int | None
            Seeds the new weights (``torch.Generator``); None uses the global RNG.

        Returns
        -------
        self : BrainDecoder
        """
        key = self._check_subject(subject)
        self._install_subject(key, self.config["n_inputs"][key],
                              None if seed is None else torch.Generator().manual_seed(int(seed)))
        return self
