"""Pieces split out of the workflow functions, each checked on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.config import FitConfig
from neurodecode.datasets import BrainTrials, DataLeakageError
from neurodecode.workflow.fit import _train_test
from neurodecode.workflow.reconstruct import _check_run, _test_trials


def _trials(splits, ids, reps=None):
    ev = pd.DataFrame({"subject": 1, "session": 1, "stimulus_id": ids,
                       "repetition": reps if reps is not None else 0, "split": splits})
    return BrainTrials(np.arange(len(ids) * 2, dtype=np.float32).reshape(len(ids), 2), ev, {"modality": "fmri"})


def test_train_test_averages_repetitions_and_guards_leakage():
    config = FitConfig()
    trials = _trials(["train", "train", "test", "test"], [1, 2, 3, 3], reps=[0, 0, 0, 1])
    train, test = _train_test(config, trials)
    assert len(train) == 2 and len(test) == 1                      # the two repetitions of 3 averaged
    np.testing.assert_allclose(test.get_data(), [[5.0, 6.0]])
    with pytest.raises(DataLeakageError):
        _train_test(config, _trials(["train", "test"], [1, 1]))
    with pytest.raises(ValueError, match="No test trials"):
        _train_test(config, _trials(["train", "train"], [1, 2]))


def test_reconstruct_checks_the_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml not found"):
        _check_run(tmp_path, None)
    (tmp_path / "config.yaml").write_text("{}")
    with pytest.raises(FileNotFoundError, match="deep decoder"):
        _check_run(tmp_path, None)
    (tmp_path / "models" / "mlp").mkdir(parents=True)
    with pytest.raises(ValueError, match="limit must be a positive int"):
        _check_run(tmp_path, 0)
    assert _check_run(tmp_path, 3) == (tmp_path / "config.yaml", tmp_path / "models" / "mlp")


def test_reconstruct_takes_the_first_limit_test_items():
    config = FitConfig()
    trials = _trials(["train", "test", "test", "test", "test"], [1, 2, 2, 3, 4], reps=[0, 0, 1, 0, 0])
    test = _test_trials(config, trials, limit=2)
    assert test.events["stimulus_id"].tolist() == [2, 3]
    assert len(_test_trials(config, trials, limit=None)) == 3
