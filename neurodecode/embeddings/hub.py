"""Find pretrained weights on the local disk only: a file, a folder, or the Hugging Face cache.

Nothing here ever downloads. A Hugging Face repo id is resolved with
``local_files_only=True`` against the local HF cache (``HF_HUB_CACHE`` /
``HF_HOME``), so ``HF_HUB_OFFLINE`` and a missing network make no difference.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

_REPO_ID = re.compile(r"^(hf-hub:)?[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def _hf_cache_dir() -> Path:
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip/transformers
        home = os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")
        return Path(os.environ.get("HF_HUB_CACHE", Path(home) / "hub"))


def looks_like_repo_id(weights: str | Path) -> bool:
    """True for ``"org/name"`` or ``"hf-hub:org/name"`` strings that are not existing paths.

    Parameters
    ----------
    weights : str | Path
        A ``weights=`` value: a Hugging Face repo id or a local path.

    Returns
    -------
    is_repo_id : bool
        Whether ``weights`` is a string shaped like a repo id that names no existing path.
    """
    return isinstance(weights, str) and not Path(weights).expanduser().exists() \
        and bool(_REPO_ID.match(weights))


def resolve_hf_snapshot(repo_id: str, *, what: str, needs: Sequence[str]) -> Path:
    """Return the local snapshot folder of ``repo_id`` in the HF cache (never downloads).

    Parameters
    ----------
    repo_id : str
        ``"org/name"`` (a leading ``hf-hub:`` is dropped).
    what : str
        What the weights are for, used in error messages.
    needs : sequence of str
        File names of which at least one must be in the snapshot (e.g. the
        weight files); used to check the snapshot and in the error message.

    Returns
    -------
    folder : Path
        The snapshot folder in the local Hugging Face cache.

    Raises
    ------
    FileNotFoundError
        Naming the HF cache folder searched and how to fill it.
    """
    repo_id = repo_id.removeprefix("hf-hub:")
    cache = _hf_cache_dir()
    expected = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "<revision>"
    fix = (f"Download it on a machine with network access (`hf download {repo_id}` or "
           f"`huggingface-cli download {repo_id}`) and copy the cache folder over, or pass weights= the "
           f"path of a local file/folder. Looked for one of {list(needs)} in {expected} "
           f"(HF cache: {cache}; set HF_HUB_CACHE or HF_HOME to use another cache).")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover
        raise ImportError(f"Resolving {what} weights from the Hugging Face cache needs huggingface_hub: "
                          "pip install huggingface_hub") from err
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as err:  # LocalEntryNotFoundError, HFValidationError, ...
        raise FileNotFoundError(f"{what} weights {repo_id!r} are not in the local Hugging Face cache. {fix}") \
            from err
    if not any((folder / n).is_file() for n in needs):
        raise FileNotFoundError(f"The cached snapshot {folder} of {repo_id!r} holds none of the {what} weight "
                                f"files. {fix}")
    return folder
