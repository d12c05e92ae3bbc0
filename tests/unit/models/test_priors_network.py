"""dalle2's own ``DiffusionPriorNetwork`` prior (``prior="dalle2_network"``): MindEye1's 1×768 prior.

The reference is ``_published_numpy``'s ``network_prior`` / ``network_prior_sample``: an independent NumPy
transcription (float64) of dalle2-pytorch 1.14.2's ``DiffusionPriorNetwork.forward`` (learned null text
encodings, ``text_embed``, a learned time-embedding row, ``image_embed``, the learned query, a causal
``CausalTransformer`` with NormFormer feed-forwards, ``project_out``) and ``DiffusionPrior.p_sample_loop``
(DDIM / DDPM, then ÷ ``image_embed_scale``), run on a small configuration with random weights under the
original key names.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _published_numpy import cosine_schedule, ddim_times, network_prior, network_prior_sample, prior_sample

from neurodecode.models import BrainDecoder
from neurodecode.models.priors import DiffusionPriorNetworkPrior
from neurodecode.models.published.dalle2_prior import (
    NETWORK_PRIOR_DEFAULTS,
    infer_network_prior_config,
    map_network_prior,
    network_prior_keys,
    network_prior_kwargs,
)
from neurodecode.models.published.mapping import StateMapper
from neurodecode.models.registry import get_prior, list_priors

#: width 12 = 3 heads × 4, 10 diffusion steps, 5 null text encodings (sequence of 9 tokens)
SMALL = dict(dim=12, depth=2, heads=3, dim_head=4, timesteps=10, max_text_len=5, rotary_dim=4)


def _config(**overrides) -> dict:
    return {**NETWORK_PRIOR_DEFAULTS, **SMALL, **overrides}


def _original_state(seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    """Random weights under the original keys (matrices ``1 / √fan_in``, gains near 1); the cosine schedule
    and one set of rotary frequencies, as the original has them."""
    c = _config(**overrides)
    rng = np.random.default_rng(seed)
    sched = cosine_schedule(c["timesteps"])
    r = min(c["rotary_dim"], c["dim_head"])
    freqs = 1.0 / 10000 ** (np.arange(0, r, 2) / r)
    state = {}
    for key, shape in network_prior_keys("", **c).items():
        if key.startswith("noise_scheduler."):
            value = sched[key.split(".")[1]]
        elif key.endswith("rotary_emb.freqs"):
            value = freqs
        elif key.endswith(".g"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif key.endswith(".weight") and len(shape) == 2 and "causal_transformer.layers" in key:
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        else:
            value = 0.5 * rng.standard_normal(shape)
        state[key] = torch.tensor(value, dtype=torch.float32)
    return state


def _load(state: dict[str, torch.Tensor], **kwargs) -> DiffusionPriorNetworkPrior:
    config = infer_network_prior_config(state, "")
    prior = DiffusionPriorNetworkPrior(**{**network_prior_kwargs(config), **kwargs}).eval()
    m = StateMapper(state, "test")
    map_network_prior(m, "", "", config)
    m.load_into(prior)
    return prior


def _numpy(state):
    return {k: v.double().numpy() for k, v in state.items()}


def _ref(state, x, t, cond, **kwargs):
    c = infer_network_prior_config(state, "")
    return network_prior(_numpy(state), "", x, t, cond, depth=c["depth"], heads=c["heads"], **kwargs)


@pytest.fixture(scope="module")
def small():
    state = _original_state(0)
    return state, _load(state)


def _inputs(seed: int, batch: int = 2, dim: int = 12):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, dim)), rng.standard_normal((batch, dim))


def _diff(out: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.abs(out.double().numpy().reshape(ref.shape) - ref).max())


def test_the_configuration_is_inferred_and_the_prior_registered(small):
    state, prior = small
    assert infer_network_prior_config(state, "") == _config()
    assert "dalle2_network" in list_priors() and get_prior("dalle2_network") is DiffusionPriorNetworkPrior
    assert prior.width == 12 and prior.num_tokens == 1 and prior.image_embed_scale == math.sqrt(12)
    assert prior.rotary_freqs.shape == (2,) and prior.time_embed.weight.shape == (10, 12)
    assert prior.null_text_encodings.shape == (5, 12) and prior.null_cond.shape == (12,)
    assert prior.layers[0].ff.post_norm.weight.shape == (48,) and prior.layers[0].attn.causal is True
    # the original's tensors, one each, plus nothing (the rotary copies collapse into one buffer)
    n_original = sum(v.numel() for v in state.values())
    assert sum(v.numel() for v in prior.state_dict().values()) == n_original - (SMALL["depth"] - 1) * 2


@pytest.fixture
def float64_softmax(monkeypatch):
    """dalle2 takes the attention softmax in float32 whatever the dtype: lifted, a float64 model is exact."""
    softmax = torch.Tensor.softmax
    monkeypatch.setattr(torch.Tensor, "softmax", lambda self, dim, dtype=None: softmax(self, dim))


@pytest.mark.parametrize("t", [0, 4, 9])
def test_forward_matches_the_numpy_original(small, t):
    """float32: round-off of a cosine-similarity (× 16) attention, ≈ 4e-6 of the output scale."""
    state, prior = small
    x, cond = _inputs(t)
    ref = _ref(state, x, np.array([t, max(t - 1, 0)]), cond)
    with torch.no_grad():
        out = prior(torch.tensor(x[:, None], dtype=torch.float32), torch.tensor([t, max(t - 1, 0)]),
                    torch.tensor(cond[:, None], dtype=torch.float32))
    diff, scale = _diff(out, ref), float(np.abs(ref).max())
    print(f"dalle2_network forward (t={t}): max abs diff {diff:.2e} (scale {scale:.2f})")
    assert out.shape == (2, 1, 12) and diff < 1e-5 * scale


@pytest.mark.parametrize("t", [0, 4, 9])
def test_forward_in_float64_is_exact(small, t, float64_softmax):
    state, prior = small
    x, cond = _inputs(t)
    ref = _ref(state, x, np.array([t, max(t - 1, 0)]), cond, eps=1e-3)   # dalle2: eps 1e-3 if not float32
    prior64 = _load(state).double()
    with torch.no_grad():
        out = prior64(torch.tensor(x[:, None]), torch.tensor([t, max(t - 1, 0)]), torch.tensor(cond[:, None]))
    diff = _diff(out, ref)
    print(f"dalle2_network forward in float64 (t={t}): max abs diff {diff:.2e}")
    assert diff < 1e-12
    # the mask matters: the same weights without it give another answer
    assert float(np.abs(_ref(state, x, np.array([t, max(t - 1, 0)]), cond, causal=False) - ref).max()) > 1e-3


@pytest.mark.parametrize("options", [dict(normformer=False), dict(final_proj=False), dict(depth=0),
                                     dict(max_text_len=0)])
def test_the_other_network_options_match_numpy(options):
    state = _original_state(3, **options)
    prior = _load(state)
    x, cond = _inputs(4)
    ref = _ref(state, x, 6, cond)
    with torch.no_grad():
        out = prior(torch.tensor(x[:, None], dtype=torch.float32), 6, torch.tensor(cond[:, None],
                                                                                     dtype=torch.float32))
    assert _diff(out, ref) < 1e-5, options


def test_tokens_are_flattened_into_the_networks_vector(small):
    state, _ = small
    prior = _load(state, dim=6, num_tokens=2)
    x, cond = _inputs(5)
    ref = _ref(state, x, 2, cond)
    with torch.no_grad():
        out = prior(torch.tensor(x.reshape(2, 2, 6), dtype=torch.float32), 2,
                    torch.tensor(cond.reshape(2, 2, 6), dtype=torch.float32))
    assert out.shape == (2, 2, 6) and _diff(out, ref) < 1e-5 * np.abs(ref).max()
    with pytest.raises(ValueError, match=r"cond must have shape \(batch, 2, 6\)"):
        prior(torch.zeros(2, 2, 6), 2, torch.zeros(2, 1, 12))


def test_classifier_free_guidance_uses_the_null_embeddings(small):
    state, prior = small
    x, cond = _inputs(6)
    ref = _ref(state, x, 5, cond)
    null = _ref(state, x, 5, cond, drop_cond=True)
    with torch.no_grad():
        out = prior.predict_start(torch.tensor(x[:, None], dtype=torch.float32), 5,
                                  torch.tensor(cond[:, None], dtype=torch.float32), cond_scale=3.0)
    assert _diff(out, null + (ref - null) * 3.0) < 1e-4


@pytest.mark.parametrize("timesteps", [4, 10])
def test_a_short_sample_with_fixed_noise_matches_numpy(small, timesteps):
    """DDIM below the training steps (3 network calls), the full DDPM chain at them; ÷ √dim at the end."""
    state, prior = small
    rng = np.random.default_rng(7)
    cond = rng.standard_normal((2, 12))
    n_draws = (10 if timesteps == 10 else len(ddim_times(10, timesteps))) + 1
    noise = rng.standard_normal((n_draws, 2, 12))
    ref = network_prior_sample(_numpy(state), "", cond, noise, timesteps=timesteps, depth=2, heads=3)
    out = prior.sample(torch.tensor(cond[:, None], dtype=torch.float32), timesteps=timesteps,
                       noise=torch.tensor(noise[:, :, None], dtype=torch.float32))
    diff = _diff(out, ref)
    print(f"dalle2_network sample ({timesteps} of 10 steps): max abs diff {diff:.2e} "
          f"(scale {np.abs(ref).max():.2f})")
    assert out.shape == (2, 1, 12) and diff < 5e-5      # float32 round-off, carried through the chain


@pytest.mark.parametrize("timesteps", [4, 10])
def test_a_short_sample_in_float64_is_exact(small, timesteps, float64_softmax):
    state, _ = small
    prior = _load(state).double()
    rng = np.random.default_rng(9)
    cond = rng.standard_normal((2, 12))
    n_draws = (10 if timesteps == 10 else len(ddim_times(10, timesteps))) + 1
    noise = rng.standard_normal((n_draws, 2, 12))
    sd = _numpy(state)
    net = lambda x, t: network_prior(sd, "", x, t, cond, depth=2, heads=3, eps=1e-3)  # noqa: E731
    ref = prior_sample(sd, "", cond, noise, timesteps=timesteps, depth=2, heads=3, net=net) / math.sqrt(12)
    out = prior.sample(torch.tensor(cond[:, None]), timesteps=timesteps,
                       noise=torch.tensor(noise[:, :, None]))
    diff = _diff(out, ref)
    print(f"dalle2_network sample in float64 ({timesteps} of 10 steps): max abs diff {diff:.2e}")
    assert diff < 1e-12


def test_one_ddim_step_matches_numpy(small):
    state, prior = small
    rng = np.random.default_rng(8)
    x, cond, z = rng.standard_normal((3, 2, 12))
    sd, (t, t_next) = _numpy(state), (6, 3)
    x0 = _ref(state, x, t, cond)
    eps = (sd["noise_scheduler.sqrt_recip_alphas_cumprod"][t] * x - x0) \
        / sd["noise_scheduler.sqrt_recipm1_alphas_cumprod"][t]
    a, a_next = (sd["noise_scheduler.alphas_cumprod_prev"][i] for i in (t, t_next))
    c1 = math.sqrt((1 - a / a_next) * (1 - a_next) / (1 - a))
    ref = x0 * math.sqrt(a_next) + c1 * z + math.sqrt(1 - a_next - c1 ** 2) * eps
    f = lambda v: torch.tensor(v[:, None], dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = prior.ddim_step(f(x), t, t_next, f(cond), noise=f(z))
    diff = _diff(out, ref)
    print(f"dalle2_network DDIM step (6 → 3): max abs diff {diff:.2e} (scale {np.abs(ref).max():.2f})")
    assert diff < 1e-5 * max(1.0, np.abs(ref).max())


def test_generator_draws_are_the_noise_in_order(small):
    _, prior = small
    cond = torch.randn(2, 1, 12, generator=torch.Generator().manual_seed(0))
    a = prior.sample(cond, timesteps=10, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    drawn = torch.stack([torch.randn(cond.shape, generator=g) for _ in range(11)])   # x_T + 10 DDPM steps
    assert torch.equal(a, prior.sample(cond, timesteps=10, noise=drawn))


def test_the_l2norm_options(small):
    state, _ = small
    prior = _load(state, sampling_final_clamp_l2norm=True, image_embed_scale=2.0)
    out = prior.sample(torch.randn(3, 1, 12), timesteps=4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out.norm(dim=-1), torch.ones(3, 1), atol=1e-6)      # l2norm · scale / scale
    clamp = _load(state, sampling_clamp_l2norm=True)
    x, cond = torch.randn(2, 1, 12), torch.randn(2, 1, 12)
    with torch.no_grad():
        x0 = clamp.predict_start(x, 3, cond)
    assert torch.allclose(x0.norm(dim=-1), torch.full((2, 1), math.sqrt(12)), atol=1e-5)


def test_wrong_schedules_and_unequal_rotary_copies_are_refused(small):
    state, _ = small
    bad = {**state, "noise_scheduler.betas": state["noise_scheduler.betas"] * 1.5}
    with pytest.raises(ValueError, match=r"is not dalle2's 'cosine' schedule for timesteps=10"):
        _load(bad)
    key = "net.causal_transformer.layers.1.0.rotary_emb.freqs"
    with pytest.raises(ValueError, match=r"rotary frequencies .* differ between layer 0 and layers \[1\]"):
        _load({**state, key: state[key] + 1})


def test_the_full_size_nousr_key_list():
    keys = network_prior_keys("", **NETWORK_PRIOR_DEFAULTS)
    assert len(keys) == 13 + 6 + 12 * 11 + 2
    assert sum(math.prod(s) for s in keys.values()) == 101_907_208
    tr = "net.causal_transformer.layers.11."
    assert keys[tr + "1.3.g"] == (3072,) and keys[tr + "1.1.weight"] == (6144, 768)
    assert keys["net.to_time_embeds.0.weight"] == (1000, 768)
    assert keys["net.null_text_encodings"] == (1, 256, 768) and keys["noise_scheduler.betas"] == (1000,)
    prior = DiffusionPriorNetworkPrior(device="meta")
    assert sum(v.numel() for v in prior.state_dict().values()) == 101_907_208 - 11 * 16


def test_a_decoder_with_the_network_prior_saves_and_reloads(tmp_path):
    model = BrainDecoder({1: 9}, embed_dim=12, hidden_dim=8, n_blocks=1, seed=0, prior="dalle2_network",
                         prior_kwargs={"depth": 1, "heads": 3, "dim_head": 4, "timesteps": 6,
                                       "max_text_len": 2},
                         head_kwargs={"pooled": {"projector": True, "projector_tokens": 1}}).eval()
    assert type(model.prior) is DiffusionPriorNetworkPrior and model.prior.dim == 12
    x = torch.randn(3, 9)
    out = model.sample_prior(x, 1, timesteps=6, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(tmp_path)
    back = BrainDecoder.from_pretrained(tmp_path)
    assert torch.equal(back.sample_prior(x, 1, timesteps=6, generator=torch.Generator().manual_seed(0)), out)
