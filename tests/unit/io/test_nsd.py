"""NSD readers and writers: on-disk form as in FORMATS.md section 1."""

from __future__ import annotations

import json
import pickle

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.io import loadmat

from neurodecode.io import (
    LazyHDF5Rows,
    NSDLayout,
    read_betas_masked,
    read_betas_nonzero_mask,
    read_betas_shape,
    read_coco_captions,
    read_ctab,
    read_expdesign,
    read_stim_info,
    read_volume,
    write_betas,
    write_coco_captions,
    write_ctab,
    write_expdesign,
    write_stim_info,
    write_stimuli_hdf5,
    write_volume,
)


def test_layout_paths(tmp_path):
    lay = NSDLayout(tmp_path)
    r = tmp_path
    assert lay.root == r
    assert lay.expdesign == r / "nsddata/experiments/nsd/nsd_expdesign.mat"
    assert lay.stim_info == r / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
    assert lay.stimuli_hdf5 == r / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
    assert lay.subject_dir(3) == r / "nsddata/ppdata/subj03"
    bdir = r / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    assert lay.betas_dir(1) == bdir
    assert lay.betas_file(1, 7, "hdf5") == bdir / "betas_session07.hdf5"
    assert lay.betas_file(1, 12, "nii.gz") == bdir / "betas_session12.nii.gz"
    assert lay.roi_file(2, "floc-faces") == r / "nsddata/ppdata/subj02/func1pt8mm/roi/floc-faces.nii.gz"
    assert lay.roi_file(2, "HCP_MMP1", "lh").name == "lh.HCP_MMP1.nii.gz"
    assert lay.ctab_file(2, "floc-faces") == r / "nsddata/freesurfer/subj02/label/floc-faces.mgz.ctab"
    assert lay.brainmask(1) == r / "nsddata/ppdata/subj01/func1pt8mm/brainmask.nii.gz"
    assert lay.ncsnr(1) == bdir / "ncsnr.nii.gz"
    assert lay.responses(8) == r / "nsddata/ppdata/subj08/behav/responses.tsv"
    assert lay.coco_captions("val2017") == r / "coco/annotations/captions_val2017.json"
    assert not r.joinpath("nsddata").exists()  # no I/O in the layout
    with pytest.raises(ValueError, match="'ext'"):
        lay.betas_file(1, 1, "mgh")


def test_sessions_found(tmp_path):
    lay = NSDLayout(tmp_path)
    assert lay.sessions_found(1) == []
    b = np.zeros((2, 2, 2, 3), dtype=np.int16)
    write_betas(lay.betas_file(1, 3, "hdf5"), b)
    write_betas(lay.betas_file(1, 1, "nii.gz"), b)
    write_betas(lay.betas_file(1, 3, "nii.gz"), b)
    (lay.betas_dir(1) / "ncsnr.nii.gz").write_bytes(b"")
    assert lay.sessions_found(1) == [1, 3]
    assert lay.subjects_found() == [1]


def test_write_expdesign_shapes(tmp_path):
    p = tmp_path / "nsd_expdesign.mat"
    mo = np.arange(1, 31)
    si = np.arange(1, 81).reshape(8, 10)
    out = write_expdesign(p, mo, si, [1, 2, 3])
    assert out == p
    mat = loadmat(p)
    assert mat["masterordering"].shape == (1, 30)
    assert mat["subjectim"].shape == (8, 10)
    assert mat["sharedix"].shape == (1, 3)
    d = read_expdesign(p)
    np.testing.assert_array_equal(d["masterordering"], mo)
    np.testing.assert_array_equal(d["subjectim"], si)
    np.testing.assert_array_equal(d["sharedix"], [1, 2, 3])
    with pytest.raises(ValueError, match="1-based"):
        write_expdesign(p, np.arange(0, 30), si, [1])
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no leftovers


def test_write_stim_info(tmp_path):
    p = tmp_path / "a" / "nsd_stim_info_merged.csv"
    t = pd.DataFrame({"cocoId": [5, 9], "cocoSplit": ["train2017", "val2017"], "nsdId": [0, 1],
                      "shared1000": [True, False], "subject1": [1, 0], "subject1_rep0": [3, 0]},
                     index=[10, 11])
    write_stim_info(p, t)
    first = p.read_text().splitlines()[0]
    assert first.startswith(",cocoId")  # unnamed index column
    back = read_stim_info(p)
    assert list(back.index) == [0, 1]
    assert back["shared1000"].tolist() == [True, False]


def test_write_betas_both_formats(tmp_path):
    rng = np.random.default_rng(0)
    b = rng.integers(-500, 500, (6, 5, 4, 7)).astype(np.int16)
    h5 = write_betas(tmp_path / "betas_session01.hdf5", b)
    with h5py.File(h5, "r") as f:
        d = f["betas"]
        assert d.shape == (7, 4, 5, 6) and d.dtype == np.int16 and d.chunks == (7, 1, 1, 1)
        np.testing.assert_array_equal(np.transpose(d[3], (2, 1, 0)), b[..., 3])
    nii = write_betas(tmp_path / "betas_session01.nii.gz", b, affine=np.eye(4) * 2)
    img = nib.load(nii)
    assert img.shape == (6, 5, 4, 7) and img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), b)
    assert read_betas_shape(h5)[:2] == ((6, 5, 4), 7)
    assert read_betas_shape(nii)[:2] == ((6, 5, 4), 7)
    with pytest.raises(ValueError, match="int16"):
        write_betas(tmp_path / "x.hdf5", b.astype(float))
    with pytest.raises(ValueError, match="suffix"):
        write_betas(tmp_path / "x.npy", b)


@pytest.mark.parametrize("layout", ["voxel_chunks", "slab_chunks", "gzip"])
def test_read_betas_masked_orders(tmp_path, layout):
    rng = np.random.default_rng(1)
    b = rng.integers(-500, 500, (6, 5, 4, 9)).astype(np.int16)
    mask = rng.random((6, 5, 4)) > 0.6
    p = tmp_path / "betas_session01.hdf5"
    if layout == "voxel_chunks":
        write_betas(p, b)
    else:
        kw = {"chunks": (9, 1, 5, 6)} if layout == "slab_chunks" else \
            {"chunks": (9, 1, 1, 1), "compression": "gzip"}
        with h5py.File(p, "w") as f:
            f.create_dataset("betas", data=b.transpose(3, 2, 1, 0), **kw)
    out = read_betas_masked(p, mask)
    np.testing.assert_array_equal(out, b[mask].T.astype(np.float32) / np.float32(300))
    buf = np.zeros((12, int(mask.sum())), dtype=np.float64)
    read_betas_masked(p, mask, out=buf[2:11])
    np.testing.assert_allclose(buf[2:11], b[mask].T / 300)
    with pytest.raises(ValueError, match=r"grid \(6, 5, 3\).*betas_session01\.hdf5"):
        read_betas_masked(p, mask[:, :, :3])


def test_nonzero_mask(tmp_path):
    b = np.zeros((3, 3, 2, 4), dtype=np.int16)
    b[1, 2, 0, 3] = 5
    b[0, 0, 1, 0] = -1
    for ext in ("hdf5", "nii.gz"):
        p = write_betas(tmp_path / f"b.{ext}", b)
        np.testing.assert_array_equal(read_betas_nonzero_mask(p), np.any(b != 0, axis=-1))


def test_volume_ctab_captions(tmp_path):
    vol = np.array([[[-1, 0], [2, 1]]], dtype=np.int16)
    p = write_volume(tmp_path / "roi" / "floc-faces.nii.gz", vol)
    data, aff = read_volume(p)
    np.testing.assert_array_equal(data, vol)
    assert aff.shape == (4, 4)
    c = write_ctab(tmp_path / "floc-faces.mgz.ctab", {2: "FFA-1", 1: "OFA"})
    assert c.read_text().splitlines() == ["0 Unknown", "1 OFA", "2 FFA-1"]
    parsed = pd.read_csv(c, delimiter=" ", header=None, index_col=0)  # the Algonauts way
    assert parsed.loc[2, 1] == "FFA-1"
    assert read_ctab(c) == {0: "Unknown", 1: "OFA", 2: "FFA-1"}
    j = write_coco_captions(tmp_path / "captions_train2017.json", {7: ["a dog", "a cat"], 3: ["x"]})
    obj = json.loads(j.read_text())
    assert [im["id"] for im in obj["images"]] == [3, 7]
    assert {"image_id", "id", "caption"} <= set(obj["annotations"][0])
    assert read_coco_captions(j) == {3: ["x"], 7: ["a dog", "a cat"]}


def test_stimuli_hdf5_lazy_rows(tmp_path):
    imgs = np.zeros((10, 4, 4, 3), dtype=np.uint8)
    imgs[:] = np.arange(10, dtype=np.uint8)[:, None, None, None]
    p = write_stimuli_hdf5(tmp_path / "nsd_stimuli.hdf5", imgs)
    with h5py.File(p, "r") as f:
        assert f["imgBrick"].shape == (10, 4, 4, 3) and f["imgBrick"].dtype == np.uint8
    rows = LazyHDF5Rows(p, "imgBrick")
    assert rows.shape == (10, 4, 4, 3) and len(rows) == 10 and rows.dtype == np.uint8
    np.testing.assert_array_equal(rows[[1, 4, 8]][:, 0, 0, 0], [1, 4, 8])
    np.testing.assert_array_equal(rows[np.array([8, 1, 8])][:, 0, 0, 0], [8, 1, 8])
    assert rows[3][0, 0, 0] == 3 and rows[-1][0, 0, 0] == 9
    clone = pickle.loads(pickle.dumps(rows))
    np.testing.assert_array_equal(clone[[2]], rows[[2]])
    with pytest.raises(IndexError):
        rows[10]
    with pytest.raises(ValueError, match="uint8"):
        write_stimuli_hdf5(p, imgs.astype(float))
    with pytest.raises(ValueError, match="has no dataset 'images'"):
        LazyHDF5Rows(p, "images")


def test_read_errors_name_file(tmp_path):
    bad = tmp_path / "betas_session01.hdf5"
    bad.write_bytes(b"nope")
    with pytest.raises(OSError, match=r"betas_session01\.hdf5.*re-download this file"):
        read_betas_shape(bad)
    with pytest.raises(FileNotFoundError, match="missing.mgz.ctab"):
        read_ctab(tmp_path / "missing.mgz.ctab")
    v = tmp_path / "roi.nii.gz"
    v.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(OSError, match=r"roi\.nii\.gz.*re-download"):
        read_volume(v)
    j = tmp_path / "captions_val2017.json"
    j.write_text("{not json")
    with pytest.raises(OSError, match="captions_val2017.json"):
        read_coco_captions(j)
