"""StimulusEmbeddings: lookup, subset, errors, save/load round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.embeddings import StimulusEmbeddings


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    return StimulusEmbeddings([10, 11, 12, "x"], rng.standard_normal((4, 5)), name="toy")


def test_basics(table):
    assert len(table) == 4 and table.dim == 5 and table.values.dtype == np.float32
    assert 11 in table and np.int64(12) in table and "y" not in table
    assert "toy" in repr(table) and "4 stimuli" in repr(table)


def test_lookup_order_repeats_and_series(table):
    out = table.lookup(pd.Series([12, 10, 12, "x"]))
    np.testing.assert_array_equal(out, table.values[[2, 0, 2, 3]])
    out[:] = 0  # a copy: the table is untouched
    assert np.abs(table.values).sum() > 0
    np.testing.assert_array_equal(table.lookup(np.array([11])), table.values[[1]])


def test_lookup_missing_lists_ids(table):
    with pytest.raises(KeyError, match=r"2 stimulus id\(s\).*99.*98"):
        table.lookup([10, 99, 98, 99])
    with pytest.raises(KeyError, match="different type"):
        table.lookup(["10"])


def test_subset(table):
    sub = table.subset([12, 10, 12])
    assert sub.ids == [12, 10] and sub.name == "toy"
    np.testing.assert_array_equal(sub.values, table.values[[2, 0]])


def test_normalize_and_validation():
    t = StimulusEmbeddings(["a", "b"], [[3.0, 4.0], [0.0, 2.0]], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(t.values, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="unique"):
        StimulusEmbeddings(["a", "a"], np.ones((2, 2)))
    with pytest.raises(ValueError, match="aligned"):
        StimulusEmbeddings(["a"], np.ones((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        StimulusEmbeddings(["a"], np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        StimulusEmbeddings(["a"], [[np.nan, 1.0]])
    with pytest.raises(ValueError, match="zero-norm"):
        StimulusEmbeddings(["a"], [[0.0, 0.0]], normalize=True)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_load_round_trip(table, tmp_path, suffix):
    path = table.save(tmp_path / f"emb{suffix}")
    assert path.exists() and not list(tmp_path.glob(".*.tmp"))
    back = StimulusEmbeddings.load(path)
    assert back.ids == table.ids and back.name == "toy"
    assert isinstance(back.ids[0], int) and isinstance(back.ids[3], str)
    np.testing.assert_array_equal(back.values, table.values)


def test_save_load_errors(table, tmp_path):
    with pytest.raises(ValueError, match=".npz"):
        table.save(tmp_path / "emb.pkl")
    with pytest.raises(FileNotFoundError, match="save"):
        StimulusEmbeddings.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.ones(2))
    with pytest.raises(ValueError, match="not a StimulusEmbeddings"):
        StimulusEmbeddings.load(tmp_path / "other.npz")


def test_memmap_values_are_not_copied(tmp_path):
    import numpy as np

    from neurodecode.embeddings import StimulusEmbeddings

    path = tmp_path / "v.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(5, 6))
    arr[:] = np.arange(30, dtype=np.float32).reshape(5, 6)
    arr.flush()
    mm = np.load(path, mmap_mode="r")
    emb = StimulusEmbeddings(list("abcde"), mm, token_shape=(3, 2))
    assert isinstance(emb.values, np.memmap)
    view = np.asarray(mm).reshape(5, 6)  # what the cache hands over: a read-only view of the mapping
    assert np.shares_memory(StimulusEmbeddings(list("abcde"), view).values, mm)
    np.testing.assert_array_equal(emb.lookup(["e", "a"]), mm[[4, 0]])
    assert emb.lookup(["b"], as_tokens=True).shape == (1, 3, 2)
    regular = np.ones((2, 3), np.float64)
    e2 = StimulusEmbeddings([1, 2], regular)
    regular[0, 0] = 5
    assert e2.values[0, 0] == 1  # in-memory inputs are still copied
