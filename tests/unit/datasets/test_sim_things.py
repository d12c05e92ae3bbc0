"""simulate("things_eeg2") and simulate("things_meg"), read back through the real loaders."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

mne = pytest.importorskip("mne")

from neurodecode.datasets import load_things_eeg2, load_things_meg, simulate
from neurodecode.datasets._sim_things import EEG2_ATM_CHANNELS, EEG2_OFFICIAL_CHANNELS, meg_ctf_names
from neurodecode.io.mne import read_epochs
from neurodecode.io.things_eeg import read_things_eeg2
from neurodecode.preprocessing.channels import resolve_channels

EEG = {"n_subjects": 2, "n_train_concepts": 8, "images_per_concept": 3, "n_test_concepts": 10,
       "n_train_reps": 2, "n_test_reps": 16, "variant": "both", "image_size": 16, "snr": 1.0,
       "signal_channels": ("occipital",), "seed": 5, "verbose": "warning"}
MEG = {"n_subjects": 1, "n_train_concepts": 6, "images_per_concept": 2, "n_test_concepts": 10,
       "n_test_reps": 8, "n_channels": 32, "sfreq": 100.0, "n_sessions": 3, "catch_fraction": 0.1,
       "image_size": 16, "snr": 1.0, "seed": 2, "verbose": "warning"}


@pytest.fixture(scope="module")
def eeg(tmp_path_factory) -> Path:
    return simulate("things_eeg2", tmp_path_factory.mktemp("sim") / "eeg2", **EEG)


@pytest.fixture(scope="module")
def meg(tmp_path_factory) -> Path:
    return simulate("things_meg", tmp_path_factory.mktemp("sim") / "meg", **MEG)


def _truth(root: Path) -> dict:
    return json.loads((root / "simulation.json").read_text())


def _f_ratio(data: np.ndarray, n_img: int, n_rep: int) -> np.ndarray:
    """Variance across images of the repetition means / its expectation under no signal, (ch, t)."""
    d = data.reshape(n_img, n_rep, *data.shape[1:]).astype(np.float64)
    return d.mean(1).var(0, ddof=1) / (d.var(1, ddof=1).mean(0) / n_rep)


def _check_information(data, n_img, n_rep, times, window, planted):
    f = _f_ratio(data, n_img, n_rep)
    inside = (times >= window[0]) & (times <= window[1])
    assert f[planted][:, inside].mean() > 5          # planted channels inside the window carry information
    assert f[~planted].mean() < 1.6                   # the others do not
    assert f[planted][:, ~inside].mean() < 1.6        # nor do planted channels outside the window


# --------------------------------------------------------------------------- THINGS-EEG2
@pytest.mark.parametrize("variant", ["official", "atm"])
def test_eeg2_loads_with_real_loader(eeg, variant):
    gt = _truth(eeg)["ground_truth"]
    for subject in (1, 2):
        tr = load_things_eeg2(eeg, subject, variant=variant, verbose="warning")
        n_ch, n_t = (17, 100) if variant == "official" else (63, 250)
        n_train, n_test = 8 * 3 * 2, 10 * 16
        assert tr.data.shape == (n_train + n_test, n_ch, n_t) and tr.data.dtype == np.float32
        assert np.isfinite(tr.data).all()
        montage = EEG2_OFFICIAL_CHANNELS if variant == "official" else EEG2_ATM_CHANNELS
        assert tr.info["ch_names"] == list(montage)
        if variant == "official":
            np.testing.assert_allclose(tr.info["times"], np.arange(-20, 80) / 100)
            assert tr.info["sfreq"] == 100.0
        else:
            np.testing.assert_allclose(tr.info["times"], np.arange(0, 250) / 250)
            assert tr.info["sfreq"] == 250.0
        ev = tr.events
        assert (ev["split"] == "train").sum() == n_train and (ev["split"] == "test").sum() == n_test
        train = ev[ev["split"] == "train"]
        assert train["condition"].tolist() == np.repeat(np.arange(24), 2).tolist()
        assert (train["concept_index"] == train["condition"] // 3).all()
        assert train["stimulus_id"].iloc[0] == f"{gt['stimuli']['train_concepts'][0]}_01b"
        test = ev[ev["split"] == "test"]
        assert test["repetition"].max() == 15 and test["stimulus_id"].nunique() == 10
        assert list(pd.unique(test["concept"])) == gt["stimuli"]["test_concepts"]
    # zero-shot: train and test concepts are disjoint
    assert not set(train["concept"]) & set(test["concept"])
    assert set(train["concept"]) == set(gt["stimuli"]["train_concepts"])


def test_eeg2_files_match_the_real_formats(eeg):
    off = read_things_eeg2(eeg / "eeg_dataset/preprocessed_data/sub-01/preprocessed_eeg_training.npy")
    assert off["format"] == "npy" and off["data"].shape == (24, 2, 17, 100)
    atm = read_things_eeg2(eeg / "Preprocessed_data_250Hz/sub-02/preprocessed_eeg_test.npy")
    assert atm["format"] == "pickle" and atm["data"].shape == (10, 16, 63, 250)
    assert len(atm["times_full"]) == 300 and atm["times_full"][0] == pytest.approx(-0.2)
    with open(eeg / "Preprocessed_data_250Hz/sub-02/preprocessed_eeg_test.npy", "rb") as f:
        assert set(pickle.load(f)) == {"preprocessed_eeg_data", "ch_names", "times"}
    meta = np.load(eeg / "image_set/image_metadata.npy", allow_pickle=True).item()
    assert len(meta["train_img_files"]) == 24 and len(meta["test_img_files"]) == 10
    folders = sorted(p.name for p in (eeg / "image_set/training_images").iterdir())
    assert folders == sorted(set(meta["train_img_concepts"])) and folders[0].startswith("00001_")
    for concept, fname in zip(meta["test_img_concepts"], meta["test_img_files"]):
        assert (eeg / "image_set/test_images" / concept / fname).is_file()
    assert meta["test_img_concepts_THINGS"][0].startswith("00009_")  # numbered after the 8 train concepts


def test_eeg2_images_decode_and_concepts_look_alike(eeg):
    tr = load_things_eeg2(eeg, 1, variant="official", image_size=None, verbose="warning")
    imgs = tr.stimuli.images_[:24].astype(float)  # 8 training concepts x 3 images
    assert imgs.shape == (24, 16, 16, 3)
    files = sorted((eeg / "image_set/training_images").rglob("*.jpg"))
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (16, 16)
    flat = imgs.reshape(24, -1)
    d = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    same = np.repeat(np.arange(8), 3)[:, None] == np.repeat(np.arange(8), 3)[None]
    assert d[same & ~np.eye(24, dtype=bool)].mean() < 0.7 * d[~same].mean()


@pytest.mark.parametrize("variant", ["official", "atm"])
def test_eeg2_planted_information(eeg, variant):
    gt = _truth(eeg)
    planted_names = gt["ground_truth"]["subjects"]["1"]["planted_channels"][variant]
    tr = load_things_eeg2(eeg, 1, variant=variant, split="test", images=False, verbose="warning")
    planted = np.isin(tr.info["ch_names"], planted_names)
    assert planted_names == resolve_channels(tr.info, "occipital")
    assert 0 < planted.sum() < len(planted)
    _check_information(tr.data, 10, 16, tr.info["times"], gt["parameters"]["signal_window"], planted)


def test_eeg2_default_plants_all_official_channels():
    from neurodecode.datasets._sim_things import resolve_things_eeg2

    p = resolve_things_eeg2()
    assert p["signal_channels"] == ["occipital", "parietal"] and p["variants"] == ["official"]
    assert p["n_test_reps"] == 40 and p["signal_window"] == [0.1, 0.25]


# --------------------------------------------------------------------------- THINGS-MEG
def test_meg_loads_with_real_loader(meg):
    gt = _truth(meg)["ground_truth"]
    meta_all = read_epochs(meg / "derivatives/preprocessed/preprocessed_P1-epo.fif", preload=False).metadata
    n_catch = int((meta_all["trial_type"] == "catch").sum())
    assert n_catch == round(0.1 * (12 + 80) / 0.9) == gt["subjects"]["1"]["n_catch"]
    tr = load_things_meg(meg, 1, verbose="warning")
    assert tr.data.shape == (12 + 80, 32, 141) and tr.modality == "meg"
    np.testing.assert_allclose(tr.info["times"][[0, -1]], [-0.1, 1.3])
    assert tr.info["sfreq"] == 100.0 and np.isfinite(tr.info["ch_pos"]).all()
    assert all(re.fullmatch(r"M[LRZ][FCTPO]\d\d-1609", c) for c in tr.info["ch_names"])
    assert len(set(tr.info["ch_names"])) == 32
    ev = tr.events
    assert "catch" not in set(ev["trial_type"])
    test = ev[ev["split"] == "test"]
    assert len(test) == 80 and test["stimulus_id"].nunique() == 10
    assert (test.groupby("stimulus_id")["repetition"].apply(sorted) == [list(range(8))] * 10).all()
    assert set(test["session"]) == {1, 2, 3}  # repetitions spread over the sessions
    train = ev[ev["split"] == "train"]
    assert len(train) == 12 and (train["repetition"] == 0).all() and set(train["trial_type"]) == {"exp"}
    assert set(train["concept"]) == set(gt["stimuli"]["train_concepts"])
    test_concepts = {re.sub(r"_\d\ds$", "", s) for s in test["stimulus_id"]}
    assert test_concepts == set(gt["stimuli"]["test_concepts"])
    assert not test_concepts & set(train["concept"])
    assert set(ev["session"]) == {1, 2, 3}
    for col in ("image_nr", "things_category_nr", "things_exemplar_nr", "test_image_nr", "run_nr"):
        assert col in ev.columns


def test_meg_metadata_files_and_images(meg):
    ep = read_epochs(meg / "derivatives/preprocessed/preprocessed_P1-epo.fif", preload=False)
    meta = ep.metadata.reset_index(drop=True)
    csv = pd.read_csv(meg / "sourcedata/sample_attributes_P1.csv")
    pd.testing.assert_frame_equal(csv, meta, check_dtype=False)
    assert np.all(np.diff(ep.events[:, 0]) > 0) and set(ep.events[:, 2]) == {64}
    for path, ttype in zip(meta["image_path"], meta["trial_type"]):
        prefix = {"exp": "images_meg/", "test": "images_test_meg/", "catch": "images_catch_meg/"}[ttype]
        assert path.startswith(prefix) and (meg / "images" / path).is_file()
    with Image.open(meg / "images" / meta["image_path"].iloc[0]) as im:
        assert im.size == (16, 16)
    exp = meta[meta["trial_type"] == "exp"]
    assert exp["test_image_nr"].isna().all() and exp["things_exemplar_nr"].between(1, 2).all()
    assert meta.loc[meta["trial_type"] == "test", "things_category_nr"].isna().all()


def test_meg_planted_information(meg):
    gt = _truth(meg)
    tr = load_things_meg(meg, 1, verbose="warning")
    planted_names = gt["ground_truth"]["subjects"]["1"]["planted_channels"]
    assert planted_names == resolve_channels(tr.info, "occipital")
    planted = np.isin(tr.info["ch_names"], planted_names)
    assert 0 < planted.sum() < len(planted)
    test = tr.events[tr.events["split"] == "test"].sort_values(["stimulus_id", "repetition"])
    _check_information(tr.data[test.index.to_numpy()], 10, 8, tr.info["times"],
                       gt["parameters"]["signal_window"], planted)


def test_meg_ctf_names_follow_regions():
    from neurodecode.datasets._sim_meeg import helmet_positions

    names = meg_ctf_names(helmet_positions(64))
    assert len(set(names)) == 64
    occ = resolve_channels({"ch_names": names, "ch_pos": helmet_positions(64)}, "occipital")
    assert occ and all(n[2] == "O" for n in occ)


# --------------------------------------------------------------------------- determinism, errors
def test_deterministic(tmp_path):
    kw = {"n_subjects": 1, "n_train_concepts": 3, "images_per_concept": 2, "n_test_concepts": 2,
          "n_train_reps": 1, "n_test_reps": 2, "variant": "atm", "image_size": 8, "verbose": "warning"}
    a = simulate("things_eeg2", tmp_path / "a", seed=1, **kw)
    b = simulate("things_eeg2", tmp_path / "b", seed=1, **kw)
    c = simulate("things_eeg2", tmp_path / "c", seed=2, **kw)
    rel = "Preprocessed_data_250Hz/sub-01/preprocessed_eeg_test.npy"
    assert (a / rel).read_bytes() == (b / rel).read_bytes() != (c / rel).read_bytes()
    jpgs = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert all((a / p).read_bytes() == (b / p).read_bytes() for p in jpgs)
    kw = {"n_subjects": 1, "n_train_concepts": 3, "images_per_concept": 1, "n_test_concepts": 2,
          "n_test_reps": 2, "n_channels": 16, "sfreq": 50.0, "n_sessions": 1, "image_size": 8,
          "verbose": "warning"}
    m1 = simulate("things_meg", tmp_path / "m1", seed=4, **kw)
    m2 = simulate("things_meg", tmp_path / "m2", seed=4, **kw)
    e1, e2 = (read_epochs(m / "derivatives/preprocessed/preprocessed_P1-epo.fif") for m in (m1, m2))
    assert e1.get_data().tobytes() == e2.get_data().tobytes()
    pd.testing.assert_frame_equal(e1.metadata, e2.metadata)


@pytest.mark.parametrize("name, kwargs, exc, match", [
    ("things_eeg2", {"variant": "raw"}, ValueError, "variant"),
    ("things_eeg2", {"n_train_concepts": 1}, ValueError, "n_train_concepts"),
    ("things_eeg2", {"n_train_concepts": 1700, "n_test_concepts": 200}, ValueError, "1854"),
    ("things_eeg2", {"images_per_concept": 0}, ValueError, "images_per_concept"),
    ("things_eeg2", {"n_test_reps": 1.5}, TypeError, "n_test_reps"),
    ("things_eeg2", {"n_subjects": 11}, ValueError, "n_subjects"),
    ("things_eeg2", {"snr": -1}, ValueError, "snr"),
    ("things_eeg2", {"signal_window": (0.5, 0.9)}, ValueError, "signal_window"),
    ("things_eeg2", {"signal_window": (-0.1, 0.2)}, ValueError, "signal_window"),
    ("things_eeg2", {"signal_window": (0.1, 0.12)}, ValueError, "at least"),
    ("things_eeg2", {"signal_window": "early"}, ValueError, "signal_window"),
    ("things_eeg2", {"signal_channels": ("frontal",)}, ValueError, "signal_channels"),
    ("things_eeg2", {"signal_channels": ("Cz",)}, ValueError, "signal_channels"),
    ("things_eeg2", {"image_size": 4}, ValueError, "image_size"),
    ("things_eeg2", {"n_channels": 64}, TypeError, "unexpected"),
    ("things_meg", {"images_per_concept": 13}, ValueError, "images_per_concept"),
    ("things_meg", {"catch_fraction": 0.5}, ValueError, "catch_fraction"),
    ("things_meg", {"n_channels": 8}, ValueError, "n_channels"),
    ("things_meg", {"sfreq": 10.0}, ValueError, "sfreq"),
    ("things_meg", {"n_sessions": 0}, ValueError, "n_sessions"),
    ("things_meg", {"n_subjects": 5}, ValueError, "n_subjects"),
    ("things_meg", {"signal_window": (0.5, 1.4)}, ValueError, "signal_window"),
    ("things_meg", {"signal_channels": "MLO99-1609"}, ValueError, "signal_channels"),
])
def test_invalid_parameters(tmp_path, name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        simulate(name, tmp_path / "x", verbose="warning", **kwargs)
    assert not (tmp_path / "x").exists()


def test_atm_signal_channels_outside_official_montage(tmp_path):
    # "Cz" exists only in the 63-channel montage: fine for the ATM variant
    from neurodecode.datasets._sim_things import resolve_things_eeg2

    assert resolve_things_eeg2(variant="atm", signal_channels="Cz")["signal_channels"] == ["Cz"]
    with pytest.raises(ValueError, match="official"):
        resolve_things_eeg2(variant="both", signal_channels="Cz")


def test_signal_channels_accept_sensor_regions():
    from neurodecode.datasets._sim_meeg import eeg_positions, helmet_positions, signal_channel_mask
    from neurodecode.datasets._sim_things import _check_signal_channels, resolve_things_meg
    from neurodecode.preprocessing.channels import sensor_regions

    names = list(EEG2_ATM_CHANNELS)
    pos = eeg_positions(names)
    occ = sensor_regions({"ch_names": names, "ch_pos": pos})["occipital"]
    assert occ == [c for c in names if c.startswith(("O", "PO"))]
    picked = [c for c, m in zip(names, signal_channel_mask(names, pos, ["occipital"])) if m]
    assert picked == occ
    left = [c for c, m in zip(names, signal_channel_mask(names, pos, ["left_occipital"])) if m]
    assert left == ["O1", "PO7", "PO3"]
    assert _check_signal_channels(["occipital", "left_temporal", "occipital"], ("parietal",),
                                  {"ATM": (names, pos)}) == ["occipital", "left_temporal"]
    with pytest.raises(ValueError, match=r"'visual' is neither a channel nor a sensor region.*occipital"):
        _check_signal_channels(["visual"], (), {"ATM": (names, pos)})
    # MEG sensors are placed by position
    hpos = helmet_positions(32)
    meg = meg_ctf_names(hpos)
    resolved = resolve_things_meg(n_channels=32, signal_channels=["occipital"])
    assert resolved["signal_channels"] == ["occipital"]
    planted = [c for c, m in zip(meg, signal_channel_mask(meg, hpos, ["occipital"])) if m]
    assert planted == sensor_regions({"ch_names": meg, "ch_pos": hpos})["occipital"]
    assert planted and all(c[2] == "O" for c in planted)
