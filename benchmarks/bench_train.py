"""Training-step speed and peak memory: ``neurodecode.training.Trainer`` vs a bare PyTorch loop.

Same model (MindEye2 size: 15724 voxels → 4096 latent → residual MLP backbone → 768-d head),
same batches, same optimizer (fused AdamW + one-cycle), same loss (CLIP InfoNCE with a learned
temperature), same dropout generator, same threads. Each side runs in its own fresh process so
peak RSS is its own.

    python benchmarks/bench_train.py                    # batch 32, 8 steps, 2 threads
    python benchmarks/bench_train.py --batch-size 64 --steps 6 --threads 2

Step time is the median gap between consecutive forward calls (steady state, excluding the
first step, which allocates the optimizer state); "fit" is the whole call, setup included.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

N_VOXELS, HIDDEN, EMBED, N_BLOCKS = 15724, 4096, 768, 2


def _problem(n_trials: int):
    import numpy as np
    import pandas as pd

    from neurodecode.datasets import BrainTrials
    from neurodecode.embeddings import StimulusEmbeddings

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_trials, N_VOXELS), dtype=np.float32)
    ev = pd.DataFrame(dict(subject=1, session=1, stimulus_id=np.arange(n_trials), repetition=0,
                           split="train"))
    emb = rng.standard_normal((n_trials, EMBED)).astype(np.float32)
    return BrainTrials(X, ev, {"modality": "fmri"}), StimulusEmbeddings(np.arange(n_trials), emb)


def _model():
    from neurodecode.models import BrainDecoder

    return BrainDecoder({1: N_VOXELS}, embed_dim=EMBED, hidden_dim=HIDDEN, n_blocks=N_BLOCKS, seed=0)


def _timed_forward(model, stamps):
    model.register_forward_pre_hook(lambda *a: stamps.append(time.perf_counter()))


def run_trainer(batch_size: int, steps: int) -> dict:
    from neurodecode.training import Trainer

    trials, targets = _problem(batch_size * steps)
    model = _model()
    stamps: list[float] = []
    _timed_forward(model, stamps)
    t0 = time.perf_counter()
    Trainer(model, batch_size=batch_size, max_epochs=1, val_fraction=0.0, seed=0, lr=3e-4).fit(
        trials, targets, verbose="warning")
    fit_s = time.perf_counter() - t0
    return {"fit_s": fit_s, "stamps": stamps}


def run_bare(batch_size: int, steps: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from neurodecode.models.losses import ClipLoss

    trials, targets = _problem(batch_size * steps)
    model = _model()
    stamps: list[float] = []
    _timed_forward(model, stamps)
    t0 = time.perf_counter()
    X = torch.from_numpy(np.asarray(trials.get_data(), dtype=np.float32))
    Y = F.normalize(torch.from_numpy(targets.lookup(trials.events["stimulus_id"]).astype(np.float32)), dim=1)
    loss_fn = ClipLoss()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2] + list(loss_fn.parameters())
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=3e-4, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-4, total_steps=steps, pct_start=0.3)
    gen = torch.Generator().manual_seed(0)
    drop = torch.Generator().manual_seed(1)
    codes = torch.arange(len(X))
    model.train()
    perm = torch.randperm(len(X), generator=gen)
    for s in range(steps):
        idx = perm[s * batch_size:(s + 1) * batch_size]
        pred = model(X.index_select(0, idx), 1, generator=drop).embedding
        loss = loss_fn(pred, Y.index_select(0, idx), codes.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {"fit_s": time.perf_counter() - t0, "stamps": stamps}


def _child(mode: str, batch_size: int, steps: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    out = (run_trainer if mode == "trainer" else run_bare)(batch_size, steps)
    st = out["stamps"]
    gaps = [b - a for a, b in zip(st[1:], st[2:])]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "fit_s": out["fit_s"], "step_s": statistics.median(gaps),
                      "peak_rss_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="fresh process pairs (best step time kept)")
    ap.add_argument("--_child", choices=["trainer", "bare"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        _child(args._child, args.batch_size, args.steps, args.threads)
        return
    results: dict[str, list[dict]] = {"bare": [], "trainer": []}
    for _ in range(args.repeats):
        for mode in ("bare", "trainer"):
            cmd = [sys.executable, __file__, "--_child", mode, "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--threads", str(args.threads)]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                 env={**__import__("os").environ, "NEURODECODE_TQDM": "off"})
            results[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))
    best = {m: min(r, key=lambda d: d["step_s"]) for m, r in results.items()}
    b = args.batch_size
    print(f"MindEye2-size BrainDecoder ({N_VOXELS} → {HIDDEN} → {N_BLOCKS} blocks → {EMBED}), "
          f"batch {b}, {args.steps} steps, {args.threads} threads, CPU")
    print(f"{'':10s} {'step (s)':>9s} {'samples/s':>10s} {'fit (s)':>8s} {'peak RSS (MB)':>14s}")
    for mode, label in (("bare", "bare loop"), ("trainer", "Trainer")):
        r = best[mode]
        print(f"{label:10s} {r['step_s']:9.3f} {b / r['step_s']:10.1f} {r['fit_s']:8.2f} "
              f"{r['peak_rss_mb']:14.0f}")
    overhead = best["trainer"]["step_s"] / best["bare"]["step_s"] - 1
    print(f"Trainer step overhead: {100 * overhead:+.1f} %")


if __name__ == "__main__":
    main()
