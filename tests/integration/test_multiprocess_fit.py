"""`neurodecode fit` under `accelerate launch` with the shipped config: two processes train, one run folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETS = ["simulate.n_subjects=2", "simulate.n_sessions=3", "simulate.trials_per_session=120",
        "simulate.image_size=24", "simulate.snr=2.0", "targets.size=6", "models.mlp.max_epochs=2",
        "models.mlp.hidden_dim=16", "models.mlp.batch_size=32", "models.ridge.enabled=false",
        "evaluation.n_boot=20", "evaluation.n_repeats=2", "evaluation.n_candidates=10", "report.n_examples=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_one_run_folder(tmp_path):
    pytest.importorskip("accelerate")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(REPO / "configs" / "accelerate" / "multi_gpu.yaml"), "--num_processes", "2",
            "--main_process_port", str(_free_port()), "-m", "neurodecode.cli", "fit", "demo",
            "--output", str(tmp_path / "runs" / "ddp")]
    for s in SETS:
        argv += ["--set", s]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"]  # no ddp-1 from the other rank
    run = tmp_path / "runs" / "ddp"
    assert (run / "run.json").is_file() and (run / "models" / "mlp" / "model.safetensors").is_file()
    assert proc.stdout.count("Report: ") == 1 and "(2 processes)" in proc.stderr  # rank 1 is silent
    assert not list(scratch.glob("neurodecode-rank*"))  # rank 1's scratch folder is gone
