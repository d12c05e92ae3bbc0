"""brainmagick's ``SimpleConv`` (Défossez et al. 2023, ``bm/models/simpleconv.py``) → BrainDecoder.

brainmagick releases no weights; a checkpoint is the Dora experiment's ``outputs/xps/<sig>/checkpoint.th``
(flashy ``BaseSolver.commit``), whose ``best_state`` (else ``all_models``) holds ``ModuleList([model,
feature_model]).state_dict()``: the model's keys carry the prefix ``0.``. The rest of that file (the
OmegaConf config, the pickled ``BatchScaler``, optimizer state, history) is read as inert placeholders and
dropped. The published configuration (``bm/conf/model/clip_conv.yaml``) becomes:

=========================================  ==================================================================
original (``SimpleConv``)                  neurodecode (``BrainDecoder``)
=========================================  ==================================================================
``merger.heads``                           ``adapter.queries`` (:class:`SpatialAttention`, same Fourier
                                           embedding; the subjects' 2-D layout positions are an argument)
``initial_linear.0``                       ``adapter.initial_linear``
``subject_layers.weights[index]``          ``adapter.subject_layer.weights.<subject>``, **transposed**
                                           (``[in, out]`` → ``[out, in]``); rows of no subject kept aside
``encoders.meg.sequence.k.0`` / ``.1``     ``backbone.blocks.k.conv`` / ``.norm`` (``DilatedConvNet`` with
                                           ``stem="conv"``: block 0 is the 270 → 320 conv, no skip)
``encoders.meg.glus.k.0``                  ``backbone.blocks.k.glu``
``final.0``                                ``backbone.proj_out1``
``final.2`` (``ConvTranspose1d``, k = 1)   ``backbone.proj_out2`` (``Conv1d``): weight ``[in, out, 1]`` →
                                           ``[out, in, 1]``
(none)                                     identity pooled head: the output is the ``(T, out_channels)``
                                           sequence, flattened frame-major
=========================================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..decoder import BrainDecoder
from .loading import read_checkpoint
from .mapping import StateMapper, check_keys

__all__ = ["DORA_GLOBALS", "SIMPLECONV_DEFAULTS", "build_simpleconv", "convert_simpleconv", "load_simpleconv",
           "original_simpleconv_keys"]

#: ``SimpleConv`` as ``clip_conv.yaml`` builds it (``n_subjects`` = 1 + the largest subject index: 27 for
#: Gwilliams alone).
SIMPLECONV_DEFAULTS: dict[str, Any] = dict(n_subjects=27, merger_channels=270, pos_dim=2048,
                                           initial_linear=270, hidden=320, depth=10, kernel_size=3,
                                           dilation_period=5, glu=2, glu_context=1, out_channels=1024,
                                           merger_dropout=0.2, margin=0.2)

#: Pickled globals a Dora / flashy checkpoint holds besides tensors (read as inert placeholders).
DORA_GLOBALS: tuple[str, ...] = ("omegaconf.*", "bm.*", "flashy.*", "dora.*", "typing.*", "pathlib.*",
                                 "numpy.*", "torch.*", "copyreg._reconstructor", "builtins.object",
                                 "builtins.getattr", "sklearn.*", "collections.*", "enum.*")


def original_simpleconv_keys(prefix: str = "0.", **config: Any) -> dict[str, tuple[int, ...]]:
    """``SimpleConv`` state-dict keys and shapes for a configuration (from the original constructors).

    Parameters
    ----------
    prefix : str
        ``"0."`` for a Dora checkpoint (``all_models[0]``), ``""`` for the model's own state dict.
    **config
        Overrides of :data:`SIMPLECONV_DEFAULTS`.

    Returns
    -------
    keys : dict of str → tuple of int
        Key → shape, in the original's ``state_dict()`` order.
    """
    c = {**SIMPLECONV_DEFAULTS, **config}
    h, v, lin = c["hidden"], c["merger_channels"], c["initial_linear"]
    keys: dict[str, tuple[int, ...]] = {"merger.heads": (v, c["pos_dim"]),
                                        "initial_linear.0.weight": (lin, v, 1),
                                        "initial_linear.0.bias": (lin,),
                                        "subject_layers.weights": (c["n_subjects"], lin, lin)}
    for k in range(c["depth"]):
        p = f"encoders.meg.sequence.{k}."
        keys.update({p + "0.weight": (h, lin if k == 0 else h, c["kernel_size"]), p + "0.bias": (h,)})
        keys.update({p + f"1.{w}": (h,) for w in ("weight", "bias", "running_mean", "running_var")})
        keys[p + "1.num_batches_tracked"] = ()
    for k in range(c["depth"]):
        if c["glu"] and (k + 1) % c["glu"] == 0:
            keys.update({f"encoders.meg.glus.{k}.0.weight": (2 * h, h, 1 + 2 * c["glu_context"]),
                         f"encoders.meg.glus.{k}.0.bias": (2 * h,)})
    keys.update({"final.0.weight": (2 * h, h, 1), "final.0.bias": (2 * h,),
                 "final.2.weight": (2 * h, c["out_channels"], 1), "final.2.bias": (c["out_channels"],)})
    return {prefix + k: s for k, s in keys.items()}


def _infer_config(state: Mapping[str, torch.Tensor], prefix: str, options: dict[str, Any]) -> dict[str, Any]:
    def dim(key: str, axis: int, default: int) -> int:
        t = state.get(prefix + key)
        return int(t.shape[axis]) if t is not None and t.ndim > axis else default

    c = {**SIMPLECONV_DEFAULTS, **options}
    c["merger_channels"] = dim("merger.heads", 0, c["merger_channels"])
    c["pos_dim"] = dim("merger.heads", 1, c["pos_dim"])
    c["initial_linear"] = dim("initial_linear.0.weight", 0, c["initial_linear"])
    c["n_subjects"] = dim("subject_layers.weights", 0, c["n_subjects"])
    c["hidden"] = dim("encoders.meg.sequence.0.0.weight", 0, c["hidden"])
    c["kernel_size"] = dim("encoders.meg.sequence.0.0.weight", 2, c["kernel_size"])
    def indices(part: str) -> list[int]:
        return sorted({int(k[len(prefix):].split(".")[3]) for k in state
                       if k.startswith(f"{prefix}encoders.meg.{part}.")})

    seq, glus = indices("sequence"), indices("glus")
    c["depth"] = max(seq) + 1 if seq else c["depth"]
    c["glu"] = glus[0] + 1 if glus else 0
    if glus:
        c["glu_context"] = (dim(f"encoders.meg.glus.{glus[0]}.0.weight", 2, 1) - 1) // 2
    c["out_channels"] = dim("final.2.weight", 1, c["out_channels"])
    if c["initial_linear"] != c["merger_channels"]:
        raise ValueError(f"initial_linear maps {c['merger_channels']} merged channels to "
                         f"{c['initial_linear']}; neurodecode's spatial_attention adapter keeps the width "
                         "(brainmagick: 270 → 270)")
    return c


def build_simpleconv(config: dict[str, Any], positions: Mapping[Any, Any], n_times: int) -> BrainDecoder:
    """The neurodecode model of a ``SimpleConv`` configuration (random weights).

    Parameters
    ----------
    config : dict
        A full configuration (:data:`SIMPLECONV_DEFAULTS` keys).
    positions : dict
        Subject → 2-D sensor positions ``(n_chans, 2)`` (``mne.find_layout(info).pos[:, :2]`` of the
        recording's channels; NaN rows for channels not in the layout).
    n_times : int
        Samples per window (brainmagick: 3 s at 120 Hz less the 18-sample offset = 342).

    Returns
    -------
    model : BrainDecoder
        ``spatial_attention`` adapter → ``dilated_conv`` backbone (``stem="conv"``, time kept) → identity
        pooled head, output ``(batch, n_times · out_channels)`` frame-major.
    """
    c = config
    n_in = {str(s): len(p) * int(n_times) for s, p in positions.items()}
    return BrainDecoder(
        n_in, embed_dim=int(n_times) * c["out_channels"], hidden_dim=c["out_channels"], n_blocks=c["depth"],
        dropout=0.0, backbone="dilated_conv", adapter="spatial_attention", n_times=int(n_times), seed=0,
        embed_shape=(int(n_times), c["out_channels"]),
        adapter_kwargs={"positions": dict(positions), "n_virtual": c["merger_channels"],
                        "pos_dim": c["pos_dim"], "dropout": c["merger_dropout"], "margin": c["margin"],
                        "initial_linear": True, "subject_layer": True},
        backbone_kwargs={"hidden": c["hidden"], "kernel_size": c["kernel_size"],
                         "dilation_period": c["dilation_period"], "glu": c["glu"],
                         "glu_context": c["glu_context"], "stem": "conv"},
        head_kwargs={"pooled": {"identity": True}})


def _map(m: StateMapper, c: dict[str, Any], prefix: str, subject_index: dict[str, int]) -> None:
    m.put("adapter.queries", prefix + "merger.heads")
    for w in ("weight", "bias"):
        m.put(f"adapter.initial_linear.{w}", prefix + f"initial_linear.0.{w}")
    weights = m.take(prefix + "subject_layers.weights")
    for s, idx in subject_index.items():
        m.target[f"adapter.subject_layer.weights.{s}"] = weights[idx].T.clone()   # [in, out] → [out, in]
    for idx in sorted(set(range(c["n_subjects"])) - set(subject_index.values())):
        m.keep(f"{prefix}subject_layers.weights[{idx}]", "subject index of no requested subject",
               weights[idx])
    for k in range(c["depth"]):
        p, t = f"{prefix}encoders.meg.sequence.{k}.", f"backbone.blocks.{k}."
        for w in ("weight", "bias"):
            m.put(t + f"conv.{w}", p + f"0.{w}")
        for w in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            m.put(t + f"norm.{w}", p + f"1.{w}")
        if c["glu"] and (k + 1) % c["glu"] == 0:
            for w in ("weight", "bias"):
                m.put(t + f"glu.{w}", f"{prefix}encoders.meg.glus.{k}.0.{w}")
    for w in ("weight", "bias"):
        m.put(f"backbone.proj_out1.{w}", prefix + f"final.0.{w}")
    m.put("backbone.proj_out2.weight", prefix + "final.2.weight", lambda w: w.transpose(0, 1))
    m.put("backbone.proj_out2.bias", prefix + "final.2.bias")


def convert_simpleconv(state: Mapping[str, torch.Tensor], *, positions: Mapping[Any, Any] | None = None,
                       subject_index: Mapping[Any, int] | None = None, n_times: int = 342,
                       **options: Any) -> BrainDecoder:
    """Map a ``SimpleConv`` state dict onto a new :class:`~neurodecode.models.BrainDecoder` (strictly).

    Parameters
    ----------
    state : dict of str → Tensor
        ``best_state`` of a Dora checkpoint (keys ``0.*``; a feature model's ``1.*`` keys are kept aside)
        or the model's own state dict.
    positions : dict
        Subject → 2-D sensor positions ``(n_chans, 2)`` of that subject's recording (NaN: not in the layout);
        required.
    subject_index : dict | None
        Subject → brainmagick subject index (the row of ``subject_layers.weights``: the rank of ``(study,
        subject_uid)`` among the training recordings); None: ``int(subject)``.
    n_times : int
        Samples per window.
    **options
        What the shapes cannot tell: ``dilation_period`` (5), ``merger_dropout`` (0.2), ``margin`` (0.2).

    Returns
    -------
    model : BrainDecoder
        In eval mode; ``model.published`` holds the family, the configuration and the tensors kept aside.

    Raises
    ------
    ValueError
        Unknown keys, missing keys, shapes that differ, or a subject index outside the table.
    """
    if not isinstance(positions, Mapping) or not positions:
        raise ValueError("brainmagick's SimpleConv merges sensors by their 2-D layout positions: pass "
                         "positions={subject: array (n_chans, 2)} (mne.find_layout(info).pos[:, :2] in "
                         "channel order, NaN for channels not in the layout)")
    state = dict(state)
    prefix = "0." if any(k.startswith("0.") for k in state) else ""
    side = {k: state.pop(k) for k in [k for k in state if prefix and k.startswith("1.")]}
    c = _infer_config(state, prefix, dict(options))
    check_keys(state, original_simpleconv_keys(prefix, **c), family="brainmagick")
    index = {str(s): int(s if subject_index is None else subject_index[s]) for s in positions}
    bad = {s: i for s, i in index.items() if not 0 <= i < c["n_subjects"]}
    if bad:
        raise ValueError(f"subject indices {bad} are outside the checkpoint's {c['n_subjects']} subject "
                         "layers; pass subject_index={subject: brainmagick subject index}")
    model = build_simpleconv(c, positions, n_times)
    m = StateMapper(state, "brainmagick")
    _map(m, c, prefix, index)
    m.load_into(model)
    for k, t in side.items():
        m.side[k] = {"tensor": t.clone(), "reason": "feature model (all_models[1]), not the brain model"}
    model.eval()
    model.published = {"family": "brainmagick", "config": c, "subject_index": index, "unused": m.side}
    return model


def load_simpleconv(path: str | Path, *, positions: Mapping[Any, Any] | None = None,
                    subject_index: Mapping[Any, int] | None = None, n_times: int = 342,
                    **options: Any) -> BrainDecoder:
    """Read a brainmagick checkpoint (weights only; Dora's other objects as inert placeholders) and map it.

    Parameters
    ----------
    path : str | Path
        ``outputs/xps/<sig>/checkpoint.th`` (``best_state``, else ``all_models``), or a bare / safetensors
        state dict.
    positions : dict
        Subject → 2-D sensor positions ``(n_chans, 2)``; required.
    subject_index : dict | None
        Subject → brainmagick subject index; None: ``int(subject)``.
    n_times : int
        Samples per window.
    **options
        See :func:`convert_simpleconv`.

    Returns
    -------
    model : BrainDecoder
        In eval mode, with ``model.published`` (plus ``"path"`` and ``"container"``).
    """
    state, where = read_checkpoint(path, allowed_globals=DORA_GLOBALS)
    model = convert_simpleconv(state, positions=positions, subject_index=subject_index, n_times=n_times,
                               **options)
    model.published.update(path=str(path), container=where)
    return model
