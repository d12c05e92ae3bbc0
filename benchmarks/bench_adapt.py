"""New-subject adaptation vs training from scratch, with 10 % of the new subject's data.

The issue's acceptance measurement: on the simulator, a BrainDecoder pretrained on
other subjects and adapted (MindBridge reset-tuning, ``neurodecode.training.adapt_subject``)
with 10 % of a new subject's training images must beat a model trained from scratch on
the same 10 %.

    python benchmarks/bench_adapt.py                       # 3 seeds, ~4-6 min on 2 CPU cores
    python benchmarks/bench_adapt.py --seeds 0 --fraction 0.2

Protocol: ``simulate("nsd", n_subjects=4, n_sessions=4, trials_per_session=750,
shared_fraction=0.2, seed=0)``; ``load_nsd(zscore="session")`` per subject; targets are
16×16 pixel embeddings. One model is pretrained on subjects 1–3 (all training trials).
For each seed, a random ``--fraction`` of subject 4's training *images* (all repetitions
of each) is drawn; the pretrained model is adapted on them, and a fresh model of the same
architecture is trained from scratch on exactly the same trials for the same number of
epochs. Both are scored on subject 4's test images (repetitions averaged) with
``evaluate_retrieval`` (N-way top-1 with N = min(300, n_test), 30 draws; 2-way;
1000-resample bootstrap 95 % CIs over test images).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np


def _fmt(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "neurodecode_bench_adapt_sim"))
    ap.add_argument("--trials-per-session", type=int, default=750)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--hidden-dim", type=int, default=512)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=20, help="adaptation epochs (both phases) = scratch epochs")
    ap.add_argument("--freeze-epochs", type=int, default=5)
    ap.add_argument("--shared-lr-scale", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--scratch-epochs", type=int, default=None,
                    help="epochs of the scratch model (default: --epochs)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from neurodecode.datasets import BrainTrials, load_nsd, simulate
    from neurodecode.embeddings.pixels import embed_images
    from neurodecode.models import BrainDecoder
    from neurodecode.tasks.retrieval import evaluate_retrieval
    from neurodecode.training import Trainer, adapt_subject

    t = time.perf_counter()
    root = simulate("nsd", args.root, n_subjects=4, n_sessions=4, trials_per_session=args.trials_per_session,
                    shared_fraction=0.2, seed=0, verbose="warning")
    subj = {s: load_nsd(root, s, zscore="session", verbose="warning") for s in (1, 2, 3, 4)}
    allt = BrainTrials.concatenate(list(subj.values()))
    ids = allt.events["stimulus_id"].drop_duplicates().tolist()
    targets = embed_images(allt.stimuli, ids, encoder="pixels", size=16, verbose="warning")
    print(f"data: {time.perf_counter() - t:.1f} s; voxels per subject "
          f"{ {s: tr.shape[1] for s, tr in subj.items()} }; target dim {targets.dim}")

    common = dict(embed_dim=targets.dim, hidden_dim=args.hidden_dim, n_blocks=2, dropout=0.1)
    train_kw = dict(lr=args.lr, batch_size=64, val_fraction=0.1, device="cpu")

    # pretraining on subjects 1-3
    pre_train = BrainTrials.concatenate([subj[s].select(split="train") for s in (1, 2, 3)])
    t = time.perf_counter()
    pre = BrainDecoder({s: subj[s].shape[1] for s in (1, 2, 3)}, seed=0, **common)
    Trainer(pre, max_epochs=args.pretrain_epochs, seed=0, **train_kw).fit(pre_train, targets,
                                                                        verbose="warning")
    pre_s = time.perf_counter() - t
    print(f"pretraining on subjects 1-3: {len(pre_train)} trials, {args.pretrain_epochs} epochs, "
          f"{pre_s:.1f} s")

    new = subj[4]
    train4, test4 = new.select(split="train"), new.select(split="test").average_repetitions()
    y_test = targets.lookup(test4.events["stimulus_id"].tolist())
    n_cand = min(300, len(test4))
    train_ids = np.array(sorted(train4.events["stimulus_id"].unique()))

    def score(model, seed):
        pred = model.predict(test4)
        return evaluate_retrieval(pred, y_test, n_candidates=n_cand, n_repeats=30, n_boot=1000,
                                  random_state=seed, verbose="warning").metrics

    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        k = max(2, int(round(args.fraction * len(train_ids))))
        chosen = rng.choice(train_ids, size=k, replace=False)
        few = train4.select(stimulus_id=list(chosen))

        t = time.perf_counter()
        model = copy.deepcopy(pre)
        res = adapt_subject(model, few, targets, freeze_epochs=args.freeze_epochs, max_epochs=args.epochs,
                            shared_lr_scale=args.shared_lr_scale, seed=seed, verbose="warning", **train_kw)
        rows.append(("adapted (pretrained 1-3)", seed, len(few), score(res.model, seed),
                     time.perf_counter() - t))

        t = time.perf_counter()
        scratch = BrainDecoder({4: new.shape[1]}, seed=seed, **common)
        Trainer(scratch, max_epochs=args.scratch_epochs or args.epochs, seed=seed, **train_kw).fit(
            few, targets, verbose="warning")
        rows.append(("from scratch", seed, len(few), score(scratch, seed), time.perf_counter() - t))
        print(f"seed {seed} done", flush=True)

    print()
    print(f"Subject 4, {args.fraction:.0%} of training images ({k} images); test: {len(test4)} images "
          f"(repetitions averaged), N-way with N = {n_cand}; chance N-way {1 / n_cand:.3f}, 2-way 0.5. "
          f"Adaptation: {args.freeze_epochs} frozen + {args.epochs - args.freeze_epochs} unfrozen epochs "
          f"(shared lr ×{args.shared_lr_scale}); scratch: {args.scratch_epochs or args.epochs} epochs; "
          f"lr {args.lr}; pretraining {pre_s:.0f} s (not in wall time).")
    print()
    print(f"| condition | seed | n train trials | {n_cand}-way top-1 fwd [95% CI] | {n_cand}-way top-1 bwd "
          "[95% CI] | 2-way fwd [95% CI] | wall time (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, seed, n, m, wall in rows:
        print(f"| {name} | {seed} | {n} | {_fmt(m['nway_top1_forward'])} | {_fmt(m['nway_top1_backward'])} | "
              f"{_fmt(m['2way_forward'])} | {wall:.1f} |")
    for name in ("adapted (pretrained 1-3)", "from scratch"):
        vals = np.array([[r[3]["nway_top1_forward"]["value"], r[3]["nway_top1_backward"]["value"],
                          r[3]["2way_forward"]["value"]] for r in rows if r[0] == name])
        mean = vals.mean(0)
        print(f"| **{name}, mean of {len(vals)} seeds** | | | {mean[0]:.3f} | {mean[1]:.3f} | "
              f"{mean[2]:.3f} | |")
    wins = sum(a[3]["nway_top1_forward"]["value"] > b[3]["nway_top1_forward"]["value"]
               for a, b in zip(rows[::2], rows[1::2]))
    print(f"\nadapted > scratch on {n_cand}-way top-1 fwd in {wins}/{len(args.seeds)} seeds")


if __name__ == "__main__":
    main()
