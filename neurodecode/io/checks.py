"""Shared integrity checks of data files: whole-file gzip verification, non-finite values, affines.

Every loader uses these so that a damaged or non-finite input never passes
silently (``docs/reliability.md``):

- :func:`verify_gzip` streams a whole ``.gz`` file through :mod:`gzip`, which
  checks the CRC-32 and the length (ISIZE) of every member, before any value
  of the file is used. nibabel and Python's ``gzip`` only check them when a
  read reaches the end of a member, and a volume read stops at the last data
  byte, so without this a flipped byte can go unnoticed. A file is verified
  once per process (cached by path, size and modification time).
- :func:`check_finite` counts NaN and infinite values per trial and either
  raises naming the file, the session and the counts, or (``"drop"``) logs a
  WARNING and returns the rows to drop.
- :func:`check_affine` compares a mask's affine with the data's.

Only :mod:`neurodecode.utils` is imported here (io is the lowest layer).
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import logger

__all__ = ["NONFINITE_OPTIONS", "check_affine", "check_finite", "check_nonfinite_option", "gzip_error",
           "is_gzip_verified", "mark_gzip_verified", "mne_damage", "verify_gzip"]

#: Values of the loaders' ``nonfinite`` option.
NONFINITE_OPTIONS = ("error", "drop")

_CHUNK = 1 << 20  # decompressed bytes per read while verifying
_VERIFIED: set[tuple[str, int, int]] = set()
_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError
#: MNE warnings that mean a FIF file ended early or holds damaged tags ("Invalid tag with only 0/16 bytes").
_MNE_DAMAGE = re.compile(r"truncat|invalid tag|corrupt|unexpected end|end of file", re.IGNORECASE)


def mne_damage(caught: Any) -> list[str]:
    """The messages of recorded warnings (``catch_warnings(record=True)``) that report file damage.

    Parameters
    ----------
    caught : list of warnings.WarningMessage
        The warnings recorded by ``warnings.catch_warnings(record=True)``.

    Returns
    -------
    messages : list of str
        The messages that report a truncated or corrupt file (empty when none does).
    """
    return [str(w.message) for w in caught if _MNE_DAMAGE.search(str(w.message))]


def _key(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return (str(Path(path).resolve()), int(st.st_size), int(st.st_mtime_ns))


def is_gzip_verified(path: str | Path) -> bool:
    """Whether ``path`` (as it is now: same size and mtime) was verified whole in this process.

    Parameters
    ----------
    path : str | Path
        A gzip file.

    Returns
    -------
    verified : bool
        True when it was verified with its current size and modification time; False otherwise
        (also when it cannot be read).
    """
    try:
        return _key(Path(path)) in _VERIFIED
    except OSError:
        return False


def mark_gzip_verified(path: str | Path) -> None:
    """Record that ``path`` was read to the end of its last gzip member without error.

    Parameters
    ----------
    path : str | Path
        The gzip file, recorded with its current size and modification time.
    """
    _VERIFIED.add(_key(Path(path)))


def gzip_error(path: str | Path, err: BaseException, what: str, fix: str = "re-download it") -> OSError:
    """An OSError naming the file, what is wrong with its gzip stream, and ``fix``.

    Parameters
    ----------
    path : str | Path
        The damaged gzip file.
    err : BaseException
        The error raised while reading it (``OSError``, ``EOFError`` or ``zlib.error``).
    what : str
        What the file is, for the message (``"NSD betas file"``).
    fix : str
        What the user should do, for the message.

    Returns
    -------
    error : OSError
        The error to raise (it is returned, not raised).
    """
    msg = str(err).lower()
    if isinstance(err, EOFError) or "end-of-stream" in msg:
        cause = "it is truncated (the compressed stream ends before its end marker)"
    elif "crc" in msg or "length check" in msg or "incorrect length" in msg:
        cause = "its content does not match the gzip checksum (CRC-32 / length): bytes were changed"
    elif "not a gzipped file" in msg:
        cause = "it is not a gzip file (or has garbage after its last gzip member)"
    else:
        cause = "its compressed stream is corrupt"
    return OSError(f"The {what} {path} is damaged: {cause} ({type(err).__name__}: {err}). "
                   f"Nothing from it was used; {fix}.")


def verify_gzip(path: str | Path, *, what: str = "file", fix: str = "re-download it") -> Path:
    """Check the CRC-32 and length of every gzip member of ``path`` by reading it to the end.

    Parameters
    ----------
    path : str | Path
        A gzip file (e.g. ``.nii.gz``).
    what : str
        What the file is, for the error message (``"NSD betas file"``).
    fix : str
        What the user should do, for the error message.

    Returns
    -------
    path : Path

    Raises
    ------
    OSError
        Naming the file: truncated, checksum mismatch, or not gzip.

    Notes
    -----
    The file is decompressed in 1 MiB pieces (nothing is kept); a file
    already verified in this process with the same size and modification
    time is not read again.
    """
    path = Path(path)
    key = _key(path)
    if key in _VERIFIED:
        return path
    try:
        with gzip.open(path, "rb") as f:
            while f.read(_CHUNK):
                pass
    except _GZIP_ERRORS as err:
        raise gzip_error(path, err, what, fix) from err
    _VERIFIED.add(key)
    logger.debug("gzip CRC and length verified: %s", path)
    return path


def check_nonfinite_option(nonfinite: Any) -> str:
    """Validate a loader's ``nonfinite`` option.

    Parameters
    ----------
    nonfinite : str
        The value given; one of :data:`NONFINITE_OPTIONS` (``"error"``, ``"drop"``).

    Returns
    -------
    nonfinite : str
        The same value.

    Raises
    ------
    ValueError
        If ``nonfinite`` is not an allowed value.
    """
    if nonfinite not in NONFINITE_OPTIONS:
        raise ValueError(f"Invalid value for the 'nonfinite' parameter. Allowed values are 'error', 'drop', "
                         f"but got {nonfinite!r} instead.")
    return nonfinite


def _bad_rows(data: Any, block_bytes: int = 64 << 20) -> tuple[np.ndarray, int, int]:
    """Rows (first axis) holding a non-finite value, and the NaN and infinity counts."""
    n = len(data)
    bad = np.zeros(n, dtype=bool)
    if n == 0:
        return bad, 0, 0
    first = np.asarray(data[:1])
    if first.dtype.kind not in "fc":
        return bad, 0, 0  # integers cannot hold NaN / inf
    step = max(1, block_bytes // max(first.nbytes, 1))
    n_nan = n_inf = 0
    for r0 in range(0, n, step):
        block = np.asarray(data[r0:r0 + step])
        fin = np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if not fin.all():
            bad[r0:r0 + len(block)] = ~fin
            sub = block[~fin]
            n_nan += int(np.isnan(sub).sum())
            n_inf += int(np.isinf(sub).sum())
    return bad, n_nan, n_inf


def check_finite(data: Any, *, file: str | Path, session: Any = None, sessions: Any = None,
                 nonfinite: str = "error", what: str = "trial", fix: str = "re-download it") -> np.ndarray:
    """Find the rows of ``data`` that hold NaN or infinite values.

    Parameters
    ----------
    data : array, shape (n_rows, ...)
        One row per trial (or epoch / segment).
    file : str | Path
        The file the values come from (named in the message).
    session : object | None
        The session of every row (named in the message when given).
    sessions : array, shape (n_rows,) | None
        The session of each row, when the rows come from several sessions;
        the message then names the sessions holding non-finite values and
        how many rows of each.
    nonfinite : ``"error"`` | ``"drop"``
        ``"error"`` raises when any value is not finite; ``"drop"`` logs a
        WARNING naming the file, session and counts and returns the rows.
    what : str
        Name of one row (``"trial"``, ``"epoch"``, ``"segment"``).
    fix : str
        What to do about a damaged file, for the message.

    Returns
    -------
    bad : array of bool, shape (n_rows,)
        Rows holding at least one NaN or infinite value (all False when the
        data are finite).

    Raises
    ------
    ValueError
        With ``nonfinite="error"``, when a value is NaN or infinite; the
        message names the file, the session, the number of NaN and infinite
        values and of the rows holding them, and the ``nonfinite="drop"``
        option.
    """
    check_nonfinite_option(nonfinite)
    bad, n_nan, n_inf = _bad_rows(data)
    n_bad = int(bad.sum())
    if not n_bad:
        return bad
    where = f"{file}"
    if sessions is not None:
        per = _counts_in_order(np.asarray(sessions)[bad])
        label = "session" if len(per) == 1 else "sessions"
        where += f" ({label} " + ", ".join(f"{k}: {v} {what}(s)" for k, v in per) + ")"
    elif session is not None:
        where += f" (session {session})"
    counts = f"{n_nan} NaN and {n_inf} infinite value(s) in {n_bad} of {len(bad)} {what}(s)"
    if nonfinite == "error":
        raise ValueError(f"{where} holds {counts}. Non-finite values are not valid data: the file is damaged "
                         f"or was written wrongly; {fix}, or pass nonfinite='drop' to drop those {what}s "
                         "(with a warning).")
    logger.warning("%s holds %s: dropping those %ss (nonfinite='drop').", where, counts, what)
    return bad


def _counts_in_order(values: np.ndarray) -> list[tuple[Any, int]]:
    """``(value, count)`` pairs in order of first appearance."""
    out: dict[Any, int] = {}
    for v in values.tolist():
        out[v] = out.get(v, 0) + 1
    return list(out.items())


def check_affine(affine: Any, ref_affine: Any, *, file: str | Path, ref_file: str | Path,
                 what: str = "ROI mask", atol: float = 1e-3,
                 fix: str = "use a file in the data's space (or resample it onto the data's grid)") -> None:
    """Raise when ``affine`` (of ``file``) differs from ``ref_affine`` (of ``ref_file``).

    Two volumes on the same grid but with different affines place their
    voxels at different positions, so a mask would select the wrong voxels.

    Parameters
    ----------
    affine : array-like, shape (4, 4)
        The affine of ``file``.
    ref_affine : array-like, shape (4, 4)
        The affine of the data, ``ref_file``.
    file : str | Path
        The file checked (e.g. the mask), named in the message.
    ref_file : str | Path
        The data file, named in the message.
    what : str
        What ``file`` is, for the message.
    atol : float
        Absolute tolerance of the element-wise comparison.
    fix : str
        What the user should do, for the message.

    Raises
    ------
    ValueError
        If the shapes differ or an element differs by more than ``atol``.
    """
    a = np.asarray(affine, dtype=float)
    b = np.asarray(ref_affine, dtype=float)
    if a.shape == b.shape and np.allclose(a, b, atol=atol):
        return
    raise ValueError(
        f"The {what} {file} has the right grid but another affine than the data {ref_file}: "
        f"{_fmt_matrix(a)} vs {_fmt_matrix(b)} (voxel-to-world, tolerance {atol}). "
        f"It belongs to another space or subject, so it would select the wrong voxels: {fix}.")


def _fmt_matrix(a: np.ndarray) -> str:
    rows = np.atleast_2d(a)
    return "[" + ", ".join("[" + ", ".join(f"{v:.4g}" for v in row) + "]" for row in rows) + "]"
