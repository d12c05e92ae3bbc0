"""Sweeps through submitit's local executor (real subprocesses), `neurodecode summarize` on their run folders,
a preempted job requeued by submitit that resumes exactly, and a leave-one-subject-out fold run as its own job."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurodecode.cli import main

pytest.importorskip("submitit")

TINY = [
    "simulate.n_subjects=2", "simulate.n_sessions=3", "simulate.trials_per_session=120", "simulate.image_size=24",
    "simulate.snr=2.0", "targets.size=6", "evaluation.n_boot=20", "evaluation.n_repeats=2", "report.n_examples=0",
]


def _sets(items):
    return [arg for s in items for arg in ("--set", s)]


def test_local_sweep_runs_every_job_and_summarize_tabulates_them(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["fit", "-q", "demo", *_sets([*TINY, "models.mlp.enabled=false"]), "--output", str(out),
            "--sweep", "evaluation.n_candidates=10,20", "--seeds", "0,1", "--max-parallel", "2"]
    assert main(argv) == 0
    names = [f"evaluation.n_candidates={n}/seed={s}" for n in (10, 20) for s in (0, 1)]
    manifest = json.loads((out / "sweep.json").read_text())
    assert [(j["name"], j["state"]) for j in manifest["jobs"]] == [(n, "finished") for n in names]
    metrics = {n: json.loads((out / n / "metrics.json").read_text()) for n in names}
    pids = {j["job_id"] for j in manifest["jobs"]}
    assert len(pids) == 4 and str(os.getpid()) not in pids  # four processes, none of them this one
    for n, m in metrics.items():
        assert m["models"]["ridge"]["subj01"]["metrics"]["nway_top1_forward"]["chance"] == pytest.approx(
            1 / int(n.split("=")[1].split("/")[0]))
        assert (out / n / "report.html").is_file() and (out / n / "run.json").is_file()

    # rerunning the same command finishes nothing twice: every job is skipped, no process is started
    before = {n: (out / n / "run.json").stat().st_mtime_ns for n in names}
    n_logs = len(list((out / "submitit").iterdir()))
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("finished    evaluation.n_candidates=") == 4
    assert {n: (out / n / "run.json").stat().st_mtime_ns for n in names} == before
    assert len(list((out / "submitit").iterdir())) == n_logs

    assert main(["summarize", "-q", str(out)]) == 0
    csv = pd.read_csv(out / "summary.csv")
    for n_cand in (10, 20):
        per_seed = [np.mean([metrics[f"evaluation.n_candidates={n_cand}/seed={s}"]["models"]["ridge"][subj]
                             ["metrics"]["nway_top1_forward"]["value"] for subj in ("subj01", "subj02")])
                    for s in (0, 1)]
        mean, sd = np.mean(per_seed), np.std(per_seed, ddof=1)
        half = stats.t.ppf(0.975, 1) * sd / math.sqrt(2)
        row = csv[(csv["evaluation.n_candidates"] == n_cand) & (csv["model"] == "ridge")
                  & (csv["metric"] == "nway_top1_forward")]
        assert len(row) == 1
        row = row.iloc[0]
        assert row["n_seeds"] == 2 and row["seeds"] == "0;1" and row["n_subjects"] == 2
        assert row["mean"] == pytest.approx(mean, abs=1e-12) and row["sd"] == pytest.approx(sd, abs=1e-12)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half), abs=1e-12)
        assert row["chance"] == pytest.approx(1 / n_cand)
        md_line = (f"| {n_cand} | ridge | nway_top1_forward | 2 | {mean:.4f} | {sd:.4f} | "
                   f"[{mean - half:.4f}, {mean + half:.4f}] | {1 / n_cand:.4f} | 2 |")
        assert md_line in (out / "summary.md").read_text()
        assert f"[{mean - half:.4f}, {mean + half:.4f}]" in (out / "summary.html").read_text()


def _children(pid):
    """Processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(p.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the job's process through /proc")
def test_a_preempted_job_is_requeued_and_resumes_exactly(tmp_path):
    import submitit

    from neurodecode.workflow import expand_sweep

    sets = [*TINY, "models.ridge.enabled=false", "models.mlp.max_epochs=30", "models.mlp.hidden_dim=32",
            "models.mlp.batch_size=32", "models.mlp.checkpoint_every=10", "evaluation.n_candidates=10"]
    reference = expand_sweep(None, sets, output=tmp_path / "reference", threads=1).jobs[0]
    job = expand_sweep(None, sets, output=tmp_path / "preempted", threads=1).jobs[0]
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit" / "%j")
    executor.update_parameters(timeout_min=30)
    ref_sub, sub = executor.submit(reference), executor.submit(job)
    t0 = time.monotonic()
    while not list((job.run_dir / "checkpoints").glob("step-*")):  # training has written a checkpoint
        assert time.monotonic() - t0 < 120 and not sub.done(), sub.stderr()
        time.sleep(0.05)
    (task,) = _children(sub._process.pid)  # the job's process, under submitit's local controller
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before preempting or at the time limit
    assert ref_sub.result()["status"] == "fitted"
    result = sub.result()
    assert result == {"run_dir": str(job.run_dir), "status": "resumed", "requeues": 1}, sub.stderr()
    log = (sub.stdout() or "") + (sub.stderr() or "")  # submitit logs to stdout, neurodecode to stderr
    assert "Calling checkpoint method" in log and "Requeued job" in log and "Resumed from" in log, log
    done = json.loads((job.run_dir / "metrics.json").read_text())
    ref = json.loads((reference.run_dir / "metrics.json").read_text())
    assert done["models"] == ref["models"]  # the requeued job resumed exactly: the same scores
    # the same weights, bit for bit (not the same file bytes: safetensors writes its metadata mapping in
    # a per-process hash order)
    from safetensors.numpy import load_file

    got = load_file(job.run_dir / "models" / "mlp" / "model.safetensors")
    want = load_file(reference.run_dir / "models" / "mlp" / "model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].tobytes() == want[key].tobytes(), key


def test_a_loso_fold_job_equals_its_entry_in_the_full_run(tmp_path):
    """`evaluation.loso_subjects=[2]` (one sweep job) scores subject 2 exactly as the full LOSO run does."""
    from neurodecode.config import load_config
    from neurodecode.workflow import run_fit

    sets = [
        "data.root=null", "data.subjects=[1,2]", "device=cpu", "targets.weights=null", "targets.encoder=pixels",
        "targets.size=6", "simulate.image_size=24", "evaluation.time_windows=null", "evaluation.scheme=loso",
        ("simulate.params={variant: atm, n_train_concepts: 30, images_per_concept: 2, n_train_reps: 2, "
         "n_test_concepts: 20, n_test_reps: 2, signal_window: [0.1, 0.25], subject_similarity: 0.8}"),
        "models.mlp.max_epochs=1", "models.mlp.hidden_dim=16", "models.mlp.batch_size=32",
        "models.mlp.backbone_kwargs={d_model: 80, n_filters: 4}", "models.ridge.alphas=[10.0,1000.0]",
        "evaluation.n_boot=20", "evaluation.n_candidates=null", "report.n_examples=0",
    ]
    recipe = Path(__file__).resolve().parents[2] / "neurodecode" / "pipelines" / "things_eeg_atm.yaml"
    full = run_fit(load_config(recipe, sets), run_dir=tmp_path / "full", verbose="warning")
    fold = run_fit(load_config(recipe, [*sets, "evaluation.loso_subjects=[2]"]), run_dir=tmp_path / "fold",
                   verbose="warning")
    assert full.metrics["subjects"] == [1, 2] and fold.metrics["subjects"] == [2]
    for model in ("ridge", "mlp"):
        assert set(fold.metrics["models"][model]) == {"subj02"}
        assert fold.metrics["models"][model]["subj02"] == full.metrics["models"][model]["subj02"]
    assert (tmp_path / "fold" / "models" / "loso-subj02").is_dir()
    assert not (tmp_path / "fold" / "models" / "loso-subj01").exists()  # the other fold is not trained
