"""The pieces of the NSD, MEG-MASC and THINGS-MEG simulators, each on its own."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from neurodecode.datasets import _sim_masc as SM
from neurodecode.datasets import _sim_things as ST

S = importlib.import_module("neurodecode.datasets.simulate")  # the module (the package exports the function)


# ================================================================ NSD (_simulate_subject pieces)
def test_voxel_levels_draw_order_and_scaling():
    shell = np.array([True, False, False, True, False])
    mask = np.array([False, True, False, True, False])
    noise_sd, snr_v, baseline, loading = S._voxel_levels(shell, mask, 0.4, np.random.default_rng(3))
    ref = np.random.default_rng(3)  # the same draws, in the documented order
    np.testing.assert_array_equal(noise_sd, np.where(shell, 1.5, 1.0) * ref.lognormal(0, 0.25, 5))
    np.testing.assert_array_equal(snr_v[mask], 0.4 * ref.lognormal(0, 0.35, 2))
    assert (snr_v[~mask] == 0).all()
    np.testing.assert_array_equal(baseline, ref.normal(0.5, 0.6, 5))
    np.testing.assert_array_equal(loading, ref.uniform(0.5, 1.5, 5))


def test_network_signal_linear_and_none():
    sem = np.random.default_rng(0).standard_normal((6, 8))
    groups = {g: slice(2 * i, 2 * i + 2) for i, g in enumerate(S.NETWORK_TUNING)}
    uniq = np.array([1, 3, 5])
    assert S._network_signal(0, uniq, sem, groups, None, np.random.default_rng(1), None) is None
    f = S._network_signal(3, uniq, sem, groups, None, np.random.default_rng(1), None)
    sem_c, w = S._network_weights(sem[uniq], groups, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(f(np.array([2, 0])), sem_c[[2, 0]] @ w)


def _model(**kw) -> S._BetaModel:
    shape = (3, 3, 3)
    brain = np.array([0, 4, 13, 26])
    base = dict(shape=shape, brain_idx=brain, noise_sd=np.zeros(4), amp=np.zeros(4, np.float32),
                baseline=np.array([0.1, -0.2, 0.0, 1.0]), loading=np.zeros(4), gen_cols=np.array([1, 2]),
                sig_rows=np.array([[1.0, -1.0], [2.0, 0.5]], np.float32), extra_cols=np.array([], int),
                noise_norm=1.0, extra_signal=None)
    return S._BetaModel(**{**base, **kw})


def test_session_betas_baseline_only():
    betas = S._session_betas(_model(), np.array([0, 1, 1]), 3, np.random.default_rng(0))
    assert betas.shape == (3, 3, 3, 3) and betas.dtype == np.int16
    flat = betas.reshape(27, 3)
    expect = np.rint(np.array([0.1, -0.2, 0.0, 1.0]) * 300)[:, None].repeat(3, 1)
    np.testing.assert_array_equal(flat[[0, 4, 13, 26]], expect)
    assert (np.delete(flat, [0, 4, 13, 26], axis=0) == 0).all()  # outside the brain


def test_session_betas_planted_signal_times_gain():
    amp = np.array([0.0, 0.5, 2.0, 0.0], np.float32)
    m = _model(amp=amp, baseline=np.zeros(4))
    imgs = np.array([1, 0])
    betas = S._session_betas(m, imgs, 2, np.random.default_rng(5)).reshape(27, 2)[m.brain_idx]
    ref = np.random.default_rng(5)
    ref.normal(0, 0.8, 4)  # session offset (times noise_sd = 0)
    scale = ref.lognormal(0, 0.2, 4).astype(np.float32)
    expect = np.zeros((4, 2))
    expect[[1, 2]] = (m.sig_rows[imgs] * amp[[1, 2]] * scale[[1, 2]]).T * 300
    np.testing.assert_allclose(betas, np.rint(expect), atol=1)


def test_session_betas_network_voxels_use_extra_signal():
    m = _model(amp=np.ones(4, np.float32), baseline=np.zeros(4), gen_cols=np.array([], int),
               sig_rows=np.zeros((2, 0), np.float32), extra_cols=np.array([3]),
               extra_signal=lambda images: np.where(images == 1, 1.0, 0.0)[:, None])
    betas = S._session_betas(m, np.array([0, 1]), 2, np.random.default_rng(2)).reshape(27, 2)[m.brain_idx]
    assert (betas[:3] == 0).all() and betas[3, 0] == 0 and betas[3, 1] > 100


# ================================================================ MEG-MASC (write_masc pieces)
P_MASC = {"subject_similarity": 0.5, "n_mels": 4, "snr": 1.0, "sfreq": 100.0}


def test_subject_weights_share_and_mask():
    planted = np.array([True, False, True])
    W1, g1 = SM._subject_weights({**P_MASC, "subject_similarity": 1.0}, planted, np.random.default_rng(1),
                                 np.random.default_rng(0))
    W2, _ = SM._subject_weights({**P_MASC, "subject_similarity": 1.0}, planted, np.random.default_rng(2),
                                np.random.default_rng(0))
    np.testing.assert_array_equal(W1, W2)  # fully shared
    assert W1.shape == (3, 4) and (W1[1] == 0).all() and g1.shape == (3,)
    assert np.all((g1 > 0.3 * SM._GAIN_T) & (g1 < 3 * SM._GAIN_T))
    W3, _ = SM._subject_weights({**P_MASC, "subject_similarity": 0.0}, planted, np.random.default_rng(1),
                                np.random.default_rng(9))
    own = np.random.default_rng(1).standard_normal((3, 4)) * planted[:, None]
    np.testing.assert_array_equal(W3, own)  # nothing shared


def test_recording_data_is_scaled_signal_plus_noise():
    pos = np.random.default_rng(0).normal(size=(3, 3)) * 0.05 + [0, 0, 0.08]
    sig = np.random.default_rng(1).standard_normal((3, 200))
    gain = np.array([1.0, 2.0, 0.5])
    a = SM._recording_data(sig, gain, pos, {**P_MASC, "snr": 0.0}, np.random.default_rng(4))
    b = SM._recording_data(sig, gain, pos, {**P_MASC, "snr": 2.0}, np.random.default_rng(4))
    assert a.shape == (3, 200)
    np.testing.assert_allclose(b - a, 2.0 * sig * gain[:, None], atol=1e-9)
    assert np.abs(a.mean(axis=1)).max() > 0  # DC / drift present


def test_masc_truth_records_the_nonlinear_model_only_when_used():
    p = {"signal_channels": ["temporal"], "signal_window": [0.05, 0.25], "n_mels": 4, "audio_sfreq": 100}
    stories = [{"story": "lw1", "uid": 0, "sounds": [{"file": "s/a.wav", "pcm": np.zeros(250)}], "n_words": 3,
                "n_sentences": 1}]
    args = (p, {"01": {"signal_channels": ["MEG 001"]}}, stories, [{"word": "ba"}], {"r": 1},
            np.array([0.1]), np.array([1.0]))
    lin, nl = SM._masc_truth(*args, False), SM._masc_truth(*args, True)
    assert lin["signal_channels"] == ["MEG 001"] and lin["vocabulary"] == ["ba"] and lin["n_words"] == 3
    assert lin["stories"]["lw1"]["sound_durations_s"] == [2.5] and lin["recordings"] == {"r": 1}
    assert "response" not in lin["model"] and nl["model"]["response"] == "nonlinear"


# ================================================================ THINGS-MEG (write_things_meg pieces)
def test_meg_image_files():
    rel, ids, splits = ST._meg_image_files(["cat", "dog"], ["cup"], 2, 1)
    assert rel == ["images_meg/cat/cat_01b.jpg", "images_meg/cat/cat_02b.jpg", "images_meg/dog/dog_01b.jpg",
                   "images_meg/dog/dog_02b.jpg", "images_test_meg/cup_03s.jpg",
                   "images_catch_meg/catch_001.jpg"]
    assert ids == ["cat_01b", "cat_02b", "dog_01b", "dog_02b", "cup_03s", "catch_001"]
    assert splits == ["train"] * 4 + ["test", "catch"]


def test_meg_info_coil_frames_are_orthonormal():
    pytest.importorskip("mne")
    pos = np.array([[0.0, 0.0, 0.14], [0.08, 0.0, 0.08], [0.0, -0.09, 0.05]])
    info = ST._meg_info(["A", "B", "C"], pos, 200.0)
    assert info["sfreq"] == 200.0 and info["description"].startswith("neurodecode simulated THINGS-MEG")
    for ch, xyz in zip(info["chs"], pos):
        np.testing.assert_allclose(ch["loc"][:3], xyz)
        frame = ch["loc"][3:12].reshape(3, 3)
        np.testing.assert_allclose(frame @ frame.T, np.eye(3), atol=1e-12)
        radial = (xyz - [0, 0, 0.04]) / np.linalg.norm(xyz - [0, 0, 0.04])
        np.testing.assert_allclose(frame[2], radial)


def test_save_meg_epochs_round_trip(tmp_path):
    mne = pytest.importorskip("mne")
    pos = np.array([[0.0, 0.05, 0.12], [0.06, 0.0, 0.1]])
    info = ST._meg_info(["A", "B"], pos, 100.0)
    n_t = 5
    data = np.random.default_rng(0).standard_normal((3, 2, n_t)).astype(np.float32) * 1e-13
    meta = pd.DataFrame({"trial_type": ["exp", "test", "catch"], "image_nr": [1.0, 2.0, np.nan]})
    path = tmp_path / "x-epo.fif"
    ST._save_meg_epochs(path, data, info, np.array([100, 250, 400]), meta)
    ep = mne.read_epochs(path, verbose="error")
    assert ep.events[:, 0].tolist() == [100, 250, 400] and ep.event_id == {"image": ST._MEG_TRIGGER}
    assert ep.tmin == pytest.approx(ST._MEG_TMIN) and ep.metadata["trial_type"].tolist() == ["exp", "test",
                                                                                             "catch"]
    np.testing.assert_allclose(ep.get_data(), data, rtol=1e-6)
