"""Every metric a report or gallery shows has its chance level or a baseline beside it.

Gallery: the shuffled-pairing and mean-image columns of the aggregate table and their note
(issue #14: "SSIM 0.669 for pure-noise images with no baseline beside it"); the caption rows
of ``neurodecode reconstruct``; the retrieval report's per-group and best-model tables; the
ablation table.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from neurodecode.reports import Report, build_gallery
from neurodecode.reports.ablation import ablation_table_html
from neurodecode.reports.gallery import GalleryItem
from neurodecode.reports.report import best_model_table
from neurodecode.tasks.caption_metrics import CaptionScores
from neurodecode.tasks.metrics import ReconstructionScores
from neurodecode.tasks.retrieval import RetrievalScores


@pytest.fixture
def items():
    rng = np.random.default_rng(0)
    return [GalleryItem(i, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                        reconstructions=[rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)]) for i in range(2)]


def _table(html):
    return html.split('<table class="nd-metrics">')[1].split("</table>")[0]


def _recon_scores(baselines=True):
    metrics = {"pixcorr": {"value": 0.2031, "ci_low": 0.18, "ci_high": 0.22, "chance": np.nan,
                           "higher_is_better": True},
               "ssim": {"value": 0.669, "ci_low": 0.66, "ci_high": 0.68, "chance": np.nan, "higher_is_better": True},
               "effnet": {"value": 0.91, "ci_low": 0.9, "ci_high": 0.92, "chance": np.nan,
                          "higher_is_better": False}}
    if baselines:
        for name, shuffled, mean_image in (("pixcorr", 0.0123, 0.4567), ("ssim", 0.2188, 0.8783),
                                           ("effnet", 0.95, 0.88)):
            metrics[name].update(shuffled=shuffled, mean_image=mean_image)
    return ReconstructionScores(metrics=metrics, n_images=2)


def test_gallery_table_shows_both_baselines_and_the_note(items):
    html = build_gallery(items, metrics=_recon_scores().to_frame()).render()
    table = _table(html)
    assert "<th>chance</th><th>shuffled pairing</th><th>mean image</th><th>better</th>" in table
    # value | CI low | CI high | chance | shuffled | mean image | better, formatted as the other numbers
    assert ("<td>ssim</td><td>0.669</td><td>0.660</td><td>0.680</td><td>—</td><td>0.219</td><td>0.878</td>"
            "<td>↑ higher</td>") in table
    assert "<td>pixcorr</td><td>0.203</td><td>0.180</td><td>0.220</td><td>—</td><td>0.0123</td><td>0.457</td>" in table
    assert "<td>effnet</td><td>0.910</td><td>0.900</td><td>0.920</td><td>—</td><td>0.950</td><td>0.880</td>" \
           "<td>↓ lower</td>" in table
    note = re.search(r'<p class="nd-caption nd-baselines-note">(.*?)</p>', html).group(1)
    assert "shuffled pairing" in note and "mean image" in note
    assert "only better than trivial where its value beats both" in note


def test_gallery_without_baselines_keeps_working(items):
    html = build_gallery(items, metrics=_recon_scores(baselines=False).to_frame()).render()
    assert "<td>ssim</td><td>0.669</td><td>0.660</td><td>0.680</td><td>—</td><td>—</td><td>—</td>" in _table(html)
    html = build_gallery(items, metrics={"PixCorr": 0.3}).render()   # a bare number
    assert "<td>PixCorr</td><td>0.300</td><td>—</td><td>—</td><td>—</td><td>—</td><td>—</td><td>—</td>" in html


def test_gallery_from_evaluated_scores(items):
    pytest.importorskip("torch")
    from neurodecode.tasks.metrics import evaluate_reconstructions

    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    noise = rng.integers(0, 256, target.shape, dtype=np.uint8)
    sc = evaluate_reconstructions(noise, target, metrics=("pixcorr", "ssim"), n_boot=0, verbose="error")
    table = _table(build_gallery(items, metrics=sc.to_frame()).render())
    from neurodecode.reports.report import _fmt

    row = re.search(r"<tr><td>ssim</td>(.*?)</tr>", table).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[4] == _fmt(sc.metrics["ssim"]["shuffled"]) and cells[5] == _fmt(sc.metrics["ssim"]["mean_image"])


def test_reconstruct_gallery_adds_caption_rows_with_their_shuffled_pairing(items):
    from neurodecode.workflow.reconstruct import _with_caption_rows

    caps = CaptionScores(metrics={"bleu1": {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7, "shuffled": 0.31},
                                  "meteor": {"value": 0.25, "ci_low": 0.2, "ci_high": 0.3, "shuffled": np.nan}},
                         unavailable={"spice": "no Java"}, n_images=2)
    table = _with_caption_rows(_recon_scores().to_frame(), caps)
    assert list(table["metric"])[-2:] == ["caption BLEU-1", "caption METEOR"]   # unavailable SPICE left out
    html = _table(build_gallery(items, metrics=table).render())
    assert "<td>caption BLEU-1</td><td>0.600</td><td>0.500</td><td>0.700</td><td>—</td><td>0.310</td><td>—</td>" \
           "<td>↑ higher</td>" in html
    assert "<td>caption METEOR</td><td>0.250</td><td>0.200</td><td>0.300</td><td>—</td><td>—</td><td>—</td>" in html


# --------------------------------------------------------------------------- retrieval report, ablation
def _retrieval(values, chance=(0.1, 0.5), groups=None):
    metrics = {name: {"value": v, "ci_low": v - 0.05, "ci_high": v + 0.05, "chance": c}
               for name, v, c in zip(("nway_top1_forward", "2way_forward"), values, chance)}
    data = {"metrics": metrics, "n_items": 10, "protocol": {"ci": 0.95}}
    if groups:
        data["groups"] = {g: {name: dict(d, chance=gc) for (name, d), gc in zip(metrics.items(), gch)}
                          for g, gch in groups.items()}
        data["group_sizes"] = {g: 5 for g in groups}
    return RetrievalScores.from_dict(data)


def test_retrieval_per_group_table_and_best_model_table_show_chance():
    sc = _retrieval((0.4, 0.8), groups={"1": (0.125, 0.5), "2": (0.1, 0.5)})
    html = Report("r").add_metrics_table(sc).render()
    per_group = html.split("Per group")[1]
    assert "<th>mean over groups</th><th>chance</th>" in per_group
    top1 = re.search(r"<tr><td>[^<]*</td>(?:<td>.*?</td>)*?</tr>", per_group.split("<tbody>")[1]).group(0)
    assert top1.endswith("<td>0.100 / 0.125</td></tr>")   # the groups' chance levels (1/m differs)
    best = best_model_table({"ridge": _retrieval((0.3, 0.8)), "mlp": _retrieval((0.6, 0.83))})
    assert "<th>chance</th><th>difference</th>" in best
    rows = re.findall(r"<tr><td>.*?</tr>", best.split("<tbody>")[1])
    assert [re.findall(r"<td>(.*?)</td>", r)[-2] for r in rows] == ["0.100", "0.500"]


def test_ablation_table_shows_the_intact_score_and_chance():
    row = {"atlas": "a", "region": "V1", "strategy": "zero", "metric": "top1", "n_features": 5,
           "baseline": 0.62, "chance": 0.05, "score": 0.4, "score_ci_low": 0.35, "score_ci_high": 0.45,
           "effect": 0.22, "effect_ci_low": 0.2, "effect_ci_high": 0.25, "null_mean": 0.01, "null_low": 0.0,
           "null_high": 0.02, "n_null": 10, "p_value": 0.01, "p_fdr": 0.01, "significant": True, "rank": 1}
    html = ablation_table_html(pd.DataFrame([row]))
    head = re.findall(r"<th>(.*?)</th>", html)
    assert head[-2:] == ["baseline (intact decoder; chance for alone)", "chance"]
    cells = re.findall(r"<td>(.*?)</td>", html)
    assert cells[-2:] == ["0.620", "0.0500"]
    old = pd.DataFrame([{k: v for k, v in row.items() if k != "chance"}])   # a frame from before the column
    assert re.findall(r"<td>(.*?)</td>", ablation_table_html(old))[-1] == "n/a"
