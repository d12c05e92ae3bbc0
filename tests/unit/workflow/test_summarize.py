"""`neurodecode summarize` on hand-made run folders: what is read, how runs are grouped, what is written."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from neurodecode.cli import main
from neurodecode.config import config_to_yaml, load_config
from neurodecode.workflow import collect_runs, run_summarize

SETS = ["simulate.n_subjects=3", "data.subjects=[1,2,3]"]


def _run(folder, overrides, values, *, finished=True, chance=0.05):
    """A run folder as `neurodecode fit` writes it: config.yaml, metrics.json ({model: {subjNN: ...}}), run.json."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config_to_yaml(load_config(None, [*SETS, *overrides])))
    if not finished:
        return folder
    models = {model: {f"subj{s:02d}": {"metrics": {"nway_top1_forward": {"value": v, "ci_low": 0, "ci_high": 1,
                                                                          "chance": chance},
                                                    "2way_forward": {"value": v + 0.3, "chance": 0.5}},
                                       "labels": {"nway_top1_forward": "20-way top-1"}}
                          for s, v in per.items()} for model, per in values.items()}
    (folder / "metrics.json").write_text(json.dumps({"scheme": "within", "models": models}))
    (folder / "run.json").write_text("{}")
    return folder


def test_runs_differing_only_by_seed_or_fold_are_one_setting(tmp_path):
    sw = tmp_path / "sw"
    _run(sw / "lr=a/seed=0", ["models.mlp.lr=1e-3", "seed=0"], {"ridge": {1: 0.2, 2: 0.4}})
    _run(sw / "lr=a/seed=1", ["models.mlp.lr=1e-3", "seed=1"], {"ridge": {1: 0.5, 2: 0.5}})
    _run(sw / "lr=b/seed=0", ["models.mlp.lr=1e-4", "seed=0"], {"ridge": {1: 0.1, 2: 0.1}})
    # leave-one-subject-out folds of one seed, run as separate jobs: pooled into one value per seed
    loso = ["models.mlp.lr=1e-4", "seed=1", "evaluation.scheme=loso"]
    _run(sw / "loso/seed=1/fold=subj01", [*loso, "evaluation.loso_subjects=[1]"], {"ridge": {1: 0.3}})
    _run(sw / "loso/seed=1/fold=subj02", [*loso, "evaluation.loso_subjects=[2]"], {"ridge": {2: 0.5}})
    _run(sw / "lr=a/seed=2", ["models.mlp.lr=1e-3", "seed=2"], {}, finished=False)
    (sw / "submitit" / "x").mkdir(parents=True)
    values = collect_runs([sw])
    assert values.attrs["by"] == ["models.mlp.lr", "evaluation.scheme"]
    assert values.attrs["incomplete"] == [str(sw / "lr=a/seed=2")] and len(values.attrs["runs"]) == 5
    assert set(values["models.mlp.lr"]) == {"0.001", "0.0001"}
    result = run_summarize([sw], metrics=["nway_top1_forward"])
    t = result.table.set_index(["models.mlp.lr", "evaluation.scheme"])
    a = t.loc[("0.001", "within")]
    assert a["n_seeds"] == 2 and a["mean"] == pytest.approx((0.3 + 0.5) / 2) and a["chance"] == pytest.approx(0.05)
    loso_row = t.loc[("0.0001", "loso")]
    assert loso_row["n_seeds"] == 1 and loso_row["mean"] == pytest.approx(0.4) and loso_row["n_subjects"] == 2
    assert t.loc[("0.0001", "within")]["mean"] == pytest.approx(0.1)
    assert set(result.files) == {"md", "csv", "html"} and all(p.parent == sw for p in result.files.values())
    csv = pd.read_csv(result.files["csv"])
    assert list(csv.columns[:4]) == ["models.mlp.lr", "evaluation.scheme", "model", "metric"]
    within = csv[(csv["evaluation.scheme"] == "within") & (csv["models.mlp.lr"] == 0.001)]
    assert within["seeds"].tolist() == ["0;1"] and within["mean"].tolist() == pytest.approx([0.4])
    assert set(csv["ci"]) == {0.95} and len(csv) == 3
    assert "20-way top-1" in set(csv["label"])
    md = result.files["md"].read_text()
    assert "| 0.001 | within | ridge | nway_top1_forward | 2 | 0.4000 |" in md
    assert "lr=a/seed=2" in result.files["html"].read_text()  # the run without results is listed


def test_a_repeated_run_counts_once_and_a_single_recipe_is_named(tmp_path, caplog):
    _run(tmp_path / "runs/demo", ["seed=0"], {"ridge": {1: 0.2}, "mlp": {1: 0.4}})
    _run(tmp_path / "runs/demo-1", ["seed=0"], {"ridge": {1: 0.9}, "mlp": {1: 0.9}})  # same seed again
    _run(tmp_path / "runs/demo-2", ["seed=1"], {"ridge": {1: 0.4}, "mlp": {1: 0.6}})
    values = collect_runs([tmp_path / "runs"])
    assert values.attrs["by"] == ["name"] and set(values["name"]) == {"demo"}
    assert "not counted" in caplog.text and "demo-1" in caplog.text
    result = run_summarize([tmp_path / "runs/demo", tmp_path / "runs/demo-1", tmp_path / "runs/demo-2"],
                           output=tmp_path / "out", models=["ridge"], metrics=["nway_top1_forward"])
    row = result.table.iloc[0]
    assert row["n_seeds"] == 2 and row["mean"] == pytest.approx(0.3) and row["model"] == "ridge"
    assert len(result.table) == 1 and (tmp_path / "out" / "summary.md").is_file()


def test_errors_are_clear(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect_runs([tmp_path / "nowhere"])
    _run(tmp_path / "r/a", ["seed=0"], {}, finished=False)
    with pytest.raises(FileNotFoundError, match="No finished run folder.*1 started"):
        collect_runs([tmp_path / "r"])
    _run(tmp_path / "r/b", ["seed=0"], {"ridge": {1: 0.2}})
    with pytest.raises(ValueError, match="output"):
        run_summarize([tmp_path / "r/a", tmp_path / "r/b"])
    with pytest.raises(ValueError, match="No metric.*nway_top1_forward"):
        run_summarize([tmp_path / "r"], metrics=["bogus"])
    assert main(["summarize", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["summarize", "-q", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "| demo | ridge | nway_top1_forward | 1 | 0.2000 | — | n=1: no interval |" in out
    assert "1 without results not counted" in out and str(tmp_path / "r" / "summary.html") in out
