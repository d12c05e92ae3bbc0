"""M/EEG preprocessing: picking, cropping, baseline, filtering, resampling, robust scaling, the chain."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from neurodecode.datasets import BrainTrials
from neurodecode.utils import RaggedData
from neurodecode.preprocessing import (
    MEEGPreprocessor,
    RobustScaler,
    apply_baseline,
    crop,
    filter_trials,
    pick_channels,
    resample_trials,
)

NAMES = ["Fp1", "Cz", "T7", "P3", "O1", "O2"]
SFREQ = 500.0
N_TIMES = 200
TMIN = -0.1


def _times(n=N_TIMES, sfreq=SFREQ, tmin=TMIN):
    return tmin + np.arange(n) / sfreq


def make_trials(subject=1, *, n=40, scale=1.0, offset=0.0, seed=0, names=NAMES, n_test=10, data=None):
    """``n`` trials × channels × 200 samples at 500 Hz (-0.1 to 0.298 s); the last ``n_test`` are test."""
    rng = np.random.default_rng(seed)
    if data is None:
        data = (offset + scale * rng.standard_normal((n, len(names), N_TIMES))).astype(np.float32)
    events = pd.DataFrame({
        "subject": subject, "session": 1, "stimulus_id": [f"img{i}" for i in range(n)],
        "repetition": 0, "split": ["train"] * (n - n_test) + ["test"] * n_test,
    })
    pos = np.full((len(names), 3), np.nan)
    pos[:, 0] = np.arange(len(names))
    info = {"modality": "eeg", "sfreq": SFREQ, "ch_names": list(names), "ch_types": ["eeg"] * len(names),
            "ch_pos": pos, "times": _times(), "tmin": TMIN, "source": "synthetic"}
    return BrainTrials(data, events, info)


def two_subjects():
    return BrainTrials.concatenate([make_trials(1, scale=1.0, seed=1),
                                    make_trials(2, scale=5.0, offset=3.0, seed=2)])


def sines(freqs, n=4):
    t = _times()
    sig = sum(np.sin(2 * np.pi * f * t) for f in freqs)
    return np.broadcast_to(sig, (n, len(NAMES), N_TIMES)).astype(np.float32).copy()


def _meg_trials():
    names = ["MEG0111", "MEG0112", "MEG0113", "MEG0121", "EOG061", "STI014"]
    types = ["mag", "grad", "grad", "mag", "eog", "stim"]
    t = make_trials(names=names, n=6, n_test=0)
    t.info.update(modality="meg", ch_types=types)
    return t


# -- pick_channels ---------------------------------------------------------------------------------
def test_pick_by_names_regions_types_keeps_channel_order_and_info():
    t = make_trials()
    before = t.data.copy()
    out = pick_channels(t, ["O2", "frontal", "left_temporal"])
    assert out.info["ch_names"] == ["Fp1", "T7", "O2"]
    assert out.info["ch_types"] == ["eeg"] * 3
    np.testing.assert_array_equal(out.info["ch_pos"][:, 0], [0, 2, 5])
    np.testing.assert_array_equal(out.data, t.data[:, [0, 2, 5]])
    assert out.info["source"] == "synthetic" and out.info["sfreq"] == SFREQ
    assert out.info["preprocessing"] == [
        {"step": "pick_channels", "picks": ["O2", "frontal", "left_temporal"]}]
    np.testing.assert_array_equal(t.data, before)                     # input untouched
    assert t.info["ch_names"] == NAMES and "preprocessing" not in t.info
    assert pick_channels(t, "occipital").info["ch_names"] == ["O1", "O2"]
    assert pick_channels(t, "eeg").shape == t.shape


def test_pick_by_meg_types():
    t = _meg_trials()
    assert pick_channels(t, "meg").info["ch_names"] == ["MEG0111", "MEG0112", "MEG0113", "MEG0121"]
    assert pick_channels(t, "mag").info["ch_types"] == ["mag", "mag"]
    assert pick_channels(t, ["grad", "eog"]).info["ch_names"] == ["MEG0112", "MEG0113", "EOG061"]


def test_pick_without_ch_types_uses_modality():
    t = make_trials()
    del t.info["ch_types"]
    assert pick_channels(t, "eeg").info["ch_names"] == NAMES


def test_pick_errors():
    t = make_trials()
    with pytest.raises(ValueError, match="Unknown pick 'visual'") as err:
        pick_channels(t, ["Cz", "visual"])
    msg = str(err.value)
    assert "occipital" in msg and "left_temporal" in msg and "'eeg'" in msg and "Fp1" in msg
    with pytest.raises(ValueError, match="Unknown pick 'meg'"):
        pick_channels(t, "meg")
    with pytest.raises(ValueError, match="empty"):
        pick_channels(t, [])
    with pytest.raises(TypeError, match="BrainTrials"):
        pick_channels(t.data, "Cz")
    fmri = BrainTrials(np.zeros((2, 5)), t.events.iloc[:2], {"modality": "fmri"})
    with pytest.raises(ValueError, match="fMRI"):
        pick_channels(fmri, "Cz")


def test_per_subject_channel_sets_give_ragged_data_in_row_order():
    a = make_trials(1, seed=1)
    b = make_trials(2, seed=2, names=["Fp1", "Cz", "O1", "O2"])
    both = BrainTrials.concatenate([a, b])
    assert both.is_ragged
    perm = np.random.default_rng(0).permutation(len(both))
    mixed = both[perm]                                   # interleaved subjects
    out = pick_channels(mixed, ["Cz", "occipital"])
    assert not out.is_ragged                              # same channels now: one array
    assert out.info["subjects_info"][2]["ch_names"] == ["Cz", "O1", "O2"]
    for i in range(len(mixed)):
        row = mixed[i].get_data()[0]
        keep = [1, 4, 5] if mixed.events["subject"][i] == 1 else [1, 2, 3]
        np.testing.assert_array_equal(out.data[i], row[keep])
    out2 = pick_channels(mixed, "frontal")
    np.testing.assert_array_equal(out2.events["stimulus_id"], mixed.events["stimulus_id"])
    t3 = BrainTrials.concatenate([a, make_trials(2, seed=2, names=["Fp2", "Cz", "O1", "O2"])])
    out3 = pick_channels(t3, "frontal")
    assert isinstance(out3.data, RaggedData)              # Fp1 vs Fp2: different channel sets
    assert {s: sub.info["ch_names"] for s, sub in out3.by_subject().items()} == {1: ["Fp1"], 2: ["Fp2"]}


# -- crop / baseline -------------------------------------------------------------------------------
def test_crop_is_inclusive_and_updates_times():
    t = make_trials()
    out = crop(t, 0.0, 0.1)
    assert out.shape == (40, 6, 51)
    assert out.info["times"][0] == pytest.approx(0.0) and out.info["times"][-1] == pytest.approx(0.1)
    assert out.info["tmin"] == pytest.approx(0.0)
    np.testing.assert_array_equal(out.data, t.data[:, :, 50:101])
    assert crop(t, tmin=0.0011).info["times"][0] == pytest.approx(0.002)    # nearest sample
    assert crop(t).shape == t.shape
    assert crop(t, tmax=TMIN).shape[-1] == 1
    assert crop(t, tmin=0.298).shape[-1] == 1


def test_crop_errors_and_clipping():
    t = make_trials()
    with pytest.raises(ValueError, match="tmin"):
        crop(t, 0.2, 0.1)
    with pytest.warns(UserWarning, match="beyond"):
        out = crop(t, -1.0, 0.0)
    assert out.info["tmin"] == pytest.approx(TMIN) and out.shape[-1] == 51
    with pytest.warns(UserWarning, match="beyond"), pytest.raises(ValueError, match="holds no sample"):
        crop(t, 1.0, 2.0)
    with pytest.raises(ValueError, match="finite"):
        crop(t, tmin=float("nan"))
    del t.info["times"]                                   # falls back to tmin + arange / sfreq
    assert crop(t, 0.0, 0.1).shape[-1] == 51


def test_baseline_zeroes_the_window_mean():
    t = make_trials(offset=7.0)
    out = apply_baseline(t)
    pre = out.data[:, :, :51]                             # -0.1 .. 0.0 s inclusive
    np.testing.assert_allclose(pre.mean(-1), 0.0, atol=1e-5)
    shift = np.broadcast_to(-t.data[:, :, :51].mean(-1, keepdims=True, dtype=np.float64), t.shape)
    np.testing.assert_allclose(out.data - t.data, shift, atol=1e-5)
    assert out.data.dtype == np.float32
    out2 = apply_baseline(t, (0.1, None))
    np.testing.assert_allclose(out2.data[:, :, 100:].mean(-1), 0.0, atol=1e-5)
    assert out2.info["preprocessing"][-1] == {"step": "baseline", "baseline": [0.1, None]}


def test_baseline_errors():
    t = make_trials()
    late = crop(t, 0.05, None)
    with pytest.raises(ValueError, match="holds no sample"):
        apply_baseline(late, (None, 0.0))
    for bad in (None, (0.0,), (0.1, 0.0), ("a", 0.0)):
        with pytest.raises(ValueError, match="baseline"):
            apply_baseline(t, bad)


# -- filter / resample -----------------------------------------------------------------------------
def test_lowpass_removes_50hz_and_keeps_5hz():
    pytest.importorskip("mne")
    t = make_trials(data=sines([5.0, 50.0]), n=4, n_test=0)
    out = filter_trials(t, h_freq=30.0)
    assert out.data.dtype == np.float32 and out.shape == t.shape
    clean = _times()
    expected = np.sin(2 * np.pi * 5.0 * clean)
    inner = slice(25, -25)
    np.testing.assert_allclose(out.data[0, 0, inner], expected[inner], atol=0.05)
    spec = np.abs(np.fft.rfft(out.data[0, 0] - expected))
    freqs = np.fft.rfftfreq(N_TIMES, 1 / SFREQ)
    orig = np.abs(np.fft.rfft(t.data[0, 0]))
    assert spec[freqs == 50.0] < 0.02 * orig[freqs == 50.0]
    assert out.info["preprocessing"][-1]["step"] == "filter"


def test_highpass_and_bandpass_remove_offset():
    pytest.importorskip("mne")
    t = make_trials(data=sines([10.0]) + 4.0, n=4, n_test=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # MNE: filter longer than these short trials
        hp = filter_trials(t, l_freq=2.0)
        bp = filter_trials(t, l_freq=2.0, h_freq=40.0)
    for out in (hp, bp):
        assert abs(out.data[:, :, 25:-25].mean()) < 0.2


def test_filter_errors():
    t = make_trials()
    with pytest.raises(ValueError, match="both are None"):
        filter_trials(t)
    with pytest.raises(ValueError, match="below h_freq"):
        filter_trials(t, 40.0, 30.0)
    with pytest.raises(ValueError, match="Nyquist"):
        filter_trials(t, h_freq=250.0)
    with pytest.raises(ValueError, match="positive"):
        filter_trials(t, l_freq=-1.0)


def test_resample_halves_length_and_keeps_a_slow_sine():
    t = make_trials(data=sines([5.0]), n=4, n_test=0)
    out = resample_trials(t, 250.0)
    assert out.shape == (4, 6, 100) and out.data.dtype == np.float32
    assert out.info["sfreq"] == 250.0 and out.info["tmin"] == pytest.approx(TMIN)
    np.testing.assert_allclose(out.info["times"], TMIN + np.arange(100) / 250.0)
    expected = np.sin(2 * np.pi * 5.0 * out.info["times"])
    np.testing.assert_allclose(out.data[0, 0], expected, atol=0.02)
    np.testing.assert_allclose(out.data[0, 0, 5:-5], expected[5:-5], atol=2e-3)
    assert out.info["preprocessing"] == [{"step": "resample", "sfreq": 250.0}]


def test_resample_to_120_hz_and_inexact_ratio():
    t = make_trials(n=4, n_test=0)
    out = resample_trials(t, 120.0)
    assert out.shape[-1] == 48 and out.info["sfreq"] == 120.0      # 200 × 6/25
    odd = SFREQ * 7 / 1009                                           # 1009 > 1000: not representable
    with pytest.warns(UserWarning, match="instead"):
        out = resample_trials(t, odd)
    assert out.info["sfreq"] != odd and out.info["sfreq"] == pytest.approx(odd, rel=1e-3)
    assert len(out.info["times"]) == out.shape[-1]
    same = resample_trials(t, SFREQ)
    np.testing.assert_array_equal(same.data, t.data)
    for bad in (0.0, -5.0, "fast"):
        with pytest.raises(ValueError, match="sfreq"):
            resample_trials(t, bad)


# -- RobustScaler ----------------------------------------------------------------------------------
def _poison_test_rows(t, value=1e6):
    """Huge, non-constant values on the test rows (a constant would vanish under baseline correction)."""
    data = t.data.copy()
    test = (t.events["split"] == "test").to_numpy()
    data[test] = value * (1.0 + np.random.default_rng(5).random(data[test].shape))
    return BrainTrials(data, t.events, t.info)


def test_robust_scaler_statistics_and_clip():
    t = make_trials(scale=2.0, offset=1.0)
    train = t.select(split="train")
    scaler = RobustScaler().fit(train)
    x = train.data.transpose(1, 0, 2).reshape(6, -1).astype(np.float64)
    q1, med, q3 = np.percentile(x, [25, 50, 75], axis=1)
    np.testing.assert_allclose(scaler.center_[1], med, rtol=1e-6)
    np.testing.assert_allclose(scaler.scale_[1], q3 - q1, rtol=1e-6)
    assert scaler.ch_names_[1] == NAMES and scaler.n_samples_[1] == 30 * N_TIMES
    out = scaler.transform(_poison_test_rows(t))
    assert out.data.dtype == np.float32
    assert np.abs(out.data).max() == pytest.approx(20.0)
    np.testing.assert_allclose(out.data[(t.events["split"] == "test").to_numpy()], 20.0)
    scaled_train = out.data[:30].astype(np.float64)
    np.testing.assert_allclose(np.median(scaled_train.transpose(1, 0, 2).reshape(6, -1), 1), 0, atol=1e-5)
    unclipped = RobustScaler(clip=None).fit(train).transform(_poison_test_rows(t))
    assert np.abs(unclipped.data).max() > 1e5
    assert out.info["preprocessing"][-1] == {"step": "robust_scale", "clip": 20.0,
                                             "quantile_range": [25.0, 75.0]}


def test_robust_scaler_ignores_rows_it_is_not_given():
    t = make_trials()
    a = RobustScaler().fit(t.select(split="train"))
    b = RobustScaler().fit(_poison_test_rows(t).select(split="train"))
    np.testing.assert_array_equal(a.center_[1], b.center_[1])
    np.testing.assert_array_equal(a.scale_[1], b.scale_[1])


def test_robust_scaler_zero_iqr_and_params():
    data = np.random.default_rng(0).standard_normal((10, 6, N_TIMES)).astype(np.float32)
    data[:, 2] = 3.0                                            # flat channel
    t = make_trials(data=data, n=10, n_test=0)
    s = RobustScaler().fit(t)
    assert s.scale_[1][2] == 1.0 and s.center_[1][2] == 3.0
    np.testing.assert_allclose(s.transform(t).data[:, 2], 0.0)
    assert s.get_params() == {"clip": 20.0, "quantile_range": (25.0, 75.0)}
    assert s.set_params(clip=5.0) is s and s.clip == 5.0
    assert repr(s) == "RobustScaler(clip=5.0, quantile_range=(25.0, 75.0))"
    with pytest.raises(ValueError, match="Invalid parameter 'foo'"):
        s.set_params(foo=1)
    for params in ({"clip": 0.0}, {"clip": -1}, {"quantile_range": (75.0, 25.0)},
                   {"quantile_range": (10.0, 120.0)}, {"quantile_range": 50}):
        with pytest.raises(ValueError, match="clip|quantile_range"):
            RobustScaler(**params).fit(t)


def test_robust_scaler_rejects_unfitted_subjects_and_channels():
    t = two_subjects()
    with pytest.raises(RuntimeError, match="not fitted"):
        RobustScaler().transform(t)
    s = RobustScaler().fit(t.select(subject=1))
    with pytest.raises(ValueError, match="not fitted on subject 2"):
        s.transform(t)
    with pytest.raises(ValueError, match="differ from those"):
        s.transform(pick_channels(t.select(subject=1), "occipital"))
    bad = make_trials(data=np.full((4, 6, N_TIMES), np.nan, np.float32), n=4, n_test=0)
    with pytest.raises(ValueError, match="NaN"):
        RobustScaler().fit(bad)


def test_robust_scaler_is_per_subject_without_subjects_info():
    a, b = make_trials(1, seed=1), make_trials(2, scale=10.0, seed=2)
    t = BrainTrials(np.concatenate([a.data, b.data]), pd.concat([a.events, b.events], ignore_index=True),
                    a.info)                                     # shared info, two subjects
    s = RobustScaler().fit(t.select(split="train"))
    assert set(s.center_) == {1, 2}
    assert s.scale_[2].mean() > 5 * s.scale_[1].mean()
    out = s.transform(t)
    assert "subjects_info" not in out.info and out.info["ch_names"] == NAMES
    for subj in (1, 2):
        rows = (t.events["subject"] == subj).to_numpy() & (t.events["split"] == "train").to_numpy()
        assert np.median(out.data[rows]) == pytest.approx(0.0, abs=0.05)


# -- MEEGPreprocessor ------------------------------------------------------------------------------
def test_preprocessor_defaults_are_brainmagick():
    p = MEEGPreprocessor()
    assert p.get_params() == {"picks": None, "l_freq": None, "h_freq": None, "sfreq": 120.0, "tmin": None,
                              "tmax": None, "baseline": (None, 0.0), "scaler": "robust", "clip": 20.0}
    assert repr(p).startswith("MEEGPreprocessor(picks=None, l_freq=None, h_freq=None, sfreq=120.0")


def test_preprocessor_end_to_end_two_subjects():
    pytest.importorskip("mne")
    t = two_subjects()
    before = t.data.copy()
    prep = MEEGPreprocessor(picks=["frontal", "central", "occipital"], h_freq=40.0, sfreq=250.0,
                            tmin=-0.05, tmax=0.25, baseline=(None, 0.0))
    out = prep.fit_transform(t)
    np.testing.assert_array_equal(t.data, before)
    # MNE semantics: -0.05 and 0.25 fall between samples (-0.1 + k / 250), rounded to -0.048 and 0.248
    assert out.shape == (80, 4, 75)
    assert [r["step"] for r in out.info["preprocessing"]] == [
        "pick_channels", "filter", "resample", "crop", "baseline", "robust_scale"]
    for info in out.info["subjects_info"].values():
        assert info["ch_names"] == ["Fp1", "Cz", "O1", "O2"]
        assert info["ch_types"] == ["eeg"] * 4 and info["ch_pos"].shape == (4, 3)
        assert info["sfreq"] == 250.0 and info["tmin"] == pytest.approx(-0.048)
        assert len(info["times"]) == 75 and info["times"][-1] == pytest.approx(0.248)
        assert len(info["preprocessing"]) == 6 and info["source"] == "synthetic"
    sub = out.by_subject()
    assert sub[2].info["sfreq"] == 250.0 and sub[2].shape == (40, 4, 75)
    assert prep.subjects_ == [1, 2] and prep.n_train_trials_ == 60
    assert prep.scaler_.scale_[2].mean() > 3 * prep.scaler_.scale_[1].mean()  # per-subject scalers
    assert np.abs(out.data).max() <= 20.0
    for s in (1, 2):
        tr = sub[s].select(split="train").data
        assert np.median(tr) == pytest.approx(0.0, abs=0.05)
    again = MEEGPreprocessor(**prep.get_params()).fit(t).transform(t)
    np.testing.assert_allclose(again.data, out.data, atol=1e-6)


def test_preprocessor_fits_on_train_rows_only():
    t = two_subjects()
    poisoned = _poison_test_rows(t)
    p1 = MEEGPreprocessor(sfreq=None).fit(t)
    p2 = MEEGPreprocessor(sfreq=None).fit(poisoned)
    for s in (1, 2):
        np.testing.assert_array_equal(p1.scaler_.center_[s], p2.scaler_.center_[s])
        np.testing.assert_array_equal(p1.scaler_.scale_[s], p2.scaler_.scale_[s])
    out = p2.transform(poisoned)
    assert np.abs(out.data).max() == pytest.approx(20.0)
    assert out.info["subjects_info"][1]["sfreq"] == SFREQ      # sfreq=None keeps the rate
    with pytest.raises(ValueError, match="split == 'train'"):
        MEEGPreprocessor().fit(t.select(split="test"))
    with pytest.raises(ValueError, match="split == 'train'"):
        MEEGPreprocessor().fit_transform(t.select(split="test"))


def test_preprocessor_without_scaler_or_baseline():
    t = make_trials()
    out = MEEGPreprocessor(sfreq=None, baseline=None, scaler=None).fit_transform(t)
    np.testing.assert_array_equal(out.data, t.data)
    assert out.info.get("preprocessing", []) == []
    prep = MEEGPreprocessor(scaler=None, clip=None).fit(t)
    assert prep.scaler_ is None
    assert prep.transform(t).shape == (40, 6, 48)


@pytest.mark.parametrize("params, match", [
    ({"sfreq": 0.0}, "sfreq"), ({"sfreq": -120.0}, "sfreq"), ({"l_freq": 40.0, "h_freq": 30.0}, "below"),
    ({"h_freq": -1.0}, "positive"), ({"scaler": "standard"}, "scaler"), ({"clip": 0}, "clip"),
    ({"tmin": 0.2, "tmax": 0.1}, "tmin"), ({"baseline": (0.1, 0.0)}, "baseline"),
    ({"baseline": 0.0}, "baseline"), ({"picks": []}, "picks"), ({"picks": 3}, "picks"),
])
def test_preprocessor_bad_parameters(params, match):
    t = make_trials()
    with pytest.raises(ValueError, match=match):
        MEEGPreprocessor(**params).fit(t)
    with pytest.raises(ValueError, match=match):
        MEEGPreprocessor().set_params(**params).fit_transform(t)


def test_preprocessor_data_dependent_errors():
    t = make_trials()
    with pytest.raises(ValueError, match="Nyquist"):
        MEEGPreprocessor(h_freq=300.0, sfreq=None).fit(t)
    with pytest.raises(ValueError, match="Unknown pick"):
        MEEGPreprocessor(picks="mag").fit(t)
    with pytest.raises(ValueError, match="holds no sample"):
        MEEGPreprocessor(tmin=0.05).fit(t)                      # baseline (None, 0) outside the window
    with pytest.raises(RuntimeError, match="not fitted"):
        MEEGPreprocessor().transform(t)
    with pytest.raises(ValueError, match="Invalid parameter"):
        MEEGPreprocessor().set_params(high_pass=1.0)
    prep = MEEGPreprocessor().fit(make_trials(1))
    with pytest.raises(ValueError, match="not fitted on subject 2"):
        prep.transform(make_trials(2))
