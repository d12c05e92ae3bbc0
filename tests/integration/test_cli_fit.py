"""`neurodecode fit` end to end on a tiny simulation, through the real NSD loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from _chance import assert_run_above_chance

from neurodecode.cli import main

TINY = [
    "simulate.n_subjects=2", "simulate.n_sessions=3", "simulate.trials_per_session=120",
    "simulate.image_size=24", "simulate.snr=2.0", "targets.size=6", "models.mlp.max_epochs=6",
    "models.mlp.hidden_dim=32",
    "models.mlp.batch_size=32", "evaluation.n_boot=50", "evaluation.n_repeats=3",
    "evaluation.n_candidates=20", "report.n_examples=2", "report.n_retrieved=3",
]


def _sets(extra=()):
    out = []
    for s in [*TINY, *extra]:
        out += ["--set", s]
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURODECODE_DATA", str(out / "data"))
        rc = main(["fit", "-q", *_sets([f"output_dir={out}"])])
    assert rc == 0
    return out


def test_fit_writes_a_complete_run_folder(fitted):
    run = fitted / "demo"
    for name in ("config.yaml", "metrics.json", "report.html", "run.json", "predictions_mlp.npz",
                 "models/mlp/model.safetensors", "models/mlp/config.json",
                 "models/ridge/config.json"):
        assert (run / name).is_file(), name
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["models"]["mlp"]["max_epochs"] == 6
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["simulated"] is True and metrics["subjects"] == [1, 2]
    for model in ("ridge", "mlp"):
        for subj in ("subj01", "subj02"):
            m = metrics["models"][model][subj]["metrics"]["top1_forward"]
            assert m["ci_low"] <= m["value"] <= m["ci_high"]
    # decoding beats chance, per model and subject (24 test images each; snr=2 is what makes 6 epochs of
    # a 32-wide MLP learn here): ridge N-way top-1 (20 candidates) >= 3x chance, the MLP 2-way >= 0.6,
    # each with its 95% CI above chance
    assert_run_above_chance(metrics, ["ridge"], "nway_top1_forward", ratio=3)
    assert_run_above_chance(metrics, ["mlp"], "2way_forward", two_way=0.6)
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    pred = np.load(run / "predictions_mlp.npz")
    assert pred["prediction"].shape[0] == len(pred["stimulus_id"])


def test_mlp_weights_reload_identically(fitted):
    from neurodecode.models import BrainDecoder

    model = BrainDecoder.from_pretrained(fitted / "demo" / "models" / "mlp")
    assert set(map(str, model.n_inputs)) == {"1", "2"}


def test_second_run_never_overwrites_the_first(fitted):
    first = (fitted / "demo" / "metrics.json").read_text()
    rc = main(["fit", "-q", *_sets([f"output_dir={fitted}", "models.mlp.enabled=false"])])
    assert rc == 0
    assert (fitted / "demo-1" / "metrics.json").is_file()
    assert (fitted / "demo" / "metrics.json").read_text() == first


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["fit", "--set", "models.mlp.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'models.mlp.bogus'" in err and "max_epochs" in err
    assert main(["fit", "--root", str(tmp_path / "nowhere"), "--set", f"output_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err


def test_help_mentions_everything(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for word in ("--set", "--root", "report.html", "metrics.json", "neurodecode recipes"):
        assert word in out
    assert main(["fit", "--help-config"]) == 0
    assert "models.mlp.max_epochs" in capsys.readouterr().out
