"""Subject adapters: shapes, ragged subjects, identity inits, spatial attention, meta-device init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.models import (
    LinearAdapter,
    PooledAdapter,
    SpatialAttention,
    SubjectBuilder,
    SubjectLayer,
    init_parameters_,
)


def test_linear_adapter_ragged_subjects():
    ad = LinearAdapter({1: 12, "sub-02": 7}, hidden_dim=8)
    assert ad(torch.randn(3, 12), 1).shape == (3, 8)
    assert ad(torch.randn(2, 7), "sub-02").shape == (2, 8)
    assert ad["1"] is ad.linears["1"] and ad.subjects == ["1", "sub-02"]
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 12\)"):
        ad(torch.randn(2, 7), 1)
    with pytest.raises(ValueError, match=r"unknown.*\['1', 'sub-02'\]"):
        ad(torch.randn(2, 12), 3)


def test_pooled_adapter_shapes_identity_lora_and_shared():
    ad = PooledAdapter({1: 50, 2: 23}, hidden_dim=6, pool_size=16, rank=4, dropout=0.5)
    ad.eval()
    assert ad(torch.randn(3, 50), 1).shape == (3, 6) and ad(torch.randn(3, 23), 2).shape == (3, 6)
    x = torch.randn(2, 50)
    assert ad.pool(x).shape == (2, 16)
    torch.testing.assert_close(ad.pool(x)[:, 0], x[:, :4].max(1).values)  # adaptive max pooling
    lora = ad[1].lora
    assert torch.count_nonzero(lora.up.weight) == 0  # starts as the identity
    torch.testing.assert_close(lora(ad.pool(x)), ad.pool(x))
    shared = PooledAdapter({1: 50, 2: 23}, hidden_dim=6, pool_size=16, rank=0, shared_linear=True)
    assert shared[1].linear is None and shared[1].lora is None
    n_own = sum(p.numel() for p in shared.parameters())
    n_sep = sum(p.numel() for p in PooledAdapter({1: 50, 2: 23}, 6, pool_size=16, rank=0).parameters())
    assert n_own < n_sep
    ad.train()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(ad(x, 1, g1), ad(x, 1, g2))


def test_subject_layer_identity_and_random_init():
    sl = SubjectLayer({1: 5, 2: 3}, n_outputs=5)
    x = torch.randn(2, 5, 7)
    torch.testing.assert_close(sl(x, 1), x)  # identity init
    y = sl(torch.randn(2, 3, 7), 2)
    assert y.shape == (2, 5, 7) and torch.all(y[:, 3:] == 0)
    assert SubjectLayer({1: 4, 2: 6}).n_outputs == 6
    rnd = SubjectLayer({1: 400}, init="random", device="meta")
    rnd.to_empty(device="cpu")
    init_parameters_(rnd, torch.Generator().manual_seed(0))
    assert abs(float(rnd[1].detach().std()) - 1 / 20) < 0.005
    with pytest.raises(ValueError, match=r"shape \(batch, 5, n_times\)"):
        sl(torch.randn(2, 4, 7), 1)


def _positions(n, seed):
    return np.random.default_rng(seed).uniform(-0.1, 0.1, (n, 2))


def test_spatial_attention_different_channel_sets():
    pos = {1: _positions(10, 0), 2: _positions(6, 1)}
    sa = SpatialAttention(pos, n_virtual=4, pos_dim=32)
    assert sa(torch.randn(2, 10, 9), 1).shape == (2, 4, 9)
    assert sa(torch.randn(3, 6, 9), 2).shape == (3, 4, 9)
    w = sa.attention_weights(1)
    assert w.shape == (4, 10)
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    p = sa.positions(1)
    assert float(p.min()) == 0.0 and float(p.max()) == 1.0  # normalised per subject
    # a NaN position is ignored (weight 0)
    bad = _positions(5, 2)
    bad[3] = np.nan
    sa2 = SpatialAttention({1: bad}, n_virtual=3, pos_dim=8)
    assert torch.all(sa2.attention_weights(1)[:, 3] == 0)
    with pytest.raises(ValueError, match="pos_dim"):
        SpatialAttention(pos, pos_dim=30)
    with pytest.raises(ValueError, match=r"shape \(n_chans, 2\)"):
        SpatialAttention({1: np.zeros((4, 3))})


def test_spatial_attention_sensor_dropout_uses_generator():
    sa = SpatialAttention({1: _positions(40, 3)}, n_virtual=3, pos_dim=8, dropout=0.3)
    sa.train()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    w1, w2 = sa.attention_weights(1, g1), sa.attention_weights(1, g2)
    assert torch.equal(w1, w2) and torch.any(w1 == 0)
    sa.eval()
    assert torch.all(sa.attention_weights(1) > 0)


def test_builder_shapes_and_meta_init_reproducible():
    b = SubjectBuilder({1: 16, 2: 9}, hidden_dim=6, rank=3)
    assert b(torch.randn(2, 6), 2).shape == (2, 9)
    mods = []
    for _ in range(2):
        m = PooledAdapter({1: 30}, 5, pool_size=8, rank=2, device="meta")
        m.to_empty(device="cpu")
        mods.append(init_parameters_(m, torch.Generator().manual_seed(3)))
    for (k, a), b_ in zip(mods[0].state_dict().items(), mods[1].state_dict().values()):
        assert torch.equal(a, b_), k
