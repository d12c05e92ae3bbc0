"""load_things_eeg2 on format-faithful THINGS-EEG2 miniatures (FORMATS.md 2), both variants."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from neurodecode.datasets import BrainTrials, load_things_eeg2
from neurodecode.io.things_eeg import LazyImageFiles, read_things_eeg2, write_things_eeg2

TRAIN_CONCEPTS = ["aardvark", "aircraft_carrier"]  # 2 concepts x 10 images = 20 conditions
TEST_CONCEPTS = ["bat", "cake", "dog_bed"]
N_REP_TRAIN = 4
N_REP_TEST = 8  # 80 in the real data; the 4-D layout is kept
OFF_CH = ["Pz", "P3", "P7", "O1", "Oz"]
ATM_CH = ["Fp1", "Fz", "Cz", "Pz", "O1", "Oz", "O2"]
SUBJECT = 1


def _img(path, value, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def _data(rng, n_cond, n_rep, n_ch, n_t):
    d = rng.standard_normal((n_cond, n_rep, n_ch, n_t))
    d[:, :, 0, 0] = np.arange(n_cond)[:, None] * 100 + np.arange(n_rep)[None, :]  # ground truth tag
    return d


def make_things_mini(root, variants=("official", "atm"), seed=0):
    rng = np.random.default_rng(seed)
    v = 0
    for ci, c in enumerate(TRAIN_CONCEPTS):
        for j in range(10):
            # written in reverse order: the loader must sort
            _img(root / "image_set" / "training_images" / f"{ci + 1:05d}_{c}" / f"{c}_{10 - j:02d}b.jpg",
                 v := v + 5)
    for ci, c in enumerate(TEST_CONCEPTS):
        _img(root / "image_set" / "test_images" / f"{ci + 1:05d}_{c}" / f"{c}_06s.jpg", 200 + ci * 10,
             size=(8, 8))
    sub = f"sub-{SUBJECT:02d}"
    if "official" in variants:
        times = np.round(np.arange(-20, 10) / 100, 4)  # 100 Hz, 30 samples
        d = root / "eeg_dataset" / "preprocessed_data" / sub
        write_things_eeg2(d / "preprocessed_eeg_training.npy", _data(rng, 20, N_REP_TRAIN, 5, 30), OFF_CH,
                          times)
        write_things_eeg2(d / "preprocessed_eeg_test.npy", _data(rng, 3, N_REP_TEST, 5, 30), OFF_CH, times)
    if "atm" in variants:
        times = np.round(np.arange(-50, 25) / 250, 4)  # 250 Hz full axis, data cropped [..., 50:]
        d = root / "Preprocessed_data_250Hz" / sub
        write_things_eeg2(d / "preprocessed_eeg_training.npy", _data(rng, 20, N_REP_TRAIN, 7, 25), ATM_CH,
                          times, variant="atm")
        write_things_eeg2(d / "preprocessed_eeg_test.npy", _data(rng, 3, N_REP_TEST, 7, 25), ATM_CH, times,
                          variant="atm")
    return root


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_things_mini(tmp_path_factory.mktemp("things_eeg2"))


def test_reader_both_variants(mini):
    off = read_things_eeg2(mini / "eeg_dataset/preprocessed_data/sub-01/preprocessed_eeg_training.npy")
    assert off["format"] == "npy" and off["data"].shape == (20, 4, 5, 30)
    assert off["ch_names"] == OFF_CH and len(off["times"]) == 30
    atm = read_things_eeg2(mini / "Preprocessed_data_250Hz/sub-01/preprocessed_eeg_test.npy")
    assert atm["format"] == "pickle" and atm["data"].shape == (3, N_REP_TEST, 7, 25)
    assert len(atm["times_full"]) == 75
    np.testing.assert_allclose(atm["times"], atm["times_full"][50:])  # ATM's times[50:]
    assert atm["times"][0] == pytest.approx(0.0)
    # the ATM file is a real pickle, not an npy
    with open(mini / "Preprocessed_data_250Hz/sub-01/preprocessed_eeg_test.npy", "rb") as f:
        assert isinstance(pickle.load(f), dict)


@pytest.mark.parametrize("variant,n_ch,n_t,sfreq", [("official", 5, 30, 100.0), ("atm", 7, 25, 250.0)])
def test_load_shapes_ids_and_reps(mini, variant, n_ch, n_t, sfreq):
    tr = load_things_eeg2(mini, SUBJECT, variant=variant)
    assert isinstance(tr, BrainTrials)
    n_train, n_test = 20 * N_REP_TRAIN, 3 * N_REP_TEST
    assert tr.data.shape == (n_train + n_test, n_ch, n_t) and tr.data.dtype == np.float32
    ev = tr.events
    assert (ev["split"].iloc[:n_train] == "train").all() and (ev["split"].iloc[n_train:] == "test").all()
    assert (ev["session"] == 0).all() and (ev["subject"] == SUBJECT).all()
    # condition-major flattening, checked against the tag written in data[c, r, 0, 0]
    np.testing.assert_allclose(tr.data[:, 0, 0], ev["condition"] * 100 + ev["repetition"])
    assert ev["repetition"].iloc[:n_train].tolist() == list(range(N_REP_TRAIN)) * 20
    assert ev["repetition"].iloc[n_train:].max() == N_REP_TEST - 1
    # training condition i = concept i//10, image i%10 in sorted order
    train = ev.iloc[:n_train:N_REP_TRAIN]
    assert train["stimulus_id"].tolist() == [f"aardvark_{k:02d}b" for k in range(1, 11)] + \
        [f"aircraft_carrier_{k:02d}b" for k in range(1, 11)]
    assert train["concept"].tolist() == ["aardvark"] * 10 + ["aircraft_carrier"] * 10
    assert (train["concept_index"].to_numpy() == np.arange(20) // 10).all()
    assert (train["image_index"].to_numpy() == np.arange(20) % 10).all()
    test = ev.iloc[n_train::N_REP_TEST]
    assert test["concept"].tolist() == TEST_CONCEPTS
    assert test["stimulus_id"].tolist() == [f"{c}_06s" for c in TEST_CONCEPTS]
    info = tr.info
    assert info["modality"] == "eeg" and info["sfreq"] == pytest.approx(sfreq)
    assert info["ch_names"] == (OFF_CH if variant == "official" else ATM_CH)
    assert len(info["times"]) == n_t and info["tmin"] == pytest.approx(info["times"][0])
    assert info["variant"] == variant
    if info["ch_pos"] is not None:  # MNE installed: standard_1005 positions
        assert info["ch_pos"].shape == (n_ch, 3) and np.isfinite(info["ch_pos"]).all()
    # stimuli: concepts + prompts in metadata, lazy images
    st = tr.stimuli
    assert len(st) == 23 and st.metadata.loc["dog_bed_06s", "concept"] == "dog_bed"
    assert st.metadata.loc["aardvark_01b", "prompt"] == "This picture is aardvark"
    assert st.images_.shape == (23, 10, 12, 3)
    img = st.get_image("aardvark_01b")
    assert img.dtype == np.uint8 and img.shape == (10, 12, 3)
    # written in reverse order: aardvark_01b got the 10th value (50)
    assert abs(int(img.mean()) - 50) <= 2
    assert st.get_image("bat_06s").shape == (10, 12, 3)  # resized to the common size


def test_variants_same_structure_and_auto(mini):
    off = load_things_eeg2(mini, SUBJECT, variant="official", images=False)
    atm = load_things_eeg2(mini, SUBJECT, variant="atm", images=False)
    cols = ["subject", "session", "stimulus_id", "concept", "repetition", "split"]
    assert off.events[cols].equals(atm.events[cols])
    assert off.stimuli.images_ is None and off.stimuli.ids.equals(atm.stimuli.ids)
    auto = load_things_eeg2(mini, SUBJECT)
    assert auto.info["variant"] == "official"


def test_auto_falls_back_to_atm_and_split(tmp_path):
    root = make_things_mini(tmp_path, variants=("atm",))
    tr = load_things_eeg2(root, SUBJECT, split="test", image_size=4)
    assert tr.info["variant"] == "atm" and (tr.events["split"] == "test").all()
    assert tr.data.shape == (3 * N_REP_TEST, 7, 25)
    assert tr.stimuli.get_images(["cake_06s", "bat_06s"]).shape == (2, 4, 4, 3)


def test_lazy_image_files(tmp_path):
    _img(tmp_path / "a.jpg", 10)
    _img(tmp_path / "b.jpg", 90, size=(6, 6))
    lazy = LazyImageFiles([tmp_path / "a.jpg", tmp_path / "b.jpg"])
    assert lazy.shape == (2, 10, 12, 3) and lazy[np.array([1])].shape == (1, 10, 12, 3)
    assert lazy[0].shape == (10, 12, 3)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        LazyImageFiles([tmp_path / "nope.jpg"], image_size=4)[0]


def test_missing_root_subject_file(tmp_path, mini):
    with pytest.raises(FileNotFoundError, match="root not found"):
        load_things_eeg2(tmp_path / "nowhere", SUBJECT)
    with pytest.raises(FileNotFoundError, match="sub-02"):
        load_things_eeg2(mini, 2)
    with pytest.raises(ValueError, match="subject"):
        load_things_eeg2(mini, 0)
    with pytest.raises(ValueError, match="variant"):
        load_things_eeg2(mini, SUBJECT, variant="bids")
    with pytest.raises(ValueError, match="split"):
        load_things_eeg2(mini, SUBJECT, split="val")
    root = make_things_mini(tmp_path / "r", variants=("official",))
    f = root / "eeg_dataset/preprocessed_data/sub-01/preprocessed_eeg_test.npy"
    f.unlink()
    with pytest.raises(FileNotFoundError, match="preprocessed_eeg_test.npy"):
        load_things_eeg2(root, SUBJECT)
    with pytest.raises(FileNotFoundError, match="sub-01"):
        load_things_eeg2(root, SUBJECT, variant="atm")


def _off(root, name="training"):
    return root / f"eeg_dataset/preprocessed_data/sub-01/preprocessed_eeg_{name}.npy"


def test_bad_files_name_the_file(tmp_path):
    root = make_things_mini(tmp_path, variants=("official",))
    times = np.round(np.arange(-20, 10) / 100, 4)
    f = _off(root, "test")
    # wrong ndim
    np.save(f, {"preprocessed_eeg_data": np.zeros((3, 5, 30)), "ch_names": OFF_CH, "times": times})
    with pytest.raises(ValueError, match="preprocessed_eeg_test.npy.*4-D"):
        load_things_eeg2(root, SUBJECT)
    # missing key
    np.save(f, {"preprocessed_eeg_data": np.zeros((3, 2, 5, 30)), "ch_names": OFF_CH})
    with pytest.raises(ValueError, match=r"preprocessed_eeg_test.npy.*missing key.*times"):
        load_things_eeg2(root, SUBJECT)
    # not a dict
    np.save(f, np.zeros((3, 2, 5, 30)))
    with pytest.raises(ValueError, match="preprocessed_eeg_test.npy.*dict"):
        load_things_eeg2(root, SUBJECT)
    # garbage bytes
    f.write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="preprocessed_eeg_test.npy"):
        load_things_eeg2(root, SUBJECT)
    # channel count mismatch between train and test
    write_things_eeg2(f, np.zeros((3, 2, 4, 30)), OFF_CH[:4], times)
    with pytest.raises(ValueError, match=r"preprocessed_eeg_training.npy.*preprocessed_eeg_test.npy"):
        load_things_eeg2(root, SUBJECT)
    # ch_names disagree with the data within one file
    np.save(f, {"preprocessed_eeg_data": np.zeros((3, 2, 5, 30)), "ch_names": OFF_CH[:3], "times": times})
    with pytest.raises(ValueError, match="preprocessed_eeg_test.npy.*ch_names"):
        load_things_eeg2(root, SUBJECT)
    # condition count does not match image_set
    write_things_eeg2(f, np.zeros((4, 2, 5, 30)), OFF_CH, times)
    with pytest.raises(ValueError, match="preprocessed_eeg_test.npy.*4 conditions.*test_images"):
        load_things_eeg2(root, SUBJECT)


def test_missing_image_set(tmp_path):
    root = make_things_mini(tmp_path, variants=("official",))
    import shutil

    shutil.rmtree(root / "image_set" / "test_images")
    with pytest.raises(FileNotFoundError, match="test_images"):
        load_things_eeg2(root, SUBJECT)


def test_writer_validates(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        write_things_eeg2(tmp_path / "x.npy", np.zeros((1, 1, 1, 2)), ["a"], [0, 1], variant="bids")
    with pytest.raises(ValueError, match="4-D"):
        write_things_eeg2(tmp_path / "x.npy", np.zeros((1, 1, 2)), ["a"], [0, 1])
    with pytest.raises(ValueError, match="one time per sample"):
        write_things_eeg2(tmp_path / "x.npy", np.zeros((1, 1, 1, 2)), ["a"], [0, 1, 2])
