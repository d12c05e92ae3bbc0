"""New-subject adaptation: MindBridge "reset-tuning" of a pretrained BrainDecoder.

A model pretrained on several subjects gets a freshly initialised adapter for
a new subject (any number of voxels); the adapter is first trained alone with
the shared encoder frozen, then everything is fine-tuned, the shared parts with
a smaller learning rate. Each phase is one :class:`~neurodecode.training.Trainer`
run, so validation, best-epoch restore, accelerate and checkpoints work as usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..datasets import check_no_leakage
from ..models.registry import build_loss
from ..utils import fill_doc, logger, verbose
from .trainer import Trainer

__all__ = ["AdaptResult", "adapt_subject"]


@dataclass
class AdaptResult:
    """What :func:`adapt_subject` returns.

    Parameters
    ----------
    model : BrainDecoder
        The adapted model (the one passed in, updated in place, in eval mode).
    history : list of dict
        One record per epoch of both phases: the :class:`Trainer` record
        (``epoch``, ``train_loss``, ``val_loss``, ``val_top1``, ...) plus
        ``phase`` (1: adapter only, 2: everything), ``shared_lr`` (learning
        rate factor of the shared parts: 0 in phase 1) and ``total_epoch``.
    subject : str
        The adapted subject.
    best_epochs : dict
        Phase → the epoch whose weights the Trainer restored (None without validation).
    time_s : float
        Wall time of the whole adaptation.
    """

    model: Any
    history: list[dict] = field(default_factory=list)
    subject: str = ""
    best_epochs: dict[int, int | None] = field(default_factory=dict)
    time_s: float = 0.0


@contextmanager
def _scaled_updates(params: list[nn.Parameter], scale: float) -> Iterator[None]:
    """Shrink every optimizer step on ``params`` by ``scale`` (per-group learning rate without a param group).

    The :class:`Trainer` builds one AdamW over all trainable parameters with a
    single learning rate. An AdamW update is linear in the learning rate (the
    moment estimates do not depend on it), so moving each of ``params`` only
    ``scale`` of the way from its pre-step value to its post-step value is
    exactly a step with learning rate ``scale · lr`` (weight decay included).
    Implemented with torch's global optimizer step hooks, active only inside
    this context and only for optimizers that hold these parameters.
    """
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    ids = {id(p) for p in params}
    saved: dict[int, list[tuple[nn.Parameter, torch.Tensor]]] = {}

    def pre(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        mine = [p for g in optimizer.param_groups for p in g["params"] if id(p) in ids and p.grad is not None]
        if mine:
            saved[id(optimizer)] = [(p, p.detach().clone()) for p in mine]

    def post(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for p, before in saved.pop(id(optimizer), []):
                p.copy_(before.lerp_(p, scale))

    h1, h2 = register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()
        saved.clear()


def _make_loss(loss: str | Callable, n_epochs: int) -> Any:
    """One loss module for both phases (a learnable temperature carries over; schedules span all epochs)."""
    if not isinstance(loss, str):
        return loss
    return build_loss(loss, n_epochs=max(int(n_epochs), 1))


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_adapt_args(trials: Any, freeze_epochs: Any, max_epochs: Any, shared_lr_scale: float, resume: bool,
                      checkpoint_dir: str | Path | None) -> tuple[Any, int, int]:
    """Check :func:`adapt_subject`'s arguments; return the one subject and the two epoch counts (ints).

    Raises
    ------
    DataLeakageError
        If ``trials`` holds test trials.
    ValueError
        If ``trials`` holds several subjects, an epoch count or ``shared_lr_scale`` is out of range, or
        ``resume`` is asked without a ``checkpoint_dir``.
    """
    check_no_leakage(trials, where="new-subject adaptation")
    subjects = list(trials.subjects)
    if len(subjects) != 1:
        raise ValueError(f"adapt_subject adapts one subject at a time; trials hold subjects {subjects}. "
                         "Select one, e.g. trials.select(subject=7)")
    freeze_epochs = _check_int("freeze_epochs", freeze_epochs, 0)
    max_epochs = _check_int("max_epochs", max_epochs, 1)
    if freeze_epochs > max_epochs:
        raise ValueError(f"freeze_epochs ({freeze_epochs}) must be <= max_epochs ({max_epochs})")
    if not 0.0 <= float(shared_lr_scale) <= 1.0:
        raise ValueError(f"shared_lr_scale must be in [0, 1], got {shared_lr_scale!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    return subjects[0], freeze_epochs, max_epochs


def _prepare_adapter(model: Any, subject: Any, n_features: int, *, reset: bool, positions: Any,
                     seed: int) -> None:
    """Give a new subject a fresh adapter; re-initialise a known subject's (``reset``), its size checked.

    Raises
    ------
    ValueError
        If the model knows ``subject`` with another number of features.
    """
    key = str(subject)
    if key not in model.subjects:
        model.add_subject(subject, n_features, positions=positions, seed=seed)
        return
    if model.n_inputs[key] != n_features:
        raise ValueError(f"Subject {subject!r} has {n_features} features in trials but the model's "
                         f"adapter expects {model.n_inputs[key]}; adapt it under a new subject key")
    if reset:
        model.reset_subject(subject, seed=seed)


def _parameter_roles(model: Any, subject: Any) -> tuple[set[str], set[str]]:
    """Names of ``subject``'s own adapter parameters, and of every other subject's (never trained here)."""
    key = str(subject)
    own = set(model.subject_parameter_names(subject))
    others: set[str] = set()
    for s in model.subjects:
        if s != key:
            others.update(model.subject_parameter_names(s))
    return own, others


@verbose
@fill_doc
def adapt_subject(model: Any, trials: Any, targets: Any, *, reset: bool = True, freeze_epochs: int = 5,
                  max_epochs: int = 20, shared_lr_scale: float = 0.1, lr: float = 1e-3,
                  batch_size: int = 64, seed: int = 0, device: str | torch.device = "cpu",
                  val_fraction: float = 0.1, loss: str | Callable = "infonce", weight_decay: float = 0.01,
                  positions: Any = None, checkpoint_dir: str | Path | None = None, resume: bool = False,
                  verbose: bool | str | int | None = None) -> AdaptResult:
    """Adapt a pretrained BrainDecoder to a new subject (MindBridge reset-tuning).

    1. The subject gets a freshly initialised adapter
       (:meth:`~neurodecode.models.BrainDecoder.add_subject`), or, if the
       model already has one and ``reset=True``, its adapter is re-initialised
       (:meth:`~neurodecode.models.BrainDecoder.reset_subject`).
    2. Phase 1 (``freeze_epochs`` epochs): the shared encoder (backbone,
       heads, shared adapter parts) is frozen; only the subject's adapter and
       the loss temperature are trained, with learning rate ``lr``.
    3. Phase 2 (``max_epochs - freeze_epochs`` epochs): everything but the
       other subjects' adapters is trained; the shared parts move with
       learning rate ``lr · shared_lr_scale``, the adapter with ``lr``.

    Other subjects' adapters are never changed. The loss module (with its
    learned temperature) carries over from phase 1 to phase 2; both phases use
    ``seed``, so they hold out the same validation stimuli.

    Parameters
    ----------
    model : BrainDecoder
        The pretrained model, updated in place.
    trials : BrainTrials
        Training trials of exactly one subject (no ``split="test"`` trials).
    targets : StimulusEmbeddings
        Embedding of every stimulus of ``trials``.
    reset : bool
        Re-initialise the adapter of a subject the model already knows (if
        False, it is fine-tuned from its current weights). A new subject always
        gets fresh weights.
    freeze_epochs : int
        Epochs of phase 1 (0 skips it).
    max_epochs : int
        Epochs of both phases together (``max_epochs == freeze_epochs`` skips phase 2).
    shared_lr_scale : float
        Learning-rate factor of the shared parts in phase 2, in [0, 1] (0
        keeps them frozen: adapter-only training throughout).
    lr, batch_size, device, val_fraction, weight_decay
        As for :class:`~neurodecode.training.Trainer` (the same for both phases).
    seed : int
        Seeds the new adapter's weights and both Trainer runs.
    loss : {"infonce", "soft_clip", "mindeye2", "clip_mse", "brainmagick_clip", "mse"} | callable
        The training loss (a string builds a fresh loss, e.g. a new temperature).
    positions : array-like, shape (n_chans, 2) | None
        Sensor positions of a new subject, for the ``"spatial_attention"`` adapter.
    checkpoint_dir : str | Path | None
        If given, phase ``k`` writes its checkpoints to ``checkpoint_dir/phase{k}``.
    resume : bool
        Resume each phase from its newest checkpoint (with ``checkpoint_dir``).
    %(verbose)s

    Returns
    -------
    result : AdaptResult

    Raises
    ------
    DataLeakageError
        If ``trials`` holds test trials.
    ValueError
        If ``trials`` holds several subjects, or a known subject's feature
        count differs from its adapter's.

    Notes
    -----
    The Trainer has one learning rate for all parameters; phase 2's smaller
    shared learning rate is applied by shrinking each optimizer step of the
    shared parameters (exactly equivalent to an AdamW parameter group with
    learning rate ``lr · shared_lr_scale``; see ``docs/training.md``).

    Examples
    --------
    >>> model = BrainDecoder.from_pretrained("runs/pretrained/model")        # doctest: +SKIP
    >>> res = adapt_subject(model, new_subject_train, targets, seed=0)      # doctest: +SKIP
    >>> res.model.predict(new_subject_test)                                 # doctest: +SKIP
    """
    t0 = time.perf_counter()
    subject, freeze_epochs, max_epochs = _check_adapt_args(trials, freeze_epochs, max_epochs, shared_lr_scale,
                                                           resume, checkpoint_dir)
    key = str(subject)
    _prepare_adapter(model, subject, int(np.prod(trials.shape[1:])), reset=reset, positions=positions,
                     seed=seed)  # 1. a fresh adapter
    own, others = _parameter_roles(model, subject)
    named = dict(model.named_parameters())
    was_trainable = {n: p.requires_grad for n, p in named.items()}
    shared = [p for n, p in named.items() if n not in own and n not in others]
    loss_fn = _make_loss(loss, max_epochs)
    history: list[dict] = []
    best_epochs: dict[int, int | None] = {}
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir)

    def run_phase(phase: int, epochs: int, shared_scale: float) -> None:
        trainer = Trainer(model, loss=loss_fn, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                          max_epochs=epochs, seed=seed, device=device, val_fraction=val_fraction)
        trainer.fit(trials, targets, checkpoint_dir=None if ckpt is None else ckpt / f"phase{phase}",
                    resume=resume)
        for rec in trainer.history_:
            history.append({**rec, "phase": phase, "shared_lr": shared_scale,
                            "total_epoch": len(history) + 1})
        best_epochs[phase] = trainer.best_epoch_

    try:
        for n, p in named.items():
            p.requires_grad_(n in own)
        if freeze_epochs:
            logger.info("Adaptation phase 1: subject %s's adapter only (%d parameters), %d epochs", key,
                        sum(named[n].numel() for n in own), freeze_epochs)
            run_phase(1, freeze_epochs, 0.0)
        if max_epochs > freeze_epochs:
            for n, p in named.items():
                p.requires_grad_(n not in others and (n in own or float(shared_lr_scale) > 0))
            logger.info("Adaptation phase 2: adapter (lr %g) + shared encoder (lr %g), %d epochs", lr,
                        lr * float(shared_lr_scale), max_epochs - freeze_epochs)
            with _scaled_updates(shared, float(shared_lr_scale)):
                run_phase(2, max_epochs - freeze_epochs, float(shared_lr_scale))
    finally:
        for n, p in named.items():
            p.requires_grad_(was_trainable[n])
    model.eval()
    elapsed = time.perf_counter() - t0
    logger.info("Adapted subject %s in %.1f s", key, elapsed)
    return AdaptResult(model=model, history=history, subject=key, best_epochs=best_epochs, time_s=elapsed)
