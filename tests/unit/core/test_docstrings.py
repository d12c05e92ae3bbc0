"""Every public callable documents its parameters and what it returns (numpydoc PR01 / RT01)."""

from __future__ import annotations

import importlib
import inspect

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

PACKAGES = ("utils", "config", "io", "preprocessing", "datasets", "embeddings", "models", "training", "tasks",
            "analysis", "reports", "workflow")
CHECKS = ("GL08", "PR01", "RT01")  # no docstring; a parameter without its doc; no Returns section


def _public_modules() -> list[str]:
    """Every public module: the subpackages and every module path without a private (``_``) part."""
    import pkgutil

    import neurodecode

    names = [f"neurodecode.{p}" for p in PACKAGES]
    for info in pkgutil.walk_packages(neurodecode.__path__, "neurodecode."):
        if not any(part.startswith("_") for part in info.name.split(".")) and info.name not in names:
            names.append(info.name)
    return names


def _module_names(module) -> list[str]:
    """``__all__``, or the public names a module without one defines itself (as the API reference does)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n, obj in vars(module).items() if not n.startswith("_")
            and getattr(obj, "__module__", None) == module.__name__]


def _public_names() -> list[str]:
    """Qualified names of every public function and class of every public module, and their public methods."""
    names: list[str] = []
    for modname in _public_modules():
        module = importlib.import_module(modname)
        for name in _module_names(module):
            obj = getattr(module, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not obj.__module__.startswith(
                    "neurodecode"):
                continue
            qual = f"{obj.__module__}.{obj.__qualname__}"
            if inspect.isfunction(obj):
                names.append(qual)
            else:
                names.append(qual)
                names += [f"{qual}.{k}" for k, v in vars(obj).items() if not k.startswith("_")
                          and (inspect.isfunction(v) or isinstance(v, (classmethod, staticmethod)))]
    return sorted(set(names))


def test_the_public_api_is_found():
    names = _public_names()
    assert len(names) > 150
    assert "neurodecode.tasks.retrieval.evaluate_retrieval" in names


def test_every_public_callable_documents_parameters_and_returns():
    problems = []
    for qual in _public_names():
        for code, msg in numpydoc_validate.validate(qual)["errors"]:
            if code in CHECKS:
                problems.append(f"{qual}: {code} {msg}")
    assert not problems, "numpydoc problems in the public API:\n" + "\n".join(problems)
