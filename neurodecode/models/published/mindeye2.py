"""MindEye2 (Scotti et al. 2024, MedARC-AI/MindEyeV2 ``src/models.py``, ``src/Train.ipynb``) → BrainDecoder.

The published checkpoints (HF dataset ``pscotti/mindeyev2``, ``train_logs/<name>/last.pth``) are
``torch.save({"model_state_dict": …, …})`` files of ``MindEyeModule``: the per-subject ``ridge``, the
``backbone`` (``BrainNetwork``: mixer, ``backbone_linear``, ``clip_proj``, the blurry branch) and the
``diffusion_prior``. The model they become:

===============================================  ===========================================================
original (``MindEyeModule``)                     neurodecode (``BrainDecoder``)
===============================================  ===========================================================
``ridge.linears.i``                              ``adapter.linears.<subject i>`` (``linear`` adapter)
``backbone.mixer_blocks1.k.{0, 1.0, 1.3}``       ``backbone.blocks.k.channel_mlp.{norm, fc1, fc2}``
``backbone.mixer_blocks2.k.{0, 1.0, 1.3}``       ``backbone.blocks.k.token_mlp.{norm, fc1, fc2}``
                                                 (``mindeye2`` backbone: the original's two-residual loop)
``backbone.backbone_linear``                     ``heads.pooled.proj`` (``PooledHead(norm=False)``)
``backbone.clip_proj.{0..8}``                    ``heads.pooled.projector.{0..8}`` (per token,
                                                 ``projector_tokens = 256``)
``backbone.blin1``, ``bnorm``                    ``heads.vae_decoder.fc``, ``norm`` (``vae_decoder`` head)
``backbone.bupsampler.*`` (diffusers Decoder)    ``heads.vae_decoder.decoder.*`` (same names)
``backbone.b_maps_projector.*``                  kept aside: training-only auxiliary output
``diffusion_prior.net.*``                        ``prior.*`` (``dalle2`` prior,
                                                 :class:`~neurodecode.models.priors.DiffusionPrior`; see
                                                 :mod:`~neurodecode.models.published.dalle2_prior`)
``diffusion_prior.noise_scheduler.*``            ``prior.schedule.*`` (checked against a recomputation)
===============================================  ===========================================================

The pooled embedding is ``clip_voxels.flatten(1)`` (``256 × 1664``), what MindEye2 scores retrieval with
(L2-normalised); ``model.heads["pooled"].tokens(h)`` (``(batch, 256, 1664)``) is its ``backbone`` output, the
diffusion prior's conditioning, and ``model.sample_prior(x, subject)`` samples ViT-bigG/14 image tokens from
the prior as the original's reconstruction does (``p_sample_loop(..., cond_scale=1., timesteps=20)``: DDIM,
19 network calls). By default (``parts="all"``) every part the file holds is loaded; ``parts="retrieval"``
or ``("retrieval", "blurry")`` (or with ``"prior"``) loads those and keeps the other tensors in
``model.published["unused"]`` with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..decoder import BrainDecoder
from .dalle2_prior import map_prior, prior_keys, prior_kwargs
from .diffusers_decoder import decoder_keys, maps_projector_keys, new_attention_name
from .loading import read_checkpoint
from .mapping import StateMapper, check_keys, dim_of

__all__ = ["DEEPSPEED_GLOBALS", "MINDEYE2_DEFAULTS", "NSD_VOXELS", "PARTS", "build_mindeye2",
           "convert_mindeye2", "load_mindeye2", "mindeye2_mapper", "original_mindeye2_keys"]

#: nsdgeneral voxels per NSD subject (``betas_all_subj0N_fp32_renorm.hdf5``; MindEyeV2 ``src/models.py``).
NSD_VOXELS: dict[int, int] = {1: 15724, 2: 14278, 3: 15226, 4: 13153, 5: 13039, 6: 17907, 7: 12682, 8: 14386}

#: The published ``final_*`` configuration (``src/Train.ipynb``: ``hidden_dim=4096``, ``n_blocks=4``,
#: ``seq_len=1``, ``clip_seq_dim=256``, ``clip_emb_dim=1664``, ``blurry_recon``, ``use_prior``).
MINDEYE2_DEFAULTS: dict[str, Any] = dict(voxels=(15724,), hidden_dim=4096, n_blocks=4, seq_len=1,
                                         n_tokens=256, clip_dim=1664, blurry=True, attention_names="to_q",
                                         prior=True, prior_depth=6, prior_dim_head=52, prior_heads=32,
                                         prior_tokens=256, timesteps=100, rotary_dim=32)

#: Parts of a MindEye2 checkpoint, all reproduced: ``"retrieval"`` (ridge → backbone → ``clip_proj``),
#: ``"blurry"`` (the low-level branch) and ``"prior"`` (the diffusion prior).
PARTS: tuple[str, ...] = ("retrieval", "blurry", "prior")
_PRIOR_REASON = "diffusion prior: not requested (parts=...)"
_BLURRY_REASON = "blurry (low-level) branch: not requested (parts=...)"
_AUX = "training-only auxiliary output (b_blurry's ConvNeXt-feature matching), not used at inference"

#: Pickled globals of the DeepSpeed-era file ``multisubject_subj01_1024hid_nolow_300ep`` (ZeRO optimizer
#: state, ``OneCycleLR`` pickled through a bound method): read as inert placeholders.
DEEPSPEED_GLOBALS: tuple[str, ...] = ("deepspeed.*", "torch.optim.lr_scheduler.OneCycleLR",
                                      "torch.optim.adamw.AdamW", "builtins.getattr", "__builtin__.getattr",
                                      "torch.float16")

def _retrieval_keys(c: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h, s, d = c["hidden_dim"], c["seq_len"], c["clip_dim"]
    keys: dict[str, tuple[int, ...]] = {}
    for i, v in enumerate(c["voxels"]):
        keys.update({f"ridge.linears.{i}.weight": (h, int(v)), f"ridge.linears.{i}.bias": (h,)})
    for group, w in (("mixer_blocks1", h), ("mixer_blocks2", s)):
        for k in range(c["n_blocks"]):
            p = f"backbone.{group}.{k}."
            keys.update({p + "0.weight": (w,), p + "0.bias": (w,), p + "1.0.weight": (w, w),
                         p + "1.0.bias": (w,), p + "1.3.weight": (w, w), p + "1.3.bias": (w,)})
    keys.update({"backbone.backbone_linear.weight": (c["n_tokens"] * d, h * s),
                 "backbone.backbone_linear.bias": (c["n_tokens"] * d,)})
    for j in (0, 2, 3, 5, 6, 8):
        keys.update({f"backbone.clip_proj.{j}.weight": (d,) if j % 3 == 0 else (d, d),
                     f"backbone.clip_proj.{j}.bias": (d,)})
    return keys


def _blurry_keys(c: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """``blin1``, ``bnorm``, diffusers ``Decoder(64 → 4, (32, 64, 128), 1)``, ``b_maps_projector``."""
    b = "backbone."
    keys: dict[str, tuple[int, ...]] = {b + "blin1.weight": (64 * 7 * 7, c["hidden_dim"] * c["seq_len"]),
                                        b + "blin1.bias": (64 * 7 * 7,), b + "bnorm.weight": (64,),
                                        b + "bnorm.bias": (64,)}
    keys.update(decoder_keys(b + "bupsampler.", in_channels=64, block_out_channels=(32, 64, 128),
                             out_channels=4, attention_names=c["attention_names"]))
    keys.update(maps_projector_keys(b + "b_maps_projector.", 64))
    return keys


def _prior_config(c: dict[str, Any]) -> dict[str, Any]:
    """The :mod:`~neurodecode.models.published.dalle2_prior` configuration of a MindEye2 configuration."""
    return dict(dim=c["clip_dim"], depth=c["prior_depth"], heads=c["prior_heads"],
                dim_head=c["prior_dim_head"], num_tokens=c["prior_tokens"], timesteps=c["timesteps"],
                rotary_dim=c["rotary_dim"], ff_mult=4, rel_pos_buckets=32)


def original_mindeye2_keys(**config: Any) -> dict[str, tuple[int, ...]]:
    """The ``MindEyeModule`` state-dict keys and shapes of a configuration (from the original constructors).

    Parameters
    ----------
    **config
        Overrides of :data:`MINDEYE2_DEFAULTS`: ``voxels`` (per ridge layer, in ridge order), ``hidden_dim``,
        ``n_blocks``, ``seq_len``, ``n_tokens``, ``clip_dim``, ``blurry`` (the blurry branch is there),
        ``attention_names`` (``"to_q"``: diffusers ≥ 0.15, ``"query"``: older), ``prior`` (the diffusion
        prior is there), ``prior_depth``, ``prior_dim_head``, ``prior_heads``, ``prior_tokens``,
        ``timesteps``, ``rotary_dim``.

    Returns
    -------
    keys : dict of str → tuple of int
        Key → shape, in the original's ``state_dict()`` order.
    """
    c = {**MINDEYE2_DEFAULTS, **config}
    keys = _retrieval_keys(c)
    if c["blurry"]:
        keys.update(_blurry_keys(c))
    if c["prior"]:
        keys.update(prior_keys("diffusion_prior.", **_prior_config(c)))
    return keys


def _infer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The configuration the file's shapes give (defaults where a key is missing: check_keys names it)."""
    c = dict(MINDEYE2_DEFAULTS)
    ridge = sorted({int(k.split(".")[2]) for k in state if k.startswith("ridge.linears.")})
    c["voxels"] = tuple(dim_of(state, f"ridge.linears.{i}.weight", 1, 0) for i in range(max(ridge) + 1)) \
        if ridge else c["voxels"]
    c["hidden_dim"] = dim_of(state, "ridge.linears.0.weight", 0, c["hidden_dim"])
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("backbone.mixer_blocks1.")}
    c["n_blocks"] = max(blocks) + 1 if blocks else c["n_blocks"]
    c["seq_len"] = dim_of(state, "backbone.mixer_blocks2.0.0.weight", 0, c["seq_len"])
    c["clip_dim"] = dim_of(state, "backbone.clip_proj.0.weight", 0, c["clip_dim"])
    c["n_tokens"] = max(1, dim_of(state, "backbone.backbone_linear.weight", 0, c["n_tokens"] * c["clip_dim"])
                        // c["clip_dim"])
    c["blurry"] = any(k.startswith(("backbone.blin1.", "backbone.bnorm.", "backbone.bupsampler.",
                                    "backbone.b_maps_projector.")) for k in state)
    c["attention_names"] = "query" if any(".attentions.0.query." in k for k in state) else "to_q"
    c["prior"] = any(k.startswith("diffusion_prior.") for k in state)
    tr = "diffusion_prior.net.causal_transformer."
    layers = {int(k.split(".")[4]) for k in state if k.startswith(tr + "layers.")}
    c["prior_depth"] = max(layers) + 1 if layers else c["prior_depth"]
    c["prior_dim_head"] = dim_of(state, tr + "layers.0.0.null_kv", 1, c["prior_dim_head"])
    c["prior_heads"] = dim_of(state, tr + "rel_pos_bias.relative_attention_bias.weight", 1, c["prior_heads"])
    c["prior_tokens"] = dim_of(state, "diffusion_prior.net.learned_query", 0, c["prior_tokens"])
    c["timesteps"] = dim_of(state, "diffusion_prior.noise_scheduler.betas", 0, c["timesteps"])
    c["rotary_dim"] = 2 * dim_of(state, tr + "layers.0.0.rotary_emb.freqs", 0, c["rotary_dim"] // 2)
    return c


def _subjects(voxels: Sequence[int], subjects: Sequence[Any] | None) -> list[str]:
    """Subject of each ridge layer: given, or the NSD subject whose nsdgeneral voxel count it has."""
    if subjects is not None:
        subjects = [str(s) for s in subjects]
        if len(subjects) != len(voxels) or len(set(subjects)) != len(subjects):
            raise ValueError(f"subjects={subjects}: the file has {len(voxels)} ridge layers (voxels "
                             f"{list(voxels)}); give one distinct subject per layer, in ridge order")
        return subjects
    by_count = {n: s for s, n in NSD_VOXELS.items()}
    unknown = [v for v in voxels if v not in by_count]
    if unknown:
        raise ValueError(f"ridge layers with {unknown} voxels match no NSD subject's nsdgeneral mask "
                         f"({NSD_VOXELS}); pass subjects=[...] (one per ridge layer, in ridge order; "
                         "neurodecode evaluate: --option subjects=[N,...])")
    return [str(by_count[v]) for v in voxels]


def _resolve_parts(parts: str | Sequence[str], c: dict[str, Any]) -> set[str]:
    present = {"retrieval"} | {p for p in ("blurry", "prior") if c[p]}
    if isinstance(parts, str):
        requested = present if parts == "all" else {parts}
    else:
        requested = set(parts)
    unknown = sorted(requested - set(PARTS))
    if unknown or "retrieval" not in requested:
        raise ValueError(f"parts={parts!r}: give 'all' or a subset of {list(PARTS)} that holds 'retrieval'")
    absent = sorted(requested - present)
    if absent:
        raise ValueError(f"parts={parts!r} asks for {absent}, which this checkpoint does not hold "
                         f"(it holds {sorted(present)})")
    return requested


def build_mindeye2(config: dict[str, Any], subjects: Sequence[Any], blurry: bool = False,
                   prior: bool = False) -> BrainDecoder:
    """The neurodecode model of MindEye2 for a configuration (random weights).

    Parameters
    ----------
    config : dict
        A full configuration (:data:`MINDEYE2_DEFAULTS` keys).
    subjects : sequence
        The subject of each ridge layer, in ridge order.
    blurry : bool
        Add the blurry branch as a ``vae_decoder`` head (``(4, 28, 28)`` SD-VAE latents).
    prior : bool
        Add the diffusion prior (``prior="dalle2"``) over the pooled head's ``n_tokens × clip_dim`` tokens.

    Returns
    -------
    model : BrainDecoder
        ``linear`` adapter → ``mindeye2`` backbone → pooled head ``Linear`` (no LayerNorm) → per-token
        :class:`~neurodecode.models.heads.Projector`, output ``(batch, n_tokens · clip_dim)``; with
        ``blurry``, a :class:`~neurodecode.models.heads.VAEDecoderHead` too; with ``prior``, a
        :class:`~neurodecode.models.priors.DiffusionPrior` (sampled with
        :meth:`~neurodecode.models.BrainDecoder.sample_prior`).
    """
    c = config
    heads = {"pooled": {"norm": False, "projector": True, "projector_tokens": c["n_tokens"]}}
    if blurry:
        heads["vae_decoder"] = {"base_channels": 64, "block_out_channels": [32, 64, 128],
                                "layers_per_block": 1, "norm_groups": 32, "dropout": 0.3}
    return BrainDecoder({str(s): int(v) for s, v in zip(subjects, c["voxels"])},
                        embed_dim=c["n_tokens"] * c["clip_dim"], hidden_dim=c["hidden_dim"] * c["seq_len"],
                        n_blocks=c["n_blocks"], dropout=0.15, backbone="mindeye2", adapter="linear", seed=0,
                        heads=tuple(heads), lowlevel_shape=(4, 28, 28) if blurry else None,
                        backbone_kwargs={"seq_len": c["seq_len"]}, head_kwargs=heads,
                        prior="dalle2" if prior else None,
                        prior_kwargs=prior_kwargs(_prior_config(c)) if prior else None)


def mindeye2_mapper(state: Mapping[str, torch.Tensor], config: dict[str, Any], subjects: Sequence[Any],
                    parts: set[str]) -> StateMapper:
    """Place every original tensor: the requested parts into the model, the others aside with the reason.

    Parameters
    ----------
    state : dict of str → Tensor
        The checked original state dict.
    config : dict
        Its configuration (:func:`original_mindeye2_keys` arguments).
    subjects : sequence
        The subject of each ridge layer.
    parts : set of str
        The parts to load (``"retrieval"``, optionally ``"blurry"``, ``"prior"``).

    Returns
    -------
    mapper : StateMapper
        ``target`` holds the neurodecode state dict, ``side`` the tensors kept aside.
    """
    m = StateMapper(state, "mindeye2")
    for i, s in enumerate(subjects):
        for w in ("weight", "bias"):
            m.put(f"adapter.linears.{s}.{w}", f"ridge.linears.{i}.{w}")
    for k in range(config["n_blocks"]):
        for group, mlp in (("mixer_blocks1", "channel_mlp"), ("mixer_blocks2", "token_mlp")):
            for src, dst in (("0", "norm"), ("1.0", "fc1"), ("1.3", "fc2")):
                for w in ("weight", "bias"):
                    m.put(f"backbone.blocks.{k}.{mlp}.{dst}.{w}", f"backbone.{group}.{k}.{src}.{w}")
    for w in ("weight", "bias"):
        m.put(f"heads.pooled.proj.{w}", f"backbone.backbone_linear.{w}")
        for j in (0, 2, 3, 5, 6, 8):
            m.put(f"heads.pooled.projector.{j}.{w}", f"backbone.clip_proj.{j}.{w}")
    blurry = _blurry_keys(config) if config["blurry"] else {}
    if "blurry" in parts:
        _map_blurry(m, blurry)
    else:
        for key in blurry:
            m.keep(key, _BLURRY_REASON)
    if "prior" in parts:
        map_prior(m, "diffusion_prior.", "prior.", _prior_config(config))
    elif config["prior"]:
        for key in prior_keys("diffusion_prior.", **_prior_config(config)):
            m.keep(key, _PRIOR_REASON)
    return m


def _map_blurry(m: StateMapper, keys: Mapping[str, tuple[int, ...]]) -> None:
    """``blin1`` / ``bnorm`` / ``bupsampler.*`` → ``heads.vae_decoder.fc`` / ``norm`` / ``decoder.*``."""
    for key in keys:
        rest = key[len("backbone."):]
        if rest.startswith("b_maps_projector."):
            m.keep(key, _AUX)
            continue
        group, _, tail = rest.partition(".")
        if group == "bupsampler":
            m.put(f"heads.vae_decoder.decoder.{new_attention_name(tail)}", key)
        else:
            m.put(f"heads.vae_decoder.{'fc' if group == 'blin1' else 'norm'}.{tail}", key)


def convert_mindeye2(state: Mapping[str, torch.Tensor], *, parts: str | Sequence[str] = "all",
                     subjects: Sequence[Any] | None = None) -> BrainDecoder:
    """Map a ``MindEyeModule`` state dict onto a new :class:`~neurodecode.models.BrainDecoder` (strictly).

    Parameters
    ----------
    state : dict of str → Tensor
        The original state dict (``checkpoint["model_state_dict"]``).
    parts : "all" | "retrieval" | sequence of {"retrieval", "blurry", "prior"}
        What to load. ``"all"`` (default): every part the file holds. ``"retrieval"``: ridge → backbone →
        ``clip_proj``; ``"blurry"`` adds the blurry branch as a ``vae_decoder`` head; ``"prior"`` the
        diffusion prior (``model.prior``, sampled with ``model.sample_prior``). The tensors of the other
        parts go to ``model.published["unused"]`` with the reason.
    subjects : sequence | None
        The subject of each ridge layer, in ridge order; None: the NSD subject whose nsdgeneral voxel count
        the layer has (:data:`NSD_VOXELS`).

    Returns
    -------
    model : BrainDecoder
        In eval mode; ``model.published`` holds the family, the configuration, the parts loaded and the
        tensors kept aside.

    Raises
    ------
    ValueError
        Unknown keys, missing keys or shapes that differ from the original's; ``seq_len`` other than 1; a
        requested part the file does not hold; prior noise-schedule buffers that are not dalle2's cosine
        schedule for the file's ``timesteps``, or rotary frequencies that differ between layers.
    """
    c = _infer_config(state)
    check_keys(state, original_mindeye2_keys(**c), family="mindeye2")
    if c["seq_len"] != 1:
        raise ValueError(f"seq_len={c['seq_len']}: MindEye2's ridge reads one token (x[:, 0]); neurodecode "
                         "reproduces the published seq_len=1 only")
    requested = _resolve_parts(parts, c)
    subj = _subjects(c["voxels"], subjects)
    model = build_mindeye2(c, subj, blurry="blurry" in requested, prior="prior" in requested)
    m = mindeye2_mapper(state, c, subj, requested)
    m.load_into(model)
    model.eval()
    model.published = {"family": "mindeye2", "config": c, "subjects": subj, "parts": sorted(requested),
                       "unused": m.side}
    return model


def load_mindeye2(path: str | Path, *, parts: str | Sequence[str] = "all",
                  subjects: Sequence[Any] | None = None) -> BrainDecoder:
    """Read a MindEye2 checkpoint file (weights only) and map it onto a BrainDecoder.

    Parameters
    ----------
    path : str | Path
        ``train_logs/<name>/last.pth`` (``{"model_state_dict": …}``; the ``final_*`` files hold tensors
        only; the DeepSpeed-era ``multisubject_subj01_1024hid_nolow_300ep`` file's optimizer and scheduler
        objects are read as inert placeholders and dropped), a bare state dict, or a safetensors file.
    parts : "all" | sequence of str
        See :func:`convert_mindeye2`.
    subjects : sequence | None
        See :func:`convert_mindeye2`.

    Returns
    -------
    model : BrainDecoder
        In eval mode, with ``model.published`` (see :func:`convert_mindeye2`; plus ``"path"``,
        ``"container"``).
    """
    state, where = read_checkpoint(path, allowed_globals=DEEPSPEED_GLOBALS)
    model = convert_mindeye2(state, parts=parts, subjects=subjects)
    model.published.update(path=str(path), container=where)
    return model
