"""Tests of the reconstruction + captioning gallery (self-contained, sortable HTML)."""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import io
import re
import shutil
import subprocess

import markupsafe
import numpy as np
import pandas as pd
import pytest

from neurodecode.reports import Gallery, GalleryItem, build_gallery, gallery_items

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "a cat <script>alert('x')</script> & \"friends\""


def _decode(uri: str) -> np.ndarray:
    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    png = base64.b64decode(uri.split(",", 1)[1], validate=True)
    assert png.startswith(PNG_MAGIC)
    return np.asarray(Image.open(io.BytesIO(png)))


def _img_srcs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


def _rows(html: str) -> list[str]:
    return re.findall(r"<tr data-index=[^>]*>", html)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    seen = [rng.integers(0, 256, size=(20 + 2 * i, 24, 3), dtype=np.uint8) for i in range(5)]
    low = [rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8) if i != 2 else None for i in range(5)]
    recons = [[rng.integers(0, 256, size=(16, 12 + i, 3), dtype=np.uint8) for _ in range(1 + i % 3)]
              for i in range(5)]
    return seen, low, recons


@pytest.fixture
def items(images):
    seen, low, recons = images
    out = []
    for i in range(5):
        out.append(GalleryItem(
            stimulus_id=f"img{i}", seen=seen[i], lowlevel=low[i], reconstructions=recons[i],
            decoded_caption=EVIL if i == 0 else (None if i == 3 else f"decoded {i}"),
            true_captions=None if i == 3 else [f"true {i}a", "<b>bold</b>"], subject=1 + i % 2,
            scores={"pixcorr": 0.1 * i, "EffNet-B": 1.0 - 0.1 * i} if i != 4 else {"pixcorr": 0.9}))
    return out


def test_structure_columns_rows_and_sort_attributes(items):
    gallery = build_gallery(items, title="Recon <demo>")
    html = gallery.render()
    assert isinstance(gallery, Gallery) and len(gallery) == 5
    assert html.startswith("<!DOCTYPE html>")
    assert "Recon &lt;demo&gt;" in html and "<demo>" not in html
    rows = _rows(html)
    assert len(rows) == 5
    assert 'data-stimulus-id="img0"' in rows[0] and 'data-subject="1"' in rows[0]
    assert 'data-m-pixcorr="0.1"' in rows[1] and 'data-m-effnet-b="0.9"' in rows[1]
    assert 'data-m-effnet-b=""' in rows[4]                          # missing value: sorts last
    heads = re.findall(r'<th data-sort-key="([^"]+)" data-sort-type="([^"]+)" '
                       r'data-sort-first="([^"]+)"', html)
    assert heads == [("index", "number", "ascending"), ("stimulus-id", "text", "ascending"),
                     ("subject", "text", "ascending"), ("m-pixcorr", "number", "descending"),
                     ("m-effnet-b", "number", "ascending")]       # EffNet-B: lower is better
    for label in ("seen", "low-level", "reconstructions", "decoded caption"):
        assert f"<th>{label}" in html
    assert 'data-nd-sortable="1"' in html
    # self-contained: no external URL, images only as PNG data URIs
    assert "http://" not in html and "https://" not in html and "<link" not in html
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert gallery._repr_html_().startswith('<div class="nd-gallery">')
    assert "<html" not in gallery._repr_html_() and "Gallery" in repr(gallery)


def test_captions_are_escaped(items):
    html = build_gallery(items).render()
    assert str(markupsafe.escape(EVIL)) in html
    assert "<script>alert" not in html and "<b>bold</b>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert html.count("<script") == 1                                  # only our own script
    assert "no decoded caption" in html                                 # item 3


def test_csp_allows_only_the_inline_script(items):
    html = build_gallery(items).render()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    csp = html_lib.unescape(csp)
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["img-src"] == "data:"
    assert "unsafe-inline" not in directives["script-src"]
    script = re.search(r"<script>(.*?)</script>", html, re.DOTALL).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"'sha256-{digest}'" in csp


def test_data_uris_decode_to_the_same_pixels(items, images):
    seen, low, recons = images
    html = build_gallery(items).render()
    expected = []
    for i in range(5):
        expected.append(seen[i])
        if low[i] is not None:
            expected.append(low[i])
        expected.extend(recons[i])
    decoded = [_decode(s) for s in _img_srcs(html)]
    assert len(decoded) == len(expected) == 5 + 4 + sum(len(r) for r in recons)
    for got, want in zip(decoded, expected):
        np.testing.assert_array_equal(got, want)
    # width / height attributes give the real size
    assert 'width="24" height="20"' in html


def test_float_grayscale_and_channels_first_images():
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(10, 14), dtype=np.uint8)
    chw = rng.random((3, 9, 7))
    item = GalleryItem("x", gray / 255.0, reconstructions=chw)  # one (3, H, W) image
    html = build_gallery([item]).render()
    got = [_decode(s) for s in _img_srcs(html)]
    np.testing.assert_array_equal(got[0], gray)
    assert got[1].shape == (9, 7, 3)
    assert "<th>low-level" not in html and "decoded caption" not in html   # unused columns dropped


def test_thumbnail_size_downscales_but_never_upscales():
    big = np.zeros((200, 100, 3), dtype=np.uint8)
    small = np.zeros((20, 30, 3), dtype=np.uint8)
    html = build_gallery([GalleryItem(0, big, reconstructions=[small])], thumbnail_size=64).render()
    shapes = [_decode(s).shape for s in _img_srcs(html)]
    assert shapes == [(64, 32, 3), (20, 30, 3)]
    assert "fit 64×64 px" in html
    html = build_gallery([GalleryItem(0, big)], thumbnail_size=(50, 150)).render()
    assert _decode(_img_srcs(html)[0]).shape == (100, 50, 3)
    with pytest.raises(ValueError, match="positive"):
        build_gallery([GalleryItem(0, big)], thumbnail_size=0)
    with pytest.raises(TypeError, match="thumbnail_size"):
        build_gallery([GalleryItem(0, big)], thumbnail_size="big")


def test_aggregate_metrics_table_with_cis(items):
    frame = pd.DataFrame({"metric": ["PixCorr", "EffNet-B", "caption CLIP"],
                          "value": [0.31, 0.62, 0.5], "ci_low": [0.29, 0.60, np.nan],
                          "ci_high": [0.33, 0.64, np.nan], "chance": [0.0, np.nan, 0.5],
                          "direction": ["higher", None, "higher"]})
    html = build_gallery(items, metrics=frame).render()
    table = html.split('<table class="nd-metrics">')[1].split("</table>")[0]
    assert "<td>PixCorr</td><td>0.310</td><td>0.290</td><td>0.330</td><td>0.0000</td>" \
           "<td>—</td><td>—</td><td>↑ higher</td>" in table   # no baselines given: empty baseline cells
    assert "<td>EffNet-B</td><td>0.620</td><td>0.600</td><td>0.640</td><td>—</td><td>—</td><td>—</td>" \
           "<td>↓ lower</td>" in table
    assert "<td>caption CLIP</td><td>0.500</td><td>—</td><td>—</td>" in table
    as_dict = {"PixCorr": {"value": 0.31, "ci_low": 0.29, "ci_high": 0.33}, "SSIM": 0.4}
    table2 = build_gallery(items, metrics=as_dict).render()
    assert "<td>PixCorr</td><td>0.310</td><td>0.290</td><td>0.330</td>" in table2
    assert "<td>SSIM</td><td>0.400</td><td>—</td>" in table2
    # indexed by metric, with a group column
    indexed = pd.DataFrame({"value": [0.3, 0.4], "group": ["1", "2"]}, index=["a", "b"])
    assert "<th>group</th>" in build_gallery(items, metrics=indexed).render()
    with pytest.raises(TypeError, match="metrics must be"):
        build_gallery(items, metrics=[1, 2])
    with pytest.raises(ValueError, match="direction"):
        build_gallery(items, metrics={"a": {"value": 1, "direction": "sideways"}})


def test_per_item_metrics_dict_frame_and_selection(items):
    g = build_gallery(items, per_item_metrics={"ssim": np.arange(5) / 10})
    assert g.metric_names == ["pixcorr", "EffNet-B", "ssim"]
    assert 'data-m-ssim="0.3"' in _rows(g.render())[3]
    frame = pd.DataFrame({"stimulus_id": ["img4", "img0"], "clip": [0.7, 0.2]})
    html = build_gallery(items, per_item_metrics=frame).render()
    rows = _rows(html)
    assert 'data-m-clip="0.2"' in rows[0] and 'data-m-clip="0.7"' in rows[4]
    assert 'data-m-clip=""' in rows[1]                               # not in the frame
    g = build_gallery(items, per_item_metrics=["EffNet-B"])
    assert g.metric_names == ["EffNet-B"] and "data-m-pixcorr" not in g.render()
    with pytest.raises(ValueError, match="no item has"):
        build_gallery(items, per_item_metrics=["nope"])
    with pytest.raises(ValueError, match="3 values but there are 5 items"):
        build_gallery(items, per_item_metrics={"ssim": [1, 2, 3]})


def test_item_scores_with_ci():
    item = GalleryItem(0, np.zeros((4, 4, 3), np.uint8),
                       scores={"clip": {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}})
    html = build_gallery([item]).render()
    assert '0.800<span class="nd-ci">[0.700, 0.900]</span>' in html
    with pytest.raises(TypeError, match="clip"):
        build_gallery([GalleryItem(0, np.zeros((4, 4, 3), np.uint8), scores={"clip": "high"})])


def test_empty_and_invalid_items_raise_clear_errors():
    with pytest.raises(ValueError, match="at least one item"):
        build_gallery([])
    with pytest.raises(TypeError, match="GalleryItem"):
        build_gallery([np.zeros((4, 4, 3))])
    with pytest.raises(ValueError, match="no seen image"):
        build_gallery([GalleryItem("a", None)])
    with pytest.raises(ValueError, match=r"items\[0\].*reconstructions\[0\]"):
        build_gallery([GalleryItem("a", np.zeros((4, 4, 3)), reconstructions=[np.zeros((2, 3, 4, 5))])])
    # dicts with the fields of GalleryItem are accepted
    g = build_gallery([{"stimulus_id": "d", "seen": np.zeros((4, 4, 3), np.uint8)}])
    assert len(g) == 1


def test_save_is_atomic(tmp_path, items, monkeypatch):
    gallery = build_gallery(items)
    out = gallery.save(tmp_path / "sub" / "gallery.html")
    assert out.read_text(encoding="utf-8") == gallery.render()
    path = tmp_path / "gallery.html"
    path.write_text("previous", encoding="utf-8")

    def boom(self):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(Gallery, "render", boom)
    with pytest.raises(RuntimeError):
        gallery.save(path)
    assert path.read_text(encoding="utf-8") == "previous"
    monkeypatch.undo()
    import neurodecode.utils._fileio as fileio

    monkeypatch.setattr(fileio.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(OSError):
        gallery.save(path)
    assert path.read_text(encoding="utf-8") == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.html", "sub"]


def test_gallery_items_from_arrays():
    rng = np.random.default_rng(2)
    seen = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    one = gallery_items(seen, seen[:, :4], ids=[10, 11, 12], lowlevel=seen,
                        decoded_captions=["a", "b", None], true_captions={10: ["t10"], 12: "t12"},
                        subjects="subj01", scores={"pixcorr": np.array([0.1, 0.2, 0.3])})
    assert [len(it.reconstructions) for it in one] == [1, 1, 1]
    assert one[0].true_captions == ["t10"] and one[1].true_captions is None
    assert one[2].subject == "subj01" and one[1].scores == {"pixcorr": 0.2}
    samples = rng.integers(0, 256, size=(3, 4, 6, 6, 3), dtype=np.uint8)   # (n, k, H, W, 3)
    many = gallery_items(seen, samples, scores=pd.DataFrame({"ssim": [0.1, 0.2, 0.3]}))
    assert [len(it.reconstructions) for it in many] == [4, 4, 4] and many[2].stimulus_id == 2
    html = build_gallery(many).render()
    assert len(_img_srcs(html)) == 3 * 5 and "data-m-ssim" in html
    ragged = gallery_items(list(seen), [[seen[0]], [], seen[2]])
    assert [len(it.reconstructions) for it in ragged] == [1, 0, 1]
    with pytest.raises(ValueError, match="reconstructions has 2 entries"):
        gallery_items(seen, samples[:2])
    with pytest.raises(ValueError, match="ids has 2 values"):
        gallery_items(seen, ids=[1, 2])


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _dump_dom(url: str, tmp_path) -> str:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom",
           "--virtual-time-budget=5000", url]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        pytest.fail(f"chromium exited with {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


@pytest.mark.skipif(_chromium() is None, reason="needs headless chromium")
def test_chromium_loads_every_image_and_sorts(tmp_path, items):
    path = build_gallery(items, metrics={"PixCorr": 0.3}).save(tmp_path / "gallery.html")
    dom = _dump_dom(path.as_uri(), tmp_path)
    body = re.search(r"<body[^>]*>", dom).group(0)
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body).group(1))
    total = int(re.search(r'data-images-total="(\d+)"', body).group(1))
    assert loaded == total == len(_img_srcs(path.read_text(encoding="utf-8"))) > 0
    assert 'data-sort-bound="1"' in dom                                 # script ran despite CSP
    # #sort=<metric>:<dir> sorts on load (the same code path as a header click)
    dom = _dump_dom(path.as_uri() + "#sort=effnet-b:desc", tmp_path)
    order = re.findall(r'<tr data-index="(\d)"', dom)
    assert order == ["0", "1", "2", "3", "4"]                          # 1.0, 0.9, 0.8, 0.7, missing
    dom = _dump_dom(path.as_uri() + "#sort=pixcorr:desc", tmp_path)
    assert re.findall(r'<tr data-index="(\d)"', dom) == ["4", "3", "2", "1", "0"]
    assert 'aria-sort="descending"' in dom and "<script>alert" not in dom


def test_metrics_accept_retrieval_scores():
    from neurodecode.tasks import evaluate_retrieval

    rng = np.random.default_rng(3)
    target = rng.standard_normal((20, 4))
    scores = evaluate_retrieval(target + rng.standard_normal((20, 4)), target, n_candidates=10,
                                n_repeats=2, n_boot=20)
    d = scores.metrics["2way_forward"]
    item = GalleryItem(0, np.zeros((2, 2, 3), np.uint8))
    for obj in (scores, scores.to_dict()):
        html = build_gallery([item], metrics=obj).render()
        assert f"<td>2way_forward</td><td>{d['value']:.3f}</td><td>{d['ci_low']:.3f}</td>" in html
