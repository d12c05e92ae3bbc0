"""Ablation internals on hand-checked cases: per-trial scores with ties, the lesions, argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.analysis.ablation import _check_ablate_args, _lesion, _Subject, _trial_scores


def _sub(subsets=None):
    cand = np.array([[1.0, 0.0], [0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)]])
    return _Subject(X=np.zeros((3, 2)), cand=cand, true=np.array([0, 1, 2]), subsets=subsets)


def test_trial_scores_all_candidates_ties_fail():
    pred = np.array([[2.0, 0.0],        # exact: beats both
                     [0.9, 1.0],        # true is 1, but candidate 2 is closer: beaten by 1
                     [0.0, 0.0]])       # zero prediction: ties with everything
    out = _trial_scores(pred, _sub(), ("top1", "2way"))
    np.testing.assert_array_equal(out["top1"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(out["2way"], [1.0, 0.5, 0.0])
    sub = _sub()
    np.testing.assert_allclose(sub.chance("top1"), [1 / 3] * 3)
    np.testing.assert_allclose(sub.chance("2way"), [0.5] * 3)


def test_trial_scores_with_candidate_subsets():
    sub = _sub(subsets=np.array([[2], [0], [0]]))
    pred = np.array([[1.0, 0.0], [0.9, 1.0], [1.0, 0.9]])
    out = _trial_scores(pred, sub, ("top1", "2way"))
    np.testing.assert_array_equal(out["top1"], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(out["2way"], [1.0, 1.0, 1.0])
    out = _trial_scores(np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), sub, ("top1",))
    np.testing.assert_array_equal(out["top1"], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(sub.chance("top1"), [0.5] * 3)      # one distractor + the true one


def test_lesions():
    X = np.arange(12.0).reshape(4, 3)
    idx = np.array([0, 2])
    z = _lesion(X, idx, "zero", None, np.random.default_rng(0))
    np.testing.assert_array_equal(z, [[0, 1, 0], [0, 4, 0], [0, 7, 0], [0, 10, 0]])
    m = _lesion(X, idx, "mean", np.array([9.0, 8.0, 7.0]), np.random.default_rng(0))
    np.testing.assert_array_equal(m[:, [0, 2]], [[9, 7]] * 4)
    np.testing.assert_array_equal(m[:, 1], X[:, 1])
    perm = np.random.default_rng(0).permutation(4)
    p = _lesion(X, idx, "permute", None, np.random.default_rng(0))
    np.testing.assert_array_equal(p[:, idx], X[perm][:, idx])      # one permutation for the region
    np.testing.assert_array_equal(p[:, 1], X[:, 1])
    np.testing.assert_array_equal(_lesion(X, np.array([], int), "zero", None, None), X)
    assert X[0, 0] == 0.0 and X[1, 0] == 3.0                        # input untouched


def test_check_ablate_args():
    assert _check_ablate_args(["zero", "zero", "alone"], ["2way", "top1", "2way"], 1, 1, 1) == (
        ("zero", "alone"), ("2way", "top1"))
    for kw in ({"strategies": []}, {"metrics": []}):
        args = {"strategies": ["zero"], "metrics": ["top1"], **kw}
        with pytest.raises(ValueError, match="must not be empty"):
            _check_ablate_args(args["strategies"], args["metrics"], 1, 1, 1)
    for bad in (0, True, 1.0):
        for pos in range(3):
            nums = [1, 1, 1]
            nums[pos] = bad
            with pytest.raises(ValueError, match=("n_null", "n_null_retrain", "n_boot")[pos]):
                _check_ablate_args(["zero"], ["top1"], *nums)
    with pytest.raises(ValueError):
        _check_ablate_args(["lesion"], ["top1"], 1, 1, 1)
    with pytest.raises(ValueError):
        _check_ablate_args(["zero"], ["top5"], 1, 1, 1)


def test_deep_decoder_predictor_batches_and_uses_the_model():
    import torch
    from types import SimpleNamespace

    from neurodecode.analysis.ablation import _predictor

    class Tiny(torch.nn.Module):
        n_inputs, embed_dim = 6, 2

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 2, bias=False)
            self.calls = []

        def forward(self, x, subject):
            self.calls.append((tuple(x.shape), subject))
            return SimpleNamespace(embedding=self.lin(x.reshape(len(x), -1)))

    model = Tiny()
    X = np.random.default_rng(0).normal(size=(300, 6))
    out = _predictor(model, {"s": (2, 3)})("s", X)
    want = X @ model.lin.weight.detach().double().numpy().T
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float64 and out.shape == (300, 2)
    assert model.calls == [((256, 2, 3), "s"), ((44, 2, 3), "s")]   # batches of 256, trial shape kept
    assert not model.training


def test_region_noise_ceilings_by_hand():
    from types import SimpleNamespace

    import pandas as pd

    from neurodecode.analysis.ablation import _region_noise_ceilings

    def trials(info, reps=None):
        ev = pd.DataFrame({"n_repetitions": reps} if reps is not None else {"x": [0, 0]})
        return SimpleNamespace(info=info, events=ev)

    ncsnr = np.array([1.0, 0.0, 2.0, np.nan])
    test = SimpleNamespace(by_subject=lambda: {1: trials({"ncsnr": ncsnr}, [3, 3, 1])})
    regions = {"a": {1: np.array([0, 2])}, "b": {1: np.array([1, 3])}, "empty": {1: np.array([], int)}}
    out = _region_noise_ceilings(test, regions, pd.Series(["a", "b", "empty", "unknown"]))
    nc = 100 / (1 + 1 / (3 * ncsnr[[0, 2]] ** 2))                   # 3 repetitions averaged
    np.testing.assert_allclose(out[:2], [nc.mean(), 0.0])           # NaN voxels ignored
    assert np.isnan(out[2]) and np.isnan(out[3])
    single = SimpleNamespace(by_subject=lambda: {1: trials({"ncsnr": ncsnr})})
    assert _region_noise_ceilings(single, regions, pd.Series(["a"]))[0] == pytest.approx(
        np.mean(100 / (1 + 1 / ncsnr[[0, 2]] ** 2)))                # no n_repetitions column: 1 trial
    absent = _region_noise_ceilings(SimpleNamespace(by_subject=lambda: {1: trials({})}), regions,
                                    pd.Series(["a", "b"]))
    assert absent.dtype == np.float64 and np.isnan(absent).all()


@pytest.fixture(scope="module")
def small():
    import pandas as pd

    from neurodecode.datasets import BrainTrials
    from neurodecode.embeddings import StimulusEmbeddings
    from neurodecode.models import RidgeDecoder

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((52, 3))
    W = rng.standard_normal((3, 4))

    def trials(ids, split):
        X = rng.standard_normal((len(ids), 12))
        X[:, :4] += emb[ids] @ W                                    # stimulus information in region A
        ev = pd.DataFrame({"subject": 1, "session": 1, "stimulus_id": ids, "repetition": 0, "split": split})
        return BrainTrials(X, ev, {"modality": "fmri"})

    train, test = trials(np.arange(40), "train"), trials(np.arange(40, 52), "test")
    targets = StimulusEmbeddings(np.arange(52), emb)
    ridge = RidgeDecoder(alphas=(1.0,), cv=None).fit_trials(train, targets)

    class Atlas:
        name = "line"

        def assign(self, trials):
            return {"A": {1: np.arange(4)}, "B": {1: np.arange(4, 8)}}

        def random_regions(self, trials, sizes, n, rng):
            return [{s: rng.permutation(12)[:k] for s, k in sizes.items()} for _ in range(n)]

    return ridge, train, test, targets, Atlas()


def test_ablate_uses_n_candidates_and_a_given_fit_fn(small):
    from neurodecode.analysis.ablation import ablate

    ridge, train, test, targets, atlas = small
    kw = dict(metrics=("top1",), n_null=2, n_boot=10)
    res = ablate(ridge, None, test, targets, atlas, n_candidates=4, **kw)
    assert res.baseline["top1"]["chance"] == pytest.approx(1 / 4)
    assert {"n_boot": 10, "ci": 0.95, "n_candidates": 4}.items() <= res.settings.items()
    assert ablate(ridge, None, test, targets, atlas, **kw).baseline["top1"]["chance"] == pytest.approx(1 / 12)
    calls = []

    def fit_fn(subject, X, Y):
        calls.append(X.shape)
        return lambda Xt: np.zeros((len(Xt), Y.shape[1]))           # a decoder that knows nothing

    res = ablate(ridge, train, test, targets, atlas, strategies=("alone",), fit_fn=fit_fn, **kw)
    assert calls and all(shape == (40, 4) for shape in calls)
    f = res.to_frame()
    np.testing.assert_allclose(f["score"], 0.0)                    # zero predictions tie: all fail


def _bh_by_hand(p):
    """Benjamini–Hochberg q-values: q_(i) = min_{j >= i} p_(j) m / j."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p)
    q_sorted = np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1]
    q = np.empty(m)
    q[order] = q_sorted
    return q


@pytest.mark.parametrize("alpha", [0.05, 0.3, 0.7])
def test_ablate_fdr_significance_and_rank_use_the_given_alpha(small, alpha):
    """Per strategy x metric: p_fdr = BH q-values of the regions' p-values, significant = q <= alpha
    (the user's alpha, not the default 0.05), rank by effect, largest first."""
    from neurodecode.analysis.ablation import ablate

    ridge, train, test, targets, atlas = small
    res = ablate(ridge, train, test, targets, atlas, strategies=("zero", "mean"), metrics=("top1", "2way"),
                 n_null=3, n_boot=10, alpha=alpha)
    assert res.settings["alpha"] == alpha
    f = res.to_frame()
    assert len(f) == 2 * 2 * 2                                      # 2 regions x 2 strategies x 2 metrics
    for _, g in f.groupby(["strategy", "metric"]):
        assert set(g["region"]) == {"A", "B"}
        q = _bh_by_hand(g["p_value"])
        np.testing.assert_allclose(g["p_fdr"], q)
        assert (g["p_value"] >= 1 / 4).all()                        # (1 + #null >= obs) / (1 + 3)
        np.testing.assert_array_equal(g["significant"].to_numpy(bool), q <= alpha)
        want_rank = g["effect"].rank(ascending=False, method="first").astype(int)
        np.testing.assert_array_equal(g["rank"], want_rank)
    if alpha == 0.7:                                                # region A (the informative one) is
        assert f.loc[f["region"] == "A", "significant"].any()      # significant at a lenient alpha
    if alpha == 0.05:
        assert not f["significant"].any()                           # p >= 1/4 with 3 null draws
