"""``neurodecode ablate``: which atlas regions does a fitted run's decoder depend on?"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import AblationConfig, FitConfig
from ..utils import atomic_write_json, fill_doc, logger, verbose
from ._data import load_data, preprocess
from ._run import FitResult, _complete_or_removed, _fresh_dir, _output_dir

__all__ = ["ablate_run", "run_ablate"]


def _fill(template: str | None, root: Path) -> str | None:
    """``{root}`` → the data root; ``{subject...}`` placeholders stay for the per-subject atlases."""
    return None if template is None else template.replace("{root}", str(root))


def _slug(spec: str) -> str:
    """Folder-name part of an atlas spec: 'nsd:streams' → 'nsd-streams', a path → its stem."""
    is_path = spec.startswith(("/", ".", "~", "{")) or ":" not in spec
    head, rest = ("", spec) if is_path else spec.split(":", 1)
    tail = rest.replace("\\", "/").rstrip("/").split("/")[-1]
    tail = re.sub(r"\{subject[^}]*\}", "XX", re.sub(r"\.nii(\.gz)?$", "", tail))
    text = f"{head}-{tail}" if head else tail
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "atlas"


def _estimator(run_dir: Path, model: str) -> Any:
    from ..models import BrainDecoder, RidgeDecoder

    folder = run_dir / "models" / model
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: ablation.model={model!r} needs that decoder in the run "
                                f"(models.{model}.enabled: true when fitting), or choose the other model.")
    return RidgeDecoder.from_pretrained(folder) if model == "ridge" else BrainDecoder.from_pretrained(folder)


def _mlp_width(run_dir: Path) -> int | None:
    """The output width of the run's deep decoder (a published model may be scored on flattened tokens)."""
    path = run_dir / "models" / "mlp" / "config.json"
    try:
        return int(json.loads(path.read_text())["config"]["embed_dim"])
    except (OSError, KeyError, TypeError, ValueError):
        return None  # no or unreadable model: _estimator names the problem


def ablate_run(config: FitConfig, ac: AblationConfig, run_dir: Path, root: Path, train: Any, test: Any,
               targets: Any, out: Path) -> dict[str, Any]:
    """Ablate ``ac.atlas`` on the run's decoder; write table, figures and report into ``out``.

    Parameters
    ----------
    config : FitConfig
        The run's config (evaluation settings, seed).
    ac : AblationConfig
        Atlas, strategies, metrics, model and null sizes.
    run_dir : Path
        The run folder (its ``models/<ac.model>`` is ablated).
    root : Path
        The data root (fills ``{root}`` in ``ac.atlas`` / ``ac.transforms``).
    train, test : BrainTrials
        The run's training and (averaged) test trials.
    targets : StimulusEmbeddings
        Embeddings of every stimulus.
    out : Path
        Output folder (``ablation.csv``, ``ablation.json``, ``report.html``).

    Returns
    -------
    summary : dict
        Atlas, model, folder, intact baseline, the top region per strategy × metric (effect, p,
        FDR) and the number of significant regions.
    """
    from ..analysis.ablation import ablate
    from ..analysis.atlases import parse_atlas
    from ..reports import Report
    from ..reports.ablation import add_ablation_section

    if config.evaluation.scheme != "within":
        raise ValueError("Ablation needs the within-subject decoders (evaluation.scheme: within); this run was "
                         "fitted leave-one-subject-out.")
    if ac.atlas is None:
        raise ValueError("No atlas to ablate: give --atlas (or ablation.atlas in the config), e.g. 'nsd:streams'")
    spec = _fill(ac.atlas, root)
    atlas = parse_atlas(spec, transforms=_fill(ac.transforms, root))
    if ac.model == "mlp" and any(s in ("without", "alone") for s in ac.strategies):
        raise ValueError("The refit strategies ('without', 'alone') refit the ridge decoder; use "
                         "ablation.model=ridge or the lesion strategies (zero / mean / permute) for the MLP.")
    estimator = _estimator(run_dir, ac.model)
    needs_train = any(s in ("mean", "without", "alone") for s in ac.strategies)
    res = ablate(estimator, train if needs_train else None, test, targets, atlas, strategies=ac.strategies,
                 metrics=ac.metrics, n_null=ac.n_null, n_null_retrain=ac.n_null_retrain,
                 n_boot=config.evaluation.n_boot, ci=config.evaluation.ci, alpha=ac.alpha,
                 random_state=config.seed)
    res.save(out)
    info = next(iter(test.by_subject().values())).info
    report = Report(f"neurodecode ablate — {config.name} ({atlas.name}, {ac.model})",
                    config=config.model_dump(mode="json"))
    add_ablation_section(report, res.to_frame(), atlas=atlas, info=info, alpha=ac.alpha,
                         title=f"Ablation of {atlas.name}")
    report.save(out / "report.html")
    top, n_significant = {}, {}
    for (s, m), g in res.to_frame().groupby(["strategy", "metric"], sort=False):
        first = g.loc[g["rank"].idxmin()]
        top[f"{s}/{m}"] = {"region": str(first["region"]), "effect": float(first["effect"]),
                           "p_value": float(first["p_value"]), "p_fdr": float(first["p_fdr"])}
        n_significant[f"{s}/{m}"] = int(g["significant"].sum())
    summary = {"atlas": spec, "model": ac.model, "folder": str(out), "baseline": res.baseline, "top": top,
               "n_significant": n_significant}
    for key, t in top.items():
        logger.info("Ablation %s: %r first (effect %.3f, p = %.3g, FDR %.3g)", key, t["region"], t["effect"],
                    t["p_value"], t["p_fdr"])
    return summary


@verbose
@fill_doc
def run_ablate(run_dir: str | Path, atlas: str | None = None, *, strategies: list[str] | None = None,
               metrics: list[str] | None = None, model: str | None = None, n_null: int | None = None,
               n_null_retrain: int | None = None, transforms: str | None = None,
               output: str | Path | None = None, verbose: Any = None) -> FitResult:
    """Ablate the regions of an atlas in a fitted run's decoder (``neurodecode ablate RUN``).

    The run's data are loaded and preprocessed as in the fit (the same train /
    test split and repetition averaging), its decoder is read from
    ``models/<model>``, and :func:`neurodecode.analysis.ablation.ablate` scores
    every region. Outputs in ``<run>/ablation-<atlas>/`` (never overwritten):
    ``ablation.csv`` (the tidy table), ``ablation.json``, ``report.html`` (table,
    bar charts, brain / sensor / time map) and ``metrics.json``.

    Parameters
    ----------
    run_dir : str | Path
        A folder written by ``neurodecode fit``.
    atlas, strategies, metrics, model, n_null, n_null_retrain, transforms
        Override the run config's ``ablation`` section (see
        :class:`neurodecode.config.AblationConfig`).
    output : str | Path | None
        Output folder (default ``<run_dir>/ablation-<atlas>``, numbered if taken).
    %(verbose)s

    Returns
    -------
    result : FitResult
        The output folder and the summary written to ``metrics.json``.
    """
    from ..config import load_config
    from ..datasets import check_no_leakage
    from ._targets import scoring_targets, stimulus_targets

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: RUN must be a folder written by `neurodecode fit`.")
    config = load_config(cfg_path)
    given = {"atlas": atlas, "strategies": strategies, "metrics": metrics, "model": model, "n_null": n_null,
             "n_null_retrain": n_null_retrain, "transforms": transforms}
    over = {k: v for k, v in given.items()
            if v is not None}
    ac = AblationConfig.model_validate(config.ablation.model_dump() | over)
    t0 = time.perf_counter()
    root, trials = load_data(config)
    trials = preprocess(config, trials)
    train, test = trials.select(split="train"), trials.select(split="test")
    if len(test) == 0:
        raise ValueError(f"The run's data have no test trials to ablate on ({config.data.dataset}).")
    if config.evaluation.average_repetitions:
        test = test.average_repetitions()
    check_no_leakage(train, test, where="ablation")
    width = _mlp_width(run_dir) if ac.model == "mlp" else None
    targets = scoring_targets(config, trials, test, width) if width is not None else \
        stimulus_targets(config, trials)[0]
    claim = _output_dir(output, what="ablation") if output is not None else \
        _fresh_dir(run_dir / f"ablation-{_slug(ac.atlas or 'none')}", what="ablation")
    with _complete_or_removed(claim) as out:  # ours alone; removed on Ctrl-C or a failure before writing
        summary = ablate_run(config, ac, run_dir, Path(root), train, test, targets, out)
        metrics = {"neurodecode_version": __version__, "run": str(run_dir), **summary,
                   "settings": ac.model_dump(mode="json"), "time_s": round(time.perf_counter() - t0, 3)}
        atomic_write_json(out / "metrics.json", metrics)
    logger.info("Ablation report: %s", out / "report.html")
    return FitResult(out, metrics, {"total": metrics["time_s"]})

