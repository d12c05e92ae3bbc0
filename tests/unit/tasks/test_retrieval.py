"""Tests of the retrieval protocols (MindEye2 N-way, 2-way identification, top-k) and their CIs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurodecode.tasks import (
    RetrievalScores,
    evaluate_retrieval,
    identification_2way,
    retrieve,
    topk_accuracy,
)


def _noisy(n, dim, noise, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.standard_normal((n, dim))
    return target + noise * rng.standard_normal((n, dim)), target


def test_perfect_predictions_score_one_everywhere():
    _, target = _noisy(120, 16, 0.0)
    scores = evaluate_retrieval(target * 3.0, target, n_candidates=50, n_repeats=5, n_boot=50)
    for name, d in scores.metrics.items():
        assert d["value"] == 1.0, name
        assert d["ci_low"] == d["ci_high"] == 1.0, name
    assert np.all(scores.topk_curve["forward"] == 1.0)
    assert scores.metrics["nway_top1_forward"]["chance"] == pytest.approx(1 / 50)
    assert scores.metrics["top5_forward"]["chance"] == pytest.approx(5 / 120)


def test_random_predictions_are_near_chance():
    rng = np.random.default_rng(1)
    n = 1000
    pred, target = rng.standard_normal((n, 32)), rng.standard_normal((n, 32))
    scores = evaluate_retrieval(pred, target, n_boot=200, random_state=3)
    # 300-way x 30: 9000 Bernoulli(1/300) draws (correlated): mean ~ 0.0033 +- ~0.001
    for name in ("nway_top1_forward", "nway_top1_backward"):
        assert abs(scores[name] - 1 / 300) < 0.004, scores[name]
    for name in ("2way_forward", "2way_backward"):
        assert abs(scores[name] - 0.5) < 0.03
        d = scores.metrics[name]
        assert d["ci_low"] < 0.5 + 0.03 and d["ci_high"] > 0.5 - 0.03
    assert abs(scores["top10_forward"] - 0.01) < 0.015


def test_hand_computed_small_case():
    # cosine = dot of unit vectors; pred row i vs target rows:
    target = np.eye(3)
    pred = np.array([[1.0, 0.5, 0.0],     # own target most similar: beats both
                     [0.9, 0.1, 0.2],     # target 0 (.9) > own (.1) < target 2 (.2): beats none
                     [0.0, 0.3, 0.5]])    # own (.5) > .3 > 0: beats both
    assert identification_2way(pred, target) == pytest.approx((1 + 0 + 1) / 3)
    assert topk_accuracy(pred, target, 1) == pytest.approx(2 / 3)
    assert topk_accuracy(pred, target, 2) == pytest.approx(2 / 3)   # item 1 ranks 3rd
    assert topk_accuracy(pred, target, 3) == pytest.approx(1.0)
    np.testing.assert_allclose(topk_accuracy(pred, target, [1, 3]), [2 / 3, 1.0])
    np.testing.assert_array_equal(retrieve(pred, target, 3), [[0, 1, 2], [0, 2, 1], [2, 1, 0]])
    scores = evaluate_retrieval(pred, target, n_candidates=3, n_repeats=2, n_boot=20,
                                topk=(1, 2))
    assert scores["2way_forward"] == pytest.approx(2 / 3)
    assert scores["top2_forward"] == pytest.approx(2 / 3)
    assert scores["nway_top1_forward"] == pytest.approx(2 / 3)  # 3-way == top-1 among all


def test_backward_differs_from_forward_on_asymmetric_example():
    # Every prediction is closest to target 0 ("hub"): forward top-1 only hits item 0, while
    # backward (each image -> which prediction?) sees each image closest to its own prediction.
    target = np.eye(4)
    pred = np.eye(4) * 0.5 + np.array([1.0, 0, 0, 0])
    assert topk_accuracy(pred, target, 1, direction="forward") == pytest.approx(1 / 4)
    assert topk_accuracy(pred, target, 1, direction="backward") == pytest.approx(1.0)
    scores = evaluate_retrieval(pred, target, n_candidates=4, n_repeats=1, n_boot=10, topk=(1,))
    assert scores["top1_forward"] == pytest.approx(0.25)
    assert scores["top1_backward"] == pytest.approx(1.0)
    assert scores["nway_top1_backward"] == pytest.approx(1.0)
    np.testing.assert_array_equal(retrieve(pred, target, 1, direction="backward")[:, 0], np.arange(4))


def test_ties_and_duplicates_count_as_failures():
    target = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])   # rows 0 and 1 duplicate
    pred = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    # items 0 and 1 tie with each other's (identical) target -> failures; item 2 is fine
    assert topk_accuracy(pred, target, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(pred, target, 2) == pytest.approx(1.0)
    assert identification_2way(pred, target) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # zero prediction: similarity 0 to everything -> ties -> failure
    assert topk_accuracy(np.zeros((3, 2)), np.eye(3, 2), 1) == 0.0
    # ordering of equal candidates is by index (deterministic)
    np.testing.assert_array_equal(retrieve(pred[:1], target, 3), [[0, 1, 2]])


def test_ci_contains_estimate_and_narrows_with_n():
    widths = []
    for n in (100, 1600):
        pred, target = _noisy(n, 64, 5.0, seed=n)
        scores = evaluate_retrieval(pred, target, n_candidates=50, n_repeats=10, n_boot=300)
        for name, d in scores.metrics.items():
            assert d["ci_low"] <= d["value"] <= d["ci_high"], name
        widths.append(scores.metrics["2way_forward"]["ci_high"] - scores.metrics["2way_forward"]["ci_low"])
    assert widths[1] < widths[0] / 2


def test_determinism_with_random_state_and_torch_input():
    torch = pytest.importorskip("torch")
    pred, target = _noisy(400, 32, 4.0)
    a = evaluate_retrieval(pred, target, n_boot=100, random_state=7)
    b = evaluate_retrieval(torch.tensor(pred, dtype=torch.float64), torch.tensor(target),
                           n_boot=100, random_state=7)
    assert a.to_dict() == b.to_dict()
    c = evaluate_retrieval(pred, target, n_boot=100, random_state=8)
    assert c.metrics["nway_top1_forward"] != a.metrics["nway_top1_forward"] or \
        c.metrics["2way_forward"]["ci_low"] != a.metrics["2way_forward"]["ci_low"]


def test_per_group_scores():
    pred1, target1 = _noisy(150, 32, 1.0, seed=1)    # good subject
    pred2, target2 = _noisy(150, 32, 30.0, seed=2)   # near-chance subject
    pred, target = np.vstack([pred1, pred2]), np.vstack([target1, target2])
    groups = np.array(["sub-01"] * 150 + ["sub-02"] * 150)
    with pytest.warns(UserWarning, match="fewer items than n_candidates"):
        scores = evaluate_retrieval(pred, target, groups=groups, n_repeats=3, n_boot=100)
    assert set(scores.groups) == {"sub-01", "sub-02"}
    assert scores.group_sizes == {"sub-01": 150, "sub-02": 150}
    g1, g2 = scores.groups["sub-01"], scores.groups["sub-02"]
    alone = evaluate_retrieval(pred1, target1, n_candidates=150, n_repeats=3, n_boot=10)
    assert g1["2way_forward"]["value"] == pytest.approx(alone["2way_forward"])
    assert g1["2way_forward"]["value"] > 0.9 > g2["2way_forward"]["value"]
    for name in scores.metrics:
        assert scores[name] == pytest.approx((g1[name]["value"] + g2[name]["value"]) / 2)
        assert scores.metrics[name]["ci_low"] <= scores[name] <= scores.metrics[name]["ci_high"]
    frame = scores.to_frame()
    assert list(frame.columns) == ["metric", "group", "value", "ci_low", "ci_high", "chance"]
    assert set(frame["group"]) == {"all", "sub-01", "sub-02"}
    assert len(frame) == 3 * len(scores.metrics)
    assert set(scores.group_topk_curves) == {"sub-01", "sub-02"}


def test_to_dict_is_json_and_round_trips():
    pred, target = _noisy(60, 8, 1.0)
    scores = evaluate_retrieval(pred, target, n_candidates=20, n_repeats=4, n_boot=30)
    data = json.loads(json.dumps(scores.to_dict(), allow_nan=False))
    back = RetrievalScores.from_dict(data)
    assert back.metrics == scores.metrics
    np.testing.assert_array_equal(back.topk_curve["k"], scores.topk_curve["k"])
    assert "20-way top-1, brain→image" in repr(scores)
    assert data["labels"]["2way_backward"] == "2-way identification, image→brain"
    assert "MindEye2" in scores.description
    nob = evaluate_retrieval(pred, target, n_candidates=20, n_repeats=4, n_boot=0)
    assert np.isnan(nob.metrics["2way_forward"]["ci_low"])
    json.dumps(nob.to_dict(), allow_nan=False)


def test_small_test_set_warns_and_uses_all():
    pred, target = _noisy(50, 8, 0.5)
    with pytest.warns(UserWarning, match="n_candidates=300"):
        scores = evaluate_retrieval(pred, target, n_boot=10)
    assert scores.metrics["nway_top1_forward"]["chance"] == pytest.approx(1 / 50)
    assert scores["nway_top1_forward"] == pytest.approx(scores["top1_forward"])
    assert scores.n_candidates == 50


def test_topk_curve_is_monotone_and_ends_at_one():
    pred, target = _noisy(300, 16, 2.0)
    c = evaluate_retrieval(pred, target, n_candidates=100, n_repeats=2, n_boot=20).topk_curve
    assert c["k"][0] == 1 and c["k"][-1] == 300
    assert np.all(np.diff(c["forward"]) >= 0) and c["forward"][-1] == 1.0
    assert np.all(c["forward_ci_low"] <= c["forward"] + 1e-12)
    np.testing.assert_allclose(c["chance"], c["k"] / 300)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_candidates": 1}, "n_candidates"), ({"n_repeats": 0}, "n_repeats"),
    ({"n_boot": -1}, "n_boot"), ({"ci": 1.5}, "ci"), ({"topk": (0,)}, "topk"),
    ({"groups": np.zeros(3)}, "groups"),
])
def test_bad_arguments_raise(kwargs, match):
    pred, target = _noisy(10, 4, 0.1)
    with pytest.raises(ValueError, match=match):
        evaluate_retrieval(pred, target, **kwargs)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="aligned"):
        evaluate_retrieval(np.ones((4, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="embedding size"):
        identification_2way(np.ones((4, 3)), np.ones((4, 2)))
    bad = np.ones((4, 3))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        topk_accuracy(bad, np.ones((4, 3)), 1)
    with pytest.raises(ValueError, match="direction"):
        retrieve(np.ones((4, 3)), np.ones((4, 3)), direction="sideways")


def test_mindeye2_scale_evaluates():
    # MindEye2's size (1000 test images, 1664-d, 300-way × 30, 1000 bootstraps); its speed is a benchmark's
    # business, not a test's (no wall-clock assertion)
    pred, target = _noisy(1000, 1664, 8.0)
    pred, target = pred.astype(np.float32), target.astype(np.float32)
    scores = evaluate_retrieval(pred, target, n_candidates=300, n_repeats=30, n_boot=1000)
    assert scores.n_candidates == 300 and scores.n_items == 1000
    top1 = scores.metrics["nway_top1_forward"]
    assert top1["chance"] == pytest.approx(1 / 300) and 0.0 <= top1["ci_low"] <= top1["value"] <= top1["ci_high"]


def test_combine_per_subject_scores_equals_grouped_evaluation():
    pred, target = _noisy(240, 16, 2.0, seed=3)
    groups = np.repeat([1, 2], 120)
    kw = dict(n_candidates=50, n_repeats=4, n_boot=200)
    grouped = evaluate_retrieval(pred, target, groups=groups, random_state=0, **kw)
    # same generator stream: group 1 then group 2 -> identical draws and resamples
    rng = np.random.default_rng(0)
    per = {s: evaluate_retrieval(pred[groups == s], target[groups == s], random_state=rng, **kw)
           for s in (1, 2)}
    pooled = RetrievalScores.combine(per)
    assert pooled.groups.keys() == {"1", "2"} and pooled.n_items == 240
    for name, d in grouped.metrics.items():
        for key in ("value", "ci_low", "ci_high", "chance"):
            assert pooled.metrics[name][key] == pytest.approx(d[key]), (name, key)
    np.testing.assert_allclose(pooled.topk_curve["forward"], grouped.topk_curve["forward"])
    # from JSON (no replicates): normal approximation, close to the exact interval
    approx = RetrievalScores.combine({s: sc.to_dict() for s, sc in per.items()})
    assert approx.replicates is None and "normal approximation" in approx.description
    for name, d in pooled.metrics.items():
        assert approx.metrics[name]["value"] == pytest.approx(d["value"])
        assert approx.metrics[name]["ci_low"] <= d["value"] <= approx.metrics[name]["ci_high"]
        assert approx.metrics[name]["ci_low"] == pytest.approx(d["ci_low"], abs=0.03)
    with pytest.raises(ValueError, match="groups of their own"):
        RetrievalScores.combine({"a": grouped})


@pytest.mark.parametrize("m", [2, 3, 5])
def test_nway_matches_a_brute_force_enumeration(m):
    """MindEye2's N-way top-1 equals the exact average over every m-subset of candidates.

    With 7 items, enumerate all C(7, m) subsets; item i scores in a subset that holds it when no other member
    is at least as similar (ties count against the true match). The sampled metric (many repeats) must agree,
    so drawing m - 1 or m + 1 candidates, or counting ties in favour, is caught.
    """
    from itertools import combinations

    rng = np.random.default_rng(m)
    n = 7
    target = rng.standard_normal((n, 4))
    pred = target + 2.5 * rng.standard_normal((n, 4))  # noisy: most items have competitors
    pred[3] = target[5]  # pred 3 matches target 5 exactly: a competitor that always wins over target 3
    target[6] = target[2]  # an exact tie for pred 2 (and 6): ties count against the true match
    p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    t = target / np.linalg.norm(target, axis=1, keepdims=True)
    sim = p @ t.T
    hits = total = 0
    back_hits = 0
    for subset in combinations(range(n), m):
        for i in subset:
            others = [j for j in subset if j != i]
            hits += all(sim[i, j] < sim[i, i] for j in others)
            back_hits += all(sim[j, i] < sim[i, i] for j in others)
            total += 1
    exact_fwd, exact_bwd = hits / total, back_hits / total
    scores = evaluate_retrieval(pred, target, n_candidates=m, n_repeats=40000, n_boot=10, random_state=1)
    assert scores.metrics["nway_top1_forward"]["chance"] == pytest.approx(1 / m)
    assert scores.metrics["nway_top1_forward"]["value"] == pytest.approx(exact_fwd, abs=0.01)
    assert scores.metrics["nway_top1_backward"]["value"] == pytest.approx(exact_bwd, abs=0.01)
    # the neighbouring subset sizes give clearly different values on this case
    for other in (m - 1, m + 1):
        if 2 <= other <= n:
            h = tot = 0
            for subset in combinations(range(n), other):
                for i in subset:
                    h += all(sim[i, j] < sim[i, i] for j in subset if j != i)
                    tot += 1
            assert abs(h / tot - exact_fwd) > 0.03
