"""BrainDecoder: forward, multi-subject predict order, errors, save/load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import neurodecode
from neurodecode.datasets import BrainTrials
from neurodecode.models import BrainDecoder, DecoderOutput


def _trials(blocks):
    parts = []
    for subject, X in blocks.items():
        ev = pd.DataFrame(dict(subject=subject, session=1, stimulus_id=np.arange(len(X)), repetition=0,
                               split="test"))
        parts.append(BrainTrials(X, ev, {"modality": "fmri"}))
    return BrainTrials.concatenate(parts)


@pytest.fixture
def model():
    return BrainDecoder({1: 12, "sub-02": 9}, embed_dim=5, hidden_dim=16, n_blocks=2, dropout=0.1, seed=0)


def test_forward_shapes_and_output(model):
    out = model(torch.randn(4, 12), subject=1)
    assert isinstance(out, DecoderOutput)
    assert out.embedding.shape == (4, 5) and out.latent.shape == (4, 16)
    assert model(torch.randn(3, 9), "sub-02").embedding.shape == (3, 5)
    assert model.subjects == ["1", "sub-02"] and model.n_inputs == {"1": 12, "sub-02": 9}
    with pytest.raises(ValueError, match=r"unknown.*\['1', 'sub-02'\]"):
        model(torch.randn(2, 12), subject=3)
    with pytest.raises(ValueError, match=r"Subject 1 expects input of shape \(batch, 12\), got \(2, 9\)"):
        model(torch.randn(2, 9), subject=1)


def test_seed_gives_reproducible_init_without_global_rng():
    state = torch.random.get_rng_state()
    a = BrainDecoder({1: 7}, embed_dim=3, hidden_dim=8, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG was not used
    b = BrainDecoder({1: 7}, embed_dim=3, hidden_dim=8, seed=4)
    c = BrainDecoder({1: 7}, embed_dim=3, hidden_dim=8, seed=5)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.adapters["1"].weight, c.adapters["1"].weight)


def test_dropout_generator_reproducible(model):
    model.train()
    x = torch.randn(6, 12)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model(x, 1, generator=g1).embedding, model(x, 1, generator=g2).embedding)
    model.eval()
    assert torch.equal(model(x, 1).embedding, model(x, 1).embedding)


def test_predict_ragged_multi_subject_order(model):
    rng = np.random.default_rng(0)
    X1, X2 = rng.standard_normal((7, 12)), rng.standard_normal((5, 9))
    trials = _trials({1: X1, "sub-02": X2})
    order = rng.permutation(len(trials))
    shuffled = trials[order]
    model.train()
    pred = model.predict(shuffled, batch_size=3)
    assert model.training  # mode restored
    assert pred.shape == (12, 5) and pred.dtype == np.float32
    model.eval()
    with torch.no_grad():
        e1 = model(torch.as_tensor(X1, dtype=torch.float32), 1).embedding.numpy()
        e2 = model(torch.as_tensor(X2, dtype=torch.float32), "sub-02").embedding.numpy()
    expected = np.concatenate([e1, e2])[order]
    np.testing.assert_allclose(pred, expected, rtol=1e-5, atol=1e-6)
    # single subject works too
    single = _trials({1: X1})
    np.testing.assert_allclose(model.predict(single), e1, rtol=1e-5, atol=1e-6)


def test_predict_errors(model):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"Subject 4 is unknown.*\['1', 'sub-02'\]"):
        model.predict(_trials({4: rng.standard_normal((3, 12))}))
    with pytest.raises(ValueError, match="Subject 1 has 10 features in trials but the model's adapter "
                                         "expects 12"):
        model.predict(_trials({1: rng.standard_normal((3, 10))}))


def test_constructor_errors():
    with pytest.raises(ValueError, match="n_inputs"):
        BrainDecoder({}, embed_dim=3)
    with pytest.raises(ValueError, match=r"n_inputs\[1\]"):
        BrainDecoder({1: 0}, embed_dim=3)
    with pytest.raises(ValueError, match="backbone"):
        BrainDecoder({1: 4}, embed_dim=3, backbone="transformer")
    with pytest.raises(ValueError, match="dropout"):
        BrainDecoder({1: 4}, embed_dim=3, dropout=1.0)


def test_save_load_round_trip(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "dec")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["class"] == "BrainDecoder" and cfg["neurodecode_version"] == neurodecode.__version__
    assert cfg["config"]["n_inputs"] == {"1": 12, "sub-02": 9} and cfg["config"]["embed_dim"] == 5
    back = BrainDecoder.from_pretrained(folder)
    assert not back.training
    for (k, va), vb in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(va, vb), k
    rng = np.random.default_rng(1)
    trials = _trials({1: rng.standard_normal((6, 12)), "sub-02": rng.standard_normal((4, 9))})
    np.testing.assert_array_equal(back.predict(trials), model.predict(trials))
    cfg["class"] = "Other"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not a BrainDecoder"):
        BrainDecoder.from_pretrained(folder)


def test_corrupt_saved_model_gives_clear_error(tmp_path):
    from neurodecode.models import BrainDecoder, RidgeDecoder

    model = BrainDecoder({1: 5}, embed_dim=3, hidden_dim=4, n_blocks=1, seed=0)
    folder = model.save_pretrained(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x00\x01truncated")
    with pytest.raises(OSError, match="model.safetensors.*save the model again"):
        BrainDecoder.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json.*corrupt"):
        BrainDecoder.from_pretrained(folder)
    model.save_pretrained(folder)
    with pytest.raises(ValueError, match="not a RidgeDecoder"):
        RidgeDecoder.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        BrainDecoder.from_pretrained(tmp_path / "missing")
