"""RidgeDecoder: equality with scikit-learn, CV on training data only, leakage, I/O, trials."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.datasets import BrainTrials, DataLeakageError
from neurodecode.embeddings import StimulusEmbeddings
from neurodecode.models import RidgeDecoder

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import Ridge, RidgeCV  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

ALPHAS = np.logspace(-2, 5, 15)


def _data(n, p, k=4, seed=0, noise=3.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) + 2.0
    Y = X @ rng.standard_normal((p, k)) + noise * rng.standard_normal((n, k)) + 1.0
    return X, Y


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@parametrize_with_checks([RidgeDecoder(), RidgeDecoder(cv=None, alpha_per_target=True),
                          RidgeDecoder(cv=3, random_state=0, fit_intercept=False)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("shape", [(40, 120), (120, 15)], ids=["p>n kernel", "n>p primal"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fixed_alpha_equals_sklearn_ridge(shape, fit_intercept):
    X, Y = _data(*shape)
    for alpha in (1e-6, 10.0):
        ours = RidgeDecoder(alphas=[alpha], fit_intercept=fit_intercept).fit(X, Y)
        ref = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="svd").fit(X, Y)
        assert ours.alpha_ == alpha
        assert _rel(ours.predict(X), ref.predict(X)) < 1e-6
        assert _rel(ours.coef_, ref.coef_) < 1e-6


@pytest.mark.parametrize("shape", [(40, 120), (120, 15)], ids=["p>n kernel", "n>p primal"])
def test_alpha_matches_ridgecv(shape):
    X, Y = _data(*shape)
    # leave-one-out / GCV, one alpha and one per target
    ours = RidgeDecoder(alphas=ALPHAS, cv=None).fit(X, Y)
    ref = RidgeCV(alphas=ALPHAS).fit(X, Y)
    assert ours.alpha_ == ref.alpha_
    assert ours.best_score_ == pytest.approx(ref.best_score_, rel=1e-8)
    assert _rel(ours.predict(X), ref.predict(X)) < 1e-8
    ours = RidgeDecoder(alphas=ALPHAS, cv=None, alpha_per_target=True).fit(X, Y)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    np.testing.assert_array_equal(ours.alpha_, ref.alpha_)
    # K-fold: contiguous folds like KFold(5), scored by R²
    ours = RidgeDecoder(alphas=ALPHAS, cv=5).fit(X, Y)
    ref = RidgeCV(alphas=ALPHAS, cv=5).fit(X, Y)
    assert ours.alpha_ == ref.alpha_
    assert ours.best_score_ == pytest.approx(ref.best_score_, rel=1e-8)


def test_shuffled_folds_match_sklearn_with_same_folds():
    X, Y = _data(60, 30)
    est = RidgeDecoder(alphas=ALPHAS, cv=4, random_state=3).fit(X, Y)
    order = np.random.default_rng(3).permutation(len(X))
    folds = [(np.setdiff1d(np.arange(len(X)), va), np.sort(va)) for va in np.array_split(order, 4)]
    ref = RidgeCV(alphas=ALPHAS, cv=folds).fit(X, Y)
    assert est.alpha_ == ref.alpha_
    assert RidgeDecoder(alphas=ALPHAS, cv=4, random_state=3).fit(X, Y).alpha_ == est.alpha_


def test_cv_uses_training_data_only():
    X, Y = _data(80, 200, noise=10.0)
    Xtr, Ytr, Xte = X[:60], Y[:60], X[60:]
    est = RidgeDecoder(alphas=ALPHAS, cv=5).fit(Xtr, Ytr)
    # the choice is RidgeCV's on the training rows alone ...
    assert est.alpha_ == RidgeCV(alphas=ALPHAS, cv=KFold(5)).fit(Xtr, Ytr).alpha_
    # ... and never changes with what is predicted afterwards
    alpha, coef = est.alpha_, est.coef_.copy()
    est.predict(Xte * 100)
    assert est.alpha_ == alpha and np.array_equal(est.coef_, coef)
    # appending rows to the *test* set changes nothing; changing train data does
    other = RidgeDecoder(alphas=ALPHAS, cv=5).fit(Xtr, Ytr)
    np.testing.assert_array_equal(other.predict(Xte), est.predict(Xte))


def test_one_d_target_and_errors():
    X, Y = _data(50, 10)
    est = RidgeDecoder(cv=None).fit(X, Y[:, 0])
    assert est.coef_.shape == (10,) and isinstance(est.intercept_, float)
    assert est.predict(X).shape == (50,)
    with pytest.raises(ValueError, match="alphas"):
        RidgeDecoder(alphas=[0.0]).fit(X, Y)
    with pytest.raises(ValueError, match="cv must be None"):
        RidgeDecoder(cv=1).fit(X, Y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :5])


def _trials(blocks, split="train"):
    parts = []
    for subject, (X, ids) in blocks.items():
        ev = pd.DataFrame(dict(subject=subject, session=1, stimulus_id=ids, repetition=0, split=split))
        parts.append(BrainTrials(X, ev, {"modality": "fmri"}))
    return BrainTrials.concatenate(parts)


@pytest.fixture
def two_subjects():
    rng = np.random.default_rng(1)
    n_stim, dim = 60, 6
    emb = rng.standard_normal((n_stim, dim))
    targets = StimulusEmbeddings(np.arange(n_stim), emb)
    blocks = {}
    for subject, p in ((1, 40), (2, 55)):
        ids = rng.integers(0, n_stim, 80)
        X = emb[ids] @ rng.standard_normal((dim, p)) + 0.3 * rng.standard_normal((80, p))
        blocks[subject] = (X, ids)
    return blocks, targets


def test_fit_trials_per_subject_ragged_order(two_subjects, tmp_path):
    blocks, targets = two_subjects
    trials = _trials(blocks)
    assert trials.is_ragged
    # interleave the subjects so trial order differs from subject order
    order = np.random.default_rng(0).permutation(len(trials))
    shuffled = trials[order]
    est = RidgeDecoder(cv=None).fit_trials(shuffled, targets)
    assert set(est.subject_models_) == {1, 2}
    pred = est.predict_trials(shuffled)
    for subject, (X, ids) in blocks.items():
        ref = RidgeDecoder(cv=None).fit(X, targets.lookup(ids))
        rows = np.flatnonzero(shuffled.events["subject"].to_numpy() == subject)
        expected = ref.predict(X)[order[rows] - (0 if subject == 1 else len(blocks[1][0]))]
        np.testing.assert_allclose(pred[rows], expected, rtol=1e-10)
    with pytest.raises(ValueError, match="several subjects"):
        est.predict(blocks[1][0])
    # save / load round trip: identical predictions
    est.save_pretrained(tmp_path / "ridge")
    back = RidgeDecoder.from_pretrained(tmp_path / "ridge")
    np.testing.assert_array_equal(back.predict_trials(shuffled), pred)
    unknown = _trials({3: blocks[1]})
    with pytest.raises(ValueError, match=r"subject 3.*\[1, 2\]"):
        est.predict_trials(unknown)


def test_leakage_raises(two_subjects):
    blocks, targets = two_subjects
    trials = _trials(blocks)
    events = trials.events.copy()
    events.loc[:5, "split"] = "test"
    leaky = BrainTrials(trials.data, events, trials.info)
    with pytest.raises(DataLeakageError, match="ridge fit"):
        RidgeDecoder().fit_trials(leaky, targets)


def test_save_load_arrays(tmp_path):
    X, Y = _data(50, 70)
    for y in (Y, Y[:, 0]):
        est = RidgeDecoder(alphas=ALPHAS, cv=None, alpha_per_target=y.ndim == 2).fit(X, y)
        est.save_pretrained(tmp_path / "m")
        back = RidgeDecoder.from_pretrained(tmp_path / "m")
        np.testing.assert_array_equal(back.predict(X), est.predict(X))
        assert back.get_params()["cv"] is None
        np.testing.assert_array_equal(np.atleast_1d(back.alpha_), np.atleast_1d(est.alpha_))
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "model.safetensors").exists()
    with pytest.raises(RuntimeError, match="not fitted"):
        RidgeDecoder().save_pretrained(tmp_path / "n")
    with pytest.raises(FileNotFoundError):
        RidgeDecoder.from_pretrained(tmp_path / "nothing")


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_mixed_precision_matches_float64(fit_intercept):
    # kernel-mode leave-one-out: float32 eigendecomposition / alpha scan, float64 weights
    X, Y = _data(600, 1500, k=16, noise=30.0)
    Xte = _data(50, 1500, seed=1)[0]
    grid = np.logspace(0, 5, 11)
    for per_target in (False, True):
        ref = RidgeDecoder(alphas=grid, cv=None, alpha_per_target=per_target, fit_intercept=fit_intercept,
                           precision="float64").fit(X, Y)
        mix = RidgeDecoder(alphas=grid, cv=None, alpha_per_target=per_target, fit_intercept=fit_intercept,
                           precision="mixed").fit(X, Y)
        np.testing.assert_array_equal(mix.alpha_, ref.alpha_)
        assert _rel(mix.predict(Xte), ref.predict(Xte)) < 1e-4
        # float32 scan: ~1e-5 relative error; up to ~1e-8·λmax/alpha on the ill-conditioned
        # uncentred kernel (fit_intercept=False, data mean 2)
        ill_conditioned = not fit_intercept
        np.testing.assert_allclose(mix.cv_scores_, ref.cv_scores_, rtol=1e-2 if ill_conditioned else 1e-4)
    sk = RidgeCV(alphas=grid, fit_intercept=fit_intercept).fit(X, Y)
    mix = RidgeDecoder(alphas=grid, cv=None, fit_intercept=fit_intercept, precision="mixed").fit(X, Y)
    assert mix.alpha_ == sk.alpha_
    assert _rel(mix.predict(Xte), sk.predict(Xte)) < 1e-4


def test_mixed_precision_near_ties_and_tiny_alpha():
    X, Y = _data(300, 700, k=8, noise=30.0)
    # two nearly equal alphas: both re-scored in float64, the choice is float64's
    ref = RidgeDecoder(alphas=[1.0, 300.0, 300.0 * (1 + 1e-9)], cv=None, precision="float64").fit(X, Y)
    mix = RidgeDecoder(alphas=[1.0, 300.0, 300.0 * (1 + 1e-9)], cv=None, precision="mixed").fit(X, Y)
    assert mix.alpha_ == ref.alpha_
    assert mix.best_score_ == pytest.approx(ref.best_score_, rel=1e-10)
    # one tiny alpha: Cholesky would be ill-conditioned, the float64 eigen fallback is used
    mix = RidgeDecoder(alphas=[1e-9], cv=None, precision="mixed").fit(X, Y)
    sk = Ridge(alpha=1e-9, solver="svd").fit(X, Y)
    assert _rel(mix.predict(X), sk.predict(X)) < 1e-6
    with pytest.raises(ValueError, match="precision"):
        RidgeDecoder(precision="half").fit(X, Y)
