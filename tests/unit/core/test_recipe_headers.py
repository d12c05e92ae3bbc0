"""Every recipe's documented simulator command parses and resolves to a valid config.

``benchmarks/deep_vs_ridge.py`` runs exactly these commands (read from the headers) to time them, so a
header that no longer parses would silently drop out of the benchmark; it fails here instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from neurodecode.config import ConfigError, load_config, parse_override

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))
from deep_vs_ridge import header_overrides  # noqa: E402

RECIPES = sorted(p for p in (REPO / "neurodecode" / "pipelines").glob("*.yaml")
                 if "On the simulator" in p.read_text())


def test_some_recipes_document_a_simulator_command():
    assert {"masc_speech.yaml", "things_meg.yaml", "things_eeg_atm.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_header_command_resolves(recipe, monkeypatch):
    for name in ("THINGS_EEG2_ROOT", "THINGS_MEG_ROOT", "MASC_ROOT", "NSD_ROOT", "CLIP_WEIGHTS",
                 "SPEECH_WEIGHTS"):
        monkeypatch.delenv(f"NEURODECODE_{name}", raising=False)
    overrides = header_overrides(recipe)
    assert "data.root=null" in overrides
    config = load_config(recipe, overrides)
    assert config.data.root is None  # runs on the simulator, no data or weights needed
    assert config.targets.weights is None


def test_flow_mapping_without_space_is_refused():
    with pytest.raises(ConfigError, match=r"\{hidden: 64\}"):
        parse_override("models.mlp.backbone_kwargs={hidden:64}")
    assert parse_override("models.mlp.backbone_kwargs={hidden: 64}")[1] == {"hidden": 64}
    assert parse_override("data.root=http://host:8080/x")[1] == "http://host:8080/x"


def test_header_parser(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# On the simulator (no data):\n#   neurodecode fit r --set a=1 \\\n"
                      "#       --set \"b={c: 2}\"\nname: r\n")
    assert header_overrides(recipe) == ["a=1", "b={c: 2}"]
    recipe.write_text("name: r\n")
    with pytest.raises(ValueError, match="On the simulator"):
        header_overrides(recipe)
