"""Speech encoder: tiny random wav2vec2 saved and reloaded, layers, resampling, errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from neurodecode.datasets import StimulusSet  # noqa: E402
from neurodecode.embeddings import SpeechEncoder, embed_audio  # noqa: E402
from neurodecode.embeddings.speech import resample_frames  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    enc = SpeechEncoder(allow_random=True, config=TINY)
    out = tmp_path_factory.mktemp("w2v") / "tiny-wav2vec2"
    enc.model_.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def audio():
    return np.random.default_rng(0).standard_normal((3, 4000))  # 0.25 s at 16 kHz


def test_round_trip_layers_and_shapes(folder, audio):
    rand = SpeechEncoder(allow_random=True, config=TINY)
    enc = SpeechEncoder(folder)
    assert enc.frame_rate == 1600 and enc.hop == 10 and enc.receptive_field == 20  # 1 + 9·1 + 2·5
    feats = enc.embed(audio, 16000)
    n_frames = (4000 - 10) // 5 + 1
    n_frames = (n_frames - 3) // 2 + 1
    assert feats.shape == (3, n_frames, 32) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, rand.embed(audio, 16000), rtol=1e-5, atol=1e-5)
    first = SpeechEncoder(folder, layer=0).embed(audio, 16000)
    assert first.shape == feats.shape and not np.allclose(first, feats)
    np.testing.assert_allclose(SpeechEncoder(folder, layer=2).embed(audio, 16000), feats, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        SpeechEncoder(folder, layer=3)
    assert enc.weights_hash != rand.weights_hash and len(enc.weights_hash) == 64


def test_resampling_to_brain_time_base(folder, audio):
    enc = SpeechEncoder(folder)
    for sfreq, target in ((16000, 120), (8000, 120), (22050, 200.0), (16000, 1000)):
        n = int(sfreq * 0.25)
        out = enc.embed(audio[:, :n] if sfreq <= 16000 else np.random.default_rng(1).standard_normal((2, n)),
                        sfreq, target_sfreq=target)
        assert out.shape[1:] == (round(0.25 * target), 32)
    # interpolation: exact at frame times, linear in between, edges held
    frames = np.arange(4, dtype=np.float32)[None, :, None] * np.ones((2, 1, 3), np.float32)
    times = np.array([0.0, 1.0, 2.0, 3.0])
    out = resample_frames(frames, times, np.array([-1.0, 0.0, 0.5, 2.25, 9.0]))
    np.testing.assert_allclose(out[0, :, 0], [0, 0, 0.5, 2.25, 3])


def test_embed_audio_stimulus_set_and_cache(folder, audio, tmp_path):
    s = StimulusSet(["w1", "w2", "w3"], audio=audio, sfreq_audio=16000, source="toy")
    emb = embed_audio(s, ["w3", "w1"], weights=folder, target_sfreq=120, cache_dir=tmp_path / "c")
    assert emb.ids == ["w3", "w1"] and emb.token_shape == (30, 32)
    assert emb.lookup(["w1"], as_tokens=True).shape == (1, 30, 32)
    direct = SpeechEncoder(folder).embed(audio[[2, 0]], 16000, target_sfreq=120)
    np.testing.assert_allclose(emb.lookup(["w3", "w1"], as_tokens=True), direct, rtol=1e-5, atol=1e-5)
    again = embed_audio(s, ["w3", "w1"], weights=SpeechEncoder(folder), target_sfreq=120, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again.values, emb.values)
    with pytest.raises(ValueError, match="with audio"):
        embed_audio(StimulusSet([1]), weights=folder)


def test_missing_weights_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="Speech model folder not found") as err:
        SpeechEncoder(tmp_path / "nope")
    assert "config.json" in str(err.value) and str(tmp_path / "nope") in str(err.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="lacks"):
        SpeechEncoder(tmp_path / "half")
    with pytest.raises(ValueError, match="allow_random=True"):
        SpeechEncoder()
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        SpeechEncoder("facebook/not-a-cached-model")
    with pytest.raises(ValueError, match="receptive field"):
        SpeechEncoder(folder).embed(np.zeros((1, 5)), 16000)
