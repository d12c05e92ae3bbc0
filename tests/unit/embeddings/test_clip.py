"""open_clip encoders: tiny registered config, random weights, save/reload, shapes, offline errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("open_clip")

from neurodecode.datasets import StimulusSet  # noqa: E402
from neurodecode.embeddings import ClipEncoder, StimulusEmbeddings, embed_captions, embed_images  # noqa: E402
from neurodecode.embeddings.clip import resolve_clip_weights  # noqa: E402

TINY = "nd-test-tiny-vit"
TINY_CFG = {"embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from neurodecode._compat import ensure_torchvision

    ensure_torchvision()
    import open_clip

    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder / f"{TINY}.json")
    return ClipEncoder(TINY, allow_random=True, batch_size=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 255, (5, 40, 36, 3), dtype=np.uint8)


def test_shapes_and_token_modes(tiny, images):
    out = tiny.embed_images(images)
    # 32 px / 8 px patches → 16 patch tokens of the 64-wide vision transformer
    assert out["pooled"].shape == (5, 32) and out["tokens"].shape == (5, 16, 64)
    assert out["pooled"].dtype == np.float32 and tiny.embed_dim == 32
    np.testing.assert_allclose(tiny.embed_images(images, outputs=("pooled",))["pooled"], out["pooled"],
                               rtol=1e-5, atol=1e-6)
    assert "tokens" not in tiny.embed_images(images[:1], outputs=("pooled",))
    txt = tiny.embed_texts(["a red square", "two dogs", "x"])
    assert txt["pooled"].shape == (3, 32) and txt["tokens"].shape == (3, 16, 48)
    import torch

    with torch.no_grad():
        ref = tiny.model_.encode_text(tiny.tokenizer_(["a red square", "two dogs", "x"])).numpy()
    np.testing.assert_allclose(txt["pooled"], ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="sequence of strings"):
        tiny.embed_texts("one string")
    with pytest.raises(ValueError, match="shape"):
        tiny.embed_images(images[..., 0])


def test_projected_tokens(tiny, images, tmp_path):
    proj = ClipEncoder(TINY, allow_random=True, tokens="projected")
    cls = ClipEncoder(TINY, allow_random=True, tokens="projected_cls")
    raw = tiny.embed_images(images[:2])
    p = proj.embed_images(images[:2])["tokens"]
    c = cls.embed_images(images[:2])
    assert p.shape == (2, 16, 32) and c["tokens"].shape == (2, 17, 32)  # the 257 × 768 analogue
    w = tiny.model_.visual.proj.detach().numpy()
    np.testing.assert_allclose(p, raw["tokens"] @ w, rtol=1e-4, atol=1e-5)  # same seed → same weights
    np.testing.assert_allclose(c["tokens"][:, 0], c["pooled"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c["tokens"][:, 1:], p, rtol=1e-5, atol=1e-6)
    assert proj.embed_texts(["a"])["tokens"].shape == (1, 16, 32)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_round_trip(tiny, images, tmp_path, suffix):
    import torch

    other = ClipEncoder(TINY, allow_random=True, random_state=1)
    state = {k: v.contiguous() for k, v in other.model_.state_dict().items()}
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = ClipEncoder(TINY, path)
    assert loaded.weights_path_ == path and "tiny" in repr(loaded)
    a, b = other.embed_images(images), loaded.embed_images(images)
    np.testing.assert_array_equal(a["pooled"], b["pooled"])
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert not np.allclose(a["pooled"], tiny.embed_images(images)["pooled"])  # seed 1 ≠ seed 0
    np.testing.assert_array_equal(other.embed_texts(["hi"])["pooled"], loaded.embed_texts(["hi"])["pooled"])
    # a folder holding the file is accepted too (and hashes the same bytes)
    digest = loaded.weights_hash
    folder = tmp_path / f"dir{suffix.replace('.', '_')}"
    folder.mkdir()
    path.rename(folder / f"open_clip_model{suffix}" if suffix == ".safetensors" else folder / "w.pt")
    assert ClipEncoder(TINY, folder).weights_hash == digest


def test_missing_and_wrong_weights(tmp_path):
    missing = tmp_path / "nowhere" / "open_clip_model.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing).replace("\\", "\\\\")) as err:
        ClipEncoder(TINY, missing)
    assert "at exactly this path" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No open_clip weight file in the folder"):
        resolve_clip_weights(tmp_path / "empty")
    with pytest.raises(ValueError, match="allow_random=True"):
        ClipEncoder(TINY)
    with pytest.raises(ValueError, match="Unknown open_clip model_name"):
        ClipEncoder("ViT-L-41", allow_random=True)
    from safetensors.torch import save_file
    import torch

    bad = tmp_path / "bad.safetensors"
    save_file({"nope": torch.zeros(2)}, str(bad))
    with pytest.raises(RuntimeError, match="do not fit the open_clip model"):
        ClipEncoder(TINY, bad)


def test_hf_repo_id_offline_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache") as err:
        ClipEncoder(TINY, "laion/CLIP-ViT-L-14-laion2B-s32B-b82K")
    msg = str(err.value)
    assert "models--laion--CLIP-ViT-L-14-laion2B-s32B-b82K" in msg and str(tmp_path / "hf") in msg


def test_hf_repo_id_from_local_cache(tiny, images, tmp_path, monkeypatch):
    """A repo already in the HF cache layout resolves offline to its snapshot file."""
    from safetensors.torch import save_file

    from huggingface_hub import constants

    cache = tmp_path / "hf"
    repo = cache / "models--org--tiny-clip"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    save_file({k: v.contiguous() for k, v in tiny.model_.state_dict().items()},
              str(snap / "open_clip_model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    enc = ClipEncoder(TINY, "org/tiny-clip")
    assert enc.weights_path_ == snap / "open_clip_model.safetensors"
    np.testing.assert_array_equal(enc.embed_images(images)["pooled"], tiny.embed_images(images)["pooled"])


def test_stimulus_set_level_and_cache(tiny, images, tmp_path):
    caps = {i: [f"picture {i}", "a thing"] for i in range(10, 15)}
    s = StimulusSet(range(10, 15), images=images, captions=caps, source="toy")
    emb = embed_images(s, [13, 10], encoder=tiny)
    assert isinstance(emb, StimulusEmbeddings) and emb.ids == [13, 10] and emb.dim == 32
    np.testing.assert_allclose(emb.lookup([10]), tiny.embed_images(images[[0]])["pooled"], rtol=1e-5, atol=1e-6)
    tok = embed_images(s, encoder=tiny, output="tokens", cache_dir=tmp_path / "c")
    assert tok.token_shape == (16, 64) and tok.dim == 16 * 64
    assert tok.lookup([11], as_tokens=True).shape == (1, 16, 64)
    tok.save(tmp_path / "tok.safetensors")
    assert StimulusEmbeddings.load(tmp_path / "tok.safetensors").token_shape == (16, 64)
    again = embed_images(s, encoder=tiny, output="tokens", cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again.values, tok.values)
    # the cached token table stays memory-mapped (no copy into RAM): what makes 256×1664 targets trainable
    assert not again.values.flags.writeable and not again.values.flags.owndata
    # caption mean: mean of the per-caption embeddings
    cap = embed_captions(s, [12], encoder=tiny, cache_dir=tmp_path / "c")
    ref = tiny.embed_texts(caps[12])["pooled"].mean(0)
    np.testing.assert_allclose(cap.lookup([12])[0], ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no caption"):
        embed_captions(StimulusSet([1, 2], captions={1: ["a"]}), encoder=tiny)
    with pytest.raises(ValueError, match="with images"):
        embed_images(StimulusSet([1]), encoder=tiny)
    # by name, loading the encoder itself
    by_name = embed_images(s, [10], encoder=TINY, allow_random=True)
    np.testing.assert_allclose(by_name.values, emb.lookup([10]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs weights="):
        embed_images(s, encoder=TINY)
