"""Shared parameter docs: ``docdict`` entries, ``fill_doc`` filling and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import neurodecode
from neurodecode.utils import _docs, docdict, fill_doc

PKG = Path(neurodecode.__file__).parent


def test_fill_doc_fills_with_the_placeholder_indentation():
    @fill_doc
    def func(verbose=None):
        """Do something.

        Parameters
        ----------
        %(verbose)s

        Notes
        -----
        50 % of the time it works (a bare percent sign needs no escaping).
        """

    class Thing:
        @fill_doc
        def method(self, device="cpu"):
            """A method.

            Parameters
            ----------
            %(device)s
            """

    doc = func.__doc__
    assert "%(" not in doc and "50 % of the time" in doc
    first, *rest = docdict["verbose"].split("\n")
    assert f"\n        {first}\n" in doc
    for line in rest:  # continuation lines keep the numpydoc description indent
        assert f"\n        {line}" in doc
    assert "\n            device : str | torch.device | None\n                Torch device" in Thing.method.__doc__
    assert fill_doc(Thing) is Thing  # classes too; no placeholder, nothing changes


def test_fill_doc_without_docstring_is_a_no_op():
    def bare():
        pass

    assert fill_doc(bare) is bare and bare.__doc__ is None


def test_unknown_key_raises_at_decoration_naming_object_and_key():
    with pytest.raises(KeyError, match=r"bad_func.*'verbos'.*known keys"):
        @fill_doc
        def bad_func(verbose=None):
            """Docs.

            Parameters
            ----------
            %(verbos)s
            """


def test_entries_are_numpydoc_paragraphs():
    for key, text in docdict.items():
        head, *body = text.split("\n")
        assert head.startswith(f"{key} : "), key
        assert body and all(line.startswith("    ") and line.strip() for line in body), key
        assert not text.endswith("\n"), key


def test_filled_docstrings_of_the_package():
    from neurodecode.utils import resolve_device, use_log_level

    assert docdict["device"].split("\n")[0] in resolve_device.__doc__
    assert docdict["verbose"].split("\n")[0] in use_log_level.__doc__
    assert "%(" not in resolve_device.__doc__ + use_log_level.__doc__


def test_every_entry_is_used_or_public():
    sources = {str(p): p.read_text(encoding="utf-8") for p in PKG.rglob("*.py") if p.name != "_docs.py"}
    unused = _docs._unused_keys(sources)
    assert set(_docs.PUBLIC_ENTRIES) <= set(docdict)
    assert set(unused) <= set(_docs.PUBLIC_ENTRIES), (
        f"docdict entries used nowhere: {sorted(set(unused) - set(_docs.PUBLIC_ENTRIES))}; use them in a "
        "docstring (%(key)s with @fill_doc), or list them in PUBLIC_ENTRIES")


def test_no_hand_written_verbose_paragraph_is_left():
    """Shared parameters are documented once, in the docdict (tools/apply_docdict.py --check exits 0)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, str(root / "tools" / "apply_docdict.py"), "--check"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
