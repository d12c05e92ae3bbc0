"""load_things_meg on a miniature THINGS-MEG preprocessed epochs file (FORMATS.md §3)."""

import numpy as np
import pandas as pd
import pytest

mne = pytest.importorskip("mne")

from neurodecode.datasets import load_things_meg  # noqa: E402

CH = [f"MLC{i}-1609" for i in range(1, 6)]


def _write(root, subject=1, metadata=True):
    """40 epochs: 2 sessions × (12 exp + 4 test + 4 catch), test images repeated once per session."""
    rows = []
    for ses in (1, 2):
        for k in range(12):
            concept = ["aardvark", "bee", "cake"][k % 3]
            rows.append(("exp", ses, f"images_meg/{concept}/{concept}_{ses}{k:02d}s.jpg"))
        for k in range(4):
            concept = ["dog", "egg"][k % 2]
            rows.append(("test", ses, f"images_test_meg/{concept}_{k:02d}b.jpg".replace(
                "images_test_meg/", f"images_test_meg/{concept}/")))
        for k in range(4):
            rows.append(("catch", ses, f"images_catch_meg/catch_{ses}{k}.jpg"))
    meta = pd.DataFrame(rows, columns=["trial_type", "session_nr", "image_path"])
    meta["run_nr"] = 1
    meta["things_image_nr"] = np.arange(1, len(meta) + 1)
    n = len(meta)
    info = mne.create_info(CH, 200.0, "mag")
    for i, ch in enumerate(info["chs"]):
        ch["loc"][:3] = [0.01 * i, 0.05, 0.1]
    events = np.column_stack([np.arange(n) * 300, np.zeros(n, int), np.full(n, 64)])
    data = np.random.default_rng(subject).standard_normal((n, 5, 30))
    ep = mne.EpochsArray(data, info, events, tmin=-0.1, verbose="error")
    if metadata is True:
        ep.metadata = meta
    elif metadata is not None:
        ep.metadata = meta.drop(columns=metadata)
    folder = root / "derivatives" / "preprocessed"
    folder.mkdir(parents=True, exist_ok=True)
    ep.save(folder / f"preprocessed_P{subject}-epo.fif", overwrite=True, verbose="error")
    return data, meta


def test_load_things_meg(tmp_path):
    data, meta = _write(tmp_path)
    tr = load_things_meg(tmp_path, 1)
    keep = (meta["trial_type"] != "catch").to_numpy()
    assert tr.shape == (32, 5, 30) and tr.data.dtype == np.float32
    np.testing.assert_allclose(tr.data, data[keep].astype(np.float32), rtol=1e-6)
    assert tr.modality == "meg" and tr.info["sfreq"] == 200.0 and tr.info["ch_names"] == CH
    assert np.isfinite(tr.info["ch_pos"][1:]).all()
    ev = tr.events
    assert "catch" not in set(ev["trial_type"])
    assert ev["stimulus_id"].iloc[0] == "aardvark_100s" and ev["concept"].iloc[0] == "aardvark"
    test = ev[ev["split"] == "test"]
    assert len(test) == 8 and set(test["trial_type"]) == {"test"}
    assert set(test["concept"]) == {"dog", "egg"}
    assert (ev.loc[ev["split"] == "train", "trial_type"] == "exp").all()
    assert test["repetition"].tolist() == [0] * 4 + [1] * 4
    assert (ev.loc[ev["split"] == "train", "repetition"] == 0).all()
    assert ev["session"].tolist() == [1] * 16 + [2] * 16 and (ev["subject"] == 1).all()
    assert len(tr.stimuli) == 28 and "dog_00b" in tr.stimuli


def test_keep_catch(tmp_path):
    _write(tmp_path)
    tr = load_things_meg(tmp_path, "P1", drop_catch=False)
    assert len(tr) == 40 and (tr.events.loc[tr.events["trial_type"] == "catch", "split"] == "train").all()


def test_things_meg_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="preprocessed_P1-epo.fif"):
        load_things_meg(tmp_path, 1)
    _write(tmp_path, subject=2)
    with pytest.raises(ValueError, match=r"preprocessed_P3-epo.fif.*preprocessed_P2-epo.fif"):
        load_things_meg(tmp_path, 3)
    _write(tmp_path, subject=1, metadata=["image_path"])
    with pytest.raises(ValueError, match=r"preprocessed_P1-epo.fif.*image_path"):
        load_things_meg(tmp_path, 1)
    _write(tmp_path, subject=1, metadata=None)
    with pytest.raises(ValueError, match="preprocessed_P1-epo.fif has no metadata"):
        load_things_meg(tmp_path, 1)
    (tmp_path / "derivatives" / "preprocessed" / "preprocessed_P4-epo.fif").write_bytes(b"junk")
    with pytest.raises(OSError, match="preprocessed_P4-epo.fif"):
        load_things_meg(tmp_path, 4)


def test_images_from_images_root(tmp_path):
    from PIL import Image

    _, meta = _write(tmp_path)
    images = tmp_path / "images"
    for k, rel in enumerate(meta["image_path"]):
        f = images / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 12, 3), k, np.uint8)).save(f)
    tr = load_things_meg(tmp_path, 1, image_size=8)  # <root>/images is found by default
    assert "image" in tr.stimuli.kinds
    first = tr.events["stimulus_id"].iloc[0]
    img = tr.stimuli.get_images([first])
    assert img.shape == (1, 8, 8, 3) and img.dtype == np.uint8 and int(img[0, 0, 0, 0]) == 0
    (images / meta["image_path"].iloc[1]).unlink()
    with pytest.raises(FileNotFoundError, match="missing under"):
        load_things_meg(tmp_path, 1)
    with pytest.raises(FileNotFoundError, match="images_root .* does not exist"):
        load_things_meg(tmp_path, 1, images_root=tmp_path / "nowhere")


def test_flat_test_image_paths_give_the_concept(tmp_path):
    from neurodecode.datasets.things_meg import _concept

    assert _concept("images_test_meg/ice_cream_12s.jpg") == "ice_cream"
    assert _concept("images_meg/ice_cream/ice_cream_03b.jpg") == "ice_cream"
