"""Atlases: labels land on the right voxels / channels / samples, in every space and layout."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurodecode.analysis.atlases import (
    NSD_MNI_AFFINE,
    NSDAtlas,
    SensorAtlas,
    SphereAtlas,
    TimeWindowAtlas,
    VolumeAtlas,
    load_atlas,
    load_dosenbach_2010,
    load_schaefer_2018,
    load_seitzman_2018,
    load_yeo_2011,
    parse_atlas,
    read_atlas_labels,
)
from neurodecode.datasets import BrainTrials

# data grid: 10 x 12 x 10 voxels of 2 mm, voxel (i, j, k) at (2i - 10, 2j - 12, 2k - 10) mm
SHAPE = (10, 12, 10)
DATA_AFFINE = np.array([[2.0, 0, 0, -10], [0, 2, 0, -12], [0, 0, 2, -10], [0, 0, 0, 1]])
# atlas grid: 1 mm, x flipped: atlas voxel (a, b, c) at (14 - a, b - 15, c - 12) mm
ATLAS_AFFINE = np.array([[-1.0, 0, 0, 14], [0, 1, 0, -15], [0, 0, 1, -12], [0, 0, 0, 1]])


def _events(n, subject):
    return pd.DataFrame({"subject": subject, "session": 1, "stimulus_id": np.arange(n), "repetition": 0,
                         "split": "train"})


def _fmri(vox, *, subject=1, shape=SHAPE, affine=DATA_AFFINE, n=3, **info):
    vox = np.asarray(vox, dtype=np.int64)
    info = {"modality": "fmri", "subject": subject, "volume_shape": shape,
            "affine": None if affine is None else np.asarray(affine, float), "voxel_indices": vox, **info}
    data = np.zeros((n, len(vox)), dtype=np.float32)
    return BrainTrials(data, _events(n, subject), info)


def _grid(shape=SHAPE):
    return np.argwhere(np.ones(shape, dtype=bool)).astype(np.int64)


def _rule(xyz):
    """Ground truth of the test atlas, as a function of world mm."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return np.where(x > 0, 1, np.where(y >= 4, 2, np.where(z >= 6, 3, 0)))


def _atlas_img():
    abc = np.indices((30, 30, 30)).reshape(3, -1).T
    world = abc @ ATLAS_AFFINE[:3, :3].T + ATLAS_AFFINE[:3, 3]
    return nib.Nifti1Image(_rule(world).reshape(30, 30, 30).astype(np.int16), ATLAS_AFFINE)


class _Logs(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def logs():
    from neurodecode.utils import logger

    handler = _Logs()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def _save(img, path):
    nib.save(img, str(path))
    return path


# ---------------------------------------------------------------------------------------------
# label tables
# ---------------------------------------------------------------------------------------------
def test_read_atlas_labels_formats(tmp_path):
    ctab = tmp_path / "a.mgz.ctab"
    ctab.write_text("#$Id: ctab\n0 Unknown 0 0 0 0\n1 V1v 10 20 30 0\n2 V1d 1 2 3 0\n")
    assert read_atlas_labels(ctab) == {1: "V1v", 2: "V1d"}
    lut = tmp_path / "b.lut"
    lut.write_text("  3   Left-Cortex  1 2 3 0\n\n17 Left-Hippocampus 4 5 6 0\n")
    assert read_atlas_labels(lut) == {3: "Left-Cortex", 17: "Left-Hippocampus"}
    tsv = tmp_path / "c.tsv"
    tsv.write_text("name\tindex\tcolor\nVisual\t1\t#fff\nDefault\t7\t#000\n")
    assert read_atlas_labels(tsv) == {1: "Visual", 7: "Default"}
    bare = tmp_path / "d.tsv"
    bare.write_text("1\tVisual\n2\tSomatomotor\n")
    assert read_atlas_labels(bare) == {1: "Visual", 2: "Somatomotor"}
    names = tmp_path / "e.txt"
    names.write_text("Visual\nSomatomotor\nDefault\n")
    assert read_atlas_labels(names) == {1: "Visual", 2: "Somatomotor", 3: "Default"}
    schaefer = tmp_path / "f.txt"
    schaefer.write_text("1\t7Networks_LH_Vis_1\t120\t18\t134\t0\n2\t7Networks_RH_Default_PFCm_1\t1\t2\t3\t0\n")
    assert read_atlas_labels(schaefer) == {1: "7Networks_LH_Vis_1", 2: "7Networks_RH_Default_PFCm_1"}
    bad = tmp_path / "g.ctab"
    bad.write_text("1 V1v\nnot a line\n")
    with pytest.raises(ValueError, match="not 'index name"):
        read_atlas_labels(bad)


# ---------------------------------------------------------------------------------------------
# volume atlases in the data's space
# ---------------------------------------------------------------------------------------------
def test_volume_atlas_lands_on_the_right_voxels_across_grids(logs):
    vox = _grid()
    trials = _fmri(vox)
    atlas = VolumeAtlas(_atlas_img(), {1: "A", 2: "B", 3: "C", 4: "D"}, name="toy")
    regions = atlas.assign(trials)
    assert list(regions) == ["A", "B", "C"]  # D is in no voxel: dropped
    assert any("D" in m and "dropped" in m for m in logs)
    truth = _rule(vox * 2.0 + DATA_AFFINE[:3, 3])
    for value, name in ((1, "A"), (2, "B"), (3, "C")):
        got = regions[name][1]
        assert got.dtype == np.int64
        assert np.array_equal(got, np.flatnonzero(truth == value))
    flat = {tuple(v): i for i, v in enumerate(vox)}
    assert flat[(6, 0, 0)] in regions["A"][1]      # x = 2 mm
    assert flat[(5, 8, 0)] in regions["B"][1]      # x = 0, y = 4 mm
    assert flat[(0, 0, 8)] in regions["C"][1]      # x = -10, y = -12, z = 6 mm
    assert not any(flat[(0, 0, 0)] in r[1] for r in regions.values())


def test_volume_atlas_matches_nilearn_nearest_resampling():
    from nilearn.image import resample_img

    aff = np.array([[-1.5, 0, 0, 20.3], [0, 1.5, 0.2, -20.3], [0, 0, 1.5, -14.7], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    img = nib.Nifti1Image(rng.integers(0, 5, size=(25, 25, 25)).astype(np.int16), aff)
    vox = _grid()[::7]
    atlas = VolumeAtlas(img)
    regions = atlas.assign(_fmri(vox))
    res = np.asarray(resample_img(img, target_affine=DATA_AFFINE, target_shape=SHAPE, interpolation="nearest",
                                  force_resample=True, copy_header=True).dataobj)
    expected = res[vox[:, 0], vox[:, 1], vox[:, 2]]
    for name, per in regions.items():
        assert np.array_equal(per[1], np.flatnonzero(expected == int(name)))


def test_volume_atlas_same_grid_and_multi_subject(logs):
    img = _atlas_img()
    labels = np.asarray(img.dataobj)
    vox1 = np.array([[20, 0, 0], [0, 29, 0], [0, 0, 29], [29, 0, 29]])
    vox2 = np.array([[20, 0, 0], [0, 29, 0]])                         # subject 2 lacks region 3
    t1 = _fmri(vox1, subject=1, shape=(30, 30, 30), affine=ATLAS_AFFINE)
    t2 = _fmri(vox2, subject=2, shape=(30, 30, 30), affine=ATLAS_AFFINE)
    trials = BrainTrials.concatenate([t1, t2])
    regions = VolumeAtlas(img).assign(trials)
    for name, per in regions.items():
        assert set(per) == {1, 2}
        exp1 = np.flatnonzero(labels[tuple(vox1.T)] == int(name))
        assert np.array_equal(per[1], exp1)
    if "3" in regions:
        assert regions["3"][2].size == 0 and regions["3"][2].dtype == np.int64


def test_volume_atlas_outside_fov_warns_and_bad_shapes(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4))
    trials = _fmri(_grid()[:50])
    with pytest.warns(UserWarning, match="outside the atlas volume"):
        VolumeAtlas(img).assign(trials)
    with pytest.raises(ValueError, match="non-integer"):
        VolumeAtlas(nib.Nifti1Image(np.full((4, 4, 4), 0.5, np.float32), np.eye(4))).assign(trials)
    with pytest.raises(ValueError, match="feature shape"):
        VolumeAtlas(img).assign(BrainTrials(np.zeros((2, 3)), _events(2, 1), trials.info))
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        VolumeAtlas(tmp_path / "nope.nii.gz")


def test_load_atlas_finds_a_sidecar(tmp_path):
    path = _save(_atlas_img(), tmp_path / "toy.nii.gz")
    (tmp_path / "toy.tsv").write_text("index\tname\n1\tright\n2\tfront\n3\ttop\n")
    atlas = load_atlas(path)
    assert atlas.name == "toy" and atlas.regions == ["right", "front", "top"]
    (tmp_path / "toy.tsv").unlink()
    assert load_atlas(path).regions == ["1", "2", "3"]


# ---------------------------------------------------------------------------------------------
# nilearn layouts: Yeo and Schaefer
# ---------------------------------------------------------------------------------------------
def test_yeo_loader_reads_nilearn_layout(tmp_path):
    folder = tmp_path / "yeo_2011" / "Yeo_JNeurophysiol11_MNI152"
    folder.mkdir(parents=True)
    vol = np.zeros((8, 8, 8), np.uint8)
    vol[:4] = 1
    vol[4:, :4] = 7
    _save(nib.Nifti1Image(vol, np.eye(4)), folder / "Yeo2011_7Networks_MNI152_FreeSurferConformed1mm_LiberalMask.nii.gz")
    atlas = load_yeo_2011(tmp_path)
    assert atlas.space == "MNI152" and atlas.name == "yeo7"
    assert atlas.regions[0] == "Visual" and atlas.regions[-1] == "Default" and len(atlas.regions) == 7
    regions = atlas.assign(_fmri(_grid((8, 8, 8)), shape=(8, 8, 8), affine=np.eye(4), space="MNI152"))
    assert list(regions) == ["Visual", "Default"]
    assert len(regions["Visual"][1]) == 4 * 64 and len(regions["Default"][1]) == 4 * 32
    assert load_yeo_2011(folder).source == atlas.source                     # the folder itself
    with pytest.raises(FileNotFoundError, match="fetch_atlas_yeo_2011") as err:
        load_yeo_2011(tmp_path, thickness="thin")
    assert "Yeo2011_7Networks_MNI152_FreeSurferConformed1mm.nii.gz" in str(err.value)


def _fake_schaefer(root, res=2):
    folder = root / "schaefer_2018"
    folder.mkdir(parents=True, exist_ok=True)
    vol = np.zeros((6, 6, 6), np.int32)
    vol[:3, :3] = 1
    vol[:3, 3:] = 2
    vol[3:, :3] = 3
    vol[3:, 3:, :3] = 4
    _save(nib.Nifti1Image(vol, np.eye(4)), folder / f"Schaefer2018_100Parcels_7Networks_order_FSLMNI152_{res}mm.nii.gz")
    (folder / "Schaefer2018_100Parcels_7Networks_order.txt").write_text(
        "1\t7Networks_LH_Vis_1\t120\t18\t134\t0\n2\t7Networks_LH_Default_Temp_1\t1\t2\t3\t0\n"
        "3\t7Networks_RH_Vis_2\t4\t5\t6\t0\n4\t7Networks_RH_SalVentAttn_FrOperIns_1\t7\t8\t9\t0\n")
    return vol


def test_schaefer_groups_parcels_into_networks(tmp_path):
    vol = _fake_schaefer(tmp_path)
    trials = _fmri(_grid((6, 6, 6)), shape=(6, 6, 6), affine=np.eye(4), space="MNI152")
    atlas = load_schaefer_2018(tmp_path, n_rois=100, resolution_mm=2)
    regions = atlas.assign(trials)
    assert list(regions) == ["Vis", "Default", "SalVentAttn"]
    flat = vol.ravel()
    assert np.array_equal(regions["Vis"][1], np.flatnonzero(np.isin(flat, [1, 3])))
    assert np.array_equal(regions["SalVentAttn"][1], np.flatnonzero(flat == 4))
    parcels = load_schaefer_2018(tmp_path / "schaefer_2018", n_rois=100, resolution_mm=2, by="parcel")
    assert list(parcels.assign(trials)) == ["7Networks_LH_Vis_1", "7Networks_LH_Default_Temp_1",
                                            "7Networks_RH_Vis_2", "7Networks_RH_SalVentAttn_FrOperIns_1"]
    with pytest.raises(FileNotFoundError, match="fetch_atlas_schaefer_2018"):
        load_schaefer_2018(tmp_path, n_rois=200)


# ---------------------------------------------------------------------------------------------
# MNI atlases on subject-space data: NSD's transform volume
# ---------------------------------------------------------------------------------------------
def test_mni_atlas_on_native_data_needs_a_transform():
    atlas = VolumeAtlas(_atlas_img(), space="MNI152")
    with pytest.raises(ValueError, match="MNI-to-func1pt8") as err:
        atlas.assign(_fmri(_grid()[:10]))
    assert "transforms=" in str(err.value)


def _native_with_transform(tmp_path, coords, subject=1):
    """A 2 x 2 x 2 native grid whose transform holds ``coords`` (1-based MNI voxels, one per voxel)."""
    shape = (2, 2, 2)
    vox = _grid(shape)
    tvol = np.zeros((*shape, 3), np.float32)
    tvol[tuple(vox.T)] = coords
    path = _save(nib.Nifti1Image(tvol, np.eye(4)), tmp_path / f"subj{subject:02d}_MNI-to-func1pt8.nii.gz")
    return _fmri(vox, subject=subject, shape=shape, affine=np.diag([1.8, 1.8, 1.8, 1.0])), path


COORDS = np.array([[50.4, 60.6, 70.2], [120.0, 30.0, 90.0], [9999, 9999, 9999], [10.0, 200.0, 15.0],
                   [90.51, 100.49, 80.0], [np.nan, 1, 1], [182.0, 218.0, 182.0], [1.0, 1.0, 1.0]])


def test_transform_volume_reads_the_atlas_at_round_coord_minus_one(tmp_path):
    vol = np.zeros((182, 218, 182), np.uint8)     # an atlas on NSD's MNI grid
    i, j, k = np.indices(vol.shape, sparse=True)
    vol[...] = (1 + (i * 7 + j * 3 + k) % 5).astype(np.uint8)
    atlas = VolumeAtlas(nib.Nifti1Image(vol, NSD_MNI_AFFINE), space="MNI152")
    trials, path = _native_with_transform(tmp_path, COORDS)
    valid = np.isfinite(COORDS).all(1) & (COORDS != 9999).all(1)
    idx = (np.floor(COORDS[valid] + 0.5) - 1).astype(int)
    expected = np.zeros(len(COORDS), int)
    expected[valid] = vol[idx[:, 0], idx[:, 1], idx[:, 2]]
    pattern = str(path).replace("subj01", "subj{subject:02d}")
    for regions in (VolumeAtlas(atlas.img, space="MNI152", transforms={1: path}).assign(trials),
                    VolumeAtlas(atlas.img, space="MNI152", transforms=pattern).assign(trials),
                    atlas.assign(BrainTrials(trials.data, trials.events, {**trials.info, "mni_transform": path}))):
        got = np.zeros(len(COORDS), int)
        for name, per in regions.items():
            got[per[1]] = int(name)
        assert np.array_equal(got, expected)
        assert got[2] == 0 and got[5] == 0           # 9999 and NaN entries are in no region


def test_transform_to_an_atlas_on_another_mni_grid(tmp_path):
    # a 2 mm MNI atlas with x pointing right: label 1 = right hemisphere (x > 0), 2 = left
    aff = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
    abc = np.indices((97, 115, 97)).reshape(3, -1).T
    x = abc[:, 0] * 2.0 - 96
    img = nib.Nifti1Image(np.where(x > 0, 1, 2).reshape(97, 115, 97).astype(np.uint8), aff)
    # 1-based NSD MNI voxel i = 1 is x = +90 mm (right); i = 182 is x = -91 mm (left)
    coords = np.array([[1, 100, 80], [182, 100, 80], [60.2, 100, 80], [120.7, 100, 80]] * 2, float)
    trials, path = _native_with_transform(tmp_path, coords)
    regions = VolumeAtlas(img, {1: "right", 2: "left"}, space="MNI152", transforms={1: path}).assign(trials)
    assert np.array_equal(regions["right"][1], [0, 2, 4, 6])
    assert np.array_equal(regions["left"][1], [1, 3, 5, 7])


def test_transform_grid_mismatch_is_an_error(tmp_path):
    trials, path = _native_with_transform(tmp_path, COORDS)
    other = _fmri(_grid((3, 3, 3)), shape=(3, 3, 3))
    with pytest.raises(ValueError, match="has grid"):
        VolumeAtlas(_atlas_img(), space="MNI152", transforms={1: path}).assign(other)
    with pytest.raises(ValueError, match="no entry for subject"):
        VolumeAtlas(_atlas_img(), space="MNI152", transforms={7: path}).assign(trials)


# ---------------------------------------------------------------------------------------------
# sphere atlases
# ---------------------------------------------------------------------------------------------
def test_seitzman_spheres_on_mni_data():
    atlas = load_seitzman_2018()
    assert "unassigned" not in atlas.regions and len(atlas.coords) == 285
    centre, network = atlas.coords[0], atlas.networks[0]
    # 2 mm MNI grid whose voxel (2, 2, 2) sits on the first ROI's centre; voxel (2, 2, 40) is 76 mm above
    aff = np.array([[2.0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])
    aff[:3, 3] = centre - 4.0
    vox = np.array([[2, 2, 2], [2, 2, 3], [2, 2, 40]])
    trials = _fmri(vox, shape=(5, 5, 50), affine=aff, space="MNI152")
    regions = atlas.assign(trials)
    assert 0 in regions[network][1] and 1 in regions[network][1]     # 0 and 2 mm from the centre
    assert not any(2 in per[1] for per in regions.values())
    cen = atlas.region_centroids({})
    nets = np.asarray(atlas.networks)
    assert np.allclose(cen[network], atlas.coords[nets == network].mean(0))
    dosenbach = load_dosenbach_2010()
    assert len(dosenbach.coords) == 160 and len(dosenbach.regions) == 6


def test_spheres_nearest_centre_wins_and_transform(tmp_path):
    atlas = SphereAtlas([[0, 0, 0], [6, 0, 0]], ["a", "b"], radius=5.0)
    vox = np.array([[0, 0, 0], [2, 0, 0], [4, 0, 0], [6, 0, 0], [12, 0, 0]])
    trials = _fmri(vox, shape=(13, 1, 1), affine=np.eye(4), space="MNI")
    regions = atlas.assign(trials)
    assert np.array_equal(regions["a"][1], [0, 1]) and np.array_equal(regions["b"][1], [2, 3])
    # native data: the transform points voxel 0 at MNI (0, 0, 0) mm and voxel 1 at (6, 0, 0) mm
    mm_to_coord = np.linalg.inv(NSD_MNI_AFFINE)
    c0 = mm_to_coord[:3, 3] + 1
    c1 = mm_to_coord[:3, :3] @ [6.0, 0, 0] + mm_to_coord[:3, 3] + 1
    coords = np.array([c0, c1] + [[9999, 9999, 9999]] * 6)
    native, path = _native_with_transform(tmp_path, coords)
    regions = SphereAtlas([[0, 0, 0], [6, 0, 0]], ["a", "b"], transforms={1: path}).assign(native)
    assert np.array_equal(regions["a"][1], [0]) and np.array_equal(regions["b"][1], [1])


# ---------------------------------------------------------------------------------------------
# NSD ROI files
# ---------------------------------------------------------------------------------------------
def test_nsd_atlas_orders_labels_and_splits_hemispheres(logs):
    labels = np.array(["V1d", "V1v", "", "hV4", "V1v", "V2v", "V1d", ""])
    vox = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [6, 0, 0], [7, 0, 0], [8, 0, 0], [9, 0, 0]])
    trials = _fmri(vox, roi_labels={"prf-visualrois": labels})       # x = 2i - 10: i < 5 is left
    regions = NSDAtlas("prf-visualrois").assign(trials)
    assert list(regions) == ["V1v", "V1d", "V2v", "hV4"]
    assert np.array_equal(regions["V1v"][1], [1, 4]) and np.array_equal(regions["V1d"][1], [0, 6])
    hemi = NSDAtlas("prf-visualrois", hemisphere=True).assign(trials)
    assert list(hemi) == ["lh.V1v", "rh.V1v", "lh.V1d", "rh.V1d", "rh.V2v", "lh.hV4"]
    assert np.array_equal(hemi["rh.V1d"][1], [6])
    with pytest.raises(ValueError, match="extra_rois") as err:
        NSDAtlas("streams").assign(trials)
    assert "prf-visualrois" in str(err.value)


# ---------------------------------------------------------------------------------------------
# M/EEG atlases
# ---------------------------------------------------------------------------------------------
CH_NAMES = ["Fp1", "Fz", "C3", "Cz", "T7", "P3", "O1", "O2"]


def _meeg(n_t=5, times=None, subject=1, ch_pos=None):
    times = np.arange(n_t) * 0.01 if times is None else times
    info = {"modality": "eeg", "ch_names": list(CH_NAMES), "times": times, "sfreq": 100.0}
    if ch_pos is not None:
        info["ch_pos"] = ch_pos
    return BrainTrials(np.zeros((3, len(CH_NAMES), len(times)), np.float32), _events(3, subject), info)


def test_sensor_atlas_regions_and_centroids():
    regions = SensorAtlas().assign(_meeg(n_t=5))
    assert list(regions) == ["frontal", "central", "temporal", "parietal", "occipital"]
    assert np.array_equal(regions["frontal"][1], np.arange(10))                  # Fp1, Fz
    assert np.array_equal(regions["temporal"][1], np.arange(20, 25))             # T7
    assert np.array_equal(regions["occipital"][1], np.arange(30, 40))            # O1, O2
    hemi = SensorAtlas(hemisphere=True).assign(_meeg(n_t=5))
    assert np.array_equal(hemi["left_frontal"][1], np.arange(5))
    assert np.array_equal(hemi["midline_frontal"][1], np.arange(5, 10))
    assert SensorAtlas().region_channels(_meeg().info)["occipital"] == [6, 7]
    pos = np.arange(24, dtype=float).reshape(8, 3)
    pos[7] = np.nan
    cen = SensorAtlas().region_centroids(_meeg(ch_pos=pos).info)
    assert np.allclose(cen["frontal"], pos[:2].mean(0)) and np.allclose(cen["occipital"], pos[6])
    with pytest.raises(NotImplementedError, match="sensor/time"):
        SensorAtlas().region_image({"frontal": 1.0}, _meeg().info)
    with pytest.raises(ValueError, match="VolumeAtlas"):
        SensorAtlas().assign(_fmri(_grid()[:4]))


def test_time_window_atlas_indices():
    atlas = TimeWindowAtlas(0.03)
    regions = atlas.assign(_meeg(n_t=10))             # times 0.00 .. 0.09 s
    assert list(regions) == ["0.000-0.030 s", "0.030-0.060 s", "0.060-0.090 s"]
    ch = np.arange(len(CH_NAMES))[:, None] * 10
    assert np.array_equal(regions["0.000-0.030 s"][1], np.sort((ch + [0, 1, 2]).ravel()))
    assert np.array_equal(regions["0.060-0.090 s"][1], np.sort((ch + [6, 7, 8, 9]).ravel()))  # last: inclusive
    growing = TimeWindowAtlas(0.03, 0.03, mode="growing").assign(_meeg(n_t=10))
    assert list(growing)[-1] == "0.000-0.090 s" and len(growing["0.000-0.090 s"][1]) == 80
    with pytest.raises(NotImplementedError):
        atlas.region_centroids(_meeg().info)


# ---------------------------------------------------------------------------------------------
# null regions
# ---------------------------------------------------------------------------------------------
def _max_pairwise(points):
    d = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def test_random_regions_are_contiguous_size_matched_and_deterministic():
    vox1, vox2 = _grid(), _grid((6, 7, 8))
    trials = BrainTrials.concatenate([_fmri(vox1, subject=1), _fmri(vox2, subject=2, shape=(6, 7, 8))])
    atlas = VolumeAtlas(_atlas_img())
    sizes = {1: 20, 2: 9}
    nulls = atlas.random_regions(trials, sizes, 25, np.random.default_rng(3))
    assert len(nulls) == 25
    for reg in nulls:
        assert len(np.unique(reg[1])) == 20 and len(np.unique(reg[2])) == 9
        assert reg[1].dtype == np.int64 and np.all(np.diff(reg[1]) > 0)
        assert _max_pairwise(vox1[reg[1]].astype(float)) <= 5.0
    rng = np.random.default_rng(0)
    scattered = np.mean([_max_pairwise(vox1[rng.choice(len(vox1), 20, replace=False)].astype(float))
                         for _ in range(10)])
    assert scattered > 10.0
    again = atlas.random_regions(trials, sizes, 25, np.random.default_rng(3))
    assert all(np.array_equal(a[s], b[s]) for a, b in zip(nulls, again) for s in sizes)
    other = atlas.random_regions(trials, sizes, 25, np.random.default_rng(4))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(nulls, other))
    with pytest.raises(ValueError, match="1200 voxels"):
        atlas.random_regions(trials, {1: 5000}, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not in the trials"):
        atlas.random_regions(trials, {9: 5}, 1, np.random.default_rng(0))


def test_random_regions_for_sensors_and_times():
    trials = _meeg(n_t=10)
    nulls = SensorAtlas().random_regions(trials, {1: 20}, 5, np.random.default_rng(0))
    for reg in nulls:
        ch, t = np.divmod(reg[1], 10)
        assert len(reg[1]) == 20 and len(np.unique(ch)) == 2
        assert all(np.array_equal(np.sort(t[ch == c]), np.arange(10)) for c in np.unique(ch))
    windows = TimeWindowAtlas(0.03).random_regions(trials, {1: 3 * len(CH_NAMES)}, 5, np.random.default_rng(0))
    for reg in windows:
        ch, t = np.divmod(reg[1], 10)
        assert len(np.unique(ch)) == len(CH_NAMES)
        assert np.ptp(t) == 2 and len(np.unique(t)) == 3
    with pytest.raises(ValueError, match="whole number"):
        SensorAtlas().random_regions(trials, {1: 15}, 1, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# region images and centroids
# ---------------------------------------------------------------------------------------------
def test_region_image_round_trip_and_centroids(logs):
    vox = _grid()
    trials = _fmri(vox)
    atlas = VolumeAtlas(_atlas_img(), {1: "A", 2: "B", 3: "C"})
    regions = atlas.assign(trials)
    info = trials.by_subject()[1].info               # a fresh copy: the cache is by content
    img = atlas.region_image({"A": 0.5, "C": -2.0, "nope": 9.0}, info)
    data = np.asarray(img.dataobj)
    assert data.dtype == np.float32 and data.shape == SHAPE and np.allclose(img.affine, DATA_AFFINE)
    a_vox = vox[regions["A"][1]]
    assert np.all(data[tuple(a_vox.T)] == 0.5)
    assert np.all(data[tuple(vox[regions["C"][1]].T)] == -2.0)
    assert np.isnan(data[tuple(vox[regions["B"][1]].T)]).all()                 # B has no value
    assert int(np.isfinite(data).sum()) == len(regions["A"][1]) + len(regions["C"][1])
    cen = atlas.region_centroids(info)
    assert np.allclose(cen["A"], (a_vox * 2.0 + DATA_AFFINE[:3, 3]).mean(0))
    assert cen["A"][0] > 0 > cen["B"][0]
    nsd = NSDAtlas("streams")
    t2 = _fmri(vox[:4], roi_labels={"streams": np.array(["early", "", "ventral", "early"])})
    out = np.asarray(nsd.region_image({"early": 1.0}, t2.info).dataobj)
    assert np.nansum(out) == 2.0 and out[tuple(vox[0])] == 1.0 and np.isnan(out[tuple(vox[2])])


# ---------------------------------------------------------------------------------------------
# parse_atlas
# ---------------------------------------------------------------------------------------------
def test_parse_atlas_forms_and_errors(tmp_path):
    assert isinstance(parse_atlas("nsd:streams"), NSDAtlas) and not parse_atlas("nsd:streams").hemisphere
    assert parse_atlas("nsd:floc-faces:hemi").hemisphere
    assert isinstance(parse_atlas("sensors"), SensorAtlas) and parse_atlas("sensors:hemi").hemisphere
    t = parse_atlas("times:0.1,0.05,growing")
    assert isinstance(t, TimeWindowAtlas) and (t.width, t.step, t.mode) == (0.1, 0.05, "growing")
    assert parse_atlas("times:0.1").step is None
    assert parse_atlas("seitzman").name == "seitzman2018" and parse_atlas("dosenbach").name == "dosenbach2010"
    _fake_schaefer(tmp_path)
    with pytest.raises(FileNotFoundError, match="schaefer"):
        parse_atlas(f"schaefer100-7:{tmp_path}")       # the fake is 2 mm only; default 1 mm
    _fake_schaefer(tmp_path, res=1)
    schaefer = parse_atlas(f"schaefer100-7:{tmp_path}")
    assert schaefer.name == "schaefer100-7" and schaefer.regions == ["Vis", "Default", "SalVentAttn"]
    path = _save(_atlas_img(), tmp_path / "toy.nii.gz")
    assert isinstance(parse_atlas(str(path)), VolumeAtlas)
    with pytest.raises(FileNotFoundError, match="fetch_atlas_yeo_2011"):
        parse_atlas(f"yeo7:{tmp_path}")
    for bad in ("foo", "times:abc", "nsd:", "nsd:streams:left", "sensors:all", "yeo7:", "schaefer100-9:x"):
        with pytest.raises(ValueError, match="atlas|spec|use"):
            parse_atlas(bad)
    with pytest.raises(ValueError, match="accepted forms"):
        parse_atlas("foo")


def test_subject_atlas_reads_one_file_per_subject(tmp_path):
    """'subj{subject:02d}' patterns: each subject's native-space labels come from its own file."""
    vox = np.array([[1, 1, 1], [8, 10, 8], [5, 5, 5]])
    for subject, labs in ((1, (1, 2, 0)), (2, (2, 2, 1))):
        vol = np.zeros(SHAPE, np.int16)
        vol[tuple(vox.T)] = labs
        _save(nib.Nifti1Image(vol, DATA_AFFINE), tmp_path / f"subj{subject:02d}_nets.nii.gz")
        (tmp_path / f"subj{subject:02d}_nets.tsv").write_text("index\tname\n1\tVisual\n2\tDefault\n")
    trials = BrainTrials.concatenate([_fmri(vox, subject=1), _fmri(vox, subject=2)])
    atlas = parse_atlas(str(tmp_path / "subj{subject:02d}_nets.nii.gz"))
    assert atlas.name == "subjXX_nets" and atlas.kind == "volume"
    regions = atlas.assign(trials)
    assert list(regions) == ["Visual", "Default"]
    assert regions["Visual"][1].tolist() == [0] and regions["Visual"][2].tolist() == [2]
    assert regions["Default"][1].tolist() == [1] and regions["Default"][2].tolist() == [0, 1]
    img = atlas.region_image({"Default": 2.0}, trials.by_subject()[2].info)
    assert np.asarray(img.dataobj)[1, 1, 1] == 2.0 and np.isnan(np.asarray(img.dataobj)[5, 5, 5])
    with pytest.raises(FileNotFoundError, match="subj03"):
        atlas.atlas(3)
