"""Damaged and non-finite inputs never pass silently (issue #12, Must show 2 and 6; docs/reliability.md).

Each case damages one file of a format-faithful simulated dataset (NSD, THINGS-MEG, MEG-MASC) and asserts
either a clear error that names the file, or the documented WARNING with counts, and that the load wrote
nothing into the dataset folder (no file added, removed or changed after the damage).
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.io import loadmat, savemat

from neurodecode.datasets import load_nsd, simulate
from neurodecode.io.nsd import NSDLayout, write_volume

mne = pytest.importorskip("mne")
pytest.importorskip("mne_bids")

from neurodecode.datasets import load_masc, load_things_meg
from neurodecode.io.checks import check_affine, check_finite, verify_gzip
from neurodecode.io.mne import read_epochs

NSD = {"n_subjects": 1, "n_sessions": 2, "trials_per_session": 60, "image_size": 16, "grid": [(12, 14, 12)],
       "formats": ("hdf5", "nii.gz"), "response": "linear", "seed": 1, "verbose": "warning"}
MEG = {"n_subjects": 1, "n_train_concepts": 6, "images_per_concept": 2, "n_test_concepts": 10,
       "n_test_reps": 8, "n_channels": 32, "sfreq": 100.0, "n_sessions": 3, "catch_fraction": 0.1,
       "image_size": 16, "seed": 2, "verbose": "warning"}
MASC = {"n_subjects": 1, "n_sessions": 1, "n_stories": 1, "story_duration_s": 20.0, "n_channels": 16,
        "seed": 1, "verbose": "warning"}
N_T = NSD["trials_per_session"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sims(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("damage_src")
    return {"nsd": simulate("nsd", base / "nsd", **NSD),
            "meg": simulate("things_meg", base / "meg", **MEG),
            "masc": simulate("masc", base / "masc", **MASC)}


def _copy(sims: dict, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(sims[name], dst)
    return dst


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def flip(path: Path, frac: float, n: int = 64) -> None:
    """XOR ``n`` bytes from ``frac`` of the file (kept clear of the 8-byte gzip trailer)."""
    b = bytearray(path.read_bytes())
    i0 = min(int(len(b) * frac), len(b) - 8 - n)
    for i in range(max(i0, 0), max(i0, 0) + n):
        b[i] ^= 0xA5
    path.write_bytes(bytes(b))


def flip_tail(path: Path, start: int, stop: int) -> None:
    """XOR the bytes ``[size - start, size - stop)`` (e.g. the gzip CRC-32 / ISIZE trailer)."""
    b = bytearray(path.read_bytes())
    for i in range(len(b) - start, len(b) - stop):
        b[i] ^= 0xFF
    path.write_bytes(bytes(b))


def cut(path: Path, keep: float) -> None:
    """Keep the first ``keep`` bytes (an int) or fraction (a float) of the file."""
    b = path.read_bytes()
    path.write_bytes(b[: keep if isinstance(keep, int) else int(len(b) * keep)])


def _check(root: Path, damage: Callable[[Path], None], load: Callable[[Path], object], expect: tuple,
           nd_log) -> object:
    """Damage, load, and check the outcome and that nothing was written into ``root``."""
    damage(root)
    before = _snapshot(root)
    result = None
    kind = expect[0]
    if kind == "raises":
        _, exc, pattern = expect
        with pytest.raises(exc) as info:
            load(root)
        assert re.search(pattern, str(info.value)), f"{pattern!r} not in {info.value}"
    elif kind == "warns":  # the documented WARNING through the neurodecode logger
        _, pattern = expect
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = load(root)
        text = "\n".join(r.getMessage() for r in nd_log.records if r.levelno >= logging.WARNING)
        assert re.search(pattern, text), f"{pattern!r} not in WARNING lines:\n{text}"
    elif kind == "userwarning":  # the documented UserWarning (neurodecode.utils.warn)
        _, pattern = expect
        with pytest.warns(UserWarning, match=pattern):
            result = load(root)
    else:  # pragma: no cover
        raise AssertionError(kind)
    assert _snapshot(root) == before, "the failed load changed files in the dataset folder"
    return result


# ---------------------------------------------------------------------------
# NSD
# ---------------------------------------------------------------------------
def _lay(root: Path) -> NSDLayout:
    return NSDLayout(root)


def _nii(root, s=1):
    return _lay(root).betas_file(1, s, "nii.gz")


def _h5(root, s=1):
    return _lay(root).betas_file(1, s, "hdf5")


def _roi(root, name="nsdgeneral"):
    return _lay(root).roi_file(1, name)


def _regzip_short(root):  # a valid gzip stream holding fewer volumes than the NIfTI header declares
    p = _nii(root)
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[: len(raw) - 5000]))


def _shift_affine(path: Path, *, dx: float = 0.0, scale: float = 1.0) -> None:
    import nibabel as nib

    img = nib.load(path)
    aff = img.affine.copy()
    aff[0, 3] += dx
    aff[:3, :3] *= scale
    write_volume(path, np.asanyarray(img.dataobj), aff)


def _drop_nii_betas(root):
    for s in (1, 2):
        _nii(root, s).unlink()


def _float_h5(root, *, value=np.nan, where=((5, 6, 7, 6),), s=1, extra_trials=0):
    p = _h5(root, s)
    with h5py.File(p, "r") as f:
        b = f["betas"][()]
    if extra_trials:
        b = np.concatenate([b, b[:extra_trials]], axis=0)
    else:
        b = b.astype(np.float32)
        for idx in where:
            b[idx] = value
    p.unlink()
    with h5py.File(p, "w") as f:
        f.create_dataset("betas", data=b, chunks=(b.shape[0], 1, 1, 1))


def _brain_voxel(root) -> tuple[int, int, int, int]:
    import nibabel as nib

    vol = np.asanyarray(nib.load(_roi(root)).dataobj)
    x, y, z = np.argwhere(vol > 0)[0]
    return int(z), int(y), int(x)


def _nan_in_roi(root, value=np.nan, trials=(5,)):
    z, y, x = _brain_voxel(root)
    _float_h5(root, value=value, where=[(t, z, y, x) for t in trials])


def _design(root, key, fn):
    p = _lay(root).expdesign
    m = {k: v for k, v in loadmat(p).items() if not k.startswith("__")}
    m[key] = fn(m[key])
    savemat(p, m)


def _renorm(root, value):
    ref = load_nsd(root, 1, verbose="error")
    data = ref.data.astype(np.float32)
    data[7, 3] = value
    data[N_T + 2, 1] = value
    with h5py.File(_lay(root).mindeye2_betas(1), "w") as f:
        f.create_dataset("betas", data=data)


def _no_responses(root):
    _lay(root).responses(1).unlink()


NII = {"betas_format": "nii.gz"}
REDL = r"re-download"
B1_NII = r"betas_session01\.nii\.gz"
B1_H5 = r"betas_session01\.hdf5"
RENORM = r"betas_all_subj01_fp32_renorm\.hdf5"
DESIGN = r"nsd_expdesign\.mat"


def err(exc: type, *pattern: str) -> tuple:
    """An error of type ``exc`` whose message matches the concatenated ``pattern``."""
    return ("raises", exc, "".join(pattern))


def logged(*pattern: str) -> tuple:
    """A WARNING line of the neurodecode logger matching ``pattern``."""
    return ("warns", "".join(pattern))


def warned(*pattern: str) -> tuple:
    """A UserWarning matching ``pattern``."""
    return ("userwarning", "".join(pattern))


def _grey_stimuli(root):
    path = _lay(root).stimuli_hdf5
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", data=np.zeros((5, 16, 16), np.uint8))


def _empty_h5(root):
    _h5(root).unlink()
    h5py.File(_h5(root), "w").close()


def _as_cell(a):
    return np.array([[np.array([1.0])]], dtype=object)


NSD_CASES = {
    # .nii.gz betas: every gzip member verified whole (CRC-32 + ISIZE) before use
    "betas.nii.gz flipped at 25%": (
        lambda r: flip(_nii(r), 0.25), NII, err(OSError, B1_NII, ".*", REDL)),
    "betas.nii.gz flipped at 50%": (
        lambda r: flip(_nii(r), 0.50), NII, err(OSError, B1_NII, ".*", REDL)),
    "betas.nii.gz flipped at 90%": (
        lambda r: flip(_nii(r), 0.90), NII, err(OSError, B1_NII, ".*", REDL)),
    "betas.nii.gz 1 byte flipped": (
        lambda r: flip(_nii(r), 0.6, n=1), NII, err(OSError, B1_NII)),
    "betas.nii.gz CRC-32 flipped": (
        lambda r: flip_tail(_nii(r), 8, 4), NII, err(OSError, B1_NII, ".*checksum")),
    "betas.nii.gz ISIZE flipped": (
        lambda r: flip_tail(_nii(r), 4, 0), NII, err(OSError, B1_NII, ".*does not match the gzip checksum")),
    "betas.nii.gz truncated to 50%": (
        lambda r: cut(_nii(r), 0.5), NII, err(OSError, B1_NII, ".*truncated")),
    "betas.nii.gz last 4 bytes cut": (
        lambda r: cut(_nii(r), _nii(r).stat().st_size - 4), NII, err(OSError, B1_NII, ".*truncated")),
    "betas.nii.gz garbage appended": (
        lambda r: _nii(r).write_bytes(_nii(r).read_bytes() + b"garbage!" * 8), NII,
        err(OSError, B1_NII, ".*not a gzip")),
    "betas.nii.gz empty": (
        lambda r: _nii(r).write_bytes(b""), NII, err(OSError, B1_NII)),
    "betas.nii.gz not gzip": (
        lambda r: _nii(r).write_bytes(b"not a nifti file " * 40), NII, err(OSError, B1_NII)),
    "betas.nii.gz fewer volumes than header": (
        _regzip_short, NII, err(OSError, B1_NII, ".*declares 60 volumes")),
    # ROI, brain mask, ncsnr (.nii.gz volumes)
    "roi nsdgeneral flipped": (
        lambda r: flip(_roi(r), 0.5, n=16), {}, err(OSError, r"nsdgeneral\.nii\.gz.*damaged")),
    "roi nsdgeneral truncated": (
        lambda r: cut(_roi(r), 0.8), {}, err(OSError, r"nsdgeneral\.nii\.gz")),
    "roi nsdgeneral CRC flipped": (
        lambda r: flip_tail(_roi(r), 8, 4), {}, err(OSError, r"nsdgeneral\.nii\.gz.*checksum")),
    "brainmask flipped": (
        lambda r: flip(_lay(r).brainmask(1), 0.5, n=16), {"roi": None}, err(OSError, r"brainmask\.nii\.gz")),
    "ncsnr flipped": (
        lambda r: flip(_lay(r).ncsnr(1), 0.5), {}, err(OSError, r"ncsnr\.nii\.gz")),
    "extra roi flipped": (
        lambda r: flip(_roi(r, "streams"), 0.5, n=16), {}, err(OSError, r"streams\.nii\.gz")),
    "roi shifted affine (nii.gz betas)": (
        lambda r: _shift_affine(_roi(r), dx=5.0), {},
        err(ValueError, r"nsdgeneral\.nii\.gz has the right grid but another affine than the data .*",
            B1_NII)),
    "roi other voxel size": (
        lambda r: _shift_affine(_roi(r), scale=2.0 / 1.8), {},
        err(ValueError, r"nsdgeneral\.nii\.gz .*another affine")),
    "roi shifted affine (hdf5 betas only)": (
        lambda r: (_drop_nii_betas(r), _shift_affine(_roi(r), dx=-3.6)), {},
        err(ValueError, r"nsdgeneral\.nii\.gz .*another affine than the data .*brainmask\.nii\.gz")),
    "brainmask shifted affine": (
        lambda r: _shift_affine(_lay(r).brainmask(1), dx=1.0), {"roi": None},
        err(ValueError, r"brain mask .*brainmask\.nii\.gz .*another affine")),
    "label roi shifted affine": (
        lambda r: _shift_affine(_roi(r, "prf-visualrois"), dx=2.0), {"roi": "prf-visualrois:V1v"},
        err(ValueError, r"prf-visualrois\.nii\.gz")),
    "extra roi shifted affine": (
        lambda r: _shift_affine(_roi(r, "streams"), dx=2.0), {},
        warned(r"streams\.nii\.gz .*another affine")),
    "ncsnr shifted affine": (
        lambda r: _shift_affine(_lay(r).ncsnr(1), dx=2.0), {},
        warned(r"ncsnr\.nii\.gz .*another affine.*ncsnr'\] is not set")),
    "roi other grid": (
        lambda r: write_volume(_roi(r), np.ones((12, 14, 11), np.int16)), {},
        err(ValueError, r"nsdgeneral\.nii\.gz has grid \(12, 14, 11\)")),
    # .hdf5 betas: non-finite values, structure, trial counts
    "betas.hdf5 NaN": (
        _nan_in_roi, {},
        err(ValueError, B1_H5, r" \(session 1\) holds 1 NaN and 0 infinite value\(s\) in 1 of 60 trial",
            r".*nonfinite='drop'")),
    "betas.hdf5 +Inf": (
        lambda r: _nan_in_roi(r, np.inf, trials=(3, 4)), {},
        err(ValueError, B1_H5, r" \(session 1\) holds 0 NaN and 2 infinite")),
    "betas.hdf5 -Inf, zscore off": (
        lambda r: _nan_in_roi(r, -np.inf), {"zscore": None}, err(ValueError, B1_H5, r".*1 infinite")),
    "betas.hdf5 NaN, nonfinite=drop": (
        lambda r: _nan_in_roi(r, trials=(5, 9)), {"nonfinite": "drop"},
        logged(B1_H5, r" \(session 1\) holds 2 NaN and 0 infinite value\(s\) in 2 of 60 trial\(s\): ",
               "dropping")),
    "betas.hdf5 truncated": (
        lambda r: cut(_h5(r), 0.5), {}, err(OSError, B1_H5, ".*", REDL)),
    "betas.hdf5 garbage": (
        lambda r: _h5(r).write_bytes(b"\x89HDF garbage" * 50), {}, err(OSError, B1_H5)),
    "betas.hdf5 no 'betas' dataset": (
        _empty_h5, {}, err(ValueError, B1_H5, r" has no dataset 'betas'")),
    "session 1 has too many trials": (
        lambda r: _float_h5(r, extra_trials=30), {},
        err(ValueError, B1_H5, r" holds 90 trials but .*responses\.tsv lists 60 trials for session 1")),
    "too many trials, only session 2 loaded": (
        lambda r: _float_h5(r, extra_trials=30), {"sessions": [2]},
        err(ValueError, B1_H5, r" holds 90 trials")),
    "too many trials, no responses.tsv": (
        lambda r: (_float_h5(r, extra_trials=30), _no_responses(r)), {},
        err(ValueError, B1_H5, r" holds 90 trials but the other sessions of subject 1 hold 60")),
    "responses.tsv garbage": (
        lambda r: _lay(r).responses(1).write_text("no\theader\nhere\n"), {}, warned(r"responses\.tsv")),
    # MindEye2 renorm file
    "mindeye2 renorm +Inf": (
        lambda r: _renorm(r, np.inf), {"betas_format": "mindeye2"},
        err(ValueError, RENORM, r" \(sessions 1: 1 trial\(s\), 2: 1 trial\(s\)\) ",
            "holds 0 NaN and 2 infinite")),
    "mindeye2 renorm NaN, nonfinite=drop": (
        lambda r: _renorm(r, np.nan), {"betas_format": "mindeye2", "nonfinite": "drop"},
        logged(RENORM, r" .*holds 2 NaN .*dropping")),
    # design .mat
    "design masterordering as text": (
        lambda r: _design(r, "masterordering", lambda a: np.array(["abc"] * 4)), {},
        err(ValueError, r"'masterordering' in the NSD design file .*", DESIGN, r" has dtype <U3 \(text\)")),
    "design subjectim complex": (
        lambda r: _design(r, "subjectim", lambda a: a.astype(complex)), {},
        err(ValueError, r"'subjectim' .*", DESIGN, " has dtype complex")),
    "design masterordering fractional": (
        lambda r: _design(r, "masterordering", lambda a: a + 0.5), {},
        err(ValueError, DESIGN, " holds 30000 non-integer")),
    "design sharedix as cell": (
        lambda r: _design(r, "sharedix", _as_cell), {},
        err(ValueError, r"'sharedix' .*", DESIGN, " has dtype object")),
    "design truncated": (
        lambda r: cut(_lay(r).expdesign, 0.5), {}, err(OSError, DESIGN, ".*", REDL)),
    "design zero index": (
        lambda r: _design(r, "masterordering", lambda a: a * 0), {},
        err(ValueError, r"'masterordering' in .*", DESIGN, " must hold 1-based")),
    # stimuli and captions
    "nsd_stimuli.hdf5 truncated": (
        lambda r: cut(_lay(r).stimuli_hdf5, 0.5), {}, err(OSError, r"nsd_stimuli\.hdf5.*", REDL)),
    "nsd_stimuli.hdf5 grey images": (
        _grey_stimuli, {}, err(ValueError, r"'imgBrick' in .*nsd_stimuli\.hdf5 has shape")),
    "coco captions truncated": (
        lambda r: cut(_lay(r).coco_captions("train2017"), 0.5), {},
        err(OSError, r"captions_train2017\.json")),
}


@pytest.mark.parametrize("case", list(NSD_CASES))
def test_nsd_damaged(case, sims, tmp_path, nd_log):
    damage, kwargs, expect = NSD_CASES[case]
    root = _copy(sims, "nsd", tmp_path)
    out = _check(root, damage, lambda r: load_nsd(r, 1, verbose="warning", **kwargs), expect, nd_log)
    if out is not None and "nonfinite" in kwargs:  # dropped trials: fewer rows, all finite
        assert len(out) == 2 * N_T - 2 and np.isfinite(out.data).all()
        assert len(out.events) == len(out.data)
    if out is not None and "ncsnr" in case:
        assert "ncsnr" not in out.info
    if out is not None and case.startswith("extra roi"):
        assert "streams" not in out.info["roi_labels"] and "prf-visualrois" in out.info["roi_labels"]


def test_nsd_good_copy_loads_and_is_verified_once(sims, tmp_path, monkeypatch):
    """The undamaged miniature loads identically from .hdf5 and .nii.gz; a verified file is not re-read."""
    import neurodecode.io.checks as checks

    root = _copy(sims, "nsd", tmp_path)
    a = load_nsd(root, 1, verbose="warning")
    b = load_nsd(root, 1, betas_format="nii.gz", verbose="warning")
    np.testing.assert_array_equal(a.data, b.data)
    calls = []
    real = checks.gzip.open
    monkeypatch.setattr(checks.gzip, "open", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    verify_gzip(_roi(root))  # read (and verified) by the loads above: not opened again
    assert calls == []
    flip(_roi(root), 0.5, n=16)  # a changed file (size / mtime) is verified again
    with pytest.raises(OSError, match="nsdgeneral"):
        verify_gzip(_roi(root), what="ROI volume")
    assert calls


def test_nonfinite_option_checked_and_in_config(sims):
    from neurodecode.config import DataConfig

    with pytest.raises(ValueError, match="'nonfinite' parameter.*'error', 'drop'"):
        load_nsd(sims["nsd"], 1, nonfinite="ignore")
    assert DataConfig(dataset="nsd", nonfinite="drop").nonfinite == "drop"
    with pytest.raises(ValueError, match="data.nonfinite applies to NSD only"):
        DataConfig(dataset="masc", nonfinite="drop")


def test_check_helpers():
    data = np.zeros((4, 3, 2), np.float32)
    assert not check_finite(data, file="f").any()
    data[1, 0, 0], data[3, 2, 1] = np.nan, -np.inf
    with pytest.raises(ValueError, match=r"f \(session 2\) holds 1 NaN and 1 infinite value\(s\) in 2 of 4 "):
        check_finite(data, file="f", session=2, what="epoch")
    np.testing.assert_array_equal(check_finite(data, file="f", nonfinite="drop"), [False, True, False, True])
    assert not check_finite(np.zeros((3, 2), np.int16), file="f").any()
    check_affine(np.eye(4), np.eye(4) + 1e-4, file="a", ref_file="b")
    with pytest.raises(ValueError, match=r"a has the right grid but another affine than the data b"):
        check_affine(np.eye(4) * 2, np.eye(4), file="a", ref_file="b")


# ---------------------------------------------------------------------------
# THINGS-MEG
# ---------------------------------------------------------------------------
def _fif(root):
    return root / "derivatives" / "preprocessed" / "preprocessed_P1-epo.fif"


def _read_ep(path, preload=False):
    with warnings.catch_warnings():  # pandas deprecations inside mne's metadata code
        warnings.simplefilter("ignore")
        return mne.read_epochs(path, preload=preload, verbose="error")


def _epochs_edit(root, fn):
    p = _fif(root)
    ep = _read_ep(p, preload=True)
    fn(ep)
    ep.save(p, overwrite=True, verbose="error")


def _first_image(root):
    ep = _read_ep(_fif(root))
    keep = ep.metadata["trial_type"].astype(str).str.lower() != "catch"
    return root / "images" / ep.metadata.loc[keep, "image_path"].iloc[0]


def _last_image(root):
    ep = _read_ep(_fif(root))
    keep = ep.metadata["trial_type"].astype(str).str.lower() != "catch"
    return root / "images" / ep.metadata.loc[keep, "image_path"].iloc[-1]


def _images(root):
    tr = load_things_meg(root, 1, verbose="warning")
    return tr.stimuli.get_images(list(tr.stimuli.ids))


FIF = r"preprocessed_P1-epo\.fif"
IMG = r"Could not read image .*\.jpg"


def _nan_epoch(ep):
    ep._data[4, 2, 10] = np.nan


def _inf_two_sessions(ep):
    ep._data[[0, -1], 0, 0] = np.inf


def _no_image_path(ep):
    ep.metadata = ep.metadata.drop(columns="image_path")


MEG_CASES = {
    "epo.fif truncated at 50%": (
        lambda r: cut(_fif(r), 0.5), None, err(OSError, FIF, r": the file is truncated.*Re-download")),
    "epo.fif truncated at 99%": (
        lambda r: cut(_fif(r), 0.99), None, err(OSError, FIF, ".*truncated")),
    "epo.fif last tag cut by 3 bytes": (
        lambda r: cut(_fif(r), _fif(r).stat().st_size - 3), None,
        logged(r"epochs file .*", FIF, r" is damaged at its end \(MNE: Invalid tag")),
    "epo.fif truncated in header": (
        lambda r: cut(_fif(r), 0.01), None, err(OSError, FIF)),
    "epo.fif empty": (
        lambda r: _fif(r).write_bytes(b""), None, err(OSError, FIF)),
    "epo.fif NaN": (
        lambda r: _epochs_edit(r, _nan_epoch), None,
        err(ValueError, FIF, r" \(session \d+: 1 epoch\(s\)\) holds 1 NaN and 0 infinite")),
    "epo.fif Inf in two sessions": (
        lambda r: _epochs_edit(r, _inf_two_sessions), None,
        err(ValueError, FIF, r" \(sessions .*\) holds 0 NaN and 2 infinite")),
    "epo.fif NaN, nonfinite=drop": (
        lambda r: _epochs_edit(r, _nan_epoch), {"nonfinite": "drop"},
        logged(FIF, r" .*holds 1 NaN .*dropping those epochs")),
    "epo.fif metadata without image_path": (
        lambda r: _epochs_edit(r, _no_image_path), None,
        err(ValueError, r"metadata of .*", FIF, r" lacks column\(s\) \['image_path'\]")),
    "image missing": (
        lambda r: _last_image(r).unlink(), None,
        err(FileNotFoundError, r"THINGS image\(s\) named by the metadata of .*", FIF)),
    "first image truncated": (
        lambda r: cut(_first_image(r), 0.5), "images", err(ValueError, IMG, " .*truncated or corrupt")),
    "last image truncated": (
        lambda r: cut(_last_image(r), 0.5), "images", err(ValueError, IMG)),
    "image empty": (
        lambda r: _last_image(r).write_bytes(b""), "images", err(ValueError, IMG)),
    "image is text": (
        lambda r: _first_image(r).write_text("<html>not found</html>"), "images", err(ValueError, IMG)),
}


@pytest.mark.parametrize("case", list(MEG_CASES))
def test_things_meg_damaged(case, sims, tmp_path, nd_log):
    damage, kwargs, expect = MEG_CASES[case]
    root = _copy(sims, "meg", tmp_path)
    if kwargs == "images":
        load = _images
    else:
        def load(r):
            return load_things_meg(r, 1, verbose="warning", **(kwargs or {}))
    out = _check(root, damage, load, expect, nd_log)
    if out is not None:
        ref = load_things_meg(sims["meg"], 1, verbose="warning")
        dropped = 1 if kwargs and kwargs.get("nonfinite") == "drop" else 0
        assert len(out) == len(ref) - dropped and np.isfinite(out.data).all()


def test_epochs_fif_gz_verified(sims, tmp_path):
    p = tmp_path / "x-epo.fif.gz"
    p.write_bytes(gzip.compress(_fif(sims["meg"]).read_bytes()))
    assert len(read_epochs(p, preload=False)) > 0
    flip(p, 0.5)
    with pytest.raises(OSError, match=r"x-epo\.fif\.gz is damaged"):
        read_epochs(p, preload=False)


# ---------------------------------------------------------------------------
# MEG-MASC
# ---------------------------------------------------------------------------
def _wav(root, k=0):
    return root / "stimuli" / "audio" / f"lw1_{k}.wav"


def _rec(root):
    return root / "sub-01" / "ses-0" / "meg" / "sub-01_ses-0_task-0_meg.fif"


def _events(root):
    return root / "sub-01" / "ses-0" / "meg" / "sub-01_ses-0_task-0_events.tsv"


def _cut_rec_at_buffer(root):
    from mne._fiff.open import fiff_open

    p = _rec(root)
    f, _tree, directory = fiff_open(p)
    f.close()
    bufs = [d for d in directory if d.kind == 300]  # FIFF_DATA_BUFFER
    mid = bufs[len(bufs) // 2]
    cut(p, mid.pos + 16 + mid.size)


def _rec_values(root, value):
    p = _rec(root)
    raw = mne.io.read_raw_fif(p, preload=True, verbose="error")
    raw._data[2, 1000:1004] = value
    raw.save(p, overwrite=True, verbose="error")


def _drop_sound_row(root):
    p = _events(root)
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(ln for ln in lines if "'kind': 'sound'" not in ln or "lw1_1" not in ln))


WAV0 = r"lw1_0\.wav"
REC = r"sub-01_ses-0_task-0_meg\.fif"
MASC_CASES = {
    "wav truncated to a third": (
        lambda r: cut(_wav(r), 1 / 3), {},
        logged(WAV0, r" is truncated: its header declares \d+ samples .* but it holds \d+ .*\n.*", WAV0,
               r" is 4\.\d+ s long but \d+ of \d+ word")),
    "wav truncated to its header": (
        lambda r: cut(_wav(r), 44), {}, logged(WAV0, r" is truncated: .*holds 0 ")),
    "wav data chunk cut by 1 byte": (
        lambda r: cut(_wav(r), _wav(r).stat().st_size - 1), {}, logged(WAV0, r" is truncated")),
    "wav cut inside its header": (
        lambda r: cut(_wav(r), 30), {}, err(ValueError, r"wav file .*", WAV0)),
    "wav is text": (
        lambda r: _wav(r).write_text("404 not found"), {}, err(ValueError, WAV0)),
    "recording truncated mid-buffer": (
        lambda r: cut(_rec(r), 0.5), {},
        err(OSError, r"data of the MASC recording .*", REC,
            r": the file is truncated or corrupt .*Re-download")),
    "recording last tag cut by 1 byte": (
        lambda r: cut(_rec(r), _rec(r).stat().st_size - 1), {},
        logged(REC, r" looks truncated or damaged \(MNE: Invalid tag")),
    "recording truncated in its header": (
        lambda r: cut(_rec(r), 0.05), {}, err(OSError, REC)),
    "recording truncated at a buffer": (
        _cut_rec_at_buffer, {},
        logged(REC, r" looks truncated .*\n.*", REC, r" is \d+\.\d+ s long but \d+ of \d+ word")),
    "recording NaN samples": (
        lambda r: _rec_values(r, np.nan), {},
        err(ValueError, REC, r" \(session 0, task 0\) holds 4 NaN and 0 infinite sample\(s\) in 1 channel",
            r".*nonfinite='drop'")),
    "recording Inf samples": (
        lambda r: _rec_values(r, np.inf), {}, err(ValueError, REC, r".*4 infinite")),
    "recording NaN, nonfinite=drop": (
        lambda r: _rec_values(r, np.nan), {"nonfinite": "drop"},
        logged(REC, r" .*holds 4 NaN .*segments that overlap them are dropped(.|\n)*",
               r"\d+ windows with non-finite samples")),
    "events.tsv sound row missing": (
        _drop_sound_row, {}, logged(r"events\.tsv: \d+ of \d+ word\(s\) have no preceding sound event")),
    "events.tsv truncated mid-row": (
        lambda r: cut(_events(r), 0.5), {}, err(ValueError, r"events\.tsv, row \d+")),
    "events.tsv binary garbage": (
        lambda r: _events(r).write_bytes(bytes(range(256)) * 4), {}, err(ValueError, r"events\.tsv")),
    "events.tsv without trial_type": (
        lambda r: _events(r).write_text("onset\tduration\n1.0\t0.5\n"), {},
        err(ValueError, r"events\.tsv has no column\(s\) \['trial_type'\]")),
}


@pytest.mark.parametrize("case", list(MASC_CASES))
def test_masc_damaged(case, sims, tmp_path, nd_log):
    damage, kwargs, expect = MASC_CASES[case]
    root = _copy(sims, "masc", tmp_path)
    out = _check(root, damage, lambda r: load_masc(r, 1, verbose="warning", **kwargs), expect, nd_log)
    if out is not None:  # warned: the segments that remain are finite, and those of the damage are gone
        ref = load_masc(sims["masc"], 1, verbose="error")
        assert 0 < len(out) <= len(ref) and np.isfinite(out.data).all()
        if "cut by" not in case:
            assert len(out) < len(ref)
