"""The pieces of ``Trainer.fit``, each on its own: early-stopping state, epoch sums, EMA, data preparation,
batching, optimizer and schedule, checkpoint writing, resume, one batch, one optimizer step, one epoch,
the epoch record, validation tracking and finishing."""

from __future__ import annotations

import copy
import math
import shutil
from contextlib import ExitStack
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from _training_fixtures import planted as _planted
from _training_fixtures import tiny_model as _model
from torch import nn

from neurodecode.embeddings import StimulusEmbeddings
from neurodecode.training import Trainer, _data, list_checkpoints, load_checkpoint
from neurodecode.training.trainer import _EarlyStopping, _EpochTotals, _Processes, _swap_ema, _update_ema

KW = dict(lr=2e-3, batch_size=16, max_epochs=2, seed=5, val_fraction=0.2)


@pytest.fixture(scope="module")
def data():
    return _planted(n_trials=120)


def _run(trials, targets, checkpoint_dir=None, model=None, **kw):
    """A Trainer and its run, set up as ``fit`` does (nothing trained yet)."""
    trainer = Trainer(model if model is not None else _model(trials, seed=1, dropout=0.0), **{**KW, **kw})
    trainer._check_fit_args(trials, checkpoint_dir, False, None, None)
    return trainer, trainer._start_run(trials, targets, checkpoint_dir)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- early stopping ------------------------------------------------------------------------------------
def test_early_stopping_improves_only_on_a_strictly_lower_loss():
    model = nn.Linear(3, 2)
    stop = _EarlyStopping(patience=2)
    assert stop.best_val == np.inf and stop.since_best == 0 and stop.best_epoch is None
    assert stop.observe(1.0, 1, model)
    assert (stop.best_val, stop.since_best, stop.best_epoch) == (1.0, 0, 1)
    _assert_same(stop.best_state, model.state_dict())
    with torch.no_grad():
        model.weight.add_(1.0)  # the kept weights are a copy
    assert not torch.equal(stop.best_state["weight"], model.weight)
    assert not stop.observe(1.0, 2, model)  # equal is no improvement (no minimum delta)
    assert (stop.best_val, stop.since_best, stop.best_epoch) == (1.0, 1, 1)
    assert not torch.equal(stop.best_state["weight"], model.weight)
    assert not stop.observe(float("nan"), 3, model)
    assert stop.since_best == 2 and stop.should_stop
    assert stop.observe(1.0 - 1e-12, 4, model)  # any decrease counts and resets the counter
    assert (stop.since_best, stop.best_epoch, stop.should_stop) == (0, 4, False)
    _assert_same(stop.best_state, model.state_dict())


@pytest.mark.parametrize("patience, misses, stops", [(None, 50, False), (1, 1, True), (3, 2, False),
                                                     (3, 3, True)])
def test_early_stopping_patience(patience, misses, stops):
    stop = _EarlyStopping(patience, best_val=0.5, since_best=0, best_epoch=2)
    for epoch in range(misses):
        stop.observe(0.7, 3 + epoch, nn.Linear(1, 1))
    assert stop.since_best == misses and stop.should_stop is stops
    assert stop.best_epoch == 2 and stop.best_state is None  # unchanged by epochs that did not improve


# -- epoch sums, EMA ------------------------------------------------------------------------------------
def test_epoch_totals_sum_losses_over_trials():
    aux = [SimpleNamespace(key="token"), SimpleNamespace(key="lowlevel")]
    t = _EpochTotals.fresh(aux)
    assert (t.total, t.count, t.heads) == (0.0, 0, {"token": [0.0, 0], "lowlevel": [0.0, 0]})
    t.add(torch.tensor(2.0), 4, {"token": torch.tensor(1.0), "lowlevel": torch.tensor(3.0)}, 2)
    t.add(torch.tensor(1.0), 6, {"token": torch.tensor(0.5), "lowlevel": torch.tensor(1.0)}, 3)
    assert (t.total, t.count) == (14.0, 10)
    assert t.head_totals() == {"token": (3.5, 5), "lowlevel": (9.0, 5)}
    resumed = _EpochTotals(1.5, 3, {"token": (0.5, 2)})  # as restored from a checkpoint
    resumed.add(torch.tensor(1.0), 1, {"token": torch.tensor(1.0)}, 1)
    assert (resumed.total, resumed.count, resumed.head_totals()) == (2.5, 4, {"token": (1.5, 3)})


def test_swap_and_update_ema():
    model = nn.BatchNorm1d(3)  # float weights and an integer buffer (num_batches_tracked)
    live = _weights(model)
    assert _swap_ema(model, None) is None
    _assert_same(_weights(model), live)
    ema = {k: v.clone() for k, v in live.items()}
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.num_batches_tracked.fill_(7)
    _update_ema(ema, model, 0.75)
    assert torch.allclose(ema["weight"], 0.75 * live["weight"] + 0.25 * 3.0)
    assert int(ema["num_batches_tracked"]) == 7  # non-float states are copied
    before = _weights(model)
    back = _swap_ema(model, ema)
    _assert_same(back, before)
    _assert_same(_weights(model), ema)


# -- set-up: targets, validation split, batches, optimizer, schedule -----------------------------------------
def test_normalised_targets(data):
    trials, targets = data
    trainer = Trainer(_model(trials), **KW)
    Y = trainer._normalised_targets(trials, targets)
    assert Y.dtype == np.float32 and Y.shape == (len(trials.events), targets.dim)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, rtol=1e-6)
    raw = targets.lookup(trials.events["stimulus_id"])
    np.testing.assert_allclose(Y, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)
    ids = targets.ids
    with pytest.raises(ValueError, match="embed_dim"):
        trainer._normalised_targets(trials, StimulusEmbeddings(ids, np.ones((len(ids), 3), np.float32)))
    zero = np.asarray(targets.lookup(ids), np.float32).copy()
    zero[0] = 0
    with pytest.raises(ValueError, match="zero norm"):
        trainer._normalised_targets(trials, StimulusEmbeddings(ids, zero))


def _subjects(trials):
    codes, uniques = pd.factorize(trials.events["stimulus_id"], sort=False)
    subj = trials.events["subject"].to_numpy()
    data = {s: _data.SubjectData(s, np.flatnonzero(subj == s), torch.zeros(1), torch.zeros(1))
            for s in trials.subjects}
    return data, codes, uniques


@pytest.mark.parametrize("fraction, n_val", [(0.2, 24), (0.001, 1), (0.0, 0)])
def test_split_validation_holds_out_whole_stimuli(data, fraction, n_val):
    trials, _ = data
    data_, codes, uniques = _subjects(trials)
    trainer = Trainer(_model(trials), **{**KW, "val_fraction": fraction})
    assert trainer._split_validation(data_, codes, uniques, torch.Generator().manual_seed(5)) == n_val
    assert len(trainer.val_stimuli_) == n_val
    ids = trials.events["stimulus_id"].to_numpy()
    for d in data_.values():
        assert len(d.train) + len(d.val) == len(d.rows)
        val_ids, train_ids = set(ids[d.rows[d.val]]), set(ids[d.rows[d.train]])
        assert val_ids <= set(trainer.val_stimuli_) and not val_ids & train_ids
    again, _, _ = _subjects(trials)
    first = trainer.val_stimuli_
    trainer._split_validation(again, codes, uniques, torch.Generator().manual_seed(5))
    assert trainer.val_stimuli_ == first  # a function of the seed


def test_split_validation_needs_training_stimuli(data):
    trials, _ = data
    data_, codes, uniques = _subjects(trials)
    with pytest.raises(ValueError, match="leaves no training stimuli"):
        Trainer(_model(trials), **{**KW, "val_fraction": 0.999})._split_validation(
            data_, codes, uniques, torch.Generator())


def test_plan_batches(data):
    trials, targets = data
    trainer, run = _run(trials, targets, gradient_accumulation_steps=3, max_epochs=4)
    b, fd = run.batching, run.fit_data
    assert (b.global_bs, b.min_size, b.all_subjects, b.accum) == (16, 2, False, 3)
    assert b.n_batches == _data.n_epoch_batches(fd.data, 16, 2)
    assert b.total_steps == math.ceil(b.n_batches / 3) * 4
    procs2 = copy.copy(run.procs)
    procs2.world = 2
    assert trainer._plan_batches(fd, procs2).global_bs == 32
    trainer.batch_composition = "all_subjects"
    with pytest.raises(NotImplementedError, match="single process"):
        trainer._plan_batches(fd, procs2)
    assert trainer._plan_batches(fd, run.procs).n_batches == _data.n_all_subject_steps(fd.data, 16, 2)
    trainer.batch_size = 1  # fewer than the 2 subjects
    with pytest.raises(ValueError, match="batch_size >= the number of subjects"):
        trainer._plan_batches(fd, run.procs)
    trainer.batch_composition, trainer.batch_size = "per_subject", 16
    for d in fd.data.values():
        d.train = d.train[:1]
    with pytest.raises(ValueError, match="No training batch"):
        trainer._plan_batches(fd, run.procs)


def test_optimizer_decays_matrices_only(data):
    trials, targets = data
    trainer, run = _run(trials, targets, weight_decay=0.05)  # infonce: a learnable temperature
    groups = run.engine.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"])
    assert all(p.ndim < 2 for p in groups[1]["params"])
    model_params = {id(p) for p in trainer.model.parameters()}
    loss_params = [p for p in groups[1]["params"] if id(p) not in model_params]
    assert [id(p) for p in loss_params] == [id(p) for p in run.engine.loss_fn.parameters()]
    assert sum(len(g["params"]) for g in groups) == len(model_params) + len(loss_params)


def test_schedules(data):
    trials, _ = data
    trainer = Trainer(_model(trials), **KW)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    one = trainer._make_scheduler(opt, 5)
    assert isinstance(one, torch.optim.lr_scheduler.OneCycleLR) and one.total_steps == 5
    assert one._schedule_phases[0]["end_step"] == pytest.approx(0.3 * 5 - 1)  # pct_start min(0.3, 1.5/5)
    trainer.lr_schedule, trainer.lr_schedule_kwargs = "cosine", {"eta_min": 1e-5}
    cos = trainer._make_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 9)
    assert isinstance(cos, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert (cos.T_max, cos.eta_min) == (9, 1e-5)
    trainer.lr_schedule, trainer.lr_schedule_kwargs = "constant", None
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    const = trainer._make_scheduler(opt, 4)
    for _ in range(6):
        opt.step()
        const.step()
    assert opt.param_groups[0]["lr"] == 0.3


def test_run_starts_afresh(data):
    trials, targets = data
    trainer, run = _run(trials, targets, ema_decay=0.9)
    p = run.progress
    assert (p.global_step, p.start_epoch, p.start_batch, p.finished) == (0, 1, 0, False)
    assert p.stopper.best_val == np.inf and p.stopper.patience is None and p.epoch_generator is None
    _assert_same(p.ema, trainer.model.state_dict())
    assert trainer.history_ == [] and trainer.best_epoch_ is None and trainer.resumed_from_ is None
    assert run.ckpt_dir is None and run.fit_data.fingerprint is None
    assert run.settings["n_batches_per_epoch"] == run.batching.n_batches
    assert run.settings["val_stimuli"] == [str(s) for s in trainer.val_stimuli_]


# -- checkpoints ---------------------------------------------------------------------------------------
def _mid_run_state(trainer, run):
    """Give a run a recognisable position: counters, early stopping, best and EMA weights, history."""
    p = run.progress
    p.global_step = 7
    p.ema = {k: v + 1 for k, v in _weights(trainer.model).items()}
    p.stopper = _EarlyStopping(3, best_val=0.25, since_best=2, best_epoch=3,
                               best_state={k: v + 2 for k, v in _weights(trainer.model).items()})
    trainer.best_epoch_ = 3
    trainer.history_ = [{"epoch": e, "val_loss": 0.5 - e / 10} for e in (1, 2, 3, 4)]
    return _EpochTotals(12.5, 48)


def test_write_checkpoint_records_the_whole_position(data, tmp_path):
    trials, targets = data
    trainer, run = _run(trials, targets, tmp_path, patience=3, ema_decay=0.9)
    totals = _mid_run_state(trainer, run)
    epoch_state = run.fit_data.gen.get_state()
    trainer._write_checkpoint(run, 5, 9, epoch_state, totals, False)
    [path] = list_checkpoints(tmp_path)
    assert path.name == "step-000000007"
    weights, tstate, meta = load_checkpoint(path)
    _assert_same(weights["model"], trainer.model.state_dict())
    _assert_same(weights["ema"], run.progress.ema)
    _assert_same(weights["best"], run.progress.stopper.best_state)
    _assert_same(weights["loss"], run.engine.loss_fn.state_dict())
    assert torch.equal(tstate["epoch_generator"], epoch_state)
    assert torch.equal(tstate["dropout_generators"][0], run.engine.dropout_gen.get_state())
    assert tstate["scaler"] is None and tstate["scheduler"] == run.engine.scheduler.state_dict()
    assert tstate["optimizer"]["param_groups"] == run.engine.optimizer.state_dict()["param_groups"]
    keys = ("epoch", "batch_in_epoch", "global_step", "finished", "best_epoch", "best_val", "since_best",
            "epoch_loss_total", "epoch_loss_count", "seed")
    assert {k: meta[k] for k in keys} == {
        "epoch": 5, "batch_in_epoch": 9, "global_step": 7, "finished": False, "best_epoch": 3,
        "best_val": 0.25, "since_best": 2, "epoch_loss_total": 12.5, "epoch_loss_count": 48, "seed": 5}
    assert meta["history"] == trainer.history_ and meta["settings"] == run.settings
    assert meta["fingerprint"] == run.fit_data.fingerprint and set(meta["fingerprint"]) == {
        "data", "targets", "model"}
    assert "epoch_aux_loss" not in meta  # no head targets


def test_resume_restores_every_counter(data, tmp_path):
    trials, targets = data
    base = _model(trials, seed=1, dropout=0.0)
    trainer, run = _run(trials, targets, tmp_path, copy.deepcopy(base), patience=3, ema_decay=0.9)
    with torch.no_grad():
        for v in trainer.model.parameters():
            v.add_(0.1)  # the checkpoint's weights differ from the fresh model's
    totals = _mid_run_state(trainer, run)
    run.fit_data.gen.manual_seed(123)
    epoch_state = run.fit_data.gen.get_state()
    run.engine.dropout_gen.manual_seed(77)
    trainer._write_checkpoint(run, 5, 9, epoch_state, totals, False)

    again, run2 = _run(trials, targets, tmp_path, copy.deepcopy(base), patience=3, ema_decay=0.9)
    with ExitStack() as held:
        again._open_checkpoint_dir(held, run2)
        again._resume(run2)
    p, q = run.progress, run2.progress
    assert again.resumed_from_ == list_checkpoints(tmp_path)[-1]
    assert (q.global_step, q.start_epoch, q.start_batch, q.finished) == (7, 5, 9, False)
    stop = q.stopper
    assert (stop.best_val, stop.since_best, stop.best_epoch, stop.patience) == (0.25, 2, 3, 3)
    _assert_same(q.stopper.best_state, p.stopper.best_state)
    _assert_same(q.ema, p.ema)
    _assert_same(again.model.state_dict(), trainer.model.state_dict())
    assert torch.equal(q.epoch_generator, epoch_state)
    assert torch.equal(run2.engine.dropout_gen.get_state(), run.engine.dropout_gen.get_state())
    assert (q.epoch_totals.total, q.epoch_totals.count, q.epoch_totals.heads) == (12.5, 48, {})
    assert again.history_ == trainer.history_ and again.best_epoch_ == 3
    assert run2.engine.scheduler.state_dict() == run.engine.scheduler.state_dict()


def test_restore_progress_takes_this_process_head_sums(data, tmp_path):
    trials, targets = data
    trainer, run = _run(trials, targets)
    run.fit_data.aux = [SimpleNamespace(key="token")]
    run.procs.rank = 1
    meta = {"best_val": float("inf"), "since_best": 0, "best_epoch": None, "history": [], "epoch": 2,
            "batch_in_epoch": 3, "global_step": 4, "finished": True, "epoch_loss_total": 1.0,
            "epoch_loss_count": 2, "epoch_aux_loss": {"token": [[0.5, 1], [2.5, 3]]}}
    trainer._restore_progress(run, {"model": {}}, {"epoch_generator": torch.zeros(3)}, meta)
    p = run.progress
    assert p.epoch_totals.heads == {"token": [2.5, 3]} and p.finished and p.global_step == 4
    assert p.stopper.best_state is None and p.stopper.best_val == np.inf and p.ema is None


# -- training: one batch, one optimizer step, one epoch ------------------------------------------------------
def test_train_batch_backpropagates_the_loss_of_the_step(data):
    trials, targets = data
    trainer, run = _run(trials, targets)  # dropout 0: the forward pass is deterministic
    eng = run.engine
    parts = trainer._epoch_batches(run)[0]
    [(subject, rows)] = parts
    d = run.fit_data.data[subject]
    idx = torch.from_numpy(rows)
    expected = eng.loss_fn(trainer.model(d.features(rows, run.procs.device), subject).embedding,
                           d.Y[idx], d.codes[idx])
    eng.optimizer.zero_grad(set_to_none=True)
    loss, heads, n_local = trainer._train_batch(run, parts, 1, None)
    assert n_local == len(rows) and heads == {}
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    g1 = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    assert g1
    eng.optimizer.zero_grad(set_to_none=True)
    trainer._train_batch(run, parts, 2, None)  # accumulation: each batch's loss / group size
    for n, p in trainer.model.named_parameters():
        if n in g1:
            assert torch.allclose(p.grad, g1[n] / 2, atol=1e-7), n


def test_optimizer_step_counts_schedules_and_updates_the_ema(data):
    trials, targets = data
    trainer, run = _run(trials, targets, ema_decay=0.5, max_grad_norm=1e-3)
    eng, p = run.engine, run.progress
    before = _weights(trainer.model)
    ema_before = {k: v.clone() for k, v in p.ema.items()}
    trainer._train_batch(run, trainer._epoch_batches(run)[0], 1, None)
    lr0 = eng.optimizer.param_groups[0]["lr"]
    trainer._optimizer_step(run)
    assert p.global_step == 1 and eng.scheduler.last_epoch == 1
    assert eng.optimizer.param_groups[0]["lr"] != lr0
    assert all(q.grad is None for q in trainer.model.parameters())
    after = _weights(trainer.model)
    assert any(not torch.equal(after[k], before[k]) for k in after)
    for k, v in after.items():
        if v.is_floating_point():
            assert torch.allclose(p.ema[k], 0.5 * ema_before[k] + 0.5 * v), k
    p.global_step = run.batching.total_steps - 1  # one-cycle is never stepped past its last step
    trainer._train_batch(run, trainer._epoch_batches(run)[0], 1, None)
    trainer._optimizer_step(run)
    assert eng.scheduler.last_epoch == 1 and p.global_step == run.batching.total_steps


def test_run_epoch_steps_per_group_and_checkpoints(data, tmp_path):
    trials, targets = data
    trainer, run = _run(trials, targets, tmp_path, gradient_accumulation_steps=2, checkpoint_every=2,
                        keep_checkpoints=100)
    draw = torch.Generator()
    draw.set_state(run.fit_data.gen.get_state())
    batches = _data.epoch_batches(run.fit_data.data, 16, draw, 2)  # the batches the epoch will draw
    totals = trainer._run_epoch(run, 1)
    n = run.batching.n_batches
    assert n == len(batches) and run.progress.global_step == math.ceil(n / 2)
    assert totals.count == sum(len(rows) for _, rows in batches)
    metas = [load_checkpoint(c)[2] for c in list_checkpoints(tmp_path)]
    assert [m["global_step"] for m in metas] == list(range(2, math.ceil(n / 2) + 1, 2))
    assert [m["batch_in_epoch"] for m in metas] == [min(2 * m["global_step"], n) for m in metas]
    assert all(m["epoch"] == 1 and not m["finished"] for m in metas)


def test_run_epoch_continues_a_resumed_epoch_exactly(data, tmp_path):
    trials, targets = data
    base = _model(trials, seed=3, dropout=0.2)
    kw = dict(checkpoint_every=3, keep_checkpoints=100)
    full, run = _run(trials, targets, tmp_path / "a", copy.deepcopy(base), **kw)
    full_totals = full._run_epoch(run, 1)
    mid = list_checkpoints(tmp_path / "a")[1]
    shutil.copytree(mid, tmp_path / "b" / mid.name)
    part, run2 = _run(trials, targets, tmp_path / "b", copy.deepcopy(base), **kw)
    part._resume(run2)
    assert 0 < run2.progress.start_batch < run.batching.n_batches
    totals = part._run_epoch(run2, 1)
    assert run2.progress.epoch_generator is None and run2.progress.epoch_totals is None  # used up
    assert (totals.total, totals.count) == (full_totals.total, full_totals.count)
    _assert_same(part.model.state_dict(), full.model.state_dict())
    assert run2.progress.global_step == run.progress.global_step


# -- after an epoch: record, validation, stopping, finishing ----------------------------------------------
def test_epoch_record_adds_weighted_head_losses():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.25)
    loss_fn = SimpleNamespace(temperature=0.5, phase="soft_clip")
    run = SimpleNamespace(
        engine=SimpleNamespace(loss_fn=loss_fn, optimizer=optimizer), progress=SimpleNamespace(global_step=9),
        fit_data=SimpleNamespace(aux=[SimpleNamespace(key="token", weight=2.0)]),
        procs=SimpleNamespace(device=torch.device("cpu"), world=1))
    totals = _EpochTotals(6.0, 4, {"token": (3.0, 2)})
    record = Trainer._epoch_record(None, run, 3, totals)
    assert record == {"epoch": 3, "step": 9, "train_loss": 1.5 + 2.0 * 1.5, "val_loss": None,
                      "val_top1": None, "val_chance": None, "lr": 0.25, "temperature": 0.5,
                      "loss_phase": "soft_clip", "train_contrastive_loss": 1.5, "val_contrastive_loss": None, "train_token_loss": 1.5,
                      "val_token_loss": None}
    run.fit_data.aux = []
    run.engine.loss_fn = lambda *a: None  # no temperature, no phase
    plain = Trainer._epoch_record(None, run, 3, _EpochTotals(1.0, 0))
    assert plain["train_loss"] == 1.0 and math.isnan(plain["temperature"]) and "loss_phase" not in plain


def test_validate_and_track_uses_the_ema_and_keeps_the_best(data):
    trials, targets = data
    trainer, run = _run(trials, targets, ema_decay=0.9)
    eng, p = run.engine, run.progress
    p.ema = {k: v + 0.01 if v.is_floating_point() else v for k, v in _weights(trainer.model).items()}
    live = _weights(trainer.model)
    record = {}
    trainer._validate_and_track(run, 4, record)
    _assert_same(_weights(trainer.model), live)  # the live weights are back
    trainer.model.load_state_dict(p.ema)
    expected = trainer._validate_epoch(trainer.model, eng.loss_fn, run.fit_data.data, 16, run.procs.device)
    assert record["val_loss"] == expected["val_loss"] and record["val_top1"] == expected["val_top1"]
    assert p.stopper.best_val == record["val_loss"] and trainer.best_epoch_ == 4
    _assert_same(p.stopper.best_state, p.ema)
    p.stopper.best_val = -np.inf
    trainer.model.load_state_dict(live)
    trainer._validate_and_track(run, 5, {})
    assert trainer.best_epoch_ == 4 and p.stopper.since_best == 1


@pytest.mark.parametrize("since_best, stops", [(1, True), (0, False)])
def test_train_epoch_stops_when_patience_runs_out(data, since_best, stops):
    trials, targets = data
    trainer, run = _run(trials, targets, patience=2)
    run.progress.stopper = _EarlyStopping(2, best_val=-np.inf, since_best=since_best, best_epoch=1)
    assert trainer._train_epoch(run, 2, SimpleNamespace(set_postfix=lambda **kw: None)) is stops
    assert trainer.history_[-1]["epoch"] == 2 and trainer.history_[-1]["val_loss"] is not None
    assert run.progress.stopper.since_best == since_best + 1


def test_train_epochs_of_a_finished_run_trains_nothing(data):
    trials, targets = data
    trainer, run = _run(trials, targets)
    run.progress.finished, run.progress.start_epoch = True, 2
    before = _weights(trainer.model)
    assert trainer._train_epochs(run) == 2 and trainer.history_ == []
    _assert_same(_weights(trainer.model), before)


def test_log_epoch():
    lines = []
    procs = _Processes(None, torch.device("cpu"), 0, 1, False, lambda msg, *a: lines.append(msg % a))
    Trainer._log_epoch({"epoch": 3, "train_loss": 1.25, "val_loss": None, "loss_phase": "bimixco",
                        "temperature": 0.006}, None, procs)
    Trainer._log_epoch({"epoch": 4, "train_loss": 1.0, "val_loss": 0.5, "val_top1": 0.25, "val_chance": 0.1},
                       None, procs)
    assert lines == ["epoch   3: train loss 1.2500 (bimixco, temperature 0.006)",
                     "epoch   4: train loss 1.0000, val loss 0.5000, val top-1 0.250 (chance 0.100)"]


@pytest.mark.parametrize("best", [True, False])
def test_finish_writes_the_final_checkpoint_and_keeps_the_best_weights(data, tmp_path, best):
    trials, targets = data
    trainer, run = _run(trials, targets, tmp_path, ema_decay=0.9)
    p = run.progress
    p.global_step = 12
    p.ema = {k: v + 1 if v.is_floating_point() else v for k, v in _weights(trainer.model).items()}
    if best:
        p.stopper = _EarlyStopping(None, 0.5, 0, 2, {k: v + 2 if v.is_floating_point() else v
                                                     for k, v in _weights(trainer.model).items()})
    live = _weights(trainer.model)
    trainer._finish(run, 3, 0.0)
    assert trainer.global_step_ == 12 and not trainer.model.training and trainer.fit_time_s_ > 0
    _assert_same(_weights(trainer.model), p.stopper.best_state if best else p.ema)
    weights, tstate, meta = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert meta["finished"] and (meta["epoch"], meta["batch_in_epoch"], meta["global_step"]) == (3, 0, 12)
    assert (meta["epoch_loss_total"], meta["epoch_loss_count"]) == (0.0, 0)
    _assert_same(weights["model"], live)  # written before the best / EMA weights are loaded
    assert torch.equal(tstate["epoch_generator"], run.fit_data.gen.get_state())
    p.finished = True  # a resumed finished run writes nothing
    shutil.rmtree(list_checkpoints(tmp_path)[-1])
    trainer._finish(run, 3, 0.0)
    assert list_checkpoints(tmp_path) == []
