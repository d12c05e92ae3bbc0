"""Time-resolved targets: sequence backbones keep time, the head maps onto the target frames.

The decisive test plants the stimulus identity only in *when* a response
happens: every trial carries the same response bump at a stimulus-specific
latency, and the targets are the same bump on the target's frame grid. A
decoder that averages over time sees the same pooled features for every
stimulus (its convolutions are shift-equivariant and the bump stays away from
the edges), so it cannot beat chance; the time-resolved decoder must.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.models import BrainDecoder, ChannelAttentionEncoder, DilatedConvNet
from neurodecode.models.heads import SequenceHead, resample_time
from neurodecode.models.losses import info_nce

N_CHANS, N_TIMES, N_FRAMES, DIM = 4, 64, 16, 3
LATENCIES = np.arange(12, 52, 4)          # 10 stimuli, one latency each (samples)


def _bumps(latencies: np.ndarray, n: int, width: float) -> np.ndarray:
    t = np.arange(n)[None, :]
    return np.exp(-0.5 * ((t - latencies[:, None]) / width) ** 2)


def _task(n_rep: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Trials (n_stim·n_rep, chans, times), targets (n_stim, frames·dim), stimulus index of each trial."""
    rng = np.random.default_rng(seed)
    stim = np.repeat(np.arange(len(LATENCIES)), n_rep)
    mix = np.array([1.0, -0.5, 0.8, 0.3])[:, None]             # every channel sees the bump
    x = mix[None] * _bumps(LATENCIES[stim], N_TIMES, 2.0)[:, None, :]
    x = x + 0.05 * rng.standard_normal(x.shape)
    frames = _bumps(LATENCIES * N_FRAMES / N_TIMES, N_FRAMES, 0.7)  # (n_stim, frames)
    y = np.stack([frames, 0.5 * frames, -frames], axis=-1)         # (n_stim, frames, dim)
    return (torch.tensor(x, dtype=torch.float32), torch.tensor(y.reshape(len(y), -1), dtype=torch.float32),
            stim)


def _fit_and_score(model: BrainDecoder, steps: int = 150) -> float:
    x, y, stim = _task(n_rep=6, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        info_nce(model(x, 1, gen).embedding, y[stim], 0.1, ids=torch.as_tensor(stim)).backward()
        opt.step()
    xt, _, stim_t = _task(n_rep=3, seed=1)
    model.eval()
    with torch.no_grad():
        pred = torch.nn.functional.normalize(model(xt, 1).embedding, dim=1)
    scores = pred @ torch.nn.functional.normalize(y, dim=1).T
    return float((scores.argmax(1).numpy() == stim_t).mean())


def _decoder(time_resolved: bool) -> BrainDecoder:
    return BrainDecoder({1: N_CHANS * N_TIMES}, embed_dim=N_FRAMES * DIM, hidden_dim=16, n_blocks=2,
                        dropout=0.0, backbone="dilated_conv", adapter="subject_layer", n_times=N_TIMES,
                        seed=0, embed_shape=(N_FRAMES, DIM) if time_resolved else None,
                        backbone_kwargs={"hidden": 16, "glu": 0})


def test_time_resolved_decoder_decodes_latency_that_pooling_cannot():
    chance = 1 / len(LATENCIES)
    pooled = _fit_and_score(_decoder(time_resolved=False))
    resolved = _fit_and_score(_decoder(time_resolved=True))
    assert resolved >= 0.9, resolved
    assert pooled <= 2 * chance, pooled


def test_pooled_model_is_blind_to_latency():
    """The reason: mean-pooled shift-equivariant features are identical for every latency."""
    model = _decoder(time_resolved=False).eval()
    clean = torch.tensor(np.array([1.0, -0.5, 0.8, 0.3])[None, :, None]
                         * _bumps(LATENCIES, N_TIMES, 2.0)[:, None, :], dtype=torch.float32)
    with torch.no_grad():
        out = model(clean, 1).embedding
    torch.testing.assert_close(out, out[:1].expand_as(out), atol=1e-5, rtol=1e-5)


def test_shape_chooses_time_resolved_path():
    tr = _decoder(time_resolved=True)
    assert tr.is_time_resolved and isinstance(tr.heads["pooled"], SequenceHead)
    assert tr.backbone.pool is None and tr.backbone.out_times == N_TIMES
    assert not _decoder(time_resolved=False).is_time_resolved
    # fMRI vector models predict the flattened rows whatever the shape
    mlp = BrainDecoder({1: 20}, embed_dim=N_FRAMES * DIM, embed_shape=(N_FRAMES, DIM), seed=0)
    assert not mlp.is_time_resolved
    out = tr(torch.randn(2, N_CHANS, N_TIMES), 1).embedding
    assert out.shape == (2, N_FRAMES * DIM)


def test_time_resolved_round_trip(tmp_path):
    model = _decoder(time_resolved=True).eval()
    x = torch.randn(3, N_CHANS, N_TIMES)
    model.save_pretrained(tmp_path)
    again = BrainDecoder.from_pretrained(tmp_path)
    assert again.is_time_resolved and again.config["embed_shape"] == [N_FRAMES, DIM]
    with torch.no_grad():
        torch.testing.assert_close(again(x, 1).embedding, model(x, 1).embedding)


def test_atm_sequence_output():
    enc = ChannelAttentionEncoder(5, 40, 12, d_model=16, n_heads=2, d_ff=8, n_filters=4, conv_kernel=3,
                                  pool_size=4, pool_stride=2, pool=None)
    out = enc(torch.randn(2, 5, 40))
    assert out.shape == (2, 12, enc.out_times) and enc.out_times == (16 - 3 + 1 - 4) // 2 + 1
    model = BrainDecoder({1: 5 * 40}, embed_dim=6 * 2, hidden_dim=12, n_blocks=1, backbone="atm",
                         n_times=40, embed_shape=(6, 2), seed=0,
                         backbone_kwargs={"d_model": 16, "n_heads": 2, "d_ff": 8, "n_filters": 4,
                                          "conv_kernel": 3, "pool": 4, "pool_stride": 2})
    assert model.is_time_resolved
    assert model(torch.randn(2, 5, 40), 1).embedding.shape == (2, 12)


def test_resample_time_bins_and_interpolates():
    h = torch.arange(12, dtype=torch.float32).reshape(1, 1, 12)
    torch.testing.assert_close(resample_time(h, 3), torch.tensor([[[1.5, 5.5, 9.5]]]))
    assert resample_time(h, 12) is h
    up = resample_time(torch.tensor([[[0.0, 2.0]]]), 4)
    torch.testing.assert_close(up, torch.tensor([[[0.0, 0.5, 1.5, 2.0]]]))


def test_errors():
    with pytest.raises(ValueError, match="embed_shape"):
        BrainDecoder({1: 40}, embed_dim=10, n_times=10, backbone="dilated_conv", embed_shape=(3, 4))
    with pytest.raises(ValueError, match="time-resolved"):
        BrainDecoder({1: 40}, embed_dim=12, n_times=10, backbone="dilated_conv", embed_shape=(3, 4),
                     backbone_kwargs={"pool": "mean"})
    with pytest.raises(ValueError, match="only"):
        BrainDecoder({1: 40}, embed_dim=12, n_times=10, backbone="dilated_conv", embed_shape=(3, 4),
                     heads=("pooled", "tokens"), token_shape=(2, 2))
    with pytest.raises(ValueError, match="needs n_times"):
        DilatedConvNet(4, 8, pool=None)
    with pytest.raises(ValueError, match="sequence"):
        SequenceHead(8, (3, 2))(torch.randn(2, 8))
