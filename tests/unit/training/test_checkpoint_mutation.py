"""Checkpoint folders: exact round trip of every field, pruning, fallback and clean-up rules."""

from __future__ import annotations

import json
import os

import pytest
import torch

from neurodecode.training import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from neurodecode.training.checkpoint import (TRAINING_STATE_NAME, CheckpointError, load_latest_checkpoint,
                                             remove_stale_temporaries)

_TRAINER = {k: 0 for k in ("epoch", "batch_in_epoch", "global_step", "finished", "history", "best_epoch",
                           "best_val", "since_best", "epoch_loss_total", "epoch_loss_count", "settings")}
_TRAINING = {"optimizer": {"lr": 0.1}, "scheduler": None, "epoch_generator": torch.tensor([1, 2]),
             "dropout_generators": []}


def _save(d, step, keep_last=3, **extra):
    w = {"model": {"w": torch.full((2, 2), float(step))}}
    return save_checkpoint(d, step, weights=w, training_state=dict(_TRAINING),
                           trainer_state=dict(_TRAINER, global_step=step, **extra), keep_last=keep_last)


class _Evil:
    """Not a tensor nor a plain value: the safe loader must refuse it."""


def test_round_trip_every_field_and_folder_name(tmp_path):
    nc = torch.arange(12.0).reshape(3, 4).t()                 # non-contiguous, requires grad
    nc.requires_grad_(True)
    path = save_checkpoint(tmp_path / "new" / "ck", 12, weights={"model": {"a": nc}, "ema": None},
                           training_state={"optimizer": {"step": torch.tensor(5)}, "n": 3},
                           trainer_state={"epoch": 2, "history": [1.5]})
    assert path.name == "step-000000012" and path.parent == tmp_path / "new" / "ck"
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "trainer_state.json",
                                                      TRAINING_STATE_NAME]
    assert json.loads((path / "trainer_state.json").read_text()) == {"epoch": 2, "history": [1.5]}
    weights, tstate, meta = load_checkpoint(path)
    assert torch.equal(weights["model"]["a"], nc.detach()) and not weights["model"]["a"].requires_grad
    assert tstate["n"] == 3 and int(tstate["optimizer"]["step"]) == 5 and meta["epoch"] == 2
    assert not [p for p in (tmp_path / "new" / "ck").iterdir() if p.name.startswith(".")]


def test_pruning_keep_last_and_rewrite(tmp_path):
    for s in (1, 2, 3, 4, 5):
        _save(tmp_path, s, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000004", "step-000000005"]
    for s in (6, 7):
        _save(tmp_path, s, keep_last=None)
    assert len(list_checkpoints(tmp_path)) == 4
    _save(tmp_path, 7, keep_last=1, finished=True)             # the same step again: replaced
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000007"]
    assert load_checkpoint(latest_checkpoint(tmp_path))[2]["finished"] is True
    assert sorted(os.listdir(tmp_path)) == ["step-000000007"]   # no .tmp-/.old- left behind


def test_list_orders_by_step_number_and_skips_incomplete(tmp_path):
    for name in ("step-10", "step-9", "step-100"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text("{}")
    (tmp_path / "step-11").mkdir()                             # incomplete
    (tmp_path / "xstep-12").mkdir()
    (tmp_path / "xstep-12" / "trainer_state.json").write_text("{}")
    (tmp_path / "step-13").write_text("a file")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-9", "step-10", "step-100"]
    assert latest_checkpoint(tmp_path).name == "step-100"
    assert list_checkpoints(tmp_path / "absent") == [] and latest_checkpoint(tmp_path / "absent") is None


def test_stale_tmp_folder_of_same_name_is_replaced(tmp_path):
    stale = tmp_path / f".tmp-step-000000003-{os.getpid()}"
    stale.mkdir(parents=True)
    (stale / "junk.safetensors").write_bytes(b"not a tensor file")
    path = _save(tmp_path, 3)
    assert not stale.exists() and not (path / "junk.safetensors").exists()
    assert set(load_checkpoint(path)[0]) == {"model"}


def test_damaged_checkpoints_raise_and_latest_falls_back(tmp_path, caplog):
    good = _save(tmp_path, 1)
    bad = _save(tmp_path, 2)
    (bad / "trainer_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="trainer_state.json cannot be read"):
        load_checkpoint(bad)
    path, (weights, tstate, meta) = load_latest_checkpoint(tmp_path)
    assert path == good and meta["global_step"] == 1 and float(weights["model"]["w"][0, 0]) == 1.0
    (good / "model.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="model.safetensors cannot be read"):
        load_checkpoint(good)
    with pytest.raises(CheckpointError, match="No usable checkpoint"):
        load_latest_checkpoint(tmp_path)
    assert load_latest_checkpoint(tmp_path / "empty") == (None, None)


def test_training_state_damaged_or_unsafe(tmp_path):
    a = _save(tmp_path, 1)
    (a / TRAINING_STATE_NAME).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="damaged: training_state.pt cannot be read"):
        load_checkpoint(a)

    b = _save(tmp_path, 2)
    torch.save({"x": _Evil()}, b / TRAINING_STATE_NAME)
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        load_checkpoint(b)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "step-000000099")


@pytest.mark.parametrize("drop, lacks", [("model", "model.safetensors"), ("global_step", "global_step"),
                                         ("settings", "settings"), ("optimizer", "optimizer"),
                                         ("dropout_generators", "dropout_generators")])
def test_incomplete_checkpoint_is_skipped(tmp_path, drop, lacks):
    good = _save(tmp_path, 1)
    w = {"other": {"w": torch.zeros(1)}} if drop == "model" else {"model": {"w": torch.zeros(1)}}
    save_checkpoint(tmp_path, 2, weights=w,
                    training_state={k: v for k, v in _TRAINING.items() if k != drop},
                    trainer_state={k: v for k, v in _TRAINER.items() if k != drop})
    assert load_latest_checkpoint(tmp_path)[0] == good
    (good / "trainer_state.json").write_text("[1, 2]")           # valid JSON, not a dict
    with pytest.raises(CheckpointError, match=f"lacks .*{lacks}"):
        load_latest_checkpoint(tmp_path)


def test_training_state_not_a_dict_is_incomplete(tmp_path):
    p = _save(tmp_path, 1)
    torch.save([1, 2], p / TRAINING_STATE_NAME)
    with pytest.raises(CheckpointError, match=r"lacks training_state\.pt\. Remove"):
        load_latest_checkpoint(tmp_path)


def test_remove_stale_temporaries_keeps_complete_and_foreign(tmp_path):
    keep = _save(tmp_path, 1)
    for name in (".tmp-step-000000002-1", ".old-step-000000001-9", "step-000000003"):
        (tmp_path / name).mkdir()
    for name in ("notes", ".tmp-other", "step-x"):
        (tmp_path / name).mkdir()
    (tmp_path / ".tmp-step-file").write_text("a file, not a folder")
    target = tmp_path / "notes"
    (tmp_path / "step-000000004").symlink_to(target, target_is_directory=True)
    remove_stale_temporaries(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([keep.name, "notes", ".tmp-other", "step-x", ".tmp-step-file",
                                                   "step-000000004"])
    remove_stale_temporaries(tmp_path / "absent")               # no folder: nothing to do


def test_error_summary_keeps_the_first_line_up_to_200_characters():
    from neurodecode.training.checkpoint import _first_line

    assert _first_line(ValueError("x" * 300 + "\nsecond")) == "ValueError: " + "x" * 200
    assert _first_line(OSError("  \n")) == "OSError"


def test_files_are_readable_by_other_tools(tmp_path):
    from safetensors import safe_open

    p = _save(tmp_path, 1)
    with safe_open(str(p / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}                    # what transformers/accelerate expect
    text = (p / "trainer_state.json").read_text()
    assert text.startswith("{\n \"") and text.endswith("}\n")     # indented JSON, one newline


def test_a_failed_clean_up_never_breaks_a_save_or_hides_the_error(tmp_path, monkeypatch):
    from neurodecode.training import checkpoint as ck

    real_rmtree = ck.shutil.rmtree

    def rmtree(path, ignore_errors=False):
        if not ignore_errors:
            raise OSError(f"cannot remove {path}")
        real_rmtree(path, ignore_errors=True)

    _save(tmp_path, 1)
    monkeypatch.setattr(ck.shutil, "rmtree", rmtree)
    _save(tmp_path, 1, finished=True)                              # rewrite: the old copy is removed
    with pytest.raises(TypeError, match="not JSON serializable"):   # the real error, not the clean-up's
        save_checkpoint(tmp_path, 2, weights={}, training_state={}, trainer_state={"x": object()})
    (tmp_path / ".tmp-step-000000009-1").mkdir()
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000001"]


def test_incomplete_checkpoint_error_lists_exactly_what_is_missing(tmp_path):
    """Resuming names every missing part, in order: the model file, then the missing keys of each state."""
    save_checkpoint(tmp_path, 3, weights={"ema": {"w": torch.zeros(1)}},
                    training_state={k: v for k, v in _TRAINING.items() if k != "optimizer"},
                    trainer_state={k: v for k, v in _TRAINER.items() if k not in ("epoch", "settings")})
    with pytest.raises(CheckpointError) as err:
        load_latest_checkpoint(tmp_path)
    assert ("is damaged: it lacks model.safetensors, trainer_state.json:epoch, trainer_state.json:settings, "
            "training_state.pt:optimizer. Remove") in str(err.value)


# -- sample 5: failures while pruning old checkpoints ------------------------------------------------

def _steps(d):
    return [int(p.name.split("-")[1]) for p in list_checkpoints(d)]


def test_pruning_goes_on_past_a_checkpoint_that_cannot_be_renamed(tmp_path, monkeypatch):
    """One old checkpoint that cannot be moved (busy, permissions) is kept; the others are still pruned."""
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep_last=None)
    real = os.replace

    def replace(src, dst):
        if os.path.basename(str(src)) == "step-000000001":
            raise PermissionError("busy")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    path = _save(tmp_path, 5, keep_last=2)
    assert path.name == "step-000000005"
    assert _steps(tmp_path) == [1, 4, 5]                    # 2 and 3 pruned although 1 could not be
    monkeypatch.setattr(os, "replace", real)
    _save(tmp_path, 6, keep_last=2)                          # the next save prunes it
    assert _steps(tmp_path) == [5, 6]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    w, _, st = load_checkpoint(latest_checkpoint(tmp_path))
    assert st["global_step"] == 6 and torch.equal(w["model"]["w"], torch.full((2, 2), 6.0))


def test_a_failing_delete_while_pruning_never_breaks_the_save(tmp_path, monkeypatch):
    """Deleting a pruned checkpoint fails: the save succeeds, the old step is gone from the list, its
    renamed folder is left as a stale temporary (removed later by ``remove_stale_temporaries``)."""
    import shutil

    for step in (1, 2, 3):
        _save(tmp_path, step, keep_last=None)
    real = shutil.rmtree

    def rmtree(path, ignore_errors=False, **kw):
        if os.path.basename(str(path)).startswith(".old-step-000000001"):
            if not ignore_errors:
                raise OSError("device busy")
            return None
        return real(path, ignore_errors=ignore_errors, **kw)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    path = _save(tmp_path, 4, keep_last=3)
    assert path == latest_checkpoint(tmp_path) and _steps(tmp_path) == [2, 3, 4]
    w, _, st = load_checkpoint(path)
    assert st["global_step"] == 4 and torch.equal(w["model"]["w"], torch.full((2, 2), 4.0))
    stale = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(stale) == 1 and stale[0].startswith(".old-step-000000001-")
    # a later save with more pruning still works and still prunes
    _save(tmp_path, 5, keep_last=1)
    assert _steps(tmp_path) == [5]
    monkeypatch.setattr(shutil, "rmtree", real)
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000005"]
