from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from neurodecode.utils import (check_option, check_path, ensure_finite, atomic_write_json,
                               atomic_write_text, check_random_state, get_config, logger,
                               use_log_level, verbose)
from neurodecode.utils._fileio import atomic_path


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "out.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["out.txt"]
    atomic_write_json(tmp_path / "m.json", {"a": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


def test_verbose_decorator_restores_level():
    @verbose
    def f(verbose=None):
        return logger.level

    before = logger.level
    assert f(verbose="debug") == logging.DEBUG
    assert f(verbose=False) == logging.WARNING
    assert logger.level == before
    with pytest.raises(TypeError, match="no 'verbose'"):
        verbose(lambda x: x)
    with pytest.raises(ValueError, match="verbose must be"):
        with use_log_level("loud"):
            pass


def test_checks(tmp_path):
    with pytest.raises(ValueError, match="'zscore'.*'session', None.*'run'"):
        check_option("zscore", "run", ["session", None])
    with pytest.raises(FileNotFoundError, match="NSD root not found.*download"):
        check_path(tmp_path / "x", what="NSD root", hint="download it")
    with pytest.raises(ValueError, match="2 non-finite"):
        ensure_finite(np.array([1.0, np.nan, np.inf]), what="betas")
    assert isinstance(check_random_state(0), np.random.Generator)
    with pytest.raises(TypeError):
        check_random_state("seed")


def test_get_config_order(tmp_path, monkeypatch):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"NEURODECODE_NSD_ROOT": "/from/file"}))
    monkeypatch.setenv("NEURODECODE_CONFIG", str(cfg))
    monkeypatch.delenv("NEURODECODE_NSD_ROOT", raising=False)
    assert get_config("NEURODECODE_NSD_ROOT") == "/from/file"
    monkeypatch.setenv("NEURODECODE_NSD_ROOT", "/from/env")
    assert get_config("NEURODECODE_NSD_ROOT") == "/from/env"
    with pytest.raises(KeyError, match="Unknown neurodecode setting"):
        get_config("NOPE")


def test_torchvision_compat_makes_import_work():
    from neurodecode._compat import ensure_torchvision

    ensure_torchvision()
    import torch
    import torchvision

    keep = torchvision.ops.nms(torch.tensor([[0, 0, 1, 1.0], [0, 0, 1, 1.05], [3, 3, 4, 4.0]]),
                               torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_warn_points_at_caller():
    import warnings

    from neurodecode.utils import warn

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        warn("careful")  # this line
    assert rec and rec[0].filename == __file__


def test_atomic_files_get_normal_mode(tmp_path):
    import os
    import stat

    p = atomic_write_text(tmp_path / "f.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_resolve_device():
    import torch

    from neurodecode.utils import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="Unknown torch device"):
        resolve_device("gpu0")
