"""Tiny planted problem shared by the training tests, and a script to train it in a subprocess.

Run as a script (``python _training_fixtures.py OUT_DIR '{json kwargs}'``), it builds the
data and model, trains with ``Trainer(**trainer_kw)`` and writes ``OUT_DIR/model.safetensors``
and ``OUT_DIR/history.json`` (main process only). Keys of the JSON besides the Trainer's:
``checkpoint_dir``, ``resume``, ``sleep_s`` (per batch, to make a run slow enough to kill),
``model_seed``, ``dropout``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_STIM, DIM = 120, 16


def planted(n_trials=360, sizes=((1, 40), (2, 55)), noise=0.5, seed=0):
    """Two subjects whose responses are a linear map of the stimulus embedding plus noise."""
    from neurodecode.datasets import BrainTrials
    from neurodecode.embeddings import StimulusEmbeddings

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((N_STIM, DIM)).astype(np.float32)
    parts = []
    for subject, p in sizes:
        ids = np.tile(np.arange(N_STIM), n_trials // N_STIM + 1)[:n_trials]
        W = rng.standard_normal((DIM, p)).astype(np.float32)
        X = emb[ids] @ W + noise * rng.standard_normal((n_trials, p)).astype(np.float32)
        ev = pd.DataFrame(dict(subject=subject, session=1, stimulus_id=ids, repetition=0, split="train"))
        parts.append(BrainTrials(X, ev, {"modality": "fmri"}))
    return BrainTrials.concatenate(parts), StimulusEmbeddings(np.arange(N_STIM), emb)


def tiny_model(trials, seed=0, dropout=0.1):
    from neurodecode.models import BrainDecoder

    sizes = {s: int(np.prod(t.feature_shape)) for s, t in trials.by_subject().items()}
    return BrainDecoder(sizes, embed_dim=DIM, hidden_dim=64, n_blocks=1, dropout=dropout, seed=seed)


def main(out_dir: str, kw_json: str) -> None:
    import torch

    torch.set_num_threads(1)
    from neurodecode.training import Trainer, _data

    kw = json.loads(kw_json)
    checkpoint_dir = kw.pop("checkpoint_dir", None)
    resume = kw.pop("resume", False)
    sleep_s = kw.pop("sleep_s", 0.0)
    model_seed = kw.pop("model_seed", 0)
    dropout = kw.pop("dropout", 0.1)
    n_trials = kw.pop("n_trials", 240)
    if sleep_s:
        features = _data.SubjectData.features

        def slow(self, idx, device):
            time.sleep(sleep_s)
            return features(self, idx, device)

        _data.SubjectData.features = slow
    trials, targets = planted(n_trials=n_trials)
    model = tiny_model(trials, seed=model_seed, dropout=dropout)
    trainer = Trainer(model, **kw).fit(trials, targets, checkpoint_dir=checkpoint_dir, resume=resume)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
        hist = [{k: v for k, v in h.items() if k != "time_s"} for h in trainer.history_]
        resumed = None if trainer.resumed_from_ is None else str(trainer.resumed_from_)
        (out / "history.json").write_text(json.dumps({"history": hist, "resumed_from": resumed,
                                                      "best_epoch": trainer.best_epoch_}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
