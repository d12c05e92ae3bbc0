"""Tests of the self-contained HTML report and its figures."""

from __future__ import annotations

import base64
import re
import sys

import numpy as np
import pytest

from neurodecode.reports import (
    Report,
    build_retrieval_report,
    fig_to_png,
    plot_retrieval_bars,
    plot_topk_curve,
)
from neurodecode.tasks import evaluate_retrieval, retrieve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scores_and_images():
    rng = np.random.default_rng(0)
    n, dim = 120, 16
    target = rng.standard_normal((n, dim))
    groups = np.repeat(["1", "2"], n // 2)
    pred_a = target + 1.5 * rng.standard_normal((n, dim))
    pred_b = target + 3.0 * rng.standard_normal((n, dim))
    kw = {"groups": groups, "n_candidates": 50, "n_repeats": 5, "n_boot": 200}
    results = {"neurodecode": evaluate_retrieval(pred_a, target, **kw),
               "ridge": evaluate_retrieval(pred_b, target, **kw)}
    images = rng.integers(0, 256, size=(n, 24, 24, 3), dtype=np.uint8)
    idx = retrieve(pred_a[:4], target, 3)
    return results, images[:4], images[idx], idx == np.arange(4)[:, None]


def _src_and_href(html):
    return re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)


def _check_self_contained(html):
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    refs = _src_and_href(html)
    for ref in refs:
        assert ref.startswith(("data:image/png;base64,", "#")), ref[:60]
    pngs = [base64.b64decode(r.split(",", 1)[1], validate=True) for r in refs
            if r.startswith("data:")]
    assert pngs and all(p.startswith(PNG_MAGIC) for p in pngs)
    return pngs


def test_build_retrieval_report_is_self_contained(tmp_path, scores_and_images):
    results, query, retrieved, correct = scores_and_images
    report = build_retrieval_report(results, query_images=query, retrieved_images=retrieved,
                                    correct=correct, config={"seed": 0, "model": {"dim": 16}},
                                    title="Demo <fit>")
    out = report.save(tmp_path / "sub" / "report.html")
    html = out.read_text(encoding="utf-8")
    pngs = _check_self_contained(html)
    # 3 bar charts + 1 curve + 4 rows x (1 query + 3 retrieved)
    assert len(pngs) == 4 + 4 * 4
    assert "Demo &lt;fit&gt;" in html                             # escaped title
    s = results["neurodecode"].metrics["nway_top1_forward"]
    assert f"{s['value']:.3f}" in html or f"{s['value']:.4f}" in html
    assert f"{s['ci_low']:.3f}" in html or f"{s['ci_low']:.4f}" in html
    assert "50-way top-1, brain→image" in html and "chance" in html
    assert "nd-correct" in html                                     # highlighted hit
    assert "seed: 0" in html                                        # config as YAML
    assert "ridge" in html and "n=60" in html                       # models and groups
    assert report._repr_html_() == html
    assert not list(tmp_path.glob("sub/.*.tmp"))



def test_report_has_the_gallery_content_security_policy(tmp_path, scores_and_images):
    import html as html_lib

    from neurodecode.reports.report import _CSP, _content_security_policy

    results, query, retrieved, correct = scores_and_images
    report = build_retrieval_report(results, query_images=query, retrieved_images=retrieved, correct=correct)
    report.add_html("<script>alert(1)</script>", title="user html")
    html = report.save(tmp_path / "report.html").read_text(encoding="utf-8")
    metas = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    assert len(metas) == 1 and html.index(metas[0]) < html.index("</head>")  # a <meta> CSP only works in <head>
    csp = html_lib.unescape(metas[0])
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["img-src"] == "data:"
    assert directives["script-src"] == "'none'"  # the report runs no script, not even one a user adds
    assert directives["base-uri"] == "'none'" and directives["form-action"] == "'none'"
    # one policy for the report and the gallery: the gallery's is the same plus its script's hash
    assert csp == _content_security_policy() and csp.startswith(_CSP)
    assert _content_security_policy("x").startswith(_CSP + "; script-src 'sha256-")

def test_metrics_table_accepts_dicts_and_shows_cis(scores_and_images):
    results = scores_and_images[0]
    s = results["ridge"]
    for obj in (s, s.to_dict(), s.metrics, {"m": s.to_dict()}):
        html = Report("t").add_metrics_table(obj, title="x").render()
        d = s.metrics["2way_forward"]
        assert f"{d['value']:.3f} <span class=\"nd-ci\">[{d['ci_low']:.3f}, {d['ci_high']:.3f}]" in html
    with pytest.raises(TypeError):
        Report("t").add_metrics_table([1, 2, 3], title="x")


def test_add_figure_bytes_arrays_and_html(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    png = fig_to_png(fig)
    assert png.startswith(PNG_MAGIC)
    report = (Report("figs")
              .add_figure(fig, title="fig", caption="a caption")
              .add_figure(png, title="bytes")
              .add_figure(np.zeros((8, 8, 3)), title="array", section="Other")
              .add_html("<p>hello <b>world</b></p>", title="note"))
    assert len(report) == 4 and "Other" in repr(report)
    html = report.render()
    _check_self_contained(html)
    assert "<b>world</b>" in html and "a caption" in html
    with pytest.raises(ValueError, match="PNG"):
        report.add_figure(b"GIF89a", title="bad")
    assert matplotlib is not None


def test_save_is_atomic_on_error(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("previous report", encoding="utf-8")
    report = Report("x").add_html("<p>new</p>", title="n")

    def boom(self):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(Report, "render", boom)
    with pytest.raises(RuntimeError):
        report.save(path)
    assert path.read_text(encoding="utf-8") == "previous report"

    # failure while writing (after the temporary file exists) also leaves the old file
    monkeypatch.undo()
    import neurodecode.utils._fileio as fileio

    def bad_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", bad_replace)
    with pytest.raises(OSError):
        report.save(path)
    assert path.read_text(encoding="utf-8") == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_image_rows_validate_shapes(scores_and_images):
    _, query, retrieved, correct = scores_and_images
    with pytest.raises(ValueError, match="correct"):
        Report("x").add_image_rows(query, retrieved, correct=correct[:, :2])
    with pytest.raises(ValueError, match="rows"):
        Report("x").add_image_rows(query[:2], retrieved)
    # float images in [0, 1] and channels-first are accepted
    html = Report("x").add_image_rows(query / 255.0, np.moveaxis(retrieved, -1, 2),
                                      titles=list("abcd")).render()
    _check_self_contained(html)


def test_figures_return_figures_without_pyplot(scores_and_images):
    results = scores_and_images[0]
    fig = plot_retrieval_bars(results, metric="2way_backward")
    assert len(fig.axes) == 1
    assert len(fig.axes[0].patches) == 2 * 3                    # 2 models x (2 subjects + mean)
    fig2 = plot_topk_curve(results)
    assert len(fig2.axes) == 2
    assert fig_to_png(fig2).startswith(PNG_MAGIC)
    fig3 = plot_retrieval_bars(results["ridge"])                 # a single RetrievalScores
    assert fig3.axes
    with pytest.raises(ValueError, match="Unknown metric"):
        plot_retrieval_bars(results, metric="nope")


def test_import_does_not_load_matplotlib():
    import subprocess

    code = ("import sys, neurodecode.reports, neurodecode.tasks, neurodecode.analysis; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_template_is_package_data():
    from importlib.resources import files

    text = files("neurodecode.reports").joinpath("templates", "retrieval_report.html.jinja").read_text()
    assert "{{ title }}" in text


def test_build_report_accepts_per_subject_results(tmp_path):
    rng = np.random.default_rng(1)
    per_model = {}
    for model, noise in (("ridge", 3.0), ("mlp", 1.5)):
        per_model[model] = {}
        for subj in (1, 2):
            target = rng.standard_normal((40, 8))
            per_model[model][subj] = evaluate_retrieval(
                target + noise * rng.standard_normal((40, 8)), target, n_candidates=20,
                n_repeats=3, n_boot=50)
    report = build_retrieval_report(per_model, title="nested", example_caption="custom caption")
    html = report.render()
    _check_self_contained(html)
    assert "subject 1" not in html  # labels live in the PNGs; the tables use the group keys
    assert "1 (n=40)" in html and "mean over groups" in html
    fig = plot_retrieval_bars(per_model)
    assert len(fig.axes[0].patches) == 2 * 3


def test_time_window_figure():
    import pandas as pd

    from neurodecode.reports import Report, plot_time_windows

    frame = pd.DataFrame({"start": [0.0, 0.1, 0.2], "stop": [0.1, 0.2, 0.3],
                          "nway_top1_forward": [0.1, 0.6, 0.2], "nway_top1_forward_ci_low": [0.0, 0.5, 0.1],
                          "nway_top1_forward_ci_high": [0.2, 0.7, 0.3],
                          "nway_top1_forward_chance": [0.05, 0.05, 0.05]})
    fig = plot_time_windows(frame)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "peak window" in labels and "chance" in labels
    html = Report("t").add_figure(fig, title="Decoding over time windows").render()
    assert "data:image/png;base64," in html
    with pytest.raises(ValueError, match="no column"):
        plot_time_windows(frame.drop(columns="stop"))


def _scores(values, ci=0.05):
    from neurodecode.tasks.retrieval import RetrievalScores

    metrics = {"nway_top1_forward": {"value": values[0], "ci_low": values[0] - ci, "ci_high": values[0] + ci,
                                     "chance": 0.1},
               "2way_forward": {"value": values[1], "ci_low": values[1] - ci, "ci_high": values[1] + ci,
                                "chance": 0.5}}
    return RetrievalScores.from_dict({"metrics": metrics, "n_items": 10, "protocol": {"ci": 0.95}})


def test_best_model_table_names_winner_and_overlap():
    from neurodecode.reports.report import best_model_table

    html = best_model_table({"ridge": _scores((0.30, 0.80)), "mlp": _scores((0.60, 0.83))})
    rows = re.findall(r"<tr><td>(.*?)</td><td><b>(.*?)</b>.*?<td>(clearly|within CI|tie)</td></tr>", html)
    assert [(b, v) for _, b, v in rows] == [("mlp", "clearly"), ("mlp", "within CI")]


def test_training_curves_figure():
    from neurodecode.reports.figures import plot_training_curves

    hist = [{"epoch": e, "train_loss": 3.0 / e, "val_loss": 3.5 / e, "val_top1": 0.1 * e, "val_chance": 0.05}
            for e in range(1, 5)]
    fig = plot_training_curves({"mlp": hist, "no-val": [{"epoch": 1, "train_loss": 1.0, "val_loss": None}]})
    loss_ax, top_ax = fig.axes
    labels = [line.get_label() for line in loss_ax.lines]
    assert labels == ["mlp train", "mlp validation", "no-val train"]
    np.testing.assert_allclose(top_ax.lines[0].get_ydata(), [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="train_loss"):
        plot_training_curves({"mlp": [{"epoch": 1}]})
