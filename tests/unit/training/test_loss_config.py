"""Loss recipes from the config: temperatures (fixed / learnable / schedule), MindEye2's BiMixCo → SoftCLIP
switch, ATM's CLIP + MSE, and MindEye2's all-subject batches (no stimulus twice per step, exact resume)."""

from __future__ import annotations

import copy
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import neurodecode.models.losses as losses_mod
import neurodecode.training.trainer as trainer_mod
from neurodecode.config import ConfigError, load_config
from neurodecode.models import ClipLoss
from neurodecode.models.losses import TrainingLoss, cosine_anneal, info_nce, resolve_temperature
from neurodecode.training import Trainer, list_checkpoints, load_checkpoint
from neurodecode.training import _data

from _training_fixtures import planted as _planted
from _training_fixtures import tiny_model as _model


@pytest.fixture(scope="module")
def data():
    return _planted(n_trials=240)


def _np_infonce(pred, target, temperature):
    """Symmetric InfoNCE in float64 NumPy, by hand."""
    p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    t = target / np.linalg.norm(target, axis=1, keepdims=True)
    logits = p @ t.T / temperature

    def ce(z):  # mean cross-entropy with the diagonal as labels
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - np.diag(z)))

    return (ce(logits) + ce(logits.T)) / 2


# -- temperatures ----------------------------------------------------------------------------------
def test_fixed_temperature_0006_is_used_exactly():
    # 2 × 2 case: unit vectors at 44° and 46° against the axes; cosines 0.7193 / 0.6947
    a, b = math.radians(44), math.radians(46)
    pred = np.array([[math.cos(a), math.sin(a)], [math.cos(b), math.sin(b)]])
    target = np.eye(2)
    # by hand: both rows (and columns) have logits (cos, sin) / 0.006, correct one larger by d
    d = (math.cos(a) - math.sin(a)) / 0.006
    by_hand = math.log(1 + math.exp(-d))
    assert _np_infonce(pred, target, 0.006) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.0162171, abs=1e-6)
    p, t = torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    fixed = TrainingLoss("infonce", temperature=0.006, temperature_mode="fixed")
    assert fixed.temperature == 0.006
    assert float(fixed(p, t)) == pytest.approx(by_hand, rel=1e-4)
    assert float(fixed.validation_loss(p, t)) == pytest.approx(by_hand, rel=1e-4)
    clip = ClipLoss(0.006, learnable=False)
    assert clip.temperature == 0.006 and float(clip(p, t)) == pytest.approx(by_hand, rel=1e-4)
    # the old silent clamp (inverse temperature 100, i.e. 0.01) would give a clearly different value
    assert float(fixed(p, t)) != pytest.approx(_np_infonce(pred, target, 0.01), rel=0.1)
    # the Trainer builds exactly this loss from its settings
    built = Trainer(_DummyModel(), loss="infonce", temperature=0.006, temperature_mode="fixed")._make_loss()
    assert built.temperature == 0.006 and float(built(p, t)) == float(fixed(p, t))


class _DummyModel(torch.nn.Module):
    n_inputs, embed_dim = {"1": 2}, 2

    def _check_subject(self, subject):
        return None


def test_learnable_temperature_keeps_the_cap_and_never_clamps_silently():
    loss = TrainingLoss("infonce", temperature=0.02, temperature_mode="learnable")
    assert loss.logit_scale.requires_grad and loss.temperature == pytest.approx(0.02, rel=1e-6)
    pred, target = torch.eye(3) + 0.1, torch.eye(3)
    assert float(loss(pred, target).detach()) == pytest.approx(float(info_nce(pred, target, 0.02)), rel=1e-5)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(500.0))  # trained past the cap: clamped to 1/100
    assert loss.temperature == pytest.approx(0.01, rel=1e-6)
    for make in (lambda: ClipLoss(0.006), lambda: TrainingLoss("infonce", temperature=0.006,
                                                                temperature_mode="learnable")):
        with pytest.raises(ValueError, match=r"0\.006 is an inverse temperature of 166\.7.*\[0\.01, inf\)"):
            make()
    assert ClipLoss(0.01).temperature == pytest.approx(0.01, rel=1e-6)  # the bound itself is allowed


@pytest.mark.parametrize("kw, match", [
    ({"temperature": 0.0},
     r"temperature must be a finite number > 0 \(allowed range: \(0, inf\)\), got 0\.0"),
    ({"temperature": -0.1}, r"allowed range: \(0, inf\)\), got -0\.1"),
    ({"temperature": float("nan")}, r"allowed range.*got nan"),
    ({"temperature": 0.005, "temperature_mode": "learnable"}, r"0\.005 is an inverse temperature of 200"),
    ({"temperature_mode": "cosine"}, r"temperature_mode"),
    ({"loss": "soft_clip", "temperature_mode": "learnable"}, r"'soft_clip' supports temperature_mode"),
    ({"loss": "mindeye2", "temperature_schedule": (0.004, -1.0)}, r"temperature_schedule end.*got -1\.0"),
    ({"loss": "mse", "temperature": 0.1}, r"temperature only apply to the named contrastive losses"),
    ({"loss": "clip_mse", "clip_weight": 1.5}, r"clip_weight must be a number in \[0, 1\], got 1\.5"),
    ({"loss": "mindeye2", "mixco_fraction": -0.1}, r"mixco_fraction must be"),
    ({"batch_composition": "mixed"}, r"batch_composition"),
])
def test_trainer_rejects_bad_loss_settings(data, kw, match):
    trials, targets = data
    kw = {"loss": "infonce", **kw}
    with pytest.raises(ValueError, match=match):
        Trainer(_model(trials), max_epochs=1, **kw).fit(trials, targets)


@pytest.mark.parametrize("sets, match", [
    (["models.mlp.temperature=0"], r"models\.mlp\.temperature: .*allowed range: \(0, inf\)\) \(got 0\)"),
    (["models.mlp.temperature=-1"], r"allowed range: \(0, inf\)\) \(got -1\)"),
    (["models.mlp.temperature=0.006", "models.mlp.temperature_mode=learnable"],
     r"temperature=0\.006 is an inverse temperature of 166\.7.*allowed range for a learnable temperature is "
     r"\[0\.01, inf\)"),
    (["models.mlp.loss=mindeye2", "models.mlp.temperature_mode=learnable"],
     r"allowed: \['fixed', 'schedule'\]"),
    (["models.mlp.loss=mse", "models.mlp.temperature=0.1"], r"does not apply to models\.mlp\.loss='mse'"),
    (["models.mlp.temperature_schedule=[0.004]"], r"temperature_schedule"),
    (["models.mlp.mixco_fraction=2"], r"mixco_fraction"),
    (["models.mlp.batch_composition=mixed"], r"batch_composition"),
    (["models.mlp.loss=hinge"], r"models\.mlp\.loss"),
])
def test_config_rejects_bad_loss_settings(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, sets)


def test_config_defaults_and_recipes():
    mc = load_config(None).models.mlp
    assert (mc.loss, mc.temperature, mc.temperature_mode, mc.batch_composition) == \
        ("infonce", None, None, "per_subject")
    assert (mc.temperature_schedule, mc.mixco_fraction, mc.clip_weight) == ([0.004, 0.0075], 0.33, 0.1)
    mc = load_config(None, ["models.mlp.loss=mindeye2", "models.mlp.batch_composition=all_subjects",
                            "models.mlp.temperature=0.006", "models.mlp.temperature_mode=fixed"]).models.mlp
    assert (mc.loss, mc.batch_composition, mc.temperature, mc.temperature_mode) == \
        ("mindeye2", "all_subjects", 0.006, "fixed")
    # the config's defaults are the losses' defaults (the config cannot import torch to ask them)
    for name, (t, mode, _) in losses_mod.TEMPERATURE_DEFAULTS.items():
        assert resolve_temperature(name) == (t, mode)
        load_config(None, [f"models.mlp.loss={name}"])  # valid
    assert losses_mod.ATM_TEMPERATURE == pytest.approx(1 / math.log(1 / 0.07))


# -- MindEye2 schedule -----------------------------------------------------------------------------
def test_mindeye2_schedule_matches_mindeye2_numbers():
    n = 150
    loss = TrainingLoss("mindeye2", n_epochs=n)
    n_mix = int(0.33 * n)  # MindEye2: BiMixCo while 0-based epoch < int(mixup_pct * num_epochs)
    assert loss.n_mixco_epochs == n_mix == 49
    steps = n - n_mix
    expected = 0.0075 + (0.004 - 0.0075) / 2 * (1 + np.cos(np.pi * np.arange(steps) / (steps - 1)))
    phases, temps = [], loss.epoch_temperatures()
    for epoch in range(1, n + 1):
        loss.set_epoch(epoch)
        phases.append(loss.phase)
        assert loss.mixes_inputs == (epoch <= n_mix)
    assert phases == ["bimixco"] * n_mix + ["soft_clip"] * steps
    np.testing.assert_allclose(temps[:n_mix], 0.006, rtol=0)
    np.testing.assert_allclose(temps[n_mix:], expected, rtol=1e-12)
    assert temps[n_mix] == 0.004 and temps[-1] == pytest.approx(0.0075, rel=1e-12)
    np.testing.assert_allclose(cosine_anneal(0.004, 0.0075, steps), expected, rtol=1e-12)
    assert list(cosine_anneal(0.004, 0.0075, 1)) == [0.004]
    # a third of 9 epochs; fixed mode keeps 0.006 throughout
    third = TrainingLoss("mindeye2", n_epochs=9, mixco_fraction=1 / 3)
    assert third.n_mixco_epochs == 3
    assert TrainingLoss("mindeye2", n_epochs=9, temperature_mode="fixed").epoch_temperatures() == [0.006] * 9
    # infonce on a schedule anneals over all epochs; validation uses the fixed temperature
    sched = TrainingLoss("infonce", temperature=0.05, temperature_mode="schedule",
                         temperature_schedule=(0.1, 0.02), n_epochs=5)
    np.testing.assert_allclose(sched.epoch_temperatures(), cosine_anneal(0.1, 0.02, 5))
    pred, target = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.eye(6, 4)
    sched.set_epoch(5)
    assert float(sched.validation_loss(pred, target)) == pytest.approx(float(info_nce(pred, target, 0.05)))
    assert float(sched(pred, target)) == pytest.approx(float(info_nce(pred, target, 0.02)))


def test_mindeye2_loss_needs_mixed_inputs_only_in_bimixco_epochs():
    loss = TrainingLoss("mindeye2", n_epochs=3, mixco_fraction=0.34)
    pred, target = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), torch.eye(4, 3)
    with pytest.raises(ValueError, match="BiMixCo epoch"):
        loss(pred, target)
    perm, lam = torch.tensor([1, 0, 3, 2]), torch.tensor([0.3, 1.0, 1.0, 0.8])
    got = loss(pred, target, perm=perm, lambdas=lam)
    assert float(got) == pytest.approx(float(losses_mod.bimixco(pred, target, perm, lam, 0.006)))
    # λ = 1 everywhere is InfoNCE; a row mixed with itself keeps its label (identity perm)
    ones = torch.ones(4)
    assert float(losses_mod.bimixco(pred, target, torch.arange(4), lam, 0.006)) == pytest.approx(
        float(info_nce(pred, target, 0.006)), rel=1e-5)
    assert float(losses_mod.bimixco(pred, target, perm, ones, 0.006)) == pytest.approx(
        float(info_nce(pred, target, 0.006)), rel=1e-5)
    loss.set_epoch(2)
    with pytest.raises(ValueError, match="does not mix"):
        loss(pred, target, perm=perm, lambdas=lam)
    assert float(loss(pred, target)) == pytest.approx(float(losses_mod.soft_clip(pred, target, 0.004)))


def test_trainer_runs_mindeye2_phases(data, monkeypatch):
    trials, targets = data
    trainer = Trainer(_model(trials), loss="mindeye2", mixco_fraction=1 / 3, max_epochs=6, batch_size=32,
                      lr=2e-3, seed=0, val_fraction=0.2)
    calls = {"mixco": [], "bimixco": [], "soft_clip_train": []}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            if name != "soft_clip_train" or torch.is_grad_enabled():
                calls[name].append(trainer.loss_fn_.epoch)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(trainer_mod, "mixco", spy("mixco", losses_mod.mixco))
    monkeypatch.setattr(losses_mod, "bimixco", spy("bimixco", losses_mod.bimixco))
    monkeypatch.setattr(losses_mod, "soft_clip", spy("soft_clip_train", losses_mod.soft_clip))
    trainer.fit(trials, targets)
    hist = trainer.history_
    assert [h["loss_phase"] for h in hist] == ["bimixco"] * 2 + ["soft_clip"] * 4
    np.testing.assert_allclose([h["temperature"] for h in hist],
                               [0.006, 0.006, *cosine_anneal(0.004, 0.0075, 4)], rtol=1e-12)
    n_batches = _data.n_epoch_batches({s: type("D", (), {"train": np.arange(n)})() for s, n in
                                       _train_sizes(trainer, trials).items()}, 32)
    # inputs mixed and BiMixCo used in every batch of epochs 1-2, SoftCLIP in every batch after
    assert calls["mixco"] == calls["bimixco"] == [1] * n_batches + [2] * n_batches
    assert calls["soft_clip_train"] == [e for e in (3, 4, 5, 6) for _ in range(n_batches)]
    assert all(np.isfinite(h["val_loss"]) for h in hist)


def _train_sizes(trainer, trials):
    val = set(trainer.val_stimuli_)
    ev = trials.events
    return {s: int((~ev.loc[ev["subject"] == s, "stimulus_id"].isin(val)).sum()) for s in trials.subjects}


# -- all_subjects batches --------------------------------------------------------------------------
def _subject_data(codes_by_subject):
    out = {}
    for s, codes in codes_by_subject.items():
        codes = np.asarray(codes)
        out[s] = _data.SubjectData(subject=s, rows=np.arange(len(codes)), Y=torch.zeros(len(codes), 2),
                                   codes=torch.from_numpy(codes), train=np.arange(len(codes)))
    return out


def test_all_subject_steps_hold_every_subject_and_no_repeated_stimulus():
    rng = np.random.default_rng(0)
    # three subjects with repeated stimuli, overlapping stimulus sets and different trial counts
    data = _subject_data({1: rng.integers(0, 40, 90), 2: rng.integers(0, 40, 70),
                          3: rng.integers(20, 60, 80)})
    bs = 20
    b = bs // 3
    gen = torch.Generator().manual_seed(5)
    steps = _data.all_subject_steps(data, bs, gen)
    assert len(steps) == _data.n_all_subject_steps(data, bs) == 70 // b
    used = {s: [] for s in data}
    for step in steps:
        assert [s for s, _ in step] == [1, 2, 3]
        codes = np.concatenate([data[s].codes_np[idx] for s, idx in step])
        assert all(len(idx) == b for _, idx in step)
        assert len(np.unique(codes)) == len(codes) == 3 * b, "a stimulus repeats within a step"
        for s, idx in step:
            used[s].extend(idx.tolist())
    # deferral wastes little: the smallest subject's trials are (almost) all used once
    assert len(set(used[2])) >= 70 - b
    # deterministic given the generator state
    again = _data.all_subject_steps(data, bs, torch.Generator().manual_seed(5))
    assert all(np.array_equal(x, y) for s1, s2 in zip(steps, again) for (_, x), (_, y) in zip(s1, s2))
    with pytest.raises(ValueError, match="batch_size >= the number of subjects"):
        _data.all_subject_steps(data, 2, gen)
    # one stimulus only: impossible without repeats
    with pytest.raises(ValueError, match="Cannot draw 2 training trials of subject 1"):
        _data.all_subject_steps(_subject_data({1: [0] * 10, 2: [1, 2] * 5}), 4, gen)


def test_trainer_all_subjects_concatenates_subjects_in_one_loss(data, monkeypatch):
    trials, targets = data
    model = _model(trials)
    forward = model.forward
    seen = []

    def spy_forward(x, subject, generator=None):
        if torch.is_grad_enabled():
            seen.append(str(subject))
        return forward(x, subject, generator)

    batches = []

    def loss(pred, target, ids):
        if torch.is_grad_enabled():
            batches.append(ids.cpu().numpy())
        return info_nce(pred, target, 0.1, ids=ids)

    monkeypatch.setattr(model, "forward", spy_forward)
    trainer = Trainer(model, loss=loss, batch_size=33, max_epochs=2, seed=0, val_fraction=0.2,
                      batch_composition="all_subjects").fit(trials, targets)
    assert len(trainer.history_) == 2
    n_steps = len(batches) // 2
    assert n_steps == min(_train_sizes(trainer, trials).values()) // 16
    assert seen == ["1", "2"] * (2 * n_steps)  # every step runs both adapters, in subject order
    for ids in batches:
        assert len(ids) == 32 and len(np.unique(ids)) == 32  # 33 // 2 = 16 per subject, no repeat


def test_resume_mid_all_subjects_bimixco_epoch_is_bit_exact(data, tmp_path):
    trials, targets = data
    base = _model(trials, seed=2)
    # two BiMixCo epochs (int(0.67 × 3) = 2), then SoftCLIP; dropout on; checkpoints every 2 steps
    kw = dict(loss="mindeye2", mixco_fraction=0.67, batch_composition="all_subjects", lr=2e-3,
              batch_size=24, max_epochs=3, seed=9, val_fraction=0.2, checkpoint_every=2, keep_checkpoints=100)
    full_model = copy.deepcopy(base)
    full = Trainer(full_model, **kw).fit(trials, targets, checkpoint_dir=tmp_path / "a")
    ckpts = list_checkpoints(tmp_path / "a")
    n_batches = load_checkpoint(ckpts[0])[2]["settings"]["n_batches_per_epoch"]
    mid = [p for p in ckpts[:-1] if load_checkpoint(p)[2]["epoch"] == 2
           and 0 < load_checkpoint(p)[2]["batch_in_epoch"] < n_batches][0]
    shutil.copytree(mid, tmp_path / "b" / mid.name)
    resumed_model = copy.deepcopy(base)
    resumed = Trainer(resumed_model, **kw).fit(trials, targets, checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.resumed_from_.name == mid.name
    for (k, x), y in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(x, y), k
    strip = [{k: v for k, v in h.items() if k != "time_s"} for h in full.history_]
    assert strip == [{k: v for k, v in h.items() if k != "time_s"} for h in resumed.history_]
    assert [h["loss_phase"] for h in full.history_] == ["bimixco", "bimixco", "soft_clip"]
    settings = load_checkpoint(mid)[2]["settings"]
    assert settings["batch_composition"] == "all_subjects" and settings["temperature"] == 0.006
    json.dumps(settings)
    with pytest.raises(ValueError, match="Cannot resume.*batch_composition"):
        Trainer(copy.deepcopy(base), **{**kw, "batch_composition": "per_subject"}).fit(
            trials, targets, checkpoint_dir=tmp_path / "b", resume=True)


# -- every loss learns -----------------------------------------------------------------------------
@pytest.mark.parametrize("loss, extra", [
    ("infonce", {}),
    ("infonce", {"temperature": 0.006, "temperature_mode": "fixed"}),
    ("soft_clip", {}),
    ("mindeye2", {}),
    ("mindeye2", {"batch_composition": "all_subjects"}),
    ("clip_mse", {}),
    ("mse", {}),
])
def test_each_loss_decodes_above_chance(loss, extra):
    trials, targets = _planted(n_trials=360, noise=0.3, seed=1)
    trainer = Trainer(_model(trials, seed=0), loss=loss, lr=3e-3, batch_size=32, max_epochs=10, seed=0,
                      val_fraction=0.2, **extra).fit(trials, targets)
    best = trainer.history_[trainer.best_epoch_ - 1]
    assert best["val_top1"] > 5 * best["val_chance"], (loss, [h["val_top1"] for h in trainer.history_])
    assert np.isfinite(trainer.history_[-1]["train_loss"])


def test_val_fraction_zero_with_new_modes(data):
    trials, targets = data
    for kw in ({"loss": "mindeye2", "batch_composition": "all_subjects"}, {"loss": "clip_mse"}):
        trainer = Trainer(_model(trials), max_epochs=2, batch_size=32, seed=0, val_fraction=0.0, **kw)
        trainer.fit(trials, targets)
        assert trainer.best_epoch_ is None and trainer.history_[-1]["val_loss"] is None


def test_clip_mse_is_atm_formula():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(5, 4, generator=g), F.normalize(torch.randn(5, 4, generator=g), dim=1)
    loss = TrainingLoss("clip_mse", temperature_mode="fixed")
    # ATM: logit scale log(1/0.07) used as the multiplier itself; λ = 1 - alpha = 0.1 on the CLIP term
    scale = math.log(1 / 0.07)
    expected = 0.1 * _np_infonce(pred.double().numpy(), target.double().numpy(), 1 / scale) + \
        0.9 * float(((pred - target) ** 2).mean())
    assert float(loss(pred, target)) == pytest.approx(expected, rel=1e-5)
    learnable = TrainingLoss("clip_mse")
    assert learnable.temperature_mode == "learnable" and learnable.logit_scale.requires_grad
    assert learnable.temperature == pytest.approx(1 / scale, rel=1e-6)


# -- wiring: multi-process BiMixCo, and the run config -----------------------------------------------
def test_mindeye2_trains_in_two_processes(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("_training_fixtures.py")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kw = dict(lr=2e-3, max_epochs=2, seed=3, val_fraction=0.2, dropout=0.0, n_trials=240, batch_size=16,
              loss="mindeye2", mixco_fraction=0.5)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env |= {"OMP_NUM_THREADS": "1", "NEURODECODE_TQDM": "off", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), json.dumps(kw)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
    hist = json.loads((tmp_path / "history.json").read_text())["history"]
    assert [h["loss_phase"] for h in hist] == ["bimixco", "soft_clip"]
    assert all(np.isfinite(h["train_loss"]) and h["val_top1"] > 3 * h["val_chance"] for h in hist)


def test_cli_fit_uses_the_loss_config(tmp_path, monkeypatch):
    from neurodecode.cli import main

    sets = ["simulate.n_subjects=2", "simulate.n_sessions=2", "simulate.trials_per_session=120",
            "simulate.image_size=24", "targets.size=6", "models.mlp.max_epochs=3", "models.mlp.hidden_dim=32",
            "models.mlp.batch_size=32", "models.mlp.loss=mindeye2", "models.mlp.mixco_fraction=0.34",
            "models.mlp.batch_composition=all_subjects", "evaluation.n_boot=20", "evaluation.n_repeats=2",
            "evaluation.n_candidates=10", "report.n_examples=1", "report.n_retrieved=2",
            "models.ridge.enabled=false", "data.subjects=[1,2]"]
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    assert main(["fit", "-q", *[x for s in sets for x in ("--set", s)], "--output", str(run)]) == 0
    hist = json.loads(next(run.rglob("history.json")).read_text())
    assert [h["loss_phase"] for h in hist] == ["bimixco", "soft_clip", "soft_clip"]
    np.testing.assert_allclose([h["temperature"] for h in hist], [0.006, 0.004, 0.0075], rtol=1e-12)
    settings = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])[2]["settings"]
    assert settings["loss"] == "mindeye2" and settings["batch_composition"] == "all_subjects"


def test_checkpoints_from_before_the_loss_settings_still_resume(data, tmp_path):
    trials, targets = data
    kw = dict(batch_size=32, max_epochs=1, seed=0, checkpoint_every=3)
    Trainer(_model(trials), **kw).fit(trials, targets, checkpoint_dir=tmp_path)
    for ckpt in list_checkpoints(tmp_path):  # as written before batch_composition / temperature existed
        path = ckpt / "trainer_state.json"
        state = json.loads(path.read_text())
        for key in ("batch_composition", "temperature", "temperature_mode"):
            del state["settings"][key]
        path.write_text(json.dumps(state))
    t = Trainer(_model(trials), **kw).fit(trials, targets, checkpoint_dir=tmp_path, resume=True)
    assert t.resumed_from_ is not None
    with pytest.raises(ValueError, match="Cannot resume.*temperature"):
        Trainer(_model(trials), **kw, temperature=0.05).fit(trials, targets, checkpoint_dir=tmp_path,
                                                             resume=True)


# -- brainmagick's CLIP loss -----------------------------------------------------------------------
def test_brainmagick_clip_by_hand():
    """One direction, only the candidates normalised, no temperature: checked against NumPy by hand."""
    rng = np.random.default_rng(3)
    pred, target = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    logits = pred @ (target / np.linalg.norm(target, axis=1, keepdims=True)).T  # estimate NOT normalised
    z = logits - logits.max(1, keepdims=True)
    by_hand = float(np.mean(np.log(np.exp(z).sum(1)) - np.diag(z)))
    p, t = torch.tensor(pred, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    assert float(losses_mod.candidate_clip(p, t)) == pytest.approx(by_hand, rel=1e-12)
    loss_fn = TrainingLoss("brainmagick_clip")
    assert (loss_fn.base_temperature, loss_fn.temperature_mode) == (1.0, "fixed")
    assert float(loss_fn(p, t)) == pytest.approx(by_hand, rel=1e-12)
    # scaling the estimate sharpens the softmax (its norm is the inverse temperature); scaling the
    # candidates changes nothing; the loss is not symmetric
    assert float(losses_mod.candidate_clip(3 * p, t)) != pytest.approx(by_hand)
    assert float(losses_mod.candidate_clip(p, 3 * t)) == pytest.approx(by_hand, rel=1e-12)
    assert float(losses_mod.candidate_clip(t, p)) != pytest.approx(float(losses_mod.candidate_clip(p, t)))
    # a repeated stimulus is a positive, not a negative
    ids = torch.tensor([0, 0, 1, 2, 3])
    labels = np.array([[.5, .5, 0, 0, 0], [.5, .5, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert float(losses_mod.candidate_clip(p, t, ids=ids)) == pytest.approx(float(-(labels * logp).sum(1).mean()),
                                                                           rel=1e-12)


def test_brainmagick_clip_has_a_fixed_temperature_only():
    with pytest.raises(ValueError, match="supports temperature_mode"):
        TrainingLoss("brainmagick_clip", temperature_mode="learnable")
    with pytest.raises(ConfigError, match="temperature_mode"):
        load_config(None, ["models.mlp.loss=brainmagick_clip", "models.mlp.temperature_mode=learnable"])
    assert load_config(None, ["models.mlp.loss=brainmagick_clip"]).models.mlp.loss == "brainmagick_clip"


def test_brainmagick_clip_trains(data):
    trials, targets = data
    t = Trainer(_model(trials), loss="brainmagick_clip", batch_size=32, max_epochs=6, lr=3e-3, seed=0,
                verbose="error").fit(trials, targets)
    assert t.history_[-1]["val_top1"] > 3 * t.history_[-1]["val_chance"]


def test_the_inverse_temperature_cap_applies_in_the_forward_pass():
    """Trained past the cap (logit scale log 500), both learnable losses compute the loss at T = 0.01 exactly."""
    pred, target = torch.ones(4, 4) + 0.01 * torch.eye(4), torch.eye(4)  # cosines 0.005 apart: loss > 0
    at_cap = float(info_nce(pred, target, 0.01))
    assert at_cap != pytest.approx(float(info_nce(pred, target, 1 / 500)), rel=1e-3)  # the cap matters here
    for loss in (ClipLoss(0.02), TrainingLoss("infonce", temperature=0.02, temperature_mode="learnable")):
        with torch.no_grad():
            loss.logit_scale.fill_(math.log(500.0))
        assert float(loss(pred, target).detach()) == pytest.approx(at_cap, rel=1e-5)
        if isinstance(loss, TrainingLoss):  # its validation loss uses the current (capped) value too
            assert float(loss.validation_loss(pred, target).detach()) == pytest.approx(at_cap, rel=1e-5)
