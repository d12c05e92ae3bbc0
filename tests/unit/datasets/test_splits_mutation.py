"""check_no_leakage on hand-made event tables: the single-trial and shared-stimulus leaks are refused."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from neurodecode.datasets import DataLeakageError, check_no_leakage


def _trials(split, stim, subject=None):
    ev = {"split": split, "stimulus_id": stim}
    if subject is not None:
        ev["subject"] = subject
    return SimpleNamespace(events=pd.DataFrame(ev))


def test_one_test_trial_in_training_is_refused():
    train = _trials(["train", "train", "test"], ["a", "b", "c"])
    with pytest.raises(DataLeakageError, match=r"^1 trial\(s\) with split='test' were passed to the scaler"):
        check_no_leakage(train, where="the scaler")
    check_no_leakage(_trials(["train", "train"], ["a", "b"]))          # clean: no error
    check_no_leakage(_trials(["train", "val"], ["a", "b"]), None)      # other splits are fine


def test_shared_stimulus_is_refused_even_across_id_types():
    train = _trials(["train", "train"], [1, 2])
    test = _trials(["test", "test"], ["2", "3"], subject=[1, 1])
    with pytest.raises(DataLeakageError,
                       match=r"^1 stimulus id\(s\) \(e\.g\. \['2'\]\) are in both the fit and the test trials "
                             r"\(checked on \['subject', 'stimulus_id'\]\)"):
        check_no_leakage(train, test, where="fit")
    with pytest.raises(DataLeakageError, match=r"checked on \['stimulus_id'\]\)"):
        check_no_leakage(train, _trials(["test"], ["1"]))
    check_no_leakage(train, _trials(["test", "test"], ["3", "4"]))     # disjoint: fine
    assert issubclass(DataLeakageError, ValueError)


def test_default_place_is_named_training():
    with pytest.raises(DataLeakageError, match="were passed to training\\."):
        check_no_leakage(_trials(["test"], ["a"]))
    with pytest.raises(DataLeakageError, match="are in both the training and the test trials"):
        check_no_leakage(_trials(["train"], ["a"]), _trials(["test"], ["a"]))
