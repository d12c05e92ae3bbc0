"""The restricted unpickler of THINGS-EEG2 files: crafted payloads never run, real files still load."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from neurodecode.datasets import load_things_eeg2, simulate
from neurodecode.io._safe_pickle import UnsafePickleError, safe_load_pickled
from neurodecode.io.things_eeg import read_things_eeg2, write_things_eeg2

CH = ["Pz", "O1", "Oz"]
TIMES = np.round(np.arange(-2, 6) / 100, 4)


def plant_marker(path: str) -> None:
    """What a crafted file would call: leaves a file behind."""
    Path(path).touch()


class _Shell:
    """Unpickles into ``os.system(cmd)``."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Marker:
    """Unpickles into ``plant_marker(path)`` (a harmless function of this module)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (plant_marker, (self.path,))


def _eeg_dict(payload=None, seed=0):
    rng = np.random.default_rng(seed)
    d = {
        "preprocessed_eeg_data": rng.standard_normal((2, 3, len(CH), len(TIMES))),
        "ch_names": CH,
        "times": TIMES,
    }
    if payload is not None:
        d["extra"] = payload
    return d


def _write(path: Path, obj, variant: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        if variant == "official":
            np.save(f, obj, allow_pickle=True)
        else:
            pickle.dump(obj, f, protocol=4)
    return path


def test_payload_is_real(tmp_path):
    # control: plain unpickling of such a file does run the payload
    marker = tmp_path / "MARKER"
    f = _write(tmp_path / "x.npy", _eeg_dict(_Marker(marker)), "atm")
    with open(f, "rb") as fh:
        pickle.load(fh)
    assert marker.exists()


@pytest.mark.parametrize("variant", ["official", "atm"])
def test_shell_payload_is_refused(tmp_path, variant):
    marker = tmp_path / "SOMEFILE"
    f = _write(tmp_path / "preprocessed_eeg_training.npy", _eeg_dict(_Shell(f"touch {marker}")), variant)
    with pytest.raises(UnsafePickleError) as info:
        safe_load_pickled(f)
    msg = str(info.value)
    assert str(f) in msg and f"'{os.system.__module__}.system'" in msg
    assert "download it again" in msg
    assert not marker.exists()


@pytest.mark.parametrize("variant", ["official", "atm"])
@pytest.mark.parametrize("where", ["top", "nested"])
def test_marker_payload_is_refused_by_the_loaders(tmp_path, variant, where):
    marker = tmp_path / "MARKER"
    payload = _Marker(marker)
    obj = payload if where == "top" else _eeg_dict({"deep": [np.array([payload], dtype=object)]})
    f = _write(tmp_path / "preprocessed_eeg_test.npy", obj, variant)
    with pytest.raises(ValueError, match=r"preprocessed_eeg_test\.npy holds a pickled '.*plant_marker'"):
        read_things_eeg2(f)
    assert not marker.exists()


SIM = {
    "n_subjects": 1,
    "n_train_concepts": 3,
    "images_per_concept": 2,
    "n_test_concepts": 2,
    "n_train_reps": 1,
    "n_test_reps": 2,
    "variant": "both",
    "image_size": 8,
    "seed": 3,
    "verbose": "warning",
}
SIM_FILES = {
    "official": "eeg_dataset/preprocessed_data/sub-01/preprocessed_eeg_training.npy",
    "atm": "Preprocessed_data_250Hz/sub-01/preprocessed_eeg_training.npy",
}


@pytest.mark.parametrize("variant", ["official", "atm"])
def test_simulated_dataset_loads_then_crafted_file_is_refused(tmp_path, variant):
    root = simulate("things_eeg2", tmp_path / "eeg2", **SIM)
    f = root / SIM_FILES[variant]
    # the simulator's (real-format) files load, identical to an unrestricted read of the same trusted file
    ref = np.load(f, allow_pickle=True)
    ref = ref.item() if variant == "official" else ref
    out = read_things_eeg2(f)
    np.testing.assert_array_equal(out["data"], ref["preprocessed_eeg_data"])
    assert out["data"].dtype == ref["preprocessed_eeg_data"].dtype
    assert out["ch_names"] == [str(c) for c in ref["ch_names"]]
    np.testing.assert_array_equal(out["times_full"], ref["times"])
    trials = load_things_eeg2(root, 1, variant=variant)
    assert trials.data.shape[0] > 0
    # the same file with a payload: refused through the public loader, nothing run
    marker = tmp_path / "SOMEFILE"
    _write(f, {**ref, "extra": _Shell(f"touch {marker}")}, variant)
    with pytest.raises(ValueError, match=r"preprocessed_eeg_training\.npy holds a pickled '.*system'"):
        load_things_eeg2(root, 1, variant=variant)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["eval", "exec", "getattr", "__import__", "open"])
def test_dangerous_builtins_are_refused(tmp_path, name):
    f = tmp_path / "x.pkl"
    # protocol 0 by hand: GLOBAL builtins.<name>, then call it with ("1",)
    f.write_bytes(f"cbuiltins\n{name}\n(S'1'\ntR.".encode())
    with pytest.raises(UnsafePickleError, match=rf"'builtins\.{name}'"):
        safe_load_pickled(f)


def test_python2_builtin_names_map(tmp_path):
    f = tmp_path / "x.pkl"
    f.write_bytes(b"c__builtin__\nset\n((lp0\nI1\naI2\natR.")
    assert safe_load_pickled(f) == {1, 2}
    f.write_bytes(b"c__builtin__\neval\n(S'1'\ntR.")
    with pytest.raises(UnsafePickleError, match=r"'__builtin__\.eval'"):
        safe_load_pickled(f)


def test_persistent_ids_are_refused(tmp_path):
    f = tmp_path / "x.pkl"
    f.write_bytes(b"Pabc\n.")
    with pytest.raises(UnsafePickleError, match="persistent id"):
        safe_load_pickled(f)


@pytest.mark.parametrize("variant", ["official", "atm"])
def test_legitimate_files_load_identically(tmp_path, variant):
    data = np.random.default_rng(1).standard_normal((4, 2, len(CH), 5)).astype(np.float32)
    times = TIMES if variant == "atm" else TIMES[:5]
    f = write_things_eeg2(tmp_path / "preprocessed_eeg_training.npy", data, CH, times, variant=variant)
    out = read_things_eeg2(f)
    assert out["format"] == ("npy" if variant == "official" else "pickle")
    np.testing.assert_array_equal(out["data"], data)
    assert out["data"].dtype == np.float32 and out["ch_names"] == CH
    np.testing.assert_array_equal(out["times_full"], times)
    # same objects as the unrestricted reader (on our own trusted file)
    ref = np.load(f, allow_pickle=True)
    ref = ref.item() if variant == "official" else ref
    got = safe_load_pickled(f)
    got = got.item() if variant == "official" else got
    assert got.keys() == ref.keys()
    np.testing.assert_array_equal(got["preprocessed_eeg_data"], ref["preprocessed_eeg_data"])


def _assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype == object:
            for x, y in zip(a.ravel(), b.ravel()):
                _assert_same(x, y)
        else:
            np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def _rich_object():
    # what image_metadata.npy and the preprocessed dicts hold, and then some
    return {
        "train_img_concepts": np.array(["00001_aardvark", "00002_abacus"], dtype=object),
        "train_img_files": np.array(["aardvark_01b.jpg", "abacus_01b.jpg"]),
        "nested": {
            "a": [np.arange(6, dtype=np.int16).reshape(2, 3), (1, 2.5, 3 + 1j)],
            "b": {"deeper": np.zeros((2, 2), dtype=np.float64, order="F")},
        },
        "objects": np.array([np.ones(3), "x", {"k": [1, None]}, None], dtype=object),
        "scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), np.str_("Oz"), float("nan")],
        "misc": [b"bytes", bytearray(b"ba"), {1, 2}, frozenset({3}), True, None, 2**70, "ünï"],
        "struct": np.zeros(2, dtype=[("x", "<f4"), ("y", "S3")]),
        "when": np.array(["2020-01-01"], dtype="datetime64[D]"),
        "ordered": collections.OrderedDict(z=1, a=2),
        "empty": np.empty((0, 3)),
    }


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_nested_objects_round_trip_raw_pickle(tmp_path, protocol):
    obj = _rich_object()
    f = tmp_path / "x.pkl"
    with open(f, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    _assert_same(safe_load_pickled(f), obj)


def test_nested_objects_round_trip_npy(tmp_path):
    obj = _rich_object()
    f = tmp_path / "image_metadata.npy"
    np.save(f, obj, allow_pickle=True)
    out = safe_load_pickled(f)
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == object
    _assert_same(out.item(), obj)
    # a 2-D object array and a plain (no pickle) array
    arr = np.empty((2, 2), dtype=object)
    arr[0, 0], arr[0, 1], arr[1, 0], arr[1, 1] = "a", np.arange(3), {"x": 1}, [1, 2]
    np.save(f, arr, allow_pickle=True)
    _assert_same(safe_load_pickled(f), arr)
    plain = np.arange(12.0).reshape(3, 4)
    np.save(f, plain)
    _assert_same(safe_load_pickled(f), plain)


def test_damaged_files_are_clear_errors(tmp_path):
    f = write_things_eeg2(tmp_path / "preprocessed_eeg_test.npy", np.zeros((2, 2, 3, 8)), CH, TIMES)
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"Could not read THINGS-EEG2 file .*preprocessed_eeg_test\.npy"):
        read_things_eeg2(f)
    f.write_bytes(b"\x93NUMPY\x09\x00garbage")
    with pytest.raises(ValueError, match=r"preprocessed_eeg_test\.npy"):
        read_things_eeg2(f)
