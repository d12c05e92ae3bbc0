"""RidgeDecoder against closed-form ridge and brute-force leave-one-out / K-fold on small problems."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.models import RidgeDecoder


def _closed(X, Y, alpha, intercept=True):
    xm, ym = (X.mean(0), Y.mean(0)) if intercept else (np.zeros(X.shape[1]), np.zeros(Y.shape[1]))
    Xc, Yc = X - xm, Y - ym
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)   # (p, k)
    return W.T, ym - W.T @ xm


def _loo_mse(X, Y, alpha):
    err = []
    for i in range(len(X)):
        m = np.arange(len(X)) != i
        W, b = _closed(X[m], Y[m], alpha)
        err.append((X[i] @ W.T + b - Y[i]) ** 2)
    return np.mean(err, axis=0)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(14, 5))
    Y = X @ rng.normal(size=(5, 2)) + 0.5 * rng.normal(size=(14, 2)) + 3.0
    return X, Y


@pytest.mark.parametrize("shape", ["tall", "wide"])
@pytest.mark.parametrize("intercept", [True, False])
def test_single_alpha_is_closed_form(data, shape, intercept):
    X, Y = data
    if shape == "wide":
        X = np.hstack([X, np.random.default_rng(1).normal(size=(14, 20))])
    m = RidgeDecoder(alphas=(2.5,), fit_intercept=intercept).fit(X, Y)
    W, b = _closed(X, Y, 2.5, intercept)
    np.testing.assert_allclose(m.coef_, W, atol=1e-8)
    np.testing.assert_allclose(m.intercept_, b, atol=1e-8)
    np.testing.assert_allclose(m.predict(X), X @ W.T + b, atol=1e-8)
    assert m.alpha_ == 2.5 and m.coef_.shape == (2, X.shape[1])


@pytest.mark.parametrize("shape", ["tall", "wide"])
def test_leave_one_out_choice_matches_brute_force(data, shape):
    X, Y = data
    if shape == "wide":
        X = np.hstack([X, np.random.default_rng(2).normal(size=(14, 20))])
    alphas = (0.1, 3.0, 100.0, 1e4)
    m = RidgeDecoder(alphas=alphas, cv=None, precision="float64").fit(X, Y)
    loo = np.array([_loo_mse(X, Y, a) for a in alphas])            # (n_alphas, k)
    np.testing.assert_allclose(m.cv_scores_, -loo.mean(1), rtol=1e-6)
    assert m.alpha_ == alphas[int(np.argmin(loo.mean(1)))]
    assert m.best_score_ == pytest.approx(-loo.mean(1).min(), rel=1e-6)
    per = RidgeDecoder(alphas=alphas, cv=None, alpha_per_target=True, precision="float64").fit(X, Y)
    np.testing.assert_array_equal(per.alpha_, np.array(alphas)[np.argmin(loo, axis=0)])
    W, b = _closed(X, Y[:, :1], per.alpha_[0])
    np.testing.assert_allclose(per.coef_[0], W[0], atol=1e-8)


def test_one_d_target_and_kfold(data):
    X, Y = data
    m = RidgeDecoder(alphas=(1.0, 10.0), cv=2).fit(X, Y[:, 0])
    assert m.coef_.shape == (5,) and isinstance(m.intercept_, float) and isinstance(m.alpha_, float)
    # 2-fold, unshuffled: folds are the first and second halves
    def fold_mse(a):
        out = []
        for tr, va in ((np.arange(7, 14), np.arange(7)), (np.arange(7), np.arange(7, 14))):
            W, b = _closed(X[tr], Y[tr, :1], a)
            out.append(np.mean((X[va] @ W.T + b - Y[va, :1]) ** 2))
        return np.mean(out)
    want = 1.0 if fold_mse(1.0) <= fold_mse(10.0) else 10.0
    assert m.alpha_ == want


@pytest.mark.parametrize("kw, match", [({"alphas": ()}, "alphas"), ({"alphas": (0.0,)}, "alphas"),
                                       ({"alphas": (-1.0,)}, "alphas"), ({"alphas": (np.inf,)}, "alphas"),
                                       ({"cv": 1}, "cv"), ({"cv": True}, "cv"), ({"cv": 2.0}, "cv"),
                                       ({"precision": "half"}, "precision")])
def test_bad_parameters(data, kw, match):
    with pytest.raises(ValueError, match=match):
        RidgeDecoder(**kw).fit(*data)


def test_too_few_samples(data):
    X, Y = data
    with pytest.raises(ValueError, match="at least 2 samples"):
        RidgeDecoder(alphas=(1.0,)).fit(X[:1], Y[:1])
    with pytest.raises(ValueError, match="cv=5 folds need at least 5"):
        RidgeDecoder(alphas=(1.0, 2.0), cv=5).fit(X[:4], Y[:4])
    RidgeDecoder(alphas=(1.0, 2.0), cv=4).fit(X[:4], Y[:4])       # exactly cv samples is enough
