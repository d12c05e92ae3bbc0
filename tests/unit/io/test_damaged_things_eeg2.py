"""Damaged and non-finite THINGS-EEG2 inputs never pass silently (issue #12, Must show 2 and 6).

See docs/reliability.md.

Both on-disk variants are damaged the same ways: the official ``np.save`` dicts (100 Hz) and ATM's 250 Hz
``pickle.dump`` files. Each case damages one file of a simulated dataset and asserts either a clear error
naming the file (and what to do), or the documented WARNING with counts, and that the load wrote nothing
into the dataset folder. Crafted pickles (code execution) are tested in ``test_safe_pickle.py``.
"""

from __future__ import annotations

import logging
import pickle
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from neurodecode.datasets import load_things_eeg2, simulate
from neurodecode.io._safe_pickle import safe_load_pickled

EEG2 = {"n_subjects": 1, "variant": "both", "n_train_concepts": 4, "images_per_concept": 2,
        "n_test_concepts": 3, "n_train_reps": 2, "n_test_reps": 4, "image_size": 16, "seed": 1,
        "verbose": "warning"}
N_TRAIN = EEG2["n_train_concepts"] * EEG2["images_per_concept"] * EEG2["n_train_reps"]  # 16 trials
N_TEST = EEG2["n_test_concepts"] * EEG2["n_test_reps"]  # 12 trials
DIRS = {"official": "eeg_dataset/preprocessed_data/sub-01", "atm": "Preprocessed_data_250Hz/sub-01"}


# ---------------------------------------------------------------------------
# helpers (the style of test_damaged_inputs.py)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    return simulate("things_eeg2", tmp_path_factory.mktemp("damage_eeg2") / "d", **EEG2)


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def cut(path: Path, keep: float) -> None:
    """Keep the first ``keep`` bytes (an int) or fraction (a float) of the file."""
    b = path.read_bytes()
    path.write_bytes(b[: keep if isinstance(keep, int) else int(len(b) * keep)])


def _eeg(root: Path, variant: str, split: str = "training") -> Path:
    return root / DIRS[variant] / f"preprocessed_eeg_{split}.npy"


def _rewrite(root: Path, variant: str, fn: Callable[[dict], object], split: str = "training") -> None:
    """Rewrite one EEG file in its own variant's form with ``fn(dict)`` (bypassing the validating writer)."""
    p = _eeg(root, variant, split)
    obj = safe_load_pickled(p)
    obj = fn(obj.item() if isinstance(obj, np.ndarray) else obj)
    with open(p, "wb") as f:
        if variant == "official":
            if isinstance(obj, list):  # an object array of the items (np.save would try to stack them)
                items = obj
                obj = np.empty(len(items), dtype=object)
                obj[:] = items
            np.save(f, obj, allow_pickle=True)
        else:
            pickle.dump(obj, f, protocol=4)


def _set(key: str, value: Callable[[dict], object] | object) -> Callable[[dict], dict]:
    def fn(d: dict) -> dict:
        d[key] = value(d) if callable(value) else value
        return d
    return fn


def _drop(key: str) -> Callable[[dict], dict]:
    def fn(d: dict) -> dict:
        del d[key]
        return d
    return fn


def _values(value: float, rows: tuple = ((1, 0, 2, 3),), dtype=np.float32) -> Callable[[dict], dict]:
    def fn(d: dict) -> dict:
        data = np.array(d["preprocessed_eeg_data"], dtype=dtype)
        for idx in rows:
            data[idx] = value
        d["preprocessed_eeg_data"] = data
        return d
    return fn


def _train_images(root: Path) -> list[Path]:
    return sorted((root / "image_set" / "training_images").glob("*/*.jpg"))


def _test_images(root: Path) -> list[Path]:
    return sorted((root / "image_set" / "test_images").glob("*/*.jpg"))


def _all_images(root: Path, variant: str) -> np.ndarray:
    tr = load_things_eeg2(root, 1, variant=variant, verbose="warning")
    return tr.stimuli.get_images(list(tr.stimuli.ids))


def err(exc: type, *pattern: str) -> tuple:
    """An error ``exc`` whose message matches the concatenated ``pattern`` (``{dir}``: the variant folder)."""
    return ("raises", exc, "".join(pattern))


def logged(*pattern: str) -> tuple:
    """A WARNING line of the neurodecode logger matching ``pattern``."""
    return ("warns", "".join(pattern))


def _check(root: Path, variant: str, damage: Callable, load: Callable, expect: tuple, nd_log) -> object:
    """Damage, load, and check the outcome and that nothing was written into ``root``."""
    damage(root, variant)
    before = _snapshot(root)
    result = None
    kind = expect[0]
    if kind == "raises":
        _, exc, pattern = expect
        pattern = pattern.replace("{dir}", re.escape(DIRS[variant]) + "/")
        with pytest.raises(exc) as info:
            load(root)
        assert re.search(pattern, str(info.value)), f"{pattern!r} not in {info.value}"
    elif kind == "warns":
        _, pattern = expect
        pattern = pattern.replace("{dir}", re.escape(DIRS[variant]) + "/")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = load(root)
        text = "\n".join(r.getMessage() for r in nd_log.records if r.levelno >= logging.WARNING)
        assert re.search(pattern, text), f"{pattern!r} not in WARNING lines:\n{text}"
    else:  # pragma: no cover
        raise AssertionError(kind)
    assert _snapshot(root) == before, "the failed load changed files in the dataset folder"
    return result


# ---------------------------------------------------------------------------
# preprocessed EEG files, both variants
# ---------------------------------------------------------------------------
TRAIN = r"{dir}preprocessed_eeg_training\.npy"
TEST = r"{dir}preprocessed_eeg_test\.npy"
REDL = r".*re-download"
D = "preprocessed_eeg_data"

FILE_CASES = {
    # unreadable files
    "training truncated to 50%": (
        lambda r, v: cut(_eeg(r, v), 0.5), {}, err(ValueError, TRAIN, r": it is truncated", REDL)),
    "training truncated in its header": (
        lambda r, v: cut(_eeg(r, v), 20), {}, err(ValueError, TRAIN, r": it is truncated", REDL)),
    "training empty": (
        lambda r, v: _eeg(r, v).write_bytes(b""), {}, err(ValueError, TRAIN, r" is empty \(0 bytes\)", REDL)),
    "training is an HTML page": (
        lambda r, v: _eeg(r, v).write_text("<html>404 Not Found</html>"), {},
        err(ValueError, TRAIN, r": it is corrupt, or not a \.npy / pickle file", REDL)),
    # wrong structure
    "test holds a list, not a dict": (
        lambda r, v: _rewrite(r, v, lambda d: [d[D], d["ch_names"]], "test"), {},
        err(ValueError, TEST, r" should hold a dict .* but holds (a list|an array of shape \(2,\))", REDL)),
    "training without preprocessed_eeg_data": (
        lambda r, v: _rewrite(r, v, _drop(D)), {},
        err(ValueError, TRAIN, r" is missing key\(s\) \['preprocessed_eeg_data'\]", REDL)),
    "training without ch_names": (
        lambda r, v: _rewrite(r, v, _drop("ch_names")), {},
        err(ValueError, TRAIN, r" is missing key\(s\) \['ch_names'\]")),
    "test without times": (
        lambda r, v: _rewrite(r, v, _drop("times"), "test"), {},
        err(ValueError, TEST, r" is missing key\(s\) \['times'\]")),
    "training data 3-D": (
        lambda r, v: _rewrite(r, v, _set(D, lambda d: d[D][0])), {},
        err(ValueError, TRAIN, r": preprocessed_eeg_data must be 4-D .*got shape \(2, \d+, \d+\)", REDL)),
    "training one ch_name short": (
        lambda r, v: _rewrite(r, v, _set("ch_names", lambda d: list(d["ch_names"])[:-1])), {},
        err(ValueError, TRAIN, r": \d+ ch_names but the data have \d+ channels \(axis 2\)")),
    "training times shorter than the data": (
        lambda r, v: _rewrite(r, v, _set("times", lambda d: np.asarray(d["times"])[:10])), {},
        err(ValueError, TRAIN, r": times has 10 samples but the data have \d+ \(axis 3\)")),
    "training times 2-D": (
        lambda r, v: _rewrite(r, v, _set("times", lambda d: np.asarray(d["times"])[None])), {},
        err(ValueError, TRAIN, r": times must be 1-D .*got shape \(1, \d+\)")),
    "training times reversed": (
        lambda r, v: _rewrite(r, v, _set("times", lambda d: np.asarray(d["times"])[::-1].copy())), {},
        err(ValueError, TRAIN, r": times must be finite and increasing")),
    "training times NaN": (
        lambda r, v: _rewrite(r, v, _set("times", lambda d: np.asarray(d["times"]) * np.nan)), {},
        err(ValueError, TRAIN, r": times must be finite and increasing .*got \[nan, ")),
    # object arrays / values of the wrong type
    "training ch_names as numbers": (
        lambda r, v: _rewrite(r, v, _set("ch_names", lambda d: list(range(len(d["ch_names"]))))), {},
        err(ValueError, TRAIN, r": ch_names must be a list of channel names \(str\) but holds \d+ entries "
            r"that are not text, e.g\. int 0")),
    "training ch_names None": (
        lambda r, v: _rewrite(r, v, _set("ch_names", None)), {},
        err(ValueError, TRAIN, r": ch_names must be a list .* but holds a NoneType")),
    "training data object array of str": (
        lambda r, v: _rewrite(r, v, _set(D, lambda d: d[D].astype(str).astype(object))), {},
        err(ValueError, TRAIN, r": preprocessed_eeg_data must hold real numbers but is an array of dtype "
            r"object holding str")),
    "training data complex": (
        lambda r, v: _rewrite(r, v, _set(D, lambda d: d[D].astype(np.complex64))), {},
        err(ValueError, TRAIN, r": preprocessed_eeg_data must hold real numbers .*dtype complex64")),
    "training data ragged lists": (
        lambda r, v: _rewrite(r, v, _set(D, lambda d: [d[D][0], d[D][1, :1]])), {},
        err(ValueError, TRAIN, r": preprocessed_eeg_data is not a regular array")),
    "test times as text": (
        lambda r, v: _rewrite(r, v, _set("times", lambda d: [f"{t}s" for t in d["times"]]), "test"), {},
        err(ValueError, TEST, r": times must hold real numbers but is an array of dtype <U")),
    # files that disagree with each other or with image_set
    "training twice the conditions of image_set": (
        lambda r, v: _rewrite(r, v, _set(D, lambda d: np.concatenate([d[D], d[D]]))), {},
        err(ValueError, TRAIN, r" has 16 conditions but .*training_images holds 8 images; the EEG and "
            r"image_set do not match\..*re-download image_set")),
    "training one condition short": (
        lambda r, v: _rewrite(r, v, _set(D, lambda d: d[D][:-1])), {},
        err(ValueError, TRAIN, r" has 7 conditions but .*training_images holds 8 images")),
    "test one condition short": (
        lambda r, v: _rewrite(r, v, _set(D, lambda d: d[D][:-1]), "test"), {},
        err(ValueError, TEST, r" has 2 conditions but .*test_images holds 3 images")),
    "test with other channel names": (
        lambda r, v: _rewrite(r, v, _set("ch_names", lambda d: [f"X{c}" for c in d["ch_names"]]), "test"),
        {}, err(ValueError, r"THINGS-EEG2 channels differ: .*", TRAIN, r" has .* but .*", TEST)),
    # non-finite values
    "training NaN": (
        lambda r, v: _rewrite(r, v, _values(np.nan)), {},
        err(ValueError, TRAIN, r" \(subject 1, split train\) holds 1 NaN and 0 infinite value\(s\) ",
            r"in 1 of 16 trial\(s\).*nonfinite='drop'")),
    "test +Inf and -Inf": (
        lambda r, v: _rewrite(r, v, _values(np.inf, ((0, 1, 0, 0), (2, 3, 1, -1))), "test"), {},
        err(ValueError, TEST, r" \(subject 1, split test\) holds 0 NaN and 2 infinite value\(s\) ",
            "in 2 of 12 ")),
    "training value beyond float32": (
        lambda r, v: _rewrite(r, v, _values(1e300, dtype=np.float64)), {},
        err(ValueError, TRAIN, r" \(subject 1, split train\) holds 0 NaN and 1 infinite value")),
    "training NaN, nonfinite=drop": (
        lambda r, v: _rewrite(r, v, _values(np.nan, ((1, 0, 2, 3), (3, 1, 0, 0)))), {"nonfinite": "drop"},
        logged(TRAIN, r" \(subject 1, split train\) holds 2 NaN and 0 infinite value\(s\) ",
               r"in 2 of 16 trial\(s\): dropping those trials")),
}


@pytest.mark.parametrize("variant", ["official", "atm"])
@pytest.mark.parametrize("case", list(FILE_CASES))
def test_things_eeg2_file_damaged(case, variant, sim, tmp_path, nd_log):
    damage, kwargs, expect = FILE_CASES[case]
    root = tmp_path / "d"
    shutil.copytree(sim, root)
    def load(r):
        return load_things_eeg2(r, 1, variant=variant, verbose="warning", **kwargs)

    out = _check(root, variant, damage, load, expect, nd_log)
    if out is not None:  # dropped: fewer trials, all finite, events aligned, the rest unchanged
        ref = load_things_eeg2(sim, 1, variant=variant, verbose="error")
        assert len(out) == len(ref) - 2 and len(out.events) == len(out.data)
        assert np.isfinite(out.data).all()
        gone = set(zip(ref.events["condition"], ref.events["repetition"], ref.events["split"])) - set(
            zip(out.events["condition"], out.events["repetition"], out.events["split"]))
        assert gone == {(1, 0, "train"), (3, 1, "train")}
        keep = ~((ref.events["split"] == "train") & ref.events["condition"].isin([1, 3])
                 & (ref.events["repetition"] == ref.events["condition"].map({1: 0, 3: 1})))
        np.testing.assert_array_equal(out.data, ref.data[keep.to_numpy()])


# ---------------------------------------------------------------------------
# image_set (the same folder for both variants)
# ---------------------------------------------------------------------------
IMG = r"Could not read image .*\.jpg .*truncated or corrupt, re-download it"

IMAGE_CASES = {
    "training image missing": (
        lambda r, v: _train_images(r)[3].unlink(), "load",
        err(ValueError, TRAIN, r" has 8 conditions but .*training_images holds 7 images.*",
            r"Most concept folders hold 2 images but 1 hold another number: 00002_\w+ \(1\)")),
    "test image missing": (
        lambda r, v: _test_images(r)[1].unlink(), "load",
        err(ValueError, r"image folder .*test_images/00002_\w+ holds no image; re-download image_set")),
    "training image empty": (
        lambda r, v: _train_images(r)[5].write_bytes(b""), "load",
        err(ValueError, r"THINGS-EEG2 image .*training_images/.*\.jpg is empty \(0 bytes\); re-download")),
    "training_images folder missing": (
        lambda r, v: shutil.rmtree(r / "image_set" / "training_images"), "load",
        err(FileNotFoundError, r"image folder not found: .*training_images")),
    "first training image truncated": (
        lambda r, v: cut(_train_images(r)[0], 0.5), "images", err(ValueError, IMG)),
    "test image truncated": (
        lambda r, v: cut(_test_images(r)[-1], 0.5), "images", err(ValueError, IMG)),
    "training image is text": (
        lambda r, v: _train_images(r)[-1].write_text("<html>not found</html>"), "images",
        err(ValueError, IMG)),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_things_eeg2_images_damaged(case, sim, tmp_path, nd_log):
    damage, how, expect = IMAGE_CASES[case]
    root = tmp_path / "d"
    shutil.copytree(sim, root)
    variant = "official"
    if how == "images":
        def load(r):
            return _all_images(r, variant)
    else:
        def load(r):
            return load_things_eeg2(r, 1, variant=variant, verbose="warning")
    _check(root, variant, damage, load, expect, nd_log)


# ---------------------------------------------------------------------------
# the option and the undamaged copy
# ---------------------------------------------------------------------------
def test_good_copy_loads_finite_both_variants(sim):
    for variant in ("official", "atm"):
        tr = load_things_eeg2(sim, 1, variant=variant, verbose="error")
        assert len(tr) == N_TRAIN + N_TEST and np.isfinite(tr.data).all()
        assert _all_images(sim, variant).shape[0] == 8 + 3


def test_nonfinite_option_checked_and_reachable_from_config(sim, tmp_path):
    from neurodecode.config import load_config
    from neurodecode.workflow._data import check_loader_options, load_subject

    with pytest.raises(ValueError, match="'nonfinite' parameter.*'error', 'drop'"):
        load_things_eeg2(sim, 1, nonfinite="ignore")
    meeg = ["models.mlp.adapter=subject_layer", "models.mlp.backbone=dilated_conv"]
    cfg = load_config(None, ["data.dataset=things_eeg2", *meeg,
                             "data.options={variant: atm, nonfinite: drop}"])
    check_loader_options(cfg)  # accepted: an option of load_things_eeg2
    root = tmp_path / "d"
    shutil.copytree(sim, root)
    _rewrite(root, "atm", _values(np.nan, ((0, 0, 0, 0), (0, 1, 0, 0), (2, 0, 1, 1))), "test")
    out = load_subject(cfg, root, 1)
    assert len(out) == N_TRAIN + N_TEST - 3 and np.isfinite(out.data).all()
    with pytest.raises(ValueError, match=r"preprocessed_eeg_test\.npy \(subject 1, split test\) holds 3 NaN"):
        load_things_eeg2(root, 1, variant="atm", verbose="error")


def test_every_trial_nonfinite_with_drop(sim, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(sim, root)
    _rewrite(root, "official", _values(np.nan, ((slice(None), slice(None), 0, 0),)), "test")
    with pytest.raises(ValueError, match=r"Every trial of .*preprocessed_eeg_test\.npy holds a NaN"):
        load_things_eeg2(root, 1, variant="official", split="test", nonfinite="drop", verbose="error")
