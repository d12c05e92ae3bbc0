"""`neurodecode evaluate --published mindeye1:PATH` / `mindbridge:PATH` end to end on simulated NSD.

The checkpoints are written under the original key names (``original_mindeye1_keys`` /
``original_mindbridge_keys``) at toy sizes chosen so that the model's output is as wide as the flattened
``projected_cls`` tokens of a tiny random CLIP (``tests/_tiny_clip.py``: pooled 32-d + 16 projected patch
tokens → 17 × 32): MindEye1 with ``n_tokens=17, clip_dim=32``, MindBridge with a ``17 · 32`` image head. The
families' default recipe (``nsd_mindbridge``) and settings (``FAMILY_SETTINGS``: tokens targets,
``projected_cls``) are used, so retrieval is scored on the flattened tokens, as the originals score it. What
is checked: the command's numbers equal a direct computation (``from_published`` → ``predict`` on the run's
test trials, ``evaluate_retrieval`` with the run's protocol against independently computed tokens), the run
folder is taken by ``ablate`` and ``reconstruct`` (MindEye1's diffusion prior conditioning Versatile
Diffusion), and a file whose output does not fit the targets is refused with a clear message and no run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodecode.cli import main

N_TOKENS, CLIP_DIM = 17, 32          # the tiny CLIP's projected_cls tokens: pooled + 16 patch tokens, 32-d
# MindEye1 prior_257 at toy size: voxel2clip 16 wide, 1 block, projector 16; prior depth 1, 2 heads × 8,
# 10 timesteps (dalle2's cosine schedule), rotary dim 4
MINDEYE1 = dict(hidden_dim=16, n_blocks=1, clip_dim=CLIP_DIM, n_tokens=N_TOKENS, projector_dim=16,
                prior_depth=1, prior_dim_head=8, prior_heads=2, timesteps=10, rotary_dim=4)
# MindBridge for subjects 1 and 2: voxels pooled to 16, hidden 8, 1 block, rank 4, image head 17 · 32
MINDBRIDGE = dict(subjects=("1", "2"), in_dim=16, hidden_dim=8, n_blocks=1, rank=4,
                  image_dim=N_TOKENS * CLIP_DIM, text_dim=12)


@pytest.fixture(scope="module")
def nsd(tmp_path_factory):
    """Simulated NSD (1 subject, 2 sessions × 100 trials, 16-px images), the tiny CLIP, the voxel count."""
    from _tiny_clip import TINY, make_tiny_clip

    from neurodecode.datasets import load_nsd, simulate

    tmp = tmp_path_factory.mktemp("nsd_families")
    weights = make_tiny_clip(tmp)
    sim = tmp / "nsd"
    simulate("nsd", sim, n_subjects=1, n_sessions=2, trials_per_session=100, shared_fraction=0.25,
             image_size=16, seed=0, verbose="warning")
    n_voxels = int(load_nsd(sim, 1, verbose="warning").data.shape[1])
    return {"tmp": tmp, "sim": sim, "weights": weights, "tiny": TINY, "n_voxels": n_voxels}


def _random_state(keys: dict, seed: int) -> dict[str, torch.Tensor]:
    """Fan-in-scaled random tensors for ``keys``; norm gains near 1 so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in keys.items():
        if len(shape) >= 2:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        elif key.endswith((".weight", ".g")):
            value = 1 + 0.1 * rng.standard_normal(shape)
        else:
            value = 0.1 * rng.standard_normal(shape)
        state[key] = torch.tensor(value, dtype=torch.float32)
    return state


def _mindeye1_prior_file(path: Path, n_voxels: int) -> Path:
    """A ``prior_257_final_subj01_…/last.pth``-style file: voxel2clip + the Versatile-Diffusion prior."""
    from neurodecode.models.priors import noise_schedule
    from neurodecode.models.published.mindeye1 import original_mindeye1_keys

    keys = original_mindeye1_keys("prior_257", voxels=n_voxels, **MINDEYE1)
    state = _random_state(keys, seed=0)
    schedule = noise_schedule("cosine", MINDEYE1["timesteps"])          # dalle2's cosine buffers
    state.update({f"noise_scheduler.{k}": v for k, v in schedule.items()})
    rot = MINDEYE1["rotary_dim"]
    freqs = 1.0 / 10000 ** (torch.arange(0, rot, 2).float() / rot)      # one rotary module, listed per layer
    state.update({k: freqs.clone() for k in keys if k.endswith("rotary_emb.freqs")})
    torch.save({"model_state_dict": state, "epoch": 239}, path)
    return path


def _mindeye1_autoencoder_file(path: Path, n_voxels: int) -> Path:
    """An ``autoencoder_subj01_4x_…/epoch120.pth``-style file (the low-level model: no retrieval output)."""
    from neurodecode.models.published.mindeye1 import original_mindeye1_keys

    keys = original_mindeye1_keys("autoencoder", voxels=n_voxels, hidden_dim=16, n_blocks=1, side=4)
    torch.save({"model_state_dict": _random_state(keys, seed=1)}, path)
    return path


def _mindbridge_file(path: Path) -> Path:
    """A ``mindbridge_subj1257/last.pth``-style file for subjects 1 and 2 (builder included, as published)."""
    from neurodecode.models.published.mindbridge import original_mindbridge_keys

    torch.save({"model_state_dict": _random_state(original_mindbridge_keys(**MINDBRIDGE), seed=2)}, path)
    return path


def _evaluate(nsd: dict, published: str, out: Path, *options: str) -> int:
    """``neurodecode evaluate --published FAMILY:PATH --root SIM --subject 1`` with the family's recipe."""
    sets = [f"targets.encoder={nsd['tiny']}", f"targets.weights={nsd['weights']}", "device=cpu",
            f"targets.cache_dir={nsd['tmp'] / 'cache'}", "evaluation.n_boot=20", "evaluation.n_candidates=10",
            "report.n_examples=0", f"output_dir={out}"]
    argv = ["evaluate", "--published", published, "--root", str(nsd["sim"]), "--subject", "1", "-q"]
    for o in options:
        argv += ["--option", o]
    return main(argv + [a for s in sets for a in ("--set", s)])


def _run_test_trials(run: Path):
    """The run's config and its test trials, loaded, preprocessed and repetition-averaged as the run does."""
    from neurodecode.config import load_config
    from neurodecode.workflow._data import load_data, preprocess

    config = load_config(run / "config.yaml")
    trials = preprocess(config, load_data(config)[1])
    test = trials.select(split="test")
    if config.evaluation.average_repetitions:
        test = test.average_repetitions()
    return config, trials, test


def _flat_tokens(nsd: dict, trials, ids: list) -> np.ndarray:
    """The tiny CLIP's projected_cls tokens of ``ids`` (no cache), flattened: (n, 17 · 32)."""
    from neurodecode.embeddings import ClipEncoder
    from neurodecode.embeddings.pixels import embed_images

    enc = ClipEncoder(nsd["tiny"], str(nsd["weights"]), device="cpu", tokens="projected_cls")
    tokens = embed_images(trials.stimuli, list(dict.fromkeys(ids)), encoder=enc, output="tokens")
    assert tuple(tokens.token_shape) == (N_TOKENS, CLIP_DIM)
    return tokens.lookup(ids).reshape(len(ids), -1)


def _direct_scores(config, pred: np.ndarray, target: np.ndarray):
    from neurodecode.tasks import evaluate_retrieval

    ev = config.evaluation
    return evaluate_retrieval(pred, target, n_candidates=ev.n_candidates, n_repeats=ev.n_repeats,
                              topk=tuple(ev.topk), n_boot=ev.n_boot, ci=ev.ci, random_state=config.seed)


def _check_scores(got: dict, expected: dict) -> None:
    """metrics.json's per-subject entry against a direct evaluate_retrieval (float tolerance)."""
    for name, m in expected["metrics"].items():
        for field in ("value", "ci_low", "ci_high", "chance"):
            if isinstance(m.get(field), float):
                assert got["metrics"][name][field] == pytest.approx(m[field], abs=1e-9), (name, field)


def test_mindeye1_prior_file_scored_ablated_and_reconstructed(nsd, capsys, monkeypatch):
    from neurodecode.models import from_published

    monkeypatch.setenv("NEURODECODE_DATA", str(nsd["tmp"] / "data"))
    tmp = nsd["tmp"]
    ckpt = _mindeye1_prior_file(tmp / "me1_last.pth", nsd["n_voxels"])
    assert _evaluate(nsd, f"mindeye1:{ckpt}", tmp / "runs_me1", "subject=1") == 0
    run = tmp / "runs_me1" / "nsd_mindbridge-published-mindeye1"
    for name in ("config.yaml", "metrics.json", "report.html", "run.json", "predictions_mlp.npz",
                 "models/mlp/model.safetensors", "models/mlp/config.json", "models/mlp/published.json"):
        assert (run / name).is_file(), name
    assert not (run / "models" / "ridge").exists()       # nothing trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "nsd" and list(metrics["models"]) == ["mlp"]
    assert "tokens (projected_cls)" in metrics["targets"]  # scored on the flattened projected_cls tokens
    top1 = metrics["models"]["mlp"]["subj01"]["metrics"]["nway_top1_forward"]
    assert top1["chance"] == pytest.approx(0.1) and top1["ci_low"] <= top1["value"] <= top1["ci_high"]

    # the same numbers computed here: from_published → predict on the run's test trials, against the test
    # images' projected_cls tokens (embedded again, without the run's cache), with the run's protocol
    config, trials, test = _run_test_trials(run)
    assert config.targets.output == "tokens" and config.targets.tokens == "projected_cls"
    model = from_published("mindeye1", ckpt, subject=1)
    assert model.prior is not None and model.published["kind"] == "prior_257"
    pred = model.predict(test)
    assert pred.shape == (len(test), N_TOKENS * CLIP_DIM)
    assert float(pred.std(axis=0).mean()) > 1e-3          # the trials are decoded to different embeddings
    saved = np.load(run / "predictions_mlp.npz")
    assert list(saved["stimulus_id"]) == [str(i) for i in test.events["stimulus_id"]]
    np.testing.assert_allclose(saved["prediction"], pred, atol=1e-5)
    ids = test.events["stimulus_id"].tolist()
    target = _flat_tokens(nsd, trials, ids)
    assert metrics["n_test_items"] == {"1": len(ids)}
    _check_scores(metrics["models"]["mlp"]["subj01"], _direct_scores(config, pred, target).to_dict())

    record = json.loads((run / "models" / "mlp" / "published.json").read_text())
    assert record["family"] == "mindeye1" and record["container"] == "model_state_dict"
    assert record["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert record["options"] == {"subject": 1} and record["unused"] == []   # voxel2clip and prior: all used
    assert metrics["published"]["family"] == "mindeye1"

    assert main(["ablate", str(run), "--model", "mlp", "--atlas", "nsd:streams", "--strategy", "zero",
                 "--metric", "top1", "--n-null", "3", "-q"]) == 0
    abl = json.loads((run / "ablation-nsd-streams" / "metrics.json").read_text())
    assert abl["model"] == "mlp" and abl["top"]
    # ablate's intact score (all test images as candidates) from the same predictions and tokens
    t = target / np.linalg.norm(target, axis=1, keepdims=True)
    expected = float(np.mean((pred @ t.T).argmax(1) == np.arange(len(ids))))
    assert abl["baseline"]["top1"]["value"] == pytest.approx(expected)

    _reconstruct_with_the_prior(tmp, run, model, test, capsys, monkeypatch)


def _reconstruct_with_the_prior(tmp: Path, run: Path, model, test, capsys, monkeypatch) -> None:
    """The prior's (17, 32) samples condition a tiny Versatile Diffusion; --no-prior's 544-d output cannot."""
    pytest.importorskip("diffusers")
    from neurodecode.tasks.reconstruction import Reconstructor, make_random_pipeline

    generator = tmp / "versatile"
    make_random_pipeline("versatile", embed_dim=CLIP_DIM, seed=0).save_pretrained(generator)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = []
    original = Reconstructor.reconstruct

    def spy(self, cond, *args, **kwargs):
        seen.append(np.array(cond, copy=True))
        return original(self, cond, *args, **kwargs)

    monkeypatch.setattr(Reconstructor, "reconstruct", spy)
    common = ["--generator", str(generator), "--backend", "versatile", "--steps", "2", "--device", "cpu",
              "--size", "32", "--limit", "2", "--prior-steps", "3", "-q"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert main(["reconstruct", str(run), *common]) == 0
        # without the prior the decoded 17·32-d embedding is no Versatile-Diffusion token input
        capsys.readouterr()
        assert main(["reconstruct", str(run), *common, "--no-prior"]) == 1
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert f"outputs {N_TOKENS * CLIP_DIM}-d embeddings" in err and f"takes {CLIP_DIM}-d" in err
    out = run / "reconstructions-versatile"
    manifest = json.loads((out / "reconstructions" / "manifest.json").read_text())
    two = test[np.arange(2)]
    assert manifest["ids"] == [str(i) for i in two.events["stimulus_id"]]
    rec_metrics = json.loads((out / "metrics.json").read_text())
    assert rec_metrics["backend"] == "versatile" and rec_metrics["n_items"] == 2
    assert (out / "gallery.html").is_file()
    # the conditioning was the prior's samples (seed 0, 3 DDIM steps), not the decoded embedding
    assert len(seen) == 1 and seen[0].shape == (2, N_TOKENS, CLIP_DIM)
    np.testing.assert_allclose(seen[0], model.predict_prior(two, timesteps=3, seed=0), atol=1e-5)


def test_mindbridge_file_scored_with_voxels_from_the_data(nsd, monkeypatch):
    from neurodecode.models import from_published

    monkeypatch.setenv("NEURODECODE_DATA", str(nsd["tmp"] / "data"))
    tmp = nsd["tmp"]
    ckpt = _mindbridge_file(tmp / "mb_last.pth")
    assert _evaluate(nsd, f"mindbridge:{ckpt}", tmp / "runs_mb") == 0
    run = tmp / "runs_mb" / "nsd_mindbridge-published-mindbridge"
    metrics = json.loads((run / "metrics.json").read_text())
    assert "tokens" in metrics["targets"] and list(metrics["models"]["mlp"]) == ["subj01"]
    record = json.loads((run / "models" / "mlp" / "published.json").read_text())
    assert record["family"] == "mindbridge"
    assert record["options"] == {"voxels": {"1": nsd["n_voxels"]}}        # the data's voxel count
    unused = {u["key"] for u in record["unused"]}
    assert unused and all(k.startswith("builder.") for k in unused)       # training-only, for both subjects
    assert {k.split(".")[1] for k in unused} == {"1", "2"}
    assert all("training only" in u["reason"] for u in record["unused"])

    config, trials, test = _run_test_trials(run)
    model = from_published("mindbridge", ckpt, voxels={"1": nsd["n_voxels"]})
    pred = model.predict(test)
    assert pred.shape == (len(test), N_TOKENS * CLIP_DIM) and float(pred.std(axis=0).mean()) > 1e-3
    np.testing.assert_allclose(np.load(run / "predictions_mlp.npz")["prediction"], pred, atol=1e-5)
    target = _flat_tokens(nsd, trials, test.events["stimulus_id"].tolist())
    got = metrics["models"]["mlp"]["subj01"]
    _check_scores(got, _direct_scores(config, pred, target).to_dict())
    assert got["metrics"]["nway_top1_forward"]["chance"] == pytest.approx(0.1)


def test_mindeye1_autoencoder_file_is_refused_it_has_no_retrieval_output(nsd, capsys, monkeypatch):
    monkeypatch.setenv("NEURODECODE_DATA", str(nsd["tmp"] / "data"))
    tmp = nsd["tmp"]
    ckpt = _mindeye1_autoencoder_file(tmp / "epoch120.pth", nsd["n_voxels"])
    out = tmp / "runs_ae"
    capsys.readouterr()
    assert _evaluate(nsd, f"mindeye1:{ckpt}", out, "subject=1") == 1
    err = capsys.readouterr().err
    assert "neurodecode evaluate: error:" in err
    assert "is MindEye1's low-level model" in err and "no retrieval output" in err
    assert not out.exists() or not any(out.iterdir())
