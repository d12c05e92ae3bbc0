"""Retrieval evaluation: decoded embeddings against the embeddings of the seen stimuli.

The protocols follow the published ones:

- **MindEye2 N-way top-1** (``nway_top1_*``): repeat ``n_repeats`` times (30), draw
  ``n_candidates`` (300) test items without replacement, and within that subset score
  top-1 accuracy brain → image ("forward": for each decoded embedding, is the
  embedding of its own stimulus the most similar candidate?) and image → brain
  ("backward": for each stimulus embedding, is its own decoded embedding the most
  similar?). The value is the mean over repeats; chance is ``1 / n_candidates``.
  With ``n_candidates >= n_items`` this is top-1 among all items, i.e. the "200-way"
  THINGS-EEG2 protocol of ATM/NICE when the test set has 200 concepts.
- **2-way identification** (``2way_*``): for each item, the fraction of the other
  items whose embedding is *less* similar to the prediction than the true one,
  averaged over items (chance 0.5).
- **Top-k among all items** (``top{k}_*``): for each k of ``topk``, the fraction of
  items whose true match ranks among the k most similar of all ``n_items``
  candidates (brainmagick reports top-10 segment accuracy this way). The whole
  curve k = 1 … n is kept for plotting.

Similarity is cosine. Exact ties count as failures: a candidate that is *as* similar
as the true match beats it. Identical candidate rows (duplicate stimuli, or the same
image shown to several subjects and pooled) therefore always tie, and rows are
de-duplicated before the similarity product so that such ties are exact and do not
depend on floating-point summation order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.random import Generator

from ..utils import (
    check_option,
    check_random_state,
    ensure_finite,
    fill_doc,
    json_float,
    logger,
    to_jsonable,
    verbose,
    warn,
)
from .bootstrap import bootstrap_counts, check_ci, percentile_interval

__all__ = ["RetrievalScores", "evaluate_retrieval", "identification_2way", "retrieve",
           "topk_accuracy"]

_DIRECTIONS = ("forward", "backward")
_ARROWS = {"forward": "brain→image", "backward": "image→brain"}


# --------------------------------------------------------------------------- inputs
def _as_2d_array(x: Any, name: str) -> np.ndarray:
    """Return ``x`` (numpy or torch) as float64, shape (n, dim); trailing dims flattened."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(
            f"{name} must have shape (n_items, dim) (trailing dimensions are flattened, as "
            f"MindEye2 does for token embeddings), got shape {arr.shape}"
        )
    arr = arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)
    ensure_finite(arr, what=name)
    return arr


def _check_pair(pred: Any, target: Any, *, aligned: bool = True) -> tuple[np.ndarray, np.ndarray]:
    pred = _as_2d_array(pred, "pred")
    target = _as_2d_array(target, "target")
    if pred.shape[1] != target.shape[1]:
        raise ValueError(
            f"pred and target must have the same embedding size, got {pred.shape[1]} "
            f"(pred) and {target.shape[1]} (target)"
        )
    if aligned and pred.shape[0] != target.shape[0]:
        raise ValueError(
            "pred and target must be aligned row by row (row i of pred decodes the stimulus "
            f"of row i of target), got {pred.shape[0]} and {target.shape[0]} rows"
        )
    if aligned and pred.shape[0] < 2:
        raise ValueError(f"retrieval needs at least 2 items, got {pred.shape[0]}")
    return pred, target


def _unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of ``x`` (bitwise, with -0.0 folded into 0.0) and the inverse index."""
    x = np.ascontiguousarray(x + 0.0)
    void = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    _, first, inverse = np.unique(void, return_index=True, return_inverse=True)
    return x[first], inverse.ravel()


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float64).tiny)


def _cosine_similarity(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Cosine similarity, shape (n_pred, n_target); identical rows give identical entries.

    A zero row has similarity 0 to everything (so it ties, i.e. fails).
    """
    up, inv_p = _unique_rows(pred)
    ut, inv_t = _unique_rows(target)
    sim = _normalize_rows(up) @ _normalize_rows(ut).T
    return sim[inv_p][:, inv_t]


def _check_direction(direction: str) -> str:
    return check_option("direction", direction, _DIRECTIONS)


def _competitor_counts(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For aligned ``sim`` return (ge_fwd, ge_bwd, count_fwd, count_bwd).

    ``ge_fwd[i, j]`` is True when target j is at least as similar to pred i as target i
    (ties count against the true match); ``count_fwd[i]`` is how many *other* targets do
    so, i.e. the pessimistic 0-based rank of the true match. ``ge_bwd[i, j]`` is True
    when pred i is at least as similar to target j as pred j.
    """
    diag = np.diag(sim)
    ge_fwd = sim >= diag[:, None]
    ge_bwd = sim >= diag[None, :]
    count_fwd = ge_fwd.sum(axis=1) - 1
    count_bwd = ge_bwd.sum(axis=0) - 1
    return ge_fwd, ge_bwd, count_fwd, count_bwd


# --------------------------------------------------------------------------- helpers
@verbose
@fill_doc
def retrieve(pred: Any, target: Any, k: int = 5, *,
             direction: Literal["forward", "backward"] = "forward",
             verbose: bool | str | int | None = None) -> np.ndarray:
    """Indices of the ``k`` most similar candidates for each query (cosine similarity).

    Parameters
    ----------
    pred : array-like, shape (n_queries, dim)
        Decoded embeddings (numpy array or torch tensor).
    target : array-like, shape (n_candidates, dim)
        Candidate stimulus embeddings. Need not be aligned with ``pred`` for
        ``direction="forward"`` (e.g. a larger gallery).
    k : int
        Number of candidates to return (clipped to the number of candidates).
    direction : "forward" | "backward"
        ``"forward"``: queries are rows of ``pred``, candidates rows of ``target``
        (brain → image). ``"backward"``: queries are rows of ``target``, candidates
        rows of ``pred`` (image → brain).
    %(verbose)s

    Returns
    -------
    indices : ndarray of int, shape (n_queries, k)
        Candidate row indices, most similar first. Equal similarities are ordered by
        candidate index (lower first), so the result is deterministic.
    """
    direction = _check_direction(direction)
    pred, target = _check_pair(pred, target, aligned=False)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if direction == "backward":
        pred, target = target, pred
    sim = _cosine_similarity(pred, target)
    k = min(int(k), sim.shape[1])
    order = np.argsort(-sim, axis=1, kind="stable")
    return order[:, :k]


@verbose
@fill_doc
def identification_2way(pred: Any, target: Any, *,
                        direction: Literal["forward", "backward"] = "forward",
                        verbose: bool | str | int | None = None) -> float:
    """Pairwise (2-way) identification accuracy; chance is 0.5.

    For each item i, the fraction of the other items j whose embedding is strictly less
    similar to the query than the true match (ties count as failures), averaged over
    items.

    Parameters
    ----------
    pred, target : array-like, shape (n_items, dim)
        Decoded and true embeddings, aligned row by row.
    direction : "forward" | "backward"
        ``"forward"`` compares ``sim(pred_i, target_i)`` with ``sim(pred_i, target_j)``
        (brain → image); ``"backward"`` compares it with ``sim(pred_j, target_i)``.
    %(verbose)s

    Returns
    -------
    accuracy : float
    """
    direction = _check_direction(direction)
    pred, target = _check_pair(pred, target)
    _, _, cf, cb = _competitor_counts(_cosine_similarity(pred, target))
    counts = cf if direction == "forward" else cb
    n = len(counts)
    return float(np.mean((n - 1 - counts) / (n - 1)))


@verbose
@fill_doc
def topk_accuracy(pred: Any, target: Any, k: int | Sequence[int] = 1, *,
                  direction: Literal["forward", "backward"] = "forward",
                  verbose: bool | str | int | None = None) -> float | np.ndarray:
    """Top-k accuracy among all items (ties count as failures).

    Parameters
    ----------
    pred, target : array-like, shape (n_items, dim)
        Decoded and true embeddings, aligned row by row.
    k : int | sequence of int
        Rank cut-off(s). Chance is ``min(k, n_items) / n_items``.
    direction : "forward" | "backward"
        Brain → image (``"forward"``) or image → brain (``"backward"``).
    %(verbose)s

    Returns
    -------
    accuracy : float | ndarray
        A float for an int ``k``, else an array with one value per ``k``.
    """
    direction = _check_direction(direction)
    pred, target = _check_pair(pred, target)
    ks = _check_topk(k if not np.isscalar(k) else (k,))
    _, _, cf, cb = _competitor_counts(_cosine_similarity(pred, target))
    counts = cf if direction == "forward" else cb
    acc = np.array([np.mean(counts < kk) for kk in ks])
    return float(acc[0]) if np.isscalar(k) else acc


def _check_topk(topk: Sequence[int]) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in topk)
    except (TypeError, ValueError):
        raise TypeError(f"topk must be a sequence of positive integers, got {topk!r}") from None
    if any(k < 1 or k != kk for k, kk in zip(ks, topk)):
        raise ValueError(f"topk must hold positive integers, got {topk!r}")
    return tuple(dict.fromkeys(ks))  # unique, order kept


def _k_grid(n: int) -> np.ndarray:
    """k = 1 … min(n, 100), then a log grid up to n (where every curve reaches 1)."""
    ks = np.arange(1, min(n, 100) + 1)
    if n > 100:
        ks = np.union1d(ks, np.unique(np.round(np.geomspace(100, n, 40)).astype(int)))
    return ks


# --------------------------------------------------------------------------- results
def metric_label(name: str, n_candidates: int) -> str:
    key, _, direction = name.rpartition("_")
    arrow = _ARROWS.get(direction, direction)
    if key == "nway_top1":
        return f"{n_candidates}-way top-1, {arrow}"
    if key == "2way":
        return f"2-way identification, {arrow}"
    if key.startswith("top"):
        return f"top-{key[3:]} among all, {arrow}"
    return name



def _from_json_float(x: Any) -> float:
    return float("nan") if x is None else float(x)


@dataclass(repr=False)
class RetrievalScores:
    """Retrieval scores with bootstrap confidence intervals.

    Parameters
    ----------
    metrics : dict
        ``name -> {"value", "ci_low", "ci_high", "chance"}``. Names: ``nway_top1_forward``,
        ``nway_top1_backward`` (MindEye2 N-way top-1), ``2way_forward``, ``2way_backward``
        (pairwise identification), ``top{k}_forward``, ``top{k}_backward`` (top-k among all).
        ``forward`` is brain → image, ``backward`` image → brain.
    groups : dict
        ``group label -> metrics`` (same layout), one entry per group (e.g. subject)
        when ``groups`` was given, else empty.
    topk_curve : dict of ndarray
        ``"k"``, ``"forward"``, ``"forward_ci_low"``, ``"forward_ci_high"``, ``"backward"``,
        ``"backward_ci_low"``, ``"backward_ci_high"`` and ``"chance"``: top-k accuracy among
        all items for each k.
    group_topk_curves : dict
        ``group label -> curve`` (same layout as ``topk_curve``).
    n_items : int
        Number of (query, true match) pairs scored.
    group_sizes : dict
        ``group label -> number of items``.
    protocol : dict
        Settings and a plain-language ``"description"`` of how every number was computed.
    replicates : ndarray, shape (n_boot, n_metrics) | None
        Bootstrap replicates of the pooled metrics (columns in ``metrics`` order); kept in
        memory so that per-subject results can be pooled exactly with :meth:`combine`,
        not written by :meth:`to_dict`.
    curve_replicates : ndarray, shape (n_boot, 2 * n_k) | None
        The same for the top-k curve (forward then backward).
    """

    metrics: dict[str, dict[str, float]]
    groups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    topk_curve: dict[str, np.ndarray] = field(default_factory=dict)
    group_topk_curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    n_items: int = 0
    group_sizes: dict[str, int] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    replicates: np.ndarray | None = field(default=None, compare=False)
    curve_replicates: np.ndarray | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ accessors
    @property
    def description(self) -> str:
        """Plain-language description of the protocol."""
        return str(self.protocol.get("description", ""))

    @property
    def n_candidates(self) -> int:
        """Number of candidates per draw actually used for the N-way metric."""
        return int(self.protocol.get("n_candidates_used", self.protocol.get("n_candidates", 0)))

    def label(self, name: str) -> str:
        """Human-readable label of metric ``name`` (e.g. ``"300-way top-1, brain→image"``).

        Parameters
        ----------
        name : str
            A metric name (a key of ``metrics``).

        Returns
        -------
        label : str
            The label, with the number of candidates actually used for the N-way metric.
        """
        return metric_label(name, self.n_candidates)

    def __getitem__(self, name: str) -> float:
        """Point estimate of metric ``name``."""
        return self.metrics[name]["value"]

    # ------------------------------------------------------------------ pooling
    @classmethod
    def combine(cls, scores_by_group: Mapping[Any, RetrievalScores]) -> RetrievalScores:
        """Pool scores computed separately per group (e.g. per subject) into one object.

        The pooled value of each metric is the unweighted mean over groups (as MindEye2
        averages subjects). Its CI is the percentile interval of the mean of the groups'
        bootstrap replicates (a bootstrap stratified by group) when every group kept its
        replicates; otherwise (e.g. scores loaded from JSON) a normal approximation that
        treats groups as independent, ``se = sqrt(sum(se_g ** 2)) / n_groups`` with
        ``se_g`` read off each group's interval, clipped to [0, 1].

        Parameters
        ----------
        scores_by_group : dict
            ``group label -> RetrievalScores`` (each scored without ``groups``).

        Returns
        -------
        scores : RetrievalScores
            With ``groups``, ``group_topk_curves`` and ``group_sizes`` filled in.
        """
        parts = {str(g): (s if isinstance(s, RetrievalScores) else cls.from_dict(s))
                 for g, s in scores_by_group.items()}
        if not parts:
            raise ValueError("scores_by_group is empty")
        nested = [g for g, s in parts.items() if s.groups]
        if nested:
            raise ValueError(f"combine() takes per-group scores without groups of their own; "
                             f"{nested} already have groups")
        first = next(iter(parts.values()))
        names = list(first.metrics)
        for g, s in parts.items():
            if list(s.metrics) != names:
                raise ValueError(f"group {g!r} has metrics {list(s.metrics)}, expected {names}")
        ci = float(first.protocol.get("ci", 0.95))
        values = np.mean([[s.metrics[m]["value"] for m in names] for s in parts.values()], axis=0)
        chance = np.mean([[s.metrics[m]["chance"] for m in names] for s in parts.values()], axis=0)
        reps = [s.replicates for s in parts.values()]
        exact = all(r is not None for r in reps) and len({r.shape for r in reps}) == 1
        replicates = np.mean(reps, axis=0) if exact else None
        if exact:
            low, high = percentile_interval(replicates, ci)
        else:
            low, high = _normal_pool([[s.metrics[m] for m in names] for s in parts.values()],
                                     values, ci)
        # top-k curves on the k values every group has (1 .. min(n_g, 100) at least)
        curve = curve_low = curve_high = curve_reps = None
        curves = [s.topk_curve for s in parts.values()]
        topk_curve: dict[str, np.ndarray] = {}
        if all(c and len(c.get("k", ())) for c in curves):
            k = curves[0]["k"]
            for c in curves[1:]:
                k = np.intersect1d(k, c["k"])
            sel = [np.searchsorted(c["k"], k) for c in curves]
            stack = lambda key: np.array([np.asarray(c[key])[i] for c, i in zip(curves, sel)])  # noqa: E731
            curve = np.concatenate([stack("forward").mean(0), stack("backward").mean(0)])
            creps = [s.curve_replicates for s in parts.values()]
            if exact and all(r is not None for r in creps):
                n_k_all = [len(c["k"]) for c in curves]
                cols = [np.concatenate([i, i + nk]) for i, nk in zip(sel, n_k_all)]
                curve_reps = np.mean([r[:, c] for r, c in zip(creps, cols)], axis=0)
                curve_low, curve_high = percentile_interval(curve_reps, ci)
            else:
                rows = [[{"value": v, "ci_low": lo, "ci_high": hi} for v, lo, hi in zip(
                    np.concatenate([c["forward"][i], c["backward"][i]]),
                    np.concatenate([c["forward_ci_low"][i], c["backward_ci_low"][i]]),
                    np.concatenate([c["forward_ci_high"][i], c["backward_ci_high"][i]]))]
                    for c, i in zip(curves, sel)]
                curve_low, curve_high = _normal_pool(rows, curve, ci)
            topk_curve = _curve_dict(k, curve, stack("chance").mean(0), curve_low, curve_high)
        m_used = min(s.n_candidates for s in parts.values())
        p = first.protocol
        protocol = {**p, "n_candidates_used": m_used, "grouped": True,
                    "bootstrap": "items, percentile, paired across metrics, stratified by group"
                    if exact else "per-group percentile CIs pooled by a normal approximation",
                    "description": _description(m_used, int(p.get("n_repeats", 0)), ci,
                                                int(p.get("n_boot", 0)), grouped=True, exact=exact)}
        return cls(
            metrics=_metrics_dict(names, values, chance, low, high),
            groups={g: {m: dict(d) for m, d in s.metrics.items()} for g, s in parts.items()},
            topk_curve=topk_curve,
            group_topk_curves={g: dict(s.topk_curve) for g, s in parts.items() if s.topk_curve},
            n_items=int(sum(s.n_items for s in parts.values())),
            group_sizes={g: int(s.n_items) for g, s in parts.items()},
            protocol=protocol, replicates=replicates, curve_replicates=curve_reps,
        )

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (NaN becomes ``None``); inverse of :meth:`from_dict`.

        Returns
        -------
        data : dict
            The fields (without the bootstrap replicates) plus a ``"labels"`` entry with
            the label of every metric.
        """
        def _metrics(m):
            return {name: {key: json_float(v) for key, v in d.items()} for name, d in m.items()}

        def _curve(c):
            return {key: [(json_float(v) if key != "k" else int(v)) for v in np.asarray(arr)]
                    for key, arr in c.items()}

        return {
            "metrics": _metrics(self.metrics),
            "labels": {name: self.label(name) for name in self.metrics},
            "groups": {g: _metrics(m) for g, m in self.groups.items()},
            "topk_curve": _curve(self.topk_curve),
            "group_topk_curves": {g: _curve(c) for g, c in self.group_topk_curves.items()},
            "n_items": int(self.n_items),
            "group_sizes": {g: int(v) for g, v in self.group_sizes.items()},
            "protocol": to_jsonable(self.protocol),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrievalScores:
        """Rebuild scores from :meth:`to_dict` output (e.g. a loaded ``metrics.json``).

        Parameters
        ----------
        data : mapping
            Output of :meth:`to_dict` (``None`` values are read back as NaN).

        Returns
        -------
        scores : RetrievalScores
            The scores, without bootstrap replicates.
        """
        def _metrics(m):
            return {name: {key: _from_json_float(v) for key, v in d.items()} for name, d in m.items()}

        def _curve(c):
            return {key: (np.asarray(v, dtype=int) if key == "k"
                          else np.array([_from_json_float(x) for x in v], dtype=float))
                    for key, v in c.items()}

        return cls(
            metrics=_metrics(data["metrics"]),
            groups={g: _metrics(m) for g, m in data.get("groups", {}).items()},
            topk_curve=_curve(data.get("topk_curve", {})),
            group_topk_curves={g: _curve(c) for g, c in data.get("group_topk_curves", {}).items()},
            n_items=int(data.get("n_items", 0)),
            group_sizes={g: int(v) for g, v in data.get("group_sizes", {}).items()},
            protocol=dict(data.get("protocol", {})),
        )

    def to_frame(self):
        """Tidy :class:`pandas.DataFrame`: metric, group, value, ci_low, ci_high, chance.

        The pooled scores have ``group == "all"``; per-group rows follow.

        Returns
        -------
        frame : pandas.DataFrame
            One row per metric and group.
        """
        import pandas as pd

        rows = []
        for group, metrics in (("all", self.metrics), *self.groups.items()):
            for name, d in metrics.items():
                rows.append({"metric": name, "group": group, "value": d["value"],
                             "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                             "chance": d["chance"]})
        return pd.DataFrame(rows, columns=["metric", "group", "value", "ci_low", "ci_high",
                                           "chance"])

    def __repr__(self) -> str:
        p = self.protocol
        ci = p.get("ci", 0.95)
        head = (f"<RetrievalScores | {self.n_items} items"
                + (f" in {len(self.groups)} groups" if self.groups else "")
                + f", {self.n_candidates}-way x {p.get('n_repeats', '?')} repeats, "
                f"{ci:.0%} bootstrap CI ({p.get('n_boot', '?')} resamples)>")
        labels = {name: self.label(name) for name in self.metrics}
        width = max([len(v) for v in labels.values()] + [6])
        lines = [head, f"  {'metric':<{width}}  {'value':>7}  {f'{ci:.0%} CI':<17}  {'chance':>7}"]
        for name, d in self.metrics.items():
            lines.append(f"  {labels[name]:<{width}}  {d['value']:>7.4f}  "
                         f"[{d['ci_low']:.4f}, {d['ci_high']:.4f}]  {d['chance']:>7.4f}")
        return "\n".join(lines)



# --------------------------------------------------------------------------- scoring
@dataclass
class _Block:
    """Scores of one set of items (all items, or one group), before the CIs."""

    names: list[str]
    chance: np.ndarray          # (n_metrics,)
    numer: np.ndarray           # (n_items, n_metrics) per-item numerators
    denom: np.ndarray           # (n_items, n_metrics) per-item denominators
    curve_items: np.ndarray     # (n_items, 2 * n_k) per-item hit indicators (fwd | bwd)
    curve_chance: np.ndarray    # (n_k,)
    n_items: int
    n_used: int

    @property
    def values(self) -> np.ndarray:
        return self.numer.sum(0) / self.denom.sum(0)

    @property
    def curve(self) -> np.ndarray:
        return self.curve_items.mean(0)

    def replicates(self, counts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
        if counts is None:
            return None
        w = counts.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats = (w @ self.numer) / (w @ self.denom)
        return stats, (w @ self.curve_items) / self.n_items


def _score_block(pred: np.ndarray, target: np.ndarray, *, n_candidates: int, n_repeats: int,
                 topk: tuple[int, ...], k_grid: np.ndarray, rng: Generator) -> _Block:
    n = len(pred)
    sim = _cosine_similarity(pred, target)
    ge_fwd, ge_bwd, cf, cb = _competitor_counts(sim)
    del sim

    # MindEye2: n_repeats random subsets of m candidates, top-1 within each subset.
    m = min(n_candidates, n)  # fewer items than candidates: all of them (warned by caller)
    if m < n:
        order = rng.permuted(np.tile(np.arange(n), (n_repeats, 1)), axis=1)[:, :m]
    else:
        order = np.tile(np.arange(n), (n_repeats, 1))
    member = np.zeros((n_repeats, n), dtype=np.float32)
    np.put_along_axis(member, order, 1.0, axis=1)
    # candidates (incl. itself) in each subset at least as similar as the true match
    within_fwd = ge_fwd.astype(np.float32) @ member.T            # (n, R)
    within_bwd = member @ ge_bwd.astype(np.float32)              # (R, n)
    hits_fwd = (member.T > 0) & (within_fwd == 1)                # only the true match itself
    hits_bwd = (member > 0) & (within_bwd == 1)
    appear = member.sum(0).astype(np.float64)                    # times each item was drawn
    nway_fwd = hits_fwd.sum(1).astype(np.float64)
    nway_bwd = hits_bwd.sum(0).astype(np.float64)

    names = ["nway_top1_forward", "nway_top1_backward", "2way_forward", "2way_backward"]
    ones = np.ones(n)
    numer = [nway_fwd, nway_bwd, (n - 1 - cf) / (n - 1), (n - 1 - cb) / (n - 1)]
    denom = [appear, appear, ones, ones]
    chance = [1.0 / m, 1.0 / m, 0.5, 0.5]
    for k in topk:
        names += [f"top{k}_forward", f"top{k}_backward"]
        numer += [(cf < k).astype(np.float64), (cb < k).astype(np.float64)]
        denom += [ones, ones]
        chance += [min(k, n) / n] * 2
    curve_items = np.concatenate([cf[:, None] < k_grid[None, :], cb[:, None] < k_grid[None, :]],
                                 axis=1).astype(np.float64)
    return _Block(names=names, chance=np.asarray(chance), numer=np.stack(numer, 1),
                  denom=np.stack(denom, 1), curve_items=curve_items,
                  curve_chance=np.minimum(k_grid, n) / n, n_items=n, n_used=m)


def _metrics_dict(names, values, chance, low, high) -> dict[str, dict[str, float]]:
    return {name: {"value": float(values[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
                   "chance": float(chance[i])} for i, name in enumerate(names)}


def _curve_dict(k_grid, curve, chance, low, high) -> dict[str, np.ndarray]:
    n_k = len(k_grid)
    return {"k": np.asarray(k_grid, dtype=int),
            "forward": curve[:n_k], "forward_ci_low": low[:n_k], "forward_ci_high": high[:n_k],
            "backward": curve[n_k:], "backward_ci_low": low[n_k:], "backward_ci_high": high[n_k:],
            "chance": np.asarray(chance, dtype=float)}


def _normal_pool(per_group: list[list[Mapping[str, float]]], values: np.ndarray,
                 ci: float) -> tuple[np.ndarray, np.ndarray]:
    """CI of a mean over independent groups from each group's interval (normal approximation)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + ci / 2)
    lo = np.array([[d["ci_low"] for d in row] for row in per_group], dtype=float)
    hi = np.array([[d["ci_high"] for d in row] for row in per_group], dtype=float)
    se = np.sqrt(np.sum(((hi - lo) / (2 * z)) ** 2, axis=0)) / len(per_group)
    return np.clip(values - z * se, 0.0, 1.0), np.clip(values + z * se, 0.0, 1.0)


def _description(m_used: int, n_repeats: int, ci: float, n_boot: int, *, grouped: bool,
                 exact: bool = True) -> str:
    if not n_boot:
        boot = "No bootstrap (n_boot=0)."
    elif grouped and not exact:
        boot = (f"{ci:.0%} percentile CIs from {n_boot} bootstrap resamples of each group's test "
                "items; pooled CIs by a normal approximation over independent groups.")
    else:
        boot = (f"{ci:.0%} percentile CIs from {n_boot} bootstrap resamples of the test items "
                f"(per-item scores held fixed{', stratified by group' if grouped else ''}).")
    return (
        f"Cosine similarity between decoded and true embeddings. "
        f"{m_used}-way top-1: mean over {n_repeats} random draws of {m_used} test items "
        f"(without replacement) of the fraction whose true match is the most similar candidate "
        f"(MindEye2 protocol; brain→image = forward, image→brain = backward; chance 1/{m_used}). "
        f"2-way identification: per item, fraction of other items less similar than the true "
        f"match, averaged (chance 0.5). Top-k: true match among the k most similar of all "
        f"items. Exact ties count as failures. "
        + ("Retrieval within each group; pooled values are the unweighted mean over groups. "
           if grouped else "")
        + boot
    )


def _retrieval_groups(groups: Any, n: int, n_candidates: int) -> tuple[np.ndarray, list[Any], list[int]]:
    """Group label per row, the groups (``[None]`` for one), their sizes; warns where N-way needs more items."""
    if groups is None:
        labels = np.zeros(n, dtype=int)
        group_keys: list[Any] = [None]
    else:
        labels = np.asarray(groups.detach().cpu().numpy() if hasattr(groups, "detach") else groups)
        if labels.shape != (n,):
            raise ValueError(f"groups must have shape ({n},) (one label per row), got {labels.shape}")
        group_keys = list(np.unique(labels))
    sizes = [int((labels == g).sum()) if g is not None else n for g in group_keys]
    if min(sizes) < 2:
        raise ValueError(f"every group needs at least 2 items, got sizes "
                         f"{dict(zip(map(str, group_keys), sizes))}")
    small = {str(g) if g is not None else "the test set": s
             for g, s in zip(group_keys, sizes) if s < n_candidates}
    if small:
        where = ("the test set has" if groups is None else
                 "groups " + ", ".join(f"{g!s} ({s})" for g, s in small.items()) + " have")
        warn(f"{where} fewer items than n_candidates={n_candidates}; the N-way metric uses all "
             f"items of each such set instead (chance 1/n_items).")

    return labels, group_keys, sizes


@verbose
@fill_doc
def evaluate_retrieval(pred: Any, target: Any, *, n_candidates: int = 300, n_repeats: int = 30,
                       topk: Sequence[int] = (1, 5, 10), n_boot: int = 1000, ci: float = 0.95,
                       groups: Any = None, random_state: None | int | Generator = 0,
                       verbose: bool | str | int | None = None) -> RetrievalScores:
    """Score decoded embeddings by retrieval, with bootstrap confidence intervals.

    Parameters
    ----------
    pred : array-like, shape (n_items, dim)
        Decoded embeddings (numpy array or torch tensor). Row i is the brain response
        to the stimulus whose embedding is row i of ``target``. Trailing dimensions
        (e.g. tokens) are flattened.
    target : array-like, shape (n_items, dim)
        Embeddings of the stimuli, aligned with ``pred``.
    n_candidates : int
        Candidates per draw for the MindEye2 N-way top-1 metric (300 in MindEye1/2).
        When a set has fewer items, all of them are used and a warning is emitted.
    n_repeats : int
        Number of random candidate draws (30 in MindEye2); the value is their mean.
    topk : sequence of int
        Cut-offs for top-k accuracy among all items.
    n_boot : int
        Bootstrap resamples of the test items for the confidence intervals; ``0``
        skips them (the CI bounds are then NaN).
    ci : float
        Confidence level of the percentile intervals.
    groups : array-like, shape (n_items,) | None
        Optional group label of every row (usually the subject). Retrieval then runs
        within each group (each subject's candidates are its own test items, as in
        MindEye2's per-subject evaluation); ``metrics`` holds the unweighted mean over
        groups and ``groups`` the per-group scores.
    random_state : None | int | numpy.random.Generator
        Seed for the candidate draws and the bootstrap.
    %(verbose)s

    Returns
    -------
    scores : RetrievalScores
        Point estimates, percentile CIs and chance levels of every metric, per-group
        scores, the top-k curve, and a description of the protocol.

    Notes
    -----
    One cosine-similarity matrix is computed per group; every metric is derived from
    it. Exact ties count as failures (a candidate as similar as the true match wins),
    and identical rows are de-duplicated first so duplicated stimuli tie exactly.

    **Confidence intervals** come from a bootstrap over test items: ``n_boot`` times,
    the items are resampled with replacement and every metric is recomputed from
    per-item scores that are held fixed (each item's rank among the full candidate set,
    and for the N-way metric its number of hits and of appearances over the
    ``n_repeats`` draws). The N-way replicate is the ratio ``sum(w * hits) /
    sum(w * appearances)``, which equals the mean over repeats when every weight ``w``
    is 1. The candidate pool is thus conditioned on (as in every published protocol):
    the interval reflects the sampling of test stimuli, not of the candidate set. All
    metrics share the same resamples (paired), which keeps the computation a single
    matrix product. With ``groups``, resampling is stratified by group and the pooled
    replicate is the mean of the group replicates.
    """
    pred, target = _check_pair(pred, target)
    n = len(pred)
    if int(n_candidates) != n_candidates or n_candidates < 2:
        raise ValueError(f"n_candidates must be an integer >= 2, got {n_candidates!r}")
    if int(n_repeats) != n_repeats or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer, got {n_repeats!r}")
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    n_candidates, n_repeats, n_boot = int(n_candidates), int(n_repeats), int(n_boot)
    ci = check_ci(ci)
    topk = _check_topk(topk)
    rng = check_random_state(random_state)

    labels, group_keys, sizes = _retrieval_groups(groups, n, n_candidates)
    k_grid = _k_grid(min(sizes))

    logger.info("Scoring retrieval of %d items%s: %d-way x %d repeats, top-%s, %d bootstraps",
                n, f" in {len(group_keys)} groups" if groups is not None else "",
                min(n_candidates, min(sizes)), n_repeats, "/".join(map(str, topk)), n_boot)

    blocks, reps = [], []
    for g in group_keys:
        idx = np.arange(n) if g is None else np.flatnonzero(labels == g)
        block = _score_block(pred[idx], target[idx], n_candidates=n_candidates,
                             n_repeats=n_repeats, topk=topk, k_grid=k_grid, rng=rng)
        counts = bootstrap_counts(block.n_items, n_boot, rng) if n_boot else None
        blocks.append(block)
        reps.append(block.replicates(counts))

    protocol = {
        "name": "mindeye2_retrieval", "similarity": "cosine", "n_candidates": n_candidates,
        "n_repeats": n_repeats, "topk": list(topk), "n_boot": n_boot, "ci": ci,
        "bootstrap": "items, percentile, paired across metrics", "ties": "count as failures",
        "grouped": False,
        "random_state": random_state if isinstance(random_state, (int, type(None))) else "Generator",
    }
    per_group = {}
    for g, block, rep in zip(group_keys, blocks, reps):
        if rep is None:
            low = high = np.full(len(block.names), np.nan)
            clow = chigh = np.full(2 * len(k_grid), np.nan)
        else:
            low, high = percentile_interval(rep[0], ci)
            clow, chigh = percentile_interval(rep[1], ci)
        per_group[g] = RetrievalScores(
            metrics=_metrics_dict(block.names, block.values, block.chance, low, high),
            topk_curve=_curve_dict(k_grid, block.curve, block.curve_chance, clow, chigh),
            n_items=block.n_items,
            protocol={**protocol, "n_candidates_used": block.n_used,
                      "description": _description(block.n_used, n_repeats, ci, n_boot,
                                                  grouped=False)},
            replicates=None if rep is None else rep[0],
            curve_replicates=None if rep is None else rep[1],
        )
    if groups is None:
        scores = per_group[None]
    else:
        scores = RetrievalScores.combine({str(g): sc for g, sc in per_group.items()})
    for name in ("nway_top1_forward", "nway_top1_backward", "2way_forward"):
        d = scores.metrics[name]
        logger.info("  %s: %.4f [%.4f, %.4f] (chance %.4f)", scores.label(name), d["value"],
                    d["ci_low"], d["ci_high"], d["chance"])
    return scores
