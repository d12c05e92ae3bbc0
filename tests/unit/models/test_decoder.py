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
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
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


# -- composable variants (adapters × backbones × heads) ------------------------------------------------
def _positions(n, seed):
    return np.random.default_rng(seed).uniform(0, 1, (n, 2))


VARIANTS = {
    "linear-mlp": dict(n_inputs={1: 12, 2: 9}, hidden_dim=16),
    "pooled-mixer": dict(n_inputs={1: 40, 2: 25}, hidden_dim=16, adapter="pooled", backbone="mixer",
                         adapter_kwargs={"pool_size": 16, "rank": 4}, backbone_kwargs={"n_tokens": 4},
                         heads=("pooled", "tokens", "lowlevel"), token_shape=(3, 6), lowlevel_shape=(2, 8, 8),
                         head_kwargs={"lowlevel": {"base_channels": 8}, "tokens": {"rank": 4}}),
    "subject_layer-dilated_conv": dict(n_inputs={1: 4 * 10, 2: 3 * 10}, n_times=10, hidden_dim=8,
                                       backbone="dilated_conv",
                                       backbone_kwargs={"hidden": 8, "pool": "linear"},
                                       adapter_kwargs={"n_outputs": 5}),
    "spatial_attention-atm": dict(n_inputs={1: 6 * 20, 2: 5 * 20}, n_times=20, hidden_dim=8, backbone="atm",
                                  adapter="spatial_attention", heads=("pooled", "tokens"), token_shape=(2, 3),
                                  adapter_kwargs={"positions": {1: _positions(6, 0), 2: _positions(5, 1)},
                                                  "n_virtual": 4, "pos_dim": 8, "dropout": 0.2},
                                  backbone_kwargs={"d_model": 12, "n_heads": 2, "d_ff": 8, "n_filters": 3,
                                                   "conv_kernel": 3, "pool": 4, "pool_stride": 2}),
}


def _variant(name, seed=0):
    kw = dict(VARIANTS[name])
    return BrainDecoder(kw.pop("n_inputs"), embed_dim=5, n_blocks=2, seed=seed, **kw)


def _variant_trials(model, n=(5, 4), seed=0):
    rng = np.random.default_rng(seed)
    blocks = {}
    for s, k in zip(model.subjects, n):
        shape = model._input_shape(s)
        blocks[int(s)] = rng.standard_normal((k, *shape))
    return blocks


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_forward_predict_save_load(name, tmp_path):
    state = torch.random.get_rng_state()
    model = _variant(name)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded init leaves the global RNG alone
    again = _variant(name)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    blocks = _variant_trials(model)
    model.eval()
    x1 = torch.as_tensor(blocks[1], dtype=torch.float32)
    out = model(x1, 1)
    assert out.embedding.shape == (len(x1), 5)
    heads = VARIANTS[name].get("heads", ("pooled",))
    assert (out.tokens is None) == ("tokens" not in heads)
    assert (out.lowlevel is None) == ("lowlevel" not in heads)
    if model.is_sequence:  # flattened M/EEG input gives the same result
        torch.testing.assert_close(model(x1.reshape(len(x1), -1), 1).embedding, out.embedding)
        assert out.latent.ndim == 3
    model.train()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(model(x1, 1, g1).embedding, model(x1, 1, g2).embedding)

    trials = _trials(blocks)
    pred = model.predict(trials, output="all", batch_size=3)
    assert set(pred) == set(heads) and pred["pooled"].shape == (len(trials), 5)
    np.testing.assert_allclose(pred["pooled"][:len(x1)], model.eval()(x1, 1).embedding.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    if "tokens" in heads:
        assert model.predict(trials, output="tokens").shape == (len(trials), *VARIANTS[name]["token_shape"])
    back = BrainDecoder.from_pretrained(model.save_pretrained(tmp_path / name))
    for (k, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k
    assert back.config == model.config
    for key, arr in back.predict(trials, output="all", batch_size=3).items():
        np.testing.assert_array_equal(arr, pred[key])


def test_old_saved_folder_without_new_keys_loads(tmp_path):
    """A folder in the original layout (config without adapter/heads keys, flat weight names) still loads."""
    from safetensors.torch import save_file

    model = BrainDecoder({1: 12, "sub-02": 9}, embed_dim=5, hidden_dim=16, n_blocks=2, seed=0)
    folder = model.save_pretrained(tmp_path / "old")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["config"] = {k: cfg["config"][k] for k in ("n_inputs", "embed_dim", "hidden_dim", "n_blocks",
                                                   "dropout", "backbone", "seed")}
    (folder / "config.json").write_text(json.dumps(cfg))
    old_names = {"adapter.linears.": "adapters.", "backbone.blocks.": "blocks.",
                 "heads.pooled.norm.": "head_norm.", "heads.pooled.proj.": "head."}
    state = {}
    for k, v in model.state_dict().items():
        for new, old in old_names.items():
            if k.startswith(new):
                k = old + k[len(new):]
        state[k] = v.contiguous()
    assert "head.weight" in state and "blocks.0.fc1.weight" in state and "adapters.1.weight" in state
    save_file(state, str(folder / "model.safetensors"))
    back = BrainDecoder.from_pretrained(folder)
    assert back.config["adapter"] == "linear" and back.config["heads"] == ["pooled"]
    assert torch.equal(back.head.weight, model.head.weight)
    assert torch.equal(back.adapters["sub-02"].weight, model.adapters["sub-02"].weight)
    x = torch.randn(3, 12)
    torch.testing.assert_close(back(x, 1).embedding, model.eval()(x, 1).embedding)


def test_composable_constructor_errors():
    with pytest.raises(ValueError, match="cannot feed"):
        BrainDecoder({1: 12}, embed_dim=3, adapter="subject_layer")
    with pytest.raises(ValueError, match="n_times"):
        BrainDecoder({1: 12}, embed_dim=3, backbone="dilated_conv")
    with pytest.raises(ValueError, match="not divisible"):
        BrainDecoder({1: 13}, embed_dim=3, backbone="dilated_conv", n_times=4)
    with pytest.raises(ValueError, match="token_shape"):
        BrainDecoder({1: 12}, embed_dim=3, heads=("pooled", "tokens"))
    with pytest.raises(ValueError, match="'pooled'"):
        BrainDecoder({1: 12}, embed_dim=3, heads=("tokens",), token_shape=(2, 2))
    with pytest.raises(ValueError, match="positions"):
        BrainDecoder({1: 12}, embed_dim=3, backbone="atm", adapter="spatial_attention", n_times=4)
    with pytest.raises(ValueError, match="channel counts"):
        BrainDecoder({1: 12}, embed_dim=3, backbone="dilated_conv", adapter="spatial_attention", n_times=4,
                     adapter_kwargs={"positions": {1: np.zeros((4, 2))}})
    model = BrainDecoder({1: 12}, embed_dim=3, hidden_dim=4)
    with pytest.raises(ValueError, match="needs a 'tokens' head"):
        model.predict(_trials({1: np.zeros((2, 12))}), output="tokens")


def test_trainer_fits_an_meg_model():
    """M/EEG trials (n, channels, time) train with the unchanged Trainer (it flattens, forward reshapes)."""
    from neurodecode.embeddings import StimulusEmbeddings
    from neurodecode.training import Trainer

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((12, 4)).astype(np.float32)
    ids = np.arange(48) % 12
    X = (np.einsum("nd,dct->nct", emb[ids], rng.standard_normal((4, 3, 8)))
         + 0.1 * rng.standard_normal((48, 3, 8))).astype(np.float32)
    ev = pd.DataFrame(dict(subject=1, session=1, stimulus_id=ids, repetition=np.arange(48) // 12,
                           split="train"))
    trials = BrainTrials(X, ev, {"modality": "meg"})
    model = BrainDecoder({1: 24}, embed_dim=4, hidden_dim=8, n_blocks=1, backbone="dilated_conv", n_times=8,
                         backbone_kwargs={"hidden": 8}, seed=0)
    trainer = Trainer(model, lr=3e-3, batch_size=16, max_epochs=3, seed=0, val_fraction=0.0)
    trainer.fit(trials, StimulusEmbeddings(np.arange(12), emb))
    assert len(trainer.history_) == 3 and np.isfinite(trainer.history_[-1]["train_loss"])
    assert model.predict(trials).shape == (48, 4)


@pytest.mark.slow
def test_mindeye2_size_smoke():
    """MindEye2 sizes: 15724 voxels → 4096 → 4 mixer blocks → 256 × 1664 tokens + pooled 1664."""
    model = BrainDecoder({1: 15724}, embed_dim=1664, hidden_dim=4096, n_blocks=4, dropout=0.15,
                         backbone="mixer", heads=("pooled", "tokens"), token_shape=(256, 1664), seed=0)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 15724), 1)
    assert out.embedding.shape == (2, 1664) and out.tokens.shape == (2, 256, 1664)
