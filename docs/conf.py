"""Sphinx configuration of the neurodecode documentation.

Build (from the repository root; no network needed)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Environment variables:

``NEURODECODE_DOCS_LIGHT=1``
    The gallery examples run with smaller simulated datasets and fewer epochs (what CI runs).
``NEURODECODE_DOCS_NO_GALLERY=1``
    Do not execute the examples (pages show the code only); for quick text-only builds.

The API reference is generated here from the ``__all__`` of every public module: one page per module
(``api/modules/``, written at each build) with an autosummary table whose stubs go to
``api/generated/``. Both folders are build outputs (git-ignored).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
import types
import typing
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network while building
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NEURODECODE_TQDM", "off")
os.environ.setdefault("MPLBACKEND", "Agg")

import neurodecode  # noqa: E402
from nd_scrapers import ReportFigureScraper  # noqa: E402  (docs/_ext)

LIGHT = os.environ.get("NEURODECODE_DOCS_LIGHT", "0").lower() not in ("", "0", "false", "no")
RUN_GALLERY = os.environ.get("NEURODECODE_DOCS_NO_GALLERY", "0").lower() in ("", "0", "false", "no")

# -- project -----------------------------------------------------------------------------------------
project = "neurodecode"
author = "neurodecode developers"
copyright = "neurodecode developers"  # noqa: A001
release = neurodecode.__version__
version = release

# -- extensions --------------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
# intersphinx is deliberately not enabled: the build must not need the network.

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.py", "auto_examples/*.ipynb",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5",
                    "auto_examples/*.codeobj.json"]
suppress_warnings = [
    # the markdown pages link to source files in the repository (pipelines/*.yaml, tests/...)
    "myst.xref_missing",
]

# -- myst (the hand-written .md pages) ---------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4

# -- autodoc / autosummary / numpydoc ----------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False, "inherited-members": False}
autodoc_typehints = "none"  # the numpydoc Parameters sections carry the types
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
# numpydoc's own checks, limited to what the whole public API passes today
numpydoc_validation_checks = {"GL06", "GL07", "SA04"}
numpydoc_validation_exclude = {r"\.__init__$"}

# -- the API reference, generated from __all__ -------------------------------------------------------
API_DIR = HERE / "api"
MODULE_PAGES = API_DIR / "modules"

# Lazy submodules named as public in their package docstring (not re-exported by the package).
EXTRA_MODULES = ("neurodecode.tasks.captioning", "neurodecode.tasks.caption_metrics",
                 "neurodecode.tasks.reconstruction", "neurodecode.tasks.metrics")
# pages that also list the names they re-export from elsewhere
PACKAGE_LEVEL = tuple(f"neurodecode.{s}" for s in neurodecode._SUBMODULES) + EXTRA_MODULES


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(dict.fromkeys(names))
    # neurodecode.config has no __all__: the names it defines itself
    return [n for n, obj in vars(module).items()
            if not n.startswith("_") and not inspect.ismodule(obj)
            and (getattr(obj, "__module__", None) == module.__name__ or (n.isupper() and n == n.strip("_")))]


def _public_modules() -> list[str]:
    """The subpackages of the lazy root, the lazy task modules, then every other public module."""
    order = [f"neurodecode.{s}" for s in neurodecode._SUBMODULES] + list(EXTRA_MODULES)
    for info in pkgutil.walk_packages(neurodecode.__path__, "neurodecode."):
        if not any(part.startswith("_") for part in info.name.split(".")) and info.name not in order:
            order.append(info.name)
    return order


def _kind(obj) -> str:
    if isinstance(obj, types.GenericAlias) or typing.get_origin(obj) is not None:
        return "alias"  # a type alias such as ``Regions = dict[str, ...]``: listed, not autodoc'ed
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if callable(obj) and not inspect.ismodule(obj):
        return "function"
    return "data"


SECTION_TITLES = {"class": "Classes", "exception": "Exceptions", "function": "Functions", "data": "Constants"}


def write_api_pages() -> dict[str, list[str]]:
    """Write ``api/modules/<module>.rst`` for every public module with names of its own to document.

    An object re-exported by several modules is documented once, at its shortest public path (the
    others link to it). Returns ``{module: [documented names]}``.
    """
    MODULE_PAGES.mkdir(parents=True, exist_ok=True)
    seen: dict[int, str] = {}
    documented: dict[str, list[str]] = {}
    pages: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = [(name, importlib.import_module(name)) for name in _public_modules()]
    for modname, module in modules:
        own, aliases = {k: [] for k in [*SECTION_TITLES, "alias"]}, []
        for name in _public_names(module):
            obj = getattr(module, name)
            # interned scalars / strings / tuples: the same object under the same name only
            key = (id(obj), name) if isinstance(obj, (int, float, str, tuple, bool)) else id(obj)
            if inspect.ismodule(obj):
                continue
            if key in seen:
                aliases.append((name, seen[key]))
                continue
            seen[key] = f"{modname}.{name}"
            own[_kind(obj)].append(name)
        names = [n for kind, group in own.items() if kind != "alias" for n in group]
        if not names and not aliases:
            continue
        if not names and modname not in (f"neurodecode.{s}" for s in neurodecode._SUBMODULES):
            continue  # a submodule whose names are all documented at their package
        documented[modname] = names
        lines = [f".. _api-{modname}:", "", modname, "=" * len(modname), "",
                 f".. automodule:: {modname}", "   :no-members:", "   :no-index:", "",
                 f".. currentmodule:: {modname}", ""]
        for kind, title in SECTION_TITLES.items():
            if not own[kind]:
                continue
            lines += [title, "-" * len(title), "", ".. autosummary::", "   :toctree: ../generated",
                      "   :nosignatures:", ""]
            lines += [f"   {n}" for n in own[kind]]
            lines.append("")
        if own["alias"]:
            lines += ["Type aliases", "------------", ""]
            lines += [f"- ``{modname}.{n}`` = ``{getattr(module, n)!r}``" for n in own["alias"]]
            lines.append("")
        if aliases and (modname in PACKAGE_LEVEL):
            lines += ["Also available here", "-------------------", ""]
            lines += [f"- ``{modname}.{n}``: :py:obj:`{target}`" for n, target in aliases]
            lines.append("")
        pages[modname] = "\n".join(lines)
    for modname, text in pages.items():
        path = MODULE_PAGES / f"{modname}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    for stale in MODULE_PAGES.glob("*.rst"):
        if stale.stem not in pages:
            stale.unlink()
    # autosummary never removes the stub of a name that left an __all__; Sphinx would still read it
    expected = {f"{mod}.{name}" for mod, names in documented.items() for name in names}
    for stub in (API_DIR / "generated").glob("*.rst"):
        if stub.stem not in expected:
            stub.unlink()
    return documented


API_MODULES = write_api_pages()

# -- sphinx-gallery ----------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": str(HERE / "auto_examples"),
    "filename_pattern": r"/plot_",
    "plot_gallery": "True" if RUN_GALLERY else "False",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": (ReportFigureScraper(), "matplotlib"),
    "reset_modules": ("matplotlib",),
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "min_reported_time": 1,
    "capture_repr": ("_repr_html_", "__repr__"),
    "first_notebook_cell": None,
    "run_stale_examples": False,
}

# -- HTML --------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"neurodecode {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
    "navbar_end": ["navbar-icon-links"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": [], "auto_examples/index": []}
html_show_sourcelink = False
html_copy_source = False
