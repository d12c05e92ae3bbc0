"""Hand-checked values for analysis.stats, written to kill mutants that the main suite let live.

Run with tools/mutation/run.sh (see docs/testing.md); these are ordinary fast unit tests too.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.analysis import stats
from neurodecode.analysis.stats import bootstrap_ci, fdr_bh, noise_ceiling, permutation_pvalue
from neurodecode.tasks.bootstrap import bootstrap_counts, percentile_interval


def test_bootstrap_mean_path_equals_explicit_resample_counts():
    vals = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.25])
    lo, hi, reps = bootstrap_ci(vals, n_boot=200, ci=0.9, random_state=7, return_replicates=True)
    counts = bootstrap_counts(len(vals), 200, np.random.default_rng(7)).astype(np.float64)
    want = counts @ vals[:, None] / len(vals)
    np.testing.assert_allclose(reps, want[:, 0], rtol=0, atol=1e-12)
    elo, ehi = percentile_interval(want, 0.9)
    assert (lo, hi) == (float(elo[0]), float(ehi[0]))
    assert isinstance(lo, float) and isinstance(hi, float) and reps.shape == (200,)
    assert np.average is not np.mean  # the np.average alias takes the same path
    assert bootstrap_ci(vals, np.average, n_boot=200, ci=0.9, random_state=7) == (lo, hi)


def test_bootstrap_constant_values_and_single_item():
    assert bootstrap_ci(np.full(7, 0.3), n_boot=50) == pytest.approx((0.3, 0.3))
    assert bootstrap_ci([2.0], n_boot=20) == pytest.approx((2.0, 2.0))
    lo, hi = bootstrap_ci(np.column_stack([np.full(5, 1.0), np.full(5, -2.0)]), n_boot=30)
    np.testing.assert_allclose(lo, [1.0, -2.0]) and np.testing.assert_allclose(hi, [1.0, -2.0])
    assert lo.shape == (2,)


def test_bootstrap_statistic_without_axis_falls_back_per_replicate():
    vals = np.arange(12, dtype=float) ** 1.5
    with_axis = bootstrap_ci(vals, lambda s, axis=-1: np.median(s, axis=axis), n_boot=64, random_state=3,
                             return_replicates=True)
    no_axis = bootstrap_ci(vals, lambda s: float(np.median(s)), n_boot=64, random_state=3,
                           return_replicates=True)
    scalar = bootstrap_ci(vals, lambda s, axis=None: float(np.median(s)), n_boot=64, random_state=3,
                          return_replicates=True)  # takes axis but ignores it: wrong shape -> fallback
    np.testing.assert_array_equal(with_axis[2], no_axis[2])
    np.testing.assert_array_equal(with_axis[2], scalar[2])
    assert with_axis[:2] == no_axis[:2] == scalar[:2]
    # the replicates are medians of resamples drawn with rng.integers(0, n, (n_boot, n))
    idx = np.random.default_rng(3).integers(0, 12, size=(64, 12))
    np.testing.assert_array_equal(with_axis[2], np.median(vals[idx], axis=1))


def test_bootstrap_two_columns_other_statistic_shapes():
    vals = np.column_stack([np.arange(8.0), 10 * np.arange(8.0)])
    lo, hi, reps = bootstrap_ci(vals, lambda s, axis=-1: np.max(s, axis=axis), n_boot=40,
                                return_replicates=True)
    assert reps.shape == (40, 2)
    np.testing.assert_allclose(reps[:, 1], 10 * reps[:, 0])
    assert lo.shape == hi.shape == (2,)


@pytest.mark.parametrize("bad", [np.zeros((0,)), np.zeros((2, 2, 2))])
def test_bootstrap_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="values must have shape"):
        bootstrap_ci(bad)


def test_permutation_pvalue_planted_counts():
    null = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert permutation_pvalue(3.0, null) == pytest.approx(3 / 6)           # 3 and 4 are >= 3
    assert permutation_pvalue(3.0, null, alternative="less") == pytest.approx(5 / 6)
    assert permutation_pvalue(3.0, null, alternative="two-sided") == pytest.approx(1.0)
    assert permutation_pvalue(5.0, null) == pytest.approx(1 / 6)           # never 0
    assert permutation_pvalue(5.0, null, alternative="less") == pytest.approx(1.0)
    assert permutation_pvalue(5.0, null, alternative="two-sided") == pytest.approx(2 / 6)
    assert permutation_pvalue(-1.0, null, alternative="less") == pytest.approx(1 / 6)
    assert isinstance(permutation_pvalue(5.0, null), float)


def test_permutation_pvalue_vector_and_errors():
    null = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    p = permutation_pvalue([1.0, 13.0], null)
    assert isinstance(p, np.ndarray)
    np.testing.assert_allclose(p, [3 / 4, 1 / 4])
    with pytest.raises(ValueError, match="at least one"):
        permutation_pvalue(1.0, np.zeros(0))
    with pytest.raises(ValueError, match="at least one"):
        permutation_pvalue(1.0, 0.5)
    with pytest.raises(ValueError, match="shape"):
        permutation_pvalue([1.0, 2.0], np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        permutation_pvalue(np.nan, np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        permutation_pvalue(1.0, np.array([0.0, np.nan]))
    with pytest.raises(ValueError):
        permutation_pvalue(1.0, np.zeros(3), alternative="bigger")


def test_fdr_bh_hand_case_and_boundaries():
    p = np.array([[0.01, 0.04], [0.03, 0.20]])
    reject, q = fdr_bh(p, alpha=0.04)
    # sorted 0.01, 0.03, 0.04, 0.20 -> 0.04, 0.06, 0.0533, 0.20 -> monotone 0.04, 0.0533, 0.0533, 0.2
    np.testing.assert_allclose(q, [[0.04, 0.16 / 3], [0.16 / 3, 0.20]])
    np.testing.assert_array_equal(reject, [[True, False], [False, False]])  # q == alpha is rejected
    reject1, q1 = fdr_bh([0.05], alpha=0.05)
    assert reject1.tolist() == [True] and q1.tolist() == [0.05]
    assert fdr_bh([0.9, 0.95])[1].tolist() == [0.95, 0.95]
    assert fdr_bh([1.0, 0.0])[1].tolist() == [1.0, 0.0]                   # p in [0, 1] accepted
    assert fdr_bh([0.6, 0.7, 0.8])[1].max() <= 1.0
    np.testing.assert_allclose(fdr_bh([0.5, 0.5, 0.5, 0.9, 0.9, 0.9])[1], [0.9] * 6)
    r, q = fdr_bh(np.zeros((0, 3)))
    assert r.shape == q.shape == (0, 3) and r.dtype == bool
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match="alpha"):
            fdr_bh([0.1], alpha=alpha)
    for bad in ([np.nan], [-0.1], [1.1]):
        with pytest.raises(ValueError, match="pvals"):
            fdr_bh(bad)


def test_fdr_bh_stable_ties_and_caps():
    q = fdr_bh([0.02, 0.01, 0.02, 0.5])[1]
    np.testing.assert_allclose(q, [0.08 / 3] * 3 + [0.5])  # step-up lowers 0.04
    np.testing.assert_allclose(fdr_bh([0.4, 0.9])[1], [0.8, 0.9])
    np.testing.assert_allclose(fdr_bh([0.6, 0.9])[1], [0.9, 0.9])


def test_noise_ceiling_values_and_arguments():
    assert noise_ceiling(1.0) == pytest.approx(50.0)
    assert noise_ceiling(1.0, n_trials=3) == pytest.approx(75.0)
    assert noise_ceiling(2.0, n_trials=1) == pytest.approx(80.0)
    assert noise_ceiling(1.0, n_trials=np.int64(1)) == pytest.approx(50.0)
    assert noise_ceiling(1.0, n_trials=1.5) == pytest.approx(100 * 1.5 / 2.5)
    assert isinstance(noise_ceiling(1.0), float)
    out = noise_ceiling([0.0, np.inf, np.nan, 1.0])
    assert out[0] == 0.0 and out[1] == 100.0 and np.isnan(out[2]) and out[3] == pytest.approx(50.0)
    for bad in (True, 0.5, 0, np.inf, np.nan, "3", None):
        with pytest.raises(ValueError, match="n_trials"):
            noise_ceiling(1.0, n_trials=bad)
    with pytest.raises(ValueError, match="ncsnr"):
        noise_ceiling([1.0, -0.1])
    assert stats.__all__ == ["bootstrap_ci", "fdr_bh", "noise_ceiling", "permutation_pvalue"]


def test_bootstrap_passes_axis_minus_one_and_returns_floats():
    seen = []

    def stat(s, axis=None):
        seen.append(axis)
        return np.mean(s, axis=axis)

    bootstrap_ci(np.arange(6.0), stat, n_boot=10)
    assert seen == [-1]                                    # one vectorised call, on the item axis
    lo, hi, reps = bootstrap_ci(np.arange(6.0), lambda s: bool(s.mean() > 2.5), n_boot=50,
                                return_replicates=True)   # per-replicate fallback, bools -> floats
    assert reps.dtype == np.float64 and set(np.unique(reps)) <= {0.0, 1.0} and 0.0 <= lo <= hi <= 1.0


def test_integer_inputs_are_computed_in_float():
    r, q = fdr_bh(np.zeros(0, dtype=int))
    assert q.dtype == np.float64
    # int8 would overflow at 12 ** 2 = 144 if the SNR were not converted to float first
    assert noise_ceiling(np.array([12], dtype=np.int8))[0] == pytest.approx(100 / (1 + 1 / 144))


def test_permutation_pvalue_vector_less_and_two_sided_per_test():
    null = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    np.testing.assert_allclose(permutation_pvalue([1.0, 9.0], null, alternative="less"), [3 / 4, 1 / 4])
    np.testing.assert_allclose(permutation_pvalue([1.0, 9.0], null, alternative="two-sided"), [1.0, 2 / 4])


@pytest.mark.parametrize("statistic", [np.std, np.median, np.mean])
def test_bootstrap_of_float32_values_is_computed_in_float64(statistic):
    """float32 scores (a float32 decoder's output) are bootstrapped in float64: the interval and the replicates
    equal those of the same values given as float64 (a float32 std / median would differ at ~1e-8)."""
    v32 = (np.random.default_rng(3).normal(size=(40, 2)) * 1e3 + 1e4).astype(np.float32)
    kw = {"statistic": statistic, "n_boot": 50, "ci": 0.9, "random_state": 1, "return_replicates": True}
    lo32, hi32, r32 = bootstrap_ci(v32, **kw)
    lo64, hi64, r64 = bootstrap_ci(v32.astype(np.float64), **kw)
    assert r32.dtype == np.float64
    np.testing.assert_array_equal(r32, r64)
    np.testing.assert_array_equal(lo32, lo64)
    np.testing.assert_array_equal(hi32, hi64)


def test_bootstrap_ci_default_is_1000_resamples():
    """The documented default (n_boot=1000): same interval and replicates as asking for 1000."""
    x = np.random.default_rng(5).standard_normal(30)
    lo, hi, reps = bootstrap_ci(x, return_replicates=True)
    assert reps.shape == (1000,)
    lo2, hi2, reps2 = bootstrap_ci(x, n_boot=1000, return_replicates=True)
    assert (lo, hi) == (lo2, hi2)
    np.testing.assert_array_equal(reps, reps2)
    assert bootstrap_ci(x) == bootstrap_ci(x, n_boot=1000, ci=0.95, random_state=0)


def test_permutation_pvalue_with_a_single_null_sample():
    """One permutation is a valid (coarse) test: p is 1/2 or 1, never 0; zero permutations are refused."""
    from neurodecode.analysis.stats import permutation_pvalue

    assert permutation_pvalue(0.8, [0.1]) == 0.5                 # (1 + 0) / (1 + 1)
    assert permutation_pvalue(0.8, [0.8]) == 1.0                 # ties count as extreme
    assert permutation_pvalue(0.8, [0.9]) == 1.0
    assert permutation_pvalue(0.8, [0.1], alternative="less") == 1.0
    assert permutation_pvalue(0.8, [0.9], alternative="less") == 0.5
    assert permutation_pvalue(0.8, [0.1], alternative="two-sided") == 1.0   # min(1, 2 · 1/2)
    got = permutation_pvalue([0.8, 0.0, -1.0], [[0.1, 0.5, -1.0]])          # vector form, shape (1, 3)
    np.testing.assert_array_equal(got, [0.5, 1.0, 1.0])
    for empty in ([], np.empty((0, 3))):
        with pytest.raises(ValueError, match="at least one null statistic"):
            permutation_pvalue(0.8 if len(np.shape(empty)) == 1 else [0.8, 0.0, -1.0], empty)
    with pytest.raises(ValueError, match="at least one null statistic"):
        permutation_pvalue(0.8, 0.1)
