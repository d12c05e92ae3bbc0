"""The pieces of load_masc, from_mne and load_things_eeg2, each on its own (hand-computed expectations)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from neurodecode.datasets import masc as M
from neurodecode.datasets import mne as F
from neurodecode.datasets import things_eeg as E


@pytest.fixture
def nd_log(caplog):
    """Capture the (non-propagating) neurodecode logger, INFO and above."""
    lg = logging.getLogger("neurodecode")
    level = lg.level
    lg.addHandler(caplog.handler)
    lg.setLevel(logging.INFO)
    caplog.handler.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        lg.removeHandler(caplog.handler)
        lg.setLevel(level)


def _win(**kw) -> M._Windows:
    base = dict(window_s=2.0, tmin=0.0, meg_offset_s=0.0, word_stride=1, test_ratio=0.2, val_ratio=0.0,
                split_seed=0, min_block_s=6.0)
    return M._Windows(**{**base, **kw})


# ================================================================ load_masc pieces
GOOD = dict(window_s=3.0, tmin=0.0, meg_offset_s=0.0, sfreq=120.0, audio_sfreq=16000, word_stride=1,
            test_ratio=0.2, val_ratio=0.0, min_block_s=6.0, nonfinite="error")


def test_check_masc_args_accepts_the_defaults_and_edges():
    M._check_masc_args(**GOOD)
    M._check_masc_args(**{**GOOD, "sfreq": None, "test_ratio": 0.5, "val_ratio": 0.5, "min_block_s": 0,
                          "word_stride": np.int64(3), "tmin": -1.0, "nonfinite": "drop"})


@pytest.mark.parametrize("change, message", [
    ({"window_s": 0}, "window_s must be a positive number of seconds, got 0"),
    ({"window_s": float("nan")}, "window_s must be a positive"),
    ({"tmin": float("inf")}, "tmin must be a finite number of seconds, got inf"),
    ({"meg_offset_s": float("nan")}, "meg_offset_s must be a finite"),
    ({"sfreq": 0.0}, r"sfreq must be a positive rate in Hz or None, got 0.0"),
    ({"audio_sfreq": -1}, "audio_sfreq must be a positive rate in Hz, got -1"),
    ({"word_stride": True}, "word_stride must be a positive int, got True"),
    ({"word_stride": 2.0}, "word_stride must be a positive int, got 2.0"),
    ({"word_stride": 0}, "word_stride must be a positive int, got 0"),
    ({"test_ratio": 1.5}, r"test_ratio must lie in \[0, 1\], got 1.5"),
    ({"val_ratio": -0.1}, r"val_ratio must lie in \[0, 1\], got -0.1"),
    ({"test_ratio": 0.7, "val_ratio": 0.4}, r"test_ratio \+ val_ratio must be at most 1, got 0.7 \+ 0.4"),
    ({"min_block_s": -1.0}, "min_block_s must be a non-negative number of seconds, got -1.0"),
    ({"nonfinite": "zero"}, "nonfinite"),
])
def test_check_masc_args_rejects(change, message):
    with pytest.raises(ValueError, match=message):
        M._check_masc_args(**{**GOOD, **change})


def test_check_channels_keeps_the_first_and_names_the_difference():
    meg = {"sfreq": 100.0, "ch_names": ["A", "B"], "ch_types": ["mag", "mag"], "ch_pos": np.zeros((2, 3)),
           "data": np.zeros((2, 5))}
    ref = M._check_channels(None, meg, Path("first.fif"))
    assert ref["path"] == Path("first.fif") and ref["ch_names"] == ["A", "B"] and "data" not in ref
    assert M._check_channels(ref, dict(meg), Path("second.fif")) is ref
    with pytest.raises(ValueError, match=r"differ between first.fif \(2 channels\) and other.fif "
                                         r"\(2 channels\); differing names include \['B', 'C'\]"):
        M._check_channels(ref, {**meg, "ch_names": ["A", "C"]}, Path("other.fif"))
    with pytest.raises(ValueError, match=r"rates differ between first.fif \(100.0 Hz\) and x.fif "
                                         r"\(200.0 Hz\)"):
        M._check_channels(ref, {**meg, "sfreq": 200.0}, Path("x.fif"))


def _words() -> pd.DataFrame:
    return pd.DataFrame({
        "kind": ["sound", "word", "word", "word", "phoneme", "word"],
        "sound": ["a.wav", "a.wav", None, "a.wav", "a.wav", "b.wav"],
        "sound_time": [0.0, 1.0, 2.0, np.nan, 1.0, 30.0],
        "onset": [5.0, 6.0, 7.0, 8.0, 6.0, 50.0],
    })


def test_words_with_sound_drops_and_warns(nd_log):
    words, n_bad = M._words_with_sound(_words(), Path("ev.tsv"))
    assert n_bad == 2 and words["onset"].tolist() == [6.0, 50.0]
    assert "ev.tsv: 2 of 4 word(s) have no preceding sound event" in nd_log.text


def test_warn_after_recording_and_wav_count_and_warn(nd_log):
    words = M._words_with_sound(_words(), Path("ev.tsv"))[0]
    rec = SimpleNamespace(path=Path("rec.fif"), events=Path("d/ev.tsv"))
    nd_log.clear()
    assert M._warn_after_recording(words, rec, 60.0) == 0 and not nd_log.records
    assert M._warn_after_recording(words, rec, 20.0) == 1
    assert "rec.fif is 20.00 s long but 1 of 2 word(s) of ev.tsv lie after its end (last at 50.00 s)" \
        in nd_log.text
    assert M._warn_after_wav(words, Path("a.wav"), 10.0, "ev.tsv") == 1
    assert "a.wav is 10.00 s long but 1 of 2 word(s) of ev.tsv lie after its end (last at 30.00 s)" \
        in nd_log.text
    assert M._warn_after_wav(words, Path("a.wav"), 31.0, "ev.tsv") == 0


def _geom(bad: np.ndarray | None = None, **kw) -> M._MegGeometry:
    base = dict(sfreq=100.0, n_times=50, n_samples=1000, o_sfreq=1000.0,
                bad_cum=None if bad is None else np.r_[0, np.cumsum(bad)],
                n_bad=0 if bad is None else len(bad))
    return M._MegGeometry(**{**base, **kw})


def test_meg_window_start_and_recording_edges():
    win = _win(tmin=-0.1, meg_offset_s=0.15, window_s=0.5)
    assert M._meg_window(2.0, _geom(), win) == (205, None)  # (2.0 - 0.1 + 0.15) * 100
    assert M._meg_window(0.0, _geom(), _win(tmin=-0.1)) == (-10, "recording")
    assert M._meg_window(9.5, _geom(), _win()) == (950, None)  # last full window: 950 + 50 == 1000
    assert M._meg_window(9.51, _geom(), _win()) == (951, "recording")


def test_meg_window_drops_windows_over_nonfinite_samples():
    bad = np.zeros(10_000, bool)
    bad[5000:5004] = True  # recorded at 1 kHz: 5.000 .. 5.003 s
    g = _geom(bad)
    assert M._meg_window(4.5, g, _win()) == (450, None)  # 4.5 .. 5.0 s: ends just before sample 5000
    assert M._meg_window(4.51, g, _win()) == (451, "nonfinite")  # 4.51 .. 5.01 s
    assert M._meg_window(5.0, g, _win()) == (500, "nonfinite")
    assert M._meg_window(5.01, g, _win()) == (501, None)  # starts after the last bad sample (5.003 s)


def test_audio_window_splits_and_edges():
    bounds, splits = np.array([0.0, 5.0, 10.0]), np.array(["train", "test", "train"])
    kw = dict(wave_len=2000, audio_sfreq=100.0, n_audio=200, win=_win(window_s=2.0))
    assert M._audio_window(1.0, bounds, splits, **kw) == (100, "train", None)
    assert M._audio_window(3.0, bounds, splits, **kw) == (300, "train", None)  # 3..5 s: ends at the bound
    assert M._audio_window(4.0, bounds, splits, **kw) == (400, None, "split")  # 4..6 s straddles
    assert M._audio_window(5.5, bounds, splits, **kw) == (550, "test", None)
    assert M._audio_window(18.0, bounds, splits, **kw) == (1800, "train", None)  # last full window
    assert M._audio_window(18.5, bounds, splits, **kw) == (1850, None, "wav")
    kw["win"] = _win(window_s=2.0, tmin=-0.5)
    assert M._audio_window(0.2, bounds, splits, **kw) == (-30, None, "wav")


def test_wav_blocks_uses_the_split_hash_per_block():
    words = pd.DataFrame({"sound_time": [0.5, 1.0, 4.0, 9.0, 9.5, 16.0], "duration": [0.3] * 6})
    win = _win(min_block_s=3.0, test_ratio=0.5, split_seed=7)
    bounds, splits = M._wav_blocks(words, "lw1", "lw1_0", win)
    np.testing.assert_array_equal(bounds, M._make_blocks(words, 3.0))
    assert splits.tolist() == [M._block_split("lw1", "lw1_0", j, 7, 0.5, 0.0) for j in range(len(bounds))]


def test_cut_windows_and_stack_parts():
    data = np.arange(2 * 20, dtype=np.float64).reshape(2, 20)
    seg = M._cut_windows(data, np.array([0, 7, 15]), 5)
    assert seg.dtype == np.float32 and seg.shape == (3, 2, 5)
    np.testing.assert_array_equal(seg[1], data[:, 7:12])
    parts = [seg, seg[:1] + 100]
    out = M._stack_parts(parts, 2, 5)
    assert parts == [] and out.shape == (4, 2, 5)
    np.testing.assert_array_equal(out[3], seg[0] + 100)


def test_events_table_counts_repetitions_in_load_order():
    cols = [c for c in M._EVENT_COLUMNS if c != "repetition"]
    row = dict.fromkeys(cols, 0)
    a = pd.DataFrame([{**row, "stimulus_id": s, "subject": 3} for s in ("x", "y", "x")], columns=cols)
    b = pd.DataFrame([{**row, "stimulus_id": s, "subject": 3} for s in ("y", "x")], columns=cols)
    ev = M._events_table([a, b])
    assert list(ev.columns) == M._EVENT_COLUMNS and ev["subject"].dtype == np.int64
    assert ev["repetition"].tolist() == [0, 0, 1, 1, 2] and ev["repetition"].dtype == np.int64


def test_no_segment_message_gives_every_count():
    totals = {"words": 9, "no_sound": 1, "recording": 2, "wav": 3, "after_recording": 4, "after_wav": 5,
              "nonfinite": 6, "split": 7}
    msg = M._no_segment_message("01", totals, 3.0, -0.5)
    assert msg.startswith("load_masc found no segment for sub-01: 9 word events, 1 without a sound event, "
                          "2 windows past the recording, 3 past the wav (4 words after the end of the "
                          "recording, 5 after the end of their wav), 6 with non-finite samples, 7 straddling")
    assert "(window_s=3.0, tmin=-0.5)" in msg


def test_log_recording_level_depends_on_damage(nd_log):
    rec = SimpleNamespace(subject_label="01", session_label="0", task_label="1")
    counts = dict.fromkeys(M._DROP_REASONS, 0)
    M._log_recording(rec, 10, 8, 0, {**counts, "recording": 2})
    assert nd_log.records[-1].levelno == logging.INFO
    assert nd_log.records[-1].getMessage() == (
        "MASC sub-01 ses-0 task-1: 10 words, 8 segments (dropped: 2 windows past the recording, "
        "0 past the wav, 0 straddling splits)")
    M._log_recording(rec, 10, 7, 1, {**counts, "nonfinite": 2})
    assert nd_log.records[-1].levelno == logging.WARNING
    assert nd_log.records[-1].getMessage().endswith(
        "; because of damage: 1 words without a sound event, 0 words after the end of the recording, 0 after "
        "the end of their wav, 2 windows with non-finite samples)")


# ================================================================ from_mne pieces
def test_event_codes_names_and_default_stimulus_ids():
    codes, names = F._event_codes_names(np.array([1, 2, 7]), {"cat": 1, "dog": 2})
    assert codes.dtype == np.int64 and names.tolist() == ["cat", "dog", "7"]
    assert F._default_stimulus_ids(codes, names) is names
    codes, names = F._event_codes_names(np.array([3, 4]), {"3": 3})
    assert F._default_stimulus_ids(codes, names) is codes


def test_selected_metadata():
    meta = pd.DataFrame({"a": [10, 11, 12]}, index=[5, 6, 7])
    out = F._selected_metadata(meta, 3, np.array([2, 0]), "")
    assert out.index.tolist() == [0, 1] and out["a"].tolist() == [12, 10]
    empty = F._selected_metadata(None, 4, np.arange(4), "")
    assert len(empty) == 4 and list(empty.columns) == []
    with pytest.raises(ValueError, match="metadata has 3 rows but there are 5 epochs in f.fif"):
        F._selected_metadata(meta, 5, np.arange(5), " in f.fif")


def test_metadata_column_and_session_values():
    meta = pd.DataFrame({"run": [1, 2], "session": [4, 4]})
    assert F._metadata_column(meta, "run", "split", "").tolist() == [1, 2]
    with pytest.raises(KeyError, match=r"repetition='rep' is not a column of the epochs metadata in x; "
                                       r"its columns are \['run', 'session'\]"):
        F._metadata_column(meta, "rep", "repetition", " in x")
    assert F._session_values(meta, "run", "").tolist() == [1, 2]
    assert F._session_values(meta, None, "").tolist() == [4, 4]
    assert F._session_values(meta[["run"]], None, "") == 1
    assert F._session_values(meta, 9, "") == 9


def test_split_labels_and_check():
    ev = pd.DataFrame({"x": [1, 2, 3]})
    meta = pd.DataFrame({"fold": ["train", "val", "test"], "split": ["test", "test", "train"]})
    is_test = F._split_labels(ev, meta, lambda e: e["x"].to_numpy() > 2, "")
    assert is_test.tolist() == ["train", "train", "test"]
    assert F._split_labels(ev, meta, lambda e: ["val"] * len(e), "").tolist() == ["val"] * 3
    assert F._split_labels(ev, meta, "fold", "").tolist() == ["train", "val", "test"]
    assert F._split_labels(ev, meta, None, "").tolist() == ["test", "test", "train"]
    assert F._split_labels(ev, meta[["fold"]], None, "") == "train"
    with pytest.raises(ValueError, match=r"split callable returned shape \(2,\), expected \(3,\)"):
        F._split_labels(ev, meta, lambda e: [True, False], "")
    with pytest.raises(TypeError, match="split must be a column name, a callable or None, got int"):
        F._split_labels(ev, meta, 1, "")
    F._check_split_values(pd.Series(["train", "val", "test"]), "")
    with pytest.raises(ValueError, match=r"split values \['1', 'exp'\] in f are not in"):
        F._check_split_values(pd.Series(["train", "exp", 1]), " in f")


@pytest.mark.parametrize("types, modality", [
    (["eeg", "grad", "stim"], "meg"), (["ref_meg"], "meg"), (["stim", "eeg"], "eeg"),
    (["stim", "misc"], "misc"), ([], None),
])
def test_modality(types, modality):
    assert F._modality(types) == modality


def _epochs(n: int = 5):
    mne = pytest.importorskip("mne")
    info = mne.create_info(["Cz", "Pz", "STI"], 100.0, ["eeg", "eeg", "stim"])
    info["chs"][0]["loc"][:3] = [0.0, 0.01, 0.09]
    data = np.arange(n * 3 * 4, dtype=float).reshape(n, 3, 4)
    return mne, mne.EpochsArray(data, info, tmin=-0.01, verbose="error")


def test_picked_channels_positions_and_picks():
    mne, ep = _epochs()
    idx, names, types, pos = F._picked_channels(ep, None, "", mne)
    assert idx.tolist() == [0, 1] and names == ["Cz", "Pz"] and types == ["eeg", "eeg"]
    np.testing.assert_allclose(pos[0], [0.0, 0.01, 0.09])
    assert np.isnan(pos[1]).all()  # all-zero location: unknown
    assert F._picked_channels(ep, ["STI"], "", mne)[1] == ["STI"]
    with pytest.raises(ValueError, match="Invalid picks='meg' in f"):
        F._picked_channels(ep, "meg", " in f", mne)


def test_read_epochs_data_in_chunks(monkeypatch, nd_log):
    mne, ep = _epochs(5)
    monkeypatch.setattr(F, "_CHUNK", 2)
    rows = np.array([4, 0, 3])
    out = F._read_epochs_data(ep, rows, np.array([1, 0]), "")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ep.get_data()[rows][:, [1, 0]])
    assert "Read 3 epochs × 2 channels × 4 times" in nd_log.text


def test_as_epochs():
    mne, ep = _epochs()
    assert F._as_epochs(ep, "given", mne) == (ep, "given")
    assert F._as_epochs(ep, None, mne) == (ep, None)  # in memory: no file name
    with pytest.raises(TypeError, match="got ndarray"):
        F._as_epochs(np.zeros(2), None, mne)


# ================================================================ load_things_eeg2 pieces
def test_requested_splits():
    assert E._requested_splits("test") == ["test"]
    assert E._requested_splits(["test", "train"]) == ["train", "test"]
    with pytest.raises(ValueError, match="split must name at least one of 'train', 'test'"):
        E._requested_splits([])
    with pytest.raises(ValueError, match="'split' parameter"):
        E._requested_splits(("train", "val"))


def test_subject_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="No preprocessed data for subject 3 under"):
        E._subject_dir(tmp_path, "auto", 3)
    atm = E._variant_dir(tmp_path, "atm", 3)
    atm.mkdir(parents=True)
    assert E._subject_dir(tmp_path, "auto", 3) == ("atm", atm)
    with pytest.raises(FileNotFoundError, match=r"subject folder not found: .*sub-03 \(official variant\)"):
        E._subject_dir(tmp_path, "official", 3)
    off = E._variant_dir(tmp_path, "official", 3)
    off.mkdir(parents=True)
    assert E._subject_dir(tmp_path, "auto", 3) == ("official", off)
    assert E._subject_dir(tmp_path, "atm", 3) == ("atm", atm)


def test_check_same_axes():
    times = np.linspace(-0.2, 0.8, 11)
    ref = E._check_same_axes(None, Path("a.npy"), {"ch_names": ["O1", "O2"], "times": times})
    assert ref[0] == Path("a.npy") and ref[1] == ["O1", "O2"]
    assert E._check_same_axes(ref, Path("b.npy"), {"ch_names": ["O1", "O2"], "times": times + 1e-12}) is ref
    with pytest.raises(ValueError, match=r"channels differ: a.npy has 2 channels \['O1', 'O2'\]... but b.npy "
                                         r"has 1 \['O1'\]"):
        E._check_same_axes(ref, Path("b.npy"), {"ch_names": ["O1"], "times": times})
    with pytest.raises(ValueError, match="time axes differ between a.npy and b.npy"):
        E._check_same_axes(ref, Path("b.npy"), {"ch_names": ["O1", "O2"], "times": times[:-1]})


def test_split_events_is_condition_major():
    table = pd.DataFrame({"stimulus_id": ["a1", "b1"], "concept": ["a", "b"], "concept_index": [0, 1],
                          "image_index": [0, 0], "path": ["x", "y"]})
    ev = E._split_events(table, 2, 3, 4, "test")
    assert list(ev.columns) == ["subject", "session", "stimulus_id", "concept", "concept_index",
                                "image_index", "condition", "repetition", "split"]
    assert ev["stimulus_id"].tolist() == ["a1"] * 3 + ["b1"] * 3
    assert ev["condition"].tolist() == [0, 0, 0, 1, 1, 1] and ev["repetition"].tolist() == [0, 1, 2] * 2
    assert set(ev["subject"]) == {4} and set(ev["session"]) == {0} and set(ev["split"]) == {"test"}


def test_stack_trials_flags_nonfinite(nd_log):
    a = np.zeros((2, 2, 1, 3))
    b = np.ones((1, 2, 1, 3))
    a[1, 0, 0, 2] = np.nan
    b[0, 1, 0, 0] = 1e300  # beyond float32: inf after the cast
    out, bad = E._stack_trials([a, b], ["train", "test"], ["tr.npy", "te.npy"], 1, 3, subject=2,
                               nonfinite="drop")
    assert out.shape == (6, 1, 3) and out.dtype == np.float32
    assert bad.tolist() == [False, False, True, False, False, True]
    with pytest.raises(ValueError, match=r"tr.npy \(subject 2, split train\) holds 1 NaN"):
        E._stack_trials([a, b], ["train", "test"], ["tr.npy", "te.npy"], 1, 3, subject=2, nonfinite="error")


def test_sfreq_of():
    assert E._sfreq_of(np.arange(10) / 250.0) == 250.0
    assert E._sfreq_of(np.array([0.0, 0.01, 0.02])) == 100.0
    assert np.isnan(E._sfreq_of(np.array([0.1])))


def test_image_stimuli(tmp_path):
    tables = {s: pd.DataFrame({"stimulus_id": [f"{s}_1"], "concept": ["cat"], "concept_index": [0],
                               "image_index": [0], "path": [tmp_path / f"{s}.jpg"]})
              for s in ("train", "test")}
    st = E._image_stimuli(tables, ["train", "test"], tmp_path, images=False, image_size=None)
    assert list(st.ids) == ["train_1", "test_1"] and st.metadata["split"].tolist() == ["train", "test"]
    assert st.metadata["prompt"].tolist() == ["This picture is cat"] * 2
    assert st.images_ is None and st.source == str(tmp_path / "image_set")
    st = E._image_stimuli(tables, ["test"], tmp_path, images=True, image_size=8)
    assert list(st.ids) == ["test_1"] and st.images_ is not None
