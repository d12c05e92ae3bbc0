"""The checks every registered dataset passes (shared by test_datasets.py and test_new_dataset.py).

Each check takes a :class:`neurodecode.datasets.DatasetSpec` and a tiny simulated copy of the dataset
written by its own simulator (``spec.conformance.simulate_params``), and reads it back with the dataset's
real loader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from neurodecode.datasets import BrainTrials, DataLeakageError, DatasetSpec, check_no_leakage, simulate

#: Required events columns and the kind of values each must hold.
EVENT_KINDS = {"subject": "integer", "session": "integer", "repetition": "integer",
               "stimulus_id": "id", "split": "string"}
SPLITS = {"train", "val", "test"}
#: What a loader may raise for a missing or damaged file (a clear error, not a crash deep in a library).
CLEAR_ERRORS = (FileNotFoundError, ValueError, OSError, KeyError)


def simulate_tiny(spec: DatasetSpec, dest: Path) -> Path:
    """Write the tiny simulation of ``spec`` into ``dest`` (with its own simulator, through ``simulate``)."""
    assert spec.conformance is not None, f"{spec.name}: no conformance case (DatasetSpec.conformance)"
    return simulate(spec.name, dest, verbose="warning", **spec.conformance.simulate_params)


def load(spec: DatasetSpec, root: Path, subject: int = 1) -> BrainTrials:
    """Subject ``subject`` of ``root`` read by the dataset's real loader."""
    return spec.loader(root, subject, verbose="warning", **spec.conformance.load_kwargs)


def check_layout_read(spec: DatasetSpec, root: Path) -> BrainTrials:
    """The loader reads the simulated layout into a non-empty, finite BrainTrials of the right modality."""
    trials = load(spec, root)
    assert isinstance(trials, BrainTrials), type(trials)
    assert len(trials) > 0
    assert trials.modality == spec.modality, (trials.modality, spec.modality)
    data = np.asarray(trials.get_data())
    assert data.shape[0] == len(trials) == len(trials.events)
    assert np.isfinite(data).all(), "the loader returned non-finite values"
    assert set(trials.subjects) == {1}, trials.subjects
    return trials


def check_events(trials: BrainTrials) -> None:
    """The required events columns are present, complete and of the right kind."""
    events = trials.events
    for column, kind in EVENT_KINDS.items():
        assert column in events.columns, f"events lacks the required column {column!r}"
        values = events[column]
        assert not values.isna().any(), f"events[{column!r}] has missing values"
        if kind == "integer":
            assert pd.api.types.is_integer_dtype(values), f"events[{column!r}] is {values.dtype}, not integer"
        elif kind == "string":
            assert pd.api.types.is_string_dtype(values) or values.dtype == object, values.dtype
        else:  # ids: integers or strings, hashable and comparable as text
            assert pd.api.types.is_integer_dtype(values) or pd.api.types.is_string_dtype(values), values.dtype
    assert set(events["split"]) <= SPLITS, set(events["split"])


def check_splits_disjoint(trials: BrainTrials) -> tuple[BrainTrials, BrainTrials]:
    """There are train and test trials, and no stimulus is in both."""
    train, test = trials.select(split="train"), trials.select(split="test")
    assert len(train) and len(test), f"the tiny simulation has {len(train)} train / {len(test)} test trials"
    both = set(train.events["stimulus_id"].astype(str)) & set(test.events["stimulus_id"].astype(str))
    assert not both, f"stimuli in both train and test: {sorted(both)[:5]}"
    check_no_leakage(train, test)  # the guard accepts a clean split
    return train, test


def check_leakage_refused(trials: BrainTrials) -> None:
    """The leakage guard refuses a test trial in training, and a test stimulus relabelled as training."""
    train, test = trials.select(split="train"), trials.select(split="test")
    with pytest.raises(DataLeakageError, match="split='test'"):
        check_no_leakage(BrainTrials.concatenate([train, test[:1]]), test)
    leaked = test[:1].copy()
    leaked.events["split"] = "train"
    with pytest.raises(DataLeakageError, match="in both"):
        check_no_leakage(BrainTrials.concatenate([train, leaked]), test)


def check_bad_input(spec: DatasetSpec, root: Path, work: Path) -> None:
    """A missing root, subject or data file, or a truncated file: a clear error naming what is wrong."""
    missing = work / "no_such_dataset"
    with pytest.raises(CLEAR_ERRORS) as err:
        load(spec, missing)
    assert "no_such_dataset" in str(err.value), f"the error does not name the missing root: {err.value}"
    with pytest.raises(CLEAR_ERRORS):
        load(spec, root, subject=99)
    copy = work / "damaged"
    shutil.copytree(root, copy)
    files = spec.conformance.files(copy, 1)
    assert files and all(f.is_file() for f in files), f"conformance.files gave {files}"
    for path in files:
        original = path.read_bytes()
        for damage in ("removed", "truncated"):
            if damage == "removed":
                path.unlink()
            else:
                path.write_bytes(original[: len(original) // 2])
            with pytest.raises(CLEAR_ERRORS) as err:
                load(spec, copy)
            message = str(err.value)
            named = path.name in message or path.name.split(".")[0] in message  # the file or its recording
            assert named, f"{damage} {path.name}: the error does not name it: {err.value!r}"
            path.write_bytes(original)


def check_roundtrip(spec: DatasetSpec, root: Path, trials: BrainTrials) -> dict[str, Any]:
    """What the simulator planted (``conformance.planted``: ids, counts, shapes) is what the loader reads."""
    record = json.loads((root / "simulation.json").read_text(encoding="utf-8"))
    assert record["name"] == spec.name
    planted = spec.conformance.planted(record, 1)
    assert planted, "conformance.planted returned nothing to compare"
    events = trials.events
    if "n_trials" in planted:
        assert len(trials) == planted["n_trials"], (len(trials), planted["n_trials"])
    if "n_stimuli" in planted:
        assert events["stimulus_id"].nunique() == planted["n_stimuli"]
    if "trial_shape" in planted:
        shape = tuple(np.asarray(trials.get_data()).shape[1:])
        want = tuple(planted["trial_shape"])
        same = len(shape) == len(want) and all(w is None or s == w for s, w in zip(shape, want))
        assert same, (shape, want)
    for key, rows in (("values", events), ("test_values", events[events["split"] == "test"])):
        for column, expected in planted.get(key, {}).items():
            assert set(rows[column].astype(str)) == {str(v) for v in expected}, (key, column)
    for column, allowed in planted.get("within", {}).items():
        extra = set(events[column].astype(str)) - {str(v) for v in allowed}
        assert not extra, f"{column} values not planted: {sorted(extra)[:5]}"
    return planted
