"""from_mne and the neurodecode.io.mne readers on tiny synthetic epochs."""

import numpy as np
import pandas as pd
import pytest

mne = pytest.importorskip("mne")

from neurodecode.datasets import BrainTrials, from_mne  # noqa: E402
from neurodecode.io.mne import read_epochs, read_raw  # noqa: E402

CH = [f"MEG{i:03d}" for i in range(5)]


def _epochs(n=12, kind="mag", metadata=True, positions=True):
    rng = np.random.default_rng(0)
    info = mne.create_info(CH, 100.0, kind)
    if positions:
        for i, ch in enumerate(info["chs"]):
            ch["loc"][:3] = [0.01 * (i + 1), 0.02, 0.03]
    codes = np.array([1, 2, 3] * (n // 3))
    events = np.column_stack([np.arange(n) * 100, np.zeros(n, int), codes])
    ep = mne.EpochsArray(rng.standard_normal((n, 5, 30)), info, events, tmin=-0.1,
                         event_id={"cat": 1, "dog": 2, "car": 3}, verbose="error")
    if metadata:
        ep.metadata = pd.DataFrame({"image": [f"img{c}" for c in codes],
                                    "block": np.repeat(np.arange(n // 3), 3),
                                    "which": ["train", "test"] * (n // 2)})
    return ep


def test_from_mne_basic():
    ep = _epochs()
    tr = from_mne(ep, stimulus_id="image", subject=3)
    assert isinstance(tr, BrainTrials)
    assert tr.shape == (12, 5, 30) and tr.data.dtype == np.float32
    np.testing.assert_allclose(tr.data, ep.get_data().astype(np.float32))
    assert tr.modality == "meg" and tr.info["sfreq"] == 100.0
    assert tr.info["ch_names"] == CH
    assert tr.info["ch_pos"].shape == (5, 3) and np.isfinite(tr.info["ch_pos"]).all()
    assert tr.info["tmin"] == pytest.approx(-0.1) and len(tr.info["times"]) == 30
    ev = tr.events
    assert ev["stimulus_id"].tolist()[:3] == ["img1", "img2", "img3"]
    assert (ev["subject"] == 3).all() and (ev["session"] == 1).all() and (ev["split"] == "train").all()
    assert ev["repetition"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert {"block", "event_code", "event_name", "sample"} <= set(ev.columns)


def test_from_mne_event_names_split_session_picks():
    ep = _epochs(metadata=False, positions=False)
    tr = from_mne(ep, session=2, split=lambda e: e["event_name"] == "car", picks=CH[:2])
    assert tr.events["stimulus_id"].tolist()[:3] == ["cat", "dog", "car"]
    assert (tr.events["split"] == np.array(["train", "train", "test"] * 4)).all()
    assert (tr.events["session"] == 2).all()
    assert tr.shape == (12, 2, 30)
    assert np.isnan(tr.info["ch_pos"]).all()


def test_from_mne_codes_eeg_and_split_column(tmp_path):
    info = mne.create_info(["Fz", "Cz", "Pz"], 50.0, "eeg")
    events = np.column_stack([np.arange(6) * 10, np.zeros(6, int), [5, 7, 5, 7, 5, 7]])
    ep = mne.EpochsArray(np.zeros((6, 3, 10)), info, events, verbose="error")
    tr = from_mne(ep)
    assert tr.modality == "eeg"
    assert tr.events["stimulus_id"].tolist() == [5, 7, 5, 7, 5, 7]
    assert tr.events["repetition"].tolist() == [0, 0, 1, 1, 2, 2]
    ep2 = _epochs()
    tr2 = from_mne(ep2, stimulus_id="image", split="which", repetition="block")
    assert tr2.events["split"].tolist()[:2] == ["train", "test"]
    assert tr2.events["repetition"].tolist()[:4] == [0, 0, 0, 1]


def test_from_mne_path(tmp_path):
    p = tmp_path / "x-epo.fif"
    _epochs().save(p, verbose="error")
    tr = from_mne(p, stimulus_id="image")
    assert tr.shape == (12, 5, 30) and tr.info["source"] == str(p)
    assert tr.events["block"].tolist()[:4] == [0, 0, 0, 1]


def test_from_mne_bad_input(tmp_path):
    missing = tmp_path / "nope-epo.fif"
    with pytest.raises(FileNotFoundError, match="nope-epo.fif"):
        from_mne(missing)
    wrong = tmp_path / "data.txt"
    wrong.write_text("x")
    with pytest.raises(ValueError, match="data.txt.*-epo.fif"):
        from_mne(wrong)
    corrupt = tmp_path / "bad-epo.fif"
    corrupt.write_bytes(b"not a fif file at all")
    with pytest.raises(OSError, match="bad-epo.fif"):
        read_epochs(corrupt)
    p = tmp_path / "ok-epo.fif"
    _epochs().save(p, verbose="error")
    with pytest.raises(KeyError, match="ok-epo.fif.*'image'"):
        from_mne(p, stimulus_id="nosuch")
    with pytest.raises(ValueError, match="not in"):
        from_mne(_epochs(), split="image")
    with pytest.raises(TypeError, match="mne.Epochs"):
        from_mne(np.zeros((3, 2, 2)))


def test_read_raw(tmp_path):
    raw = mne.io.RawArray(np.zeros((2, 50)), mne.create_info(["a", "b"], 50.0, "eeg"), verbose="error")
    p = tmp_path / "r_raw.fif"
    raw.save(p, verbose="error")
    assert read_raw(p).ch_names == ["a", "b"]
    with pytest.raises(ValueError, match="unknown recording format"):
        read_raw(_touch(tmp_path / "r.xyz"))
    with pytest.raises(FileNotFoundError, match="missing.edf"):
        read_raw(tmp_path / "missing.edf")


def _touch(p):
    p.write_text("")
    return p
