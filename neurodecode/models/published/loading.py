"""Read a published checkpoint's tensors without running any of its code.

``torch.load(path, map_location="cpu", weights_only=True)`` for torch files (safetensors files through
safetensors), then the known containers are unwrapped down to one flat ``name → tensor`` dict:

==========================================  ========================================================
container                                   what is kept
==========================================  ========================================================
a bare state dict                           itself
``{"model_state_dict": …, …}``              ``model_state_dict`` (MindEye, MindBridge)
``{"best_state": …, "all_models": …, …}``   ``best_state``, else ``all_models`` (brainmagick / Dora)
``{"state_dict" | "model" | "state": …}``   the inner dict
==========================================  ========================================================

A file whose pickle names globals that ``weights_only`` refuses (a Dora checkpoint's OmegaConf config,
brainmagick's pickled ``BatchScaler``, DeepSpeed objects) is read only when every such global is in the
``allowed_globals`` the caller expects for that family: each is then mapped to an inert placeholder
(:class:`OpaqueObject`, which stores what the pickle gives it and runs nothing), through
``torch.serialization.safe_globals``. Any other global — a class or function the caller did not expect — is
refused with a ``ValueError`` naming it; a torch too old for placeholders gives a clear error too.
"""

from __future__ import annotations

import collections
import fnmatch
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ...utils import check_path, logger

__all__ = ["CONTAINER_KEYS", "OpaqueObject", "read_checkpoint", "unwrap_state_dict"]

#: Keys of the known checkpoint containers, in the order they are tried.
CONTAINER_KEYS: tuple[str, ...] = ("model_state_dict", "best_state", "all_models", "state_dict", "model",
                                   "state")


class OpaqueObject:
    """Inert stand-in for an object a checkpoint pickled (a config, a scaler): accepts and stores anything.

    Parameters
    ----------
    *args, **kwargs
        Whatever the pickle passes; stored in ``args`` / ``kwargs``, never interpreted.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> OpaqueObject:
        return OpaqueObject(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return OpaqueObject()

    def __repr__(self) -> str:
        return "OpaqueObject()"


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap_state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], str]:
    """The flat ``name → tensor`` dict inside a loaded checkpoint, and where it was found.

    Parameters
    ----------
    obj : dict
        What ``torch.load`` returned: a state dict or one of the containers of :data:`CONTAINER_KEYS`.

    Returns
    -------
    state : dict of str → Tensor
        The tensors (float16 / bfloat16 ones cast to float32).
    where : str
        ``"<bare>"`` or the container key used (``"best_state"``).

    Raises
    ------
    ValueError
        When no container key holds a dict of tensors; the message lists the top-level keys.
    """
    if _is_tensor_dict(obj):
        state, where = obj, "<bare>"
    else:
        where = next((k for k in CONTAINER_KEYS if isinstance(obj, Mapping) and _is_tensor_dict(obj.get(k))),
                     None)
        if where is None:
            keys = list(obj)[:20] if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(f"no state dict found in the checkpoint: expected a dict of tensors or one "
                             f"under {list(CONTAINER_KEYS)}; top-level content: {keys}")
        state = obj[where]
    out = {}
    for name, t in state.items():
        t = t.detach()
        out[name] = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
    return out, where


def _plain_dict(*args: Any, **kwargs: Any) -> dict:
    """``defaultdict(factory)`` read as a plain dict (weights_only fills only real dicts)."""
    return {}


#: Plain containers a pickle may name (``defaultdict(list)``): read as the real, inert types.
_CONTAINER_GLOBALS: dict[str, Any] = {"builtins.list": list, "builtins.dict": dict, "builtins.set": set,
                                      "builtins.tuple": tuple, "builtins.frozenset": frozenset,
                                      "collections.defaultdict": _plain_dict,
                                      "collections.OrderedDict": collections.OrderedDict}


def _unsafe_globals(path: Path) -> list[str]:
    getter = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if getter is None or not hasattr(torch.serialization, "safe_globals"):
        raise ValueError(f"{path} pickles objects other than tensors, which torch.load(weights_only=True) "
                         f"refuses; reading it without running their code needs torch >= 2.5 "
                         f"(torch.serialization.safe_globals), installed: {torch.__version__}. Upgrade "
                         "torch, or re-save the state dict alone from the original code.")
    try:
        return list(getter(str(path)))
    except (ValueError, RuntimeError, pickle.UnpicklingError) as err:
        raise OSError(f"Cannot read {path}: {err}. It is not a torch checkpoint in the zip format "
                      "(torch.save since torch 1.6).") from err


def _load_with_placeholders(path: Path, allowed: Sequence[str], mmap: bool = False) -> Any:
    names = _unsafe_globals(path)
    refused = [n for n in names if n not in _CONTAINER_GLOBALS
               and not any(fnmatch.fnmatchcase(n, pat) for pat in allowed)]
    if refused:
        raise ValueError(f"{path} pickles globals that are not tensors and not expected in this checkpoint "
                         f"family: {refused[:8]}{' …' if len(refused) > 8 else ''} ({len(refused)} in all). "
                         "They could run code when unpickled, so the file is not read; re-save the state "
                         "dict alone (torch.save(model.state_dict(), path)) with the original code.")
    logger.info("Reading %s with inert placeholders for %s", path, names)
    inert = [(_CONTAINER_GLOBALS[n], n) if n in _CONTAINER_GLOBALS else (OpaqueObject, n) for n in names]
    try:
        with torch.serialization.safe_globals(inert):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} could not be read with inert placeholders for {names}: "
                         f"{str(err).splitlines()[-1][:300]}") from err


def read_checkpoint(path: str | Path, *, allowed_globals: Sequence[str] = ()
                    ) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint file's state dict, never unpickling code (``weights_only=True``).

    Parameters
    ----------
    path : str | Path
        A ``torch.save`` file (zip or legacy format) or a ``.safetensors`` file.
    allowed_globals : sequence of str
        ``fnmatch`` patterns of pickled globals the caller expects besides tensors (e.g. ``"omegaconf.*"``
        for a Dora checkpoint); each is read as an inert :class:`OpaqueObject`. Globals outside them are
        refused.

    Returns
    -------
    state : dict of str → Tensor
        The unwrapped state dict (see :func:`unwrap_state_dict`), on the CPU, float16 cast to float32.
    where : str
        The container key it came from (``"<bare>"`` for a bare state dict, ``"<safetensors>"``).

    Raises
    ------
    ValueError
        A global outside ``allowed_globals``, a torch too old for placeholders, or no state dict inside.
    OSError
        The file is missing or unreadable.
    """
    path = check_path(path, what="checkpoint file", kind="file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state, _ = unwrap_state_dict(load_file(str(path), device="cpu"))
        return state, "<safetensors>"
    # zip-format files are memory-mapped: only the tensors the model keeps are read into memory (MindEye1's
    # files hold twice the model again as AdamW moments; a 9 GB MindEye2 file is not copied before mapping)
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "Unsupported global" not in str(err):
            raise OSError(f"Cannot read {path}: {err}") from err
        obj = _load_with_placeholders(path, tuple(allowed_globals), mmap=mmap)
    except (RuntimeError, EOFError) as err:
        raise OSError(f"Cannot read {path}: {err}. The file is truncated or not a torch checkpoint.") from err
    return unwrap_state_dict(obj)
