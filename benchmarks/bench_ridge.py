"""Benchmark: neurodecode RidgeDecoder vs scikit-learn RidgeCV, same data, same alphas.

Run::

    python benchmarks/bench_ridge.py                # NSD-like leave-one-out + a smaller 5-fold run
    python benchmarks/bench_ridge.py --n 2000 --p 8000 --k 256 --no-kfold

Prints a markdown table: wall time of each, speed-up, chosen alpha (must agree)
and the maximum relative difference of predictions on held-out data.
Both run on the same threads; scikit-learn in float64, RidgeDecoder with
``precision="auto"`` (``--precision``): its leave-one-out alpha scan runs in
float32 from 1000 samples on, its chosen alpha and weights are float64's.
Needs scikit-learn (``[bench]``).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def make_data(n: int, p: int, k: int, n_test: int, seed: int) -> tuple:
    """fMRI-like synthetic data: targets are a noisy linear read-out of the responses."""
    rng = np.random.default_rng(seed)
    n_latent = 64
    # responses with a low-rank shared component (like correlated voxels) plus noise
    mix = rng.standard_normal((n_latent, p)) / np.sqrt(n_latent)
    Z = rng.standard_normal((n + n_test, n_latent))
    X = Z @ mix + rng.standard_normal((n + n_test, p))
    W = rng.standard_normal((n_latent, k))
    Y = Z @ W + 3.0 * rng.standard_normal((n + n_test, k))
    return X[:n], Y[:n], X[n:], Y[n:]


def run_one(name: str, make, X, Y, Xt) -> tuple:
    est = make()
    t0 = time.perf_counter()
    est.fit(X, Y)
    dt = time.perf_counter() - t0
    return dt, est.alpha_, est.predict(Xt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="training trials")
    parser.add_argument("--p", type=int, default=15724, help="voxels (NSD subj01 nsdgeneral: 15724)")
    parser.add_argument("--k", type=int, default=768, help="targets (CLIP ViT-L/14: 768)")
    parser.add_argument("--n-test", type=int, default=500, help="held-out trials")
    parser.add_argument("--n-alphas", type=int, default=11, help="alphas on a log grid 1e0..1e5")
    parser.add_argument("--kfold", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare 5-fold CV, on smaller data (sklearn refits per fold and alpha)")
    parser.add_argument("--kfold-size", type=int, nargs=3, default=(1500, 6000, 256), metavar=("N", "P", "K"),
                        help="n, p, k of the 5-fold comparison")
    parser.add_argument("--precision", choices=("auto", "float64", "mixed"), default="auto",
                        help="RidgeDecoder(precision=...)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sklearn.linear_model import RidgeCV
    import torch
    from threadpoolctl import threadpool_info

    from neurodecode.models import RidgeDecoder
    from neurodecode.utils import set_log_level

    set_log_level("warning")
    alphas = np.logspace(0, 5, args.n_alphas)
    blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info())
    print(f"{len(alphas)} alphas (1e0..1e5), RidgeDecoder precision={args.precision!r}, "
          f"{args.n_test} held-out trials; torch {torch.get_num_threads()} threads; "
          f"{platform.processor() or platform.machine()}; {blas}\n")

    settings = [("leave-one-out (cv=None)", (args.n, args.p, args.k),
                 lambda: RidgeDecoder(alphas=alphas, cv=None, precision=args.precision),
                 lambda: RidgeCV(alphas=alphas, alpha_per_target=False))]
    if args.kfold:
        settings.append(("5-fold (cv=5)", tuple(args.kfold_size),
                         lambda: RidgeDecoder(alphas=alphas, cv=5, precision=args.precision),
                         lambda: RidgeCV(alphas=alphas, cv=5, alpha_per_target=False)))
    rows = []
    for label, (n, p, k), ours, theirs in settings:
        X, Y, Xt, _ = make_data(n, p, k, args.n_test, args.seed)
        label = f"{label}, n={n} p={p} k={k}"
        t_ours, a_ours, p_ours = run_one("neurodecode", ours, X, Y, Xt)
        t_sk, a_sk, p_sk = run_one("sklearn", theirs, X, Y, Xt)
        rel = float(np.abs(p_ours - p_sk).max() / np.abs(p_sk).max())
        rows.append((label, t_ours, t_sk, t_sk / t_ours, a_ours, a_sk, rel))
        del X, Y, Xt

    print("| CV mode, data | neurodecode (s) | sklearn RidgeCV (s) | speed-up | alpha ours | alpha sklearn "
          "| max rel. diff (held-out pred.) |")
    print("|---|---|---|---|---|---|---|")
    for label, t_o, t_s, sp, a_o, a_s, rel in rows:
        agree = "" if np.isclose(a_o, a_s) else " **(differ)**"
        print(f"| {label} | {t_o:.2f} | {t_s:.2f} | {sp:.1f}× | {a_o:.4g} | {a_s:.4g}{agree} | {rel:.1e} |")


if __name__ == "__main__":
    main()
