"""Tests of bootstrap CIs, permutation p-values and the BH FDR correction."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.analysis import bootstrap_ci, fdr_bh, permutation_pvalue


def test_bootstrap_ci_mean_matches_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.random(2000) < 0.3                        # per-item hit indicators
    low, high = bootstrap_ci(x, n_boot=2000, random_state=1)
    se = np.sqrt(x.mean() * (1 - x.mean()) / x.size)
    assert low < x.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_ci_deterministic_and_columns_paired():
    x = np.random.default_rng(2).standard_normal(300)
    a = bootstrap_ci(x, n_boot=200, random_state=5)
    assert a == bootstrap_ci(x, n_boot=200, random_state=5)
    assert a != bootstrap_ci(x, n_boot=200, random_state=6)
    low, high, reps = bootstrap_ci(np.c_[x, 2 * x], n_boot=200, random_state=5,
                                   return_replicates=True)
    assert reps.shape == (200, 2)
    np.testing.assert_allclose(reps[:, 1], 2 * reps[:, 0])        # same resamples
    assert low[0] == pytest.approx(a[0]) and high[0] == pytest.approx(a[1])


def test_bootstrap_ci_other_statistics():
    x = np.random.default_rng(3).standard_normal(301)
    low, high = bootstrap_ci(x, np.median, n_boot=300)
    assert low < np.median(x) < high
    low2, high2 = bootstrap_ci(x, lambda s: float(np.median(s)), n_boot=300)  # no axis kwarg
    assert (low2, high2) == pytest.approx((low, high))
    assert bootstrap_ci(np.ones(10), n_boot=50) == (1.0, 1.0)


@pytest.mark.parametrize("kwargs", [{"n_boot": 0}, {"ci": 1.0}, {"ci": 0}])
def test_bootstrap_ci_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci(np.arange(5.0), **kwargs)


def test_permutation_pvalue_plus_one_correction():
    null = np.arange(99.0)            # 0..98
    assert permutation_pvalue(1000.0, null) == pytest.approx(1 / 100)   # never 0
    assert permutation_pvalue(-1.0, null) == pytest.approx(1.0)
    assert permutation_pvalue(49.0, null) == pytest.approx((1 + 50) / 100)  # ties count
    assert permutation_pvalue(-1.0, null, alternative="less") == pytest.approx(1 / 100)
    assert permutation_pvalue(1000.0, null, alternative="two-sided") == pytest.approx(2 / 100)
    assert permutation_pvalue(49.0, null, alternative="two-sided") == 1.0
    p = permutation_pvalue(np.array([1000.0, -1.0]), np.c_[null, null])
    np.testing.assert_allclose(p, [0.01, 1.0])
    with pytest.raises(ValueError, match="alternative"):
        permutation_pvalue(1.0, null, alternative="bigger")
    with pytest.raises(ValueError, match="shape"):
        permutation_pvalue(np.ones(3), null)


def test_permutation_pvalue_is_uniform_under_null():
    rng = np.random.default_rng(4)
    ps = [permutation_pvalue(rng.standard_normal(), rng.standard_normal(199)) for _ in range(400)]
    assert np.mean(np.array(ps) <= 0.05) == pytest.approx(0.05, abs=0.03)


def test_fdr_bh_against_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.2])
    reject, q = fdr_bh(p, alpha=0.05)
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    np.testing.assert_array_equal(reject, [True, False, False, False])
    # shape kept, monotone, capped at 1
    p2 = np.random.default_rng(5).random((4, 5))
    _, q2 = fdr_bh(p2)
    assert q2.shape == p2.shape and np.all(q2 >= p2 - 1e-12) and np.all(q2 <= 1)
    order = np.argsort(p2.ravel())
    assert np.all(np.diff(q2.ravel()[order]) >= 0)
    with pytest.raises(ValueError):
        fdr_bh([0.1, np.nan])


def test_fdr_bh_matches_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    if not hasattr(stats, "false_discovery_control"):
        pytest.skip("scipy too old")
    p = np.random.default_rng(6).random(50) ** 3
    np.testing.assert_allclose(fdr_bh(p)[1], stats.false_discovery_control(p, method="bh"))


def test_noise_ceiling_hand_computed():
    from neurodecode.analysis.stats import noise_ceiling

    assert noise_ceiling(1.0) == pytest.approx(50.0)            # 100 * 1 / (1 + 1)
    assert noise_ceiling(1.0, n_trials=3) == pytest.approx(75.0)  # 100 * 1 / (1 + 1/3)
    assert noise_ceiling(0.0) == 0.0 and noise_ceiling(np.inf) == 100.0
    assert isinstance(noise_ceiling(0.5), float)
    nc = noise_ceiling(np.array([[0.0, 1.0], [np.nan, 2.0]]), n_trials=1)
    assert nc.shape == (2, 2) and np.isnan(nc[1, 0])
    np.testing.assert_allclose(nc[[0, 0, 1], [0, 1, 1]], [0.0, 50.0, 80.0])
    snr = np.random.default_rng(7).random(20)
    np.testing.assert_allclose(noise_ceiling(snr, 2), 100 * snr ** 2 / (snr ** 2 + 1 / 2))


@pytest.mark.parametrize("kwargs, match", [({"n_trials": 0}, "n_trials"), ({"n_trials": 0.5}, "n_trials"),
                                           ({"n_trials": np.nan}, "n_trials"),
                                           ({"n_trials": True}, "n_trials"), ({"ncsnr": -1.0}, "ncsnr")])
def test_noise_ceiling_bad_arguments(kwargs, match):
    from neurodecode.analysis.stats import noise_ceiling

    kw = {"ncsnr": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        noise_ceiling(**kw)
