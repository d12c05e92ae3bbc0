"""Output heads: from the backbone's vector ``(batch, in_dim)`` to what a task needs.

=====================  ======================================  ===============================
head                   output                                  used for
=====================  ======================================  ===============================
:class:`PooledHead`    ``(batch, embed_dim)``                  retrieval (pooled CLIP embedding);
                                                               optionally through MindEye2's
                                                               :class:`Projector`
:class:`SequenceHead`  ``(batch, n_frames · dim)``             time-resolved targets (speech
                       from a ``(batch, in_dim, time)``         features, frames × dim), scored
                       backbone sequence                        over the whole (time × dim) map
:class:`TokenHead`     ``(batch, n_tokens, token_dim)``        diffusion prior / unCLIP tokens
:class:`LowLevelHead`  ``(batch, channels, height, width)``    VAE latents (blurry reconstruction)
:class:`TextHead`      ``(batch, n_tokens · dim)``             text-encoder tokens (MindBridge)
=====================  ======================================  ===============================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import _check_int, _check_p, _dropout, _maybe_init
from .registry import register_head

if TYPE_CHECKING:
    from .registry import DecoderSpec

__all__ = ["LowLevelHead", "PooledHead", "Projector", "SequenceHead", "TextHead", "TokenHead", "VAEDecoder",
           "VAEDecoderHead"]


def _check_shape(name: str, shape: Any, n: int) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in shape)
    except TypeError:
        out = ()
    if len(out) != n or any(v < 1 for v in out) or any(isinstance(v, bool) for v in shape):
        raise ValueError(f"{name} must be a tuple of {n} positive ints, got {shape!r}")
    return out


class Projector(nn.Sequential):
    """MindEye2's contrastive projector: three ``LayerNorm → GELU → Linear`` stages on the last axis.

    ``LayerNorm(dim) → GELU → Linear(dim → hidden) → LayerNorm(hidden) → GELU →
    Linear(hidden → hidden) → LayerNorm(hidden) → GELU → Linear(hidden → dim)``,
    the ``clip_proj`` of MindEye2's ``BrainNetwork`` (``src/models.py``,
    ``projector(clip_size, clip_size, h=clip_size)``: ``hidden = dim = 1664``
    for OpenCLIP ViT-bigG/14 tokens). It acts on the last axis, so a
    ``(batch, n_tokens, dim)`` input is projected token by token, as MindEye2
    projects its ``(batch, 256, 1664)`` token sequence before flattening it for
    the contrastive loss. The module indices (``0`` … ``8``) are those of
    MindEye2's ``nn.Sequential``, so its ``backbone.clip_proj.*`` weights load
    under ``projector.*``.

    ``2·dim·hidden + hidden² + 3·dim + 6·hidden`` parameters (8,321,664 at
    MindEye2's 1664 / 1664).

    Parameters
    ----------
    dim : int
        Input and output width.
    hidden : int | None
        Width of the two inner layers; None = ``dim`` (MindEye2).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.
    """

    def __init__(self, dim: int, hidden: int | None = None, *, device: Any = None) -> None:
        dim = _check_int("dim", dim)
        hidden = dim if hidden is None else _check_int("hidden", hidden)
        super().__init__(
            nn.LayerNorm(dim, device=device), nn.GELU(), nn.Linear(dim, hidden, device=device),
            nn.LayerNorm(hidden, device=device), nn.GELU(), nn.Linear(hidden, hidden, device=device),
            nn.LayerNorm(hidden, device=device), nn.GELU(), nn.Linear(hidden, dim, device=device))
        self.dim, self.hidden = dim, hidden
        _maybe_init(self, device)

    @staticmethod
    def n_parameters(dim: int, hidden: int | None = None) -> int:
        """Parameter count of ``Projector(dim, hidden)`` (without building it).

        Parameters
        ----------
        dim : int
            Input and output width of the projector.
        hidden : int | None
            Hidden width (None: ``dim``).

        Returns
        -------
        n : int
            Number of parameters.
        """
        h = dim if hidden is None else hidden
        return 2 * dim * h + h * h + 3 * dim + 6 * h


@register_head("pooled")
class PooledHead(nn.Module):
    """``LayerNorm → Linear`` (→ optional :class:`Projector`): the pooled stimulus embedding.

    With ``projector``, the linear output goes through MindEye2's three-stage
    projector before the contrastive loss, as MindEye2's ``clip_proj`` follows
    its ``backbone_linear``. ``projector_tokens = n`` views the ``embed_dim``
    output as ``n`` tokens of ``embed_dim / n`` features and projects each token
    (MindEye2: 256 tokens of 1664, flattened again for the loss); the default,
    1, projects the whole vector (a pooled CLIP embedding).

    Parameters
    ----------
    in_dim : int
        Backbone width.
    embed_dim : int
        Target embedding size (CLIP ViT-L/14: 768; ViT-bigG/14 pooled: 1280).
    projector : int | bool | None
        None or False (default): no projector, the original ``LayerNorm →
        Linear`` head. True: a projector whose inner width equals the width it
        projects (MindEye2's ``h = clip_size``). An int: that inner width.
    projector_tokens : int
        Tokens the output is split into for the projector; must divide
        ``embed_dim``.
    identity : bool
        No layers: the backbone's output is the embedding (``in_dim`` must equal
        ``embed_dim``). Published models that end in their backbone (ATM-S's
        ``Proj_eeg``) are loaded this way.
    norm : bool
        The LayerNorm before the Linear (default True). False: ``Linear`` alone,
        as MindEye2's ``backbone_linear`` (published MindEye2 models load this way).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.
    """

    #: Part of a time-resolved model (it is the only head there; it becomes a :class:`SequenceHead`).
    time_resolved: ClassVar[bool] = True

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> nn.Module:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``hidden_dim → embed_dim``.

        For time-resolved targets (``spec.time_resolved``) the pooled head is a :class:`SequenceHead`
        onto ``embed_shape = (n_frames, dim)``.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``embed_dim``, ``embed_shape``, ``device``).
        **kwargs
            Further keyword arguments of the head class (the decoder's ``head_kwargs["pooled"]``).

        Returns
        -------
        head : PooledHead | SequenceHead
            The head, built on ``spec.device``.
        """
        if spec.time_resolved:
            return SequenceHead(spec.hidden_dim, tuple(spec.embed_shape), device=spec.device, **kwargs)
        return cls(spec.hidden_dim, spec.embed_dim, device=spec.device, **kwargs)

    def __init__(self, in_dim: int, embed_dim: int, *, projector: int | bool | None = None,
                 projector_tokens: int = 1, identity: bool = False, norm: bool = True,
                 device: Any = None) -> None:
        super().__init__()
        _check_identity(identity, _check_int("in_dim", in_dim), _check_int("embed_dim", embed_dim))
        if identity and projector not in (None, False):
            raise ValueError("identity=True has no layers: it takes no projector")
        if not isinstance(norm, bool):
            raise ValueError(f"norm must be True or False, got {norm!r}")
        self.norm = None if identity or not norm else nn.LayerNorm(in_dim, device=device)
        self.proj = None if identity else nn.Linear(in_dim, embed_dim, device=device)
        self.out_shape = (int(embed_dim),)
        self.projector_tokens = _check_int("projector_tokens", projector_tokens)
        if embed_dim % self.projector_tokens:
            raise ValueError(f"projector_tokens ({projector_tokens}) must divide embed_dim ({embed_dim})")
        token_dim = embed_dim // self.projector_tokens
        if projector is None or projector is False:
            if self.projector_tokens != 1:
                raise ValueError("projector_tokens is only used with a projector (projector=True or an int)")
            self.projector = None
        elif projector is True:
            self.projector = Projector(token_dim, device=device)
        else:
            self.projector = Projector(token_dim, _check_int("projector", projector), device=device)
        _maybe_init(self, device)

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map one batch of backbone outputs to the pooled embedding.

        Parameters
        ----------
        h : Tensor, shape (batch, in_dim)
            The backbone's output.
        generator : torch.Generator | None
            Unused (the head has no dropout); accepted for a common signature.

        Returns
        -------
        embedding : Tensor, shape (batch, embed_dim)
            The predicted embedding (after the projector, when there is one).
        """
        out = h if self.proj is None else self.proj(h if self.norm is None else self.norm(h))
        if self.projector is None:
            return out
        if self.projector_tokens == 1:
            return self.projector(out)
        return self.projector(out.reshape(len(out), self.projector_tokens, -1)).reshape(len(out), -1)

    def tokens(self, h: torch.Tensor) -> torch.Tensor:
        """The linear output before the projector, as tokens (MindEye2's ``backbone``: the prior's input).

        Parameters
        ----------
        h : Tensor, shape (batch, in_dim)
            The backbone's output.

        Returns
        -------
        tokens : Tensor, shape (batch, projector_tokens, embed_dim / projector_tokens)
            ``proj(norm(h))`` (``h`` itself for ``identity=True``), viewed as ``projector_tokens`` tokens.
        """
        out = h if self.proj is None else self.proj(h if self.norm is None else self.norm(h))
        return out.reshape(len(out), self.projector_tokens, -1)


def _check_identity(identity: Any, in_dim: int, dim: int) -> None:
    if not isinstance(identity, bool):
        raise ValueError(f"identity must be True or False, got {identity!r}")
    if identity and in_dim != dim:
        raise ValueError(f"identity=True passes the backbone's output through: its width ({in_dim}) must "
                         f"equal the embedding's ({dim})")


def resample_time(h: torch.Tensor, n_frames: int) -> torch.Tensor:
    """``(batch, channels, time) → (batch, channels, n_frames)``.

    Averages over equal bins of time when shortening (``adaptive_avg_pool1d``:
    frame ``j`` is the mean of samples ``[j·T/n, (j+1)·T/n)``, an anti-aliased
    decimation that matches targets computed over the same bins, such as
    log-mel frames), and interpolates linearly when lengthening.
    """
    if h.shape[-1] == n_frames:
        return h
    if h.shape[-1] > n_frames:
        return F.adaptive_avg_pool1d(h, n_frames)
    return F.interpolate(h, size=n_frames, mode="linear", align_corners=False)


class SequenceHead(nn.Module):
    """Backbone sequence → a time-resolved embedding, flattened (frames × dim).

    ``(batch, in_dim, time)`` → :func:`resample_time` to ``n_frames`` →
    per frame ``LayerNorm → Linear(in_dim → dim)`` → ``(batch, n_frames, dim)``,
    returned flattened as ``(batch, n_frames · dim)`` in the same (frame-major)
    order as the target rows of
    :class:`~neurodecode.embeddings.StimulusEmbeddings` with ``token_shape =
    (n_frames, dim)``. A contrastive loss on these rows (L2-normalised) then
    scores each candidate over the whole (dim × time) map, as brainmagick's
    ``ClipLoss`` does on its ``(channels, time)`` estimates; pooling over time
    before the head would lose exactly the temporal information such targets
    carry.

    Parameters
    ----------
    in_dim : int
        Channels of the backbone's output sequence.
    embed_shape : tuple of int
        ``(n_frames, dim)`` of one target.
    identity : bool
        No layers: the resampled backbone sequence is the embedding (``in_dim``
        must equal ``dim``); brainmagick's SimpleConv ends in its own output
        convolution.
    device : torch.device | str | None
        ``"meta"`` to build without allocating.
    """

    def __init__(self, in_dim: int, embed_shape: tuple[int, int], *, identity: bool = False,
                 device: Any = None) -> None:
        super().__init__()
        in_dim = _check_int("in_dim", in_dim)
        self.n_frames, self.dim = _check_shape("embed_shape", embed_shape, 2)
        _check_identity(identity, in_dim, self.dim)
        self.norm = None if identity else nn.LayerNorm(in_dim, device=device)
        self.proj = None if identity else nn.Linear(in_dim, self.dim, device=device)
        self.out_shape = (self.n_frames * self.dim,)
        _maybe_init(self, device)

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map one batch of backbone sequences to flattened time-resolved embeddings.

        Parameters
        ----------
        h : Tensor, shape (batch, in_dim, time)
            The backbone's output sequence (built with ``pool=None``).
        generator : torch.Generator | None
            Unused (the head has no dropout); accepted for a common signature.

        Returns
        -------
        embedding : Tensor, shape (batch, n_frames * dim)
            The ``(n_frames, dim)`` embedding of each row, flattened frame-major.
        """
        if h.ndim != 3:
            raise ValueError(f"SequenceHead expects a (batch, channels, time) sequence, got {tuple(h.shape)}; "
                             "build the backbone with pool=None")
        h = resample_time(h, self.n_frames).transpose(1, 2)        # (batch, n_frames, in_dim)
        if self.proj is None:
            return h.reshape(len(h), -1)
        return self.proj(self.norm(h)).reshape(len(h), -1)


@register_head("tokens")
class TokenHead(nn.Module):
    """Backbone vector → a token sequence, e.g. MindEye2's 256 × 1664 OpenCLIP bigG tokens.

    ``mode="linear"``: one ``Linear(in_dim, n_tokens · token_dim)`` (MindEye2's
    ``backbone_linear``; 4096 → 256 × 1664 is 1.7 G parameters).
    ``mode="conv"`` (default): a factorised head, ``Linear(in_dim, n_tokens ·
    rank)`` then a 1×1 convolution (a Linear shared by all tokens) ``rank →
    token_dim``, with a GELU between — about ``(in_dim · n_tokens + token_dim) · rank``
    parameters. Both end with a LayerNorm over ``token_dim``.

    Parameters
    ----------
    in_dim : int
        Backbone width.
    token_shape : tuple of int
        ``(n_tokens, token_dim)``.
    mode : {"conv", "linear"}
        See above.
    rank : int
        Per-token width before the shared 1×1 conv (``mode="conv"`` only).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.
    """

    @staticmethod
    def check_decoder_args(args: dict[str, Any]) -> None:
        """The decoder's ``token_shape`` is required.

        Parameters
        ----------
        args : dict
            The decoder's ``token_shape`` and ``lowlevel_shape`` arguments, by name.
        """
        if args.get("token_shape") is None:
            raise ValueError("heads include 'tokens': give token_shape=(n_tokens, token_dim), "
                             "e.g. (256, 1664) for MindEye2's OpenCLIP bigG tokens")

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> TokenHead:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``hidden_dim → token_shape``.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``token_shape``, ``device``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``head_kwargs["tokens"]``).

        Returns
        -------
        head : TokenHead
            The head, built on ``spec.device``.
        """
        return cls(spec.hidden_dim, tuple(spec.token_shape), device=spec.device, **kwargs)

    def __init__(self, in_dim: int, token_shape: tuple[int, int], *, mode: Literal["conv", "linear"] = "conv",
                 rank: int = 64, device: Any = None) -> None:
        super().__init__()
        in_dim = _check_int("in_dim", in_dim)
        self.n_tokens, self.token_dim = _check_shape("token_shape", token_shape, 2)
        if mode not in ("conv", "linear"):
            raise ValueError(f"Invalid value for the 'mode' parameter. Allowed values are 'conv', 'linear', "
                             f"but got {mode!r} instead.")
        self.mode = mode
        self.rank = _check_int("rank", rank)
        if mode == "linear":
            self.fc = nn.Linear(in_dim, self.n_tokens * self.token_dim, device=device)
            self.token_proj = None
        else:
            self.fc = nn.Linear(in_dim, self.n_tokens * self.rank, device=device)
            self.token_proj = nn.Linear(self.rank, self.token_dim, device=device)
        self.norm = nn.LayerNorm(self.token_dim, device=device)
        self.out_shape = (self.n_tokens, self.token_dim)
        _maybe_init(self, device)

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map one batch of backbone outputs to token sequences.

        Parameters
        ----------
        h : Tensor, shape (batch, in_dim)
            The backbone's output.
        generator : torch.Generator | None
            Unused (the head has no dropout); accepted for a common signature.

        Returns
        -------
        tokens : Tensor, shape (batch, n_tokens, token_dim)
            The predicted tokens, layer-normalised over ``token_dim``.
        """
        if self.token_proj is None:
            t = self.fc(h).reshape(len(h), self.n_tokens, self.token_dim)
        else:
            t = self.token_proj(F.gelu(self.fc(h).reshape(len(h), self.n_tokens, self.rank)))
        return self.norm(t)


class _UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, device: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, device=device)
        self.norm = nn.GroupNorm(min(32, c_out) if c_out % min(32, c_out) == 0 else 1, c_out, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))))


class _LatentShapedHead(nn.Module):
    """A head built from the decoder's ``hidden_dim`` to its ``lowlevel_shape`` (image-VAE latents)."""

    @staticmethod
    def check_decoder_args(args: dict[str, Any]) -> None:
        """The decoder's ``lowlevel_shape`` defaults to ``(4, 28, 28)`` (SD-VAE latents of 224-px images).

        Parameters
        ----------
        args : dict
            The decoder's ``token_shape`` and ``lowlevel_shape`` arguments, by name; a missing
            ``lowlevel_shape`` is filled in place.
        """
        if args.get("lowlevel_shape") is None:
            args["lowlevel_shape"] = (4, 28, 28)

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> Any:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``hidden_dim → lowlevel_shape``.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``lowlevel_shape``, ``device``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``head_kwargs[<head name>]``).

        Returns
        -------
        head : nn.Module
            The head, built on ``spec.device``.
        """
        return cls(spec.hidden_dim, tuple(spec.lowlevel_shape), device=spec.device, **kwargs)


@register_head("lowlevel")
class LowLevelHead(_LatentShapedHead):
    """Backbone vector → image-VAE latents with a small upsampling conv decoder (MindEye2's blurry head).

    ``Linear(in_dim, channels · h₀ · w₀)`` with ``h₀ = height / 2**n_upsample``
    → dropout → GroupNorm → ``n_upsample`` × (nearest 2× upsampling, 3×3 conv,
    GroupNorm, GELU; channels halved each time) → 3×3 conv to the latent
    channels. MindEye2 maps its 4096-d backbone to ``64 × 7 × 7`` and
    upsamples with a diffusers VAE ``Decoder`` to SD-VAE latents of shape
    ``(4, 28, 28)`` (224-px images), trained with L1.

    Parameters
    ----------
    in_dim : int
        Backbone width.
    latent_shape : tuple of int
        ``(channels, height, width)`` of the target latents; height and width
        must be divisible by ``2 ** n_upsample``.
    base_channels : int
        Channels of the first feature map (MindEye2: 64).
    n_upsample : int
        Number of 2× upsampling blocks (MindEye2's 7 → 28: 2).
    dropout : float
        Dropout after the linear layer (MindEye2: 0.3).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.
    """

    def __init__(self, in_dim: int, latent_shape: tuple[int, int, int] = (4, 28, 28), *,
                 base_channels: int = 64, n_upsample: int = 2, dropout: float = 0.3,
                 device: Any = None) -> None:
        super().__init__()
        in_dim = _check_int("in_dim", in_dim)
        c, height, width = self.out_shape = _check_shape("latent_shape", latent_shape, 3)
        n_up = _check_int("n_upsample", n_upsample, 0)
        f = 2 ** n_up
        if height % f or width % f:
            raise ValueError(f"latent_shape {self.out_shape}: height and width must be divisible by "
                             f"2**n_upsample = {f}")
        base = _check_int("base_channels", base_channels)
        self.h0, self.w0, self.base = height // f, width // f, base
        self.p = _check_p("dropout", dropout)
        self.fc = nn.Linear(in_dim, base * self.h0 * self.w0, device=device)
        self.norm = nn.GroupNorm(1, base, device=device)
        chans = [max(base // 2 ** i, 8) for i in range(n_up + 1)]
        self.ups = nn.ModuleList([_UpBlock(chans[i], chans[i + 1], device) for i in range(n_up)])
        self.out = nn.Conv2d(chans[-1], c, 3, padding=1, device=device)
        _maybe_init(self, device)

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map one batch of backbone outputs to image-VAE latents.

        Parameters
        ----------
        h : Tensor, shape (batch, in_dim)
            The backbone's output.
        generator : torch.Generator | None
            Source of the dropout mask in training mode (for reproducible training).

        Returns
        -------
        latents : Tensor, shape (batch, channels, height, width)
            The predicted latents, of shape ``latent_shape`` per row.
        """
        x = _dropout(self.fc(h), self.p, self.training, generator)
        x = self.norm(x.reshape(len(h), self.base, self.h0, self.w0))
        for up in self.ups:
            x = up(x)
        return self.out(x)


# -- MindEye2's blurry branch: a diffusers-style VAE decoder ---------------------------------------
class _ResnetBlock(nn.Module):
    """diffusers ``ResnetBlock2D``, no time embedding: ``shortcut(x) + conv2(SiLU(GN(conv1(SiLU(GN(x))))))``.

    GroupNorms: ``groups`` groups, eps 1e-6; ``shortcut`` is a 1×1 conv when the widths differ.
    """

    def __init__(self, c_in: int, c_out: int, groups: int, device: Any) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=1e-6, device=device)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, device=device)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=1e-6, device=device)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, device=device)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1, device=device) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class _Attention(nn.Module):
    """diffusers ``Attention`` of a VAE mid block: one head over the ``H·W`` positions, residual."""

    def __init__(self, c: int, groups: int, device: Any) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-6, device=device)
        self.to_q = nn.Linear(c, c, device=device)
        self.to_k = nn.Linear(c, c, device=device)
        self.to_v = nn.Linear(c, c, device=device)
        self.to_out = nn.ModuleList([nn.Linear(c, c, device=device)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        u = self.group_norm(x).reshape(b, c, height * width).transpose(1, 2)
        q, k, v = (proj(u)[:, None] for proj in (self.to_q, self.to_k, self.to_v))   # (B, 1 head, HW, C)
        a = F.scaled_dot_product_attention(q, k, v)
        out = self.to_out[0](a[:, 0]).transpose(1, 2).reshape(b, c, height, width)
        return out + x


class _MidBlock(nn.Module):
    def __init__(self, c: int, groups: int, device: Any) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_ResnetBlock(c, c, groups, device) for _ in range(2)])
        self.attentions = nn.ModuleList([_Attention(c, groups, device)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class _Upsample(nn.Module):
    def __init__(self, c: int, device: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _UpDecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_layers: int, upsample: bool, groups: int,
                 device: Any) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_ResnetBlock(c_in if i == 0 else c_out, c_out, groups, device)
                                      for i in range(n_layers)])
        self.upsamplers = nn.ModuleList([_Upsample(c_out, device)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class VAEDecoder(nn.Module):
    """diffusers' VAE ``Decoder`` (``UpDecoderBlock2D`` blocks, mid-block attention), without diffusers.

    ``conv_in`` (3×3) → mid block (ResNet, single-head attention, ResNet) → one up block per width of
    ``reversed(block_out_channels)`` (``layers_per_block + 1`` ResNets, then nearest 2× upsampling and a 3×3
    conv except in the last) → GroupNorm → SiLU → ``conv_out`` (3×3). GroupNorms have ``norm_groups`` groups
    and eps 1e-6. Module names are diffusers' (``mid_block.attentions.0.to_q`` …), so a diffusers state dict
    loads as is.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out (MindEye2: 64 → 4).
    block_out_channels : tuple of int
        Widths, last = the widest (MindEye2: (32, 64, 128)); each a multiple of ``norm_groups``.
    layers_per_block : int
        MindEye2: 1 (two ResNets per up block).
    norm_groups : int
        GroupNorm groups (diffusers: 32).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 block_out_channels: tuple[int, ...] = (32, 64, 128), layers_per_block: int = 1,
                 norm_groups: int = 32, *, device: Any = None) -> None:
        super().__init__()
        widths = [_check_int("block_out_channels", c) for c in block_out_channels]
        groups = _check_int("norm_groups", norm_groups)
        if not widths or any(c % groups for c in widths):
            raise ValueError(f"block_out_channels {tuple(block_out_channels)} must be multiples of "
                             f"norm_groups ({groups})")
        c_in, c_out = _check_int("in_channels", in_channels), _check_int("out_channels", out_channels)
        self.conv_in = nn.Conv2d(c_in, widths[-1], 3, padding=1, device=device)
        self.mid_block = _MidBlock(widths[-1], groups, device)
        rev, n = widths[::-1], _check_int("layers_per_block", layers_per_block) + 1
        self.up_blocks = nn.ModuleList([
            _UpDecoderBlock(rev[max(i - 1, 0)], c, n, i < len(rev) - 1, groups, device)
            for i, c in enumerate(rev)])
        self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=1e-6, device=device)
        self.conv_out = nn.Conv2d(widths[0], c_out, 3, padding=1, device=device)
        self.n_upsample = len(widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Decode ``(batch, in_channels, h, w)`` into ``(batch, out_channels, h · 2**n_upsample, …)``.

        Parameters
        ----------
        x : Tensor, shape (batch, in_channels, h, w)
            The latent grid.

        Returns
        -------
        out : Tensor, shape (batch, out_channels, h · 2**n_upsample, w · 2**n_upsample)
            The decoded map.
        """
        x = self.mid_block(self.conv_in(x))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


@register_head("vae_decoder")
class VAEDecoderHead(_LatentShapedHead):
    """MindEye2's blurry branch: backbone vector → SD-VAE latents through a diffusers-style VAE decoder.

    ``Linear(in_dim → base_channels · h₀ · w₀)`` (``blin1``) → dropout (``bdropout``, 0.3) → reshape
    ``(base_channels, h₀, w₀)`` → ``GroupNorm(1, base_channels)`` (``bnorm``) → :class:`VAEDecoder`
    (``bupsampler``) with ``h₀ = height / 2**(len(block_out_channels) - 1)``. MindEye2: 4096 → 64 × 7 × 7 →
    ``(4, 28, 28)`` latents already scaled by 0.18215 (decode with ``vae.decode(z / 0.18215)``); 14,599,012
    parameters (``blin1`` 12,848,192, ``bnorm`` 128, decoder 1,750,692). The original's ``b_maps_projector``
    (a training-only auxiliary output matched to ConvNeXt features) is not part of this head. MindEye1's
    low-level model (``Voxel2StableDiffusionModel``, ``ups_mode="4x"``) is the same with ``bias=False``, no
    dropout and widths ``(64, 128, 256)``: 4096 → 64 × 16 × 16 → ``(4, 64, 64)`` latents.

    Parameters
    ----------
    in_dim : int
        Backbone width.
    latent_shape : tuple of int
        ``(channels, height, width)``; height and width divisible by ``2**(len(block_out_channels) - 1)``.
    base_channels : int
        Channels of the first grid (MindEye2: 64).
    block_out_channels : tuple of int
        The decoder's widths (MindEye2: (32, 64, 128)).
    layers_per_block : int
        The decoder's ResNets per up block, minus one (MindEye2: 1).
    norm_groups : int
        The decoder's GroupNorm groups (MindEye2: 32).
    dropout : float
        Dropout after the linear layer (MindEye2: 0.3; MindEye1's autoencoder has none: 0).
    bias : bool
        Bias of the linear layer (MindEye2: True; MindEye1's autoencoder ``lin1``: False).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.
    """

    #: Small widths for the conformance suite (the published ones need multiples of 32 channels).
    conformance_kwargs: ClassVar[dict[str, Any]] = {"base_channels": 8, "block_out_channels": (8, 8, 16),
                                                    "norm_groups": 4}

    def __init__(self, in_dim: int, latent_shape: tuple[int, int, int] = (4, 28, 28), *,
                 base_channels: int = 64, block_out_channels: tuple[int, ...] = (32, 64, 128),
                 layers_per_block: int = 1, norm_groups: int = 32, dropout: float = 0.3, bias: bool = True,
                 device: Any = None) -> None:
        super().__init__()
        c, height, width = self.out_shape = _check_shape("latent_shape", latent_shape, 3)
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        f = 2 ** (len(tuple(block_out_channels)) - 1)
        if height % f or width % f:
            raise ValueError(f"latent_shape {self.out_shape}: height and width must be divisible by {f}")
        self.base, self.h0, self.w0 = _check_int("base_channels", base_channels), height // f, width // f
        self.p = _check_p("dropout", dropout)
        self.fc = nn.Linear(_check_int("in_dim", in_dim), self.base * self.h0 * self.w0, bias=bias,
                            device=device)
        self.norm = nn.GroupNorm(1, self.base, device=device)
        self.decoder = VAEDecoder(self.base, c, tuple(block_out_channels), layers_per_block, norm_groups,
                                  device=device)
        _maybe_init(self, device)

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map one batch of backbone outputs to VAE latents.

        Parameters
        ----------
        h : Tensor, shape (batch, in_dim)
            The backbone's output.
        generator : torch.Generator | None
            Source of the dropout mask in training mode (for reproducible training).

        Returns
        -------
        latents : Tensor, shape (batch, channels, height, width)
            The predicted latents.
        """
        x = _dropout(self.fc(h), self.p, self.training, generator)
        return self.decoder(self.norm(x.reshape(len(h), self.base, self.h0, self.w0)))


@register_head("text")
class TextHead(nn.Module):
    """Backbone vector → text-encoder token embeddings, flattened (MindBridge's ``head_text``).

    ``(LayerNorm →) Linear(in_dim → n_tokens · dim)``, returned as ``(batch, n_tokens · dim)`` in the
    token-major order of the target rows (CLIP ViT-L/14 text hidden states: 77 × 768). MindBridge predicts
    its image tokens with the pooled head and its text tokens with this one (``head_text``, a plain
    ``Linear(2048 → 59136)``: ``norm=False``).

    Parameters
    ----------
    in_dim : int
        Backbone width.
    text_shape : tuple of int
        ``(n_tokens, dim)`` of one target (CLIP ViT-L/14 text tokens: (77, 768)).
    norm : bool
        A LayerNorm before the Linear (default True); False: ``Linear`` alone, as MindBridge.
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    Output ``(batch, n_tokens · dim)``, in ``DecoderOutput.outputs["text"]``.
    """

    #: A small text shape for the conformance suite.
    conformance_kwargs: ClassVar[dict[str, Any]] = {"text_shape": (3, 4)}

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> TextHead:
        """Built by :class:`~neurodecode.models.BrainDecoder`: ``hidden_dim → text_shape``.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``hidden_dim``, ``device``).
        **kwargs
            Further keyword arguments of the class (the decoder's ``head_kwargs["text"]``: ``text_shape``,
            ``norm``).

        Returns
        -------
        head : TextHead
            The head, built on ``spec.device``.
        """
        return cls(spec.hidden_dim, device=spec.device, **kwargs)

    def __init__(self, in_dim: int, text_shape: tuple[int, int] = (77, 768), *, norm: bool = True,
                 device: Any = None) -> None:
        super().__init__()
        in_dim = _check_int("in_dim", in_dim)
        self.n_tokens, self.dim = _check_shape("text_shape", text_shape, 2)
        if not isinstance(norm, bool):
            raise ValueError(f"norm must be True or False, got {norm!r}")
        self.norm = nn.LayerNorm(in_dim, device=device) if norm else None
        self.proj = nn.Linear(in_dim, self.n_tokens * self.dim, device=device)
        self.out_shape = (self.n_tokens * self.dim,)
        _maybe_init(self, device)

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map one batch of backbone outputs to flattened text-token embeddings.

        Parameters
        ----------
        h : Tensor, shape (batch, in_dim)
            The backbone's output.
        generator : torch.Generator | None
            Unused (the head has no dropout); accepted for a common signature.

        Returns
        -------
        text : Tensor, shape (batch, n_tokens · dim)
            The predicted text tokens, flattened token-major.
        """
        return self.proj(h if self.norm is None else self.norm(h))
