"""Where the meaning lives: ablate atlas regions of a trained decoder and test each against chance.

:func:`ablate` takes a trained decoder (a :class:`~neurodecode.models.RidgeDecoder`
or :class:`~neurodecode.models.BrainDecoder`), the training and test trials, the
stimulus embeddings and an atlas (:mod:`neurodecode.analysis.atlases`), and for
every region and strategy measures how much retrieval depends on it:

=============  ===================================================  ======================
strategy       what happens to the region's features                effect
=============  ===================================================  ======================
``zero``       set to 0 in the test trials (the trained decoder)    baseline − score
``mean``       set to their training mean                           baseline − score
``permute``    shuffled across test trials (one permutation for     baseline − score
               the whole region, keeping its covariance)
``without``    a decoder refitted on every feature but the region   baseline − score
``alone``      a decoder refitted on the region only                score − chance
=============  ===================================================  ======================

Each effect gets a bootstrap CI over test items (paired with the intact model) and
a permutation p-value against *random regions of the same size* drawn by the
atlas (spatially contiguous blobs for fMRI, random channel sets or windows for
M/EEG), i.e. "is this region more important than any patch of cortex of its
size?". P-values are corrected with Benjamini–Hochberg across the regions of
each strategy × metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import ProgressBar, check_option, fill_doc, logger, verbose
from .stats import bootstrap_ci, fdr_bh, noise_ceiling, permutation_pvalue

__all__ = ["LESIONS", "METRICS", "RETRAINS", "STRATEGIES", "AblationResult", "ablate"]

LESIONS = ("zero", "mean", "permute")
RETRAINS = ("without", "alone")
STRATEGIES = LESIONS + RETRAINS
#: ``top1``: the true stimulus is the most similar of the candidates (chance 1/m);
#: ``2way``: fraction of the other candidates it beats (chance 0.5).
METRICS = ("top1", "2way")
_COLUMNS = ["atlas", "region", "strategy", "metric", "n_features", "baseline", "chance", "score", "score_ci_low",
            "score_ci_high", "effect", "effect_ci_low", "effect_ci_high", "null_mean", "null_low",
            "null_high", "n_null", "p_value", "p_fdr", "significant", "rank", "noise_ceiling"]


# ---------------------------------------------------------------------------------------------
# predictors
# ---------------------------------------------------------------------------------------------
def _predictor(estimator: Any, shapes: Mapping[Any, tuple[int, ...]]) -> Callable[[Any, np.ndarray], np.ndarray]:
    """``predict(subject, X (n, p)) -> (n, dim)`` for a ridge decoder, a BrainDecoder or a callable."""
    models = getattr(estimator, "subject_models_", None)
    if models is not None:
        def ridge(subject: Any, X: np.ndarray) -> np.ndarray:
            if subject not in models:
                raise ValueError(f"The ridge decoder has no model for subject {subject!r} (fitted: {list(models)})")
            return np.asarray(models[subject].predict(X), dtype=np.float64)
        return ridge
    if hasattr(estimator, "n_inputs") and hasattr(estimator, "embed_dim"):
        import torch

        model = estimator

        def deep(subject: Any, X: np.ndarray) -> np.ndarray:
            model.eval()
            device = next(model.parameters()).device
            out = []
            with torch.no_grad():
                for a in range(0, len(X), 256):
                    x = torch.from_numpy(np.ascontiguousarray(X[a:a + 256], dtype=np.float32))
                    x = x.reshape(len(x), *shapes[subject]).to(device)
                    out.append(model(x, subject).embedding.float().cpu().numpy())
            return np.concatenate(out).astype(np.float64)
        return deep
    if callable(estimator):
        return lambda subject, X: np.asarray(estimator(subject, X), dtype=np.float64)
    raise TypeError(f"estimator must be a fitted RidgeDecoder (fit_trials), a BrainDecoder or a callable "
                    f"predict(subject, X), got {type(estimator).__name__}")


def _linear_weights(estimator: Any) -> dict[Any, np.ndarray] | None:
    """``{subject: coef (dim, p)}`` of a fitted ridge decoder (lesions then cost O(region size))."""
    models = getattr(estimator, "subject_models_", None)
    if models is None:
        return None
    out = {}
    for s, m in models.items():
        coef = getattr(m, "coef_", None)
        if coef is None:
            return None
        out[s] = np.asarray(coef, dtype=np.float64).reshape(-1, np.shape(coef)[-1])
    return out


def _ridge_refitter(estimator: Any, fixed_alpha: bool) -> Callable[[Any, np.ndarray, np.ndarray], Any]:
    """``fit(subject, X, Y) -> predict(X)`` refitting the estimator's ridge on a feature subset."""
    models = getattr(estimator, "subject_models_", None)
    if models is None:
        raise ValueError("The 'without' / 'alone' strategies refit the decoder: pass a fitted RidgeDecoder as "
                         "estimator, or fit_fn=(subject, X_train, Y_train) -> predict(X) for other models")

    def fit(subject: Any, X: np.ndarray, Y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        base = models[subject]
        params = base.get_params()
        if fixed_alpha:
            params |= {"alphas": (float(np.mean(base.alpha_)),), "cv": None}
        return type(base)(**params).fit(X, Y, verbose="warning").predict
    return fit


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------
@dataclass
class _Subject:
    """Test arrays of one subject, and what scoring needs."""

    X: np.ndarray              # (n, p) test features
    cand: np.ndarray           # (m, dim) unique candidate targets, L2-normalised
    true: np.ndarray           # (n,) row of each trial's stimulus in cand
    subsets: np.ndarray | None  # (n, k) candidate rows per trial (n_candidates), None = all
    mean: np.ndarray | None = None   # (p,) training mean (strategy "mean")
    X_train: np.ndarray | None = None
    Y_train: np.ndarray | None = None

    def chance(self, metric: str) -> np.ndarray:
        m = self.cand.shape[0] if self.subsets is None else self.subsets.shape[1] + 1
        return np.full(len(self.true), 1.0 / m if metric == "top1" else 0.5)


def _trial_scores(pred: np.ndarray, sub: _Subject, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-trial forward retrieval scores (ties count as failures, as in ``tasks.retrieval``)."""
    norms = np.linalg.norm(pred, axis=1, keepdims=True)
    p = pred / np.maximum(norms, np.finfo(np.float64).tiny)
    sim = p @ sub.cand.T                                               # (n, m)
    true = sim[np.arange(len(sim)), sub.true]
    if sub.subsets is None:
        beaten = (sim >= true[:, None]).sum(1) - 1                    # others at least as similar
        n_other = sim.shape[1] - 1
    else:
        others = np.take_along_axis(sim, sub.subsets, axis=1)
        beaten = (others >= true[:, None]).sum(1)
        n_other = sub.subsets.shape[1]
    out = {}
    for m in metrics:
        out[m] = (beaten == 0).astype(float) if m == "top1" else (n_other - beaten) / max(n_other, 1)
    return out


def _lesion(X: np.ndarray, idx: np.ndarray, strategy: str, mean: np.ndarray | None,
            rng: np.random.Generator) -> np.ndarray:
    out = X.copy()
    if not len(idx):
        return out
    if strategy == "zero":
        out[:, idx] = 0.0
    elif strategy == "mean":
        out[:, idx] = mean[idx]
    else:  # permute: one permutation of the trials for the whole region
        out[:, idx] = X[rng.permutation(len(X))][:, idx]
    return out


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
@dataclass
class AblationResult:
    """Per-region ablation effects with CIs, permutation p-values and FDR.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per region × strategy × metric (see :meth:`to_frame`).
    baseline : dict
        The intact decoder's scores: ``{metric: {"value", "ci_low", "ci_high", "chance"}}``.
    nulls : dict
        ``(region, strategy, metric) → array`` of the null effects (random same-size regions).
    settings : dict
        The parameters of the analysis (strategies, n_null, seeds, ...).
    atlas : Atlas | None
        The atlas used (for maps).
    """

    frame: pd.DataFrame
    baseline: dict[str, dict[str, float]]
    nulls: dict[tuple[str, str, str], np.ndarray] = field(repr=False)
    settings: dict[str, Any]
    atlas: Any = field(default=None, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """The tidy table: ``atlas, region, strategy, metric, n_features, baseline, chance, score,
        score_ci_low, score_ci_high, effect, effect_ci_low, effect_ci_high, null_mean, null_low,
        null_high, n_null, p_value, p_fdr, significant, rank, noise_ceiling`` (``baseline``: the
        intact decoder's score, or chance for ``alone``; ``chance``: the metric's chance level;
        rank 1 = largest effect; ``noise_ceiling``: the mean NSD noise ceiling in % of the
        region's voxels from ``ncsnr``, for the number of repetitions averaged per test item;
        NaN without ncsnr).

        Returns
        -------
        frame : pandas.DataFrame
            A copy of the table.
        """
        return self.frame.copy()

    def top(self, strategy: str | None = None, metric: str | None = None) -> str:
        """The region ranked first (largest effect) for ``strategy`` × ``metric`` (default: the first).

        Parameters
        ----------
        strategy : str | None
            Ablation strategy; ``None`` takes the first one in the table.
        metric : str | None
            Metric; ``None`` takes the first one in the table.

        Returns
        -------
        region : str
            Name of the region of rank 1.
        """
        f = self._subset(strategy, metric)
        return str(f.sort_values("rank").iloc[0]["region"])

    def _subset(self, strategy: str | None, metric: str | None) -> pd.DataFrame:
        f = self.frame
        strategy = strategy or str(f["strategy"].iloc[0])
        metric = metric or str(f["metric"].iloc[0])
        sub = f[(f["strategy"] == strategy) & (f["metric"] == metric)]
        if sub.empty:
            raise ValueError(f"No rows for strategy={strategy!r}, metric={metric!r}; the result has "
                             f"strategies {sorted(set(f['strategy']))} and metrics {sorted(set(f['metric']))}")
        return sub

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: settings, baseline, rows (NaN → null).

        Returns
        -------
        data : dict
            ``{"settings", "baseline", "rows"}``, one row per line of the table.
        """
        from ..utils import to_jsonable

        return to_jsonable({"settings": self.settings, "baseline": self.baseline,
                          "rows": self.frame.to_dict(orient="records")})

    def save(self, folder: str | Path) -> Path:
        """Write ``ablation.csv`` and ``ablation.json`` into ``folder`` (atomically); return it.

        Parameters
        ----------
        folder : str | Path
            Output folder (created if needed).

        Returns
        -------
        folder : Path
            The output folder.
        """
        from ..utils import atomic_path, atomic_write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "ablation.csv") as tmp:
            self.frame.to_csv(tmp, index=False)
        atomic_write_json(folder / "ablation.json", self.to_dict())
        return folder

    def __repr__(self) -> str:
        n = self.frame["region"].nunique() if len(self.frame) else 0
        lines = [(f"<AblationResult | {self.settings.get('atlas')}: {n} regions, "
                  f"strategies {self.settings.get('strategies')}>")]
        for (s, m), f in self.frame.groupby(["strategy", "metric"], sort=False):
            best = f.sort_values("rank").iloc[0]
            lines.append(f"  {s}/{m}: top {best['region']!r} effect {best['effect']:.3f} "
                         f"[{best['effect_ci_low']:.3f}, {best['effect_ci_high']:.3f}], "
                         f"p={best['p_value']:.3g} (FDR {best['p_fdr']:.3g})")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the analysis
# ---------------------------------------------------------------------------------------------
def _subject_arrays(test: Any, train: Any, targets: Any, strategies: Sequence[str], n_candidates: int | None,
                    rng: np.random.Generator) -> tuple[dict[Any, _Subject], dict[Any, tuple[int, ...]]]:
    subs: dict[Any, _Subject] = {}
    shapes: dict[Any, tuple[int, ...]] = {}
    train_by = train.by_subject() if train is not None else {}
    for s, t in test.by_subject().items():
        shapes[s] = tuple(int(v) for v in t.feature_shape)
        X = np.asarray(t.get_data(), dtype=np.float64).reshape(len(t), -1)
        if not np.isfinite(X).all():
            raise ValueError(f"The test trials of subject {s} contain NaN or inf")
        ids = t.events["stimulus_id"].to_numpy()
        uniq, first, true = np.unique(ids.astype(str), return_index=True, return_inverse=True)
        cand = np.asarray(targets.lookup(ids[first].tolist()), dtype=np.float64)
        cand /= np.maximum(np.linalg.norm(cand, axis=1, keepdims=True), np.finfo(np.float64).tiny)
        subsets = None
        if n_candidates is not None and n_candidates < len(uniq):
            if n_candidates < 2:
                raise ValueError(f"n_candidates must be >= 2 or None (all), got {n_candidates}")
            subsets = np.stack([rng.choice(np.delete(np.arange(len(uniq)), i), n_candidates - 1, replace=False)
                                for i in true])
        sub = _Subject(X, cand, true, subsets)
        needs_train = "mean" in strategies or any(x in RETRAINS for x in strategies)
        if needs_train:
            if s not in train_by:
                raise ValueError(f"Strategies {list(strategies)} need the training trials of subject {s} "
                                 "(train=...)")
            tr = train_by[s]
            Xtr = np.asarray(tr.get_data(), dtype=np.float64).reshape(len(tr), -1)
            if Xtr.shape[1] != X.shape[1]:
                raise ValueError(f"Subject {s}: training trials have {Xtr.shape[1]} features but test trials "
                                 f"{X.shape[1]}; they must come from the same preprocessing")
            sub.mean = Xtr.mean(0)
            if any(x in RETRAINS for x in strategies):
                sub.X_train = Xtr
                sub.Y_train = np.asarray(targets.lookup(tr.events["stimulus_id"].tolist()), dtype=np.float64)
        subs[s] = sub
    return subs, shapes


def _region_noise_ceilings(test: Any, regions: Mapping[str, Mapping[Any, np.ndarray]], names: pd.Series) -> np.ndarray:
    """Mean NSD noise ceiling (%) of each region's voxels, from ``info["ncsnr"]``; NaN where absent.

    ``n_trials`` is the number of repetitions averaged per test item (``events["n_repetitions"]``).
    """
    per = test.by_subject()
    if not per or any("ncsnr" not in t.info for t in per.values()):
        return np.full(len(names), np.nan)
    nc = {}
    for s, t in per.items():
        n = int(np.median(t.events["n_repetitions"])) if "n_repetitions" in t.events else 1
        nc[s] = noise_ceiling(np.asarray(t.info["ncsnr"], dtype=np.float64), n_trials=max(n, 1))
    out = {}
    for name, region in regions.items():
        vals = [nc[s][np.asarray(idx, dtype=np.int64)] for s, idx in region.items() if s in nc and len(idx)]
        out[name] = float(np.nanmean(np.concatenate(vals))) if vals else np.nan
    return np.array([out.get(n, np.nan) for n in names])


def _check_ablate_args(strategies: Sequence[str], metrics: Sequence[str], n_null: int, n_null_retrain: int,
                       n_boot: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Strategies and metrics without duplicates, after checking every argument of :func:`ablate`."""
    strategies = tuple(dict.fromkeys(strategies))
    metrics = tuple(dict.fromkeys(metrics))
    if not strategies or not metrics:
        raise ValueError("strategies and metrics must not be empty")
    for s in strategies:
        check_option("strategy", s, STRATEGIES)
    for m in metrics:
        check_option("metric", m, METRICS)
    for name, v in (("n_null", n_null), ("n_null_retrain", n_null_retrain), ("n_boot", n_boot)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return strategies, metrics


class _RegionScorer:
    """Per-item retrieval scores of the intact decoder and of the decoder with a region ablated."""

    def __init__(self, subs: dict, predict: Callable, refit: Callable | None, linear: dict | None,
                 metrics: tuple[str, ...]) -> None:
        self.subs, self.predict, self.refit, self.linear, self.metrics = subs, predict, refit, linear, metrics
        self.subjects = list(subs)
        self.n_items = int(sum(len(s.true) for s in subs.values()))
        self.base_pred = {s: predict(s, subs[s].X) for s in self.subjects}
        base_scores: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
        for s in self.subjects:
            for m, v in _trial_scores(self.base_pred[s], subs[s], metrics).items():
                base_scores[m].append(v)
        self.base = {m: np.concatenate(v) for m, v in base_scores.items()}
        self.chance = {m: np.concatenate([subs[s].chance(m) for s in self.subjects]) for m in metrics}

    def baseline(self, n_boot: int, ci: float, random_state: int) -> dict[str, dict[str, float]]:
        """Value, CI and chance level of the intact decoder, per metric."""
        baseline = {}
        for m in self.metrics:
            lo, hi = bootstrap_ci(self.base[m], n_boot=n_boot, ci=ci, random_state=random_state)
            baseline[m] = {"value": float(self.base[m].mean()), "ci_low": lo, "ci_high": hi,
                           "chance": float(self.chance[m].mean())}
            logger.info("Intact decoder: %s %.3f [%.3f, %.3f] (chance %.3f), %d test items", m,
                        baseline[m]["value"], lo, hi, baseline[m]["chance"], self.n_items)
        return baseline

    def _subject_pred(self, s: Any, strategy: str, idx: np.ndarray, r: np.random.Generator) -> np.ndarray | None:
        """Predictions of subject ``s`` with features ``idx`` ablated; None when nothing is left to decode."""
        sub = self.subs[s]
        if strategy in LESIONS and self.linear is not None and len(idx) < sub.X.shape[1]:
            # linear decoder: pred(X') = pred(X) - (X[:, R] - X'[:, R]) @ W[:, R].T
            new_vals = _lesion(sub.X[:, idx], np.arange(len(idx)), strategy,
                               None if sub.mean is None else sub.mean[idx], r)
            return self.base_pred[s] - (sub.X[:, idx] - new_vals) @ self.linear[s][:, idx].T
        if strategy in LESIONS:
            return self.predict(s, _lesion(sub.X, idx, strategy, sub.mean, r))
        keep = idx if strategy == "alone" else np.setdiff1d(np.arange(sub.X.shape[1]), idx)
        if not len(keep):
            return None
        return np.asarray(self.refit(s, sub.X_train[:, keep], sub.Y_train)(sub.X[:, keep]), dtype=np.float64)

    def scores(self, strategy: str, region: Mapping[Any, np.ndarray], r: np.random.Generator) -> dict[str, np.ndarray]:
        """Per-item scores of every metric with ``region`` ablated by ``strategy``."""
        parts: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics}
        for s in self.subjects:
            idx = np.asarray(region.get(s, np.zeros(0, np.int64)), dtype=np.int64)
            pred = self._subject_pred(s, strategy, idx, r)
            if pred is None:  # nothing to decode from: chance level
                for m in self.metrics:
                    parts[m].append(self.subs[s].chance(m))
                continue
            for m, v in _trial_scores(pred, self.subs[s], self.metrics).items():
                parts[m].append(v)
        return {m: np.concatenate(v) for m, v in parts.items()}

    def effect(self, strategy: str, metric: str, sc: np.ndarray) -> np.ndarray:
        """Per-item effect: the loss against the intact decoder, or the gain over chance for ``alone``."""
        return sc - self.chance[metric] if strategy == "alone" else self.base[metric] - sc

    def region_rows(self, name: str, region: Mapping[Any, np.ndarray], strategy: str, atlas: Any, test: Any,
                    n: int, r: np.random.Generator, baseline: dict, n_boot: int, ci: float,
                    random_state: int) -> list[tuple[dict[str, Any], np.ndarray]]:
        """One result row per metric for ``region`` under ``strategy``, each with its null distribution."""
        sc = self.scores(strategy, region, r)
        sizes = {s: len(region.get(s, ())) for s in self.subjects}
        null = {m: np.empty(n) for m in self.metrics}
        for k, nr in enumerate(atlas.random_regions(test, sizes, n, r)):
            nsc = self.scores(strategy, nr, r)
            for m in self.metrics:
                null[m][k] = self.effect(strategy, m, nsc[m]).mean()
        out = []
        for m in self.metrics:
            eff = self.effect(strategy, m, sc[m])
            (s_lo, e_lo), (s_hi, e_hi) = bootstrap_ci(np.column_stack([sc[m], eff]), n_boot=n_boot, ci=ci,
                                                      random_state=random_state)
            out.append(({
                "atlas": getattr(atlas, "name", type(atlas).__name__), "region": name, "strategy": strategy,
                "metric": m, "n_features": int(sum(sizes.values())),
                "baseline": baseline[m]["chance"] if strategy == "alone" else baseline[m]["value"],
                "chance": baseline[m]["chance"],
                "score": float(sc[m].mean()), "score_ci_low": float(s_lo), "score_ci_high": float(s_hi),
                "effect": float(eff.mean()), "effect_ci_low": float(e_lo), "effect_ci_high": float(e_hi),
                "null_mean": float(null[m].mean()), "null_low": float(np.percentile(null[m], 2.5)),
                "null_high": float(np.percentile(null[m], 97.5)), "n_null": int(n),
                "p_value": float(permutation_pvalue(eff.mean() - 1e-12, null[m]))}, null[m]))
        return out


def _finish_frame(frame: pd.DataFrame, alpha: float, test: Any, regions: Mapping[str, Any]) -> pd.DataFrame:
    """FDR across regions, significance and rank within each strategy × metric; noise ceilings; column order."""
    frame["p_fdr"] = np.nan
    frame["significant"] = False
    frame["rank"] = 0
    for _, f in frame.groupby(["strategy", "metric"], sort=False):
        reject, q = fdr_bh(f["p_value"].to_numpy(), alpha=alpha)
        frame.loc[f.index, "p_fdr"] = q
        frame.loc[f.index, "significant"] = reject
        frame.loc[f.index, "rank"] = f["effect"].rank(ascending=False, method="first").astype(int)
    frame["noise_ceiling"] = _region_noise_ceilings(test, regions, frame["region"])
    return frame[_COLUMNS]


@verbose
@fill_doc
def ablate(estimator: Any, train: Any, test: Any, targets: Any, atlas: Any, *,
           strategies: Sequence[str] = ("zero",), metrics: Sequence[str] = METRICS, n_null: int = 200,
           n_null_retrain: int = 20, n_boot: int = 1000, ci: float = 0.95, alpha: float = 0.05,
           n_candidates: int | None = None, fixed_alpha: bool = True,
           fit_fn: Callable[[Any, np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]] | None = None,
           random_state: int = 0, verbose: bool | str | int | None = None) -> AblationResult:
    """Ablate every region of ``atlas`` and test its effect on retrieval against random same-size regions.

    Parameters
    ----------
    estimator : RidgeDecoder | BrainDecoder | callable
        The trained decoder: a :class:`~neurodecode.models.RidgeDecoder` fitted
        with ``fit_trials``, a :class:`~neurodecode.models.BrainDecoder`, or
        ``predict(subject, X) -> (n, dim)`` on flattened features.
    train : BrainTrials | None
        The training trials (the ``mean`` strategy's means; the refits of
        ``without`` / ``alone``). May be None for ``zero`` / ``permute``.
    test : BrainTrials
        Test trials (usually averaged over repetitions), scored by forward
        retrieval among the subject's unique test stimuli.
    targets : StimulusEmbeddings
        Embeddings of every stimulus of ``train`` and ``test``.
    atlas : Atlas
        From :mod:`neurodecode.analysis.atlases` (``assign`` gives the regions,
        ``random_regions`` the null regions).
    strategies : sequence of {"zero", "mean", "permute", "without", "alone"}
        See the module docstring.
    metrics : sequence of {"top1", "2way"}
        Retrieval metrics (per test item, so they bootstrap over items).
    n_null : int
        Random same-size regions per region for the lesion strategies.
    n_null_retrain : int
        Random same-size regions per region for ``without`` / ``alone`` (each
        is a refit; the smallest p-value is ``1 / (n_null_retrain + 1)``).
    n_boot, ci : int, float
        Bootstrap resamples of test items and the CI level.
    alpha : float
        FDR level of ``significant``.
    n_candidates : int | None
        Candidates per test item (the true one and ``n_candidates - 1`` others
        drawn once, the same for every condition); None = every test stimulus.
    fixed_alpha : bool
        Refits reuse each subject's ridge penalty (True), or choose it again
        on the training trials (False).
    fit_fn : callable | None
        ``fit_fn(subject, X_train, Y_train) -> predict(X)`` for the refit
        strategies with a model other than ridge.
    random_state : int
        Seeds the null regions, the permutations, the candidate subsets and
        the bootstrap.
    %(verbose)s

    Returns
    -------
    result : AblationResult

    Examples
    --------
    >>> from neurodecode.analysis import ablate, parse_atlas                      # doctest: +SKIP
    >>> res = ablate(ridge, train, test, targets, parse_atlas("nsd:streams"),     # doctest: +SKIP
    ...              strategies=("zero", "alone"))
    >>> res.to_frame().query("significant")                                        # doctest: +SKIP
    """
    from ..datasets import check_no_leakage

    strategies, metrics = _check_ablate_args(strategies, metrics, n_null, n_null_retrain, n_boot)
    if train is not None:
        check_no_leakage(train, test, where="ablation")
    rng = np.random.default_rng(random_state)
    subs, shapes = _subject_arrays(test, train, targets, strategies, n_candidates, rng)
    refit = None
    if any(s in RETRAINS for s in strategies):
        refit = fit_fn if fit_fn is not None else _ridge_refitter(estimator, fixed_alpha)
    regions = atlas.assign(test)
    if not regions:
        raise ValueError(f"The atlas {atlas!r} has no region with features in these trials")
    scorer = _RegionScorer(subs, _predictor(estimator, shapes), refit, _linear_weights(estimator), metrics)
    baseline = scorer.baseline(n_boot, ci, random_state)

    rows: list[dict[str, Any]] = []
    nulls: dict[tuple[str, str, str], np.ndarray] = {}
    tasks = [(name, strategy) for strategy in strategies for name in regions]
    for name, strategy in ProgressBar(tasks, desc="ablation", unit="region"):
        r = np.random.default_rng([random_state, len(rows), 7])
        n = n_null if strategy in LESIONS else n_null_retrain
        for row, null in scorer.region_rows(name, regions[name], strategy, atlas, test, n, r, baseline,
                                            n_boot, ci, random_state):
            nulls[(name, strategy, row["metric"])] = null
            rows.append(row)
    frame = _finish_frame(pd.DataFrame(rows), alpha, test, regions)
    settings = {"atlas": getattr(atlas, "name", repr(atlas)), "strategies": list(strategies),
                "metrics": list(metrics), "n_null": int(n_null), "n_null_retrain": int(n_null_retrain),
                "n_boot": int(n_boot), "ci": float(ci), "alpha": float(alpha), "n_candidates": n_candidates,
                "fixed_alpha": bool(fixed_alpha), "random_state": int(random_state),
                "subjects": [str(s) for s in scorer.subjects], "n_test_items": scorer.n_items,
                "null": "random spatially contiguous / same-size regions drawn by the atlas"}
    result = AblationResult(frame, baseline, nulls, settings, atlas)
    logger.info("%r", result)
    return result

