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


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("intercept", [True, False])
def test_kfold_scores_equal_brute_force_r2(wide, intercept):
    rng = np.random.default_rng(3)
    X = 0.05 * rng.normal(size=(12, 30 if wide else 4))      # small eigenvalues (< 1) on purpose
    Y = X @ rng.normal(size=(X.shape[1], 2)) + 0.02 * rng.normal(size=(12, 2)) + 1.0
    alphas = (1e-3, 0.05, 3.0)
    m = RidgeDecoder(alphas=alphas, cv=3, fit_intercept=intercept).fit(X, Y)
    folds = np.array_split(np.arange(12), 3)
    want = []
    for a in alphas:
        r2 = []
        for va in folds:
            tr = np.setdiff1d(np.arange(12), va)
            W, b = _closed(X[tr], Y[tr], a, intercept)
            pred = X[va] @ W.T + b
            r2.append(1 - ((Y[va] - pred) ** 2).sum(0) / ((Y[va] - Y[va].mean(0)) ** 2).sum(0))
        want.append(np.mean(r2))
    np.testing.assert_allclose(m.cv_scores_, want, rtol=1e-6, atol=1e-9)


def test_precision_rules_and_single_subject_predict(data):
    from neurodecode.models import ridge as ridge_mod

    big = ridge_mod._MIXED_MIN_SAMPLES
    assert not RidgeDecoder(precision="float64")._use_mixed(big, big + 1)    # float64 is never mixed
    assert not RidgeDecoder(precision="mixed")._use_mixed(10, 5)             # covariance mode: never
    assert RidgeDecoder(precision="mixed")._use_mixed(10, 50)
    assert RidgeDecoder(precision="auto")._use_mixed(big, big + 1)
    assert not RidgeDecoder(precision="auto")._use_mixed(big - 1, big + 1)
    X, Y = data
    one = RidgeDecoder(alphas=(1.0,)).fit(X, Y)
    wrapper = RidgeDecoder(alphas=(1.0,))
    wrapper.subject_models_ = {"s1": one}
    np.testing.assert_array_equal(wrapper.predict(X), one.predict(X))
    wrapper.subject_models_ = {"s1": one, "s2": one}
    with pytest.raises(ValueError, match="several subjects"):
        wrapper.predict(X)


def test_mixed_precision_loo_matches_float64():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 60))
    Y = X @ rng.normal(size=(60, 3)) * 0.1 + rng.normal(size=(20, 3))
    alphas = (1e-2, 1.0, 1e2, 1e4)
    mixed = RidgeDecoder(alphas=alphas, cv=None, precision="mixed").fit(X, Y)
    exact = RidgeDecoder(alphas=alphas, cv=None, precision="float64").fit(X, Y)
    np.testing.assert_allclose(mixed.cv_scores_, exact.cv_scores_, rtol=1e-3)
    assert mixed.alpha_ == exact.alpha_
    np.testing.assert_allclose(mixed.coef_, exact.coef_, rtol=1e-6, atol=1e-9)


def test_tiny_alpha_kfold_refit_is_least_squares():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(20, 3)) * 10
    Y = X @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(20, 1)) + 4.0
    m = RidgeDecoder(alphas=(1e-12, 1e-11), cv=2).fit(X, Y)       # trace / alpha > 1e10: eigh branch
    W, b = _closed(X, Y, m.alpha_)
    np.testing.assert_allclose(m.coef_, W, rtol=1e-8)
    np.testing.assert_allclose(m.intercept_, b, rtol=1e-8)


def test_refit_forgets_the_previous_fit(data):
    X, Y = data
    m = RidgeDecoder(alphas=(1.0,)).fit(X, Y)
    m.subject_models_ = {"s": m}
    m.alphas = (-1.0,)
    with pytest.raises(ValueError, match="alphas"):
        m.fit(X, Y)
    for name in ("coef_", "intercept_", "alpha_", "subject_models_", "n_features_in_"):
        assert not hasattr(m, name), name


def test_without_scikit_learn(monkeypatch, data):
    from neurodecode.models import ridge as ridge_mod

    monkeypatch.setattr(ridge_mod, "_HAS_SKLEARN", False)
    X, Y = data
    m = RidgeDecoder(alphas=(2.0,)).fit(X.tolist(), Y.tolist())     # plain lists are converted
    W, b = _closed(X, Y, 2.0)
    np.testing.assert_allclose(m.coef_, W, atol=1e-8)
    np.testing.assert_allclose(m.predict(X.tolist()), X @ W.T + b, atol=1e-8)
    assert m.n_features_in_ == 5
    bad = Y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="y contains NaN"):
        RidgeDecoder(alphas=(2.0,)).fit(X, bad)
    with pytest.raises(ValueError, match="X contains NaN"):
        RidgeDecoder(alphas=(2.0,)).fit(np.where(X > 1, np.nan, X), Y)
    with pytest.raises(ValueError, match="samples but y has"):
        RidgeDecoder(alphas=(2.0,)).fit(X, Y[:-1])
    with pytest.raises(ValueError, match="requires y"):
        RidgeDecoder(alphas=(2.0,)).fit(X, None)
    with pytest.raises(ValueError, match="expecting 5 features"):
        m.predict(X[:, :4])
    with pytest.raises(ValueError, match="2-D"):
        m.predict(X[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        RidgeDecoder().predict(X)


def test_kfold_refit_with_as_many_samples_as_features():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(6, 6))                                   # n == p: kernel form
    Y = rng.normal(size=(6, 2))
    m = RidgeDecoder(alphas=(0.5, 5.0), cv=2).fit(X, Y)
    W, b = _closed(X, Y, m.alpha_)
    np.testing.assert_allclose(m.coef_, W, atol=1e-8)
    np.testing.assert_allclose(m.intercept_, b, atol=1e-8)


def _loo_mse_kernel(X, Y, alpha, intercept):
    """Brute-force leave-one-out MSE in the kernel form (an n × n float64 solve per left-out row)."""
    err = []
    for i in range(len(X)):
        m = np.arange(len(X)) != i
        xm, ym = (X[m].mean(0), Y[m].mean(0)) if intercept else (0.0, 0.0)
        Xc, Yc = X[m] - xm, Y[m] - ym
        dual = np.linalg.solve(Xc @ Xc.T + alpha * np.eye(len(Xc)), Yc)
        err.append(((X[i] - xm) @ (Xc.T @ dual) + ym - Y[i]) ** 2)
    return np.mean(err, axis=0)


@pytest.mark.parametrize("intercept", [True, False])
def test_mixed_precision_rescores_close_tiny_alphas_exactly(intercept):
    """Mixed-precision LOO on a wide, nearly noiseless problem: the tiny alphas are too close for float32, so
    they are re-scored in float64 (Cholesky, or the eigendecomposition when trace/alpha >= 1e10); the choice,
    its score and the weights equal brute-force leave-one-out and the float64 decoder."""
    rng = np.random.default_rng(8)
    X = 0.1 * rng.normal(size=(12, 30)) + (0.5 if not intercept else 0.0)
    Y = X @ rng.normal(size=(30, 2)) + 1e-3 * rng.normal(size=(12, 2)) + (0.0 if not intercept else 2.0)
    alphas = (1e-12, 1e-4, 10.0)                   # trace(K) ~ 4: 1e-12 takes the eigen fallback
    mixed = RidgeDecoder(alphas=alphas, cv=None, fit_intercept=intercept, precision="mixed").fit(X, Y)
    exact = RidgeDecoder(alphas=alphas, cv=None, fit_intercept=intercept, precision="float64").fit(X, Y)
    loo = np.array([_loo_mse_kernel(X, Y, a, intercept).mean() for a in alphas])
    best = int(np.argmin(loo))
    assert mixed.alpha_ == exact.alpha_ == alphas[best]
    assert mixed.best_score_ == pytest.approx(-loo[best], rel=1e-5)
    assert exact.best_score_ == pytest.approx(-loo[best], rel=1e-5)
    np.testing.assert_allclose(exact.cv_scores_, -loo, rtol=1e-5)
    np.testing.assert_allclose(mixed.cv_scores_, -loo, rtol=1e-2)
    np.testing.assert_allclose(mixed.predict(X), exact.predict(X), rtol=1e-6, atol=1e-8)
