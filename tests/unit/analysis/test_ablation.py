"""Region ablation: a planted region is found first, with p < .05, and random regions are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.analysis.ablation import ablate
from neurodecode.datasets import BrainTrials
from neurodecode.embeddings import StimulusEmbeddings
from neurodecode.models import RidgeDecoder

N_TRAIN, N_TEST, DIM, P = 240, 60, 6, 1000  # features 90..999: unlabelled noise
REGIONS = {"A": np.arange(0, 30), "B": np.arange(30, 60), "C": np.arange(60, 90)}


class LineAtlas:
    """A 1-D 'brain': regions are index ranges, null regions random contiguous runs of the same size."""

    name, kind = "line", "volume"

    def assign(self, trials):
        return {k: {s: v.copy() for s in trials.subjects} for k, v in REGIONS.items()}

    def random_regions(self, trials, sizes, n, rng):
        out = []
        for _ in range(n):
            out.append({s: (rng.integers(0, P - k + 1) + np.arange(k)) if k else np.zeros(0, int)
                        for s, k in sizes.items()})
        return out


def _planted(seed: int, noise_outside_a: bool):
    """Ridge fitted on a 1-D brain with stimulus information only in region A; (ridge, train, test, targets).

    Every feature carries unit noise, or (``noise_outside_a=False``) every feature outside A is exactly 0.
    """
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((N_TRAIN + N_TEST, DIM))
    W = rng.standard_normal((DIM, 30))

    def trials(ids, split):
        X = np.zeros((len(ids), P))
        noisy = slice(None) if noise_outside_a else REGIONS["A"]
        X[:, noisy] = rng.standard_normal((len(ids), X[:, noisy].shape[1]))
        X[:, REGIONS["A"]] += emb[ids] @ W * 0.5  # stimulus information only in region A
        ev = pd.DataFrame({"subject": 1, "session": 1, "stimulus_id": ids, "repetition": 0, "split": split})
        return BrainTrials(X.astype(np.float32), ev, {"modality": "fmri"})

    train = trials(np.repeat(np.arange(N_TRAIN), 2), "train")
    test = trials(np.arange(N_TRAIN, N_TRAIN + N_TEST), "test")
    targets = StimulusEmbeddings(np.arange(N_TRAIN + N_TEST), emb.astype(np.float32))
    ridge = RidgeDecoder(alphas=(1.0, 10.0, 100.0), cv=None).fit_trials(train, targets)
    return ridge, train, test, targets


@pytest.fixture(scope="module")
def data():
    return _planted(0, noise_outside_a=True)


def test_lesions_name_the_planted_region_first(data):
    ridge, train, test, targets = data
    res = ablate(ridge, train, test, targets, LineAtlas(), strategies=("zero", "mean", "permute"),
                 n_null=99, n_boot=200, random_state=0)
    f = res.to_frame()
    assert set(f["strategy"]) == {"zero", "mean", "permute"} and set(f["metric"]) == {"top1", "2way"}
    assert len(f) == 3 * 3 * 2
    for (strategy, metric), g in f.groupby(["strategy", "metric"]):
        g = g.set_index("region")
        assert res.top(strategy, metric) == "A"
        assert g.loc["A", "rank"] == 1
        assert g.loc["A", "p_value"] < 0.05
        if metric == "2way":  # top-1 floors at 0 once half of A is gone, so some null runs tie with A
            assert g.loc["A", "significant"] and g.loc["A", "p_value"] <= 0.03
        assert g.loc["A", "effect_ci_low"] > 0          # the drop is reliable
        assert g.loc[["B", "C"], "p_value"].min() > 0.05  # noise regions are not
        assert (g["p_fdr"] >= g["p_value"] - 1e-12).all()
        assert g.loc["A", "score_ci_low"] <= g.loc["A", "score"] <= g.loc["A", "score_ci_high"]
    # the intact decoder decodes; zeroing A brings it to chance
    assert res.baseline["2way"]["value"] > 0.8
    zero_a = f[(f.strategy == "zero") & (f.metric == "2way") & (f.region == "A")].iloc[0]
    assert abs(zero_a["score"] - 0.5) < 0.15
    assert zero_a["effect"] == pytest.approx(res.baseline["2way"]["value"] - zero_a["score"])


def test_retrain_alone_and_without(data):
    ridge, train, test, targets = data
    res = ablate(ridge, train, test, targets, LineAtlas(), strategies=("alone", "without"), metrics=("2way",),
                 n_null_retrain=19, n_boot=100)
    f = res.to_frame().set_index(["strategy", "region"])
    assert f.loc[("alone", "A"), "rank"] == 1 and f.loc[("alone", "A"), "p_value"] == pytest.approx(1 / 20)  # the smallest p
    assert f.loc[("alone", "A"), "effect"] > 0.3                   # A alone decodes well above chance
    assert abs(f.loc[("alone", "B"), "effect"]) < 0.15            # B alone is at chance
    assert f.loc[("alone", "A"), "baseline"] == pytest.approx(0.5)
    assert f.loc[("without", "A"), "rank"] == 1                     # refitting without A loses everything
    assert f.loc[("without", "A"), "score"] < 0.65


def test_deterministic_and_saved(data, tmp_path):
    ridge, train, test, targets = data
    kw = {"strategies": ("permute",), "n_null": 20, "n_boot": 50, "random_state": 3, "metrics": ("top1",)}
    a = ablate(ridge, train, test, targets, LineAtlas(), **kw).to_frame()
    b = ablate(ridge, train, test, targets, LineAtlas(), **kw)
    pd.testing.assert_frame_equal(a, b.to_frame())
    folder = b.save(tmp_path / "abl")
    back = pd.read_csv(folder / "ablation.csv")
    assert list(back["region"]) == list(a["region"])
    import json

    js = json.loads((folder / "ablation.json").read_text())
    assert js["settings"]["n_null"] == 20 and len(js["rows"]) == 3


def test_ablation_errors(data):
    ridge, train, test, targets = data
    with pytest.raises(ValueError, match="strategy"):
        ablate(ridge, train, test, targets, LineAtlas(), strategies=("erase",))
    with pytest.raises(ValueError, match="metric"):
        ablate(ridge, train, test, targets, LineAtlas(), metrics=("top5",))
    with pytest.raises(ValueError, match="train"):
        ablate(ridge, None, test, targets, LineAtlas(), strategies=("mean",))
    with pytest.raises(ValueError, match="n_null"):
        ablate(ridge, train, test, targets, LineAtlas(), n_null=0)
    with pytest.raises(ValueError, match="refit"):
        ablate(lambda s, X: X[:, :DIM], train, test, targets, LineAtlas(), strategies=("alone",))
    # a callable predictor works for lesions
    res = ablate(lambda s, X: ridge.subject_models_[s].predict(X), None, test, targets, LineAtlas(),
                 strategies=("zero",), n_null=10, n_boot=20)
    assert res.top() == "A"


def test_ties_with_the_null_count_against_the_region():
    """A region with exactly no effect, against null regions that mostly also have exactly none: p ≈ 1.

    Every feature outside region A is exactly 0, so zeroing region B (or a random run outside A) changes
    nothing: effect 0.0, tied with most null effects. Counting those ties in the region's favour would give
    p ≈ (1 + #null runs touching A) / 100, a false positive.
    """
    ridge, _, test, targets = _planted(1, noise_outside_a=False)
    res = ablate(ridge, None, test, targets, LineAtlas(), strategies=("zero",), metrics=("2way",), n_null=99,
                 n_boot=50, random_state=0)
    g = res.to_frame().set_index("region")
    assert g.loc["B", "effect"] == 0.0 and g.loc["C", "effect"] == 0.0
    assert (res.nulls[("B", "zero", "2way")] == 0.0).mean() > 0.5  # most null runs tie with B
    assert g.loc["B", "p_value"] > 0.5 and g.loc["C", "p_value"] > 0.5
    assert g.loc["A", "p_value"] < 0.05
