"""``neurodecode summarize``: collect run folders and tabulate their metrics over seeds.

:func:`collect_runs` finds every finished ``neurodecode fit`` run folder under the given paths (run
folders, sweep folders, or any folder holding them), reads its ``config.yaml`` and ``metrics.json``,
and names each run's *setting* by the config keys that differ between the runs — ignoring ``seed``,
``evaluation.loso_subjects`` (the fold of a sweep job) and ``output_dir``. :func:`run_summarize` then
writes ``summary.md``, ``summary.csv`` and ``summary.html`` (mean, SD and t-interval over seeds; see
:func:`neurodecode.reports.seed_summary`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..utils import atomic_write_text, fill_doc, logger, verbose

__all__ = ["SummaryResult", "collect_runs", "run_summarize"]

#: Config keys that do not make a setting: runs differing only by these are pooled (seeds, folds).
IGNORED_KEYS = ("seed", "evaluation.loso_subjects", "output_dir")


def _run_folders(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """Finished run folders (config.yaml, metrics.json, run.json) and started ones without results."""
    done, incomplete = [], []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist: give run folders or sweep folders written by "
                                    "`neurodecode fit`")
        found = [p] if (p / "config.yaml").is_file() else sorted(c.parent for c in p.rglob("config.yaml"))
        for run in found:
            if "submitit" in run.relative_to(p).parts:
                continue
            finished = (run / "metrics.json").is_file() and (run / "run.json").is_file()
            (done if finished else incomplete).append(run)
    return sorted(set(done)), sorted(set(incomplete))


def _config_tree(path: Path) -> dict[str, Any]:
    """A run's config with every default filled in (so runs of older versions compare alike)."""
    from ..config import ConfigError, config_to_yaml, load_config

    try:
        return yaml.safe_load(config_to_yaml(load_config(path)))
    except (ConfigError, ValueError, OSError) as err:
        logger.debug("Reading %s as plain YAML (%s)", path, err)
        return yaml.safe_load(path.read_text()) or {}


def _flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict) and tree:
        out: dict[str, str] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(tree, sort_keys=True) if not isinstance(tree, str) else tree}


def _value(x: Any) -> float:
    return math.nan if x is None else float(x)


def _rows(run: Path, metrics: dict[str, Any], seed: Any) -> list[dict[str, Any]]:
    rows = []
    for model, per_subject in metrics.get("models", {}).items():
        for subj, scores in per_subject.items():
            subject = int(subj[4:]) if subj.startswith("subj") and subj[4:].isdigit() else subj
            labels = scores.get("labels", {})
            for metric, d in scores.get("metrics", {}).items():
                rows.append({"run": str(run), "seed": int(seed), "model": model, "subject": subject,
                             "metric": metric, "label": labels.get(metric, metric),
                             "value": _value(d.get("value")), "chance": _value(d.get("chance"))})
    return rows


def _drop_duplicates(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Keep one run per setting, seed and subject (the first by path); say which were left out."""
    key = [*by, "seed", "model", "subject", "metric"]
    dup = frame.duplicated(key, keep="first")
    if dup.any():
        dropped = sorted(set(frame.loc[dup, "run"]))
        logger.warning("%d run(s) repeat the setting, seed and subjects of another run and are not counted "
                       "(each seed counts once): %s", len(dropped), ", ".join(dropped))
    return frame.loc[~dup].reset_index(drop=True)


@verbose
@fill_doc
def collect_runs(paths: Sequence[str | Path], *, verbose: Any = None) -> pd.DataFrame:
    """Read every finished ``neurodecode fit`` run under ``paths`` into one tidy frame.

    Parameters
    ----------
    paths : sequence of str | Path
        Run folders, sweep folders, or folders holding them (searched recursively).
    %(verbose)s

    Returns
    -------
    values : pandas.DataFrame
        One row per run, model, test subject and metric: the setting columns (the config keys that
        differ between the runs, as text; ``name`` when none does), ``run``, ``seed``, ``model``,
        ``subject``, ``metric``, ``label``, ``value``, ``chance``. A run repeating another run's
        setting, seed and subjects is left out (with a warning). ``attrs``: ``by`` (the setting
        columns), ``runs`` and ``incomplete`` (folders with a config but no results).

    Raises
    ------
    FileNotFoundError
        A path does not exist, or holds no finished run.
    """
    runs, incomplete = _run_folders(paths)
    if not runs:
        raise FileNotFoundError(f"No finished run folder (config.yaml, metrics.json and run.json) under "
                                f"{', '.join(map(str, paths))}" + (f"; {len(incomplete)} started run(s) have no "
                                                                    "results yet" if incomplete else ""))
    configs, rows = {}, []
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        if "models" not in metrics:
            continue
        tree = _config_tree(run / "config.yaml")
        configs[run] = {k: v for k, v in _flatten(tree).items() if k not in IGNORED_KEYS}
        rows += _rows(run, metrics, tree.get("seed", 0))
    if not rows:
        raise FileNotFoundError(f"The run folders under {', '.join(map(str, paths))} hold no fit metrics "
                                "(metrics.json without a 'models' entry)")
    keys = list(dict.fromkeys(k for flat in configs.values() for k in flat))
    by = [k for k in keys if len({flat.get(k) for flat in configs.values()}) > 1] or ["name"]
    frame = pd.DataFrame(rows)
    for k in by:
        frame[k] = frame["run"].map({str(r): flat.get(k, "") for r, flat in configs.items()})
    frame = _drop_duplicates(frame[[*by, *(c for c in frame.columns if c not in by)]], by)
    frame.attrs.update(by=by, runs=[str(r) for r in configs], incomplete=[str(r) for r in incomplete])
    if incomplete:
        logger.warning("%d run folder(s) have no results yet and are not counted: %s", len(incomplete),
                       ", ".join(map(str, incomplete)))
    return frame


@dataclass
class SummaryResult:
    """What :func:`run_summarize` wrote.

    Parameters
    ----------
    table : pandas.DataFrame
        The summary (see :func:`neurodecode.reports.seed_summary`).
    files : dict of str → Path
        ``"md"``, ``"csv"`` and ``"html"``: the files written.
    runs : list of str
        The run folders counted.
    incomplete : list of str
        Run folders found without results.
    """

    table: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def _output_dir(paths: Sequence[str | Path], output: str | Path | None) -> Path:
    if output is not None:
        return Path(output)
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0])
    raise ValueError("Several paths are summarized together: say where to write the summary with "
                     "output= (--output DIR)")


def _select(frame: pd.DataFrame, column: str, wanted: Sequence[str] | None) -> pd.DataFrame:
    if not wanted:
        return frame
    have = list(dict.fromkeys(frame[column]))
    unknown = [w for w in wanted if w not in have]
    if unknown:
        raise ValueError(f"No {column} {unknown} in these runs; they have: {', '.join(have)}")
    return frame[frame[column].isin(list(wanted))]


@verbose
@fill_doc
def run_summarize(paths: Sequence[str | Path], *, output: str | Path | None = None,
                  metrics: Sequence[str] | None = None, models: Sequence[str] | None = None,
                  ci: float = 0.95, verbose: Any = None) -> SummaryResult:
    """Tabulate runs over seeds and write ``summary.md``, ``summary.csv`` and ``summary.html``.

    Parameters
    ----------
    paths : sequence of str | Path
        Run folders, sweep folders, or folders holding them.
    output : str | Path | None
        Folder for the three files (default: the one path given, e.g. the sweep folder).
    metrics : sequence of str | None
        Metrics to keep (e.g. ``["nway_top1_forward", "2way_forward"]``); None: all.
    models : sequence of str | None
        Models to keep (``"ridge"``, ``"mlp"``); None: all.
    ci : float
        Confidence level of the t-interval over seeds.
    %(verbose)s

    Returns
    -------
    result : SummaryResult
        The table and the files written.
    """
    from ..reports import seed_summary, summary_markdown, summary_report

    values = collect_runs(paths)
    out = _output_dir(paths, output)
    by, runs, incomplete = values.attrs["by"], values.attrs["runs"], values.attrs["incomplete"]
    values = _select(_select(values, "metric", metrics), "model", models)
    table = seed_summary(values, by=by, ci=ci)
    title = f"neurodecode summary — {len(runs)} run(s), {len(table.drop_duplicates(by))} setting(s)"
    out.mkdir(parents=True, exist_ok=True)
    files = {"md": out / "summary.md", "csv": out / "summary.csv", "html": out / "summary.html"}
    atomic_write_text(files["md"], summary_markdown(table, title=title))
    csv = table.assign(seeds=table["seeds"].map(lambda s: ";".join(map(str, s))), ci=ci)
    atomic_write_text(files["csv"], csv.to_csv(index=False))
    summary_report(table, title=title, runs=runs, incomplete=incomplete).save(files["html"])
    logger.info("Summary of %d run(s) written to %s", len(runs), ", ".join(map(str, files.values())))
    return SummaryResult(table, files, runs, incomplete)
