from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from neurodecode.datasets import (BrainTrials, DataLeakageError, RaggedData, StimulusSet,
                                  check_no_leakage, concatenate_trials)


def _events(n, subject, n_stim=5, test_ids=(0,)):
    ids = np.arange(n) % n_stim
    return pd.DataFrame(dict(subject=subject, session=1 + np.arange(n) // 10, stimulus_id=ids,
                             repetition=np.arange(n) // n_stim,
                             split=np.where(np.isin(ids, test_ids), "test", "train")))


def _trials(n=15, n_feat=4, subject=1, seed=0, **kw):
    rng = np.random.default_rng(seed)
    info = {"modality": "fmri", "subject": subject, "voxel_indices": np.arange(n_feat * 3).reshape(n_feat, 3)}
    return BrainTrials(rng.standard_normal((n, n_feat)).astype(np.float32), _events(n, subject, **kw), info)


def test_validation_errors():
    ev = _events(4, 1)
    with pytest.raises(ValueError, match="4 rows"):
        BrainTrials(np.zeros((3, 2)), ev)
    with pytest.raises(ValueError, match="missing required column"):
        BrainTrials(np.zeros((4, 2)), ev.drop(columns="split"))
    bad = ev.copy()
    bad.loc[0, "split"] = "holdout"
    with pytest.raises(ValueError, match="unknown values"):
        BrainTrials(np.zeros((4, 2)), bad)
    with pytest.raises(TypeError, match="DataFrame"):
        BrainTrials(np.zeros((4, 2)), ev.to_dict())


def test_indexing_and_select():
    t = _trials()
    assert len(t[2:5]) == 3 and t[2:5].events["stimulus_id"].tolist() == [2, 3, 4]
    assert len(t[t.events["split"] == "test"]) == 3
    np.testing.assert_array_equal(t[[4, 1]].get_data(), t.get_data()[[4, 1]])
    assert len(t[-1]) == 1
    with pytest.raises(IndexError):
        t[99]
    sel = t.select(split="train", stimulus_id=[1, 2])
    assert set(sel.events["stimulus_id"]) == {1, 2} and (sel.events["split"] == "train").all()
    assert len(t.select(session=lambda s: s == 1)) == 10
    with pytest.raises(KeyError, match="events columns"):
        t.select(nope=1)


def test_repr_shows_shape_subjects_splits():
    r = repr(_trials())
    assert "fmri" in r and "15 trials × 4 voxels" in r and "subjects: 1" in r and "train 12, test 3" in r


def test_concatenate_ragged_and_by_subject():
    a, b = _trials(15, 4, subject=1), _trials(10, 6, subject=2, seed=1)
    both = concatenate_trials([a, b])
    assert both.is_ragged and isinstance(both.data, RaggedData)
    assert both.subjects == [1, 2] and len(both) == 25
    assert "4 | 6" in repr(both)
    with pytest.raises(ValueError, match="by_subject"):
        both.get_data()
    parts = both.by_subject()
    np.testing.assert_array_equal(parts[1].get_data(), a.get_data())
    np.testing.assert_array_equal(parts[2].get_data(), b.get_data())
    assert parts[2].info["subject"] == 2
    only2 = both.select(subject=2)
    assert not only2.is_ragged and only2.info["subject"] == 2
    mixed = both[[20, 0, 21]]
    assert mixed.is_ragged and mixed.events["subject"].tolist() == [2, 1, 2]


def test_concatenate_same_feature_space_stacks():
    a, b = _trials(15, 4, subject=1), _trials(15, 4, subject=2, seed=3)
    both = BrainTrials.concatenate([a, b])
    assert not both.is_ragged and both.shape == (30, 4)
    np.testing.assert_array_equal(both.get_data()[15:], b.get_data())


def test_concatenate_rejects_mixed_modalities():
    a = _trials()
    b = BrainTrials(np.zeros((15, 2, 3)), _events(15, 2), {"modality": "meg"})
    with pytest.raises(ValueError, match="modalities"):
        BrainTrials.concatenate([a, b])


def test_average_repetitions():
    t = _trials(15, 4)
    avg = t.average_repetitions()
    assert len(avg) == 5 and avg.events["n_repetitions"].tolist() == [3] * 5
    np.testing.assert_allclose(avg.get_data()[2], t.get_data()[[2, 7, 12]].mean(0), rtol=1e-6)
    assert (avg.events["repetition"] == -1).all()
    both = BrainTrials.concatenate([t, _trials(10, 6, subject=2)]).average_repetitions()
    assert both.is_ragged and len(both) == 10


def test_lazy_data_rows_sorted_for_hdf5_like_sources():
    class Lazy:
        def __init__(self, arr):
            self.arr, self.shape, self.calls = arr, arr.shape, []

        def __len__(self):
            return len(self.arr)

        def __getitem__(self, idx):
            idx = np.asarray(idx)
            assert np.all(np.diff(idx) > 0), "rows must be sorted and unique"
            self.calls.append(idx)
            return self.arr[idx]

    base = np.arange(40.0).reshape(10, 4)
    t = BrainTrials(Lazy(base), _events(10, 1), {"modality": "fmri"})
    assert "lazy" in repr(t)
    np.testing.assert_array_equal(t[[5, 1, 5]].get_data(), base[[5, 1, 5]])


def test_pickle_roundtrip():
    t = _trials()
    t2 = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(t2.get_data(), t.get_data())


def test_leak_guard():
    t = _trials()
    with pytest.raises(DataLeakageError, match="split='test'"):
        check_no_leakage(t, where="ridge fit")
    train, test = t.select(split="train"), t.select(split="test")
    check_no_leakage(train, test)
    sneaky = t.select(stimulus_id=[0, 1]).copy()
    sneaky.events["split"] = "train"
    with pytest.raises(DataLeakageError, match="in both"):
        check_no_leakage(sneaky, test)


def test_stimulus_set_lazy_and_lookups():
    imgs = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    s = StimulusSet([10, 11, 12, 13, 14], images=imgs, captions={10: ["a dog"], 12: ["x", "y"]})
    np.testing.assert_array_equal(s.get_images([13, 10, 13]), imgs[[3, 0, 3]])
    assert s.get_captions(12) == ["x", "y"] and s.get_captions(11) == []
    with pytest.raises(KeyError, match="Unknown stimulus"):
        s.get_images([99])
    sub = s.subset([14, 11])
    np.testing.assert_array_equal(sub.get_images([11]), imgs[[1]])
    assert "5 stimuli" in repr(s) and set(s.kinds) == {"image", "caption"}
    with pytest.raises(ValueError, match="unique"):
        StimulusSet([1, 1])
    with pytest.raises(ValueError, match="aligned"):
        StimulusSet([1, 2], images=imgs)
    merged = StimulusSet.merge([s.subset([10]), s.subset([12])])
    assert list(merged.ids) == [10, 12]


def test_leak_guard_catches_a_single_trial():
    """One leaked trial (by split, or by one shared stimulus id) is enough to refuse."""
    t = _trials()
    train, test = t.select(split="train"), t.select(split="test")
    one_row = t.events.index[t.events["split"].to_numpy() == "test"][:1]
    events = t.events.copy()
    events["split"] = "train"
    events.loc[one_row, "split"] = "test"
    with pytest.raises(DataLeakageError, match=r"^1 trial\(s\) with split='test'"):
        check_no_leakage(BrainTrials(t.data, events, t.info), where="ridge fit")
    leaked_id = test.events["stimulus_id"].iloc[0]
    sneaky = t.select(stimulus_id=[leaked_id]).copy()
    sneaky.events["split"] = "train"
    mixed = BrainTrials.concatenate([train, sneaky]) if len(train) else sneaky
    with pytest.raises(DataLeakageError, match=r"^1 stimulus id\(s\)"):
        check_no_leakage(mixed, test)
