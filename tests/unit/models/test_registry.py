"""The part registries: live name views, loss construction by name, clean unregistering."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurodecode import config as config_mod
from neurodecode.models import BrainDecoder, TrainingLoss, build_loss, get_head, list_losses, register_loss
from neurodecode.models.decoder import BACKBONES, HEADS, OUTPUTS
from neurodecode.models.losses import TEMPERATURE_DEFAULTS, InfoNCELoss, MindEye2Loss, NormalizedMSELoss
from neurodecode.models.registry import LOSS_REGISTRY, PART_KINDS, get_part, list_parts
from neurodecode.training.trainer import LOSSES


def test_name_views_are_live_and_tuple_like():
    assert BACKBONES == ("mlp", "mixer", "dilated_conv", "atm", "mindeye2", "postnorm_mlp") and "atm" in BACKBONES
    assert tuple(HEADS) == ("pooled", "tokens", "lowlevel", "vae_decoder", "text") and OUTPUTS[-1] == "all"
    assert repr(LOSSES) == repr(tuple(list_losses()))

    @register_loss("unit_half_mse")
    class HalfMSE(nn.Module):
        temperature_defaults = None

        def __init__(self, n_epochs: int = 1) -> None:
            super().__init__()
            self.n_epochs = n_epochs

        def forward(self, pred, target, ids=None):
            return 0.5 * ((pred - target) ** 2).mean()

    try:
        assert "unit_half_mse" in LOSSES and "unit_half_mse" in list_parts("loss")
        cfg = config_mod.load_config(None, ["models.mlp.loss=unit_half_mse"])  # the registration is enough
        assert cfg.models.mlp.loss == "unit_half_mse"
        loss = build_loss("unit_half_mse", n_epochs=4, temperature_schedule=(0.1, 0.2))  # only what it takes
        assert isinstance(loss, HalfMSE) and loss.n_epochs == 4
        assert "unit_half_mse" not in TEMPERATURE_DEFAULTS
    finally:
        LOSS_REGISTRY.unregister("unit_half_mse")
    assert "unit_half_mse" not in LOSSES and "unit_half_mse" not in list_parts("loss")
    with pytest.raises(config_mod.ConfigError, match="unknown loss 'unit_half_mse'"):
        config_mod.load_config(None, ["models.mlp.loss=unit_half_mse"])


def test_parts_by_kind():
    assert list_parts("backbone") == list(BACKBONES) and get_part("head", "tokens") is get_head("tokens")
    assert PART_KINDS == ("adapter", "backbone", "head", "loss", "token_loss", "lowlevel_loss",
                          "prior")
    with pytest.raises(ValueError, match="unknown kind of model part 'decoder'"):
        list_parts("decoder")
    with pytest.raises(ValueError, match="unknown backbone 'mixr'. Did you mean 'mixer'"):
        get_part("backbone", "mixr")


def test_training_loss_by_name_is_the_registered_class():
    assert type(TrainingLoss("infonce")) is InfoNCELoss
    loss = TrainingLoss("mindeye2", n_epochs=9)
    assert type(loss) is MindEye2Loss and loss.name == "mindeye2" and loss.n_mixco_epochs == 2
    assert type(build_loss("mse")) is NormalizedMSELoss
    with pytest.raises(ValueError, match="has no temperature"):
        TrainingLoss("mse")
    with pytest.raises(ValueError, match="is the 'infonce' loss, not 'soft_clip'"):
        InfoNCELoss("soft_clip")
    with pytest.raises(ValueError, match="temperature"):
        build_loss("mse", temperature=0.1)


def test_subject_parameters_do_not_match_a_longer_key():
    model = BrainDecoder({"s1": 4 * 3, "s10": 5 * 3}, embed_dim=2, hidden_dim=4, backbone="dilated_conv",
                         n_times=3, n_blocks=1, backbone_kwargs={"hidden": 4}, seed=0)
    assert model.subject_parameter_names("s1") == ["adapter.weights.s1"]
    before = model.adapter.weights["s10"].detach().clone()
    model.reset_subject("s1", seed=1)
    assert torch.equal(model.adapter.weights["s10"], before)
