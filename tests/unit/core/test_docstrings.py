"""Every public callable documents its parameters and what it returns (numpydoc PR01 / RT01)."""

from __future__ import annotations

import importlib
import inspect

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

PACKAGES = ("utils", "config", "io", "preprocessing", "datasets", "embeddings", "models", "training", "tasks",
            "analysis", "reports", "workflow")
CHECKS = ("PR01", "RT01")   # a parameter without its doc; something returned without a Returns section


def _public_names() -> list[str]:
    """Qualified names of every public function, class and public method listed in a subpackage's __all__."""
    names: list[str] = []
    for pkg in PACKAGES:
        module = importlib.import_module(f"neurodecode.{pkg}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if obj is None or inspect.ismodule(obj) or not (getattr(obj, "__module__", "") or "").startswith(
                    "neurodecode"):
                continue
            qual = f"{obj.__module__}.{obj.__qualname__}"
            if inspect.isfunction(obj):
                names.append(qual)
            elif inspect.isclass(obj):
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
