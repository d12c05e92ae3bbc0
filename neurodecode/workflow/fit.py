"""The ``neurodecode fit`` workflow: data → preprocessing → targets → decoders → retrieval → report.

:func:`run_fit` is what the command line calls; it is also the Python entry
point for scripted runs. Every step goes through the public API, so the demo
(a simulated dataset written in the real layout) exercises exactly the code
real data goes through.
"""

from __future__ import annotations

import platform
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import FitConfig, config_to_yaml
from ..utils import atomic_path, atomic_write_json, atomic_write_text, fill_doc, logger, verbose
from ..utils.locks import lock_folder
from ._data import dataset_spec, load_data, no_test_hint, pooled_subjects, preprocess
from ._models import predict_mlp, predict_ridge
from ._run import FitResult, RunInterrupted, _claim_run_dir, _resume_config
from ._targets import stimulus_targets
from ._tracking import check_tracking, log_final_metrics


def _fit_models(config: FitConfig, train: Any, test: Any, targets: Any, out: Path, *, tag: str = "",
                resume: bool = False, token_shape: tuple[int, ...] | None = None,
                timings: dict[str, float]) -> dict[str, np.ndarray]:
    """Fit the enabled decoders on ``train``; their predictions for ``test``."""
    preds: dict[str, np.ndarray] = {}
    models = out / "models" / tag if tag else out / "models"

    def ridge() -> None:
        t = time.perf_counter()
        preds["ridge"] = predict_ridge(config, train, test, targets, models / "ridge")
        timings["ridge"] = timings.get("ridge", 0.0) + time.perf_counter() - t

    def mlp() -> None:
        t = time.perf_counter()
        preds["mlp"] = predict_mlp(config, train, test, targets, out, model_dir=models / "mlp",
                                   checkpoint_dir=out / "checkpoints" / tag if tag else out / "checkpoints",
                                   resume=resume, target_token_shape=token_shape)
        timings["mlp"] = timings.get("mlp", 0.0) + time.perf_counter() - t

    # on resume the MLP goes first: a checkpoint refused (other data) then stops before anything is rewritten
    steps = [(name, fn) for name, fn in (("ridge", ridge), ("mlp", mlp))
             if getattr(config.models, name).enabled]
    for _, fn in sorted(steps, key=lambda step: resume and step[0] != "mlp"):
        fn()
    return {name: preds[name] for name, _ in steps}


def _score(config: FitConfig, pred: np.ndarray, target: np.ndarray) -> Any:
    from ..tasks import evaluate_retrieval

    ev = config.evaluation
    n_candidates = len(pred) if ev.n_candidates is None else ev.n_candidates
    return evaluate_retrieval(pred, target, n_candidates=n_candidates, n_repeats=ev.n_repeats,
                              topk=tuple(ev.topk), n_boot=ev.n_boot, ci=ev.ci, random_state=config.seed)


def _time_window_sweep(config: FitConfig, train: Any, test: Any, targets: Any) -> dict[str, Any]:
    """Ridge retrieval per sliding time window (``evaluation.time_windows``)."""
    from ..analysis.windows import decode_time_windows, time_windows, trial_times

    ev = config.evaluation
    width, step = ev.time_windows  # type: ignore[misc]
    times = trial_times(test)
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    windows = time_windows(float(times[0]), float(times[-1]) + dt, width, step)
    frame = decode_time_windows(train, test, targets, windows, alphas=config.models.ridge.alphas,
                                cv=config.models.ridge.cv, n_candidates=ev.n_candidates,  # None: all
                                n_repeats=min(ev.n_repeats, 10), topk=tuple(ev.topk), n_boot=min(ev.n_boot, 200),
                                ci=ev.ci, random_state=config.seed, verbose="warning")
    peak = frame.iloc[frame.attrs["peak"]]
    logger.info("Time windows: retrieval peaks in [%.3f, %.3f) s (N-way top-1 %.3f)", peak["start"],
                peak["stop"], peak["nway_top1_forward"])
    return {"width_s": width, "step_s": step, "metric": "nway_top1_forward",
            "peak": {"start": float(peak["start"]), "stop": float(peak["stop"]),
                     "value": float(peak["nway_top1_forward"])},
            "windows": frame.to_dict(orient="records")}


@verbose
@fill_doc
def run_fit(config: FitConfig | None = None, *, run_dir: str | Path | None = None,
            resume: str | Path | None = None, verbose: Any = None) -> FitResult:
    """Run a whole fit: load (or simulate) data, preprocess, fit decoders, evaluate, report.

    Parameters
    ----------
    config : FitConfig | None
        The run config (``None``: the embedded demo defaults).
    run_dir : str | Path | None
        Output folder, new or empty; default ``<output_dir>/<name>`` (a
        numbered sibling if that one already holds a run or another process is
        writing it — earlier runs are never overwritten). The folder is held
        by this process alone while it runs; if the fit fails before writing
        anything but ``config.yaml``, the folder is removed.
    resume : str | Path | None
        An interrupted run folder to continue: its ``config.yaml`` is used
        (``config``, if given, must resolve to the same YAML), and the MLP
        training continues from the newest checkpoint in
        ``<resume>/checkpoints`` (the result equals an uninterrupted run).
        A checkpoint of other training data or settings is refused; a
        finished run (``run.json`` written) is left unchanged.
        Cannot be combined with ``run_dir``.
    %(verbose)s

    Returns
    -------
    result : FitResult
        The run folder and the metrics written to ``metrics.json``.

    Raises
    ------
    FileExistsError
        ``run_dir`` holds files, or another process writes it (or ``resume``).
    RunInterrupted
        On Ctrl-C once the run folder can be continued (a
        :class:`KeyboardInterrupt`; ``resume_command`` is the command to do so).

    Notes
    -----
    With ``evaluation.scheme: loso`` every held-out subject gets a fresh
    subject-agnostic model (the other subjects' training trials pooled into one
    adapter), saved under ``models/loso-subjNN/``, and is scored on its own test
    trials. M/EEG preprocessing statistics (``preprocessing.scaler``) come from
    each subject's training-split trials only. With ``evaluation.loso_subjects``
    only those held-out subjects are run and scored (one sweep job per fold).

    Under ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1) every process
    trains the MLP (data parallel) but only rank 0 claims and writes the run
    folder; the others write into a scratch folder that is removed at the end.
    """
    if resume is not None:
        config = _resume_config(config, resume, run_dir)
    config = config or FitConfig()
    if not (config.models.ridge.enabled or config.models.mlp.enabled):
        raise ValueError("Both models.ridge.enabled and models.mlp.enabled are false: nothing to fit.")
    from ._data import check_loader_options

    check_loader_options(config)  # fail before the run folder is created
    check_tracking(config)  # a tracker's package missing: one line, before anything runs
    if _launch_rank() > 0:  # accelerate launch / torchrun: rank 0 alone writes the run folder
        return _fit_other_rank(config, resume)
    if resume is not None:
        claim = lock_folder(resume, what="run")  # refused while another process writes the run
        done = _finished_metrics(claim.path)
        if done is not None:
            claim.release()
            logger.warning("Nothing to resume: the run %s already finished (its run.json and metrics.json "
                           "are written); its outputs are left unchanged. Start a new run without --resume "
                           "to fit again.", claim.path)
            return FitResult(claim.path, done, {})
    else:
        claim = _claim_run_dir(config, run_dir)
    try:
        with claim as out:
            if resume is None:
                atomic_write_text(out / "config.yaml", config_to_yaml(config))
                logger.info("Run folder: %s", out)
            else:
                logger.info("Resuming run folder: %s", out)
            return _fit_in(config, out, resume is not None)
    except KeyboardInterrupt as err:
        if not isinstance(err, RunInterrupted) and (claim.path / "config.yaml").is_file():
            raise RunInterrupted(claim.path, f"neurodecode fit --resume {shlex.quote(str(claim.path))}") from err
        raise


def _finished_metrics(out: Path) -> dict[str, Any] | None:
    """The metrics of a finished run folder (``run.json`` is written last), or None."""
    import json

    if not (out / "run.json").is_file():
        return None
    try:
        return json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _launch_rank() -> int:
    """This process's global rank under ``accelerate launch`` / ``torchrun`` (0 in a single-process run)."""
    import os

    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


def _fit_other_rank(config: FitConfig, resume: str | Path | None) -> FitResult:
    """A rank > 0 of a multi-process launch: train along (DDP needs every rank), write no run folder.

    Rank 0 claims and writes the run folder. This rank's outputs (the same models and metrics) go to a
    scratch folder removed at the end; on resume it reads the run's checkpoints (only rank 0 writes them).
    """
    import shutil
    import tempfile

    from ..utils import use_log_level

    done = None if resume is None else _finished_metrics(Path(resume))
    if done is not None:  # rank 0 finds the same and trains nothing
        return FitResult(Path(resume), done, {})  # type: ignore[arg-type]
    scratch = Path(tempfile.mkdtemp(prefix=f"neurodecode-rank{_launch_rank()}-"))
    try:
        if resume is not None:
            (scratch / "checkpoints").symlink_to(Path(resume).absolute() / "checkpoints", target_is_directory=True)
        with use_log_level("warning"):  # only rank 0 logs
            result = _fit_in(config, scratch, resume is not None)
        return FitResult(scratch, result.metrics, result.timings)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train_test(config: FitConfig, trials: Any) -> tuple[Any, Any]:
    """Training and test trials (test repetitions averaged if asked), after the leakage guard."""
    from ..datasets import check_no_leakage

    train = trials.select(split="train")
    test = trials.select(split="test")
    if len(test) == 0:
        raise ValueError(f"No test trials (split == 'test') were loaded; "
                         f"{no_test_hint(config)}.")
    if config.evaluation.average_repetitions:
        test = test.average_repetitions()
    held_out = config.evaluation.loso_subjects
    if config.evaluation.scheme == "loso" and held_out is not None:  # only these folds (one sweep job each)
        test = test.select(subject=list(held_out))
    check_no_leakage(train, test, where="training")
    return train, test


def _fit_and_score(config: FitConfig, train: Any, test: Any, targets: Any, target_test: np.ndarray, out: Path,
                   resume: bool, token_shape: Any, timings: dict[str, float]) -> tuple[dict, dict]:
    """Fit every model (within subjects, or one fold per left-out subject) and score each test subject."""
    from ..datasets import check_no_leakage

    subjects = test.events["subject"].to_numpy()
    results: dict[str, dict[Any, Any]] = {}
    preds: dict[str, np.ndarray] = {}
    if config.evaluation.scheme == "within":
        preds = _fit_models(config, train, test, targets, out, resume=resume,
                            token_shape=token_shape, timings=timings)
        t = time.perf_counter()
        for name, pred in preds.items():
            results[name] = {s: _score(config, pred[subjects == s], target_test[subjects == s])
                             for s in test.subjects}
        timings["evaluate"] = time.perf_counter() - t
        return preds, results
    train_subjects = train.events["subject"].to_numpy()
    for s in test.subjects:
        logger.info("Leave-one-subject-out: training on subjects %s, testing on subject %s",
                    [x for x in train.subjects if x != s], s)
        fold_train = pooled_subjects(train[np.flatnonzero(train_subjects != s)])
        fold_test = pooled_subjects(test[np.flatnonzero(subjects == s)])
        check_no_leakage(fold_train, fold_test, where=f"leave-one-subject-out fold {s}")
        fold = _fit_models(config, fold_train, fold_test, targets, out, tag=f"loso-subj{int(s):02d}",
                           resume=resume, token_shape=token_shape, timings=timings)
        t = time.perf_counter()
        for name, pred in fold.items():
            full = preds.setdefault(name, np.zeros((len(test), pred.shape[1]), dtype=np.float32))
            full[subjects == s] = pred
            results.setdefault(name, {})[s] = _score(config, pred, target_test[subjects == s])
        timings["evaluate"] = timings.get("evaluate", 0.0) + time.perf_counter() - t
    return preds, results


def _write_run_files(config: FitConfig, out: Path, root: Any, test: Any, preds: dict[str, np.ndarray],
                     metrics: dict[str, Any], *, command: str = "fit") -> None:
    """Predictions, metrics.json and, last, run.json (which marks the run finished)."""
    subjects = test.events["subject"].to_numpy()
    for name, pred in preds.items():
        with atomic_path(out / f"predictions_{name}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, stimulus_id=test.events["stimulus_id"].to_numpy().astype(str), subject=subjects,
                     prediction=pred)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "run.json", {  # written last: marks the run finished (--resume then does nothing)
        "neurodecode_version": __version__, "seed": config.seed, "python": platform.python_version(),
        "data_root": str(root), "command": command, "timings_s": metrics["timings_s"]})


def _run_metrics(config: FitConfig, root: Any, train: Any, test: Any, targets: Any,
                 results: dict[str, dict[Any, Any]]) -> dict[str, Any]:
    """The data, protocol and per-model, per-subject scores of ``metrics.json`` (timings added last)."""
    subjects = test.events["subject"].to_numpy()
    return {
        "neurodecode_version": __version__,
        "dataset": config.data.dataset,
        "modality": dataset_spec(config).modality,
        "data_root": str(root),
        "simulated": config.data.root is None,
        "scheme": config.evaluation.scheme,
        "subjects": [int(s) for s in test.subjects],
        "n_train_trials": len(train),
        "n_test_items": {str(s): int((subjects == s).sum()) for s in test.subjects},
        "targets": targets.name,
        "models": {name: {f"subj{int(s):02d}": sc.to_dict() for s, sc in per.items()}
                   for name, per in results.items()},
    }


def _fit_in(config: FitConfig, out: Path, resume: bool) -> FitResult:
    """The body of :func:`run_fit`, writing into the claimed run folder ``out``."""
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()
    root, trials = load_data(config)
    trials = preprocess(config, trials)
    timings["load"] = time.perf_counter() - t
    logger.info("Loaded %r", trials)

    ev = config.evaluation
    train, test = _train_test(config, trials)

    t = time.perf_counter()
    targets, token_shape = stimulus_targets(config, trials)
    timings["targets"] = time.perf_counter() - t
    target_test = targets.lookup(test.events["stimulus_id"].tolist())
    preds, results = _fit_and_score(config, train, test, targets, target_test, out, resume, token_shape, timings)

    metrics = _run_metrics(config, root, train, test, targets, results)
    sweep = None
    if ev.time_windows is not None:
        t = time.perf_counter()
        sweep = _time_window_sweep(config, train, test, targets)
        metrics["time_windows"] = sweep
        timings["time_windows"] = time.perf_counter() - t

    if config.ablation.atlas is not None:
        from .ablate import ablate_run

        t = time.perf_counter()
        metrics["ablation"] = ablate_run(config, config.ablation, out, Path(root), train, test, targets,
                                         out / "ablation")
        timings["ablation"] = time.perf_counter() - t

    t = time.perf_counter()
    report = _build_report(config, trials, test, preds, results, target_test, sweep, out / "models")
    report.save(out / "report.html")
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    metrics["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    log_final_metrics(config, out, metrics)  # config.tracking: the test metrics, as the tracked run "test"
    _write_run_files(config, out, root, test, preds, metrics)
    logger.info("Done in %.1f s: %s", timings["total"], out / "report.html")
    return FitResult(out, metrics, timings)


def _histories(models_dir: Path) -> dict[str, list[dict]]:
    """Per-epoch training histories of the deep decoders of a run (``models/**/history.json``)."""
    import json

    out = {}
    for path in sorted(models_dir.rglob("history.json")):
        name = path.parent.relative_to(models_dir).as_posix()
        try:
            hist = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            logger.warning("Skipping the training curves of %s: %s", path, err)
            continue
        if hist:
            out[name] = hist
    return out


def _build_report(config: FitConfig, trials: Any, test: Any, preds: dict[str, np.ndarray],
                  results: dict[str, dict[Any, Any]], target_test: np.ndarray, sweep: dict | None,
                  models_dir: Path | None = None) -> Any:
    from ..reports import build_retrieval_report
    from ..tasks import retrieve

    subjects = test.events["subject"].to_numpy()
    order = sorted(results, key=lambda m: -np.mean([sc.metrics["nway_top1_forward"]["value"]
                                                    for sc in results[m].values()]))
    best = order[0]
    s0 = test.subjects[0]
    rows = np.flatnonzero(subjects == s0)
    n_ex = min(config.report.n_examples, len(rows))
    query_ids = test.events["stimulus_id"].to_numpy()[rows]
    examples: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
    query_images = None
    has_images = trials.stimuli is not None and "image" in trials.stimuli.kinds
    if n_ex and has_images:
        k = min(config.report.n_retrieved, len(rows))
        query_images = trials.stimuli.get_images(query_ids[:n_ex])
        for name in order:  # every model's retrievals of the same trials, best model first
            top = retrieve(preds[name][rows][:n_ex], target_test[rows], k=k)
            examples[name] = (np.stack([trials.stimuli.get_images(query_ids[top[i]]) for i in range(n_ex)]),
                              top == np.arange(n_ex)[:, None])
    scheme = " (leave-one-subject-out)" if config.evaluation.scheme == "loso" else ""
    caption = ("Subject {s}, decoder '{m}': seen image, then the {k} test images whose embeddings are closest "
               "to the decoded one (green = correct).")
    report = build_retrieval_report(
        results, query_images=query_images, retrieved_images=examples.get(best, (None,))[0],
        correct=examples.get(best, (None, None))[1], config=config.model_dump(mode="json"),
        title=f"neurodecode fit — {config.name} ({'simulated ' if config.data.root is None else ''}"
              f"{config.data.dataset.upper()}){scheme}",
        example_caption=caption.format(s=s0, m=best, k=config.report.n_retrieved))
    for name in order[1:]:
        if name in examples:
            report.add_image_rows(query_images, examples[name][0], correct=examples[name][1],
                                  title=f"Retrieved images — {name}", section="Retrieval examples",
                                  caption=caption.format(s=s0, m=name, k=config.report.n_retrieved))
    histories = _histories(models_dir) if models_dir is not None and models_dir.is_dir() else {}
    if histories:
        from ..reports.figures import plot_training_curves

        report.add_figure(plot_training_curves(histories), title="Training curves", section="Training",
                          caption="Per epoch: training loss (solid) and validation loss (dashed) of each "
                                  "trained decoder; right: top-1 retrieval among the validation stimuli "
                                  "(held out of training by the Trainer) with its chance level (dotted). "
                                  "The weights kept are those of the lowest validation loss.")
    if sweep is not None:
        import pandas as pd

        from ..reports.figures import plot_time_windows

        fig = plot_time_windows(pd.DataFrame(sweep["windows"]), metric=sweep["metric"])
        peak = sweep["peak"]
        report.add_figure(fig, title="Decoding over time windows",
                          caption=f"Ridge decoder refitted per {sweep['width_s'] * 1000:g} ms window (step "
                                  f"{sweep['step_s'] * 1000:g} ms), N-way top-1 on the test set with "
                                  f"{config.evaluation.ci:.0%} bootstrap CIs. Peak: [{peak['start']:.3f}, "
                                  f"{peak['stop']:.3f}) s, {peak['value']:.3f}.",
                          section="Time windows")
    return report
