"""Shared backbones: the part of a :class:`BrainDecoder` common to every subject.

Two families, told apart by ``input_kind``:

- ``"vector"`` backbones (:class:`ResidualMLP`, :class:`MLPMixer`) take the
  adapter's latent, shape ``(batch, dim)``, and return ``(batch, dim)``.
- ``"sequence"`` backbones (:class:`DilatedConvNet`,
  :class:`ChannelAttentionEncoder`) take M/EEG-like input, shape
  ``(batch, n_chans, n_times)``, and return ``(batch, out_dim)`` after pooling
  over time, or — built with ``pool=None`` — a sequence ``(batch, out_dim,
  out_times)`` for time-resolved targets (:class:`~neurodecode.models.heads.SequenceHead`
  maps it onto the target's frames; :class:`~neurodecode.models.BrainDecoder`
  chooses this from the target's shape).

Every module can be built on the ``meta`` device and initialised afterwards
with :func:`init_parameters_` from a ``torch.Generator`` (no global RNG);
dropout masks come from the ``generator`` given to ``forward``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_backbone

if TYPE_CHECKING:
    from .registry import DecoderSpec

__all__ = ["ChannelAttentionEncoder", "DilatedConvNet", "MLPMixer", "MindEye2Mixer", "PostNormResidualMLP",
           "ResidualMLP", "init_parameters_"]


# -- shared helpers ------------------------------------------------------------------------
def _dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout drawing its mask from ``generator`` (reproducible without global seeding)."""
    if not training or p == 0.0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_p(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


#: Activations a part can be built with, by name (MindEye1: GELU; its low-level autoencoder: SiLU).
_ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu}


def _activation(name: Any) -> Any:
    """The activation function called ``name`` (``"gelu"`` or ``"silu"``)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"Invalid value for the 'act' parameter. Allowed values are "
                         f"{', '.join(repr(k) for k in _ACTIVATIONS)}, but got {name!r} instead.")
    return _ACTIVATIONS[name]


_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def init_parameters_(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """(Re-)initialise every parameter and norm buffer of ``module`` in place.

    Linear and convolution layers get PyTorch's default (Kaiming-uniform
    weights, uniform biases), norms get ones/zeros and fresh running
    statistics. A module that defines ``_init_own_parameters(generator)``
    initialises its whole subtree itself (and may call this function on its
    children). Draws come only from ``generator`` (or the global RNG when it is
    ``None``), in a fixed module order, so a seeded generator gives identical
    weights. Raises ``RuntimeError`` if some parameter was left untouched.

    Parameters
    ----------
    module : nn.Module
        Typically built on the ``meta`` device and moved with ``to_empty``.
    generator : torch.Generator | None
        Source of random draws.

    Returns
    -------
    module : nn.Module
    """
    done: set[int] = set()
    _init_tree(module, generator, done)
    missing = [n for n, p in module.named_parameters() if id(p) not in done]
    if missing:
        raise RuntimeError(f"init_parameters_ does not know how to initialise {missing}; give the owning "
                           "module an _init_own_parameters(generator) method")
    return module


def _init_tree(m: nn.Module, generator: torch.Generator | None, done: set[int]) -> None:
    hook = getattr(m, "_init_own_parameters", None)
    if hook is not None:
        with torch.no_grad():
            hook(generator)
        for sub in m.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.reset_running_stats()
        done.update(id(p) for p in m.parameters())
        return
    handled = isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, *_NORMS))
    with torch.no_grad():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, _NORMS):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
    if handled:
        done.update(id(p) for p in m.parameters(recurse=False))
    for child in m.children():
        _init_tree(child, generator, done)


def _time_axis(spec: DecoderSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A sequence backbone's kwargs from the decoder: its dropout, and ``pool=None`` for time-resolved targets."""
    kwargs.setdefault("dropout", float(spec.dropout))
    if spec.time_resolved:
        if kwargs.get("pool") is not None:
            raise ValueError(f"backbone_kwargs pool={kwargs['pool']!r}: the targets are time-resolved "
                             f"(embed_shape={spec.embed_shape}), so the backbone keeps its time axis")
        kwargs["pool"] = None
    return kwargs


def _maybe_init(module: nn.Module, device: Any) -> None:
    """Components built off the meta device initialise themselves (global RNG, like any nn.Module)."""
    if torch.device(device if device is not None else "cpu").type != "meta":
        init_parameters_(module, None)


# -- ResidualMLP ---------------------------------------------------------------------------
class _ResidualBlock(nn.Module):
    """``x + Dropout(Linear(Dropout(GELU(Linear(LayerNorm(x))))))``."""

    def __init__(self, dim: int, dropout: float, device: Any = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, device=device)
        self.fc1 = nn.Linear(dim, dim, device=device)
        self.fc2 = nn.Linear(dim, dim, device=device)
        self.act = nn.GELU()
        self.p = dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.fc2(_dropout(self.act(self.fc1(self.norm(x))), self.p, self.training, generator))
        return x + _dropout(h, self.p, self.training, generator)


@register_backbone("mlp")
class ResidualMLP(nn.Module):
    """Pre-norm residual MLP (MindEye1's backbone; neurodecode's original default).

    Parameters
    ----------
    dim : int
        Width (input = output).
    n_blocks : int
        Residual blocks (LayerNorm → Linear → GELU → dropout → Linear → dropout).
        MindEye1 uses 4 blocks of width 4096.
    dropout : float
        Dropout probability in [0, 1).
    device : torch.device | str | None
        ``"meta"`` to build without allocating (then call :func:`init_parameters_`).

    Notes
    -----
    Input and output: ``(batch, dim)``.
    """

    input_kind = "vector"
    default_adapter = "linear"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, in_features: int, **kwargs: Any) -> ResidualMLP:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``hidden_dim`` wide, ``n_blocks`` deep.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``n_blocks``, ``dropout``, ``device``).
        in_features : int
            Width of the adapter's output (not used: the adapter outputs ``hidden_dim``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``backbone_kwargs``).

        Returns
        -------
        backbone : ResidualMLP
            The backbone, built on ``spec.device``.
        """
        return cls(spec.hidden_dim, spec.n_blocks, spec.dropout, device=spec.device, **kwargs)

    def __init__(self, dim: int, n_blocks: int = 2, dropout: float = 0.1, *, device: Any = None) -> None:
        super().__init__()
        self.dim = _check_int("dim", dim)
        n_blocks = _check_int("n_blocks", n_blocks, 0)
        self.blocks = nn.ModuleList([_ResidualBlock(dim, _check_p("dropout", dropout), device=device)
                                     for _ in range(n_blocks)])
        self.out_dim = self.dim
        _maybe_init(self, device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the residual blocks on one batch of latents.

        Parameters
        ----------
        x : Tensor, shape (batch, dim)
            The adapter's output.
        generator : torch.Generator | None
            Source of the dropout masks in training mode (for reproducible training).

        Returns
        -------
        h : Tensor, shape (batch, dim)
            The latents after every residual block.
        """
        for block in self.blocks:
            x = block(x, generator)
        return x


# -- MLPMixer ------------------------------------------------------------------------------
class _MixerMLP(nn.Module):
    """``LayerNorm → Linear → GELU → dropout → Linear → dropout`` over the last axis."""

    def __init__(self, dim: int, hidden: int, dropout: float, device: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, device=device)
        self.fc1 = nn.Linear(dim, hidden, device=device)
        self.fc2 = nn.Linear(hidden, dim, device=device)
        self.p = dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h = _dropout(F.gelu(self.fc1(self.norm(x))), self.p, self.training, generator)
        return _dropout(self.fc2(h), self.p, self.training, generator)


class _MixerBlock(nn.Module):
    def __init__(self, n_tokens: int, token_dim: int, expansion: float, dropout: float, device: Any) -> None:
        super().__init__()
        self.token_mlp = _MixerMLP(n_tokens, max(1, int(round(n_tokens * expansion))), dropout, device)
        self.channel_mlp = _MixerMLP(token_dim, max(1, int(round(token_dim * expansion))), dropout, device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # x: (batch, n_tokens, token_dim); token mixing acts across tokens, channel mixing within one
        x = x + self.token_mlp(x.transpose(1, 2), generator).transpose(1, 2)
        return x + self.channel_mlp(x, generator)


@register_backbone("mixer")
class MLPMixer(nn.Module):
    """MLP-Mixer over the latent vector split into tokens (MindEye2's backbone).

    The ``(batch, dim)`` latent is viewed as ``n_tokens`` tokens of
    ``dim // n_tokens`` features. Each block adds a token-mixing MLP (across
    tokens, per feature) and a channel-mixing MLP (across features, per
    token), both pre-norm and residual; the result is flattened back to
    ``(batch, dim)`` and layer-normalised.

    Parameters
    ----------
    dim : int
        Latent width; must be divisible by ``n_tokens``. MindEye2: 4096.
    n_blocks : int
        Mixer blocks. MindEye2: 4.
    dropout : float
        Dropout in [0, 1). MindEye2: 0.15.
    n_tokens : int
        Tokens the latent is split into. MindEye2 keeps ``seq_len=1`` (one
        4096-wide token, so its token mixing is a 1×1 map); neurodecode's
        default, 4, makes token mixing meaningful.
    expansion : float
        Hidden width of each MLP relative to its input (MindEye2: 1).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    Input and output: ``(batch, dim)``.
    """

    input_kind = "vector"
    default_adapter = "linear"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, in_features: int, **kwargs: Any) -> MLPMixer:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``hidden_dim`` wide, ``n_blocks`` deep.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``n_blocks``, ``dropout``, ``device``).
        in_features : int
            Width of the adapter's output (not used: the adapter outputs ``hidden_dim``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``backbone_kwargs``).

        Returns
        -------
        backbone : MLPMixer
            The backbone, built on ``spec.device``.
        """
        return cls(spec.hidden_dim, spec.n_blocks, spec.dropout, device=spec.device, **kwargs)

    def __init__(self, dim: int, n_blocks: int = 4, dropout: float = 0.15, *, n_tokens: int = 4,
                 expansion: float = 1.0, device: Any = None) -> None:
        super().__init__()
        self.dim = _check_int("dim", dim)
        self.n_tokens = _check_int("n_tokens", n_tokens)
        if self.dim % self.n_tokens:
            raise ValueError(f"dim ({dim}) must be divisible by n_tokens ({n_tokens})")
        if not float(expansion) > 0:
            raise ValueError(f"expansion must be > 0, got {expansion!r}")
        self.token_dim = self.dim // self.n_tokens
        p = _check_p("dropout", dropout)
        self.blocks = nn.ModuleList([_MixerBlock(self.n_tokens, self.token_dim, float(expansion), p, device)
                                     for _ in range(_check_int("n_blocks", n_blocks, 0))])
        self.norm = nn.LayerNorm(self.dim, device=device)
        self.out_dim = self.dim
        _maybe_init(self, device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the mixer blocks on one batch of latents split into ``n_tokens`` tokens.

        Parameters
        ----------
        x : Tensor, shape (batch, dim)
            The adapter's output.
        generator : torch.Generator | None
            Source of the dropout masks in training mode (for reproducible training).

        Returns
        -------
        h : Tensor, shape (batch, dim)
            The mixed tokens, flattened back and layer-normalised.
        """
        h = x.reshape(len(x), self.n_tokens, self.token_dim)
        for block in self.blocks:
            h = block(h, generator)
        return self.norm(h.reshape(len(x), self.dim))


# -- sequence backbones: shared temporal pooling --------------------------------------------
class _TemporalPool(nn.Module):
    """``(batch, channels, time) → (batch, channels)``: mean over time, or a learned affine map."""

    def __init__(self, mode: str, n_times: int | None, device: Any) -> None:
        super().__init__()
        if mode not in ("mean", "linear"):
            raise ValueError(f"Invalid value for the 'pool' parameter. Allowed values are 'mean', 'linear', "
                             f"None (no pooling: a time-resolved output), but got {mode!r} instead.")
        if mode == "linear" and n_times is None:
            raise ValueError("pool='linear' needs n_times (the number of time samples)")
        self.mode = mode
        self.weight = nn.Linear(n_times, 1, device=device) if mode == "linear" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return x.mean(-1)
        return self.weight(x).squeeze(-1)


def _check_seq_input(x: torch.Tensor, n_chans: int, n_times: int | None, what: str) -> None:
    if x.ndim != 3 or x.shape[1] != n_chans or (n_times is not None and x.shape[2] != n_times):
        t = "n_times" if n_times is None else n_times
        raise ValueError(f"{what} expects input of shape (batch, {n_chans}, {t}), got {tuple(x.shape)}")


# -- DilatedConvNet (brainmagick SimpleConv) -------------------------------------------------
class _DilatedBlock(nn.Module):
    """Residual ``x + dropout(GELU(BN(Conv1d_dilated(x))))``, optionally followed by a GLU conv.

    With ``in_channels != hidden`` (brainmagick's first convolution) there is no skip connection.
    """

    def __init__(self, hidden: int, kernel_size: int, dilation: int, glu: bool, glu_context: int,
                 dropout: float, device: Any, in_channels: int | None = None) -> None:
        super().__init__()
        in_channels = hidden if in_channels is None else in_channels
        self.skip = in_channels == hidden
        self.conv = nn.Conv1d(in_channels, hidden, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2, device=device)
        self.norm = nn.BatchNorm1d(hidden, device=device)
        self.glu = nn.Conv1d(hidden, 2 * hidden, 1 + 2 * glu_context, padding=glu_context,
                             device=device) if glu else None
        self.p = dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h = _dropout(F.gelu(self.norm(self.conv(x))), self.p, self.training, generator)
        x = x + h[..., :x.shape[-1]] if self.skip else h
        if self.glu is not None:
            x = F.glu(self.glu(x), dim=1)
        return x


@register_backbone("dilated_conv")
class DilatedConvNet(nn.Module):
    """Residual dilated 1-D convolutions (brainmagick's SimpleConv core).

    ``(batch, n_chans, n_times)`` → 1×1 conv to ``hidden`` channels → ``depth``
    residual blocks (Conv1d with kernel ``kernel_size`` and dilation
    ``2 ** (k % dilation_period)``, BatchNorm, GELU; every ``glu``-th block is
    followed by a GLU convolution with context ``glu_context``) → two 1×1
    convs with a GELU (``hidden → 2·hidden → out_channels``) → pooling over
    time → ``(batch, out_channels)``. With ``pool=None`` the time axis is kept,
    as in brainmagick, whose SimpleConv outputs one feature vector per MEG
    sample: ``(batch, out_channels, n_times)``.

    Parameters
    ----------
    n_chans : int
        Input channels (after the subject adapter; brainmagick: 270).
    out_channels : int
        Output width.
    hidden : int
        Channels in the residual stack (brainmagick: 320).
    depth : int
        Residual blocks (brainmagick's NMI config: 10; default 4 for CPU).
    kernel_size : int
        Odd kernel size (brainmagick: 3).
    dilation_period : int
        Dilation cycles ``1, 2, 4, …`` with this period (brainmagick: 5).
    glu : int
        A GLU convolution after every ``glu``-th block; 0 disables (brainmagick: 2).
    glu_context : int
        Half-width of the GLU kernel (brainmagick: 1).
    dropout : float
        Dropout after each residual conv, in [0, 1).
    n_times : int | None
        Time samples; checked when given, required for ``pool="linear"``.
    pool : {"mean", "linear"} | None
        Temporal aggregation to one vector: the mean, or a learned affine map
        over time (as in Benchetrit et al.'s temporal aggregation); ``None``
        keeps the time axis (time-resolved targets, brainmagick's setting).
    stem : {"linear", "conv"}
        ``"linear"``: a 1×1 conv maps ``n_chans → hidden`` and all ``depth``
        blocks are residual. ``"conv"``: brainmagick's ``ConvSequence`` exactly —
        block 0 is the first dilated conv itself (``n_chans → hidden``, kernel
        ``kernel_size``, BatchNorm, GELU; residual only when ``n_chans ==
        hidden``), so ``depth`` counts it, block ``k`` has dilation
        ``2 ** (k % dilation_period)`` and a GLU when ``(k + 1) % glu == 0``, as
        brainmagick's ``sequence.{k}`` / ``glus.{k}``.
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Attributes
    ----------
    out_times : int | None
        Time steps of the output when ``pool=None`` (``n_times``; same-length
        convolutions), else None.
    """

    input_kind = "sequence"
    default_adapter = "subject_layer"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, in_features: int, **kwargs: Any) -> DilatedConvNet:
        """Built by :class:`~neurodecode.models.BrainDecoder`: the adapter's channels → ``hidden_dim``.

        ``n_blocks`` is the depth, ``dropout`` the default dropout; time-resolved targets keep the time
        axis (``pool=None``).

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``n_blocks``, ``dropout``, ``n_times``,
            ``time_resolved``, ``device``).
        in_features : int
            Channels of the adapter's output.
        **kwargs
            Further keyword arguments of the class (the decoder's ``backbone_kwargs``).

        Returns
        -------
        backbone : DilatedConvNet
            The backbone, built on ``spec.device``.
        """
        kwargs = _time_axis(spec, kwargs)
        return cls(in_features, spec.hidden_dim, depth=spec.n_blocks, n_times=int(spec.n_times),
                   device=spec.device, **kwargs)

    def __init__(self, n_chans: int, out_channels: int, hidden: int = 320, depth: int = 4, *,
                 kernel_size: int = 3, dilation_period: int = 5, glu: int = 2, glu_context: int = 1,
                 dropout: float = 0.0, n_times: int | None = None,
                 pool: Literal["mean", "linear"] | None = "mean", stem: Literal["linear", "conv"] = "linear",
                 device: Any = None) -> None:
        super().__init__()
        if stem not in ("linear", "conv"):
            raise ValueError(f"Invalid value for the 'stem' parameter. Allowed values are 'linear', 'conv', "
                             f"but got {stem!r} instead.")
        self.n_chans = _check_int("n_chans", n_chans)
        self.out_dim = _check_int("out_channels", out_channels)
        hidden = _check_int("hidden", hidden)
        kernel_size = _check_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length convolutions), got {kernel_size}")
        period = _check_int("dilation_period", dilation_period)
        glu = _check_int("glu", glu, 0)
        p = _check_p("dropout", dropout)
        self.n_times = None if n_times is None else _check_int("n_times", n_times)
        depth = _check_int("depth", depth, 1 if stem == "conv" else 0)
        self.proj_in = nn.Conv1d(self.n_chans, hidden, 1, device=device) if stem == "linear" else None
        self.blocks = nn.ModuleList([
            _DilatedBlock(hidden, kernel_size, 2 ** (k % period), bool(glu) and (k + 1) % glu == 0,
                          _check_int("glu_context", glu_context, 0), p, device,
                          in_channels=self.n_chans if stem == "conv" and k == 0 else hidden)
            for k in range(depth)])
        self.proj_out1 = nn.Conv1d(hidden, 2 * hidden, 1, device=device)
        self.proj_out2 = nn.Conv1d(2 * hidden, self.out_dim, 1, device=device)
        if pool is None and self.n_times is None:
            raise ValueError("pool=None (time-resolved output) needs n_times")
        self.pool = None if pool is None else _TemporalPool(pool, self.n_times, device)
        self.out_times = self.n_times if pool is None else None
        _maybe_init(self, device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode one batch of multichannel time series.

        Parameters
        ----------
        x : Tensor, shape (batch, n_chans, n_times)
            The adapter's output (``n_times`` is checked when it was given).
        generator : torch.Generator | None
            Source of the dropout masks in training mode (for reproducible training).

        Returns
        -------
        h : Tensor, shape (batch, out_channels) | (batch, out_channels, n_times)
            Pooled over time, or with the time axis kept when ``pool=None``.
        """
        _check_seq_input(x, self.n_chans, self.n_times, "DilatedConvNet")
        h = x if self.proj_in is None else self.proj_in(x)
        for block in self.blocks:
            h = block(h, generator)
        h = self.proj_out2(F.gelu(self.proj_out1(h)))
        return h if self.pool is None else self.pool(h)


# -- ChannelAttentionEncoder (ATM) -----------------------------------------------------------
class _TransformerLayer(nn.Module):
    """Post-norm transformer encoder layer (as ``nn.TransformerEncoderLayer``), dropout from a generator.

    The attention's inner width is ``n_heads · head_dim`` (``d_model`` by default; ATM: 4 × 62 = 248 on a
    250-wide model); ``qkv`` holds the query, key and value projections stacked in that order.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, device: Any,
                 head_dim: int | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads if head_dim is None else head_dim
        inner = n_heads * self.head_dim
        self.qkv = nn.Linear(d_model, 3 * inner, device=device)
        self.out = nn.Linear(inner, d_model, device=device)
        self.norm1 = nn.LayerNorm(d_model, device=device)
        self.ff1 = nn.Linear(d_model, d_ff, device=device)
        self.ff2 = nn.Linear(d_ff, d_model, device=device)
        self.norm2 = nn.LayerNorm(d_model, device=device)
        self.p = dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        a = a.reshape(b, n, self.n_heads * self.head_dim)
        x = self.norm1(x + _dropout(self.out(a), self.p, self.training, generator))
        h = self.ff2(_dropout(F.gelu(self.ff1(x)), self.p, self.training, generator))
        return self.norm2(x + _dropout(h, self.p, self.training, generator))


@register_backbone("atm")
class ChannelAttentionEncoder(nn.Module):
    """ATM's EEG encoder: attention across channels, ShallowNet-style conv, MLP projection.

    1. Each channel's time series becomes one token (``Linear(n_times → d_model)``,
       the "inverted" embedding of iTransformer used by ATM), and ``n_layers``
       transformer encoder layers attend across channels.
    2. A temporal-spatial convolution (ShallowNet, ATM-S): ``Conv2d(1, n_filters,
       (1, conv_kernel))`` over time → ``AvgPool2d((1, pool), (1, pool_stride))`` →
       BatchNorm → ELU → ``Conv2d(n_filters, n_filters, (n_chans, 1))`` across
       channels → BatchNorm → ELU → dropout → 1×1 conv.
    3. Flatten → ``Linear`` to ``out_dim`` → residual ``GELU → Linear → dropout`` →
       LayerNorm.

    With ``pool=None`` (time-resolved targets) step 3 keeps the conv stage's
    ``n_pooled`` positions instead of flattening them: the same projection
    (``Linear(n_filters → out_dim)``, residual, LayerNorm) is applied at each
    position and the output is ``(batch, out_dim, n_pooled)``. These positions
    run along the channel tokens' ``d_model`` axis, a learned mixture of the
    input's time samples (ATM embeds each channel's time course with
    ``Linear(n_times → d_model)``), not clock time; the head that follows maps
    them onto the target's frames.

    Parameters
    ----------
    n_chans : int
        EEG channels (THINGS-EEG2: 63).
    n_times : int
        Time samples (ATM: 250, i.e. 1 s at 250 Hz).
    out_dim : int
        Output width (ATM: 1024, the CLIP ViT-H/14 embedding).
    d_model : int
        Token width (ATM: 250).
    n_layers : int
        Transformer layers (ATM: 1).
    n_heads : int
        Attention heads; must divide ``d_model`` unless ``head_dim`` is given.
        ATM's config uses 4 heads on a 250-wide model (its attention projects
        to heads × ``d_model // heads`` = 248); the default, 5, divides 250.
    head_dim : int | None
        Width of one attention head (ATM-S: 62); None: ``d_model // n_heads``.
    d_ff : int
        Feed-forward width (ATM: 256).
    dropout : float
        Transformer dropout (ATM: 0.25).
    n_filters, conv_kernel, pool_size, pool_stride : int
        ShallowNet sizes (ATM: 40, 25, 51, 5; 40 × 36 = 1440 flattened features).
        An int given as ``pool`` is taken as ``pool_size`` (its name in
        earlier versions).
    proj_dropout : float
        Dropout in the conv and projection stages (ATM: 0.5).
    pool : {"flatten"} | None
        ``"flatten"``: ATM's flattened projection to one vector; ``None``: a
        sequence output (see above).
    embed : bool
        Embed each channel's time course with ``Linear(n_times → d_model)``;
        False when the input tokens are already embedded (the
        ``subject_token`` adapter embeds them and prepends the subject token,
        as ATM-S; then ``n_times`` must equal ``d_model``).
    final_norm : bool
        A LayerNorm after the last transformer layer (ATM-S's encoder
        ``norm_layer``).
    keep_tokens : int | None
        Keep only the first ``keep_tokens`` tokens after the transformer (ATM-S
        keeps 63 of its 64 — the subject token and channels 0–61); the spatial
        convolution then spans these tokens. None keeps all ``n_chans``.
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Attributes
    ----------
    out_times : int | None
        ``n_pooled`` with ``pool=None``, else None.

    Notes
    -----
    Input ``(batch, n_chans, n_times)``, output ``(batch, out_dim)`` or
    ``(batch, out_dim, n_pooled)``.
    """

    input_kind = "sequence"
    default_adapter = "subject_layer"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, in_features: int, **kwargs: Any) -> ChannelAttentionEncoder:
        """Built by :class:`~neurodecode.models.BrainDecoder`: the adapter's channels → ``hidden_dim``.

        ``n_blocks`` is the number of transformer layers; an int ``pool`` is ATM's ShallowNet pooling
        size (its old name, stored as ``pool_size``); time-resolved targets keep the positions axis.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``n_blocks``, ``dropout``, ``n_times``,
            ``time_resolved``, ``device``).
        in_features : int
            Channels of the adapter's output.
        **kwargs
            Further keyword arguments of the class (the decoder's ``backbone_kwargs``).

        Returns
        -------
        backbone : ChannelAttentionEncoder
            The backbone, built on ``spec.device``.
        """
        kwargs = dict(kwargs)
        if isinstance(kwargs.get("pool"), (int, np.integer)) and not isinstance(kwargs["pool"], bool):
            kwargs["pool_size"] = int(kwargs.pop("pool"))
        kwargs = _time_axis(spec, kwargs)
        return cls(in_features, int(spec.n_times), spec.hidden_dim, n_layers=spec.n_blocks, device=spec.device,
                   **kwargs)

    def __init__(self, n_chans: int, n_times: int, out_dim: int, *, d_model: int = 250, n_layers: int = 1,
                 n_heads: int = 5, d_ff: int = 256, dropout: float = 0.25, n_filters: int = 40,
                 conv_kernel: int = 25, pool_size: int = 51, pool_stride: int = 5, proj_dropout: float = 0.5,
                 pool: Literal["flatten"] | None = "flatten", head_dim: int | None = None, embed: bool = True,
                 final_norm: bool = False, keep_tokens: int | None = None, device: Any = None) -> None:
        super().__init__()
        if isinstance(pool, (int, np.integer)) and not isinstance(pool, bool):
            pool_size, pool = int(pool), "flatten"  # ``pool`` was the ShallowNet pooling size before 0.1
        if pool not in ("flatten", None):
            raise ValueError(f"Invalid value for the 'pool' parameter. Allowed values are 'flatten', None, "
                             f"but got {pool!r} instead.")
        self.n_chans = _check_int("n_chans", n_chans)
        self.n_times = _check_int("n_times", n_times)
        self.out_dim = _check_int("out_dim", out_dim)
        d_model = _check_int("d_model", d_model)
        n_heads = _check_int("n_heads", n_heads)
        if head_dim is None and d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}), or give "
                             "head_dim")
        head_dim = None if head_dim is None else _check_int("head_dim", head_dim)
        if not embed and self.n_times != d_model:
            raise ValueError(f"embed=False takes tokens already d_model wide: n_times ({self.n_times}) must "
                             f"equal d_model ({d_model})")
        self.keep_tokens = None if keep_tokens is None else _check_int("keep_tokens", keep_tokens)
        if self.keep_tokens is not None and self.keep_tokens > self.n_chans:
            raise ValueError(f"keep_tokens ({keep_tokens}) exceeds the {self.n_chans} input tokens")
        conv_kernel, pool_size, pool_stride = (_check_int(n, v) for n, v in
                                               (("conv_kernel", conv_kernel), ("pool_size", pool_size),
                                                ("pool_stride", pool_stride)))
        width = d_model - conv_kernel + 1
        if width < pool_size:
            raise ValueError(f"d_model={d_model} is too small for conv_kernel={conv_kernel} and "
                             f"pool_size={pool_size}: need d_model >= conv_kernel + pool_size - 1 = "
                             f"{conv_kernel + pool_size - 1}")
        n_pooled = (width - pool_size) // pool_stride + 1
        p, p_proj = _check_p("dropout", dropout), _check_p("proj_dropout", proj_dropout)
        self.embed = nn.Linear(self.n_times, d_model, device=device) if embed else None
        self.layers = nn.ModuleList([_TransformerLayer(d_model, n_heads, _check_int("d_ff", d_ff), p, device,
                                                       head_dim=head_dim)
                                     for _ in range(_check_int("n_layers", n_layers, 0))])
        self.final_norm = nn.LayerNorm(d_model, device=device) if final_norm else None
        n_filters = _check_int("n_filters", n_filters)
        self.temporal = nn.Conv2d(1, n_filters, (1, conv_kernel), device=device)
        self.avgpool = nn.AvgPool2d((1, pool_size), (1, pool_stride))
        self.bn1 = nn.BatchNorm2d(n_filters, device=device)
        self.spatial = nn.Conv2d(n_filters, n_filters, (self.keep_tokens or self.n_chans, 1), device=device)
        self.bn2 = nn.BatchNorm2d(n_filters, device=device)
        self.proj_conv = nn.Conv2d(n_filters, n_filters, 1, device=device)
        self.sequence_output = pool is None
        self.out_times = n_pooled if self.sequence_output else None
        self.flat_dim = n_filters if self.sequence_output else n_filters * n_pooled
        self.proj = nn.Linear(self.flat_dim, self.out_dim, device=device)
        self.proj_res = nn.Linear(self.out_dim, self.out_dim, device=device)
        self.norm = nn.LayerNorm(self.out_dim, device=device)
        self.p_proj = p_proj
        _maybe_init(self, device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode one batch of EEG epochs.

        Parameters
        ----------
        x : Tensor, shape (batch, n_chans, n_times)
            The adapter's output.
        generator : torch.Generator | None
            Source of the dropout masks in training mode (for reproducible training).

        Returns
        -------
        h : Tensor, shape (batch, out_dim) | (batch, out_dim, n_pooled)
            One vector per epoch, or one per conv position when ``pool=None``.
        """
        _check_seq_input(x, self.n_chans, self.n_times, "ChannelAttentionEncoder")
        h = x if self.embed is None else self.embed(x)     # (batch, n_chans, d_model): channels as tokens
        for layer in self.layers:
            h = layer(h, generator)
        if self.final_norm is not None:
            h = self.final_norm(h)
        if self.keep_tokens is not None:
            h = h[:, :self.keep_tokens]
        h = self.avgpool(self.temporal(h.unsqueeze(1)))     # (batch, n_filters, n_chans, n_pooled)
        h = F.elu(self.bn1(h))
        h = F.elu(self.bn2(self.spatial(h)))                # (batch, n_filters, 1, n_pooled)
        h = self.proj_conv(_dropout(h, self.p_proj, self.training, generator))
        # one vector (ATM), or one vector per conv position (time-resolved targets)
        h = h.squeeze(2).transpose(1, 2) if self.sequence_output else h.flatten(1)
        h = self.proj(h)
        h = self.norm(h + _dropout(self.proj_res(F.gelu(h)), self.p_proj, self.training, generator))
        return h.transpose(1, 2) if self.sequence_output else h


# -- MindEye2's BrainNetwork mixer -------------------------------------------------------------
class _MindEye2MLP(nn.Module):
    """``LayerNorm → Linear → GELU → dropout → Linear`` over the last axis (no dropout after the second)."""

    def __init__(self, dim: int, dropout: float, device: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, device=device)
        self.fc1 = nn.Linear(dim, dim, device=device)
        self.fc2 = nn.Linear(dim, dim, device=device)
        self.p = dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.fc2(_dropout(F.gelu(self.fc1(self.norm(x))), self.p, self.training, generator))


class _MindEye2Block(nn.Module):
    def __init__(self, seq_len: int, dim: int, dropout: float, device: Any) -> None:
        super().__init__()
        self.channel_mlp = _MindEye2MLP(dim, dropout, device)     # MindEye2's mixer_blocks1[k]
        self.token_mlp = _MindEye2MLP(seq_len, dropout, device)   # MindEye2's mixer_blocks2[k]


@register_backbone("mindeye2")
class MindEye2Mixer(nn.Module):
    """MindEye2's ``BrainNetwork`` mixer, computed exactly as the original (``src/models.py``).

    The ``(batch, seq_len · dim)`` latent is viewed as ``(batch, seq_len, dim)``. The original keeps two
    running residuals and, per block ``k``, computes ``a = channel_mlp_k(x) + res1``, ``res1 = a``, then
    ``c = token_mlp_k(aᵀ) + res2`` over the ``seq_len`` axis, ``res2 = c``, ``x = cᵀ``; the output is
    ``x`` flattened, with no final norm. Each MLP is ``LayerNorm → Linear → GELU → dropout → Linear``.

    With MindEye2's ``seq_len = 1`` the token MLP's LayerNorm acts on one value and returns its bias, so
    ``token_mlp_k`` is an input-independent constant ``c_k`` and, since ``c`` adds the previous ``c`` (never
    ``a``), the output is ``x + Σ_k c_k``: the channel MLPs (``mixer_blocks1``, 134 M parameters at
    ``dim = 4096``) never reach the output and get no gradient, and the token LayerNorms' weights get a zero
    gradient. This is reproduced, not corrected; with ``seq_len > 1`` every parameter takes part.

    Parameters
    ----------
    dim : int
        Width of one token (MindEye2: ``hidden_dim = 4096``); the input width is ``seq_len · dim``.
    n_blocks : int
        Mixer blocks (MindEye2: 4).
    dropout : float
        Dropout after each MLP's GELU, in [0, 1) (MindEye2: 0.15).
    seq_len : int
        Tokens (MindEye2: 1).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    Input and output: ``(batch, seq_len · dim)``. ``blocks.k.channel_mlp.{norm, fc1, fc2}`` and
    ``blocks.k.token_mlp.{norm, fc1, fc2}`` hold MindEye2's ``mixer_blocks1.k.{0, 1.0, 1.3}`` and
    ``mixer_blocks2.k.{0, 1.0, 1.3}``.
    """

    input_kind = "vector"
    default_adapter = "linear"
    #: The conformance suite builds it with two tokens, where every parameter takes part (see above).
    conformance_kwargs = {"seq_len": 2}

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, in_features: int, **kwargs: Any) -> MindEye2Mixer:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``hidden_dim = seq_len · dim`` wide.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``n_blocks``, ``dropout``, ``device``).
        in_features : int
            Width of the adapter's output (not used: the adapter outputs ``hidden_dim``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``backbone_kwargs``: ``seq_len``).

        Returns
        -------
        backbone : MindEye2Mixer
            The backbone, built on ``spec.device``.
        """
        seq_len = _check_int("seq_len", kwargs.pop("seq_len", 1))
        if spec.hidden_dim % seq_len:
            raise ValueError(f"hidden_dim ({spec.hidden_dim}) must be divisible by seq_len ({seq_len})")
        return cls(spec.hidden_dim // seq_len, spec.n_blocks, spec.dropout, seq_len=seq_len,
                   device=spec.device, **kwargs)

    def __init__(self, dim: int, n_blocks: int = 4, dropout: float = 0.15, *, seq_len: int = 1,
                 device: Any = None) -> None:
        super().__init__()
        self.token_dim = _check_int("dim", dim)
        self.seq_len = _check_int("seq_len", seq_len)
        p = _check_p("dropout", dropout)
        self.blocks = nn.ModuleList([_MindEye2Block(self.seq_len, self.token_dim, p, device)
                                     for _ in range(_check_int("n_blocks", n_blocks, 0))])
        self.dim = self.out_dim = self.seq_len * self.token_dim
        _maybe_init(self, device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the two-residual mixer loop of MindEye2's ``BrainNetwork.forward``.

        Parameters
        ----------
        x : Tensor, shape (batch, seq_len · dim)
            The adapter's output (MindEye2's ridge output).
        generator : torch.Generator | None
            Source of the dropout masks in training mode (for reproducible training).

        Returns
        -------
        h : Tensor, shape (batch, seq_len · dim)
            What MindEye2 feeds ``backbone_linear`` and ``blin1`` (its ``x.reshape(B, -1)``).
        """
        x = x.reshape(len(x), self.seq_len, self.token_dim)
        res1, res2 = x, x.transpose(1, 2)
        for block in self.blocks:
            x = block.channel_mlp(x, generator) + res1
            res1 = x
            x = block.token_mlp(x.transpose(1, 2), generator) + res2
            res2 = x
            x = x.transpose(1, 2)
        return x.reshape(len(x), self.dim)


# -- PostNormResidualMLP (MindEye1 / MindBridge) ----------------------------------------------------
class _PostNormBlock(nn.Module):
    """``Dropout(act(LayerNorm(Linear(x))))`` (the residual is added by the backbone)."""

    def __init__(self, dim: int, bias: bool, device: Any) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=bias, device=device)
        self.norm = nn.LayerNorm(dim, device=device)


@register_backbone("postnorm_mlp")
class PostNormResidualMLP(nn.Module):
    """Post-norm residual MLP: ``h ← Dropout(act(LayerNorm(Linear(h)))) + h`` per block.

    MindEye1's ``BrainNetwork.mlp`` (4 blocks of 4096, GELU, dropout 0.15), MindBridge's ``ResMLP``
    translator (4 blocks of 2048, GELU, dropout 0.15) and MindEye1's low-level autoencoder
    (``Voxel2StableDiffusionModel.mlp``: no bias, SiLU, dropout 0.25). Unlike :class:`ResidualMLP`
    (pre-norm, two linear layers per block) the LayerNorm follows the block's one linear layer and there is
    no final norm.

    Parameters
    ----------
    dim : int
        Width (input = output).
    n_blocks : int
        Residual blocks.
    dropout : float
        Dropout after each block's activation, in [0, 1).
    bias : bool
        Bias of the linear layers (MindEye1, MindBridge: True; MindEye1's autoencoder: False).
    act : {"gelu", "silu"}
        Activation after each LayerNorm.
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    Input and output: ``(batch, dim)``. ``blocks.k.{linear, norm}`` hold the originals' ``mlp.k.0`` and
    ``mlp.k.1``.
    """

    input_kind = "vector"
    default_adapter = "linear_norm"

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, in_features: int, **kwargs: Any) -> PostNormResidualMLP:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``hidden_dim`` wide, ``n_blocks`` deep.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``n_blocks``, ``dropout``, ``device``).
        in_features : int
            Width of the adapter's output (not used: the adapter outputs ``hidden_dim``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``backbone_kwargs``: ``bias``, ``act``).

        Returns
        -------
        backbone : PostNormResidualMLP
            The backbone, built on ``spec.device``.
        """
        return cls(spec.hidden_dim, spec.n_blocks, spec.dropout, device=spec.device, **kwargs)

    def __init__(self, dim: int, n_blocks: int = 4, dropout: float = 0.15, *, bias: bool = True,
                 act: str = "gelu", device: Any = None) -> None:
        super().__init__()
        self.dim = self.out_dim = _check_int("dim", dim)
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        self.act = _activation(act)
        self.p = _check_p("dropout", dropout)
        self.blocks = nn.ModuleList([_PostNormBlock(self.dim, bias, device)
                                     for _ in range(_check_int("n_blocks", n_blocks, 0))])
        _maybe_init(self, device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the post-norm residual blocks on one batch of latents.

        Parameters
        ----------
        x : Tensor, shape (batch, dim)
            The adapter's output.
        generator : torch.Generator | None
            Source of the dropout masks in training mode (for reproducible training).

        Returns
        -------
        h : Tensor, shape (batch, dim)
            The latents after every block.
        """
        for block in self.blocks:
            x = _dropout(self.act(block.norm(block.linear(x))), self.p, self.training, generator) + x
        return x
