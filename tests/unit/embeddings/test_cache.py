"""EmbeddingCache: compute once, partial reuse, memmaps, interruption safety, invalidation."""

from __future__ import annotations

import os

import numpy as np
import pytest

from neurodecode.embeddings.cache import EmbeddingCache, hash_config, hash_weights


def _fn(calls):
    def compute(ids):
        calls.append(list(ids))
        return np.stack([np.full(3, float(i), np.float32) for i in ids])
    return compute


def test_compute_once_and_memmap(tmp_path):
    cache, calls = EmbeddingCache(tmp_path), []
    out = cache.get_or_compute("enc", "ab12", [1, 2, 3], _fn(calls))
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3])
    again = cache.get_or_compute("enc", "ab12", [1, 2, 3], _fn(calls))
    assert calls == [[1, 2, 3]]  # second call computed nothing
    assert isinstance(again, np.memmap) and not again.flags.writeable
    np.testing.assert_array_equal(again, out)
    sub = cache.get_or_compute("enc", "ab12", [3, 1], _fn(calls))  # reordered: gathered
    np.testing.assert_array_equal(sub[:, 0], [3, 1])
    assert calls == [[1, 2, 3]] and cache.cached_ids("enc", "ab12") == [1, 2, 3]


def test_partial_reuse_and_string_ids(tmp_path):
    cache, calls = EmbeddingCache(tmp_path), []
    cache.get_or_compute("enc", "ab12", [1, 2], _fn(calls))
    out = cache.get_or_compute("enc", "ab12", [2, 5, 1, 7], _fn(calls))
    assert calls == [[1, 2], [5, 7]]
    np.testing.assert_array_equal(out[:, 0], [2, 5, 1, 7])
    folder = cache.key_dir("enc", "ab12")
    assert len(list(folder.glob("values-*.npy"))) == 1  # shards consolidated into one memmap
    calls2 = []
    out = cache.get_or_compute("enc", "ab12", ["1"], lambda ids: calls2.append(ids) or np.ones((1, 3)))
    assert calls2 == [["1"]]  # "1" and 1 are different ids
    assert isinstance(cache.get_or_compute("enc", "ab12", [1, 2, 5, 7], _fn(calls)), np.memmap)


def test_keys_kinds_and_datasets_are_separate(tmp_path):
    cache, calls = EmbeddingCache(tmp_path), []
    cache.get_or_compute("enc", "ab12", [1], _fn(calls))
    cache.get_or_compute("enc", "ab12", [1], _fn(calls), kind="tokens")
    cache.get_or_compute("enc", "ab12", [1], _fn(calls), dataset="/data/other")
    cache.get_or_compute("enc2", "ab12", [1], _fn(calls))
    assert len(calls) == 4


def test_interrupted_compute_leaves_cache_intact(tmp_path):
    cache, calls = EmbeddingCache(tmp_path), []
    cache.get_or_compute("enc", "ab12", [1, 2], _fn(calls))
    folder = cache.key_dir("enc", "ab12")
    before = sorted(os.listdir(folder))

    def boom(ids):
        if 9 in ids:
            raise KeyboardInterrupt("simulated interruption")
        return _fn(calls)(ids)

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute("enc", "ab12", [1, 2, 3, 9], boom, chunk_size=1)
    # old rows intact and readable; the chunk finished before the interruption was kept
    assert cache.cached_ids("enc", "ab12") == [1, 2, 3]
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    n_calls = len(calls)
    out = cache.get_or_compute("enc", "ab12", [1, 2, 3], _fn(calls))
    assert len(calls) == n_calls
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3])
    with pytest.raises(RuntimeError):  # error in the one and only chunk: nothing written
        cache.get_or_compute("enc", "ab12", [4], lambda ids: (_ for _ in ()).throw(RuntimeError("x")))
    assert cache.cached_ids("enc", "ab12") == [1, 2, 3]
    assert before  # the folder existed before the failure


def test_bad_compute_output_and_args(tmp_path):
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match="one row per id"):
        cache.get_or_compute("enc", "ab12", [1, 2], lambda ids: np.zeros((1, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        cache.get_or_compute("enc", "ab12", [1], lambda ids: np.full((1, 3), np.nan))
    cache.get_or_compute("enc", "ab12", [1], lambda ids: np.zeros((1, 3)))
    with pytest.raises(ValueError, match="rows of shape"):
        cache.get_or_compute("enc", "ab12", [2], lambda ids: np.zeros((1, 4)))
    with pytest.raises(ValueError, match="unique"):
        cache.get_or_compute("enc", "ab12", [1, 1], lambda ids: np.zeros((1, 3)))
    with pytest.raises(ValueError, match="weights_hash"):
        cache.get_or_compute("enc", "", [1], lambda ids: np.zeros((1, 3)))


def test_hash_change_invalidates_and_clear(tmp_path):
    w = tmp_path / "w.bin"
    w.write_bytes(b"weights v1")
    cache, calls = EmbeddingCache(tmp_path / "cache"), []
    h1 = cache.weights_hash(w)
    assert h1 == hash_weights(w, memo_dir=tmp_path / "cache") and len(h1) == 64
    assert (tmp_path / "cache" / "weights_hashes.json").is_file()
    cache.get_or_compute("enc", h1, [1], _fn(calls))
    w.write_bytes(b"weights v2!")
    h2 = cache.weights_hash(w)
    assert h2 != h1
    cache.get_or_compute("enc", h2, [1], _fn(calls))
    assert len(calls) == 2
    cache.clear("enc", h1)
    assert cache.cached_ids("enc", h1) == [] and cache.cached_ids("enc", h2) == [1]
    cache.clear()
    assert cache.cached_ids("enc", h2) == []
    assert hash_config({"a": 1, "b": 2}) == hash_config({"b": 2, "a": 1}) != hash_config({"a": 2})


def test_hash_folder_and_default_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    assert EmbeddingCache().cache_dir == tmp_path / "data" / "embeddings"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"x")
    h = hash_weights(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"y")
    assert hash_weights(tmp_path / "m") != h
    with pytest.raises(FileNotFoundError):
        hash_weights(tmp_path / "nope")


def test_table_token_shape_round_trip(tmp_path):
    """StimulusEmbeddings.token_shape: flattened rows, lookup(as_tokens=True), kept by subset/save/load."""
    from neurodecode.embeddings import StimulusEmbeddings

    vals = np.arange(2 * 6, dtype=np.float32).reshape(2, 6)
    emb = StimulusEmbeddings(["a", "b"], vals, name="tok", token_shape=(3, 2))
    assert "tokens 3 × 2" in repr(emb)
    np.testing.assert_array_equal(emb.lookup(["b"], as_tokens=True)[0], vals[1].reshape(3, 2))
    assert emb.subset(["b"]).token_shape == (3, 2)
    for suffix in (".npz", ".safetensors"):
        back = StimulusEmbeddings.load(emb.save(tmp_path / f"e{suffix}"))
        assert back.token_shape == (3, 2)
        np.testing.assert_array_equal(back.values, vals)
    plain = StimulusEmbeddings(["a"], [[1.0, 2.0]])
    assert plain.token_shape is None and StimulusEmbeddings.load(plain.save(tmp_path / "p.npz")).token_shape is None
    with pytest.raises(ValueError, match="as_tokens=False"):
        plain.lookup(["a"], as_tokens=True)
    with pytest.raises(ValueError, match="token_shape"):
        StimulusEmbeddings(["a", "b"], vals, token_shape=(4, 2))
