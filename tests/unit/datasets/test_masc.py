"""load_masc on a tiny MEG-MASC BIDS folder written with MNE-BIDS (FORMATS.md 4.1)."""

import re
import shutil

import numpy as np
import pandas as pd
import pytest

mne = pytest.importorskip("mne")
pytest.importorskip("mne_bids")

from _masc_fixture import GAP_S, STORIES, WAV_S, meg_path, wav_signal, word_times, write_masc_bids

from neurodecode.datasets import load_masc

COLUMNS = ["subject", "session", "task", "story", "stimulus_id", "word", "word_index", "onset", "sound",
           "sound_time", "block", "repetition", "split"]


@pytest.fixture(scope="module")
def masc(tmp_path_factory):
    root = tmp_path_factory.mktemp("masc")
    write_masc_bids(root)  # sub-01, sessions 0/1, tasks 0/1, 4 mags at 200 Hz, 16 kHz wavs
    return root


@pytest.fixture
def masc_copy(masc, tmp_path):
    dst = tmp_path / "masc"
    shutil.copytree(masc, dst)
    return dst


def _wav_start(session, k):
    return 2.0 + session + k * (WAV_S + GAP_S)


def test_load_masc_shapes_ids_repetitions(masc):
    tr = load_masc(masc, 1, sfreq=100, verbose=False)
    n = len(tr)
    assert n > 50 and tr.data.shape == (n, 4, 300) and tr.data.dtype == np.float32
    assert tr.modality == "meg" and tr.info["sfreq"] == 100.0 and tr.info["dataset"] == "masc"
    assert tr.info["ch_names"] == [f"MEG {c:03d}" for c in range(4)] and tr.info["ch_types"] == ["mag"] * 4
    assert tr.info["ch_pos"].shape == (4, 3) and np.isfinite(tr.info["ch_pos"]).all()
    np.testing.assert_allclose(tr.info["times"], np.arange(300) / 100.0)
    assert tr.info["window_s"] == 3.0 and tr.info["tmin"] == 0.0 and len(tr.info["files"]) == 4
    ev = tr.events
    assert list(ev.columns) == COLUMNS
    assert set(ev["session"]) == {0, 1} and set(ev["task"]) == {0, 1} and (ev["subject"] == 1).all()
    assert set(ev["story"]) == {"lw1", "cable_spool_fort"}
    assert all(re.fullmatch(r"(lw1|cable_spool_fort)/\1_[01]/\d+", s) for s in ev["stimulus_id"])
    # same audio heard in both sessions -> same ids, repetition 0 then 1
    s0, s1 = ev[ev["session"] == 0], ev[ev["session"] == 1]
    assert set(s0["stimulus_id"]) == set(s1["stimulus_id"]) and s0["stimulus_id"].is_unique
    assert (s0["repetition"] == 0).all() and (s1["repetition"] == 1).all()
    # word time in the wav = onset - onset of its sound event; the wavs start 1 s later in session 1
    k = ev["sound"].str.extract(r"_(\d)\.wav$")[0].astype(int)
    np.testing.assert_allclose(ev["onset"] - ev["sound_time"], [_wav_start(s, kk) for s, kk in
                                                                zip(ev["session"], k)], atol=1e-9)
    times = {t for t, _, _ in word_times()}
    assert all(min(abs(t - x) for x in times) < 1e-9 for t in ev["sound_time"])
    assert ev["sound"].str.fullmatch(r"stimuli/audio/(lw1|cable_spool_fort)_[01]\.wav").all()
    # stimuli: one row per id, 3 s of 16 kHz audio, same split as the events
    st = tr.stimuli
    assert len(st) == ev["stimulus_id"].nunique() and st.sfreq_audio == 16000.0
    assert st.get_audio(ev["stimulus_id"][:3]).shape == (3, 48000)
    assert st.get_audio(ev["stimulus_id"][:1]).dtype == np.float32
    meta = st.metadata.loc[ev["stimulus_id"]]
    assert (meta["split"].to_numpy() == ev["split"].to_numpy()).all()
    assert (meta["word"].to_numpy() == ev["word"].to_numpy()).all()


def test_audio_is_the_wav_slice(masc):
    tr = load_masc(masc, 1, tmin=-0.5, window_s=2.0, sfreq=100, test_ratio=0.0, verbose=False)
    ev = tr.events.drop_duplicates("stimulus_id")
    audio = tr.stimuli.get_audio(ev["stimulus_id"])
    assert audio.shape == (len(ev), 32000)
    for row, got in zip(ev.itertuples(), audio):
        stem = row.sound.rsplit("/", 1)[1][:-4]
        wav = wav_signal(stem, 16000).astype(np.float32) / 32768
        a0 = int(np.rint((row.sound_time - 0.5) * 16000))
        np.testing.assert_array_equal(got, wav[a0:a0 + 32000])
    # windows starting before the wav start are dropped: the first word is at 0.5 s, -0.5 s -> 0.0 s
    assert (tr.events["sound_time"] >= 0.5 - 1e-9).all()


def test_meg_data_and_resampling(masc):
    raw = mne.io.read_raw_fif(meg_path(masc, 1, 0, 0), preload=True, verbose="error")
    native = load_masc(masc, 1, sessions=0, tasks="0", sfreq=None, tmin=-0.2, test_ratio=0.0, verbose=False)
    assert native.info["sfreq"] == 200.0 and native.data.shape[2] == 600
    assert set(native.events["session"]) == {0} and set(native.events["task"]) == {0}
    x = raw.get_data()
    for i, onset in enumerate(native.events["onset"]):
        s = int(np.rint((onset - 0.2) * 200))
        np.testing.assert_array_equal(native.data[i], x[:, s:s + 600].astype(np.float32))
    same = load_masc(masc, 1, sessions=[0], tasks=[0], sfreq=200, tmin=-0.2, test_ratio=0.0, verbose=False)
    np.testing.assert_array_equal(same.data, native.data)
    # resampled (and filtered) as MNE would do it on the whole raw
    res = load_masc(masc, 1, sessions=0, tasks=0, sfreq=100, l_freq=1.0, h_freq=30.0, test_ratio=0.0,
                    verbose=False)
    ref = raw.copy().filter(1.0, 30.0, verbose="error").resample(100, npad="auto", verbose="error").get_data()
    assert res.data.shape[2] == 300 and res.info["sfreq"] == 100.0
    for i, onset in enumerate(res.events["onset"]):
        s = int(np.rint(onset * 100))
        np.testing.assert_allclose(res.data[i], ref[:, s:s + 300], rtol=1e-4, atol=1e-17)


def test_meg_offset_delays_the_brain_window_only(masc):
    """brainmagick's offset_meg_ms: the MEG window starts meg_offset_s after the audio window."""
    raw = mne.io.read_raw_fif(meg_path(masc, 1, 0, 0), preload=True, verbose="error")
    kw = dict(sessions=0, tasks=0, sfreq=None, window_s=2.0, test_ratio=0.0, verbose=False)
    base = load_masc(masc, 1, tmin=-0.5, **kw)
    lagged = load_masc(masc, 1, tmin=-0.5, meg_offset_s=0.15, **kw)
    ids = sorted(set(base.events["stimulus_id"]) & set(lagged.events["stimulus_id"]))
    assert len(ids) >= 3
    # the audio of a segment is unchanged; its MEG is the recording 0.15 s later
    np.testing.assert_array_equal(lagged.stimuli.get_audio(ids), base.stimuli.get_audio(ids))
    x = raw.get_data()
    for i, onset in enumerate(lagged.events["onset"]):
        s = int(np.rint((onset - 0.5 + 0.15) * 200))
        np.testing.assert_array_equal(lagged.data[i], x[:, s:s + 400].astype(np.float32))
    assert lagged.info["tmin"] == pytest.approx(-0.35) and lagged.info["audio_tmin"] == -0.5
    assert lagged.info["times"][0] == pytest.approx(-0.35) and lagged.info["meg_offset_s"] == 0.15
    with pytest.raises(ValueError, match="meg_offset_s"):
        load_masc(masc, 1, meg_offset_s=float("nan"), verbose=False)


def _overlaps(ev, a, b, window_s):
    """(wav, time) of every ``a`` segment whose wav interval overlaps a ``b`` segment's."""
    bad = []
    for sound, d in ev.groupby("sound"):
        da, db = d[d["split"] == a], d[d["split"] == b]
        for s in da["sound_time"].to_numpy():
            t = db["sound_time"].to_numpy()
            if ((s < t + window_s) & (t < s + window_s)).any():
                bad.append((sound, s))
    return bad


def test_splits_never_share_audio(masc):
    kw = {"window_s": 1.5, "sfreq": 100, "min_block_s": 2.0, "test_ratio": 0.3, "val_ratio": 0.2, "verbose": False}
    tr = load_masc(masc, 1, split_seed=1, **kw)
    ev = tr.events
    assert {"train", "test", "val"} <= set(ev["split"])
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        assert not _overlaps(ev, a, b, 1.5), (a, b)
    assert (ev.groupby("stimulus_id")["split"].nunique() == 1).all()
    assert (ev.groupby("block")["split"].nunique() == 1).all()
    # same assignment for both sessions and on every call; another seed changes it
    assert tr.stimuli.metadata["split"].to_dict() == ev.drop_duplicates("stimulus_id").set_index(
        "stimulus_id")["split"].to_dict()
    again = load_masc(masc, 1, split_seed=1, **kw)
    assert again.events["split"].tolist() == ev["split"].tolist()
    other = load_masc(masc, 1, split_seed=2, **kw)
    assert other.events.groupby("block")["split"].first().to_dict() != \
        ev.groupby("block")["split"].first().to_dict()
    # segments straddling blocks of different splits were dropped
    everything = load_masc(masc, 1, window_s=1.5, sfreq=100, min_block_s=2.0, test_ratio=0.0, verbose=False)
    assert len(everything) > len(tr) and (everything.events["split"] == "train").all()
    assert set(tr.events["stimulus_id"]) < set(everything.events["stimulus_id"])


def test_blocks_stride_and_sequence_ids(tmp_path):
    seq_root, plain_root = tmp_path / "seq", tmp_path / "plain"
    write_masc_bids(seq_root, sessions=(0,), tasks=(2,), sequence_id=True)
    write_masc_bids(plain_root, sessions=(0,), tasks=(2,), wav_rate=8000)
    kw = {"window_s": 0.3, "sfreq": 100, "min_block_s": 0.0, "test_ratio": 0.0, "verbose": False}
    seq = load_masc(seq_root, 1, **kw)
    plain = load_masc(plain_root, 1, **kw)
    n_sent = len({s for _, s, _ in word_times()})
    for tr in (seq, plain):  # sentence blocks from sequence_id, or from the 0.8 s pauses
        assert (tr.events.groupby("sound")["block"].nunique() == n_sent).all()
    # word_index restarts in every sentence: ids fall back to sequence_id.word_index
    assert seq.events["stimulus_id"].iloc[6] == "easy_money/easy_money_0/1.1"
    assert plain.events["stimulus_id"].iloc[6] == "easy_money/easy_money_0/6"
    # 8 kHz wavs resampled to 16 kHz
    assert plain.stimuli.get_audio(plain.events["stimulus_id"][:2]).shape == (2, 4800)
    half = load_masc(plain_root, 1, word_stride=2, **kw)
    assert set(half.events["stimulus_id"]) < set(plain.events["stimulus_id"])
    assert len(half) == sum((len(d) + 1) // 2 for _, d in plain.events.groupby("sound"))


def test_load_masc_errors(masc, masc_copy, tmp_path):
    with pytest.raises(ValueError, match=r"subject 7 not found.*Available subjects: \[1\]"):
        load_masc(masc, 7)
    with pytest.raises(FileNotFoundError, match=r"sub-01_ses-2_task-0_meg"):
        load_masc(masc, 1, sessions=[2])
    with pytest.raises(FileNotFoundError, match=r"task 3: .*sub-01_ses-0_task-3_meg"):
        load_masc(masc, "sub-01", tasks=[0, 3])
    with pytest.raises(ValueError, match="no segment"):
        load_masc(masc, 1, window_s=40.0, verbose=False)
    with pytest.raises(ValueError, match="word_stride"):
        load_masc(masc, 1, word_stride=0)
    with pytest.raises(ValueError, match="test_ratio"):
        load_masc(masc, 1, test_ratio=1.5)
    with pytest.raises(FileNotFoundError, match="MEG-MASC root not found"):
        load_masc(tmp_path / "nope", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a MEG-MASC BIDS root"):
        load_masc(tmp_path / "empty", 1)

    root = masc_copy
    with open(root / "participants.tsv", "a") as f:
        f.write("sub-05\tn/a\tn/a\tn/a\tn/a\tn/a\n")
    with pytest.raises(FileNotFoundError, match=r"subject 5 is listed.*sub-05"):
        load_masc(root, 5)
    meg_path(root, 1, 1, 1).unlink()  # one combination missing: skipped with a warning
    with pytest.warns(UserWarning, match="session 1 task 1"):
        tr = load_masc(root, 1, sessions=[0, 1], tasks=[0, 1], verbose=False)
    assert len(tr.info["files"]) == 3
    events = meg_path(root, 1, 0, 1, "events.tsv")
    table = pd.read_csv(events, sep="\t", dtype=str, keep_default_na=False)
    table.loc[3, "trial_type"] = "__import__('os').getcwd()"
    table.to_csv(events, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"sub-01_ses-0_task-1_events\.tsv, row 3"):
        load_masc(root, 1, verbose=False)
    table.drop(columns="trial_type").to_csv(events, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"task-1_events\.tsv has no column\(s\) \['trial_type'\]"):
        load_masc(root, 1, tasks=1, verbose=False)
    (root / "stimuli" / "audio" / f"{STORIES[0]}_1.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"lw1_1\.wav.*tried"):
        load_masc(root, 1, tasks=0, verbose=False)


def test_channel_mismatch(tmp_path):
    other = ["MEG 000", "MEG 001", "MEG 002", "MEG 099"]
    write_masc_bids(tmp_path, sessions=(0, 1), tasks=(0,), ch_names_for={(1, 1, 0): other})
    with pytest.raises(ValueError, match=r"sub-01_ses-0_task-0_meg\.fif.*sub-01_ses-1_task-0_meg\.fif.*MEG 099"):
        load_masc(tmp_path, 1, verbose=False)
    tr = load_masc(tmp_path, 1, picks=["MEG 000", "MEG 001"], verbose=False)
    assert tr.info["ch_names"] == ["MEG 000", "MEG 001"] and tr.data.shape[1] == 2
