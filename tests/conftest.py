"""Shared test setup: offline hub, torchvision repair, no global log-level leaks, GPU skips."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NEURODECODE_TQDM", "off")
os.environ.setdefault("MPLBACKEND", "Agg")

from neurodecode._compat import ensure_torchvision  # noqa: E402

ensure_torchvision()

import pytest  # noqa: E402


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none present)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _check_log_level():
    """Fail any test that leaves the neurodecode log level changed (as MNE does)."""
    from neurodecode.utils import logger

    before = logger.level
    yield
    after = logger.level
    logger.setLevel(before)
    assert after == before, f"test changed the neurodecode log level from {before} to {after}"


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    """Never write into the real ~/.cache/neurodecode from a test."""
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path_factory.getbasetemp() / "nd_data"))
    monkeypatch.setenv("NEURODECODE_CONFIG", str(tmp_path_factory.getbasetemp() / "nd_config.json"))
