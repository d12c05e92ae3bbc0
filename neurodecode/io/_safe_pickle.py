"""Read pickled data files without running code from them.

Some datasets ship Python objects pickled to disk (THINGS-EEG2's preprocessed
``.npy`` files hold a dict saved with ``np.save``; ATM's 250 Hz variant is a
``pickle.dump`` of the same dict). Plain unpickling calls whatever callable the
file names, so a crafted file runs arbitrary code. :func:`safe_load_pickled`
reads both forms with an unpickler that resolves only an allow-list of globals:
numpy arrays, dtypes and scalars, and the builtin containers, strings, bytes and
numbers. Any other global (``os.system``, ``builtins.eval``, a class of some
package, ...) raises :class:`UnsafePickleError` before anything is called.

Only :mod:`numpy` is imported here (io is the lowest layer).
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["UnsafePickleError", "safe_load_pickled"]

_NPY_MAGIC = b"\x93NUMPY"

try:  # numpy >= 2 moved its internals to numpy._core (numpy.core is a deprecated alias there)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it for ``bytes`` (latin-1 only)."""
    if encoding not in ("latin1", "latin-1"):  # no codec lookup by a name taken from the file
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (pickles only use latin1)")
    return codecs.encode(obj, "latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core", "numpy._core"):  # files written under numpy 1.x and 2.x
        allowed[(f"{mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = _multiarray.scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = _numeric._frombuffer  # protocol 5
    for typ in (bool, bytearray, bytes, complex, dict, float, frozenset, int, list, set, str, tuple):
        allowed[("builtins", typ.__name__)] = typ
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("_codecs", "encode")] = _latin1_encode  # bytes under protocol 2
    return allowed


_ALLOWED = _allowed_globals()


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickled data file names a global outside the allow-list (it could run code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED``."""

    def __init__(self, file: IO[bytes], path: Path) -> None:
        # latin1: numpy's advice for arrays pickled under Python 2 (their data are byte strings)
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        # Python 2 names (``__builtin__.set``) map to Python 3 ones as pickle itself would map them
        key = _compat_pickle.NAME_MAPPING.get(key, key)
        key = (_compat_pickle.IMPORT_MAPPING.get(key[0], key[0]), key[1])
        if key in _ALLOWED:
            return _ALLOWED[key]
        raise UnsafePickleError(
            f"{self._path} holds a pickled '{module}.{name}'; neurodecode refuses to unpickle anything but "
            "arrays, dicts, lists, strings and numbers. If this file is from the official release it has been "
            "altered — download it again."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._path} holds a pickle persistent id ({pid!r}); neurodecode reads only "
            "self-contained pickles of arrays, dicts, lists, strings and numbers."
        )


def _read_npy(f: IO[bytes], path: Path) -> Any:
    version = npy_format.read_magic(f)
    if version == (1, 0):
        shape, _fortran_order, dtype = npy_format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _fortran_order, dtype = npy_format.read_array_header_2_0(f)
    else:
        raise ValueError(
            f"{path} is a .npy file of format version {version[0]}.{version[1]}; "
            "only versions 1.0 and 2.0 (what np.save writes for these files) are read"
        )
    if not dtype.hasobject:  # a plain array: no pickle involved
        f.seek(0)
        return npy_format.read_array(f, allow_pickle=False)
    array = _RestrictedUnpickler(f, path).load()
    got = f"shape {array.shape}" if isinstance(array, np.ndarray) else f"a {type(array).__name__}"
    if got != f"shape {tuple(shape)}":  # a damaged file
        raise ValueError(
            f"{path}: the .npy header announces an object array of shape {tuple(shape)} but the data "
            f"hold {got}"
        )
    return array


def safe_load_pickled(path: str | Path) -> Any:
    """Load a ``.npy`` file (object arrays included) or a raw pickle without running code from it.

    Parameters
    ----------
    path : str | Path
        A file written by ``np.save`` (detected by the ``\\x93NUMPY`` magic) or
        by ``pickle.dump``.

    Returns
    -------
    obj : object
        What numpy's pickle-enabled ``np.load`` would return for the same
        file: the array for a ``.npy`` (a 0-d object array for a saved dict),
        the unpickled object for a raw pickle.

    Raises
    ------
    UnsafePickleError
        If the file names any global outside the allow-list (numpy arrays,
        dtypes and scalars; builtin dicts, lists, tuples, sets, strings, bytes
        and numbers). The message names the file and the global; nothing from
        the file has been called.
    ValueError, pickle.UnpicklingError, EOFError
        If the file is truncated or not a ``.npy`` / pickle at all.

    Notes
    -----
    Only the pickle stream is parsed by the restricted unpickler; a ``.npy``
    whose dtype holds no objects is read by :func:`numpy.lib.format.read_array`
    with ``allow_pickle=False``.
    """
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
        f.seek(0)
        if head == _NPY_MAGIC:
            return _read_npy(f, p)
        return _RestrictedUnpickler(f, p).load()
