"""Tables over runs: mean, SD and t-interval over seeds of every setting's metrics (``neurodecode summarize``).

:func:`seed_summary` turns one value per run, subject and metric into one row per setting, model and
metric; :func:`summary_markdown` renders that table as Markdown and :func:`summary_report` as a
self-contained HTML :class:`~neurodecode.reports.Report`. Collecting the runs from disk is
:func:`neurodecode.workflow.summarize.collect_runs`.

Each seed counts once: a run's value is the mean over its test subjects (for leave-one-subject-out
folds run as separate jobs, over the folds of that seed), and the interval is Student's t over those
per-seed values, ``mean ± t(1 - (1 - ci) / 2, n - 1) · SD / √n``. With one seed there is no interval.
"""

from __future__ import annotations

import html as _html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..utils import fill_doc, verbose
from .report import Report

__all__ = ["seed_summary", "summary_markdown", "summary_report"]

#: Columns of the values frame that :func:`seed_summary` reads besides the setting columns.
VALUE_COLUMNS = ("model", "metric", "seed", "subject", "value", "chance")


def seed_summary(values: pd.DataFrame, *, by: Sequence[str] = ("setting",), ci: float = 0.95) -> pd.DataFrame:
    """Mean, SD and Student-t interval over seeds, per setting, model and metric.

    Parameters
    ----------
    values : pandas.DataFrame
        One row per run, test subject and metric, with the columns ``by`` and ``model``,
        ``metric``, ``seed``, ``subject``, ``value``, ``chance`` (NaN where unknown) and
        optionally ``label`` (the metric's description).
    by : sequence of str
        The columns that name a setting (runs that differ only by seed share them).
    ci : float
        Confidence level of the interval (0 < ci < 1).

    Returns
    -------
    table : pandas.DataFrame
        One row per setting, model and metric (in order of first appearance): the ``by`` columns,
        ``model``, ``metric``, ``label``, ``n_seeds``, ``mean``, ``sd`` (across seeds, ``ddof=1``;
        NaN with one seed), ``ci_low``, ``ci_high`` (NaN with one seed), ``chance`` (mean over
        runs and subjects), ``n_subjects``, ``seeds`` (list) and ``note``. ``attrs`` holds
        ``by`` and ``ci``.
    """
    from scipy import stats

    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    by = list(by)
    missing = [c for c in (*by, *VALUE_COLUMNS) if c not in values.columns]
    if missing:
        raise ValueError(f"values lacks the column(s) {missing}; it has {list(values.columns)}")
    keys = [*by, "model", "metric"]
    data = values.assign(label=values["label"] if "label" in values else values["metric"])
    per_seed = data.groupby([*keys, "seed"], sort=False, dropna=False).agg(
        value=("value", "mean"), chance=("chance", "mean"), n_subjects=("subject", "nunique"),
        label=("label", "first")).reset_index()
    rows = []
    for key, grp in per_seed.groupby(keys, sort=False, dropna=False):
        v = grp["value"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        n = len(v)
        mean = float(v.mean()) if n else math.nan
        sd = float(v.std(ddof=1)) if n > 1 else math.nan
        half = float(stats.t.ppf(0.5 + ci / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
        counts = sorted(set(grp["n_subjects"]))
        notes = [] if n > 1 else ["n=1 seed: no interval" if n else "no value"]
        if len(counts) > 1:
            notes.append(f"seeds cover {counts[0]}-{counts[-1]} subjects")
        rows.append({**dict(zip(keys, key)), "label": grp["label"].iloc[0], "n_seeds": n, "mean": mean,
                     "sd": sd, "ci_low": mean - half, "ci_high": mean + half,
                     "chance": float(grp["chance"].mean()), "n_subjects": counts[-1] if counts else 0,
                     "seeds": [int(s) for s in grp["seed"]], "note": "; ".join(notes)})
    table = pd.DataFrame(rows, columns=[*keys, "label", "n_seeds", "mean", "sd", "ci_low", "ci_high", "chance",
                                        "n_subjects", "seeds", "note"])
    table.attrs.update(by=by, ci=ci)
    return table


def _num(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4f}"


def _cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells shared by the Markdown and HTML tables."""
    by = list(table.attrs.get("by", ["setting"]))
    ci = float(table.attrs.get("ci", 0.95))
    head = [*by, "model", "metric", "seeds", "mean", "SD", f"{ci:.0%} CI (t)", "chance", "subjects", "note"]
    rows = []
    for r in table.to_dict(orient="records"):
        interval = (f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if r["n_seeds"] > 1
                    else "n=1: no interval")
        rows.append([*(str(r[c]) for c in by), str(r["model"]), str(r["metric"]), str(r["n_seeds"]),
                     _num(r["mean"]), _num(r["sd"]), interval, _num(r["chance"]), str(r["n_subjects"]),
                     str(r["note"])])
    return head, rows


def _caption(table: pd.DataFrame) -> str:
    ci = float(table.attrs.get("ci", 0.95))
    return (f"Each seed counts once: a run's value is its mean over test subjects (leave-one-subject-out "
            f"folds of a seed pooled). Mean and SD across seeds; {ci:.0%} Student-t interval over seeds "
            f"(mean ± t·SD/√n, n − 1 degrees of freedom); none with one seed. Chance: the metric's chance "
            "level recorded in metrics.json.")


def summary_markdown(table: pd.DataFrame, *, title: str = "neurodecode summary") -> str:
    """The summary table as Markdown (a title, how it was computed, one table).

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`seed_summary`.
    title : str
        The heading.

    Returns
    -------
    text : str
        Markdown, ending with a newline.
    """
    head, rows = _cells(table)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [f"# {title}", "", _caption(table), "", line(head), line(["---"] * len(head))]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"


@verbose
@fill_doc
def summary_report(table: pd.DataFrame, *, title: str = "neurodecode summary",
                   runs: Sequence[str] = (), incomplete: Sequence[str] = (), verbose: Any = None) -> Report:
    """The summary table as a self-contained HTML report.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`seed_summary`.
    title : str
        The page title.
    runs : sequence of str
        The run folders summarised (listed under the table).
    incomplete : sequence of str
        Run folders found without results (listed, so a missing job is seen).
    %(verbose)s

    Returns
    -------
    report : Report
        Call ``report.save(path)`` or ``report.render()``.
    """
    head, rows = _cells(table)
    esc = _html.escape
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    html = (f'<table class="nd-table"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
            f"<tbody>{body}</tbody></table>")
    report = Report(title)
    report.add_html(html, title="Mean over seeds", section="Summary", caption=_caption(table))
    if runs:
        report.add_html("<pre>" + esc("\n".join(runs)) + "</pre>", title=f"{len(runs)} run folder(s)",
                        section="Runs")
    if incomplete:
        report.add_html("<pre>" + esc("\n".join(incomplete)) + "</pre>",
                        title=f"{len(incomplete)} run folder(s) without results (not counted)", section="Runs",
                        caption="Started or failed runs: finish them (rerun the sweep) and summarize again.")
    return report
