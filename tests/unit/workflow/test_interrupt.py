"""Ctrl-C on the commands that cannot resume (adapt, ablate, reconstruct): the output folder is complete or
removed, the run folder is intact, and the message says so (``fit`` names its ``--resume`` command, tested in
tests/unit/training/test_resume_safety.py)."""

from __future__ import annotations

import pytest

from neurodecode import workflow
from neurodecode.cli import main
from neurodecode.utils.locks import LOCK_NAME
from neurodecode.workflow import reconstruct
from neurodecode.workflow._run import OutputInterrupted, _complete_or_removed, _fresh_dir, _output_dir


def _write_some(out):
    (out / "model").mkdir()
    (out / "model" / "weights.bin").write_bytes(b"x" * 10)
    (out / "reconstructions.png").write_bytes(b"png")


def test_interrupt_removes_the_folder_it_created(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    claim = _fresh_dir(run / "adapted" / "subj03", what="adaptation")
    with pytest.raises(OutputInterrupted) as info, _complete_or_removed(claim) as out:
        _write_some(out)
        raise KeyboardInterrupt
    err = info.value
    assert isinstance(err, KeyboardInterrupt) and err.cleared and err.removed
    assert err.out_dir == run / "adapted" / "subj03"
    assert sorted(p.name for p in run.rglob("*")) == ["metrics.json"]  # adapted/ created by it: gone too


def test_interrupt_empties_an_existing_empty_folder(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    claim = _output_dir(out_dir, what="ablation")
    with pytest.raises(OutputInterrupted) as info, _complete_or_removed(claim) as out:
        _write_some(out)
        raise KeyboardInterrupt
    assert info.value.cleared and not info.value.removed
    assert out_dir.is_dir() and list(out_dir.iterdir()) == []


def test_interrupt_keeps_an_explicit_folder_that_held_files(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "earlier.txt").write_text("keep me")
    claim = _output_dir(out_dir, what="reconstruction")
    with pytest.raises(OutputInterrupted) as info, _complete_or_removed(claim) as out:
        _write_some(out)
        raise KeyboardInterrupt
    assert not info.value.cleared and not info.value.removed
    assert (out_dir / "earlier.txt").read_text() == "keep me" and not (out_dir / LOCK_NAME).exists()


def test_other_errors_keep_what_was_written(tmp_path):
    claim = _fresh_dir(tmp_path / "abl", what="ablation")
    with pytest.raises(ValueError, match="boom"), _complete_or_removed(claim) as out:
        _write_some(out)
        raise ValueError("boom")
    assert (tmp_path / "abl" / "reconstructions.png").is_file()


def _raise(err):
    def fn(*args, **kwargs):
        raise err
    return fn


@pytest.mark.parametrize(("argv", "target", "err", "expected"), [
    (["adapt", "RUN", "--subject", "3"], (workflow, "run_adapt"), KeyboardInterrupt(),
     ("neurodecode adapt: interrupted; it stopped before writing its output, so nothing was written; the run "
     "folder RUN and its earlier outputs are intact. neurodecode adapt cannot resume: run the same command "
     "again to start over.")),
    (["ablate", "RUN"], (workflow, "run_ablate"),
     OutputInterrupted("RUN/ablation-x", cleared=True, removed=True),
     ("neurodecode ablate: interrupted; its incomplete output folder RUN/ablation-x was removed; the run "
      "folder RUN and its earlier outputs are intact.")),
    (["reconstruct", "RUN", "--generator", "G", "-o", "OUT"], (reconstruct, "run_reconstruct"),
     OutputInterrupted("OUT", cleared=False, removed=False),
     ("neurodecode reconstruct: interrupted; OUT held files before and was kept, so the files this command "
     "wrote there may be incomplete: delete them or pick another --output; the run folder RUN")),
])
def test_cli_ctrl_c_message(argv, target, err, expected, monkeypatch, capfd):
    monkeypatch.setattr(*target, _raise(err))
    assert main(argv) == 130
    text = capfd.readouterr().err
    assert expected in text and "Traceback" not in text and "--resume" not in text
