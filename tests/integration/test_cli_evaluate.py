"""`neurodecode evaluate --published atm:PATH` end to end on the simulated THINGS-EEG2 (ATM layout).

The checkpoint is what ``ATMS_retrieval.py`` saves (a bare ``ATMS`` state dict under the original key names),
for a small configuration that fits the simulation: 63 channels × 250 samples (d_model 250), 2 heads, 4 conv
filters, and a 108-d projection matching the 6×6 RGB ``pixels`` targets. Its weights are random, so retrieval
sits at chance: what is checked is that the command scores it exactly as a direct computation does (the
same test trials, the same targets, ``evaluate_retrieval`` with the run's seed), and writes a run folder that
``neurodecode ablate`` and ``neurodecode reconstruct`` take.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodecode.cli import main

EEG_SIM = ("simulate.params={variant: atm, n_train_concepts: 20, images_per_concept: 2, n_train_reps: 1, "
           "n_test_concepts: 20, n_test_reps: 2, signal_window: [0.1, 0.25]}")
SETS = ["data.root=null", "data.subjects=[1,2]", "device=cpu", "targets.weights=null", "targets.encoder=pixels",
        "simulate.image_size=24", EEG_SIM, "evaluation.n_boot=30", "evaluation.n_candidates=null",
        "report.n_examples=2", "report.n_retrieved=3"]
ATMS = dict(n_times=250, d_model=250, n_heads=2, e_layers=1, d_ff=16, n_filters=4, conv_kernel=25, pool_size=51,
            pool_stride=5, proj_dim=108, n_ids=10, n_linear=2, keep_tokens=63, ff="conv")


def _atms_checkpoint(path: Path) -> Path:
    """A bare ATMS state dict (original names and shapes), scaled so the outputs vary across trials."""
    from neurodecode.models.published.atm import original_atms_keys

    rng = np.random.default_rng(0)
    state = {}
    for key, shape in original_atms_keys(**ATMS).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(3, dtype=torch.long)
            continue
        if key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("running_mean"):
            value = np.zeros(shape)
        elif len(shape) >= 2:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        elif "norm" in key or key.endswith(("tsconv.2.weight", "tsconv.5.weight", "proj_eeg.2.weight")):
            value = 1 + 0.1 * rng.standard_normal(shape)
        else:
            value = 0.1 * rng.standard_normal(shape)
        state[key] = torch.tensor(value, dtype=torch.float32)
    torch.save(state, path)
    return path


def _evaluate(*args: str, sets=(), out: Path) -> int:
    argv = ["evaluate", "things_eeg_atm", *args, "-q"]
    for s in [*SETS, *sets, f"output_dir={out}"]:
        argv += ["--set", s]
    return main(argv)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    ckpt = _atms_checkpoint(tmp / "40.pth")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURODECODE_DATA", str(tmp / "data"))
        rc = _evaluate("--published", f"atm:{ckpt}", "--option", "n_heads=2", sets=["targets.size=6"],
                       out=tmp / "runs")
        assert rc == 0
        yield tmp, ckpt, tmp / "runs" / "things_eeg_atm-published-atm"


def _direct(run: Path, ckpt: Path):
    """Predictions and scores computed without `evaluate`: public loaders, from_published, evaluate_retrieval."""
    from neurodecode.config import load_config
    from neurodecode.datasets import BrainTrials, get_dataset
    from neurodecode.embeddings.pixels import embed_images
    from neurodecode.models import from_published
    from neurodecode.tasks import evaluate_retrieval
    from neurodecode.workflow import simulated_root

    cfg = load_config(run / "config.yaml")
    spec = get_dataset(cfg.data.dataset)
    root = simulated_root(cfg)
    trials = BrainTrials.concatenate([spec.loader(root, s, **spec.load_kwargs(cfg.data)) for s in (1, 2)])
    test = trials.select(split="test").average_repetitions()
    targets = embed_images(trials.stimuli, trials.events["stimulus_id"].drop_duplicates().tolist(),
                           encoder="pixels", size=6)
    target_test = targets.lookup(test.events["stimulus_id"].tolist())
    pred = from_published("atm", ckpt, subjects=[1, 2], n_chans=63, n_heads=2).predict(test)
    subjects = test.events["subject"].to_numpy()
    ev = cfg.evaluation
    scores = {s: evaluate_retrieval(pred[subjects == s], target_test[subjects == s],
                                    n_candidates=int((subjects == s).sum()), n_repeats=ev.n_repeats,
                                    topk=tuple(ev.topk), n_boot=ev.n_boot, ci=ev.ci, random_state=cfg.seed)
              for s in (1, 2)}
    return pred, scores


def test_evaluate_scores_the_published_model_as_a_direct_computation(evaluated):
    tmp, ckpt, run = evaluated
    for name in ("config.yaml", "metrics.json", "report.html", "run.json", "predictions_mlp.npz",
                 "models/mlp/model.safetensors", "models/mlp/config.json", "models/mlp/published.json"):
        assert (run / name).is_file(), name
    assert not (run / "models" / "ridge").exists() and not (run / "checkpoints").exists()  # nothing trained
    metrics = json.loads((run / "metrics.json").read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURODECODE_DATA", str(tmp / "data"))
        pred, scores = _direct(run, ckpt)
    saved = np.load(run / "predictions_mlp.npz")
    np.testing.assert_array_equal(saved["prediction"], pred)
    assert float(pred.std(axis=0).mean()) > 1e-3  # the trials are decoded to different embeddings
    assert list(metrics["models"]) == ["mlp"] and metrics["n_test_items"] == {"1": 20, "2": 20}
    for s in (1, 2):
        got = metrics["models"]["mlp"][f"subj{s:02d}"]
        assert got == json.loads(json.dumps(scores[s].to_dict()))  # identical numbers, CIs included
        assert got["metrics"]["nway_top1_forward"]["chance"] == pytest.approx(1 / 20)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    record = json.loads((run / "models" / "mlp" / "published.json").read_text())
    assert record["family"] == "atm" and record["sha256"] == sha and record["path"] == str(ckpt.resolve())
    assert record["options"] == {"subjects": [1, 2], "n_chans": 63, "n_heads": 2}
    assert {u["key"] for u in record["unused"]} >= {"logit_scale", "subject_wise_linear.0.weight"}
    assert metrics["published"]["sha256"] == sha and metrics["published"]["family"] == "atm"
    assert json.loads((run / "run.json").read_text())["command"] == "evaluate"
    html = (run / "report.html").read_text()
    assert "neurodecode evaluate" in html and sha in html
    # the saved model is the published one: reloaded, it decodes the same embeddings
    from neurodecode.models import BrainDecoder

    cfg = json.loads((run / "models" / "mlp" / "config.json").read_text())["config"]
    assert cfg["adapter"] == "subject_token" and cfg["backbone"] == "atm"
    assert isinstance(BrainDecoder.from_pretrained(run / "models" / "mlp"), BrainDecoder)


def test_ablate_and_reconstruct_take_the_evaluated_run(evaluated, monkeypatch):
    tmp, _, run = evaluated
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp / "data"))
    assert main(["ablate", str(run), "--model", "mlp", "--atlas", "sensors:hemi", "--strategy", "zero",
                 "--metric", "top1", "--n-null", "5", "-q"]) == 0
    abl = json.loads((run / "ablation-sensors-hemi" / "metrics.json").read_text())
    assert abl["model"] == "mlp" and abl["top"]
    pytest.importorskip("diffusers")
    from neurodecode.tasks.reconstruction import make_random_pipeline

    generator = tmp / "kandinsky"
    make_random_pipeline("kandinsky", embed_dim=108, seed=0).save_pretrained(generator)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert main(["reconstruct", str(run), "--generator", str(generator), "--backend", "kandinsky",
                     "--steps", "2", "--device", "cpu", "--size", "32", "--limit", "2", "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert (run / "reconstructions-kandinsky" / "gallery.html").is_file()


def test_wrong_output_width_is_a_clear_error_and_leaves_no_run(evaluated, capsys, monkeypatch):
    tmp, ckpt, _ = evaluated
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp / "data"))
    out = tmp / "wrong"
    assert _evaluate("--published", f"atm:{ckpt}", "--option", "n_heads=2", sets=["targets.size=4"], out=out) == 1
    err = capsys.readouterr().err
    assert "the published atm model outputs 108-d embeddings but targets.encoder='pixels' gives 48-d" in err
    assert "targets.encoder=ViT-H-14" in err
    assert not out.exists() or not any(out.iterdir())
    # a subject the model has no adapter for
    assert _evaluate("--published", f"atm:{ckpt}", "--option", "n_heads=2", "--option", "subjects=[1]",
                     sets=["targets.size=6"], out=out) == 1
    assert "has adapters for subjects ['1'] but the data have subjects [1, 2]" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_unknown_family_lists_the_families(tmp_path, capsys):
    assert main(["evaluate", "--published", f"nosuch:{tmp_path / 'x.pth'}"]) == 1
    err = capsys.readouterr().err
    assert "unknown published family 'nosuch'" in err and "atm" in err and "brainmagick" in err
    assert main(["evaluate", "--published", "atm"]) == 1
    assert "FAMILY:PATH" in capsys.readouterr().err
    assert main(["evaluate", "--published", f"atm:{tmp_path / 'missing.pth'}"]) == 1
    assert "missing.pth" in capsys.readouterr().err


def test_mindeye2_scored_and_ablated_on_flattened_clip_tokens(tmp_path, monkeypatch):
    """MindEye2's clip_voxels (n_tokens × clip_dim) are scored against the CLIP image tokens flattened, as the
    original scores retrieval, by evaluate and by ablate alike (a tiny random CLIP: pooled 32-d, tokens 16 × 64)."""
    from _tiny_clip import TINY, TOKEN_SHAPE, make_tiny_clip

    from neurodecode.datasets import load_nsd, simulate
    from neurodecode.models.published.mindeye2 import original_mindeye2_keys

    weights = make_tiny_clip(tmp_path)
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    sim = tmp_path / "nsd"
    simulate("nsd", sim, n_subjects=1, n_sessions=2, trials_per_session=60, shared_fraction=0.3, image_size=16,
             seed=0, verbose="warning")
    n_voxels = load_nsd(sim, 1, verbose="warning").data.shape[1]
    rng = np.random.default_rng(0)
    keys = original_mindeye2_keys(voxels=(n_voxels,), hidden_dim=8, n_blocks=1, n_tokens=TOKEN_SHAPE[0],
                                  clip_dim=TOKEN_SHAPE[1], blurry=False, prior=False)
    state = {k: torch.tensor(rng.standard_normal(s) / np.sqrt(s[-1]), dtype=torch.float32) for k, s in keys.items()}
    ckpt = tmp_path / "last.pth"
    torch.save({"model_state_dict": state}, ckpt)
    sets = [f"targets.encoder={TINY}", f"targets.weights={weights}", "targets.output=tokens", "device=cpu",
            f"targets.cache_dir={tmp_path / 'cache'}", "evaluation.n_boot=20", "evaluation.n_candidates=10",
            "report.n_examples=0", f"output_dir={tmp_path / 'runs'}"]
    argv = ["evaluate", "nsd_mindeye", "--published", f"mindeye2:{ckpt}", "--root", str(sim), "--subject", "1",
            "--option", "subjects=[1]", "-q"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    run = tmp_path / "runs" / "nsd_mindeye-published-mindeye2"
    metrics = json.loads((run / "metrics.json").read_text())
    assert "tokens" in metrics["targets"]
    top1 = metrics["models"]["mlp"]["subj01"]["metrics"]["nway_top1_forward"]["value"]
    # the same number computed here: the model's outputs against the test images' flattened CLIP tokens
    pred = np.load(run / "predictions_mlp.npz")
    assert pred["prediction"].shape[1] == TOKEN_SHAPE[0] * TOKEN_SHAPE[1]
    assert main(["ablate", str(run), "--model", "mlp", "--atlas", "nsd:streams", "--strategy", "zero",
                 "--metric", "top1", "--n-null", "3", "-q"]) == 0
    abl = json.loads((run / "ablation-nsd-streams" / "metrics.json").read_text())
    assert abl["model"] == "mlp" and abl["top"]
    # ablate's intact score (all test images as candidates) recomputed here from the tiny CLIP's tokens
    from neurodecode.embeddings import ClipEncoder
    from neurodecode.embeddings.pixels import embed_images

    ids = [int(i) for i in pred["stimulus_id"]]
    stimuli = load_nsd(sim, 1, verbose="warning").stimuli
    tokens = embed_images(stimuli, ids, encoder=ClipEncoder(TINY, str(weights), device="cpu"), output="tokens")
    t = tokens.lookup(ids).reshape(len(ids), -1)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    sim_ = pred["prediction"] @ t.T
    expected = float(np.mean(sim_.argmax(1) == np.arange(len(ids))))
    assert abl["baseline"]["top1"]["value"] == pytest.approx(expected)
    assert abl["baseline"]["top1"]["chance"] == pytest.approx(1 / len(ids))
    assert 0.0 <= top1 <= 1.0


MASC = ["data.root=null", "data.subjects=[1,2]", "device=cpu", "targets.weights=null", "targets.encoder=melspec",
        "targets.n_mels=4", "targets.frame_rate=50.0",
        "simulate.params={n_sessions: 2, n_stories: 1, story_duration_s: 60.0, n_channels: 16, sfreq: 100.0, "
        "signal_window: [0.05, 0.25]}", "data.options={window_s: 2.0, tmin: 0.0, sfreq: 50.0, test_ratio: 0.3}",
        "evaluation.n_boot=30", "report.n_examples=0"]
SIMPLECONV = dict(n_subjects=3, merger_channels=6, pos_dim=32, initial_linear=6, hidden=8, depth=3,
                  kernel_size=3, dilation_period=5, glu=2, glu_context=1, out_channels=4)


def test_brainmagick_simpleconv_on_simulated_masc(tmp_path, monkeypatch):
    """SimpleConv keeps the time axis: 100 samples (2 s at 50 Hz) × 4 channels = 100 frames × 4 mels."""
    pytest.importorskip("mne")
    from neurodecode.models.published.brainmagick import original_simpleconv_keys

    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    rng = np.random.default_rng(0)
    state = {}
    for key, shape in original_simpleconv_keys(prefix="0.", **SIMPLECONV).items():
        value = (np.array(3) if key.endswith("num_batches_tracked") else rng.uniform(0.5, 1.5, shape)
                 if key.endswith("running_var") else rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
                 if len(shape) >= 2 else 0.1 * rng.standard_normal(shape))
        state[key] = torch.tensor(value, dtype=torch.long if key.endswith("tracked") else torch.float32)
    ckpt = tmp_path / "checkpoint.th"
    torch.save({"best_state": state}, ckpt)  # a Dora checkpoint's model part (keys "0.*")
    argv = ["evaluate", "--published", f"brainmagick:{ckpt}", "-q"]  # the family's recipe: masc_speech
    for s in [*MASC, f"output_dir={tmp_path / 'runs'}"]:
        argv += ["--set", s]
    assert main(argv) == 0
    run = tmp_path / "runs" / "masc_speech-published-brainmagick"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "masc" and metrics["published"]["container"] == "best_state"
    for s in ("subj01", "subj02"):
        m = metrics["models"]["mlp"][s]["metrics"]["nway_top1_forward"]
        assert m["chance"] == pytest.approx(1 / metrics["n_test_items"][s[-1]])
    record = json.loads((run / "models" / "mlp" / "published.json").read_text())
    assert record["options"]["n_times"] == 100 and set(record["options"]["positions"]) == {"1", "2"}
    assert metrics["published"]["options"]["positions"] == "(in models/mlp/published.json)"
    cfg = json.loads((run / "models" / "mlp" / "config.json").read_text())["config"]
    assert cfg["embed_shape"] == [100, 4] and cfg["adapter"] == "spatial_attention"


def test_mindeye2_final_checkpoint_on_simulated_nsd(tmp_path, monkeypatch):
    """The README's third command, at toy size: a MindEye2 `final_*`-style file (prior and blurry branch
    included, as published) scored on simulated NSD; then its blurry reconstructions (`--stage lowlevel`) and
    the prior's samples conditioning a generator take the run."""
    from neurodecode.datasets import load_nsd, simulate
    from neurodecode.models.priors import noise_schedule
    from neurodecode.models.published.mindeye2 import original_mindeye2_keys

    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    sim = tmp_path / "nsd"
    simulate("nsd", sim, n_subjects=1, n_sessions=2, trials_per_session=120, shared_fraction=0.2, image_size=16,
             seed=0, verbose="warning")
    n_voxels = load_nsd(sim, 1, verbose="warning").data.shape[1]
    rng = np.random.default_rng(0)
    keys = original_mindeye2_keys(voxels=(n_voxels,), hidden_dim=8, n_blocks=2, n_tokens=3, clip_dim=16,
                                  prior_dim_head=4, prior_heads=2, prior_tokens=3, timesteps=10)
    state = {k: torch.tensor(rng.standard_normal(s) / np.sqrt(s[-1] if s else 1), dtype=torch.float32)
             for k, s in keys.items()}
    state.update({f"diffusion_prior.noise_scheduler.{k}": v for k, v in noise_schedule("cosine", 10).items()})
    freqs = 1.0 / 10000 ** (torch.arange(0, 4, 2).float() / 4)             # one rotary module, listed per layer
    state.update({k: freqs for k in keys if k.endswith("rotary_emb.freqs")})
    ckpt = tmp_path / "last.pth"
    torch.save({"model_state_dict": state}, ckpt)
    argv = ["evaluate", "nsd_mindeye", "--published", f"mindeye2:{ckpt}", "--root", str(sim), "--subject", "1",
            "--option", "subjects=[1]", "-q"]
    for s in ["targets.encoder=pixels", "targets.weights=null", "targets.size=4", "device=cpu",
              "evaluation.n_boot=20", "evaluation.n_candidates=10", "report.n_examples=2", "report.n_retrieved=3",
              f"output_dir={tmp_path / 'runs'}"]:
        argv += ["--set", s]
    assert main(argv) == 0
    run = tmp_path / "runs" / "nsd_mindeye-published-mindeye2"
    metrics = json.loads((run / "metrics.json").read_text())
    top1 = metrics["models"]["mlp"]["subj01"]["metrics"]["nway_top1_forward"]
    assert top1["chance"] == pytest.approx(0.1) and top1["ci_low"] <= top1["value"] <= top1["ci_high"]
    record = json.loads((run / "models" / "mlp" / "published.json").read_text())
    # every part loads (parts='all'): only the training-only b_maps_projector is left unused
    assert {u["key"].split(".")[1] for u in record["unused"]} == {"b_maps_projector"}
    assert record["options"] == {"subjects": [1]}
    assert record["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    _reconstruct_from_the_mindeye2_run(tmp_path, run, sim, monkeypatch)


def _reconstruct_from_the_mindeye2_run(tmp_path, run, sim, monkeypatch):
    """Blurry reconstructions = the vae_decoder head's latents decoded by the given VAE; the prior's samples
    condition a generator (refused by one that takes another embedding, accepted with --no-prior)."""
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKL
    from PIL import Image

    from neurodecode.config import load_config
    from neurodecode.models import BrainDecoder
    from neurodecode.tasks.reconstruction import decode_lowlevel, make_random_pipeline
    from neurodecode.workflow._data import load_data, preprocess

    vae_dir = tmp_path / "vae"
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=8, sample_size=16).save_pretrained(vae_dir)
    assert main(["reconstruct", str(run), "--stage", "lowlevel", "--lowlevel-vae", str(vae_dir), "--limit", "2",
                 "--device", "cpu", "-q"]) == 0
    model = BrainDecoder.from_pretrained(run / "models" / "mlp")
    config = load_config(run / "config.yaml")
    test = preprocess(config, load_data(config)[1]).select(split="test").average_repetitions()
    test = test[np.arange(2)]
    latents = model.predict(test, output="vae_decoder")                    # (2, 4, 28, 28)
    expected = decode_lowlevel(AutoencoderKL.from_pretrained(vae_dir), latents, scaled=True)
    folder = run / "reconstructions-lowlevel" / "reconstructions"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["ids"] == [str(i) for i in test.events["stimulus_id"]]
    got = np.stack([np.asarray(Image.open(folder / f"{i}_recon.png")) for i in manifest["ids"]])
    np.testing.assert_array_equal(got, expected)
    # the prior: predict_prior equals one sample_prior call with the same seeded generator
    X = torch.from_numpy(np.asarray(test.get_data(), dtype=np.float32))
    ref = model.sample_prior(X, "1", timesteps=3, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(model.predict_prior(test, timesteps=3, seed=4), ref.numpy(), atol=1e-6)
    generator = tmp_path / "kandinsky"
    make_random_pipeline("kandinsky", embed_dim=48, seed=0).save_pretrained(generator)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ["--generator", str(generator), "--backend", "kandinsky", "--steps", "2", "--device", "cpu",
              "--size", "32", "--limit", "2", "--prior-steps", "3", "-q"]
    assert main(["reconstruct", str(run), *common]) == 1         # the prior's 3 x 16 tokens: not kandinsky's
    assert main(["reconstruct", str(run), *common, "--no-prior"]) == 0
    assert (run / "reconstructions-kandinsky" / "gallery.html").is_file()
