"""BiMixCo, regression losses, cycle loss, WeightedLoss."""

from __future__ import annotations

import pytest
import torch

from neurodecode.models import (
    SubjectBuilder,
    WeightedLoss,
    bimixco,
    cosine_loss,
    cycle_loss,
    info_nce,
    l1_loss,
    mixco,
    mse_loss,
)


def test_mixco_reproducible_and_mixes():
    x = torch.randn(16, 5)
    state = torch.random.get_rng_state()
    a = mixco(x, generator=torch.Generator().manual_seed(0))
    b = mixco(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    xm, perm, lam = a
    assert sorted(perm.tolist()) == list(range(16))
    assert torch.all((lam > 0) & (lam <= 1)) and torch.any(lam < 1) and torch.any(lam == 1)
    torch.testing.assert_close(xm, lam[:, None] * x + (1 - lam[:, None]) * x[perm])
    _, _, none = mixco(x, select_prob=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.all(none == 1)
    with pytest.raises(ValueError, match="beta"):
        mixco(x, beta=0)


def test_bimixco_reduces_to_infonce_and_prefers_mixed_targets():
    pred, target = torch.randn(8, 4), torch.randn(8, 4)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(bimixco(pred, target, perm, torch.ones(8), 0.1), info_nce(pred, target, 0.1))
    lam = torch.full((8,), 0.6)
    mixed_target = torch.nn.functional.normalize(target, dim=1)
    good = 0.6 * mixed_target + 0.4 * mixed_target[perm]
    assert bimixco(good, target, perm, lam, 0.05) < bimixco(torch.randn(8, 4), target, perm, lam, 0.05)
    with pytest.raises(ValueError, match="perm and lambdas"):
        bimixco(pred, target, perm[:3], lam)


def test_regression_losses():
    a, b = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    torch.testing.assert_close(mse_loss(a, b), ((a - b) ** 2).mean())
    torch.testing.assert_close(l1_loss(a, b), (a - b).abs().mean())
    assert float(cosine_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_loss(a, -a)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(a, b[:2])


def test_cycle_loss_with_builder():
    builder = SubjectBuilder({1: 6}, hidden_dim=4)
    z, x = torch.randn(2, 4), torch.randn(2, 6)
    loss = cycle_loss(builder, z, x, 1)
    torch.testing.assert_close(loss, ((builder(z, 1) - x) ** 2).mean())
    loss.backward()
    assert builder.linears["1"].weight.grad is not None
    with pytest.raises(ValueError, match="reconstructs shape"):
        cycle_loss(builder, z, torch.randn(2, 5), 1)


def test_weighted_loss():
    wl = WeightedLoss({"prior": 1.0, "clip": 0.033, "lowlevel": 0.016})
    terms = {"prior": torch.tensor(2.0), "clip": torch.tensor(3.0), "lowlevel": torch.tensor(10.0)}
    assert float(wl(terms)) == pytest.approx(2 + 0.099 + 0.16)
    assert wl.last_terms == {"prior": 2.0, "clip": 3.0, "lowlevel": 10.0}
    assert "0.033·clip" in repr(wl)
    with pytest.raises(ValueError, match="Missing loss terms"):
        wl({"prior": torch.tensor(1.0)})
    fns = WeightedLoss({"clip": 0.5, "mse": 0.5}, losses={"clip": info_nce, "mse": mse_loss})
    p, t = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(fns({"clip": p, "mse": p}, {"clip": t, "mse": t}),
                               0.5 * info_nce(p, t) + 0.5 * mse_loss(p, t))
    with pytest.raises(ValueError, match="no function"):
        WeightedLoss({"a": 1.0}, losses={"b": mse_loss})
    with pytest.raises(ValueError, match="weights"):
        WeightedLoss({"a": -1.0})
