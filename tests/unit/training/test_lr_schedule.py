"""Learning-rate schedules from the config: constant, one-cycle options (MindEye2's pct_start and
final_div_factor), cosine eta_min, gradient clipping; bad options are errors naming the option."""

from __future__ import annotations

import pytest
import torch
from _training_fixtures import planted as _planted
from _training_fixtures import tiny_model as _model

from neurodecode.config import ConfigError, load_config
from neurodecode.training import Trainer


@pytest.fixture(scope="module")
def data():
    return _planted(n_trials=240)


def _lrs(data, with_steps=False, **kw):
    trials, targets = data
    trainer = Trainer(_model(trials), lr=1e-2, batch_size=60, max_epochs=4, val_fraction=0.0,
                      verbose="error", **kw)
    trainer.fit(trials, targets)
    lrs = [h["lr"] for h in trainer.history_]
    return (lrs, [h["step"] for h in trainer.history_]) if with_steps else lrs


def test_constant_schedule_keeps_the_learning_rate(data):
    assert _lrs(data, lr_schedule="constant") == pytest.approx([1e-2] * 4)


def test_onecycle_options_reach_torch(data):
    lrs, steps = _lrs(data, with_steps=True, lr_schedule_kwargs={
        "pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0, "anneal_strategy": "linear"})
    total = steps[-1]
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-2)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-2, total_steps=total, pct_start=0.25,
                                              div_factor=10.0, final_div_factor=100.0, anneal_strategy="linear")
    seen = {}
    for step in range(1, total + 1):  # the lr after each optimizer step (not stepped past the last one)
        ref_opt.step()
        if step < total:
            ref.step()
        seen[step] = ref_opt.param_groups[0]["lr"]
    assert lrs == pytest.approx([seen[s] for s in steps])
    # 4 epochs, warm-up 25 %: the peak lr is reached at the last step of epoch 1 (step total/4 - 1)
    assert max(seen.values()) == pytest.approx(1e-2)
    # the last lr used is the schedule's end, lr / div_factor / final_div_factor (never negative)
    assert lrs[-1] == pytest.approx(1e-2 / 10 / 100, rel=1e-6)


def test_cosine_eta_min(data):
    assert _lrs(data, lr_schedule="cosine", lr_schedule_kwargs={"eta_min": 1e-3})[-1] == pytest.approx(1e-3)


@pytest.mark.parametrize(("schedule", "kwargs", "match"), [
    ("onecycle", {"pct_start": 1.5}, r"pct_start must be in \(0, 1\)"),
    ("onecycle", {"final_div_factor": 0}, "final_div_factor must be > 0"),
    ("onecycle", {"eta_min": 0.1}, r"\['eta_min'\] are not options of lr_schedule='onecycle'"),
    ("onecycle", {"anneal_strategy": "step"}, "anneal_strategy"),
    ("cosine", {"pct_start": 0.1}, r"takes \['eta_min'\]"),
    ("constant", {"pct_start": 0.1}, "takes none"),
    ("cosine", {"eta_min": float("nan")}, "must be a number"),
])
def test_bad_schedule_options_are_errors(data, schedule, kwargs, match):
    trials, targets = data
    with pytest.raises(ValueError, match=match):
        Trainer(_model(trials), lr_schedule=schedule, lr_schedule_kwargs=kwargs, max_epochs=1,
                verbose="error").fit(trials, targets)


def test_config_keys():

    cfg = load_config(None, ["models.mlp.lr_schedule=onecycle", "models.mlp.max_grad_norm=1.0",
                             "models.mlp.lr_schedule_kwargs={pct_start: 0.05, final_div_factor: 1000}"])
    assert cfg.models.mlp.lr_schedule_kwargs == {"pct_start": 0.05, "final_div_factor": 1000}
    assert cfg.models.mlp.max_grad_norm == 1.0
    assert load_config(None, ["models.mlp.lr_schedule=constant"]).models.mlp.lr_schedule == "constant"
    with pytest.raises(ConfigError, match="max_grad_norm"):
        load_config(None, ["models.mlp.max_grad_norm=0"])
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(None, ["models.mlp.lr_schedule=step"])


def test_cli_fit_trains_with_the_configured_schedule(tmp_path, monkeypatch):
    import json

    from neurodecode.cli import main

    sets = ["simulate.n_subjects=1", "simulate.n_sessions=2", "simulate.trials_per_session=120",
            "simulate.image_size=24", "targets.size=6", "models.mlp.max_epochs=3", "models.mlp.hidden_dim=32",
            "models.mlp.batch_size=32", "models.mlp.lr=0.002", "models.mlp.lr_schedule=constant",
            "models.mlp.max_grad_norm=0.5", "evaluation.n_boot=20", "evaluation.n_repeats=2",
            "evaluation.n_candidates=10", "report.n_examples=1", "report.n_retrieved=2",
            "models.ridge.enabled=false", "data.subjects=[1]"]
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    assert main(["fit", "-q", *[x for s in sets for x in ("--set", s)], "--output", str(run)]) == 0
    hist = json.loads(next(run.rglob("history.json")).read_text())
    assert [h["lr"] for h in hist] == pytest.approx([0.002] * 3)
    from neurodecode.training import list_checkpoints, load_checkpoint

    settings = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])[2]["settings"]
    assert settings["lr_schedule"] == "constant" and settings["max_grad_norm"] == 0.5
