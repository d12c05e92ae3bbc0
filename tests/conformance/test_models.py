"""One suite for every registered model part: adapters × backbones × heads, and every loss.

The parametrisation reads the registries (``neurodecode.models.list_*``) when this module is collected, so a
part registered anywhere before that — in neurodecode, in a plugin, or below in this very file — is checked
by the same tests:

- models (every valid backbone × adapter pair, with every registered head; sequence backbones also
  time-resolved): output shapes with 1, 2 and 3 subjects of different input sizes, ``save_pretrained`` →
  ``from_pretrained`` gives identical outputs, two builds with one seed give identical weights and outputs
  (and another seed other weights), and one backward pass reaches every parameter — except those listed,
  with the reason, in ``NO_GRADIENT`` (a subject not in the batch, a zero-initialised up-projection);
- losses (training, token and low-level): a finite scalar, a finite non-zero gradient on the prediction,
  lower for matched than for shuffled pairs;
- names: unknown ones list the registered ones with the closest match, in the registries and in run configs.

``GatedMLP`` (backbone) and ``CosineEmbeddingLoss`` (loss) below are defined here with one registration line
each; ``test_a_part_defined_outside_neurodecode_*`` shows they work in BrainDecoder, a run config and a
Trainer epoch without touching a neurodecode file, ``test_the_registration_is_the_only_place_*`` that the
registration is the only place a part is named (a run config validates it against the registries and reads
its facts from the class), and the parametrised tests check them like the others.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurodecode import config as config_mod
from neurodecode.models import (
    BrainDecoder,
    build_loss,
    get_adapter,
    get_backbone,
    get_head,
    get_loss,
    get_lowlevel_loss,
    get_token_loss,
    list_adapters,
    list_backbones,
    list_heads,
    list_losses,
    list_lowlevel_losses,
    list_token_losses,
    register_backbone,
    register_loss,
)
from neurodecode.models.registry import (
    BACKBONE_REGISTRY,
    LOSS_REGISTRY,
    DecoderSpec,
    get_prior,
    list_priors,
    register_prior,
)


# -- a backbone and a loss defined outside neurodecode: one class + one registration line each -----------
@register_backbone("conformance_gated_mlp")
class GatedMLP(nn.Module):
    """``x + a · sigmoid(b)`` with ``(a, b) = Linear(LayerNorm(x))``: a vector backbone of our own."""

    input_kind = "vector"          # takes the (batch, hidden_dim) latent of the linear / pooled adapters
    default_adapter = "linear"     # used when BrainDecoder(adapter=None)

    @classmethod
    def from_decoder(cls, spec: DecoderSpec, in_features: int, **kwargs: Any) -> GatedMLP:
        return cls(spec.hidden_dim, device=spec.device, **kwargs)

    def __init__(self, dim: int, *, device: Any = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, device=device)
        self.gate = nn.Linear(dim, 2 * dim, device=device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        a, b = self.gate(self.norm(x)).chunk(2, dim=-1)
        return x + a * torch.sigmoid(b)


@register_loss("conformance_cosine")
class CosineEmbeddingLoss(nn.Module):
    """``1 − cos(pred, target)`` per row, averaged: a training loss of our own (no temperature)."""

    temperature_defaults = None

    def forward(self, pred: torch.Tensor, target: torch.Tensor, ids: Any = None) -> torch.Tensor:
        return (1.0 - F.cosine_similarity(pred, target, dim=1)).mean()


PLUGINS = {"backbone": "conformance_gated_mlp", "loss": "conformance_cosine"}


def _unregister_plugins() -> None:
    BACKBONE_REGISTRY.unregister(PLUGINS["backbone"])
    LOSS_REGISTRY.unregister(PLUGINS["loss"])


@pytest.fixture(scope="module", autouse=True)
def _plugins_registered_while_this_module_runs():
    """The parametrisation below is read with the plugins registered (at import); outside this module's
    tests the registries stay as neurodecode ships them, so other modules see only the built-in parts."""
    register_backbone(PLUGINS["backbone"])(GatedMLP)
    register_loss(PLUGINS["loss"])(CosineEmbeddingLoss)
    yield
    _unregister_plugins()


# -- tiny settings per part (a part without an entry is built with its defaults) -------------------------
N_TIMES, EMBED_DIM, HIDDEN = 16, 12, 16
TOKEN_SHAPE, LOWLEVEL_SHAPE = (3, 4), (2, 8, 8)
TINY: dict[tuple[str, str], dict[str, Any]] = {
    ("adapter", "pooled"): {"pool_size": 16, "rank": 4},
    ("adapter", "spatial_attention"): {"n_virtual": 6, "pos_dim": 32},
    ("backbone", "dilated_conv"): {"hidden": 8},
    ("backbone", "atm"): {"d_model": 20, "n_heads": 2, "d_ff": 8, "n_filters": 4, "conv_kernel": 5,
                          "pool_size": 4, "pool_stride": 2},
    ("head", "tokens"): {"rank": 4},
    ("head", "lowlevel"): {"base_channels": 8},
}
#: Parameters a backbone pass legitimately leaves without gradient, per part, with the reason.
NO_GRADIENT: dict[tuple[str, str], tuple[str, str]] = {
    ("adapter", "pooled"): (
        "lora.down.", "the low-rank bottleneck's up-projection is zero-initialised (it starts as the identity), "
        "so the down-projection's gradient is exactly zero until the up-projection has moved"),
}
#: Per subject: voxels (vector input) or channels (sequence input); all different.
SIZES = {"s1": 13, "s2": 7, "s3": 10}


def _tiny(kind: str, name: str) -> dict[str, Any]:
    cls = {"adapter": get_adapter, "backbone": get_backbone, "head": get_head}[kind](name)
    return dict(TINY.get((kind, name), getattr(cls, "conformance_kwargs", {})))


def _combos() -> list[tuple[str, str, bool]]:
    """Every (backbone, adapter, time_resolved) a BrainDecoder accepts, read from the registries."""
    out = []
    for backbone in list_backbones():
        kind = get_backbone(backbone).input_kind
        for adapter in list_adapters():
            if get_adapter(adapter).output_kind == kind:
                out.append((backbone, adapter, False))
                if kind == "sequence":
                    out.append((backbone, adapter, True))
    return out


COMBOS = _combos()
IDS = [f"{b}-{a}{'-time_resolved' if t else ''}" for b, a, t in COMBOS]


def _build(backbone: str, adapter: str, time_resolved: bool, subjects=("s1", "s2"), seed: int | None = 0,
           **overrides: Any) -> BrainDecoder:
    sequence = get_backbone(backbone).input_kind == "sequence"
    heads = [h for h in list_heads() if not time_resolved or getattr(get_head(h), "time_resolved", False)]
    a_kw = _tiny("adapter", adapter)
    if getattr(get_adapter(adapter), "uses_positions", False):
        a_kw["positions"] = {s: np.random.default_rng(i).random((SIZES[s], 2)) for i, s in enumerate(subjects)}
    kw = dict(n_inputs={s: SIZES[s] * (N_TIMES if sequence else 1) for s in subjects}, embed_dim=EMBED_DIM,
              hidden_dim=HIDDEN, n_blocks=2, dropout=0.1, backbone=backbone, adapter=adapter, heads=heads,
              seed=seed, token_shape=TOKEN_SHAPE, lowlevel_shape=LOWLEVEL_SHAPE,
              n_times=N_TIMES if sequence else None, embed_shape=(2, EMBED_DIM // 2) if time_resolved else None,
              adapter_kwargs=a_kw, backbone_kwargs=_tiny("backbone", backbone),
              head_kwargs={h: _tiny("head", h) for h in heads if _tiny("head", h)})
    return BrainDecoder(**{**kw, **overrides})


def _x(model: BrainDecoder, subject: str, n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, model.n_inputs[subject], generator=g)


def _outputs(model: BrainDecoder, subject: str, generator: torch.Generator | None = None
             ) -> dict[str, torch.Tensor]:
    return model(_x(model, subject), subject, generator=generator).outputs


# -- models ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_subjects", [1, 2, 3])
@pytest.mark.parametrize(("backbone", "adapter", "time_resolved"), COMBOS, ids=IDS)
def test_output_shapes_with_any_subject_count(backbone, adapter, time_resolved, n_subjects):
    subjects = list(SIZES)[:n_subjects]
    model = _build(backbone, adapter, time_resolved, subjects=subjects).eval()
    assert model.subjects == subjects
    for s in subjects:
        out = model(_x(model, s), s)
        assert set(out.outputs) == set(model.heads) and out.embedding is out.outputs["pooled"]
        for name, head in model.heads.items():
            assert tuple(out.outputs[name].shape) == (4, *head.out_shape), (name, s)
            assert torch.isfinite(out.outputs[name]).all()
        assert out.embedding.shape == (4, EMBED_DIM)
        if "tokens" in model.heads:
            assert out.tokens.shape == (4, *TOKEN_SHAPE)
        if "lowlevel" in model.heads:
            assert out.lowlevel.shape == (4, *LOWLEVEL_SHAPE)


@pytest.mark.parametrize(("backbone", "adapter", "time_resolved"), COMBOS, ids=IDS)
def test_save_load_gives_identical_outputs(backbone, adapter, time_resolved, tmp_path):
    model = _build(backbone, adapter, time_resolved, subjects=list(SIZES)).eval()
    model.save_pretrained(tmp_path)
    back = BrainDecoder.from_pretrained(tmp_path)
    assert back.config == model.config
    assert list(back.state_dict()) == list(model.state_dict())
    for s in SIZES:
        a, b = _outputs(model, s), _outputs(back, s)
        for name in a:
            assert torch.equal(a[name], b[name]), (name, s)


@pytest.mark.parametrize(("backbone", "adapter", "time_resolved"), COMBOS, ids=IDS)
def test_deterministic_given_a_seed(backbone, adapter, time_resolved):
    one, two = (_build(backbone, adapter, time_resolved, seed=7) for _ in range(2))
    s1, s2 = one.state_dict(), two.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    other = _build(backbone, adapter, time_resolved, seed=8).state_dict()
    assert any(not torch.equal(s1[k], other[k]) for k in s1 if s1[k].is_floating_point())
    one.train(), two.train()  # dropout masks from the generator given to forward
    a = _outputs(one, "s1", torch.Generator().manual_seed(3))
    b = _outputs(two, "s1", torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _backward(model: BrainDecoder, subjects: list[str]) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(0)
    loss = 0.0
    for s in subjects:
        for out in _outputs(model, s, g).values():
            # squared distance to a random target: a plain sum would give LayerNorm-ed outputs no gradient
            loss = loss + ((out - torch.randn(out.shape, generator=g)) ** 2).mean()
    loss.backward()


def _without_gradient(model: BrainDecoder, adapter: str, backbone: str, absent: list[str]) -> dict[str, str]:
    """Parameter name → why one backward pass leaves it without gradient (every other must get one)."""
    why = {}
    for s in absent:
        for name in model.subject_parameter_names(s):
            why[name] = f"subject {s} is not in the batch: its own adapter weights get no gradient"
    for kind, part in (("adapter", adapter), ("backbone", backbone)):
        if (kind, part) in NO_GRADIENT:
            pattern, reason = NO_GRADIENT[(kind, part)]
            why.update({n: reason for n, _ in model.named_parameters() if pattern in n and n not in why})
    return why


@pytest.mark.parametrize("batch", ["all_subjects", "one_subject"])
@pytest.mark.parametrize(("backbone", "adapter", "time_resolved"), COMBOS, ids=IDS)
def test_gradients_reach_every_parameter(backbone, adapter, time_resolved, batch):
    model = _build(backbone, adapter, time_resolved, subjects=list(SIZES))
    present = list(SIZES) if batch == "all_subjects" else ["s1"]
    _backward(model, present)
    why = _without_gradient(model, adapter, backbone, [s for s in SIZES if s not in present])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in why:  # the expected exception, stated per case
            assert p.grad is None or not p.grad.any(), f"{name}: expected no gradient ({why[name]})"
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.any(), f"{name} has an all-zero gradient"


def test_the_suite_covers_every_registered_part():
    """Every registered backbone, adapter and head is in some parametrised case (the plugins included)."""
    assert {b for b, _, _ in COMBOS} == set(list_backbones())
    assert {a for _, a, _ in COMBOS} == set(list_adapters())
    assert PLUGINS["backbone"] in {b for b, _, _ in COMBOS}
    model = _build(*COMBOS[0])
    assert list(model.heads) == list_heads()
    assert PLUGINS["loss"] in LOSS_CASES


# -- losses ----------------------------------------------------------------------------------------------
LOSS_CASES = list_losses()
HEAD_LOSS_CASES = [("token", n) for n in list_token_losses()] + [("lowlevel", n) for n in list_lowlevel_losses()]
_unregister_plugins()  # collected; the fixture above registers them again while this module's tests run


def _pairs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(shape, generator=g)
    if len(shape) == 2:
        target = F.normalize(target, dim=1)  # the Trainer normalises pooled targets
    pred = (target + 0.05 * torch.randn(shape, generator=g)).requires_grad_(True)
    return pred, target


def _check_loss(fn, pred: torch.Tensor, target: torch.Tensor, **kw: Any) -> None:
    loss = fn(pred, target, **kw)
    assert loss.ndim == 0 and torch.isfinite(loss), loss
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(grad).all() and grad.any()
    shuffled = target[torch.roll(torch.arange(len(target)), 1)]
    assert float(fn(pred, shuffled, **kw).detach()) > float(loss.detach()), \
        "matched pairs must score lower than shuffled ones"


@pytest.mark.parametrize("name", LOSS_CASES)
def test_training_loss(name):
    loss_fn = build_loss(name, n_epochs=3)
    if getattr(loss_fn, "mixes_inputs", False):  # a BiMixCo epoch needs mixed inputs: check the plain phase
        loss_fn.set_epoch(loss_fn.n_epochs)
    pred, target = _pairs((16, 8))
    _check_loss(loss_fn, pred, target, ids=torch.arange(16))
    temperature = getattr(get_loss(name), "temperature_defaults", None)
    if temperature is None:
        with pytest.raises(ValueError, match="temperature"):
            build_loss(name, temperature=0.1)


@pytest.mark.parametrize(("head", "name"), HEAD_LOSS_CASES, ids=[f"{h}-{n}" for h, n in HEAD_LOSS_CASES])
def test_head_loss(head, name):
    fn = get_token_loss(name) if head == "token" else get_lowlevel_loss(name)
    pred, target = _pairs((6, *(TOKEN_SHAPE if head == "token" else LOWLEVEL_SHAPE)))
    _check_loss(fn, pred, target)


# -- names: errors, and the registration as the only place a part is named -----------------------------------
@pytest.mark.parametrize(("get", "typo", "right"), [(get_backbone, "mixr", "mixer"), (get_adapter, "linar", "linear"),
                                                    (get_head, "token", "tokens"), (get_loss, "infonc", "infonce")])
def test_unknown_names_list_the_registered_ones(get, typo, right):
    with pytest.raises(ValueError, match=f"Did you mean {right!r}.*Registered"):
        get(typo)


def test_unknown_names_in_the_decoder_config_and_trainer():
    with pytest.raises(ValueError, match="unknown backbone 'mpl'. Did you mean 'mlp'"):
        BrainDecoder({1: 4}, embed_dim=2, backbone="mpl")
    with pytest.raises(ValueError, match="unknown head 'lowlvl'. Did you mean 'lowlevel'"):
        BrainDecoder({1: 4}, embed_dim=2, heads=("pooled", "lowlvl"))
    with pytest.raises(config_mod.ConfigError, match="unknown adapter 'pool'. Did you mean 'pooled'"):
        config_mod.load_config(None, ["models.mlp.adapter=pool"])
    with pytest.raises(config_mod.ConfigError, match="unknown low-level loss 'l2'"):
        config_mod.load_config(None, ["models.mlp.lowlevel_loss=l2"])
    with pytest.raises(ValueError, match="unknown loss 'soft'"):
        build_loss("soft")


def test_the_registration_is_the_only_place_a_part_is_named():
    """No catalogue: unregistered, a run config refuses the plugin names; the one registration call each,
    with nothing declared anywhere else, makes them valid, and the config's checks read the class."""
    _unregister_plugins()
    try:
        with pytest.raises(config_mod.ConfigError, match="unknown backbone 'conformance_gated_mlp'"):
            config_mod.load_config(None, [f"models.mlp.backbone={PLUGINS['backbone']}"])
        with pytest.raises(config_mod.ConfigError, match="unknown loss 'conformance_cosine'"):
            config_mod.load_config(None, [f"models.mlp.loss={PLUGINS['loss']}"])
    finally:
        register_backbone(PLUGINS["backbone"])(GatedMLP)     # the registration lines, again
        register_loss(PLUGINS["loss"])(CosineEmbeddingLoss)
    cfg = config_mod.load_config(None, [f"models.mlp.backbone={PLUGINS['backbone']}",
                                        f"models.mlp.loss={PLUGINS['loss']}"])
    assert (cfg.models.mlp.backbone, cfg.models.mlp.loss) == (PLUGINS["backbone"], PLUGINS["loss"])
    # GatedMLP.input_kind = "vector": the config refuses it for M/EEG data and names the fitting parts
    with pytest.raises(config_mod.ConfigError, match="backbone='conformance_gated_mlp' does not fit eeg data"
                       ".*backbone dilated_conv or atm"):
        config_mod.load_config(None, ["data.dataset=things_eeg2", "models.mlp.adapter=subject_layer",
                                      f"models.mlp.backbone={PLUGINS['backbone']}"])
    # a loss's temperature defaults are read from its class
    register_loss("conformance_warm")(type("WarmLoss", (CosineEmbeddingLoss,),
                                           {"temperature_defaults": (0.5, "fixed", ("fixed",))}))
    try:
        warm = ["models.mlp.loss=conformance_warm"]
        assert config_mod.load_config(None, [*warm, "models.mlp.temperature=0.2"])
        with pytest.raises(config_mod.ConfigError, match="temperature_mode='learnable' is not available"):
            config_mod.load_config(None, [*warm, "models.mlp.temperature_mode=learnable"])
    finally:
        LOSS_REGISTRY.unregister("conformance_warm")


def test_a_loss_with_malformed_temperature_defaults_is_refused():
    bad = type("BadLoss", (CosineEmbeddingLoss,), {"temperature_defaults": (0.5, "learnable", ("fixed",))})
    with pytest.raises(TypeError, match="temperature_defaults"):
        register_loss("conformance_bad_temperature")(bad)
    assert "conformance_bad_temperature" not in list_losses()


def test_registering_twice_needs_replace():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("mlp")(GatedMLP)
    with pytest.raises(TypeError, match="lacks"):
        register_backbone("conformance_incomplete")(type("Incomplete", (nn.Module,), {"input_kind": "vector"}))
    assert "conformance_incomplete" not in list_backbones()


# -- a part defined in this file works end to end ----------------------------------------------------------
def _planted(n_stim: int = 24, dim: int = 8, sizes=(("a", 20), ("b", 14)), seed: int = 0):
    from neurodecode.datasets import BrainTrials
    from neurodecode.embeddings import StimulusEmbeddings

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n_stim, dim)).astype(np.float32)
    parts = []
    for subject, p in sizes:
        ids = np.tile(np.arange(n_stim), 3)
        X = emb[ids] @ rng.standard_normal((dim, p)).astype(np.float32)
        X += 0.3 * rng.standard_normal(X.shape).astype(np.float32)
        ev = pd.DataFrame(dict(subject=subject, session=1, stimulus_id=ids, repetition=0, split="train"))
        parts.append(BrainTrials(X, ev, {"modality": "fmri"}))
    return BrainTrials.concatenate(parts), StimulusEmbeddings(np.arange(n_stim), emb)


def test_a_part_defined_outside_neurodecode_works_in_config_decoder_and_trainer(tmp_path):
    from neurodecode.training import Trainer

    cfg = config_mod.load_config(None, [f"models.mlp.backbone={PLUGINS['backbone']}",
                                        f"models.mlp.loss={PLUGINS['loss']}"])
    mc = cfg.models.mlp
    assert (mc.backbone, mc.loss) == (PLUGINS["backbone"], PLUGINS["loss"])
    with pytest.raises(config_mod.ConfigError, match="does not apply"):  # the loss has no temperature
        config_mod.load_config(None, [f"models.mlp.loss={PLUGINS['loss']}", "models.mlp.temperature=0.1"])
    trials, targets = _planted()
    sizes = {s: int(np.prod(t.feature_shape)) for s, t in trials.by_subject().items()}
    model = BrainDecoder(sizes, embed_dim=8, hidden_dim=16, backbone=mc.backbone, seed=0)
    assert isinstance(model.backbone, GatedMLP) and model.config["adapter"] == "linear"
    before = copy.deepcopy(model.state_dict())
    trainer = Trainer(model, loss=mc.loss, max_epochs=1, batch_size=16, seed=0, val_fraction=0.0)
    trainer.fit(trials, targets)
    assert isinstance(trainer.loss_fn_, CosineEmbeddingLoss)
    assert len(trainer.history_) == 1 and np.isfinite(trainer.history_[0]["train_loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.save_pretrained(tmp_path)
    back = BrainDecoder.from_pretrained(tmp_path)
    x = torch.randn(3, sizes["a"])
    assert torch.equal(back(x, "a").embedding, model.eval()(x, "a").embedding)


# -- priors (a diffusion prior over the pooled head's tokens: BrainDecoder(prior=...)) --------------------
#: Tiny arguments per registered prior (a prior class may carry ``conformance_kwargs`` instead).
PRIOR_TINY: dict[str, dict[str, Any]] = {"dalle2": {"depth": 1, "heads": 2, "dim_head": 4, "timesteps": 4}}


def _with_prior(name: str, seed: int = 0) -> BrainDecoder:
    kwargs = PRIOR_TINY.get(name, getattr(get_prior(name), "conformance_kwargs", {}))
    return BrainDecoder({1: 9, 2: 5}, embed_dim=24, hidden_dim=8, n_blocks=1, seed=seed, prior=name,
                        prior_kwargs=kwargs,
                        head_kwargs={"pooled": {"projector": True, "projector_tokens": 3}}).eval()


@pytest.mark.parametrize("name", list_priors())
def test_every_prior_samples_saves_reloads_and_is_seeded(name, tmp_path):
    model = _with_prior(name)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    out = model.sample_prior(x, 2, timesteps=3, generator=torch.Generator().manual_seed(1))
    assert out.shape == (4, 3, 8) and torch.isfinite(out).all()
    model.save_pretrained(tmp_path)
    back = BrainDecoder.from_pretrained(tmp_path)
    assert torch.equal(back.sample_prior(x, 2, timesteps=3, generator=torch.Generator().manual_seed(1)), out)
    same, other = _with_prior(name), _with_prior(name, seed=1)
    own = model.prior.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in same.prior.state_dict().items())
    assert any(not torch.equal(v, own[k]) for k, v in other.prior.state_dict().items())


def test_a_prior_without_sample_is_refused():
    incomplete = type("NoSample", (nn.Module,), {"from_decoder": classmethod(lambda cls, spec, **kw: cls())})
    with pytest.raises(TypeError, match=r"lacks \['sample'\]"):
        register_prior("conformance_no_sample")(incomplete)
    assert "conformance_no_sample" not in list_priors()
