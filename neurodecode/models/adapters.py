"""Subject adapters: map each subject's own input space into one shared space.

Every adapter holds one set of weights per subject (keyed by
``str(subject)``, so ``1`` and ``"1"`` are the same subject), accepts subjects
with different input sizes in one model, and is called as
``adapter(x, subject, generator=None)``:

===========================  ==================================  =============================
adapter                      input                               output
===========================  ==================================  =============================
:class:`LinearAdapter`       ``(batch, n_inputs[subject])``      ``(batch, hidden_dim)``
:class:`LinearNormAdapter`   ``(batch, n_inputs[subject])``      ``(batch, hidden_dim)``
:class:`PooledAdapter`       ``(batch, n_inputs[subject])``      ``(batch, hidden_dim)``
:class:`SubjectLayer`        ``(batch, n_chans[subject], time)`` ``(batch, n_outputs, time)``
:class:`SpatialAttention`    ``(batch, n_chans[subject], time)`` ``(batch, n_virtual, time)``
===========================  ==================================  =============================

:class:`SubjectBuilder` goes the other way (shared latent → a subject's
input), for MindBridge's cycle loss (:func:`neurodecode.models.losses.cycle_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import _activation, _check_int, _check_p, _dropout, _maybe_init, init_parameters_
from .registry import register_adapter

if TYPE_CHECKING:
    from .registry import DecoderSpec

__all__ = ["LinearAdapter", "LinearNormAdapter", "PooledAdapter", "SpatialAttention", "SubjectBuilder",
           "SubjectLayer", "SubjectToken"]


def _subject_sizes(name: str, sizes: Mapping[Any, Any]) -> dict[str, int]:
    if not isinstance(sizes, Mapping) or not sizes:
        raise ValueError(f"{name} must be a non-empty dict subject → int, got {sizes!r}")
    out = {}
    for subject, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name}[{subject!r}] must be a positive int, got {n!r}")
        out[str(subject)] = int(n)
    return out


class _SubjectModule(nn.Module):
    """Shared subject bookkeeping for adapters."""

    sizes: dict[str, int]

    @property
    def subjects(self) -> list[str]:
        """Subjects this module has weights for (as strings)."""
        return list(self.sizes)

    def _key(self, subject: Any) -> str:
        key = str(subject)
        if key not in self.sizes:
            raise ValueError(f"Subject {subject!r} is unknown to this {type(self).__name__}; it has weights "
                             f"for subjects {self.subjects}")
        return key

    def _reference(self) -> torch.Tensor:
        """A parameter whose device and dtype new subjects' weights take."""
        return next(self.parameters())


def _check_positions_unused(adapter: nn.Module, positions: Any) -> None:
    if positions is not None:
        raise ValueError(f"positions is only used by the 'spatial_attention' adapter, not "
                         f"{getattr(type(adapter), 'registered_name', type(adapter).__name__)!r}")


# -- fMRI adapters ------------------------------------------------------------------------------
@register_adapter("linear")
class LinearAdapter(_SubjectModule):
    """One linear map per subject (MindEye2's per-subject "ridge" layer).

    Parameters
    ----------
    n_inputs : dict
        Subject → number of input features (voxels).
    hidden_dim : int
        Shared latent width (MindEye2: 4096).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    ``(batch, n_inputs[subject]) → (batch, hidden_dim)``. ``adapter[subject]``
    is that subject's ``nn.Linear``.
    """

    output_kind = "vector"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> LinearAdapter:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``n_inputs[s] → hidden_dim`` per subject.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``n_inputs``, ``hidden_dim``, ``device``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``adapter_kwargs``).

        Returns
        -------
        adapter : LinearAdapter
            The adapter, built on ``spec.device``.
        """
        return cls(spec.n_inputs, spec.hidden_dim, device=spec.device, **kwargs)

    #: Name of the ModuleDict holding one module per subject (its state-dict prefix).
    _table = "linears"

    def __init__(self, n_inputs: Mapping[Any, int], hidden_dim: int, *, device: Any = None) -> None:
        super().__init__()
        self.sizes = _subject_sizes("n_inputs", n_inputs)
        self.out_dim = _check_int("hidden_dim", hidden_dim)
        self._build_table(device)

    def _build_table(self, device: Any) -> None:
        setattr(self, self._table, nn.ModuleDict({s: self._subject_module(n, device)
                                                  for s, n in self.sizes.items()}))
        _maybe_init(self, device)

    def _subject_module(self, n_inputs: int, device: Any) -> nn.Module:
        """One subject's module (here ``nn.Linear(n_inputs, hidden_dim)``)."""
        return nn.Linear(n_inputs, self.out_dim, device=device)

    def _apply_subject(self, module: nn.Module, x: torch.Tensor, generator: torch.Generator | None
                       ) -> torch.Tensor:
        return module(x)

    def __getitem__(self, subject: Any) -> nn.Module:
        return getattr(self, self._table)[self._key(subject)]

    @property
    def out_features(self) -> int:
        """Width of the latent passed to the backbone (``hidden_dim``)."""
        return self.out_dim

    def subject_prefix(self, key: str) -> str:
        """Prefix of the names (in this module) of the parameters only ``key`` uses.

        Parameters
        ----------
        key : str
            The subject, as a string.

        Returns
        -------
        prefix : str
            ``"linears.<key>."`` (``"layers.<key>."`` for ``linear_norm``).
        """
        return f"{self._table}.{key}."

    def install_subject(self, key: str, n_inputs: int, generator: torch.Generator | None = None, *,
                        positions: Any = None) -> None:
        """Give ``key`` a freshly initialised ``nn.Linear`` (new subject, or MindBridge's reset).

        Parameters
        ----------
        key : str
            The subject, as a string.
        n_inputs : int
            The subject's number of input features.
        generator : torch.Generator | None
            Source of the initial weights.
        positions : None
            Must be None (only the ``spatial_attention`` adapter takes sensor positions).
        """
        _check_positions_unused(self, positions)
        module = self._subject_module(int(n_inputs), None)
        init_parameters_(module, generator)
        ref = self._reference()
        self.sizes[key] = int(n_inputs)
        getattr(self, self._table)[key] = module.to(device=ref.device, dtype=ref.dtype)

    def forward(self, x: torch.Tensor, subject: Any, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Map one batch of a single subject to the shared latent.

        Parameters
        ----------
        x : Tensor, shape (batch, n_inputs[subject])
            The subject's input features.
        subject : int | str
            The subject all rows of ``x`` come from.
        generator : torch.Generator | None
            Source of the dropout mask in training mode (``linear_norm``); unused by ``linear``, which has no
            dropout.

        Returns
        -------
        latent : Tensor, shape (batch, hidden_dim)
            The subject's linear map of ``x`` (``linear_norm``: ``dropout(act(LayerNorm(Linear(x))))``).
        """
        key = self._key(subject)
        if x.ndim != 2 or x.shape[1] != self.sizes[key]:
            raise ValueError(f"Subject {subject!r} expects input of shape (batch, {self.sizes[key]}), got "
                             f"{tuple(x.shape)}")
        return self._apply_subject(getattr(self, self._table)[key], x, generator)


class _LowRankResidual(nn.Module):
    """``x + scale · up(ReLU(down(x)))`` with ``up`` zero-initialised (starts as the identity)."""

    def __init__(self, dim: int, rank: int, scale: float, device: Any) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, device=device)
        self.up = nn.Linear(rank, dim, device=device)
        self.scale = float(scale)

    def _init_own_parameters(self, generator: torch.Generator | None) -> None:
        init_parameters_(self.down, generator)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(F.relu(self.down(x)))


class _PooledEmbedder(nn.Module):
    def __init__(self, pool_size: int, hidden_dim: int, rank: int, own_linear: bool, device: Any) -> None:
        super().__init__()
        self.lora = _LowRankResidual(pool_size, rank, 1.0, device) if rank else None
        self.linear = nn.Linear(pool_size, hidden_dim, device=device) if own_linear else None
        self.norm = nn.LayerNorm(hidden_dim, device=device)


@register_adapter("pooled")
class PooledAdapter(_SubjectModule):
    """MindBridge's "embedder": pool every subject to one size, then a light per-subject map.

    Each subject's voxels are brought to ``pool_size`` features with
    ``F.adaptive_max_pool1d`` (so any number of voxels works), then go through
    a per-subject low-rank residual bottleneck (``x + up(ReLU(down(x)))``,
    rank ``rank``, ``up`` zero-initialised so it starts as the identity), a
    ``Linear(pool_size, hidden_dim)``, LayerNorm, GELU and dropout.

    Parameters
    ----------
    n_inputs : dict
        Subject → number of voxels (any sizes; inputs smaller than ``pool_size``
        are repeated by the pooling).
    hidden_dim : int
        Shared latent width (MindBridge: 2048).
    pool_size : int
        Common size after pooling (MindBridge: 8192).
    rank : int
        Bottleneck of the per-subject adapter (MindBridge: 128); 0 disables it.
    dropout : float
        Dropout after the GELU (MindBridge: 0.5).
    shared_linear : bool
        If True, the ``pool_size → hidden_dim`` linear layer is shared by all
        subjects, so a subject costs only its bottleneck and LayerNorm
        (MindBridge keeps one per subject: False).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    ``(batch, n_inputs[subject]) → (batch, hidden_dim)``. :meth:`pool` gives
    the pooled input, the target of MindBridge's reconstruction / cycle loss.
    """

    output_kind = "vector"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> PooledAdapter:
        """Built by :class:`~neurodecode.models.BrainDecoder`: pooled ``n_inputs[s] → hidden_dim``.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``n_inputs``, ``hidden_dim``, ``device``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``adapter_kwargs``).

        Returns
        -------
        adapter : PooledAdapter
            The adapter, built on ``spec.device``.
        """
        return cls(spec.n_inputs, spec.hidden_dim, device=spec.device, **kwargs)

    def __init__(self, n_inputs: Mapping[Any, int], hidden_dim: int, *, pool_size: int = 8192,
                 rank: int = 128, dropout: float = 0.5, shared_linear: bool = False,
                 device: Any = None) -> None:
        super().__init__()
        self.sizes = _subject_sizes("n_inputs", n_inputs)
        self.out_dim = _check_int("hidden_dim", hidden_dim)
        self.pool_size = _check_int("pool_size", pool_size)
        rank = _check_int("rank", rank, 0)
        self.p = _check_p("dropout", dropout)
        self.shared = nn.Linear(self.pool_size, self.out_dim, device=device) if shared_linear else None
        self.embedders = nn.ModuleDict({s: _PooledEmbedder(self.pool_size, self.out_dim, rank,
                                                           self.shared is None, device) for s in self.sizes})
        _maybe_init(self, device)

    def __getitem__(self, subject: Any) -> nn.Module:
        return self.embedders[self._key(subject)]

    @property
    def out_features(self) -> int:
        """Width of the latent passed to the backbone (``hidden_dim``)."""
        return self.out_dim

    def subject_prefix(self, key: str) -> str:
        """Prefix of the names of ``key``'s own parameters (bottleneck, linear unless shared, LayerNorm).

        Parameters
        ----------
        key : str
            The subject, as a string.

        Returns
        -------
        prefix : str
            ``"embedders.<key>."``.
        """
        return f"embedders.{key}."

    def install_subject(self, key: str, n_inputs: int, generator: torch.Generator | None = None, *,
                        positions: Any = None) -> None:
        """Give ``key`` a freshly initialised embedder (its bottleneck starts as the identity).

        Parameters
        ----------
        key : str
            The subject, as a string.
        n_inputs : int
            The subject's number of voxels.
        generator : torch.Generator | None
            Source of the initial weights.
        positions : None
            Must be None (only the ``spatial_attention`` adapter takes sensor positions).
        """
        _check_positions_unused(self, positions)
        some = next(iter(self.embedders.values()))
        rank = some.lora.down.out_features if some.lora is not None else 0
        module = _PooledEmbedder(self.pool_size, self.out_dim, rank, self.shared is None, None)
        init_parameters_(module, generator)
        ref = self._reference()
        self.sizes[key] = int(n_inputs)
        self.embedders[key] = module.to(device=ref.device, dtype=ref.dtype)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n) → (batch, pool_size)`` by adaptive max pooling.

        Parameters
        ----------
        x : Tensor, shape (batch, n)
            One subject's input.

        Returns
        -------
        pooled : Tensor, shape (batch, pool_size)
            The pooled input.
        """
        return F.adaptive_max_pool1d(x.unsqueeze(1), self.pool_size).squeeze(1)

    def forward(self, x: torch.Tensor, subject: Any, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Pool one batch of a single subject and map it to the shared latent.

        Parameters
        ----------
        x : Tensor, shape (batch, n_inputs[subject])
            The subject's voxels.
        subject : int | str
            The subject all rows of ``x`` come from.
        generator : torch.Generator | None
            Source of the dropout mask in training mode (for reproducible training).

        Returns
        -------
        latent : Tensor, shape (batch, hidden_dim)
            Pooled, bottleneck, linear, LayerNorm, GELU and dropout.
        """
        key = self._key(subject)
        if x.ndim != 2 or x.shape[1] != self.sizes[key]:
            raise ValueError(f"Subject {subject!r} expects input of shape (batch, {self.sizes[key]}), got "
                             f"{tuple(x.shape)}")
        emb = self.embedders[key]
        h = self.pool(x)
        if emb.lora is not None:
            h = emb.lora(h)
        h = F.gelu(emb.norm((emb.linear or self.shared)(h)))
        return _dropout(h, self.p, self.training, generator)


class SubjectBuilder(_SubjectModule):
    """MindBridge's "builder": shared latent → one subject's (pooled) input, for the cycle loss.

    ``Linear(hidden_dim, n_outputs[subject])`` → LayerNorm → GELU → optional
    low-rank residual (rank ``rank``).

    Parameters
    ----------
    n_outputs : dict
        Subject → size of the reconstructed input (``pool_size`` for a
        :class:`PooledAdapter`, the voxel count for a :class:`LinearAdapter`).
    hidden_dim : int
        Latent width.
    rank : int
        Bottleneck of the low-rank residual (MindBridge: 128); 0 disables it.
    device : torch.device | str | None
        ``"meta"`` to build without allocating.
    """

    def __init__(self, n_outputs: Mapping[Any, int], hidden_dim: int, *, rank: int = 0,
                 device: Any = None) -> None:
        super().__init__()
        self.sizes = _subject_sizes("n_outputs", n_outputs)
        hidden_dim = _check_int("hidden_dim", hidden_dim)
        rank = _check_int("rank", rank, 0)
        self.linears = nn.ModuleDict({s: nn.Linear(hidden_dim, n, device=device)
                                      for s, n in self.sizes.items()})
        self.norms = nn.ModuleDict({s: nn.LayerNorm(n, device=device) for s, n in self.sizes.items()})
        self.loras = nn.ModuleDict({s: _LowRankResidual(n, rank, 1.0, device)
                                    for s, n in self.sizes.items()}) if rank else None
        _maybe_init(self, device)

    def forward(self, z: torch.Tensor, subject: Any, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Rebuild one subject's (pooled) input from the shared latent.

        Parameters
        ----------
        z : Tensor, shape (batch, hidden_dim)
            Shared latents.
        subject : int | str
            The subject whose input to rebuild.
        generator : torch.Generator | None
            Unused (the builder has no dropout); accepted for a common signature.

        Returns
        -------
        rebuilt : Tensor, shape (batch, n_outputs[subject])
            Linear, LayerNorm, GELU and the optional low-rank residual.
        """
        key = self._key(subject)
        h = F.gelu(self.norms[key](self.linears[key](z)))
        return self.loras[key](h) if self.loras is not None else h


# -- M/EEG adapters ------------------------------------------------------------------------------
@register_adapter("subject_layer")
class SubjectLayer(_SubjectModule):
    """brainmagick's subject layer: one 1×1 channel-mixing matrix per subject.

    ``y[b, o, t] = Σ_c W_subject[o, c] · x[b, c, t]`` (no bias). Subjects may
    have different channel counts; all map to ``n_outputs`` channels.

    Parameters
    ----------
    n_chans : dict
        Subject → number of input channels.
    n_outputs : int | None
        Output channels (default: the largest channel count).
    init : {"identity", "random"}
        ``"identity"``: ``W = I`` (rectangular identity when the sizes
        differ), so the layer starts as a pass-through. ``"random"``:
        ``N(0, 1) / sqrt(n_chans)``, brainmagick's ``SubjectLayers`` default
        (its ``init_id=True`` variant is the identity, also scaled).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    ``(batch, n_chans[subject], n_times) → (batch, n_outputs, n_times)``.
    """

    output_kind = "sequence"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> SubjectLayer:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``n_chans[s] → n_outputs`` channels.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``n_chans`` from ``n_inputs`` and ``n_times``, ``device``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``adapter_kwargs``).

        Returns
        -------
        adapter : SubjectLayer
            The adapter, built on ``spec.device``.
        """
        return cls(spec.n_chans, device=spec.device, **kwargs)

    def __init__(self, n_chans: Mapping[Any, int], n_outputs: int | None = None, *, init: str = "identity",
                 device: Any = None) -> None:
        super().__init__()
        self.sizes = _subject_sizes("n_chans", n_chans)
        self.n_outputs = max(self.sizes.values()) if n_outputs is None else _check_int("n_outputs", n_outputs)
        if init not in ("identity", "random"):
            raise ValueError("Invalid value for the 'init' parameter. Allowed values are 'identity', "
                             f"'random', but got {init!r} instead.")
        self.init = init
        self.weights = nn.ParameterDict({s: nn.Parameter(torch.empty(self.n_outputs, n, device=device))
                                         for s, n in self.sizes.items()})
        _maybe_init(self, device)

    def _init_own_parameters(self, generator: torch.Generator | None) -> None:
        for s, w in self.weights.items():
            if self.init == "identity":
                nn.init.eye_(w)
            else:
                nn.init.normal_(w, 0.0, 1.0 / math.sqrt(self.sizes[s]), generator=generator)

    def __getitem__(self, subject: Any) -> nn.Parameter:
        return self.weights[self._key(subject)]

    @property
    def out_features(self) -> int:
        """Channels passed to the backbone (``n_outputs``)."""
        return self.n_outputs

    def subject_prefix(self, key: str) -> str:
        """Name of ``key``'s matrix (its only own parameter).

        Parameters
        ----------
        key : str
            The subject, as a string.

        Returns
        -------
        prefix : str
            ``"weights.<key>"``.
        """
        return f"weights.{key}"

    def install_subject(self, key: str, n_chans: int, generator: torch.Generator | None = None, *,
                        positions: Any = None) -> None:
        """Give ``key`` a fresh ``(n_outputs, n_chans)`` matrix (identity, or ``N(0, 1/n_chans)``).

        Parameters
        ----------
        key : str
            The subject, as a string.
        n_chans : int
            The subject's number of input channels.
        generator : torch.Generator | None
            Source of the random initial weights (``init="random"``).
        positions : None
            Must be None (only the ``spatial_attention`` adapter takes sensor positions).
        """
        _check_positions_unused(self, positions)
        weight = torch.empty(self.n_outputs, int(n_chans))
        with torch.no_grad():
            if self.init == "identity":
                nn.init.eye_(weight)
            else:
                nn.init.normal_(weight, 0.0, 1.0 / np.sqrt(weight.shape[1]), generator=generator)
        ref = self._reference()
        self.sizes[key] = int(n_chans)
        self.weights[key] = nn.Parameter(weight.to(device=ref.device, dtype=ref.dtype))

    def forward(self, x: torch.Tensor, subject: Any, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Mix the channels of one batch of a single subject.

        Parameters
        ----------
        x : Tensor, shape (batch, n_chans[subject], n_times)
            The subject's recordings.
        subject : int | str
            The subject all rows of ``x`` come from.
        generator : torch.Generator | None
            Unused (the layer has no dropout); accepted for a common signature.

        Returns
        -------
        mixed : Tensor, shape (batch, n_outputs, n_times)
            ``W_subject @ x`` at every time sample.
        """
        key = self._key(subject)
        if x.ndim != 3 or x.shape[1] != self.sizes[key]:
            raise ValueError(f"Subject {subject!r} expects input of shape (batch, {self.sizes[key]}, "
                             f"n_times), got {tuple(x.shape)}")
        return torch.einsum("oc,bct->bot", self.weights[key], x)


def _fourier_embedding(positions: torch.Tensor, dim: int, margin: float) -> torch.Tensor:
    """brainmagick's ``FourierEmb``: cos/sin of ``n_freqs²`` 2-D frequencies, ``dim = 2·n_freqs²``."""
    n_freqs = math.isqrt(dim // 2)
    freqs = torch.arange(n_freqs, dtype=positions.dtype, device=positions.device)
    width = 1.0 + 2.0 * margin
    p = positions + margin
    # loc[c, i, j] = 2π (i·x + j·y) / width
    loc = 2 * math.pi / width * (p[:, 0, None, None] * freqs[:, None] + p[:, 1, None, None] * freqs[None, :])
    loc = loc.reshape(len(positions), -1)
    return torch.cat([torch.cos(loc), torch.sin(loc)], dim=-1)


@register_adapter("spatial_attention")
class SpatialAttention(_SubjectModule):
    """brainmagick's spatial attention (``ChannelMerger``) over 2-D sensor positions.

    Each sensor's 2-D position (normalised per subject to ``[0, 1]``) gets a
    Fourier embedding of size ``pos_dim``; learned queries, one per virtual
    channel, score every sensor, and a softmax over sensors gives the weights
    that merge a subject's sensors into ``n_virtual`` virtual channels. Because
    the weights are a function of positions, subjects with different sensor
    sets share the same parameters. Then, as in SimpleConv, a shared 1×1
    convolution (``initial_linear``) and a per-subject :class:`SubjectLayer`.

    Parameters
    ----------
    positions : dict
        Subject → sensor positions, array-like of shape ``(n_chans, 2)``
        (e.g. an MNE layout's x, y). Rows with NaN mark sensors to ignore.
    n_virtual : int
        Virtual channels (brainmagick: 270).
    pos_dim : int
        Fourier embedding size, ``2 · k²`` for an integer ``k`` (brainmagick: 2048).
    dropout : float
        Spatial sensor dropout radius (brainmagick: 0.2): in training, every
        sensor within this distance of a random point of the unit square is
        ignored for the batch. 0 disables it.
    margin : float
        Margin of the Fourier embedding (brainmagick: 0.2).
    initial_linear : bool
        Apply a shared 1×1 convolution ``n_virtual → n_virtual`` after merging
        (brainmagick's ``initial_linear: 270``).
    subject_layer : bool
        Apply a per-subject :class:`SubjectLayer` (identity-initialised) after that.
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    ``(batch, n_chans[subject], n_times) → (batch, n_virtual, n_times)``.
    """

    output_kind = "sequence"
    #: The decoder passes each new subject's sensor positions (``add_subject(..., positions=)``).
    uses_positions = True

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> SpatialAttention:
        """Built by :class:`~neurodecode.models.BrainDecoder` from ``adapter_kwargs["positions"]``.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``n_chans`` is checked against the positions).
        **kwargs
            Keyword arguments of the class (the decoder's ``adapter_kwargs``); ``positions``
            is required.

        Returns
        -------
        adapter : SpatialAttention
            The adapter, built on ``spec.device``.
        """
        if "positions" not in kwargs:
            raise ValueError("adapter='spatial_attention' needs sensor positions: "
                             "adapter_kwargs={'positions': {subject: array (n_chans, 2)}}")
        adapter = cls(device=spec.device, **kwargs)
        n_chans = spec.n_chans
        if set(adapter.sizes) != set(n_chans) or any(adapter.sizes[s] != n_chans[s] for s in n_chans):
            raise ValueError(f"positions give channel counts {adapter.sizes} but n_inputs / n_times give "
                             f"{n_chans}")
        return adapter

    def __init__(self, positions: Mapping[Any, Any], n_virtual: int = 270, *, pos_dim: int = 2048,
                 dropout: float = 0.0, margin: float = 0.2, initial_linear: bool = True,
                 subject_layer: bool = True, device: Any = None) -> None:
        super().__init__()
        if not isinstance(positions, Mapping) or not positions:
            raise ValueError("positions must be a non-empty dict subject → array (n_chans, 2), "
                             f"got {positions!r}")
        self.n_virtual = _check_int("n_virtual", n_virtual)
        pos_dim = _check_int("pos_dim", pos_dim)
        if pos_dim % 2 or math.isqrt(pos_dim // 2) ** 2 != pos_dim // 2:
            raise ValueError(f"pos_dim must be 2·k² for an integer k (e.g. 32, 512, 2048), got {pos_dim}")
        self.pos_dim = pos_dim
        self.radius = _check_p("dropout", dropout)
        self.margin = float(margin)
        self._positions: dict[str, torch.Tensor] = {}
        for subject, pos in positions.items():
            arr = np.asarray(pos, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
                raise ValueError(f"positions[{subject!r}] must have shape (n_chans, 2), got {arr.shape}")
            valid = np.isfinite(arr).all(1)
            if not valid.any():
                raise ValueError(f"positions[{subject!r}] has no finite position")
            lo, hi = arr[valid].min(0), arr[valid].max(0)
            arr = (arr - lo) / np.where(hi > lo, hi - lo, 1.0)
            self._positions[str(subject)] = torch.as_tensor(arr, dtype=torch.float32)
        self.sizes = {s: len(p) for s, p in self._positions.items()}
        self.queries = nn.Parameter(torch.empty(self.n_virtual, pos_dim, device=device))
        self.initial_linear = nn.Conv1d(self.n_virtual, self.n_virtual, 1, device=device) \
            if initial_linear else None
        self.subject_layer = SubjectLayer({s: self.n_virtual for s in self.sizes}, self.n_virtual,
                                          device=device) if subject_layer else None
        _maybe_init(self, device)

    def _init_own_parameters(self, generator: torch.Generator | None) -> None:
        # brainmagick: randn(chout, pos_dim) / sqrt(pos_dim)
        nn.init.normal_(self.queries, 0.0, 1.0 / math.sqrt(self.pos_dim), generator=generator)
        if self.initial_linear is not None:
            init_parameters_(self.initial_linear, generator)
        if self.subject_layer is not None:
            init_parameters_(self.subject_layer, generator)

    def positions(self, subject: Any) -> torch.Tensor:
        """Normalised sensor positions of ``subject``, shape (n_chans, 2) (NaN = ignored sensor).

        Parameters
        ----------
        subject : int | str
            A subject the adapter knows.

        Returns
        -------
        positions : Tensor, shape (n_chans, 2)
            A copy of the positions, scaled to ``[0, 1]`` per axis.
        """
        return self._positions[self._key(subject)].clone()

    @property
    def out_features(self) -> int:
        """Channels passed to the backbone (``n_virtual``)."""
        return self.n_virtual

    def subject_prefix(self, key: str) -> str:
        """Name of ``key``'s subject-layer matrix (the queries and the 1×1 convolution are shared).

        Parameters
        ----------
        key : str
            The subject, as a string.

        Returns
        -------
        prefix : str
            ``"subject_layer.weights.<key>"``.
        """
        return f"subject_layer.weights.{key}"

    def install_subject(self, key: str, n_chans: int, generator: torch.Generator | None = None, *,
                        positions: Any = None) -> None:
        """Add ``key``'s sensor ``positions`` (a new subject) and give it a fresh subject-layer matrix.

        Parameters
        ----------
        key : str
            The subject, as a string.
        n_chans : int
            The subject's number of channels (must match ``positions``).
        generator : torch.Generator | None
            Source of the initial subject-layer weights.
        positions : array-like, shape (n_chans, 2) | None
            The subject's sensor positions; required for a new subject, None keeps
            those of a known one.
        """
        if positions is not None:
            probe = SpatialAttention({key: positions}, self.n_virtual, pos_dim=self.pos_dim, margin=self.margin,
                                     subject_layer=False, initial_linear=False, device="meta")
            if probe.sizes[key] != n_chans:
                raise ValueError(f"positions give {probe.sizes[key]} channels but n_inputs / n_times give "
                                 f"{n_chans}")
            self._positions[key] = probe._positions[key]
            self.sizes[key] = int(n_chans)
        elif key not in self.sizes:
            raise ValueError("adapter='spatial_attention' needs the new subject's sensor positions: "
                             "add_subject(subject, n_inputs, positions=array (n_chans, 2))")
        if self.subject_layer is not None:  # else no per-subject weights: positions alone define the subject
            self.subject_layer.install_subject(key, self.n_virtual, generator)

    def attention_weights(self, subject: Any, generator: torch.Generator | None = None,
                          device: Any = None) -> torch.Tensor:
        """Softmax merging weights, shape (n_virtual, n_chans); sensor dropout applies in training.

        Parameters
        ----------
        subject : int | str
            A subject the adapter knows.
        generator : torch.Generator | None
            Source of the sensor-dropout centre (in training with ``dropout > 0``).
        device : torch.device | str | None
            Where to compute (default: the device of the queries).

        Returns
        -------
        weights : Tensor, shape (n_virtual, n_chans)
            Each virtual channel's weights over the sensors (0 on ignored or dropped sensors).
        """
        pos = self._positions[self._key(subject)].to(device if device is not None else self.queries.device)
        invalid = torch.isnan(pos).any(1)
        emb = _fourier_embedding(torch.nan_to_num(pos, nan=-0.1), self.pos_dim, self.margin)
        scores = self.queries @ emb.T                                       # (n_virtual, n_chans)
        banned = invalid
        if self.training and self.radius > 0:
            center = torch.rand(2, generator=generator, device=generator.device if generator else "cpu")
            drop = (torch.nan_to_num(pos, nan=-10.0) - center.to(pos.device)).norm(dim=-1) <= self.radius
            if not bool((banned | drop).all()):
                banned = banned | drop
        scores = scores.masked_fill(banned[None, :], float("-inf"))
        return scores.softmax(-1)

    def forward(self, x: torch.Tensor, subject: Any, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Merge the sensors of one batch of a single subject into virtual channels.

        Parameters
        ----------
        x : Tensor, shape (batch, n_chans[subject], n_times)
            The subject's recordings.
        subject : int | str
            The subject all rows of ``x`` come from.
        generator : torch.Generator | None
            Source of the sensor-dropout centre in training mode (for reproducible training).

        Returns
        -------
        merged : Tensor, shape (batch, n_virtual, n_times)
            The attention-merged channels, after the optional 1×1 convolution and subject layer.
        """
        key = self._key(subject)
        if x.ndim != 3 or x.shape[1] != self.sizes[key]:
            raise ValueError(f"Subject {subject!r} expects input of shape (batch, {self.sizes[key]}, "
                             f"n_times), got {tuple(x.shape)}")
        w = self.attention_weights(key, generator, device=x.device).to(x.dtype)
        h = torch.einsum("oc,bct->bot", w, x)
        if self.initial_linear is not None:
            h = self.initial_linear(h)
        if self.subject_layer is not None:
            h = self.subject_layer(h, key)
        return h


class _TokenEntry(nn.Module):
    """One subject's learned token and, optionally, its channel-mixing matrix."""

    def __init__(self, n_chans: int, n_outputs: int | None, width: int, device: Any) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.empty(width, device=device))
        self.mix = nn.Parameter(torch.empty(n_outputs, n_chans, device=device)) if n_outputs else None


@register_adapter("subject_token")
class SubjectToken(_SubjectModule):
    """ATM-S's subject token: embed every channel's time course, then prepend a learned per-subject token.

    ``(batch, n_chans, n_times)`` → (optional per-subject channel mixing to
    ``n_outputs`` channels, identity-initialised) → ``Linear(n_times → n_times)``
    on each channel's time course, shared by all subjects (iTransformer's
    "inverted" value embedding, ATM's ``value_embedding``; ATM's ``d_model`` is
    its 250 samples) → ``concat([token_subject, …])`` along the channel axis →
    dropout. The output has one more "channel" than the input, the subject
    token first, and is meant for ``ChannelAttentionEncoder(embed=False)``.

    Parameters
    ----------
    n_chans : dict
        Subject → number of input channels.
    n_times : int
        Time samples per trial (= the token width).
    subject_layer : bool
        Mix each subject's channels into ``n_outputs`` channels first (needed when
        subjects have different channel counts). ATM-S has none: False, and every
        subject must then have the same channel count.
    n_outputs : int | None
        Channels after mixing (default: the largest channel count).
    dropout : float
        Dropout on the embedded tokens (ATM: 0.25).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    ``(batch, n_chans[subject], n_times) → (batch, n_outputs + 1, n_times)``.
    ATM indexes its token table by the integer subject id (1-based, ``sub-NN``)
    and gives every id beyond the table its ``shared_embedding``;
    :func:`neurodecode.models.from_published` copies each subject's row into
    ``entries.<subject>.token``.
    """

    output_kind = "sequence"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> SubjectToken:
        """Built by :class:`~neurodecode.models.BrainDecoder` from ``n_chans`` and ``n_times``.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``n_chans``, ``n_times``, ``device``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``adapter_kwargs``).

        Returns
        -------
        adapter : SubjectToken
            The adapter, built on ``spec.device``.
        """
        return cls(spec.n_chans, int(spec.n_times), device=spec.device, **kwargs)

    def __init__(self, n_chans: Mapping[Any, int], n_times: int, *, subject_layer: bool = True,
                 n_outputs: int | None = None, dropout: float = 0.0, device: Any = None) -> None:
        super().__init__()
        self.sizes = _subject_sizes("n_chans", n_chans)
        self.n_times = _check_int("n_times", n_times)
        self.p = _check_p("dropout", dropout)
        if subject_layer:
            self.n_outputs = (max(self.sizes.values()) if n_outputs is None
                              else _check_int("n_outputs", n_outputs))
        else:
            if n_outputs is not None or len(set(self.sizes.values())) != 1:
                raise ValueError(f"subject_layer=False passes the channels through: every subject needs the "
                                 f"same channel count and n_outputs must be None; got {self.sizes}, "
                                 f"n_outputs={n_outputs!r}")
            self.n_outputs = next(iter(self.sizes.values()))
        self.mixing = bool(subject_layer)
        self.embed = nn.Linear(self.n_times, self.n_times, device=device)
        self.entries = nn.ModuleDict({s: _TokenEntry(n, self.n_outputs if self.mixing else None, self.n_times,
                                                       device) for s, n in self.sizes.items()})
        _maybe_init(self, device)

    def _init_entry(self, entry: _TokenEntry, generator: torch.Generator | None) -> None:
        nn.init.normal_(entry.token, 0.0, 1.0, generator=generator)  # ATM: nn.Embedding's N(0, 1)
        if entry.mix is not None:
            nn.init.eye_(entry.mix)

    def _init_own_parameters(self, generator: torch.Generator | None) -> None:
        init_parameters_(self.embed, generator)
        for entry in self.entries.values():
            self._init_entry(entry, generator)

    @property
    def out_features(self) -> int:
        """Tokens passed to the backbone (``n_outputs + 1``: the subject token, then the channels)."""
        return self.n_outputs + 1

    def subject_prefix(self, key: str) -> str:
        """Prefix of the names of ``key``'s own parameters (its token and mixing matrix).

        Parameters
        ----------
        key : str
            The subject, as a string.

        Returns
        -------
        prefix : str
            ``"entries.<key>."``.
        """
        return f"entries.{key}."

    def install_subject(self, key: str, n_chans: int, generator: torch.Generator | None = None, *,
                        positions: Any = None) -> None:
        """Give ``key`` a fresh token (``N(0, 1)``) and, with a subject layer, an identity mixing matrix.

        Parameters
        ----------
        key : str
            The subject, as a string.
        n_chans : int
            The subject's number of input channels.
        generator : torch.Generator | None
            Source of the random token.
        positions : None
            Must be None (only the ``spatial_attention`` adapter takes sensor positions).
        """
        _check_positions_unused(self, positions)
        if not self.mixing and int(n_chans) != self.n_outputs:
            raise ValueError(f"subject_layer=False: a new subject needs {self.n_outputs} channels, got "
                             f"{n_chans}")
        entry = _TokenEntry(int(n_chans), self.n_outputs if self.mixing else None, self.n_times, None)
        with torch.no_grad():
            self._init_entry(entry, generator)
        ref = self._reference()
        self.sizes[key] = int(n_chans)
        self.entries[key] = entry.to(device=ref.device, dtype=ref.dtype)

    def forward(self, x: torch.Tensor, subject: Any, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Embed one batch of a single subject and prepend its token.

        Parameters
        ----------
        x : Tensor, shape (batch, n_chans[subject], n_times)
            The subject's recordings.
        subject : int | str
            The subject all rows of ``x`` come from.
        generator : torch.Generator | None
            Source of the dropout mask in training mode (for reproducible training).

        Returns
        -------
        tokens : Tensor, shape (batch, n_outputs + 1, n_times)
            The subject token followed by the embedded channels.
        """
        key = self._key(subject)
        if x.ndim != 3 or x.shape[1:] != (self.sizes[key], self.n_times):
            raise ValueError(f"Subject {subject!r} expects input of shape (batch, {self.sizes[key]}, "
                             f"{self.n_times}), got {tuple(x.shape)}")
        entry = self.entries[key]
        if entry.mix is not None:
            x = torch.einsum("oc,bct->bot", entry.mix, x)
        h = self.embed(x)
        token = entry.token.to(h.dtype).expand(len(h), 1, -1)
        return _dropout(torch.cat([token, h], dim=1), self.p, self.training, generator)


# -- MindEye1's lin0 -----------------------------------------------------------------------------
class _LinearNormAct(nn.Module):
    """One subject's ``Linear → LayerNorm`` (the activation and dropout follow in the adapter)."""

    def __init__(self, n_inputs: int, dim: int, bias: bool, device: Any) -> None:
        super().__init__()
        self.linear = nn.Linear(n_inputs, dim, bias=bias, device=device)
        self.norm = nn.LayerNorm(dim, device=device)


@register_adapter("linear_norm")
class LinearNormAdapter(LinearAdapter):
    """Per subject ``Linear → LayerNorm → activation → dropout`` (MindEye1's ``lin0``).

    MindEye1's ``BrainNetwork.lin0`` is ``Linear(n_voxels, 4096) → LayerNorm → GELU → Dropout(0.5)``; its
    low-level ``Voxel2StableDiffusionModel.lin0`` is the same with ``bias=False`` and SiLU. One such stack
    per subject.

    Parameters
    ----------
    n_inputs : dict
        Subject → number of input features (voxels).
    hidden_dim : int
        Shared latent width (MindEye1: 4096).
    bias : bool
        Bias of the linear layer (MindEye1: True; its autoencoder: False).
    act : {"gelu", "silu"}
        Activation after the LayerNorm (MindEye1: ``"gelu"``; its autoencoder: ``"silu"``).
    dropout : float
        Dropout after the activation, in [0, 1) (MindEye1: 0.5).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    ``(batch, n_inputs[subject]) → (batch, hidden_dim)``. ``layers.<subject>.{linear, norm}`` hold MindEye1's
    ``lin0.0`` and ``lin0.1``.
    """

    _table = "layers"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> LinearNormAdapter:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``n_inputs[s] → hidden_dim`` per subject.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``n_inputs``, ``hidden_dim``, ``device``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``adapter_kwargs``).

        Returns
        -------
        adapter : LinearNormAdapter
            The adapter, built on ``spec.device``.
        """
        return cls(spec.n_inputs, spec.hidden_dim, device=spec.device, **kwargs)

    def __init__(self, n_inputs: Mapping[Any, int], hidden_dim: int, *, bias: bool = True,
                 act: str = "gelu", dropout: float = 0.5, device: Any = None) -> None:
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        _SubjectModule.__init__(self)
        self.sizes = _subject_sizes("n_inputs", n_inputs)
        self.out_dim = _check_int("hidden_dim", hidden_dim)
        self.bias, self.act, self.act_name = bias, _activation(act), act
        self.p = _check_p("dropout", dropout)
        self._build_table(device)

    def _subject_module(self, n_inputs: int, device: Any) -> nn.Module:
        """One subject's ``Linear → LayerNorm`` (activation and dropout follow in :meth:`forward`)."""
        return _LinearNormAct(n_inputs, self.out_dim, self.bias, device)

    def _apply_subject(self, module: nn.Module, x: torch.Tensor, generator: torch.Generator | None
                       ) -> torch.Tensor:
        """``dropout(act(LayerNorm(Linear(x))))``."""
        return _dropout(self.act(module.norm(module.linear(x))), self.p, self.training, generator)
