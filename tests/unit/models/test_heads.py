"""Heads: pooled, token and low-level outputs."""

from __future__ import annotations

import pytest
import torch

from neurodecode.models import LowLevelHead, PooledHead, TokenHead


def test_pooled_head():
    h = PooledHead(8, 5)
    assert h(torch.randn(3, 8)).shape == (3, 5) and h.out_shape == (5,)


@pytest.mark.parametrize("mode", ["conv", "linear"])
def test_token_head(mode):
    h = TokenHead(8, (6, 10), mode=mode, rank=4)
    out = h(torch.randn(3, 8))
    assert out.shape == (3, 6, 10)
    n = sum(p.numel() for p in h.parameters())
    assert n == (8 * 60 + 60 + 20 if mode == "linear" else 8 * 24 + 24 + 4 * 10 + 10 + 20)


def test_lowlevel_head_shapes():
    h = LowLevelHead(8, (4, 12, 8), base_channels=16, n_upsample=2, dropout=0.3)
    h.eval()
    out = h(torch.randn(2, 8))
    assert out.shape == (2, 4, 12, 8)
    h.train()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(h(torch.ones(2, 8), g1), h(torch.ones(2, 8), g2))
    assert LowLevelHead(8, (4, 28, 28), base_channels=8)(torch.randn(1, 8)).shape == (1, 4, 28, 28)


def test_head_errors():
    with pytest.raises(ValueError, match="token_shape"):
        TokenHead(8, (6,))
    with pytest.raises(ValueError, match="mode"):
        TokenHead(8, (6, 4), mode="attention")
    with pytest.raises(ValueError, match="divisible"):
        LowLevelHead(8, (4, 10, 10), n_upsample=2)
