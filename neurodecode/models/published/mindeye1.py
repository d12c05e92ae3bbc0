"""MindEye1 (Scotti et al. 2023, MedARC-AI/fMRI-reconstruction-NSD ``src/models.py``) → BrainDecoder.

The published checkpoints (HF dataset ``pscotti/naturalscenesdataset``, ``mindeye_models/``) are
``torch.save({"model_state_dict": …, "optimizer_state_dict": …, …})`` files of three kinds, told apart by
their keys:

=========================================  ==============================================================
file (per subject 1, 2, 5, 7)              what ``model_state_dict`` holds
=========================================  ==============================================================
``prior_257_final_subjNN_…/last.pth``      ``BrainDiffusionPrior``: ``voxel2clip`` (``BrainNetwork``,
                                           ``lin1`` → 257 × 768) and the Versatile-Diffusion prior
                                           (``net.*``, ``noise_scheduler.*``)
``prior_1x768_final_subjNN_…/last.pth``    ``BrainDiffusionPriorOld``: ``voxel2clip`` (``lin1`` → 768) and
                                           dalle2's ``DiffusionPriorNetwork`` with nousr's LAION config
``autoencoder_subjNN_4x_…/epoch120.pth``   ``Voxel2StableDiffusionModel`` (the low-level model)
=========================================  ==============================================================

The model they become:

=============================================  ===========================================================
original                                       neurodecode (``BrainDecoder``)
=============================================  ===========================================================
``voxel2clip.lin0.{0, 1}``                     ``adapter.layers.<subject>.{linear, norm}`` (``linear_norm``
                                               adapter: Linear → LayerNorm → GELU → dropout 0.5)
``voxel2clip.mlp.k.{0, 1}``                    ``backbone.blocks.k.{linear, norm}`` (``postnorm_mlp``)
``voxel2clip.lin1``                            ``heads.pooled.proj`` (``PooledHead(norm=False)``)
``voxel2clip.projector.{0..8}``                ``heads.pooled.projector.{0..8}`` (per token, inner width
                                               2048, ``projector_tokens = 257``)
``net.*``, ``noise_scheduler.*`` (prior_257)   ``prior.*`` (``dalle2`` prior,
                                               :class:`~neurodecode.models.priors.DiffusionPrior`; see
                                               :mod:`~neurodecode.models.published.dalle2_prior`)
``net.*``, ``noise_scheduler.*`` (1×768)       ``prior.*`` (``dalle2_network`` prior,
                                               :class:`~neurodecode.models.priors.DiffusionPriorNetworkPrior`;
                                               :func:`~.dalle2_prior.map_network_prior`)
autoencoder ``lin0``, ``mlp``                  ``adapter``, ``backbone`` (no bias, SiLU, dropout 0.5 / 0.25)
autoencoder ``lin1``, ``norm``, ``upsampler``  ``heads.vae_decoder.{fc, norm, decoder}`` (``bias=False``,
                                               widths (64, 128, 256) → ``(4, 64, 64)`` SD-VAE latents)
autoencoder ``maps_projector``                 kept aside: training-only (its contrastive ``locont`` loss)
=============================================  ===========================================================

The pooled embedding is the projector output flattened (``257 × 768``), what MindEye1 scores retrieval with
(L2-normalised); ``model.heads["pooled"].tokens(h)`` (``(batch, 257, 768)``) is ``lin1``'s output, the
prior's conditioning, and ``model.sample_prior(x, subject, timesteps=...)`` samples CLIP ViT-L/14 image
tokens from the 257-token prior (``timesteps=100``, the prior's training steps, runs the full DDPM chain;
fewer, DDIM). The 1×768 files' prior is dalle2's own ``DiffusionPriorNetwork`` with nousr's LAION config
(:data:`NOUSR_DEFAULTS`: depth 12, 1000 timesteps and a learned time embedding, NormFormer, causal attention
over 256 learned null text encodings, ``lin1``'s 768-d output as ``text_embed``): ``model.sample_prior``
samples one 768-d CLIP image embedding per trial, divided by ``√768`` as dalle2's ``p_sample_loop`` does
(MindEye1 samples it with ``timesteps=1000``, the full DDPM chain). The autoencoder's model has no
retrieval output: its pooled head is the identity (the 4096-wide backbone output) and
``outputs["vae_decoder"]`` holds the latents. Old diffusers attention names (``query``, ``key``,
``value``, ``proj_attn``: diffusers 0.13, which MindEye1 pins) are accepted and renamed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..decoder import BrainDecoder
from .dalle2_prior import (
    infer_network_prior_config,
    map_network_prior,
    map_prior,
    network_prior_keys,
    network_prior_kwargs,
    prior_keys,
    prior_kwargs,
)
from .diffusers_decoder import decoder_keys, maps_projector_keys, new_attention_name
from .loading import read_checkpoint
from .mapping import StateMapper, check_keys, dim_of
from .mindeye2 import NSD_VOXELS

__all__ = ["KINDS", "MINDEYE1_DEFAULTS", "NOUSR_DEFAULTS", "PARTS", "build_mindeye1", "convert_mindeye1",
           "detect_kind", "load_mindeye1", "mindeye1_mapper", "original_mindeye1_keys"]

#: The three kinds of published MindEye1 files.
KINDS: tuple[str, ...] = ("prior_257", "prior_1x768", "autoencoder")

#: The published configurations (``src/Train_MindEye.py``, ``src/train_autoencoder.py``): ``BrainNetwork(
#: h=4096, n_blocks=4, clip_size=768, out_dim=257·768)``, projector width 2048; the 257-token prior
#: (``dim=768, depth=6, dim_head=64, heads=12, num_tokens=257``, 100 timesteps, rotary dim 32);
#: the autoencoder ``Voxel2StableDiffusionModel(h=4096, n_blocks=4, use_cont=True, ups_mode="4x")``.
MINDEYE1_DEFAULTS: dict[str, Any] = dict(voxels=15724, hidden_dim=4096, n_blocks=4, clip_dim=768,
                                         n_tokens=257, projector_dim=2048, prior_depth=6, prior_dim_head=64,
                                         prior_heads=12, timesteps=100, rotary_dim=32, base_channels=64,
                                         side=16, block_out_channels=(64, 128, 256), latent_channels=4,
                                         attention_names="query", maps_projector=True)

_SCHEDULE = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
             "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
             "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
             "posterior_mean_coef1", "posterior_mean_coef2", "p2_loss_weight")
_PRIOR_REASON = "diffusion prior (VersatileDiffusionPriorNetwork): not requested (parts=...)"
_NOUSR_REASON = ("diffusion prior (dalle2 DiffusionPriorNetwork, nousr LAION config): not requested "
                 "(parts=...)")
_MAPS_REASON = ("training-only auxiliary output (maps_projector: the autoencoder's contrastive 'locont' loss "
                "on ConvNeXt features), not used at inference")

#: What the 1×768 files' prior changes in :data:`MINDEYE1_DEFAULTS`: nousr's ``prior_config.json``
#: (``depth 12, heads 12, dim_head 64, num_timesteps 1000, normformer, final_proj``) with MindEye1's
#: ``max_text_len = 256`` (``BrainDiffusionPriorOld.from_pretrained``).
NOUSR_DEFAULTS: dict[str, Any] = dict(prior_depth=12, prior_dim_head=64, prior_heads=12, timesteps=1000,
                                      rotary_dim=32, max_text_len=256, normformer=True, final_proj=True)


def _voxel2clip_keys(c: dict[str, Any], p: str = "voxel2clip.") -> dict[str, tuple[int, ...]]:
    """``BrainNetwork(out_dim=n_tokens · clip_dim, in_dim=V, clip_size, h, n_blocks, use_projector=True)``."""
    h, d, w = c["hidden_dim"], c["clip_dim"], c["projector_dim"]
    keys = {p + "lin0.0.weight": (h, int(c["voxels"])), p + "lin0.0.bias": (h,), p + "lin0.1.weight": (h,),
            p + "lin0.1.bias": (h,)}
    for k in range(c["n_blocks"]):
        keys.update({f"{p}mlp.{k}.0.weight": (h, h), f"{p}mlp.{k}.0.bias": (h,), f"{p}mlp.{k}.1.weight": (h,),
                     f"{p}mlp.{k}.1.bias": (h,)})
    keys.update({p + "lin1.weight": (c["n_tokens"] * d, h), p + "lin1.bias": (c["n_tokens"] * d,)})
    for j, (n_in, n_out) in zip((0, 3, 6), ((d, w), (w, w), (w, d))):
        keys.update({f"{p}projector.{j}.weight": (n_in,), f"{p}projector.{j}.bias": (n_in,),
                     f"{p}projector.{j + 2}.weight": (n_out, n_in), f"{p}projector.{j + 2}.bias": (n_out,)})
    return keys


def _prior_config(c: dict[str, Any]) -> dict[str, Any]:
    """The :mod:`~neurodecode.models.published.dalle2_prior` configuration of the 257-token prior."""
    return dict(dim=c["clip_dim"], depth=c["prior_depth"], heads=c["prior_heads"],
                dim_head=c["prior_dim_head"], num_tokens=c["n_tokens"], timesteps=c["timesteps"],
                rotary_dim=c["rotary_dim"], ff_mult=4, rel_pos_buckets=32)


def _network_config(c: dict[str, Any]) -> dict[str, Any]:
    """The :func:`~neurodecode.models.published.dalle2_prior.network_prior_keys` configuration (1×768)."""
    return dict(dim=c["clip_dim"], depth=c["prior_depth"], heads=c["prior_heads"],
                dim_head=c["prior_dim_head"], timesteps=c["timesteps"], max_text_len=c["max_text_len"],
                ff_mult=4, rotary_dim=c["rotary_dim"], rel_pos_buckets=32, normformer=c["normformer"],
                final_proj=c["final_proj"])


def _autoencoder_keys(c: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """``Voxel2StableDiffusionModel(in_dim=V, h, n_blocks, use_cont, ups_mode="4x")``."""
    h, base = c["hidden_dim"], c["base_channels"]
    keys = {"lin0.0.weight": (h, int(c["voxels"])), "lin0.1.weight": (h,), "lin0.1.bias": (h,)}
    for k in range(c["n_blocks"]):
        keys.update({f"mlp.{k}.0.weight": (h, h), f"mlp.{k}.1.weight": (h,), f"mlp.{k}.1.bias": (h,)})
    keys.update({"lin1.weight": (base * c["side"] ** 2, h), "norm.weight": (base,), "norm.bias": (base,)})
    keys.update(decoder_keys("upsampler.", in_channels=base, block_out_channels=c["block_out_channels"],
                             out_channels=c["latent_channels"], attention_names=c["attention_names"]))
    if c["maps_projector"]:
        keys.update(maps_projector_keys("maps_projector.", base))
    return keys


def original_mindeye1_keys(kind: str = "prior_257", **config: Any) -> dict[str, tuple[int, ...]]:
    """A MindEye1 file's ``model_state_dict`` keys and shapes (written from the original constructors).

    Parameters
    ----------
    kind : {"prior_257", "prior_1x768", "autoencoder"}
        The file kind. ``"prior_1x768"``: ``voxel2clip`` with ``n_tokens = 1`` and dalle2's
        ``DiffusionPriorNetwork`` prior with :data:`NOUSR_DEFAULTS`
        (:func:`~neurodecode.models.published.dalle2_prior.network_prior_keys`).
    **config
        Overrides of :data:`MINDEYE1_DEFAULTS` (and, for ``"prior_1x768"``, of :data:`NOUSR_DEFAULTS`):
        ``voxels`` (the subject's voxel count), ``hidden_dim``, ``n_blocks``, ``clip_dim``, ``n_tokens``,
        ``projector_dim``; the prior's ``prior_depth``, ``prior_dim_head``, ``prior_heads``, ``timesteps``,
        ``rotary_dim`` (1×768 also ``max_text_len``, ``normformer``, ``final_proj``); the autoencoder's
        ``base_channels``, ``side`` (``lin1`` gives ``base_channels × side × side``),
        ``block_out_channels``, ``latent_channels``, ``attention_names`` (``"query"``: diffusers < 0.15, as
        published; ``"to_q"``), ``maps_projector``.

    Returns
    -------
    keys : dict of str → tuple of int
        Key → shape, in the original's ``state_dict()`` order.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: give one of {list(KINDS)}")
    c = {**MINDEYE1_DEFAULTS, **(NOUSR_DEFAULTS if kind == "prior_1x768" else {}), **config}
    if kind == "autoencoder":
        return _autoencoder_keys(c)
    if kind == "prior_1x768":
        c = {**c, "n_tokens": 1}
    keys = _voxel2clip_keys(c)
    if kind == "prior_257":   # BrainDiffusionPrior(VersatileDiffusionPriorNetwork(..., "pos_emb")): prefix ""
        keys.update(prior_keys("", **_prior_config(c)))
    else:   # BrainDiffusionPriorOld(DiffusionPriorNetwork(**nousr config)): prefix ""
        keys.update(network_prior_keys("", **_network_config(c)))
    return keys


def detect_kind(state: Mapping[str, torch.Tensor]) -> str:
    """Which MindEye1 file a state dict is, from its keys.

    Parameters
    ----------
    state : dict of str → Tensor
        A ``model_state_dict``.

    Returns
    -------
    kind : {"prior_257", "prior_1x768", "autoencoder"}
        ``voxel2clip.*`` with ``net.null_brain_embeds`` (the Versatile-Diffusion prior): ``"prior_257"``;
        ``voxel2clip.*`` without it: ``"prior_1x768"``; ``lin0.*`` and ``upsampler.*``: ``"autoencoder"``.
    """
    if any(k.startswith("voxel2clip.") for k in state):
        return "prior_257" if "net.null_brain_embeds" in state else "prior_1x768"
    if any(k.startswith("lin0.") for k in state) and any(k.startswith("upsampler.") for k in state):
        return "autoencoder"
    raise ValueError(f"the checkpoint is not a MindEye1 model: no voxel2clip.* keys (prior files) and no "
                     f"lin0.* + upsampler.* keys (autoencoder files); first keys: {list(state)[:6]}")


def _count(state: Mapping[str, torch.Tensor], prefix: str, position: int, default: int) -> int:
    found = {k.split(".")[position] for k in state if k.startswith(prefix)}
    found = {int(v) for v in found if v.isdigit()}
    return max(found) + 1 if found else default


def _infer_prior_config(state: Mapping[str, torch.Tensor], c: dict[str, Any]) -> dict[str, Any]:
    p, tr = "voxel2clip.", "net.causal_transformer."
    c["voxels"] = dim_of(state, p + "lin0.0.weight", 1, c["voxels"])
    c["hidden_dim"] = dim_of(state, p + "lin0.0.weight", 0, c["hidden_dim"])
    c["n_blocks"] = _count(state, p + "mlp.", 2, c["n_blocks"])
    c["clip_dim"] = dim_of(state, p + "projector.0.weight", 0, c["clip_dim"])
    c["projector_dim"] = dim_of(state, p + "projector.3.weight", 0, c["projector_dim"])
    width = dim_of(state, p + "lin1.weight", 0, c["n_tokens"] * c["clip_dim"])
    c["n_tokens"] = max(1, width // c["clip_dim"])
    c["prior_depth"] = _count(state, tr + "layers.", 3, c["prior_depth"])
    c["prior_dim_head"] = dim_of(state, tr + "layers.0.0.null_kv", 1, c["prior_dim_head"])
    c["prior_heads"] = dim_of(state, tr + "rel_pos_bias.relative_attention_bias.weight", 1, c["prior_heads"])
    c["timesteps"] = dim_of(state, "noise_scheduler.betas", 0, c["timesteps"])
    c["rotary_dim"] = 2 * dim_of(state, tr + "layers.0.0.rotary_emb.freqs", 0, c["rotary_dim"] // 2)
    return c


def _infer_autoencoder_config(state: Mapping[str, torch.Tensor], c: dict[str, Any]) -> dict[str, Any]:
    c["voxels"] = dim_of(state, "lin0.0.weight", 1, c["voxels"])
    c["hidden_dim"] = dim_of(state, "lin0.0.weight", 0, c["hidden_dim"])
    c["n_blocks"] = _count(state, "mlp.", 1, c["n_blocks"])
    c["base_channels"] = dim_of(state, "norm.weight", 0, c["base_channels"])
    side = math.isqrt(max(1, dim_of(state, "lin1.weight", 0, c["base_channels"] * c["side"] ** 2)
                          // c["base_channels"]))
    c["side"] = side
    n_up = _count(state, "upsampler.up_blocks.", 2, len(c["block_out_channels"]))
    rev = [dim_of(state, f"upsampler.up_blocks.{i}.resnets.1.conv1.weight", 0, 0) for i in range(n_up)]
    if all(rev):
        c["block_out_channels"] = tuple(rev[::-1])
    c["latent_channels"] = dim_of(state, "upsampler.conv_out.weight", 0, c["latent_channels"])
    c["attention_names"] = "query" if any(".attentions.0.query." in k for k in state) else "to_q"
    c["maps_projector"] = any(k.startswith("maps_projector.") for k in state)
    return c


_TRUNK = ("voxels", "hidden_dim", "n_blocks")
_FIELDS = {"prior_257": (*_TRUNK, "clip_dim", "n_tokens", "projector_dim", "prior_depth", "prior_dim_head",
                         "prior_heads", "timesteps", "rotary_dim"),
           "prior_1x768": (*_TRUNK, "clip_dim", "n_tokens", "projector_dim", "prior_depth", "prior_dim_head",
                           "prior_heads", "timesteps", "rotary_dim", "max_text_len", "normformer",
                           "final_proj"),
           "autoencoder": (*_TRUNK, "base_channels", "side", "block_out_channels", "latent_channels",
                           "attention_names", "maps_projector")}


def _infer_config(state: Mapping[str, torch.Tensor], kind: str) -> dict[str, Any]:
    """The configuration the file's shapes give (defaults where a key is missing: check_keys names it)."""
    c = {**MINDEYE1_DEFAULTS, **(NOUSR_DEFAULTS if kind == "prior_1x768" else {})}
    if kind == "autoencoder":
        c = _infer_autoencoder_config(state, c)
    else:
        c = _infer_prior_config(state, c)
    if kind == "prior_1x768":
        net = infer_network_prior_config(state, "")
        c.update(n_tokens=1, max_text_len=net["max_text_len"], normformer=net["normformer"],
                 final_proj=net["final_proj"])
    return {k: c[k] for k in _FIELDS[kind]}


def _subject(voxels: int, subject: Any) -> str:
    """The file's subject: given, or the NSD subject whose nsdgeneral voxel count the file has."""
    if subject is not None:
        return str(subject)
    by_count = {n: s for s, n in NSD_VOXELS.items()}
    if voxels not in by_count:
        raise ValueError(f"the file's first layer reads {voxels} voxels, which matches no NSD subject's "
                         f"nsdgeneral mask ({NSD_VOXELS}); pass subject=N (neurodecode evaluate: "
                         "--option subject=N)")
    return str(by_count[voxels])


#: Parts of a MindEye1 file: the prior files hold ``"retrieval"`` (``voxel2clip``) and ``"prior"``, the
#: autoencoder files ``"lowlevel"``.
PARTS: tuple[str, ...] = ("retrieval", "prior", "lowlevel")


def _present(kind: str) -> set[str]:
    return {"lowlevel"} if kind == "autoencoder" else {"retrieval", "prior"}


def _resolve_parts(parts: str | Sequence[str], kind: str) -> set[str]:
    present = _present(kind)
    requested = (present if parts == "all" else {parts}) if isinstance(parts, str) else set(parts)
    unknown = sorted(requested - set(PARTS))
    if unknown or not requested:
        raise ValueError(f"parts={parts!r}: give 'all' or a non-empty subset of {list(PARTS)}")
    absent = sorted(requested - present)
    if absent:
        raise ValueError(f"parts={parts!r} asks for {absent}, which this MindEye1 {kind} checkpoint does not "
                         f"hold (it holds {sorted(present)})")
    if "prior" in requested and "retrieval" not in requested:
        raise ValueError(f"parts={parts!r}: the prior is conditioned on voxel2clip's lin1 tokens; ask for "
                         "('retrieval', 'prior') or 'all'")
    return requested


def build_mindeye1(config: dict[str, Any], kind: str, subject: Any, prior: bool = False) -> BrainDecoder:
    """The neurodecode model of a MindEye1 file's reproduced parts for a configuration (random weights).

    Parameters
    ----------
    config : dict
        A full configuration (:data:`MINDEYE1_DEFAULTS` keys).
    kind : {"prior_257", "prior_1x768", "autoencoder"}
        The file kind.
    subject : int | str
        The subject the file was trained on.
    prior : bool
        Add the diffusion prior over the pooled head's ``n_tokens × clip_dim`` tokens: ``prior="dalle2"``
        (``prior_257`` files) or ``prior="dalle2_network"`` (``prior_1x768`` files, one 768-d token).

    Returns
    -------
    model : BrainDecoder
        Prior files: ``linear_norm`` adapter → ``postnorm_mlp`` backbone → pooled head ``Linear`` (no
        LayerNorm) → per-token :class:`~neurodecode.models.heads.Projector` (inner width ``projector_dim``),
        output ``(batch, n_tokens · clip_dim)``; with ``prior``, a
        :class:`~neurodecode.models.priors.DiffusionPrior` or
        :class:`~neurodecode.models.priors.DiffusionPriorNetworkPrior` (sampled with
        :meth:`~neurodecode.models.BrainDecoder.sample_prior`). Autoencoder files: the same adapter and
        backbone without bias and with SiLU, an identity pooled head and a
        :class:`~neurodecode.models.heads.VAEDecoderHead` (``bias=False``, no dropout).
    """
    c, h = config, config["hidden_dim"]
    common = dict(hidden_dim=h, n_blocks=c["n_blocks"], backbone="postnorm_mlp", adapter="linear_norm",
                  seed=0)
    if kind == "autoencoder":
        f = 2 ** (len(c["block_out_channels"]) - 1)
        shape = (c["latent_channels"], c["side"] * f, c["side"] * f)
        heads = {"pooled": {"identity": True},
                 "vae_decoder": {"base_channels": c["base_channels"],
                                 "block_out_channels": list(c["block_out_channels"]), "layers_per_block": 1,
                                 "norm_groups": 32, "dropout": 0.0, "bias": False}}
        return BrainDecoder({str(subject): int(c["voxels"])}, embed_dim=h, dropout=0.25, heads=tuple(heads),
                            lowlevel_shape=shape,
                            adapter_kwargs={"bias": False, "act": "silu", "dropout": 0.5},
                            backbone_kwargs={"bias": False, "act": "silu"}, head_kwargs=heads, **common)
    heads = {"pooled": {"norm": False, "projector": c["projector_dim"], "projector_tokens": c["n_tokens"]}}
    name, kwargs = None, None
    if prior and kind == "prior_1x768":
        name, kwargs = "dalle2_network", network_prior_kwargs(_network_config(c))
    elif prior:
        name, kwargs = "dalle2", prior_kwargs(_prior_config(c))
    return BrainDecoder({str(subject): int(c["voxels"])}, embed_dim=c["n_tokens"] * c["clip_dim"],
                        dropout=0.15, heads=tuple(heads), adapter_kwargs={"dropout": 0.5}, head_kwargs=heads,
                        prior=name, prior_kwargs=kwargs, **common)


def _map_trunk(m: StateMapper, p: str, subject: str, n_blocks: int, bias: bool) -> None:
    """``{p}lin0.{0, 1}`` → the adapter, ``{p}mlp.k.{0, 1}`` → the backbone's blocks."""
    ws = ("weight", "bias") if bias else ("weight",)
    for w in ws:
        m.put(f"adapter.layers.{subject}.linear.{w}", f"{p}lin0.0.{w}")
    for w in ("weight", "bias"):
        m.put(f"adapter.layers.{subject}.norm.{w}", f"{p}lin0.1.{w}")
    for k in range(n_blocks):
        for w in ws:
            m.put(f"backbone.blocks.{k}.linear.{w}", f"{p}mlp.{k}.0.{w}")
        for w in ("weight", "bias"):
            m.put(f"backbone.blocks.{k}.norm.{w}", f"{p}mlp.{k}.1.{w}")


def _map_autoencoder_head(m: StateMapper, keys: Mapping[str, tuple[int, ...]]) -> None:
    """``lin1`` / ``norm`` / ``upsampler.*`` → ``heads.vae_decoder.fc`` / ``norm`` / ``decoder.*``."""
    for key in keys:
        group, _, tail = key.partition(".")
        if group == "maps_projector":
            m.keep(key, _MAPS_REASON)
        elif group == "upsampler":
            m.put(f"heads.vae_decoder.decoder.{new_attention_name(tail)}", key)
        elif group in ("lin1", "norm"):
            m.put(f"heads.vae_decoder.{'fc' if group == 'lin1' else 'norm'}.{tail}", key)


def mindeye1_mapper(state: Mapping[str, torch.Tensor], config: dict[str, Any], kind: str, subject: Any,
                    parts: set[str]) -> StateMapper:
    """Place every original tensor: the requested parts into the model, the others aside with the reason.

    Parameters
    ----------
    state : dict of str → Tensor
        The checked original state dict.
    config : dict
        Its configuration (:func:`original_mindeye1_keys` arguments).
    kind : {"prior_257", "prior_1x768", "autoencoder"}
        The file kind.
    subject : int | str
        The file's subject.
    parts : set of str
        The parts to load (``{"retrieval"}``, ``{"retrieval", "prior"}`` or ``{"lowlevel"}``).

    Returns
    -------
    mapper : StateMapper
        ``target`` holds the neurodecode state dict, ``side`` the tensors kept aside.
    """
    m, s = StateMapper(state, "mindeye1"), str(subject)
    if kind == "autoencoder":
        _map_trunk(m, "", s, config["n_blocks"], bias=False)
        _map_autoencoder_head(m, _autoencoder_keys(config))
        return m
    p = "voxel2clip."
    _map_trunk(m, p, s, config["n_blocks"], bias=True)
    for w in ("weight", "bias"):
        m.put(f"heads.pooled.proj.{w}", f"{p}lin1.{w}")
        for j in (0, 2, 3, 5, 6, 8):
            m.put(f"heads.pooled.projector.{j}.{w}", f"{p}projector.{j}.{w}")
    if kind == "prior_1x768" and "prior" in parts:
        map_network_prior(m, "", "prior.", _network_config(config))
    elif kind == "prior_1x768":
        for key in network_prior_keys("", **_network_config(config)):
            m.keep(key, _NOUSR_REASON)
    elif "prior" in parts:
        map_prior(m, "", "prior.", _prior_config(config))
    else:
        for key in prior_keys("", **_prior_config(config)):
            m.keep(key, _PRIOR_REASON)
    return m


def convert_mindeye1(state: Mapping[str, torch.Tensor], *, parts: str | Sequence[str] = "all",
                     subject: Any = None) -> BrainDecoder:
    """Map a MindEye1 ``model_state_dict`` onto a new :class:`~neurodecode.models.BrainDecoder` (strictly).

    Parameters
    ----------
    state : dict of str → Tensor
        The original state dict (``checkpoint["model_state_dict"]``); its kind is read from its keys
        (:func:`detect_kind`).
    parts : "all" | "retrieval" | "lowlevel" | sequence of str
        What to load. ``"all"`` (default): every part the file holds — ``voxel2clip`` and the prior
        (``model.prior``, sampled with ``model.sample_prior``: the 257-token ``dalle2`` prior, or the 1×768
        files' ``dalle2_network`` prior). ``"retrieval"``: ``voxel2clip`` alone (the prior's tensors go to
        ``model.published["unused"]`` with the reason). Autoencoder files hold ``"lowlevel"`` only.
    subject : int | str | None
        The file's subject; None: the NSD subject whose nsdgeneral voxel count the file has.

    Returns
    -------
    model : BrainDecoder
        In eval mode; ``model.published`` holds the family, the kind, the configuration, the subject, the
        parts loaded and the tensors kept aside.

    Raises
    ------
    ValueError
        Not a MindEye1 file; unknown keys, missing keys or shapes that differ from the original's (a 1×768
        prior built with dalle2 options neurodecode does not reproduce, e.g. a continuous time embedding); a
        part that the file does not hold; prior schedule buffers that are not dalle2's cosine schedule for
        the file's ``timesteps``, or rotary frequencies that differ between layers.
    """
    kind = detect_kind(state)
    c = _infer_config(state, kind)
    check_keys(state, original_mindeye1_keys(kind, **c), family="mindeye1")
    requested = _resolve_parts(parts, kind)
    s = _subject(c["voxels"], subject)
    model = build_mindeye1(c, kind, s, prior="prior" in requested)
    m = mindeye1_mapper(state, c, kind, s, requested)
    m.load_into(model)
    model.eval()
    model.published = {"family": "mindeye1", "kind": kind, "config": c, "subject": s,
                       "parts": sorted(requested), "unused": m.side}
    return model


def load_mindeye1(path: str | Path, *, parts: str | Sequence[str] = "all",
                  subject: Any = None) -> BrainDecoder:
    """Read a MindEye1 checkpoint file (weights only) and map it onto a BrainDecoder.

    Parameters
    ----------
    path : str | Path
        ``mindeye_models/<folder>/last.pth`` or ``epoch120.pth`` (``{"model_state_dict": …}``, tensors and
        plain Python values only), a bare state dict, or a safetensors file.
    parts : "all" | str | sequence of str
        See :func:`convert_mindeye1`.
    subject : int | str | None
        See :func:`convert_mindeye1`.

    Returns
    -------
    model : BrainDecoder
        In eval mode, with ``model.published`` (see :func:`convert_mindeye1`; plus ``"path"``,
        ``"container"``).
    """
    state, where = read_checkpoint(path)
    model = convert_mindeye1(state, parts=parts, subject=subject)
    model.published.update(path=str(path), container=where)
    return model
