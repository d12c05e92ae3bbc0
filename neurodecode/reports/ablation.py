"""Figures, table and report section for region ablation of a trained decoder.

They read the tidy frame of :meth:`neurodecode.analysis.ablation.AblationResult.to_frame`:
one row per (region, strategy, metric) with the region's ``effect`` (lesion / ``"without"``:
baseline − score, a drop; ``"alone"``: score − chance), its bootstrap CI, the null
distribution of the effect of random regions of the same size (``null_mean``,
``null_low``, ``null_high``, ``n_null``), the permutation ``p_value`` against that null and
its Benjamini–Hochberg ``p_fdr`` (across regions within strategy × metric).

Atlases are duck-typed (see :mod:`neurodecode.analysis.atlases`): ``kind`` (``"volume"``,
``"nsd"``, ``"spheres"``, ``"sensors"``, ``"times"``), ``name``,
``region_image(values, info)`` (volume kinds), ``region_centroids(info)``. matplotlib and
nilearn are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ..utils import check_option, fill_doc, logger, verbose
from .figures import _COLORS, _new_figure
from .report import Report, _fmt, _fmt_ci

__all__ = ["ablation_table_html", "add_ablation_section", "plot_ablation_bars", "plot_ablation_map"]

_REQUIRED = ("region", "strategy", "metric", "effect")
_STRATEGY_TEXT = {
    "zero": "the region's features set to 0 in the test data (trained decoder unchanged)",
    "mean": "the region's features replaced by their training mean (trained decoder unchanged)",
    "permute": "the region's features shuffled across test trials (trained decoder unchanged)",
    "without": "the decoder refit on every feature except the region's",
    "alone": "the decoder refit on the region's features only; effect = score − chance",
}
_TIME_RE = re.compile(r"(-?\d*\.?\d+)\s*(?:-|–|—|to|:)\s*(-?\d*\.?\d+)\s*(ms|s)?")


class _MapPlotError(RuntimeError):
    """nilearn is missing or its plotting failed (the report skips the map, with a note)."""


# --------------------------------------------------------------------------- helpers
def _check_frame(frame: Any, extra: tuple[str, ...] = ()) -> None:
    if not hasattr(frame, "columns") or not hasattr(frame, "loc"):
        raise TypeError(f"frame must be a pandas DataFrame (AblationResult.to_frame()), "
                        f"got {type(frame).__name__}")
    missing = [c for c in (*_REQUIRED, *extra) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame has no column(s) {missing}; pass AblationResult.to_frame()")
    if len(frame) == 0:
        raise ValueError("frame is empty: there is no ablation result to show")


def _first(frame: Any, column: str, value: str | None, what: str) -> str:
    """``value`` if given (checked), else the first value of ``column`` in frame order (logged)."""
    present = list(dict.fromkeys(str(v) for v in frame[column]))
    if value is not None:
        if str(value) not in present:
            raise ValueError(f"{what} {value!r} is not in the frame; it holds {present}")
        return str(value)
    if len(present) > 1:
        logger.info("The frame holds %d %ss (%s); showing the first, %r (pass %s= to choose)",
                    len(present), what, ", ".join(present), present[0], what)
    return present[0]


def _select(frame: Any, strategy: str | None, metric: str | None) -> tuple[Any, str, str, str]:
    """Rows of one atlas, strategy and metric; returns ``(rows, atlas, strategy, metric)``."""
    _check_frame(frame)
    atlas = ""
    if "atlas" in frame.columns:
        atlas = _first(frame, "atlas", None, "atlas")
        frame = frame[frame["atlas"].astype(str) == atlas]
    strategy = _first(frame, "strategy", strategy, "strategy")
    frame = frame[frame["strategy"].astype(str) == strategy]
    metric = _first(frame, "metric", metric, "metric")
    rows = frame[frame["metric"].astype(str) == metric]
    return rows, atlas, strategy, metric


def _groups(frame: Any) -> list[tuple[str, str, str]]:
    """``(atlas, strategy, metric)`` combinations in frame order."""
    atlases = (frame["atlas"].astype(str) if "atlas" in frame.columns
               else np.full(len(frame), "", dtype=object))
    return list(dict.fromkeys(zip(atlases, frame["strategy"].astype(str), frame["metric"].astype(str))))


def _col(rows: Any, name: str, default: float = np.nan) -> np.ndarray:
    if name in rows.columns:
        return np.asarray(rows[name], dtype=float)
    return np.full(len(rows), default, dtype=float)


def _sorted(rows: Any) -> Any:
    """Rows by decreasing effect (NaN last), ties by region name."""
    order = sorted(range(len(rows)), key=lambda i: (
        not np.isfinite(float(rows["effect"].iloc[i])),
        -float(rows["effect"].iloc[i]) if np.isfinite(float(rows["effect"].iloc[i])) else 0.0,
        str(rows["region"].iloc[i])))
    return rows.iloc[order]


def _metric_text(metric: str) -> str:
    """``"top1"`` -> ``"top-1"``, ``"2way"`` -> ``"2-way identification"`` (others unchanged)."""
    m = re.fullmatch(r"(?:nway_)?top(\d+)(?:_(forward|backward))?", metric)
    if m:
        return f"top-{m.group(1)}" + (f" ({m.group(2)})" if m.group(2) else "")
    m = re.fullmatch(r"2way(?:_(forward|backward))?", metric)
    if m:
        return "2-way identification" + (f" ({m.group(1)})" if m.group(1) else "")
    return metric


def _effect_label(strategy: str, metric: str) -> str:
    text = _metric_text(metric)
    if strategy == "alone":
        return f"{text} above chance (alone)"
    if strategy == "without":
        return f"drop in {text} when refit without the region (without)"
    return f"drop in {text} when lesioned ({strategy})"


def _fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def _is_significant(rows: Any, alpha: float) -> np.ndarray:
    """``p_fdr < alpha`` (the ``significant`` column when there is no ``p_fdr``)."""
    if "p_fdr" in rows.columns:
        p = _col(rows, "p_fdr")
        return np.isfinite(p) & (p < alpha)
    if "significant" in rows.columns:
        return np.asarray(rows["significant"], dtype=bool)
    return np.zeros(len(rows), dtype=bool)


def _row_getter(row: Any):
    """``name -> float(row[name])``, NaN for a missing column or a None."""
    def num(name: str) -> float:
        value = row[name] if name in row.index else None
        return np.nan if value is None else float(value)

    return num


def _symmetric_limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    vmax = float(finite.max()) if finite.size else 0.0
    return vmax if vmax > 0 else 1.0


# --------------------------------------------------------------------------- bar chart
@verbose
@fill_doc
def plot_ablation_bars(frame: Any, *, strategy: str | None = None, metric: str | None = None,
                       ax: Any = None, alpha: float = 0.05, max_regions: int | None = 50,
                       figsize: tuple[float, float] | None = None,
                       verbose: bool | str | int | None = None):
    """Horizontal bars of each region's ablation effect, with CIs, the random-region null and stars.

    One bar per region, sorted by effect (largest on top), with the effect's bootstrap CI
    as error bars; behind each bar a grey band spans the 2.5–97.5 percentiles of the
    effect of random regions of the same size (``null_low`` .. ``null_high``) with a
    black tick at its mean; a ``*`` marks regions with ``p_fdr < alpha``.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``AblationResult.to_frame()``.
    strategy : str | None
        ``"zero"``, ``"mean"``, ``"permute"``, ``"without"`` or ``"alone"``. None: the first
        strategy in frame order (logged when there are several). One chart shows one
        atlas × strategy × metric; :func:`add_ablation_section` draws one per combination.
    metric : str | None
        e.g. ``"top1"`` or ``"2way"``; None: the first in frame order (logged).
    ax : matplotlib.axes.Axes | None
        Draw into this axes (its figure is returned); a new figure is made when None.
    alpha : float
        Significance level for the stars (on the BH-FDR corrected ``p_fdr``).
    max_regions : int | None
        Show at most this many regions (the largest effects; the rest is logged). None: all.
    figsize : tuple of float | None
        Size of a new figure in inches; chosen from the number of regions when None.
    %(verbose)s

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    rows, atlas, strategy, metric = _select(frame, strategy, metric)
    rows = _sorted(rows)
    if max_regions is not None and len(rows) > max_regions:
        logger.info("Showing the %d largest effects of %d regions (max_regions=%d)",
                    max_regions, len(rows), max_regions)
        rows = rows.iloc[: int(max_regions)]
    n = len(rows)
    effect = _col(rows, "effect")
    lo, hi = _col(rows, "effect_ci_low"), _col(rows, "effect_ci_high")
    null_mean, null_lo, null_hi = _col(rows, "null_mean"), _col(rows, "null_low"), _col(rows, "null_high")
    sig = _is_significant(rows, alpha)
    y = np.arange(n, dtype=float)

    if ax is None:
        fig = _new_figure(figsize or (6.4, max(2.4, 1.1 + 0.32 * n)))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    has_null = np.isfinite(null_lo) & np.isfinite(null_hi)
    if has_null.any():
        ax.hlines(y[has_null], null_lo[has_null], null_hi[has_null], colors="0.6", lw=7, alpha=0.45,
                  zorder=1, label="random same-size regions (2.5–97.5 %)")
    err = np.vstack([np.clip(effect - lo, 0, None), np.clip(hi - effect, 0, None)])
    err = np.where(np.isfinite(err), err, 0.0)
    colors = [_COLORS[0] if s else "#9ecae1" for s in sig]
    ax.barh(y, np.where(np.isfinite(effect), effect, 0.0), height=0.6, xerr=err, color=colors,
            capsize=2, zorder=2, error_kw={"elinewidth": 1, "ecolor": "black", "zorder": 3},
            label="effect (error bars: bootstrap CI)")
    if np.isfinite(null_mean).any():
        ax.plot(null_mean, y, ls="none", marker="|", ms=9, mew=1.5, color="black", zorder=4,
                label="null mean")
    ax.axvline(0.0, color="0.3", lw=0.8, zorder=0)
    right = np.nanmax(np.vstack([effect, hi, null_hi]), axis=0)
    span = np.nanmax(np.abs(np.concatenate([effect, lo, hi, null_lo, null_hi, [0.0]])))
    pad = 0.03 * (span if np.isfinite(span) and span > 0 else 1.0)
    for yi, r, s in zip(y, right, sig):
        if s:
            ax.text((r if np.isfinite(r) else 0.0) + pad, yi, "*", ha="left", va="center",
                    fontsize=12, fontweight="bold", color="black")
    if sig.any():
        ax.plot([], [], ls="none", marker="$*$", color="black", label=f"p (FDR) < {alpha:g}")
    ax.set_yticks(y, [str(r) for r in rows["region"]], fontsize=8 if n <= 30 else 6)
    ax.set_ylim(n - 0.5, -0.5)  # largest effect on top
    xmin, xmax = ax.get_xlim()
    ax.set_xlim(xmin, xmax + 4 * pad)
    ax.set_xlabel(_effect_label(strategy, metric))
    ax.set_title(" — ".join(p for p in (atlas, strategy, _metric_text(metric)) if p), fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


# --------------------------------------------------------------------------- maps
def _window_of(name: str, windows: Any) -> tuple[float, float] | None:
    if isinstance(windows, Mapping) and name in windows:
        start, stop = windows[name]
        return float(start), float(stop)
    m = _TIME_RE.search(name)
    if m is None:
        return None
    scale = 1e-3 if m.group(3) == "ms" else 1.0
    return float(m.group(1)) * scale, float(m.group(2)) * scale


def _plot_times(fig: Any, rows: Any, atlas: Any, strategy: str, metric: str, alpha: float) -> None:
    windows = getattr(atlas, "windows", None)
    if windows is not None and not isinstance(windows, Mapping):
        names = getattr(atlas, "region_names", None) or getattr(atlas, "names", None)
        windows = dict(zip(names, windows)) if names is not None else None
    spans = [_window_of(str(r), windows) for r in rows["region"]]
    bad = [str(r) for r, s in zip(rows["region"], spans) if s is None]
    if bad:
        raise ValueError(f"cannot read a time window from region name(s) {bad[:5]}; expected names "
                         "like '0.100-0.200 s' or an atlas with a 'windows' mapping name -> (start, stop)")
    start = np.array([s[0] for s in spans])
    stop = np.array([s[1] for s in spans])
    centre = (start + stop) / 2
    order = np.argsort(centre, kind="stable")
    rows, centre, start, stop = rows.iloc[order], centre[order], start[order], stop[order]
    effect = _col(rows, "effect")
    ax = fig.add_subplot()
    null_lo, null_hi = _col(rows, "null_low"), _col(rows, "null_high")
    if np.isfinite(null_lo).all() and np.isfinite(null_hi).all():
        ax.fill_between(centre, null_lo, null_hi, color="0.6", alpha=0.3, lw=0,
                        label="random same-size windows (2.5–97.5 %)")
    lo, hi = _col(rows, "effect_ci_low"), _col(rows, "effect_ci_high")
    ax.plot(centre, effect, color=_COLORS[0], lw=1.6, marker="o", ms=3, label="effect")
    if np.isfinite(lo).all() and np.isfinite(hi).all():
        ax.fill_between(centre, lo, hi, color=_COLORS[0], alpha=0.25, lw=0, label="bootstrap CI")
    sig = _is_significant(rows, alpha)
    for s0, s1 in zip(start[sig], stop[sig]):
        ax.axvspan(s0, s1, color="#fdd0a2", alpha=0.5, lw=0, zorder=0)
    if sig.any():
        ax.plot(centre[sig], effect[sig], ls="none", marker="*", ms=10, color="#d62728",
                label=f"p (FDR) < {alpha:g}")
    ax.axhline(0.0, color="0.3", lw=0.8, ls="--")
    ax.set_xlabel("window centre (s)")
    ax.set_ylabel(_effect_label(strategy, metric), fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False)


def _sensor_membership(atlas: Any, info: Mapping[str, Any]) -> dict[str, list[int]] | None:
    """Region -> channel indices, from ``atlas.region_channels(info)`` or ``atlas.regions`` (a mapping)."""
    ch_names = [str(c) for c in info.get("ch_names", ())]
    members = None
    if callable(getattr(atlas, "region_channels", None)):
        members = atlas.region_channels(info)
    elif isinstance(getattr(atlas, "regions", None), Mapping):
        members = atlas.regions
    if members is None:
        return None
    out: dict[str, list[int]] = {}
    index = {c: i for i, c in enumerate(ch_names)}
    for region, chans in members.items():
        idx = np.asarray(list(chans))
        if idx.dtype == bool:
            out[str(region)] = np.flatnonzero(idx).tolist()
        elif idx.dtype.kind in "iu":
            out[str(region)] = idx.astype(int).tolist()
        else:
            out[str(region)] = [index[str(c)] for c in idx if str(c) in index]
    return out


def _plot_sensors(fig: Any, rows: Any, atlas: Any, info: Mapping[str, Any], alpha: float) -> Any:
    from matplotlib.patches import Circle

    if "ch_pos" not in info:
        raise ValueError("a 'sensors' atlas needs info['ch_pos'] (n_channels, 3) in metres")
    pos = np.asarray(info["ch_pos"], dtype=float)
    if pos.ndim != 2 or pos.shape[1] < 2:
        raise ValueError(f"info['ch_pos'] must have shape (n_channels, 3), got {pos.shape}")
    ok = np.isfinite(pos[:, :2]).all(axis=1)
    if not ok.any():
        raise ValueError("info['ch_pos'] holds no finite channel position")
    effects = {str(r): float(e) for r, e in zip(rows["region"], rows["effect"])}
    vmax = _symmetric_limit(np.array(list(effects.values())))
    ax = fig.add_subplot()
    centre = pos[ok, :2].mean(axis=0)
    radius = 1.08 * float(np.max(np.linalg.norm(pos[ok, :2] - centre, axis=1)) or 0.1)
    ax.add_patch(Circle(tuple(centre), radius, fill=False, color="0.3", lw=1.2))
    ax.plot([centre[0] - 0.12 * radius, centre[0], centre[0] + 0.12 * radius],
            [centre[1] + 0.99 * radius, centre[1] + 1.12 * radius, centre[1] + 0.99 * radius],
            color="0.3", lw=1.2)  # nose
    kw = {"cmap": "RdBu_r", "vmin": -vmax, "vmax": vmax, "edgecolors": "0.2", "linewidths": 0.4}
    members = _sensor_membership(atlas, info)
    if members is not None:
        value = np.full(len(pos), np.nan)
        for region, idx in members.items():
            if region in effects:
                value[[i for i in idx if 0 <= i < len(pos)]] = effects[region]
        colored = ok & np.isfinite(value)
        ax.scatter(*pos[ok & ~colored, :2].T, s=10, c="0.85", edgecolors="0.5", linewidths=0.3)
        sc = ax.scatter(*pos[colored, :2].T, c=value[colored], s=28, **kw)
    else:  # no channel membership: colour each region's centroid, channels in grey
        logger.info("The sensors atlas gives no channel membership (region_channels / regions); "
                    "colouring region centroids")
        ax.scatter(*pos[ok, :2].T, s=8, c="0.8", edgecolors="none")
        cents = atlas.region_centroids(info)
        names = [r for r in effects if r in cents and np.isfinite(np.asarray(cents[r], float)).all()]
        xy = np.array([np.asarray(cents[r], float)[:2] for r in names]).reshape(-1, 2)
        sc = ax.scatter(*xy.T, c=[effects[r] for r in names], s=160, **kw)
    sig_regions = set(np.asarray(rows["region"].astype(str))[_is_significant(rows, alpha)])
    if sig_regions:
        cents = atlas.region_centroids(info) if callable(getattr(atlas, "region_centroids", None)) else {}
        for r in sig_regions:
            c = np.asarray(cents.get(r, (np.nan, np.nan)), float)
            if np.isfinite(c[:2]).all():
                ax.text(c[0], c[1], "*", ha="center", va="center", fontsize=14, fontweight="bold")
    ax.set_aspect("equal")
    ax.set_axis_off()
    return sc


def _nilearn_plot(func_name: str, *args: Any, **kwargs: Any) -> Any:
    try:
        from nilearn import plotting
    except ImportError as err:
        raise _MapPlotError(f"nilearn is not installed ({err}); pip install 'neurodecode[fmri]'") from err
    try:
        return getattr(plotting, func_name)(*args, **kwargs)
    except Exception as err:
        raise _MapPlotError(f"nilearn.plotting.{func_name} failed: {type(err).__name__}: {err}") from err


def _plot_volume(fig: Any, rows: Any, atlas: Any, info: Mapping[str, Any], title: str,
                 display: str, bg_img: Any) -> None:
    import nibabel as nib

    effects = {str(r): float(e) for r, e in zip(rows["region"], rows["effect"]) if np.isfinite(e)}
    if not effects:
        raise ValueError("no region has a finite effect to map")
    img = atlas.region_image(effects, info)
    data = np.asarray(img.get_fdata(), dtype=float)
    vmax = _symmetric_limit(data)
    # NaN (outside regions) -> 0, hidden by a tiny threshold; regions with a zero effect vanish too
    img = nib.Nifti1Image(np.nan_to_num(data, nan=0.0), img.affine)
    threshold = 1e-9 * vmax
    mni = info.get("space") == "MNI152"
    if display == "auto":
        display = "glass" if mni else "slices"
    common = {"figure": fig, "colorbar": True, "cmap": "RdBu_r", "vmax": vmax, "threshold": threshold,
              "title": title, "display_mode": "ortho"}
    if display == "glass":
        if not mni:
            logger.info("info['space'] is not 'MNI152': the glass brain outline may not match the data")
        _nilearn_plot("plot_glass_brain", img, plot_abs=False, symmetric_cbar=True, **common)
        return
    cut = None
    if callable(getattr(atlas, "region_centroids", None)):
        cents = atlas.region_centroids(info)
        best = max(effects, key=lambda r: effects[r])
        if best in cents and np.isfinite(np.asarray(cents[best], float)).all():
            cut = tuple(float(v) for v in cents[best])
    if bg_img is None and mni:
        try:
            from nilearn.datasets import load_mni152_template
        except ImportError as err:
            raise _MapPlotError(f"nilearn is not installed ({err}); pip install 'neurodecode[fmri]'") from err
        bg_img = load_mni152_template(resolution=2)
    _nilearn_plot("plot_stat_map", img, bg_img=bg_img, cut_coords=cut, symmetric_cbar=True,
                  draw_cross=False, **common)


def _plot_spheres(fig: Any, rows: Any, atlas: Any, info: Mapping[str, Any], title: str) -> None:
    cents = atlas.region_centroids(info)
    names = [str(r) for r, e in zip(rows["region"], rows["effect"])
             if np.isfinite(e) and str(r) in cents]
    if not names:
        raise ValueError("no region has both a finite effect and a centroid to map")
    effects = dict(zip(rows["region"].astype(str), _col(rows, "effect")))
    values = np.array([effects[r] for r in names])
    vmax = _symmetric_limit(values)
    coords = np.array([np.asarray(cents[r], float)[:3] for r in names])
    _nilearn_plot("plot_markers", values, coords, figure=fig, node_cmap="RdBu_r", node_vmin=-vmax,
                  node_vmax=vmax, colorbar=True, title=title, display_mode="ortho")


@verbose
@fill_doc
def plot_ablation_map(frame: Any, atlas: Any, info: Mapping[str, Any], *, strategy: str | None = None,
                      metric: str | None = None, title: str | None = None, alpha: float = 0.05,
                      display: Literal["auto", "slices", "glass"] = "auto", bg_img: Any = None,
                      figsize: tuple[float, float] | None = None,
                      verbose: bool | str | int | None = None):
    """Map each region's ablation effect onto the brain, the sensors or the time axis.

    By ``atlas.kind``:

    - ``"volume"`` / ``"nsd"``: ``atlas.region_image(effects, info)`` drawn with
      :func:`nilearn.plotting.plot_stat_map` (``display="slices"``; ortho cuts through the
      centroid of the largest-effect region; background ``bg_img``, or the MNI152 template
      when ``info["space"] == "MNI152"``, else none) or
      :func:`nilearn.plotting.plot_glass_brain` (``display="glass"``). ``"auto"``: glass
      brain for MNI152 data, slices otherwise (native space has no glass-brain outline).
    - ``"spheres"``: :func:`nilearn.plotting.plot_markers` at the region centroids (MNI).
    - ``"sensors"``: channel positions ``info["ch_pos"]`` (x, y; NaN skipped) in a head
      outline, coloured by their region's effect when the atlas gives channel membership
      (``atlas.region_channels(info)`` or a mapping ``atlas.regions``: region -> channel
      names or indices); otherwise the region centroids are coloured over grey channels.
      ``*`` marks regions with ``p_fdr < alpha``.
    - ``"times"``: effect against window centre (windows parsed from region names such as
      ``"0.100-0.200 s"`` or ``"100-200 ms"``, else ``atlas.windows``) with its CI band,
      the random-window null band, and significant windows shaded and starred.

    Colours are symmetric around 0 (a negative effect means ablation helped).

    Parameters
    ----------
    frame : pandas.DataFrame
        ``AblationResult.to_frame()``.
    atlas : Atlas
        The atlas the frame was computed with (duck-typed, see module docstring).
    info : dict
        The subject's BrainTrials info (fMRI: ``affine``, ``volume_shape``, optional
        ``space``; M/EEG: ``ch_names``, ``ch_pos``, ``times``).
    strategy, metric : str | None
        Which rows to map; None: the first in frame order (logged when there are several).
    title : str | None
        Figure title; default ``"<atlas>: <strategy>, <metric>"``.
    alpha : float
        Significance level on ``p_fdr`` (sensors and times).
    display : "auto" | "slices" | "glass"
        Volume atlases only: slices (``plot_stat_map``) or glass brain.
    bg_img : nibabel image | str | None
        Background of the slices (e.g. the subject's mean functional image).
    figsize : tuple of float | None
        Figure size in inches.
    %(verbose)s

    Returns
    -------
    fig : matplotlib.figure.Figure

    Raises
    ------
    RuntimeError
        If nilearn is missing or its plotting fails (the original error is chained).
    """
    check_option("display", display, ("auto", "slices", "glass"))
    kind = getattr(atlas, "kind", None)
    check_option("atlas.kind", kind, ("volume", "nsd", "spheres", "sensors", "times"))
    name = str(getattr(atlas, "name", "") or "")
    if "atlas" in frame.columns and name and name in set(frame["atlas"].astype(str)):
        frame = frame[frame["atlas"].astype(str) == name]
    rows, frame_atlas, strategy, metric = _select(frame, strategy, metric)
    if title is None:
        title = f"{name or frame_atlas or 'atlas'}: {strategy}, {_metric_text(metric)}"
    if kind in ("volume", "nsd", "spheres"):
        fig = _new_figure(figsize or (8.0, 3.2))
        fig.set_layout_engine(None)  # nilearn places its own axes
        if kind == "spheres":
            _plot_spheres(fig, rows, atlas, info, title)
        else:
            _plot_volume(fig, rows, atlas, info, title, display, bg_img)
        return fig
    if kind == "times":
        fig = _new_figure(figsize or (6.0, 3.2))
        _plot_times(fig, rows, atlas, strategy, metric, alpha)
        fig.axes[0].set_title(title, fontsize=9)
        return fig
    fig = _new_figure(figsize or (4.6, 4.2))
    sc = _plot_sensors(fig, rows, atlas, info, alpha)
    fig.colorbar(sc, ax=fig.axes[0], shrink=0.75, label=_effect_label(strategy, metric))
    fig.axes[0].set_title(title, fontsize=9)
    return fig


# --------------------------------------------------------------------------- table
def ablation_table_html(frame: Any, *, alpha: float = 0.05) -> str:
    """An HTML table of the ablation results, every estimate with its CI or p-value.

    Columns: region, strategy, metric, n_features, score [CI], effect [CI], null mean
    [2.5–97.5 % of random same-size regions], p, p (FDR), significant (``p_fdr < alpha``),
    then what each score is compared with: the frame's ``baseline`` (the intact decoder's
    score; chance for ``alone``) and the metric's ``chance`` level ("n/a" when the frame has
    no such column). An ``atlas`` column is added when the frame holds several atlases. Rows
    are grouped by strategy × metric (frame order) and sorted by decreasing effect. All text
    is escaped.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``AblationResult.to_frame()``.
    alpha : float
        Significance level on the BH-FDR corrected p-values.

    Returns
    -------
    html : str
    """
    _check_frame(frame)
    several_atlases = "atlas" in frame.columns and frame["atlas"].astype(str).nunique() > 1
    head = (["atlas"] if several_atlases else []) + [
        "region", "strategy", "metric", "n_features", "score [95% CI]", "effect [95% CI]",
        "null mean [2.5–97.5 %]", "p", "p (FDR)", f"significant (FDR &lt; {alpha:g})",
        "baseline (intact decoder; chance for alone)", "chance"]
    with_nc = "noise_ceiling" in frame.columns and bool(np.isfinite(_col(frame, "noise_ceiling")).any())
    if with_nc:
        head.append("noise ceiling (% of variance, NSD ncsnr)")
    body = []
    for atlas, strategy, metric in _groups(frame):
        mask = (frame["strategy"].astype(str) == strategy) & (frame["metric"].astype(str) == metric)
        if "atlas" in frame.columns:
            mask &= frame["atlas"].astype(str) == atlas
        rows = _sorted(frame[mask])
        sig = _is_significant(rows, alpha)
        for i in range(len(rows)):
            r = rows.iloc[i]
            num = _row_getter(r)
            n_feat = num("n_features")
            cells = ([_html.escape(atlas)] if several_atlases else []) + [
                _html.escape(str(r["region"])), _html.escape(strategy), _html.escape(metric),
                str(int(n_feat)) if np.isfinite(n_feat) else "n/a",
                _fmt_ci({"value": num("score"), "ci_low": num("score_ci_low"),
                         "ci_high": num("score_ci_high")}),
                _fmt_ci({"value": num("effect"), "ci_low": num("effect_ci_low"),
                         "ci_high": num("effect_ci_high")}),
                _fmt_ci({"value": num("null_mean"), "ci_low": num("null_low"),
                         "ci_high": num("null_high")}),
                _fmt_p(num("p_value")), _fmt_p(num("p_fdr")),
                "<strong>yes</strong>" if sig[i] else "no", _fmt(num("baseline")), _fmt(num("chance"))]
            if with_nc:
                nc = num("noise_ceiling")
                cells.append(f"{nc:.1f}" if np.isfinite(nc) else "n/a")
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<table class="nd-table nd-ablation"><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in head)
            + f"</tr></thead><tbody>{''.join(body)}</tbody></table>")


# --------------------------------------------------------------------------- report section
def _method_html(frame: Any, alpha: float) -> str:
    strategies = list(dict.fromkeys(frame["strategy"].astype(str)))
    items = "".join(f"<li><b>{_html.escape(s)}</b>: {_html.escape(_STRATEGY_TEXT.get(s, s))}</li>"
                    for s in strategies)
    n_null = sorted({int(v) for v in _col(frame, "n_null") if np.isfinite(v)})
    null_txt = ("" if not n_null else f" (n = {n_null[0]}" if len(n_null) == 1
                else f" (n = {n_null[0]}–{n_null[-1]}")
    null_txt += ")" if n_null else ""
    atlases = (", ".join(dict.fromkeys(frame["atlas"].astype(str))) if "atlas" in frame.columns else "")
    return (
        "<p>Each region of the atlas"
        + (f" <b>{_html.escape(atlases)}</b>" if atlases else "")
        + " was ablated and the trained decoder re-scored on the test trials:</p>"
        f"<ul>{items}</ul>"
        "<p>The <b>effect</b> is the drop in score (baseline − score) for lesions and "
        "<i>without</i>, and the score above chance for <i>alone</i>; its 95 % CI is a bootstrap "
        "over test trials. A region's effect is compared with the effects of random regions with "
        f"the same number of features{null_txt}: the grey band shows their 2.5–97.5 percentiles "
        "and p is the permutation p-value of the region's effect against them. p-values are "
        "Benjamini–Hochberg corrected across regions within each strategy × metric; "
        f"<b>*</b> marks p (FDR) &lt; {alpha:g}.</p>")


@verbose
@fill_doc
def add_ablation_section(report: Report, frame: Any, *, atlas: Any = None, info: Mapping[str, Any] | None = None,
                         title: str = "Ablation", section: str = "Ablation", alpha: float = 0.05,
                         maps: bool = True, verbose: bool | str | int | None = None) -> Report:
    """Add the region-ablation results to a report: method, table, bar charts and maps.

    Adds, in section ``section``: a paragraph describing the method (the strategies in
    the frame, the null of random same-size regions with its ``n_null``, BH-FDR); the
    table of :func:`ablation_table_html`; one bar chart (:func:`plot_ablation_bars`) per
    atlas × strategy × metric; and, when ``atlas`` and ``info`` are given, one map
    (:func:`plot_ablation_map`) per strategy × metric of that atlas. A map nilearn cannot
    draw (nilearn missing, or its plotting failed) is skipped with a logged warning and a
    note in the report; any other error is raised.

    Parameters
    ----------
    report : Report
        The report to add to.
    frame : pandas.DataFrame
        ``AblationResult.to_frame()``.
    atlas : Atlas | None
        The atlas of the frame, for the maps.
    info : dict | None
        The subject's BrainTrials info, for the maps.
    title : str
        Prefix of the items' titles.
    section : str
        Section the items go in.
    alpha : float
        Significance level on the BH-FDR corrected p-values.
    maps : bool
        Add the maps (when ``atlas`` and ``info`` are given).
    %(verbose)s

    Returns
    -------
    report : Report
    """
    if not isinstance(report, Report):
        raise TypeError(f"report must be a neurodecode.reports.Report, got {type(report).__name__}")
    _check_frame(frame)
    report.add_html(_method_html(frame, alpha), title=f"{title}: method", section=section)
    report.add_html(ablation_table_html(frame, alpha=alpha), title=f"{title}: results", section=section,
                    caption="Each estimate with its 95 % bootstrap CI; null: mean [2.5–97.5 percentiles] "
                            "of the effect of random same-size regions; p vs that null.")
    groups = _groups(frame)
    for atlas_name, strategy, metric in groups:
        sub = frame if "atlas" not in frame.columns else frame[frame["atlas"].astype(str) == atlas_name]
        fig = plot_ablation_bars(sub, strategy=strategy, metric=metric, alpha=alpha)
        label = " — ".join(p for p in (atlas_name, strategy, _metric_text(metric)) if p)
        report.add_figure(fig, title=f"{title}: {label}", section=section,
                          caption=f"Bars: {_effect_label(strategy, metric)} (error bars: 95 % bootstrap "
                                  "CI); grey: random same-size regions (2.5–97.5 %, tick: mean); "
                                  f"*: p (FDR) < {alpha:g}.")
    if not maps or atlas is None or info is None:
        if maps and (atlas is None) != (info is None):
            logger.info("No ablation map: pass both atlas= and info=")
        return report
    name = str(getattr(atlas, "name", "") or "")
    for atlas_name, strategy, metric in groups:
        if "atlas" in frame.columns and name and atlas_name != name:
            logger.info("No map for atlas %r: the atlas passed is %r", atlas_name, name)
            continue
        label = f"{name or atlas_name}: {strategy}, {_metric_text(metric)}"
        sub = frame if "atlas" not in frame.columns else frame[frame["atlas"].astype(str) == atlas_name]
        try:
            fig = plot_ablation_map(sub, atlas, info, strategy=strategy, metric=metric, alpha=alpha)
        except _MapPlotError as err:
            logger.warning("Skipping the ablation map %s: %s", label, err)
            report.add_html(f"<p>Map skipped: {_html.escape(str(err))}</p>", title=f"{title} map: {label}",
                            section=section)
            continue
        report.add_figure(fig, title=f"{title} map: {label}", section=section,
                          caption=f"Colour: {_effect_label(strategy, metric)}.")
    return report
