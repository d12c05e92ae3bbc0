"""Resuming after validation and early stopping have state: the run stops where the uninterrupted one did."""

from __future__ import annotations

import copy
import math
import shutil

import pytest
import torch
from _training_fixtures import planted as _planted
from _training_fixtures import tiny_model as _model

from neurodecode.training import Trainer, list_checkpoints, load_checkpoint

#: A noisy problem and a large constant lr: the validation loss goes up and down, so early stopping has a
#: best loss and a running count of epochs without improvement when checkpoints are written.
KW = dict(lr=0.1, batch_size=16, max_epochs=12, seed=0, val_fraction=0.3, patience=3, lr_schedule="constant",
          checkpoint_every=5, keep_checkpoints=1000)


def _strip_time(history):
    return [{k: v for k, v in h.items() if k != "time_s"} for h in history]


def test_resume_with_validation_and_early_stopping_state_is_exact(tmp_path):
    trials, targets = _planted(n_trials=240, noise=2.0)
    base = _model(trials, seed=4, dropout=0.1)
    full_model = copy.deepcopy(base)
    full = Trainer(full_model, **KW).fit(trials, targets, checkpoint_dir=tmp_path / "a")
    assert len(full.history_) < KW["max_epochs"]  # early stopping ended the run
    ckpts = list_checkpoints(tmp_path / "a")
    final = load_checkpoint(ckpts[-1])[2]
    assert final["finished"] and final["since_best"] == KW["patience"]

    # the latest checkpoint taken mid-epoch, after validations, while epochs without improvement are counted
    n_batches = final["settings"]["n_batches_per_epoch"]
    metas = {p: load_checkpoint(p)[2] for p in ckpts[:-1]}
    waiting = [p for p, m in metas.items() if m["since_best"] > 0 and 0 < m["batch_in_epoch"] < n_batches]
    assert waiting, "no checkpoint was written while the early-stopping counter ran"
    mid = waiting[-1]
    meta = metas[mid]
    weights = load_checkpoint(mid)[0]
    assert len(meta["history"]) >= 1 and meta["history"][-1]["val_loss"] is not None
    assert math.isfinite(meta["best_val"]) and meta["best_val"] == min(h["val_loss"] for h in meta["history"])
    assert 0 < meta["since_best"] < KW["patience"] and meta["best_epoch"] < meta["epoch"] - 1
    assert "best" in weights  # the best epoch's weights travel with the checkpoint

    shutil.copytree(mid, tmp_path / "b" / mid.name)
    resumed_model = copy.deepcopy(base)
    resumed = Trainer(resumed_model, **KW).fit(trials, targets, checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.resumed_from_.name == mid.name
    again = load_checkpoint(list_checkpoints(tmp_path / "b")[-1])[2]
    assert again["finished"] and again["epoch"] == final["epoch"]  # stopped at the same epoch
    assert (again["best_val"], again["since_best"]) == (final["best_val"], final["since_best"])
    assert (again["global_step"], again["best_epoch"]) == (final["global_step"], final["best_epoch"])
    assert resumed.best_epoch_ == full.best_epoch_
    assert _strip_time(resumed.history_) == _strip_time(full.history_)
    for (k, x), y in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(x, y), k


@pytest.mark.parametrize("patience", [None, 3])
def test_checkpoints_count_epochs_without_improvement(tmp_path, patience):
    """Every checkpoint's early-stopping state agrees with the history written with it."""
    trials, targets = _planted(n_trials=240, noise=2.0)
    Trainer(_model(trials, seed=4, dropout=0.1), **{**KW, "patience": patience, "max_epochs": 6}).fit(
        trials, targets, checkpoint_dir=tmp_path)
    for p in list_checkpoints(tmp_path):
        meta = load_checkpoint(p)[2]
        losses = [h["val_loss"] for h in meta["history"]]
        if not losses:
            assert meta["best_val"] == float("inf") and meta["since_best"] == 0 and meta["best_epoch"] is None
            continue
        best = min(range(len(losses)), key=lambda i: (losses[i], i))
        assert meta["best_val"] == losses[best] and meta["best_epoch"] == meta["history"][best]["epoch"]
        assert meta["since_best"] == len(losses) - 1 - best
