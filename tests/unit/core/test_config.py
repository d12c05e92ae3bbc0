from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from neurodecode.config import ConfigError, FitConfig, config_to_yaml, load_config, valid_keys

REPO = Path(__file__).resolve().parents[3]


def test_defaults_are_the_demo_recipe():
    demo = load_config(REPO / "neurodecode" / "pipelines" / "demo.yaml")
    assert demo == FitConfig()


@pytest.mark.parametrize("recipe", sorted((REPO / "neurodecode" / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_validates_and_has_no_machine_paths(recipe, monkeypatch, tmp_path):
    text = recipe.read_text()
    for name in ("NSD_ROOT", "THINGS_EEG2_ROOT", "THINGS_MEG_ROOT", "MASC_ROOT", "SPEECH_WEIGHTS", "ATLAS_DIR"):
        monkeypatch.setenv(f"NEURODECODE_{name}", str(tmp_path))
    monkeypatch.setenv("NEURODECODE_CLIP_WEIGHTS", str(tmp_path / "clip.safetensors"))
    load_config(recipe)
    for bad in tuple("/" + d + "/" for d in ("home", "work", "data", "weka")) + ("C:\\",):
        assert bad not in text, f"{recipe.name} holds a machine path"


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown key 'models.mlp.lrr'.*max_epochs"):
        load_config(None, ["models.mlp.lrr=1"])
    with pytest.raises(ConfigError, match="unknown key 'bogus'.*data"):
        load_config(None, ["bogus=1"])


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("data:\n  subjekts: [1]\n")
    with pytest.raises(ConfigError, match="subjekts.*Valid keys in 'data'.*subjects"):
        load_config(p)


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigError, match="n_candidates"):
        load_config(None, ["evaluation.n_candidates=abc"])
    with pytest.raises(ConfigError, match="alphas"):
        load_config(None, ["models.ridge.alphas=[-1]"])
    with pytest.raises(ConfigError, match="not simulated"):
        load_config(None, ["data.subjects=[1,5]"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["novalue"])


def test_overrides_parse_yaml_and_roundtrip(tmp_path):
    cfg = load_config(None, ["models.mlp.lr=1e-3", "data.subjects=[2]", "data.root=null",
                             "data.sessions=[1,2]"])
    assert cfg.models.mlp.lr == 1e-3 and cfg.data.subjects == [2] and cfg.data.sessions == [1, 2]
    p = tmp_path / "c.yaml"
    p.write_text(config_to_yaml(cfg))
    assert load_config(p) == cfg
    assert yaml.safe_load(p.read_text())["models"]["mlp"]["lr"] == 1e-3


def test_valid_keys_cover_sections():
    keys = valid_keys()
    assert "models.mlp.max_epochs" in keys and "evaluation.n_candidates" in keys


def test_root_placeholder(monkeypatch, tmp_path):
    recipe = REPO / "neurodecode" / "pipelines" / "nsd_ridge.yaml"
    monkeypatch.delenv("NEURODECODE_NSD_ROOT", raising=False)
    with pytest.raises(ConfigError, match="NEURODECODE_NSD_ROOT is not set.*--root"):
        load_config(recipe)
    assert load_config(recipe, [f"data.root={tmp_path}"]).data.root == str(tmp_path)
    monkeypatch.setenv("NEURODECODE_NSD_ROOT", "/somewhere")
    assert load_config(recipe).data.root == "/somewhere"


def test_targets_and_architecture_keys(monkeypatch):
    cfg = FitConfig()
    assert (cfg.targets.encoder, cfg.targets.weights, cfg.targets.output, cfg.targets.cache_dir) == \
        ("pixels", None, "pooled", None)
    mlp = cfg.models.mlp
    assert (mlp.adapter, mlp.backbone, mlp.heads, mlp.token_shape, mlp.checkpoint_every) == \
        ("linear", "mlp", ["pooled"], None, 100)
    ok = load_config(None, ["targets.encoder=ViT-L-14", "targets.weights=/m/w.safetensors",
                            "targets.output=tokens", "models.mlp.heads=[pooled,tokens]",
                            "models.mlp.backbone=mixer", "models.mlp.mixed_precision=no"])
    assert ok.targets.output == "tokens" and ok.models.mlp.mixed_precision == "no"
    with pytest.raises(ConfigError, match="needs targets.weights"):
        load_config(None, ["targets.encoder=ViT-L-14"])
    with pytest.raises(ConfigError, match="unknown encoder 'ViT-L-15'.*ViT-L-14"):
        load_config(None, ["targets.encoder=ViT-L-15", "targets.weights=x"])
    with pytest.raises(ConfigError, match="'pixels' encoder takes no weights"):
        load_config(None, ["targets.weights=x"])
    px = load_config(None, ["targets.output=tokens", "models.mlp.heads=[pooled,tokens]",
                            "models.mlp.token_loss=cosine", "models.mlp.token_weight=0.5"])
    assert (px.models.mlp.token_loss, px.models.mlp.token_weight) == ("cosine", 0.5)
    with pytest.raises(ConfigError, match="token_weight"):
        load_config(None, ["models.mlp.token_weight=-1"])
    with pytest.raises(ConfigError, match="heads includes 'tokens' but the targets are pooled"):
        load_config(None, ["models.mlp.heads=[pooled,tokens]"])
    assert load_config(None, ["models.mlp.heads=[pooled,tokens]", "models.mlp.token_shape=[4,8]"])
    with pytest.raises(ConfigError, match="no 'tokens' head"):
        load_config(None, ["targets.encoder=ViT-L-14", "targets.weights=x", "targets.output=tokens"])
    with pytest.raises(ConfigError, match="must include 'pooled'"):
        load_config(None, ["models.mlp.heads=[tokens]", "models.mlp.token_shape=[4,8]"])
    with pytest.raises(ConfigError, match="token_shape must be"):
        load_config(None, ["models.mlp.heads=[pooled,tokens]", "models.mlp.token_shape=[4]"])
    with pytest.raises(ConfigError, match="models.mlp.backbone='atm' does not fit fmri"):
        load_config(None, ["models.mlp.backbone=atm"])
    monkeypatch.delenv("NEURODECODE_CLIP_WEIGHTS", raising=False)
    monkeypatch.setenv("NEURODECODE_CONFIG", "/nonexistent/config.json")
    with pytest.raises(ConfigError, match="NEURODECODE_CLIP_WEIGHTS is not set"):
        load_config(None, ["targets.encoder=ViT-L-14", "targets.weights=${NEURODECODE_CLIP_WEIGHTS}"])


MEEG = ["models.mlp.adapter=subject_layer", "models.mlp.backbone=dilated_conv"]


def test_dataset_specific_keys_are_checked():
    eeg = load_config(None, ["data.dataset=things_eeg2", *MEEG, "data.options={variant: atm}",
                             "simulate.params={n_train_concepts: 20}", "preprocessing.sfreq=120"])
    assert eeg.data.options == {"variant": "atm"} and eeg.preprocessing.sfreq == 120
    with pytest.raises(ConfigError, match="data.roi applies to NSD only"):
        load_config(None, ["data.dataset=things_eeg2", *MEEG, "data.roi=V1"])
    with pytest.raises(ConfigError, match="simulate.n_sessions applies to the NSD simulator only"):
        load_config(None, ["data.dataset=things_meg", *MEEG, "simulate.n_sessions=2"])
    with pytest.raises(ConfigError, match="data.options is for the M/EEG loaders"):
        load_config(None, ["data.options={variant: atm}"])
    with pytest.raises(ConfigError, match="preprocessing section is for M/EEG"):
        load_config(None, ["preprocessing.sfreq=100"])
    with pytest.raises(ConfigError, match="adapter='linear' does not fit eeg"):
        load_config(None, ["data.dataset=things_eeg2"])
    with pytest.raises(ConfigError, match="stimuli are speech"):
        load_config(None, ["data.dataset=masc", *MEEG])
    with pytest.raises(ConfigError, match="embeds audio but 'nsd' stimuli are images"):
        load_config(None, ["targets.encoder=melspec"])
    with pytest.raises(ConfigError, match="image_size does not apply to 'masc'"):
        load_config(None, ["data.dataset=masc", *MEEG, "targets.encoder=melspec", "simulate.image_size=32"])
    with pytest.raises(ConfigError, match="needs targets.weights"):
        load_config(None, ["data.dataset=masc", *MEEG, "targets.encoder=speech"])
    with pytest.raises(ConfigError, match="loso needs at least 2 subjects"):
        load_config(None, ["data.subjects=[1]", "evaluation.scheme=loso"])
    with pytest.raises(ConfigError, match="time_windows is an M/EEG analysis"):
        load_config(None, ["evaluation.time_windows=[0.1,0.05]"])
    with pytest.raises(ConfigError, match="baseline must be"):
        load_config(None, ["data.dataset=things_eeg2", *MEEG, "preprocessing.baseline=[0.1]"])


def test_saved_meeg_config_round_trips():
    """A run's config.yaml leaves out keys that do not apply, so resuming re-validates it."""
    cfg = load_config(None, ["data.dataset=masc", *MEEG, "targets.encoder=melspec"])
    text = config_to_yaml(cfg)
    tree = yaml.safe_load(text)
    assert "roi" not in tree["data"] and "n_sessions" not in tree["simulate"]
    assert "image_size" not in tree["simulate"]
    assert FitConfig.model_validate(tree) == cfg


def test_unknown_names_list_the_registered_ones():
    """data.dataset and models.mlp.* are checked against the registries, with a 'did you mean'."""
    with pytest.raises(ConfigError, match=r"unknown dataset 'thing_eeg2'\. Did you mean 'things_eeg2'\?"
                       r".*'nsd', 'things_eeg2', 'things_meg', 'masc'"):
        load_config(None, ["data.dataset=thing_eeg2"])
    with pytest.raises(ConfigError, match=r"unknown backbone 'mixr'\. Did you mean 'mixer'\?.*register_"):
        load_config(None, ["models.mlp.backbone=mixr"])
    with pytest.raises(ConfigError, match=r"unknown head 'token'\. Did you mean 'tokens'\?"):
        load_config(None, ["models.mlp.heads=[pooled,token]"])
    with pytest.raises(ConfigError, match=r"unknown token loss 'cosin'\. Did you mean 'cosine'\?"):
        load_config(None, ["models.mlp.token_loss=cosin"])


def test_importing_the_config_module_stays_cheap(tmp_path):
    """Validation asks the registries (function-level imports); importing neurodecode.config does not."""
    import subprocess
    import sys

    code = ("import sys; import neurodecode.config; "
            "loaded = [m for m in ('torch', 'neurodecode.datasets', 'neurodecode.models') "
            "if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_a_typo_gets_the_nearest_key_and_a_comma_list_gets_the_list_syntax():
    with pytest.raises(ConfigError, match=r"unknown key 'models\.mlp\.lrr'\. Did you mean 'models\.mlp\.lr'\?"):
        load_config(overrides=["models.mlp.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"unknown key 'evaluaton'\. Did you mean 'evaluation'\?"):
        load_config(overrides=["evaluaton.n_boot=10"])
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["models.mlp.zzzz=1"])
    assert "Did you mean" not in str(err.value)
    with pytest.raises(ConfigError, match=r"write a list in brackets: --set data\.subjects=\[1,2\]"):
        load_config(overrides=["data.subjects=1,2"])
