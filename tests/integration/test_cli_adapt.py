"""`neurodecode adapt` end to end: fit on subjects 1-2 of a tiny simulation, adapt to subject 3."""

from __future__ import annotations

import json

import pytest
from _chance import assert_above_chance, assert_run_above_chance

from neurodecode.cli import main

TINY_SIM = ["--n-subjects", "3", "--n-sessions", "3", "--trials-per-session", "120", "--image-size", "24",
            "--param", "snr=2.0"]
TINY_FIT = ["targets.size=6", "models.mlp.max_epochs=6", "models.mlp.hidden_dim=32", "models.mlp.batch_size=32",
            "models.ridge.enabled=false", "evaluation.n_boot=50", "evaluation.n_repeats=3",
            "evaluation.n_candidates=20", "report.n_examples=2", "report.n_retrieved=3",
            "data.subjects=[1,2]"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("adapt")
    sim = base / "sim"
    assert main(["simulate", "nsd", str(sim), "-q", *TINY_SIM]) == 0
    sets = []
    for s in [*TINY_FIT, f"output_dir={base}"]:
        sets += ["--set", s]
    assert main(["fit", "-q", "--root", str(sim), *sets]) == 0
    # the decoder that gets adapted decodes its own subjects above chance (24 test images each)
    fitted = json.loads((base / "demo" / "metrics.json").read_text())
    assert_run_above_chance(fitted, ["mlp"], "2way_forward", two_way=0.6)
    return base / "demo", sim


def test_adapt_new_subject(run):
    run_dir, sim = run
    # 80% of subject 3's 96 training images: at this size 50% leaves the adapted decoder's 2-way CI at chance
    rc = main(["adapt", str(run_dir), "--subject", "3", "--data", str(sim), "--fraction", "0.8",
               "--epochs", "10", "--freeze-epochs", "2", "-q"])
    assert rc == 0
    out = run_dir / "adapted" / "subj03"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["subject"] == 3 and metrics["n_adapt_trials"] > 0
    assert {h["phase"] for h in metrics["history"]} == {1, 2}
    m = metrics["metrics"]["metrics"]["nway_top1_forward"]
    assert m["ci_low"] <= m["value"] <= m["ci_high"]
    # the adapted decoder decodes the new subject's 24 test images above chance
    assert_above_chance(metrics["metrics"], "2way_forward", two_way=0.6, where="adapted subj03")
    assert (out / "report.html").is_file() and (out / "model" / "model.safetensors").is_file()

    from neurodecode.models import BrainDecoder

    model = BrainDecoder.from_pretrained(out / "model")
    assert set(model.subjects) == {"1", "2", "3"}
    # a second adaptation never overwrites the first
    assert main(["adapt", str(run_dir), "--subject", "3", "--data", str(sim), "--fraction", "0.5",
                 "--epochs", "2", "--freeze-epochs", "1", "-q"]) == 0
    assert (run_dir / "adapted" / "subj03-1" / "metrics.json").is_file()


def test_adapt_errors(run, tmp_path, capsys):
    run_dir, sim = run
    assert main(["adapt", str(tmp_path), "--subject", "3"]) == 1
    assert "config.yaml" in capsys.readouterr().err
    assert main(["adapt", str(run_dir), "--subject", "5", "--data", str(sim)]) == 1
    assert "subject" in capsys.readouterr().err.lower()
    assert main(["adapt", str(run_dir), "--subject", "3", "--data", str(sim), "--fraction", "0"]) == 1
