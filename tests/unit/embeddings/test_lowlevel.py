"""Low-level targets: RGB thumbnails and image-VAE latents, and the local VAE loader."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.embeddings import embed_lowlevel, load_vae


class _Stimuli:
    def __init__(self, images):
        self.images = images

    def get_images(self, ids):
        return self.images[np.asarray(ids)]


@pytest.fixture(scope="module")
def stimuli():
    rng = np.random.default_rng(0)
    return _Stimuli(rng.integers(0, 256, (5, 20, 20, 3), dtype=np.uint8))


def test_thumbnails_are_rgb_in_unit_range(stimuli):
    table = embed_lowlevel(stimuli, [0, 1, 2, 3, 4], size=8, batch_size=2)
    assert table.token_shape == (3, 8, 8)
    vals = table.lookup([3], as_tokens=True)[0]
    assert vals.min() >= 0 and vals.max() <= 1
    # a constant image gives its own colour
    flat = _Stimuli(np.full((1, 20, 20, 3), (255, 0, 51), np.uint8))
    out = embed_lowlevel(flat, [0], size=4).lookup([0], as_tokens=True)[0]
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.0, 0.2], atol=1e-6)
    with pytest.raises(ValueError, match="size"):
        embed_lowlevel(stimuli, [0], size=1)


def test_vae_latents_match_a_direct_encode(stimuli, tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    vae = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                  latent_channels=4, norm_num_groups=8, sample_size=16)
    (tmp_path / "pipe").mkdir()
    vae.save_pretrained(tmp_path / "pipe" / "vae")
    loaded = load_vae(tmp_path / "pipe")  # a pipeline folder: its vae/ subfolder
    table = embed_lowlevel(stimuli, [0, 1, 2], size=16, vae=loaded, batch_size=2)
    assert table.token_shape == (4, 8, 8)
    x = torch.from_numpy(np.asarray(
        [np.asarray(__import__("PIL.Image").Image.fromarray(im).resize((16, 16), 3), np.float32)
         for im in stimuli.images[:1]]).transpose(0, 3, 1, 2) / 127.5 - 1.0)
    with torch.no_grad():
        ref = (loaded.encode(x).latent_dist.mean * loaded.config.scaling_factor).numpy()
    np.testing.assert_allclose(table.lookup([0], as_tokens=True), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        embed_lowlevel(stimuli, [0], size=15, vae=loaded)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_vae(tmp_path / "missing")
