"""MindBridge (Wang et al. 2024, littlepure2333/MindBridge ``src/models.py``) → BrainDecoder.

The published checkpoint (HF model ``littlepure2333/MindBridge``, ``mindbridge_subj1257/last.pth``,
3.81 GB) is a DeepSpeed-era ``torch.save({"model_state_dict": …, "optimizer_state_dict": …,
"lr_scheduler": …})`` of ``MindBridge(in_dim=8192, out_dim_image=257·768, out_dim_text=77·768, h=2048,
n_blocks=4, subj_list=[1, 2, 5, 7])``; its optimizer (ZeRO-2 partition, loss scaler) and ``OneCycleLR``
objects are read as inert placeholders and dropped. The model it becomes:

==============================================  ==========================================================
original (``MindBridge``)                       neurodecode (``BrainDecoder``)
==============================================  ==========================================================
voxels → ``AdaptiveMaxPool1d(8192)`` (data)     ``adapter.pool`` (``pooled`` adapter, ``pool_size=8192``)
``embedder.<s>.0.{down_proj, up_proj}``         ``adapter.embedders.<s>.lora.{down, up}`` (rank 128)
``embedder.<s>.1``, ``embedder.<s>.2``          ``adapter.embedders.<s>.linear``, ``.norm`` (→ GELU →
                                                dropout 0.5)
``translator.mlp.k.{0, 1}``                     ``backbone.blocks.k.{linear, norm}`` (``postnorm_mlp``)
``head_image``                                  ``heads.pooled.proj`` (``PooledHead(norm=False)``)
``head_text``                                   ``heads.text.proj`` (``TextHead(norm=False)``)
``builder.<s>.{0, 1, 3.*}``                     kept aside (cycle loss, training only); also returned as a
                                                :class:`~neurodecode.models.adapters.SubjectBuilder` in
                                                ``model.published["builder"]``
==============================================  ==========================================================

The pooled embedding is ``head_image``'s output (``257 × 768`` CLIP ViT-L/14 image tokens, normalised by the
CLS token's norm in training), ``outputs["text"]`` is ``head_text``'s (``77 × 768`` text tokens). Subjects
are read from the key names (``embedder.1.*`` → subject ``"1"``); each subject's voxel count (any count works:
the pooling brings it to ``in_dim``) defaults to its NSD nsdgeneral count.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..adapters import SubjectBuilder
from ..decoder import BrainDecoder
from .loading import read_checkpoint
from .mapping import StateMapper, check_keys, dim_of
from .mindeye2 import DEEPSPEED_GLOBALS, NSD_VOXELS

__all__ = ["MINDBRIDGE_DEFAULTS", "MINDBRIDGE_GLOBALS", "build_mindbridge", "convert_mindbridge",
           "load_mindbridge", "mindbridge_mapper", "original_mindbridge_keys"]

#: The published configuration (``scripts/train_bridge.sh``: ``--h_size 2048 --n_blocks 4 --pool_num 8192
#: --subj_list 1 2 5 7``; ``out_dim_image = 257 · 768``, ``out_dim_text = 77 · 768``; adapter rank 128).
MINDBRIDGE_DEFAULTS: dict[str, Any] = dict(subjects=("1", "2", "5", "7"), in_dim=8192, hidden_dim=2048,
                                           n_blocks=4, rank=128, image_dim=257 * 768, text_dim=77 * 768,
                                           builder=True)

#: Pickled globals of the published file (DeepSpeed ZeRO-2 optimizer state and loss scaler, ``AdamW``,
#: ``OneCycleLR`` pickled through a bound method — ``getattr``): read as inert placeholders. Its
#: ``__builtin__.dict`` and ``collections.defaultdict`` are plain containers, read as the real types.
MINDBRIDGE_GLOBALS: tuple[str, ...] = DEEPSPEED_GLOBALS

_BUILDER_REASON = ("builder (subject reconstruction for MindBridge's cycle loss): training only, not used at "
                   "inference; model.published['builder'] holds it as a SubjectBuilder")


def original_mindbridge_keys(**config: Any) -> dict[str, tuple[int, ...]]:
    """The ``MindBridge`` state-dict keys and shapes of a configuration (from the original constructor).

    Parameters
    ----------
    **config
        Overrides of :data:`MINDBRIDGE_DEFAULTS`: ``subjects`` (the ``subj_list``), ``in_dim`` (the pooled
        voxel count), ``hidden_dim`` (``h``), ``n_blocks``, ``rank`` (the adapters' bottleneck),
        ``image_dim``, ``text_dim``, ``builder`` (``MindBridge`` has one; ``MindSingle`` not).

    Returns
    -------
    keys : dict of str → tuple of int
        Key → shape, in the original's ``state_dict()`` order.
    """
    c = {**MINDBRIDGE_DEFAULTS, **config}
    n, h, r = c["in_dim"], c["hidden_dim"], c["rank"]
    keys: dict[str, tuple[int, ...]] = {}
    for s in c["subjects"]:
        p = f"embedder.{s}."
        keys.update({p + "0.down_proj.weight": (r, n), p + "0.down_proj.bias": (r,),
                     p + "0.up_proj.weight": (n, r), p + "0.up_proj.bias": (n,), p + "1.weight": (h, n),
                     p + "1.bias": (h,), p + "2.weight": (h,), p + "2.bias": (h,)})
    for k in range(c["n_blocks"]):
        p = f"translator.mlp.{k}."
        keys.update({p + "0.weight": (h, h), p + "0.bias": (h,), p + "1.weight": (h,), p + "1.bias": (h,)})
    keys.update({"head_image.weight": (c["image_dim"], h), "head_image.bias": (c["image_dim"],),
                 "head_text.weight": (c["text_dim"], h), "head_text.bias": (c["text_dim"],)})
    if c["builder"]:
        for s in c["subjects"]:
            p = f"builder.{s}."
            keys.update({p + "0.weight": (n, h), p + "0.bias": (n,), p + "1.weight": (n,), p + "1.bias": (n,),
                         p + "3.down_proj.weight": (r, n), p + "3.down_proj.bias": (r,),
                         p + "3.up_proj.weight": (n, r), p + "3.up_proj.bias": (n,)})
    return keys


def _subject_order(names: set[str]) -> list[str]:
    return sorted(names, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))


def _infer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The configuration the file's shapes give (defaults where a key is missing: check_keys names it)."""
    c = dict(MINDBRIDGE_DEFAULTS)
    subjects = _subject_order({k.split(".")[1] for k in state if k.startswith("embedder.")})
    if not subjects:
        raise ValueError(f"the checkpoint is not a MindBridge model: no embedder.<subject>.* keys; first "
                         f"keys: {list(state)[:6]}")
    c["subjects"] = tuple(subjects)
    s = subjects[0]
    c["in_dim"] = dim_of(state, f"embedder.{s}.1.weight", 1, c["in_dim"])
    c["hidden_dim"] = dim_of(state, f"embedder.{s}.1.weight", 0, c["hidden_dim"])
    c["rank"] = dim_of(state, f"embedder.{s}.0.down_proj.weight", 0, c["rank"])
    blocks = {int(k.split(".")[2]) for k in state
              if k.startswith("translator.mlp.") and k.split(".")[2].isdigit()}
    c["n_blocks"] = max(blocks) + 1 if blocks else c["n_blocks"]
    c["image_dim"] = dim_of(state, "head_image.weight", 0, c["image_dim"])
    c["text_dim"] = dim_of(state, "head_text.weight", 0, c["text_dim"])
    c["builder"] = any(k.startswith("builder.") for k in state)
    return c


def _voxels(subjects: list[str], voxels: Mapping[Any, int] | None) -> dict[str, int]:
    """Each subject's voxel count: given, or its NSD nsdgeneral count."""
    given = {str(k): int(v) for k, v in (voxels or {}).items()}
    extra = sorted(set(given) - set(subjects))
    if extra:
        raise ValueError(f"voxels names subjects {extra} that the checkpoint has no embedder for "
                         f"(it has {subjects})")
    out = {}
    for s in subjects:
        if s in given:
            out[s] = given[s]
        elif s.isdigit() and int(s) in NSD_VOXELS:
            out[s] = NSD_VOXELS[int(s)]
        else:
            raise ValueError(f"subject {s!r} is not an NSD subject (1–8): give its voxel count, "
                             f"voxels={{{s!r}: n_voxels, …}}")
    return out


def _text_shape(text_dim: int, token_dim: int) -> tuple[int, int]:
    return (text_dim // token_dim, token_dim) if text_dim % token_dim == 0 else (1, text_dim)


def build_mindbridge(config: dict[str, Any], voxels: Mapping[str, int], token_dim: int = 768) -> BrainDecoder:
    """The neurodecode model of MindBridge's inference path for a configuration (random weights).

    Parameters
    ----------
    config : dict
        A full configuration (:data:`MINDBRIDGE_DEFAULTS` keys).
    voxels : dict
        Subject → voxel count (the input width; the adapter pools it to ``in_dim``).
    token_dim : int
        Width of one text token (CLIP ViT-L/14: 768): the text head's ``text_shape`` is
        ``(text_dim / token_dim, token_dim)``.

    Returns
    -------
    model : BrainDecoder
        ``pooled`` adapter → ``postnorm_mlp`` backbone → pooled head ``Linear`` (no LayerNorm, the image
        tokens flattened) and ``text`` head ``Linear`` (no LayerNorm, the text tokens flattened).
    """
    c = config
    heads = {"pooled": {"norm": False}, "text": {"text_shape": list(_text_shape(c["text_dim"], token_dim)),
                                                 "norm": False}}
    return BrainDecoder(dict(voxels), embed_dim=c["image_dim"], hidden_dim=c["hidden_dim"],
                        n_blocks=c["n_blocks"], dropout=0.15, backbone="postnorm_mlp", adapter="pooled",
                        seed=0, heads=tuple(heads),
                        adapter_kwargs={"pool_size": c["in_dim"], "rank": c["rank"], "dropout": 0.5},
                        head_kwargs=heads)


def mindbridge_mapper(state: Mapping[str, torch.Tensor], config: dict[str, Any]) -> StateMapper:
    """Place every original tensor: the inference path into the model, the builder aside with the reason.

    Parameters
    ----------
    state : dict of str → Tensor
        The checked original state dict.
    config : dict
        Its configuration (:func:`original_mindbridge_keys` arguments).

    Returns
    -------
    mapper : StateMapper
        ``target`` holds the neurodecode state dict, ``side`` the tensors kept aside.
    """
    m = StateMapper(state, "mindbridge")
    for s in config["subjects"]:
        a, p = f"adapter.embedders.{s}.", f"embedder.{s}."
        for w in ("weight", "bias"):
            m.put(f"{a}lora.down.{w}", f"{p}0.down_proj.{w}")
            m.put(f"{a}lora.up.{w}", f"{p}0.up_proj.{w}")
            m.put(f"{a}linear.{w}", f"{p}1.{w}")
            m.put(f"{a}norm.{w}", f"{p}2.{w}")
    for k in range(config["n_blocks"]):
        for w in ("weight", "bias"):
            m.put(f"backbone.blocks.{k}.linear.{w}", f"translator.mlp.{k}.0.{w}")
            m.put(f"backbone.blocks.{k}.norm.{w}", f"translator.mlp.{k}.1.{w}")
    for w in ("weight", "bias"):
        m.put(f"heads.pooled.proj.{w}", f"head_image.{w}")
        m.put(f"heads.text.proj.{w}", f"head_text.{w}")
    for key in state:
        if key.startswith("builder."):
            m.keep(key, _BUILDER_REASON)
    return m


def _builder(side: Mapping[str, dict[str, Any]], config: dict[str, Any]) -> SubjectBuilder | None:
    """MindBridge's ``builder`` as a :class:`SubjectBuilder` (``linears``, ``norms``, ``loras``)."""
    if not config["builder"]:
        return None
    builder = SubjectBuilder({s: config["in_dim"] for s in config["subjects"]}, config["hidden_dim"],
                             rank=config["rank"], device="meta")
    sd = {}
    for s in config["subjects"]:
        p = f"builder.{s}."
        for w in ("weight", "bias"):
            sd.update({f"linears.{s}.{w}": side[f"{p}0.{w}"]["tensor"],
                       f"norms.{s}.{w}": side[f"{p}1.{w}"]["tensor"],
                       f"loras.{s}.down.{w}": side[f"{p}3.down_proj.{w}"]["tensor"],
                       f"loras.{s}.up.{w}": side[f"{p}3.up_proj.{w}"]["tensor"]})
    builder.load_state_dict(sd, strict=True, assign=True)
    return builder.eval()


def convert_mindbridge(state: Mapping[str, torch.Tensor], *, voxels: Mapping[Any, int] | None = None,
                       token_dim: int = 768) -> BrainDecoder:
    """Map a ``MindBridge`` state dict onto a new :class:`~neurodecode.models.BrainDecoder` (strictly).

    Parameters
    ----------
    state : dict of str → Tensor
        The original state dict (``checkpoint["model_state_dict"]``).
    voxels : dict | None
        Subject → voxel count of the input; subjects the dict leaves out get their NSD nsdgeneral count.
    token_dim : int
        Width of one text token (768: ``head_text`` predicts 77 × 768 CLIP ViT-L/14 text tokens).

    Returns
    -------
    model : BrainDecoder
        In eval mode; ``model.published`` holds the family, the configuration, the voxel counts, the
        ``builder`` (a :class:`~neurodecode.models.adapters.SubjectBuilder`, or None for a ``MindSingle``
        file) and the tensors kept aside.

    Raises
    ------
    ValueError
        Not a MindBridge state dict; unknown keys, missing keys or shapes that differ from the original's;
        a subject whose voxel count is unknown.
    """
    c = _infer_config(state)
    check_keys(state, original_mindbridge_keys(**c), family="mindbridge")
    n_voxels = _voxels(list(c["subjects"]), voxels)
    model = build_mindbridge(c, n_voxels, token_dim)
    m = mindbridge_mapper(state, c)
    m.load_into(model)
    model.eval()
    model.published = {"family": "mindbridge", "config": c, "voxels": n_voxels,
                       "builder": _builder(m.side, c), "unused": m.side}
    return model


def load_mindbridge(path: str | Path, *, voxels: Mapping[Any, int] | None = None,
                    token_dim: int = 768) -> BrainDecoder:
    """Read a MindBridge checkpoint file (weights only) and map it onto a BrainDecoder.

    Parameters
    ----------
    path : str | Path
        ``mindbridge_subj1257/last.pth`` (``{"model_state_dict": …}`` plus DeepSpeed optimizer and
        scheduler objects, read as inert placeholders: :data:`MINDBRIDGE_GLOBALS`), a bare state dict, or a
        safetensors file.
    voxels : dict | None
        See :func:`convert_mindbridge`.
    token_dim : int
        See :func:`convert_mindbridge`.

    Returns
    -------
    model : BrainDecoder
        In eval mode, with ``model.published`` (see :func:`convert_mindbridge`; plus ``"path"``,
        ``"container"``).
    """
    state, where = read_checkpoint(path, allowed_globals=MINDBRIDGE_GLOBALS)
    model = convert_mindbridge(state, voxels=voxels, token_dim=token_dim)
    model.published.update(path=str(path), container=where)
    return model
