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
one; only the newest ``keep_last`` are kept. An old checkpoint is renamed to a
temporary name before it is deleted, so a half-deleted folder is never taken
for a checkpoint. A checkpoint that cannot be read (a truncated file, or a
``training_state.pt`` refused by the safe loader) raises
:class:`CheckpointError`; :func:`load_latest_checkpoint` then falls back to the
previous complete one with a warning.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..utils import logger

STATE_NAME = "trainer_state.json"
TRAINING_STATE_NAME = "training_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")
#: What a checkpoint must hold to be resumed from (besides ``model.safetensors``).
_TRAINER_KEYS = ("epoch", "batch_in_epoch", "global_step", "finished", "history", "best_epoch", "best_val",
                 "since_best", "epoch_loss_total", "epoch_loss_count", "settings")
_TRAINING_KEYS = ("optimizer", "scheduler", "epoch_generator", "dropout_generators")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, unsafe, or written for other data or settings."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders in ``checkpoint_dir``, oldest first (by global step).

    Parameters
    ----------
    checkpoint_dir : str | Path
        A folder written by :func:`save_checkpoint` (e.g. ``<run_dir>/checkpoints``).

    Returns
    -------
    paths : list of Path
        The ``step-N`` folders holding a trainer state file (empty when the folder
        does not exist).
    """
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
            # renamed first: a process killed while deleting leaves a stale .old-* folder, not a
            # half-deleted step-* folder that would look like a checkpoint
            trash = checkpoint_dir / f".old-{path.name}-{os.getpid()}"
            try:
                os.replace(path, trash)
            except OSError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
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
    try:
        trainer_state = json.loads(state_file.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"The checkpoint {path} is damaged: {STATE_NAME} cannot be read "
                              f"({_first_line(err)})") from None
    weights = {}
    for f in sorted(path.glob("*.safetensors")):
        try:
            weights[f.name[:-len(".safetensors")]] = load_file(str(f), device=str(map_location))
        except Exception as err:  # noqa: BLE001 (safetensors raises its own types on truncated files)
            raise CheckpointError(f"The checkpoint {path} is damaged: {f.name} cannot be read (truncated or "
                                  f"corrupt: {_first_line(err)})") from None
    state_path = path / TRAINING_STATE_NAME
    try:
        training_state = torch.load(state_path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, i.e. running whatever the file holds: never
        raise CheckpointError(f"The checkpoint {path} is unusable: {TRAINING_STATE_NAME} was refused by the "
                              "safe loader (it is damaged, or it holds objects other than tensors and plain "
                              "Python values, which neurodecode never unpickles)") from None
    except Exception as err:  # noqa: BLE001 (a damaged zip raises RuntimeError, EOFError, OSError, ...)
        raise CheckpointError(f"The checkpoint {path} is damaged: {TRAINING_STATE_NAME} cannot be read "
                              f"(truncated or corrupt: {_first_line(err)})") from None
    return weights, training_state, trainer_state


def load_latest_checkpoint(checkpoint_dir: str | Path, *, map_location: str | torch.device = "cpu"
                           ) -> tuple[Path | None, Any]:
    """The newest checkpoint of ``checkpoint_dir`` that can be resumed from, loaded.

    A damaged checkpoint (a truncated file, a ``training_state.pt`` the safe
    loader refuses, missing entries) is skipped with a warning naming it, and
    the previous complete one is used.

    Parameters
    ----------
    checkpoint_dir : str | Path
        A folder written by :func:`save_checkpoint`.
    map_location : str | torch.device
        Where to load the tensors.

    Returns
    -------
    path : Path | None
        The checkpoint used (None: the folder holds no checkpoint).
    loaded : tuple | None
        ``(weights, training_state, trainer_state)`` as :func:`load_checkpoint` returns.

    Raises
    ------
    CheckpointError
        Every checkpoint in the folder is damaged.
    """
    found = list_checkpoints(checkpoint_dir)
    problems: list[str] = []
    for path in reversed(found):
        try:
            loaded = load_checkpoint(path, map_location=map_location)
            _check_complete(path, *loaded)
        except CheckpointError as err:
            problems.append(str(err))
            logger.warning("%s; falling back to the previous checkpoint.", err)
            continue
        if problems:
            logger.warning("Resuming from %s, the newest complete checkpoint.", path)
        return path, loaded
    if problems:
        raise CheckpointError(f"No usable checkpoint in {checkpoint_dir}: {'; '.join(problems)}. Remove "
                              f"{checkpoint_dir} to train from the start.")
    return None, None


def _check_complete(path: Path, weights: dict, training_state: Any, trainer_state: Any) -> None:
    missing = [] if "model" in weights else ["model.safetensors"]
    if not isinstance(trainer_state, dict):
        missing.append(STATE_NAME)
    else:
        missing += [f"{STATE_NAME}:{k}" for k in _TRAINER_KEYS if k not in trainer_state]
    if not isinstance(training_state, dict):
        missing.append(TRAINING_STATE_NAME)
    else:
        missing += [f"{TRAINING_STATE_NAME}:{k}" for k in _TRAINING_KEYS if k not in training_state]
    if missing:
        raise CheckpointError(f"The checkpoint {path} is damaged: it lacks {', '.join(missing)}")


def remove_stale_temporaries(checkpoint_dir: str | Path) -> None:
    """Delete what a process killed while writing or pruning checkpoints left behind.

    ``.tmp-*`` / ``.old-*`` folders and ``step-*`` folders without
    ``trainer_state.json`` (half-written or half-deleted). Call it only while
    no other process writes ``checkpoint_dir`` (the :class:`~neurodecode.training.Trainer`
    holds the folder's lock when it does).

    Parameters
    ----------
    checkpoint_dir : str | Path
        The checkpoint folder; nothing happens if it does not exist.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return
    for path in checkpoint_dir.iterdir():
        if not path.is_dir() or path.is_symlink():
            continue
        stale = path.name.startswith((".tmp-step-", ".old-step-")) or (
            _STEP_DIR.match(path.name) is not None and not (path / STATE_NAME).is_file())
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            logger.info("Removed %s, left by a process killed while writing checkpoints", path)
