"""MindEye1/2's DALLE2-pytorch diffusion prior → :class:`~neurodecode.models.priors.DiffusionPrior`.

Both originals save a ``BrainDiffusionPrior`` (dalle2 ``DiffusionPrior``): its ``noise_scheduler`` (13
float32 buffers) and its ``net`` (MindEye2's ``PriorNetwork`` / MindEye1's ``VersatileDiffusionPriorNetwork``
around a ``FlaggedCausalTransformer``). MindEye2 nests it under ``diffusion_prior.``; MindEye1's files are the
prior itself (``net.*``, ``noise_scheduler.*``, next to ``voxel2clip.*``). The mapping, per layer ``k``:

=====================================================  ====================================================
original (under ``<src_prefix>``)                      ``DiffusionPrior`` (under ``<dst_prefix>``)
=====================================================  ====================================================
``noise_scheduler.<13 buffers>``                       ``schedule.<same names>`` (checked against a
                                                       recomputation of dalle2's schedule)
``net.learned_query``                                  ``learned_query``
``net.null_brain_embeds`` / ``net.null_image_embed``   ``null_cond`` / ``null_input``
``net.to_time_embeds.0.1.net.{0.0, 1.0, 2}``           ``time_mlp.{fc1, fc2, fc3}``
``net.causal_transformer.rel_pos_bias.``               ``rel_pos_bias`` (``[buckets, heads]``)
``relative_attention_bias.weight``
``….layers.k.0.rotary_emb.freqs`` (one shared module,  ``rotary_freqs`` (once; the copies must be equal)
listed per layer)
``….layers.k.0.{null_kv, norm.g, to_q, to_kv}``        ``layers.k.attn.{null_kv, norm.weight, to_q, to_kv}``
``….layers.k.0.to_out.{0, 1.g}``                       ``layers.k.attn.{to_out, out_norm.weight}``
``….layers.k.1.{0.g, 1, 5}``                           ``layers.k.ff.{norm.weight, fc1, fc2}``
``net.causal_transformer.{norm.g, project_out}``       ``{norm.weight, project_out}``
=====================================================  ====================================================

MindEye1's 1×768 files hold dalle2's own ``DiffusionPriorNetwork`` instead (nousr's LAION config,
:data:`NETWORK_PRIOR_DEFAULTS`) → :class:`~neurodecode.models.priors.DiffusionPriorNetworkPrior`
(:func:`network_prior_keys`, :func:`infer_network_prior_config`, :func:`map_network_prior`): the same
transformer keys, plus ``….layers.k.1.3.g`` (NormFormer) → ``layers.k.ff.post_norm.weight``,
``net.null_text_encodings`` / ``null_text_embeds`` / ``null_image_embed`` → ``null_text_encodings`` /
``null_cond`` / ``null_input`` (the leading singleton axes dropped) and ``net.to_time_embeds.0.weight`` (a
learned ``Embedding(timesteps, dim)``) → ``time_embed.weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..priors import SCHEDULE_BUFFERS, noise_schedule
from .mapping import StateMapper, dim_of

__all__ = ["NETWORK_PRIOR_DEFAULTS", "PRIOR_DEFAULTS", "check_schedule", "infer_network_prior_config",
           "infer_prior_config", "map_network_prior", "map_prior", "network_prior_keys",
           "network_prior_kwargs", "prior_keys", "prior_kwargs"]

#: MindEye2's prior (``PriorNetwork(dim=1664, depth=6, dim_head=52, heads=32, num_tokens=256)``,
#: ``timesteps=100``); MindEye1's is ``dim=768, heads=12, dim_head=64, num_tokens=257``.
PRIOR_DEFAULTS: dict[str, Any] = dict(dim=1664, depth=6, heads=32, dim_head=52, num_tokens=256, timesteps=100,
                                      rotary_dim=32, ff_mult=4, rel_pos_buckets=32)

#: Relative tolerance of the schedule check: float16 copies of the buffers (some published files store the
#: model in half precision) differ from the float32 recomputation by at most 2⁻¹¹ relative.
_SCHEDULE_RTOL, _SCHEDULE_ATOL = 1e-3, 1e-6

_TIME = (("0.0", "fc1"), ("1.0", "fc2"), ("2", "fc3"))
_ATTN = (("null_kv", "null_kv"), ("norm.g", "norm.weight"), ("to_q.weight", "to_q.weight"),
         ("to_kv.weight", "to_kv.weight"), ("to_out.0.weight", "to_out.weight"),
         ("to_out.1.g", "out_norm.weight"))
_FF = (("0.g", "norm.weight"), ("1.weight", "fc1.weight"), ("5.weight", "fc2.weight"))


def prior_keys(prefix: str, *, dim: int, depth: int, heads: int, dim_head: int, num_tokens: int,
               timesteps: int, rotary_dim: int, ff_mult: float = 4,
               rel_pos_buckets: int = 32) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of a ``BrainDiffusionPrior(PriorNetwork(..., learned_query_mode="pos_emb"))``.

    Parameters
    ----------
    prefix : str
        What the original puts before ``noise_scheduler.`` / ``net.`` (MindEye2: ``"diffusion_prior."``;
        MindEye1: ``""``).
    dim, depth, heads, dim_head, num_tokens, timesteps : int
        The prior's configuration (:class:`~neurodecode.models.priors.DiffusionPrior`).
    rotary_dim : int
        The rotary width asked for; ``min(rotary_dim, dim_head) // 2`` frequencies are stored.
    ff_mult : float
        Feed-forward multiplier (inner width ``int(ff_mult · dim)``).
    rel_pos_buckets : int
        Relative-position buckets.

    Returns
    -------
    keys : dict of str → tuple of int
        Key → shape, in the original's ``state_dict()`` order (the schedule buffers first).
    """
    keys: dict[str, tuple[int, ...]] = {f"{prefix}noise_scheduler.{n}": (timesteps,)
                                        for n in SCHEDULE_BUFFERS}
    n = prefix + "net."
    keys.update({n + name: (num_tokens, dim) for name in ("learned_query", "null_brain_embeds",
                                                          "null_image_embed")})
    t = n + "to_time_embeds.0.1.net."
    keys.update({t + "0.0.weight": (2 * dim, dim), t + "0.0.bias": (2 * dim,),
                 t + "1.0.weight": (2 * dim, 2 * dim), t + "1.0.bias": (2 * dim,),
                 t + "2.weight": (dim, 2 * dim), t + "2.bias": (dim,)})
    tr = n + "causal_transformer."
    keys[tr + "rel_pos_bias.relative_attention_bias.weight"] = (rel_pos_buckets, heads)
    inner, ff, rot = heads * dim_head, int(ff_mult * dim), min(rotary_dim, dim_head) // 2
    for k in range(depth):
        q = f"{tr}layers.{k}."
        keys.update({q + "0.null_kv": (2, dim_head), q + "0.norm.g": (dim,),
                     q + "0.to_q.weight": (inner, dim), q + "0.to_kv.weight": (2 * dim_head, dim),
                     q + "0.rotary_emb.freqs": (rot,),
                     q + "0.to_out.0.weight": (dim, inner), q + "0.to_out.1.g": (dim,),
                     q + "1.0.g": (dim,), q + "1.1.weight": (2 * ff, dim), q + "1.5.weight": (dim, ff)})
    keys.update({tr + "norm.g": (dim,), tr + "project_out.weight": (dim, dim)})
    return keys


def infer_prior_config(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """The prior configuration a file's shapes give (:data:`PRIOR_DEFAULTS` where a key is missing).

    Parameters
    ----------
    state : dict of str → Tensor
        The original state dict.
    prefix : str
        See :func:`prior_keys`.

    Returns
    -------
    config : dict
        ``dim``, ``depth``, ``heads``, ``dim_head``, ``num_tokens``, ``timesteps``, ``rotary_dim`` (twice the
        stored frequencies), ``ff_mult``, ``rel_pos_buckets``: the arguments of :func:`prior_keys`.
    """
    c = dict(PRIOR_DEFAULTS)
    n, tr = prefix + "net.", prefix + "net.causal_transformer."
    c["dim"] = dim_of(state, n + "learned_query", 1, c["dim"])
    c["num_tokens"] = dim_of(state, n + "learned_query", 0, c["num_tokens"])
    layers = {int(k[len(tr + "layers."):].split(".")[0]) for k in state if k.startswith(tr + "layers.")}
    c["depth"] = max(layers) + 1 if layers else 0 if any(k.startswith(n) for k in state) else c["depth"]
    c["dim_head"] = dim_of(state, tr + "layers.0.0.null_kv", 1, c["dim_head"])
    bias = tr + "rel_pos_bias.relative_attention_bias.weight"
    c["heads"] = dim_of(state, bias, 1, c["heads"])
    c["rel_pos_buckets"] = dim_of(state, bias, 0, c["rel_pos_buckets"])
    c["timesteps"] = dim_of(state, prefix + "noise_scheduler.betas", 0, c["timesteps"])
    c["rotary_dim"] = 2 * dim_of(state, tr + "layers.0.0.rotary_emb.freqs", 0, c["rotary_dim"] // 2)
    inner = dim_of(state, tr + "layers.0.1.5.weight", 1, int(c["ff_mult"] * c["dim"]))
    c["ff_mult"] = inner // c["dim"] if inner % c["dim"] == 0 else inner / c["dim"]
    return c


def prior_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~neurodecode.models.priors.DiffusionPrior` arguments of a configuration.

    Parameters
    ----------
    config : dict
        :func:`infer_prior_config`'s keys.

    Returns
    -------
    kwargs : dict
        The configuration plus what MindEye fixes: ``learned_query_mode="pos_emb"``, ``causal=False``,
        ``beta_schedule="cosine"``, ``predict_x_start=True``, ``rel_pos_max_distance=128``.
    """
    keys = ("dim", "depth", "heads", "dim_head", "num_tokens", "timesteps", "rotary_dim", "ff_mult",
            "rel_pos_buckets")
    return {**{k: config[k] for k in keys}, "rel_pos_max_distance": 128, "learned_query_mode": "pos_emb",
            "beta_schedule": "cosine", "predict_x_start": True, "causal": False}


def check_schedule(state: Mapping[str, torch.Tensor], prefix: str, timesteps: int,
                   beta_schedule: str = "cosine") -> None:
    """Refuse schedule buffers that are not dalle2's ``beta_schedule`` for ``timesteps`` (one message).

    Parameters
    ----------
    state : dict of str → Tensor
        The original state dict.
    prefix : str
        See :func:`prior_keys`.
    timesteps : int
        The training steps the configuration says.
    beta_schedule : str
        The schedule the original uses (MindEye: ``"cosine"``).
    """
    ref = noise_schedule(beta_schedule, timesteps)
    bad = []
    for name, want in ref.items():
        got = state[f"{prefix}noise_scheduler.{name}"].detach().to("cpu", torch.float32)
        if got.shape != want.shape:
            bad.append(f"{name}: {got.shape[0] if got.ndim == 1 else list(got.shape)} steps")
        elif not torch.allclose(got, want, rtol=_SCHEDULE_RTOL, atol=_SCHEDULE_ATOL):
            bad.append(f"{name}: max abs difference {float((got - want).abs().max()):.3g}")
    if bad:
        raise ValueError(f"the prior's noise schedule ({prefix}noise_scheduler.*) is not dalle2's "
                         f"{beta_schedule!r} schedule for timesteps={timesteps} (recomputed in float32): "
                         f"{'; '.join(bad[:4])}{f' (+{len(bad) - 4} more)' if len(bad) > 4 else ''}. A wrong "
                         "timesteps or another beta schedule would make every sampling step wrong; nothing "
                         "was loaded.")


def _same_freqs(*freqs: torch.Tensor) -> torch.Tensor:
    """The shared ``RotaryEmbedding``'s frequencies, listed once per layer: all copies must be equal."""
    differ = [k for k, f in enumerate(freqs) if not torch.equal(f, freqs[0])]
    if differ:
        raise ValueError(f"the prior's rotary frequencies (…layers.k.0.rotary_emb.freqs, one shared module "
                         f"in the original) differ between layer 0 and layers {differ}; nothing was loaded")
    return freqs[0]


def _put_rotary(mapper: StateMapper, d: str, tr: str, config: Mapping[str, Any]) -> None:
    """``rotary_freqs`` from the per-layer copies (all equal), or computed when there are no layers."""
    depth = int(config["depth"])
    if depth:
        mapper.put(d + "rotary_freqs", [f"{tr}layers.{k}.0.rotary_emb.freqs" for k in range(depth)],
                   convert=_same_freqs)
    else:   # no layer stores them: the values RotaryEmbedding computes
        r = min(int(config["rotary_dim"]), int(config["dim_head"]))
        mapper.target[d + "rotary_freqs"] = 1.0 / (10000 ** (torch.arange(0, r, 2)[: r // 2].float() / r))


def map_prior(mapper: StateMapper, src_prefix: str, dst_prefix: str, config: Mapping[str, Any]) -> None:
    """Place every tensor of the original prior at the :class:`~neurodecode.models.priors.DiffusionPrior`.

    Checks first that the schedule buffers are dalle2's cosine schedule for ``config["timesteps"]``
    (:func:`check_schedule`) and that the per-layer copies of the rotary frequencies are equal.

    Parameters
    ----------
    mapper : StateMapper
        The family's mapper (its ``state`` holds the original tensors).
    src_prefix : str
        The original prefix (``"diffusion_prior."``, or ``""``).
    dst_prefix : str
        The neurodecode prefix (``"prior."`` in a :class:`~neurodecode.models.BrainDecoder`).
    config : dict
        :func:`infer_prior_config`'s keys.
    """
    check_schedule(mapper.state, src_prefix, int(config["timesteps"]))
    s, d = src_prefix, dst_prefix
    for name in SCHEDULE_BUFFERS:
        mapper.put(f"{d}schedule.{name}", f"{s}noise_scheduler.{name}")
    n, tr = s + "net.", s + "net.causal_transformer."
    for src, dst in (("learned_query", "learned_query"), ("null_brain_embeds", "null_cond"),
                     ("null_image_embed", "null_input")):
        mapper.put(d + dst, n + src)
    for src, dst in _TIME:
        for w in ("weight", "bias"):
            mapper.put(f"{d}time_mlp.{dst}.{w}", f"{n}to_time_embeds.0.1.net.{src}.{w}")
    mapper.put(d + "rel_pos_bias", tr + "rel_pos_bias.relative_attention_bias.weight")
    depth = int(config["depth"])
    _put_rotary(mapper, d, tr, config)
    for k in range(depth):
        for src, dst in _ATTN:
            mapper.put(f"{d}layers.{k}.attn.{dst}", f"{tr}layers.{k}.0.{src}")
        for src, dst in _FF:
            mapper.put(f"{d}layers.{k}.ff.{dst}", f"{tr}layers.{k}.1.{src}")
    mapper.put(d + "norm.weight", tr + "norm.g")
    mapper.put(d + "project_out.weight", tr + "project_out.weight")


# -- dalle2's own DiffusionPriorNetwork (MindEye1's 1×768 prior, nousr's LAION config) -----------------------
#: nousr's ``vit-l-14/aesthetic/prior_config.json`` as MindEye1's ``BrainDiffusionPriorOld.from_pretrained``
#: builds it (``max_text_len = 256``; ``timesteps = 1000`` is also the time embedding's ``num_timesteps``).
NETWORK_PRIOR_DEFAULTS: dict[str, Any] = dict(dim=768, depth=12, heads=12, dim_head=64, timesteps=1000,
                                              max_text_len=256, ff_mult=4, rotary_dim=32, rel_pos_buckets=32,
                                              normformer=True, final_proj=True)

_NET_FF = (("0.g", "norm.weight"), ("1.weight", "fc1.weight"), ("5.weight", "fc2.weight"))


def network_prior_keys(prefix: str, *, dim: int, depth: int, heads: int, dim_head: int, timesteps: int,
                       max_text_len: int, ff_mult: float = 4, rotary_dim: int = 32, rel_pos_buckets: int = 32,
                       normformer: bool = True, final_proj: bool = True) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of dalle2's ``DiffusionPrior(DiffusionPriorNetwork(..., num_timesteps=T))``.

    ``num_{text,image,time}_embeds = 1`` (no ``to_text_embeds`` / ``to_image_embeds`` weights), a learned
    time embedding, ``norm_in=False``, ``norm_out=True``, ``rotary_emb=True``.

    Parameters
    ----------
    prefix : str
        What the original puts before ``noise_scheduler.`` / ``net.`` (MindEye1: ``""``).
    dim, depth, heads, dim_head, timesteps : int
        The network's width, layers, heads, head width, and the diffusion steps (also the time embedding's
        rows).
    max_text_len : int
        Rows of ``null_text_encodings``.
    ff_mult : float
        Feed-forward multiplier (inner width ``int(ff_mult · dim)``).
    rotary_dim : int
        The rotary width asked for; ``min(rotary_dim, dim_head) // 2`` frequencies are stored per layer.
    rel_pos_buckets : int
        Relative-position buckets.
    normformer : bool
        ``post_activation_norm``: a ``….1.3.g`` LayerNorm per layer.
    final_proj : bool
        ``causal_transformer.project_out``.

    Returns
    -------
    keys : dict of str → tuple of int
        Key → shape, in the original's ``state_dict()`` order (the schedule buffers first).
    """
    keys: dict[str, tuple[int, ...]] = {f"{prefix}noise_scheduler.{n}": (timesteps,)
                                        for n in SCHEDULE_BUFFERS}
    n, tr = prefix + "net.", prefix + "net.causal_transformer."
    keys.update({n + "learned_query": (dim,), n + "null_text_encodings": (1, max_text_len, dim),
                 n + "null_text_embeds": (1, 1, dim), n + "null_image_embed": (1, dim),
                 n + "to_time_embeds.0.weight": (timesteps, dim),
                 tr + "rel_pos_bias.relative_attention_bias.weight": (rel_pos_buckets, heads)})
    inner, ff, rot = heads * dim_head, int(ff_mult * dim), min(rotary_dim, dim_head) // 2
    for k in range(depth):
        q = f"{tr}layers.{k}."
        keys.update({q + "0.null_kv": (2, dim_head), q + "0.norm.g": (dim,),
                     q + "0.to_q.weight": (inner, dim), q + "0.to_kv.weight": (2 * dim_head, dim),
                     q + "0.rotary_emb.freqs": (rot,),
                     q + "0.to_out.0.weight": (dim, inner), q + "0.to_out.1.g": (dim,),
                     q + "1.0.g": (dim,), q + "1.1.weight": (2 * ff, dim)})
        if normformer:
            keys[q + "1.3.g"] = (ff,)
        keys[q + "1.5.weight"] = (dim, ff)
    keys[tr + "norm.g"] = (dim,)
    if final_proj:
        keys[tr + "project_out.weight"] = (dim, dim)
    return keys


def infer_network_prior_config(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """The ``DiffusionPriorNetwork`` configuration a file's shapes give (:data:`NETWORK_PRIOR_DEFAULTS`).

    Parameters
    ----------
    state : dict of str → Tensor
        The original state dict.
    prefix : str
        See :func:`network_prior_keys`.

    Returns
    -------
    config : dict
        The arguments of :func:`network_prior_keys` (``normformer`` / ``final_proj``: whether layer 0's
        ``1.3.g`` / ``project_out.weight`` are present, when the file has a ``net.*``).
    """
    c = dict(NETWORK_PRIOR_DEFAULTS)
    n, tr = prefix + "net.", prefix + "net.causal_transformer."
    c["dim"] = dim_of(state, n + "learned_query", 0, c["dim"])
    c["max_text_len"] = dim_of(state, n + "null_text_encodings", 1, c["max_text_len"])
    layers = {int(k[len(tr + "layers."):].split(".")[0]) for k in state if k.startswith(tr + "layers.")}
    has_net = any(k.startswith(n) for k in state)
    c["depth"] = max(layers) + 1 if layers else 0 if has_net else c["depth"]
    c["dim_head"] = dim_of(state, tr + "layers.0.0.null_kv", 1, c["dim_head"])
    bias = tr + "rel_pos_bias.relative_attention_bias.weight"
    c["heads"] = dim_of(state, bias, 1, c["heads"])
    c["rel_pos_buckets"] = dim_of(state, bias, 0, c["rel_pos_buckets"])
    c["timesteps"] = dim_of(state, prefix + "noise_scheduler.betas", 0, c["timesteps"])
    c["rotary_dim"] = 2 * dim_of(state, tr + "layers.0.0.rotary_emb.freqs", 0, c["rotary_dim"] // 2)
    inner = dim_of(state, tr + "layers.0.1.5.weight", 1, int(c["ff_mult"] * c["dim"]))
    c["ff_mult"] = inner // c["dim"] if inner % c["dim"] == 0 else inner / c["dim"]
    if has_net:
        c["normformer"] = tr + "layers.0.1.3.g" in state if c["depth"] else c["normformer"]
        c["final_proj"] = tr + "project_out.weight" in state
    return c


def network_prior_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~neurodecode.models.priors.DiffusionPriorNetworkPrior` arguments of a configuration.

    Parameters
    ----------
    config : dict
        :func:`infer_network_prior_config`'s keys.

    Returns
    -------
    kwargs : dict
        The configuration plus what dalle2 / MindEye1 fix: ``num_tokens=1``, ``beta_schedule="cosine"``,
        ``predict_x_start=True``, ``rel_pos_max_distance=128``, ``image_embed_scale=None`` (√dim), no
        L2-norm clamping.
    """
    keys = ("dim", "depth", "heads", "dim_head", "timesteps", "max_text_len", "ff_mult", "rotary_dim",
            "rel_pos_buckets", "normformer", "final_proj")
    return {**{k: config[k] for k in keys}, "num_tokens": 1, "rel_pos_max_distance": 128,
            "beta_schedule": "cosine", "predict_x_start": True, "image_embed_scale": None,
            "sampling_clamp_l2norm": False, "sampling_final_clamp_l2norm": False}


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``[1, L, dim]`` → ``[L, dim]``."""
    return t.reshape(-1, t.shape[-1])


def _vector(t: torch.Tensor) -> torch.Tensor:
    """``[1, 1, dim]`` or ``[1, dim]`` → ``[dim]``."""
    return t.reshape(-1)


def map_network_prior(mapper: StateMapper, src_prefix: str, dst_prefix: str,
                      config: Mapping[str, Any]) -> None:
    """Place every tensor of a dalle2 ``DiffusionPriorNetwork`` prior at the ``DiffusionPriorNetworkPrior``.

    Checks first that the schedule buffers are dalle2's cosine schedule for ``config["timesteps"]``
    (:func:`check_schedule`) and that the per-layer copies of the rotary frequencies are equal. Mapping:
    ``net.learned_query`` → ``learned_query``; ``net.null_text_encodings`` (``[1, L, dim]``) →
    ``null_text_encodings`` (``[L, dim]``); ``net.null_text_embeds`` / ``net.null_image_embed`` →
    ``null_cond`` / ``null_input`` (``[dim]``); ``net.to_time_embeds.0.weight`` → ``time_embed.weight``;
    the transformer as :func:`map_prior`'s, plus ``….layers.k.1.3.g`` → ``layers.k.ff.post_norm.weight``.

    Parameters
    ----------
    mapper : StateMapper
        The family's mapper (its ``state`` holds the original tensors).
    src_prefix : str
        The original prefix (MindEye1: ``""``).
    dst_prefix : str
        The neurodecode prefix (``"prior."`` in a :class:`~neurodecode.models.BrainDecoder`).
    config : dict
        :func:`infer_network_prior_config`'s keys.
    """
    check_schedule(mapper.state, src_prefix, int(config["timesteps"]))
    s, d = src_prefix, dst_prefix
    for name in SCHEDULE_BUFFERS:
        mapper.put(f"{d}schedule.{name}", f"{s}noise_scheduler.{name}")
    n, tr = s + "net.", s + "net.causal_transformer."
    mapper.put(d + "learned_query", n + "learned_query")
    for src, dst, convert in (("null_text_encodings", "null_text_encodings", _rows),
                              ("null_text_embeds", "null_cond", _vector),
                              ("null_image_embed", "null_input", _vector)):
        mapper.put(d + dst, n + src, convert=convert)
    mapper.put(d + "time_embed.weight", n + "to_time_embeds.0.weight")
    mapper.put(d + "rel_pos_bias", tr + "rel_pos_bias.relative_attention_bias.weight")
    _put_rotary(mapper, d, tr, config)
    ff = _NET_FF + ((("3.g", "post_norm.weight"),) if config["normformer"] else ())
    for k in range(int(config["depth"])):
        for src, dst in _ATTN:
            mapper.put(f"{d}layers.{k}.attn.{dst}", f"{tr}layers.{k}.0.{src}")
        for src, dst in ff:
            mapper.put(f"{d}layers.{k}.ff.{dst}", f"{tr}layers.{k}.1.{src}")
    mapper.put(d + "norm.weight", tr + "norm.g")
    if config["final_proj"]:
        mapper.put(d + "project_out.weight", tr + "project_out.weight")
