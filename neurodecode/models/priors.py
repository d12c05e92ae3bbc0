"""Diffusion priors: denoise CLIP image tokens conditioned on brain tokens (MindEye1/2's DALL·E 2 prior).

A prior is the part of a :class:`~neurodecode.models.BrainDecoder` that turns what the pooled head's linear
layer predicts (brain tokens, ``(batch, num_tokens, dim)``) into a sample of the *image* tokens that a
generative model takes, by running a diffusion model backwards. :class:`DiffusionPrior` (registered as
``"dalle2"``) is the prior MindEye2 (``PriorNetwork`` + ``FlaggedCausalTransformer``, MedARC-AI/MindEyeV2
``src/models.py``) and MindEye1 (``VersatileDiffusionPriorNetwork``) build from lucidrains' DALLE2-pytorch
blocks (``dalle2_pytorch.py`` v1.15.6): a transformer over ``[brain tokens, time token, noisy image tokens +
learned positions]`` that predicts the clean image tokens, dalle2's noise schedules, and its DDPM / DDIM
samplers (``p_sample_loop``). Every detail that changes the numbers is reproduced literally: the
dtype-dependent LayerNorm eps (``1e-5`` for float32, ``1e-3`` otherwise), the final "stable" LayerNorm's
division by the signed maximum, T5 relative-position buckets with a null-key column, rotary embeddings on
the first ``min(rotary_dim, dim_head)`` features (adjacent pairs), cosine-similarity attention with one
shared key/value head and a learned null key/value, a float32 softmax, and DDIM on ``alphas_cumprod_prev``.

:class:`DiffusionPriorNetworkPrior` (registered as ``"dalle2_network"``) is dalle2's own
``DiffusionPriorNetwork`` + ``DiffusionPrior``, as MindEye1's 1×768 model (``BrainDiffusionPriorOld``, nousr's
LAION prior) uses them: the same layers (plus NormFormer's post-activation LayerNorm) under a causal mask,
over ``[null text encodings, brain vector, learned time embedding, noisy vector, learned query]``, the same
samplers, and the final division by ``image_embed_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import init_parameters_
from .registry import register_prior

if TYPE_CHECKING:
    from .registry import DecoderSpec

__all__ = ["BETA_SCHEDULES", "LEARNED_QUERY_MODES", "SCHEDULE_BUFFERS", "DiffusionPrior",
           "DiffusionPriorNetworkPrior", "noise_schedule"]

#: The 13 buffers of dalle2's ``NoiseScheduler``, in its registration (``state_dict``) order.
SCHEDULE_BUFFERS: tuple[str, ...] = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "p2_loss_weight")

#: dalle2's beta schedules.
BETA_SCHEDULES: tuple[str, ...] = ("cosine", "linear", "quadratic", "sigmoid", "jsd")

#: How ``PriorNetwork`` uses its ``learned_query`` (MindEye: ``"pos_emb"``).
LEARNED_QUERY_MODES: tuple[str, ...] = ("pos_emb", "token", "all_pos_emb", "none")


def _betas(beta_schedule: str, timesteps: int) -> torch.Tensor:
    """dalle2's ``*_beta_schedule(timesteps)`` (float64; ``jsd`` in float32, as there)."""
    if beta_schedule == "cosine":
        s = 0.008
        x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
        acp = torch.cos(((x / timesteps) + s) / (1 + s) * torch.pi * 0.5) ** 2
        acp = acp / acp[0]
        return torch.clip(1 - (acp[1:] / acp[:-1]), 0, 0.999)
    if beta_schedule == "jsd":
        return 1.0 / torch.linspace(timesteps, 1, timesteps)
    scale = 1000 / timesteps
    start, end = scale * 0.0001, scale * 0.02
    if beta_schedule == "linear":
        return torch.linspace(start, end, timesteps, dtype=torch.float64)
    if beta_schedule == "quadratic":
        return torch.linspace(start ** 0.5, end ** 0.5, timesteps, dtype=torch.float64) ** 2
    if beta_schedule == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, timesteps, dtype=torch.float64)) * (end - start) + start
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")


def noise_schedule(beta_schedule: str = "cosine", timesteps: int = 100) -> dict[str, torch.Tensor]:
    """The 13 buffers of dalle2's ``NoiseScheduler`` (computed as there, stored as float32).

    Parameters
    ----------
    beta_schedule : {"cosine", "linear", "quadratic", "sigmoid", "jsd"}
        The beta schedule (``"cosine"``: Nichol & Dhariwal's, ``s = 0.008``, betas clipped to 0.999).
    timesteps : int
        Number of diffusion steps ``T``.

    Returns
    -------
    buffers : dict of str → Tensor, shape (timesteps,)
        :data:`SCHEDULE_BUFFERS` in order: ``betas``, ``alphas_cumprod`` (ᾱ), ``alphas_cumprod_prev``
        (ᾱ shifted right, first 1), the ``sqrt``/``log`` forms, the posterior variance (its log clipped at
        1e-20) and mean coefficients, and ``p2_loss_weight`` (all ones: ``p2_loss_weight_gamma = 0``).
    """
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive int, got {timesteps!r}")
    betas = _betas(beta_schedule, int(timesteps))
    alphas = 1.0 - betas
    acp = torch.cumprod(alphas, dim=0)
    prev = F.pad(acp[:-1], (1, 0), value=1.0)
    post_var = betas * (1.0 - prev) / (1.0 - acp)
    values = (betas, acp, prev, torch.sqrt(acp), torch.sqrt(1.0 - acp), torch.log(1.0 - acp),
              torch.sqrt(1.0 / acp), torch.sqrt(1.0 / acp - 1), post_var,
              torch.log(post_var.clamp(min=1e-20)), betas * torch.sqrt(prev) / (1.0 - acp),
              (1.0 - prev) * torch.sqrt(alphas) / (1.0 - acp), (1 + acp / (1 - acp)) ** -0.0)
    return {name: v.to(torch.float32) for name, v in zip(SCHEDULE_BUFFERS, values)}


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class _GainNorm(nn.Module):
    """dalle2 ``LayerNorm``: gain only, biased variance, eps 1e-5 (float32) or 1e-3 (other dtypes).

    ``stable``: divide by the signed maximum over the features first (``x / x.amax(-1)``).
    """

    eps, fp16_eps = 1e-5, 1e-3

    def __init__(self, dim: int, stable: bool = False, device: Any = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device))
        self.stable = stable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps if x.dtype == torch.float32 else self.fp16_eps
        if self.stable:
            x = x / x.amax(dim=-1, keepdim=True).detach()
        var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=-1, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.weight


def _rotate(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """rotary-embedding-torch ``apply_rotary_emb``: the first ``angles.shape[-1]`` features, by pairs."""
    rd = angles.shape[-1]
    head, tail = t[..., :rd], t[..., rd:]
    pairs = head.reshape(*head.shape[:-1], rd // 2, 2)
    half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(head.shape)
    return torch.cat((head * angles.cos() + half * angles.sin(), tail), dim=-1)


class _Attention(nn.Module):
    """dalle2 ``Attention`` (cosine similarity, scale 16, one shared key/value head, a null key/value)."""

    scale = 16.0

    def __init__(self, dim: int, heads: int, dim_head: int, causal: bool, device: Any) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm = _GainNorm(dim, device=device)
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False, device=device)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False, device=device)
        self.null_kv = nn.Parameter(torch.empty(2, dim_head, device=device))
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False, device=device)
        self.out_norm = _GainNorm(dim, device=device)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[:2]
        x = self.norm(x)
        q, (k, v) = self.to_q(x), self.to_kv(x).chunk(2, dim=-1)
        q = q.reshape(b, n, self.heads, -1).transpose(1, 2) * self.scale
        q, k = _rotate(q, angles), _rotate(k, angles.to(k))
        nk, nv = (t.reshape(1, 1, -1).expand(b, 1, -1) for t in self.null_kv.unbind(dim=-2))
        k, v = torch.cat((nk, k), dim=-2), torch.cat((nv, v), dim=-2)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        q, k = q * math.sqrt(self.scale), k * math.sqrt(self.scale)
        sim = torch.einsum("bhid,bjd->bhij", q, k) + bias
        if self.causal:
            i, j = sim.shape[-2:]
            mask = torch.ones((i, j), dtype=torch.bool, device=x.device).triu(j - i + 1)
            sim = sim.masked_fill(mask, -torch.finfo(sim.dtype).max)
        attn = sim.softmax(dim=-1, dtype=torch.float32).type(sim.dtype)
        out = torch.einsum("bhij,bjd->bhid", attn, v).transpose(1, 2).reshape(b, n, -1)
        return self.out_norm(self.to_out(out))


class _FeedForward(nn.Module):
    """dalle2 ``FeedForward``: gain-only LayerNorm → Linear(dim → 2·inner) → SwiGLU → Linear(inner → dim).

    ``post_norm`` (``post_activation_norm``, NormFormer): a gain-only LayerNorm(inner) after the SwiGLU.
    """

    def __init__(self, dim: int, inner: int, device: Any, post_norm: bool = False) -> None:
        super().__init__()
        self.norm = _GainNorm(dim, device=device)
        self.fc1 = nn.Linear(dim, 2 * inner, bias=False, device=device)
        self.post_norm = _GainNorm(inner, device=device) if post_norm else None
        self.fc2 = nn.Linear(inner, dim, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, gate = self.fc1(self.norm(x)).chunk(2, dim=-1)
        h = u * F.silu(gate)
        return self.fc2(self.post_norm(h) if self.post_norm is not None else h)


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, inner: int, causal: bool, device: Any,
                 normformer: bool = False) -> None:
        super().__init__()
        self.attn = _Attention(dim, heads, dim_head, causal, device)
        self.ff = _FeedForward(dim, inner, device, post_norm=normformer)


class _TimeMLP(nn.Module):
    """dalle2 ``MLP(dim, dim)``: Linear(dim → 2·dim) → SiLU → Linear(2·dim → 2·dim) → SiLU → Linear(→ dim)."""

    def __init__(self, dim: int, device: Any) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim, device=device)
        self.fc2 = nn.Linear(2 * dim, 2 * dim, device=device)
        self.fc3 = nn.Linear(2 * dim, dim, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.promote_types(torch.float32, self.fc1.weight.dtype))   # the original's x.float()
        return self.fc3(F.silu(self.fc2(F.silu(self.fc1(x)))))


class _Schedule(nn.Module):
    """The 13 noise-schedule buffers (persistent, as dalle2's ``noise_scheduler``)."""

    def __init__(self, beta_schedule: str, timesteps: int, device: Any) -> None:
        super().__init__()
        for name, value in noise_schedule(beta_schedule, timesteps).items():
            self.register_buffer(name, value.to(device))


class _Dalle2Sampling(nn.Module):
    """What dalle2's priors share: the T5 position bias, the rotary angles, ``p_sample_loop`` (DDIM / DDPM).

    A subclass defines ``dim``, ``num_tokens``, ``timesteps``, ``predict_x_start``, ``rel_pos_buckets``,
    ``rel_pos_max_distance``, ``rel_pos_bias``, ``rotary_freqs``, ``schedule`` and ``forward(x, t, cond, *,
    drop_cond)``; it may override :meth:`_clamp_x_start` (applied to each x₀ prediction) and :meth:`_finish`
    (applied to the sample).
    """

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, **kwargs: Any) -> _Dalle2Sampling:
        """Built by :class:`~neurodecode.models.BrainDecoder` from its ``prior_kwargs``.

        Parameters
        ----------
        spec : DecoderSpec
            What the decoder tells its parts (``device``).
        **kwargs
            The constructor's arguments.

        Returns
        -------
        prior : nn.Module
            The registered prior class, built on ``spec.device``.
        """
        return cls(device=spec.device, **kwargs)

    dim: int
    num_tokens: int
    timesteps: int
    predict_x_start: bool
    rel_pos_buckets: int
    rel_pos_max_distance: int

    def _default_freqs(self) -> torch.Tensor:
        """Rotary frequencies ``1 / 10000^(2j / rotary_dim)`` (rotary-embedding-torch's defaults)."""
        r = self.rotary_dim
        return 1.0 / (10000 ** (torch.arange(0, r, 2)[: r // 2].float() / r))

    def _init_layers(self, generator: torch.Generator | None) -> None:
        """dalle2's initialisation of the layers: Linear defaults, unit gains, normal null key / value."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_parameters_(m, generator)
            elif isinstance(m, _GainNorm):
                nn.init.ones_(m.weight)
            elif isinstance(m, _Attention):
                m.null_kv.normal_(generator=generator)

    def _clamp_x_start(self, x_start: torch.Tensor) -> torch.Tensor:
        return x_start

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def attention_bias(self, n: int) -> torch.Tensor:
        """T5 relative-position bias of ``n`` queries over the null key and ``n`` keys (``RelPosBias``).

        Parameters
        ----------
        n : int
            Number of tokens.

        Returns
        -------
        bias : Tensor, shape (heads, n, n + 1)
            ``rel_pos_bias[bucket(max(i - j, 0)), h]`` for query ``i`` and key column ``j`` (column 0: the
            null key).
        """
        device = self.rel_pos_bias.device
        q_pos = torch.arange(n, dtype=torch.long, device=device)
        k_pos = torch.arange(n + 1, dtype=torch.long, device=device)
        d = torch.clamp(q_pos[:, None] - k_pos[None, :], min=0)
        exact = self.rel_pos_buckets // 2
        log_ratio = torch.log(d.clamp(min=1).float() / exact)      # d = 0 lies in the exact range: unused
        large = exact + (log_ratio / math.log(self.rel_pos_max_distance / exact)
                         * (self.rel_pos_buckets - exact)).long()
        bucket = torch.where(d < exact, d, torch.clamp(large, max=self.rel_pos_buckets - 1))
        return F.embedding(bucket, self.rel_pos_bias).permute(2, 0, 1)

    def rotary_angles(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        """Rotary angles of positions ``0 … n − 1``, each frequency repeated for its pair of features.

        Parameters
        ----------
        n : int
            Number of tokens.
        dtype : torch.dtype
            The queries' dtype (positions are made in it, then cast to the frequencies' dtype).

        Returns
        -------
        angles : Tensor, shape (n, min(rotary_dim, dim_head))
            ``p · freqs[j]`` at columns ``2j`` and ``2j + 1``.
        """
        pos = torch.arange(n, device=self.rotary_freqs.device, dtype=dtype)
        angles = torch.einsum("n,f->nf", pos.type(self.rotary_freqs.dtype), self.rotary_freqs)
        return angles.repeat_interleave(2, dim=-1)

    def _check_tokens(self, name: str, x: torch.Tensor) -> None:
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.num_tokens, self.dim):
            raise ValueError(f"{name} must have shape (batch, {self.num_tokens}, {self.dim}), got "
                             f"{tuple(x.shape)}")

    # -- sampling --------------------------------------------------------------------------------
    def _buffer(self, name: str, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """dalle2 ``extract``: ``schedule.<name>[t]`` shaped to broadcast over ``like``."""
        values = getattr(self.schedule, name)
        t = torch.as_tensor(t, device=values.device).reshape(-1).expand(len(like))
        return values.gather(-1, t).reshape(len(like), *((1,) * (like.ndim - 1)))

    def predict_start(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor, *,
                      cond_scale: float = 1.0) -> torch.Tensor:
        """The clean tokens the network predicts at step ``t`` (``forward_with_cond_scale``, then x₀).

        Parameters
        ----------
        x : Tensor, shape (batch, num_tokens, dim)
            Noisy tokens.
        t : Tensor, shape (batch,) | int
            Timesteps.
        cond : Tensor, shape (batch, num_tokens, dim)
            Brain tokens.
        cond_scale : float
            Classifier-free guidance: ``null + (pred − null) · cond_scale`` (1: the conditional prediction).

        Returns
        -------
        x_start : Tensor, shape (batch, num_tokens, dim)
            The prediction itself (``predict_x_start``), else ``√(1/ᾱ) x − √(1/ᾱ − 1) ε`` clamped to [−1, 1].
        """
        pred = self(x, t, cond)
        if cond_scale != 1:
            null = self(x, t, cond, drop_cond=True)
            pred = null + (pred - null) * cond_scale
        if self.predict_x_start:
            return self._clamp_x_start(pred)
        x_start = self._buffer("sqrt_recip_alphas_cumprod", t, x) * x \
            - self._buffer("sqrt_recipm1_alphas_cumprod", t, x) * pred
        return x_start.clamp(-1.0, 1.0)

    def sampling_times(self, timesteps: int = 20) -> list[tuple[int, int]]:
        """The ``(t, t_next)`` pairs :meth:`sample` visits (``t_next = −1``: the last step returns x₀).

        Parameters
        ----------
        timesteps : int
            Sampling steps, ``1 … self.timesteps``; fewer than ``self.timesteps`` selects DDIM.

        Returns
        -------
        pairs : list of (int, int)
            DDIM: ``int(linspace(−1, T, timesteps + 1)[:-1])`` (float32, truncated) reversed, consecutive
            pairs (``timesteps − 1`` network calls); DDPM: ``(T − 1, T − 2), …, (0, −1)``.
        """
        timesteps = _check_int("timesteps", timesteps)
        if timesteps > self.timesteps:
            raise ValueError(f"timesteps={timesteps}: at most the prior's {self.timesteps} training steps")
        if timesteps == self.timesteps:
            return [(i, i - 1) for i in reversed(range(self.timesteps))]
        times = list(reversed(torch.linspace(-1.0, self.timesteps, steps=timesteps + 1)[:-1].int().tolist()))
        return list(zip(times[:-1], times[1:]))

    def ddim_step(self, x: torch.Tensor, t: int, t_next: int, cond: torch.Tensor, *,
                  noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  eta: float = 1.0, cond_scale: float = 1.0) -> torch.Tensor:
        """One step of dalle2's ``p_sample_loop_ddim``, from step ``t`` to ``t_next``.

        With ``ᾱ = alphas_cumprod_prev[t]``, ``ᾱ' = alphas_cumprod_prev[t_next]``, ``x₀`` the prediction and
        ``ε = (√(1/ᾱ_t) x − x₀) / √(1/ᾱ_t − 1)`` (``alphas_cumprod``): ``t_next < 0`` returns ``x₀``; else
        ``c₁ = η √((1 − ᾱ/ᾱ')(1 − ᾱ')/(1 − ᾱ))``, ``c₂ = √(1 − ᾱ' − c₁²)`` and the result is
        ``x₀ √ᾱ' + c₁ z + c₂ ε``, with ``z ~ N(0, I)`` when ``t_next > 0`` and 0 when ``t_next = 0``.

        Parameters
        ----------
        x : Tensor, shape (batch, num_tokens, dim)
            The current noisy tokens.
        t, t_next : int
            The step and the next one (a pair of :meth:`sampling_times`).
        cond : Tensor, shape (batch, num_tokens, dim)
            Brain tokens.
        noise : Tensor, shape (batch, num_tokens, dim) | None
            ``z`` (used only when ``t_next > 0``); None draws it from ``generator``.
        generator : torch.Generator | None
            Source of ``z`` when ``noise`` is None (None: the global RNG).
        eta : float
            DDIM stochasticity (dalle2 default and MindEye: 1).
        cond_scale : float
            Classifier-free guidance scale (:meth:`predict_start`).

        Returns
        -------
        x_next : Tensor, shape (batch, num_tokens, dim)
            The tokens at ``t_next`` (``x₀`` when ``t_next < 0``).
        """
        alphas = self.schedule.alphas_cumprod_prev
        t_cond = torch.full((len(x),), int(t), device=x.device, dtype=torch.long)
        x_start = self.predict_start(x, t_cond, cond, cond_scale=cond_scale)
        pred_noise = (self._buffer("sqrt_recip_alphas_cumprod", t_cond, x) * x - x_start) \
            / self._buffer("sqrt_recipm1_alphas_cumprod", t_cond, x)
        if t_next < 0:
            return x_start
        alpha, alpha_next = alphas[int(t)], alphas[int(t_next)]
        c1 = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
        c2 = ((1 - alpha_next) - torch.square(c1)).sqrt()
        z = 0.0
        if t_next > 0:
            z = noise if noise is not None else torch.randn(x.shape, generator=generator, device=x.device,
                                                            dtype=x.dtype)
        return x_start * alpha_next.sqrt() + c1 * z + c2 * pred_noise

    def ddpm_step(self, x: torch.Tensor, t: int, cond: torch.Tensor, *, noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, cond_scale: float = 1.0) -> torch.Tensor:
        """One step of dalle2's ``p_sample`` (ancestral DDPM): posterior mean plus noise (none at t = 0).

        Parameters
        ----------
        x : Tensor, shape (batch, num_tokens, dim)
            The tokens at step ``t``.
        t : int
            The step.
        cond : Tensor, shape (batch, num_tokens, dim)
            Brain tokens.
        noise : Tensor, shape (batch, num_tokens, dim) | None
            The posterior noise; None draws it from ``generator`` (drawn at t = 0 too, as there).
        generator : torch.Generator | None
            Source of the noise when ``noise`` is None.
        cond_scale : float
            Classifier-free guidance scale.

        Returns
        -------
        x_prev : Tensor, shape (batch, num_tokens, dim)
            ``coef1 · x₀ + coef2 · x + [t > 0] · exp(½ log σ²) · noise``.
        """
        t_cond = torch.full((len(x),), int(t), device=x.device, dtype=torch.long)
        x_start = self.predict_start(x, t_cond, cond, cond_scale=cond_scale)
        mean = self._buffer("posterior_mean_coef1", t_cond, x) * x_start \
            + self._buffer("posterior_mean_coef2", t_cond, x) * x
        log_var = self._buffer("posterior_log_variance_clipped", t_cond, x)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        nonzero = (1 - (t_cond == 0).float()).reshape(len(x), *((1,) * (x.ndim - 1)))
        return mean + nonzero * (0.5 * log_var).exp() * noise

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, *, timesteps: int = 20, generator: torch.Generator | None = None,
               noise: torch.Tensor | Sequence[torch.Tensor] | None = None, eta: float = 1.0,
               cond_scale: float = 1.0) -> torch.Tensor:
        """Sample image tokens given brain tokens (dalle2 ``p_sample_loop``, as MindEye2 calls it).

        Parameters
        ----------
        cond : Tensor, shape (batch, num_tokens, dim)
            Brain tokens.
        timesteps : int
            Sampling steps: fewer than the prior's ``timesteps`` runs DDIM over :meth:`sampling_times`
            (MindEye2: 20, i.e. 19 network calls), equal runs the full DDPM chain. :class:`DiffusionPrior`
            does not divide the result by an ``image_embed_scale`` (MindEye's override);
            :class:`DiffusionPriorNetworkPrior` does (dalle2's ``p_sample_loop``).
        generator : torch.Generator | None
            Source of every draw when ``noise`` is None (the initial tokens first, then each step's noise in
            order; DDIM draws none for a step that ends at ``t_next ≤ 0``).
        noise : Tensor, shape (n_pairs + 1, batch, num_tokens, dim) | sequence of Tensor | None
            Fixed draws: ``noise[0]`` is the initial ``x_T``, ``noise[i + 1]`` the noise of pair ``i`` of
            :meth:`sampling_times` (ignored where that step adds none).
        eta : float
            DDIM stochasticity.
        cond_scale : float
            Classifier-free guidance scale (1: none, MindEye2).

        Returns
        -------
        tokens : Tensor, shape (batch, num_tokens, dim)
            The sampled image tokens (the last step's ``x₀``; ÷ ``image_embed_scale`` where divided).
        """
        self._check_tokens("cond", cond)
        pairs = self.sampling_times(timesteps)
        ddpm = timesteps == self.timesteps
        if noise is not None and len(noise) != len(pairs) + 1:
            raise ValueError(f"noise must hold {len(pairs) + 1} draws (x_T, then one per step of "
                             f"sampling_times({timesteps})), got {len(noise)}")
        draw = (lambda i: noise[i].to(cond)) if noise is not None else \
            (lambda i: torch.randn(cond.shape, generator=generator, device=cond.device, dtype=cond.dtype))
        x = draw(0)
        for i, (t, t_next) in enumerate(pairs, start=1):
            if ddpm:
                x = self.ddpm_step(x, t, cond, noise=draw(i), cond_scale=cond_scale)
            else:
                z = draw(i) if t_next > 0 else None
                x = self.ddim_step(x, t, t_next, cond, noise=z, eta=eta, cond_scale=cond_scale)
        return self._finish(x)


@register_prior("dalle2")
class DiffusionPrior(_Dalle2Sampling):
    """MindEye's diffusion prior: DALLE2-pytorch's prior network and samplers over brain-conditioned tokens.

    The network (``forward``) reads ``[cond (num_tokens), time (1), x_noisy + learned_query (num_tokens)]``
    through ``depth`` pre-norm transformer layers and returns its last ``num_tokens`` outputs: the predicted
    clean image tokens (``predict_x_start``) or the predicted noise. :meth:`sample` runs dalle2's
    ``p_sample_loop``: DDIM (on ``alphas_cumprod_prev``) when ``timesteps`` is below the training
    ``timesteps``, else the full DDPM chain. MindEye2 samples with ``timesteps=20``, ``cond_scale=1``.

    Parameters
    ----------
    dim : int
        Token width (MindEye2: 1664, ViT-bigG/14 tokens; MindEye1: 768).
    depth : int
        Transformer layers.
    heads, dim_head : int
        Query heads and their width (``heads · dim_head`` need not equal ``dim``); keys and values have one
        head of ``dim_head`` shared by all query heads.
    num_tokens : int
        Image tokens (MindEye2: 256; MindEye1: 257); the conditioning has as many.
    timesteps : int
        Diffusion steps of training (MindEye: 100).
    ff_mult : float
        Feed-forward inner width ``int(ff_mult · dim)`` (SwiGLU: the first Linear gives twice that).
    rotary_dim : int
        Rotary embedding width; ``min(rotary_dim, dim_head)`` features are rotated (as dalle2's
        ``RotaryEmbedding(dim=min(32, dim_head))``), with ``min(rotary_dim, dim_head) // 2`` frequencies
        ``1 / 10000^(2j / width)`` shared by all layers.
    rel_pos_buckets, rel_pos_max_distance : int
        T5 relative-position buckets and the distance beyond which all share the last bucket.
    learned_query_mode : {"pos_emb", "token", "all_pos_emb", "none"}
        ``"pos_emb"``: ``learned_query (num_tokens, dim)`` is added to the noisy tokens (MindEye);
        ``"token"``: appended as ``num_tokens`` extra tokens, whose outputs are the prediction;
        ``"all_pos_emb"``: ``(2 · num_tokens + 1, dim)`` added to every token; ``"none"``.
    beta_schedule : {"cosine", "linear", "quadratic", "sigmoid", "jsd"}
        Noise schedule (:func:`noise_schedule`).
    predict_x_start : bool
        The network predicts the clean tokens (True, MindEye) or the noise.
    causal : bool
        Causal attention mask (MindEye: False).
    device : torch.device | str | None
        ``"meta"`` to build without allocating (a decoder then initialises it).

    Notes
    -----
    ``null_cond`` and ``null_input`` replace the conditioning and the noisy tokens for classifier-free
    guidance (``cond_scale != 1``); at ``cond_scale = 1`` they play no part.
    """

    #: dalle2 Attention's cosine-similarity scale.
    cosine_sim_scale: float = 16.0

    def __init__(self, dim: int = 1664, depth: int = 6, heads: int = 32, dim_head: int = 52,
                 num_tokens: int = 256, timesteps: int = 100, ff_mult: float = 4, rotary_dim: int = 32,
                 rel_pos_buckets: int = 32, rel_pos_max_distance: int = 128,
                 learned_query_mode: str = "pos_emb", beta_schedule: str = "cosine",
                 predict_x_start: bool = True, causal: bool = False, *, device: Any = None) -> None:
        super().__init__()
        self.dim = _check_int("dim", dim, 2)
        if self.dim % 2:
            raise ValueError(f"dim must be even (the sinusoidal time embedding has dim // 2 frequencies), "
                             f"got {dim}")
        self.depth, self.heads = _check_int("depth", depth, 0), _check_int("heads", heads)
        self.dim_head = _check_int("dim_head", dim_head)
        self.num_tokens = _check_int("num_tokens", num_tokens)
        self.timesteps = _check_int("timesteps", timesteps)
        self.rotary_dim = min(_check_int("rotary_dim", rotary_dim, 2), self.dim_head)
        if self.rotary_dim % 2:
            raise ValueError(f"min(rotary_dim, dim_head) must be even (features rotate in pairs), got "
                             f"{self.rotary_dim}")
        self.rel_pos_buckets = _check_int("rel_pos_buckets", rel_pos_buckets, 2)
        self.rel_pos_max_distance = _check_int("rel_pos_max_distance", rel_pos_max_distance,
                                               self.rel_pos_buckets // 2 + 1)
        if learned_query_mode not in LEARNED_QUERY_MODES:
            raise ValueError(f"learned_query_mode must be one of {LEARNED_QUERY_MODES}, got "
                             f"{learned_query_mode!r}")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
        self.learned_query_mode, self.beta_schedule = learned_query_mode, beta_schedule
        self.predict_x_start, self.causal = bool(predict_x_start), bool(causal)
        inner = int(ff_mult * self.dim)
        if inner < 1:
            raise ValueError(f"ff_mult must give a positive inner width int(ff_mult · dim), got {ff_mult!r}")
        self.ff_mult = ff_mult
        n_query = {"pos_emb": num_tokens, "token": num_tokens, "all_pos_emb": 2 * num_tokens + 1, "none": 0}
        self.learned_query = nn.Parameter(torch.empty(n_query[learned_query_mode], self.dim, device=device))
        self.null_cond = nn.Parameter(torch.empty(self.num_tokens, self.dim, device=device))
        self.null_input = nn.Parameter(torch.empty(self.num_tokens, self.dim, device=device))
        self.time_mlp = _TimeMLP(self.dim, device)
        self.rel_pos_bias = nn.Parameter(torch.empty(self.rel_pos_buckets, self.heads, device=device))
        self.register_buffer("rotary_freqs", self._default_freqs().to(device))
        self.layers = nn.ModuleList([_Layer(self.dim, self.heads, self.dim_head, inner, self.causal, device)
                                     for _ in range(self.depth)])
        self.norm = _GainNorm(self.dim, stable=True, device=device)
        self.project_out = nn.Linear(self.dim, self.dim, bias=False, device=device)
        self.schedule = _Schedule(beta_schedule, self.timesteps, device)
        if torch.device(device if device is not None else "cpu").type != "meta":
            init_parameters_(self, None)

    def _init_own_parameters(self, generator: torch.Generator | None) -> None:
        """dalle2's initialisation (normal draws, PyTorch Linear defaults, unit gains); buffers recomputed."""
        self._init_layers(generator)
        self.learned_query.normal_(generator=generator)
        if self.learned_query_mode in ("pos_emb", "all_pos_emb"):
            self.learned_query.mul_(self.dim ** -0.5)
        for p in (self.null_cond, self.null_input, self.rel_pos_bias):
            p.normal_(generator=generator)
        self.rotary_freqs.copy_(self._default_freqs())
        for name, value in noise_schedule(self.beta_schedule, self.timesteps).items():
            getattr(self.schedule, name).copy_(value)

    # -- the network ---------------------------------------------------------------------------
    def time_embedding(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``SinusoidalPosEmb(dim)`` of the timesteps cast to ``dtype``, then the time MLP: one token each.

        Parameters
        ----------
        t : Tensor, shape (batch,)
            Diffusion timesteps (integers).
        dtype : torch.dtype
            The noisy tokens' dtype (the original casts ``t`` to it).

        Returns
        -------
        token : Tensor, shape (batch, 1, dim)
            The time token.
        """
        t = t.type(dtype)
        half = self.dim // 2
        step = math.log(10000) / (half - 1) if half > 1 else 0.0
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=dtype) * -step)
        e = t[:, None] * freqs[None, :]
        return self.time_mlp(torch.cat((e.sin(), e.cos()), dim=-1).type(dtype))[:, None, :]

    def forward(self, x_noisy: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor, *,
                drop_cond: bool = False) -> torch.Tensor:
        """The prior network (``PriorNetwork.forward`` at drop probabilities 0, or 1 with ``drop_cond``).

        Parameters
        ----------
        x_noisy : Tensor, shape (batch, num_tokens, dim)
            Noisy image tokens at step ``t``.
        t : Tensor, shape (batch,) | int
            Diffusion timesteps.
        cond : Tensor, shape (batch, num_tokens, dim)
            The brain tokens.
        drop_cond : bool
            Replace ``cond`` and ``x_noisy`` by ``null_cond`` / ``null_input`` (classifier-free guidance).

        Returns
        -------
        pred : Tensor, shape (batch, num_tokens, dim)
            The predicted clean tokens (``predict_x_start``) or noise.
        """
        self._check_tokens("x_noisy", x_noisy)
        self._check_tokens("cond", cond)
        batch, dtype = len(x_noisy), x_noisy.dtype
        t = torch.as_tensor(t, device=x_noisy.device).reshape(-1).expand(batch)
        if drop_cond:
            cond = self.null_cond.to(cond.dtype)[None].expand_as(cond)
            x_noisy = self.null_input.to(dtype)[None].expand_as(x_noisy)
        time = self.time_embedding(t, dtype)
        query = self.learned_query[None].expand(batch, -1, -1)
        extra = x_noisy[:, :0]
        if self.learned_query_mode == "pos_emb":
            x_noisy = x_noisy + query
        elif self.learned_query_mode == "token":
            extra = query
        tokens = torch.cat((cond, time, x_noisy, extra), dim=-2)
        if self.learned_query_mode == "all_pos_emb":
            tokens = tokens + query
        n = tokens.shape[1]
        bias, angles = self.attention_bias(n), self.rotary_angles(n, tokens.dtype)
        for layer in self.layers:
            tokens = layer.attn(tokens, bias, angles) + tokens
            tokens = layer.ff(tokens) + tokens
        return self.project_out(self.norm(tokens))[:, -self.num_tokens:]


@register_prior("dalle2_network")
class DiffusionPriorNetworkPrior(_Dalle2Sampling):
    """dalle2's ``DiffusionPriorNetwork`` + ``DiffusionPrior``: MindEye1's 1×768 prior (nousr's LAION prior).

    MindEye1's ``BrainDiffusionPriorOld`` (MedARC-AI/fMRI-reconstruction-NSD ``src/models.py``) is dalle2's
    ``DiffusionPrior`` (dalle2-pytorch 1.14.2) around a ``DiffusionPriorNetwork`` built from nousr's
    ``prior_config.json`` (``dim=768, depth=12, num_timesteps=1000, dim_head=64, heads=12, ff_mult=4,
    normformer=True, rotary_emb=True, final_proj=True``, ``max_text_len=256``), with
    ``condition_on_text_encodings=False`` and voxel2clip's 768-d output passed as ``text_embed``. Its network
    reads one vector: the ``num_tokens × dim`` tokens here are flattened into one ``width = num_tokens · dim``
    vector (MindEye1: one 768-d token). :meth:`forward` runs the causal transformer over
    ``[max_text_len null text encodings, cond, time, x_noisy, learned_query]`` (the text encodings are always
    the learned null ones: MindEye1 passes none) and returns the last token's output. The time token is a
    learned ``Embedding(timesteps, width)`` (dalle2's choice when ``num_timesteps`` is given). The layers are
    :class:`DiffusionPrior`'s (the same attention, rotary and relative-position code) with causal attention
    and, with ``normformer``, a LayerNorm after the SwiGLU. :meth:`sample` is dalle2's ``p_sample_loop``
    followed by its division by ``image_embed_scale`` (MindEye1 samples with ``timesteps=1000``: the full
    DDPM chain).

    Parameters
    ----------
    dim : int
        Token width (MindEye1: 768, CLIP ViT-L/14).
    depth : int
        Transformer layers (nousr: 12).
    heads, dim_head : int
        Query heads and their width; one key/value head of ``dim_head``.
    num_tokens : int
        Tokens flattened into the network's one vector (MindEye1: 1).
    timesteps : int
        Diffusion steps of training, and rows of the time embedding (nousr: 1000).
    ff_mult : float
        Feed-forward inner width ``int(ff_mult · width)``.
    rotary_dim : int
        Rotary width: ``min(rotary_dim, dim_head)`` features rotated (dalle2: ``min(32, dim_head)``).
    rel_pos_buckets, rel_pos_max_distance : int
        T5 relative-position buckets (dalle2: 32, 128).
    max_text_len : int
        Learned null text-encoding tokens put first (MindEye1 sets 256).
    normformer : bool
        LayerNorm after the feed-forward activation (``post_activation_norm``; nousr: True).
    final_proj : bool
        Linear ``project_out`` after the final LayerNorm (nousr: True).
    beta_schedule : {"cosine", "linear", "quadratic", "sigmoid", "jsd"}
        Noise schedule (nousr: ``"cosine"``, dalle2's default).
    predict_x_start : bool
        The network predicts the clean vector (nousr: True) or the noise.
    image_embed_scale : float | None
        What samples are divided by at the end (None: ``√width``, dalle2's default, as MindEye1 has it).
    sampling_clamp_l2norm, sampling_final_clamp_l2norm : bool
        dalle2's options: L2-normalise (times ``image_embed_scale``) each x₀ prediction / the last sample
        (with ``predict_x_start``; MindEye1: False).
    device : torch.device | str | None
        ``"meta"`` to build without allocating.

    Notes
    -----
    ``null_cond`` (dalle2 ``null_text_embeds``) and ``null_input`` (``null_image_embed``) replace the
    conditioning and the noisy vector for classifier-free guidance (``cond_scale != 1``). Not reproduced:
    dalle2's continuous time embedding (``num_timesteps=None``), ``num_{text,image,time}_embeds > 1``,
    ``self_cond``, ``norm_in``, conditioning on text encodings and ``init_image_embed_l2norm``.
    """

    #: Small arguments for the conformance tests.
    conformance_kwargs: dict[str, Any] = {"depth": 1, "heads": 2, "dim_head": 4, "timesteps": 4,
                                          "max_text_len": 3}

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, dim_head: int = 64,
                 num_tokens: int = 1, timesteps: int = 1000, ff_mult: float = 4, rotary_dim: int = 32,
                 rel_pos_buckets: int = 32, rel_pos_max_distance: int = 128, max_text_len: int = 256,
                 normformer: bool = True, final_proj: bool = True, beta_schedule: str = "cosine",
                 predict_x_start: bool = True,
                 image_embed_scale: float | None = None, sampling_clamp_l2norm: bool = False,
                 sampling_final_clamp_l2norm: bool = False, *, device: Any = None) -> None:
        super().__init__()
        self.dim, self.num_tokens = _check_int("dim", dim), _check_int("num_tokens", num_tokens)
        self.width = self.dim * self.num_tokens
        self.depth, self.heads = _check_int("depth", depth, 0), _check_int("heads", heads)
        self.dim_head, self.timesteps = _check_int("dim_head", dim_head), _check_int("timesteps", timesteps)
        self.rotary_dim = min(_check_int("rotary_dim", rotary_dim, 2), self.dim_head)
        if self.rotary_dim % 2:
            raise ValueError(f"min(rotary_dim, dim_head) must be even (features rotate in pairs), got "
                             f"{self.rotary_dim}")
        self.rel_pos_buckets = _check_int("rel_pos_buckets", rel_pos_buckets, 2)
        self.rel_pos_max_distance = _check_int("rel_pos_max_distance", rel_pos_max_distance,
                                               self.rel_pos_buckets // 2 + 1)
        self.max_text_len = _check_int("max_text_len", max_text_len, 0)
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
        inner = int(ff_mult * self.width)
        if inner < 1:
            raise ValueError(f"ff_mult must give a positive inner width int(ff_mult · width), got "
                             f"{ff_mult!r}")
        self.ff_mult, self.beta_schedule = ff_mult, beta_schedule
        self.normformer, self.final_proj = bool(normformer), bool(final_proj)
        self.predict_x_start = bool(predict_x_start)
        self.image_embed_scale = (float(image_embed_scale) if image_embed_scale is not None
                                  else self.width ** 0.5)
        self.sampling_clamp_l2norm = bool(sampling_clamp_l2norm)
        self.sampling_final_clamp_l2norm = bool(sampling_final_clamp_l2norm)
        w = self.width
        self.learned_query = nn.Parameter(torch.empty(w, device=device))
        self.null_text_encodings = nn.Parameter(torch.empty(self.max_text_len, w, device=device))
        self.null_cond = nn.Parameter(torch.empty(w, device=device))
        self.null_input = nn.Parameter(torch.empty(w, device=device))
        self.time_embed = nn.Embedding(self.timesteps, w, device=device)
        self.rel_pos_bias = nn.Parameter(torch.empty(self.rel_pos_buckets, self.heads, device=device))
        self.register_buffer("rotary_freqs", self._default_freqs().to(device))
        self.layers = nn.ModuleList([_Layer(w, self.heads, self.dim_head, inner, True, device,
                                            self.normformer) for _ in range(self.depth)])
        self.norm = _GainNorm(w, stable=True, device=device)
        self.project_out = nn.Linear(w, w, bias=False, device=device) if self.final_proj else nn.Identity()
        self.schedule = _Schedule(beta_schedule, self.timesteps, device)
        if torch.device(device if device is not None else "cpu").type != "meta":
            init_parameters_(self, None)

    def _init_own_parameters(self, generator: torch.Generator | None) -> None:
        """dalle2's initialisation (``randn`` parameters and embedding, Linear defaults, unit gains)."""
        self._init_layers(generator)
        for p in (self.learned_query, self.null_text_encodings, self.null_cond, self.null_input,
                  self.time_embed.weight, self.rel_pos_bias):
            p.normal_(generator=generator)
        self.rotary_freqs.copy_(self._default_freqs())
        for name, value in noise_schedule(self.beta_schedule, self.timesteps).items():
            getattr(self.schedule, name).copy_(value)

    def forward(self, x_noisy: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor, *,
                drop_cond: bool = False) -> torch.Tensor:
        """``DiffusionPriorNetwork.forward`` (no text encodings; drop probabilities 0, 1 with ``drop_cond``).

        Parameters
        ----------
        x_noisy : Tensor, shape (batch, num_tokens, dim)
            The noisy vector at step ``t`` (dalle2's ``image_embed``), as tokens.
        t : Tensor, shape (batch,) | int
            Diffusion timesteps (integers: rows of the time embedding).
        cond : Tensor, shape (batch, num_tokens, dim)
            The brain tokens (dalle2's ``text_embed``).
        drop_cond : bool
            Replace ``cond`` and ``x_noisy`` by ``null_cond`` / ``null_input`` (classifier-free guidance).

        Returns
        -------
        pred : Tensor, shape (batch, num_tokens, dim)
            The last token's output: the predicted clean vector (``predict_x_start``) or noise.
        """
        self._check_tokens("x_noisy", x_noisy)
        self._check_tokens("cond", cond)
        batch, dtype = len(x_noisy), x_noisy.dtype
        image, text = x_noisy.reshape(batch, 1, self.width), cond.reshape(batch, 1, self.width)
        if drop_cond:
            text = self.null_cond.to(text.dtype).expand(batch, 1, -1)
            image = self.null_input.to(dtype).expand(batch, 1, -1)
        t = torch.as_tensor(t, device=x_noisy.device).reshape(-1).expand(batch).long()
        encodings = self.null_text_encodings.to(dtype)[None].expand(batch, -1, -1)
        query = self.learned_query[None, None].expand(batch, 1, -1)
        tokens = torch.cat((encodings, text, self.time_embed(t)[:, None], image, query), dim=-2)
        n = tokens.shape[1]
        bias, angles = self.attention_bias(n), self.rotary_angles(n, tokens.dtype)
        for layer in self.layers:
            tokens = layer.attn(tokens, bias, angles) + tokens
            tokens = layer.ff(tokens) + tokens
        out = self.project_out(self.norm(tokens))[:, -1]
        return out.reshape(batch, self.num_tokens, self.dim)

    def _l2norm(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), self.width)
        return (F.normalize(flat, dim=-1) * self.image_embed_scale).reshape(x.shape)

    def _clamp_x_start(self, x_start: torch.Tensor) -> torch.Tensor:
        return self._l2norm(x_start) if self.sampling_clamp_l2norm else x_start

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.sampling_final_clamp_l2norm and self.predict_x_start:
            x = self._l2norm(x)
        return x / self.image_embed_scale
