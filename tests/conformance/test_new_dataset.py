"""A new dataset needs no edit outside its own files and the registry line.

The test writes a toy dataset module (a loader and a simulator for a trivial on-disk layout) into a
temporary folder, imports it, registers it with one ``register_dataset(...)`` call, and then the same
conformance checks as every built-in dataset pass on it, and ``neurodecode fit`` (the workflow API, a
config naming the dataset, on its simulated data) runs to a ``metrics.json``. No neurodecode file is
touched: the dataset lives outside the package and no file of the package names it. The registration is
the only place the dataset is named: without it a run config refuses ``data.dataset: toy_eeg``; with that
one call, and nothing declared anywhere else, the config accepts it and reads its facts (modality, stimulus
kind) from the registered spec.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import textwrap
from pathlib import Path

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

import neurodecode
from neurodecode.config import AUDIO_DATASETS, DATASETS, ConfigError, load_config
from neurodecode.datasets import get_dataset, list_datasets, register_dataset, unregister_dataset

#: The whole dataset: one module a user writes (loader + simulator + its conformance case), and the
#: registry line at its end. Layout: stimuli.npy (images), stimuli.tsv (ids, split),
#: sub-XX/data.npy (trials × channels × times), sub-XX/events.tsv.
TOY_MODULE = '''
"""toy_eeg: a trivial EEG dataset, registered from user code."""

from pathlib import Path

import numpy as np
import pandas as pd

from neurodecode.datasets import (BrainTrials, Conformance, DatasetSpec, Simulator, StimulusSet,
                                  register_dataset)


def _read(path, reader):
    if not path.is_file():
        raise FileNotFoundError(f"toy_eeg file not found: {path}")
    try:
        return reader(path)
    except Exception as err:  # a truncated or damaged file: name it
        raise ValueError(f"toy_eeg file {path} is damaged ({err})") from None


def load_toy_eeg(root, subject, *, verbose=None):
    """Subject ``subject`` of a toy_eeg folder as BrainTrials."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"toy_eeg root not found: {root}")
    sub = root / f"sub-{int(subject):02d}"
    if not sub.is_dir():
        raise FileNotFoundError(f"toy_eeg subject {subject} not found: {sub}")
    data = _read(sub / "data.npy", np.load)
    events = _read(sub / "events.tsv", lambda p: pd.read_csv(p, sep="\\t", dtype={"stimulus_id": str}))
    if len(events) != len(data):
        raise ValueError(f"{sub / 'events.tsv'} has {len(events)} rows for {len(data)} trials in data.npy")
    events.insert(0, "subject", int(subject))
    table = _read(root / "stimuli.tsv", lambda p: pd.read_csv(p, sep="\\t", dtype={"stimulus_id": str}))
    images = _read(root / "stimuli.npy", np.load)
    stimuli = StimulusSet(table["stimulus_id"].tolist(), images=images)
    n_ch, n_t = data.shape[1:]
    info = {"modality": "eeg", "sfreq": 100.0, "ch_names": [f"E{i}" for i in range(n_ch)],
            "times": np.arange(n_t) / 100.0, "tmin": 0.0}
    return BrainTrials(data, events, info, stimuli)


def resolve_toy_eeg(*, n_subjects=1, seed=0, n_images=24, n_test=8, n_reps=2, n_channels=6, n_times=10,
                    snr=2.0, image_size=8, response="linear"):
    if not 2 <= n_test < n_images:
        raise ValueError(f"n_test must be in 2..n_images-1, got {n_test}")
    return {"n_subjects": int(n_subjects), "seed": int(seed), "n_images": int(n_images),
            "n_test": int(n_test), "n_reps": int(n_reps), "n_channels": int(n_channels),
            "n_times": int(n_times), "snr": float(snr), "image_size": int(image_size), "response": response}


def write_toy_eeg(root, p):
    rng = np.random.default_rng(p["seed"])
    n, size = p["n_images"], p["image_size"]
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    ids = [f"img{i:03d}" for i in range(n)]
    split = ["test" if i >= n - p["n_test"] else "train" for i in range(n)]
    np.save(root / "stimuli.npy", images)
    pd.DataFrame({"stimulus_id": ids, "split": split}).to_csv(root / "stimuli.tsv", sep="\\t", index=False)
    feats = images.reshape(n, -1).astype(float)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    for s in range(1, p["n_subjects"] + 1):
        w = rng.standard_normal((feats.shape[1], p["n_channels"] * p["n_times"])) / feats.shape[1] ** 0.5
        order = np.tile(np.arange(n), p["n_reps"])
        signal = (feats @ w)[order]
        data = p["snr"] * signal / signal.std() + rng.standard_normal(signal.shape)
        sub = root / f"sub-{s:02d}"
        sub.mkdir()
        np.save(sub / "data.npy", data.reshape(len(order), p["n_channels"], p["n_times"]).astype("float32"))
        pd.DataFrame({"session": 1, "stimulus_id": [ids[i] for i in order],
                      "repetition": np.repeat(np.arange(p["n_reps"]), n),
                      "split": [split[i] for i in order]}).to_csv(sub / "events.tsv", sep="\\t", index=False)
    return {"stimulus_ids": ids, "test_ids": ids[n - p["n_test"]:]}


def _planted(record, subject):
    p, truth = record["parameters"], record["ground_truth"]
    return {"n_trials": p["n_images"] * p["n_reps"], "n_stimuli": p["n_images"],
            "trial_shape": (p["n_channels"], p["n_times"]),
            "values": {"stimulus_id": set(truth["stimulus_ids"])},
            "test_values": {"stimulus_id": set(truth["test_ids"])}}


SPEC = DatasetSpec(
    name="toy_eeg", modality="eeg", loader=load_toy_eeg,
    simulator=Simulator(resolve=resolve_toy_eeg, write=write_toy_eeg),
    conformance=Conformance(simulate_params={"n_subjects": 1}, planted=_planted,
                            files=lambda root, s: [root / f"sub-{s:02d}" / "data.npy",
                                                   root / f"sub-{s:02d}" / "events.tsv"]))

register_dataset(SPEC)  # the registry line
'''

CHECKS = (check_events, check_splits_disjoint, check_leakage_refused)


def _package_files_naming(name: str) -> list[str]:
    """Files of the installed neurodecode package whose text mentions ``name``."""
    root = Path(neurodecode.__file__).parent
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*.py")) if name in p.read_text()]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Write, import and register the toy dataset; unregister it afterwards."""
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "toy_eeg.py").write_text(textwrap.dedent(TOY_MODULE))
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("toy_eeg")
        assert Path(neurodecode.__file__).parent not in Path(module.__file__).parents
        yield module.SPEC
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("toy_eeg", None)
        if "toy_eeg" in list_datasets():
            unregister_dataset("toy_eeg")


MEEG = ["models.mlp.adapter=subject_layer", "models.mlp.backbone=dilated_conv"]


def test_the_registry_line_makes_the_name_known_everywhere(toy):
    spec = toy
    assert get_dataset("toy_eeg") is spec and "toy_eeg" in list_datasets("eeg")
    cfg = load_config(None, ["data.dataset=toy_eeg", *MEEG])
    assert cfg.data.dataset == "toy_eeg"
    with pytest.raises(ConfigError, match="Did you mean 'toy_eeg'"):
        load_config(None, ["data.dataset=toy_eg"])


def test_the_registration_is_the_only_place_the_dataset_is_named(toy):
    """Unregistered, the name is unknown to a run config; the one ``register_dataset`` call, with nothing
    declared anywhere else, makes it valid, and the config's checks read the spec's facts."""
    spec = toy
    unregister_dataset("toy_eeg")
    try:
        with pytest.raises(ConfigError, match="unknown dataset 'toy_eeg'.*register_dataset"):
            load_config(None, ["data.dataset=toy_eeg", *MEEG])
        assert "toy_eeg" not in DATASETS
    finally:
        register_dataset(spec)  # the registry line, again
    assert load_config(None, ["data.dataset=toy_eeg", *MEEG]).data.dataset == "toy_eeg"
    assert DATASETS["toy_eeg"] == "eeg" and "toy_eeg" not in AUDIO_DATASETS
    # the modality comes from the spec: an EEG dataset refuses the fMRI adapter and the fMRI-only keys
    with pytest.raises(ConfigError, match="adapter='linear' does not fit eeg data"):
        load_config(None, ["data.dataset=toy_eeg"])
    with pytest.raises(ConfigError, match="data.roi applies to NSD only"):
        load_config(None, ["data.dataset=toy_eeg", *MEEG, "data.roi=V1"])
    # ... and so does the stimulus kind: the same files registered as a sound dataset need speech targets
    sounds = dataclasses.replace(spec, name="toy_eeg_sounds", stimulus="audio")
    register_dataset(sounds)
    try:
        assert "toy_eeg_sounds" in AUDIO_DATASETS
        with pytest.raises(ConfigError, match="'toy_eeg_sounds' stimuli are speech"):
            load_config(None, ["data.dataset=toy_eeg_sounds", *MEEG])
        assert load_config(None, ["data.dataset=toy_eeg_sounds", *MEEG, "targets.encoder=melspec"])
    finally:
        unregister_dataset("toy_eeg_sounds")


def test_a_spec_with_a_key_the_config_lacks_is_refused_by_name(toy):
    bad = dataclasses.replace(toy, name="toy_eeg_bad_keys", data_keys=("montage",))
    register_dataset(bad)
    try:
        with pytest.raises(ConfigError, match=r"DatasetSpec.data_keys \['montage'\] are not"):
            load_config(None, ["data.dataset=toy_eeg_bad_keys", *MEEG])
    finally:
        unregister_dataset("toy_eeg_bad_keys")


def test_the_same_conformance_checks_pass(toy, tmp_path):
    spec = toy
    root = simulate_tiny(spec, tmp_path / "toy")
    trials = check_layout_read(spec, root)
    for check in CHECKS:
        check(trials)
    check_bad_input(spec, root, tmp_path)
    check_roundtrip(spec, root, trials)


def test_fit_runs_on_it_without_editing_neurodecode(toy, tmp_path, monkeypatch):
    from neurodecode.workflow import run_fit

    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    cfg = load_config(None, [
        "data.dataset=toy_eeg", "data.subjects=[1]", "simulate.n_subjects=1", "simulate.image_size=8",
        "simulate.snr=3.0", "models.mlp.enabled=false", "targets.size=4", f"output_dir={tmp_path / 'runs'}",
        "name=toy", "evaluation.n_boot=20", "evaluation.n_repeats=2", "evaluation.n_candidates=5",
        "report.n_examples=1", "report.n_retrieved=2", "models.mlp.adapter=subject_layer",
        "models.mlp.backbone=dilated_conv"])
    result = run_fit(cfg, verbose="warning")
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "toy_eeg" and metrics["modality"] == "eeg" and metrics["simulated"]
    assert "ridge" in metrics["models"]
    assert not _package_files_naming("toy_eeg"), "a neurodecode file was edited for the new dataset"
