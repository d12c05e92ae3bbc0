"""Contrastive losses against hand-written numpy formulas (exact values, not just 'decreases')."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.models.losses import candidate_clip, info_nce, soft_clip


def _np_logsoftmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)


def test_info_nce_equals_symmetric_cross_entropy(pair):
    pred, target = pair
    z = _unit(pred.numpy()) @ _unit(target.numpy()).T / 0.3
    want = -(np.diag(_np_logsoftmax(z)).mean() + np.diag(_np_logsoftmax(z.T)).mean()) / 2
    assert float(info_nce(pred, target, 0.3)) == pytest.approx(want, rel=1e-10)
    # ids that are all distinct give the same value through the soft-label path
    assert float(info_nce(pred, target, 0.3, ids=torch.arange(5))) == pytest.approx(want, rel=1e-10)


def test_info_nce_shared_ids_are_joint_positives(pair):
    pred, target = pair
    ids = torch.tensor([0, 0, 1, 2, 2])
    z = _unit(pred.numpy()) @ _unit(target.numpy()).T / 0.5
    same = (ids.numpy()[:, None] == ids.numpy()[None, :]).astype(float)
    lab = same / same.sum(1, keepdims=True)
    want = (-(lab * _np_logsoftmax(z)).sum(1).mean() - (lab * _np_logsoftmax(z.T)).sum(1).mean()) / 2
    assert float(info_nce(pred, target, 0.5, ids=ids)) == pytest.approx(want, rel=1e-10)
    with pytest.raises(ValueError, match="ids has 4 entries"):
        info_nce(pred, target, ids=torch.arange(4))


def test_candidate_clip_one_direction_unnormalised_pred(pair):
    pred, target = pair
    z = pred.numpy() @ _unit(target.numpy()).T / 2.0
    assert float(candidate_clip(pred, target, 2.0)) == pytest.approx(-np.diag(_np_logsoftmax(z)).mean(), rel=1e-10)
    ids = torch.tensor([3, 3, 1, 2, 4])
    same = (ids.numpy()[:, None] == ids.numpy()[None, :]).astype(float)
    want = -((same / same.sum(1, keepdims=True)) * _np_logsoftmax(z)).sum(1).mean()
    assert float(candidate_clip(pred, target, 2.0, ids=ids)) == pytest.approx(want, rel=1e-10)


def test_soft_clip_soft_targets(pair):
    pred, target = pair
    p, t = _unit(pred.numpy()), _unit(target.numpy())
    soft = np.exp(_np_logsoftmax(t @ t.T / 0.125))
    z = p @ t.T / 0.125
    want = (-(soft * _np_logsoftmax(z)).sum(1).mean() - (soft * _np_logsoftmax(z.T)).sum(1).mean()) / 2
    assert float(soft_clip(pred, target)) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("fn", [info_nce, candidate_clip, soft_clip])
def test_shape_checks(fn):
    with pytest.raises(ValueError, match="shape"):
        fn(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="shape"):
        fn(torch.zeros(4), torch.zeros(4))


def test_training_loss_keeps_a_fixed_brainmagick_temperature(pair):
    from neurodecode.models.losses import TrainingLoss

    pred, target = pair
    loss = TrainingLoss("brainmagick_clip", temperature=0.5)
    assert float(loss(pred, target)) == pytest.approx(float(candidate_clip(pred, target, 0.5)), rel=1e-6)
    assert float(loss(pred, target)) != pytest.approx(float(candidate_clip(pred, target, 1.0)), rel=1e-3)


@pytest.mark.parametrize("bad", [1.5, True, 0, 4, "2", np.float64(2.0)])
def test_set_epoch_takes_only_integer_epochs_in_range(bad):
    from neurodecode.models.losses import TrainingLoss

    loss = TrainingLoss("infonce", n_epochs=3)
    with pytest.raises(ValueError, match=r"epoch must be an int in \[1, 3\]"):
        loss.set_epoch(bad)
    loss.set_epoch(np.int64(3))
    loss.set_epoch(1)
