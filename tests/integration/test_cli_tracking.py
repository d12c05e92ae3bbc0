"""`neurodecode fit --set tracking=[tensorboard]`: the training and the final metrics, in tensorboard."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from neurodecode.cli import main

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator").EventAccumulator

TINY = [
    "simulate.n_subjects=2", "simulate.n_sessions=3", "simulate.trials_per_session=120",
    "simulate.image_size=24", "simulate.snr=2.0", "targets.size=6", "models.mlp.max_epochs=3",
    "models.mlp.hidden_dim=32", "models.mlp.batch_size=32", "evaluation.n_boot=50", "evaluation.n_repeats=3",
    "evaluation.n_candidates=20", "report.n_examples=2", "report.n_retrieved=3",
]


def _sets(extra=()):
    return [arg for s in [*TINY, *extra] for arg in ("--set", s)]


def _scalars(folder):
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _f32(x):
    return float(np.float32(x))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One simulated dataset for the module's runs."""
    return tmp_path_factory.mktemp("data")


def test_fit_tracks_the_training_and_the_final_metrics(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("NEURODECODE_DATA", str(data_dir))
    assert main(["fit", "-q", *_sets([f"output_dir={tmp_path / 'runs'}", "tracking=[tensorboard]"])]) == 0
    run = tmp_path / "runs" / "demo"
    assert sorted(p.name for p in (run / "tracking").iterdir()) == ["mlp", "test"]

    # the MLP's training: one point per epoch equal to models/mlp/history.json, one per optimizer step
    hist = json.loads((run / "models" / "mlp" / "history.json").read_text())
    train = _scalars(run / "tracking" / "mlp")
    for tag, key in (("train/loss", "train_loss"), ("val/loss", "val_loss"), ("val/top1", "val_top1"),
                     ("epoch", "epoch")):
        assert train[tag] == [(h["step"], _f32(h[key])) for h in hist], tag
    assert [s for s, _ in train["train/step_loss"]] == list(range(hist[-1]["step"]))
    hparams = next((run / "tracking" / "mlp").glob("*/hparams.yml")).read_text()
    assert "models.mlp.max_epochs: 3" in hparams and "tracking: '[\"tensorboard\"]'" in hparams

    # the final metrics: every number of metrics.json's scores (value, CI bounds, chance), per subject, and
    # the mean over subjects
    metrics = json.loads((run / "metrics.json").read_text())
    test = _scalars(run / "tracking" / "test")
    expected = {}
    for model, per in metrics["models"].items():
        for subject, scores in per.items():
            for metric, stats in scores["metrics"].items():
                expected |= {f"test/{model}/{subject}/{metric}/{k}": v for k, v in stats.items()}
        for metric in per["subj01"]["metrics"]:
            values = [per[s]["metrics"][metric]["value"] for s in per]
            expected[f"test/{model}/mean/{metric}/value"] = float(np.mean(values))
    assert {t: v for t, v in test.items()} == {t: [(0, _f32(v))] for t, v in expected.items()}
    assert "test/mlp/subj02/top1_forward/ci_high" in test and "test/ridge/mean/2way_forward/value" in test


def test_no_tracking_no_tracking_folder(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("NEURODECODE_DATA", str(data_dir))
    assert main(["fit", "-q", *_sets([f"output_dir={tmp_path / 'runs'}", "models.mlp.enabled=false"])]) == 0
    assert (tmp_path / "runs" / "demo" / "metrics.json").is_file()
    assert not (tmp_path / "runs" / "demo" / "tracking").exists()


def test_missing_tracker_package_fails_in_one_line_before_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # not installed
    rc = main(["fit", "-q", "--set", f"output_dir={tmp_path / 'runs'}", "--set", "tracking=[mlflow]"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "pip install mlflow" in err, err
    assert not (tmp_path / "runs").exists()
    rc = main(["fit", "-q", "--set", f"output_dir={tmp_path / 'runs'}", "--set", "tracking=[tensorbord]"])
    err = capsys.readouterr().err
    assert rc == 2 and "'tensorboard', 'wandb' or 'mlflow'" in err and "tensorbord" in err
