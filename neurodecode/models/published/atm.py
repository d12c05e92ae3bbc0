"""ATM-S (Li et al. 2024, dongyangli-del/EEG_Image_decode ``Retrieval/ATMS_retrieval.py``) → BrainDecoder.

ATM publishes no encoder weights; a checkpoint is what its training script saves,
``torch.save(eeg_model.state_dict(), ".../<epoch>.pth")``: a bare state dict of the ``ATMS`` module. The
neurodecode model it becomes:

==================================================  =====================================================
original (``ATMS``)                                 neurodecode (``BrainDecoder``)
==================================================  =====================================================
``enc_embedding.value_embedding``                   ``adapter.embed`` (:class:`SubjectToken`)
``subject_embedding.*`` (token table, shared)       ``adapter.entries.<subject>.token``: row ``id`` when
                                                    ``id < n_ids``, else ``shared_embedding``
``attention.{query,key,value}_projection``          ``backbone.layers.i.qkv`` (``[q; k; v]`` stacked)
``attention.out_projection``                        ``backbone.layers.i.out``
``conv1/conv2`` (or ``linear1/2``)                  ``backbone.layers.i.ff1/ff2`` (kernel axis squeezed)
``norm1/norm2``, ``encoder.norm``                   ``backbone.layers.i.norm1/norm2``, ``final_norm``
``enc_eeg.0.tsconv.{0,2,4,5}``, ``projection.0``    ``backbone.temporal, bn1, spatial, bn2, proj_conv``
``proj_eeg.0.weight``                               ``backbone.proj.weight``, columns permuted: ATM
                                                    flattens ``(position, filter)``, neurodecode
                                                    ``(filter, position)``
``proj_eeg.1.fn.1``, ``proj_eeg.2``                 ``backbone.proj_res``, ``backbone.norm``
the rest (see below)                                kept aside in ``model.published["unused"]``
==================================================  =====================================================

Kept aside, with the reason, because ``ATMS.forward`` (``x_mark=None``) never uses them: ``logit_scale``,
``mask_token``, ``mask_embedding``, ``temporal_embedding``, ``position_embedding.pe`` (compared with its
formula), ``subject_wise_linear.*`` and the token-table rows of no requested subject.

The later refactor ``models/atms.py`` (token table of 2 rows, ``enc_out[:, 1:]``) is a different model and
is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..decoder import BrainDecoder
from .loading import read_checkpoint
from .mapping import StateMapper, check_keys

__all__ = ["ATMS_DEFAULTS", "build_atms", "convert_atms", "load_atms", "original_atms_keys"]

#: ``ATMS()`` as ``ATMS_retrieval.py`` builds it (``Config`` defaults, ``Enc_eeg``, ``Proj_eeg``).
ATMS_DEFAULTS: dict[str, Any] = dict(n_chans=63, n_times=250, d_model=250, n_heads=4, e_layers=1, d_ff=256,
                                     n_filters=40, conv_kernel=25, pool_size=51, pool_stride=5, proj_dim=1024,
                                     n_ids=10, n_linear=2, keep_tokens=63, ff="conv")

_EMB = "encoder.enc_embedding."
_ENC = "encoder.encoder."


def _n_pooled(cfg: dict[str, Any]) -> int:
    return (cfg["d_model"] - cfg["conv_kernel"] + 1 - cfg["pool_size"]) // cfg["pool_stride"] + 1


def original_atms_keys(**config: Any) -> dict[str, tuple[int, ...]]:
    """The ``ATMS`` state-dict keys and shapes for a configuration (written from the original constructors).

    Parameters
    ----------
    **config
        Overrides of :data:`ATMS_DEFAULTS` (``d_model``, ``n_heads``, ``e_layers``, ``d_ff``, ``n_filters``,
        ``conv_kernel``, ``pool_size``, ``pool_stride``, ``proj_dim``, ``n_ids`` — the token table's rows,
        ``n_linear`` — the ``subject_wise_linear`` layers, ``keep_tokens`` — the spatial conv's height,
        ``n_times``, ``ff`` — ``"conv"`` or ``"linear"`` feed-forward names).

    Returns
    -------
    keys : dict of str → tuple of int
        Key → shape, in the original's ``state_dict()`` order.
    """
    c = {**ATMS_DEFAULTS, **config}
    d, inner = c["d_model"], c["n_heads"] * (c["d_model"] // c["n_heads"])
    keys: dict[str, tuple[int, ...]] = {"logit_scale": ()}
    keys.update({_EMB + "mask_token": (1, d), _EMB + "value_embedding.weight": (d, c["n_times"]),
                 _EMB + "value_embedding.bias": (d,), _EMB + "position_embedding.pe": (1, 5000, d),
                 _EMB + "temporal_embedding.embed.weight": (d, 4),
                 _EMB + "subject_embedding.shared_embedding": (1, d),
                 _EMB + "subject_embedding.mask_embedding": (1, d),
                 _EMB + "subject_embedding.subject_embedding.weight": (c["n_ids"], d)})
    kernel = (1,) if c["ff"] == "conv" else ()
    for i in range(c["e_layers"]):
        p = f"{_ENC}attn_layers.{i}."
        for name in ("query", "key", "value"):
            keys[f"{p}attention.{name}_projection.weight"] = (inner, d)
            keys[f"{p}attention.{name}_projection.bias"] = (inner,)
        keys.update({f"{p}attention.out_projection.weight": (d, inner),
                     f"{p}attention.out_projection.bias": (d,)})
        one, two = ("conv1", "conv2") if c["ff"] == "conv" else ("linear1", "linear2")
        keys.update({f"{p}{one}.weight": (c["d_ff"], d, *kernel), f"{p}{one}.bias": (c["d_ff"],),
                     f"{p}{two}.weight": (d, c["d_ff"], *kernel), f"{p}{two}.bias": (d,)})
        keys.update({f"{p}norm{j}.{w}": (d,) for j in (1, 2) for w in ("weight", "bias")})
    keys.update({_ENC + "norm.weight": (d,), _ENC + "norm.bias": (d,)})
    for j in range(c["n_linear"]):
        keys.update({f"subject_wise_linear.{j}.weight": (c["n_times"], d), f"subject_wise_linear.{j}.bias":
                     (c["n_times"],)})
    f = c["n_filters"]
    for i, shape in ((0, (f, 1, 1, c["conv_kernel"])), (4, (f, f, c["keep_tokens"], 1))):
        keys.update({f"enc_eeg.0.tsconv.{i}.weight": shape, f"enc_eeg.0.tsconv.{i}.bias": (f,)})
        bn = i + 1 if i == 4 else 2
        keys.update({f"enc_eeg.0.tsconv.{bn}.{w}": (f,)
                     for w in ("weight", "bias", "running_mean", "running_var")})
        keys[f"enc_eeg.0.tsconv.{bn}.num_batches_tracked"] = ()
    keys.update({"enc_eeg.0.projection.0.weight": (f, f, 1, 1), "enc_eeg.0.projection.0.bias": (f,)})
    flat = f * _n_pooled(c)
    keys.update({"proj_eeg.0.weight": (c["proj_dim"], flat), "proj_eeg.0.bias": (c["proj_dim"],),
                 "proj_eeg.1.fn.1.weight": (c["proj_dim"], c["proj_dim"]),
                 "proj_eeg.1.fn.1.bias": (c["proj_dim"],),
                 "proj_eeg.2.weight": (c["proj_dim"],), "proj_eeg.2.bias": (c["proj_dim"],)})
    return dict(sorted(keys.items(), key=lambda kv: _order(kv[0])))


def _order(key: str) -> int:
    for i, prefix in enumerate(("logit_scale", "encoder.", "subject_wise_linear.", "enc_eeg.", "proj_eeg.")):
        if key.startswith(prefix):
            return i
    return 99


def _infer_config(state: dict[str, torch.Tensor], options: dict[str, Any]) -> dict[str, Any]:
    """The configuration the file's shapes give, completed by ``options`` (what shapes cannot tell)."""
    def dim(key: str, axis: int, default: int) -> int:
        return int(state[key].shape[axis]) if key in state and state[key].ndim > axis else default

    c = {**ATMS_DEFAULTS, **options}
    c["d_model"] = dim(_EMB + "value_embedding.weight", 0, c["d_model"])
    c["n_times"] = dim(_EMB + "value_embedding.weight", 1, c["n_times"])
    c["n_ids"] = dim(_EMB + "subject_embedding.subject_embedding.weight", 0, c["n_ids"])
    layers = {k.split(".")[3] for k in state if k.startswith(_ENC + "attn_layers.")}
    c["e_layers"] = len(layers) or c["e_layers"]
    c["ff"] = "linear" if f"{_ENC}attn_layers.0.linear1.weight" in state else "conv"
    c["d_ff"] = dim(f"{_ENC}attn_layers.0.{'conv1' if c['ff'] == 'conv' else 'linear1'}.weight", 0, c["d_ff"])
    c["n_linear"] = len({k.split(".")[1] for k in state if k.startswith("subject_wise_linear.")})
    c["n_filters"] = dim("enc_eeg.0.tsconv.0.weight", 0, c["n_filters"])
    c["conv_kernel"] = dim("enc_eeg.0.tsconv.0.weight", 3, c["conv_kernel"])
    c["keep_tokens"] = dim("enc_eeg.0.tsconv.4.weight", 2, c["keep_tokens"])
    c["proj_dim"] = dim("proj_eeg.0.weight", 0, c["proj_dim"])
    if c["n_ids"] != 10 and "variant" not in options:
        raise ValueError(f"the subject-token table has {c['n_ids']} rows, not the 10 of "
                         "Retrieval/ATMS_retrieval.py's iTransformer: this looks like models/atms.py's ATMS "
                         "(a table of num_subjects rows and the slice enc_out[:, 1:]), which neurodecode "
                         "does not reproduce. Pass variant='retrieval' to read it as ATMS_retrieval.py's "
                         "model anyway.")
    if c["n_times"] != c["d_model"]:
        raise ValueError(f"value_embedding maps {c['n_times']} samples to d_model={c['d_model']}; "
                         "neurodecode's subject_token adapter needs them equal (ATM: 250 and 250)")
    return c


def build_atms(config: dict[str, Any], subjects: Iterable[Any]) -> BrainDecoder:
    """The neurodecode model of an ``ATMS`` configuration, for the given subjects (random weights).

    Parameters
    ----------
    config : dict
        A full ATMS configuration (:data:`ATMS_DEFAULTS` keys).
    subjects : iterable of int
        The subjects the model will decode (ATM's integer ids, ``sub-NN`` → ``NN``).

    Returns
    -------
    model : BrainDecoder
        ``subject_token`` adapter → ``atm`` backbone (no embedding, ``n_heads × d_model // n_heads``
        attention, final LayerNorm, first ``keep_tokens`` tokens) → identity pooled head.
    """
    c = config
    backbone_kwargs = dict(d_model=c["d_model"], n_heads=c["n_heads"], head_dim=c["d_model"] // c["n_heads"],
                           d_ff=c["d_ff"], n_filters=c["n_filters"], conv_kernel=c["conv_kernel"],
                           pool_size=c["pool_size"], pool_stride=c["pool_stride"], proj_dropout=0.5,
                           embed=False, final_norm=True, keep_tokens=c["keep_tokens"])
    return BrainDecoder({str(s): c["n_chans"] * c["n_times"] for s in subjects}, embed_dim=c["proj_dim"],
                        hidden_dim=c["proj_dim"], n_blocks=c["e_layers"], dropout=0.25, backbone="atm",
                        adapter="subject_token", n_times=c["n_times"], seed=0,
                        adapter_kwargs={"subject_layer": False, "dropout": 0.25},
                        backbone_kwargs=backbone_kwargs, head_kwargs={"pooled": {"identity": True}})


def _flatten_permutation(n_filters: int, n_pooled: int) -> torch.Tensor:
    """``perm[f · n_pooled + p] = p · n_filters + f``: ATM's column of neurodecode's column."""
    f, p = torch.meshgrid(torch.arange(n_filters), torch.arange(n_pooled), indexing="ij")
    return (p * n_filters + f).reshape(-1)


def _map_encoder(m: StateMapper, c: dict[str, Any]) -> None:
    one, two = ("conv1", "conv2") if c["ff"] == "conv" else ("linear1", "linear2")
    squeeze = (lambda w: w.squeeze(-1)) if c["ff"] == "conv" else None
    for i in range(c["e_layers"]):
        p, t = f"{_ENC}attn_layers.{i}.", f"backbone.layers.{i}."
        for w in ("weight", "bias"):
            m.put(t + f"qkv.{w}", [f"{p}attention.{n}_projection.{w}" for n in ("query", "key", "value")],
                  lambda *ts: torch.cat(ts, 0))
            m.put(t + f"out.{w}", f"{p}attention.out_projection.{w}")
            m.put(t + f"ff1.{w}", p + f"{one}.{w}", squeeze if w == "weight" else None)
            m.put(t + f"ff2.{w}", p + f"{two}.{w}", squeeze if w == "weight" else None)
            for j in (1, 2):
                m.put(t + f"norm{j}.{w}", p + f"norm{j}.{w}")
    for w in ("weight", "bias"):
        m.put(f"backbone.final_norm.{w}", _ENC + f"norm.{w}")


def _map_conv_and_projection(m: StateMapper, c: dict[str, Any]) -> None:
    for src, dst in ((0, "temporal"), (4, "spatial")):
        for w in ("weight", "bias"):
            m.put(f"backbone.{dst}.{w}", f"enc_eeg.0.tsconv.{src}.{w}")
    for src, dst in ((2, "bn1"), (5, "bn2")):
        for w in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            m.put(f"backbone.{dst}.{w}", f"enc_eeg.0.tsconv.{src}.{w}")
    for w in ("weight", "bias"):
        m.put(f"backbone.proj_conv.{w}", f"enc_eeg.0.projection.0.{w}")
        m.put(f"backbone.proj_res.{w}", f"proj_eeg.1.fn.1.{w}")
        m.put(f"backbone.norm.{w}", f"proj_eeg.2.{w}")
    perm = _flatten_permutation(c["n_filters"], _n_pooled(c))
    m.put("backbone.proj.weight", "proj_eeg.0.weight", lambda w: w[:, perm])
    m.put("backbone.proj.bias", "proj_eeg.0.bias")


def _map_embedding(m: StateMapper, c: dict[str, Any], subjects: list[int]) -> None:
    m.put("adapter.embed.weight", _EMB + "value_embedding.weight")
    m.put("adapter.embed.bias", _EMB + "value_embedding.bias")
    table = m.take(_EMB + "subject_embedding.subject_embedding.weight")
    shared = m.take(_EMB + "subject_embedding.shared_embedding")
    for s in subjects:  # ATM: ids beyond the table (sub-10 of a 10-row table) get the shared token
        m.target[f"adapter.entries.{s}.token"] = (table[s] if 0 <= s < c["n_ids"] else shared[0]).clone()
    for row in sorted(set(range(c["n_ids"])) - set(subjects)):
        m.keep(f"{_EMB}subject_embedding.subject_embedding.weight[{row}]",
               "token-table row of no requested subject", table[row])
    if all(0 <= s < c["n_ids"] for s in subjects):
        m.keep(_EMB + "subject_embedding.shared_embedding", "no requested subject uses the shared token",
               shared)
    pe = m.take(_EMB + "position_embedding.pe")
    m.keep(_EMB + "position_embedding.pe", "positional table, unused with x_mark=None; "
           f"max |pe - formula| = {float((pe - _sinusoid(pe.shape[1], pe.shape[2])).abs().max()):.2e}", pe)
    for key, why in (("logit_scale", "ClipLoss multiplier (training and ranking scale only)"),
                     (_EMB + "mask_token", "masking token, unused at inference"),
                     (_EMB + "subject_embedding.mask_embedding", "masking token, unused at inference"),
                     (_EMB + "temporal_embedding.embed.weight",
                      "time-feature embedding, unused with x_mark=None")):
        m.keep(key, why)
    for key in [k for k in m.state if k.startswith("subject_wise_linear.")]:
        m.keep(key, "subject_wise_linear is never called in ATMS.forward")


def _sinusoid(n: int, d: int) -> torch.Tensor:
    position = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * -(math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)[:, : d // 2]
    return pe[None]


def convert_atms(state: dict[str, torch.Tensor], *, subjects: Iterable[int] = range(1, 11),
                 **options: Any) -> BrainDecoder:
    """Map an ``ATMS`` state dict onto a new :class:`~neurodecode.models.BrainDecoder` (strictly).

    Parameters
    ----------
    state : dict of str → Tensor
        The original state dict (``torch.save(eeg_model.state_dict())``).
    subjects : iterable of int
        ATM's subject ids the model will decode (``sub-NN`` → ``NN``; default 1–10, THINGS-EEG2's).
    **options
        What the shapes cannot tell, as :data:`ATMS_DEFAULTS` keys: ``n_chans`` (63), ``n_heads`` (4),
        ``pool_size`` (51), ``pool_stride`` (5); ``variant="retrieval"`` accepts a token table other than
        10 rows.

    Returns
    -------
    model : BrainDecoder
        In eval mode; ``model.published`` holds the family, the configuration and the tensors kept aside.

    Raises
    ------
    ValueError
        Unknown keys, missing keys or shapes that differ from the original's for the inferred configuration.
    """
    subjects = [int(s) for s in subjects]
    options = dict(options)
    variant = options.pop("variant", None)
    c = _infer_config(state, {**options, **({"variant": variant} if variant else {})})
    c.pop("variant", None)
    check_keys(state, original_atms_keys(**c), family="atm")
    if c["keep_tokens"] > c["n_chans"] + 1:
        raise ValueError(f"the spatial convolution spans {c['keep_tokens']} tokens but there are only "
                         f"n_chans + 1 = {c['n_chans'] + 1}; pass n_chans=")
    model = build_atms(c, subjects)
    m = StateMapper(state, "atm")
    _map_embedding(m, c, subjects)
    _map_encoder(m, c)
    _map_conv_and_projection(m, c)
    m.load_into(model)
    model.eval()
    model.published = {"family": "atm", "variant": "Retrieval/ATMS_retrieval.py", "config": c,
                       "unused": m.side}
    return model


def load_atms(path: str | Path, *, subjects: Iterable[int] = range(1, 11), **options: Any) -> BrainDecoder:
    """Read an ATM-S checkpoint file (weights only) and map it onto a BrainDecoder.

    Parameters
    ----------
    path : str | Path
        ``.../<epoch>.pth`` saved by ``ATMS_retrieval.py`` (a bare state dict), or a safetensors file.
    subjects : iterable of int
        ATM's subject ids the model will decode.
    **options
        See :func:`convert_atms`.

    Returns
    -------
    model : BrainDecoder
        In eval mode, with ``model.published`` (see :func:`convert_atms`; plus ``"path"``).
    """
    state, where = read_checkpoint(path)
    model = convert_atms(state, subjects=subjects, **options)
    model.published.update(path=str(path), container=where)
    return model
