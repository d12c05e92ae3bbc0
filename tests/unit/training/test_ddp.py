"""Two CPU processes (gloo, DDP through accelerate) × batch b train like one process × batch 2b."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("_training_fixtures.py")
# dropout 0: each process draws its own dropout masks, which cannot equal one process's masks
KW = dict(lr=2e-3, max_epochs=3, seed=3, val_fraction=0.2, dropout=0.0, model_seed=1, n_trials=240)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NEURODECODE_TQDM": "off"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return {**env, **{k: str(v) for k, v in extra.items()}}


def _launch(out: Path, world: int, **kw) -> list[subprocess.Popen]:
    args = [sys.executable, str(SCRIPT), str(out), json.dumps({**KW, **kw})]
    if world == 1:
        return [subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    port = _free_port()
    return [subprocess.Popen(args, env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE=world,
                                            RANK=r, LOCAL_RANK=r, LOCAL_WORLD_SIZE=world),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(world)]


def _wait(procs):
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        errs.append(err.decode())
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-4000:]
    return errs


def test_two_processes_match_one_with_double_batch(tmp_path, loss="infonce"):
    single = _launch(tmp_path / "one", 1, batch_size=32, loss=loss)
    _wait(single)
    ddp = _launch(tmp_path / "two", 2, batch_size=16, loss=loss,
                  checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=7)
    errs = _wait(ddp)
    assert "Training on" in errs[0] and "Training on" not in errs[1]  # only rank 0 logs
    w1 = load_file(str(tmp_path / "one" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=0, atol=1e-6), (k, (w1[k] - w2[k]).abs().max())
    print("max |Δw|:", max(float((w1[k] - w2[k]).abs().max()) for k in w1))
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    assert h1["best_epoch"] == h2["best_epoch"]
    for a, b in zip(h1["history"], h2["history"]):
        assert a["step"] == b["step"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    # rank 0 wrote the checkpoints, with both processes' dropout generator states
    from neurodecode.training import latest_checkpoint, load_checkpoint

    _, tstate, meta = load_checkpoint(latest_checkpoint(tmp_path / "ckpt"))
    assert meta["finished"] and meta["settings"]["world_size"] == 2
    assert len(tstate["dropout_generators"]) == 2
