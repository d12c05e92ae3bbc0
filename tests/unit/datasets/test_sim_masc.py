"""Tests of the MEG-MASC simulator, read back with MNE-BIDS / scipy (and the loader when present)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mne")
mne_bids = pytest.importorskip("mne_bids")

from scipy.io import wavfile
from scipy.signal import butter, fftconvolve, sosfiltfilt

from neurodecode.datasets import simulate
from neurodecode.datasets._sim_masc import STORIES, resolve_masc
from neurodecode.preprocessing.audio import melspectrogram

SMALL = dict(n_subjects=2, n_sessions=1, n_stories=1, story_duration_s=20.0, n_channels=16, seed=1,
             verbose="warning")
KEYS = {"kind", "story", "story_uid", "sound_id", "sound"}
WORD_KEYS = KEYS | {"word", "word_index", "sequence_id", "pronounced"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    return simulate("masc", tmp_path_factory.mktemp("masc") / "masc", **SMALL)


def _bids(root: Path, sub: str = "01", ses: str = "0", task: str = "0"):
    return mne_bids.BIDSPath(subject=sub, session=ses, task=task, root=root, datatype="meg")


def _events(root: Path, sub: str = "01") -> pd.DataFrame:
    path = root / f"sub-{sub}" / "ses-0" / "meg" / f"sub-{sub}_ses-0_task-0_events.tsv"
    return pd.read_csv(path, sep="\t")


# --------------------------------------------------------------------------- layout
def test_bids_layout(sim):
    for name in ("participants.tsv", "dataset_description.json", "README", "simulation.json"):
        assert (sim / name).is_file(), name
    for sub in ("01", "02"):
        meg = sim / f"sub-{sub}" / "ses-0" / "meg"
        stem = f"sub-{sub}_ses-0_task-0"
        for suffix in ("_meg.fif", "_events.tsv", "_channels.tsv", "_meg.json"):
            assert (meg / (stem + suffix)).is_file(), stem + suffix
    assert not (sim / "sub-01" / "ses-1").exists()  # n_sessions=1
    assert not (sim / "sub-03").exists()
    assert not list(sim.glob("sub-01/ses-0/meg/*task-1*"))  # n_stories=1
    participants = pd.read_csv(sim / "participants.tsv", sep="\t")
    assert participants["participant_id"].tolist() == ["sub-01", "sub-02"]
    assert not list(sim.rglob(".tmp*"))
    sidecar = json.loads((sim / "sub-01/ses-0/meg/sub-01_ses-0_task-0_meg.json").read_text())
    assert sidecar["PowerLineFrequency"] == 50 and sidecar["MEGChannelCount"] == 16


def test_wav_files(sim):
    truth = json.loads((sim / "simulation.json").read_text())["ground_truth"]
    sounds = truth["stories"]["lw1"]["sounds"]
    assert sounds == [f"stimuli/audio/lw1_{k}.wav" for k in range(len(sounds))]
    assert len(sounds) >= 2  # a story is several wav files
    total = 0.0
    for rel in sounds:
        sr, wav = wavfile.read(sim / rel)
        assert sr == 16000 and wav.dtype == np.int16 and wav.ndim == 1
        assert 0.05 < np.abs(wav).max() / 32767 <= 0.55
        total += len(wav) / sr
    assert total == pytest.approx(20.0, abs=4.0)


def test_events_tsv_trial_type_dicts(sim):
    ev = _events(sim)
    assert list(ev.columns) == ["onset", "duration", "trial_type", "value", "sample"]
    dicts = [ast.literal_eval(t) for t in ev["trial_type"]]
    assert all(isinstance(d, dict) and KEYS <= set(d) for d in dicts)
    kinds = pd.Series([d["kind"] for d in dicts])
    assert set(kinds) == {"sound", "word", "phoneme"}
    sounds = [(o, d) for o, d in zip(ev["onset"], dicts) if d["kind"] == "sound"]
    words = [(o, d) for o, d in zip(ev["onset"], dicts) if d["kind"] == "word"]
    phonemes = [d for d in dicts if d["kind"] == "phoneme"]
    assert all(WORD_KEYS <= set(d) for _, d in words)
    assert all("phoneme" in d and d["phoneme"].rsplit("_", 1)[1] in "BIES" for d in phonemes)
    assert {d["sound"] for _, d in sounds} == {d["sound"] for _, d in words}
    assert all(d["story"] == "lw1" and d["story_uid"] == 0 and d["pronounced"] == 1.0 for _, d in words)
    # word_index runs within the story, sequence_id (sentence) never decreases, sentences of 4-10 words
    assert [d["word_index"] for _, d in words] == list(range(len(words)))
    seq = np.array([d["sequence_id"] for _, d in words])
    assert np.all(np.diff(seq) >= 0)
    assert 4 <= np.bincount(seq).min() and np.bincount(seq).max() <= 10
    # every word starts after its wav's sound event, and is followed by its phonemes
    for (o, d) in words:
        start = max(so for so, sd in sounds if sd["sound"] == d["sound"] and so <= o)
        assert o >= start + 0.25
    i = next(k for k, d in enumerate(dicts) if d["kind"] == "word")
    assert dicts[i + 1]["kind"] == "phoneme" and dicts[i + 1]["word_index"] == dicts[i]["word_index"]
    assert dicts[i + 1]["phoneme"].endswith("_B")
    truth = json.loads((sim / "simulation.json").read_text())["ground_truth"]
    assert len(words) == truth["stories"]["lw1"]["n_words"] == truth["n_words"]


def test_read_raw_bids(sim):
    raw = mne_bids.read_raw_bids(_bids(sim), verbose=False)
    assert raw.info["sfreq"] == 200.0 and len(raw.ch_names) == 16
    assert raw.ch_names[0] == "MEG 001" and set(raw.get_channel_types()) == {"mag"}
    assert raw.info["line_freq"] == 50 and raw.info["meas_date"] is not None
    descriptions = [ast.literal_eval(d) for d in raw.annotations.description]
    assert len(descriptions) == len(_events(sim))
    assert {d["kind"] for d in descriptions} == {"sound", "word", "phoneme"}
    locs = np.array([ch["loc"] for ch in raw.info["chs"]])
    assert np.all(np.isfinite(locs[:, :3])) and np.all(np.linalg.norm(locs[:, 9:12], axis=1) > 0.99)
    data = raw.get_data()
    assert 1e-14 < np.median(data.std(axis=1)) < 1e-11  # Tesla scale
    # DC offsets / drifts are present (preprocessing must remove them)
    hp = sosfiltfilt(butter(4, 0.5, "highpass", fs=200.0, output="sos"), data, axis=1)
    assert np.median(np.abs(data.mean(axis=1)) / hp.std(axis=1)) > 2


def _lagged_mel(root: Path, raw, p: dict, kernel: np.ndarray) -> np.ndarray:
    """The planted drive rebuilt from the wav files and the sound events."""
    sf, sr, n = raw.info["sfreq"], p["audio_sfreq"], raw.n_times
    audio = np.zeros(int(round(n * sr / sf)))
    for onset, desc in zip(raw.annotations.onset, raw.annotations.description):
        d = ast.literal_eval(desc)
        if d["kind"] == "sound":
            _, wav = wavfile.read(root / d["sound"])
            i0 = int(round(onset * sr))
            audio[i0:i0 + len(wav)] = wav / 32767.0
    mel = melspectrogram(audio, sr, n_mels=p["n_mels"], frame_rate=sf)[:n].astype(float)
    mel = (mel - mel.mean(0)) / mel.std(0)
    return fftconvolve(mel, kernel[:, None], axes=0)[:n]


@pytest.mark.parametrize("sub", ["01", "02"])
def test_planted_channels_follow_the_mel_spectrogram(sim, sub):
    record = json.loads((sim / "simulation.json").read_text())
    p, truth = record["parameters"], record["ground_truth"]
    raw = mne_bids.read_raw_bids(_bids(sim, sub), verbose=False)
    drive = _lagged_mel(sim, raw, p, np.asarray(truth["lag_kernel"]["weights"]))
    sos = butter(4, 0.5, "highpass", fs=raw.info["sfreq"], output="sos")
    y = sosfiltfilt(sos, raw.get_data(), axis=1).T
    x = sosfiltfilt(sos, drive, axis=0)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    r2 = 1 - ((y - x @ beta) ** 2).sum(0) / (y ** 2).sum(0)
    planted = np.isin(raw.ch_names, truth["subjects"][sub]["signal_channels"])
    assert planted.sum() >= 2 and truth["signal_channels"] == truth["subjects"][sub]["signal_channels"]
    assert r2[planted].min() > r2[~planted].max()
    assert r2[planted].mean() > 0.25 and r2[~planted].mean() < 0.1


def test_planted_channels_are_temporal(sim):
    from neurodecode.preprocessing.channels import channel_regions

    raw = mne_bids.read_raw_bids(_bids(sim), verbose=False)
    truth = json.loads((sim / "simulation.json").read_text())["ground_truth"]
    pos = np.array([ch["loc"][:3] for ch in raw.info["chs"]])
    regions = dict(zip(raw.ch_names, channel_regions({"ch_names": raw.ch_names, "ch_pos": pos})))
    assert {regions[c][0] for c in truth["signal_channels"]} == {"temporal"}


def test_subjects_differ_and_sessions_replay_the_same_audio(tmp_path):
    root = simulate("masc", tmp_path / "m", n_subjects=1, n_sessions=2, n_stories=1, story_duration_s=8.0,
                    n_channels=16, seed=5, verbose="warning")
    ev0, ev1 = (pd.read_csv(root / f"sub-01/ses-{s}/meg/sub-01_ses-{s}_task-0_events.tsv", sep="\t")
                for s in (0, 1))
    assert ev0["trial_type"].tolist() == ev1["trial_type"].tolist()  # same story, same words
    r0, r1 = (mne_bids.read_raw_bids(_bids(root, ses=s), verbose=False).get_data() for s in ("0", "1"))
    n = min(r0.shape[1], r1.shape[1])
    assert not np.allclose(r0[:, :n] * 1e13, r1[:, :n] * 1e13, atol=1e-3)  # fresh noise and timing


def test_determinism(sim, tmp_path):
    again = simulate("masc", tmp_path / "again", **{**SMALL, "n_subjects": 1})
    a = mne_bids.read_raw_bids(_bids(sim), verbose=False).get_data()
    b = mne_bids.read_raw_bids(_bids(again), verbose=False).get_data()
    np.testing.assert_array_equal(a, b)  # sub-01 does not depend on n_subjects
    assert (_events(sim) == _events(again)).all().all()
    for wav in sorted((sim / "stimuli" / "audio").glob("*.wav")):
        assert wav.read_bytes() == (again / "stimuli" / "audio" / wav.name).read_bytes()
    other = simulate("masc", tmp_path / "other", **{**SMALL, "n_subjects": 1, "seed": 2})
    c = mne_bids.read_raw_bids(_bids(other), verbose=False).get_data()
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_parameters_and_ground_truth(sim):
    record = json.loads((sim / "simulation.json").read_text())
    assert record["name"] == "masc"
    p, truth = record["parameters"], record["ground_truth"]
    assert p["signal_channels"] == ["left_temporal", "right_temporal"] and p["signal_window"] == [0.05, 0.25]
    assert truth["signal_window"] == [0.05, 0.25]
    assert set(truth["subjects"]) == {"01", "02"} and truth["subjects"]["01"]["n_channels"] == 16
    lags = np.asarray(truth["lag_kernel"]["lags_s"])
    w = np.asarray(truth["lag_kernel"]["weights"])
    assert w.sum() == pytest.approx(1.0) and np.all(w[(lags <= 0.05) | (lags >= 0.25)] == 0)
    assert list(truth["stories"]) == ["lw1"] and len(truth["vocabulary"]) == 60


def test_resolve_defaults_and_stories():
    p = resolve_masc()
    assert p["n_subjects"] == 2 and p["n_sessions"] == 2 and p["n_channels"] == 64 and p["sfreq"] == 200.0
    assert STORIES == ("lw1", "cable_spool_fort", "easy_money", "The_Black_Willow")
    assert resolve_masc(signal_channels="temporal")["signal_channels"] == ["temporal"]
    assert resolve_masc(signal_channels=["MEG 001", "MEG 002"])["signal_channels"] == ["MEG 001", "MEG 002"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_subjects=0), "n_subjects"),
    (dict(n_subjects=28), "n_subjects"),
    (dict(seed=-1), "seed"),
    (dict(n_sessions=3), "n_sessions"),
    (dict(n_stories=5), "n_stories"),
    (dict(story_duration_s=1.0), "story_duration_s"),
    (dict(story_duration_s=float("nan")), "story_duration_s"),
    (dict(n_channels=8), "n_channels"),
    (dict(sfreq=10.0), "sfreq"),
    (dict(audio_sfreq=4000), "audio_sfreq"),
    (dict(snr=-1.0), "snr"),
    (dict(snr=100.0), "snr"),
    (dict(n_mels=0), "n_mels"),
    (dict(signal_channels=("nowhere",)), "neither a channel nor a sensor region"),
    (dict(signal_channels=()), "signal_channels"),
    (dict(signal_window=(0.3, 0.1)), "stop > start"),
    (dict(signal_window=(0.1,)), "signal_window"),
    (dict(signal_window=0.1), "signal_window"),
    (dict(signal_window=(0.0, 2.0)), "signal_window stop"),
    (dict(signal_window=(0.1, 0.1001)), "too narrow"),
])
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_masc(**kwargs)


def test_invalid_parameter_types_and_names(tmp_path):
    with pytest.raises(TypeError, match="n_channels"):
        resolve_masc(n_channels=16.5)
    with pytest.raises(TypeError, match="snr"):
        resolve_masc(snr="high")
    with pytest.raises(TypeError, match="unexpected parameter"):
        simulate("masc", tmp_path / "x", image_size=16)
    with pytest.raises(ValueError, match="n_stories"):
        simulate("masc", tmp_path / "y", n_stories=0)
    assert not (tmp_path / "y").exists()


def test_load_masc_reads_the_simulation(sim):
    try:
        from neurodecode.datasets.masc import load_masc
    except ImportError:  # the loader is written separately
        pytest.skip("neurodecode.datasets.masc.load_masc is not available")
    trials = load_masc(sim, 1, sfreq=100.0, window_s=1.0, verbose="warning")
    truth = json.loads((sim / "simulation.json").read_text())["ground_truth"]
    assert trials.data.shape[1:] == (16, 100)
    assert 0.8 * truth["n_words"] <= len(trials) <= truth["n_words"]  # windows crossing splits are dropped
    assert set(trials.events["story"]) == {"lw1"}
    assert trials.stimuli.sfreq_audio == 16000
    assert set(trials.events["split"]) <= {"train", "val", "test"}
