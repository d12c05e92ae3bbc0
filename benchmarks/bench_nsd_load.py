"""Benchmark: ``load_nsd`` (lazy masked HDF5 read) vs nibabel + nilearn ``NiftiMasker``.

Simulates one NSD subject at real size with neurodecode's NSD writers (grid
81 x 104 x 83, an ellipsoid brain mask, a posterior nsdgeneral ROI of 15,724
voxels, ``--sessions`` x 750 trials of int16 betas, each session as ``.hdf5``
with chunks (750, 1, 1, 1) and as ``.nii.gz``), then times each reader in a
fresh subprocess so its peak RSS is clean (peak = VmHWM, reset after the imports):

(a) ``load_nsd(root, 1, zscore=None)`` reading the ``.hdf5`` files;
(b) baseline: ``nibabel.load`` each ``.nii.gz`` + ``NiftiMasker(mask_img=nsdgeneral>0)
    .fit().transform(img)`` per session, concatenated, / 300;
(c) ``load_nsd(..., betas_format="nii.gz")`` for reference.

Usage::

    python benchmarks/bench_nsd_load.py --out /tmp/nd_bench_nsd --sessions 3

The generated data is written once and reused on later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GRID = (81, 104, 83)  # subject 1, func1pt8mm
N_NSDGENERAL = 15724  # subject 1
N_TRIALS = 750
SUBJECT = 1


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def generate(out: Path, n_sessions: int, seed: int = 0) -> dict:
    """Write the simulated subject under ``out`` (skipped when already there)."""
    from neurodecode.io.nsd import NSDLayout, write_betas, write_expdesign, write_volume

    marker = out / "bench_ready.json"
    params = {"grid": list(GRID), "n_sessions": n_sessions, "n_trials": N_TRIALS, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()).get("params") == params:
        return json.loads(marker.read_text())
    rng = np.random.default_rng(seed)
    lay = NSDLayout(out)
    c = (np.array(GRID) - 1) / 2
    xx, yy, zz = np.meshgrid(*[np.arange(n) for n in GRID], indexing="ij")
    semi = np.array(GRID) * 0.45
    brain = ((xx - c[0]) / semi[0]) ** 2 + ((yy - c[1]) / semi[1]) ** 2 + ((zz - c[2]) / semi[2]) ** 2 < 1
    # nsdgeneral: the N voxels of the brain closest to a posterior point (low Y)
    post = np.array([c[0], c[1] - 0.7 * semi[1], c[2]])
    d = (xx - post[0]) ** 2 + (yy - post[1]) ** 2 + (zz - post[2]) ** 2
    d = np.where(brain, d, np.inf)
    keep = np.argsort(d, axis=None, kind="stable")[:N_NSDGENERAL]
    roi = np.where(brain, 0, -1).astype(np.int16)
    roi.flat[keep] = 1
    write_volume(lay.brainmask(SUBJECT), brain.astype(np.uint8))
    write_volume(lay.roi_file(SUBJECT, "nsdgeneral"), roi)
    mo = rng.integers(1, 10001, 30000)
    subjectim = np.stack([rng.permutation(73000)[:10000] + 1 for _ in range(8)])
    write_expdesign(lay.expdesign, mo, subjectim, subjectim[0, :1000])
    t_h5, t_nii = [], []
    n_brain = int(brain.sum())
    for ses in range(1, n_sessions + 1):
        betas = np.zeros((*GRID, N_TRIALS), dtype=np.int16)
        betas[brain] = rng.integers(-3000, 3000, (n_brain, N_TRIALS), dtype=np.int16)
        t0 = time.perf_counter()
        write_betas(lay.betas_file(SUBJECT, ses, "hdf5"), betas)
        t_h5.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        write_betas(lay.betas_file(SUBJECT, ses, "nii.gz"), betas)
        t_nii.append(time.perf_counter() - t0)
        print(f"  wrote session {ses}: hdf5 {t_h5[-1]:.1f} s, nii.gz {t_nii[-1]:.1f} s", flush=True)
        del betas
    info = {"params": params, "n_brain": n_brain, "write_hdf5_s": t_h5, "write_nii_s": t_nii}
    marker.write_text(json.dumps(info))
    return info


# ---------------------------------------------------------------------------
# workers (each run in a fresh process)
# ---------------------------------------------------------------------------
def _rss_now_kb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1024


def _reset_peak_rss() -> None:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_kb() -> float:
    """Peak RSS of this process: VmHWM (per address space, so not inherited through fork/exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _worker(kind: str, out: Path) -> None:
    # import the libraries each reader uses before taking the baseline RSS
    import h5py  # noqa: F401
    import nibabel as nib
    import scipy.io  # noqa: F401
    import tqdm.auto  # noqa: F401

    if kind.startswith("neurodecode"):
        from neurodecode.datasets import load_nsd
        from neurodecode.io.nsd import NSDLayout
    else:
        from nilearn.maskers import NiftiMasker

        from neurodecode.io.nsd import NSDLayout
    lay = NSDLayout(out)
    _reset_peak_rss()
    base = _rss_now_kb()
    t0 = time.perf_counter()
    if kind == "neurodecode_hdf5":
        data = load_nsd(out, SUBJECT, zscore=None, betas_format="hdf5", verbose=False).data
    elif kind == "neurodecode_nii":
        data = load_nsd(out, SUBJECT, zscore=None, betas_format="nii.gz", verbose=False).data
    else:
        mask_img = nib.load(lay.roi_file(SUBJECT, "nsdgeneral"))
        mask_img = nib.Nifti1Image((np.asanyarray(mask_img.dataobj) > 0).astype(np.uint8),
                                   mask_img.affine)
        masker = NiftiMasker(mask_img=mask_img).fit()
        parts = []
        for ses in lay.sessions_found(SUBJECT):
            img = nib.load(lay.betas_file(SUBJECT, ses, "nii.gz"))
            parts.append(masker.transform(img))
            del img
        data = np.concatenate(parts) / 300
    wall = time.perf_counter() - t0
    peak = _peak_rss_kb()
    np.save(out / f"bench_out_{kind}.npy", data)
    print(json.dumps({"kind": kind, "wall_s": wall, "peak_delta_mb": (peak - base) / 1024,
                      "shape": list(data.shape), "dtype": str(data.dtype),
                      "out_mb": data.shape[0] * data.shape[1] * 4 / 2 ** 20}))


def _run_worker(kind: str, out: Path) -> dict:
    env = dict(os.environ, NEURODECODE_TQDM="off")
    res = subprocess.run([sys.executable, __file__, "--_worker", kind, "--out", str(out)],
                         capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/nd_bench_nsd", help="where the simulated subject lives")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--skip-nii-loader", action="store_true", help="skip row (c)")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    if args._worker:
        _worker(args._worker, out)
        return
    print(f"# NSD load benchmark ({args.sessions} sessions x {N_TRIALS} trials, grid {GRID}, "
          f"{N_NSDGENERAL} nsdgeneral voxels)")
    t0 = time.perf_counter()
    info = generate(out, args.sessions)
    print(f"data in {out} ({time.perf_counter() - t0:.1f} s; brain {info['n_brain']:,} voxels; "
          f"write per session: hdf5 {np.mean(info['write_hdf5_s']):.1f} s, "
          f"nii.gz {np.mean(info['write_nii_s']):.1f} s)\n")
    kinds = ["neurodecode_hdf5", "nilearn_baseline"] + ([] if args.skip_nii_loader else ["neurodecode_nii"])
    results = {k: _run_worker(k, out) for k in kinds}
    ref = np.load(out / "bench_out_nilearn_baseline.npy")
    base_wall = results["nilearn_baseline"]["wall_s"]
    labels = {"neurodecode_hdf5": "(a) load_nsd, .hdf5 (masked chunks)",
              "nilearn_baseline": "(b) nibabel + NiftiMasker, .nii.gz",
              "neurodecode_nii": "(c) load_nsd, .nii.gz (streamed)"}
    print("| reader | wall (s) | speed-up vs (b) | peak RSS Δ (MB) | output (MB) | RSS / output "
          "| equal to (b) |")
    print("|---|---|---|---|---|---|---|")
    for k, r in results.items():
        arr = np.load(out / f"bench_out_{k}.npy")
        same = arr.shape == ref.shape and np.allclose(arr, ref, rtol=0, atol=1e-5)
        print(f"| {labels[k]} | {r['wall_s']:.2f} | {base_wall / r['wall_s']:.1f}x | "
              f"{r['peak_delta_mb']:.0f} | {r['out_mb']:.0f} | {r['peak_delta_mb'] / r['out_mb']:.2f} | "
              f"{'yes' if same else 'NO'} |")
    a = np.load(out / "bench_out_neurodecode_hdf5.npy")
    print(f"\nshape {a.shape}; max |(a) - (b)| = {np.abs(a - ref).max():.2e} "
          "(NiftiMasker's voxel order is the C-order of the (X, Y, Z) mask, as load_nsd's)")
    sp = base_wall / results["neurodecode_hdf5"]["wall_s"]
    ratio = results["neurodecode_hdf5"]["peak_delta_mb"] / results["neurodecode_hdf5"]["out_mb"]
    print(f"targets: speed-up >= 5x: {'met' if sp >= 5 else 'NOT met'} ({sp:.1f}x); "
          f"peak RSS <= 1.5x output: {'met' if ratio <= 1.5 else 'NOT met'} ({ratio:.2f}x)")
    print("(files were just written, so both readers read from the OS page cache)")


if __name__ == "__main__":
    main()
