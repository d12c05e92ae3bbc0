"""Trainer: learns a planted mapping, deterministic, leak-proof, clear input errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from neurodecode.datasets import BrainTrials, DataLeakageError
from neurodecode.models import BrainDecoder
from neurodecode.training import Trainer

from _training_fixtures import DIM  # noqa: E402
from _training_fixtures import planted as _planted  # noqa: E402


def _model(trials, seed=0):
    sizes = {s: int(np.prod(t.feature_shape)) for s, t in trials.by_subject().items()}
    return BrainDecoder(sizes, embed_dim=DIM, hidden_dim=64, n_blocks=1, dropout=0.1, seed=seed)


@pytest.fixture(scope="module")
def data():
    return _planted()


def test_learns_planted_mapping(data):
    trials, targets = data
    model = _model(trials)
    trainer = Trainer(model, lr=3e-3, batch_size=32, max_epochs=15, seed=0, val_fraction=0.2)
    assert trainer.fit(trials, targets) is trainer
    hist = trainer.history_
    assert len(hist) == 15 and set(hist[0]) >= {"epoch", "train_loss", "val_loss", "val_top1", "lr"}
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    best = hist[trainer.best_epoch_ - 1]
    assert best["val_chance"] == pytest.approx(1 / 24, rel=0.2)
    assert best["val_top1"] > 0.6, hist  # chance ≈ 0.04
    # validation stimuli were never trained on: 20 % of 120 stimuli
    assert len(trainer.val_stimuli_) == 24
    # the best epoch's weights are the ones left in the model
    pred = model.predict(trials)
    assert pred.shape == (len(trials), DIM)


def test_deterministic_given_seed(data):
    trials, targets = data
    base = _model(trials, seed=1)
    m1, m2 = copy.deepcopy(base), copy.deepcopy(base)
    kw = dict(lr=1e-3, batch_size=32, max_epochs=3, seed=7)
    t1 = Trainer(m1, **kw).fit(trials, targets)
    t2 = Trainer(m2, **kw).fit(trials, targets)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["train_loss"] for h in t1.history_] == [h["train_loss"] for h in t2.history_]
    assert t1.val_stimuli_ == t2.val_stimuli_
    m3 = copy.deepcopy(base)
    Trainer(m3, **{**kw, "seed": 8}).fit(trials, targets)
    assert not torch.equal(m3.head.weight, m1.head.weight)


def test_single_subject_batches_and_no_val(data, monkeypatch):
    trials, targets = data
    model = _model(trials)
    seen = []
    forward = model.forward

    def spy(x, subject, generator=None):
        seen.append((str(subject), x.shape[1]))
        return forward(x, subject, generator)

    monkeypatch.setattr(model, "forward", spy)
    trainer = Trainer(model, batch_size=50, max_epochs=1, val_fraction=0.0, seed=0).fit(trials, targets)
    assert trainer.best_epoch_ is None and trainer.history_[0]["val_loss"] is None
    assert set(seen) == {("1", 40), ("2", 55)}  # every batch comes from one subject
    subjects = [s for s, _ in seen]
    assert subjects != sorted(subjects)  # subjects are interleaved


def test_patience_stops_early(data):
    trials, targets = data
    trainer = Trainer(_model(trials), lr=1e-12, max_epochs=30, patience=2, seed=0, batch_size=64)
    trainer.fit(trials, targets)
    assert len(trainer.history_) == 3  # weights cannot move: no better epoch after the first


def test_leakage_raises(data):
    trials, targets = data
    events = trials.events.copy()
    events.loc[:3, "split"] = "test"
    leaky = BrainTrials(trials.data, events, trials.info)
    with pytest.raises(DataLeakageError, match="training"):
        Trainer(_model(trials)).fit(leaky, targets)


def test_bad_inputs_raise_clearly(data):
    trials, targets = data
    sub1 = trials.select(subject=1)
    X = sub1.get_data().copy()
    X[3, 2] = np.nan
    bad = BrainTrials(X, sub1.events, sub1.info)
    with pytest.raises(ValueError, match="subject 1 contains 1 non-finite"):
        Trainer(_model(trials)).fit(bad, targets)
    const = BrainTrials(np.ones_like(X), sub1.events, sub1.info)
    with pytest.raises(ValueError, match="subject 1 has zero variance"):
        Trainer(_model(trials)).fit(const, targets)
    with pytest.raises(ValueError, match="embed_dim"):
        Trainer(BrainDecoder({1: 40}, embed_dim=3)).fit(sub1, targets)
    with pytest.raises(ValueError, match="Subject 1 has 40 features.*expects 41"):
        Trainer(BrainDecoder({1: 41}, embed_dim=DIM)).fit(sub1, targets)
    with pytest.raises(ValueError, match="unknown loss 'hinge'. Registered losses: 'infonce'"):
        Trainer(_model(trials), loss="hinge").fit(trials, targets)
    with pytest.raises(KeyError, match="no embedding"):
        Trainer(_model(trials)).fit(trials, targets.subset(range(10)))


@pytest.mark.parametrize("loss", ["soft_clip", "mse"])
def test_other_losses_run(data, loss):
    trials, targets = data
    trainer = Trainer(_model(trials), loss=loss, max_epochs=2, seed=0).fit(trials, targets)
    assert np.isfinite(trainer.history_[-1]["train_loss"])


class _CountingArray:
    """A lazy array-like that records every read and refuses reads of more than ``limit`` rows."""

    def __init__(self, array, limit):
        self.array, self.limit, self.reads = array, limit, []
        self.shape, self.dtype = array.shape, array.dtype

    def __len__(self):
        return len(self.array)

    def __getitem__(self, rows):
        rows = np.asarray(rows)
        assert rows.ndim == 1 and np.all(np.diff(rows) > 0), "reads must be sorted unique rows"
        assert len(rows) <= self.limit, f"read of {len(rows)} rows > limit {self.limit}"
        self.reads.append(len(rows))
        return self.array[rows]


def _one_size_trials(n_trials=300, seed=0):
    trials, targets = _planted(n_trials=n_trials, sizes=((1, 40), (2, 40)), seed=seed)
    return trials, targets


def test_streams_lazy_data_without_materialising(tmp_path):
    h5py = pytest.importorskip("h5py")
    trials, targets = _one_size_trials()
    X = trials.get_data()
    lazy = _CountingArray(X, limit=256)  # each subject has 300 trials: never read whole
    streamed = BrainTrials(lazy, trials.events, trials.info)
    base = _model(trials, seed=2)
    m_mem, m_lazy = copy.deepcopy(base), copy.deepcopy(base)
    kw = dict(lr=1e-3, batch_size=32, max_epochs=2, seed=4, val_fraction=0.2)
    t_mem = Trainer(m_mem, **kw).fit(trials, targets)
    t_lazy = Trainer(m_lazy, **kw).fit(streamed, targets)
    assert lazy.reads and max(lazy.reads) <= 256
    for (k, a), b in zip(m_mem.state_dict().items(), m_lazy.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["val_loss"] for h in t_mem.history_] == [h["val_loss"] for h in t_lazy.history_]
    # an HDF5 dataset streams too
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["X"] = X
    with h5py.File(tmp_path / "x.h5", "r") as f:
        m_h5 = copy.deepcopy(base)
        Trainer(m_h5, **kw).fit(BrainTrials(f["X"], trials.events, trials.info), targets)
    for (k, a), b in zip(m_mem.state_dict().items(), m_h5.state_dict().values()):
        assert torch.equal(a, b), k


def test_streaming_checks_data_in_chunks():
    trials, targets = _one_size_trials()
    X = trials.get_data().copy()
    X[250, 3] = np.inf
    lazy = BrainTrials(_CountingArray(X, limit=256), trials.events, trials.info)
    with pytest.raises(ValueError, match="subject 1 contains 1 non-finite"):
        Trainer(_model(trials)).fit(lazy, targets)
    forced = Trainer(_model(trials), stream=True, max_epochs=1, batch_size=32)
    forced.fit(trials, targets)  # in-memory data streamed on request
    assert np.isfinite(forced.history_[0]["train_loss"])
