"""Retrieval metrics against brute-force loops on hand-made and random embeddings (ties = failures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.tasks.retrieval import identification_2way, metric_label, retrieve, topk_accuracy


def _cos(a, b):
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    return a @ b.T


def _brute(pred, target, k, direction):
    sim = _cos(pred, target)
    if direction == "backward":
        sim = sim.T
    n = len(sim)
    two, top = [], []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        two.append(np.mean([sim[i, j] < sim[i, i] for j in others]))
        top.append(sum(sim[i, j] >= sim[i, i] for j in others) < k)
    return float(np.mean(two)), float(np.mean(top))


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_2way_and_topk_equal_brute_force(direction):
    rng = np.random.default_rng(1)
    target = rng.normal(size=(9, 4))
    pred = target + rng.normal(scale=1.2, size=target.shape)
    for k in (1, 2, 4):
        two, top = _brute(pred, target, k, direction)
        assert identification_2way(pred, target, direction=direction) == pytest.approx(two, abs=1e-12)
        assert topk_accuracy(pred, target, k, direction=direction) == pytest.approx(top, abs=1e-12)
    many = topk_accuracy(pred, target, [4, 1, 4], direction=direction)
    np.testing.assert_allclose(many, [_brute(pred, target, 4, direction)[1], _brute(pred, target, 1, direction)[1]])


def test_forward_and_backward_differ_on_asymmetric_case():
    rng = np.random.default_rng(5)
    target, pred = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    f = identification_2way(pred, target)
    b = identification_2way(pred, target, direction="backward")
    assert (f, b) == pytest.approx((_brute(pred, target, 1, "forward")[0], _brute(pred, target, 1, "backward")[0]))
    assert f != b


def test_ties_count_as_failures_and_zero_rows_tie():
    target = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])   # items 0 and 1 share an embedding
    pred = target.copy()
    assert identification_2way(pred, target) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert topk_accuracy(pred, target, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(pred, target, 2) == pytest.approx(1.0)
    zero = np.zeros((3, 2))
    assert identification_2way(zero, target) == 0.0 and topk_accuracy(zero, target, 2) == 0.0
    # -0.0 and 0.0 are the same number: still one tie group
    t2 = np.array([[0.0, 1.0], [-0.0, 1.0], [1.0, 0.0]])
    assert topk_accuracy(t2, t2, 1) == pytest.approx(1 / 3)


def test_perfect_and_returned_types():
    x = np.eye(5)
    assert identification_2way(x, x) == 1.0 and topk_accuracy(x, x, 1) == 1.0
    assert isinstance(topk_accuracy(x, x, 1), float)
    assert isinstance(topk_accuracy(x, x, (1, 2)), np.ndarray)
    assert identification_2way(torch.eye(5, dtype=torch.bfloat16), torch.eye(5)) == 1.0
    assert identification_2way(x[:, :, None].repeat(2, 2), x[:, :, None].repeat(2, 2)) == 1.0  # flattened


def test_retrieve_order_ties_k_clip_and_direction():
    target = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.7, 0.7]])
    pred = np.array([[1.0, 0.05], [0.0, 2.0]])
    np.testing.assert_array_equal(retrieve(pred, target, k=3), [[0, 2, 3], [1, 3, 0]])
    assert retrieve(pred, target, k=10).shape == (2, 4)
    np.testing.assert_array_equal(retrieve(pred, target, k=1, direction="backward"), [[0], [1], [0], [0]])
    for bad in (0, 1.5, -1):
        with pytest.raises(ValueError, match="k must be"):
            retrieve(pred, target, k=bad)
    assert retrieve(pred, target, k=2.0).shape == (2, 2)


def test_input_checks():
    x = np.eye(3)
    with pytest.raises(ValueError, match="same embedding size"):
        identification_2way(x, np.eye(3, 2))
    with pytest.raises(ValueError, match="aligned"):
        topk_accuracy(x, np.eye(4, 3))
    with pytest.raises(ValueError, match="at least 2"):
        identification_2way(x[:1], x[:1])
    with pytest.raises(ValueError, match="shape"):
        identification_2way(np.ones(3), np.ones(3))
    with pytest.raises(TypeError, match="real numbers"):
        identification_2way(x.astype(complex), x)
    with pytest.raises(ValueError):
        identification_2way(x * np.nan, x)
    with pytest.raises(ValueError, match="positive"):
        topk_accuracy(x, x, [0])
    with pytest.raises(ValueError, match="positive"):
        topk_accuracy(x, x, [1.5])
    with pytest.raises(TypeError, match="topk"):
        topk_accuracy(x, x, ["a"])
    with pytest.raises(ValueError):
        topk_accuracy(x, x, 1, direction="sideways")


def test_metric_labels():
    assert metric_label("nway_top1_forward", 300) == "300-way top-1, brain→image"
    assert metric_label("2way_backward", 50) == "2-way identification, image→brain"
    assert metric_label("top5_forward", 9) == "top-5 among all, brain→image"
    assert metric_label("other", 9) == "other"


def test_k_grid_stops_at_the_number_of_items():
    from neurodecode.tasks.retrieval import _k_grid

    np.testing.assert_array_equal(_k_grid(5), [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(_k_grid(100), np.arange(1, 101))
    g = _k_grid(1000)
    assert g[0] == 1 and g[-1] == 1000 and np.all(np.diff(g) > 0) and 101 not in g[:100]
    np.testing.assert_array_equal(g[:100], np.arange(1, 101))


def test_scores_from_minimal_dict_and_repr_defaults():
    from neurodecode.tasks.retrieval import RetrievalScores

    d = {"metrics": {"2way_forward": {"value": 0.75, "ci_low": 0.5, "ci_high": None, "chance": 0.5}}}
    s = RetrievalScores.from_dict(d)                      # an old metrics.json without optional keys
    assert s.groups == {} and s.topk_curve == {} and s.n_items == 0 and s.protocol == {}
    assert s["2way_forward"] == 0.75 and np.isnan(s.metrics["2way_forward"]["ci_high"])
    assert "x ? repeats" in repr(s) and "(? resamples)" in repr(s)
    back = RetrievalScores.from_dict(s.to_dict())
    assert back.metrics.keys() == s.metrics.keys() and back.n_items == 0


def test_protocol_description_names_the_bootstrap():
    from neurodecode.tasks.retrieval import _description

    plain = _description(50, 30, 0.95, 1000, grouped=False, exact=False)
    assert "bootstrap resamples of the test items" in plain and "normal approximation" not in plain
    assert "within each group" not in plain
    pooled = _description(50, 30, 0.9, 200, grouped=True, exact=False)
    assert "90% percentile CIs from 200 bootstrap resamples of each group's test items" in pooled
    assert "Retrieval within each group; pooled values are the unweighted mean over groups." in pooled
    strat = _description(50, 30, 0.95, 10, grouped=True, exact=True)
    assert "stratified by group" in strat and "normal approximation" not in strat
    assert "No bootstrap (n_boot=0)." in _description(50, 30, 0.95, 0, grouped=True)
    assert "50-way top-1: mean over 30 random draws" in plain


def test_two_items_are_enough():
    x = np.eye(2)
    assert identification_2way(x, x) == 1.0 and topk_accuracy(x, x, 1) == 1.0
    assert identification_2way(x, x[::-1]) == 0.0


def test_combine_uses_the_stratified_bootstrap_when_replicates_are_kept():
    from neurodecode.tasks.bootstrap import percentile_interval
    from neurodecode.tasks.retrieval import RetrievalScores, evaluate_retrieval

    rng = np.random.default_rng(0)
    parts = {}
    for g in ("s1", "s2"):
        t = rng.normal(size=(20, 4))
        parts[g] = evaluate_retrieval(t + rng.normal(size=t.shape), t, n_candidates=10, n_repeats=3,
                                      topk=(1,), n_boot=50)
    assert parts["s1"].protocol["name"] == "mindeye2_retrieval"
    pooled = RetrievalScores.combine(parts)
    assert pooled.protocol["bootstrap"].startswith("items, percentile")
    lo, hi = percentile_interval(np.mean([s.replicates for s in parts.values()], axis=0), 0.95)
    names = list(pooled.metrics)
    np.testing.assert_allclose([pooled.metrics[m]["ci_low"] for m in names], lo)
    np.testing.assert_allclose([pooled.metrics[m]["ci_high"] for m in names], hi)
    approx = RetrievalScores.combine({g: s.to_dict() for g, s in parts.items()})   # no replicates
    assert approx.protocol["bootstrap"] == "per-group percentile CIs pooled by a normal approximation"
    assert _k_grid_dtype_is_int()


def _k_grid_dtype_is_int():
    from neurodecode.tasks.retrieval import _k_grid

    return _k_grid(1000).dtype.kind == "i" and _k_grid(50).dtype.kind == "i"


# ----------------------------------------------------------------------------- evaluate_retrieval, whole
def _per_item_scores(pred, target, topk, k_grid):
    """Brute-force per-item scores (rows: items) in evaluate_retrieval's metric order, and curve hits.

    With every item a candidate (n_candidates >= n) the N-way top-1 of an item is its top-1 hit.
    """
    sim = _cos(pred, target)
    n = len(sim)
    cols, curve = [], []
    for s in (sim, sim.T):                        # forward, backward
        rank = np.array([sum(s[i, j] >= s[i, i] for j in range(n) if j != i) for i in range(n)])
        two = np.array([np.mean([s[i, j] < s[i, i] for j in range(n) if j != i]) for i in range(n)])
        cols.append((rank < 1, two, {k: rank < k for k in topk}))
        curve.append(np.array([[r < k for k in k_grid] for r in rank], dtype=float))
    (top1_f, two_f, tk_f), (top1_b, two_b, tk_b) = cols
    items = [top1_f, top1_b, two_f, two_b]
    for k in topk:
        items += [tk_f[k], tk_b[k]]
    return np.stack(items, 1).astype(float), np.concatenate(curve, 1)


def _quantiles(reps, ci):
    return np.quantile(reps, (1 - ci) / 2, axis=0), np.quantile(reps, (1 + ci) / 2, axis=0)


def test_values_and_bootstrap_cis_equal_a_brute_force_item_bootstrap():
    """Point estimates, chance levels and every percentile CI (metrics and top-k curve) equal an explicit
    resampling of the items with the same generator (no candidate draw: all 11 items are candidates)."""
    from neurodecode.tasks.retrieval import evaluate_retrieval

    rng = np.random.default_rng(11)
    n, n_boot, ci, topk = 11, 300, 0.9, (2, 3)
    target = rng.normal(size=(n, 5))
    pred = target + 1.3 * rng.normal(size=(n, 5))
    scores = evaluate_retrieval(pred, target, n_candidates=n, n_repeats=3, topk=topk, n_boot=n_boot, ci=ci,
                                random_state=4)
    per_item, curve_items = _per_item_scores(pred, target, topk, np.arange(1, n + 1))
    names = ["nway_top1_forward", "nway_top1_backward", "2way_forward", "2way_backward",
             "top2_forward", "top2_backward", "top3_forward", "top3_backward"]
    assert list(scores.metrics) == names
    idx = np.random.default_rng(4).integers(0, n, size=(n_boot, n))     # the resamples, explicitly
    reps = per_item[idx].mean(1)                                         # (n_boot, n_metrics)
    low, high = _quantiles(reps, ci)
    chance = [1 / n, 1 / n, 0.5, 0.5, 2 / n, 2 / n, 3 / n, 3 / n]
    for j, name in enumerate(names):
        d = scores.metrics[name]
        assert d["value"] == pytest.approx(per_item[:, j].mean(), abs=1e-12), name
        assert d["chance"] == pytest.approx(chance[j], abs=1e-15), name
        assert (d["ci_low"], d["ci_high"]) == pytest.approx((low[j], high[j]), abs=1e-12), name
    np.testing.assert_allclose(scores.replicates, reps, atol=1e-12)
    c = scores.topk_curve
    np.testing.assert_array_equal(c["k"], np.arange(1, n + 1))
    np.testing.assert_allclose(np.concatenate([c["forward"], c["backward"]]), curve_items.mean(0), atol=1e-12)
    clow, chigh = _quantiles(curve_items[idx].mean(1), ci)
    np.testing.assert_allclose(np.concatenate([c["forward_ci_low"], c["backward_ci_low"]]), clow, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([c["forward_ci_high"], c["backward_ci_high"]]), chigh, atol=1e-12)
    np.testing.assert_allclose(c["chance"], np.arange(1, n + 1) / n)
    assert scores.n_items == n and scores.n_candidates == n


def test_grouped_values_and_cis_equal_a_brute_force_stratified_bootstrap():
    """With groups: per-group values are the group's own retrieval; pooled value = unweighted mean over groups;
    pooled CI = percentiles of the mean of the per-group resamples (groups in sorted order, one generator)."""
    from neurodecode.tasks.retrieval import evaluate_retrieval

    rng = np.random.default_rng(2)
    sizes = {"b": 9, "a": 6}                    # given out of order; groups are scored in sorted order
    labels = np.repeat(list(sizes), list(sizes.values()))
    target = rng.normal(size=(len(labels), 4))
    pred = target + 1.0 * rng.normal(size=target.shape)
    n_boot, ci = 200, 0.95
    with pytest.warns(UserWarning, match=r"groups a \(6\) have fewer items than n_candidates=9"):
        scores = evaluate_retrieval(pred, target, n_candidates=9, n_repeats=2, topk=(1,), n_boot=n_boot,
                                    ci=ci, groups=labels, random_state=7)
    gen = np.random.default_rng(7)
    per_group_reps, values = [], []
    k_grid = np.arange(1, 7)                     # the curve stops at the smallest group
    curves = []
    for g in ("a", "b"):
        m = labels == g
        items, curve_items = _per_item_scores(pred[m], target[m], (1,), k_grid)
        idx = gen.integers(0, m.sum(), size=(n_boot, m.sum()))
        per_group_reps.append(items[idx].mean(1))
        values.append(items.mean(0))
        curves.append(curve_items.mean(0))
        got = scores.groups[g]
        for j, name in enumerate(scores.metrics):
            assert got[name]["value"] == pytest.approx(items[:, j].mean(), abs=1e-12), (g, name)
        assert got["nway_top1_forward"]["chance"] == pytest.approx(1 / m.sum())
    low, high = _quantiles(np.mean(per_group_reps, axis=0), ci)
    for j, name in enumerate(scores.metrics):
        d = scores.metrics[name]
        assert d["value"] == pytest.approx((values[0][j] + values[1][j]) / 2, abs=1e-12), name
        assert (d["ci_low"], d["ci_high"]) == pytest.approx((low[j], high[j]), abs=1e-12), name
    assert scores.metrics["nway_top1_forward"]["chance"] == pytest.approx((1 / 6 + 1 / 9) / 2)
    assert scores.group_sizes == {"a": 6, "b": 9} and scores.n_items == 15
    np.testing.assert_array_equal(scores.topk_curve["k"], k_grid)
    np.testing.assert_allclose(np.concatenate([scores.topk_curve["forward"], scores.topk_curve["backward"]]),
                               np.mean(curves, axis=0), atol=1e-12)
    assert scores.n_candidates == 6                # the smallest group decides the N-way actually used


def test_groups_of_two_items_are_enough_and_one_item_is_refused():
    from neurodecode.tasks.retrieval import evaluate_retrieval

    target = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [0.3, 1.0], [0.9, 0.9]])
    pred = np.array([[1.0, 0.1], [0.1, 1.0], [0.0, 1.0], [0.3, 1.0], [1.0, 1.0]])
    groups = np.array([0, 0, 1, 1, 1])           # sizes 2 and 3
    with pytest.warns(UserWarning, match=r"groups 0 \(2\), 1 \(3\) have fewer items than n_candidates=4"):
        scores = evaluate_retrieval(pred, target, groups=groups, n_candidates=4, n_repeats=1, n_boot=0,
                                    topk=(1,))
    for g in (0, 1):
        m = groups == g
        assert scores.groups[str(g)]["2way_forward"]["value"] == pytest.approx(identification_2way(pred[m], target[m]))
        assert scores.groups[str(g)]["top1_backward"]["value"] == pytest.approx(
            topk_accuracy(pred[m], target[m], 1, direction="backward"))
    assert scores.group_sizes == {"0": 2, "1": 3}
    with pytest.warns(UserWarning):
        as_tensor = evaluate_retrieval(pred, target, groups=torch.tensor(groups), n_candidates=4, n_repeats=1,
                                       n_boot=0, topk=(1,))
    assert as_tensor.group_sizes == scores.group_sizes
    assert as_tensor["2way_forward"] == scores["2way_forward"]
    with pytest.raises(ValueError, match="at least 2 items"):
        evaluate_retrieval(pred, target, groups=np.array([0, 0, 1, 1, 2]), n_candidates=2, n_boot=0)
    with pytest.raises(ValueError, match="one label per row"):
        evaluate_retrieval(pred, target, groups=groups[:4], n_candidates=2, n_boot=0)


def test_protocol_records_every_setting():
    from neurodecode.tasks.retrieval import evaluate_retrieval

    rng = np.random.default_rng(0)
    target = rng.normal(size=(12, 3))
    pred = target + rng.normal(size=target.shape)
    s = evaluate_retrieval(pred, target, n_candidates=5, n_repeats=2, topk=[3, 1, 3], n_boot=7, ci=0.8,
                           random_state=3)
    p = dict(s.protocol)
    assert p.pop("description") == s.description and "5-way top-1: mean over 2 random draws" in s.description
    assert p == {"name": "mindeye2_retrieval", "similarity": "cosine", "n_candidates": 5, "n_repeats": 2,
                 "topk": [3, 1], "n_boot": 7, "ci": 0.8, "bootstrap": "items, percentile, paired across metrics",
                 "ties": "count as failures", "grouped": False, "random_state": 3, "n_candidates_used": 5}
    assert list(s.metrics)[4:] == ["top3_forward", "top3_backward", "top1_forward", "top1_backward"]
    assert evaluate_retrieval(pred, target, n_candidates=5, n_boot=0, random_state=None).protocol["random_state"] is None
    gen = evaluate_retrieval(pred, target, n_candidates=5, n_boot=0, random_state=np.random.default_rng(1))
    assert gen.protocol["random_state"] == "Generator"
    grouped = evaluate_retrieval(pred, target, n_candidates=5, n_repeats=2, n_boot=7, ci=0.8,
                                 groups=np.repeat(["x", "y"], [5, 7]), random_state=3)
    gp = grouped.protocol
    assert gp["grouped"] is True and gp["n_candidates_used"] == 5 and gp["n_candidates"] == 5
    assert gp["bootstrap"] == "items, percentile, paired across metrics, stratified by group"
    assert gp["name"] == "mindeye2_retrieval" and gp["n_boot"] == 7 and gp["ci"] == 0.8


def _same(a, b):
    """Equal, NaN equal to NaN, arrays compared element-wise."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype.kind == b.dtype.kind and bool(np.array_equal(a, b, equal_nan=True))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b


@pytest.mark.filterwarnings("ignore:groups s1")
@pytest.mark.parametrize("n_boot", [0, 25])
def test_json_round_trip_keeps_every_field(n_boot):
    """to_dict -> JSON -> from_dict gives back every field (NaN CIs of n_boot=0 included), grouped scores too."""
    import json

    from neurodecode.tasks.retrieval import RetrievalScores, evaluate_retrieval

    rng = np.random.default_rng(5)
    target = rng.normal(size=(14, 4))
    pred = target + rng.normal(size=target.shape)
    groups = np.repeat(["s1", "s2"], [6, 8])
    for g in (None, groups):
        s = evaluate_retrieval(pred, target, n_candidates=10, n_repeats=2, topk=(1, 3), n_boot=n_boot,
                               groups=g, random_state=0)
        data = json.loads(json.dumps(s.to_dict(), allow_nan=False))
        back = RetrievalScores.from_dict(data)
        for f in ("metrics", "groups", "topk_curve", "group_topk_curves", "n_items", "group_sizes"):
            assert _same(getattr(back, f), getattr(s, f)), f
        assert back.n_items == 14 and back.topk_curve["k"].dtype.kind == "i"
        assert back.protocol == json.loads(json.dumps(s.to_dict()["protocol"]))
        assert back.description == s.description and back.n_candidates == s.n_candidates
        assert back.replicates is None and repr(back) == repr(s)
        if g is not None:
            assert back.group_sizes == {"s1": 6, "s2": 8} and set(back.group_topk_curves) == {"s1", "s2"}
        if n_boot == 0:
            assert np.isnan(back.topk_curve["forward_ci_low"]).all()
        else:
            assert not np.isnan(back.topk_curve["forward_ci_low"]).any()


def test_combine_refuses_bad_input_and_pools_curves_on_shared_k():
    from neurodecode.tasks.retrieval import RetrievalScores, evaluate_retrieval

    with pytest.raises(ValueError, match="empty"):
        RetrievalScores.combine({})
    m = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "chance": 0.5}
    a = RetrievalScores(metrics={"2way_forward": dict(m)}, n_items=4)
    b = RetrievalScores(metrics={"2way_backward": dict(m)}, n_items=4)
    with pytest.raises(ValueError, match="expected"):
        RetrievalScores.combine({"a": a, "b": b})
    # scores without curves (e.g. an old metrics.json): values averaged, no curve invented
    c = RetrievalScores(metrics={"2way_forward": dict(m, value=0.7, ci_low=0.6, ci_high=0.8)}, n_items=6)
    pooled = RetrievalScores.combine({"a": a, "c": c})
    assert pooled["2way_forward"] == pytest.approx(0.6) and pooled.topk_curve == {}
    assert pooled.group_topk_curves == {} and pooled.n_items == 10 and pooled.group_sizes == {"a": 4, "c": 6}
    # groups of different sizes: the pooled curve lives on the k values both have
    rng = np.random.default_rng(1)
    parts = {}
    for g, n in (("small", 5), ("large", 9)):
        t = rng.normal(size=(n, 3))
        parts[g] = evaluate_retrieval(t + rng.normal(size=t.shape), t, n_candidates=n, n_repeats=1, n_boot=20)
    pooled = RetrievalScores.combine(parts)
    np.testing.assert_array_equal(pooled.topk_curve["k"], np.arange(1, 6))
    for key in ("forward", "backward", "chance"):
        np.testing.assert_allclose(pooled.topk_curve[key], (parts["small"].topk_curve[key]
                                                             + parts["large"].topk_curve[key][:5]) / 2)


def _three_subjects():
    rng = np.random.default_rng(11)
    target = rng.standard_normal((36, 6))
    pred = target + 1.5 * rng.standard_normal((36, 6))
    groups = np.repeat(["s1", "s2", "s3"], 12)
    return pred, target, groups


def _assert_same_scores(a, b):
    assert list(a.metrics) == list(b.metrics)
    for name in a.metrics:
        assert a.metrics[name] == pytest.approx(b.metrics[name], rel=1e-12), name
    assert set(a.topk_curve) == set(b.topk_curve)
    for key in a.topk_curve:
        np.testing.assert_allclose(a.topk_curve[key], b.topk_curve[key], rtol=1e-12, err_msg=key)


def test_combine_of_per_subject_scores_equals_the_grouped_evaluation():
    """Scoring each subject separately then ``combine`` = ``evaluate_retrieval(groups=...)``, values and
    every CI, top-k curve included (both the stratified bootstrap of the same item resamples)."""
    from neurodecode.tasks.retrieval import RetrievalScores, evaluate_retrieval

    pred, target, groups = _three_subjects()
    kw = {"n_candidates": 8, "n_repeats": 5, "topk": (1, 3), "n_boot": 200}
    grouped = evaluate_retrieval(pred, target, groups=groups, random_state=np.random.default_rng(2), **kw)
    rng = np.random.default_rng(2)                                 # the same stream, group after group
    per = {g: evaluate_retrieval(pred[groups == g], target[groups == g], random_state=rng, **kw)
           for g in ("s1", "s2", "s3")}
    for s in per.values():
        assert s.replicates is not None and s.curve_replicates is not None
        n_k = len(s.topk_curve["k"])
        assert s.curve_replicates.shape == (200, 2 * n_k)
        low, high = np.percentile(s.curve_replicates, [2.5, 97.5], axis=0)
        np.testing.assert_allclose(s.topk_curve["forward_ci_low"], low[:n_k])
        np.testing.assert_allclose(s.topk_curve["backward_ci_high"], high[n_k:])
    pooled = RetrievalScores.combine(per)
    _assert_same_scores(pooled, grouped)
    assert pooled.curve_replicates is not None and "stratified by group" in pooled.protocol["bootstrap"]
    # brute force: the pooled curve CI is the percentile interval of the mean of the subjects' replicates
    mean_reps = np.mean([s.curve_replicates for s in per.values()], axis=0)
    n_k = len(pooled.topk_curve["k"])
    low, high = np.percentile(mean_reps, [2.5, 97.5], axis=0)
    np.testing.assert_allclose(pooled.topk_curve["forward_ci_low"], low[:n_k])
    np.testing.assert_allclose(pooled.topk_curve["backward_ci_high"], high[n_k:])
    # from JSON (no replicates): the normal approximation, which is a different interval
    loaded = RetrievalScores.combine({g: s.to_dict() for g, s in per.items()})
    assert loaded.curve_replicates is None and "normal" in loaded.protocol["bootstrap"]
    np.testing.assert_allclose(loaded.topk_curve["forward"], pooled.topk_curve["forward"])
    assert not np.allclose(loaded.topk_curve["forward_ci_low"], pooled.topk_curve["forward_ci_low"])


def test_metrics_json_writes_k_as_integers_and_round_trips_exactly():
    """``to_dict`` → JSON text → ``from_dict`` → ``to_dict`` gives the same text; the k of every curve is
    written as JSON integers (``1``, not ``1.0``), values as floats or null."""
    import json

    from neurodecode.tasks.retrieval import RetrievalScores, evaluate_retrieval

    pred, target, groups = _three_subjects()
    for kw in ({"groups": groups}, {"n_boot": 0}):
        s = evaluate_retrieval(pred, target, n_candidates=8, n_repeats=3, topk=(1,), **{"n_boot": 50, **kw})
        text = json.dumps(s.to_dict(), sort_keys=True)
        data = json.loads(text)
        curves = [data["topk_curve"], *data["group_topk_curves"].values()]
        assert len(curves) == (4 if "groups" in kw else 1)
        for c in curves:
            assert c["k"] and all(type(v) is int for v in c["k"])
            assert c["k"] == list(range(1, len(c["k"]) + 1))
            for key, vals in c.items():
                if key != "k":
                    assert all(v is None or type(v) is float for v in vals), key
        assert ('"k": [1, 2, 3' in text) and ('"k": [1.0' not in text)
        back = RetrievalScores.from_dict(data)
        assert json.dumps(back.to_dict(), sort_keys=True) == text
        assert back.topk_curve["k"].dtype.kind == "i"
