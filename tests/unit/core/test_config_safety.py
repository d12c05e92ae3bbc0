"""Run configs that would silently misbehave: run names outside output_dir, keys given twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from neurodecode.config import ConfigError, FitConfig, load_config
from neurodecode.workflow._run import _new_run_dir

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "name", ["../x", "..", ".", "", "  ", "/tmp/x", "a/b", "a\\b", "C:x", "runs/../../x", "a\x00b"]
)
def test_run_name_cannot_leave_output_dir(tmp_path, name):
    p = tmp_path / "r.yaml"
    p.write_text(f"name: {name!r}\noutput_dir: {str(tmp_path / 'runs')!r}\n")
    with pytest.raises(ConfigError, match=r"(?s)name: .*one folder name inside output_dir.*--set name="):
        load_config(p)
    with pytest.raises(ConfigError, match="name: .*one folder name inside output_dir"):
        load_config(None, [f"name={name}"] if name.strip() else ["name=''"])
    with pytest.raises(ValidationError, match="one folder name inside output_dir"):
        FitConfig(name=name)
    cfg = FitConfig()
    with pytest.raises(ValidationError, match="one folder name inside output_dir"):
        cfg.name = name  # validate_assignment: a config changed in code is checked too
    assert [q.name for q in tmp_path.iterdir()] == ["r.yaml"]  # nothing was created


@pytest.mark.parametrize("name", ["demo", "my run", "exp-1.2", "...", "ünï"])
def test_plain_run_names_stay_inside_output_dir(tmp_path, name):
    cfg = load_config(None, [f"name={name}", f"output_dir={tmp_path / 'runs'}"])
    run = _new_run_dir(cfg, None)
    assert run.parent == tmp_path / "runs" and run.name == name


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return p


def test_duplicate_top_level_key_names_file_key_and_lines(tmp_path):
    p = _write(tmp_path, "name: first\nseed: 1\nname: second\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert str(p) in msg and "'name'" in msg and "line 1" in msg and "line 3" in msg


def test_duplicate_nested_and_flow_keys(tmp_path):
    p = _write(tmp_path, "models:\n  mlp:\n    lr: 0.001\n    max_epochs: 2\n    lr: 0.01\n")
    with pytest.raises(ConfigError, match=r"recipe\.yaml: key 'lr' is given twice \(line 3, then line 5\)"):
        load_config(p)
    p = _write(tmp_path, "seed: 0\nsimulate: {snr: 0.5, snr: 0.7}\n")
    with pytest.raises(ConfigError, match=r"key 'snr' is given twice \(line 2, then line 2\)"):
        load_config(p)
    p = _write(tmp_path, "models:\n  mlp:\n    lr: 0.001\nmodels:\n  ridge:\n    enabled: true\n")
    with pytest.raises(ConfigError, match=r"key 'models' is given twice \(line 1, then line 4\)"):
        load_config(p)


def test_same_key_in_different_sections_and_merges_are_fine(tmp_path):
    p = _write(
        tmp_path,
        "seed: 3\nsimulate:\n  seed: 4\n  params:\n    base: &b {a: 1, b: 2}\n"
        "    derived:\n      <<: *b\n      a: 3\n",
    )
    cfg = load_config(p)
    assert cfg.seed == 3 and cfg.simulate.seed == 4
    assert cfg.simulate.params["derived"] == {"a": 3, "b": 2}


def test_other_yaml_errors_still_clear(tmp_path):
    p = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p = _write(tmp_path, "? [1, 2]\n: x\n")  # an unhashable key
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


@pytest.mark.parametrize("recipe", sorted((REPO / "neurodecode" / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_have_no_duplicate_keys(recipe, monkeypatch, tmp_path):
    for name in (
        "NSD_ROOT",
        "THINGS_EEG2_ROOT",
        "THINGS_MEG_ROOT",
        "MASC_ROOT",
        "SPEECH_WEIGHTS",
        "ATLAS_DIR",
    ):
        monkeypatch.setenv(f"NEURODECODE_{name}", str(tmp_path))
    monkeypatch.setenv("NEURODECODE_CLIP_WEIGHTS", str(tmp_path / "clip.safetensors"))
    load_config(recipe)  # the duplicate-key loader reads every shipped recipe
