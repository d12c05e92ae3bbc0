"""NSD on-disk layout: exact paths, and which sessions / subjects are discovered."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import pytest

from neurodecode.io import NSDLayout


def test_layout_paths_are_the_real_nsd_names(tmp_path):
    lay = NSDLayout(tmp_path)
    b = tmp_path / "nsddata_betas/ppdata/subj02/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    assert lay.betas_file(2, 3, "hdf5") == b / "betas_session03.hdf5"
    assert lay.betas_file(2, 40, ".nii.gz") == b / "betas_session40.nii.gz"
    assert lay.ncsnr(2) == b / "ncsnr.nii.gz"
    s = tmp_path / "nsddata/ppdata/subj02"
    assert lay.roi_file(2, "nsdgeneral") == s / "func1pt8mm/roi/nsdgeneral.nii.gz"
    assert lay.roi_file(2, "prf-visualrois", "lh") == s / "func1pt8mm/roi/lh.prf-visualrois.nii.gz"
    assert lay.brainmask(2) == s / "func1pt8mm/brainmask.nii.gz"
    assert lay.mni_transform(2) == s / "transforms/MNI-to-func1pt8.nii.gz"
    assert lay.responses(2) == s / "behav/responses.tsv"
    assert lay.ctab_file(2, "streams") == tmp_path / "nsddata/freesurfer/subj02/label/streams.mgz.ctab"
    assert lay.coco_captions("val2017") == tmp_path / "coco/annotations/captions_val2017.json"
    assert lay.mindeye2_betas(7) == tmp_path / "betas_all_subj07_fp32_renorm.hdf5"
    assert lay.mindeye2_subj_indices() == tmp_path / "COCO_73k_subj_indices.hdf5"
    assert repr(NSDLayout("/x/nsd")) == "NSDLayout('/x/nsd')"
    assert NSDLayout("~/nsd").root == Path("~/nsd").expanduser()
    with pytest.raises(ValueError, match="'ext'"):
        lay.betas_file(1, 1, "mat")
    with pytest.raises(ValueError, match="'hemi'"):
        lay.roi_file(1, "x", "both")


def test_sessions_and_subjects_found(tmp_path):
    lay = NSDLayout(tmp_path)
    assert lay.sessions_found(1) == [] and lay.subjects_found() == []
    d = lay.betas_dir(1)
    d.mkdir(parents=True)
    for name in ("betas_session10.hdf5", "betas_session02.nii.gz", "betas_session02.hdf5", "betas_session3.mat",
                 "xbetas_session04.hdf5", "betas_session05.hdf5.tmp"):
        (d / name).write_text("")
    assert lay.sessions_found(1) == [2, 10]
    (tmp_path / "nsddata/ppdata/subj05").mkdir(parents=True)
    (tmp_path / "nsddata/ppdata/subj5").mkdir(parents=True)
    (tmp_path / "nsddata/ppdata/subj06").write_text("a file")
    (tmp_path / "betas_all_subj08_fp32_renorm.hdf5").write_text("")
    (tmp_path / "betas_all_subj9_fp32_renorm.hdf5").write_text("")
    assert lay.subjects_found() == [1, 5, 8]


def test_nonzero_mask_reads_every_block_of_volumes(tmp_path):
    from neurodecode.io import read_betas_nonzero_mask, write_betas

    betas = np.zeros((3, 2, 2, 5), dtype=np.int16)
    betas[0, 0, 0, 0] = 7          # first volume
    betas[2, 1, 1, 4] = -3         # last volume only: in the third block of 2
    for name in ("betas_session01.nii.gz", "betas_session01.hdf5"):
        p = write_betas(tmp_path / name, betas)
        mask = read_betas_nonzero_mask(p, block=2)
        assert mask.shape == (3, 2, 2) and mask.sum() == 2, name
        assert mask[0, 0, 0] and mask[2, 1, 1], name


def test_nifti_read_is_the_same_streamed_and_after_verification(tmp_path):
    from neurodecode.io import read_betas_masked, write_betas

    rng = np.random.default_rng(0)
    betas = rng.integers(-900, 900, size=(4, 3, 2, 6)).astype(np.int16)
    mask = rng.random((4, 3, 2)) > 0.4
    want = betas[mask].T.astype(np.float32) / np.float32(300)
    for name in ("betas_session01.nii.gz", "betas_session02.nii"):
        p = write_betas(tmp_path / name, betas)
        first = read_betas_masked(p, mask)     # .nii.gz: streamed and gzip-verified
        second = read_betas_masked(p, mask)    # now read through nibabel's proxy
        np.testing.assert_array_equal(first, want)
        np.testing.assert_array_equal(second, want)


def test_lazy_rows_boolean_and_repeated_indices(tmp_path):
    import h5py

    from neurodecode.io import LazyHDF5Rows

    data = np.arange(5 * 2, dtype=np.int32).reshape(5, 2)
    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f["imgBrick"] = data
    rows = LazyHDF5Rows(tmp_path / "x.hdf5", "imgBrick")
    np.testing.assert_array_equal(rows[np.array([False, True, False, True, False])], data[[1, 3]])
    np.testing.assert_array_equal(rows[[3, 1, 3, -1]], data[[3, 1, 3, 4]])
    np.testing.assert_array_equal(rows[-5], data[0])
    assert rows[np.zeros(0, int)].shape == (0, 2) and len(rows) == 5
    with pytest.raises(IndexError):
        rows[5]
    with pytest.raises(IndexError):
        rows[-6]


def test_coco_captions_file_round_trip(tmp_path):
    import json

    from neurodecode.io import read_coco_captions, write_coco_captions

    p = write_coco_captions(tmp_path / "captions_val2017.json", {5: [" a dog "], 2: ["x", "y"]})
    obj = json.loads(p.read_text())
    assert obj["info"] == {"description": "COCO captions (neurodecode writer)"}
    assert [im["id"] for im in obj["images"]] == [2, 5]
    assert read_coco_captions(p) == {2: ["x", "y"], 5: ["a dog"]}


def test_ctab_comments_and_single_token_lines(tmp_path):
    from neurodecode.io import read_ctab

    p = tmp_path / "streams.mgz.ctab"
    p.write_text("#$Id: a FreeSurfer header\n# two words\n\n0 Unknown\n1 early\n7\n")
    assert read_ctab(p) == {0: "Unknown", 1: "early", 7: "7"}
    p.write_text("0 Unknown\nV1 1\n")
    with pytest.raises(ValueError, match="Line 2"):
        read_ctab(p)


def test_h5_suffix_is_hdf5(tmp_path):
    from neurodecode.io import read_betas_masked, read_betas_shape, write_betas

    betas = np.arange(2 * 3 * 2 * 4, dtype=np.int16).reshape(2, 3, 2, 4)
    p = write_betas(tmp_path / "betas_session01.h5", betas)
    grid, n_t, _ = read_betas_shape(p)
    assert grid == (2, 3, 2) and n_t == 4
    mask = np.ones((2, 3, 2), bool)
    np.testing.assert_array_equal(read_betas_masked(p, mask, scale=1.0), betas[mask].T)


def test_missing_files_are_named_with_where_they_live(tmp_path):
    from neurodecode.io import read_coco_captions, read_expdesign

    with pytest.raises(FileNotFoundError, match="^COCO captions file not found"):
        read_coco_captions(tmp_path / "captions_val2017.json")
    with pytest.raises(FileNotFoundError, match="^NSD design file not found: .*It lives at "
                                                "nsddata/experiments/nsd/nsd_expdesign.mat under the NSD root"):
        read_expdesign(tmp_path / "nsd_expdesign.mat")


@pytest.mark.parametrize("which", ["masterordering", "subjectim", "sharedix"])
def test_expdesign_refuses_0_based_indices_naming_the_array(tmp_path, which):
    """Each of the three index arrays must be 1-based (MATLAB); a 0 anywhere is refused by name, nothing written."""
    from neurodecode.io import read_expdesign, write_expdesign

    good = {"masterordering": np.arange(1, 31), "subjectim": np.arange(1, 81).reshape(8, 10),
            "sharedix": np.array([1, 5, 9])}
    p = tmp_path / "nsd_expdesign.mat"
    write_expdesign(p, **good)
    d = read_expdesign(p)
    for k, v in good.items():
        np.testing.assert_array_equal(d[k], v)
    bad = dict(good)
    bad[which] = good[which].copy()
    bad[which].flat[-1] = 0
    q = tmp_path / "bad.mat"
    with pytest.raises(ValueError, match=rf"^{which} must hold 1-based indices \(>= 1\), got a minimum of 0"):
        write_expdesign(q, **bad)
    assert not q.exists()


def test_stimuli_hdf5_round_trip_one_image_per_chunk(tmp_path):
    """Images read back bit for bit; the dataset is chunked one image per chunk so that reading one stimulus
    (LazyHDF5Rows, a DataLoader worker) touches one image, not the whole brick."""
    import h5py

    from neurodecode.io import write_stimuli_hdf5

    imgs = np.random.default_rng(0).integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)
    p = write_stimuli_hdf5(tmp_path / "nsd_stimuli.hdf5", imgs)
    with h5py.File(p, "r") as f:
        ds = f["imgBrick"]
        assert ds.chunks == (1, 6, 7, 3) and ds.dtype == np.uint8
        np.testing.assert_array_equal(ds[()], imgs)


@pytest.mark.parametrize("name", ["betas_session01.hdf5", "betas_session01.nii.gz", "betas_session01.nii"])
def test_masked_betas_are_divided_by_the_scale_in_every_output_dtype(tmp_path, name):
    """``read_betas_masked`` = ``betas[mask].T / scale`` for float and integer outputs, every format."""
    from neurodecode.io import read_betas_masked, write_betas

    rng = np.random.default_rng(3)
    # multiples of 300 (whole percent signal change) so the quotient is exact in every dtype
    betas = (rng.integers(-20, 20, size=(4, 3, 2, 5)) * 300).astype(np.int16)
    mask = rng.random((4, 3, 2)) > 0.3
    p = write_betas(tmp_path / name, betas)
    raw = betas[mask].T.astype(np.float64)
    for dtype in (np.float32, np.float64, np.int32, np.int64):
        got = read_betas_masked(p, mask, dtype=dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, (raw / 300).astype(dtype))
        assert np.abs(got).max() <= 20                              # PSC, not PSC x 300 x 300
    for scale in (1.0, 100.0):                                      # a user scale, preallocated int output
        out = np.full((betas.shape[3], int(mask.sum())), -1, dtype=np.int32)
        res = read_betas_masked(p, mask, out=out, scale=scale)
        assert res is out
        np.testing.assert_array_equal(out, (raw / scale).astype(np.int32))


# -- sample 5: never-written HDF5 chunks, .h5 non-zero masks, integer volumes ------------------------

def _sparse_betas_h5(path, fill):
    """NSD layout (T, Z, Y, X), one voxel per chunk, only some chunks ever written."""
    import h5py

    rng = np.random.default_rng(5)
    n_t, X, Y, Z = 4, 3, 3, 2
    written = np.zeros((X, Y, Z), bool)
    written[[0, 1, 2, 0, 2], [0, 1, 2, 2, 1], [0, 0, 1, 1, 0]] = True   # the diagonal x == y and two others
    with h5py.File(path, "w") as f:
        d = f.create_dataset("betas", shape=(n_t, Z, Y, X), dtype=np.int16, chunks=(n_t, 1, 1, 1),
                             fillvalue=fill)
        for x, y, z in zip(*np.nonzero(written)):
            d[:, z, y, x] = rng.integers(-3000, 3000, n_t)
        full = d[...]                                       # h5py's own read: fill value where unwritten
        assert d.id.get_num_chunks() == written.sum()       # the others were really never allocated
    return full.transpose(3, 2, 1, 0), written               # (X, Y, Z, T)


@pytest.mark.parametrize("fill", [0, 600])
@pytest.mark.parametrize("suffix", [".hdf5", ".h5"])
def test_never_written_chunks_read_as_the_fill_value_of_their_own_voxel(tmp_path, fill, suffix):
    """A sparse betas file reads like h5py's full read: each voxel its own series, fill value if unwritten."""
    from neurodecode.io import read_betas_masked, read_betas_nonzero_mask

    p = tmp_path / f"betas_session01{suffix}"
    betas, written = _sparse_betas_h5(p, fill)
    for mask in (np.ones(written.shape, bool), ~written, written):
        got = read_betas_masked(p, mask, scale=300.0, dtype=np.float64)
        np.testing.assert_array_equal(got, betas[mask].T / 300.0)
    unwritten = read_betas_masked(p, ~written, scale=1.0)
    assert np.all(unwritten == fill)                         # nothing of another voxel leaks in
    nonzero = read_betas_nonzero_mask(p)
    np.testing.assert_array_equal(nonzero, np.any(betas != 0, axis=-1))
    if fill == 0:
        np.testing.assert_array_equal(nonzero, written)
    else:
        assert nonzero.all()


def test_nonzero_mask_of_an_h5_file_equals_the_hdf5_one(tmp_path):
    from neurodecode.io import read_betas_nonzero_mask, write_betas

    rng = np.random.default_rng(0)
    betas = (rng.integers(-2, 3, size=(3, 4, 2, 5)) * (rng.random((3, 4, 2, 1)) < 0.4)).astype(np.int16)
    want = np.any(betas != 0, axis=-1)
    assert 0 < want.sum() < want.size
    for name in ("b.h5", "b.hdf5", "b.nii.gz"):
        np.testing.assert_array_equal(read_betas_nonzero_mask(write_betas(tmp_path / name, betas)), want)


@pytest.mark.parametrize("dtype", [np.int64, np.intp, int, np.int32, np.int16, np.uint8, np.uint16, bool])
def test_integer_volumes_round_trip_as_integers(tmp_path, dtype):
    """ROI volumes (-1 / 0 / k labels) built with numpy's default int are written as integer labels."""
    from neurodecode.io.nsd import read_volume, write_volume

    vol = np.zeros((3, 4, 2), dtype=dtype)
    vol[1, 2, 1] = 1
    if np.dtype(dtype).kind in "iu" and np.dtype(dtype) != np.uint8:
        vol[0, 0, 0] = 7 if np.dtype(dtype).kind == "u" else -1
        vol[2, 3, 0] = 255
    aff = np.diag([1.8, 1.8, 1.8, 1.0])
    data, affine = read_volume(write_volume(tmp_path / "roi.nii.gz", vol, aff))
    assert data.dtype.kind in "iu"
    np.testing.assert_array_equal(data, vol.astype(np.int64))
    np.testing.assert_allclose(affine, aff, rtol=1e-6)           # stored as float32 in the header


def test_float_volumes_are_written_as_float32(tmp_path):
    from neurodecode.io.nsd import read_volume, write_volume

    vol = np.linspace(-1, 1, 24).reshape(2, 3, 4)
    data, _ = read_volume(write_volume(tmp_path / "ncsnr.nii.gz", vol))
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, vol.astype(np.float32))


def test_uint64_labels_are_never_silently_written_as_floats(tmp_path):
    """A uint64 label volume is either refused or kept integer: never float32 (labels > 2^24 would merge)."""
    from neurodecode.io.nsd import read_volume, write_volume

    vol = np.zeros((2, 2, 2), dtype=np.uint64)
    vol[0, 1, 1] = 2 ** 24 + 1
    try:
        p = write_volume(tmp_path / "labels.nii.gz", vol)
    except Exception:                                        # noqa: BLE001 (refused: fine)
        return
    data, _ = read_volume(p)
    assert data.dtype.kind in "iu"
    np.testing.assert_array_equal(data, vol)


def test_int64_labels_outside_int32_are_refused_not_wrapped(tmp_path):
    """write_volume stores integer labels as int32: a value outside that range is refused, never wrapped."""
    from neurodecode.io.nsd import write_volume

    vol = np.zeros((2, 2, 2), dtype=np.int64)
    vol[1, 1, 1] = 2 ** 32 + 5
    with pytest.raises(ValueError, match=r"outside the int32 range \[0, 4294967301\] would wrap"):
        write_volume(tmp_path / "labels.nii.gz", vol)
    assert not (tmp_path / "labels.nii.gz").exists()
