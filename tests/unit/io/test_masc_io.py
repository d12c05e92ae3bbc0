"""MEG-MASC readers (FORMATS.md 4.1): trial_type parsing, events.tsv, wav files, the BIDS listing."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.io import wavfile

from neurodecode.io import (
    WavSegments,
    find_masc_wav,
    masc_recordings,
    parse_trial_type,
    read_masc_events,
    read_wav,
)


# -- parse_trial_type -------------------------------------------------------------------------------
def test_parse_trial_type_literals():
    d = parse_trial_type("{'kind': 'word', 'word': \"it's\", 'word_index': 3, 'pronounced': 1.0, "
                         "'sequence_id': None, 'pos': (1, -2), 'ok': True}")
    assert d == {"kind": "word", "word": "it's", "word_index": 3, "pronounced": 1.0, "sequence_id": None,
                 "pos": (1, -2), "ok": True}
    d = parse_trial_type("  {'kind': 'phoneme', 'pronounced': nan, 'x': -inf}  ")
    assert math.isnan(d["pronounced"]) and d["x"] == -math.inf


@pytest.mark.parametrize("text", [
    "__import__('pathlib').Path('PWNED').touch()",
    "{'kind': __import__('pathlib').Path('PWNED').touch()}",
    "{'kind': open('PWNED', 'w')}",
    "{'kind': os}",
    "{'kind': 'word'",
    "{**{'kind': 'word'}}",
    "[('kind', 'word')]",
    "'word'",
    "",
    "n/a",
])
def test_parse_trial_type_refuses(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"sub-01_events\.tsv, row 7"):
        parse_trial_type(text, where="sub-01_events.tsv, row 7")
    assert not (tmp_path / "PWNED").exists()  # nothing was executed


def test_parse_trial_type_non_str():
    with pytest.raises(ValueError, match="Empty trial_type"):
        parse_trial_type(float("nan"))
    with pytest.raises(ValueError, match="not a dict literal"):
        parse_trial_type("3.5")


# -- read_masc_events ---------------------------------------------------------------------------------
def _tsv(path, rows, columns=("onset", "duration", "trial_type", "value", "sample")):
    table = pd.DataFrame(rows, columns=list(columns))
    table.to_csv(path, sep="\t", index=False)
    return path


def _ev(kind, sound, **kw):
    return str({"kind": kind, "story": "lw1", "story_uid": 0, "sound": f"stimuli/audio/{sound}.wav", **kw})


def test_read_masc_events(tmp_path):
    rows = [
        (1.0, 16.0, _ev("sound", "lw1_0", sound_id=0), 1, 1000),
        (1.5, 0.3, _ev("word", "lw1_0", word="tara", word_index=0, pronounced=1.0), 2, 1500),
        (1.5, 0.1, _ev("phoneme", "lw1_0", phoneme="t_B", word_index=0), 3, 1500),
        (20.0, 10.0, _ev("sound", "lw1_1", sound_id=1), 4, 20000),
        (21.25, 0.2, _ev("word", "lw1_1", word="was", word_index=1), 5, 21250),
        (25.0, 0.0, "BAD boundary", 6, 25000),
        (30.0, 16.0, _ev("sound", "lw1_0", sound_id=0), 1, 30000),
        (30.4, 0.2, _ev("word", "lw1_0", word="tara", word_index=0), 2, 30400),
        (31.0, 0.2, _ev("word", "lw1_2", word="lost", word_index=2), 7, 31000),
        (32.0, 0.0, "n/a", 0, 32000),
    ]
    ev = read_masc_events(_tsv(tmp_path / "sub-01_ses-0_task-0_events.tsv", rows))
    assert len(ev) == 8  # BAD boundary and n/a skipped
    for col in ("onset", "duration", "sample", "kind", "story", "story_uid", "sound", "sound_id", "word",
                "word_index", "phoneme", "pronounced", "sound_onset", "sound_time"):
        assert col in ev.columns, col
    assert ev["kind"].tolist() == ["sound", "word", "phoneme", "sound", "word", "sound", "word", "word"]
    np.testing.assert_allclose(ev["sound_onset"].to_numpy()[:7], [1.0, 1.0, 1.0, 20.0, 20.0, 30.0, 30.0])
    np.testing.assert_allclose(ev["sound_time"].to_numpy()[:7], [0.0, 0.5, 0.5, 0.0, 1.25, 0.0, 0.4],
                               atol=1e-12)
    assert np.isnan(ev["sound_time"].iloc[7])  # lw1_2 never started
    assert ev["word"].iloc[1] == "tara" and ev["word_index"].iloc[4] == 1 and ev["phoneme"].iloc[2] == "t_B"
    assert ev["word"].iloc[0] is None  # keys missing from a dict are None


def test_read_masc_events_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="events file not found"):
        read_masc_events(tmp_path / "nope_events.tsv")
    p = _tsv(tmp_path / "a_events.tsv", [(1.0, 0.0, 1, 100)], columns=("onset", "duration", "value", "sample"))
    with pytest.raises(ValueError, match=r"a_events\.tsv has no column\(s\) \['trial_type'\]"):
        read_masc_events(p)
    rows = [(1.0, 0.0, _ev("sound", "lw1_0"), 1, 100), (2.0, 0.0, "{'kind': 'word', 'word': x}", 2, 200)]
    with pytest.raises(ValueError, match=r"b_events\.tsv, row 1 \(line 3\)"):
        read_masc_events(_tsv(tmp_path / "b_events.tsv", rows))
    rows = [(1.0, 0.0, "{'story': 'lw1'}", 1, 100)]
    with pytest.raises(ValueError, match="'kind'"):
        read_masc_events(_tsv(tmp_path / "c_events.tsv", rows))


# -- read_wav / find_masc_wav ------------------------------------------------------------------------
def test_read_wav_int16_stereo_float(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(-32768, 32767, size=1000, dtype=np.int16)
    wavfile.write(tmp_path / "mono.wav", 16000, x)
    wave, sf = read_wav(tmp_path / "mono.wav")
    assert sf == 16000.0 and wave.dtype == np.float32 and wave.shape == (1000,)
    np.testing.assert_array_equal(wave, x.astype(np.float32) / 32768)
    assert wave.min() >= -1 and wave.max() <= 1

    st = rng.integers(-32768, 32767, size=(500, 2), dtype=np.int16)
    wavfile.write(tmp_path / "stereo.wav", 44100, st)
    wave, sf = read_wav(tmp_path / "stereo.wav")
    assert sf == 44100.0 and wave.shape == (500,)
    np.testing.assert_allclose(wave, st.astype(np.float32).mean(axis=1) / 32768, rtol=1e-6)

    i32 = rng.integers(-2 ** 31, 2 ** 31 - 1, size=300, dtype=np.int32)
    wavfile.write(tmp_path / "i32.wav", 8000, i32)
    np.testing.assert_allclose(read_wav(tmp_path / "i32.wav")[0], i32 / 2.0 ** 31, rtol=1e-6)

    f = rng.uniform(-1, 1, 200).astype(np.float32)
    wavfile.write(tmp_path / "f.wav", 22050, f)
    np.testing.assert_array_equal(read_wav(tmp_path / "f.wav")[0], f)

    with pytest.raises(FileNotFoundError, match="nope.wav"):
        read_wav(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(ValueError, match="bad.wav"):
        read_wav(tmp_path / "bad.wav")


def test_find_masc_wav(tmp_path):
    audio = tmp_path / "stimuli" / "audio"
    audio.mkdir(parents=True)
    wavfile.write(audio / "lw1_0.wav", 16000, np.zeros(10, np.int16))
    wavfile.write(audio / "Easy_Money_3.wav", 16000, np.zeros(10, np.int16))
    assert find_masc_wav(tmp_path, "stimuli/audio/lw1_0.wav") == audio / "lw1_0.wav"
    assert find_masc_wav(tmp_path, "Stimuli\\Audio\\LW1_0.WAV") == audio / "lw1_0.wav"
    assert find_masc_wav(tmp_path, "stimuli/audio/easy_money_3.wav") == audio / "Easy_Money_3.wav"
    assert find_masc_wav(tmp_path, "elsewhere/lw1_0.0.flac") == audio / "lw1_0.wav"  # by stem
    with pytest.raises(FileNotFoundError, match=r"lw1_9.*tried.*stimuli/audio/lw1_9\.wav.*by stem"):
        find_masc_wav(tmp_path, "stimuli/audio/lw1_9.wav")


# -- masc_recordings -----------------------------------------------------------------------------------
def test_masc_recordings(tmp_path):
    meg = tmp_path / "sub-01" / "ses-0" / "meg"
    meg.mkdir(parents=True)
    (meg / "sub-01_ses-0_task-0_meg.fif").touch()
    (meg / "sub-01_ses-0_task-0_events.tsv").touch()
    (meg / "sub-01_ses-0_task-0_meg.json").touch()  # sidecar, not a recording
    meg2 = tmp_path / "sub-02" / "ses-1" / "meg"
    meg2.mkdir(parents=True)
    (meg2 / "sub-02_ses-1_task-3_meg.con").touch()
    (meg2 / "sub-02_ses-1_task-3_markers.mrk").touch()
    recs = masc_recordings(tmp_path)
    assert recs[["subject", "session", "task"]].values.tolist() == [[1, 0, 0], [2, 1, 3]]
    assert recs["subject_label"].tolist() == ["01", "02"] and recs["task_label"].tolist() == ["0", "3"]
    assert recs["path"].iloc[1].name == "sub-02_ses-1_task-3_meg.con"
    assert recs["events"].iloc[0].name == "sub-01_ses-0_task-0_events.tsv" and recs["events"].iloc[1] is None


def test_masc_recordings_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="MEG-MASC root not found.*participants.tsv"):
        masc_recordings(tmp_path / "missing")
    (tmp_path / "participants.tsv").write_text("participant_id\nsub-01\n")
    with pytest.raises(FileNotFoundError, match="not a MEG-MASC BIDS root.*sub-XX/ses-S/meg"):
        masc_recordings(tmp_path)


# -- WavSegments -----------------------------------------------------------------------------------------
def test_wav_segments():
    waves = [np.arange(10, dtype=np.float32), np.arange(100, 120, dtype=np.float32)]
    seg = WavSegments(waves, [0, 1, 1], [2, 0, 15], 4)
    assert seg.shape == (3, 4) and len(seg) == 3 and seg.dtype == np.float32
    np.testing.assert_array_equal(seg[0], [2, 3, 4, 5])
    np.testing.assert_array_equal(seg[-1], [115, 116, 117, 118])
    np.testing.assert_array_equal(seg[np.array([2, 0])], [[115, 116, 117, 118], [2, 3, 4, 5]])
    np.testing.assert_array_equal(np.asarray(seg)[1], [100, 101, 102, 103])
    np.testing.assert_array_equal(seg[1:, :2], [[100, 101], [115, 116]])
    with pytest.raises(IndexError):
        seg[3]
    with pytest.raises(ValueError, match="inside its waveform"):
        WavSegments(waves, [0], [8], 4)
