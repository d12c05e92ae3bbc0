"""Trainer: fits a BrainDecoder to stimulus embeddings with a contrastive loss."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..datasets import check_no_leakage
from ..models.losses import ClipLoss, soft_clip
from ..utils import ProgressBar, _check_option, _ensure_finite, logger, use_log_level, verbose

LOSSES = ("infonce", "soft_clip", "mse")


class _SoftClipLoss(nn.Module):
    def __init__(self, temperature: float = 0.125) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, pred: torch.Tensor, target: torch.Tensor, ids: Any = None) -> torch.Tensor:
        return soft_clip(pred, target, self.temperature)


class _MSELoss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor, ids: Any = None) -> torch.Tensor:
        return F.mse_loss(F.normalize(pred, dim=1), target)


class Trainer:
    """Train a :class:`~neurodecode.models.BrainDecoder` on BrainTrials → stimulus embeddings.

    Each batch holds trials of a single subject; batches of all subjects are
    interleaved in a random order every epoch (as MindEye2 does). A validation
    set is carved out of the training trials *by stimulus* (validation images
    are never trained on); the weights of the epoch with the lowest validation
    loss are restored at the end.

    Parameters
    ----------
    model : BrainDecoder
        The model to train (updated in place).
    loss : {"infonce", "soft_clip", "mse"} | callable
        ``"infonce"``: symmetric CLIP loss with a learnable temperature
        (:class:`~neurodecode.models.ClipLoss`); ``"soft_clip"``: MindEye's
        SoftCLIP; ``"mse"``: mean squared error to the normalised targets. A
        callable ``loss(pred, target, ids)`` (or an ``nn.Module``, whose
        parameters are optimised too) is used as is.
    lr : float
        Peak learning rate of the one-cycle schedule (AdamW).
    weight_decay : float
        AdamW weight decay (not applied to biases, LayerNorm and temperature).
    batch_size : int
        Trials per batch (>= 2 for a contrastive loss).
    max_epochs : int
        Number of passes over the training trials.
    seed : int
        Seeds the validation split, the batch order and the dropout masks
        (``torch.Generator``; the global RNG is untouched). Two fits of equal
        models on equal data give identical weights on CPU.
    device : str | torch.device
        Where to train.
    val_fraction : float
        Fraction of the training *stimuli* held out for validation (0 = none).
    patience : int | None
        Stop after this many epochs without a lower validation loss.
    verbose : bool | str | int | None
        Default log level of :meth:`fit`.

    Attributes
    ----------
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_top1``,
        ``val_chance``, ``lr``, ``temperature``, ``time_s``.
    best_epoch_ : int | None
        The epoch whose weights were restored (None without validation).
    val_stimuli_ : list
        The stimulus ids held out for validation.
    loss_fn_ : nn.Module | callable
        The loss used (with its learned temperature).

    Examples
    --------
    >>> trainer = Trainer(model, loss="infonce", max_epochs=30, seed=0)   # doctest: +SKIP
    >>> trainer.fit(trials.select(split="train"), targets)                # doctest: +SKIP
    >>> trainer.history_[-1]["val_top1"]                                  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, *, loss: str | Callable = "infonce", lr: float = 3e-4,
                 weight_decay: float = 0.01, batch_size: int = 128, max_epochs: int = 30, seed: int = 0,
                 device: str | torch.device = "cpu", val_fraction: float = 0.1,
                 patience: int | None = None, verbose: bool | str | int | None = None) -> None:
        self.model = model
        self.loss = loss
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.seed = seed
        self.device = device
        self.val_fraction = val_fraction
        self.patience = patience
        self.verbose = verbose

    # -- checks ----------------------------------------------------------------------------
    def _validate(self) -> None:
        if isinstance(self.loss, str):
            _check_option("loss", self.loss, LOSSES)
        elif not callable(self.loss):
            raise TypeError(f"loss must be one of {LOSSES} or a callable, got {type(self.loss).__name__}")
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
        for attr in ("n_inputs", "embed_dim", "_check_subject"):
            if not hasattr(self.model, attr):
                raise TypeError(f"model must be a BrainDecoder-like module (missing {attr!r}), "
                                f"got {type(self.model).__name__}")

    def _make_loss(self) -> Any:
        if not isinstance(self.loss, str):
            return self.loss
        return {"infonce": ClipLoss, "soft_clip": _SoftClipLoss, "mse": _MSELoss}[self.loss]()

    def _subject_arrays(self, trials: Any) -> dict:
        """Per subject: float32 features (checked), trial rows."""
        subj_col = trials.events["subject"].to_numpy()
        out = {}
        for subject, sub in trials.by_subject().items():
            self.model._check_subject(subject)
            X = np.asarray(sub.get_data(), dtype=np.float32).reshape(len(sub), -1)
            n_expected = self.model.n_inputs[str(subject)]
            if X.shape[1] != n_expected:
                raise ValueError(f"Subject {subject!r} has {X.shape[1]} features in trials but the model's "
                                 f"adapter expects {n_expected}; build the model with n_inputs from "
                                 "the data")
            _ensure_finite(X, what=f"The data of subject {subject!r}")
            std = X.std(0)
            if len(X) > 1 and not np.any(std > 0):
                raise ValueError(f"The data of subject {subject!r} has zero variance (every feature is "
                                 "constant across trials); nothing can be learned. Check the loader "
                                 "and preprocessing.")
            n_const = int((std == 0).sum())
            if n_const:
                logger.debug("Subject %s: %d of %d features are constant", subject, n_const, X.shape[1])
            out[subject] = (X, np.flatnonzero(subj_col == subject))
        return out

    # -- fitting -------------------------------------------------------------------------
    @verbose
    def fit(self, trials: Any, targets: Any, *, verbose: bool | str | int | None = None) -> Trainer:
        """Train ``model`` to map ``trials`` to their stimulus embeddings.

        Parameters
        ----------
        trials : BrainTrials
            Training trials only (no ``split="test"``), one or several subjects.
        targets : StimulusEmbeddings
            Embedding of every ``stimulus_id`` in ``trials`` (L2-normalised here).
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
            On NaN/inf or zero-variance data, unknown subjects or size mismatches.
        """
        with use_log_level(self.verbose if verbose is None else None):
            return self._fit(trials, targets)

    def _fit(self, trials: Any, targets: Any) -> Trainer:
        self._validate()
        check_no_leakage(trials, where="training")
        model = self.model
        device = torch.device(self.device)
        t_start = time.perf_counter()

        # targets, L2-normalised
        Y = targets.lookup(trials.events["stimulus_id"]).astype(np.float32)
        if Y.shape[1] != model.embed_dim:
            raise ValueError(f"targets have dim {Y.shape[1]} but the model's embed_dim is "
                             f"{model.embed_dim}; build the model with embed_dim=targets.dim")
        norms = np.linalg.norm(Y, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("some target embeddings have zero norm; they cannot be L2-normalised")
        Y /= norms
        codes, uniques = pd.factorize(trials.events["stimulus_id"], sort=False)
        subjects = self._subject_arrays(trials)

        # validation split by stimulus
        gen = torch.Generator().manual_seed(int(self.seed))
        n_stim = len(uniques)
        n_val = int(round(float(self.val_fraction) * n_stim))
        if self.val_fraction > 0 and n_val == 0 and n_stim >= 2:
            n_val = 1
        if n_val >= n_stim:
            raise ValueError(f"val_fraction={self.val_fraction} leaves no training stimuli out of {n_stim}")
        val_codes = torch.randperm(n_stim, generator=gen)[:n_val].numpy()
        is_val = np.isin(codes, val_codes)
        self.val_stimuli_ = [uniques[i] for i in np.sort(val_codes)]

        data = {}
        for subject, (X, rows) in subjects.items():
            data[subject] = dict(
                X=torch.from_numpy(X).to(device), Y=torch.from_numpy(Y[rows]).to(device),
                codes=torch.from_numpy(codes[rows].astype(np.int64)).to(device),
                train=np.flatnonzero(~is_val[rows]), val=np.flatnonzero(is_val[rows]))
        n_train = int(sum(len(d["train"]) for d in data.values()))
        n_val_trials = int(sum(len(d["val"]) for d in data.values()))
        logger.info("Training on %d trials (%d subjects), validating on %d trials of %d held-out stimuli",
                    n_train, len(data), n_val_trials, n_val)

        # loss, optimiser, schedule
        loss_fn = self._make_loss()
        if isinstance(loss_fn, nn.Module):
            loss_fn.to(device)
        model.to(device)
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        loss_params = [p for p in loss_fn.parameters() if p.requires_grad] \
            if isinstance(loss_fn, nn.Module) else []
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(self.weight_decay)},
             {"params": no_decay + loss_params, "weight_decay": 0.0}], lr=float(self.lr),
            fused=device.type in ("cpu", "cuda"))
        steps_per_epoch = sum(len(_chunks(len(d["train"]), self.batch_size)) for d in data.values())
        if steps_per_epoch == 0:
            raise ValueError(f"No training batch of >= 2 trials can be formed from {n_train} training "
                             "trials; lower val_fraction or add trials")
        total_steps = steps_per_epoch * int(self.max_epochs)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=float(self.lr), total_steps=total_steps,
            pct_start=min(0.3, max(1.0 / total_steps, 0.1)))
        dropout_gen = torch.Generator(device=device).manual_seed(int(self.seed) + 1)

        self.history_: list[dict] = []
        self.loss_fn_ = loss_fn
        self.best_epoch_ = None
        best_val, best_state, since_best = np.inf, None, 0
        pbar = ProgressBar(range(1, int(self.max_epochs) + 1), desc="training", unit="epoch")
        for epoch in pbar:
            t0 = time.perf_counter()
            model.train()
            batches = []
            for subject, d in data.items():
                perm = d["train"][torch.randperm(len(d["train"]), generator=gen).numpy()]
                batches += [(subject, perm[a:b]) for a, b in _chunks(len(perm), self.batch_size)]
            order = torch.randperm(len(batches), generator=gen).numpy()
            total, count = 0.0, 0
            for b in order:
                subject, idx = batches[b]
                d = data[subject]
                idx_t = torch.from_numpy(idx).to(device)
                pred = model(d["X"].index_select(0, idx_t), subject, generator=dropout_gen).embedding
                loss = loss_fn(pred, d["Y"].index_select(0, idx_t), d["codes"].index_select(0, idx_t))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            record = {"epoch": epoch, "train_loss": total / count, "val_loss": None, "val_top1": None,
                      "val_chance": None, "lr": float(optimizer.param_groups[0]["lr"]),
                      "temperature": float(getattr(loss_fn, "temperature", float("nan")))}
            if n_val_trials:
                record.update(self._validate_epoch(model, loss_fn, data))
            record["time_s"] = time.perf_counter() - t0
            self.history_.append(record)
            msg = f"epoch {epoch:3d}: train loss {record['train_loss']:.4f}"
            if record["val_loss"] is not None:
                msg += (f", val loss {record['val_loss']:.4f}, val top-1 {record['val_top1']:.3f} "
                        f"(chance {record['val_chance']:.3f})")
                pbar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{record['val_loss']:.3f}",
                                 top1=f"{record['val_top1']:.2f}")
            else:
                pbar.set_postfix(loss=f"{record['train_loss']:.3f}")
            logger.info(msg)
            if record["val_loss"] is not None:
                if record["val_loss"] < best_val:
                    best_val, since_best, self.best_epoch_ = record["val_loss"], 0, epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
                    if self.patience is not None and since_best >= self.patience:
                        logger.info("Early stopping: no lower validation loss for %d epochs", since_best)
                        break
        if best_state is not None:
            model.load_state_dict(best_state)
            logger.info("Restored the weights of epoch %d (val loss %.4f)", self.best_epoch_, best_val)
        model.eval()
        self.fit_time_s_ = time.perf_counter() - t_start
        logger.info("Training done in %.1f s", self.fit_time_s_)
        return self

    def _validate_epoch(self, model: nn.Module, loss_fn: Any, data: dict) -> dict:
        """Validation loss (same batch size, fixed order) and top-1 retrieval among val stimuli."""
        model.eval()
        total, count, correct, chance = 0.0, 0, 0, 0.0
        with torch.no_grad():
            for subject, d in data.items():
                idx = d["val"]
                if not len(idx):
                    continue
                idx_t = torch.from_numpy(idx).to(d["X"].device)
                Yv, cv = d["Y"].index_select(0, idx_t), d["codes"].index_select(0, idx_t)
                pred = torch.cat([model(d["X"].index_select(0, idx_t[a:a + 1024]), subject).embedding
                                  for a in range(0, len(idx), 1024)])
                for a, b in _chunks(len(idx), self.batch_size):
                    total += float(loss_fn(pred[a:b], Yv[a:b], cv[a:b])) * (b - a)
                    count += b - a
                cand_codes, first = np.unique(cv.cpu().numpy(), return_index=True)
                cand = Yv[torch.from_numpy(first).to(Yv.device)]
                best = (F.normalize(pred, dim=1) @ cand.T).argmax(1).cpu().numpy()
                correct += int((cand_codes[best] == cv.cpu().numpy()).sum())
                chance += len(idx) / len(cand_codes)
        n = len(np.concatenate([d["val"] for d in data.values()]))
        return {"val_loss": total / max(count, 1), "val_top1": correct / n, "val_chance": chance / n}


def _chunks(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches; a last batch of < 2 trials is dropped."""
    return [(a, min(a + batch_size, n)) for a in range(0, n, batch_size) if min(a + batch_size, n) - a >= 2]
