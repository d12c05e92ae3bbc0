"""One on-disk format for every model: ``model.safetensors`` + ``config.json`` (never pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..utils import atomic_path, atomic_write_json, check_path, logger

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def write_pretrained(folder: str | Path, tensors: dict[str, Any], config: dict[str, Any], *,
                     class_name: str) -> Path:
    """Write ``tensors`` (all torch or all numpy) and ``config`` to ``folder``, atomically.

    ``config.json`` holds ``{"class", "neurodecode_version", **config}``; the
    weights file is replaced only once it is completely written.

    Parameters
    ----------
    folder : str | Path
        The output folder (created if needed).
    tensors : dict of str → Tensor | array
        The weights, all torch tensors or all numpy arrays (saved with safetensors).
    config : dict
        JSON-serialisable settings, written to ``config.json``.
    class_name : str
        The class that wrote the folder, stored in ``config.json`` and the weights' metadata.

    Returns
    -------
    folder : Path
        The folder written.
    """
    from .. import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    is_torch = any(type(v).__module__.startswith("torch") for v in tensors.values())
    if is_torch:
        from safetensors.torch import save_file
    else:
        from safetensors.numpy import save_file
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt" if is_torch else "np", "class": class_name})
    atomic_write_json(folder / CONFIG_NAME, {"class": class_name, "neurodecode_version": __version__, **config})
    logger.info("Saved %s to %s", class_name, folder)
    return folder


def read_pretrained(folder: str | Path, *, class_name: str, framework: str = "pt",
                    device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a folder written by :func:`write_pretrained`; return ``(config, tensors)``.

    Raises a clear error naming the file when the folder, the config or the
    weights are missing, unreadable, or belong to another class.

    Parameters
    ----------
    folder : str | Path
        A folder written by :func:`write_pretrained`.
    class_name : str
        The class expected in ``config.json``.
    framework : str
        ``"pt"``: torch tensors; anything else: numpy arrays.
    device : str
        Where torch tensors are loaded (``framework="pt"`` only).

    Returns
    -------
    config : dict
        The content of ``config.json`` (including ``"class"`` and ``"neurodecode_version"``).
    tensors : dict of str → Tensor | array
        The weights.
    """
    hint = f"Write it with {class_name}.save_pretrained(folder)"
    folder = check_path(folder, what=f"{class_name} folder", kind="dir", hint=hint)
    cfg_path = check_path(folder / CONFIG_NAME, what=CONFIG_NAME, kind="file", hint=hint)
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_path} is not valid JSON ({err}); the saved model is corrupt.") from err
    if config.get("class") != class_name:
        raise ValueError(f"{folder} holds a {config.get('class')!r}, not a {class_name}")
    weights = check_path(folder / WEIGHTS_NAME, what=WEIGHTS_NAME, kind="file", hint=hint)
    try:
        if framework == "pt":
            from safetensors.torch import load_file

            tensors = load_file(str(weights), device=str(device))
        else:
            from safetensors.numpy import load_file

            tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types
        raise OSError(f"Cannot read {weights}: {err}. The file is truncated or not a safetensors "
                      "file; save the model again.") from err
    return config, tensors
