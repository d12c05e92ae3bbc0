"""Workflow helpers: simulated-data cache keys, loader options, 2-D sensor positions, subject pooling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.config import load_config
from neurodecode.datasets import BrainTrials
from neurodecode.workflow._data import (
    check_loader_options,
    pooled_subjects,
    positions_2d,
    simulate_params,
    simulated_root,
)

MEEG = ["models.mlp.adapter=subject_layer", "models.mlp.backbone=dilated_conv"]


def test_simulation_cache_key_follows_dataset_and_params(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path))
    nsd = load_config(None)
    eeg = load_config(None, ["data.dataset=things_eeg2", *MEEG])
    eeg2 = load_config(None, ["data.dataset=things_eeg2", *MEEG, "simulate.params={n_train_concepts: 12}"])
    assert simulated_root(nsd).name.startswith("nsd-")
    assert simulated_root(eeg).name.startswith("things_eeg2-")
    assert simulated_root(eeg) != simulated_root(eeg2)
    assert simulate_params(eeg2) == {"snr": 0.4, "image_size": 64, "n_train_concepts": 12,
                                    "response": "nonlinear"}
    assert "n_sessions" in simulate_params(nsd)
    masc = load_config(None, ["data.dataset=masc", *MEEG, "targets.encoder=melspec"])
    assert "image_size" not in simulate_params(masc)


def test_unknown_loader_option_is_rejected_early():
    cfg = load_config(None, ["data.dataset=things_eeg2", *MEEG, "data.options={varient: atm}"])
    with pytest.raises(ValueError, match=r"\['varient'\] are not options of load_things_eeg2.*variant"):
        check_loader_options(cfg)


def test_positions_2d_projection():
    # sensors on a unit upper hemisphere: the vertex maps to the centre, the equator to radius pi/2
    pos = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, -1.0, 0], [np.nan] * 3])
    xy = positions_2d(pos)
    assert xy.shape == (4, 2) and np.isnan(xy[3]).all()
    r = np.linalg.norm(xy[:3] - xy[0], axis=1)
    assert r[0] == pytest.approx(0) and r[1] == pytest.approx(r[2])
    assert xy[2, 1] < xy[0, 1]  # posterior stays posterior
    assert positions_2d(None) is None and positions_2d(np.full((2, 3), np.nan)) is None


def _subject(s, n_ch=3):
    ev = pd.DataFrame({"subject": s, "session": 0, "stimulus_id": ["a", "b"], "repetition": 0,
                       "split": "train"})
    info = {"modality": "eeg", "sfreq": 10.0, "ch_names": [f"C{i}" for i in range(n_ch)],
            "times": np.arange(4) / 10.0}
    return BrainTrials(np.full((2, n_ch, 4), float(s), np.float32), ev, info)


def test_pooled_subjects_relabels_and_checks_channels():
    both = BrainTrials.concatenate([_subject(1), _subject(2)])
    pooled = pooled_subjects(both)
    assert pooled.subjects == [0] and list(pooled.events["source_subject"]) == [1, 1, 2, 2]
    assert pooled.get_data().shape == (4, 3, 4) and pooled.info["ch_names"] == ["C0", "C1", "C2"]
    with pytest.raises(ValueError, match="same channels for every subject"):
        pooled_subjects(BrainTrials.concatenate([_subject(1), _subject(2, n_ch=4)]))


def test_stale_simulation_cache_is_replaced(tmp_path, monkeypatch):
    """A cached simulation written by an older simulator version is rewritten, not an error."""
    import json

    from neurodecode.workflow._data import ensure_simulated

    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path))
    cfg = load_config(None, ["simulate.n_subjects=1", "data.subjects=[1]", "simulate.n_sessions=1",
                             "simulate.trials_per_session=60", "simulate.image_size=16",
                             "simulate.params={grid: [10, 12, 10]}"])
    root = simulated_root(cfg)
    root.mkdir(parents=True)
    (root / "simulation.json").write_text(json.dumps({"name": "nsd", "parameters": {"old": 1}}))
    (root / "stale.txt").write_text("from an older simulator")
    assert ensure_simulated(cfg) == root
    assert not (root / "stale.txt").exists()
    assert json.loads((root / "simulation.json").read_text())["parameters"]["n_sessions"] == 1
    first = (root / "simulation.json").stat().st_mtime_ns
    ensure_simulated(cfg)  # identical parameters: reused, nothing rewritten
    assert (root / "simulation.json").stat().st_mtime_ns == first
