"""CPU threads: the cores a process may use, and torch set to them."""

from __future__ import annotations

import pytest
import torch

from neurodecode.cli import main
from neurodecode.utils import available_cpus, set_torch_threads
from neurodecode.utils._threads import _cgroup_cpus


def test_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert available_cpus() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "x")
    assert available_cpus() >= 1


def test_affinity_and_quota(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr("neurodecode.utils._threads._cgroup_cpus", lambda: 1.5)
    assert available_cpus() == 1
    monkeypatch.setattr("neurodecode.utils._threads._cgroup_cpus", lambda: None)
    assert available_cpus() == 4


def test_cgroup_files(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert _cgroup_cpus(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpus(tmp_path) is None


def test_set_torch_threads_restores():
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads"):
            set_torch_threads(0)
    finally:
        torch.set_num_threads(before)


def test_cli_threads_flag_is_checked(capsys):
    assert main(["fit", "--threads", "0"]) == 1
    assert "--threads must be >= 1" in capsys.readouterr().err
