"""Checkpoints: atomic folders, no pickled weights, exact in-process resume, engine options."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from neurodecode.training import (Trainer, latest_checkpoint, list_checkpoints, load_checkpoint,
                                  save_checkpoint)
from neurodecode.training.checkpoint import remove_stale_temporaries

from _training_fixtures import planted as _planted
from _training_fixtures import tiny_model as _model


@pytest.fixture(scope="module")
def data():
    return _planted(n_trials=240)


def _same_weights(a, b):
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


def _strip_time(history):
    return [{k: v for k, v in h.items() if k != "time_s"} for h in history]


def test_save_load_roundtrip_and_pruning(tmp_path):
    w = {"model": {"a": torch.arange(6.0).reshape(2, 3)}, "best": None}
    gen = torch.Generator().manual_seed(3)
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, weights=w,
                        training_state={"gen": gen.get_state(), "x": [1, 2.5, "s"]},
                        trainer_state={"epoch": step, "history": [{"loss": float("nan")}]}, keep_last=2)
    found = list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["step-000000003", "step-000000004"]
    assert latest_checkpoint(tmp_path) == found[-1]
    weights, tstate, meta = load_checkpoint(found[-1])
    assert set(weights) == {"model"} and torch.equal(weights["model"]["a"], w["model"]["a"])
    assert torch.equal(tstate["gen"], gen.get_state()) and tstate["x"] == [1, 2.5, "s"]
    assert meta["epoch"] == 4 and np.isnan(meta["history"][0]["loss"])
    # weights are safetensors, never pickle
    assert (found[-1] / "model.safetensors").read_bytes()[:8] != b"\x80\x02\x8a\n"
    assert not list(found[-1].glob("*.bin")) and not list(found[-1].glob("*.pth"))


def test_partial_writes_are_invisible(tmp_path):
    (tmp_path / ".tmp-step-000000009-123").mkdir()  # left by a killed writer
    (tmp_path / "step-000000010").mkdir()            # no trainer_state.json: incomplete
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "step-000000010")
    remove_stale_temporaries(tmp_path)
    assert not (tmp_path / ".tmp-step-000000009-123").exists()
    assert latest_checkpoint(tmp_path / "missing") is None


def test_failed_write_leaves_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, weights={"model": {"a": torch.ones(2)}}, training_state={},
                    trainer_state={"epoch": 1})

    class Boom:
        pass

    with pytest.raises(Exception):
        save_checkpoint(tmp_path, 2, weights={"model": {"a": torch.ones(2)}}, training_state={},
                        trainer_state={"bad": Boom()})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000001"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_resume_mid_epoch_matches_uninterrupted(data, tmp_path):
    trials, targets = data
    base = _model(trials, seed=3)
    kw = dict(lr=2e-3, batch_size=32, max_epochs=3, seed=5, val_fraction=0.2, checkpoint_every=4,
              keep_checkpoints=100)
    full_model = copy.deepcopy(base)
    full = Trainer(full_model, **kw).fit(trials, targets, checkpoint_dir=tmp_path / "a")
    ckpts = list_checkpoints(tmp_path / "a")
    assert len(ckpts) >= 4 and load_checkpoint(ckpts[-1])[2]["finished"]
    n_batches = load_checkpoint(ckpts[0])[2]["settings"]["n_batches_per_epoch"]
    # a checkpoint in the middle of the second epoch
    mid = [p for p in ckpts[:-1] if load_checkpoint(p)[2]["epoch"] == 2
           and 0 < load_checkpoint(p)[2]["batch_in_epoch"] < n_batches][0]
    shutil.copytree(mid, tmp_path / "b" / mid.name)
    resumed_model = copy.deepcopy(base)
    resumed = Trainer(resumed_model, **kw).fit(trials, targets, checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.resumed_from_.name == mid.name
    _same_weights(full_model, resumed_model)
    assert _strip_time(full.history_) == _strip_time(resumed.history_)
    assert resumed.best_epoch_ == full.best_epoch_
    # resuming a finished run only restores the best weights
    again_model = copy.deepcopy(base)
    again = Trainer(again_model, **kw).fit(trials, targets, checkpoint_dir=tmp_path / "a", resume=True)
    _same_weights(full_model, again_model)
    assert _strip_time(again.history_) == _strip_time(full.history_)


def test_resume_with_other_settings_raises(data, tmp_path):
    trials, targets = data
    kw = dict(batch_size=32, max_epochs=1, seed=0, checkpoint_every=2)
    Trainer(_model(trials), **kw).fit(trials, targets, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="Cannot resume.*lr"):
        Trainer(_model(trials), **kw, lr=1.0).fit(trials, targets, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        Trainer(_model(trials), **kw).fit(trials, targets, resume=True)
    # resume=True with an empty folder simply starts
    t = Trainer(_model(trials), **kw).fit(trials, targets, checkpoint_dir=tmp_path / "new", resume=True)
    assert t.resumed_from_ is None and latest_checkpoint(tmp_path / "new") is not None


def test_global_rng_untouched_and_engine_options(data):
    trials, targets = data
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    m1, m2 = _model(trials), _model(trials)
    kw = dict(batch_size=32, max_epochs=2, seed=0, ema_decay=0.9, gradient_accumulation_steps=2,
              lr_schedule="cosine", max_grad_norm=1.0)
    t1 = Trainer(m1, **kw).fit(trials, targets)
    t2 = Trainer(m2, **kw).fit(trials, targets)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    _same_weights(m1, m2)
    assert _strip_time(t1.history_) == _strip_time(t2.history_)
    n_batches = -(-len(trials) * 4 // 5 // 32)  # roughly; accumulation halves the optimizer steps
    assert t1.global_step_ <= n_batches + 2 and t1.global_step_ >= n_batches // 2 - 2
    assert all(np.isfinite(h["val_loss"]) for h in t1.history_)


def test_gradient_accumulation_of_one_batch_is_plain_step(data):
    """accumulation=k with k batches summed == the mean of their losses: same as k=1 when k=1 group."""
    trials, targets = data
    base = _model(trials, seed=2)
    m1, m2 = copy.deepcopy(base), copy.deepcopy(base)
    # a batch larger than any subject's training set: one batch per subject per epoch
    Trainer(m1, batch_size=512, max_epochs=2, seed=0, loss="mse").fit(trials, targets)
    Trainer(m2, batch_size=512, max_epochs=2, seed=0, loss="mse",
            gradient_accumulation_steps=1).fit(trials, targets)
    _same_weights(m1, m2)


def test_bf16_mixed_precision_runs(data):
    trials, targets = data
    model = _model(trials)
    trainer = Trainer(model, batch_size=32, max_epochs=1, seed=0, mixed_precision="bf16").fit(trials, targets)
    assert np.isfinite(trainer.history_[0]["train_loss"])
    assert model.head.weight.dtype == torch.float32
    assert "_original_forward" not in model.__dict__  # accelerate's autocast wrapper removed
    # a later float32 Trainer in the same process works (accelerate state reset)
    Trainer(_model(trials), batch_size=32, max_epochs=1, seed=0).fit(trials, targets)


def test_bad_engine_options_raise(data):
    trials, targets = data
    for kw, match in [({"mixed_precision": "fp8"}, "'mixed_precision' parameter"),
                      ({"lr_schedule": "step"}, "'lr_schedule' parameter"),
                      ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be"),
                      ({"ema_decay": 1.5}, "ema_decay must be"),
                      ({"checkpoint_every": 0}, "checkpoint_every must be")]:
        with pytest.raises(ValueError, match=match):
            Trainer(_model(trials), **kw).fit(trials, targets)
