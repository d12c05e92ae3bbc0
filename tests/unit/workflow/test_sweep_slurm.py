"""The SLURM path of `neurodecode fit --sweep ... --launcher slurm`, checked up to the submission: a fake
``sbatch`` first on PATH records its arguments and the script it was given, and answers like SLURM."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys

import pytest

from neurodecode.cli import main

SETS = ["simulate.n_subjects=2", "models.mlp.max_epochs=2"]

SBATCH = """#!/bin/bash
echo "$@" >> "{rec}/args.txt"
for last in "$@"; do :; done
cp "$last" "{rec}/script.sh"
echo "Submitted batch job 12345"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir, rec = tmp_path / "bin", tmp_path / "rec"
    bin_dir.mkdir()
    rec.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH.format(rec=rec))
    (bin_dir / "srun").write_text("#!/bin/bash\nexit 0\n")  # submitit looks for srun to detect SLURM
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return rec


def _argv(out, *extra):
    argv = ["fit", "-q", "demo", "--output", str(out)]
    for s in SETS:
        argv += ["--set", s]
    return [*argv, *extra]


def test_slurm_sweep_submits_one_array_with_requeue(tmp_path, fake_slurm, capsys):
    from submitit.core.utils import DelayedSubmission

    from neurodecode.workflow import SweepJob

    out = tmp_path / "sweep"
    rc = main(_argv(out, "--sweep", "models.mlp.lr=1e-3,3e-4", "--seeds", "0,1", "--launcher", "slurm",
                    "--slurm-partition", "gpu", "--slurm-time", "1:30:00", "--slurm-gpus", "1",
                    "--slurm-cpus", "4", "--slurm-mem", "16G", "--slurm-array-parallelism", "2",
                    "--slurm-setup", "module load cuda/12.1", "--slurm-setup", "source ~/venv/bin/activate"))
    assert rc == 0
    script = (fake_slurm / "script.sh").read_text()
    lines = script.splitlines()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --time=90",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16G",
                 "#SBATCH --requeue", "#SBATCH --signal=USR2@120", "#SBATCH --open-mode=append",
                 "#SBATCH --job-name=neurodecode-sweep", "module load cuda/12.1", "source ~/venv/bin/activate"):
        assert line in lines, f"{line!r} not in the sbatch script:\n{script}"
    # the job itself: srun runs submitit's entry point with this Python, on the pickled jobs of the array
    command = next(ln for ln in lines if ln.startswith("srun "))
    assert command.endswith(f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {out / 'submitit' / '%j'}")
    assert "--output" in command and "%A_%a" in command  # one log per array task
    assert lines.index("module load cuda/12.1") < lines.index(command)
    assert (fake_slurm / "args.txt").read_text().count("\n") == 1  # one sbatch call: one array
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["launcher"] == "slurm"
    assert [(j["name"], j["job_id"], j["state"]) for j in manifest["jobs"]] == [
        (f"models.mlp.lr={lr}/seed={s}", f"12345_{i}", "submitted")
        for i, (lr, s) in enumerate((lr, s) for lr in ("1e-3", "3e-4") for s in (0, 1))]
    # each array task runs the matching pickled SweepJob (what submitit loads on the node)
    for i, entry in enumerate(manifest["jobs"]):
        pickled = out / "submitit" / f"12345_{i}" / f"12345_{i}_submitted.pkl"
        job = DelayedSubmission.load(pickled).function
        assert isinstance(job, SweepJob) and job.run_dir == out / entry["name"] and job.threads is None
    printed = capsys.readouterr().out
    assert "submitted   models.mlp.lr=1e-3/seed=0  (job 12345_0)" in printed
    assert not list(out.rglob("config.yaml"))  # submitting runs nothing here


def test_slurm_single_job_and_defaults(tmp_path, fake_slurm):
    out = tmp_path / "one"
    assert main(_argv(out, "--launcher", "slurm")) == 0
    lines = (fake_slurm / "script.sh").read_text().splitlines()
    assert "#SBATCH --time=60" in lines and "#SBATCH --requeue" in lines  # a sane default, not submitit's 5 min
    assert not any(ln.startswith("#SBATCH --array") for ln in lines)  # one job: no array
    assert json.loads((out / "sweep.json").read_text())["jobs"][0]["job_id"] == "12345"


def test_slurm_options_without_the_slurm_launcher_are_refused(tmp_path, fake_slurm, capsys):
    assert main(_argv(tmp_path / "x", "--seeds", "0", "--slurm-gpus", "1")) == 1
    assert "need launcher='slurm'" in capsys.readouterr().err
    assert not (fake_slurm / "args.txt").exists()
