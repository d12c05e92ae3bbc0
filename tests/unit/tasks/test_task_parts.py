"""Pieces split out of the long task functions, each checked on its own."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.tasks.caption_metrics import _caption_intervals, _caption_protocol
from neurodecode.tasks.retrieval import _retrieval_groups


def test_retrieval_groups_labels_sizes_and_small_group_warning():
    labels, keys, sizes = _retrieval_groups(None, 5, 3)
    assert keys == [None] and sizes == [5] and np.all(labels == 0)
    labels, keys, sizes = _retrieval_groups(np.array([2, 1, 2, 1, 2]), 5, 2)
    assert keys == [1, 2] and sizes == [2, 3]
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        _retrieval_groups(np.array([1, 2]), 5, 3)
    with pytest.raises(ValueError, match="at least 2 items"):
        _retrieval_groups(np.array([1, 2, 2, 2, 2]), 5, 3)


def test_retrieval_groups_warn_when_a_group_is_smaller_than_n_candidates():
    with pytest.warns(UserWarning, match="groups 1 \\(2\\) have fewer items than n_candidates=3"):
        _retrieval_groups(np.array([2, 1, 2, 1, 2]), 5, 3)


def test_caption_intervals_mean_metrics_and_no_bootstrap():
    per = np.array([0.0, 1.0, 0.5, 0.5])
    names, low, high, reps = _caption_intervals({"rouge_l": 0.5}, {"rouge_l": per}, {}, None, 4, 0, 0.95,
                                                np.random.default_rng(0))
    assert names == ["rouge_l"] and np.isnan(low).all() and np.isnan(high).all() and reps is None
    names, low, high, reps = _caption_intervals({"rouge_l": 0.5, "meteor": 0.6},
                                                {"rouge_l": per, "meteor": per}, {"meteor": 0.1}, None, 4, 200,
                                                0.9, np.random.default_rng(0))
    assert names == ["meteor", "rouge_l"] and reps.shape == (200, 2)
    # each replicate is the mean over the resampled images, METEOR's shifted by corpus - mean
    np.testing.assert_allclose(reps[:, 0] - reps[:, 1], 0.1)
    assert 0.0 <= low[1] <= 0.5 <= high[1] <= 1.0


def test_caption_protocol_records_the_settings():
    p = _caption_protocol("python", "A photo depicts", encoder=None, n_boot=0, ci=0.9)
    assert p["tokenizer"] == "python-ptb" and p["clip_prompt"] is None and p["n_boot"] == 0
    assert "No bootstrap" in p["description"]
    assert _caption_protocol("none", "x", encoder=object(), n_boot=5, ci=0.9)["clip_prompt"] == "x"


def test_captioner_lr_factor_warms_up_then_decays_linearly():
    from neurodecode.tasks.captioning import _lr_factor

    f = _lr_factor("linear", warm=2, total=6)
    assert [f(s) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    g = _lr_factor("constant", warm=0, total=6)
    assert [g(s) for s in range(3)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("kw, msg", [({"epochs": 0}, "epochs must be a positive integer"),
                                     ({"batch_size": True}, "batch_size must be a positive integer"),
                                     ({"lr": 0.0}, "lr must be positive"),
                                     ({"schedule": "cosine"}, "schedule"),
                                     ({"noise_std": -1.0}, "noise_std must be >= 0")])
def test_captioner_fit_arguments_are_checked(kw, msg):
    from neurodecode.tasks.captioning import _check_fit_args

    args = {"epochs": 1, "batch_size": 2, "lr": 1e-3, "schedule": "linear", "noise_std": 0.0, **kw}
    with pytest.raises(ValueError, match=msg):
        _check_fit_args(**args)
    _check_fit_args(1, 2, 1e-3, "constant", 0.0)
