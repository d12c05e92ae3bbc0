"""BrainDecoder: per-subject adapters → shared backbone → output heads (pooled, tokens, low-level)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import check_option, logger, verbose
from .adapters import LinearAdapter, PooledAdapter, SpatialAttention, SubjectLayer
from .backbones import (  # noqa: F401 (old names)
    ChannelAttentionEncoder,
    DilatedConvNet,
    MLPMixer,
    ResidualMLP,
    _dropout,
    _ResidualBlock,
    init_parameters_,
)
from .heads import LowLevelHead, PooledHead, SequenceHead, TokenHead
from .pretrained import CONFIG_NAME, WEIGHTS_NAME, read_pretrained, write_pretrained

BACKBONES = ("mlp", "mixer", "dilated_conv", "atm")
ADAPTERS = ("linear", "pooled", "subject_layer", "spatial_attention")
HEADS = ("pooled", "tokens", "lowlevel")
OUTPUTS = ("pooled", "tokens", "lowlevel", "all")
_VECTOR_BACKBONES = ("mlp", "mixer")
_SEQUENCE_ADAPTERS = ("subject_layer", "spatial_attention")


@dataclass
class DecoderOutput:
    """What :meth:`BrainDecoder.forward` returns.

    Attributes
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
    """

    embedding: torch.Tensor
    latent: torch.Tensor
    tokens: torch.Tensor | None = None
    lowlevel: torch.Tensor | None = None


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


class BrainDecoder(nn.Module):
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
    backbone : {"mlp", "mixer", "dilated_conv", "atm"}
        :class:`~neurodecode.models.backbones.ResidualMLP`,
        :class:`~neurodecode.models.backbones.MLPMixer`,
        :class:`~neurodecode.models.backbones.DilatedConvNet` or
        :class:`~neurodecode.models.backbones.ChannelAttentionEncoder`.
    seed : int | None
        If given, weights are initialised from a ``torch.Generator`` seeded
        with it (reproducible, leaves the global torch RNG alone); otherwise
        torch's global RNG is used, as for any ``nn.Module``.
    adapter : {"linear", "pooled", "subject_layer", "spatial_attention"} | None
        Subject adapter (:mod:`neurodecode.models.adapters`). ``None``:
        ``"linear"`` for the MLP/mixer backbones, ``"subject_layer"`` for the
        M/EEG backbones.
    heads : sequence of {"pooled", "tokens", "lowlevel"}
        Output heads; ``"pooled"`` (the ``embedding`` output) is required.
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
                 head_kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        if not isinstance(n_inputs, Mapping) or not n_inputs:
            raise ValueError("n_inputs must be a non-empty dict subject → number of input features, "
                             f"got {n_inputs!r}")
        n_in = {}
        for subject, n in n_inputs.items():
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"n_inputs[{subject!r}] must be a positive int, got {n!r}")
            n_in[str(subject)] = int(n)
        for name, val in (("embed_dim", embed_dim), ("hidden_dim", hidden_dim)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or n_blocks < 0:
            raise ValueError(f"n_blocks must be an int >= 0, got {n_blocks!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        check_option("backbone", backbone, BACKBONES)
        sequence = backbone not in _VECTOR_BACKBONES
        if adapter is None:
            adapter = "subject_layer" if sequence else "linear"
        check_option("adapter", adapter, ADAPTERS)
        if (adapter in _SEQUENCE_ADAPTERS) != sequence:
            raise ValueError(f"adapter={adapter!r} cannot feed backbone={backbone!r}: the 'linear' and "
                             "'pooled' adapters go with the 'mlp' and 'mixer' backbones (fMRI vectors), "
                             "'subject_layer' and 'spatial_attention' with 'dilated_conv' and 'atm' "
                             "(M/EEG, (batch, channels, time))")
        if isinstance(heads, str):
            heads = (heads,)
        heads = tuple(heads)
        for h in heads:
            check_option("heads", h, HEADS)
        if "pooled" not in heads or len(set(heads)) != len(heads):
            raise ValueError(f"heads must hold 'pooled' (the embedding output) and no repeats, got {heads!r}")
        heads = tuple(h for h in HEADS if h in heads)
        if "tokens" in heads and token_shape is None:
            raise ValueError("heads include 'tokens': give token_shape=(n_tokens, token_dim), "
                             "e.g. (256, 1664) for MindEye2's OpenCLIP bigG tokens")
        if "lowlevel" in heads and lowlevel_shape is None:
            lowlevel_shape = (4, 28, 28)
        if n_times is not None and (isinstance(n_times, bool) or not isinstance(n_times, (int, np.integer))
                                    or n_times < 1):
            raise ValueError(f"n_times must be a positive int, got {n_times!r}")
        if sequence:
            if n_times is None:
                raise ValueError(f"adapter={adapter!r} takes (batch, channels, time) input: give n_times, "
                                 "the number of time samples per trial")
            bad = {s: n for s, n in n_in.items() if n % int(n_times)}
            if bad:
                raise ValueError(f"n_inputs must be n_chans · n_times for M/EEG; {bad} is not divisible by "
                                 f"n_times={n_times}")
        embed_shape = self._check_embed_shape(embed_shape, int(embed_dim))
        time_resolved = sequence and embed_shape is not None and len(embed_shape) == 2
        if time_resolved and set(heads) != {"pooled"}:
            raise ValueError(f"heads {list(heads)}: a time-resolved model (embed_shape={embed_shape}) has only "
                             "the 'pooled' head (the flattened frames × dim output)")
        self.config = {"n_inputs": n_in, "embed_dim": int(embed_dim), "hidden_dim": int(hidden_dim),
                       "n_blocks": int(n_blocks), "dropout": float(dropout), "backbone": backbone,
                       "seed": seed, "adapter": adapter, "heads": list(heads),
                       "token_shape": None if token_shape is None else [int(v) for v in token_shape],
                       "lowlevel_shape": None if lowlevel_shape is None else [int(v) for v in lowlevel_shape],
                       "n_times": None if n_times is None else int(n_times),
                       "embed_shape": None if embed_shape is None else list(embed_shape),
                       "adapter_kwargs": _jsonable(dict(adapter_kwargs or {})),
                       "backbone_kwargs": _jsonable(dict(backbone_kwargs or {})),
                       "head_kwargs": _jsonable(dict(head_kwargs or {}))}
        # built on the meta device, then initialised once from the generator (no global RNG use)
        meta = torch.device("meta")
        a_kw, b_kw = dict(adapter_kwargs or {}), dict(backbone_kwargs or {})
        h_kw = {k: dict(v) for k, v in (head_kwargs or {}).items()}
        unknown = sorted(set(h_kw) - set(heads))
        if unknown:
            raise ValueError(f"head_kwargs names heads {unknown} that the model does not have "
                             f"({list(heads)})")
        n_chans = {s: n // int(n_times) for s, n in n_in.items()} if sequence else None
        if adapter == "linear":
            self.adapter = LinearAdapter(n_in, hidden_dim, device=meta, **a_kw)
        elif adapter == "pooled":
            self.adapter = PooledAdapter(n_in, hidden_dim, device=meta, **a_kw)
        elif adapter == "subject_layer":
            self.adapter = SubjectLayer(n_chans, device=meta, **a_kw)
        else:
            if "positions" not in a_kw:
                raise ValueError("adapter='spatial_attention' needs sensor positions: "
                                 "adapter_kwargs={'positions': {subject: array (n_chans, 2)}}")
            self.adapter = SpatialAttention(device=meta, **a_kw)
            sizes = self.adapter.sizes
            if set(sizes) != set(n_chans) or any(sizes[s] != n_chans[s] for s in n_chans):
                raise ValueError(f"positions give channel counts {sizes} but n_inputs / n_times give "
                                 f"{n_chans}")
        if backbone == "mlp":
            self.backbone = ResidualMLP(hidden_dim, n_blocks, float(dropout), device=meta, **b_kw)
        elif backbone == "mixer":
            self.backbone = MLPMixer(hidden_dim, n_blocks, float(dropout), device=meta, **b_kw)
        else:
            n_out = self.adapter.n_outputs if adapter == "subject_layer" else self.adapter.n_virtual
            b_kw.setdefault("dropout", float(dropout))
            if backbone == "atm" and isinstance(b_kw.get("pool"), (int, np.integer)) \
                    and not isinstance(b_kw["pool"], bool):
                b_kw["pool_size"] = int(b_kw.pop("pool"))  # ATM's ShallowNet pooling size, its old name
            if time_resolved:
                if "pool" in b_kw and b_kw["pool"] is not None:
                    raise ValueError(f"backbone_kwargs pool={b_kw['pool']!r}: the targets are time-resolved "
                                     f"(embed_shape={embed_shape}), so the backbone keeps its time axis")
                b_kw["pool"] = None
            if backbone == "dilated_conv":
                self.backbone = DilatedConvNet(n_out, hidden_dim, depth=n_blocks, n_times=int(n_times),
                                               device=meta, **b_kw)
            else:
                self.backbone = ChannelAttentionEncoder(n_out, int(n_times), hidden_dim, n_layers=n_blocks,
                                                        device=meta, **b_kw)
        self.heads = nn.ModuleDict()
        if time_resolved:
            self.heads["pooled"] = SequenceHead(hidden_dim, tuple(embed_shape), device=meta,
                                                **h_kw.get("pooled", {}))
        else:
            self.heads["pooled"] = PooledHead(hidden_dim, embed_dim, device=meta, **h_kw.get("pooled", {}))
        if "tokens" in heads:
            self.heads["tokens"] = TokenHead(hidden_dim, tuple(token_shape), device=meta,
                                             **h_kw.get("tokens", {}))
        if "lowlevel" in heads:
            self.heads["lowlevel"] = LowLevelHead(hidden_dim, tuple(lowlevel_shape), device=meta,
                                                  **h_kw.get("lowlevel", {}))
        self.to_empty(device="cpu")
        self.reset_parameters(None if seed is None else torch.Generator().manual_seed(int(seed)))
        self._register_load_state_dict_pre_hook(_legacy_keys_hook, with_module=True)

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
        return self.config["adapter"] in _SEQUENCE_ADAPTERS

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every weight (PyTorch defaults, identity subject layers) from ``generator``."""
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
        return DecoderOutput(
            embedding=self.heads["pooled"](h, generator), latent=latent,
            tokens=self.heads["tokens"](h, generator) if "tokens" in self.heads else None,
            lowlevel=self.heads["lowlevel"](h, generator) if "lowlevel" in self.heads else None)

    # -- inference on BrainTrials ------------------------------------------------------
    @verbose
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
        output : {"pooled", "tokens", "lowlevel", "all"}
            Which head's output to return; ``"all"`` returns a dict of every head's.
        batch_size : int
            Trials per forward pass.
        device : str | torch.device
            Where to run (the model is moved there).
        verbose : bool | str | int | None
            Log level for this call.

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
        subj_col = trials.events["subject"].to_numpy()
        for subject in trials.subjects:
            self._check_subject(subject)
        attr = {"pooled": "embedding", "tokens": "tokens", "lowlevel": "lowlevel"}
        out = {name: np.empty((len(trials), *self.heads[name].out_shape), dtype=np.float32) for name in names}
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
                        res = self(xb, subject)
                        for name in names:
                            out[name][rows[start:start + batch_size]] = \
                                getattr(res, attr[name]).float().cpu().numpy()
                    logger.debug("BrainDecoder.predict: subject %s, %d trials", subject, len(X))
        finally:
            self.train(was_training)
        return out if output == "all" else out[output]

    # -- persistence -------------------------------------------------------------------
    @verbose
    def save_pretrained(self, save_directory: str | Path, *,
                        verbose: bool | str | int | None = None) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (class, version, config) to a folder.

        Parameters
        ----------
        save_directory : str | Path
            Created if needed; files are replaced atomically.
        verbose : bool | str | int | None
            Log level for this call.

        Returns
        -------
        save_directory : Path
        """
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        return write_pretrained(save_directory, state, {"config": self.config}, class_name=type(self).__name__)

    @classmethod
    @verbose
    def from_pretrained(cls, save_directory: str | Path, *, device: str | torch.device = "cpu",
                        verbose: bool | str | int | None = None) -> BrainDecoder:
        """Rebuild a model saved by :meth:`save_pretrained` (safetensors, never pickle).

        Parameters
        ----------
        save_directory : str | Path
            Folder holding ``config.json`` and ``model.safetensors``.
        device : str | torch.device
            Where to load the weights.
        verbose : bool | str | int | None
            Log level for this call.

        Returns
        -------
        model : BrainDecoder
            In eval mode.
        """
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
        """
        key = self._check_subject(subject)
        prefix = {"linear": f"adapter.linears.{key}.", "pooled": f"adapter.embedders.{key}.",
                  "subject_layer": f"adapter.weights.{key}",
                  "spatial_attention": f"adapter.subject_layer.weights.{key}"}[self.config["adapter"]]
        exact = prefix.rstrip(".")
        return [n for n, _ in self.named_parameters() if n == exact or n.startswith(prefix)]

    def _subject_module(self, key: str) -> nn.Module:
        """The module holding only ``key``'s adapter weights (built on the CPU, not yet initialised)."""
        adapter, kind = self.adapter, self.config["adapter"]
        n = self.config["n_inputs"][key]
        if kind == "linear":
            return nn.Linear(n, adapter.out_dim)
        if kind == "pooled":
            from .adapters import _PooledEmbedder

            some = next(iter(adapter.embedders.values()))
            rank = some.lora.down.out_features if some.lora is not None else 0
            return _PooledEmbedder(adapter.pool_size, adapter.out_dim, rank, adapter.shared is None, None)
        layer = adapter if kind == "subject_layer" else adapter.subject_layer
        n_in = n // self.config["n_times"] if kind == "subject_layer" else layer.n_outputs
        return nn.Parameter(torch.empty(layer.n_outputs, n_in))

    def _install_subject(self, key: str, generator: torch.Generator | None) -> None:
        """Create ``key``'s adapter weights afresh (from ``generator``) and put them in the adapter."""
        from .backbones import init_parameters_

        kind = self.config["adapter"]
        if kind == "spatial_attention" and self.adapter.subject_layer is None:
            return  # no per-subject weights: positions alone define the subject
        module = self._subject_module(key)
        ref = next(self.parameters())
        if isinstance(module, nn.Parameter):
            layer = self.adapter if kind == "subject_layer" else self.adapter.subject_layer
            with torch.no_grad():
                if layer.init == "identity":
                    nn.init.eye_(module)
                else:
                    nn.init.normal_(module, 0.0, 1.0 / np.sqrt(module.shape[1]), generator=generator)
            layer.sizes[key] = module.shape[1]
            layer.weights[key] = nn.Parameter(module.detach().to(device=ref.device, dtype=ref.dtype))
            return
        init_parameters_(module, generator)  # a pooled embedder's bottleneck starts as the identity
        module.to(device=ref.device, dtype=ref.dtype)
        if kind == "linear":
            self.adapter.linears[key] = module
        else:
            self.adapter.embedders[key] = module

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
        kind = self.config["adapter"]
        if self.is_sequence and n_inputs % self.config["n_times"]:
            raise ValueError(f"n_inputs must be n_chans · n_times for M/EEG; {n_inputs} is not divisible "
                             f"by n_times={self.config['n_times']}")
        if kind == "spatial_attention":
            if positions is None:
                raise ValueError("adapter='spatial_attention' needs the new subject's sensor positions: "
                                 "add_subject(subject, n_inputs, positions=array (n_chans, 2))")
            n_chans = n_inputs // self.config["n_times"]
            probe = SpatialAttention({key: positions}, self.adapter.n_virtual, pos_dim=self.adapter.pos_dim,
                                     margin=self.adapter.margin, subject_layer=False,
                                     initial_linear=False, device="meta")
            if probe.sizes[key] != n_chans:
                raise ValueError(f"positions give {probe.sizes[key]} channels but n_inputs / n_times give "
                                 f"{n_chans}")
            self.adapter._positions[key] = probe._positions[key]
            self.adapter.sizes[key] = n_chans
            self.config["adapter_kwargs"].setdefault("positions", {})[key] = _jsonable(positions)
        elif positions is not None:
            raise ValueError(f"positions is only used by the 'spatial_attention' adapter, not {kind!r}")
        self.config["n_inputs"][key] = n_inputs
        if kind in ("linear", "pooled"):
            self.adapter.sizes[key] = n_inputs
        self._install_subject(key, None if seed is None else torch.Generator().manual_seed(int(seed)))
        logger.info("Added subject %s (%d inputs) to the %s adapter", key, n_inputs, kind)
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
        self._install_subject(key, None if seed is None else torch.Generator().manual_seed(int(seed)))
        return self
