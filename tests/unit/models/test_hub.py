"""Models on the Hugging Face Hub: model cards, offline cache resolution, push_to_hub (never the network)."""

from __future__ import annotations

import json
import shutil
from typing import ClassVar

import numpy as np
import pytest
import torch
import yaml

from neurodecode.models import BrainDecoder, RidgeDecoder
from neurodecode.models.hub import CARD_NAME, render_model_card

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import constants

FILES = ["README.md", "config.json", "model.safetensors"]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _brain() -> BrainDecoder:
    return BrainDecoder({1: 12, 2: 9}, embed_dim=5, hidden_dim=8, n_blocks=1, seed=0)


def _ridge() -> RidgeDecoder:
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(40, 6)), rng.normal(size=(40, 3))
    return RidgeDecoder(alphas=[1.0, 10.0], cv=None).fit(X, Y, verbose=False)


def _front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def _same_weights(a, b) -> None:
    if isinstance(a, BrainDecoder):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    else:
        np.testing.assert_array_equal(a.coef_, b.coef_)
        np.testing.assert_array_equal(a.intercept_, b.intercept_)
        assert a.alpha_ == b.alpha_


@pytest.fixture(params=["brain", "ridge"])
def model(request):
    return _brain() if request.param == "brain" else _ridge()


# -- save_pretrained: the folder and its card ----------------------------------------------------------
def test_save_writes_a_hub_folder_with_a_minimal_valid_card(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "m", verbose=False)
    assert sorted(p.name for p in folder.iterdir()) == FILES
    text = (folder / CARD_NAME).read_text()
    meta, body = _front_matter(text)
    name = type(model).__name__
    assert meta["library_name"] == "neurodecode" and meta["license"] == "other"
    assert meta["tags"][:3] == ["neurodecode", "brain-decoding", name]
    assert "model-index" not in meta and "datasets" not in meta  # nothing recorded, nothing claimed
    card = huggingface_hub.ModelCard(text)  # the Hub's own parser accepts it
    assert card.data.library_name == "neurodecode" and card.data.eval_results is None
    assert f'{name}.from_pretrained("org/name")' in body and "No evaluation was recorded" in body
    _same_weights(model, type(model).from_pretrained(folder, verbose=False))


def test_model_card_text_false_and_bad_keys(tmp_path):
    model = _brain()
    folder = model.save_pretrained(tmp_path / "none", model_card=False, verbose=False)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    text = "---\nlicense: mit\n---\n\n# mine\n"
    folder = model.save_pretrained(tmp_path / "text", model_card=text, verbose=False)
    assert (folder / CARD_NAME).read_text() == text
    with pytest.raises(ValueError, match=r"unknown keys \['licence'\]"):
        model.save_pretrained(tmp_path / "bad", model_card={"licence": "mit"}, verbose=False)
    with pytest.raises(TypeError, match="model_card"):
        model.save_pretrained(tmp_path / "bad2", model_card=3, verbose=False)


# -- a fitted run exported -----------------------------------------------------------------------------
def _metric(value, lo, hi, chance):
    return {"value": value, "ci_low": lo, "ci_high": hi, "chance": chance}


def _subject_metrics(shift: float) -> dict:
    return {"metrics": {"2way_forward": _metric(0.7155797101449277 + shift, 0.633288043478261, 0.84352355, 0.5),
                        "top1_forward": _metric(0.125, 0.041666666666666664, 0.25, 0.041666666666666664),
                        "nway_top1_forward": _metric(0.18333333333333332 - shift, 0.07313596, 0.3422413, 0.05)},
            "labels": {"2way_forward": "2-way identification, brain→image",
                       "top1_forward": "top-1 among all, brain→image",
                       "nway_top1_forward": "20-way top-1, brain→image"},
            "groups": {}, "topk_curve": {"k": [1, 2], "forward": [0.1, 0.2]}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run folder as `neurodecode fit` writes it (config.yaml, metrics.json, models/)."""
    out = tmp_path_factory.mktemp("runs") / "demo"
    _brain().save_pretrained(out / "models" / "mlp", verbose=False)
    _ridge().save_pretrained(out / "models" / "ridge", verbose=False)
    _brain().save_pretrained(out / "models" / "loso-subj02" / "mlp", verbose=False)
    config = {"name": "demo", "seed": 0, "output_dir": "/home/me/runs",
              "data": {"dataset": "nsd", "subjects": [1, 2], "root": "~/data/nsd"},
              "models": {"mlp": {"hidden_dim": 8, "max_epochs": 6}}, "evaluation": {"ci": 0.95, "n_boot": 50}}
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    metrics = {"neurodecode_version": "0.1", "dataset": "nsd", "modality": "fmri", "data_root": "/secret/path",
               "simulated": False, "scheme": "within", "subjects": [1, 2], "n_train_trials": 576,
               "n_test_items": {"1": 24, "2": 23}, "targets": "clip768",
               "models": {name: {"subj01": _subject_metrics(0.0), "subj02": _subject_metrics(0.01)}
                          for name in ("mlp", "ridge")}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


def test_export_run_card_holds_the_metrics_and_cis_of_metrics_json(run, tmp_path):
    from neurodecode.workflow import export_run

    out = export_run(run, tmp_path / "export", model="mlp", license="cc-by-4.0", tags=["nsd-demo"], verbose=False)
    assert sorted(p.name for p in out.iterdir()) == FILES
    text = (out / CARD_NAME).read_text()
    meta, body = _front_matter(text)
    assert meta["library_name"] == "neurodecode" and meta["license"] == "cc-by-4.0"
    assert meta["datasets"] == ["nsd"] and {"fmri", "nsd-demo", "BrainDecoder"} <= set(meta["tags"])
    metrics = json.loads((run / "metrics.json").read_text())["models"]["mlp"]
    (index,) = meta["model-index"]
    assert index["name"] == "demo-mlp"
    assert [r["dataset"]["config"] for r in index["results"]] == ["subj01", "subj02"]
    for result in index["results"]:
        expected = metrics[result["dataset"]["config"]]["metrics"]
        got = {m["type"]: {"value": m["value"], **{k: v for k, v in m["args"].items() if k != "ci_level"}}
               for m in result["metrics"]}
        assert got == expected  # exactly the floats of metrics.json
        assert all(m["args"]["ci_level"] == 0.95 for m in result["metrics"])
        assert result["dataset"]["type"] == "nsd" and result["dataset"]["split"] == "test"
    evals = huggingface_hub.ModelCard(text).data.eval_results  # the Hub's parser reads every result
    assert len(evals) == 6 and evals[0].metric_args["ci_low"] == 0.633288043478261
    # the body: recipe, data, the table with CIs and chance, how to load
    recipe = body.split("```yaml\n", 1)[1].split("```", 1)[0]
    want = yaml.safe_load((run / "config.yaml").read_text())
    want["output_dir"] = want["data"]["root"] = "<local path>"  # the user's paths never go into a public card
    assert yaml.safe_load(recipe) == want
    assert "/home/me" not in text and "~/data" not in text
    assert "| training trials | 576 |" in body and "| test items per subject | 1: 24, 2: 23 |" in body
    assert "/secret/path" not in text
    assert "| 2-way identification, brain→image | 0.7156 | [0.6333, 0.8435] | 0.5000 |" in body
    assert "| 95% CI |" in body and "### subj02" in body
    assert 'BrainDecoder.from_pretrained("org/name")' in body
    _same_weights(BrainDecoder.from_pretrained(run / "models" / "mlp", verbose=False),
                  BrainDecoder.from_pretrained(out, verbose=False))


def test_export_ridge_loso_fold_and_errors(run, tmp_path):
    from neurodecode.workflow import export_run, model_card_from_run

    out = export_run(run, tmp_path / "ridge", model="ridge", verbose=False)
    meta, body = _front_matter((out / CARD_NAME).read_text())
    assert "RidgeDecoder" in meta["tags"] and "closed-form `RidgeDecoder`" in body
    _same_weights(RidgeDecoder.from_pretrained(run / "models" / "ridge", verbose=False),
                  RidgeDecoder.from_pretrained(out, verbose=False))
    card = model_card_from_run(run, model="loso-subj02/mlp")
    assert list(card["results"]) == ["subj02"] and card["name"] == "demo-loso-subj02-mlp"
    with pytest.raises(FileExistsError, match="not empty"):
        export_run(run, out, model="ridge", verbose=False)
    export_run(run, out, model="mlp", overwrite=True, verbose=False)
    assert json.loads((out / "config.json").read_text())["class"] == "BrainDecoder"
    with pytest.raises(FileNotFoundError, match=r"loso-subj02/mlp"):
        export_run(run, tmp_path / "x", model="transformer", verbose=False)
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        export_run(run / "models", tmp_path / "y", model="mlp", verbose=False)


# -- from_pretrained("org/name") through the Hugging Face cache ----------------------------------------
@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _cache_repo(cache, repo_id, folder, sha=SHA):
    """Lay ``folder`` out as the HF cache does for ``repo_id`` at commit ``sha`` (refs/main → sha)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / sha)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)


def test_from_pretrained_repo_id_resolves_offline_from_the_cache(model, hf_cache, tmp_path):
    folder = model.save_pretrained(tmp_path / "saved", verbose=False)
    _cache_repo(hf_cache, "org/name", folder)
    cls = type(model)
    for ref in ("org/name", "hf-hub:org/name"):
        _same_weights(model, cls.from_pretrained(ref, verbose=False))
    _same_weights(model, cls.from_pretrained("org/name", revision=SHA, verbose=False))
    with pytest.raises(FileNotFoundError, match="revision 'v2'"):
        cls.from_pretrained("org/name", revision="v2", verbose=False)


def test_from_pretrained_not_cached_offline_names_repo_and_fix(hf_cache):
    with pytest.raises(FileNotFoundError) as err:
        BrainDecoder.from_pretrained("org/missing", verbose=False)
    msg = str(err.value)
    assert "'org/missing'" in msg and str(hf_cache) in msg
    assert "allow_download=True" in msg and "hf download org/missing" in msg and "config.json" in msg
    with pytest.raises(FileNotFoundError, match="unset HF_HUB_OFFLINE"):
        RidgeDecoder.from_pretrained("org/missing", allow_download=True, verbose=False)


def test_allow_download_is_the_only_way_online(model, tmp_path, monkeypatch):
    folder = model.save_pretrained(tmp_path / "saved", verbose=False)
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cls = type(model)
    cls.from_pretrained("org/name", verbose=False)
    _same_weights(model, cls.from_pretrained("org/name", revision="v1", allow_download=True, verbose=False))
    assert [(r, k["local_files_only"], k["revision"]) for r, k in calls] == [("org/name", True, None),
                                                                             ("org/name", False, "v1")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # honoured even when set after huggingface_hub was imported
    cls.from_pretrained("org/name", allow_download=True, verbose=False)
    assert calls[-1][1]["local_files_only"] is True
    _same_weights(model, cls.from_pretrained(folder, verbose=False))  # a local folder never asks the cache
    assert len(calls) == 3


# -- push_to_hub with a fake HfApi ---------------------------------------------------------------------
class FakeHfApi:
    calls: ClassVar[list] = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        from pathlib import Path

        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        FakeHfApi.calls.append(("upload_folder", repo_id, {**kwargs, "files": files, "token": self.token}))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.fixture
def fake_api(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return FakeHfApi


def test_push_to_hub_uploads_the_three_files(model, fake_api, tmp_path):
    url = model.push_to_hub("org/name", private=True, token="tok", commit_message="first", verbose=False)
    assert url == "https://huggingface.co/org/name/commit/abc"
    (create, repo, ckw), (upload, repo2, ukw) = fake_api.calls
    assert (create, repo, upload, repo2) == ("create_repo", "org/name", "upload_folder", "org/name")
    assert ckw["exist_ok"] is True and ckw["private"] is True and ckw["repo_type"] == "model"
    assert ukw["commit_message"] == "first" and ukw["token"] == "tok" and ukw["repo_type"] == "model"
    assert sorted(ukw["files"]) == FILES
    assert f'{type(model).__name__}.from_pretrained("org/name")' in ukw["files"][CARD_NAME].decode()
    copy = tmp_path / "uploaded"
    copy.mkdir()
    for name, data in ukw["files"].items():
        (copy / name).write_bytes(data)
    _same_weights(model, type(model).from_pretrained(copy, verbose=False))


def test_push_refuses_in_offline_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    FakeHfApi.calls = []
    with pytest.raises(OSError, match=r"HF_HUB_OFFLINE=0.*hf upload org/name"):
        _brain().push_to_hub("org/name", verbose=False)
    assert FakeHfApi.calls == []


def test_cli_export_and_push(run, fake_api, tmp_path, capsys):
    from neurodecode.cli import main

    out = tmp_path / "cli"
    assert main(["export", str(run), str(out), "--model", "ridge", "--tag", "x", "--push-to-hub", "org/r",
                 "--private", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert [c[:2] for c in fake_api.calls] == [("create_repo", "org/r"), ("upload_folder", "org/r")]
    assert fake_api.calls[0][2]["private"] is True and sorted(fake_api.calls[1][2]["files"]) == FILES
    assert 'RidgeDecoder.from_pretrained("org/r")' in (out / CARD_NAME).read_text()
    assert "Pushed to https://huggingface.co/org/r" in capsys.readouterr().out
    assert main(["export", str(run), str(out)]) == 1  # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err


def test_cli_export_push_while_offline_writes_nothing(run, monkeypatch, tmp_path, capsys):
    from neurodecode.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", str(run), str(tmp_path / "out"), "--push-to-hub", "org/r"]) == 1
    assert "HF_HUB_OFFLINE=0" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_render_model_card_without_ci_level_or_labels():
    nan = float("nan")
    text = render_model_card("RidgeDecoder", summary="S.",
                             card={"results": {"all": {"acc": {"value": 0.5}, "r2": {"value": nan},
                                                       "f1": {"value": 0.25, "ci_low": nan, "chance": 0.1}}},
                                   "data": {"dataset": "x"}})
    meta, body = _front_matter(text)
    (result,) = meta["model-index"][0]["results"]
    assert result["metrics"] == [{"type": "acc", "name": "acc", "value": 0.5},  # no NaN in the Hub's metadata
                                 {"type": "f1", "name": "f1", "value": 0.25, "args": {"chance": 0.1}}]
    assert "| acc | 0.5000 | n/a | n/a |" in body and "| r2 | n/a | n/a | n/a |" in body and "| CI |" in body
