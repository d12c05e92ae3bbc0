"""Training checkpoints: atomic, resumable, and never pickled model weights.

A checkpoint is a folder ``<checkpoint_dir>/step-<global step, 9 digits>/``::

    model.safetensors      the model's weights (state_dict)
    best.safetensors       the best-validation weights so far (if any)
    ema.safetensors        the exponential moving average of the weights (if ``ema_decay``)
    loss.safetensors       the loss module's state (e.g. the learned temperature), if any
    training_state.pt      optimizer, LR scheduler and grad-scaler states, and every
                           torch.Generator state (shuffling, dropout): tensors and plain
                           Python values only, loaded back with ``torch.load(weights_only=True)``
                           (no arbitrary unpickling)
    trainer_state.json     epoch, step-in-epoch and global-step counters, history,
                           early-stopping state, the trainer's settings

The folder is written under a temporary name in the same directory and
renamed into place with :func:`os.replace`, so a process killed at any moment
leaves either the previous checkpoints or a complete new one, never a partial
one; only the newest ``keep_last`` are kept.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..utils import logger

STATE_NAME = "trainer_state.json"
TRAINING_STATE_NAME = "training_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders in ``checkpoint_dir``, oldest first (by global step)."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for path in checkpoint_dir.iterdir():
        m = _STEP_DIR.match(path.name)
        if m and path.is_dir() and (path / STATE_NAME).is_file():
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder in ``checkpoint_dir``, or None.

    Parameters
    ----------
    checkpoint_dir : str | Path
        A folder written by :func:`save_checkpoint` (e.g. ``<run_dir>/checkpoints``).

    Returns
    -------
    path : Path | None
    """
    found = list_checkpoints(checkpoint_dir)
    return found[-1] if found else None


def _state_dict_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors needs contiguous, non-aliased CPU tensors
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_checkpoint(checkpoint_dir: str | Path, step: int, *, weights: dict[str, dict[str, torch.Tensor]],
                    training_state: dict[str, Any], trainer_state: dict[str, Any],
                    keep_last: int | None = 3) -> Path:
    """Write one checkpoint folder atomically and prune old ones.

    Parameters
    ----------
    checkpoint_dir : str | Path
        Parent folder (created if needed).
    step : int
        Global optimizer step; names the folder ``step-<step>``.
    weights : dict
        File stem → tensor dict, each written as ``<stem>.safetensors``
        (e.g. ``{"model": model.state_dict(), "best": ...}``).
    training_state : dict
        Tensors and plain Python values only (optimizer / scheduler / scaler
        state dicts, generator states); written with :func:`torch.save`.
    trainer_state : dict
        JSON-serialisable counters, history and settings.
    keep_last : int | None
        Keep only this many newest checkpoints (None: keep all).

    Returns
    -------
    path : Path
        The checkpoint folder.
    """
    from safetensors.torch import save_file

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"step-{int(step):09d}"
    tmp = checkpoint_dir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for stem, tensors in weights.items():
            if tensors is not None:
                save_file(_state_dict_tensors(tensors), str(tmp / f"{stem}.safetensors"),
                          metadata={"format": "pt"})
        torch.save(training_state, tmp / TRAINING_STATE_NAME)
        (tmp / STATE_NAME).write_text(json.dumps(trainer_state, indent=1) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if final.exists():  # re-writing the same step (e.g. the final checkpoint after a resume)
            old = checkpoint_dir / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last is not None:
        for path in list_checkpoints(checkpoint_dir)[:-int(keep_last)]:
            shutil.rmtree(path, ignore_errors=True)
    logger.debug("Wrote checkpoint %s", final)
    return final


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any], dict[str, Any]]:
    """Read a checkpoint folder written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str | Path
        The ``step-*`` folder (see :func:`latest_checkpoint`).
    map_location : str | torch.device
        Where to load the tensors.

    Returns
    -------
    weights : dict
        File stem → tensor dict, for every ``*.safetensors`` in the folder.
    training_state : dict
        Optimizer / scheduler / scaler / generator states (``weights_only=True``).
    trainer_state : dict
        Counters, history and settings.
    """
    from safetensors.torch import load_file

    path = Path(path)
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_NAME}); "
                                "use latest_checkpoint(checkpoint_dir) to find one")
    trainer_state = json.loads(state_file.read_text())
    weights = {f.name[:-len(".safetensors")]: load_file(str(f), device=str(map_location))
               for f in sorted(path.glob("*.safetensors"))}
    training_state = torch.load(path / TRAINING_STATE_NAME, map_location=map_location, weights_only=True)
    return weights, training_state, trainer_state


def remove_stale_temporaries(checkpoint_dir: str | Path) -> None:
    """Delete ``.tmp-*`` / ``.old-*`` folders left by a process killed while writing."""
    checkpoint_dir = Path(checkpoint_dir)
    if checkpoint_dir.is_dir():
        for path in checkpoint_dir.iterdir():
            if path.is_dir() and path.name.startswith((".tmp-step-", ".old-step-")):
                shutil.rmtree(path, ignore_errors=True)
