"""``neurodecode export``: a fitted run's decoder as a folder the Hugging Face Hub accepts.

:func:`export_run` writes ``model.safetensors``, ``config.json`` and a ``README.md`` model card holding what
the run folder knows: the recipe (``config.yaml``), the data (dataset, subjects, trial counts) and the
retrieval metrics of ``metrics.json`` with their confidence intervals and chance levels; optionally it
pushes the folder to a Hub repo.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..utils import fill_doc, logger, verbose

_DATA_KEYS = ("dataset", "modality", "simulated", "subjects", "scheme", "n_train_trials", "n_test_items",
              "targets")


def _model_folder(run_dir: Path, model: str) -> Path:
    folder = run_dir / "models" / model
    if (folder / "config.json").is_file():
        return folder
    models = run_dir / "models"
    found = sorted(str(p.parent.relative_to(models)) for p in models.rglob("config.json"))
    raise FileNotFoundError(f"{folder} holds no saved model: model={model!r} is not in the run {run_dir}. "
                            f"Its models: {found or 'none'} (pass one of them as model=, e.g. "
                            "'loso-subj01/mlp' for one fold of a leave-one-subject-out run).")


def _read_run(run_dir: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(config.yaml text, parsed config, metrics.json)`` of a finished run."""
    cfg_path, metrics_path = run_dir / "config.yaml", run_dir / "metrics.json"
    for path in (cfg_path, metrics_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: RUN must be a finished run folder written by "
                                    "`neurodecode fit` (config.yaml and metrics.json).")
    config = yaml.safe_load(cfg_path.read_text()) or {}
    text = yaml.safe_dump(_redact_paths(config), sort_keys=False, allow_unicode=True)
    return text, config, json.loads(metrics_path.read_text())


#: What a local path of the user's machine becomes in a published model card.
REDACTED = "<local path>"


def _redact_paths(value: Any) -> Any:
    """``value`` with every absolute or home-relative path replaced by :data:`REDACTED` (cards are public)."""
    if isinstance(value, dict):
        return {k: _redact_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_paths(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", value)):
        return REDACTED
    return value


def model_card_from_run(run_dir: str | Path, *, model: str = "mlp", name: str | None = None,
                   license: str | None = None, tags: Sequence[str] | None = None,
                   repo_id: str | None = None) -> dict[str, Any]:
    """The model-card fields of one decoder of a fitted run (for ``save_pretrained(model_card=...)``).

    Parameters
    ----------
    run_dir : str | Path
        A run folder written by ``neurodecode fit`` (``config.yaml``, ``metrics.json``, ``models/``).
    model : str
        The decoder: ``"mlp"`` or ``"ridge"`` (a folder under ``models/``; ``"loso-subj01/mlp"`` for one fold
        of a leave-one-subject-out run, whose card then holds that subject's results only).
    name : str | None
        The card's title and model-index name (default: ``<run name>-<model>``, or ``repo_id``).
    license : str | None
        A Hub license id (default ``"other"``: the training data's terms apply).
    tags : sequence of str | None
        Extra Hub tags.
    repo_id : str | None
        The Hub repo the model goes to, for the loading snippet.

    Returns
    -------
    card : dict
        ``name``, ``description``, ``recipe`` (the text of ``config.yaml``), ``data``, ``results``
        (``metrics.json``'s entries for this model, per subject, unchanged), ``ci`` and the given fields.
    """
    run_dir = Path(run_dir)
    recipe, config, metrics = _read_run(run_dir)
    _model_folder(run_dir, model)
    key = model.rsplit("/", 1)[-1]
    results = dict((metrics.get("models") or {}).get(key) or {})
    fold = model.split("/", 1)[0] if "/" in model else ""
    if fold.startswith("loso-"):
        results = {s: v for s, v in results.items() if s == fold.removeprefix("loso-")}
    data = {k: metrics[k] for k in _DATA_KEYS if metrics.get(k) is not None}
    run_name = config.get("name") or run_dir.name
    card: dict[str, Any] = {
        "name": name or repo_id or f"{run_name}-{model.replace('/', '-')}",
        "description": f"The `{model}` decoder of the `neurodecode fit` run `{run_name}` "
                       f"({data.get('dataset', 'unknown dataset')}, {data.get('modality', 'unknown modality')}"
                       f"{', simulated data' if data.get('simulated') else ''}).",
        "recipe": recipe, "data": data, "results": results,
        "ci": (config.get("evaluation") or {}).get("ci"),
    }
    for field, value in (("license", license), ("tags", list(tags) if tags else None), ("repo_id", repo_id)):
        if value is not None:
            card[field] = value
    return card


@verbose
@fill_doc
def export_run(run_dir: str | Path, out_dir: str | Path, *, model: str = "mlp", name: str | None = None,
               license: str | None = None, tags: Sequence[str] | None = None, push_to_hub: str | None = None,
               private: bool | None = None, token: str | bool | None = None, overwrite: bool = False,
               verbose: bool | str | int | None = None) -> Path:
    """Write one decoder of a fitted run as a Hugging Face Hub model folder; optionally push it.

    Parameters
    ----------
    run_dir : str | Path
        A run folder written by ``neurodecode fit``.
    out_dir : str | Path
        The folder to write (``model.safetensors``, ``config.json``, ``README.md``).
    model : str
        ``"mlp"`` or ``"ridge"``, or a folder under the run's ``models/`` (``"loso-subj01/mlp"``).
    name : str | None
        The model card's title (default: ``<run name>-<model>``, or the repo id when pushing).
    license : str | None
        A Hub license id for the card (default ``"other"``).
    tags : sequence of str | None
        Extra Hub tags.
    push_to_hub : str | None
        A repo id (``"org/name"``): upload the folder there (created if missing; needs network and a login).
    private : bool | None
        With ``push_to_hub``: whether a newly created repo is private.
    token : str | bool | None
        With ``push_to_hub``: a Hugging Face token with write access (None: the stored login).
    overwrite : bool
        Replace the files of an existing, non-empty ``out_dir`` (default: refuse).
    %(verbose)s

    Returns
    -------
    out_dir : Path
        The folder written.
    """
    from ..models import BrainDecoder, RidgeDecoder
    from ..models.hub import check_online, upload_pretrained

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if push_to_hub:
        check_online(push_to_hub, out_dir)  # before anything is written
    card = model_card_from_run(run_dir, model=model, name=name, license=license, tags=tags, repo_id=push_to_hub)
    folder = _model_folder(run_dir, model)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another folder or pass overwrite=True "
                              "(--overwrite).")
    cls_name = json.loads((folder / "config.json").read_text()).get("class")
    classes = {"BrainDecoder": BrainDecoder, "RidgeDecoder": RidgeDecoder}
    if cls_name not in classes:
        raise ValueError(f"{folder} holds a {cls_name!r}; export handles {sorted(classes)}.")
    estimator = classes[cls_name].from_pretrained(folder)
    out = estimator.save_pretrained(out_dir, model_card=card)
    logger.info("Exported %s of %s to %s", model, run_dir, out)
    if push_to_hub:
        upload_pretrained(out, push_to_hub, private=private, token=token,
                          commit_message=f"Upload the {model} decoder of run {run_dir.name} with neurodecode")
    return out
