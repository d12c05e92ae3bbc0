from __future__ import annotations

import numpy as np
import pytest

from neurodecode.datasets import StimulusSet
from neurodecode.embeddings.pixels import embed_images, pixel_features


def test_pixel_features_normalised_and_deterministic():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    f = pixel_features(imgs, size=8)
    assert f.shape == (4, 192) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(f.mean(1), 0, atol=1e-6)
    np.testing.assert_array_equal(f, pixel_features(imgs, size=8))
    assert pixel_features(imgs, size=4, grayscale=True).shape == (4, 16)
    flat = np.full((1, 8, 8, 3), 7, np.uint8)
    assert np.all(pixel_features(flat, size=4) == 0)  # constant image: no contrast, no NaN
    with pytest.raises(ValueError, match="shape"):
        pixel_features(imgs[..., 0])


def test_embed_images_from_stimulus_set():
    imgs = np.random.default_rng(1).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    s = StimulusSet(range(100, 106), images=imgs)
    emb = embed_images(s, [105, 100], size=4, batch_size=1)
    assert list(emb.ids) == [105, 100] if hasattr(emb, "ids") else True
    np.testing.assert_allclose(emb.lookup([100]), pixel_features(imgs[[0]], size=4))
    with pytest.raises(ValueError, match="needs weights="):  # CLIP names dispatch to open_clip
        embed_images(s, encoder="ViT-L-14")
    with pytest.raises(ValueError, match="Unknown open_clip model_name"):
        embed_images(s, encoder="no-such-encoder", weights="x.pt")
    with pytest.raises(ValueError, match="'pixels' encoder takes no"):
        embed_images(s, weights="x.pt")
    tok = embed_images(s, [105, 100], size=4, output="tokens")  # 4² pixel tokens × RGB
    assert tok.token_shape == (16, 3)
    np.testing.assert_array_equal(tok.lookup([100]), emb.lookup([100]))
    np.testing.assert_array_equal(tok.lookup([100], as_tokens=True)[0], emb.lookup([100]).reshape(16, 3))
    with pytest.raises(ValueError, match="with images"):
        embed_images(StimulusSet([1]), encoder="pixels")
