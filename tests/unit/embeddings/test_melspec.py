"""Log-mel spectrograms: filterbank geometry, tone placement, frame grid, batches, StimulusSet targets."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.datasets import StimulusSet
from neurodecode.embeddings import StimulusEmbeddings, embed_melspec, mel_filterbank, melspectrogram
from neurodecode.preprocessing.audio import LOG_EPS, hz_to_mel, mel_to_hz

SR = 16000


def _tone(freq: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)


# --------------------------------------------------------------------------- filterbank
def test_mel_scale_roundtrip():
    f = np.array([0.0, 50.0, 700.0, 1000.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-9)
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.5)  # HTK: 1000 Hz ~ 1000 mel


def test_filterbank_shape_peaks_and_partition_of_unity():
    n_fft, n_mels, fmin, fmax = 4096, 20, 50.0, 8000.0
    fb = mel_filterbank(n_fft, SR, n_mels, fmin, fmax)
    assert fb.shape == (n_mels, n_fft // 2 + 1)
    assert fb.min() >= 0 and fb.max() <= 1
    freqs = np.arange(n_fft // 2 + 1) * SR / n_fft
    centres = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))[1:-1]
    peak_freqs = freqs[fb.argmax(axis=1)]
    np.testing.assert_allclose(peak_freqs, centres, atol=SR / n_fft)  # each peak within one bin
    assert np.all(np.diff(peak_freqs) > 0)
    # overlapping triangles sum to 1 between the first and last centre
    inside = (freqs >= centres[0]) & (freqs <= centres[-1])
    np.testing.assert_allclose(fb[:, inside].sum(axis=0), 1.0, atol=1e-9)
    assert np.all(fb[:, freqs < fmin] == 0) and np.all(fb[:, freqs > fmax] == 0)


def test_filterbank_narrow_filters_never_empty():
    fb = mel_filterbank(64, SR, 40, 0.0)  # bins of 250 Hz, far wider than the low filters
    assert np.all(fb.sum(axis=1) > 0)


def test_filterbank_default_fmax_is_nyquist():
    np.testing.assert_array_equal(mel_filterbank(512, 8000, 10), mel_filterbank(512, 8000, 10, 0.0, 4000.0))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_fft=512, sfreq=SR, n_mels=0), "n_mels"),
    (dict(n_fft=1, sfreq=SR, n_mels=10), "n_fft"),
    (dict(n_fft=512, sfreq=-1.0, n_mels=10), "sfreq"),
    (dict(n_fft=512, sfreq=SR, n_mels=10, fmin=100.0, fmax=9000.0), "fmax"),
    (dict(n_fft=512, sfreq=SR, n_mels=10, fmin=500.0, fmax=400.0), "fmin"),
    (dict(n_fft=512, sfreq=SR, n_mels=10, fmin=-5.0), "fmin"),
])
def test_filterbank_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mel_filterbank(**kwargs)


# --------------------------------------------------------------------------- spectrogram
@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_pure_tone_lands_in_its_band(freq):
    n_mels, fmin = 20, 50.0
    mel = melspectrogram(_tone(freq), SR, n_mels=n_mels, frame_rate=100.0, fmin=fmin)
    centres = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(SR / 2), n_mels + 2))[1:-1]
    band = int(mel[10:-10].mean(axis=0).argmax())
    assert band == int(np.argmin(np.abs(centres - freq)))
    # far bands hold almost nothing
    power = melspectrogram(_tone(freq), SR, n_mels=n_mels, frame_rate=100.0, fmin=fmin, log=False)
    far = np.abs(np.arange(n_mels) - band) > 2
    assert power[10:-10, far].max() < 1e-4 * power[10:-10, band].mean()


@pytest.mark.parametrize("frame_rate, seconds", [(100.0, 1.0), (120.0, 0.75), (10.0, 3.0), (200.0, 0.2)])
def test_frame_count_and_timing(frame_rate, seconds):
    n = int(seconds * SR)
    click_t = seconds / 2
    audio = np.zeros(n)
    audio[int(click_t * SR)] = 1.0
    mel = melspectrogram(audio, SR, frame_rate=frame_rate, log=False)
    assert mel.shape == (int(round(seconds * frame_rate)), 20)
    # frame k is centred at k / frame_rate: the click's energy peaks in the frame nearest click_t
    assert int(mel.sum(axis=1).argmax()) == int(round(click_t * frame_rate))
    assert mel.dtype == np.float32


def test_log_is_log_eps_plus_power_and_silence_floor():
    audio = _tone(440.0, 0.5)
    power = melspectrogram(audio, SR, log=False)
    np.testing.assert_allclose(melspectrogram(audio, SR), np.log(LOG_EPS + power.astype(np.float64)), rtol=1e-5)
    silent = melspectrogram(np.zeros(SR // 2), SR)
    np.testing.assert_allclose(silent, np.log(LOG_EPS), rtol=1e-6)


def test_batch_equals_single():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((3, 8000))
    batch = melspectrogram(audio, 8000, n_mels=16, frame_rate=50.0)
    assert batch.shape == (3, 50, 16)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], melspectrogram(audio[i], 8000, n_mels=16, frame_rate=50.0))


def test_integer_audio_and_explicit_n_fft():
    audio = (_tone(1000.0, 0.5) * 1000).astype(np.int16)
    a = melspectrogram(audio, SR, n_fft=256)
    b = melspectrogram(audio.astype(float), SR, n_fft=256)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("audio, kwargs, match", [
    (np.zeros((2, 2, 100)), {}, "shape"),
    (np.zeros(10), {}, "shorter than one frame"),
    (np.zeros(1000), dict(frame_rate=20000.0), "frame_rate"),
    (np.zeros(1000), dict(frame_rate=0.0), "frame_rate"),
    (np.full(1000, np.nan), {}, "NaN"),
])
def test_melspectrogram_errors(audio, kwargs, match):
    with pytest.raises(ValueError, match=match):
        melspectrogram(audio, SR, **kwargs)


# --------------------------------------------------------------------------- StimulusSet targets
@pytest.fixture
def stimuli():
    rng = np.random.default_rng(1)
    audio = rng.standard_normal((4, 4000)) * np.array([[0.1], [0.5], [1.0], [2.0]])
    return StimulusSet(["a", "b", "c", "d"], audio=audio, sfreq_audio=8000.0, source="test")


def test_embed_melspec_shapes_ids_and_standardization(stimuli):
    emb = embed_melspec(stimuli, n_mels=12, frame_rate=10.0)
    assert isinstance(emb, StimulusEmbeddings)
    assert emb.ids == ["a", "b", "c", "d"]
    assert emb.token_shape == (5, 12)  # 0.5 s at 10 frames/s
    assert emb.values.shape == (4, 60)
    assert emb.name == "melspec 12x5"
    tokens = emb.lookup(["a", "b", "c", "d"], as_tokens=True)
    np.testing.assert_allclose(tokens.mean(axis=(0, 1)), 0.0, atol=1e-4)
    np.testing.assert_allclose(tokens.std(axis=(0, 1)), 1.0, atol=1e-3)
    # louder stimuli have larger log-mel values
    assert tokens[3].mean() > tokens[0].mean()


def test_embed_melspec_raw_values_and_subset(stimuli):
    emb = embed_melspec(stimuli, ["c", "a", "c"], n_mels=8, frame_rate=20.0, standardize=False)
    assert emb.ids == ["c", "a"]
    expected = melspectrogram(stimuli.get_audio(["c"])[0], 8000.0, n_mels=8, frame_rate=20.0)
    np.testing.assert_allclose(emb.lookup(["c"], as_tokens=True)[0], expected, rtol=1e-6)


def test_embed_melspec_errors(stimuli):
    with pytest.raises(ValueError, match="no audio|has none"):
        embed_melspec(StimulusSet(["x"], images=np.zeros((1, 4, 4, 3), np.uint8)))
    with pytest.raises(ValueError, match="has none"):
        embed_melspec(None)
    with pytest.raises(ValueError, match="sfreq_audio"):
        embed_melspec(StimulusSet(["x"], audio=np.zeros((1, 800))))
    with pytest.raises(KeyError):
        embed_melspec(stimuli, ["zzz"])
