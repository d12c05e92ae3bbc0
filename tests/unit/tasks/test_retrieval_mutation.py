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
