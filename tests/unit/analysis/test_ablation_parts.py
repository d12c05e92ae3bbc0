"""The pieces of :func:`neurodecode.analysis.ablation.ablate`, each checked on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.analysis.ablation import _check_ablate_args, _finish_frame, _RegionScorer
from neurodecode.analysis.stats import fdr_bh


def test_arguments_are_deduplicated_and_checked():
    assert _check_ablate_args(["zero", "zero", "alone"], ["2way", "top1", "2way"], 5, 5, 5) == \
        (("zero", "alone"), ("2way", "top1"))
    with pytest.raises(ValueError, match="must not be empty"):
        _check_ablate_args([], ["top1"], 5, 5, 5)
    with pytest.raises(ValueError, match="strategy"):
        _check_ablate_args(["erase"], ["top1"], 5, 5, 5)
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="n_null must be an int >= 1"):
            _check_ablate_args(["zero"], ["top1"], bad, 5, 5)


class _Sub:
    """One subject's test items: 2 features, identity decoder, 2-way scores computable by hand."""

    def __init__(self):
        self.X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
        self.true = np.arange(4)
        self.mean = None

    def chance(self, metric):
        return np.full(4, 0.5)


def test_effect_is_the_loss_for_lesions_and_the_gain_over_chance_alone(monkeypatch):
    import neurodecode.analysis.ablation as ab

    monkeypatch.setattr(ab, "_trial_scores", lambda pred, sub, metrics: {"2way": pred[:, 0].copy()})
    scorer = _RegionScorer({1: _Sub()}, lambda s, X: X, None, None, ("2way",))
    np.testing.assert_array_equal(scorer.base["2way"], [1.0, 0.0, 1.0, -1.0])
    sc = np.array([0.5, 0.5, 0.25, 0.0])
    np.testing.assert_array_equal(scorer.effect("zero", "2way", sc), [0.5, -0.5, 0.75, -1.0])
    np.testing.assert_array_equal(scorer.effect("alone", "2way", sc), [0.0, 0.0, -0.25, -0.5])
    # zeroing feature 0 through the decoder (no linear shortcut) gives the per-item scores of X[:, 0] = 0
    zeroed = scorer.scores("zero", {1: np.array([0])}, np.random.default_rng(0))["2way"]
    np.testing.assert_array_equal(zeroed, [0.0, 0.0, 0.0, 0.0])
    # nothing left to refit on → chance level, without calling the refitter
    assert np.all(scorer.scores("without", {1: np.array([0, 1])}, np.random.default_rng(0))["2way"] == 0.5)


def test_frame_gets_fdr_rank_and_columns_per_strategy_and_metric():
    rows = [{"atlas": "a", "region": r, "strategy": st, "metric": "top1", "n_features": 1, "baseline": 0.5,
             "chance": 0.25, "score": 0.1, "score_ci_low": 0.0, "score_ci_high": 0.2, "effect": e, "effect_ci_low": 0.0,
             "effect_ci_high": 1.0, "null_mean": 0.0, "null_low": 0.0, "null_high": 0.0, "n_null": 9,
             "p_value": p}
            for st in ("zero", "alone") for r, e, p in (("A", 0.4, 0.01), ("B", 0.1, 0.2), ("C", 0.3, 0.04))]

    class _T:
        def by_subject(self):
            return {}

    frame = _finish_frame(pd.DataFrame(rows), 0.05, _T(), {"A": {}, "B": {}, "C": {}})
    for _, g in frame.groupby("strategy"):
        assert list(g["rank"]) == [1, 3, 2]
        reject, q = fdr_bh(g["p_value"].to_numpy(), alpha=0.05)
        np.testing.assert_allclose(g["p_fdr"], q)
        assert list(g["significant"]) == list(reject) == [True, False, False]
    assert frame["noise_ceiling"].isna().all()
    assert list(frame.columns)[-4:] == ["p_fdr", "significant", "rank", "noise_ceiling"]
