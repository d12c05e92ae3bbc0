"""Trainer with token targets: the tokens head trains (MindEye2-style), deterministically and resumably."""

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

N_STIM, DIM, TOKENS = 60, 8, (4, 6)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((N_STIM, DIM)).astype(np.float32)
    tok = (emb @ rng.standard_normal((DIM, int(np.prod(TOKENS))))).astype(np.float32) / 3
    parts = []
    for subject, p in ((1, 20), (2, 25)):
        ids = np.tile(np.arange(N_STIM), 3)
        W = rng.standard_normal((DIM, p)).astype(np.float32)
        X = emb[ids] @ W + 0.3 * rng.standard_normal((len(ids), p)).astype(np.float32)
        ev = pd.DataFrame(dict(subject=subject, session=1, stimulus_id=ids, repetition=0, split="train"))
        parts.append(BrainTrials(X, ev, {"modality": "fmri"}))
    return (BrainTrials.concatenate(parts), StimulusEmbeddings(np.arange(N_STIM), emb),
            StimulusEmbeddings(np.arange(N_STIM), tok, token_shape=TOKENS))


def _model(trials, heads=("pooled", "tokens"), token_shape=TOKENS, seed=0):
    sizes = {s: int(np.prod(t.feature_shape)) for s, t in trials.by_subject().items()}
    return BrainDecoder(sizes, embed_dim=DIM, hidden_dim=32, n_blocks=1, dropout=0.1, seed=seed,
                        heads=heads, token_shape=token_shape if "tokens" in heads else None)


KW = dict(lr=3e-3, batch_size=16, max_epochs=4, seed=1, val_fraction=0.2)


def _strip_time(history):
    return [{k: v for k, v in h.items() if k != "time_s"} for h in history]


@pytest.mark.parametrize("token_loss", ["mse", "cosine"])
def test_token_loss_decreases(data, token_loss):
    trials, targets, tokens = data
    t = Trainer(_model(trials), token_loss=token_loss, token_weight=2.0, **KW)
    t.fit(trials, targets, token_targets=tokens)
    h = t.history_
    assert h[-1]["train_token_loss"] < h[0]["train_token_loss"]
    assert h[-1]["val_token_loss"] < h[0]["val_token_loss"]
    for r in h:
        assert r["train_loss"] == pytest.approx(r["train_contrastive_loss"] + 2.0 * r["train_token_loss"])
        assert r["val_loss"] == pytest.approx(r["val_contrastive_loss"] + 2.0 * r["val_token_loss"])


def test_token_training_is_deterministic_and_changes_the_tokens_head(data):
    trials, targets, tokens = data
    base = _model(trials)
    runs = []
    for _ in range(2):
        m = copy.deepcopy(base)
        runs.append((m, Trainer(m, **KW).fit(trials, targets, token_targets=tokens)))
    for a, b in zip(runs[0][0].state_dict().values(), runs[1][0].state_dict().values()):
        assert torch.equal(a, b)
    assert _strip_time(runs[0][1].history_) == _strip_time(runs[1][1].history_)
    # without token targets the tokens head is left at its initialisation
    m = copy.deepcopy(base)
    t = Trainer(m, **KW).fit(trials, targets)
    assert "train_token_loss" not in t.history_[0]
    head = {k: v for k, v in m.state_dict().items() if k.startswith("heads.tokens")}
    assert head and all(torch.equal(v, base.state_dict()[k]) for k, v in head.items())
    assert any(not torch.equal(v, runs[0][0].state_dict()[k]) for k, v in head.items())


def test_token_target_errors(data):
    trials, targets, tokens = data
    with pytest.raises(ValueError, match="no 'tokens' head"):
        Trainer(_model(trials, heads=("pooled",)), **KW).fit(trials, targets, token_targets=tokens)
    with pytest.raises(ValueError, match=r"token_shape \(4, 6\).*token_shape \(3, 8\)"):
        Trainer(_model(trials, token_shape=(3, 8)), **KW).fit(trials, targets, token_targets=tokens)
    with pytest.raises(ValueError, match="token_shape"):
        Trainer(_model(trials), **KW).fit(trials, targets, token_targets=targets)
    with pytest.raises(ValueError, match="token_loss"):
        Trainer(_model(trials), token_loss="l1", **KW).fit(trials, targets, token_targets=tokens)
    with pytest.raises(ValueError, match="token_weight"):
        Trainer(_model(trials), token_weight=-1.0, **KW).fit(trials, targets, token_targets=tokens)


def test_memmapped_token_targets(data, tmp_path):
    trials, targets, tokens = data
    path = tmp_path / "tok.npy"
    np.save(path, tokens.values)
    mm = copy.copy(tokens)
    mm.values = np.load(path, mmap_mode="r")
    base = _model(trials)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    Trainer(a, **{**KW, "max_epochs": 1}).fit(trials, targets, token_targets=tokens)
    Trainer(b, **{**KW, "max_epochs": 1}).fit(trials, targets, token_targets=mm)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_resume_with_tokens_matches_uninterrupted(data, tmp_path):
    trials, targets, tokens = data
    base = _model(trials, seed=3)
    kw = dict(KW, max_epochs=3, checkpoint_every=3, keep_checkpoints=100)
    full_model = copy.deepcopy(base)
    full = Trainer(full_model, **kw).fit(trials, targets, token_targets=tokens, checkpoint_dir=tmp_path / "a")
    ckpts = list_checkpoints(tmp_path / "a")
    n_batches = load_checkpoint(ckpts[0])[2]["settings"]["n_batches_per_epoch"]
    mid = [p for p in ckpts[:-1] if load_checkpoint(p)[2]["epoch"] == 2
           and 0 < load_checkpoint(p)[2]["batch_in_epoch"] < n_batches][0]
    shutil.copytree(mid, tmp_path / "b" / mid.name)
    resumed_model = copy.deepcopy(base)
    resumed = Trainer(resumed_model, **kw).fit(trials, targets, token_targets=tokens,
                                                checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.resumed_from_.name == mid.name
    for x, y in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(x, y)
    assert _strip_time(full.history_) == _strip_time(resumed.history_)
    # other token settings cannot resume this run
    with pytest.raises(ValueError, match="Cannot resume.*token_weight"):
        Trainer(copy.deepcopy(base), **kw, token_weight=0.5).fit(
            trials, targets, token_targets=tokens, checkpoint_dir=tmp_path / "b", resume=True)
