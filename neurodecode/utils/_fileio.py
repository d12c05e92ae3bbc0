"""Atomic file writes: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched, so
    an interrupted write never corrupts or loses an earlier output.

    Parameters
    ----------
    path : str | pathlib.Path
        Final path of the file; its parent folders are created.

    Yields
    ------
    tmp_path : pathlib.Path
        Temporary file in the same folder, to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically.

    Parameters
    ----------
    path : str | pathlib.Path
        Path of the file.
    text : str
        Text to write.
    encoding : str
        Text encoding.

    Returns
    -------
    path : pathlib.Path
        The written path.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Parameters
    ----------
    path : str | pathlib.Path
        Path of the file.
    data : bytes
        Bytes to write.

    Returns
    -------
    path : pathlib.Path
        The written path.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    """Serialise ``obj`` as JSON to ``path`` atomically (indent 2 by default).

    Parameters
    ----------
    path : str | pathlib.Path
        Path of the file.
    obj : object
        JSON-serialisable object (see :func:`to_jsonable`).
    **kwargs
        Passed to :func:`json.dumps` (``indent`` defaults to 2).

    Returns
    -------
    path : pathlib.Path
        The written path.
    """
    kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, **kwargs) + "\n")


def json_float(x: Any) -> float | None:
    """``x`` as a float, NaN as ``None`` (JSON has no NaN).

    Parameters
    ----------
    x : object
        A value convertible with :class:`float`.

    Returns
    -------
    value : float | None
        ``float(x)``, or ``None`` when it is NaN.
    """
    x = float(x)
    return None if math.isnan(x) else x


def to_jsonable(obj: Any) -> Any:
    """``obj`` with mappings, sequences, arrays and NumPy scalars made JSON-able (NaN → ``None``).

    Parameters
    ----------
    obj : object
        The object to convert (nested mappings, lists, tuples and arrays are converted
        recursively; other unknown types become their ``str``).

    Returns
    -------
    obj : object
        The JSON-serialisable copy (dict keys become strings, tuples and arrays lists).
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return json_float(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)
