"""The simulators' ``response`` parameter: "linear" (the original model) and "nonlinear".

- "linear" is the default and leaves every written array and the resolved parameters unchanged;
- "nonlinear" is deterministic from the seed and recorded in simulation.json;
- a bad value is a clear ValueError;
- science checks: nonlinear NSD responses are compressive in contrast (early areas) and not linear in
  the semantic features (higher areas, where a tuning-curve regressor recovers them); nonlinear M/EEG
  responses carry trial-to-trial latency jitter and are not a linear filter of the spectrogram.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from neurodecode.datasets import _procedural as proc
from neurodecode.datasets import simulate
from neurodecode.io.nsd import NSDLayout

sim_nsd = importlib.import_module("neurodecode.datasets.simulate")

NSD = {"n_subjects": 1, "n_sessions": 1, "trials_per_session": 60, "image_size": 16, "grid": (12, 14, 12),
       "signal_rois": ("early", "ventral", "Default"), "seed": 4, "verbose": "warning"}


def _params(root: Path) -> dict:
    return json.loads((root / "simulation.json").read_text())["parameters"]


def _nsd_betas(root: Path) -> np.ndarray:
    with h5py.File(NSDLayout(root).betas_file(1, 1, "hdf5"), "r") as f:
        return f["betas"][:]


def _ncsnr(root: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(NSDLayout(root).ncsnr(1)).dataobj)


# --------------------------------------------------------------------------- NSD
def test_nsd_nonlinear_is_the_default_and_linear_keeps_its_parameters(tmp_path):
    default = simulate("nsd", tmp_path / "default", **NSD)
    nonlinear = simulate("nsd", tmp_path / "nonlinear", response="nonlinear", **NSD)
    linear = simulate("nsd", tmp_path / "linear", response="linear", **NSD)
    assert _params(default) == _params(nonlinear) and _params(default)["response"] == "nonlinear"
    np.testing.assert_array_equal(_nsd_betas(nonlinear), _nsd_betas(default))
    # linear simulations record no "response", as before the mode existed: their caches stay valid
    assert "response" not in _params(linear)
    assert {k: v for k, v in _params(default).items() if k != "response"} == _params(linear)
    # an existing linear simulation is reused for response="linear" (same resolved parameters)
    assert simulate("nsd", tmp_path / "linear", response="linear", **NSD) == tmp_path / "linear"


def test_nsd_nonlinear_is_deterministic_and_recorded(tmp_path):
    a = simulate("nsd", tmp_path / "a", response="nonlinear", **NSD)
    b = simulate("nsd", tmp_path / "b", response="nonlinear", **NSD)
    lin = simulate("nsd", tmp_path / "lin", response="linear", **NSD)
    assert _params(a)["response"] == "nonlinear"
    truth = json.loads((a / "simulation.json").read_text())["ground_truth"]
    assert truth["model"]["nonlinear"]["css_exponent"]["V1"] < 1
    np.testing.assert_array_equal(_nsd_betas(a), _nsd_betas(b))
    assert not np.array_equal(_nsd_betas(a), _nsd_betas(lin))
    # the same anatomy, planted voxels and SNR as the linear mode: only the responses differ
    np.testing.assert_array_equal(_ncsnr(a), _ncsnr(lin))
    assert truth["subjects"] == json.loads((lin / "simulation.json").read_text())["ground_truth"]["subjects"]
    # an existing linear dataset is not silently reused for the nonlinear mode
    with pytest.raises(FileExistsError, match="response"):
        simulate("nsd", lin, response="nonlinear", **NSD)


@pytest.mark.parametrize("name", ["nsd", "things_eeg2", "things_meg", "masc"])
@pytest.mark.parametrize("bad", ["quadratic", "Linear", None, 1])
def test_bad_response_value(tmp_path, name, bad):
    with pytest.raises(ValueError, match=r"'response' parameter.*'linear', 'nonlinear'"):
        simulate(name, tmp_path / name, response=bad, verbose="warning")
    assert not (tmp_path / name).exists()


def _early_visual_setup(n_img: int = 240, seed: int = 0):
    rng = np.random.default_rng([seed, 1])
    lat = proc.sample_latents(n_img, rng)
    images = proc.render_images(lat, 32, desc="test images")
    anat = sim_nsd._nsd_anatomy((20, 24, 20), np.random.default_rng([seed, 2]))
    return lat, images, anat


def _signals(mode: str, lat, images, anat, seed: int = 0) -> np.ndarray:
    low = proc.lowlevel_features(images, sim_nsd._LOWRES)
    sem, groups = proc.semantic_features(lat)
    rng = np.random.default_rng([seed, 3])
    if mode == "linear":
        return sim_nsd._voxel_signals(anat, low, sem, groups, rng)
    coords, cgroups = proc.tuning_coordinates(lat)
    return sim_nsd._voxel_signals_nonlinear(anat, proc.contrast_energy(images, sim_nsd._LOWRES), low, coords,
                                            cgroups, rng)


def test_nsd_nonlinear_early_visual_is_compressive_in_contrast():
    """Scaling an image's contrast by k scales a V1-V3 voxel's response by k**n, n < 1 (CSS).

    Each image is shown at contrast 0, 1/2 and 1 (pixels pulled towards the image's mean colour).
    Linear mode: equal response steps 0 -> 1/2 -> 1 (the low-level maps are affine in k). Nonlinear
    mode: the second step is smaller than the first for almost every voxel (concave), whatever the
    per-voxel standardisation (an increasing affine map keeps the ratio of the steps).
    """
    lat, images, anat = _early_visual_setup(80)
    mean = images.reshape(len(images), -1, 3).mean(1)[:, None, None, :]
    stack = np.concatenate([np.clip(np.rint(mean + k * (images - mean)), 0, 255).astype(np.uint8)
                            for k in (0.0, 0.5, 1.0)])
    lat3 = proc.Latents(**{f: np.concatenate([getattr(lat, f)] * 3) for f in lat.__dataclass_fields__})
    early = np.flatnonzero(np.isin(anat["area"], ["V1", "V2", "V3"]))
    for mode in ("linear", "nonlinear"):
        r = _signals(mode, lat3, stack, anat)[:, early].reshape(3, len(images), -1).astype(np.float64)
        step1, step2 = r[1] - r[0], r[2] - r[1]
        moving = np.abs(step1) + np.abs(step2) > 1e-3
        ratio = step2[moving] / step1[moving]
        if mode == "linear":  # uint8 rounding only
            assert np.median(np.abs(ratio - 1.0)) < 0.05
        else:  # (k ** n): step2 / step1 = (1 - 0.5 ** n) / 0.5 ** n < 1 for n < 1
            assert np.mean(ratio < 0.95) > 0.9 and np.median(ratio) < 0.9


def _heldout_r2(model, x: np.ndarray, y: np.ndarray, n_train: int) -> np.ndarray:
    pred = model.fit(x[:n_train], y[:n_train]).predict(x[n_train:])
    y = y[n_train:]
    return 1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def test_nsd_nonlinear_responses_are_not_linear_in_the_features():
    """Held-out R² of the noise-free voxel signals (400 images, 300 to fit).

    Early areas: ridge on the low-level maps explains the linear mode (> 0.9) but not the contrast-
    energy code of the nonlinear mode. Higher streams (lateral, midlateral, parietal): ridge on the
    one-hot semantic features explains the linear mode exactly, the Gaussian tuning curves of the
    nonlinear mode less, and a Gaussian-kernel regressor on the tuning coordinates recovers more.
    """
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import Ridge

    lat, images, anat = _early_visual_setup(400)
    sem, _ = proc.semantic_features(lat)
    coords, _ = proc.tuning_coordinates(lat)
    low = proc.lowlevel_features(images, sim_nsd._LOWRES).reshape(len(images), -1)
    lin = _signals("linear", lat, images, anat)
    nl = _signals("nonlinear", lat, images, anat)
    early = np.flatnonzero(np.isin(anat["area"], ["V1", "V2", "V3"]))[::3]
    assert np.median(_heldout_r2(Ridge(alpha=10.0), low, lin[:, early], 300)) > 0.9
    assert np.median(_heldout_r2(Ridge(alpha=10.0), low, nl[:, early], 300)) < 0.5
    higher = np.flatnonzero(np.isin(anat["streams"], [3, 6, 7]) & (anat["area"] == ""))[::2]
    r2_lin = np.median(_heldout_r2(Ridge(alpha=1.0), sem, lin[:, higher], 300))
    r2_nl = np.median(_heldout_r2(Ridge(alpha=1.0), sem, nl[:, higher], 300))
    r2_kernel = np.median(_heldout_r2(KernelRidge(alpha=0.01, kernel="rbf", gamma=0.1), coords, nl[:, higher],
                                      300))
    assert r2_lin > 0.99
    assert r2_nl < 0.9
    assert r2_kernel > r2_nl + 0.05


# --------------------------------------------------------------------------- M/EEG
EEG2 = {"n_subjects": 1, "n_train_concepts": 4, "images_per_concept": 2, "n_test_concepts": 4,
        "n_train_reps": 1, "n_test_reps": 6, "image_size": 16, "snr": 1.0, "seed": 2, "verbose": "warning"}
MEG = {"n_subjects": 1, "n_train_concepts": 4, "images_per_concept": 2, "n_test_concepts": 6,
       "n_test_reps": 10, "n_channels": 32, "sfreq": 200.0, "n_sessions": 2, "catch_fraction": 0.0,
       "image_size": 16, "snr": 50.0, "seed": 2, "verbose": "warning"}
MASC = {"n_subjects": 1, "n_sessions": 1, "n_stories": 1, "story_duration_s": 10.0, "n_channels": 16,
        "seed": 3, "verbose": "warning"}


def _eeg2_data(root: Path) -> np.ndarray:
    path = root / "eeg_dataset" / "preprocessed_data" / "sub-01"
    return np.concatenate([np.load(path / f"preprocessed_eeg_{s}.npy", allow_pickle=True).item()
                           ["preprocessed_eeg_data"].ravel() for s in ("training", "test")])


def _meg_epochs(root: Path):
    import mne

    return mne.read_epochs(root / "derivatives" / "preprocessed" / "preprocessed_P1-epo.fif", verbose="error")


def _masc_data(root: Path) -> np.ndarray:
    import mne

    return mne.io.read_raw_fif(root / "sub-01" / "ses-0" / "meg" / "sub-01_ses-0_task-0_meg.fif",
                               verbose="error").get_data()


@pytest.mark.parametrize("name", ["things_eeg2", "things_meg", "masc"])
def test_meeg_linear_unchanged_and_nonlinear_deterministic(tmp_path, name):
    pytest.importorskip("mne")
    if name == "masc":
        pytest.importorskip("mne_bids")
    kw = {"things_eeg2": EEG2, "things_meg": {**MEG, "snr": 0.5}, "masc": MASC}[name]
    read = {"things_eeg2": _eeg2_data, "things_meg": lambda r: _meg_epochs(r).get_data(),
            "masc": _masc_data}[name]
    default = simulate(name, tmp_path / "default", **kw)
    linear = simulate(name, tmp_path / "linear", response="linear", **kw)
    nl_a = simulate(name, tmp_path / "nl_a", response="nonlinear", **kw)
    nl_b = simulate(name, tmp_path / "nl_b", response="nonlinear", **kw)
    assert "response" not in _params(linear) and _params(nl_a) == _params(default)
    assert _params(nl_a)["response"] == "nonlinear"
    np.testing.assert_array_equal(read(nl_a), read(default))
    np.testing.assert_array_equal(read(nl_a), read(nl_b))
    assert not np.array_equal(read(nl_a), read(linear))


def test_things_meg_nonlinear_latency_jitter(tmp_path):
    """Repetitions of one test image peak at the same time in the linear mode and at times that vary
    by ~20 ms (the latency jitter) in the nonlinear mode (snr 50: noise is negligible)."""
    pytest.importorskip("mne")
    spreads = {}
    for mode in ("linear", "nonlinear"):
        epochs = _meg_epochs(simulate("things_meg", tmp_path / mode, response=mode, **MEG))
        truth = json.loads((tmp_path / mode / "simulation.json").read_text())["ground_truth"]
        planted = np.isin(epochs.ch_names, truth["subjects"]["1"]["planted_channels"])
        meta = epochs.metadata
        gfp = epochs.get_data()[:, planted].std(axis=1)  # global field power over the planted sensors
        peak = epochs.times[gfp.argmax(axis=1)]
        test = meta["trial_type"].to_numpy() == "test"
        img = meta["test_image_nr"].to_numpy()
        spreads[mode] = np.mean([peak[test & (img == k)].std() for k in np.unique(img[test])])
    assert spreads["linear"] < 0.004
    assert 0.01 < spreads["nonlinear"] < 0.04


def test_masc_nonlinear_is_not_a_linear_filter_of_the_spectrogram():
    """Noise-free planted responses: a linear temporal response function of the mel spectrogram
    explains the linear mode exactly and the nonlinear mode (rectified, saturating, onset-driven,
    latency-jittered sources) only partly."""
    from scipy.signal import fftconvolve

    from neurodecode.datasets import _sim_masc as masc
    from neurodecode.datasets import _sim_meeg as meeg
    from neurodecode.preprocessing.audio import melspectrogram

    p = masc.resolve_masc(n_channels=16, sfreq=100.0)
    rng = np.random.default_rng(0)
    sr, n_times = p["audio_sfreq"], 3000
    t = np.arange(n_times * sr // 100) / sr
    # 0.2 s "syllables": on/off at random, a 4 Hz amplitude modulation, a random pitch each
    on = np.repeat(rng.random(n_times // 20) < 0.6, sr // 5)[:len(t)]
    pitch = 200 + 800 * np.repeat(rng.random(n_times // 20), sr // 5)[:len(t)]
    audio = on * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * pitch * t)
    names, pos = meeg.meg_channel_names(16), meeg.helmet_positions(16)
    planted = meeg.signal_channel_mask(names, pos, p["signal_channels"])
    _, kernel = masc._lag_kernel(p["signal_window"], p["sfreq"])
    W = rng.standard_normal((16, p["n_mels"])) * planted[:, None]
    sources = masc._source_model(16, p["n_mels"], planted, 0.5, np.random.default_rng(1),
                                 np.random.default_rng(2))
    lin = masc._planted_signal(audio, n_times, W, planted, kernel, p)
    nl = masc._planted_signal(audio, n_times, W, planted, kernel, p, sources, np.random.default_rng(3))
    mel = melspectrogram(audio, sr, n_mels=p["n_mels"], frame_rate=p["sfreq"], fmin=50.0)[:n_times]
    mel = (mel - mel.mean(0)) / np.where(mel.std(0) > 0, mel.std(0), 1)
    x = fftconvolve(mel, kernel[:, None], axes=0)[:n_times]
    x = np.column_stack([x, np.ones(n_times)])

    def r2(y):
        beta, *_ = np.linalg.lstsq(x, y.T, rcond=None)
        return 1 - ((y.T - x @ beta) ** 2).sum(0) / ((y.T - y.T.mean(0)) ** 2).sum(0)

    assert r2(lin[planted]).min() > 0.99
    assert np.median(r2(nl[planted])) < 0.75
    assert np.all(nl[~planted] == 0) and np.allclose(nl[planted].std(1), 1.0)


# --------------------------------------------------------------------------- run config
def test_config_simulate_response():
    from neurodecode.config import ConfigError, load_config
    from neurodecode.workflow._data import simulate_params, simulated_root

    default = load_config(None)
    assert default.simulate.response == "nonlinear" and simulate_params(default)["response"] == "nonlinear"
    typed = load_config(None, ["simulate.response=nonlinear"])
    via_params = load_config(None, ["simulate.params={response: nonlinear}"])
    assert typed.simulate.response == via_params.simulate.response == "nonlinear"
    assert simulate_params(typed)["response"] == simulate_params(via_params)["response"] == "nonlinear"
    assert simulated_root(typed) == simulated_root(via_params) == simulated_root(default)
    linear = load_config(None, ["simulate.response=linear"])
    assert simulate_params(linear)["response"] == "linear"
    assert simulated_root(linear) != simulated_root(default)
    masc = load_config(None, ["data.dataset=masc", "targets.encoder=melspec",
                              "models.mlp.adapter=subject_layer", "models.mlp.backbone=dilated_conv",
                              "simulate.response=nonlinear"])
    assert simulate_params(masc)["response"] == "nonlinear"
    with pytest.raises(ConfigError, match="response"):
        load_config(None, ["simulate.response=quadratic"])
    with pytest.raises(ConfigError, match="response"):
        load_config(None, ["simulate.params={response: quadratic}"])
    with pytest.raises(ConfigError, match="set one of them"):
        load_config(None, ["simulate.response=linear", "simulate.params={response: nonlinear}"])
