"""Leak-proof splits: test stimuli never reach training or normalisation statistics."""

from __future__ import annotations

from typing import Any

import numpy as np


class DataLeakageError(ValueError):
    """Raised when test trials or test stimuli would enter training or fitted statistics."""


def check_no_leakage(train: Any, test: Any | None = None, *, where: str = "training") -> None:
    """Raise :class:`DataLeakageError` if ``train`` holds test data.

    Parameters
    ----------
    train : BrainTrials
        Trials about to be used for fitting (a model, a scaler, a statistic).
    test : BrainTrials | None
        The evaluation trials. If given, no ``stimulus_id`` of ``test`` may
        appear in ``train`` (the same image must never be both learned and scored).
    where : str
        What is being fitted, for the message.
    """
    split = train.events["split"].to_numpy()
    n_test = int((split == "test").sum())
    if n_test:
        raise DataLeakageError(
            f"{n_test} trial(s) with split='test' were passed to {where}. Select the training "
            "trials first, e.g. trials.select(split='train')."
        )
    if test is not None:
        key = ["subject", "stimulus_id"] if "subject" in test.events else ["stimulus_id"]
        shared = np.intersect1d(train.events["stimulus_id"].astype(str).unique(),
                                test.events["stimulus_id"].astype(str).unique())
        if len(shared):
            raise DataLeakageError(
                f"{len(shared)} stimulus id(s) (e.g. {list(shared[:3])}) are in both the {where} "
                f"and the test trials (checked on {key}). A test image must never be trained on."
            )
