"""The summary table over seeds, with numbers checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurodecode.reports import seed_summary, summary_markdown, summary_report


def _values(rows):
    return pd.DataFrame(rows, columns=["setting", "model", "metric", "seed", "subject", "value", "chance"])


def test_two_seeds_mean_sd_and_t_interval():
    table = seed_summary(_values([("a", "ridge", "top1", 0, 1, 0.5, 0.1), ("a", "ridge", "top1", 1, 1, 0.7, 0.1)]))
    row = table.iloc[0]
    assert row["n_seeds"] == 2 and row["mean"] == pytest.approx(0.6)
    assert row["sd"] == pytest.approx(math.sqrt(0.02))  # deviations ±0.1, ddof=1: sqrt(0.02 / 1)
    half = stats.t.ppf(0.975, 1) * math.sqrt(0.02) / math.sqrt(2)  # 12.706 * 0.1
    assert half == pytest.approx(1.2706, abs=1e-4)
    assert row["ci_low"] == pytest.approx(0.6 - half) and row["ci_high"] == pytest.approx(0.6 + half)
    assert row["chance"] == pytest.approx(0.1) and row["seeds"] == [0, 1] and row["note"] == ""
    narrow = seed_summary(_values([("a", "ridge", "top1", 0, 1, 0.5, 0.1), ("a", "ridge", "top1", 1, 1, 0.7, 0.1)]),
                          ci=0.5)
    assert narrow.iloc[0]["ci_high"] == pytest.approx(0.6 + stats.t.ppf(0.75, 1) * 0.1)


def test_subjects_are_averaged_per_seed_before_the_seeds():
    rows = [("a", "mlp", "2way", 0, 1, 0.6, 0.5), ("a", "mlp", "2way", 0, 2, 0.8, 0.5),   # seed 0: 0.7
            ("a", "mlp", "2way", 1, 1, 0.9, 0.5), ("a", "mlp", "2way", 1, 2, 0.9, 0.5),   # seed 1: 0.9
            ("a", "mlp", "2way", 2, 1, 0.7, 0.5), ("a", "mlp", "2way", 2, 2, 0.9, 0.5)]   # seed 2: 0.8
    row = seed_summary(_values(rows)).iloc[0]
    per_seed = np.array([0.7, 0.9, 0.8])
    assert row["n_seeds"] == 3 and row["n_subjects"] == 2
    assert row["mean"] == pytest.approx(0.8) and row["sd"] == pytest.approx(0.1)
    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.8 - half, 0.8 + half))
    assert row["mean"] == pytest.approx(per_seed.mean())


def test_one_seed_has_no_interval_and_settings_stay_apart():
    rows = [("a", "ridge", "top1", 0, 1, 0.5, 0.1), ("b", "ridge", "top1", 0, 1, 0.3, 0.1),
            ("b", "ridge", "top1", 1, 1, 0.4, 0.1), ("a", "ridge", "top5", 0, 1, 0.9, 0.4)]
    table = seed_summary(_values(rows))
    assert list(zip(table["setting"], table["metric"])) == [("a", "top1"), ("b", "top1"), ("a", "top5")]
    one = table.iloc[0]
    assert one["n_seeds"] == 1 and one["mean"] == 0.5
    assert math.isnan(one["sd"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    assert "no interval" in one["note"]
    assert table.iloc[1]["mean"] == pytest.approx(0.35)
    md = summary_markdown(table, title="T")
    assert md.startswith("# T\n") and "| a | ridge | top1 | 1 | 0.5000 | — | n=1: no interval | 0.1000 |" in md
    assert "| b | ridge | top1 | 2 | 0.3500 | 0.0707 | [-0.2853, 0.9853] | 0.1000 |" in md  # 0.35 ± 12.706 * 0.05


def test_uneven_folds_are_flagged_and_nan_values_skipped():
    rows = [("a", "ridge", "top1", 0, 1, 0.5, 0.1), ("a", "ridge", "top1", 0, 2, 0.7, 0.1),
            ("a", "ridge", "top1", 1, 1, 0.4, 0.1)]
    row = seed_summary(_values(rows)).iloc[0]
    assert "seeds cover 1-2 subjects" in row["note"] and row["mean"] == pytest.approx((0.6 + 0.4) / 2)
    nan = seed_summary(_values([("a", "ridge", "top1", 0, 1, float("nan"), 0.1),
                                ("a", "ridge", "top1", 1, 1, 0.4, 0.1)])).iloc[0]
    assert nan["n_seeds"] == 1 and nan["mean"] == pytest.approx(0.4)


def test_bad_input_and_the_html_page():
    with pytest.raises(ValueError, match="lacks the column"):
        seed_summary(pd.DataFrame({"setting": ["a"], "value": [1.0]}))
    with pytest.raises(ValueError, match="ci must be"):
        seed_summary(_values([("a", "ridge", "top1", 0, 1, 0.5, 0.1)]), ci=1.5)
    table = seed_summary(_values([("x<y", "ridge", "top1", 0, 1, 0.5, 0.1), ("x<y", "ridge", "top1", 1, 1, 0.7, 0.1)]))
    html = summary_report(table, title="Sweep", runs=["runs/a"], incomplete=["runs/b"]).render()
    assert "<table" in html and "0.6000" in html and "[-0.6706, 1.8706]" in html
    assert "x&lt;y" in html and "runs/b" in html and "without results" in html
    assert "https://" not in html and "http://" not in html  # self-contained
