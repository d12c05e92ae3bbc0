"""Share neurodecode models on the Hugging Face Hub: model cards, cache resolution, uploads.

A saved model is a folder the Hub accepts as a model repository: ``model.safetensors`` (weights),
``config.json`` (what rebuilds the model) and ``README.md``, a model card whose YAML front matter
(``library_name: neurodecode``, ``license``, ``tags``, ``datasets``, a ``model-index`` block with the
retrieval results and their confidence intervals) the Hub indexes, and whose body gives the recipe, the
data, the metrics table and how to load the model.

``from_pretrained("org/name")`` resolves a repo id through ``huggingface_hub``'s local cache, offline
unless the caller allows the download (and never while ``HF_HUB_OFFLINE`` is set); ``push_to_hub``
uploads a saved folder. Nothing here touches the network unless asked to.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..embeddings.hub import looks_like_repo_id
from ..utils import atomic_write_text, fill_doc, logger, verbose
from .pretrained import CONFIG_NAME, WEIGHTS_NAME

CARD_NAME = "README.md"

#: The keys a ``model_card`` dict may hold (see :func:`render_model_card`).
CARD_KEYS = ("name", "description", "license", "tags", "datasets", "recipe", "data", "results", "ci",
             "repo_id")

_TRUE = ("1", "true", "yes", "on")
_DATA_ROWS = (("dataset", "dataset"), ("modality", "modality"), ("simulated", "simulated data"),
              ("subjects", "test subjects"), ("scheme", "evaluation scheme"),
              ("n_train_trials", "training trials"), ("n_test_items", "test items per subject"),
              ("targets", "targets"))


def _check_card(card: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(card) - set(CARD_KEYS))
    if unknown:
        raise ValueError(f"model_card has unknown keys {unknown}; allowed: {list(CARD_KEYS)}")
    return dict(card)


def _metric_rows(entry: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(metric, label, {value, ci_low, ci_high, chance})`` of one subject's metrics.json entry."""
    metrics = entry.get("metrics", entry)
    labels = entry.get("labels", {}) if "metrics" in entry else {}
    return [(name, labels.get(name, name), m) for name, m in metrics.items()
            if isinstance(m, Mapping) and isinstance(m.get("value"), (int, float))]


def _model_index(name: str, card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Hub's ``model-index`` block: one result per test subject, CIs and chance in each metric's args."""
    data = card.get("data") or {}
    dataset = str(data.get("dataset") or "unknown")
    targets = data.get("targets")
    task = {"type": "brain-decoding",
            "name": "Brain-to-stimulus retrieval" + (f" ({targets} targets)" if targets else "")}
    level = card.get("ci")
    results = []
    for subject, entry in (card.get("results") or {}).items():
        metrics = []
        for metric, label, m in _metric_rows(entry):
            if not math.isfinite(m["value"]):  # the Hub's metadata is JSON: no NaN
                continue
            args = {k: m[k] for k in ("ci_low", "ci_high", "chance")
                    if isinstance(m.get(k), (int, float)) and math.isfinite(m[k])}
            if level is not None and "ci_low" in args:
                args["ci_level"] = level
            metrics.append({"type": metric, "name": label, "value": m["value"],
                            **({"args": args} if args else {})})
        if metrics:
            results.append({"task": dict(task),
                            "dataset": {"type": dataset, "name": f"{dataset} ({subject}, test split)",
                                        "config": str(subject), "split": "test"},
                            "metrics": metrics})
    return [{"name": name, "results": results}] if results else []


def _front_matter(name: str, class_name: str, card: Mapping[str, Any]) -> dict[str, Any]:
    data = card.get("data") or {}
    tags = ["neurodecode", "brain-decoding", class_name]
    for extra in (data.get("modality"), "simulated-data" if data.get("simulated") else None,
                  *(card.get("tags") or ())):
        if extra and str(extra) not in tags:
            tags.append(str(extra))
    meta: dict[str, Any] = {"library_name": "neurodecode", "license": card.get("license") or "other",
                            "tags": tags}
    datasets = card.get("datasets")
    if datasets is None and data.get("dataset") and not data.get("simulated"):
        datasets = [data["dataset"]]
    if datasets:
        meta["datasets"] = [str(d) for d in datasets]
    index = _model_index(name, card)
    if index:
        meta["model-index"] = index
    return meta


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _results_section(card: Mapping[str, Any]) -> list[str]:
    level = card.get("ci")
    ci_head = f"{round(100 * level)}% CI" if isinstance(level, (int, float)) else "CI"
    lines = ["## Results", ""]
    if not card.get("results"):
        return [*lines, "No evaluation was recorded with this model.", ""]
    lines += [("Test-set retrieval, scored by `neurodecode` (bootstrap confidence intervals over test items; "
               "chance is the expected score of a random decoder)."), ""]
    for subject, entry in card["results"].items():
        lines += [f"### {subject}", "", f"| metric | value | {ci_head} | chance |", "| --- | --- | --- | --- |"]
        for _, label, m in _metric_rows(entry):
            ci = (f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
                  if m.get("ci_low") is not None and m.get("ci_high") is not None else "n/a")
            chance = _fmt(m["chance"]) if m.get("chance") is not None else "n/a"
            lines.append(f"| {label} | {_fmt(m['value'])} | {ci} | {chance} |")
        lines.append("")
    return lines


def _body(name: str, class_name: str, summary: str, card: Mapping[str, Any]) -> list[str]:
    lines = [f"# {name}", "", card.get("description") or summary, ""]
    if card.get("description"):
        lines += [summary, ""]
    lines += ["## Recipe", ""]
    recipe = card.get("recipe")
    if recipe:
        text = recipe if isinstance(recipe, str) else yaml.safe_dump(recipe, sort_keys=False,
                                                                      allow_unicode=True)
        lines += [("The resolved run config it was trained with (saved as `config.yaml`, "
                   "`neurodecode fit config.yaml` reruns it):"), "", "```yaml", text.rstrip("\n"), "```", ""]
    else:
        lines += ["Not recorded: the model was saved from Python, not exported from a `neurodecode fit` run.", ""]
    lines += ["## Data", ""]
    data = card.get("data") or {}
    rows = [(label, _fmt(data[key])) for key, label in _DATA_ROWS if data.get(key) is not None]
    lines += (["| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows], ""] if rows
              else ["Not recorded.", ""])
    lines += _results_section(card)
    repo = card.get("repo_id") or "org/name"
    lines += ["## How to load", "", "```python", f"from neurodecode.models import {class_name}", "",
              f'model = {class_name}.from_pretrained("{repo}")  # offline: from the local Hugging Face cache',
              f'model = {class_name}.from_pretrained("{repo}", allow_download=True)  # may download it', "```",
              "", (f"Files: `{WEIGHTS_NAME}` (weights, safetensors), `{CONFIG_NAME}` (what rebuilds the model), "
                   f"`{CARD_NAME}` (this card). Written by neurodecode {_version()}."), ""]
    return lines


def _version() -> str:
    from .. import __version__

    return __version__


def render_model_card(class_name: str, *, summary: str = "", card: Mapping[str, Any] | None = None) -> str:
    """The text of a model card (``README.md``): YAML front matter the Hub accepts, then the body.

    Parameters
    ----------
    class_name : str
        The model's class (``"BrainDecoder"``, ``"RidgeDecoder"``), used in the tags and the loading snippet.
    summary : str
        One paragraph saying what the model is (its architecture).
    card : mapping | None
        What is known about the model, every key optional: ``name`` (the title and the model-index name),
        ``description``, ``license`` (a Hub license id; default ``"other"``), ``tags``, ``datasets`` (Hub
        dataset ids), ``recipe`` (the resolved config, a dict or YAML text), ``data`` (``dataset``,
        ``modality``, ``subjects``, ``n_train_trials``, ``n_test_items``, ``simulated``, ``scheme``,
        ``targets``: the fields of ``metrics.json``), ``results`` (subject → that subject's entry of
        ``metrics.json["models"][model]``: ``{"metrics": {name: {value, ci_low, ci_high, chance}},
        "labels": {...}}``), ``ci`` (the CI level, e.g. 0.95) and ``repo_id`` (for the loading snippet).
        None: a minimal card.

    Returns
    -------
    text : str
        The model card, ``---``-delimited YAML front matter followed by Markdown.
    """
    card = _check_card(card or {})
    name = str(card.get("name") or card.get("repo_id") or f"neurodecode {class_name}")
    meta = _front_matter(name, class_name, card)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return "\n".join(["---", front.rstrip("\n"), "---", "", *_body(name, class_name, summary, card)])


def write_model_card(folder: str | Path, class_name: str, *, summary: str = "",
                     model_card: Mapping[str, Any] | str | bool | None = None) -> Path | None:
    """Write ``README.md`` into a saved model's folder (atomically).

    Parameters
    ----------
    folder : str | Path
        The model folder.
    class_name : str
        The model's class.
    summary : str
        What the model is, one paragraph.
    model_card : mapping | str | False | None
        A mapping of :data:`CARD_KEYS` (see :func:`render_model_card`), the card's full text (written as
        given), ``False`` (no card) or None (a minimal card).

    Returns
    -------
    path : Path | None
        The card written, or None with ``model_card=False``.
    """
    if model_card is False:
        return None
    if isinstance(model_card, str):
        text = model_card
    elif model_card is None or isinstance(model_card, Mapping):
        text = render_model_card(class_name, summary=summary, card=model_card)
    else:
        raise TypeError(f"model_card must be a dict, the card's text, False or None, got {type(model_card)}")
    return atomic_write_text(Path(folder) / CARD_NAME, text)


def offline_mode() -> bool:
    """Whether Hugging Face offline mode is on: ``HF_HUB_OFFLINE``, at huggingface_hub's import or now.

    Returns
    -------
    offline : bool
        True when huggingface_hub read a true ``HF_HUB_OFFLINE`` at import, or the environment holds one now.
    """
    try:
        from huggingface_hub import constants

        if constants.is_offline_mode():
            return True
    except ImportError:  # pragma: no cover - huggingface_hub comes with accelerate
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _hf_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _import_hub(what: str) -> Any:
    try:
        import huggingface_hub
    except ImportError as err:  # pragma: no cover - huggingface_hub comes with accelerate
        raise ImportError(f"{what} needs huggingface_hub: pip install huggingface_hub") from err
    return huggingface_hub


def resolve_pretrained(name_or_path: str | Path, *, class_name: str, revision: str | None = None,
                       allow_download: bool = False, token: str | bool | None = None) -> Path:
    """The local folder of a saved model: a folder as given, or a Hub repo id resolved through the HF cache.

    Parameters
    ----------
    name_or_path : str | Path
        A folder holding ``config.json`` and ``model.safetensors``, or a Hugging Face repo id
        (``"org/name"``, optionally ``"hf-hub:org/name"``).
    class_name : str
        The class being loaded, for messages.
    revision : str | None
        A branch, tag or commit of the repo (default: ``main``).
    allow_download : bool
        False (default): only the local Hugging Face cache is read. True: a repo missing from the cache
        is downloaded, unless ``HF_HUB_OFFLINE`` is set.
    token : str | bool | None
        A Hugging Face token for private repos (None: the stored login, if any).

    Returns
    -------
    folder : Path
        The folder to read (the cached snapshot for a repo id).

    Raises
    ------
    FileNotFoundError
        A repo id that is not in the cache (offline), naming the repo, the cache and how to allow the
        download or where to put the folder.
    """
    if not looks_like_repo_id(name_or_path):
        return Path(name_or_path)
    repo_id = str(name_or_path).removeprefix("hf-hub:")
    hub = _import_hub(f"Loading {class_name} {repo_id!r} from the Hugging Face Hub")
    offline = not allow_download or offline_mode()
    try:
        folder = Path(hub.snapshot_download(repo_id, revision=revision, local_files_only=offline, token=token,
                                            library_name="neurodecode", library_version=_version()))
    except Exception as err:  # LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError, ...
        raise FileNotFoundError(_not_found(repo_id, class_name, revision, allow_download, err)) from err
    logger.info("Resolved %s to %s", repo_id, folder)
    return folder


def _not_found(repo_id: str, class_name: str, revision: str | None, allow_download: bool, err: Exception) -> str:
    rev = f" (revision {revision!r})" if revision else ""
    where = (f"No folder {repo_id!r} exists and the Hugging Face repo {repo_id!r}{rev} is not in the local "
             f"Hugging Face cache {_hf_cache()} (set HF_HUB_CACHE or HF_HOME to use another cache).")
    if allow_download and not offline_mode():
        return f"{where} Downloading it failed: {type(err).__name__}: {err}"
    fix = (f" Allow the download with {class_name}.from_pretrained({repo_id!r}, allow_download=True)"
           + (" and unset HF_HUB_OFFLINE (it is set, so nothing is downloaded)" if offline_mode() else "")
           + f", or download it where there is network (`hf download {repo_id}`) and copy the cache folder "
           f"over, or pass the path of a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}.")
    return where + fix


def check_online(repo_id: str, folder: str | Path | None = None) -> None:
    """Raise ``OSError`` saying how to push when Hugging Face offline mode is on.

    Parameters
    ----------
    repo_id : str
        The repo to push to, for the message.
    folder : str | Path | None
        The folder to upload, for the ``hf upload`` hint.

    Raises
    ------
    OSError
        When offline mode is on.
    """
    if offline_mode():
        raise OSError(f"Cannot push to {repo_id!r}: Hugging Face offline mode is on (HF_HUB_OFFLINE is set; the "
                      "neurodecode command sets it unless you do). Rerun with HF_HUB_OFFLINE=0, or upload the "
                      f"folder yourself: hf upload {repo_id} {folder or 'FOLDER'}")


@verbose
@fill_doc
def upload_pretrained(folder: str | Path, repo_id: str, *, private: bool | None = None,
                      token: str | bool | None = None, commit_message: str | None = None,
                      revision: str | None = None, verbose: bool | str | int | None = None) -> str:
    """Upload a saved model folder to a Hugging Face Hub model repo (created if missing).

    Parameters
    ----------
    folder : str | Path
        A folder written by ``save_pretrained`` (``model.safetensors``, ``config.json``, ``README.md``).
    repo_id : str
        The repo, ``"org/name"``.
    private : bool | None
        Whether a newly created repo is private (None: the Hub's default). An existing repo is unchanged.
    token : str | bool | None
        A Hugging Face token with write access (None: the stored login).
    commit_message : str | None
        The commit message (default ``"Upload <class> with neurodecode"``).
    revision : str | None
        The branch to push to (default: ``main``).
    %(verbose)s

    Returns
    -------
    url : str
        The URL of the commit.
    """
    folder = Path(folder)
    hub = _import_hub(f"Pushing to {repo_id!r}")
    check_online(repo_id, folder)
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    message = commit_message or f"Upload {_class_of(folder)} with neurodecode"
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message,
                             repo_type="model", revision=revision)
    url = str(getattr(info, "commit_url", info))
    logger.info("Pushed %s to %s: %s", folder, repo_id, url)
    return url


def _class_of(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / CONFIG_NAME).read_text()).get("class", "model"))
    except (OSError, ValueError):
        return "model"


class HubMixin:
    """Adds :meth:`push_to_hub` to a model with ``save_pretrained(folder, *, model_card=...)``."""

    @verbose
    @fill_doc
    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
                    commit_message: str | None = None, revision: str | None = None,
                    model_card: Mapping[str, Any] | str | None = None,
                    verbose: bool | str | int | None = None) -> str:
        """Save the model into a temporary folder and upload it to the Hub repo ``repo_id``.

        Parameters
        ----------
        repo_id : str
            The repo, ``"org/name"`` (created if missing).
        private : bool | None
            Whether a newly created repo is private (None: the Hub's default).
        token : str | bool | None
            A Hugging Face token with write access (None: the stored login).
        commit_message : str | None
            The commit message (default ``"Upload <class> with neurodecode"``).
        revision : str | None
            The branch to push to (default: ``main``).
        model_card : mapping | str | None
            As in ``save_pretrained``; ``repo_id`` is filled in for the loading snippet.
        %(verbose)s

        Returns
        -------
        url : str
            The URL of the commit.
        """
        if isinstance(model_card, Mapping) or model_card is None:
            model_card = {"repo_id": repo_id, **(model_card or {})}
        check_online(repo_id)
        with tempfile.TemporaryDirectory(prefix="neurodecode-push-") as tmp:
            self.save_pretrained(tmp, model_card=model_card)
            return upload_pretrained(tmp, repo_id, private=private, token=token, commit_message=commit_message,
                                     revision=revision)


__all__ = ["CARD_KEYS", "CARD_NAME", "HubMixin", "check_online", "offline_mode", "render_model_card",
           "resolve_pretrained", "upload_pretrained", "write_model_card"]
