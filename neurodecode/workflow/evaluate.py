"""``neurodecode evaluate``: score a published model on the user's data, with the run folder of ``fit``.

The data, targets and protocol come from a recipe (by default the family's own, e.g. ``things_eeg_atm`` for
ATM-S) exactly as in ``neurodecode fit``: the same loader, preprocessing, train / test split, leakage guard,
repetition averaging, targets, N-way draw and bootstrap CIs. Instead of training, the model is read from the
original checkpoint with :func:`neurodecode.models.from_published`, checked against the data and the targets,
and saved as the run's ``models/mlp`` so ``neurodecode ablate RUN --model mlp`` and ``neurodecode reconstruct
RUN`` take the run like any other.
"""

from __future__ import annotations

import hashlib
import html
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FitConfig, config_to_yaml
from ..utils import atomic_write_json, atomic_write_text, fill_doc, logger, resolve_device, verbose
from ..utils.locks import claim_folder
from ._data import load_data, preprocess
from ._run import FitResult, _complete_or_removed
from ._targets import scoring_targets
from .fit import _build_report, _run_metrics, _score, _train_test, _write_run_files

__all__ = ["FAMILY_RECIPES", "FAMILY_SETTINGS", "check_published_fit", "parse_published", "run_evaluate"]

#: The recipe whose data, targets and protocol fit each published family (the default of ``evaluate``).
FAMILY_RECIPES: dict[str, str] = {"atm": "things_eeg_atm", "brainmagick": "masc_speech",
                                  "mindbridge": "nsd_mindbridge", "mindeye1": "nsd_mindbridge",
                                  "mindeye2": "nsd_mindeye"}

#: Settings a family's targets need on top of its default recipe (``--set`` overrides them). MindEye1 and
#: MindBridge regress CLIP ViT-L/14's 257 × 768 hidden states (the pooled embedding and the projected patch
#: tokens) and score retrieval on them flattened.
_HIDDEN_STATES = ("targets.output=tokens", "targets.tokens=projected_cls", "models.mlp.heads=[pooled,tokens]")
FAMILY_SETTINGS: dict[str, tuple[str, ...]] = {"mindbridge": _HIDDEN_STATES, "mindeye1": _HIDDEN_STATES}


def parse_published(text: str) -> tuple[str, Path]:
    """Split ``"FAMILY:PATH"`` and check the family and the file.

    Parameters
    ----------
    text : str
        A family of :func:`neurodecode.models.list_published`, a colon and the checkpoint file.

    Returns
    -------
    family : str
        The family name.
    path : Path
        The checkpoint file (``~`` expanded).

    Raises
    ------
    ValueError
        No colon, or a family that is not supported (the message lists the supported ones).
    FileNotFoundError
        The file does not exist.
    """
    from ..models import list_published
    from ..utils import check_path

    family, sep, path = str(text).partition(":")
    families = list_published()
    if not sep or not family or not path:
        raise ValueError(f"--published takes FAMILY:PATH (e.g. atm:models/contrast/ATMS/sub-08/40.pth), got "
                         f"{text!r}; families: {', '.join(families)}")
    if family not in families:
        raise ValueError(f"unknown published family {family!r}: supported families are {', '.join(families)} "
                         "(neurodecode.models.list_published())")
    return family, check_path(path, what=f"{family} checkpoint file", kind="file")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """``value`` with arrays, tuples, ranges and paths turned into JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, range, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _evaluation_config(config: FitConfig | str | Path | None, family: str) -> FitConfig:
    """The run's config: the recipe (default: the family's), with no ridge and no time-window sweep."""
    from ..config import load_config

    if not isinstance(config, FitConfig):
        recipe = config if config is not None else FAMILY_RECIPES.get(family)
        if recipe is None:
            raise ValueError(f"no default recipe for the published family {family!r}: give one (a recipe name "
                             "or a YAML file) that loads the data and targets the model was trained on")
        config = load_config(recipe, list(FAMILY_SETTINGS.get(family, ())) if config is None else None)
    if config.evaluation.scheme != "within":
        raise ValueError("evaluate scores a published model as it is, per test subject: set "
                         "evaluation.scheme=within (leave-one-subject-out refits a model per fold)")
    config = config.model_copy(deep=True)
    if config.models.ridge.enabled or config.evaluation.time_windows is not None:
        logger.info("evaluate trains nothing: models.ridge and evaluation.time_windows are off in this run")
    config.models.ridge.enabled = False
    config.evaluation.time_windows = None
    return config


def _data_options(family: str, test: Any) -> dict[str, Any]:
    """Options of ``from_published`` that the data give (subjects, channels, time samples, layouts)."""
    from ._data import positions_2d

    per = test.by_subject()
    first = next(iter(per.values()))
    shape = tuple(first.feature_shape)
    if family == "atm" and len(shape) == 2:
        return {"subjects": [int(s) for s in per], "n_chans": int(shape[0])}
    if family == "brainmagick" and len(shape) == 2:
        positions = {s: positions_2d(t.info.get("ch_pos")) for s, t in per.items()}
        if any(p is None for p in positions.values()):
            return {"n_times": int(shape[1])}
        return {"positions": positions, "n_times": int(shape[1])}
    if family == "mindbridge":  # any voxel count: the adapter pools it to the model's width
        return {"voxels": {s: int(np.prod(t.feature_shape)) for s, t in per.items()}}
    return {}  # mindeye1 / mindeye2: every part the file holds (the blurry branch and the prior included)


def _recipe_encoder(family: str) -> str | None:
    """``targets.encoder`` of the family's own recipe (for messages)."""
    import yaml

    from ..config import recipe_path

    name = FAMILY_RECIPES.get(family)
    if name is None:
        return None
    try:
        tree = yaml.safe_load(recipe_path(name).read_text())
        return str(tree["targets"]["encoder"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def _shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return f"{shape[0]} channels × {shape[1]} time samples"
    return f"{int(np.prod(shape))} features"


def check_published_fit(model: Any, family: str, test: Any, targets: Any, config: FitConfig) -> None:
    """Raise a clear error when the published model does not fit the run's subjects, inputs or targets.

    Parameters
    ----------
    model : BrainDecoder
        The model read by :func:`~neurodecode.models.from_published`.
    family : str
        Its family (for messages).
    test : BrainTrials
        The test trials it will decode.
    targets : StimulusEmbeddings
        The run's targets.
    config : FitConfig
        The run's config (for messages).

    Raises
    ------
    ValueError
        A test subject the model has no adapter for, inputs of another size, or embeddings of another width
        than the targets; the message names both sides and what to change.
    """
    missing = [s for s in test.subjects if str(s) not in model.n_inputs]
    if missing:
        raise ValueError(f"the published {family} model has adapters for subjects {model.subjects} but the data "
                         f"have subjects {list(test.subjects)}: pick the model's subjects (--subject / "
                         "data.subjects) or give the family's subject option (--option subjects=[...])")
    n_times = model.config.get("n_times") if model.is_sequence else None
    for s, part in test.by_subject().items():
        shape = tuple(int(v) for v in part.feature_shape)
        want = int(model.n_inputs[str(s)])
        want_shape = (want // n_times, n_times) if n_times else (want,)
        if int(np.prod(shape)) != want or (n_times and shape[-1] != n_times):
            raise ValueError(f"subject {s}'s trials have {_shape_text(shape)} but the published {family} model "
                             f"takes {_shape_text(want_shape)}: load the data as the model was trained "
                             "(data.options, preprocessing.picks / sfreq / tmin / tmax) or give the family's "
                             "options (--option KEY=VALUE, docs/published.md)")
    if (getattr(model, "published", None) or {}).get("kind") == "autoencoder":
        raise ValueError(f"this {family} file is MindEye1's low-level model (autoencoder_*: voxels → SD-VAE "
                         "latents): it has no retrieval output to score. Evaluate the subject's prior_257_* or "
                         "prior_1x768_* file; the autoencoder's latents are read with "
                         f"nd.models.from_published('{family}', PATH) (outputs['vae_decoder']).")
    if int(model.embed_dim) != int(targets.dim):
        natural = _recipe_encoder(family)
        hint = "use the targets the model was trained on"
        if natural is not None and natural != config.targets.encoder:
            hint = f"use the {FAMILY_RECIPES[family]} recipe's targets (targets.encoder={natural})"
        raise ValueError(f"the published {family} model outputs {model.embed_dim}-d embeddings but "
                         f"targets.encoder={config.targets.encoder!r} gives {targets.dim}-d ({targets.name}): "
                         f"{hint}")


def _load_published(family: str, path: Path, options: Mapping[str, Any] | None, test: Any
                    ) -> tuple[Any, dict[str, Any]]:
    """The model of the checkpoint (data-given options first, the user's on top) and the options used."""
    from ..models import from_published

    opts = {**_data_options(family, test), **dict(options or {})}
    logger.info("Reading the published %s checkpoint %s (options: %s)", family, path, sorted(opts))
    return from_published(family, path, **opts), opts


def _published_record(model: Any, family: str, path: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """What ``models/mlp/published.json`` records: the source file, its hash, the options, unused tensors."""
    info = getattr(model, "published", None) or {}
    unused = [{"key": key, "shape": list(getattr(item.get("tensor"), "shape", ())),
               "reason": str(item.get("reason", ""))} if isinstance(item, Mapping) else
              {"key": key, "reason": str(item)} for key, item in dict(info.get("unused", {})).items()]
    return {"family": family, "path": str(path.resolve()), "sha256": _file_sha256(path),
            "size_bytes": path.stat().st_size, "container": info.get("container"), "options": _jsonable(options),
            "config": _jsonable(info.get("config")), "variant": info.get("variant"), "unused": unused}


def _brief_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options with long values (sensor positions) left to ``published.json``."""
    return {k: v if len(json.dumps(v)) <= 200 else "(in models/mlp/published.json)" for k, v in options.items()}


def _published_html(record: Mapping[str, Any]) -> str:
    rows = [("family", record["family"]), ("file", record["path"]), ("sha256", record["sha256"]),
            ("options", json.dumps(_brief_options(record["options"]))),
            ("unused tensors", f"{len(record['unused'])} (listed in models/mlp/published.json)")]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


@verbose
@fill_doc
def run_evaluate(published: str, config: FitConfig | str | Path | None = None, *,
                 run_dir: str | Path | None = None, options: Mapping[str, Any] | None = None,
                 verbose: Any = None) -> FitResult:
    """Score a published checkpoint on the run's data, with the run folder of ``neurodecode fit``.

    The data are loaded, preprocessed and split as :func:`run_fit` does, the
    targets built the same way, and the test trials (repetitions averaged as
    configured, after the leakage guard) decoded by the model that
    :func:`neurodecode.models.from_published` reads from the checkpoint; retrieval
    is scored with the config's protocol (same N-way draw, bootstrap CIs and seed
    as ``fit``). Nothing is trained; there is no ridge baseline.

    Parameters
    ----------
    published : str
        ``"FAMILY:PATH"``: a family of :func:`neurodecode.models.list_published` and the original
        checkpoint file.
    config : FitConfig | str | Path | None
        The data and the protocol: a config, or a recipe name / YAML file (None: the family's recipe,
        :data:`FAMILY_RECIPES`). ``evaluation.scheme`` must be ``within``.
    run_dir : str | Path | None
        Output folder, new or empty; default ``<output_dir>/<name>-published-<family>`` (numbered if taken).
        A command that fails before writing anything but ``config.yaml`` leaves no folder.
    options : mapping | None
        Options of the family's loader (see :func:`~neurodecode.models.from_published`), on top of those the
        data give (``atm``: ``subjects``, ``n_chans``; ``brainmagick``: ``positions`` from the sensor
        positions, ``n_times``; ``mindbridge``: ``voxels``; ``mindeye1`` / ``mindeye2``: every part the
        file holds).
    %(verbose)s

    Returns
    -------
    result : FitResult
        The run folder (``config.yaml``, ``models/mlp/`` with ``published.json``, ``metrics.json`` with a
        ``published`` entry, ``report.html``, ``predictions_mlp.npz``, ``run.json``) and its metrics.

    Raises
    ------
    ValueError
        An unknown family, or a model that does not fit the data's subjects, input sizes or the targets'
        width (see :func:`check_published_fit`).
    """
    from ._data import check_loader_options

    family, path = parse_published(published)
    config = _evaluation_config(config, family)
    check_loader_options(config)
    base = Path(config.output_dir) / f"{config.name}-published-{family}"
    claim = claim_folder(Path(run_dir), disposable=("config.yaml",), what="run") if run_dir is not None else \
        claim_folder(base, numbered=True, disposable=("config.yaml",), what="run")
    with _complete_or_removed(claim) as out:  # Ctrl-C: the folder is removed (evaluate cannot resume)
        atomic_write_text(out / "config.yaml", config_to_yaml(config))
        logger.info("Run folder: %s", out)
        return _evaluate_in(config, family, path, options, out)


def _evaluate_in(config: FitConfig, family: str, path: Path, options: Mapping[str, Any] | None,
                 out: Path) -> FitResult:
    """The body of :func:`run_evaluate`, writing into the claimed run folder ``out``."""
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()
    root, trials = load_data(config)
    trials = preprocess(config, trials)
    train, test = _train_test(config, trials)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    model, used = _load_published(family, path, options, test)
    timings["load_model"] = time.perf_counter() - t
    t = time.perf_counter()
    targets = scoring_targets(config, trials, test, model.embed_dim)
    timings["targets"] = time.perf_counter() - t
    target_test = targets.lookup(test.events["stimulus_id"].tolist())

    t = time.perf_counter()
    check_published_fit(model, family, test, targets, config)
    pred = model.predict(test, device=resolve_device(config.device))
    timings["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    subjects = test.events["subject"].to_numpy()
    results = {"mlp": {s: _score(config, pred[subjects == s], target_test[subjects == s]) for s in test.subjects}}
    timings["evaluate"] = time.perf_counter() - t

    record = _published_record(model, family, path, used)
    model.save_pretrained(out / "models" / "mlp")
    atomic_write_json(out / "models" / "mlp" / "published.json", record)
    metrics = _run_metrics(config, root, train, test, targets, results)
    metrics["published"] = {k: record[k] for k in ("family", "path", "sha256", "container")}
    metrics["published"]["options"] = _brief_options(record["options"])
    metrics["published"]["n_unused_tensors"] = len(record["unused"])

    t = time.perf_counter()
    report = _build_report(config, trials, test, {"mlp": pred}, results, target_test, None)
    report.title = (f"neurodecode evaluate — published {family} on {config.name} "
                    f"({'simulated ' if config.data.root is None else ''}{config.data.dataset.upper()})")
    report.add_html(_published_html(record), title=f"Published model: {family}", section="Published model",
                    caption="The checkpoint scored here, read weights-only by neurodecode.models.from_published "
                            "and saved as models/mlp (nothing was trained on this data).")
    report.save(out / "report.html")
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    metrics["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    _write_run_files(config, out, root, test, {"mlp": pred}, metrics, command="evaluate")
    if config.ablation.atlas is not None:
        logger.info("ablation.atlas is set: run `neurodecode ablate %s --model mlp` to ablate the published model",
                    out)
    logger.info("Done in %.1f s: %s", timings["total"], out / "report.html")
    return FitResult(out, metrics, timings)
