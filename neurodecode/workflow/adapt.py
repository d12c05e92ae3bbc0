"""``neurodecode adapt``: a fitted decoder adapted to a new subject from few trials."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..utils import atomic_write_json, fill_doc, logger, resolve_device, verbose
from ._data import load_subject, preprocess, simulated_root
from ._run import FitResult, _claim_run_dir, _complete_or_removed, _fresh_dir
from ._targets import stimulus_targets


@verbose
@fill_doc
def run_adapt(run_dir: str | Path, subject: int, *, data_root: str | Path | None = None,
              fraction: float = 0.1, max_epochs: int = 20, freeze_epochs: int = 5,
              output: str | Path | None = None, verbose: Any = None) -> FitResult:
    """Adapt a fitted run's decoder to a new subject from few trials (MindBridge reset-tuning).

    Parameters
    ----------
    run_dir : str | Path
        A folder written by :func:`run_fit` (its ``config.yaml`` and ``models/mlp`` are used).
    subject : int
        The new subject (its data must be under ``data_root``).
    data_root : str | Path | None
        Dataset root holding the new subject; default: the run's own data root.
    fraction : float
        Fraction of the subject's training *stimuli* used (all their repetitions), in (0, 1].
    max_epochs, freeze_epochs : int
        Adaptation epochs in total, and how many of them train the new adapter only.
    output : str | Path | None
        Output folder; default ``<run_dir>/adapted/subjNN`` (never overwritten).
    %(verbose)s

    Returns
    -------
    result : FitResult
        The output folder (adapted model, metrics.json, report.html) and its metrics.
    """
    from ..config import load_config
    from ..datasets import check_no_leakage
    from ..models import BrainDecoder
    from ..reports import build_retrieval_report
    from ..tasks import evaluate_retrieval
    from ..training import adapt_subject

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: RUN must be a folder written by `neurodecode fit`.")
    config = load_config(cfg_path)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    root = Path(data_root) if data_root is not None else (
        Path(config.data.root) if config.data.root is not None else simulated_root(config))
    t0 = time.perf_counter()
    trials = preprocess(config, load_subject(config, root, subject))
    train = trials.select(split="train")
    test = trials.select(split="test").average_repetitions()
    rng = np.random.default_rng(config.seed)
    images = train.events["stimulus_id"].drop_duplicates().to_numpy()
    n_keep = max(2, round(float(fraction) * len(images)))
    keep = rng.choice(images, size=min(n_keep, len(images)), replace=False)
    few = train.select(stimulus_id=list(keep))
    check_no_leakage(few, test, where="adaptation")
    targets, _ = stimulus_targets(config, trials)
    model = BrainDecoder.from_pretrained(run_dir / "models" / "mlp")
    device = resolve_device(config.device)
    mc = config.models.mlp
    result = adapt_subject(model, few, targets, max_epochs=max_epochs, freeze_epochs=freeze_epochs,
                           batch_size=mc.batch_size, seed=config.seed, device=device)
    pred = result.model.predict(test, device=device)
    ev = config.evaluation
    scores = evaluate_retrieval(pred, targets.lookup(test.events["stimulus_id"].tolist()),
                                n_candidates=ev.n_candidates or len(pred), n_repeats=ev.n_repeats,
                                topk=tuple(ev.topk), n_boot=ev.n_boot, ci=ev.ci, random_state=config.seed)
    claim = _claim_run_dir(config, output, disposable=()) if output is not None else \
        _fresh_dir(run_dir / "adapted" / f"subj{int(subject):02d}", what="adaptation")
    with _complete_or_removed(claim) as out:  # ours alone; removed on Ctrl-C or a failure before writing
        result.model.save_pretrained(out / "model")
        metrics = {"neurodecode_version": __version__, "run": str(run_dir), "subject": int(subject),
                   "fraction": fraction, "n_adapt_trials": len(few), "n_adapt_images": len(keep),
                   "n_test_items": len(test), "data_root": str(root),
                   "metrics": scores.to_dict(), "history": result.history,
                   "time_s": round(time.perf_counter() - t0, 3)}
        atomic_write_json(out / "metrics.json", metrics)
        report = build_retrieval_report({"adapted": {subject: scores}}, query_images=None, retrieved_images=None,
                                        correct=None, config=config.model_dump(mode="json"),
                                        title=f"neurodecode adapt — subject {subject} from {len(few)} trials")
        report.save(out / "report.html")
    logger.info("Adapted subject %s from %d trials: %s", subject, len(few), out)
    return FitResult(out, metrics, {"total": metrics["time_s"]})
