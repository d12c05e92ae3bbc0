"""Tests of the NSD simulator, read back with raw h5py / nibabel / scipy.io (not the loader)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.io import loadmat

from neurodecode.datasets import simulate
from neurodecode.datasets._procedural import (
    lowlevel_features,
    make_captions,
    render_images,
    sample_latents,
    semantic_features,
)
from neurodecode.io.nsd import NSDLayout

TINY = {"n_subjects": 2, "n_sessions": 2, "trials_per_session": 60, "image_size": 16,
        "grid": [(12, 14, 12), (13, 14, 13)], "formats": ("hdf5", "nii.gz"), "seed": 3,
        "verbose": "warning"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    return simulate("nsd", tmp_path_factory.mktemp("sim") / "nsd", **TINY)


def _design(root: Path) -> dict:
    return loadmat(NSDLayout(root).expdesign)


def _trial_ids(root: Path, subject: int, n_trials: int) -> np.ndarray:
    d = _design(root)
    mo = d["masterordering"].ravel().astype(int)
    return d["subjectim"].astype(int)[subject - 1, mo[:n_trials] - 1] - 1  # 0-based 73k ids


def _betas_h5(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["betas"][:]


# --------------------------------------------------------------------------- layout
def test_files_at_layout_paths(sim):
    lay = NSDLayout(sim)
    for p in (lay.expdesign, lay.stim_info, lay.stimuli_hdf5, lay.coco_captions("train2017"),
              sim / "simulation.json"):
        assert p.is_file(), p
    for s in (1, 2):
        for ses in (1, 2):
            assert lay.betas_file(s, ses, "hdf5").is_file()
            assert lay.betas_file(s, ses, "nii.gz").is_file()
        assert not lay.betas_file(s, 3, "hdf5").exists()
        for name in ("nsdgeneral", "prf-visualrois", "streams", "prf-eccrois"):
            assert lay.roi_file(s, name).is_file() and lay.ctab_file(s, name).is_file()
            assert lay.roi_file(s, name, "lh").is_file()
        assert lay.brainmask(s).is_file() and lay.ncsnr(s).is_file() and lay.responses(s).is_file()
    assert not NSDLayout(sim).betas_dir(3).exists()
    # no temporary sibling left behind
    assert [p.name for p in sim.parent.iterdir()] == ["nsd"]


def test_betas_axes_dtype_and_mask(sim):
    lay = NSDLayout(sim)
    for s, grid in ((1, (12, 14, 12)), (2, (13, 14, 13))):
        h5 = _betas_h5(lay.betas_file(s, 1, "hdf5"))
        img = nib.load(lay.betas_file(s, 1, "nii.gz"))
        nii = np.asarray(img.dataobj)
        assert h5.dtype == np.int16 and nii.dtype == np.int16
        assert h5.shape == (60, grid[2], grid[1], grid[0])
        assert nii.shape == (*grid, 60)
        np.testing.assert_array_equal(h5.transpose(3, 2, 1, 0), nii)
        mask = np.asarray(nib.load(lay.brainmask(s)).dataobj) > 0
        assert mask.shape == grid
        assert np.all(nii[~mask] == 0)
        assert (nii[mask] != 0).mean() > 0.95
        # PSC x 300 scale: typical magnitudes of a few percent signal change
        assert 50 < np.abs(nii[mask]).mean() < 3000


def test_design_shapes_and_bases(sim):
    d = _design(sim)
    mo, si, sh = d["masterordering"], d["subjectim"], d["sharedix"]
    assert mo.shape == (1, 30000) and si.shape == (8, 10000) and sh.shape == (1, 1000)
    assert mo.min() >= 1 and mo.max() <= 10000
    n_brick = h5py.File(NSDLayout(sim).stimuli_hdf5, "r")["imgBrick"].shape[0]
    assert si.min() >= 1 and si.max() <= n_brick and sh.min() >= 1 and sh.max() <= n_brick
    assert len(np.unique(sh)) == 1000
    np.testing.assert_array_equal(si[:, :1000], np.tile(sh, (8, 1)))  # shared 10k-indices 1..1000
    truth = json.loads((sim / "simulation.json").read_text())["ground_truth"]["design"]
    n_shared = truth["n_shared_shown"]
    used = np.unique(mo.ravel()[:120])
    assert set(used[used <= 1000]) == set(range(1, n_shared + 1))
    assert used[used > 1000].min() == 1001


def test_repetitions_and_shared_pool(sim):
    truth = json.loads((sim / "simulation.json").read_text())["ground_truth"]["design"]
    shared = set(np.asarray(truth["shared_shown_73k_ids_1based"]) - 1)
    own = []
    for s in (1, 2):
        ids = _trial_ids(sim, s, 120)
        uniq, counts = np.unique(ids, return_counts=True)
        assert np.all(counts == 3)  # 120 trials = 40 images x 3
        assert len(uniq) == 40
        assert shared <= set(uniq)
        own.append(set(uniq) - shared)
    assert own[0] and own[1] and not (own[0] & own[1])  # subject-specific images are distinct


def test_stim_info_responses_and_captions(sim):
    lay = NSDLayout(sim)
    info = pd.read_csv(lay.stim_info, index_col=0)
    d = _design(sim)
    assert list(info["nsdId"]) == list(range(len(info)))
    assert set(info.index[info["shared1000"]]) == set(d["sharedix"].ravel() - 1)
    for s in (1, 2):
        ids = _trial_ids(sim, s, 120)
        for g in (0, 57, 119):
            row = info.loc[ids[g]]
            assert row[f"subject{s}"] == 1
            assert g + 1 in {row[f"subject{s}_rep{r}"] for r in range(3)}
        resp = pd.read_csv(lay.responses(s), sep="\t")
        assert list(resp.columns[:6]) == ["SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID"]
        assert len(resp) == 120
        np.testing.assert_array_equal(resp["73KID"].to_numpy() - 1, ids)
        assert resp["TRIAL"].min() == 1 and set(resp["SESSION"]) == {1, 2}
    assert info["subject3"].sum() == 0
    caps = {}
    for split in ("train2017", "val2017"):
        p = lay.coco_captions(split)
        if p.is_file():
            obj = json.loads(p.read_text())
            for a in obj["annotations"]:
                caps.setdefault(a["image_id"], []).append(a["caption"])
    assert set(caps) == set(info["cocoId"])
    assert all(len(c) == 5 and len(set(c)) == 5 for c in caps.values())


def test_roi_volumes(sim):
    lay = NSDLayout(sim)
    for s in (1, 2):
        brain = np.asarray(nib.load(lay.brainmask(s)).dataobj) > 0
        gen = np.asarray(nib.load(lay.roi_file(s, "nsdgeneral")).dataobj)
        prf = np.asarray(nib.load(lay.roi_file(s, "prf-visualrois")).dataobj)
        streams = np.asarray(nib.load(lay.roi_file(s, "streams")).dataobj)
        assert set(np.unique(gen)) == {-1, 0, 1}
        assert set(np.unique(prf)) == {-1, 0, *range(1, 8)}
        assert set(np.unique(streams)) == {-1, 0, *range(1, 8)}
        assert np.all(brain[gen > 0]) and np.all(gen[prf > 0] == 1) and np.all(gen[streams > 0] == 1)
        assert np.all(gen[~brain] == -1)
        ctab = pd.read_csv(lay.ctab_file(s, "prf-visualrois"), delimiter=" ", header=None, index_col=0)
        assert ctab.loc[7, 1] == "hV4" and ctab.loc[0, 1] == "Unknown"
        lh = np.asarray(nib.load(lay.roi_file(s, "nsdgeneral", "lh")).dataobj)
        rh = np.asarray(nib.load(lay.roi_file(s, "nsdgeneral", "rh")).dataobj)
        assert ((lh > 0) | (rh > 0)).sum() == (gen > 0).sum() and not np.any((lh > 0) & (rh > 0))
        ncsnr = np.asarray(nib.load(lay.ncsnr(s)).dataobj)
        assert ncsnr[gen <= 0].max() == 0 and ncsnr.max() > 0
    truth = json.loads((sim / "simulation.json").read_text())["ground_truth"]["subjects"]
    assert truth["1"]["n_nsdgeneral_voxels"] != truth["2"]["n_nsdgeneral_voxels"]


# --------------------------------------------------------------------------- determinism, cache
SMALL = {"n_subjects": 1, "n_sessions": 1, "trials_per_session": 30, "image_size": 16, "grid": (12, 12, 12),
         "verbose": "warning"}


def test_determinism(tmp_path):
    a = simulate("nsd", tmp_path / "a", seed=5, **SMALL)
    b = simulate("nsd", tmp_path / "b", seed=5, **SMALL)
    c = simulate("nsd", tmp_path / "c", seed=6, **SMALL)
    la, lb, lc = NSDLayout(a), NSDLayout(b), NSDLayout(c)
    np.testing.assert_array_equal(_betas_h5(la.betas_file(1, 1, "hdf5")),
                                  _betas_h5(lb.betas_file(1, 1, "hdf5")))
    with h5py.File(la.stimuli_hdf5) as fa, h5py.File(lb.stimuli_hdf5) as fb:
        np.testing.assert_array_equal(fa["imgBrick"][:], fb["imgBrick"][:])
    assert la.stim_info.read_bytes() == lb.stim_info.read_bytes()
    assert la.responses(1).read_bytes() == lb.responses(1).read_bytes()
    assert not np.array_equal(_betas_h5(la.betas_file(1, 1, "hdf5")), _betas_h5(lc.betas_file(1, 1, "hdf5")))


def test_cache_mismatch_overwrite(tmp_path):
    root = simulate("nsd", tmp_path / "d", **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert simulate("nsd", tmp_path / "d", **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp
    with pytest.raises(FileExistsError, match="different parameters.*snr"):
        simulate("nsd", root, snr=1.0, **SMALL)
    simulate("nsd", root, snr=1.0, overwrite=True, **SMALL)
    rec = json.loads((root / "simulation.json").read_text())
    assert rec["parameters"]["snr"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "junk.txt").write_text("x")
    with pytest.raises(FileExistsError, match="no simulation.json"):
        simulate("nsd", other, **SMALL)


def test_interrupted_simulation_leaves_nothing(tmp_path, monkeypatch):
    mod = importlib.import_module("neurodecode.datasets.simulate")  # the module, not the function

    def boom(root, p):
        (root / "nsddata").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setitem(mod._SIMULATORS, "nsd", mod._Simulator(resolve=mod._resolve_nsd, write=boom))
    with pytest.raises(KeyboardInterrupt):
        simulate("nsd", tmp_path / "e", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, err, match", [
    ({"name": "things"}, ValueError, "'nsd'"),
    ({"n_subjects": 0}, ValueError, "n_subjects"),
    ({"n_subjects": 9}, ValueError, "n_subjects"),
    ({"trials_per_session": 1000}, ValueError, "trials_per_session"),
    ({"n_sessions": 2.5}, TypeError, "n_sessions"),
    ({"formats": ("mat",)}, ValueError, "formats"),
    ({"signal_rois": ("FFA",)}, ValueError, "signal_rois"),
    ({"grid": "fake"}, ValueError, "grid"),
    ({"grid": (4, 4, 4)}, ValueError, "grid"),
    ({"shared_fraction": 1.5}, ValueError, "shared_fraction"),
    ({"snr": -1}, ValueError, "snr"),
    ({"n_voxels": 3}, TypeError, "unexpected parameter"),
])
def test_invalid_parameters(tmp_path, kwargs, err, match):
    kw = dict(SMALL)
    name = kwargs.pop("name", "nsd")
    kw.update(kwargs)
    with pytest.raises(err, match=match):
        simulate(name, tmp_path / "x", **kw)
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- planted signal
def test_planted_signal_in_planted_rois(tmp_path):
    root = simulate("nsd", tmp_path / "p", n_subjects=1, n_sessions=1, trials_per_session=300,
                    image_size=16, grid=(14, 16, 14), snr=1.0, verbose="warning")
    lay = NSDLayout(root)
    x = _betas_h5(lay.betas_file(1, 1, "hdf5")).transpose(0, 3, 2, 1).astype(float) / 300  # (T,X,Y,Z)
    streams = np.asarray(nib.load(lay.roi_file(1, "streams")).dataobj)
    ids = _trial_ids(root, 1, 300)
    uniq = np.unique(ids)
    avg = {k: np.stack([x[ids == u][:, streams == k].mean(0) for u in uniq]) for k in (1, 7)}
    with h5py.File(lay.stimuli_hdf5) as f:
        feats = lowlevel_features(f["imgBrick"][:][uniq], 4).reshape(len(uniq), -1)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)

    def max_abs_corr(v: np.ndarray) -> np.ndarray:
        v = (v - v.mean(0)) / (v.std(0) + 1e-9)
        return np.abs(feats.T @ v / len(v)).max(0)

    planted, unplanted = max_abs_corr(avg[1]), max_abs_corr(avg[7])  # early planted, parietal not
    assert np.median(planted) > np.median(unplanted) + 0.1
    # repetition reliability follows the planted ROIs too
    rep = pd.Series(ids).groupby(ids).cumcount().to_numpy()

    def reliability(k: int) -> float:
        a = np.stack([x[(ids == u) & (rep == 0)][0, streams == k] for u in uniq])
        b = np.stack([x[(ids == u) & (rep == 1)][0, streams == k] for u in uniq])
        a, b = a - a.mean(0), b - b.mean(0)
        return float(np.median((a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))))

    assert reliability(1) > 0.3 and abs(reliability(7)) < 0.15


# --------------------------------------------------------------------------- procedural stimuli
def test_procedural_stimuli():
    lat = sample_latents(20, np.random.default_rng(0))
    imgs = render_images(lat, 24)
    assert imgs.shape == (20, 24, 24, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs, render_images(sample_latents(20, np.random.default_rng(0)), 24))
    caps = make_captions(lat, np.random.default_rng(1))
    assert len(caps) == 20 and all(len(set(c)) == 5 for c in caps)
    assert all(c[0].isupper() and c.endswith(".") for cs in caps for c in cs)
    sem, groups = semantic_features(lat)
    assert sem.shape[0] == 20 and groups["category"].stop - groups["category"].start == 10
    low = lowlevel_features(imgs, 4)
    assert low.shape == (20, 4, 16) and np.isfinite(low).all()
    big = render_images(sample_latents(2, np.random.default_rng(0)), 130)  # no supersampling path
    assert big.shape == (2, 130, 130, 3)


# --------------------------------------------------------------------------- the real loader
def test_load_nsd_reads_the_simulation(sim):
    try:
        from neurodecode.datasets import load_nsd
    except ImportError:  # pragma: no cover
        pytest.skip("neurodecode.datasets.load_nsd is not available")
    lay = NSDLayout(sim)
    for s in (1, 2):
        trials = load_nsd(sim, s, zscore=None, verbose="warning")
        gen = np.asarray(nib.load(lay.roi_file(s, "nsdgeneral")).dataobj) > 0
        assert trials.data.shape == (120, int(gen.sum()))
        ids = _trial_ids(sim, s, 120)
        np.testing.assert_array_equal(trials.events["stimulus_id"].to_numpy(), ids)
        raw = np.concatenate([np.asarray(nib.load(lay.betas_file(s, k, "nii.gz")).dataobj)[gen].T
                              for k in (1, 2)]) / 300
        np.testing.assert_allclose(trials.data, raw, rtol=1e-6, atol=1e-6)
        truth = json.loads((sim / "simulation.json").read_text())["ground_truth"]["design"]
        shared = np.asarray(truth["shared_shown_73k_ids_1based"]) - 1
        test = trials.events["split"].to_numpy() == "test"
        np.testing.assert_array_equal(test, np.isin(ids, shared))


# --------------------------------------------------------------------------- network atlas
NETWORKS = ["Visual", "Somatomotor", "DorsalAttention", "VentralAttention", "Limbic", "Frontoparietal",
            "Default"]


@pytest.fixture(scope="module")
def sim_default(tmp_path_factory) -> Path:
    """Default grid, signal planted in the Default network only."""
    return simulate("nsd", tmp_path_factory.mktemp("simnet") / "nsd", n_subjects=1, n_sessions=1,
                    trials_per_session=150, image_size=16, snr=1.0, signal_rois=["Default"], seed=4,
                    verbose="warning")


def _networks(root: Path, subject: int = 1) -> np.ndarray:
    return np.asarray(nib.load(root / f"simulation/atlases/subj{subject:02d}_networks7.nii.gz").dataobj)


def test_network_atlas_files_and_partition(sim_default):
    lay = NSDLayout(sim_default)
    atlas = sim_default / "simulation/atlases/subj01_networks7.nii.gz"
    tsv = sim_default / "simulation/atlases/subj01_networks7.tsv"
    assert atlas.is_file() and tsv.is_file()
    assert not list(lay.roi_dir(1).glob("*network*"))  # not in NSD's own roi folder
    img = nib.load(atlas)
    assert img.get_data_dtype() == np.int16
    labels = pd.read_csv(tsv, sep="\t")
    assert list(labels.columns) == ["index", "name"]
    assert labels["index"].tolist() == list(range(1, 8)) and labels["name"].tolist() == NETWORKS
    net = _networks(sim_default)
    brain = np.asarray(nib.load(lay.brainmask(1)).dataobj) > 0
    gen = np.asarray(nib.load(lay.roi_file(1, "nsdgeneral")).dataobj)
    np.testing.assert_allclose(img.affine, nib.load(lay.brainmask(1)).affine)
    shell = gen >= 0  # the ROI files mark the cortical shell with 0 / k (-1 elsewhere)
    assert net.shape == brain.shape and set(np.unique(net)) == set(range(8))
    assert np.all(net[shell] > 0) and np.all(net[~shell] == 0) and np.all(brain[net > 0])
    shares = np.bincount(net[shell], minlength=8)[1:] / shell.sum()
    assert shares.min() >= 0.05, dict(zip(NETWORKS, shares.round(3)))
    streams = np.asarray(nib.load(lay.roi_file(1, "streams")).dataobj)
    assert np.all(net[np.isin(streams, [1, 2, 3, 5])] == 1)  # early, midventral, midlateral, ventral
    truth = json.loads((sim_default / "simulation.json").read_text())["ground_truth"]["subjects"]["1"]
    assert truth["network_atlas"]["volume"] == "simulation/atlases/subj01_networks7.nii.gz"
    assert truth["network_atlas"]["voxel_counts"] == {n: int((net == k).sum()) for k, n in
                                                     enumerate(NETWORKS, 1)}


def test_network_signal_rois_plant_the_whole_network(sim_default):
    from neurodecode.datasets import load_nsd

    lay = NSDLayout(sim_default)
    net = _networks(sim_default)
    ncsnr = np.asarray(nib.load(lay.ncsnr(1)).dataobj)
    default = net == 7
    assert np.all(ncsnr[default] > 0) and np.all(ncsnr[~default] == 0)
    gen = np.asarray(nib.load(lay.roi_file(1, "nsdgeneral")).dataobj) > 0
    truth = json.loads((sim_default / "simulation.json").read_text())["ground_truth"]["subjects"]["1"]
    assert truth["n_signal_voxels"] == int(default.sum())
    assert truth["n_signal_voxels_outside_nsdgeneral"] == int((default & ~gen).sum()) > 0
    assert truth["signal_voxels_per_roi"]["Default"] == int(default.sum())
    assert truth["signal_voxels_per_roi"]["Visual"] == 0 and truth["signal_voxels_per_roi"]["early"] == 0
    # whole brain through the real loader: repeated presentations agree only in Default
    tr = load_nsd(sim_default, 1, roi=None, verbose="warning")
    ev = tr.events

    def rep(k: int) -> np.ndarray:  # (n_images, n_voxels), rows sorted by image
        rows = np.flatnonzero(ev["repetition"].to_numpy() == k)
        return tr.data[rows[np.argsort(ev["stimulus_id"].to_numpy()[rows])]]

    a, b = rep(0), rep(1)
    assert len(a) == len(b) == 50
    a, b = a - a.mean(0), b - b.mean(0)
    r = (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))
    in_default = default[tuple(tr.info["voxel_indices"].T)]
    assert np.median(r[in_default]) > 0.3
    assert abs(np.median(r[~in_default])) < 0.1  # the shared global fluctuation makes it ±0.03


def test_invalid_network_name_lists_allowed(tmp_path):
    with pytest.raises(ValueError, match="signal_rois.*'DefaultMode'.*'Frontoparietal', 'Default'"):
        simulate("nsd", tmp_path / "x", signal_rois=["DefaultMode"], **SMALL)
