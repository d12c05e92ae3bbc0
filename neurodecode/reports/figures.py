"""Static figures for retrieval reports (matplotlib, imported inside each function).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot's global
state (``Figure`` + Agg canvas), so it is safe in scripts, servers and tests.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ..tasks.retrieval import RetrievalScores, metric_label
from ..utils import check_option, fill_doc, verbose

__all__ = ["fig_to_png", "plot_retrieval_bars", "plot_time_windows", "plot_topk_curve",
           "plot_training_curves"]

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _as_one_scores(obj: Any, what: str) -> RetrievalScores:
    """RetrievalScores from scores, their ``to_dict()``, or a dict group -> scores (pooled)."""
    if isinstance(obj, RetrievalScores):
        return obj
    if isinstance(obj, Mapping) and "metrics" in obj:
        return RetrievalScores.from_dict(obj)
    if isinstance(obj, Mapping) and obj and all(
            isinstance(v, RetrievalScores) or (isinstance(v, Mapping) and "metrics" in v)
            for v in obj.values()):
        return RetrievalScores.combine(obj)   # per-subject scores -> groups
    raise TypeError(f"{what} must be RetrievalScores, its to_dict(), or a dict group -> "
                    f"RetrievalScores; got {type(obj).__name__}")


def _as_scores_by_model(scores_by_model: Any) -> dict[str, RetrievalScores]:
    """``model -> RetrievalScores``; a model may also map to ``{subject: RetrievalScores}``."""
    if isinstance(scores_by_model, RetrievalScores):
        return {"model": scores_by_model}
    if not isinstance(scores_by_model, Mapping) or not scores_by_model:
        raise TypeError("scores_by_model must be a non-empty dict: model name -> RetrievalScores")
    if "metrics" in scores_by_model:
        return {"model": RetrievalScores.from_dict(scores_by_model)}
    return {str(name): _as_one_scores(s, f"scores_by_model[{name!r}]")
            for name, s in scores_by_model.items()}


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"


@verbose
@fill_doc
def plot_retrieval_bars(scores_by_model: Mapping[str, RetrievalScores] | RetrievalScores,
                        metric: str = "nway_top1_forward", *, show_mean: bool = True,
                        figsize: tuple[float, float] | None = None,
                        verbose: bool | str | int | None = None):
    """Bar chart of one metric per group (subject) and model, with CI error bars and chance.

    Parameters
    ----------
    scores_by_model : dict of RetrievalScores | RetrievalScores
        ``model name -> scores`` (from :func:`neurodecode.tasks.evaluate_retrieval`), or
        ``model name -> {subject: scores}`` (pooled with ``RetrievalScores.combine``).
    metric : str
        Metric name, e.g. ``"nway_top1_forward"``, ``"2way_forward"`` or ``"top5_backward"``.
    show_mean : bool
        Add a bar for the pooled value (mean over groups) when scores have groups.
        Bars are labelled with ``value [ci_low, ci_high]`` when there are at most 16.
    figsize : tuple of float | None
        Figure size in inches; chosen from the number of bars when None.
    %(verbose)s

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    models = _as_scores_by_model(scores_by_model)
    for name, s in models.items():
        if metric not in s.metrics:
            raise ValueError(f"Unknown metric {metric!r} for model {name!r}; available: "
                             f"{', '.join(s.metrics)}")
    group_names: list[str] = []
    for s in models.values():
        group_names += [g for g in s.groups if g not in group_names]
    columns = list(group_names)
    if show_mean or not columns:
        columns.append("mean" if group_names else "all")

    n_models = len(models)
    width = 0.8 / n_models
    fig = _new_figure(figsize or (max(4.5, 2.2 + 0.8 * len(columns) * n_models), 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(columns))
    annotate = len(columns) * n_models <= 16
    chances = []
    for i, (name, s) in enumerate(models.items()):
        entries = [(s.groups.get(col, {}).get(metric) if col in group_names else s.metrics[metric])
                   for col in columns]
        nan = {"value": np.nan, "ci_low": np.nan, "ci_high": np.nan}
        vals = np.array([(e or nan)["value"] for e in entries], dtype=float)
        lows = np.array([(e or nan)["ci_low"] for e in entries], dtype=float)
        highs = np.array([(e or nan)["ci_high"] for e in entries], dtype=float)
        chances += [e["chance"] for e in entries if e is not None]
        err = np.vstack([np.clip(vals - lows, 0, None), np.clip(highs - vals, 0, None)])
        err = np.where(np.isnan(err), 0.0, err)
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, vals, width * 0.92, yerr=err, capsize=3, label=name,
               color=_COLORS[i % len(_COLORS)], error_kw={"elinewidth": 1, "ecolor": "black"})
        if annotate:  # every printed number comes with its CI
            for px, v, lo, hi in zip(pos, vals, lows, highs):
                if not np.isfinite(v):
                    continue
                text = _fmt(v) + (f"\n[{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) else "")
                ax.annotate(text, (px, np.fmax(hi, v)), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=6, linespacing=1.0)
    if chances:
        chance = float(np.mean(chances))
        ax.axhline(chance, color="0.3", ls="--", lw=1, label=f"chance ({_fmt(chance)})")
    first = next(iter(models.values()))
    ci = first.protocol.get("ci", 0.95)
    ax.set_xticks(x, [("subject " + c) if c not in ("mean", "all") and c.isdigit() else c
                      for c in columns])
    ax.set_ylabel(metric_label(metric, first.n_candidates))
    ax.set_ylim(0, 1.15)
    ax.set_title(f"{metric_label(metric, first.n_candidates)} (error bars: {ci:.0%} bootstrap CI)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


@verbose
@fill_doc
def plot_topk_curve(scores_by_model: Mapping[str, RetrievalScores] | RetrievalScores, *,
                    direction: Literal["forward", "backward", "both"] = "both",
                    figsize: tuple[float, float] | None = None,
                    verbose: bool | str | int | None = None):
    """Top-k accuracy among all items against k (log x axis), with CI bands and chance.

    Parameters
    ----------
    scores_by_model : dict of RetrievalScores | RetrievalScores
        ``model name -> scores``.
    direction : "forward" | "backward" | "both"
        Brain → image (``"forward"``), image → brain (``"backward"``), or one panel for each.
    figsize : tuple of float | None
        Figure size in inches.
    %(verbose)s

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    check_option("direction", direction, ("forward", "backward", "both"))
    models = _as_scores_by_model(scores_by_model)
    directions = ["forward", "backward"] if direction == "both" else [direction]
    fig = _new_figure(figsize or (4.2 * len(directions) + 1.2, 3.4))
    axes = fig.subplots(1, len(directions), squeeze=False)[0]
    for ax, d in zip(axes, directions):
        chance_k, chance_v = None, None
        for i, (name, s) in enumerate(models.items()):
            c = s.topk_curve
            if not c or len(c.get("k", ())) == 0:
                continue
            k = np.asarray(c["k"], dtype=float)
            color = _COLORS[i % len(_COLORS)]
            ax.plot(k, c[d], color=color, lw=1.5, label=name)
            low, high = np.asarray(c[f"{d}_ci_low"]), np.asarray(c[f"{d}_ci_high"])
            if np.isfinite(low).all() and np.isfinite(high).all():
                ax.fill_between(k, low, high, color=color, alpha=0.2, lw=0)
            if chance_k is None or len(k) > len(chance_k):
                chance_k, chance_v = k, np.asarray(c["chance"])
        if chance_k is not None:
            ax.plot(chance_k, chance_v, color="0.3", ls="--", lw=1, label="chance (k / n)")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("k")
        ax.set_ylabel("top-k accuracy among all items")
        ax.set_title(f"{'brain→image' if d == 'forward' else 'image→brain'} "
                     "(bands: bootstrap CI)", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1].legend(fontsize=7, loc="lower right", frameon=False)
    return fig


@verbose
@fill_doc
def plot_time_windows(scores: Any, *, metric: str = "nway_top1_forward",
                      figsize: tuple[float, float] | None = None,
                      verbose: bool | str | int | None = None):
    """A decoding metric per time window (window centres), with its CI band and chance.

    Parameters
    ----------
    scores : pandas.DataFrame
        From :func:`neurodecode.analysis.windows.decode_time_windows`: columns
        ``start``, ``stop``, ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high``,
        ``<metric>_chance``.
    metric : str
        Column to plot.
    figsize : tuple of float | None
        Figure size in inches.
    %(verbose)s

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    missing = [c for c in ("start", "stop", metric) if c not in scores]
    if missing:
        raise ValueError(f"scores has no column(s) {missing}; pass the frame of decode_time_windows")
    centre = (np.asarray(scores["start"], float) + np.asarray(scores["stop"], float)) / 2
    value = np.asarray(scores[metric], float)
    fig = _new_figure(figsize or (5.6, 3.2))
    ax = fig.subplots()
    ax.plot(centre, value, color=_COLORS[0], lw=1.6, marker="o", ms=3, label=metric)
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if low in scores and high in scores and np.isfinite(scores[low]).all():
        ax.fill_between(centre, scores[low], scores[high], color=_COLORS[0], alpha=0.2, lw=0,
                        label="bootstrap CI")
    if f"{metric}_chance" in scores:
        ax.plot(centre, scores[f"{metric}_chance"], color="0.3", ls="--", lw=1, label="chance")
    best = int(np.nanargmax(value))
    ax.axvspan(float(scores["start"].iloc[best]), float(scores["stop"].iloc[best]), color="0.85", zorder=0,
               label="peak window")
    ax.set_xlabel("window centre (s)")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False)
    return fig


@fill_doc
def plot_training_curves(histories: Mapping[str, Any], *, figsize: tuple[float, float] | None = None,
                         verbose: bool | str | int | None = None):
    """Training curves of trained decoders: losses and validation retrieval per epoch.

    Parameters
    ----------
    histories : dict
        Model name → ``Trainer.history_`` (a list of per-epoch dicts with
        ``epoch``, ``train_loss`` and, when validation ran, ``val_loss``,
        ``val_top1`` and ``val_chance``).
    figsize : tuple of float | None
        Figure size in inches.
    %(verbose)s

    Returns
    -------
    fig : matplotlib.figure.Figure
        Left: train (solid) and validation (dashed) loss; right: validation
        top-1 among the validation stimuli, with its chance level (dotted).
    """
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError("histories must be a non-empty dict: model name -> list of per-epoch records")
    for name, hist in histories.items():
        if not hist or any("epoch" not in r or "train_loss" not in r for r in hist):
            raise ValueError(f"histories[{name!r}] must be a non-empty list of records with 'epoch' and "
                             "'train_loss' (Trainer.history_)")
    fig = _new_figure(figsize or (8.0, 3.0))
    ax_loss, ax_top = fig.subplots(1, 2)

    def column(hist: Any, key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in hist])

    has_val = False
    for i, (name, hist) in enumerate(histories.items()):
        c = _COLORS[i % len(_COLORS)]
        epochs = column(hist, "epoch")
        ax_loss.plot(epochs, column(hist, "train_loss"), color=c, lw=1.5, label=f"{name} train")
        val = column(hist, "val_loss")
        if np.isfinite(val).any():
            has_val = True
            ax_loss.plot(epochs, val, color=c, lw=1.5, ls="--", label=f"{name} validation")
            ax_top.plot(epochs, column(hist, "val_top1"), color=c, lw=1.5, marker="o", ms=2.5, label=name)
            ax_top.plot(epochs, column(hist, "val_chance"), color=c, lw=1, ls=":", label=f"{name} chance")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_top.set_xlabel("epoch")
    ax_top.set_ylabel("validation top-1")
    if not has_val:
        ax_top.text(0.5, 0.5, "no validation split\n(val_fraction = 0)", ha="center", va="center",
                    transform=ax_top.transAxes, color="0.4")
    for ax in (ax_loss, ax_top):
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
    return fig


def fig_to_png(fig: Any, *, dpi: int = 110, close: bool = False) -> bytes:
    """Encode a matplotlib figure as PNG bytes.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    dpi : int
        Resolution.
    close : bool
        Close the figure afterwards if it is managed by pyplot (frees its memory).

    Returns
    -------
    png : bytes
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    if close:
        import sys

        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            plt.close(fig)
    return buf.getvalue()
