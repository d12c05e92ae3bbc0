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


def _np_bimixco(pred, target, perm, lam, temperature, ids=None):
    """MindEye's BiMixCo: soft labels lam * own + (1 - lam) * own[perm], symmetric cross-entropy."""
    n = len(pred)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    same = (ids[:, None] == ids[None, :]).astype(float)
    own = same / same.sum(1, keepdims=True)
    labels = lam[:, None] * own + (1 - lam)[:, None] * own[perm]
    z = _unit(pred) @ _unit(target).T / temperature
    return (-(labels * _np_logsoftmax(z)).sum(1).mean() - (labels.T * _np_logsoftmax(z.T)).sum(1).mean()) / 2


@pytest.mark.parametrize("with_ids", [False, True])
def test_bimixco_equals_the_numpy_formula(pair, with_ids):
    from neurodecode.models.losses import bimixco

    pred, target = pair
    perm = [2, 1, 0, 4, 3]                           # row 1 mixed with itself
    lam = [0.3, 0.55, 0.9, 0.1, 0.7]                 # plain floats: read at the predictions' precision
    ids = [0, 1, 0, 2, 3] if with_ids else None
    want = _np_bimixco(pred.numpy(), target.numpy(), np.array(perm), np.array(lam), 0.2, ids)
    got = bimixco(pred, target, torch.tensor(perm), lam, 0.2, ids=None if ids is None else torch.tensor(ids))
    assert got.dtype == torch.float64 and float(got) == pytest.approx(want, rel=1e-12)
    # float32 predictions with float64 lambdas: the loss stays float32
    got32 = bimixco(pred.float(), target.float(), perm, np.array(lam), 0.2)
    assert got32.dtype == torch.float32
    assert float(got32) == pytest.approx(_np_bimixco(pred.numpy(), target.numpy(), np.array(perm), np.array(lam), 0.2),
                                         rel=1e-5)
    with pytest.raises(ValueError, match="perm and lambdas"):
        bimixco(pred, target, perm, lam[:4])


def test_weighted_loss_zero_weight_is_allowed_and_bad_weights_refused():
    from neurodecode.models.losses import WeightedLoss

    wl = WeightedLoss({"a": 0.0, "b": 2, "c": 0.5})
    a, b, c = torch.tensor(3.0), torch.tensor(1.5), torch.tensor(-4.0)
    total = wl({"a": a, "b": b, "c": c, "unused": torch.tensor(100.0)})
    assert float(total) == pytest.approx(0.0 * 3.0 + 2 * 1.5 + 0.5 * -4.0)
    assert wl.last_terms == {"a": 3.0, "b": 1.5, "c": -4.0} and wl.weights == {"a": 0.0, "b": 2.0, "c": 0.5}
    assert repr(wl).endswith("(0·a + 2·b + 0.5·c)")
    for bad in (-1e-9, float("nan"), True, "1", None, float("-inf")):
        with pytest.raises(ValueError, match="must be a float >= 0"):
            WeightedLoss({"a": 1.0, "b": bad})
    with pytest.raises(ValueError, match="non-empty"):
        WeightedLoss({})
    with pytest.raises(ValueError, match="Missing loss terms"):
        wl({"a": a, "b": b})


def test_mindeye2_loss_phases_keep_repeated_images_as_positives(pair):
    """The Trainer's mindeye2 loss: BiMixCo (with ids) for the first epochs at the base
    temperature, then SoftCLIP on the cosine schedule; validation always SoftCLIP at the base."""
    from neurodecode.models.losses import MINDEYE2_TEMPERATURE, TrainingLoss, cosine_anneal, info_nce

    pred, target = pair
    ids = torch.tensor([0, 1, 0, 2, 1])                       # two images shown twice in the batch
    perm, lam = torch.tensor([3, 1, 4, 0, 2]), torch.tensor([0.8, 0.4, 1.0, 0.35, 0.6], dtype=torch.float64)
    loss = TrainingLoss("mindeye2", n_epochs=6, mixco_fraction=0.34)
    assert loss.n_mixco_epochs == 2
    for epoch in (1, 2):
        loss.set_epoch(epoch)
        assert loss.mixes_inputs
        want = _np_bimixco(pred.numpy(), target.numpy(), perm.numpy(), lam.numpy(), MINDEYE2_TEMPERATURE,
                           ids.numpy())
        assert float(loss(pred, target, ids, perm=perm, lambdas=lam)) == pytest.approx(want, rel=1e-10)
        # ids matter: without them the repeats are negatives, a different (larger) loss
        assert want != pytest.approx(_np_bimixco(pred.numpy(), target.numpy(), perm.numpy(), lam.numpy(),
                                                 MINDEYE2_TEMPERATURE), rel=1e-3)
        # unmixed rows (lambda = 1): BiMixCo is InfoNCE with the same shared-id positives
        ones = torch.ones(5, dtype=torch.float64)
        assert float(loss(pred, target, ids, perm=perm, lambdas=ones)) == pytest.approx(
            float(info_nce(pred, target, MINDEYE2_TEMPERATURE, ids=ids)), rel=1e-10)
        with pytest.raises(ValueError, match="BiMixCo epoch"):
            loss(pred, target, ids)
    schedule = cosine_anneal(0.004, 0.0075, 4)
    for epoch in range(3, 7):
        loss.set_epoch(epoch)
        assert not loss.mixes_inputs and loss.temperature == pytest.approx(schedule[epoch - 3])
        assert float(loss(pred, target, ids)) == pytest.approx(
            float(soft_clip(pred, target, float(schedule[epoch - 3]))), rel=1e-10)
        with pytest.raises(ValueError, match="does not"):
            loss(pred, target, ids, perm=perm, lambdas=lam)
        assert float(loss.validation_loss(pred, target, ids)) == pytest.approx(
            float(soft_clip(pred, target, MINDEYE2_TEMPERATURE)), rel=1e-10)


def test_mixco_draws_everything_from_the_generator():
    """mixco: x̃ = λ x + (1 − λ) x[perm]; perm, selection and λ ~ Beta(β, β) all from the generator,
    with λ streams that differ between generator states (not a handful of reused seeds)."""
    from neurodecode.models.losses import mixco

    x = torch.randn(64, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xm, perm, lam = mixco(x, beta=0.15, select_prob=0.5, generator=torch.Generator().manual_seed(7))
    # reference: the same draws, in the documented order, from a generator in the same state
    g = torch.Generator().manual_seed(7)
    want_perm = torch.randperm(64, generator=g)
    select = torch.rand(64, generator=g) < 0.5
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    want_lam = np.where(select.numpy(), np.random.default_rng(seed).beta(0.15, 0.15, size=64), 1.0)
    assert torch.equal(perm, want_perm)
    np.testing.assert_array_equal(lam.numpy(), want_lam)
    want_x = want_lam[:, None, None] * x.numpy() + (1 - want_lam)[:, None, None] * x.numpy()[want_perm.numpy()]
    np.testing.assert_allclose(xm.numpy(), want_x, rtol=0, atol=1e-15)
    # λ of 200 generator states: 200 different Beta streams, U-shaped around a mean of 1/2
    firsts = []
    for s in range(200):
        lam = mixco(x, select_prob=1.0, generator=torch.Generator().manual_seed(s))[2].numpy()
        firsts.append(lam[0])
    assert len(set(firsts)) == 200
    assert 0.35 < np.mean(firsts) < 0.65 and np.mean((np.array(firsts) < 0.1) | (np.array(firsts) > 0.9)) > 0.5


# -- repeated images in a batch through the loss modules (sample 5) ---------------------------------

def _np_info_nce(pred, target, temperature, ids=None):
    """Symmetric InfoNCE with every row sharing an id a positive, equal weights (numpy, float64)."""
    n = len(pred)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    same = (ids[:, None] == ids[None, :]).astype(float)
    lab = same / same.sum(1, keepdims=True)
    z = _unit(np.asarray(pred)) @ _unit(np.asarray(target)).T / temperature
    return (-(lab * _np_logsoftmax(z)).sum(1).mean() - (lab * _np_logsoftmax(z.T)).sum(1).mean()) / 2


_REPEATS = torch.tensor([4, 4, 1, 7, 4])     # image 4 shown three times in the batch


@pytest.mark.parametrize("mode", ["fixed", "learnable", "schedule"])
def test_infonce_training_loss_counts_repeated_images_as_positives(pair, mode):
    """``TrainingLoss("infonce")`` is ``info_nce`` with ids, in training and validation, in every mode."""
    from neurodecode.models.losses import TrainingLoss

    pred, target = pair
    kw = {"temperature_schedule": (0.4, 0.1), "n_epochs": 3} if mode == "schedule" else {}
    loss = TrainingLoss("infonce", temperature=0.3, temperature_mode=mode, **kw)
    if mode == "schedule":
        loss.set_epoch(3)
        t_train = 0.1                                         # the cosine schedule ends at its end value
    elif mode == "learnable":
        t_train = float(1.0 / loss.logit_scale.detach().exp())  # 0.3 stored as a float32 log scale
        assert t_train == pytest.approx(0.3, rel=1e-6)
    else:
        t_train = 0.3
    t_val = 0.3 if mode != "learnable" else t_train
    got = float(loss(pred, target, _REPEATS).detach())
    assert got == pytest.approx(_np_info_nce(pred, target, t_train, _REPEATS), rel=1e-6)
    assert float(loss.validation_loss(pred, target, _REPEATS).detach()) == pytest.approx(
        _np_info_nce(pred, target, t_val, _REPEATS), rel=1e-6)
    # the repeats matter: counting them as negatives gives another number
    assert abs(got - _np_info_nce(pred, target, t_train)) > 1e-3
    assert float(loss(pred, target).detach()) == pytest.approx(_np_info_nce(pred, target, t_train), rel=1e-6)


@pytest.mark.parametrize("learnable", [False, True])
def test_clip_loss_module_counts_repeated_images_as_positives(pair, learnable):
    from neurodecode.models.losses import ClipLoss

    pred, target = pair
    loss = ClipLoss(0.2, learnable=learnable)
    t = loss.temperature
    assert t == pytest.approx(0.2, rel=1e-6)
    got = float(loss(pred, target, _REPEATS).detach())
    assert got == pytest.approx(_np_info_nce(pred, target, t, _REPEATS), rel=1e-6)
    assert abs(got - _np_info_nce(pred, target, t)) > 1e-3
    assert float(loss(pred, target).detach()) == pytest.approx(_np_info_nce(pred, target, t), rel=1e-6)
    if learnable:                                             # the temperature is trained through the loss
        loss(pred, target, _REPEATS).backward()
        assert loss.logit_scale.grad is not None and float(loss.logit_scale.grad) != 0.0


def test_clip_mse_weights_and_their_boundaries(pair):
    """ATM: ``w·InfoNCE(ids) + (1 − w)·MSE``; w = 0 (pure MSE) and w = 1 (pure CLIP) are accepted."""
    from neurodecode.models.losses import TrainingLoss

    pred, target = pair
    mse = float(((pred - target) ** 2).mean())
    for w in (0, 0.0, 0.25, 1, 1.0):
        loss = TrainingLoss("clip_mse", temperature=0.5, temperature_mode="fixed", clip_weight=w)
        assert loss.clip_weight == float(w)
        want = w * _np_info_nce(pred, target, 0.5, _REPEATS) + (1 - w) * mse
        assert float(loss(pred, target, _REPEATS)) == pytest.approx(want, rel=1e-6), w
    for bad in (-0.01, 1.01, float("nan"), True, "0.5", None):
        with pytest.raises(ValueError, match="clip_weight must be a number in"):
            TrainingLoss("clip_mse", clip_weight=bad)


def test_mindeye2_mixco_fraction_zero_means_no_bimixco_epoch(pair):
    """``mixco_fraction=0``: every epoch is SoftCLIP on the schedule, no perm / lambdas needed."""
    from neurodecode.models.losses import TrainingLoss

    pred, target = pair
    loss = TrainingLoss("mindeye2", mixco_fraction=0, n_epochs=4, temperature_schedule=(0.4, 0.1))
    assert loss.n_mixco_epochs == 0 and loss.mixco_fraction == 0.0
    for epoch in range(1, 5):
        loss.set_epoch(epoch)
        assert not loss.mixes_inputs
        assert float(loss(pred, target)) == pytest.approx(float(soft_clip(pred, target, loss.temperature)),
                                                          rel=1e-9)
    full = TrainingLoss("mindeye2", mixco_fraction=1, n_epochs=4)
    assert full.n_mixco_epochs == 4
    for bad in (-0.5, 1.5, float("inf"), False):
        with pytest.raises(ValueError, match="mixco_fraction must be a number in"):
            TrainingLoss("mindeye2", mixco_fraction=bad, n_epochs=4)
