"""Resume refuses changed data, survives damaged checkpoints and never shows a traceback; Ctrl-C names --resume."""

from __future__ import annotations

import copy
import logging
import shlex
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from _training_fixtures import planted as _planted
from _training_fixtures import tiny_model as _model

from neurodecode.training import CheckpointError, Trainer, list_checkpoints, load_checkpoint
from neurodecode.training.checkpoint import TRAINING_STATE_NAME, load_latest_checkpoint

KW = {"lr": 2e-3, "batch_size": 32, "max_epochs": 2, "seed": 5, "val_fraction": 0.2, "checkpoint_every": 3,
      "keep_checkpoints": 100}
TINY = ["simulate.n_subjects=1", "targets.size=6", "models.mlp.max_epochs=2", "models.mlp.hidden_dim=32",
        "models.mlp.batch_size=32", "models.mlp.checkpoint_every=2", "evaluation.n_boot=20",
        "evaluation.n_repeats=2", "evaluation.n_candidates=10", "report.n_examples=1", "report.n_retrieved=2",
        "data.subjects=[1]"]
SIM = {"n_subjects": 1, "n_sessions": 2, "trials_per_session": 120, "image_size": 24}


@pytest.fixture(scope="module")
def data():
    return _planted(n_trials=240)


@contextmanager
def _warnings():
    """WARNING lines of the neurodecode logger."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("neurodecode")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _same_weights(a, b):
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


class _Payload:
    """Unpickling it would create ``path``: a stand-in for code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# -- the Trainer ---------------------------------------------------------------------------------
def test_changed_data_targets_or_model_are_refused(data, tmp_path):
    from neurodecode.embeddings import StimulusEmbeddings
    from neurodecode.models import BrainDecoder

    trials, targets = data
    ckpt = tmp_path / "ckpt"
    Trainer(_model(trials), **KW).fit(trials, targets, checkpoint_dir=ckpt)
    before = {p: p.stat().st_mtime_ns for p in ckpt.rglob("*")}
    stronger, _ = _planted(n_trials=240, noise=0.2)  # re-simulated with another signal strength
    with pytest.raises(CheckpointError, match="the training data changed"):
        Trainer(_model(stronger), **KW).fit(stronger, targets, checkpoint_dir=ckpt, resume=True)
    other = StimulusEmbeddings(np.arange(len(targets.values)), np.asarray(targets.values)[::-1].copy())
    with pytest.raises(CheckpointError, match="the targets .* changed"):
        Trainer(_model(trials), **KW).fit(trials, other, checkpoint_dir=ckpt, resume=True)
    sizes = {s: int(np.prod(t.feature_shape)) for s, t in trials.by_subject().items()}
    wider = BrainDecoder(sizes, embed_dim=16, hidden_dim=32, n_blocks=1, seed=0)
    with pytest.raises(CheckpointError, match="architecture changed"):
        Trainer(wider, **KW).fit(trials, targets, checkpoint_dir=ckpt, resume=True)
    assert {p: p.stat().st_mtime_ns for p in ckpt.rglob("*")} == before  # refused: nothing written
    # the same data resume (here: a finished training, whose weights are restored)
    fingerprint = load_checkpoint(list_checkpoints(ckpt)[-1])[2]["fingerprint"]
    assert set(fingerprint) == {"data", "targets", "model"}
    assert Trainer(_model(trials), **KW).fit(trials, targets, checkpoint_dir=ckpt, resume=True).resumed_from_


@pytest.mark.parametrize("damaged", ["model.safetensors", TRAINING_STATE_NAME, "trainer_state.json"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(data, tmp_path, damaged):
    trials, targets = data
    base = _model(trials, seed=3)
    full_model = copy.deepcopy(base)
    full = Trainer(full_model, **KW).fit(trials, targets, checkpoint_dir=tmp_path / "a")
    ckpts = list_checkpoints(tmp_path / "a")
    for path in ckpts[-3:]:  # the run was killed after the second-to-last checkpoint...
        shutil.copytree(path, tmp_path / "b" / path.name)
    victim = tmp_path / "b" / ckpts[-1].name / damaged  # ... while its newest file was half-written
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    resumed_model = copy.deepcopy(base)
    with _warnings() as warned:
        resumed = Trainer(resumed_model, **KW).fit(trials, targets, checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.resumed_from_.name == ckpts[-2].name
    assert any(str(victim.parent) in w and damaged in w and "falling back" in w for w in warned), warned
    _same_weights(full_model, resumed_model)  # still exactly the uninterrupted run
    assert [h["train_loss"] for h in resumed.history_] == [h["train_loss"] for h in full.history_]


def test_unsafe_training_state_is_refused_without_suggesting_unsafe_loading(data, tmp_path):
    trials, targets = data
    ckpt = tmp_path / "ckpt"
    Trainer(_model(trials), **KW).fit(trials, targets, checkpoint_dir=ckpt)
    newest, previous = list_checkpoints(ckpt)[-1], list_checkpoints(ckpt)[-2]
    marker = tmp_path / "code-was-run"
    torch.save({"optimizer": _Payload(marker)}, newest / TRAINING_STATE_NAME)
    with pytest.raises(CheckpointError, match="refused by the safe loader") as err:
        load_checkpoint(newest)
    assert "weights_only" not in str(err.value) and not marker.exists()
    with _warnings() as warned:
        path, _ = load_latest_checkpoint(ckpt)
    assert path == previous and any("refused" in w for w in warned)
    for p in list_checkpoints(ckpt):  # every checkpoint unusable: one clear error
        torch.save({"optimizer": _Payload(marker)}, p / TRAINING_STATE_NAME)
    with pytest.raises(CheckpointError, match=f"No usable checkpoint in {ckpt}.*Remove"):
        Trainer(_model(trials), **KW).fit(trials, targets, checkpoint_dir=ckpt, resume=True)
    assert not marker.exists()


# -- the command line ----------------------------------------------------------------------------
def _sets(*extra: str) -> list[str]:
    return [x for s in [*TINY, *extra] for x in ("--set", s)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny `neurodecode fit` run (MLP checkpoints every 2 steps) on a simulated dataset."""
    from neurodecode.cli import main
    from neurodecode.datasets import simulate

    base = tmp_path_factory.mktemp("resume_safety")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURODECODE_DATA", str(base / "data"))
        simulate("nsd", base / "sim", verbose="warning", **SIM)
        assert main(["fit", "-q", *_sets(), "--root", str(base / "sim"), "--output", str(base / "run")]) == 0
    return base


def _copy_run(base: Path, tmp_path: Path, *, with_data: bool = False) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    if with_data:  # the copy reads its own copy of the dataset
        shutil.copytree(base / "sim", tmp_path / "sim")
        cfg = run / "config.yaml"
        cfg.write_text(cfg.read_text().replace(str(base / "sim"), str(tmp_path / "sim")))
    return run


def _stamps(folder: Path) -> dict:
    """Every file with its modification time (folders change when a lock file comes and goes)."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_cli_resume_of_a_finished_run_changes_nothing(finished_run, tmp_path, capfd):
    from neurodecode.cli import main

    run = _copy_run(finished_run, tmp_path)
    before = _stamps(run)
    with _warnings() as warned:
        assert main(["fit", "--resume", str(run)]) == 0
    assert any("Nothing to resume" in w and "already finished" in w for w in warned), warned
    assert f"Report: {run / 'report.html'}" in capfd.readouterr().out
    assert _stamps(run) == before


def test_cli_resume_refuses_changed_data(finished_run, tmp_path, capfd):
    from neurodecode.cli import main
    from neurodecode.datasets import simulate

    run = _copy_run(finished_run, tmp_path, with_data=True)
    (run / "run.json").unlink()  # as if killed before the end
    simulate("nsd", tmp_path / "sim", snr=2.0, overwrite=True, verbose="warning", **SIM)  # another strength
    before = _stamps(run)
    capfd.readouterr()
    assert main(["fit", "-q", "--resume", str(run)]) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "the training data changed" in err and "mix" in err
    assert _stamps(run) == before  # refused before anything was rewritten (ridge included)


def test_cli_damaged_checkpoints_give_one_clear_line(finished_run, tmp_path, capfd):
    from neurodecode.cli import main

    run = _copy_run(finished_run, tmp_path / "all", with_data=True)
    (run / "run.json").unlink()
    ckpts = list_checkpoints(run / "checkpoints")
    assert len(ckpts) >= 2
    marker = tmp_path / "code-was-run"
    torch.save({"optimizer": _Payload(marker)}, ckpts[-1] / TRAINING_STATE_NAME)  # unsafe
    for path in ckpts[:-1]:  # truncated
        f = path / "model.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    capfd.readouterr()
    assert main(["fit", "-q", "--resume", str(run)]) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "No usable checkpoint" in err and "weights_only" not in err
    assert not marker.exists()
    # the newest damaged only: a warning, and the run finishes from the previous checkpoint
    run = _copy_run(finished_run, tmp_path / "newest", with_data=True)
    (run / "run.json").unlink()
    f = list_checkpoints(run / "checkpoints")[-1] / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with _warnings() as warned:
        assert main(["fit", "-q", "--resume", str(run)]) == 0
    assert any(str(f.parent) in w and "falling back to the previous checkpoint" in w for w in warned), warned
    np.testing.assert_array_equal(np.load(run / "predictions_mlp.npz")["prediction"],
                                  np.load(finished_run / "run" / "predictions_mlp.npz")["prediction"])


def test_cli_ctrl_c_names_the_resume_command(finished_run, tmp_path, capfd, monkeypatch):
    import neurodecode.training.trainer as trainer_mod
    from neurodecode.cli import main

    save = trainer_mod.save_checkpoint

    def save_then_interrupt(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_then_interrupt)
    run = tmp_path / "my run"  # a space: the command must quote it
    assert main(["fit", "-q", *_sets(), "--root", str(finished_run / "sim"), "--output", str(run)]) == 130
    err = capfd.readouterr().err
    expected = f"neurodecode fit --resume {shlex.quote(str(run))}"
    assert expected in err and "Traceback" not in err
    monkeypatch.setattr(trainer_mod, "save_checkpoint", save)
    assert main(shlex.split(expected)[1:] + ["-q"]) == 0  # the command shown continues the run
    np.testing.assert_array_equal(np.load(run / "predictions_mlp.npz")["prediction"],
                                  np.load(finished_run / "run" / "predictions_mlp.npz")["prediction"])
