"""Conformance suite: every registered dataset passes the same checks on a tiny simulated copy.

One parametrised suite over ``neurodecode.datasets.list_datasets()``: layout read by the real loader,
required events columns and dtypes, disjoint splits, the leakage guard, clear errors on bad input, and
the simulator round trip. A dataset added to the registry is picked up here with no edit of this file.
"""

from __future__ import annotations

import pytest
from _dataset_checks import (
    check_bad_input,
    check_events,
    check_layout_read,
    check_leakage_refused,
    check_roundtrip,
    check_splits_disjoint,
    simulate_tiny,
)

from neurodecode.config import AUDIO_DATASETS, DATASETS, DataConfig, SimulateConfig
from neurodecode.datasets import get_dataset, list_datasets

NAMES = list_datasets()


@pytest.fixture(scope="module", params=NAMES)
def case(request, tmp_path_factory):
    """(spec, root of its tiny simulation, subject 1 as loaded)."""
    spec = get_dataset(request.param)
    root = simulate_tiny(spec, tmp_path_factory.mktemp(spec.name) / spec.name)
    return spec, root, spec.loader(root, 1, verbose="warning", **spec.conformance.load_kwargs)


def test_builtin_datasets_are_registered():
    assert {"nsd", "things_eeg2", "things_meg", "masc"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_complete_and_valid_in_a_config(name):
    spec = get_dataset(name)
    assert spec.conformance is not None, f"{name}: give DatasetSpec.conformance (tiny simulation, planted)"
    # the config reads the registry itself (no catalogue of its own): the spec's facts are what it sees
    assert DataConfig(dataset=name).dataset == name
    assert DATASETS[name] == spec.modality and (name in AUDIO_DATASETS) == (spec.stimulus == "audio")
    assert set(spec.data_keys) <= set(DataConfig.model_fields), spec.data_keys
    assert set(spec.simulate_keys) <= set(SimulateConfig.model_fields), spec.simulate_keys


def test_layout_read(case):
    spec, root, _ = case
    check_layout_read(spec, root)


def test_events_columns_and_dtypes(case):
    check_events(case[2])


def test_splits_disjoint(case):
    check_splits_disjoint(case[2])


def test_leakage_refused(case):
    check_leakage_refused(case[2])


def test_bad_input_gives_clear_error(case, tmp_path):
    spec, root, _ = case
    check_bad_input(spec, root, tmp_path)


def test_simulator_roundtrip(case):
    spec, root, trials = case
    check_roundtrip(spec, root, trials)
