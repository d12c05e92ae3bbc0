"""Recipes ship inside the package: ``neurodecode fit NAME`` and ``neurodecode recipes`` work without a checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from neurodecode.cli import main
from neurodecode.config import RECIPE_DIR, ConfigError, list_recipes, load_config, recipe_path

REPO = Path(__file__).resolve().parents[3]
EXPECTED = {"demo", "nsd_ridge", "nsd_mindeye", "nsd_mindbridge", "nsd_wholebrain_networks", "things_eeg_atm",
            "things_meg", "masc_speech"}


def test_recipes_live_in_the_package_and_are_package_data():
    assert RECIPE_DIR == REPO / "neurodecode" / "pipelines"
    assert set(list_recipes()) == EXPECTED
    assert not (REPO / "pipelines").exists()  # one copy only: the packaged one
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "pipelines/*.yaml" in data["neurodecode"]


def test_every_recipe_has_a_one_line_summary():
    for name, summary in list_recipes().items():
        assert summary and "\n" not in summary and len(summary) < 110, name
        assert (RECIPE_DIR / f"{name}.yaml").read_text().startswith(f"# Summary: {summary}\n")


def test_name_and_path_resolve_to_the_same_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no checkout around: names resolve from the package
    by_name = load_config("nsd_ridge", ["data.root=/data/nsd"])
    by_path = load_config(RECIPE_DIR / "nsd_ridge.yaml", ["data.root=/data/nsd"])
    assert by_name == by_path and by_name.name == "nsd_ridge"
    assert recipe_path("demo") == RECIPE_DIR / "demo.yaml"


def test_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("name: mine\n")
    assert load_config("demo").name == "mine"


@pytest.mark.parametrize("bad, hint", [("nsd_rigde", "Did you mean 'nsd_ridge'"),
                                        ("missing.yaml", "nsd_ridge"),
                                        ("dir/nsd_ridge", "dir/nsd_ridge")])
def test_unknown_recipe_lists_the_shipped_ones(bad, hint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert hint in msg and "neurodecode recipes" in msg
    assert all(name in msg for name in EXPECTED)


def test_recipes_command_lists_each_recipe_on_one_line(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines if line and line.split()[0] in EXPECTED}
    assert listed == list_recipes()
    assert main(["recipes", "--path"]) == 0
    assert str(RECIPE_DIR / "things_meg.yaml") in capsys.readouterr().out


def test_fit_and_config_take_a_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "nsd_ridge", "--set", "data.root=/data/nsd"]) == 0
    out = capsys.readouterr().out
    assert "name: nsd_ridge" in out and "root: /data/nsd" in out
    assert main(["fit", "no_such_recipe"]) == 2
    assert "neurodecode recipes" in capsys.readouterr().err


def test_extras_are_grouped_by_task():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {e.split(">")[0].split("[")[0] for e in extras["fmri"]}
    assert names == {"nilearn"}
    assert {e.split(">")[0] for e in extras["meeg"]} == {"mne", "mne-bids"}
    assert {"diffusers", "transformers", "open_clip_torch"} <= {e.split(">")[0] for e in extras["generation"]}
    assert extras["all"] == ["neurodecode[fmri,meeg,generation,clip,speech,cluster,tracking]"]
    # every extra the error messages name exists
    from neurodecode.cli import OPTIONAL_EXTRAS

    assert set(OPTIONAL_EXTRAS.values()) <= set(extras)


def test_listing_recipes_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from neurodecode.cli import main; main(['recipes']); "
            "print('torch' in sys.modules, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "False False"
