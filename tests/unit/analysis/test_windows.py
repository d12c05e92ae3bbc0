"""Time windows and time-window decoding: the decoding peak lands on the planted window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.analysis import crop_times, decode_time_windows, time_windows
from neurodecode.datasets import BrainTrials
from neurodecode.embeddings import StimulusEmbeddings

SFREQ = 100.0
TIMES = np.arange(-0.2, 0.8, 1 / SFREQ)


def _planted(window=(0.3, 0.4), n_train=160, n_test=40, n_ch=8, seed=0):
    """Two subjects whose responses carry the stimulus features only inside ``window``."""
    rng = np.random.default_rng(seed)
    n_stim = n_train + n_test
    feats = rng.standard_normal((n_stim, 6)).astype(np.float32)
    ids = [f"img{i:03d}" for i in range(n_stim)]
    inside = (TIMES >= window[0]) & (TIMES < window[1])
    parts = []
    for subject in (1, 2):
        mix = rng.standard_normal((6, n_ch))
        rows, ev = [], []
        for i in range(n_stim):
            for rep in range(2):
                x = rng.standard_normal((n_ch, len(TIMES))) * 1.0
                x[:, inside] += (feats[i] @ mix)[:, None] * 1.0
                rows.append(x)
                ev.append({"subject": subject, "session": 0, "stimulus_id": ids[i], "repetition": rep,
                           "split": "train" if i < n_train else "test"})
        info = {"modality": "eeg", "sfreq": SFREQ, "ch_names": [f"E{c}" for c in range(n_ch)],
                "times": TIMES.copy(), "tmin": float(TIMES[0])}
        parts.append(BrainTrials(np.stack(rows).astype(np.float32), pd.DataFrame(ev), info))
    trials = BrainTrials.concatenate(parts)
    targets = StimulusEmbeddings(ids, np.concatenate([feats, 0.1 * rng.standard_normal((n_stim, 4))], 1)
                                 .astype(np.float32))
    return trials, targets


def test_time_windows_sliding_and_growing():
    assert time_windows(0.0, 0.3, 0.1) == [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)]
    assert time_windows(0.0, 0.3, 0.1, 0.05)[:2] == [(0.0, 0.1), (0.05, 0.15)]
    assert len(time_windows(0.0, 0.3, 0.1, 0.05)) == 5
    assert time_windows(0.0, 0.3, 0.1, mode="growing") == [(0.0, 0.1), (0.0, 0.2), (0.0, 0.3)]
    with pytest.raises(ValueError, match="no window"):
        time_windows(0.0, 0.1, 0.5)
    with pytest.raises(ValueError, match="tmax must be > tmin"):
        time_windows(0.3, 0.0, 0.1)
    with pytest.raises(ValueError, match="mode"):
        time_windows(0.0, 1.0, 0.1, mode="jumping")


def test_crop_times_is_half_open_and_updates_info():
    trials, _ = _planted(n_train=4, n_test=2)
    a = crop_times(trials, 0.0, 0.1)
    b = crop_times(trials, 0.1, 0.2)
    assert a.get_data().shape[-1] == 10 and b.get_data().shape[-1] == 10
    ta = a.info["subjects_info"][1]["times"]
    assert np.isclose(ta[0], 0.0) and np.isclose(ta[-1], 0.09)
    assert np.allclose(a.get_data(), trials.get_data()[:, :, 20:30])
    with pytest.raises(ValueError, match="holds no sample"):
        crop_times(trials, 2.0, 3.0)


def test_decoding_peaks_in_the_planted_window():
    trials, targets = _planted(window=(0.3, 0.4))
    train = trials.select(split="train")
    test = trials.select(split="test").average_repetitions()
    windows = time_windows(-0.2, 0.8, 0.1)
    frame = decode_time_windows(train, test, targets, windows, n_candidates=None, n_repeats=1, n_boot=50,
                                alphas=(1.0, 100.0, 1e4), topk=(1, 5))
    assert list(frame["start"]) == [w[0] for w in windows]
    peak = frame.iloc[frame.attrs["peak"]]
    assert (peak["start"], peak["stop"]) == pytest.approx((0.3, 0.4))
    assert peak["nway_top1_forward"] > 0.5
    off = frame.drop(index=frame.attrs["peak"])
    # Outside the planted window retrieval is at chance: top-5 among 40 stays near 5/40.
    assert off["top5_forward"].max() < 0.4
    assert (frame["nway_top1_forward_ci_low"] <= frame["nway_top1_forward"]).all()
