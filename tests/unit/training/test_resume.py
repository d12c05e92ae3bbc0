"""A training run killed with SIGKILL mid-epoch and resumed ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neurodecode.training import latest_checkpoint, load_checkpoint

SCRIPT = Path(__file__).with_name("_training_fixtures.py")
KW = dict(lr=2e-3, batch_size=16, max_epochs=3, seed=11, val_fraction=0.2, checkpoint_every=5,
          keep_checkpoints=2, ema_decay=0.9, dropout=0.1, model_seed=4)


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NEURODECODE_TQDM": "off"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(out: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), json.dumps({**KW, **kw})],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints"
    # the reference, uninterrupted (runs while the killed one is being set up)
    ref = _run(tmp_path / "ref")
    victim = _run(tmp_path / "victim", checkpoint_dir=str(ckpt), sleep_s=0.03)
    deadline = time.monotonic() + 120
    while latest_checkpoint(ckpt) is None:
        assert victim.poll() is None, victim.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "victim" / "model.safetensors").exists()
    _, _, meta = load_checkpoint(latest_checkpoint(ckpt))
    assert not meta["finished"]
    assert 0 < meta["batch_in_epoch"] < meta["settings"]["n_batches_per_epoch"]  # killed mid-epoch

    resumed = _run(tmp_path / "resumed", checkpoint_dir=str(ckpt), resume=True)
    _finish(resumed)
    _finish(ref)
    w_ref = load_file(str(tmp_path / "ref" / "model.safetensors"))
    w_res = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert w_ref.keys() == w_res.keys()
    for k in w_ref:
        assert torch.allclose(w_ref[k], w_res[k], rtol=0, atol=1e-6), k
    h_ref = json.loads((tmp_path / "ref" / "history.json").read_text())
    h_res = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert h_res["resumed_from"] is not None
    assert h_res["best_epoch"] == h_ref["best_epoch"]
    assert len(h_res["history"]) == len(h_ref["history"]) == KW["max_epochs"]
    for a, b in zip(h_ref["history"], h_res["history"]):
        for key in ("train_loss", "val_loss", "val_top1", "lr", "temperature", "step"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_cli_fit_resume_continues_the_run_folder(tmp_path, monkeypatch):
    import numpy as np

    from neurodecode.cli import main

    tiny = ["simulate.n_subjects=1", "simulate.n_sessions=2", "simulate.trials_per_session=120",
            "simulate.image_size=24", "targets.size=6", "models.mlp.max_epochs=2", "models.mlp.hidden_dim=32",
            "models.mlp.batch_size=32", "evaluation.n_boot=20", "evaluation.n_repeats=2",
            "evaluation.n_candidates=10", "report.n_examples=1", "report.n_retrieved=2",
            "models.ridge.enabled=false", "data.subjects=[1]"]
    sets = [x for s in tiny for x in ("--set", s)]
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    assert main(["fit", "-q", *sets, "--output", str(run)]) == 0
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None and load_checkpoint(ckpt)[2]["finished"]
    first = np.load(run / "predictions_mlp.npz")["prediction"]
    # the interrupted run is continued in place from its own config.yaml
    assert main(["fit", "-q", "--resume", str(run)]) == 0
    np.testing.assert_array_equal(np.load(run / "predictions_mlp.npz")["prediction"], first)
    assert main(["fit", "-q", "--resume", str(tmp_path / "nowhere")]) != 0
