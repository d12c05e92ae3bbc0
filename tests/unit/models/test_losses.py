"""Contrastive losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from neurodecode.models import ClipLoss, info_nce, soft_clip


def test_info_nce_hand_computed():
    # unit vectors: pred·target cosine matrix = [[1, 0], [0.6, 0.8]]
    pred = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    s = [[1 / t, 0.0], [0.6 / t, 0.8 / t]]
    # brain → stimulus (rows)
    r0 = -math.log(math.exp(s[0][0]) / (math.exp(s[0][0]) + math.exp(s[0][1])))
    r1 = -math.log(math.exp(s[1][1]) / (math.exp(s[1][0]) + math.exp(s[1][1])))
    # stimulus → brain (columns)
    c0 = -math.log(math.exp(s[0][0]) / (math.exp(s[0][0]) + math.exp(s[1][0])))
    c1 = -math.log(math.exp(s[1][1]) / (math.exp(s[0][1]) + math.exp(s[1][1])))
    expected = ((r0 + r1) / 2 + (c0 + c1) / 2) / 2
    got = info_nce(pred, target, temperature=t)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # scale invariance (inputs are normalised) and symmetry of the two directions
    assert float(info_nce(3 * pred, 2 * target, t)) == pytest.approx(expected, rel=1e-6)
    assert float(info_nce(target, pred, t)) == pytest.approx(expected, rel=1e-6)


def test_info_nce_ids_treat_repeats_as_positives():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    ids = torch.arange(4)
    assert torch.allclose(info_nce(pred, target, 0.1, ids=ids), info_nce(pred, target, 0.1))
    # two rows of the same stimulus: both count as positives, half weight each
    ids_rep = torch.tensor([0, 0, 1, 2])
    labels = torch.tensor([[.5, .5, 0, 0], [.5, .5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    logits = (torch.nn.functional.normalize(pred, dim=1)
              @ torch.nn.functional.normalize(target, dim=1).T) / 0.1
    expected = (-(labels * logits.log_softmax(1)).sum(1).mean()
                - (labels * logits.T.log_softmax(1)).sum(1).mean()) / 2
    assert torch.allclose(info_nce(pred, target, 0.1, ids=ids_rep), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        info_nce(pred, target[:, :3])


def test_perfect_match_low_loss():
    x = torch.eye(5)
    assert float(info_nce(x, x, 0.01)) < 1e-3
    assert float(soft_clip(x, x, 0.01)) < 1e-3


def test_soft_clip_hand_computed():
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 1.0
    # soft targets = softmax([1, 0]) per row; logits the same → cross-entropy = entropy
    p = math.exp(1) / (math.exp(1) + 1)
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert float(soft_clip(pred, target, t)) == pytest.approx(entropy, rel=1e-6)


def test_clip_loss_module():
    loss = ClipLoss(init_temperature=0.07)
    assert loss.temperature == pytest.approx(0.07, rel=1e-5)
    assert loss.logit_scale.requires_grad
    pred, target = torch.eye(3) + 0.1, torch.eye(3)
    assert torch.allclose(loss(pred, target), info_nce(pred, target, 0.07), rtol=1e-5)
    out = loss(pred, target)
    out.backward()
    assert loss.logit_scale.grad is not None
    frozen = ClipLoss(0.2, learnable=False)
    assert not any(True for _ in frozen.parameters())
    assert frozen.temperature == pytest.approx(0.2, rel=1e-5)
    assert "temperature=0.2" in repr(frozen)
    with pytest.raises(ValueError, match="init_temperature"):
        ClipLoss(0.0)
