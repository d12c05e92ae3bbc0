"""Network ablation on planted truth: how often is the planted network found, and how often does an
unplanted one reach significance?

Not part of the test run (about 20 s per seed on 2 CPU cores):

    python benchmarks/sweep_network_ablation.py                 # 21 seeds (3 per network), both modes
    python benchmarks/sweep_network_ablation.py --seeds 28 --strategy permute --csv sweep.csv

Protocol, per simulator mode (``--response``: nonlinear and linear by default) and seed ``k``:
``simulate("nsd", n_subjects=1, n_sessions=4, trials_per_session=300, seed=k, signal_rois=[NET],
response=MODE)`` with ``NET`` the k-th of the 7 Yeo-like networks in turn (so every network
is planted equally often); ``load_nsd(roi=None)`` (every brain voxel); 8×8 pixel targets; a ridge decoder
per subject (alpha by leave-one-out); ``ablate`` with the simulator's network atlas
(``simulation/atlases/subj01_networks7.nii.gz``), ``--strategy`` (default ``zero``), metric 2-way
identification among the averaged test images, 200 random contiguous regions of the same size per
network, BH-FDR over the 7 networks.

Printed: the hit rate (planted network ranked first with p < .05), the planted network's detection rate
at FDR .05, and the false-positive rates of unplanted networks (raw p < .05 and FDR < .05), each with a
95 % Wilson interval. The baseline column is what a random ranking would give (1/7 hits; 5 % raw false
positives by construction of a valid test).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

NETWORKS = ("Visual", "Somatomotor", "DorsalAttention", "VentralAttention", "Limbic", "Frontoparietal",
            "Default")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, float(c - h)), min(1.0, float(c + h))


def one_seed(seed: int, planted: str, strategy: str, n_null: int, workdir: Path,
             response: str = "nonlinear") -> pd.DataFrame:
    from neurodecode.analysis import ablate, parse_atlas
    from neurodecode.datasets import load_nsd, simulate
    from neurodecode.embeddings import embed_images
    from neurodecode.models import RidgeDecoder

    root = simulate("nsd", workdir / f"nsd-{seed}-{response}", n_subjects=1, n_sessions=4,
                    trials_per_session=300, seed=seed, signal_rois=[planted], response=response, verbose="error")
    trials = load_nsd(root, 1, roi=None, verbose="error")
    train, test = trials.select(split="train"), trials.select(split="test").average_repetitions()
    ids = trials.events["stimulus_id"].drop_duplicates().tolist()
    targets = embed_images(trials.stimuli, ids, encoder="pixels", size=8, verbose="error")
    ridge = RidgeDecoder(alphas=(1e2, 1e3, 1e4, 1e5), cv=None).fit_trials(train, targets, verbose="error")
    atlas = parse_atlas(str(root / "simulation" / "atlases" / "subj{subject:02d}_networks7.nii.gz"))
    res = ablate(ridge, train if strategy == "mean" else None, test, targets, atlas, strategies=(strategy,),
                 metrics=("2way",), n_null=n_null, n_boot=200, random_state=seed, verbose="error")
    f = res.to_frame()
    f["seed"], f["planted"], f["baseline_2way"] = seed, planted, res.baseline["2way"]["value"]
    return f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=21, help="number of seeds (>= 20 for the issue)")
    parser.add_argument("--strategy", default="zero", choices=("zero", "mean", "permute"))
    parser.add_argument("--n-null", type=int, default=200)
    parser.add_argument("--response", nargs="+", default=["nonlinear", "linear"], choices=("nonlinear", "linear"),
                        help="simulator mode(s) (simulate.response); each is swept over every seed")
    parser.add_argument("--csv", help="also write every row here")
    args = parser.parse_args()
    frames = []
    for response in args.response:
        frames.append(sweep(args, response))
    if args.csv:
        pd.concat(frames, ignore_index=True).to_csv(args.csv, index=False)


def sweep(args: argparse.Namespace, response: str) -> pd.DataFrame:
    """Every seed in one simulator mode; prints the per-seed lines and the summary table."""
    rows = []
    t0 = time.perf_counter()
    print(f"\nsimulate.response = {response}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            planted = NETWORKS[seed % len(NETWORKS)]
            f = one_seed(seed, planted, args.strategy, args.n_null, Path(tmp), response)
            top = f.sort_values("rank").iloc[0]
            mine = f[f.region == planted].iloc[0]
            print(f"seed {seed:2d} planted {planted:16s} intact 2-way {f['baseline_2way'].iloc[0]:.3f} | "
                  f"top {top.region:16s} p={mine.p_value:.3f} FDR={mine.p_fdr:.3f} | unplanted p<.05: "
                  f"{int(((f.region != planted) & (f.p_value < 0.05)).sum())}", flush=True)
            rows.append(f)
    allf = pd.concat(rows, ignore_index=True)
    allf["response"] = response
    per_seed = allf.groupby("seed")
    hits = sum(int(g.sort_values("rank").iloc[0]["region"] == g["planted"].iloc[0]
                   and g[g.region == g["planted"].iloc[0]]["p_value"].iloc[0] < 0.05) for _, g in per_seed)
    found_fdr = int((allf[allf.region == allf.planted]["p_fdr"] < 0.05).sum())
    un = allf[allf.region != allf.planted]
    fp_raw, fp_fdr, n_un = int((un.p_value < 0.05).sum()), int((un.p_fdr < 0.05).sum()), len(un)
    n = args.seeds
    print(f"\n{response} responses: {n} seeds, strategy {args.strategy}, 2-way, {args.n_null} null regions, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'measure':58s} {'neurodecode':>22s} {'baseline':>10s}")
    for label, k, total, base in (("planted network ranked first with p < .05", hits, n, f"{1 / 7:.2f}"),
                                  ("planted network significant at FDR .05", found_fdr, n, "-"),
                                  ("unplanted networks with raw p < .05", fp_raw, n_un, "0.050"),
                                  ("unplanted networks significant at FDR .05", fp_fdr, n_un, "-")):
        lo, hi = wilson(k, total)
        print(f"{label:58s} {k:3d}/{total} = {k / total:.3f} [{lo:.3f}, {hi:.3f}] {base:>10s}")
    return allf

if __name__ == "__main__":
    main()
