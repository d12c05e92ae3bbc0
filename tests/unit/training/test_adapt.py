"""New-subject adaptation (MindBridge reset-tuning): freeze, unfreeze, isolation, determinism."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from neurodecode.datasets import BrainTrials, DataLeakageError
from neurodecode.embeddings import StimulusEmbeddings
from neurodecode.models import BrainDecoder
from neurodecode.training import AdaptResult, Trainer, adapt_subject
from neurodecode.training.adapt import _scaled_updates

N_STIM, DIM = 120, 16


def _planted(sizes, n_trials=240, seed=0, split="train"):
    rng = np.random.default_rng(seed)
    emb = np.random.default_rng(123).standard_normal((N_STIM, DIM)).astype(np.float32)
    parts = []
    for subject, p in sizes:
        ids = np.tile(np.arange(N_STIM), n_trials // N_STIM + 1)[:n_trials]
        W = rng.standard_normal((DIM, p)).astype(np.float32)
        X = emb[ids] @ W + 0.5 * rng.standard_normal((n_trials, p)).astype(np.float32)
        ev = pd.DataFrame(dict(subject=subject, session=1, stimulus_id=ids, repetition=0, split=split))
        parts.append(BrainTrials(X, ev, {"modality": "fmri"}))
    return BrainTrials.concatenate(parts), StimulusEmbeddings(np.arange(N_STIM), emb)


@pytest.fixture(scope="module")
def pretrained():
    torch.set_num_threads(1)
    trials, targets = _planted(((1, 40), (2, 55)))
    model = BrainDecoder({1: 40, 2: 55}, embed_dim=DIM, hidden_dim=64, n_blocks=1, dropout=0.1, seed=0)
    Trainer(model, lr=3e-3, batch_size=32, max_epochs=4, seed=0).fit(trials, targets, verbose="warning")
    new, _ = _planted(((3, 33),), seed=5)
    return model, new, targets


def _state(model, prefix=None, exclude=()):
    return {k: v.clone() for k, v in model.state_dict().items()
            if (prefix is None or k.startswith(prefix)) and not any(k.startswith(e) for e in exclude)}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_phase1_freezes_shared_phase2_trains_it(pretrained):
    base, new, targets = pretrained
    model = copy.deepcopy(base)
    shared0 = _state(model, exclude=("adapter.",))
    others0 = _state(model, "adapter.linears.1") | _state(model, "adapter.linears.2")
    res = adapt_subject(model, new, targets, freeze_epochs=2, max_epochs=2, lr=3e-3, batch_size=32,
                        verbose="warning")
    assert isinstance(res, AdaptResult) and res.subject == "3" and res.model is model
    assert model.n_inputs["3"] == 33
    assert _same(shared0, _state(model, exclude=("adapter.",)))        # phase 1: shared frozen
    assert not torch.equal(model.adapter.linears["3"].weight, base.adapter.linears["1"].weight[:, :33])
    adapter1 = _state(model, "adapter.linears.3")
    assert [h["phase"] for h in res.history] == [1, 1]

    res2 = adapt_subject(model, new, targets, reset=False, freeze_epochs=0, max_epochs=2, lr=3e-3,
                         batch_size=32, verbose="warning")
    assert [h["phase"] for h in res2.history] == [2, 2]
    assert not _same(shared0, _state(model, exclude=("adapter.",)))    # phase 2: shared trained
    assert not _same(adapter1, _state(model, "adapter.linears.3"))
    assert _same(others0, _state(model, "adapter.linears.1") | _state(model, "adapter.linears.2"))
    assert all(p.requires_grad for p in model.parameters())           # flags restored


def test_adapted_model_learns_and_round_trips(pretrained, tmp_path):
    base, new, targets = pretrained
    model = copy.deepcopy(base)
    res = adapt_subject(model, new, targets, freeze_epochs=3, max_epochs=6, lr=3e-3, batch_size=32,
                        verbose="warning")
    assert [h["phase"] for h in res.history] == [1] * 3 + [2] * 3
    assert res.history[-1]["val_top1"] > 3 * res.history[-1]["val_chance"]
    pred = model.predict(new)
    model.save_pretrained(tmp_path / "m")
    loaded = BrainDecoder.from_pretrained(tmp_path / "m")
    assert loaded.subjects == ["1", "2", "3"] and loaded.n_inputs["3"] == 33
    np.testing.assert_array_equal(loaded.predict(new), pred)


def test_deterministic_given_seed(pretrained):
    base, new, targets = pretrained
    outs = []
    for _ in range(2):
        model = copy.deepcopy(base)
        adapt_subject(model, new, targets, freeze_epochs=1, max_epochs=2, lr=3e-3, batch_size=32, seed=3,
                      verbose="warning")
        outs.append(model.state_dict())
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_reset_of_known_subject(pretrained):
    base, _, targets = pretrained
    model = copy.deepcopy(base)
    old = model.adapter.linears["2"].weight.clone()
    one = _state(model, "adapter.linears.1")
    trials2, _ = _planted(((2, 55),), seed=9)
    adapt_subject(model, trials2, targets, freeze_epochs=1, max_epochs=1, batch_size=32, verbose="warning")
    assert not torch.equal(model.adapter.linears["2"].weight, old)
    assert _same(one, _state(model, "adapter.linears.1"))


def test_input_checks(pretrained):
    base, new, targets = pretrained
    model = copy.deepcopy(base)
    test_trials, _ = _planted(((3, 33),), split="test")
    with pytest.raises(DataLeakageError):
        adapt_subject(model, test_trials, targets, verbose="warning")
    both, _ = _planted(((3, 33), (4, 20)))
    with pytest.raises(ValueError, match="one subject"):
        adapt_subject(model, both, targets, verbose="warning")
    wrong, _ = _planted(((2, 30),))
    with pytest.raises(ValueError, match="features"):
        adapt_subject(model, wrong, targets, verbose="warning")
    with pytest.raises(ValueError, match="freeze_epochs"):
        adapt_subject(model, new, targets, freeze_epochs=5, max_epochs=2, verbose="warning")
    assert model.subjects == ["1", "2"]


@pytest.mark.parametrize("kw", [
    dict(),
    dict(adapter="pooled", adapter_kwargs={"pool_size": 32, "rank": 4}),
    dict(adapter="pooled", adapter_kwargs={"pool_size": 32, "rank": 0, "shared_linear": True}),
    dict(backbone="dilated_conv", n_times=5, n_blocks=1),
    dict(backbone="dilated_conv", n_times=5, n_blocks=1, adapter="spatial_attention",
         adapter_kwargs={"positions": {1: np.random.default_rng(0).random((8, 2)),
                                       2: np.random.default_rng(1).random((6, 2))},
                         "n_virtual": 4, "pos_dim": 32}),
])
def test_add_subject_every_adapter(kw, tmp_path):
    model = BrainDecoder({1: 40, 2: 30}, embed_dim=8, hidden_dim=16, seed=0, **kw)
    before = _state(model)
    extra = {"positions": np.random.default_rng(2).random((7, 2))} if "spatial" in str(kw) else {}
    model.add_subject("s3", 35, seed=1, **extra)
    assert _same(before, _state(model))                             # nothing else touched
    names = model.subject_parameter_names("s3")
    assert names and all("s3" in n for n in names)
    assert model(torch.randn(2, 35), "s3").embedding.shape == (2, 8)
    model.save_pretrained(tmp_path)
    loaded = BrainDecoder.from_pretrained(tmp_path)
    assert _same(_state(model), _state(loaded))
    loaded.reset_subject("s3", seed=1)                               # same seed, same fresh weights
    assert _same(_state(model), _state(loaded))
    with pytest.raises(ValueError, match="already"):
        model.add_subject("s3", 35)


def test_scaled_updates_equal_a_smaller_lr():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 4)
    oa = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=0.1)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(3):
        with _scaled_updates(list(a.parameters()), 0.1):
            oa.zero_grad()
            a(x).square().sum().backward()
            oa.step()
        ob.zero_grad()
        b(x).square().sum().backward()
        ob.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["mindeye2", "clip_mse", "soft_clip"])
def test_every_named_loss_adapts(pretrained, loss):
    base, new, targets = pretrained
    model = copy.deepcopy(base)
    res = adapt_subject(model, new, targets, freeze_epochs=1, max_epochs=3, lr=3e-3, batch_size=32, seed=0,
                        loss=loss, verbose="warning")
    assert len(res.history) == 3 and all(np.isfinite(r["train_loss"]) for r in res.history)
