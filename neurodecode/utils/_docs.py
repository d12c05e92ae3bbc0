"""Shared parameter documentation: ``docdict`` and the ``fill_doc`` decorator (as MNE and nilearn do).

A docstring writes ``%(verbose)s`` where the parameter's paragraph goes, and ``@fill_doc`` replaces it,
once, when the module is imported::

    from neurodecode.utils import fill_doc

    @fill_doc
    def fit(data, *, verbose=None):
        \"\"\"Fit the thing.

        Parameters
        ----------
        data : numpy.ndarray
            The data.
        %(verbose)s
        \"\"\"

Each entry is the whole numpydoc paragraph (``name : type`` line and indented description); its
continuation lines get the indentation of the line holding the placeholder, so the same entry serves
functions and methods. Only ``%(key)s`` placeholders are touched: other ``%`` signs in a docstring need
no escaping. An unknown key raises ``KeyError`` naming the object and the key when the module is
imported, so a typo never reaches the rendered documentation.
"""

from __future__ import annotations

import re
from typing import TypeVar

__all__ = ["PUBLIC_ENTRIES", "docdict", "fill_doc"]

T = TypeVar("T")

#: Shared numpydoc parameter paragraphs, by placeholder name (``%(name)s``).
docdict: dict[str, str] = {}

docdict["verbose"] = """\
verbose : bool | str | int | None
    Log level while this call runs: ``True`` or ``"info"`` logs progress, ``False`` or ``"warning"``
    only warnings, or any level name (``"debug"`` .. ``"critical"``) or number. ``None`` keeps the
    current level (see :func:`neurodecode.utils.set_log_level`)."""

docdict["random_state"] = """\
random_state : None | int | numpy.random.Generator
    Seed (or generator) of the random draws. The same seed gives the same result; ``None`` draws
    fresh entropy. The global NumPy and torch generators are never used."""

docdict["seed"] = """\
seed : int
    Seed of every random draw (private ``numpy`` / ``torch.Generator`` objects; the global
    generators are untouched): the same inputs and seed give the same result."""

docdict["device"] = """\
device : str | torch.device | None
    Torch device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, or ``"auto"`` (CUDA when a GPU is
    visible, else the CPU). ``None`` means the CPU. Asking for CUDA without a GPU raises
    ``ValueError``."""

docdict["root"] = """\
root : str | pathlib.Path
    The dataset's root folder, in the dataset's own on-disk layout (real data, or a folder written
    by :func:`neurodecode.datasets.simulate`)."""

docdict["subjects"] = """\
subjects : int | sequence of int | None
    Subject numbers (1-based, as in the dataset's ``subjNN`` / ``sub-NN`` folders). ``None`` uses
    every subject."""

docdict["ci"] = """\
ci : float
    Confidence level of the percentile bootstrap intervals, strictly between 0 and 1 (e.g.
    ``0.95``)."""

docdict["n_boot"] = """\
n_boot : int
    Number of bootstrap resamples of the test items for the confidence intervals."""

docdict["revision"] = """\
revision : str | None
    With a repo id: the branch, tag or commit (default ``main``)."""

docdict["allow_download"] = """\
allow_download : bool
    With a repo id: download it when it is not in the cache (default False: offline; never while
    ``HF_HUB_OFFLINE`` is set)."""

docdict["token"] = """\
token : str | bool | None
    With a repo id and ``allow_download``: a token for private repos (None: the stored login)."""

#: Entries kept for code outside this package (and for the docstrings not converted yet); the test
#: suite requires every other entry to be used by a neurodecode docstring.
PUBLIC_ENTRIES: tuple[str, ...] = ("random_state", "seed", "root", "subjects", "ci", "n_boot")

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _fill(docstring: str, where: str) -> str:
    lines = []
    for line in docstring.split("\n"):
        indent = line[: len(line) - len(line.lstrip())]

        def _sub(match: re.Match[str], indent: str = indent) -> str:
            key = match.group(1)
            if key not in docdict:
                raise KeyError(f"{where}: unknown docdict key {key!r} in its docstring; known keys: "
                               f"{sorted(docdict)} (neurodecode/utils/_docs.py)")
            return docdict[key].replace("\n", "\n" + indent)

        lines.append(_PLACEHOLDER.sub(_sub, line))
    return "\n".join(lines)


def fill_doc(obj: T) -> T:
    """Fill the ``%(key)s`` placeholders of a docstring from :data:`neurodecode.utils.docdict`.

    Parameters
    ----------
    obj : callable | type
        A function, method or class; its ``__doc__`` is filled in place.

    Returns
    -------
    obj : callable | type
        The same object (a decorator: ``@fill_doc``).

    Raises
    ------
    KeyError
        A placeholder names no ``docdict`` entry; the message names the object and the key.
    """
    doc = getattr(obj, "__doc__", None)
    if doc:
        where = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
        obj.__doc__ = _fill(doc, where)
    return obj


def _unused_keys(sources: dict[str, str]) -> list[str]:
    """Keys of ``docdict`` that no source text (``{path: text}``) uses as ``%(key)s``."""
    used = {m.group(1) for text in sources.values() for m in _PLACEHOLDER.finditer(text)}
    return sorted(set(docdict) - used)

