"""Tests of the region-ablation figures, table and report section."""

from __future__ import annotations

import base64
import logging
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from neurodecode.reports import Report, fig_to_png
from neurodecode.reports.ablation import (
    ablation_table_html,
    add_ablation_section,
    plot_ablation_bars,
    plot_ablation_map,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REGIONS = ["V1", "FFA", "<b>x</b>", "PPA"]


def _frame(regions=REGIONS, strategies=("zero", "alone"), metric="top1", atlas="toy") -> pd.DataFrame:
    rows = []
    for s, strategy in enumerate(strategies):
        effects = np.array([0.05, 0.30, -0.02, 0.12])[: len(regions)] + 0.01 * s
        p_fdr = np.array([0.20, 0.001, 0.90, 0.03])[: len(regions)]
        ranks = np.argsort(np.argsort(-effects)) + 1
        for i, region in enumerate(regions):
            base = 0.02 if strategy == "alone" else 0.6
            score = base + effects[i] if strategy == "alone" else base - effects[i]
            rows.append({
                "atlas": atlas, "region": region, "strategy": strategy, "metric": metric,
                "n_features": 10 * (i + 1), "baseline": base, "score": score,
                "score_ci_low": score - 0.04, "score_ci_high": score + 0.05,
                "effect": effects[i], "effect_ci_low": effects[i] - 0.05, "effect_ci_high": effects[i] + 0.04,
                "null_mean": 0.01, "null_low": -0.03, "null_high": 0.06, "n_null": 200,
                "p_value": p_fdr[i] / 2, "p_fdr": p_fdr[i], "significant": p_fdr[i] < 0.05,
                "rank": int(ranks[i])})
    return pd.DataFrame(rows)


def _bars(fig):
    ax = fig.axes[0]
    return ax, next(c for c in ax.containers if isinstance(c, BarContainer))


def _star_rows(ax):
    """Tick labels of the rows that carry a '*' text."""
    labels = {round(t): lab.get_text() for t, lab in zip(ax.get_yticks(), ax.get_yticklabels())}
    return {labels[round(t.get_position()[1])] for t in ax.texts if t.get_text() == "*"}


# --------------------------------------------------------------------------- bars
def test_bars_sorted_with_stars_on_significant_rows():
    frame = _frame()
    fig = plot_ablation_bars(frame, strategy="zero", metric="top1")
    assert isinstance(fig, Figure)
    ax, bars = _bars(fig)
    rows = frame[frame.strategy == "zero"].sort_values("effect", ascending=False)
    np.testing.assert_allclose([b.get_width() for b in bars], rows["effect"].to_numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows["region"])
    # largest effect on top: its bar has the highest position on screen
    ys = [b.get_y() + b.get_height() / 2 for b in bars]
    assert ax.transData.transform((0, ys[0]))[1] > ax.transData.transform((0, ys[-1]))[1]
    assert _star_rows(ax) == {"FFA", "PPA"}
    assert _star_rows(_bars(plot_ablation_bars(frame, strategy="zero", alpha=0.01))[0]) == {"FFA"}
    assert "toy" in ax.get_title() and "zero" in ax.get_title() and "top-1" in ax.get_title()
    assert ax.get_xlabel() == "drop in top-1 when lesioned (zero)"
    # the error bars are the effect CIs
    err = bars.errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 0] for s in err],
                               rows[["effect_ci_low", "effect_ci_high"]].to_numpy(), atol=1e-12)


def test_bars_default_selection_and_alone_label(caplog):
    frame = _frame()
    with caplog.at_level(logging.INFO, logger="neurodecode"):
        fig = plot_ablation_bars(frame, verbose="info")
    assert "first, 'zero'" in caplog.text
    assert "zero" in fig.axes[0].get_title()
    fig = plot_ablation_bars(frame, strategy="alone")
    ax, bars = _bars(fig)
    assert ax.get_xlabel() == "top-1 above chance (alone)"
    np.testing.assert_allclose(sorted((b.get_width() for b in bars), reverse=True),
                               [b.get_width() for b in bars])


def test_bars_into_given_axes_and_max_regions():
    from neurodecode.reports.figures import _new_figure

    fig = _new_figure((4, 3))
    ax = fig.add_subplot()
    assert plot_ablation_bars(_frame(), strategy="zero", ax=ax) is fig
    _, bars = _bars(plot_ablation_bars(_frame(), strategy="zero", max_regions=2))
    np.testing.assert_allclose([b.get_width() for b in bars], [0.30, 0.12])


def test_bars_errors():
    frame = _frame()
    with pytest.raises(ValueError, match="empty"):
        plot_ablation_bars(frame.iloc[:0])
    with pytest.raises(ValueError, match="not in the frame"):
        plot_ablation_bars(frame, strategy="permute")
    with pytest.raises(ValueError, match="no column"):
        plot_ablation_bars(frame.drop(columns="effect"))


# --------------------------------------------------------------------------- table
def test_table_html():
    html = ablation_table_html(_frame())
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    for region in ("V1", "FFA", "PPA"):
        assert f"<td>{region}</td>" in html
    rows = re.findall(r"<tr>(.*?)</tr>", html.split("<tbody>")[1])
    assert len(rows) == 8
    ffa = next(r for r in rows if "<td>FFA</td>" in r and "<td>zero</td>" in r)
    cells = re.findall(r"<td>(.*?)</td>", ffa)
    # effect 0.300 [0.250, 0.340]; score 0.300 [0.260, 0.350]; null 0.0100 [-0.0300, 0.0600]
    assert cells[4].startswith("0.300") and "[0.260, 0.350]" in cells[4]
    assert cells[5].startswith("0.300") and "[0.250, 0.340]" in cells[5]
    assert "[-0.0300, 0.0600]" in cells[6]
    assert cells[7] == "5.0e-04" and cells[8] == "0.001" and "yes" in cells[9]
    v1 = re.findall(r"<td>(.*?)</td>", next(r for r in rows if "<td>V1</td>" in r))
    assert v1[7] == "0.100" and v1[8] == "0.200" and v1[9] == "no"
    # within a strategy, rows go by decreasing effect
    zero_regions = [re.findall(r"<td>(.*?)</td>", r)[0] for r in rows if "<td>zero</td>" in r]
    assert zero_regions == ["FFA", "PPA", "V1", "&lt;b&gt;x&lt;/b&gt;"]
    assert "atlas" not in html.split("</thead>")[0]  # one atlas: no atlas column
    two = pd.concat([_frame(), _frame(atlas="other")])
    assert "<th>atlas</th>" in ablation_table_html(two)


# --------------------------------------------------------------------------- maps
class _VolumeAtlas:
    kind = "volume"
    name = "toy"

    def __init__(self, kind="volume"):
        self.kind = kind
        self.labels = np.zeros((10, 10, 10), int)
        for i, sl in enumerate([np.s_[1:4, 1:4, 1:4], np.s_[5:8, 1:4, 1:4],
                                np.s_[1:4, 5:8, 5:8], np.s_[6:9, 6:9, 6:9]]):
            self.labels[sl] = i + 1
        self.affine = np.diag([3.0, 3.0, 3.0, 1.0])
        self.affine[:3, 3] = -15.0
        self.calls = []

    def region_image(self, values, info):
        self.calls.append(dict(values))
        data = np.full(self.labels.shape, np.nan)
        for i, region in enumerate(REGIONS):
            if region in values:
                data[self.labels == i + 1] = values[region]
        return nib.Nifti1Image(data, info["affine"])

    def region_centroids(self, info):
        out = {}
        for i, region in enumerate(REGIONS):
            ijk = np.argwhere(self.labels == i + 1).mean(axis=0)
            out[region] = tuple(nib.affines.apply_affine(info["affine"], ijk))
        return out


def _fmri_info(space=None):
    atlas = _VolumeAtlas()
    info = {"affine": atlas.affine, "volume_shape": (10, 10, 10)}
    if space:
        info["space"] = space
    return info


def test_map_volume_slices():
    atlas = _VolumeAtlas()
    fig = plot_ablation_map(_frame(), atlas, _fmri_info(), strategy="zero", metric="top1")
    assert isinstance(fig, Figure) and len(fig.axes) >= 3
    assert atlas.calls[-1] == pytest.approx(dict(zip(REGIONS, [0.05, 0.30, -0.02, 0.12])))
    assert fig_to_png(fig).startswith(PNG_MAGIC)


def test_map_spheres():
    atlas = _VolumeAtlas(kind="spheres")
    fig = plot_ablation_map(_frame(), atlas, _fmri_info("MNI152"), strategy="alone")
    assert isinstance(fig, Figure) and len(fig.axes) >= 3


class _SensorAtlas:
    kind = "sensors"
    name = "lobes"

    def __init__(self, ch_names, with_members="names"):
        self._members = {r: ch_names[3 * i: 3 * i + 3] for i, r in enumerate(REGIONS)}
        if with_members == "names":  # a mapping region -> channel names
            self.regions = self._members
        elif with_members == "indices":  # region_channels(info) -> channel indices
            self.region_channels = lambda info: {r: list(range(3 * i, 3 * i + 3))
                                                 for i, r in enumerate(REGIONS)}

    def region_centroids(self, info):
        index = {c: i for i, c in enumerate(info["ch_names"])}
        pos = np.asarray(info["ch_pos"])
        return {r: tuple(np.nanmean(pos[[index[c] for c in chs]], axis=0)) for r, chs in self._members.items()}


def _meg_info():
    rng = np.random.default_rng(0)
    angles = np.linspace(0, 2 * np.pi, 13)[:-1]
    pos = np.c_[0.08 * np.cos(angles), 0.08 * np.sin(angles), 0.05 + 0.005 * rng.standard_normal(12)]
    pos[5] = np.nan  # a channel without position
    return {"ch_names": [f"MEG{i:03d}" for i in range(12)], "ch_pos": pos, "times": np.linspace(0, 0.5, 51)}


@pytest.mark.parametrize("with_members", ["names", "indices", None])
def test_map_sensors(with_members):
    info = _meg_info()
    atlas = _SensorAtlas(info["ch_names"], with_members=with_members)
    fig = plot_ablation_map(_frame(), atlas, info, strategy="zero")
    ax = fig.axes[0]
    colored = [c for c in ax.collections if c.get_array() is not None]
    assert len(colored) == 1
    values = np.asarray(colored[0].get_array())
    if with_members is not None:  # 11 channels with positions, coloured by their region's effect
        assert len(values) == 11
        assert np.count_nonzero(np.isclose(values, 0.30)) == 2  # FFA: channels 3-5, 5 has no position
        assert np.count_nonzero(np.isclose(values, 0.05)) == 3
    else:  # one marker per region centroid
        np.testing.assert_allclose(np.sort(values), np.sort([0.05, 0.30, -0.02, 0.12]))
    assert sum(t.get_text() == "*" for t in ax.texts) == 2
    assert len(fig.axes) == 2  # + colorbar
    assert fig_to_png(fig).startswith(PNG_MAGIC)


class _TimesAtlas:
    kind = "times"
    name = "windows"


def test_map_times():
    regions = ["0.000-0.100 s", "0.100-0.200 s", "0.200-0.300 s", "0.300-0.400 s"]
    frame = _frame(regions=regions, strategies=("alone",))
    fig = plot_ablation_map(frame, _TimesAtlas(), _meg_info())
    ax = fig.axes[0]
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0.05, 0.15, 0.25, 0.35])
    np.testing.assert_allclose(line.get_ydata(), frame["effect"])
    starred = next(ln for ln in ax.lines if ln.get_marker() == "*")
    np.testing.assert_allclose(starred.get_xdata(), [0.15, 0.35])  # p_fdr 0.001 and 0.03
    assert ax.get_xlabel() == "window centre (s)"
    # windows from atlas.windows when names carry no times
    atlas = _TimesAtlas()
    atlas.windows = {"a": (0.0, 0.1), "b": (0.1, 0.2), "c": (0.2, 0.3), "d": (0.3, 0.4)}
    fig = plot_ablation_map(_frame(regions=list("abcd"), strategies=("zero",)), atlas, _meg_info())
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), [0.05, 0.15, 0.25, 0.35])
    with pytest.raises(ValueError, match="time window"):
        plot_ablation_map(_frame(regions=list("abcd")), _TimesAtlas(), _meg_info())


def test_map_bad_kind():
    atlas = _TimesAtlas()
    atlas.kind = "surface"
    with pytest.raises(ValueError, match="atlas.kind"):
        plot_ablation_map(_frame(), atlas, {})


# --------------------------------------------------------------------------- report section
def _pngs(html):
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_add_ablation_section(tmp_path):
    report = Report("ablation test")
    out = add_ablation_section(report, _frame(), atlas=_VolumeAtlas(), info=_fmri_info(),
                               title="Region ablation", section="Ablation")
    assert out is report
    html = report.save(tmp_path / "r.html").read_text()
    assert "Region ablation" in html and "Ablation" in html
    assert 'class="nd-table nd-ablation"' in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "random regions with the same number of features (n = 200)" in html
    assert "Benjamini–Hochberg" in html
    pngs = _pngs(html)
    assert len(pngs) == 4  # bars and map for zero and alone
    assert all(p.startswith(PNG_MAGIC) for p in pngs)


def test_add_ablation_section_skips_failed_map_only(monkeypatch, tmp_path, caplog):
    import nilearn.plotting

    def boom(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(nilearn.plotting, "plot_stat_map", boom)
    report = Report("x")
    with caplog.at_level(logging.WARNING, logger="neurodecode"):
        add_ablation_section(report, _frame(strategies=("zero",)), atlas=_VolumeAtlas(), info=_fmri_info())
    assert "Skipping the ablation map" in caplog.text
    html = report.render()
    assert "Map skipped" in html and len(_pngs(html)) == 1

    class Broken(_VolumeAtlas):
        def region_image(self, values, info):
            raise KeyError("region missing")

    with pytest.raises(KeyError, match="region missing"):
        add_ablation_section(Report("y"), _frame(), atlas=Broken(), info=_fmri_info())
