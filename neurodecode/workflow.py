"""The ``neurodecode fit`` workflow: data → targets → decoders → retrieval → report.

:func:`run_fit` is what the command line calls; it is also the Python entry
point for scripted runs. Every step goes through the public API, so the demo
(simulated NSD) exercises exactly the code real data goes through.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import FitConfig, config_to_yaml
from .utils import (atomic_path, atomic_write_json, atomic_write_text, get_data_dir, logger,
                    resolve_device, verbose)


@dataclass
class FitResult:
    """What :func:`run_fit` produced."""

    run_dir: Path
    metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        """The HTML report."""
        return self.run_dir / "report.html"


def simulated_root(config: FitConfig) -> Path:
    """Cache folder of the simulated dataset described by ``config.simulate``."""
    params = config.simulate.model_dump(mode="json")
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return get_data_dir() / "simulated" / f"nsd-{digest}"


def _fresh_dir(base: Path) -> Path:
    """``base``, or the first ``base-1``, ``base-2``, ... that holds no files (never overwrite a run)."""
    path, k = base, 1
    while path.exists() and any(path.iterdir()):
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def _new_run_dir(config: FitConfig, run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(
                f"Run folder {path} already holds files; pick another folder or remove it "
                "(neurodecode never overwrites an earlier run).")
        path.mkdir(parents=True, exist_ok=True)
        return path
    return _fresh_dir(Path(config.output_dir) / config.name)


def _resume_config(config: FitConfig | None, resume: str | Path, run_dir: str | Path | None) -> FitConfig:
    """The config of the run folder ``resume`` (checked against ``config`` when one is given)."""
    from .config import load_config

    if run_dir is not None:
        raise ValueError("Give either run_dir (a new run) or resume (an existing run folder), not both")
    saved = Path(resume) / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"Cannot resume {resume}: it has no config.yaml. Pass the folder of a run "
                                "started with `neurodecode fit` (e.g. runs/demo).")
    saved_config = load_config(saved)
    if config is not None and config_to_yaml(config) != config_to_yaml(saved_config):
        raise ValueError(f"Cannot resume {resume} with another config; drop the recipe and --set options "
                         f"(the run's own {saved} is used)")
    return saved_config


def _load_data(config: FitConfig):
    from .datasets import BrainTrials, load_nsd, simulate

    root = config.data.root
    if root is None:
        root = simulated_root(config)
        sim = config.simulate
        logger.info("No data.root given: using the simulated NSD dataset in %s", root)
        simulate("nsd", root, n_subjects=sim.n_subjects, n_sessions=sim.n_sessions,
                 trials_per_session=sim.trials_per_session, shared_fraction=sim.shared_fraction,
                 image_size=sim.image_size,
                 snr=sim.snr, seed=sim.seed)
    parts = []
    for subject in config.data.subjects:
        parts.append(load_nsd(root, subject, roi=config.data.roi, sessions=config.data.sessions,
                              zscore=config.data.zscore, betas_format=config.data.betas_format))
    return Path(root), BrainTrials.concatenate(parts)


def _targets(config: FitConfig, trials):
    """The pooled target table, and the token shape of the encoder when ``targets.output`` is tokens."""
    from .embeddings.pixels import embed_images

    tc = config.targets
    ids = trials.events["stimulus_id"].drop_duplicates().tolist()
    if tc.encoder == "pixels":
        pooled = embed_images(trials.stimuli, ids, encoder="pixels", size=tc.size)
        return pooled, ((tc.size * tc.size, 3) if tc.output == "tokens" else None)
    from .embeddings import ClipEncoder

    cache_dir = Path(tc.cache_dir) if tc.cache_dir is not None else get_data_dir() / "embeddings"
    enc = ClipEncoder(tc.encoder, tc.weights, device=resolve_device(config.device))
    pooled = embed_images(trials.stimuli, ids, encoder=enc, output="pooled", cache_dir=cache_dir)
    token_shape = None
    if tc.output == "tokens":
        # The token sequence's shape sizes the decoder's tokens head (one image is enough).
        first = trials.stimuli.get_images(ids[:1])
        token_shape = tuple(int(v) for v in enc.embed_images(first, outputs=("tokens",))["tokens"].shape[1:])
        logger.info("Targets: %s pooled (%d dims) + tokens %s", tc.encoder, pooled.dim, token_shape)
    return pooled, token_shape


def _token_targets(config: FitConfig, trials):
    """Token-sequence targets of the stimuli of ``trials`` (pixel tokens, or CLIP tokens via the disk cache)."""
    from .embeddings.pixels import embed_images

    tc = config.targets
    ids = trials.events["stimulus_id"].drop_duplicates().tolist()
    if tc.encoder == "pixels":
        return embed_images(trials.stimuli, ids, encoder="pixels", size=tc.size, output="tokens")
    from .embeddings import ClipEncoder

    cache_dir = Path(tc.cache_dir) if tc.cache_dir is not None else get_data_dir() / "embeddings"
    enc = ClipEncoder(tc.encoder, tc.weights, device=resolve_device(config.device))
    return embed_images(trials.stimuli, ids, encoder=enc, output="tokens", cache_dir=cache_dir)


def _predict_ridge(config: FitConfig, train, test, targets, run_dir: Path):
    from .models import RidgeDecoder

    est = RidgeDecoder(alphas=tuple(config.models.ridge.alphas), cv=config.models.ridge.cv)
    est.fit_trials(train, targets)
    for s, sub in est.subject_models_.items():
        logger.info("Ridge subject %s: alpha = %g (chosen by %s on training trials)", s, sub.alpha_,
                    "leave-one-out" if config.models.ridge.cv is None else f"{config.models.ridge.cv}-fold CV")
    est.save_pretrained(run_dir / "models" / "ridge")
    return est.predict_trials(test).astype(np.float32)


def _predict_mlp(config: FitConfig, train, test, targets, run_dir: Path, resume: bool = False,
                 target_token_shape: tuple[int, ...] | None = None):
    from .models import BrainDecoder
    from .training import Trainer

    mc = config.models.mlp
    device = resolve_device(config.device)
    n_inputs = {s: int(t.feature_shape[0]) for s, t in train.by_subject().items()}
    token_shape = None
    if "tokens" in mc.heads:
        token_shape = tuple(mc.token_shape) if mc.token_shape is not None else target_token_shape
        if target_token_shape is not None and token_shape != target_token_shape:
            raise ValueError(f"models.mlp.token_shape is {list(token_shape)} but the {config.targets.encoder} "
                             f"targets have token shape {list(target_token_shape)}; set "
                             "models.mlp.token_shape=null to follow the targets")
    token_targets = None
    if "tokens" in mc.heads:
        token_targets = _token_targets(config, train)
        if token_shape != tuple(token_targets.token_shape):
            raise ValueError(f"models.mlp.token_shape is {list(token_shape)} but the {config.targets.encoder} "
                             f"token targets have shape {list(token_targets.token_shape)}; set "
                             "models.mlp.token_shape=null to follow the targets")
        logger.info("Training the tokens head %s on %s (%s loss, weight %g)", token_shape,
                    token_targets.name, mc.token_loss, mc.token_weight)
    model = BrainDecoder(n_inputs, embed_dim=targets.dim, hidden_dim=mc.hidden_dim,
                         n_blocks=mc.n_blocks, dropout=mc.dropout, backbone=mc.backbone, seed=config.seed,
                         adapter=mc.adapter, heads=tuple(mc.heads), token_shape=token_shape,
                         adapter_kwargs=mc.adapter_kwargs, backbone_kwargs=mc.backbone_kwargs)
    trainer = Trainer(model, loss="infonce", lr=mc.lr, weight_decay=mc.weight_decay,
                      batch_size=mc.batch_size, max_epochs=mc.max_epochs, seed=config.seed,
                      device=device, val_fraction=mc.val_fraction, patience=mc.patience,
                      mixed_precision=mc.mixed_precision, lr_schedule=mc.lr_schedule,
                      gradient_accumulation_steps=mc.gradient_accumulation_steps,
                      ema_decay=mc.ema_decay, checkpoint_every=mc.checkpoint_every,
                      token_loss=mc.token_loss, token_weight=mc.token_weight)
    trainer.fit(train, targets, token_targets=token_targets, checkpoint_dir=run_dir / "checkpoints",
                resume=resume)
    model.save_pretrained(run_dir / "models" / "mlp")
    atomic_write_json(run_dir / "models" / "mlp" / "history.json", trainer.history_)
    return model.predict(test, device=device)


@verbose
def run_fit(config: FitConfig | None = None, *, run_dir: str | Path | None = None,
            resume: str | Path | None = None, verbose: Any = None) -> FitResult:
    """Run a whole fit: load (or simulate) data, fit decoders, evaluate, report.

    Parameters
    ----------
    config : FitConfig | None
        The run config (``None``: the embedded demo defaults).
    run_dir : str | Path | None
        Output folder; default ``<output_dir>/<name>`` (a numbered sibling if
        that one already holds a run — earlier runs are never overwritten).
    resume : str | Path | None
        An interrupted run folder to continue: its ``config.yaml`` is used
        (``config``, if given, must resolve to the same YAML), and the MLP
        training continues from the newest checkpoint in
        ``<resume>/checkpoints`` (the result equals an uninterrupted run).
        Cannot be combined with ``run_dir``.
    verbose : bool | str | int | None
        Log level for this call.

    Returns
    -------
    result : FitResult
        The run folder and the metrics written to ``metrics.json``.
    """
    from .datasets import check_no_leakage
    from .reports import build_retrieval_report
    from .tasks import evaluate_retrieval, retrieve

    if resume is not None:
        config = _resume_config(config, resume, run_dir)
    config = config or FitConfig()
    if not (config.models.ridge.enabled or config.models.mlp.enabled):
        raise ValueError("Both models.ridge.enabled and models.mlp.enabled are false: nothing to fit.")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if resume is not None:
        out = Path(resume)
        logger.info("Resuming run folder: %s", out)
    else:
        out = _new_run_dir(config, run_dir)
        atomic_write_text(out / "config.yaml", config_to_yaml(config))
        logger.info("Run folder: %s", out)

    t = time.perf_counter()
    root, trials = _load_data(config)
    timings["load"] = time.perf_counter() - t
    logger.info("Loaded %r", trials)

    train = trials.select(split="train")
    test = trials.select(split="test")
    if len(test) == 0:
        raise ValueError("No test trials (split == 'test') were loaded; the NSD test split is the "
                         "shared-1000 images. Load more sessions.")
    if config.evaluation.average_repetitions:
        test = test.average_repetitions()
    check_no_leakage(train, test, where="training")

    t = time.perf_counter()
    targets, token_shape = _targets(config, trials)
    timings["targets"] = time.perf_counter() - t
    target_test = targets.lookup(test.events["stimulus_id"].tolist())

    preds: dict[str, np.ndarray] = {}
    if config.models.ridge.enabled:
        t = time.perf_counter()
        preds["ridge"] = _predict_ridge(config, train, test, targets, out)
        timings["ridge"] = time.perf_counter() - t
    if config.models.mlp.enabled:
        t = time.perf_counter()
        preds["mlp"] = _predict_mlp(config, train, test, targets, out, resume=resume is not None,
                                    target_token_shape=token_shape)
        timings["mlp"] = time.perf_counter() - t

    t = time.perf_counter()
    ev = config.evaluation
    subjects = test.events["subject"].to_numpy()
    results: dict[str, dict[str, Any]] = {}
    for name, pred in preds.items():
        per_subject = {}
        for s in test.subjects:
            rows = np.flatnonzero(subjects == s)
            per_subject[s] = evaluate_retrieval(
                pred[rows], target_test[rows], n_candidates=ev.n_candidates, n_repeats=ev.n_repeats,
                topk=tuple(ev.topk), n_boot=ev.n_boot, ci=ev.ci, random_state=config.seed)
        results[name] = per_subject
    timings["evaluate"] = time.perf_counter() - t

    metrics = {
        "neurodecode_version": __version__,
        "dataset": config.data.dataset,
        "data_root": str(root),
        "simulated": config.data.root is None,
        "subjects": [int(s) for s in test.subjects],
        "n_train_trials": int(len(train)),
        "n_test_items": {str(s): int((subjects == s).sum()) for s in test.subjects},
        "targets": targets.name,
        "models": {name: {f"subj{int(s):02d}": sc.to_dict() for s, sc in per.items()}
                   for name, per in results.items()},
    }
    # Example rows for the report: first subject, best model.
    t = time.perf_counter()
    best = max(results, key=lambda m: np.mean([sc.metrics["nway_top1_forward"]["value"]
                                               for sc in results[m].values()]))
    s0 = test.subjects[0]
    rows = np.flatnonzero(subjects == s0)
    n_ex = min(config.report.n_examples, len(rows))
    query_ids = test.events["stimulus_id"].to_numpy()[rows]
    query_images = retrieved = correct = None
    if n_ex and trials.stimuli is not None:
        k = min(config.report.n_retrieved, len(rows))
        top = retrieve(preds[best][rows][:n_ex], target_test[rows], k=k)
        query_images = trials.stimuli.get_images(query_ids[:n_ex])
        retrieved = np.stack([trials.stimuli.get_images(query_ids[top[i]]) for i in range(n_ex)])
        correct = top == np.arange(n_ex)[:, None]
    report = build_retrieval_report(
        results, query_images=query_images, retrieved_images=retrieved, correct=correct,
        config=config.model_dump(mode="json"),
        title=f"neurodecode fit — {config.name} ({'simulated ' if config.data.root is None else ''}"
              f"{config.data.dataset.upper()})",
        example_caption=f"Subject {s0}, decoder '{best}': seen image, then the {config.report.n_retrieved} "
                        "test images whose embeddings are closest to the decoded one (green = correct).")
    report.save(out / "report.html")
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    metrics["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "run.json", {
        "neurodecode_version": __version__, "seed": config.seed, "python": platform.python_version(),
        "data_root": str(root), "command": "fit", "timings_s": metrics["timings_s"]})
    for name, pred in preds.items():
        with atomic_path(out / f"predictions_{name}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, stimulus_id=test.events["stimulus_id"].to_numpy(), subject=subjects,
                         prediction=pred)
    logger.info("Done in %.1f s: %s", timings["total"], out / "report.html")
    return FitResult(out, metrics, timings)


@verbose
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
        Fraction of the subject's training *images* used (all their repetitions), in (0, 1].
    max_epochs, freeze_epochs : int
        Adaptation epochs in total, and how many of them train the new adapter only.
    output : str | Path | None
        Output folder; default ``<run_dir>/adapted/subjNN`` (never overwritten).
    verbose : bool | str | int | None
        Log level for this call.

    Returns
    -------
    result : FitResult
        The output folder (adapted model, metrics.json, report.html) and its metrics.
    """
    from .config import load_config
    from .datasets import check_no_leakage, load_nsd
    from .models import BrainDecoder
    from .reports import build_retrieval_report
    from .tasks import evaluate_retrieval
    from .training import adapt_subject

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
    trials = load_nsd(root, subject, roi=config.data.roi, sessions=config.data.sessions,
                      zscore=config.data.zscore, betas_format=config.data.betas_format)
    train = trials.select(split="train")
    test = trials.select(split="test").average_repetitions()
    rng = np.random.default_rng(config.seed)
    images = train.events["stimulus_id"].drop_duplicates().to_numpy()
    n_keep = max(2, int(round(fraction * len(images))))
    keep = rng.choice(images, size=min(n_keep, len(images)), replace=False)
    few = train.select(stimulus_id=list(keep))
    check_no_leakage(few, test, where="adaptation")
    targets, _ = _targets(config, trials)
    model = BrainDecoder.from_pretrained(run_dir / "models" / "mlp")
    device = resolve_device(config.device)
    mc = config.models.mlp
    result = adapt_subject(model, few, targets, max_epochs=max_epochs, freeze_epochs=freeze_epochs,
                           batch_size=mc.batch_size, seed=config.seed, device=device)
    pred = result.model.predict(test, device=device)
    ev = config.evaluation
    scores = evaluate_retrieval(pred, targets.lookup(test.events["stimulus_id"].tolist()),
                                n_candidates=ev.n_candidates, n_repeats=ev.n_repeats, topk=tuple(ev.topk),
                                n_boot=ev.n_boot, ci=ev.ci, random_state=config.seed)
    out = _new_run_dir(config, output) if output is not None else \
        _fresh_dir(run_dir / "adapted" / f"subj{int(subject):02d}")
    result.model.save_pretrained(out / "model")
    metrics = {"neurodecode_version": __version__, "run": str(run_dir), "subject": int(subject),
               "fraction": fraction, "n_adapt_trials": int(len(few)), "n_adapt_images": int(len(keep)),
               "n_test_items": int(len(test)), "data_root": str(root),
               "metrics": scores.to_dict(), "history": result.history,
               "time_s": round(time.perf_counter() - t0, 3)}
    atomic_write_json(out / "metrics.json", metrics)
    report = build_retrieval_report({"adapted": {subject: scores}}, query_images=None, retrieved_images=None,
                                    correct=None, config=config.model_dump(mode="json"),
                                    title=f"neurodecode adapt — subject {subject} from {len(few)} trials")
    report.save(out / "report.html")
    logger.info("Adapted subject %s from %d trials: %s", subject, len(few), out)
    return FitResult(out, metrics, {"total": metrics["time_s"]})
