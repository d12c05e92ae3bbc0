"""A sortable, self-contained HTML gallery of reconstructions and decoded captions.

One row per test item: the image the subject saw, the low-level (blurry) reconstruction,
the final reconstruction(s) best first, the decoded caption next to the true captions,
and one column per per-item metric. Clicking a column header sorts the rows. An optional
table of aggregate metrics (value, CI, chance, the shuffled-pairing and mean-image
baselines, which direction is better) and the run configuration sit above and below the rows.

The page is a single file rendered with the jinja2 template
``templates/gallery.html.jinja``: CSS inline, images as base64 PNG data URIs, one small
inline script (sorting, and a count of decoded images written to
``<body data-images-loaded data-images-total>``), no external URL. A Content-Security-Policy
allows only data-URI images and that one script (by its hash), so a caption can never run
code even if it were not escaped (it is).
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_write_text, fill_doc, logger, verbose
from .report import _config_to_text, _content_security_policy, _fmt, _image_to_uint8, _png_data_uri, _slug

__all__ = ["Gallery", "GalleryItem", "build_gallery", "gallery_items"]

_TEMPLATE = "gallery.html.jinja"
_DEFAULT_DISPLAY_PX = 160
# metrics where a smaller value is better (distances, errors, ranks; the EffNet-B and
# SwAV distances of the reconstruction benchmark)
_LOWER_IS_BETTER = re.compile(r"effnet|swav|dist|loss|error|mse|mae|lpips|fid|rank", re.IGNORECASE)

# Sorting and the image-load count. Kept in Python so its CSP hash matches byte for byte.
_SCRIPT = r"""
(function () {
  "use strict";
  var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };
  function num(v) { return v === null || v === "" ? NaN : Number(v); }
  function sortTable(table, key, dir) {
    var th = table.querySelector('th[data-sort-key="' + key + '"]');
    if (!th) { return false; }
    dir = dir || th.getAttribute("data-sort-first") || "ascending";
    var type = th.getAttribute("data-sort-type") || "text";
    var sign = dir === "descending" ? -1 : 1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.getAttribute("data-" + key), y = b.getAttribute("data-" + key), c;
      if (type === "number") {
        x = num(x); y = num(y);
        var xn = isNaN(x), yn = isNaN(y);
        c = (xn || yn) ? (xn === yn ? 0 : (xn ? 1 : -1)) : (x === y ? 0 : sign * (x < y ? -1 : 1));
      } else {
        c = sign * String(x || "").localeCompare(String(y || ""), undefined, {numeric: true});
      }
      return c !== 0 ? c : num(a.getAttribute("data-index")) - num(b.getAttribute("data-index"));
    });
    each(rows, function (r) { body.appendChild(r); });
    each(table.querySelectorAll("th[data-sort-key]"), function (h) {
      h.setAttribute("aria-sort", h === th ? dir : "none");
    });
    table.setAttribute("data-sorted-by", key + ":" + dir);
    return true;
  }
  function bind(table) {
    if (table.getAttribute("data-sort-bound")) { return; }
    table.setAttribute("data-sort-bound", "1");
    each(table.querySelectorAll("th[data-sort-key] button"), function (button) {
      button.addEventListener("click", function () {
        var th = button.parentNode, cur = th.getAttribute("aria-sort");
        var dir = cur === "ascending" ? "descending" : cur === "descending" ? "ascending" : null;
        sortTable(table, th.getAttribute("data-sort-key"), dir);
      });
    });
  }
  function init() {
    var tables = document.querySelectorAll("table[data-nd-sortable]");
    each(tables, bind);
    var m = /^#sort=([A-Za-z0-9_-]+)(?::(asc|desc)[a-z]*)?$/.exec(window.location.hash || "");
    if (m) {
      var dir = m[2] === "asc" ? "ascending" : m[2] === "desc" ? "descending" : null;
      each(tables, function (t) {
        sortTable(t, m[1].toLowerCase(), dir) || sortTable(t, "m-" + m[1].toLowerCase(), dir);
      });
    }
  }
  function countImages() {
    var images = document.images, loaded = 0;
    for (var i = 0; i < images.length; i++) {
      if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
    }
    document.body.dataset.imagesLoaded = String(loaded);
    document.body.dataset.imagesTotal = String(images.length);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
  if (document.readyState === "complete") { countImages(); } else { window.addEventListener("load", countImages); }
})();
"""


# --------------------------------------------------------------------------- items
@dataclass
class GalleryItem:
    """One row of the gallery: a seen image, its reconstructions and captions, its scores.

    Parameters
    ----------
    stimulus_id : int | str
        Identifier of the stimulus (shown and sortable).
    seen : array-like, shape (H, W, 3) | PIL.Image.Image
        The image the subject saw (uint8, or floats in [0, 1]; ``(H, W)``, ``(H, W, 4)``
        and channels-first arrays and torch tensors are accepted too).
    lowlevel : array-like, shape (H, W, 3) | None
        The low-level (blurry) reconstruction, if the pipeline makes one.
    reconstructions : sequence of images | array-like, shape (k, H, W, 3)
        The final reconstruction(s), best first. A single ``(H, W, 3)`` image is read as
        one reconstruction. Shapes may differ from ``seen`` and from each other.
    decoded_caption : str | None
        The caption decoded from the brain response.
    true_captions : sequence of str | str | None
        The stimulus' ground-truth captions (e.g. its COCO captions).
    subject : int | str | None
        The subject the row comes from (shown and sortable).
    scores : dict of str to float | None
        Per-item metrics, e.g. ``{"pixcorr": 0.31, "clip_2way": 0.92}``. A value may also be
        a dict ``{"value", "ci_low", "ci_high"}``; the CI is then shown under the value.
    """

    stimulus_id: Any
    seen: Any
    lowlevel: Any = None
    reconstructions: Sequence[Any] = field(default_factory=list)
    decoded_caption: str | None = None
    true_captions: Sequence[str] | None = None
    subject: Any = None
    scores: Mapping[str, Any] | None = None


def _image_list(obj: Any) -> list[Any]:
    """A list of images from None, one image, a stack ``(k, H, W[, C])`` or a sequence."""
    if obj is None:
        return []
    if hasattr(obj, "ndim") and not isinstance(obj, (list, tuple)):
        if obj.ndim >= 4:
            return [obj[j] for j in range(len(obj))]
        return [obj]
    try:
        from PIL import Image

        if isinstance(obj, Image.Image):
            return [obj]
    except ImportError:  # pragma: no cover - pillow is a dependency
        pass
    return list(obj)


def _score_entry(name: str, value: Any, where: str) -> dict[str, float]:
    """``{"value", "ci_low", "ci_high"}`` from a number or a dict with those keys."""
    if isinstance(value, Mapping):
        if "value" not in value:
            raise ValueError(f"{where}: score {name!r} is a dict without a 'value' key: {dict(value)}")
        entry = {k: value.get(k, np.nan) for k in ("value", "ci_low", "ci_high")}
    else:
        entry = {"value": value, "ci_low": np.nan, "ci_high": np.nan}
    try:
        return {k: (np.nan if v is None else float(v)) for k, v in entry.items()}
    except (TypeError, ValueError):
        raise TypeError(f"{where}: score {name!r} must be a number or a dict with 'value', "
                        f"'ci_low', 'ci_high'; got {value!r}") from None


def _as_item(obj: Any, index: int) -> GalleryItem:
    """A normalised copy of one item (lists, strings, float scores)."""
    if isinstance(obj, Mapping):
        try:
            obj = GalleryItem(**obj)
        except TypeError as err:
            raise TypeError(f"items[{index}]: {err}") from None
    if not isinstance(obj, GalleryItem):
        raise TypeError(f"items[{index}] must be a GalleryItem (or a dict of its fields), got "
                        f"{type(obj).__name__}; build items with gallery_items(...) from arrays")
    if obj.seen is None:
        raise ValueError(f"items[{index}] (stimulus {obj.stimulus_id!r}) has no seen image")
    captions = obj.true_captions
    if captions is None:
        captions = []
    elif isinstance(captions, str):
        captions = [captions]
    where = f"items[{index}] (stimulus {obj.stimulus_id!r})"
    scores = {str(k): _score_entry(str(k), v, where) for k, v in (obj.scores or {}).items()}
    return dataclasses.replace(
        obj, reconstructions=_image_list(obj.reconstructions),
        decoded_caption=None if obj.decoded_caption is None else str(obj.decoded_caption),
        true_captions=[str(c) for c in captions], scores=scores)


def _per_item_values(values: Any, n: int, what: str) -> list[Any]:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    values = list(np.asarray(values, dtype=object).reshape(-1)) if hasattr(values, "shape") else list(values)
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} values but there are {n} items")
    return values


@verbose
@fill_doc
def gallery_items(seen: Any, reconstructions: Any = None, *, ids: Sequence[Any] | None = None,
                  lowlevel: Any = None, decoded_captions: Sequence[str | None] | None = None,
                  true_captions: Any = None, subjects: Any = None, scores: Any = None,
                  verbose: bool | str | int | None = None) -> list[GalleryItem]:
    """Build :class:`GalleryItem` rows from aligned arrays (e.g. a reconstruction result).

    Parameters
    ----------
    seen : array-like, shape (n_items, H, W, 3) | sequence of images
        The images the subjects saw, one per item.
    reconstructions : array-like, shape (n_items, H, W, 3) | (n_items, k, H, W, 3) | None
        One final reconstruction per item (e.g. a ``ReconstructionResult``'s ``images``),
        or ``k`` per item, best first. A sequence with one image or one list of images per
        item works too.
    ids : sequence of int | str | None
        Stimulus ids, one per item (default ``0 … n_items - 1``).
    lowlevel : array-like, shape (n_items, H, W, 3) | sequence | None
        Low-level reconstructions, one per item (a ``None`` entry leaves that cell empty).
    decoded_captions : sequence of str | None
        One decoded caption per item.
    true_captions : sequence of (str | list of str) | dict | None
        Ground-truth captions, one entry per item, or a dict ``stimulus id -> captions``
        (e.g. ``StimulusSet.captions_``); ids missing from the dict get none.
    subjects : int | str | sequence | None
        The subject of every item, or one per item.
    scores : dict of str to array-like | pandas.DataFrame | None
        Per-item metrics: ``metric -> values`` with one value per item, or a DataFrame with
        one row per item and one column per metric.
    %(verbose)s

    Returns
    -------
    items : list of GalleryItem

    Examples
    --------
    >>> items = gallery_items(stimuli.get_images(result.ids), result.images,  # doctest: +SKIP
    ...                       ids=result.ids, lowlevel=result.lowlevel_images)
    """
    n = len(seen)
    if ids is None:
        ids = list(range(n))
    ids = _per_item_values(ids, n, "ids")

    def per_item(values: Any, what: str) -> list[Any]:
        if values is None:
            return [None] * n
        if hasattr(values, "ndim") and not isinstance(values, (list, tuple)):
            return _check_len([values[i] for i in range(len(values))], n, what)
        return _check_len(list(values), n, what)

    recon = per_item(reconstructions, "reconstructions")
    low = per_item(lowlevel, "lowlevel")
    decoded = per_item(decoded_captions, "decoded_captions")
    if isinstance(true_captions, Mapping):
        truth = [true_captions.get(i) for i in ids]
    else:
        truth = per_item(true_captions, "true_captions")
    if subjects is None or isinstance(subjects, (str, int, np.integer)):
        subs = [subjects] * n
    else:
        subs = per_item(subjects, "subjects")
    per_scores: list[dict[str, Any]] = [{} for _ in range(n)]
    if scores is not None:
        for name, values in _score_columns(scores).items():
            for i, v in enumerate(_per_item_values(values, n, f"scores[{name!r}]")):
                per_scores[i][name] = v
    items = [GalleryItem(stimulus_id=ids[i], seen=seen[i], lowlevel=low[i],
                         reconstructions=_image_list(recon[i]), decoded_caption=decoded[i],
                         true_captions=truth[i], subject=subs[i], scores=per_scores[i] or None)
             for i in range(n)]
    logger.debug("Made %d gallery items", n)
    return items


def _check_len(values: list[Any], n: int, what: str) -> list[Any]:
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} entries but seen has {n} items")
    return values


def _score_columns(scores: Any) -> dict[str, Any]:
    """``metric -> per-item values`` from a dict or a DataFrame (one row per item)."""
    if hasattr(scores, "columns") and hasattr(scores, "to_dict"):
        return {str(c): scores[c].to_numpy() for c in scores.columns}
    if isinstance(scores, Mapping):
        return {str(k): v for k, v in scores.items()}
    raise TypeError("per-item scores must be a dict metric -> values (one per item) or a pandas "
                    f"DataFrame with one row per item; got {type(scores).__name__}")


# --------------------------------------------------------------------------- metrics
def _direction(value: Any, name: str) -> str | None:
    """``"higher"``, ``"lower"`` or None from a user value, else guessed from the name."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "lower" if _LOWER_IS_BETTER.search(name) else None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "higher" if value > 0 else "lower" if value < 0 else None
    text = str(value).strip().lower()
    if text in ("higher", "high", "max", "maximize", "up", "↑", "+", "greater"):
        return "higher"
    if text in ("lower", "low", "min", "minimize", "down", "↓", "-", "less"):
        return "lower"
    raise ValueError(f"Invalid direction {value!r} for metric {name!r}; use 'higher' or 'lower'")


def _records(metrics: Any) -> list[dict[str, Any]]:
    if hasattr(metrics, "metrics") and isinstance(metrics.metrics, Mapping):  # RetrievalScores
        metrics = metrics.metrics
    if isinstance(metrics, Mapping) and isinstance(metrics.get("metrics"), Mapping):
        metrics = metrics["metrics"]
    if hasattr(metrics, "columns") and hasattr(metrics, "to_dict"):  # a DataFrame
        frame = metrics
        if "metric" not in frame.columns and "name" not in frame.columns:
            frame = frame.rename_axis("metric").reset_index()
        return [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]
    if isinstance(metrics, Mapping):
        out = []
        for name, v in metrics.items():
            rec = dict(v) if isinstance(v, Mapping) else {"value": v}
            out.append({"metric": name, **rec})
        return out
    if isinstance(metrics, Sequence) and not isinstance(metrics, str) and all(
            isinstance(r, Mapping) for r in metrics):
        return [dict(r) for r in metrics]
    raise TypeError("metrics must be a pandas DataFrame with columns metric, value, ci_low, ci_high "
                    "[, chance, direction], a dict metric -> {'value', 'ci_low', 'ci_high'} (or -> "
                    f"number), or a list of such records; got {type(metrics).__name__}")


def _float(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _metric_rows(metrics: Any) -> list[dict[str, Any]]:
    """Rows of the aggregate table: metric, group, value, CI, chance, baselines and direction as text."""
    if metrics is None:
        return []
    rows = []
    for rec in _records(metrics):
        name = rec.get("metric", rec.get("name"))
        if name is None:
            raise ValueError(f"a metrics record has no 'metric' name: {rec}")
        name = str(name)
        if "value" not in rec:
            raise ValueError(f"metric {name!r} has no 'value': {rec}")
        group = rec.get("group")
        group = "" if group is None or (isinstance(group, float) and math.isnan(group)) else str(group)
        low, high = _float(rec.get("ci_low")), _float(rec.get("ci_high"))
        chance = _float(rec.get("chance"))
        direction = _direction(rec.get("direction", rec.get("better")), name)
        shuffled, mean_image = _float(rec.get("shuffled")), _float(rec.get("mean_image"))
        rows.append({"metric": name, "group": group, "value": _fmt(_float(rec["value"])),
                     "better": direction,
                     "ci_low": _fmt(low) if math.isfinite(low) else "",
                     "ci_high": _fmt(high) if math.isfinite(high) else "",
                     "chance": _fmt(chance) if math.isfinite(chance) else "",
                     "shuffled": _fmt(shuffled) if math.isfinite(shuffled) else "",
                     "mean_image": _fmt(mean_image) if math.isfinite(mean_image) else "",
                     "direction": {"higher": "↑ higher", "lower": "↓ lower"}.get(direction or "", "")})
    return rows


# --------------------------------------------------------------------------- images
def _check_thumbnail_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        w, h = (int(s) for s in size)
    except (TypeError, ValueError):
        raise TypeError("thumbnail_size must be None, an int (longest side in pixels) or a "
                        f"(width, height) pair; got {size!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"thumbnail_size must be positive, got {size!r}")
    return w, h


def _encode(image: Any, box: tuple[int, int] | None, what: str) -> dict[str, Any]:
    """``{"src", "width", "height"}`` for one image, downscaled to fit ``box`` if given."""
    from PIL import Image

    try:
        pil = image if isinstance(image, Image.Image) else Image.fromarray(_image_to_uint8(image))
    except Exception as err:
        raise ValueError(f"{what} is not an image: {err}") from err
    if pil.width == 0 or pil.height == 0:
        raise ValueError(f"{what} is empty (size {pil.size})")
    if box is not None and (pil.width > box[0] or pil.height > box[1]):
        pil = pil.copy()
        pil.thumbnail(box, getattr(Image, "Resampling", Image).LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return {"src": _png_data_uri(buf.getvalue()), "width": pil.width, "height": pil.height}


def _attr_number(value: float) -> str:
    """A number for a ``data-*`` attribute, parsed by JavaScript's ``Number``."""
    if math.isnan(value):
        return ""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


# --------------------------------------------------------------------------- Gallery
class Gallery:
    """A self-contained, sortable HTML gallery of reconstructions and decoded captions.

    Build it with :func:`build_gallery`; :meth:`render` returns the page, :meth:`save`
    writes it atomically, and in a notebook the gallery displays itself.

    Parameters
    ----------
    items : sequence of GalleryItem
        The rows, in their initial order.
    title : str
        Page title.
    metrics : pandas.DataFrame | dict | None
        Aggregate metrics (see :func:`build_gallery`).
    config : dict | None
        Run configuration, shown as YAML at the end.
    per_item_metrics : dict | pandas.DataFrame | list of str | None
        Extra per-item metrics or the metric columns to show (see :func:`build_gallery`).
    thumbnail_size : int | tuple of int | None
        Downscale images to fit in this box (pixels); None embeds them at full size.
    """

    def __init__(self, items: Sequence[GalleryItem], *, title: str = "neurodecode reconstructions",
                 metrics: Any = None, config: Any = None, per_item_metrics: Any = None,
                 thumbnail_size: int | tuple[int, int] | None = None) -> None:
        if isinstance(items, (GalleryItem, Mapping)):
            items = [items]
        items = list(items)
        if not items:
            raise ValueError("build_gallery needs at least one item; got an empty sequence. Build "
                             "items with gallery_items(seen, reconstructions, ...) or GalleryItem(...)")
        self.items = [_as_item(it, i) for i, it in enumerate(items)]
        self.title = str(title)
        self.config = config
        self.thumbnail_size = _check_thumbnail_size(thumbnail_size)
        self.metric_rows = _metric_rows(metrics)
        self.metric_names = self._merge_per_item_metrics(per_item_metrics)
        self._columns = self._make_columns()
        self._rows = self._encode_rows()   # encode now: a bad image fails here, not at save time

    def _merge_per_item_metrics(self, per_item_metrics: Any) -> list[str]:
        n = len(self.items)
        if per_item_metrics is not None and isinstance(per_item_metrics, Sequence) and all(
                isinstance(m, str) for m in per_item_metrics) and not isinstance(per_item_metrics, str):
            available = list(dict.fromkeys(k for it in self.items for k in it.scores))
            unknown = [m for m in per_item_metrics if m not in available]
            if unknown:
                raise ValueError(f"per_item_metrics names {unknown} that no item has in its scores; "
                                 f"available: {', '.join(available) or 'none'}")
            return list(dict.fromkeys(per_item_metrics))
        if per_item_metrics is not None:
            columns = _score_columns(per_item_metrics)
            frame_ids = None
            if "stimulus_id" in columns:   # a DataFrame to align by id (and subject)
                keys = ["stimulus_id"] + (["subject"] if "subject" in columns else [])
                frame_ids = list(zip(*(map(str, columns.pop(k)) for k in keys)))
                if len(set(frame_ids)) != len(frame_ids):
                    raise ValueError(f"per_item_metrics has duplicated {'/'.join(keys)} rows")
                pos = {key: i for i, key in enumerate(frame_ids)}
                order = []
                for it in self.items:
                    key = (str(it.stimulus_id),) + ((str(it.subject),) if len(keys) == 2 else ())
                    order.append(pos.get(key))
            for name, values in columns.items():
                if frame_ids is None:
                    values = _per_item_values(values, n, f"per_item_metrics[{name!r}]")
                else:
                    col = list(values)
                    values = [np.nan if j is None else col[j] for j in order]
                for i, (it, v) in enumerate(zip(self.items, values)):
                    it.scores[name] = _score_entry(name, v, f"per_item_metrics row {i}")
        return list(dict.fromkeys(k for it in self.items for k in it.scores))

    # ------------------------------------------------------------------ building rows
    def _make_columns(self) -> dict[str, Any]:
        used = {"index", "stimulus-id", "subject"}
        given = {r["metric"]: r["better"] for r in self.metric_rows if r["better"]}
        metric_cols = []
        for name in self.metric_names:
            key = _slug("m-" + name, used)
            direction = given.get(name) or _direction(None, name)
            metric_cols.append({"name": name, "key": key, "direction": direction,
                                "first": "ascending" if direction == "lower" else "descending"})
        return {
            "has_subject": any(it.subject is not None for it in self.items),
            "has_lowlevel": any(it.lowlevel is not None for it in self.items),
            "n_recon": max(len(it.reconstructions) for it in self.items),
            "has_captions": any(it.decoded_caption is not None or it.true_captions
                                for it in self.items),
            "metrics": metric_cols,
        }

    def _encode_rows(self) -> list[dict[str, Any]]:
        columns = self._columns
        box = self.thumbnail_size
        rows = []
        for i, it in enumerate(self.items):
            label = f"items[{i}] (stimulus {it.stimulus_id!r})"
            sid = str(it.stimulus_id)
            subject = "" if it.subject is None else str(it.subject)
            attrs = [("data-index", str(i)), ("data-stimulus-id", sid), ("data-subject", subject)]
            cells = []
            for col in columns["metrics"]:
                entry = it.scores.get(col["name"])
                value = np.nan if entry is None else entry["value"]
                attrs.append(("data-" + col["key"], _attr_number(value)))
                ci = None
                if entry is not None and math.isfinite(entry["ci_low"]):
                    ci = f"[{_fmt(entry['ci_low'])}, {_fmt(entry['ci_high'])}]"
                cells.append({"text": "—" if entry is None else _fmt(value), "ci": ci})
            rows.append({
                "index": i, "id": sid, "subject": subject, "attrs": attrs, "cells": cells,
                "seen": _encode(it.seen, box, f"{label}.seen"),
                "lowlevel": None if it.lowlevel is None else _encode(it.lowlevel, box,
                                                                     f"{label}.lowlevel"),
                "recons": [_encode(r, box, f"{label}.reconstructions[{j}]")
                           for j, r in enumerate(it.reconstructions)],
                "decoded": it.decoded_caption, "true": list(it.true_captions),
            })
        return rows

    # ------------------------------------------------------------------ output
    def _render(self, *, standalone: bool) -> str:
        import jinja2
        from markupsafe import Markup

        from .. import __version__

        columns, rows = self._columns, self._rows
        n_images = sum(1 + (r["lowlevel"] is not None) + len(r["recons"]) for r in rows)
        subjects = list(dict.fromkeys(r["subject"] for r in rows if r["subject"]))
        summary = f"{len(rows)} items"
        if subjects:
            summary += f" from {len(subjects)} subject{'s' if len(subjects) > 1 else ''}"
        summary += f", {n_images} images"
        if self.thumbnail_size is not None:
            summary += f" (downscaled to fit {self.thumbnail_size[0]}×{self.thumbnail_size[1]} px)"
        csp = _content_security_policy(_SCRIPT)
        display_px = (max(self.thumbnail_size) if self.thumbnail_size is not None
                      else _DEFAULT_DISPLAY_PX)
        from importlib.resources import files

        text = files("neurodecode.reports").joinpath("templates", _TEMPLATE).read_text(encoding="utf-8")
        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                 trim_blocks=True, lstrip_blocks=True)
        return env.from_string(text).render(
            title=self.title, standalone=standalone, csp=csp, script=Markup(_SCRIPT),
            summary=summary, columns=columns, rows=rows, metric_rows=self.metric_rows,
            metric_has_group=any(r["group"] for r in self.metric_rows),
            config_text=None if self.config is None else _config_to_text(self.config),
            display_px=int(display_px), version=__version__)

    def render(self) -> str:
        """Render the gallery to one self-contained HTML page.

        Returns
        -------
        html : str
        """
        return self._render(standalone=True)

    @verbose
    @fill_doc
    def save(self, path: str | Path, *, verbose: bool | str | int | None = None) -> Path:
        """Write the page to ``path`` atomically (an error never leaves a partial file).

        Parameters
        ----------
        path : str | Path
            Output ``.html`` file; parent folders are created.
        %(verbose)s

        Returns
        -------
        path : Path
        """
        text = self.render()
        out = atomic_write_text(Path(path), text)
        logger.info("Gallery saved to %s (%.1f kB)", out, len(text.encode("utf-8")) / 1024)
        return out

    def _repr_html_(self) -> str:
        # a fragment (no <html>, no CSP meta) so that it can sit inside a notebook page
        return self._render(standalone=False)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (f"<Gallery {self.title!r} | {len(self.items)} items, metrics: "
                f"{', '.join(self.metric_names) or 'none'}>")


@verbose
@fill_doc
def build_gallery(items: Sequence[GalleryItem], *, title: str = "neurodecode reconstructions",
                  metrics: Any = None, config: Any = None, per_item_metrics: Any = None,
                  thumbnail_size: int | tuple[int, int] | None = None,
                  verbose: bool | str | int | None = None) -> Gallery:
    """Build the reconstruction and captioning gallery.

    One row per item: the seen image | the low-level reconstruction | the final
    reconstruction(s), best first | the decoded caption against the true captions | one
    column per per-item metric. Clicking a header sorts the rows by that column (again to
    reverse); opening the page as ``gallery.html#sort=<metric>:desc`` sorts it on load.
    Columns nobody fills (no low-level images, no captions) are left out.

    Parameters
    ----------
    items : sequence of GalleryItem
        The rows (see :func:`gallery_items` to make them from arrays). Dicts with the
        fields of :class:`GalleryItem` are accepted too.
    title : str
        Page title.
    metrics : pandas.DataFrame | dict | None
        Aggregate metrics shown in a table above the rows: a DataFrame with columns
        ``metric, value`` and optionally ``ci_low, ci_high, chance, direction, group`` (or
        indexed by metric), or a dict ``metric -> {"value", "ci_low", "ci_high", "chance",
        "direction"}`` (or ``metric -> value``). ``direction`` is ``"higher"`` or
        ``"lower"`` (which is better); when absent it is guessed from the name for
        distances such as EffNet-B and SwAV. Optional ``shuffled`` and ``mean_image``
        (e.g. from ``ReconstructionScores.to_frame()``) fill the "shuffled pairing" and
        "mean image" baseline columns; a metric without them shows ``—`` there.
    config : dict | pydantic model | dataclass | None
        Run configuration, shown as YAML at the end of the page.
    per_item_metrics : dict | pandas.DataFrame | list of str | None
        Per-item metrics added to the items' ``scores``: a dict ``metric -> values`` (one
        per item), or a DataFrame with one column per metric and either one row per item
        or a ``stimulus_id`` (and ``subject``) column to align rows by. A list of metric
        names instead chooses and orders the metric columns among the items' ``scores``.
    thumbnail_size : int | tuple of int | None
        Downscale every image to fit in this box (an int is the longest side, in pixels)
        to keep the file small; None embeds images at full resolution. Images are never
        upscaled.
    %(verbose)s

    Returns
    -------
    gallery : Gallery

    Examples
    --------
    >>> items = gallery_items(seen, result.images, ids=result.ids,    # doctest: +SKIP
    ...                       lowlevel=result.lowlevel_images, decoded_captions=captions)
    >>> build_gallery(items, metrics=table, thumbnail_size=192).save("runs/x/gallery.html")  # doctest: +SKIP
    """
    gallery = Gallery(items, title=title, metrics=metrics, config=config,
                      per_item_metrics=per_item_metrics, thumbnail_size=thumbnail_size)
    logger.info("Built gallery with %d items and %d per-item metrics", len(gallery),
                len(gallery.metric_names))
    return gallery
