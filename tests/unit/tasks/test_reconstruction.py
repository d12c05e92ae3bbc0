"""Two-stage reconstruction: every diffusers backend end to end on tiny random-weight pipelines (CPU)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import torch  # noqa: E402

from neurodecode.tasks import _diffusion_backends as backends  # noqa: E402
from neurodecode.tasks.reconstruction import (  # noqa: E402
    BACKENDS,
    ClipSelector,
    EmbeddingPrior,
    ReconstructionResult,
    Reconstructor,
    decode_lowlevel,
    make_random_pipeline,
)

N, DIM, N_TOKENS, SIZE = 3, 32, 17, 16  # tiny CLIP vision: 32 px / 8 px patches → 16 patches + CLS
FAST = {"num_inference_steps": 2, "height": SIZE, "width": SIZE, "device": "cpu", "verbose": "warning"}


def _brightness(images, embedding):
    """A selector: mean intensity of each sample (any deterministic score would do)."""
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3
    return images.reshape(len(images), -1).mean(axis=1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny convolutions gain nothing from threads, and two spinning OpenMP threads per xdist worker on a
    busy 2-core machine slow these tests down ~20×; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipes():
    return {b: make_random_pipeline(b, seed=1) for b in BACKENDS}


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    return {"pooled": rng.standard_normal((N, DIM)).astype(np.float32),
            "tokens": rng.standard_normal((N, N_TOKENS, DIM)).astype(np.float32),
            "latents": rng.standard_normal((N, 4, SIZE // 2, SIZE // 2)).astype(np.float32)}


def _embeds(backend, inputs):
    return inputs["tokens"] if backend == "versatile" else inputs["pooled"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_end_to_end(backend, pipes, inputs):
    """Shapes, low-level latents → image, seeds, best-of-N, img2img and pure-noise paths, for each backend."""
    recon = Reconstructor(backend, pipes[backend], n_samples=2, batch_size=4, selector=_brightness, **FAST)
    emb = _embeds(backend, inputs)
    res = recon.reconstruct(emb, inputs["latents"], seeds=7, ids=["a", "b/c", "d"])
    assert isinstance(res, ReconstructionResult) and len(res) == N
    assert res.images.shape == (N, SIZE, SIZE, 3) and res.images.dtype == np.uint8
    assert res.samples.shape == (N, 2, SIZE, SIZE, 3)
    # 4×8×8 latents through the tiny autoencoder (factor 2) → 16-px blurry images
    assert res.lowlevel_images.shape == (N, SIZE, SIZE, 3) and res.lowlevel_images.dtype == np.uint8
    assert res.seeds.tolist() == [[7 + i, 7 + i + 1_000_003] for i in range(N)]
    # best-of-N: the argmax of the selector, and the kept image is that sample
    expected = np.stack([_brightness(s, None) for s in res.samples])
    np.testing.assert_allclose(res.scores, expected)
    assert res.best.tolist() == expected.argmax(axis=1).tolist()
    np.testing.assert_array_equal(res.images, res.samples[np.arange(N), res.best])
    assert res.config["backend"] == backend and res.config["strength"] == 0.75
    assert res.timing["images_per_s"] > 0
    # same seeds → same images; other seeds → other images
    again = recon.reconstruct(emb, inputs["latents"], seeds=7)
    np.testing.assert_array_equal(again.samples, res.samples)
    other = recon.reconstruct(emb, inputs["latents"], seeds=[100, 200, 300])
    assert not np.array_equal(other.samples, res.samples)
    # without a low-level input: generation from noise
    noise = recon.reconstruct(emb, seeds=7)
    assert noise.samples.shape == res.samples.shape and noise.lowlevel_images is None
    assert noise.config["img2img"] is False and not np.array_equal(noise.samples, res.samples)


def test_trial_images_do_not_depend_on_batching(pipes, inputs):
    recon = Reconstructor("kandinsky", pipes["kandinsky"], batch_size=3, **FAST)
    full = recon.reconstruct(inputs["pooled"], inputs["latents"], seeds=[5, 6, 7])
    single = Reconstructor("kandinsky", pipes["kandinsky"], batch_size=1, **FAST)
    alone = single.reconstruct(inputs["pooled"][1:2], inputs["latents"][1:2], seeds=[6])
    diff = np.abs(full.images[1].astype(int) - alone.images[0].astype(int))
    assert diff.max() <= 2  # same generator per image; only float summation order may differ


def test_lowlevel_inputs(pipes, inputs):
    pipe = pipes["ip_adapter"]
    z = torch.from_numpy(inputs["latents"])
    with torch.no_grad():
        manual = pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample
    manual = np.round((manual.clamp(-1, 1) + 1).permute(0, 2, 3, 1).numpy() / 2 * 255)
    decoded = decode_lowlevel(pipe.vae, inputs["latents"], batch_size=2, verbose="warning")
    assert decoded.shape == (N, SIZE, SIZE, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - manual.astype(int)).max() <= 1
    unscaled = decode_lowlevel(pipe.vae, inputs["latents"] / pipe.vae.config.scaling_factor, scaled=False)
    assert np.abs(unscaled.astype(int) - decoded.astype(int)).max() <= 1
    # Kandinsky's MoVQ decodes its own (unscaled) latents
    movq = decode_lowlevel(pipes["kandinsky"].movq, inputs["latents"])
    assert movq.shape == (N, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match=r"\(n, 4, h, w\)"):
        decode_lowlevel(pipe.vae, inputs["latents"][:, :3])
    # blurry images given directly: uint8 (n, H, W, 3), floats in [0, 1], channels-first; any size
    recon = Reconstructor("ip_adapter", pipe, **FAST)
    blurry = np.random.default_rng(1).integers(0, 255, (N, 12, 12, 3), dtype=np.uint8)
    res = recon.reconstruct(inputs["pooled"], blurry)
    np.testing.assert_array_equal(res.lowlevel_images, blurry)
    assert res.images.shape == (N, SIZE, SIZE, 3)
    res_f = recon.reconstruct(inputs["pooled"], torch.from_numpy(blurry).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_array_equal(res_f.lowlevel_images, blurry)
    np.testing.assert_array_equal(res_f.images, res.images)
    np.testing.assert_array_equal(recon.decode_lowlevel(inputs["latents"]), decoded)
    with pytest.raises(ValueError, match="neither images"):
        recon.reconstruct(inputs["pooled"], np.zeros((N, 5, 8, 8), np.float32))
    with pytest.raises(ValueError, match="one entry per trial"):
        recon.reconstruct(inputs["pooled"], blurry[:2])


def test_decoder_output_and_prior(pipes):
    """A DecoderOutput (embedding + lowlevel) goes through an EmbeddingPrior into the generator's space."""
    from neurodecode.models import DecoderOutput

    rng = np.random.default_rng(2)
    brain = rng.standard_normal((64, 16)).astype(np.float32)
    image = (brain @ rng.standard_normal((16, DIM)) / 4).astype(np.float32)
    prior = EmbeddingPrior(hidden_dim=32, n_epochs=30, batch_size=16, lr=1e-2, random_state=0)
    assert prior.fit(brain, image, verbose="warning") is prior
    assert prior.history_[-1] < 0.25 * prior.history_[0]
    assert prior(brain[:4]).shape == (4, DIM) and prior.transform(brain[:4]).dtype == np.float32
    again = EmbeddingPrior(hidden_dim=32, n_epochs=30, batch_size=16, lr=1e-2, random_state=0)
    again.fit(brain, image, verbose="warning")
    np.testing.assert_array_equal(again.transform(brain), prior.transform(brain))
    cos = EmbeddingPrior(n_layers=1, loss="mse+cosine", n_epochs=3, random_state=1).fit(
        brain[:, None].repeat(3, axis=1), image[:, None].repeat(3, axis=1), verbose="warning")
    assert cos.transform(brain[:2, None]).shape == (2, 1, DIM)

    out = DecoderOutput(embedding=torch.from_numpy(brain[:N]), latent=torch.zeros(N, 8),
                        lowlevel=torch.from_numpy(rng.standard_normal((N, 4, 8, 8)).astype(np.float32)))
    with pytest.raises(ValueError, match="takes 32-d image embeddings, got 16-d"):
        Reconstructor("kandinsky", pipes["kandinsky"], **FAST).reconstruct(out)
    recon = Reconstructor("kandinsky", pipes["kandinsky"], prior=prior, **FAST)
    res = recon.reconstruct(out)
    assert res.images.shape == (N, SIZE, SIZE, 3) and res.lowlevel_images is not None
    # the same through a plain callable prior and the mapping form
    direct = Reconstructor("kandinsky", pipes["kandinsky"], prior=lambda x: prior(x), **FAST)
    res2 = direct.reconstruct({"pooled": brain[:N], "lowlevel": out.lowlevel.numpy()})
    np.testing.assert_array_equal(res2.images, res.images)


def test_save_writes_pngs_and_manifest(pipes, inputs, tmp_path):
    from PIL import Image

    recon = Reconstructor("unclip", pipes["unclip"], n_samples=2, selector=_brightness, **FAST)
    res = recon.reconstruct(inputs["pooled"], inputs["latents"], seeds=3, ids=["s1/x", "s2", "s3"])
    manifest = res.save(tmp_path / "out", verbose="warning")
    data = json.loads(manifest.read_text())
    assert data["ids"] == ["s1/x", "s2", "s3"] and data["backend"] == "unclip"
    assert data["num_inference_steps"] == 2 and data["strength"] == 0.75
    assert data["seeds"]["s2"] == [4, 4 + 1_000_003]
    assert data["files"]["s1/x"] == {"recon": "s1_x_recon.png", "lowlevel": "s1_x_lowlevel.png",
                                     "samples": ["s1_x_sample0.png", "s1_x_sample1.png"]}
    assert data["best_sample"]["s3"] == int(res.best[2]) and len(data["scores"]["s3"]) == 2
    back = np.asarray(Image.open(tmp_path / "out" / "s2_recon.png"))
    np.testing.assert_array_equal(back, res.images[1])
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_from_pretrained_folder_reproduces_the_object(pipes, inputs, tmp_path):
    for backend in ("unclip", "kandinsky", "versatile"):
        folder = tmp_path / backend
        pipes[backend].save_pretrained(folder)
        loaded = Reconstructor.from_pretrained(backend, folder, **FAST)
        emb = _embeds(backend, inputs)
        ref = Reconstructor(backend, pipes[backend], **FAST).reconstruct(emb, inputs["latents"], seeds=1)
        got = loaded.reconstruct(emb, inputs["latents"], seeds=1).images
        assert np.abs(got.astype(int) - ref.images.astype(int)).max() <= 2  # same weights, same seeds


def test_from_pretrained_ip_adapter(inputs, tmp_path):
    from safetensors.torch import save_file

    pipe = make_random_pipeline("ip_adapter", seed=3)
    pipe.unload_ip_adapter()
    pipe.save_pretrained(tmp_path / "sd")
    state = backends._random_ip_adapter(pipe.unet, DIM, torch.Generator().manual_seed(0))
    flat = {f"{part}.{k}": v.contiguous() for part, sd in state.items() for k, v in sd.items()}
    save_file(flat, tmp_path / "ip-adapter.safetensors")
    with pytest.raises(ValueError, match="needs ip_adapter="):
        Reconstructor.from_pretrained("ip_adapter", tmp_path / "sd", **FAST)
    with pytest.raises(FileNotFoundError, match="IP-Adapter weight file not found"):
        Reconstructor.from_pretrained("ip_adapter", tmp_path / "sd", ip_adapter=tmp_path / "none.bin", **FAST)
    weights = tmp_path / "ip-adapter.safetensors"
    recon = Reconstructor.from_pretrained("ip_adapter", tmp_path / "sd", ip_adapter=weights, ip_adapter_scale=0.5,
                                          **FAST)
    res = recon.reconstruct(inputs["pooled"], inputs["latents"], prompts=["a cat", "", "b"])
    assert res.images.shape == (N, SIZE, SIZE, 3)
    # a plain SD pipeline without an adapter is refused with the fix
    with pytest.raises(ValueError, match="needs an IP-Adapter loaded"):
        Reconstructor("ip_adapter", pipe, **FAST)


def test_hf_cache_snapshot(pipes, inputs, tmp_path, monkeypatch):
    """A repo id resolves to its snapshot in the local HF cache (never the network)."""
    repo = tmp_path / "hub" / "models--nd-test--tiny-kandinsky"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    pipes["kandinsky"].save_pretrained(repo / "snapshots" / "0123abcd")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    recon = Reconstructor.from_pretrained("kandinsky", "nd-test/tiny-kandinsky", **FAST)
    assert recon.reconstruct(inputs["pooled"][:1]).images.shape == (1, SIZE, SIZE, 3)


def test_missing_weights_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"model_index\.json.*stable-diffusion-2-1-unclip"):
        Reconstructor.from_pretrained("unclip", tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a diffusers pipeline folder"):
        Reconstructor.from_pretrained("kandinsky", tmp_path / "empty", device="cpu")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        Reconstructor.from_pretrained("kandinsky", device="cpu")  # the default repo id, not cached


def test_ip_adapter_sdxl(inputs):
    pipe = make_random_pipeline("ip_adapter", size="tiny-xl", seed=4)
    recon = Reconstructor("ip_adapter", pipe, **FAST)
    assert "XL" in recon.pipeline_.__class__.__name__
    assert recon.reconstruct(inputs["pooled"][:2], inputs["latents"][:2]).images.shape == (2, SIZE, SIZE, 3)


def test_options_and_validation(pipes, inputs):
    recon = Reconstructor("kandinsky", pipes["kandinsky"], dtype="bfloat16", cpu_offload=True, **FAST)
    assert recon.dtype_ == "float32" and recon.device_ == "cpu"  # half precision is CUDA-only
    assert "kandinsky" in repr(recon)
    assert recon.num_inference_steps == 2 and recon.guidance_scale == 4.0  # the backend's default guidance
    with pytest.raises(ValueError, match="takes no text prompt"):
        recon.reconstruct(inputs["pooled"], prompts="a dog")
    with pytest.raises(ValueError, match="seeds must be"):
        recon.reconstruct(inputs["pooled"], seeds=[1, 2])
    with pytest.raises(ValueError, match="ids must be unique"):
        recon.reconstruct(inputs["pooled"], ids=["x", "x", "y"])
    with pytest.raises(ValueError, match="conditioned on pooled"):
        recon.reconstruct(inputs["tokens"])
    with pytest.raises(ValueError, match="conditioned on token"):
        Reconstructor("versatile", pipes["versatile"], **FAST).reconstruct(inputs["pooled"])
    with pytest.raises(ValueError, match="strength"):
        Reconstructor("kandinsky", pipes["kandinsky"], strength=0.0, **FAST)
    with pytest.raises(ValueError, match="leaves no denoising step"):
        Reconstructor("kandinsky", pipes["kandinsky"], strength=0.3, **FAST)
    with pytest.raises(ValueError, match="'backend' parameter"):
        Reconstructor("dalle", pipes["kandinsky"], **FAST)
    with pytest.raises(TypeError, match="StableUnCLIPImg2ImgPipeline"):
        Reconstructor("unclip", pipes["kandinsky"], **FAST)
    with pytest.raises(ValueError, match="'dtype' parameter"):
        Reconstructor("kandinsky", pipes["kandinsky"], dtype="int8", **FAST)
    # negative embeddings: one vector for all trials; a wrong shape is refused
    neg = Reconstructor("kandinsky", pipes["kandinsky"], negative_embeds=np.ones(DIM, np.float32), **FAST)
    assert neg.reconstruct(inputs["pooled"][:1]).images.shape == (1, SIZE, SIZE, 3)
    bad = Reconstructor("kandinsky", pipes["kandinsky"], negative_embeds=np.ones(5, np.float32), **FAST)
    with pytest.raises(ValueError, match="negative_embeds must have shape"):
        bad.reconstruct(inputs["pooled"][:1])


def test_selector_clip_and_selector_errors(pipes, inputs, tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from neurodecode.embeddings import ClipEncoder

    cfg = {"embed_dim": DIM, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
           "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "nd-test-recon-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "nd-test-recon-vit.json")
    enc = ClipEncoder("nd-test-recon-vit", allow_random=True, verbose="warning")
    recon = Reconstructor("kandinsky", pipes["kandinsky"], n_samples=3, selector=enc, **FAST)
    assert isinstance(recon.selector, ClipSelector)
    res = recon.reconstruct(inputs["pooled"][:2])
    emb = enc.embed_images(res.samples[0], outputs=("pooled",))["pooled"]
    target = inputs["pooled"][0]
    cos = emb @ target / np.linalg.norm(emb, axis=1) / np.linalg.norm(target)
    np.testing.assert_allclose(res.scores[0], cos, rtol=1e-4, atol=1e-5)
    assert res.best[0] == int(np.argmax(cos))
    wrong = Reconstructor("kandinsky", pipes["kandinsky"], n_samples=2, selector=lambda im, e: [1.0], **FAST)
    with pytest.raises(ValueError, match="one per sample"):
        wrong.reconstruct(inputs["pooled"][:1])
    with pytest.raises(TypeError, match="selector must be"):
        Reconstructor("kandinsky", pipes["kandinsky"], selector=3, **FAST)


def test_versatile_missing_from_diffusers(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(backends, "import_diffusers", lambda: SimpleNamespace(__version__="9.0"))
    with pytest.raises(NotImplementedError, match="no longer ships"):
        backends._versatile_base()


@pytest.mark.gpu
@pytest.mark.parametrize("cpu_offload", [False, True])
def test_cuda_half_precision(inputs, cpu_offload):
    pipe = make_random_pipeline("ip_adapter", seed=5)
    recon = Reconstructor("ip_adapter", pipe, device="cuda", dtype="auto", cpu_offload=cpu_offload,
                          num_inference_steps=2, height=SIZE, width=SIZE, verbose="warning")
    assert recon.dtype_ in ("bfloat16", "float16")
    res = recon.reconstruct(inputs["pooled"], inputs["latents"], seeds=0)
    again = recon.reconstruct(inputs["pooled"], inputs["latents"], seeds=0)
    assert res.images.shape == (N, SIZE, SIZE, 3)
    np.testing.assert_array_equal(res.images, again.images)
