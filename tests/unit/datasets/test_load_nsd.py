"""load_nsd on format-faithful NSD miniatures (FORMATS.md 1.7) written with io.nsd writers."""

from __future__ import annotations

import gzip
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from neurodecode.datasets import BrainTrials, load_nsd
from neurodecode.io.nsd import (
    LazyHDF5Rows,
    NSDLayout,
    write_betas,
    write_coco_captions,
    write_ctab,
    write_expdesign,
    write_stim_info,
    write_stimuli_hdf5,
    write_volume,
)

GRID = (6, 5, 4)
N_T = 12
N_SES = 3
N_IMG = 12  # 10k-images per subject in the miniature (3 shared), each shown 3x
N_73K = 30  # rows of imgBrick
SUBJECT = 1
FACES = {1: "OFA", 2: "FFA-1", 3: "FFA-2", 4: "mTL-faces", 5: "aTL-faces"}
VISUAL = {1: "V1v", 2: "V1d", 3: "V2v"}


def make_nsd_mini(root, *, seed=0, formats=("hdf5", "nii.gz"), n_ses=N_SES, n_t=N_T, grid=GRID,
                  subjects=(SUBJECT,), captions=True, stimuli=True):
    """Write a miniature NSD subject and return the ground truth."""
    rng = np.random.default_rng(seed)
    lay = NSDLayout(root)
    n_trials = n_ses * n_t
    # design: 12 10k-images, each 3x; 10k-indices 1..3 are the shared images
    mo = rng.permutation(np.repeat(np.arange(1, N_IMG + 1), 3))
    mo = np.resize(mo, n_trials) if n_trials != len(mo) else mo
    shared73 = np.array([5, 11, 17])  # 1-based 73k ids of the shared images
    subjectim = np.zeros((8, N_IMG), dtype=int)
    for s in range(8):
        others = rng.choice(np.setdiff1d(np.arange(1, N_73K + 1), shared73), N_IMG - 3, replace=False)
        subjectim[s] = np.concatenate([shared73, others])
    write_expdesign(lay.expdesign, mo, subjectim, shared73)
    table = pd.DataFrame({
        "cocoId": 1000 + np.arange(N_73K), "cocoSplit": np.where(np.arange(N_73K) % 2, "val2017",
                                                                 "train2017"),
        "nsdId": np.arange(N_73K), "shared1000": np.isin(np.arange(N_73K), shared73 - 1),
    })
    write_stim_info(lay.stim_info, table)
    if stimuli:
        imgs = np.zeros((N_73K, 8, 8, 3), dtype=np.uint8)
        imgs[:] = np.arange(N_73K, dtype=np.uint8)[:, None, None, None]
        write_stimuli_hdf5(lay.stimuli_hdf5, imgs)
    if captions:
        for split in ("train2017", "val2017"):
            rows = table[table.cocoSplit == split]
            write_coco_captions(lay.coco_captions(split),
                                {int(c): [f"image {n} a", f"image {n} b"] for c, n in
                                 zip(rows.cocoId, rows.nsdId)})
    # volumes
    xx, yy, zz = np.meshgrid(*[np.linspace(-1, 1, n) for n in grid], indexing="ij")
    brain = (xx ** 2 + yy ** 2 + zz ** 2) < 1.6
    truth = {"design": (mo, subjectim, shared73), "brain": brain, "betas": {}, "rois": {}}
    for subject in subjects:
        nsdgeneral = np.where(brain, 0, -1).astype(np.int16)
        nsdgeneral[brain & (yy < 0.2)] = 1
        faces = np.where(brain, 0, -1).astype(np.int16)
        faces[brain] = rng.integers(0, 6, int(brain.sum()))
        visual = np.where(brain, rng.integers(0, 4, grid), -1).astype(np.int16)
        write_volume(lay.brainmask(subject), brain.astype(np.uint8))
        write_volume(lay.roi_file(subject, "nsdgeneral"), nsdgeneral)
        write_volume(lay.roi_file(subject, "floc-faces"), faces)
        write_volume(lay.roi_file(subject, "prf-visualrois"), visual)
        write_ctab(lay.ctab_file(subject, "nsdgeneral"), {1: "nsdgeneral"})
        write_ctab(lay.ctab_file(subject, "floc-faces"), FACES)
        # prf-visualrois: no ctab on purpose (names fall back to str(int))
        truth["rois"][subject] = {"nsdgeneral": nsdgeneral, "floc-faces": faces,
                                  "prf-visualrois": visual}
        for ses in range(1, n_ses + 1):
            b = rng.integers(-2000, 2000, (*grid, n_t)).astype(np.int16)
            b[~brain] = 0
            truth["betas"][(subject, ses)] = b
            for fmt in formats:
                write_betas(lay.betas_file(subject, ses, fmt), b)
    return truth


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd_mini")
    truth = make_nsd_mini(root)
    return root, truth


def _expected(truth, mask, sessions=range(1, N_SES + 1)):
    return np.concatenate([truth["betas"][(SUBJECT, s)][mask].T.astype(np.float32) / np.float32(300)
                           for s in sessions])


def _copy(root, tmp_path):
    dst = tmp_path / "nsd"
    shutil.copytree(root, dst)
    return dst


# ---------------------------------------------------------------------------
# values, formats, design
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["hdf5", "nii.gz"])
def test_values_exact_both_formats(mini, fmt):
    root, truth = mini
    tr = load_nsd(root, SUBJECT, zscore=None, betas_format=fmt, verbose="warning")
    assert isinstance(tr, BrainTrials)
    mask = truth["rois"][SUBJECT]["nsdgeneral"] > 0
    exp = _expected(truth, mask)
    assert tr.data.dtype == np.float32 and tr.data.shape == exp.shape
    np.testing.assert_array_equal(tr.data, exp)
    np.testing.assert_array_equal(tr.info["voxel_indices"], np.argwhere(mask))
    assert tr.info["volume_shape"] == GRID and tr.info["modality"] == "fmri"
    assert tr.info["affine"].shape == (4, 4) and tr.info["scale"] == pytest.approx(1 / 300)
    assert tr.info["tr"] is None and tr.info["zscore"] is None
    assert all(fmt in f for f in tr.info["betas_files"]) and len(tr.info["betas_files"]) == N_SES


def test_hdf5_and_nifti_identical(mini):
    root, _ = mini
    a = load_nsd(root, SUBJECT, betas_format="hdf5", verbose=False)
    b = load_nsd(root, SUBJECT, betas_format="nii.gz", verbose=False)
    auto = load_nsd(root, SUBJECT, verbose=False)
    np.testing.assert_array_equal(a.data, b.data)
    assert auto.info["betas_files"][0].endswith(".hdf5")
    pd.testing.assert_frame_equal(a.events, b.events)


def test_events_design_mapping(mini):
    root, truth = mini
    mo, subjectim, shared = truth["design"]
    tr = load_nsd(root, SUBJECT, zscore=None, verbose=False)
    ev = tr.events
    g = np.arange(N_SES * N_T)
    np.testing.assert_array_equal(ev["global_trial"], g)
    np.testing.assert_array_equal(ev["stimulus_id"], subjectim[SUBJECT - 1, mo[g] - 1] - 1)
    np.testing.assert_array_equal(ev["tenk_id"], mo[g])
    np.testing.assert_array_equal(ev["session"], np.repeat([1, 2, 3], N_T))
    np.testing.assert_array_equal(ev["trial_in_session"], np.tile(np.arange(N_T), N_SES))
    assert "run" not in ev.columns  # T != 750
    assert (ev["subject"] == SUBJECT).all()
    # split: shared-1000 images are test
    is_test = np.isin(ev["stimulus_id"], shared - 1)
    assert is_test.any() and (~is_test).any()
    np.testing.assert_array_equal(ev["split"] == "test", is_test)
    np.testing.assert_array_equal(ev["split"] == "test", ev["tenk_id"] <= 3)
    # repetition: order of appearance, 0/1/2
    for sid, grp in ev.groupby("stimulus_id"):
        np.testing.assert_array_equal(grp["repetition"], np.arange(len(grp)))
    assert set(ev["repetition"]) == {0, 1, 2}
    # cocoId joined from nsd_stim_info_merged.csv
    np.testing.assert_array_equal(ev["cocoId"], 1000 + ev["stimulus_id"])


def test_sessions_subset_keeps_repetition(mini):
    root, _truth = mini
    full = load_nsd(root, SUBJECT, zscore=None, verbose=False)
    sub = load_nsd(root, SUBJECT, sessions=[2, 3], zscore=None, verbose=False)
    ref = full.events[full.events.session.isin([2, 3])].reset_index(drop=True)
    pd.testing.assert_frame_equal(sub.events, ref)
    np.testing.assert_array_equal(sub.data, full.data[full.events.session.isin([2, 3]).to_numpy()])
    one = load_nsd(root, SUBJECT, sessions=3, zscore=None, verbose=False)
    assert one.events["global_trial"].min() == 2 * N_T
    assert (one.events["repetition"] > 0).any()


def test_zscore_uses_train_trials_only(mini, tmp_path):
    root, truth = mini
    tr = load_nsd(root, SUBJECT, verbose=False)
    assert tr.info["zscore"] == "session"
    ev = tr.events
    for s in range(1, N_SES + 1):
        train = ((ev.session == s) & (ev.split == "train")).to_numpy()
        np.testing.assert_allclose(tr.data[train].mean(0), 0, atol=1e-5)
        std = tr.data[train].std(0)
        assert np.all((np.abs(std - 1) < 1e-4) | (std == 0))
    # change one test trial of session 1 on disk: train rows must not change
    root2 = _copy(root, tmp_path)
    test_rows = np.flatnonzero(((ev.session == 1) & (ev.split == "test")).to_numpy())
    t = int(ev.loc[test_rows[0], "trial_in_session"])
    b = truth["betas"][(SUBJECT, 1)].copy()
    b[..., t] = np.where(truth["brain"], 3000, 0)
    write_betas(NSDLayout(root2).betas_file(SUBJECT, 1, "hdf5"), b)
    tr2 = load_nsd(root2, SUBJECT, verbose=False)
    train_rows = (ev.split == "train").to_numpy()
    np.testing.assert_array_equal(tr2.data[train_rows], tr.data[train_rows])
    assert not np.array_equal(tr2.data[test_rows[0]], tr.data[test_rows[0]])


# ---------------------------------------------------------------------------
# ROIs
# ---------------------------------------------------------------------------
def test_roi_label_selection(mini):
    root, truth = mini
    faces = truth["rois"][SUBJECT]["floc-faces"]
    a = load_nsd(root, SUBJECT, roi=("floc-faces", ["FFA-1", "FFA-2"]), zscore=None, verbose=False)
    b = load_nsd(root, SUBJECT, roi="floc-faces:FFA-1,FFA-2", zscore=None, verbose=False)
    c = load_nsd(root, SUBJECT, roi=("floc-faces", [2, 3]), zscore=None, verbose=False)
    mask = np.isin(faces, [2, 3])
    for tr in (a, b, c):
        np.testing.assert_array_equal(tr.info["voxel_indices"], np.argwhere(mask))
        np.testing.assert_array_equal(tr.data, _expected(truth, mask))
    allf = load_nsd(root, SUBJECT, roi="floc-faces", zscore=None, verbose=False)
    np.testing.assert_array_equal(allf.info["voxel_indices"], np.argwhere(faces > 0))
    with pytest.raises(ValueError, match=r"Unknown label 'FFA-9'.*floc-faces\.mgz\.ctab"):
        load_nsd(root, SUBJECT, roi="floc-faces:FFA-9", verbose=False)
    with pytest.raises(ValueError, match="label table .*prf-visualrois.mgz.ctab is missing"):
        load_nsd(root, SUBJECT, roi="prf-visualrois:V1v", verbose=False)


def test_minus_one_is_not_in_roi(mini):
    root, truth = mini
    ng = truth["rois"][SUBJECT]["nsdgeneral"]
    assert (ng == -1).any()
    tr = load_nsd(root, SUBJECT, zscore=None, verbose=False)
    assert tr.shape[1] == int((ng == 1).sum())
    with pytest.raises(ValueError, match=">= 1"):
        load_nsd(root, SUBJECT, roi=("nsdgeneral", [-1]), verbose=False)


def test_roi_labels_in_info(mini):
    root, truth = mini
    tr = load_nsd(root, SUBJECT, zscore=None, verbose=False)
    labels = tr.info["roi_labels"]
    assert set(labels) == {"nsdgeneral", "floc-faces", "prf-visualrois"}
    idx = tuple(tr.info["voxel_indices"].T)
    faces = truth["rois"][SUBJECT]["floc-faces"][idx]
    exp = np.array([FACES.get(int(v), "") for v in faces])
    np.testing.assert_array_equal(labels["floc-faces"], exp)
    vis = truth["rois"][SUBJECT]["prf-visualrois"][idx]
    np.testing.assert_array_equal(labels["prf-visualrois"], [str(v) if v > 0 else "" for v in vis])
    assert (labels["nsdgeneral"] == "nsdgeneral").all()
    none = load_nsd(root, SUBJECT, extra_rois=None, verbose=False)
    assert none.info["roi_labels"] == {}
    some = load_nsd(root, SUBJECT, extra_rois=["floc-faces"], verbose=False)
    assert list(some.info["roi_labels"]) == ["floc-faces"]


def test_roi_none_uses_brainmask_then_nonzero(mini, tmp_path):
    root, truth = mini
    tr = load_nsd(root, SUBJECT, roi=None, zscore=None, verbose=False)
    np.testing.assert_array_equal(tr.info["voxel_indices"], np.argwhere(truth["brain"]))
    root2 = _copy(root, tmp_path)
    NSDLayout(root2).brainmask(SUBJECT).unlink()
    tr2 = load_nsd(root2, SUBJECT, roi=None, zscore=None, verbose=False)
    nonzero = np.any(truth["betas"][(SUBJECT, 1)] != 0, axis=-1)
    np.testing.assert_array_equal(tr2.info["voxel_indices"], np.argwhere(nonzero))


# ---------------------------------------------------------------------------
# stimuli
# ---------------------------------------------------------------------------
def test_lazy_images_and_captions(mini):
    root, _ = mini
    tr = load_nsd(root, SUBJECT, verbose=False)
    st = tr.stimuli
    assert isinstance(st.images_, LazyHDF5Rows)
    assert st.source == str(NSDLayout(root).stimuli_hdf5)
    ids = tr.events["stimulus_id"].to_numpy()[:7]
    imgs = st.get_images(ids)
    assert imgs.shape == (7, 8, 8, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs[:, 0, 0, 0], ids)
    sid = int(ids[0])
    assert st.get_captions(sid) == [f"image {sid} a", f"image {sid} b"]
    sub = st.subset(ids)
    np.testing.assert_array_equal(sub.get_images(ids[::-1])[:, 0, 0, 0], ids[::-1])


def test_truncated_stim_info_is_refused_by_name(mini, tmp_path):
    """A CSV cut mid-file still parses; the loader must notice it no longer covers the design's images."""
    root = _copy(mini[0], tmp_path)
    path = NSDLayout(root).stim_info
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:5])
    with pytest.raises(OSError, match=r"nsd_stim_info_merged\.csv describes \d+ images but the design uses.*truncated"):
        load_nsd(root, SUBJECT, verbose=False)


def test_no_stimuli_file_and_curated_captions(tmp_path):
    make_nsd_mini(tmp_path, formats=("hdf5",), captions=False, stimuli=False)
    tr = load_nsd(tmp_path, SUBJECT, verbose=False)
    assert tr.stimuli is None and len(tr) == N_SES * N_T
    imgs = np.zeros((N_73K, 4, 4, 3), dtype=np.uint8)
    write_stimuli_hdf5(NSDLayout(tmp_path).stimuli_hdf5, imgs)
    tr = load_nsd(tmp_path, SUBJECT, verbose=False)
    assert tr.stimuli is not None and tr.stimuli.captions_ is None
    caps = np.array([[f"c{i}_{k}" for k in range(5)] for i in range(N_73K)])
    np.save(tmp_path / "COCO_73k_annots_curated.npy", caps)
    tr = load_nsd(tmp_path, SUBJECT, captions=True, verbose=False)
    assert tr.stimuli.get_captions(4) == [f"c4_{k}" for k in range(5)]
    assert load_nsd(tmp_path, SUBJECT, captions=False, verbose=False).stimuli.captions_ is None


# ---------------------------------------------------------------------------
# runs with 750-trial sessions
# ---------------------------------------------------------------------------
def test_runs_when_750_trials(tmp_path):
    rng = np.random.default_rng(1)
    lay = NSDLayout(tmp_path)
    mo = rng.integers(1, 101, 1500)
    subjectim = np.tile(np.arange(1, 101), (8, 1))
    write_expdesign(lay.expdesign, mo, subjectim, np.arange(1, 11))
    mask = np.zeros((2, 2, 2), dtype=np.int16)
    mask[0] = 1
    write_volume(lay.roi_file(1, "nsdgeneral"), mask)
    for s in (1, 2):
        write_betas(lay.betas_file(1, s, "hdf5"), rng.integers(-9, 9, (2, 2, 2, 750)).astype(np.int16))
    tr = load_nsd(tmp_path, 1, sessions=[2], extra_rois=None, verbose=False)
    ev = tr.events
    assert len(ev) == 750 and ev["global_trial"].iloc[0] == 750
    counts = ev.groupby("run").size()
    assert list(counts.index) == list(range(1, 13))
    assert list(counts) == [63, 62] * 6


# ---------------------------------------------------------------------------
# MindEye2 renorm form
# ---------------------------------------------------------------------------
def _write_renorm(path, data):
    with h5py.File(path, "w") as f:
        f.create_dataset("betas", data=data)


def test_mindeye2_renorm(mini, tmp_path):
    root, _truth = mini
    root2 = _copy(root, tmp_path)
    ref = load_nsd(root2, SUBJECT, verbose=False)
    _write_renorm(NSDLayout(root2).mindeye2_betas(SUBJECT), ref.data.astype(np.float32))
    me = load_nsd(root2, SUBJECT, betas_format="mindeye2", verbose=False)
    np.testing.assert_array_equal(me.data, ref.data)  # no /300, no re-z-scoring
    pd.testing.assert_frame_equal(me.events, ref.events)
    np.testing.assert_array_equal(me.info["voxel_indices"], ref.info["voxel_indices"])
    assert me.info["zscore"] == "mindeye2" and me.stimuli is not None
    sub = load_nsd(root2, SUBJECT, betas_format="mindeye2", sessions=[2], verbose=False)
    np.testing.assert_array_equal(sub.data, ref.data[N_T:2 * N_T])
    assert sub.events["global_trial"].iloc[0] == N_T
    # design fallback: COCO_73k_subj_indices.hdf5
    lay = NSDLayout(root2)
    with h5py.File(lay.mindeye2_subj_indices(), "w") as f:
        f.create_dataset(f"subj{SUBJECT:02d}", data=ref.events["stimulus_id"].to_numpy())
    lay.expdesign.unlink()
    fb = load_nsd(root2, SUBJECT, betas_format="mindeye2", verbose=False)
    np.testing.assert_array_equal(fb.events["stimulus_id"], ref.events["stimulus_id"])
    np.testing.assert_array_equal(fb.events["split"], ref.events["split"])
    np.testing.assert_array_equal(fb.events["repetition"], ref.events["repetition"])
    with pytest.raises(ValueError, match="nsdgeneral voxels only"):
        load_nsd(root2, SUBJECT, betas_format="mindeye2", roi="floc-faces", verbose=False)


def test_mindeye2_nan_error(mini, tmp_path):
    root, _ = mini
    root2 = _copy(root, tmp_path)
    data = np.zeros((N_SES * N_T, 10), dtype=np.float32)
    data[3, 2] = data[20, 5] = np.nan
    _write_renorm(NSDLayout(root2).mindeye2_betas(SUBJECT), data)
    with pytest.raises(ValueError, match=r"betas_all_subj01_fp32_renorm\.hdf5 \(sessions 1: 1 trial\(s\), "
                                         r"2: 1 trial\(s\)\) holds 2 NaN and 0 infinite"):
        load_nsd(root2, SUBJECT, betas_format="mindeye2", verbose=False)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="NSD root not found.*nsddata_betas"):
        load_nsd(tmp_path / "nope", 1)
    with pytest.raises(FileNotFoundError, match="does not look like the NSD root"):
        load_nsd(tmp_path, 1)


def test_unknown_subject(mini):
    root, _ = mini
    with pytest.raises(ValueError, match=r"Unknown NSD subject 9.*subjects found.*\[1\]"):
        load_nsd(root, 9)
    with pytest.raises(FileNotFoundError, match=r"subj02.*Subjects found.*\[1\]"):
        load_nsd(root, 2)


def test_missing_session(mini):
    root, _ = mini
    with pytest.raises(ValueError, match=r"Session\(s\) \[7\].*sessions found: \[1, 2, 3\]"):
        load_nsd(root, SUBJECT, sessions=[1, 7])


def test_missing_design_and_bad_design(mini, tmp_path):
    root, _ = mini
    root2 = _copy(root, tmp_path)
    lay = NSDLayout(root2)
    lay.expdesign.unlink()
    with pytest.raises(FileNotFoundError, match="nsd_expdesign.mat"):
        load_nsd(root2, SUBJECT, verbose=False)
    from scipy.io import savemat

    savemat(lay.expdesign, {"subjectim": np.ones((8, 12)), "sharedix": np.ones((1, 3))})
    with pytest.raises(ValueError, match=r"nsd_expdesign\.mat has no 'masterordering'"):
        load_nsd(root2, SUBJECT, verbose=False)
    lay.expdesign.write_bytes(b"not a mat file at all")
    with pytest.raises(OSError, match=r"nsd_expdesign\.mat.*re-download"):
        load_nsd(root2, SUBJECT, verbose=False)


def test_truncated_nifti(mini, tmp_path):
    root, _ = mini
    root2 = _copy(root, tmp_path)
    p = NSDLayout(root2).betas_file(SUBJECT, 2, "nii.gz")
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OSError, match=r"betas_session02\.nii\.gz.*re-download this file"):
        load_nsd(root2, SUBJECT, betas_format="nii.gz", verbose=False)
    p.write_bytes(gzip.compress(b"garbage" * 10))
    with pytest.raises(OSError, match=r"betas_session02\.nii\.gz.*re-download this file"):
        load_nsd(root2, SUBJECT, betas_format="nii.gz", verbose=False)


def test_bad_hdf5(mini, tmp_path):
    root, _ = mini
    root2 = _copy(root, tmp_path)
    p = NSDLayout(root2).betas_file(SUBJECT, 1, "hdf5")
    p.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(OSError, match=r"betas_session01\.hdf5.*re-download this file"):
        load_nsd(root2, SUBJECT, verbose=False)
    raw = NSDLayout(root).betas_file(SUBJECT, 1, "hdf5").read_bytes()
    p.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(OSError, match=r"betas_session01\.hdf5.*re-download this file"):
        load_nsd(root2, SUBJECT, verbose=False)


def test_mask_grid_mismatch(mini, tmp_path):
    root, _ = mini
    root2 = _copy(root, tmp_path)
    write_volume(NSDLayout(root2).roi_file(SUBJECT, "nsdgeneral"), np.ones((6, 5, 3), dtype=np.int16))
    with pytest.raises(ValueError, match=r"nsdgeneral\.nii\.gz has grid \(6, 5, 3\).*"
                                         r"betas_session01\.hdf5 have grid \(6, 5, 4\)"):
        load_nsd(root2, SUBJECT, verbose=False)
    with pytest.raises(FileNotFoundError, match=r"ROI file not found.*nope\.nii\.gz.*floc-faces"):
        load_nsd(root2, SUBJECT, roi="nope", verbose=False)


def test_bad_options(mini):
    root, _ = mini
    with pytest.raises(ValueError, match="'zscore' parameter"):
        load_nsd(root, SUBJECT, zscore="global")
    with pytest.raises(ValueError, match="'betas_format' parameter"):
        load_nsd(root, SUBJECT, betas_format="mgh")


# ---------------------------------------------------------------------------
# preprocessing.zscore_sessions
# ---------------------------------------------------------------------------
def test_zscore_sessions_helper():
    from neurodecode.preprocessing import zscore_sessions

    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (10, 4)).astype(np.float32)
    x[:, 3] = 7.0  # constant voxel: std 0 -> centred only
    ses = np.array([1] * 5 + [2] * 5)
    train = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=bool)
    ref = x.copy()
    out = zscore_sessions(x, ses, train)
    assert out is x
    for s in (1, 2):
        m = ses == s
        mu, sd = ref[m & train].mean(0), ref[m & train].std(0)
        sd[sd == 0] = 1
        np.testing.assert_allclose(x[m], (ref[m] - mu) / sd, rtol=1e-5, atol=1e-5)
    # non-contiguous sessions
    y = ref.copy()[[0, 5, 1, 6, 2, 7, 3, 8, 4, 9]]
    zscore_sessions(y, ses[[0, 5, 1, 6, 2, 7, 3, 8, 4, 9]], train[[0, 5, 1, 6, 2, 7, 3, 8, 4, 9]])
    np.testing.assert_allclose(y, x[[0, 5, 1, 6, 2, 7, 3, 8, 4, 9]], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Session 2 has no training trial"):
        zscore_sessions(ref.copy(), ses, ses == 1)
    with pytest.raises(ValueError, match="floating point"):
        zscore_sessions(np.zeros((10, 2), dtype=np.int16), ses, train)


def test_missing_betas_file_for_format(tmp_path):
    make_nsd_mini(tmp_path, formats=("hdf5",), captions=False, stimuli=False)
    with pytest.raises(FileNotFoundError, match=r"betas_session01\.nii\.gz.*betas_format='nii.gz'"):
        load_nsd(tmp_path, SUBJECT, betas_format="nii.gz", verbose=False)
    with pytest.raises(FileNotFoundError, match=r"betas_all_subj01_fp32_renorm\.hdf5"):
        load_nsd(tmp_path, SUBJECT, betas_format="mindeye2", verbose=False)


# ---------------------------------------------------------------------------
# ncsnr and the MNI transform in info
# ---------------------------------------------------------------------------
def test_ncsnr_from_the_simulator(tmp_path):
    import nibabel as nib

    from neurodecode.datasets import simulate

    root = simulate("nsd", tmp_path / "sim", n_subjects=1, n_sessions=1, trials_per_session=30,
                    image_size=16, grid=(12, 14, 12), seed=2, verbose="warning")
    vol = np.asarray(nib.load(NSDLayout(root).ncsnr(1)).dataobj)
    for roi in ("nsdgeneral", None):
        tr = load_nsd(root, 1, roi=roi, verbose=False)
        nc = tr.info["ncsnr"]
        assert nc.dtype == np.float32 and nc.shape == (tr.data.shape[1],)
        np.testing.assert_array_equal(nc, vol[tuple(tr.info["voxel_indices"].T)])
        assert nc.max() > 0
    assert "mni_transform" not in tr.info  # the simulator writes no transform


def test_ncsnr_absent_mismatched_and_mni_transform(mini, tmp_path):
    root, _ = mini
    assert "ncsnr" not in load_nsd(root, SUBJECT, verbose=False).info
    root2 = _copy(root, tmp_path)
    lay = NSDLayout(root2)
    write_volume(lay.ncsnr(SUBJECT), np.ones((6, 5, 3), dtype=np.float32))
    lay.mni_transform(SUBJECT).parent.mkdir(parents=True)
    write_volume(lay.mni_transform(SUBJECT), np.zeros((4, 4, 4), dtype=np.float32))
    with pytest.warns(UserWarning, match=r"ncsnr\.nii\.gz has grid \(6, 5, 3\).*\(6, 5, 4\)"):
        info = load_nsd(root2, SUBJECT, verbose=False).info
    assert "ncsnr" not in info
    assert info["mni_transform"] == str(root2 / "nsddata/ppdata/subj01/transforms/MNI-to-func1pt8.nii.gz")
