"""Leftovers of killed runs are removed by the next run (only when provably stale); failures leave no folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from neurodecode.utils.locks import LOCK_NAME, claim_folder

DRIVER = Path(__file__).with_name("_race_driver.py")
SIM = {"n_subjects": 1, "n_sessions": 1, "trials_per_session": 60, "image_size": 16}
TINY_FIT = ["simulate.n_subjects=1", "simulate.n_sessions=2", "simulate.trials_per_session=120",
            "simulate.image_size=24", "targets.size=6", "models.mlp.enabled=false", "evaluation.n_boot=20",
            "evaluation.n_repeats=2", "evaluation.n_candidates=10", "report.n_examples=1",
            "report.n_retrieved=2", "data.subjects=[1]"]


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NEURODECODE_TQDM": "off"}
    return subprocess.Popen([sys.executable, str(DRIVER), *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, condition, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended before {what}: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_killed_simulation_leftovers_are_removed_by_the_next_one(tmp_path):
    from neurodecode.datasets import simulate

    out = tmp_path / "sim"
    proc = _start(tmp_path, "cli", "simulate", "60", "simulate", "nsd", str(out), "--n-subjects", "1",
                  "--n-sessions", "1", "--trials-per-session", "60", "--image-size", "16")
    _kill_when(proc, lambda: any(tmp_path.glob(".sim.simulating-*/started")), "it started writing")
    assert [p.name for p in tmp_path.glob(".sim.simulating-*")] and (tmp_path / ".sim.lock").exists()
    simulate("nsd", out, verbose="warning", **SIM)  # the lock of the killed process is free: it was stale
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]
    assert (out / "simulation.json").is_file()


def test_temporaries_are_removed_only_when_their_writer_is_dead(tmp_path):
    run = tmp_path / "runs" / "demo"
    tmp_file = run / ".report.html.abc123.tmp"
    holder = _start(tmp_path, "hold", str(run))
    try:
        assert holder.stdout.readline().strip() == "ready"
        # a live writer: its folder is not taken, and its temporary file is left alone
        with claim_folder(run, numbered=True) as other:
            assert other == run.with_name("demo-1")
        with pytest.raises(FileExistsError, match="being written by another neurodecode process"):
            claim_folder(run)
        from neurodecode.utils.locks import remove_stale_temporaries

        assert remove_stale_temporaries(tmp_path / "runs") == [] and tmp_file.is_file()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # killed: the next run recognises the leftovers as stale (the lock can be taken) and removes them
    with claim_folder(run) as again:
        assert again == run and not tmp_file.exists()
        (again / "config.yaml").write_text("x")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # the lock file went with the claim


def test_half_deleted_and_half_written_checkpoints_are_removed(tmp_path, monkeypatch):
    import neurodecode.training.checkpoint as ck
    from neurodecode.training import Trainer, list_checkpoints, save_checkpoint

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "training"))
    from _training_fixtures import planted, tiny_model

    ckpt = tmp_path / "ckpt"
    weights = {"model": {"a": torch.ones(2)}}
    # a process killed while pruning leaves a renamed folder, never a half-deleted step-* folder
    with monkeypatch.context() as m:
        m.setattr(ck.shutil, "rmtree", lambda *a, **k: None)
        for step in (1, 2):
            save_checkpoint(ckpt, step, weights=weights, training_state={}, trainer_state={"epoch": step},
                            keep_last=1)
    assert [p.name for p in list_checkpoints(ckpt)] == ["step-000000002"]
    assert [p.name for p in ckpt.glob(".old-step-*")] == [f".old-step-000000001-{os.getpid()}"]
    (ckpt / "step-000000099").mkdir()  # half-deleted by an older version: no trainer_state.json
    (ckpt / "step-000000099" / "model.safetensors").write_bytes(b"")
    (ckpt / ".tmp-step-000000004-99999").mkdir()  # half-written by a killed process
    trials, targets = planted(n_trials=120)
    Trainer(tiny_model(trials), batch_size=32, max_epochs=1, seed=0).fit(trials, targets, checkpoint_dir=ckpt)
    names = sorted(p.name for p in ckpt.iterdir())
    assert not [n for n in names if n.startswith(".") or n == "step-000000099"], names


def test_failed_commands_leave_no_empty_folder(tmp_path, monkeypatch, capfd):
    import neurodecode.workflow.ablate as ablate_mod
    from neurodecode.cli import main

    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    runs = tmp_path / "runs"
    sets = [x for s in [*TINY_FIT, f"output_dir={runs}"] for x in ("--set", s)]
    (tmp_path / "empty").mkdir()
    assert main(["fit", "-q", *sets, "--root", str(tmp_path / "empty")]) == 1  # no data there
    assert "Traceback" not in capfd.readouterr().err
    assert not runs.exists()  # neither runs/demo nor the runs/ it created
    assert main(["fit", "-q", *sets]) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["demo"]  # the next real run is not pushed to demo-1
    run = runs / "demo"

    def fail(*args, **kwargs):
        raise ValueError("the ablation failed")

    monkeypatch.setattr(ablate_mod, "ablate_run", fail)
    assert main(["ablate", str(run), "--atlas", "nsd:streams", "-q"]) == 1
    assert "the ablation failed" in capfd.readouterr().err
    assert not list(run.glob("ablation*")) and not (run / LOCK_NAME).exists()
