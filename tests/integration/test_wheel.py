"""A non-editable install, used from an empty folder, runs the documented commands.

The wheel is built from a copy of the sources (package, pyproject, README) and installed with
``pip install --no-deps --target``; the commands then run with only that folder on the path, from an
empty working directory, so nothing of the checkout (recipes, templates) can leak in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _chance import assert_run_above_chance
from _fake_hosts import FakeHosts, publish

REPO = Path(__file__).resolve().parents[2]
TINY = ["simulate.n_subjects=2", "simulate.n_sessions=3", "simulate.trials_per_session=120",
        "simulate.image_size=24", "simulate.snr=2.0", "targets.size=6", "models.mlp.max_epochs=4",
        "models.mlp.hidden_dim=32", "models.mlp.batch_size=32", "evaluation.n_boot=50",
        "evaluation.n_repeats=3", "evaluation.n_candidates=20", "report.n_examples=2", "report.n_retrieved=3"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, empty working folder) of a wheel install of the current sources."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    shutil.copytree(REPO / "neurodecode", src / "neurodecode",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(base / "dist")],
                   check=True, capture_output=True, timeout=300)
    wheels = list((base / "dist").glob("neurodecode-*.whl"))
    assert len(wheels) == 1
    site = base / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheels[0])],
                   check=True, capture_output=True, timeout=300)
    work = base / "empty"
    work.mkdir()
    return site, work


def _run(installed, *args, timeout=300):
    site, work = installed
    env = {**os.environ, "PYTHONPATH": str(site), "NEURODECODE_DATA": str(work.parent / "data"),
           "OMP_NUM_THREADS": "1"}
    code = "import sys; from neurodecode.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_wheel_is_what_runs(installed):
    site, work = installed
    proc = subprocess.run([sys.executable, "-c", "import neurodecode; print(neurodecode.__file__)"], cwd=work,
                          env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert Path(proc.stdout.strip()).is_relative_to(site)
    shipped = sorted(p.name for p in (site / "neurodecode" / "pipelines").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (REPO / "neurodecode" / "pipelines").glob("*.yaml"))
    assert (site / "neurodecode" / "reports" / "templates" / "retrieval_report.html.jinja").is_file()


def test_recipes_and_config_by_name(installed):
    proc = _run(installed, "recipes")
    assert proc.returncode == 0, proc.stderr
    assert "nsd_ridge" in proc.stdout and "things_eeg_atm" in proc.stdout
    proc = _run(installed, "config", "nsd_ridge", "--set", "data.root=/data/nsd")
    assert proc.returncode == 0, proc.stderr
    assert "name: nsd_ridge" in proc.stdout


def test_fit_a_shipped_recipe_by_name(installed):
    site, work = installed
    sets = [a for s in [*TINY, f"output_dir={work.parent / 'runs'}"] for a in ("--set", s)]
    proc = _run(installed, "fit", "demo", "-q", *sets)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((work.parent / "runs" / "demo" / "metrics.json").read_text())
    assert metrics["simulated"] is True and metrics["subjects"] == [1, 2]
    assert set(metrics["models"]) == {"ridge", "mlp"}
    assert_run_above_chance(metrics, ["ridge"], "nway_top1_forward", ratio=3)  # the installed code decodes
    assert (work.parent / "runs" / "demo" / "report.html").is_file()
    assert not any(work.iterdir())  # nothing written into the working folder
    proc = _run(installed, "summarize", str(work.parent / "runs" / "demo"),
                "-o", str(work.parent / "summary"))
    assert proc.returncode == 0, proc.stderr
    table = (work.parent / "summary" / "summary.md").read_text()
    metrics = json.loads((work.parent / "runs" / "demo" / "metrics.json").read_text())
    for model in ("ridge", "mlp"):  # one seed: the mean over the two test subjects, and no interval
        value = sum(metrics["models"][model][s]["metrics"]["nway_top1_forward"]["value"]
                    for s in ("subj01", "subj02")) / 2
        assert f"| demo | {model} | nway_top1_forward | 1 | {value:.4f} | — | n=1: no interval |" in table


def test_simulate_download_and_summarize(installed, tmp_path):
    """The other documented commands, from the wheel: simulate, download (dry run, then for real)."""
    site, work = installed
    sim = tmp_path / "sim"
    proc = _run(installed, "simulate", "nsd", str(sim), "--n-subjects", "1", "--n-sessions", "2",
                "--trials-per-session", "120", "--image-size", "16", "-q")
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "nsd"
    with FakeHosts() as hosts:
        bucket = hosts.s3["natural-scenes-dataset"] = {}
        publish(bucket, sim, skip=lambda rel: rel.startswith(("simulation", "coco/")))
        args = ["download", "nsd", "--root", str(root), "--subjects", "1", "--mirror", hosts.mirror()["s3"],
                "--accept-nsd-terms"]
        os.environ["NEURODECODE_CONFIG"] = str(tmp_path / "cfg" / "config.json")
        try:
            dry = _run(installed, *args, "--dry-run")
            real = _run(installed, *args, "-q")
        finally:
            del os.environ["NEURODECODE_CONFIG"]
    assert dry.returncode == 0 and real.returncode == 0, dry.stderr + real.stderr
    assert f"total {len(bucket)} file(s)" in dry.stdout and "dry run: nothing downloaded" in dry.stdout
    assert all(key in dry.stdout for key in bucket), dry.stdout
    assert not any(k in dry.stdout for k in ("simulation.json", "coco/"))
    for key, data in bucket.items():
        assert (root / key).read_bytes() == data, key


def test_adapt_ablate_and_reconstruct_a_run(installed, tmp_path):
    """The commands that work on a fitted run, from the wheel: adapt a new subject, ablate, reconstruct."""
    pytest.importorskip("diffusers")
    from neurodecode.tasks.reconstruction import make_random_pipeline

    sets = [a for s in [*TINY, "simulate.n_subjects=3", "data.subjects=[1,2]", "models.ridge.enabled=false",
                        "models.mlp.heads=[pooled,lowlevel]", "models.mlp.lowlevel_size=8",
                        f"output_dir={tmp_path / 'runs'}"] for a in ("--set", s)]
    proc = _run(installed, "fit", "demo", "-q", *sets)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "demo"
    data_root = json.loads((run / "metrics.json").read_text())["data_root"]

    proc = _run(installed, "adapt", str(run), "--subject", "3", "--data", data_root, "--fraction", "0.5",
                "--epochs", "2", "--freeze-epochs", "1", "--threads", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    adapted = json.loads((run / "adapted" / "subj03" / "metrics.json").read_text())
    assert adapted["subject"] == 3 and adapted["n_adapt_trials"] > 0

    proc = _run(installed, "ablate", str(run), "--atlas", "nsd:streams", "--strategy", "zero",
                "--metric", "2way", "--model", "mlp", "--n-null", "9", "--threads", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    ablation = json.loads((run / "ablation-nsd-streams" / "metrics.json").read_text())
    assert "2way" in ablation["baseline"]

    generator = tmp_path / "kandinsky"
    # targets.size=6: the decoder outputs 6x6 RGB = 108 values
    make_random_pipeline("kandinsky", embed_dim=6 * 6 * 3, seed=0).save_pretrained(generator)
    proc = _run(installed, "reconstruct", str(run), "--generator", str(generator), "--backend", "kandinsky",
                "--steps", "2", "--device", "cpu", "--size", "32", "--limit", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    recon = json.loads((run / "reconstructions-kandinsky" / "metrics.json").read_text())
    assert recon["n_items"] == 2
    ssim = recon["metrics"]["metrics"]["ssim"]
    assert {"shuffled", "mean_image"} <= set(ssim)  # every image metric beside its baselines
