"""Tests of caption-bank retrieval and the ClipCap-style prefix captioner (tiny random GPT-2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurodecode.tasks.captioning import CaptionBank, PrefixCaptioner

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CAPTIONS = ["a man riding a wave on a surfboard", "two dogs play in the green grass",
            "a red bus parked on the street", "a cat sleeping on a couch"]


# --------------------------------------------------------------------------- caption bank
def _bank():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 16))
    captions = {10: ["a dog", "a brown dog"], 11: ["a cat"], 12: ["a red bus", "a bus", "a red bus"]}
    emb, ids = [], []
    for sid, caps in captions.items():
        for _ in caps:
            emb.append(centers[sid - 10] + 0.1 * rng.standard_normal(16))
            ids.append(sid)
    return CaptionBank(captions, np.array(emb)), centers


def test_caption_bank_retrieves_nearest_captions():
    bank, centers = _bank()
    assert len(bank) == 6 and bank.ids == [10, 10, 11, 12, 12, 12]
    out = bank.retrieve(centers * 5.0, k=2)  # cosine: scale does not matter
    assert set(out[0]) == {"a dog", "a brown dog"}
    assert out[1][0] == "a cat"
    assert set(out[2]) == {"a red bus", "a bus"}  # unique: the duplicate "a red bus" is skipped
    _, scores = bank.search(centers, k=6, unique=False)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # most similar first
    assert "6 captions" in repr(bank)


def test_caption_bank_excludes_the_query_stimulus():
    bank, centers = _bank()
    out = bank.retrieve(centers, k=1, exclude_ids=[10, 11, 12])
    assert out[0][0] not in ("a dog", "a brown dog")
    assert out[1][0] != "a cat"
    assert "bus" not in out[2][0]
    # several ids per query, and fewer captions left than k
    idx, scores = bank.search(centers[:1], k=4, exclude_ids=[[10, 12]])
    assert list(idx[0]) == [2, -1, -1, -1] and np.isnan(scores[0, 1])
    smaller = bank.without([10, 12])
    assert smaller.captions == ["a cat"] and smaller.ids == [11]
    with pytest.raises(ValueError, match="one entry per query"):
        bank.retrieve(centers, exclude_ids=[10])
    with pytest.raises(ValueError, match="dim"):
        bank.retrieve(np.ones((1, 4)))
    no_ids = CaptionBank(["x", "y"], np.eye(2))
    with pytest.raises(ValueError, match="built with ids"):
        no_ids.retrieve(np.eye(2), exclude_ids=[0, 1])


def test_caption_bank_from_encoder():
    class FakeEncoder:
        model_name = "fake"

        def embed_texts(self, texts, outputs=("pooled",)):
            return {"pooled": np.array([[t.count("dog"), t.count("cat"), 0.1] for t in texts], np.float32)}

    bank = CaptionBank.from_encoder(["a dog", "a cat", "dog and dog"], FakeEncoder(), ids=["s1", "s2", "s3"])
    assert bank.retrieve(np.array([[0.0, 1.0, 0.0]]))[0] == ["a cat"]
    assert bank.retrieve(np.array([[0.0, 1.0, 0.0]]), exclude_ids=["s2"])[0] != ["a cat"]


# --------------------------------------------------------------------------- prefix captioner
def _tokenizer():
    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2}
    for c in CAPTIONS:
        for w in c.split():
            vocab.setdefault(w, len(vocab))
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                                eos_token="[EOS]")


def _config(tok):
    return transformers.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                   bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)


def _embeddings():
    return np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    tok = _tokenizer()
    model = PrefixCaptioner(_config(tok), embed_dim=16, prefix_length=4)
    model.fit(_embeddings(), CAPTIONS, tok, epochs=25, batch_size=4, lr=1e-2, schedule="constant",
              freeze_lm=False, seed=0, verbose=False)
    return model


def test_prefix_captioner_overfits_four_captions(trained):
    loss = trained.history_["epoch_loss"]
    assert len(loss) == 25 and loss[-1] < 0.5 * loss[0]
    assert trained.generate(_embeddings(), max_length=12, verbose=False) == CAPTIONS
    assert trained.generate(_embeddings(), max_length=12, num_beams=2, verbose=False) == CAPTIONS
    assert not trained.training


def test_prefix_captioner_save_and_load(trained, tmp_path):
    trained.save_pretrained(tmp_path / "cap", verbose=False)
    cfg = json.loads((tmp_path / "cap" / "config.json").read_text())
    assert cfg["class"] == "PrefixCaptioner" and cfg["language_model"]["saved"]  # fine-tuned: saved along
    assert (tmp_path / "cap" / "model.safetensors").is_file()
    loaded = PrefixCaptioner.from_pretrained(tmp_path / "cap", verbose=False)
    assert loaded.generate(_embeddings(), max_length=12, verbose=False) == CAPTIONS
    assert loaded.history_["epoch_loss"] == trained.history_["epoch_loss"]
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_frozen_lm_is_referenced_by_path_and_loss_decreases(tmp_path):
    tok = _tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(0)
        transformers.GPT2LMHeadModel(_config(tok)).save_pretrained(str(tmp_path / "gpt2"))
    tok.save_pretrained(str(tmp_path / "gpt2"))
    model = PrefixCaptioner(tmp_path / "gpt2", embed_dim=16, prefix_length=4, tokenizer=tmp_path / "gpt2")
    lm_before = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    model.fit(_embeddings(), [[c, c] for c in CAPTIONS], epochs=4, batch_size=4, lr=1e-2, seed=0,
              verbose=False)
    loss = model.history_["epoch_loss"]
    assert loss[-1] < loss[0]
    for k, v in model.language_model.state_dict().items():
        torch.testing.assert_close(v, lm_before[k], msg=k)  # frozen
    model.save_pretrained(tmp_path / "cap", verbose=False)
    cfg = json.loads((tmp_path / "cap" / "config.json").read_text())
    assert not cfg["language_model"]["saved"] and cfg["language_model"]["path"] == str(tmp_path / "gpt2")
    assert not (tmp_path / "cap" / "language_model").exists()
    loaded = PrefixCaptioner.from_pretrained(tmp_path / "cap", verbose=False)
    x = torch.as_tensor(_embeddings())
    torch.testing.assert_close(loaded.prefix(x), model.prefix(x))


def test_fit_is_deterministic_and_transformer_mapping_runs():
    tok = _tokenizer()
    runs = []
    for seed in (3, 3, 4):
        model = PrefixCaptioner(_config(tok), embed_dim=16, prefix_length=3, mapping="transformer",
                                clip_length=2, n_mapping_layers=1, n_heads=4)
        model.fit(_embeddings(), CAPTIONS, tok, epochs=1, batch_size=2, lr=1e-3, noise_std=0.1, seed=seed,
                  freeze_lm=False, verbose=False)
        runs.append((model.history_["step_loss"], model.prefix(torch.as_tensor(_embeddings())).detach()))
    assert runs[0][0] == runs[1][0]
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)
    assert runs[0][0] != runs[2][0]
    assert runs[0][1].shape == (4, 3, 32)
    out = model.generate(_embeddings()[:2], max_length=5, verbose=False)
    assert len(out) == 2 and all(isinstance(c, str) for c in out)


def test_prefix_captioner_errors(tmp_path):
    tok = _tokenizer()
    with pytest.raises(ValueError, match="Invalid value"):
        PrefixCaptioner(_config(tok), embed_dim=16, mapping="lstm")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        PrefixCaptioner(tmp_path / "missing", embed_dim=16)
    model = PrefixCaptioner(_config(tok), embed_dim=16, prefix_length=2)
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate(_embeddings())
    with pytest.raises(ValueError, match="one entry per embedding"):
        model.fit(_embeddings(), CAPTIONS[:2], tok)
    with pytest.raises(ValueError, match="dim"):
        model.fit(np.ones((4, 8)), CAPTIONS, tok)
    assert "PrefixCaptioner" in repr(model)
