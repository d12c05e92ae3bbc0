"""Experiment tracking through accelerate's trackers: what is logged, where, and what a resume does to it."""

from __future__ import annotations

import math
import os
import sys
import types

import numpy as np
import pytest
from _training_fixtures import planted, tiny_model

from neurodecode.training import TRACKERS, Tracking, Trainer
from neurodecode.training.tracking import _environment, _make_trackers, flatten_config

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator").EventAccumulator

# 120 stimuli shown twice per subject; 24 held out -> 192 training trials per subject = 12 batches of 16,
# every batch the same size (so an epoch's loss is the mean of its steps' losses)
KW = dict(batch_size=16, max_epochs=3, seed=3, val_fraction=0.2, lr=2e-3, verbose="warning")
STEPS_PER_EPOCH = 24
EPOCH_TAGS = {"epoch", "train/loss", "train/temperature", "val/loss", "val/top1", "val/chance"}


def _f32(x):
    return float(np.float32(x))


def _scalars(folder):
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _fit(tracking=None, *, checkpoint_dir=None, resume=False, **kw):
    trials, targets = planted(n_trials=240)
    trainer = Trainer(tiny_model(trials, seed=1), **{**KW, **kw})
    return trainer.fit(trials, targets, checkpoint_dir=checkpoint_dir, resume=resume, tracking=tracking)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted, tracked fit (cosine schedule) and what tensorboard holds of it."""
    folder = tmp_path_factory.mktemp("ref") / "tracking"
    trainer = _fit(Tracking(["tensorboard"], folder, run_name="mlp"), lr_schedule="cosine")
    return trainer, _scalars(folder / "mlp"), folder


def test_tensorboard_holds_the_history_exactly(reference):
    trainer, scalars, folder = reference
    hist = trainer.history_
    assert set(scalars) == EPOCH_TAGS | {"train/step_loss", "train/lr"}
    # one point per epoch at the optimizer steps done after it, equal to the history (stored as float32)
    for tag, key in (("train/loss", "train_loss"), ("val/loss", "val_loss"), ("val/top1", "val_top1"),
                     ("val/chance", "val_chance"), ("train/temperature", "temperature"), ("epoch", "epoch")):
        assert [s for s, _ in scalars[tag]] == [h["step"] for h in hist], tag
        assert [v for _, v in scalars[tag]] == [_f32(h[key]) for h in hist], tag
    assert [h["step"] for h in hist] == [STEPS_PER_EPOCH * e for e in (1, 2, 3)]
    # one point per optimizer step, at its 0-based index; an epoch's loss is the mean of its steps'
    steps = scalars["train/step_loss"]
    assert [s for s, _ in steps] == list(range(trainer.global_step_)) == [s for s, _ in scalars["train/lr"]]
    for e, h in enumerate(hist):
        epoch = [v for _, v in steps[e * STEPS_PER_EPOCH:(e + 1) * STEPS_PER_EPOCH]]
        assert np.mean(epoch) == pytest.approx(h["train_loss"], rel=1e-6)
    # the hyperparameters: the Trainer's settings (no config given), stored by accelerate
    hparams = list((folder / "mlp").glob("*/hparams.yml"))
    assert len(hparams) == 1 and "lr_schedule: cosine" in hparams[0].read_text()


def test_learning_rate_follows_the_schedule(reference, tmp_path):
    trainer, scalars, _ = reference
    total, lr = trainer.global_step_, KW["lr"]
    cosine = [lr * (1 + math.cos(math.pi * i / total)) / 2 for i in range(total)]  # eta_min = 0
    assert [v for _, v in scalars["train/lr"]] == pytest.approx(cosine, rel=1e-5, abs=1e-9)
    # the history's lr (after an epoch) is the rate of the next epoch's first step
    for h in trainer.history_[:-1]:
        assert dict(scalars["train/lr"])[h["step"]] == _f32(h["lr"])
    # one-cycle with its options: the same rates as torch's OneCycleLR over the same steps
    import torch

    opts = {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0}
    t = _fit(Tracking(["tensorboard"], tmp_path), max_epochs=1, lr_schedule="onecycle",
             lr_schedule_kwargs=opts)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=t.global_step_, **opts)
    expected = []
    for _ in range(t.global_step_):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        if len(expected) < t.global_step_:
            sched.step()
    got = [v for _, v in _scalars(tmp_path / "train")["train/lr"]]
    assert got == [_f32(x) for x in expected]
    assert max(got) == _f32(lr) and got[0] == _f32(lr / 10)


@pytest.mark.parametrize("checkpoint_every, kill_at", [(5, 8), (STEPS_PER_EPOCH, STEPS_PER_EPOCH + 6)],
                         ids=["mid-epoch", "epoch-end"])
def test_resume_continues_the_steps_once_each(reference, tmp_path, monkeypatch, checkpoint_every, kill_at):
    """Killed after ``kill_at`` steps (a checkpoint every ``checkpoint_every``), resumed: each step once."""
    from accelerate.tracking import TensorBoardTracker

    ref_trainer, ref, _ = reference
    ckpt, folder = tmp_path / "checkpoints", tmp_path / "tracking"
    tracking = Tracking(["tensorboard"], folder, run_name="mlp")
    step, finish = Trainer._optimizer_step, TensorBoardTracker.finish
    finished = []

    def killed(self, run):
        step(self, run)
        if run.progress.global_step == kill_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(TensorBoardTracker, "finish", lambda self: (finished.append(1), finish(self)))
    with monkeypatch.context() as m:
        m.setattr(Trainer, "_optimizer_step", killed)
        with pytest.raises(KeyboardInterrupt):
            _fit(tracking, checkpoint_dir=ckpt, lr_schedule="cosine", checkpoint_every=checkpoint_every)
    assert finished == [1]  # the writer was closed on the way out
    before = _scalars(folder / "mlp")["train/step_loss"]
    assert [s for s, _ in before] == list(range(kill_at - 1))  # logged past the last checkpoint

    resumed = _fit(tracking, checkpoint_dir=ckpt, resume=True, lr_schedule="cosine",
                   checkpoint_every=checkpoint_every)
    assert resumed.resumed_from_ is not None
    after = _scalars(folder / "mlp")
    assert set(after) == set(ref)
    for tag, points in after.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: steps repeat or go back"
        assert steps == [s for s, _ in ref[tag]], tag
        assert [v for _, v in points] == pytest.approx([v for _, v in ref[tag]], abs=1e-6), tag


def test_resuming_a_finished_fit_logs_nothing(tmp_path):
    ckpt, folder = tmp_path / "checkpoints", tmp_path / "tracking"
    tracking = Tracking(["tensorboard"], folder, run_name="mlp")
    _fit(tracking, checkpoint_dir=ckpt, max_epochs=1)
    before = _scalars(folder / "mlp")
    files = sorted(p.name for p in folder.rglob("*"))
    _fit(tracking, checkpoint_dir=ckpt, resume=True, max_epochs=1)
    assert sorted(p.name for p in folder.rglob("*")) == files and _scalars(folder / "mlp") == before


def test_tracking_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit(None, max_epochs=1)
    _fit(Tracking([], tmp_path / "tracking"), max_epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_unknown_tracker_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="'tensorboard', 'wandb', 'mlflow'.*'tensorbord'"):
        _fit(Tracking(["tensorbord"], tmp_path / "tracking"))
    with pytest.raises(ValueError, match=r"options for \['wandb'\]"):
        Tracking(["tensorboard"], tmp_path, tracker_kwargs={"wandb": {}}).check()
    with pytest.raises(TypeError, match="list of tracker names"):
        Tracking("tensorboard", tmp_path).check()
    with pytest.raises(TypeError, match="neurodecode.training.Tracking"):
        _fit(["tensorboard"])
    assert not (tmp_path / "tracking").exists()
    assert TRACKERS == ("tensorboard", "wandb", "mlflow")


@pytest.mark.parametrize("name, hint", [("tensorboard", "neurodecode[tracking]"),
                                        ("wandb", "pip install wandb"), ("mlflow", "pip install mlflow")])
def test_missing_package_is_one_clear_line(tmp_path, monkeypatch, name, hint):
    monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError
    with pytest.raises(ImportError, match=f"tracking with {name} needs the '{name}' package.*") as err:
        _fit(Tracking([name], tmp_path / "tracking"))
    assert hint in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "tracking").exists()


# -- offline defaults (fake wandb / mlflow modules: neither is a dependency) ---------------------------------
def _fake_wandb(calls):
    run = types.SimpleNamespace(log=lambda values, step=None: calls.append(("log", values, step)),
                                finish=lambda: calls.append(("finish",)))
    return types.SimpleNamespace(
        init=lambda **kw: calls.append(("init", kw)) or run,
        config=types.SimpleNamespace(
            update=lambda values, allow_val_change: calls.append(("config", values))))


def _fake_mlflow(calls):
    validation = types.SimpleNamespace(MAX_PARAM_VAL_LENGTH=6000, MAX_PARAMS_TAGS_PER_BATCH=100)
    return types.SimpleNamespace(
        search_experiments=lambda filter_string: [],
        create_experiment=lambda name, artifact_location, tags: calls.append(
            ("experiment", name, os.environ.get("MLFLOW_TRACKING_URI"))) or "0",
        start_run=lambda **kw: calls.append(("run", kw)),
        log_params=lambda values: calls.append(("params", values)),
        log_metrics=lambda values, step: calls.append(("log", values, step)),
        end_run=lambda: calls.append(("finish",)),
        utils=types.SimpleNamespace(validation=validation))


def test_wandb_runs_offline_in_the_tracking_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "wandb", _fake_wandb(calls))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    tracking = Tracking(["wandb"], tmp_path / "tracking", run_name="test", project="demo", group="demo-1",
                        config={"models": {"mlp": {"lr": 0.1}}, "data": {"subjects": [1, 2]}})
    tracking.log_metrics({"test/a": 0.5, "test/nan": float("nan")}, step=3)
    assert calls[0] == ("init", {"project": "demo", "mode": "offline", "dir": str(tmp_path / "tracking"),
                                 "name": "demo-1/test", "group": "demo-1"})
    assert calls[1] == ("config", {"models.mlp.lr": 0.1, "data.subjects": "[1, 2]"})
    assert calls[2:] == [("log", {"test/a": 0.5}, 3), ("finish",)]
    # the user's choice wins: WANDB_MODE, or the tracker's own options
    monkeypatch.setenv("WANDB_MODE", "online")
    assert "mode" not in _make_trackers(tracking)[0].init_kwargs
    monkeypatch.delenv("WANDB_MODE")
    wb = _make_trackers(Tracking(["wandb"], tmp_path, tracker_kwargs={"wandb": {"mode": "online",
                                                                                "project": "mine"}}))[0]
    assert wb.init_kwargs["mode"] == "online" and wb.run_name == "mine"


def test_mlflow_writes_a_local_file_store(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "mlflow", _fake_mlflow(calls))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking = Tracking(["mlflow"], tmp_path / "tracking", run_name="test", project="demo")
    tracking.log_metrics({"test/a": 1.0})
    store = (tmp_path / "tracking" / "mlruns").resolve()
    assert calls[0] == ("experiment", "demo", store.as_uri()) and store.as_uri().startswith("file:")
    assert calls[1][1]["run_name"] == "test" and calls[-2:] == [("log", {"test/a": 1.0}, 0), ("finish",)]
    assert "MLFLOW_TRACKING_URI" not in os.environ  # restored
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid")
    with _environment(tracking):
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://example.invalid"


def test_flatten_config():
    flat = flatten_config({"a": {"b": 1, "c": [1, 2], "d": {}, "e": None}, "f": "x", "g": True})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "a.d": "{}", "a.e": None, "f": "x", "g": True}
