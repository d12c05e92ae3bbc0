"""Trainer: fits a BrainDecoder to stimulus embeddings with a contrastive loss, on accelerate.

The loop runs on Hugging Face :class:`accelerate.Accelerator`, so one code path
covers CPU, one GPU and multi-process data parallel (``accelerate launch`` /
``torchrun``), with optional mixed precision. Randomness only comes from
``torch.Generator`` objects seeded with ``seed`` (accelerate's ``set_seed`` is
never called: it reseeds the global RNGs).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..datasets import check_no_leakage
from ..models.losses import (
    ATM_CLIP_WEIGHT,
    MINDEYE2_MIXCO_FRACTION,
    MINDEYE2_SCHEDULE,
    TEMPERATURE_MODES,
    TrainingLoss,
    mixco,
    soft_clip,
)
from ..models.registry import (
    LOSS_REGISTRY,
    LOWLEVEL_LOSS_REGISTRY,
    TOKEN_LOSS_REGISTRY,
    build_loss,
    get_loss,
    get_lowlevel_loss,
    get_token_loss,
)
from ..utils import ProgressBar, check_option, logger, resolve_device, take_rows, use_log_level, verbose
from . import _data
from .checkpoint import CheckpointError, load_latest_checkpoint, remove_stale_temporaries, save_checkpoint
from .tracking import Tracking, _accelerator_kwargs, _session, _TrainingLog

#: Named losses of the pooled embedding: a live, tuple-like view of ``neurodecode.models.list_losses()``.
LOSSES = LOSS_REGISTRY.view()
BATCH_COMPOSITIONS = ("per_subject", "all_subjects")
SCHEDULES = ("onecycle", "cosine", "constant")
#: Keyword arguments each schedule accepts in ``lr_schedule_kwargs`` (torch's names and meanings).
SCHEDULE_KWARGS = {"onecycle": ("pct_start", "div_factor", "final_div_factor", "anneal_strategy"),
                   "cosine": ("eta_min",), "constant": ()}
MIXED_PRECISIONS = ("no", "bf16", "fp16")
#: Losses of the ``tokens`` / ``lowlevel`` heads (live views of the token / low-level loss registries).
TOKEN_LOSSES = TOKEN_LOSS_REGISTRY.view()
LOWLEVEL_LOSSES = LOWLEVEL_LOSS_REGISTRY.view()

#: Trainer settings that must match for a run to be resumed from a checkpoint.
_RESUME_KEYS = ("lr", "weight_decay", "batch_size", "max_epochs", "seed", "val_fraction",
                "gradient_accumulation_steps", "lr_schedule", "lr_schedule_kwargs", "ema_decay",
                "max_grad_norm", "batch_composition")


def _check_schedule_kwargs(schedule: str, kwargs: Any) -> None:
    """Refuse options a schedule does not take, and values outside their range (ValueError)."""
    if kwargs is None:
        return
    if not isinstance(kwargs, dict):
        raise TypeError(f"lr_schedule_kwargs must be a dict or None, got {type(kwargs).__name__}")
    allowed = SCHEDULE_KWARGS[schedule]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"lr_schedule_kwargs {unknown} are not options of lr_schedule={schedule!r}; "
                         f"it takes {list(allowed) or 'none'}")
    for key, value in kwargs.items():
        if key == "anneal_strategy":
            check_option("anneal_strategy", value, ("cos", "linear"))
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
            raise ValueError(f"lr_schedule_kwargs.{key} must be a number, got {value!r}")
        if key == "pct_start" and not 0.0 < float(value) < 1.0:
            raise ValueError(f"lr_schedule_kwargs.pct_start must be in (0, 1), got {value!r}")
        if key in ("div_factor", "final_div_factor") and not float(value) > 0:
            raise ValueError(f"lr_schedule_kwargs.{key} must be > 0, got {value!r}")
        if key == "eta_min" and not float(value) >= 0:
            raise ValueError(f"lr_schedule_kwargs.eta_min must be >= 0, got {value!r}")


class _SoftClipLoss(nn.Module):
    def __init__(self, temperature: float = 0.125) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, pred: torch.Tensor, target: torch.Tensor, ids: Any = None) -> torch.Tensor:
        return soft_clip(pred, target, self.temperature)


# -- multi-process helpers ---------------------------------------------------------------------
def _all_gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate every process's ``x`` along dim 0 (rank order; row counts may differ by process)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
    sizes_t = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes_t, n)
    sizes = [int(s) for s in sizes_t]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[:x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:s] for o, s in zip(out, sizes)]), sizes


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the gradient over processes and returns this process's rows.

    With every process computing the same global loss ``L`` from the gathered
    tensors, process ``r`` receives ``world_size · ∂L/∂pred_r``; DDP's gradient
    averaging then yields exactly ``∂L/∂θ`` of the global batch (CLIP training).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out, sizes = _all_gather_rows(x)
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]]


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _legacy_setting(saved: dict, key: str) -> Any:
    """The value implied for a setting that checkpoints written before it existed do not record."""
    loss = saved.get("loss")
    implied = {"batch_composition": "per_subject"}
    if loss == "infonce":
        implied |= {"temperature": 0.07, "temperature_mode": "learnable"}
    elif loss == "soft_clip":
        implied |= {"temperature": 0.125, "temperature_mode": "fixed"}
    return implied.get(key)


#: Stimuli of an auxiliary (token / low-level) target table hashed into the resume fingerprint.
_AUX_FINGERPRINT_ROWS = 64


def _targets_digest(Y: np.ndarray, stimulus_ids: Any, aux: list) -> str:
    """sha256 of the (normalised) targets in trial order, the stimulus ids, and a sample of each head's targets."""
    h = hashlib.sha256()
    h.update(memoryview(np.ascontiguousarray(Y, dtype=np.float32)).cast("B"))
    h.update("\n".join(map(str, stimulus_ids)).encode())
    for a in aux:  # token / latent tables can be tens of GB: a fixed sample of stimuli
        rows = np.unique(a.rows)
        pick = rows[np.linspace(0, len(rows) - 1, min(_AUX_FINGERPRINT_ROWS, len(rows))).astype(int)]
        h.update(f"{a.head}:{list(a.shape)}".encode())
        h.update(memoryview(np.ascontiguousarray(np.asarray(a.values[pick], dtype=np.float32))).cast("B"))
    return h.hexdigest()


def _model_digest(model: nn.Module) -> str:
    """sha256 of the model's architecture: its config (but its init seed) and every weight's shape."""
    config = {k: v for k, v in (getattr(model, "config", None) or {}).items() if k != "seed"}
    shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps([config, shapes], sort_keys=True, default=str).encode()).hexdigest()


def _mix_generator(seed: int, epoch: int, batch: int, rank: int) -> torch.Generator:
    """BiMixCo generator of one batch: a function of (seed, epoch, batch, rank) only, so resuming is exact."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(batch), int(rank), 0x6D6978]).generate_state(2)
    return torch.Generator().manual_seed((int(state[0]) << 32) | int(state[1]))


class _HeadTargets:
    """Targets of an auxiliary head (tokens, low-level latents), read by stimulus code batch by batch.

    ``values`` is the table's ``(n_stimuli, prod(shape))`` array (in memory or
    memory-mapped); only the rows a batch needs are read (sorted, unique), so a
    memory-mapped table is never materialised. ``head`` names the model output
    (``DecoderOutput`` attribute), ``key`` the history column
    (``train_<key>_loss``), ``loss_fn`` / ``weight`` its term of the total loss.
    """

    def __init__(self, table: Any, uniques: Any, shape: tuple[int, ...], *, head: str, key: str,
                 loss_fn: Callable, weight: float) -> None:
        self.values = table.values
        self.rows = table._rows(list(uniques))  # table row of every stimulus code
        self.shape = tuple(shape)
        self.head, self.key, self.loss_fn, self.weight = head, key, loss_fn, float(weight)

    def loss(self, out: Any, codes: torch.Tensor, device: torch.device) -> torch.Tensor:
        return self.loss_fn(getattr(out, self.head).float(), self.get(codes, device))

    def get(self, codes: torch.Tensor, device: torch.device) -> torch.Tensor:
        rows = self.rows[codes.cpu().numpy()]
        uniq, inverse = np.unique(rows, return_inverse=True)
        block = np.asarray(self.values[uniq], dtype=np.float32)
        out = torch.from_numpy(block).index_select(0, torch.from_numpy(inverse.reshape(-1)))
        return out.reshape(len(rows), *self.shape).to(device)


# -- state of one fit ----------------------------------------------------------------------------
class _EarlyStopping:
    """Early-stopping bookkeeping: the lowest validation loss, its epoch and weights, epochs since it.

    A validation loss improves only if it is strictly lower than the best so far
    (no minimum delta); training stops once ``since_best`` reaches ``patience``
    (never with ``patience=None``).
    """

    def __init__(self, patience: int | None, best_val: float = np.inf, since_best: int = 0,
                 best_epoch: int | None = None, best_state: dict[str, torch.Tensor] | None = None) -> None:
        self.patience = patience
        self.best_val, self.since_best = float(best_val), int(since_best)
        self.best_epoch, self.best_state = best_epoch, best_state

    def observe(self, val_loss: float, epoch: int, model: nn.Module) -> bool:
        """Record an epoch's validation loss; keep a copy of ``model``'s weights if it improved."""
        if val_loss < self.best_val:
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best_val, self.since_best, self.best_epoch = val_loss, 0, epoch
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs went by without a lower validation loss."""
        return self.patience is not None and self.since_best >= self.patience


class _EpochTotals:
    """This process's running sums of an epoch: the loss over (global) trials, and each head's loss."""

    def __init__(self, total: float = 0.0, count: int = 0, heads: dict[str, Any] | None = None) -> None:
        self.total, self.count = total, count
        self.heads = {k: list(v) for k, v in (heads or {}).items()}  # head key -> [loss sum, trials]

    @classmethod
    def fresh(cls, aux: list[_HeadTargets]) -> _EpochTotals:
        return cls(heads={a.key: [0.0, 0] for a in aux})

    def add(self, loss: torch.Tensor, n_rows: int, head_losses: dict[str, torch.Tensor],
            n_local: int) -> None:
        """Add a batch: its loss over ``n_rows`` (global) trials, its head losses over ``n_local`` trials."""
        self.total += float(loss.detach()) * n_rows
        self.count += n_rows
        for k, v in head_losses.items():
            self.heads[k][0] += float(v.detach()) * n_local
            self.heads[k][1] += n_local

    def head_totals(self) -> dict[str, tuple[float, int]]:
        return {k: (float(v[0]), int(v[1])) for k, v in self.heads.items()}


def _swap_ema(model: nn.Module, ema: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Load the EMA weights into ``model``; return the live weights to put back (None without EMA)."""
    if ema is None:
        return None
    live = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema)
    return live


def _update_ema(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    """One EMA step: floating weights move ``1 - decay`` of the way to the model's, others are copied."""
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                ema[k].lerp_(v.detach(), 1.0 - float(decay))
            else:
                ema[k].copy_(v)


@dataclass
class _Processes:
    """Where this process runs: the accelerator, its device, rank and world size, and its logger."""

    accelerator: Any
    device: torch.device
    rank: int
    world: int
    is_main: bool
    log: Callable

    @classmethod
    def of(cls, accelerator: Any) -> _Processes:
        is_main = accelerator.is_main_process
        return cls(accelerator, accelerator.device, accelerator.process_index, accelerator.num_processes,
                   is_main, logger.info if is_main else _noop)


@dataclass
class _FitData:
    """The training material of one fit: per-subject data (with its split), head targets, fingerprint."""

    data: dict[Any, _data.SubjectData]
    aux: list[_HeadTargets]
    fingerprint: dict | None
    n_train: int
    n_val_trials: int
    gen: torch.Generator  # draws the validation split, then every epoch's batches


@dataclass
class _Batching:
    """Batch sizes and counts: global batches of ``batch_size × world`` trials, optimizer steps."""

    global_bs: int
    min_size: int
    all_subjects: bool
    n_batches: int
    accum: int
    total_steps: int


@dataclass
class _Engine:
    """The loss, optimizer, schedule and (accelerate-prepared) model of one fit."""

    loss_fn: Any
    optimizer: torch.optim.Optimizer
    optimizer_p: Any
    scheduler: Any
    model_p: nn.Module
    raw_model: nn.Module
    dropout_gen: torch.Generator


@dataclass
class _Progress:
    """The counters a checkpoint saves and a resume restores (besides the history)."""

    stopper: _EarlyStopping
    ema: dict[str, torch.Tensor] | None = None
    global_step: int = 0
    start_epoch: int = 1
    start_batch: int = 0
    finished: bool = False
    epoch_generator: torch.Tensor | None = None  # the resumed epoch's batch-generator state
    epoch_totals: _EpochTotals | None = None  # the resumed epoch's sums so far


@dataclass
class _FitRun:
    """Everything one fit works with."""

    procs: _Processes
    fit_data: _FitData
    batching: _Batching
    engine: _Engine
    progress: _Progress
    settings: dict
    ckpt_dir: Path | None
    log: _TrainingLog | None = None  # experiment tracking (None: off)


class Trainer:
    """Train a :class:`~neurodecode.models.BrainDecoder` on BrainTrials → stimulus embeddings.

    With ``batch_composition="per_subject"`` (default) each batch holds
    trials of a single subject and batches of all subjects are interleaved in
    a random order every epoch; with ``"all_subjects"`` every step holds
    ``batch_size // n_subjects`` trials of every subject, each run through its
    own adapter, and one loss is computed over the concatenation (MindEye2's
    multi-subject training). A validation
    set is carved out of the training trials *by stimulus* (validation images
    are never trained on); the weights of the epoch with the lowest validation
    loss are restored at the end.

    The loop runs on :class:`accelerate.Accelerator`: the same code trains on
    CPU, one GPU or several processes (``accelerate launch`` / ``torchrun``; see
    ``docs/training.md``). In a run of ``W`` processes each process takes
    ``batch_size`` trials of every global batch of ``W × batch_size`` trials,
    and predictions / targets are all-gathered before the loss, so the
    contrastive loss sees the global batch (as in CLIP training). Only the
    main process logs, shows progress and writes checkpoints.

    Parameters
    ----------
    model : BrainDecoder
        The model to train (updated in place).
    loss : {"infonce", "soft_clip", "mindeye2", "clip_mse", "brainmagick_clip", "mse"} | callable
        ``"infonce"``: symmetric CLIP loss (learnable temperature by default);
        ``"soft_clip"``: MindEye's SoftCLIP; ``"mindeye2"``: MindEye2's
        BiMixCo (inputs mixed per subject by
        :func:`~neurodecode.models.losses.mixco`) for the first
        ``int(mixco_fraction × max_epochs)`` epochs, then SoftCLIP with a
        cosine-scheduled temperature; ``"clip_mse"``: ATM's
        ``clip_weight × CLIP + (1 − clip_weight) × MSE``;
        ``"brainmagick_clip"``: brainmagick's one-directional CLIP loss with
        only the candidates normalised (no temperature); ``"mse"``: mean
        squared error of the normalised prediction to the target. Named
        losses (but ``"mse"``) are a
        :class:`~neurodecode.models.losses.TrainingLoss`. A callable
        ``loss(pred, target, ids)`` (or an ``nn.Module``, whose parameters are
        optimised too) is used as is; if it has ``set_epoch(epoch)`` or
        ``validation_loss(pred, target, ids)`` they are used too.
    temperature : float | None
        Temperature of a named contrastive loss; None = the loss's default
        (infonce 0.07, soft_clip 0.125, mindeye2 0.006, clip_mse
        1 / log(1/0.07) ≈ 0.376). Must be > 0, and >= 0.01 when learnable
        (an inverse temperature ≤ 100, CLIP's cap); never silently clamped.
    temperature_mode : {"fixed", "learnable", "schedule"} | None
        ``"fixed"``: used exactly (logits = cosine / temperature);
        ``"learnable"``: optimised with the model from ``temperature``,
        inverse temperature clamped at 100; ``"schedule"``: per-epoch cosine
        from ``temperature_schedule[0]`` to ``[1]`` (for ``mindeye2`` over its
        SoftCLIP epochs; its BiMixCo epochs and every validation use
        ``temperature``). None = the loss's default (infonce learnable,
        soft_clip fixed, mindeye2 schedule, clip_mse learnable). soft_clip and
        mindeye2 allow fixed and schedule only.
    temperature_schedule : (float, float)
        ``(start, end)`` of the schedule (MindEye2: 0.004 → 0.0075).
    mixco_fraction : float
        ``mindeye2``: fraction of the epochs trained with BiMixCo, in [0, 1]
        (MindEye2's ``mixup_pct``: 0.33).
    clip_weight : float
        ``clip_mse``: weight λ of the CLIP term, in [0, 1] (ATM: 0.1).
    batch_composition : {"per_subject", "all_subjects"}
        ``"per_subject"``: one subject per batch. ``"all_subjects"``: every
        step concatenates ``batch_size // n_subjects`` trials of every subject
        with no stimulus twice (see
        :func:`~neurodecode.training._data.all_subject_steps`); an epoch is
        one pass over the smallest subject's training trials. Single process
        only (multi-process raises ``NotImplementedError``).
    lr : float
        Peak learning rate (AdamW).
    weight_decay : float
        AdamW weight decay (not applied to biases, LayerNorm and temperature).
    batch_size : int
        Trials per batch *per process* (>= 2 for a contrastive loss); with
        ``"all_subjects"``, ``batch_size // n_subjects`` per subject.
    max_epochs : int
        Number of passes over the training trials.
    seed : int
        Seeds the validation split, the batch order and the dropout masks
        (``torch.Generator``; the global RNG is untouched). Two fits of equal
        models on equal data give identical weights on CPU.
    device : str | torch.device
        ``"cpu"`` trains on the CPU; anything else lets accelerate pick the
        accelerator (``cuda:<LOCAL_RANK>``).
    val_fraction : float
        Fraction of the training *stimuli* held out for validation (0 = none).
    patience : int | None
        Stop after this many epochs without a lower validation loss.
    mixed_precision : {"no", "bf16", "fp16"}
        Autocast precision of the forward pass (fp16 uses a gradient scaler).
        Weights, optimizer state and the loss stay float32.
    gradient_accumulation_steps : int
        Batches whose gradients are summed (each loss divided by the group's
        size) before one optimizer step; the last group of an epoch may be
        shorter. Gradients are synchronised across processes once per group.
    lr_schedule : {"onecycle", "cosine", "constant"}
        One-cycle (warm-up then cosine annealing), plain cosine annealing
        from ``lr`` to 0, or a constant ``lr``; stepped once per optimizer
        step.
    lr_schedule_kwargs : dict | None
        Options of the schedule, with torch's names: ``"onecycle"``:
        ``pct_start`` (fraction of the steps spent warming up, in (0, 1);
        default ``min(0.3, max(1.5 / total_steps, 0.1))``), ``div_factor``
        (initial lr = ``lr / div_factor``, default 25), ``final_div_factor``
        (final lr = initial lr / ``final_div_factor``, default 1e4),
        ``anneal_strategy`` (``"cos"`` or ``"linear"``); ``"cosine"``:
        ``eta_min`` (final lr, default 0). Any other key is an error. MindEye2
        uses ``{pct_start: 2 / max_epochs, final_div_factor: 1000}``.
    ema_decay : float | None
        If given (e.g. 0.999), an exponential moving average of the weights is
        kept after every optimizer step and used for validation, best-epoch
        selection and the final weights.
    max_grad_norm : float | None
        Clip the gradient norm of the model's parameters to this value.
    checkpoint_every : int | None
        With ``fit(..., checkpoint_dir=...)``, write a checkpoint every this
        many optimizer steps (and always one at the end).
    keep_checkpoints : int
        Number of newest checkpoints kept on disk.
    stream : bool | None
        Read each batch from ``trials.data`` instead of loading every subject's
        array into memory. None: stream exactly when the data is lazy (not a
        NumPy array, e.g. HDF5-backed).
    token_loss : {"mse", "cosine"}
        Loss of the ``"tokens"`` head when :meth:`fit` gets ``token_targets``
        (MindEye2-style): mean squared error over every token element, or
        ``1 − cosine similarity`` per token, averaged.
    token_weight : float
        Weight of the token loss in the total loss
        ``contrastive(pooled) + token_weight × token_loss(tokens)`` (>= 0).
    lowlevel_loss : {"l1", "mse"}
        Loss of the ``"lowlevel"`` head when :meth:`fit` gets
        ``lowlevel_targets`` (MindEye2 trains its blurry head on VAE latents
        with L1).
    lowlevel_weight : float
        Weight of the low-level loss in the total loss (>= 0; MindEye2: 0.5).
    verbose : bool | str | int | None
        Default log level of :meth:`fit`.

    Attributes
    ----------
    history_ : list of dict
        Per epoch: ``epoch``, ``step``, ``train_loss``, ``val_loss``,
        ``val_top1``, ``val_chance``, ``lr``, ``temperature`` (the epoch's
        training temperature; NaN for a loss without one), ``time_s``, and
        for a named contrastive loss ``loss_phase`` (``"bimixco"`` /
        ``"soft_clip"`` for mindeye2, else the loss name). With
        ``token_targets``, ``train_loss``/``val_loss`` are the total losses and
        ``train_contrastive_loss``, ``train_token_loss``,
        ``val_contrastive_loss``, ``val_token_loss`` (unweighted) are added;
        with ``lowlevel_targets`` likewise ``train_lowlevel_loss`` and
        ``val_lowlevel_loss``.
    best_epoch_ : int | None
        The epoch whose weights were restored (None without validation).
    val_stimuli_ : list
        The stimulus ids held out for validation.
    loss_fn_ : nn.Module | callable
        The loss used (with its learned temperature).
    global_step_ : int
        Optimizer steps taken.
    resumed_from_ : Path | None
        The checkpoint the last :meth:`fit` resumed from.

    Examples
    --------
    >>> trainer = Trainer(model, loss="infonce", max_epochs=30, seed=0)   # doctest: +SKIP
    >>> trainer.fit(trials.select(split="train"), targets)                # doctest: +SKIP
    >>> trainer.history_[-1]["val_top1"]                                  # doctest: +SKIP

    Resumable training (a killed run continues exactly where it stopped):

    >>> trainer = Trainer(model, max_epochs=30, checkpoint_every=500)     # doctest: +SKIP
    >>> trainer.fit(train, targets, checkpoint_dir="runs/x/checkpoints", resume=True)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, *, loss: str | Callable = "infonce",
                 temperature: float | None = None, temperature_mode: str | None = None,
                 temperature_schedule: tuple[float, float] = MINDEYE2_SCHEDULE,
                 mixco_fraction: float = MINDEYE2_MIXCO_FRACTION, clip_weight: float = ATM_CLIP_WEIGHT,
                 batch_composition: str = "per_subject", lr: float = 3e-4,
                 weight_decay: float = 0.01, batch_size: int = 128, max_epochs: int = 30, seed: int = 0,
                 device: str | torch.device = "cpu", val_fraction: float = 0.1,
                 patience: int | None = None, mixed_precision: str = "no",
                 gradient_accumulation_steps: int = 1, lr_schedule: str = "onecycle",
                 lr_schedule_kwargs: dict[str, Any] | None = None, ema_decay: float | None = None, max_grad_norm: float | None = None,
                 checkpoint_every: int | None = None, keep_checkpoints: int = 3,
                 stream: bool | None = None, token_loss: str = "mse", token_weight: float = 1.0,
                 lowlevel_loss: str = "l1", lowlevel_weight: float = 0.5,
                 verbose: bool | str | int | None = None) -> None:
        self.model = model
        self.loss = loss
        self.temperature = temperature
        self.temperature_mode = temperature_mode
        self.temperature_schedule = temperature_schedule
        self.mixco_fraction = mixco_fraction
        self.clip_weight = clip_weight
        self.batch_composition = batch_composition
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.seed = seed
        self.device = device
        self.val_fraction = val_fraction
        self.patience = patience
        self.mixed_precision = mixed_precision
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.lr_schedule = lr_schedule
        self.lr_schedule_kwargs = lr_schedule_kwargs
        self.ema_decay = ema_decay
        self.max_grad_norm = max_grad_norm
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.stream = stream
        self.token_loss = token_loss
        self.token_weight = token_weight
        self.lowlevel_loss = lowlevel_loss
        self.lowlevel_weight = lowlevel_weight
        self.verbose = verbose

    # -- checks ----------------------------------------------------------------------------
    def _validate(self) -> None:
        if isinstance(self.loss, str):
            get_loss(self.loss)  # unknown names: the registered ones and the closest match
        elif not callable(self.loss):
            raise TypeError(f"loss must be one of {LOSSES} or a callable, got {type(self.loss).__name__}")
        check_option("batch_composition", self.batch_composition, BATCH_COMPOSITIONS)
        if self.temperature_mode is not None:
            check_option("temperature_mode", self.temperature_mode, TEMPERATURE_MODES)
        check_option("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        check_option("lr_schedule", self.lr_schedule, SCHEDULES)
        _check_schedule_kwargs(self.lr_schedule, self.lr_schedule_kwargs)
        check_option("token_loss", self.token_loss, TOKEN_LOSSES)
        check_option("lowlevel_loss", self.lowlevel_loss, LOWLEVEL_LOSSES)
        for name in ("token_weight", "lowlevel_weight"):
            w = getattr(self, name)
            if isinstance(w, bool) or not isinstance(w, (int, float, np.number)) or not float(w) >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {w!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 2:
            raise ValueError(f"batch_size must be an int >= 2 (contrastive losses need negatives), "
                             f"got {self.batch_size!r}")
        if not isinstance(self.max_epochs, (int, np.integer)) or self.max_epochs < 1:
            raise ValueError(f"max_epochs must be an int >= 1, got {self.max_epochs!r}")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.patience is not None and (not isinstance(self.patience, (int, np.integer))
                                          or self.patience < 1):
            raise ValueError(f"patience must be None or an int >= 1, got {self.patience!r}")
        for name in ("gradient_accumulation_steps", "keep_checkpoints"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"{name} must be an int >= 1, got {val!r}")
        if self.checkpoint_every is not None and (
                isinstance(self.checkpoint_every, bool)
                or not isinstance(self.checkpoint_every, (int, np.integer)) or self.checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be None or an int >= 1, got {self.checkpoint_every!r}")
        if self.ema_decay is not None and not 0.0 < float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be None or in (0, 1), got {self.ema_decay!r}")
        if self.max_grad_norm is not None and not float(self.max_grad_norm) > 0:
            raise ValueError(f"max_grad_norm must be None or > 0, got {self.max_grad_norm!r}")
        if not isinstance(self.loss, str) or self.loss == "mse":
            given = [k for k in ("temperature", "temperature_mode") if getattr(self, k) is not None]
            if given:
                what = "a callable loss" if not isinstance(self.loss, str) else "loss='mse'"
                raise ValueError(f"{', '.join(given)} only apply to the named contrastive losses; {what} has "
                                 "no temperature to set")
        else:
            self._make_loss()  # checks the temperature settings (ValueError naming value and range)
        for attr in ("n_inputs", "embed_dim", "_check_subject"):
            if not hasattr(self.model, attr):
                raise TypeError(f"model must be a BrainDecoder-like module (missing {attr!r}), "
                                f"got {type(self.model).__name__}")

    def _make_loss(self) -> Any:
        """The loss object: a callable as given, or the loss registered under ``self.loss`` built from the
        trainer's settings (``neurodecode.models.build_loss``; unknown names list the registered ones)."""
        if not isinstance(self.loss, str):
            return self.loss
        return build_loss(self.loss, temperature=self.temperature, temperature_mode=self.temperature_mode,
                          temperature_schedule=self.temperature_schedule, n_epochs=int(self.max_epochs),
                          mixco_fraction=self.mixco_fraction, clip_weight=self.clip_weight)

    def _settings(self, loss_fn: Any = None) -> dict:
        out = {k: (v.item() if isinstance(v, np.generic) else v)
               for k, v in ((k, getattr(self, k)) for k in _RESUME_KEYS)} | {
            "loss": self.loss if isinstance(self.loss, str) else type(self.loss).__name__}
        if isinstance(loss_fn, TrainingLoss):
            out |= {"temperature": loss_fn.base_temperature, "temperature_mode": loss_fn.temperature_mode}
            if loss_fn.temperature_mode == "schedule":
                out["temperature_schedule"] = list(loss_fn.temperature_schedule)
            if loss_fn.name == "mindeye2":
                out["mixco_fraction"] = loss_fn.mixco_fraction
            if loss_fn.name == "clip_mse":
                out["clip_weight"] = loss_fn.clip_weight
        return out

    def _make_accelerator(self, tracking: Tracking | None = None) -> Any:
        from accelerate import Accelerator, DistributedDataParallelKwargs
        from accelerate.state import AcceleratorState, GradientState

        device = resolve_device(self.device) if isinstance(self.device, str) else self.device
        cpu = torch.device(device).type == "cpu"
        shared = AcceleratorState._shared_state
        if shared and (shared.get("_mixed_precision") != self.mixed_precision
                       or (cpu and getattr(shared.get("device"), "type", "cpu") != "cpu")):
            # A new Trainer in the same process with other settings: accelerate keeps a process-wide
            # singleton; reset its (non-distributed) part so the new settings apply.
            AcceleratorState._reset_state()
            GradientState._reset_state()
        return Accelerator(cpu=cpu, mixed_precision=self.mixed_precision,
                           kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
                           **_accelerator_kwargs(tracking))

    def _subject_data(self, trials: Any, Y: np.ndarray, codes: np.ndarray, device: torch.device,
                      digest: Any = None) -> dict[Any, _data.SubjectData]:
        """Per subject: checked features (in memory, or a lazy source), targets and codes.

        ``digest`` (a hashlib object), if given, is updated with every subject's features.
        """
        subj_col = trials.events["subject"].to_numpy()
        in_memory = _data.is_in_memory(trials.data) if self.stream is None else not self.stream
        out = {}
        for subject in trials.subjects:
            self.model._check_subject(subject)
            rows = np.flatnonzero(subj_col == subject)
            X = None
            if in_memory:
                X = np.asarray(take_rows(trials.data, rows), dtype=np.float32).reshape(len(rows), -1)
            if digest is not None:
                digest.update(f"subject {subject}: {len(rows)} trials;".encode())
            _data.check_features(X, trials.data, rows, subject=subject,
                                 n_expected=self.model.n_inputs[str(subject)], digest=digest)
            out[subject] = _data.SubjectData(
                subject=subject, rows=rows, Y=torch.from_numpy(Y[rows]).to(device),
                codes=torch.from_numpy(codes[rows].astype(np.int64)).to(device),
                X=None if X is None else torch.from_numpy(X).to(device),
                source=None if in_memory else trials.data)
        return out

    # -- fitting -------------------------------------------------------------------------
    @verbose
    def fit(self, trials: Any, targets: Any, *, token_targets: Any = None, lowlevel_targets: Any = None,
            checkpoint_dir: str | Path | None = None, resume: bool = False, tracking: Tracking | None = None,
            verbose: bool | str | int | None = None) -> Trainer:
        """Train ``model`` to map ``trials`` to their stimulus embeddings.

        Parameters
        ----------
        trials : BrainTrials
            Training trials only (no ``split="test"``), one or several subjects.
            Lazy ``data`` (e.g. HDF5-backed) is streamed batch by batch.
        targets : StimulusEmbeddings
            Embedding of every ``stimulus_id`` in ``trials`` (L2-normalised here).
        token_targets : StimulusEmbeddings | None
            Token sequences of every ``stimulus_id`` (a table with
            ``token_shape`` equal to the model's ``token_shape``, e.g. CLIP's
            256 × 1664 ViT-bigG-14 tokens; used as is, not normalised). The
            model's ``"tokens"`` head is then trained too, MindEye2-style: the
            loss is ``contrastive(pooled) + token_weight × token_loss(tokens)``.
            Rows are read batch by batch, so a memory-mapped table is fine.
        lowlevel_targets : StimulusEmbeddings | None
            Low-level targets of every ``stimulus_id`` with ``token_shape``
            equal to the model's ``lowlevel_shape`` ``(channels, height,
            width)``: image-VAE latents (MindEye2's blurry reconstruction) or a
            small RGB thumbnail. The ``"lowlevel"`` head is then trained with
            ``lowlevel_weight × lowlevel_loss`` added to the total loss.
        checkpoint_dir : str | Path | None
            Folder for checkpoints (every ``checkpoint_every`` steps and at the
            end; see :mod:`neurodecode.training.checkpoint`). The main process
            holds its lock file while it trains (one writer per folder).
        resume : bool
            Continue from the newest checkpoint in ``checkpoint_dir`` if there
            is one (the result is the same as an uninterrupted run); start
            afresh otherwise. A damaged newest checkpoint is skipped with a
            warning (the previous one is used); a checkpoint whose training
            data, targets or model architecture differ (fingerprints) is refused.
        tracking : Tracking | None
            Experiment trackers to log the fit to (:class:`~neurodecode.training.Tracking`;
            tensorboard, wandb, mlflow through accelerate, offline by default): per
            optimizer step ``train/step_loss`` and ``train/lr``, per epoch
            ``epoch``, ``train/loss`` (and its parts), ``val/loss``,
            ``val/top1``, ``val/chance``. A resumed fit continues the step
            count. None (default): nothing is tracked.
        verbose : bool | str | int | None
            Log level for this call (default: the Trainer's ``verbose``).

        Returns
        -------
        self : Trainer

        Raises
        ------
        DataLeakageError
            If ``trials`` holds test trials.
        ValueError
            On NaN/inf or zero-variance data, unknown subjects or size
            mismatches.
        CheckpointError
            (a ``ValueError``) On resume: a checkpoint written with other
            settings, data, targets or model, or no usable checkpoint.
        FileExistsError
            Another process is training into ``checkpoint_dir``.
        """
        with use_log_level(self.verbose if verbose is None else None):
            return self._fit(trials, targets, checkpoint_dir, resume, token_targets, lowlevel_targets,
                             tracking)

    def _check_head_targets(self, table: Any, head: str) -> tuple[int, ...]:
        arg, shape_key = {"tokens": ("token_targets", "token_shape"),
                          "lowlevel": ("lowlevel_targets", "lowlevel_shape")}[head]
        model = self.model
        heads = getattr(model, "heads", {})
        model_shape = (getattr(model, "config", {}) or {}).get(shape_key)
        if head not in heads or model_shape is None:
            raise ValueError(f"{arg} were given but the model has no {head!r} head; build it with "
                             f"heads=('pooled', {head!r}) and {shape_key}={arg}.token_shape")
        shape = getattr(table, "token_shape", None)
        if shape is None:
            raise ValueError(f"{arg} must be a StimulusEmbeddings table with a token_shape, got {table!r}")
        if tuple(shape) != tuple(model_shape):
            raise ValueError(f"{arg} have token_shape {tuple(shape)} but the model's {head} head has "
                             f"{shape_key} {tuple(model_shape)}; build the model with "
                             f"{shape_key}={arg}.token_shape")
        return tuple(int(v) for v in shape)

    def _head_targets(self, token_targets: Any, lowlevel_targets: Any, uniques: Any) -> list[_HeadTargets]:
        out = []
        if token_targets is not None:
            shape = self._check_head_targets(token_targets, "tokens")
            out.append(_HeadTargets(token_targets, uniques, shape, head="tokens", key="token",
                                    loss_fn=get_token_loss(self.token_loss),
                                    weight=self.token_weight))
        if lowlevel_targets is not None:
            shape = self._check_head_targets(lowlevel_targets, "lowlevel")
            out.append(_HeadTargets(lowlevel_targets, uniques, shape, head="lowlevel", key="lowlevel",
                                    loss_fn=get_lowlevel_loss(self.lowlevel_loss),
                                    weight=self.lowlevel_weight))
        return out

    def _fit(self, trials: Any, targets: Any, checkpoint_dir: str | Path | None, resume: bool,
             token_targets: Any = None, lowlevel_targets: Any = None,
             tracking: Tracking | None = None) -> Trainer:
        with ExitStack() as held:  # the checkpoint folder's lock and the trackers, while training
            return self._fit_locked(held, trials, targets, checkpoint_dir, resume, token_targets,
                                    lowlevel_targets, tracking)

    def _lock_checkpoints(self, held: ExitStack, ckpt_dir: Path, is_main: bool, world: int) -> None:
        """One writer per checkpoint folder: the main process holds its lock (other processes learn the outcome)."""
        from ..utils.locks import LOCK_NAME, FolderInUseError, hold_lock

        problem = None
        if is_main:
            try:
                ckpt_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(hold_lock(ckpt_dir / LOCK_NAME, wait=False,
                                             what=f"training with the checkpoint folder {ckpt_dir}"))
            except FolderInUseError as err:
                problem = str(err)
        if world > 1:
            import torch.distributed as dist

            box = [problem]
            dist.broadcast_object_list(box, src=0)
            problem = box[0]
        if problem is not None:
            raise FolderInUseError(problem)

    def _fit_locked(self, held: ExitStack, trials: Any, targets: Any, checkpoint_dir: str | Path | None,
                    resume: bool, token_targets: Any = None, lowlevel_targets: Any = None,
                    tracking: Tracking | None = None) -> Trainer:
        """Check the arguments, set the run up, resume it if asked, train, and finish."""
        self._check_fit_args(trials, checkpoint_dir, resume, token_targets, lowlevel_targets, tracking)
        t_start = time.perf_counter()
        run = self._start_run(trials, targets, checkpoint_dir, token_targets, lowlevel_targets, tracking)
        if run.ckpt_dir is not None:
            self._open_checkpoint_dir(held, run)
        if resume:
            self._resume(run)
        if tracking is not None:
            self._start_tracking(held, run, tracking)
        epoch = self._train_epochs(run)
        self._finish(run, epoch, t_start)
        return self

    def _check_fit_args(self, trials: Any, checkpoint_dir: str | Path | None, resume: bool,
                        token_targets: Any, lowlevel_targets: Any, tracking: Tracking | None = None) -> None:
        """The Trainer's settings, head target shapes, resume's folder, the trackers, the trials' split."""
        self._validate()
        if tracking is not None:
            if not isinstance(tracking, Tracking):
                raise TypeError(f"tracking must be a neurodecode.training.Tracking or None, got {tracking!r}")
            tracking.check()  # unknown trackers, missing packages: before anything is trained
        for table, head in ((token_targets, "tokens"), (lowlevel_targets, "lowlevel")):
            if table is not None:
                self._check_head_targets(table, head)
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (the folder the checkpoints were written to)")
        check_no_leakage(trials, where="training")

    def _start_run(self, trials: Any, targets: Any, checkpoint_dir: str | Path | None,
                   token_targets: Any = None, lowlevel_targets: Any = None,
                   tracking: Tracking | None = None) -> _FitRun:
        """Data, batching, loss, optimizer and schedule of a fit from scratch (the Trainer's state reset)."""
        procs = _Processes.of(self._make_accelerator(tracking))
        fit_data = self._prepare_data(trials, targets, token_targets, lowlevel_targets, procs,
                                      fingerprint=checkpoint_dir is not None)
        batching = self._plan_batches(fit_data, procs)
        engine = self._build_engine(procs, batching.total_steps)
        ema = None
        if self.ema_decay is not None:
            ema = {k: v.detach().clone() for k, v in engine.raw_model.state_dict().items()}
        self.history_: list[dict] = []
        self.loss_fn_ = engine.loss_fn
        self.best_epoch_ = None
        self.resumed_from_ = None
        return _FitRun(procs, fit_data, batching, engine, _Progress(_EarlyStopping(self.patience), ema),
                       self._run_settings(engine.loss_fn, procs.world, fit_data, batching),
                       None if checkpoint_dir is None else Path(checkpoint_dir))

    # -- set-up: data, batches, optimizer -------------------------------------------------------
    def _normalised_targets(self, trials: Any, targets: Any) -> np.ndarray:
        """Every trial's target embedding, L2-normalised (float32, trial order)."""
        Y = targets.lookup(trials.events["stimulus_id"]).astype(np.float32)
        if Y.shape[1] != self.model.embed_dim:
            raise ValueError(f"targets have dim {Y.shape[1]} but the model's embed_dim is "
                             f"{self.model.embed_dim}; build the model with embed_dim=targets.dim")
        norms = np.linalg.norm(Y, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("some target embeddings have zero norm; they cannot be L2-normalised")
        Y /= norms
        return Y

    def _prepare_data(self, trials: Any, targets: Any, token_targets: Any, lowlevel_targets: Any,
                      procs: _Processes, *, fingerprint: bool) -> _FitData:
        """Per-subject data on the device, head targets, validation split and (optional) fingerprint."""
        Y = self._normalised_targets(trials, targets)
        codes, uniques = pd.factorize(trials.events["stimulus_id"], sort=False)
        data_digest = hashlib.sha256() if fingerprint else None
        data = self._subject_data(trials, Y, codes, procs.device, digest=data_digest)
        aux = self._head_targets(token_targets, lowlevel_targets, uniques)
        prints = None
        if fingerprint:  # what a checkpoint may be resumed with (data, targets, model)
            prints = {"data": data_digest.hexdigest(),
                      "targets": _targets_digest(Y, trials.events["stimulus_id"], aux),
                      "model": _model_digest(self.model)}
        gen = torch.Generator().manual_seed(int(self.seed))
        n_val = self._split_validation(data, codes, uniques, gen)
        n_train = int(sum(len(d.train) for d in data.values()))
        n_val_trials = int(sum(len(d.val) for d in data.values()))
        procs.log("Training on %d trials (%d subjects), validating on %d trials of %d held-out stimuli"
                  "%s", n_train, len(data), n_val_trials, n_val,
                  f" ({procs.world} processes)" if procs.world > 1 else "")
        return _FitData(data, aux, prints, n_train, n_val_trials, gen)

    def _split_validation(self, data: dict[Any, _data.SubjectData], codes: np.ndarray, uniques: Any,
                          gen: torch.Generator) -> int:
        """Hold out ``val_fraction`` of the stimuli (drawn with ``gen``): sets each subject's train/val rows.

        Sets ``val_stimuli_`` and returns the number of held-out stimuli.
        """
        n_stim = len(uniques)
        n_val = round(float(self.val_fraction) * n_stim)
        if self.val_fraction > 0 and n_val == 0 and n_stim >= 2:
            n_val = 1
        if n_val >= n_stim:
            raise ValueError(f"val_fraction={self.val_fraction} leaves no training stimuli out of {n_stim}")
        val_codes = torch.randperm(n_stim, generator=gen)[:n_val].numpy()
        is_val = np.isin(codes, val_codes)
        self.val_stimuli_ = [uniques[i] for i in np.sort(val_codes)]
        for d in data.values():
            d.train, d.val = np.flatnonzero(~is_val[d.rows]), np.flatnonzero(is_val[d.rows])
        return n_val

    def _plan_batches(self, fit_data: _FitData, procs: _Processes) -> _Batching:
        """Global batches of ``batch_size × world`` trials (one slice per process); batches and steps."""
        data, world = fit_data.data, procs.world
        global_bs, min_size = int(self.batch_size) * world, max(2, world)
        all_subjects = self.batch_composition == "all_subjects"
        if all_subjects:
            if world > 1:
                raise NotImplementedError("batch_composition='all_subjects' runs in a single process; use "
                                          "'per_subject' for multi-process training")
            b = _data.sub_batch_size(len(data), global_bs)
            if b < 1:
                raise ValueError(f"batch_composition='all_subjects' needs batch_size >= the number of "
                                 f"subjects ({len(data)}), got batch_size={self.batch_size}")
            n_batches = _data.n_all_subject_steps(data, global_bs, min_size)
            procs.log("all_subjects batches: %d trials of each of %d subjects per step (%d of batch_size %d "
                      "used)", b, len(data), b * len(data), global_bs)
        else:
            n_batches = _data.n_epoch_batches(data, global_bs, min_size)
        if n_batches == 0:
            raise ValueError(f"No training batch of >= {min_size} trials can be formed from "
                             f"{fit_data.n_train} training trials; lower val_fraction or add trials")
        accum = int(self.gradient_accumulation_steps)
        total_steps = math.ceil(n_batches / accum) * int(self.max_epochs)
        return _Batching(global_bs, min_size, all_subjects, n_batches, accum, total_steps)

    def _make_optimizer(self, loss_fn: Any, device: torch.device) -> torch.optim.Optimizer:
        """AdamW: weight decay on the model's matrices; none on biases, norms and the loss's parameters."""
        decay, no_decay = [], []
        for _, p in self.model.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        loss_params = [p for p in loss_fn.parameters() if p.requires_grad] \
            if isinstance(loss_fn, nn.Module) else []
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(self.weight_decay)},
             {"params": no_decay + loss_params, "weight_decay": 0.0}], lr=float(self.lr),
            fused=device.type in ("cpu", "cuda"))

    def _make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        """The ``lr_schedule`` over ``total_steps`` optimizer steps, with ``lr_schedule_kwargs``."""
        kw = dict(self.lr_schedule_kwargs or {})
        if self.lr_schedule == "onecycle":
            kw.setdefault("pct_start", min(0.3, max(1.5 / total_steps, 0.1)))  # no 0 division for tiny runs
            return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=float(self.lr),
                                                       total_steps=total_steps, **kw)
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, **kw)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    def _build_engine(self, procs: _Processes, total_steps: int) -> _Engine:
        """Loss, optimizer, schedule and dropout generator; the model prepared by accelerate."""
        loss_fn = self._make_loss()
        if isinstance(loss_fn, nn.Module):
            loss_fn.to(procs.device)
        self.model.to(procs.device)
        optimizer = self._make_optimizer(loss_fn, procs.device)
        scheduler = self._make_scheduler(optimizer, total_steps)
        # rank 0 draws the same dropout masks as a single-process run
        dropout_seed = int(self.seed) + 1 + 1_000_003 * procs.rank
        dropout_gen = torch.Generator(device=procs.device).manual_seed(dropout_seed)
        # the scheduler is stepped by hand (accelerate's wrapper would step it once per process)
        model_p, optimizer_p = procs.accelerator.prepare(self.model, optimizer)
        return _Engine(loss_fn, optimizer, optimizer_p, scheduler, model_p,
                       procs.accelerator.unwrap_model(model_p), dropout_gen)

    def _run_settings(self, loss_fn: Any, world: int, fit_data: _FitData, batching: _Batching) -> dict:
        """The settings a checkpoint records and a resume must match."""
        settings = {**self._settings(loss_fn), "world_size": world, "n_train_trials": fit_data.n_train,
                    "n_batches_per_epoch": batching.n_batches,
                    "val_stimuli": [str(s) for s in self.val_stimuli_]}
        for a in fit_data.aux:
            if a.head == "tokens":
                settings |= {"token_loss": self.token_loss, "token_weight": a.weight,
                             "token_shape": list(a.shape)}
            else:
                settings |= {"lowlevel_loss": self.lowlevel_loss, "lowlevel_weight": a.weight,
                             "lowlevel_shape": list(a.shape)}
        return settings

    # -- checkpoints: folder, resume, writing ---------------------------------------------------
    def _open_checkpoint_dir(self, held: ExitStack, run: _FitRun) -> None:
        """Take the folder's lock (main process) and remove what a killed writer left there."""
        procs = run.procs
        self._lock_checkpoints(held, run.ckpt_dir, procs.is_main, procs.world)
        if procs.is_main:  # we hold the folder: whatever a killed writer left is stale
            remove_stale_temporaries(run.ckpt_dir)
        procs.accelerator.wait_for_everyone()

    def _start_tracking(self, held: ExitStack, run: _FitRun, tracking: Tracking) -> None:
        """Start the trackers at the run's step (a resume goes on counting); finish them when ``held`` closes."""
        p = run.progress
        if not tracking.names or p.finished:  # a finished checkpoint trains (and logs) nothing
            return
        config = tracking.config
        if config is None:
            config = {k: v for k, v in run.settings.items() if k != "val_stimuli"}
        held.enter_context(_session(tracking, run.procs.accelerator, start_step=p.global_step, config=config))
        run.log = _TrainingLog(run.procs.accelerator, {a.key: a.weight for a in run.fit_data.aux})
        run.procs.log("Tracking with %s under %s (run %r, from step %d)", ", ".join(tracking.names),
                      tracking.directory, tracking.run_name, p.global_step)

    def _resume(self, run: _FitRun) -> None:
        """Continue from the newest usable checkpoint in ``run.ckpt_dir`` (if any), after checking it."""
        procs, eng = run.procs, run.engine
        last, loaded = load_latest_checkpoint(run.ckpt_dir)
        if last is None:
            procs.log("No checkpoint in %s; training from the start", run.ckpt_dir)
            return
        weights, tstate, meta = loaded
        diff = {k: (meta["settings"].get(k), v) for k, v in run.settings.items()
                if meta["settings"].get(k, _legacy_setting(meta["settings"], k)) != v}
        if diff:
            raise CheckpointError(f"Cannot resume from {last}: it was written with other settings or data "
                                  f"(checkpoint vs now: {diff}). Use the same settings or another "
                                  "checkpoint_dir.")
        self._check_fingerprint(last, meta.get("fingerprint"), run.fit_data.fingerprint,
                                logger.warning if procs.is_main else _noop)
        try:
            self._restore(weights, tstate, eng.raw_model, eng.loss_fn, eng.optimizer_p, eng.scheduler,
                          procs.accelerator, eng.dropout_gen, procs.rank)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"Cannot resume from {last}: its state does not fit this model and "
                                  f"optimizer ({str(err).strip().splitlines()[0][:300]}). Use the same "
                                  "settings, or another checkpoint_dir.") from None
        self._restore_progress(run, weights, tstate, meta)
        self.resumed_from_ = last
        p = run.progress
        if p.finished:
            procs.log("The checkpoint %s is of a finished training: nothing left to train (its weights are "
                      "restored, nothing is written)", last)
        else:
            procs.log("Resumed from %s (epoch %d, batch %d, step %d)", last, p.start_epoch, p.start_batch,
                      p.global_step)

    def _restore_progress(self, run: _FitRun, weights: dict, tstate: dict, meta: dict) -> None:
        """Set the run's counters, EMA and best weights, history and early stopping from a checkpoint."""
        device, p = run.procs.device, run.progress
        if p.ema is not None:
            p.ema = {k: v.to(device) for k, v in weights["ema"].items()}
        best_state = None
        if "best" in weights:
            best_state = {k: v.to(device) for k, v in weights["best"].items()}
        p.stopper = _EarlyStopping(self.patience, float(meta["best_val"]), int(meta["since_best"]),
                                   meta["best_epoch"], best_state)
        p.epoch_generator = tstate["epoch_generator"]
        self.history_ = meta["history"]
        self.best_epoch_ = meta["best_epoch"]
        p.start_epoch, p.start_batch = int(meta["epoch"]), int(meta["batch_in_epoch"])
        p.global_step, p.finished = int(meta["global_step"]), bool(meta["finished"])
        heads = {k: tuple(v[run.procs.rank]) for k, v in meta["epoch_aux_loss"].items()} \
            if run.fit_data.aux else {}
        p.epoch_totals = _EpochTotals(float(meta["epoch_loss_total"]), int(meta["epoch_loss_count"]), heads)

    def _write_checkpoint(self, run: _FitRun, epoch: int, batch_in_epoch: int, epoch_state: torch.Tensor,
                          totals: _EpochTotals, done: bool) -> None:
        """Write a checkpoint of the run's position (main process; every process's generator and sums)."""
        procs, eng, p, aux = run.procs, run.engine, run.progress, run.fit_data.aux
        dropout_states = [eng.dropout_gen.get_state().cpu()]
        head_states = {k: [list(v)] for k, v in totals.head_totals().items()}
        if procs.world > 1:
            import torch.distributed as dist

            gathered: list = [None] * procs.world
            dist.all_gather_object(gathered, dropout_states[0])
            dropout_states = gathered
            for k in head_states:
                gathered = [None] * procs.world
                dist.all_gather_object(gathered, head_states[k][0])
                head_states[k] = gathered
        if procs.is_main:
            loss_state = eng.loss_fn.state_dict() if isinstance(eng.loss_fn, nn.Module) else {}
            scaler = procs.accelerator.scaler
            save_checkpoint(
                run.ckpt_dir, p.global_step,
                weights={"model": eng.raw_model.state_dict(), "best": p.stopper.best_state, "ema": p.ema,
                         "loss": loss_state or None},
                training_state={
                    "optimizer": eng.optimizer.state_dict(), "scheduler": eng.scheduler.state_dict(),
                    "scaler": None if scaler is None else scaler.state_dict(),
                    "epoch_generator": epoch_state, "dropout_generators": dropout_states},
                trainer_state={
                    "epoch": epoch, "batch_in_epoch": batch_in_epoch, "global_step": p.global_step,
                    "finished": done, "history": self.history_, "best_epoch": self.best_epoch_,
                    "best_val": p.stopper.best_val, "since_best": p.stopper.since_best,
                    "epoch_loss_total": totals.total, "epoch_loss_count": totals.count,
                    **({"epoch_aux_loss": head_states} if aux else {}),
                    "settings": run.settings, "fingerprint": run.fit_data.fingerprint,
                    "seed": int(self.seed)},
                keep_last=int(self.keep_checkpoints))
        procs.accelerator.wait_for_everyone()

    # -- training -----------------------------------------------------------------------------
    def _train_epochs(self, run: _FitRun) -> int:
        """Train the epochs left (none for a finished run); return the last epoch run."""
        p = run.progress
        epochs = range(p.start_epoch, int(self.max_epochs) + 1) if not p.finished else range(0)
        pbar = ProgressBar(epochs, desc="training", unit="epoch") if run.procs.is_main else epochs
        epoch = p.start_epoch
        for epoch in pbar:
            if self._train_epoch(run, epoch, pbar):
                break
        return epoch

    def _train_epoch(self, run: _FitRun, epoch: int, pbar: Any) -> bool:
        """Train, validate and log one epoch; return whether early stopping ends the training."""
        t0 = time.perf_counter()
        totals = self._run_epoch(run, epoch)
        record = self._epoch_record(run, epoch, totals)
        if run.fit_data.n_val_trials:
            self._validate_and_track(run, epoch, record)
        record["time_s"] = time.perf_counter() - t0
        self.history_.append(record)
        self._log_epoch(record, pbar, run.procs)
        if run.log is not None:
            run.log.log_epoch(record)
        stopper = run.progress.stopper
        if record["val_loss"] is not None and stopper.should_stop:
            run.procs.log("Early stopping: no lower validation loss for %d epochs", stopper.since_best)
            return True
        return False

    def _epoch_batches(self, run: _FitRun) -> list[list[tuple[Any, np.ndarray]]]:
        """The epoch's steps, drawn with the run's generator: [(subject, global batch rows), ...] each."""
        data, b, gen = run.fit_data.data, run.batching, run.fit_data.gen
        if b.all_subjects:
            return _data.all_subject_steps(data, b.global_bs, gen, b.min_size)
        return [[part] for part in _data.epoch_batches(data, b.global_bs, gen, b.min_size)]

    def _run_epoch(self, run: _FitRun, epoch: int) -> _EpochTotals:
        """Train one epoch's batches (from the resumed batch on, after a resume); return its sums."""
        p, eng, gen = run.progress, run.engine, run.fit_data.gen
        if p.epoch_generator is not None:  # the epoch a checkpoint was written in
            gen.set_state(p.epoch_generator)
            first, totals = p.start_batch, p.epoch_totals
            p.epoch_generator, p.epoch_totals = None, None
        else:
            first, totals = 0, _EpochTotals.fresh(run.fit_data.aux)
        epoch_state = gen.get_state()
        if hasattr(eng.loss_fn, "set_epoch"):
            eng.loss_fn.set_epoch(epoch)
        mixing = bool(getattr(eng.loss_fn, "mixes_inputs", False))
        batches = self._epoch_batches(run)
        accum, world = run.batching.accum, run.procs.world
        eng.model_p.train()
        for bi in range(first, len(batches)):
            parts = batches[bi]  # [(subject, global batch rows)]: one part per subject in the step
            group_start = (bi // accum) * accum
            group_size = min(accum, len(batches) - group_start)
            boundary = bi + 1 == group_start + group_size
            sync = nullcontext() if (boundary or world == 1) else run.procs.accelerator.no_sync(eng.model_p)
            with sync:
                mix_gen = _mix_generator(self.seed, epoch, bi, run.procs.rank) if mixing else None
                loss, head_losses, n_local = self._train_batch(run, parts, group_size, mix_gen)
            totals.add(loss, sum(len(gidx) for _, gidx in parts), head_losses, n_local)
            if run.log is not None:
                run.log.add(loss, sum(len(gidx) for _, gidx in parts), head_losses, n_local)
            if not boundary:
                continue
            lr = None if run.log is None else float(eng.optimizer.param_groups[0]["lr"])  # this step's rate
            self._optimizer_step(run)
            if run.log is not None:
                run.log.log_step(p.global_step - 1, lr)
            if (run.ckpt_dir is not None and self.checkpoint_every is not None
                    and p.global_step % int(self.checkpoint_every) == 0):
                self._write_checkpoint(run, epoch, bi + 1, epoch_state, totals, False)
        return totals

    def _forward_parts(self, run: _FitRun, parts: list[tuple[Any, np.ndarray]],
                       mix_gen: torch.Generator | None) -> tuple[list, list, list, dict, list]:
        """Run this process's rows of every part (subject) of a step through the model.

        Returns the per-part predictions, targets, codes and BiMixCo ``{"perm", "lambdas"}`` pieces
        (with ``mix_gen``), and per part the head losses and row count.
        """
        data, aux, device = run.fit_data.data, run.fit_data.aux, run.procs.device
        rank, world = run.procs.rank, run.procs.world
        preds, ys, cs, head_parts = [], [], [], []
        mix: dict[str, list] = {"perm": [], "lambdas": []}
        offset = 0  # row of this part's first trial in the (gathered) loss batch
        for subject, gidx in parts:
            d = data[subject]
            idx = _data.shard(gidx, rank, world)
            x = d.features(idx, device)
            if mix_gen is not None:  # BiMixCo: mix within this subject's rows (MindEye2 mixes per subject)
                x, perm, lam = mixco(x, generator=mix_gen)
                start = offset if world == 1 else sum(len(a) for a in np.array_split(gidx, world)[:rank])
                mix["perm"].append(perm + start)
                mix["lambdas"].append(lam.float())
            idx_t = torch.from_numpy(idx).to(device)
            out = run.engine.model_p(x, subject, generator=run.engine.dropout_gen)
            preds.append(out.embedding.float())
            ys.append(d.Y.index_select(0, idx_t))
            cs.append(d.codes.index_select(0, idx_t))
            # per-sample losses on this process's rows (DDP averages grads)
            head_parts.append(({a.key: a.loss(out, cs[-1], device) for a in aux}, len(idx)))
            offset += len(idx)
        return preds, ys, cs, mix, head_parts

    def _train_batch(self, run: _FitRun, parts: list[tuple[Any, np.ndarray]], group_size: int,
                     mix_gen: torch.Generator | None) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """Forward and backward of one step's batch (gathered over processes); no optimizer step.

        Returns the (contrastive) loss, the head losses and this process's number of trials.
        """
        aux, world = run.fit_data.aux, run.procs.world
        preds, ys, cs, mix, head_parts = self._forward_parts(run, parts, mix_gen)
        n_local = sum(n for _, n in head_parts)
        if len(parts) == 1:
            pred, y, c = preds[0], ys[0], cs[0]
            head_losses = head_parts[0][0]
        else:  # one loss over the concatenated subjects; head losses: means over every row
            pred, y, c = torch.cat(preds), torch.cat(ys), torch.cat(cs)
            head_losses = {a.key: sum(h[a.key] * n for h, n in head_parts) / n_local for a in aux}
        mix_kw = {}
        if mix_gen is not None:
            perm, lam = torch.cat(mix["perm"]), torch.cat(mix["lambdas"])
            if world > 1:
                perm, lam = _all_gather_rows(perm)[0], _all_gather_rows(lam)[0]
            mix_kw = {"perm": perm, "lambdas": lam}
        if world > 1:
            pred = _GatherWithGrad.apply(pred)
            y, c = _all_gather_rows(y)[0], _all_gather_rows(c)[0]
        loss = run.engine.loss_fn(pred, y, c, **mix_kw)
        full = loss
        for a in aux:
            full = full + a.weight * head_losses[a.key]
        run.procs.accelerator.backward(full / group_size if group_size > 1 else full)
        return loss, head_losses, n_local

    def _optimizer_step(self, run: _FitRun) -> None:
        """Clip, step the optimizer and the schedule, zero the gradients, count the step, update the EMA."""
        eng, p, accelerator = run.engine, run.progress, run.procs.accelerator
        if self.max_grad_norm is not None:
            accelerator.clip_grad_norm_(eng.model_p.parameters(), float(self.max_grad_norm))
        eng.optimizer_p.step()
        if not accelerator.optimizer_step_was_skipped and (
                p.global_step + 1 < run.batching.total_steps or self.lr_schedule != "onecycle"):
            eng.scheduler.step()  # one-cycle is defined on steps 0..total_steps-1: never step past it
        eng.optimizer_p.zero_grad(set_to_none=True)
        p.global_step += 1
        if p.ema is not None:
            _update_ema(p.ema, eng.raw_model, self.ema_decay)

    # -- after each epoch: record, validation, log ---------------------------------------------------
    def _epoch_record(self, run: _FitRun, epoch: int, totals: _EpochTotals) -> dict:
        """The epoch's history row before validation: losses (heads summed over processes), lr, temperature"""
        loss_fn = run.engine.loss_fn
        record = {"epoch": epoch, "step": run.progress.global_step,
                  "train_loss": totals.total / max(totals.count, 1),
                  "val_loss": None, "val_top1": None, "val_chance": None,
                  "lr": float(run.engine.optimizer.param_groups[0]["lr"]),
                  "temperature": float(getattr(loss_fn, "temperature", float("nan")))}
        if isinstance(getattr(loss_fn, "phase", None), str):
            record["loss_phase"] = loss_fn.phase
        if run.fit_data.aux:
            record |= {"train_contrastive_loss": record["train_loss"], "val_contrastive_loss": None}
        for a in run.fit_data.aux:
            tt = torch.tensor(totals.heads[a.key], dtype=torch.float64, device=run.procs.device)
            if run.procs.world > 1:
                import torch.distributed as dist

                dist.all_reduce(tt)
            head_mean = float(tt[0] / max(float(tt[1]), 1.0))
            record |= {f"train_{a.key}_loss": head_mean, f"val_{a.key}_loss": None,
                       "train_loss": record["train_loss"] + a.weight * head_mean}
        return record

    def _validate_and_track(self, run: _FitRun, epoch: int, record: dict) -> None:
        """Validate (with the EMA weights, if any) into ``record``; update the early-stopping state."""
        eng, fd = run.engine, run.fit_data
        live = _swap_ema(eng.raw_model, run.progress.ema)
        record.update(self._validate_epoch(eng.raw_model, eng.loss_fn, fd.data, run.batching.global_bs,
                                           run.procs.device, fd.aux))
        if run.progress.stopper.observe(record["val_loss"], epoch, eng.raw_model):
            self.best_epoch_ = epoch
        if live is not None:
            eng.raw_model.load_state_dict(live)

    @staticmethod
    def _log_epoch(record: dict, pbar: Any, procs: _Processes) -> None:
        """Log the epoch's line; show its losses on the progress bar (main process)."""
        msg = f"epoch {record['epoch']:3d}: train loss {record['train_loss']:.4f}"
        if "loss_phase" in record:
            msg += f" ({record['loss_phase']}, temperature {record['temperature']:.4g})"
        if record["val_loss"] is not None:
            msg += (f", val loss {record['val_loss']:.4f}, val top-1 {record['val_top1']:.3f} "
                    f"(chance {record['val_chance']:.3f})")
            if procs.is_main:
                pbar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{record['val_loss']:.3f}",
                                 top1=f"{record['val_top1']:.2f}")
        elif procs.is_main:
            pbar.set_postfix(loss=f"{record['train_loss']:.3f}")
        procs.log(msg)

    def _finish(self, run: _FitRun, epoch: int, t_start: float) -> None:
        """Write the final checkpoint; keep the best (else the EMA) weights; release accelerate's hold."""
        procs, eng, p = run.procs, run.engine, run.progress
        if run.ckpt_dir is not None and not p.finished:
            self._write_checkpoint(run, epoch, 0, run.fit_data.gen.get_state(),
                                   _EpochTotals.fresh(run.fit_data.aux), True)
        self.global_step_ = p.global_step
        if p.stopper.best_state is not None:
            eng.raw_model.load_state_dict(p.stopper.best_state)
            procs.log("Restored the weights of epoch %d (val loss %.4f)%s", p.stopper.best_epoch,
                      p.stopper.best_val, " (EMA)" if p.ema is not None else "")
        elif p.ema is not None:
            eng.raw_model.load_state_dict(p.ema)
        # drops accelerate's autocast wrapper
        procs.accelerator.unwrap_model(eng.model_p, keep_fp32_wrapper=False)
        procs.accelerator.free_memory()
        self.model.eval()
        self.fit_time_s_ = time.perf_counter() - t_start
        procs.log("Training done in %.1f s", self.fit_time_s_)

    @staticmethod
    def _check_fingerprint(last: Path, saved: Any, now: dict | None, warn_log: Callable) -> None:
        """Refuse a checkpoint of other training data, targets or model architecture."""
        if not isinstance(saved, dict):
            warn_log("The checkpoint %s has no data fingerprint (written by an older neurodecode): the "
                     "training data cannot be checked against it", last)
            return
        what = {"data": "the training data", "targets": "the targets (stimulus embeddings)",
                "model": "the model's architecture"}
        changed = [what[k] for k in what if saved.get(k) is not None and saved.get(k) != (now or {}).get(k)]
        if changed:
            raise CheckpointError(
                f"Cannot resume from {last}: {' and '.join(changed)} changed since it was written "
                "(fingerprints differ). Resuming would train on a mix of old and new. Restore the data the "
                "run started with, or start a new run (without resume / --resume, or another checkpoint_dir).")

    @staticmethod
    def _restore(weights: dict, tstate: dict, raw_model: nn.Module, loss_fn: Any, optimizer: Any, scheduler: Any,
                 accelerator: Any, dropout_gen: torch.Generator, rank: int) -> None:
        """Load a checkpoint's weights, optimizer, scheduler, scaler and dropout-generator states."""
        raw_model.load_state_dict(weights["model"])
        if "loss" in weights and isinstance(loss_fn, nn.Module):
            loss_fn.load_state_dict(weights["loss"])
        optimizer.load_state_dict(tstate["optimizer"])
        scheduler.load_state_dict(tstate["scheduler"])
        if tstate.get("scaler") is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(tstate["scaler"])
        dropout_gen.set_state(tstate["dropout_generators"][rank].cpu())

    def _validate_epoch(self, model: nn.Module, loss_fn: Any, data: dict, batch_size: int,
                        device: torch.device, aux: list[_HeadTargets] | None = None) -> dict:
        """Validation loss (global batch size, fixed order) and top-1 retrieval among val stimuli.

        With auxiliary head targets, ``val_loss`` is ``contrastive + Σ weight × head loss``
        (each head loss averaged over every validation trial).
        """
        model.eval()
        aux = aux or []
        val_loss = getattr(loss_fn, "validation_loss", loss_fn)
        total, count, correct, chance = 0.0, 0, 0, 0.0
        head_sums = {a.key: 0.0 for a in aux}
        head_count = 0
        with torch.no_grad():
            for subject, d in data.items():
                idx = d.val
                if not len(idx):
                    continue
                idx_t = torch.from_numpy(idx).to(device)
                Yv, cv = d.Y.index_select(0, idx_t), d.codes.index_select(0, idx_t)
                step = 1024 if d.X is not None else _data.READ_CHUNK
                if not aux:
                    pred = torch.cat([model(d.features(idx[a:a + step], device), subject).embedding.float()
                                      for a in range(0, len(idx), step)])
                else:  # token / latent outputs are large: small chunks, reduced to losses at once
                    step, parts = min(step, batch_size), []
                    for a in range(0, len(idx), step):
                        out = model(d.features(idx[a:a + step], device), subject)
                        parts.append(out.embedding.float())
                        n = len(idx[a:a + step])
                        for h in aux:
                            head_sums[h.key] += float(h.loss(out, cv[a:a + step], device)) * n
                        head_count += n
                    pred = torch.cat(parts)
                for a, b in _data.chunks(len(idx), batch_size):
                    total += float(val_loss(pred[a:b], Yv[a:b], cv[a:b])) * (b - a)
                    count += b - a
                cand_codes, first = np.unique(cv.cpu().numpy(), return_index=True)
                cand = Yv[torch.from_numpy(first).to(Yv.device)]
                best = (F.normalize(pred, dim=1) @ cand.T).argmax(1).cpu().numpy()
                correct += int((cand_codes[best] == cv.cpu().numpy()).sum())
                chance += len(idx) / len(cand_codes)
        n = len(np.concatenate([d.val for d in data.values()]))
        out = {"val_loss": total / max(count, 1), "val_top1": correct / n, "val_chance": chance / n}
        if aux:
            out["val_contrastive_loss"] = out["val_loss"]
        for h in aux:
            mean = head_sums[h.key] / max(head_count, 1)
            out |= {f"val_{h.key}_loss": mean, "val_loss": out["val_loss"] + h.weight * mean}
        return out
