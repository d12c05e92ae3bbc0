"""Trainer with low-level targets: the lowlevel head learns its latents, alongside tokens, resumably."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from neurodecode.datasets import BrainTrials
from neurodecode.embeddings import StimulusEmbeddings
from neurodecode.models import BrainDecoder
from neurodecode.training import Trainer, list_checkpoints, load_checkpoint

N_STIM, DIM, TOKENS, LOW = 60, 8, (4, 6), (3, 8, 8)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((N_STIM, DIM)).astype(np.float32)
    tok = (emb @ rng.standard_normal((DIM, int(np.prod(TOKENS))))).astype(np.float32) / 3
    low = np.tanh(emb @ rng.standard_normal((DIM, int(np.prod(LOW))))).astype(np.float32)
    parts = []
    for subject, p in ((1, 20), (2, 25)):
        ids = np.tile(np.arange(N_STIM), 3)
        W = rng.standard_normal((DIM, p)).astype(np.float32)
        X = emb[ids] @ W + 0.3 * rng.standard_normal((len(ids), p)).astype(np.float32)
        ev = pd.DataFrame({"subject": subject, "session": 1, "stimulus_id": ids, "repetition": 0, "split": "train"})
        parts.append(BrainTrials(X, ev, {"modality": "fmri"}))
    return (BrainTrials.concatenate(parts), StimulusEmbeddings(np.arange(N_STIM), emb),
            StimulusEmbeddings(np.arange(N_STIM), tok, token_shape=TOKENS),
            StimulusEmbeddings(np.arange(N_STIM), low, token_shape=LOW))


def _model(trials, heads=("pooled", "lowlevel"), seed=0):
    sizes = {s: int(np.prod(t.feature_shape)) for s, t in trials.by_subject().items()}
    return BrainDecoder(sizes, embed_dim=DIM, hidden_dim=32, n_blocks=1, dropout=0.1, seed=seed, heads=heads,
                        token_shape=TOKENS if "tokens" in heads else None, lowlevel_shape=LOW,
                        head_kwargs={"lowlevel": {"base_channels": 16, "dropout": 0.0}} if "lowlevel" in heads
                        else None)


KW = {"lr": 3e-3, "batch_size": 16, "max_epochs": 5, "seed": 1, "val_fraction": 0.2}


def _strip_time(history):
    return [{k: v for k, v in h.items() if k != "time_s"} for h in history]


@pytest.mark.parametrize("lowlevel_loss", ["l1", "mse"])
def test_lowlevel_loss_decreases_and_enters_total(data, lowlevel_loss):
    trials, targets, _, low = data
    t = Trainer(_model(trials), lowlevel_loss=lowlevel_loss, lowlevel_weight=2.0, **KW)
    t.fit(trials, targets, lowlevel_targets=low)
    h = t.history_
    assert h[-1]["train_lowlevel_loss"] < 0.9 * h[0]["train_lowlevel_loss"]
    assert h[-1]["val_lowlevel_loss"] < h[0]["val_lowlevel_loss"]
    for r in h:
        assert r["train_loss"] == pytest.approx(r["train_contrastive_loss"] + 2.0 * r["train_lowlevel_loss"])
        assert r["val_loss"] == pytest.approx(r["val_contrastive_loss"] + 2.0 * r["val_lowlevel_loss"])
        assert "train_token_loss" not in r


def test_lowlevel_predictions_track_their_targets(data):
    trials, targets, _, low = data
    model = _model(trials)
    Trainer(model, **{**KW, "max_epochs": 15}).fit(trials, targets, lowlevel_targets=low)
    sub = trials.select(subject=1)
    pred = model.predict(sub, output="lowlevel")
    assert pred.shape == (len(sub), *LOW)
    true = low.lookup(sub.events["stimulus_id"]).reshape(len(sub), -1)
    r = [np.corrcoef(p.ravel(), t)[0, 1] for p, t in zip(pred, true)]
    assert np.median(r) > 0.5  # far above the ~0 of an untrained head


def test_tokens_and_lowlevel_together_and_resume(data, tmp_path):
    trials, targets, tok, low = data
    base = _model(trials, heads=("pooled", "tokens", "lowlevel"), seed=3)
    kw = dict(KW, max_epochs=3, checkpoint_every=3, keep_checkpoints=100)
    full_model = copy.deepcopy(base)
    full = Trainer(full_model, **kw).fit(trials, targets, token_targets=tok, lowlevel_targets=low,
                                          checkpoint_dir=tmp_path / "a")
    r = full.history_[-1]
    assert r["train_loss"] == pytest.approx(r["train_contrastive_loss"] + r["train_token_loss"]
                                            + 0.5 * r["train_lowlevel_loss"])
    ckpts = list_checkpoints(tmp_path / "a")
    n_batches = load_checkpoint(ckpts[0])[2]["settings"]["n_batches_per_epoch"]
    mid = next(p for p in ckpts[:-1] if load_checkpoint(p)[2]["epoch"] == 2
           and 0 < load_checkpoint(p)[2]["batch_in_epoch"] < n_batches)
    shutil.copytree(mid, tmp_path / "b" / mid.name)
    resumed_model = copy.deepcopy(base)
    resumed = Trainer(resumed_model, **kw).fit(trials, targets, token_targets=tok, lowlevel_targets=low,
                                                checkpoint_dir=tmp_path / "b", resume=True)
    for x, y in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(x, y)
    assert _strip_time(full.history_) == _strip_time(resumed.history_)
    with pytest.raises(ValueError, match="Cannot resume.*lowlevel_weight"):
        Trainer(copy.deepcopy(base), **kw, lowlevel_weight=1.0).fit(
            trials, targets, token_targets=tok, lowlevel_targets=low, checkpoint_dir=tmp_path / "b", resume=True)


def test_lowlevel_target_errors(data):
    trials, targets, _, low = data
    with pytest.raises(ValueError, match="no 'lowlevel' head"):
        Trainer(_model(trials, heads=("pooled",)), **KW).fit(trials, targets, lowlevel_targets=low)
    wrong = StimulusEmbeddings(np.arange(N_STIM), low.values[:, :96], token_shape=(3, 4, 8))
    with pytest.raises(ValueError, match="lowlevel_shape"):
        Trainer(_model(trials), **KW).fit(trials, targets, lowlevel_targets=wrong)
    with pytest.raises(ValueError, match="lowlevel_loss"):
        Trainer(_model(trials), lowlevel_loss="huber", **KW).fit(trials, targets, lowlevel_targets=low)
    with pytest.raises(ValueError, match="lowlevel_weight"):
        Trainer(_model(trials), lowlevel_weight=-1, **KW).fit(trials, targets, lowlevel_targets=low)
