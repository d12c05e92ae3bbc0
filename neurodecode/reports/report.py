"""Self-contained HTML reports: metric tables with CIs, figures, retrieval rows, the run config.

A :class:`Report` collects items in named sections and renders them with the jinja2
template ``templates/retrieval_report.html.jinja``. Everything is embedded in the one
HTML file (CSS inline, images as base64 PNG data URIs, no scripts, no external URLs),
so the file can be mailed, archived next to ``metrics.json`` or opened offline. A
Content-Security-Policy (:func:`_content_security_policy`, shared with the gallery) lets the
page load only inline CSS and data-URI images and run no script, so HTML passed to
:meth:`Report.add_html` can never fetch anything or run code.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html as _html
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks.retrieval import RetrievalScores
from ..utils import atomic_write_text, fill_doc, logger, to_jsonable, verbose
from .figures import _as_one_scores, _as_scores_by_model

__all__ = ["Report", "build_retrieval_report"]

_TEMPLATE = "retrieval_report.html.jinja"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Content-Security-Policy of every HTML page neurodecode writes (report and gallery): inline CSS and
#: data-URI images only, no network, no forms, no <base>; no script unless allowed by its hash.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _content_security_policy(script: str | None = None) -> str:
    """The page's Content-Security-Policy: :data:`_CSP`, plus ``script`` allowed by its sha256 hash.

    Parameters
    ----------
    script : str | None
        The one inline script the page carries, byte for byte; ``None`` = no script may run.

    Returns
    -------
    csp : str
        The value of ``<meta http-equiv="Content-Security-Policy" content="...">``.
    """
    if script is None:
        return f"{_CSP}; script-src 'none'"
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return f"{_CSP}; script-src 'sha256-{digest}'"


# --------------------------------------------------------------------------- encoding
def _load_template_text() -> str:
    from importlib.resources import files

    return files("neurodecode.reports").joinpath("templates", _TEMPLATE).read_text(encoding="utf-8")


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image_to_uint8(image: Any) -> np.ndarray:
    """Image (PIL, numpy or torch; HxW, HxWx{1,3,4} or {1,3}xHxW; uint8 or float in [0, 1])."""
    if hasattr(image, "detach") and hasattr(image, "cpu"):
        image = image.detach().cpu().float().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels first -> last
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"an image must have shape (H, W) or (H, W, 3), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8) * 255
    arr = arr.astype(np.float64)
    if arr.size and np.nanmax(arr) > 1.0 + 1e-6:  # 0..255 floats
        arr = arr / 255.0
    return (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _image_to_png(image: Any, *, max_px: int | None = None) -> bytes:
    from PIL import Image

    pil = image if isinstance(image, Image.Image) else Image.fromarray(_image_to_uint8(image))
    if max_px is not None and max(pil.size) > max_px:
        pil = pil.copy()
        pil.thumbnail((max_px, max_px), getattr(Image, "Resampling", Image).LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _figure_to_png(fig: Any, dpi: int) -> bytes:
    if isinstance(fig, (bytes, bytearray, memoryview)):
        png = bytes(fig)
        if not png.startswith(_PNG_MAGIC):
            raise ValueError("add_figure received bytes that are not a PNG file")
        return png
    if hasattr(fig, "savefig"):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white",
                    metadata={"Software": None})
        return buf.getvalue()
    try:
        return _image_to_png(fig)
    except Exception as err:
        raise TypeError(
            "add_figure expects a matplotlib Figure, PNG bytes or an image array, got "
            f"{type(fig).__name__}"
        ) from err


def _fmt(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if abs(value) < 0.1 else f"{value:.3f}"


def _fmt_ci(d: Mapping[str, float]) -> str:
    """``value [low, high]`` with the CI part in a span."""
    ci = (f' <span class="nd-ci">[{_fmt(d["ci_low"])}, {_fmt(d["ci_high"])}]</span>'
          if np.isfinite(d.get("ci_low", np.nan)) else ' <span class="nd-ci">[no CI]</span>')
    return _fmt(d["value"]) + ci


def _as_scores(obj: Any) -> RetrievalScores:
    if isinstance(obj, Mapping) and obj and "metrics" not in obj and all(
            isinstance(v, Mapping) and "value" in v for v in obj.values()):
        metrics = {str(k): {"value": float(v["value"]),
                            "ci_low": float(v.get("ci_low", np.nan)),
                            "ci_high": float(v.get("ci_high", np.nan)),
                            "chance": float(v.get("chance", np.nan))} for k, v in obj.items()}
        return RetrievalScores(metrics=metrics)
    try:
        return _as_one_scores(obj, "scores")
    except TypeError:
        raise TypeError(
            "expected RetrievalScores, its to_dict() output, a dict metric -> {'value', 'ci_low', "
            "'ci_high', 'chance'}, a dict subject -> RetrievalScores, or a dict model name -> one "
            f"of those; got {type(obj).__name__}") from None


def _is_scores_like(v: Any) -> bool:
    return isinstance(v, RetrievalScores) or (isinstance(v, Mapping) and "metrics" in v)


def _as_models(scores: Any) -> dict[str, RetrievalScores]:
    """``{"": scores}`` for one model, else ``model -> scores``.

    A flat dict of scores is read as ``model -> scores``; a model's entry may itself be a
    dict ``subject -> scores`` (pooled with ``RetrievalScores.combine``).
    """
    if isinstance(scores, Mapping) and scores and "metrics" not in scores and all(
            _is_scores_like(v) or (isinstance(v, Mapping) and v and all(
                _is_scores_like(w) for w in v.values()))
            for v in scores.values()):
        return {str(k): _as_scores(v) for k, v in scores.items()}
    return {"": _as_scores(scores)}


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"
    slug, i = base, 1
    while slug in used:
        i += 1
        slug = f"{base}-{i}"
    used.add(slug)
    return slug


def _config_to_text(config: Any) -> str:
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    data = to_jsonable(config)
    try:
        import yaml

        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    except Exception:  # noqa: BLE001  # pragma: no cover - pyyaml is a dependency
        return json.dumps(data, indent=2)


# --------------------------------------------------------------------------- Report
class Report:
    """A self-contained HTML report (retrieval metrics, figures, retrieved images, config).

    Parameters
    ----------
    title : str
        Title shown at the top of the page.
    config : dict | None
        Run configuration, shown at the end as YAML (same as calling :meth:`add_config`).

    Examples
    --------
    >>> report = Report("subj01 retrieval")                          # doctest: +SKIP
    >>> report.add_metrics_table(scores, title="Retrieval metrics")   # doctest: +SKIP
    >>> report.save("runs/x/report.html")                             # doctest: +SKIP
    """

    def __init__(self, title: str = "neurodecode report", *, config: Any = None) -> None:
        self.title = str(title)
        self.config = config
        self._items: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ adding content
    def _add(self, kind: str, html: str, *, title: str, section: str,
             caption: str | None = None) -> Report:
        self._items.append({"kind": kind, "html": html, "title": str(title),
                            "section": str(section), "caption": caption})
        return self

    @verbose
    @fill_doc
    def add_metrics_table(self, scores: Any, *, title: str = "Retrieval metrics",
                          section: str = "Metrics", caption: str | None = None,
                          groups: bool = True, verbose: bool | str | int | None = None) -> Report:
        """Add a table of metrics, each shown as ``value [ci_low, ci_high]`` with its chance level.

        Parameters
        ----------
        scores : RetrievalScores | dict
            Scores of one model (``RetrievalScores``, its ``to_dict()``, or a dict
            ``metric -> {"value", "ci_low", "ci_high", "chance"}``), or a dict
            ``model name -> scores`` for one column per model (a model's scores may be a
            dict ``subject -> RetrievalScores``, pooled with ``RetrievalScores.combine``).
        title : str
            Item title.
        section : str
            Section the item goes in.
        caption : str | None
            Text under the title; defaults to the protocol description.
        groups : bool
            Also add one table per model with the per-group (per-subject) scores.
        %(verbose)s

        Returns
        -------
        self : Report
        """
        models = _as_models(scores)
        first = next(iter(models.values()))
        names = list(dict.fromkeys(n for s in models.values() for n in s.metrics))
        ci = first.protocol.get("ci")
        ci_txt = f"{ci:.0%} CI" if ci else "CI"
        head = "".join(f"<th>{_html.escape(m) if m else 'value'} [{ci_txt}]</th>" for m in models)
        rows = []
        for name in names:
            cells = "".join(f"<td>{_fmt_ci(s.metrics[name]) if name in s.metrics else '—'}</td>"
                            for s in models.values())
            chances = sorted({_fmt(s.metrics[name]["chance"]) for s in models.values()
                              if name in s.metrics})
            label = first.label(name) if name in first.metrics else name
            rows.append(f"<tr><td>{_html.escape(label)}</td>{cells}<td>{' / '.join(chances)}</td></tr>")
        html = (f'<table class="nd-table"><thead><tr><th>metric</th>{head}<th>chance</th></tr>'
                f"</thead><tbody>{''.join(rows)}</tbody></table>")
        if groups:
            for model, s in models.items():
                if not s.groups:
                    continue
                gnames = list(s.groups)
                ghead = "".join(f"<th>{_html.escape(g)} (n={s.group_sizes.get(g, '?')})</th>"
                                for g in gnames)
                grows = []
                for name in s.metrics:
                    cells = "".join(f"<td>{_fmt_ci(s.groups[g][name])}</td>" for g in gnames
                                    if name in s.groups[g])
                    gchance = sorted({_fmt(s.groups[g][name].get("chance", np.nan)) for g in gnames
                                      if name in s.groups[g]})   # the groups' (1/m differs with their size)
                    grows.append(f"<tr><td>{_html.escape(s.label(name))}</td>{cells}"
                                 f"<td>{_fmt_ci(s.metrics[name])}</td><td>{' / '.join(gchance)}</td></tr>")
                label = f" — {_html.escape(model)}" if model else ""
                html += (f"<p class=\"nd-caption\">Per group{label} ({ci_txt}):</p>"
                         f'<table class="nd-table"><thead><tr><th>metric</th>{ghead}'
                         f"<th>mean over groups</th><th>chance</th></tr></thead><tbody>{''.join(grows)}</tbody></table>")
        if caption is None:
            caption = first.description or None
        return self._add("metrics", html, title=title, section=section, caption=caption)

    @verbose
    @fill_doc
    def add_figure(self, fig: Any, *, title: str, caption: str | None = None,
                   section: str = "Figures", dpi: int = 110,
                   verbose: bool | str | int | None = None) -> Report:
        """Add a figure, embedded as a base64 PNG.

        Parameters
        ----------
        fig : matplotlib.figure.Figure | bytes | array-like
            A figure, PNG bytes, or an image array.
        title : str
            Item title.
        caption : str | None
            Text under the title.
        section : str
            Section the item goes in.
        dpi : int
            Resolution used to rasterise a matplotlib figure.
        %(verbose)s

        Returns
        -------
        self : Report
        """
        uri = _png_data_uri(_figure_to_png(fig, dpi))
        html = f'<img class="nd-figure" alt="{_html.escape(str(title))}" src="{uri}">'
        return self._add("figure", html, title=title, section=section, caption=caption)

    @verbose
    @fill_doc
    def add_image_rows(self, query_images: Any, retrieved_images: Any, *,
                       titles: Sequence[str] | None = None, correct: Any = None,
                       title: str = "Retrieved images", caption: str | None = None,
                       section: str = "Retrieval examples", thumb_px: int = 128,
                       verbose: bool | str | int | None = None) -> Report:
        """Add rows "seen image | top-k images retrieved from the decoded embedding".

        Parameters
        ----------
        query_images : array-like, shape (n_rows, H, W, 3) | sequence of images
            The image each subject saw (uint8, or floats in [0, 1]).
        retrieved_images : array-like, shape (n_rows, k, H, W, 3) | nested sequence
            The k candidates ranked most similar to each decoded embedding, best first.
        titles : sequence of str | None
            One label per row (e.g. the stimulus id).
        correct : array-like of bool, shape (n_rows, k) | None
            True where the retrieved image is the seen one; highlighted in green.
        title : str
            Item title.
        caption : str | None
            Text under the title.
        section : str
            Section the item goes in.
        thumb_px : int
            Longest side of each embedded thumbnail, in pixels.
        %(verbose)s

        Returns
        -------
        self : Report
        """
        n_rows = len(query_images)
        if len(retrieved_images) != n_rows:
            raise ValueError(f"query_images has {n_rows} rows but retrieved_images has "
                             f"{len(retrieved_images)}")
        if titles is not None and len(titles) != n_rows:
            raise ValueError(f"titles must have one entry per row ({n_rows}), got {len(titles)}")
        k = max((len(r) for r in retrieved_images), default=0)
        mask = None
        if correct is not None:
            mask = np.asarray(correct, dtype=bool)
            if mask.shape != (n_rows, k):
                raise ValueError(f"correct must have shape (n_rows, k) = ({n_rows}, {k}), "
                                 f"got {mask.shape}")
        head = "<tr><td class=\"nd-query\">seen</td>" + "".join(
            f"<td>rank {j + 1}</td>" for j in range(k)) + "</tr>"
        rows = [head]
        for i in range(n_rows):
            label = _html.escape(str(titles[i])) if titles is not None else f"#{i}"
            q = _png_data_uri(_image_to_png(query_images[i], max_px=thumb_px))
            cells = [f'<td class="nd-query"><img alt="seen {label}" src="{q}">{label}</td>']
            for j, img in enumerate(retrieved_images[i]):
                ok = bool(mask[i, j]) if mask is not None else False
                uri = _png_data_uri(_image_to_png(img, max_px=thumb_px))
                cls = ' class="nd-correct"' if ok else ""
                mark = "✓ correct" if ok else "&nbsp;"
                cells.append(f'<td{cls}><img alt="rank {j + 1}" src="{uri}">{mark}</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        html = '<table class="nd-rows">' + "".join(rows) + "</table>"
        html = html.replace("<img ", f'<img style="width:{int(thumb_px)}px" ')
        if caption is None:
            caption = ("Left: the image the subject saw. Right: the candidates most similar to the "
                       "embedding decoded from the brain response, best first"
                       + ("; the seen image is outlined in green." if mask is not None else "."))
        return self._add("images", html, title=title, section=section, caption=caption)

    @verbose
    @fill_doc
    def add_html(self, html: str, *, title: str, section: str = "Notes",
                 caption: str | None = None, verbose: bool | str | int | None = None) -> Report:
        """Add a raw HTML fragment (trusted; inserted as is).

        Parameters
        ----------
        html : str
            The fragment. It should not reference external resources.
        title : str
            Item title.
        section : str
            Section the item goes in.
        caption : str | None
            Text under the title.
        %(verbose)s

        Returns
        -------
        self : Report
        """
        return self._add("html", str(html), title=title, section=section, caption=caption)

    @verbose
    @fill_doc
    def add_config(self, config: Any, *, title: str = "Run configuration",
                   section: str = "Configuration",
                   verbose: bool | str | int | None = None) -> Report:
        """Add the run configuration, shown as YAML in a ``<pre>`` block.

        Parameters
        ----------
        config : dict | pydantic model | dataclass
            The resolved configuration.
        title : str
            Item title.
        section : str
            Section the item goes in.
        %(verbose)s

        Returns
        -------
        self : Report
        """
        html = f"<pre>{_html.escape(_config_to_text(config))}</pre>"
        return self._add("config", html, title=title, section=section)

    # ------------------------------------------------------------------ output
    def _sections(self) -> list[dict[str, Any]]:
        items = list(self._items)
        if self.config is not None and not any(i["kind"] == "config" for i in items):
            items.append({"kind": "config", "title": "Run configuration", "section": "Configuration",
                          "caption": None,
                          "html": f"<pre>{_html.escape(_config_to_text(self.config))}</pre>"})
        used: set[str] = set()
        sections: dict[str, dict[str, Any]] = {}
        for item in items:
            sec = sections.setdefault(item["section"], {"name": item["section"], "items": [],
                                                         "id": _slug("sec-" + item["section"], used)})
            sec["items"].append({**item, "id": _slug(item["title"], used)})
        return list(sections.values())

    def render(self) -> str:
        """Render the report to an HTML string.

        Returns
        -------
        html : str
            The complete, self-contained HTML page.
        """
        import jinja2
        from markupsafe import Markup

        from .. import __version__

        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                 trim_blocks=True, lstrip_blocks=True)
        template = env.from_string(_load_template_text())
        sections = self._sections()
        for sec in sections:
            for item in sec["items"]:
                item["html"] = Markup(item["html"])
        return template.render(title=self.title, sections=sections, version=__version__,
                               csp=_content_security_policy())

    @verbose
    @fill_doc
    def save(self, path: str | Path, *, verbose: bool | str | int | None = None) -> Path:
        """Write the report to ``path`` atomically (an error never leaves a partial file).

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
        logger.info("Report saved to %s (%.1f kB)", out, len(text.encode("utf-8")) / 1024)
        return out

    def _repr_html_(self) -> str:
        return self.render()

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        sections = list(dict.fromkeys(i["section"] for i in self._items))
        return (f"<Report {self.title!r} | {len(self._items)} items in "
                f"{len(sections)} sections: {', '.join(sections) or 'none'}>")


# --------------------------------------------------------------------------- standard report
def best_model_table(models: Mapping[str, Any]) -> str:
    """HTML table naming the best model on each metric, whether its CI separates it from the next, and chance.

    Parameters
    ----------
    models : dict
        Model name → :class:`RetrievalScores` (or anything :meth:`Report.add_metrics_table` takes).

    Returns
    -------
    html : str
    """
    scored = _as_models(models)
    names = list(dict.fromkeys(n for sc in scored.values() for n in sc.metrics))
    first = next(iter(scored.values()))
    rows = []
    for name in names:
        have = {m: sc.metrics[name] for m, sc in scored.items() if name in sc.metrics}
        if len(have) < 2:
            continue
        order = sorted(have, key=lambda m: -float(have[m]["value"]))
        best, second = have[order[0]], have[order[1]]
        if float(best["value"]) == float(second["value"]):
            verdict = "tie"
        elif float(best["ci_low"]) > float(second["ci_high"]):
            verdict = "clearly"
        else:
            verdict = "within CI"
        label = first.label(name) if name in first.metrics else name
        chance = " / ".join(sorted({_fmt(float(d.get("chance", np.nan))) for d in have.values()}))
        rows.append(f"<tr><td>{_html.escape(label)}</td><td><b>{_html.escape(order[0])}</b></td>"
                    f"<td>{_fmt_ci(best)}</td><td>{_html.escape(order[1])}</td><td>{_fmt_ci(second)}</td>"
                    f"<td>{chance}</td><td>{verdict}</td></tr>")
    return ('<table class="nd-table"><thead><tr><th>metric</th><th>best</th><th>value [CI]</th>'
            "<th>runner-up</th><th>value [CI]</th><th>chance</th><th>difference</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


@verbose
@fill_doc
def build_retrieval_report(results: Mapping[str, RetrievalScores] | RetrievalScores, *,
                           query_images: Any = None, retrieved_images: Any = None,
                           correct: Any = None, row_titles: Sequence[str] | None = None,
                           n_rows: int = 8, config: Any = None,
                           title: str = "Retrieval report", example_caption: str | None = None,
                           verbose: bool | str | int | None = None) -> Report:
    """Build the standard retrieval report of a fit.

    It holds: the protocol description; a summary table of every metric as
    ``value [ci_low, ci_high]`` with its chance level (one column per model) and the
    per-group tables; per-subject bars of the N-way top-1 accuracy in both directions
    and of the 2-way identification accuracy, with CI error bars and chance lines; the
    top-k curves with CI bands; a few "seen image | retrieved images" rows; and the
    run configuration.

    Parameters
    ----------
    results : dict | RetrievalScores
        ``model name -> scores`` (e.g. ``{"neurodecode": s1, "ridge baseline": s2}``), where
        scores may also be ``{subject: RetrievalScores}`` from per-subject evaluations; they
        are pooled with :meth:`RetrievalScores.combine` (mean over subjects, stratified CI).
    query_images : array-like, shape (n, H, W, 3) | None
        Seen images for the example rows.
    retrieved_images : array-like, shape (n, k, H, W, 3) | None
        Top-k retrieved images per row, best first.
    correct : array-like of bool, shape (n, k) | None
        Where the retrieved image is the seen one.
    row_titles : sequence of str | None
        One label per example row.
    n_rows : int
        At most this many example rows are shown.
    config : dict | None
        Run configuration shown at the end.
    title : str
        Report title.
    example_caption : str | None
        Caption of the example rows (default: a generic explanation).
    %(verbose)s

    Returns
    -------
    report : Report
    """
    from .figures import plot_retrieval_bars, plot_topk_curve

    models = _as_scores_by_model(results)
    if not models:
        raise ValueError("results must hold at least one model's RetrievalScores")
    first = next(iter(models.values()))
    report = Report(title, config=config)
    p = first.protocol
    n_txt = (f"{first.n_items} test items"
             + (f" from {len(first.groups)} groups ({', '.join(first.groups)})" if first.groups else ""))
    summary = (f"<p>{_html.escape(n_txt)}; models: {_html.escape(', '.join(models))}.</p>"
               f"<p>{_html.escape(first.description)}</p>")
    report.add_html(summary, title="Protocol", section="Summary")
    report.add_metrics_table(models, title="All metrics", section="Summary",
                             caption=f"Each cell: point estimate [{p.get('ci', 0.95):.0%} bootstrap CI]; "
                                     "forward = brain→image, backward = image→brain.")
    if len(models) > 1:
        report.add_html(best_model_table(models), title="Best model per metric", section="Summary",
                        caption="Highest point estimate per metric (subjects pooled). 'Clearly' means its "
                                f"{p.get('ci', 0.95):.0%} CI does not overlap the runner-up's; otherwise the "
                                "difference is within the bootstrap uncertainty.")

    for metric in ("nway_top1_forward", "nway_top1_backward", "2way_forward"):
        if not all(metric in s.metrics for s in models.values()):
            continue
        fig = plot_retrieval_bars(models, metric=metric)
        report.add_figure(fig, title=first.label(metric), section="Per-subject scores",
                          caption="Bars: point estimate; error bars: bootstrap CI; dashed: chance.")
    if all(s.topk_curve for s in models.values()):
        fig = plot_topk_curve(models)
        report.add_figure(fig, title="Top-k accuracy among all test items", section="Top-k curve",
                          caption="Shaded: bootstrap CI; dashed: chance (k / n).")

    if query_images is not None and retrieved_images is not None:
        n = min(int(n_rows), len(query_images))
        report.add_image_rows(
            query_images[:n], retrieved_images[:n],
            titles=None if row_titles is None else list(row_titles)[:n],
            correct=None if correct is None else np.asarray(correct)[:n],
            section="Retrieval examples", caption=example_caption)
    logger.info("Built retrieval report with %d items", len(report))
    return report
