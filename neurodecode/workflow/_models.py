"""Decoders of a run: the ridge baseline and the deep decoder (adapters → shared backbone → heads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import FitConfig
from ..utils import atomic_write_json, logger, resolve_device
from ._data import positions_2d
from ._targets import lowlevel_targets as _lowlevel_targets
from ._targets import token_targets as _token_targets
from ._tracking import training_tracking


def predict_ridge(config: FitConfig, train: Any, test: Any, targets: Any, model_dir: Path) -> np.ndarray:
    """Fit one ridge model per subject on ``train`` and predict ``test`` (saved to ``model_dir``)."""
    from ..models import RidgeDecoder

    est = RidgeDecoder(alphas=tuple(config.models.ridge.alphas), cv=config.models.ridge.cv)
    est.fit_trials(train, targets)
    for s, sub in est.subject_models_.items():
        logger.info("Ridge subject %s: alpha = %g (chosen by %s on training trials)", s, sub.alpha_,
                    "leave-one-out" if config.models.ridge.cv is None else f"{config.models.ridge.cv}-fold CV")
    est.save_pretrained(model_dir)
    return est.predict_trials(test).astype(np.float32)


def _sequence_kwargs(config: FitConfig, train: Any) -> dict[str, Any]:
    """``n_times`` and sensor positions for the M/EEG adapters."""
    mc = config.models.mlp
    per = train.by_subject()
    shapes = {s: tuple(t.feature_shape) for s, t in per.items()}
    n_times = {shape[-1] for shape in shapes.values()}
    if len(n_times) != 1 or any(len(shape) != 2 for shape in shapes.values()):
        raise ValueError(f"M/EEG decoders need (channels, times) trials with one time axis; got {shapes}. "
                         "Resample / crop the subjects alike (preprocessing.sfreq, tmin, tmax).")
    kwargs: dict[str, Any] = {"n_times": n_times.pop(), "adapter_kwargs": dict(mc.adapter_kwargs)}
    if mc.adapter == "spatial_attention" and "positions" not in kwargs["adapter_kwargs"]:
        positions = {}
        for s, t in per.items():
            pos = positions_2d(t.info.get("ch_pos"))
            if pos is None:
                raise ValueError(f"adapter 'spatial_attention' needs sensor positions, but subject {s}'s data "
                                 "has none (info['ch_pos']); use adapter 'subject_layer'")
            positions[s] = pos
        kwargs["adapter_kwargs"]["positions"] = positions
    return kwargs


def predict_mlp(config: FitConfig, train: Any, test: Any, targets: Any, run_dir: Path, *,
                model_dir: Path, checkpoint_dir: Path, resume: bool = False,
                target_token_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Train the deep decoder on ``train`` (contrastive, validation carved from train) and predict ``test``."""
    from ..models import BrainDecoder
    from ..training import Trainer

    mc = config.models.mlp
    device = resolve_device(config.device)
    n_inputs = {s: int(np.prod(t.feature_shape)) for s, t in train.by_subject().items()}
    extra: dict[str, Any] = {"adapter_kwargs": mc.adapter_kwargs}
    if mc.adapter in ("subject_layer", "spatial_attention"):
        extra = _sequence_kwargs(config, train)
    token_shape = None
    token_targets = None
    if "tokens" in mc.heads:
        token_shape = tuple(mc.token_shape) if mc.token_shape is not None else target_token_shape
        token_targets = _token_targets(config, train)
        if token_shape != tuple(token_targets.token_shape):
            raise ValueError(f"models.mlp.token_shape is {list(token_shape or [])} but the "
                             f"{config.targets.encoder} token targets have shape "
                             f"{list(token_targets.token_shape)}; set models.mlp.token_shape=null to follow "
                             "the targets")
        logger.info("Training the tokens head %s on %s (%s loss, weight %g)", token_shape,
                    token_targets.name, mc.token_loss, mc.token_weight)
    low_targets = None
    if "lowlevel" in mc.heads:
        low_targets = _lowlevel_targets(config, train)
        logger.info("Training the lowlevel head %s on %s (%s loss, weight %g)", low_targets.token_shape,
                    low_targets.name, mc.lowlevel_loss, mc.lowlevel_weight)
    model = BrainDecoder(n_inputs, embed_dim=targets.dim, hidden_dim=mc.hidden_dim,
                         n_blocks=mc.n_blocks, dropout=mc.dropout, backbone=mc.backbone, seed=config.seed,
                         adapter=mc.adapter, heads=tuple(mc.heads), token_shape=token_shape,
                         lowlevel_shape=None if low_targets is None else low_targets.token_shape,
                         backbone_kwargs=mc.backbone_kwargs, head_kwargs=mc.head_kwargs,
                         # (n_frames, dim) speech targets make an M/EEG decoder time-resolved
                         embed_shape=getattr(targets, "token_shape", None), **extra)
    trainer = Trainer(model, loss=mc.loss, temperature=mc.temperature, temperature_mode=mc.temperature_mode,
                      temperature_schedule=tuple(mc.temperature_schedule), mixco_fraction=mc.mixco_fraction,
                      clip_weight=mc.clip_weight, batch_composition=mc.batch_composition,
                      lr=mc.lr, weight_decay=mc.weight_decay,
                      batch_size=mc.batch_size, max_epochs=mc.max_epochs, seed=config.seed,
                      device=device, val_fraction=mc.val_fraction, patience=mc.patience,
                      mixed_precision=mc.mixed_precision, lr_schedule=mc.lr_schedule,
                      lr_schedule_kwargs=mc.lr_schedule_kwargs or None, max_grad_norm=mc.max_grad_norm,
                      gradient_accumulation_steps=mc.gradient_accumulation_steps,
                      ema_decay=mc.ema_decay, checkpoint_every=mc.checkpoint_every,
                      token_loss=mc.token_loss, token_weight=mc.token_weight,
                      lowlevel_loss=mc.lowlevel_loss, lowlevel_weight=mc.lowlevel_weight)
    trainer.fit(train, targets, token_targets=token_targets, lowlevel_targets=low_targets,
                checkpoint_dir=checkpoint_dir, resume=resume,
                tracking=training_tracking(config, run_dir, model_dir))
    model.save_pretrained(model_dir)
    atomic_write_json(model_dir / "history.json", trainer.history_)
    return model.predict(test, device=device)
