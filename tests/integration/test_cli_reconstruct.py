"""`neurodecode reconstruct` end to end: a tiny fitted demo run + a tiny random-weight Kandinsky folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurodecode.cli import main

pytest.importorskip("diffusers")

FIT = [
    "data.subjects=[1]", "simulate.n_subjects=1", "simulate.n_sessions=3", "simulate.trials_per_session=120",
    "simulate.image_size=24", "targets.size=4", "models.ridge.enabled=false", "models.mlp.max_epochs=1",
    "models.mlp.hidden_dim=16", "models.mlp.n_blocks=1", "models.mlp.batch_size=32",
    "evaluation.n_boot=10", "evaluation.n_repeats=1", "evaluation.n_candidates=10", "report.n_examples=0",
]


def _fit(tmp_path, sets, out="runs"):
    argv = ["fit", "-q"]
    for s in [*FIT, *sets, f"output_dir={tmp_path / out}"]:
        argv += ["--set", s]
    return main(argv)


def _reconstruct(run, generator, *extra):
    """`neurodecode reconstruct` on a tiny Kandinsky folder, single-threaded (its conv kernels are small)."""
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        return main(["reconstruct", str(run), "--generator", str(generator), "--backend", "kandinsky",
                     "--steps", "2", "--device", "cpu", "--size", "32", "-q", *extra])
    finally:
        torch.set_num_threads(threads)


def test_reconstruct_run_with_a_local_generator(tmp_path, monkeypatch):

    from neurodecode.tasks.reconstruction import make_random_pipeline

    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _fit(tmp_path, ["models.mlp.heads=[pooled,lowlevel]", "models.mlp.lowlevel_size=8"]) == 0
    run = tmp_path / "runs" / "demo"
    generator = tmp_path / "kandinsky"
    make_random_pipeline("kandinsky", embed_dim=4 * 4 * 3, seed=0).save_pretrained(generator)
    assert _reconstruct(run, generator, "--limit", "3") == 0
    out = run / "reconstructions-kandinsky"
    manifest = json.loads((out / "reconstructions" / "manifest.json").read_text())
    assert len(manifest["ids"]) == 3
    pngs = list((out / "reconstructions").glob("*_recon.png"))
    assert len(pngs) == 3
    # the decoder's lowlevel head (RGB thumbnails) gave the img2img starting images
    assert len(list((out / "reconstructions").glob("*_lowlevel.png"))) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_items"] == 3 and "pixcorr" in metrics["metrics"]["metrics"]
    html = (out / "gallery.html").read_text()
    assert html.count("data:image/png;base64,") >= 9  # seen + low-level + reconstruction per item
    # wrong embedding size → a clear error naming both sizes
    other = tmp_path / "kandinsky64"
    make_random_pipeline("kandinsky", embed_dim=64, seed=0).save_pretrained(other)
    assert main(["reconstruct", str(run), "--generator", str(other), "--backend", "kandinsky",
                 "--limit", "2", "--steps", "2", "--device", "cpu", "--size", "32", "-q"]) == 1
    assert not Path(run / "reconstructions-kandinsky-1" / "gallery.html").exists()


def _tiny_vae(folder: Path) -> None:
    from diffusers import AutoencoderKL

    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=8, sample_size=16).save_pretrained(folder)


def test_fit_lowlevel_vae_latents_then_reconstruct(tmp_path, monkeypatch):
    """MindEye2's two stages from the CLI: the decoder learns VAE latents; reconstruct decodes them first."""
    import numpy as np
    from PIL import Image

    from neurodecode.models import BrainDecoder
    from neurodecode.tasks.reconstruction import make_random_pipeline

    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vae = tmp_path / "vae"
    _tiny_vae(vae)
    assert _fit(tmp_path, ["models.mlp.heads=[pooled,lowlevel]", f"models.mlp.lowlevel_vae={vae}",
                           "models.mlp.lowlevel_size=16"]) == 0
    run = tmp_path / "runs" / "demo"
    model = BrainDecoder.from_pretrained(run / "models" / "mlp")
    assert model.config["lowlevel_shape"] == [4, 8, 8]  # 16 px through a 2x-downscaling VAE
    history = json.loads((run / "models" / "mlp" / "history.json").read_text())
    assert all(h["train_lowlevel_loss"] is not None and h["val_lowlevel_loss"] is not None for h in history)
    generator = tmp_path / "kandinsky"
    make_random_pipeline("kandinsky", embed_dim=4 * 4 * 3, seed=0).save_pretrained(generator)
    assert _reconstruct(run, generator, "--limit", "2") == 0
    low = sorted((run / "reconstructions-kandinsky" / "reconstructions").glob("*_lowlevel.png"))
    assert len(low) == 2
    assert np.asarray(Image.open(low[0])).shape[:2] == (16, 16)  # decoded by the run's VAE, not the movq
    # --stage lowlevel: the same decoded latents are the reconstructions, scored alone; no generator
    assert main(["reconstruct", str(run), "--stage", "lowlevel", "--limit", "2", "--device", "cpu", "-q"]) == 0
    out = run / "reconstructions-lowlevel"
    recon = sorted((out / "reconstructions").glob("*_recon.png"))
    assert [p.name.replace("_recon", "") for p in recon] == [p.name.replace("_lowlevel", "") for p in low]
    for a, b in zip(recon, low):
        np.testing.assert_array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "lowlevel" and metrics["generator"] is None
    assert "ssim" in metrics["metrics"]["metrics"]
    # a full reconstruction without a generator is refused before any work
    assert main(["reconstruct", str(run), "--limit", "2", "-q"]) == 1
    # a missing VAE folder is a clear error at fit time
    assert _fit(tmp_path, ["models.mlp.heads=[pooled,lowlevel]", f"models.mlp.lowlevel_vae={tmp_path / 'nope'}"],
                out="runs2") == 1


def test_reconstruct_with_decoded_captions(tmp_path, monkeypatch, capsys):
    """A run on (tiny, random) CLIP targets: caption-bank captions in the gallery and caption metrics."""
    pytest.importorskip("open_clip")
    import torch
    from safetensors.torch import save_file

    from neurodecode._compat import ensure_torchvision
    from neurodecode.tasks.reconstruction import make_random_pipeline

    ensure_torchvision()
    import open_clip

    name = "nd-recon-tiny-vit"
    (tmp_path / f"{name}.json").write_text(json.dumps({
        "embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    weights = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model(name, pretrained=None).state_dict().items()},
              str(weights))
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    assert _fit(tmp_path, [f"targets.encoder={name}", f"targets.weights={weights}"]) == 0
    run = tmp_path / "runs" / "demo"
    generator = tmp_path / "kandinsky"
    make_random_pipeline("kandinsky", embed_dim=32, seed=0).save_pretrained(generator)
    assert _reconstruct(run, generator, "--limit", "3", "--captions", "--n-samples", "2") == 0
    out = run / "reconstructions-kandinsky"
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "reconstructions" / "manifest.json").read_text())
    assert "ClipSelector" in str(manifest["config"]["selector"])  # best-of-2 by the run's CLIP
    assert len(list((out / "reconstructions").glob("*_sample*.png"))) == 6
    cap = metrics["captions"]
    assert len(cap["decoded"]) == 3
    scores = cap["scores"]["metrics"] if "metrics" in cap["scores"] else cap["scores"]
    assert {"bleu1", "cider", "clip_s"} <= set(scores)
    html = (out / "gallery.html").read_text()
    decoded = next(iter(cap["decoded"].values()))
    import html as _html

    assert _html.escape(decoded) in html or decoded in html
    # missing feature-network weights: a clear error before any work, nothing written
    capsys.readouterr()
    assert main(["reconstruct", str(run), "--generator", str(generator), "--backend", "kandinsky", "--limit", "1",
                 "--metric-weights", "alexnet=" + str(tmp_path / "missing.pth"), "-q"]) == 1
    assert "missing.pth" in capsys.readouterr().err
    assert not (run / "reconstructions-kandinsky-1").exists()
