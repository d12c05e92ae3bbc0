"""Backbones: shapes, generator-driven dropout, errors, completeness of init_parameters_."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurodecode.models import (
    ChannelAttentionEncoder,
    DilatedConvNet,
    MLPMixer,
    ResidualMLP,
    init_parameters_,
)

TINY = {
    "mlp": lambda **kw: ResidualMLP(16, n_blocks=2, dropout=0.2, **kw),
    "mixer": lambda **kw: MLPMixer(16, n_blocks=2, dropout=0.2, n_tokens=4, **kw),
    "dilated_conv": lambda **kw: DilatedConvNet(5, 12, hidden=8, depth=3, dropout=0.2, n_times=20,
                                                pool="linear", **kw),
    "atm": lambda **kw: ChannelAttentionEncoder(5, 20, 12, d_model=16, n_heads=2, d_ff=8, n_filters=4,
                                                conv_kernel=3, pool=4, pool_stride=2, **kw),
}


def _input(model):
    if model.input_kind == "vector":
        return torch.randn(4, model.dim)
    return torch.randn(4, model.n_chans, 20)


@pytest.mark.parametrize("name", list(TINY))
def test_shapes_and_reproducible_dropout(name):
    model = TINY[name]()
    x = _input(model)
    model.eval()
    out = model(x)
    assert out.shape == (4, model.out_dim) and torch.isfinite(out).all()
    model.train()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(model(x, g1), model(x, g2))
    out.sum().backward()  # differentiable


@pytest.mark.parametrize("name", list(TINY))
def test_meta_build_then_seeded_init(name):
    state = torch.random.get_rng_state()
    models = []
    for _ in range(2):
        m = TINY[name](device="meta")
        assert all(p.is_meta for p in m.parameters())
        m.to_empty(device="cpu")
        models.append(init_parameters_(m, torch.Generator().manual_seed(1)))
    assert torch.equal(torch.random.get_rng_state(), state)  # only the generator was used
    for (k, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(a, b), k


def test_mixer_mixes_tokens():
    m = MLPMixer(8, n_blocks=1, dropout=0.0, n_tokens=2).eval()
    x = torch.zeros(1, 8)
    y0 = m(x)
    x[0, 0] = 5.0  # perturb token 0 only
    y1 = m(x)
    assert not torch.allclose(y0[0, 4:], y1[0, 4:])  # token 1 changed through token mixing


def test_errors():
    with pytest.raises(ValueError, match="divisible by n_tokens"):
        MLPMixer(10, n_tokens=3)
    with pytest.raises(ValueError, match="odd"):
        DilatedConvNet(4, 8, kernel_size=4)
    with pytest.raises(ValueError, match="n_times"):
        DilatedConvNet(4, 8, pool="linear")
    with pytest.raises(ValueError, match="too small"):
        ChannelAttentionEncoder(4, 20, 8, d_model=16, n_heads=2, conv_kernel=5, pool=20)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 5, 20\)"):
        TINY["atm"]()(torch.randn(2, 4, 20))


def test_init_parameters_rejects_unknown_parameters():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.empty(3))

    with pytest.raises(RuntimeError, match="'w'"):
        init_parameters_(Odd())


def test_atm_paper_sizes_flatten_to_1440():
    enc = ChannelAttentionEncoder(63, 250, 1024, device="meta")
    assert enc.flat_dim == 1440  # ATM's Proj_eeg input size
