"""The ``dalle2`` diffusion prior (MindEye1/2's ``PriorNetwork`` + DALLE2-pytorch samplers) against NumPy.

The reference (``_published_numpy``: ``prior_network``, ``prior_sample``, ``cosine_schedule``) is an
independent float64 transcription of the originals, written from their code: the time sinusoid and MLP, the
token order ``[brain, time, noisy + learned query]``, T5 relative-position buckets with the null-key column,
rotary embeddings on adjacent pairs of the first ``min(32, dim_head)`` features, the null key/value prepended
un-rotated, cosine-similarity attention at scale 16, the SwiGLU feed-forward, the stable LayerNorm's signed
maximum, dalle2's cosine schedule and its DDIM / DDPM loops. It runs on the small configuration of the
research note (§9: dim 12, 3 heads × 4, 3 tokens, T = 10) with random weights under the original key names,
placed by the published mapper (:func:`~neurodecode.models.published.dalle2_prior.map_prior`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _published_numpy import (
    cosine_schedule,
    dalle2_layer_norm,
    ddim_times,
    prior_network,
    prior_sample,
    rel_pos_bucket,
)

from neurodecode.models import BrainDecoder
from neurodecode.models.priors import SCHEDULE_BUFFERS, DiffusionPrior, noise_schedule
from neurodecode.models.published.dalle2_prior import (
    PRIOR_DEFAULTS,
    infer_prior_config,
    map_prior,
    prior_keys,
    prior_kwargs,
)
from neurodecode.models.published.mapping import StateMapper
from neurodecode.models.registry import get_part, get_prior, list_priors

SMALL = dict(dim=12, depth=2, heads=3, dim_head=4, num_tokens=3, timesteps=10, rotary_dim=32)


def _config(**overrides) -> dict:
    return {**PRIOR_DEFAULTS, **SMALL, **overrides}


def _original_state(seed: int = 0, prefix: str = "", scale: float = 1.0,
                    **overrides) -> dict[str, torch.Tensor]:
    """Random weights under the original keys (matrices ``scale / √fan_in``); the schedule and the rotary
    frequencies as the original has them."""
    c = _config(**overrides)
    rng = np.random.default_rng(seed)
    sched = cosine_schedule(c["timesteps"])
    r = min(c["rotary_dim"], c["dim_head"])
    freqs = 1.0 / 10000 ** (np.arange(0, r, 2) / r)
    state = {}
    for key, shape in prior_keys(prefix, **{k: c[k] for k in PRIOR_DEFAULTS}).items():
        name = key[len(prefix):]
        if name.startswith("noise_scheduler."):
            value = sched[name.split(".")[1]]
        elif name.endswith("rotary_emb.freqs"):
            value = freqs
        elif name.endswith(".g"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif len(shape) == 2 and name.endswith(".weight") and "relative_attention_bias" not in name:
            gain = scale if "to_time_embeds" not in name else 1.0
            value = rng.standard_normal(shape) * gain / np.sqrt(shape[1])
        else:
            value = 0.5 * rng.standard_normal(shape)
        state[key] = torch.tensor(value, dtype=torch.float32)
    return state


def _load(state: dict[str, torch.Tensor], prefix: str = "", **kwargs) -> DiffusionPrior:
    config = {**infer_prior_config(state, prefix), **{k: v for k, v in kwargs.items() if k in PRIOR_DEFAULTS}}
    prior = DiffusionPrior(**{**prior_kwargs(config), **kwargs}).eval()
    m = StateMapper(state, "test")
    map_prior(m, prefix, "", config)
    m.load_into(prior)
    return prior


def _numpy(state):
    return {k: v.double().numpy() for k, v in state.items()}


@pytest.fixture(scope="module")
def small():
    state = _original_state(0)
    return state, _load(state)


def _inputs(seed: int, batch: int = 2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 3, 12)), rng.standard_normal((batch, 3, 12)))


def test_the_small_configuration_is_inferred_and_registered(small):
    state, prior = small
    assert infer_prior_config(state, "") == _config(rotary_dim=4)    # min(32, dim_head) = 4: freqs [2]
    assert prior.rotary_freqs.shape == (2,) and prior.rotary_dim == 4
    assert get_prior("dalle2") is DiffusionPrior and get_part("prior", "dalle2") is DiffusionPrior
    assert "dalle2" in list_priors()
    full = prior_keys("diffusion_prior.", **PRIOR_DEFAULTS)
    assert len(full) == 13 + 3 + 6 + 1 + 6 * 10 + 2
    assert sum(int(np.prod(s)) for s in full.values()) == 259_866_596


@pytest.mark.parametrize("t", [[0, 9], [4, 4], [7, 1]])
def test_forward_matches_the_numpy_original(small, t):
    state, prior = small
    x, cond = _inputs(sum(t))
    ref = prior_network(_numpy(state), "", x, np.array(t), cond, depth=2, heads=3)
    with torch.no_grad():
        out = prior(torch.from_numpy(x).float(), torch.tensor(t), torch.from_numpy(cond).float())
    diff = float(np.abs(out.double().numpy() - ref).max())
    print(f"prior network, t={t}: max abs diff {diff:.2e} (output scale {np.abs(ref).max():.2f})")
    assert out.shape == (2, 3, 12) and diff < 1e-5


def test_other_dtypes_use_the_fp16_eps(small):
    """dalle2's LayerNorm takes eps 1e-3 for any input that is not float32 (float64 here), else 1e-5."""
    state, prior = small
    x, cond = _inputs(3)
    sd = _numpy(state)
    ref_fp16_eps = prior_network(sd, "", x, np.array([5, 2]), cond, depth=2, heads=3, eps=1e-3)
    ref_fp32_eps = prior_network(sd, "", x, np.array([5, 2]), cond, depth=2, heads=3, eps=1e-5)
    double = _load(state).double()
    with torch.no_grad():
        out = double(torch.from_numpy(x), torch.tensor([5, 2]), torch.from_numpy(cond)).numpy()
    diff, other = float(np.abs(out - ref_fp16_eps).max()), float(np.abs(out - ref_fp32_eps).max())
    print(f"prior network, float64: max abs diff {diff:.2e} to the eps=1e-3 reference, {other:.2e} to 1e-5")
    assert diff < 1e-5 and other > 100 * diff        # (the softmax runs in float32 whatever the dtype)


def test_the_stable_layer_norm_divides_by_the_signed_maximum(small):
    _, prior = small
    x = -torch.rand(2, 5, 12, generator=torch.Generator().manual_seed(0)) - 0.5       # every maximum < 0
    g = prior.norm.weight.detach().double().numpy()
    with torch.no_grad():
        out = prior.norm(x).double().numpy()
    assert np.abs(out - dalle2_layer_norm(x.double().numpy(), g, stable=True)).max() < 1e-5
    flipped = dalle2_layer_norm(x.double().numpy() / np.abs(x.double().numpy()).max(-1, keepdims=True), g)
    assert np.abs(out - flipped).max() > 0.1                       # not the unsigned (abs) maximum


def test_relative_position_buckets_at_the_published_length(small):
    """513 tokens (MindEye2: 256 + 1 + 256) over 514 key columns: bucket table against the T5 formula."""
    _, prior = small
    other = DiffusionPrior(**{**prior_kwargs(_config()), "heads": 3})
    with torch.no_grad():
        other.rel_pos_bias.copy_(torch.arange(32.0)[:, None].expand(32, 3))
        bias = other.attention_bias(513)
    assert bias.shape == (3, 513, 514)
    ref = np.array([[rel_pos_bucket(max(i - j, 0)) for j in range(514)] for i in range(513)])
    assert np.array_equal(bias[1].numpy(), ref) and ref.max() == 31 and ref[100, 0] == rel_pos_bucket(100)


def test_learned_query_modes_token_and_all_pos_emb():
    for mode, n_query in (("token", 3), ("all_pos_emb", 7)):
        state = _original_state(4)
        state["net.learned_query"] = torch.tensor(
            0.5 * np.random.default_rng(1).standard_normal((n_query, 12)), dtype=torch.float32)
        prior = _load(state, learned_query_mode=mode, num_tokens=3)
        x, cond = _inputs(6)
        ref = prior_network(_numpy(state), "", x, np.array([3, 8]), cond, depth=2, heads=3, mode=mode)
        with torch.no_grad():
            out = prior(torch.from_numpy(x).float(), torch.tensor([3, 8]), torch.from_numpy(cond).float())
        assert np.abs(out.double().numpy() - ref).max() < 1e-5, mode


def test_schedule_buffers_match_a_numpy_cosine_schedule(small):
    _, prior = small
    for steps, buffers in ((10, {n: getattr(prior.schedule, n) for n in SCHEDULE_BUFFERS}),
                           (100, noise_schedule("cosine", 100))):
        ref = cosine_schedule(steps)
        assert list(buffers) == list(SCHEDULE_BUFFERS)
        for name, value in buffers.items():
            assert value.dtype == torch.float32 and value.shape == (steps,)
            np.testing.assert_allclose(value.double().numpy(), ref[name], rtol=1e-6, atol=1e-12, err_msg=name)
    assert float(noise_schedule("cosine", 100)["betas"][-1]) == pytest.approx(0.999)


def test_sampling_times_are_dalle2s():
    prior = DiffusionPrior(**prior_kwargs(_config(timesteps=100)))
    pairs = prior.sampling_times(20)                   # MindEye2: p_sample_loop(..., timesteps=20)
    assert len(pairs) == 19 and pairs[0] == (94, 89) and pairs[-1] == (4, -1)
    assert pairs == ddim_times(100, 20) and [p[0] for p in pairs[:6]] == [94, 89, 84, 79, 74, 69]
    assert prior.sampling_times(100) == [(t, t - 1) for t in range(99, -1, -1)]
    with pytest.raises(ValueError, match="at most the prior's 100"):
        prior.sampling_times(101)


@pytest.mark.parametrize(("t", "t_next"), [(6, 2), (1, 0), (2, -1)])
def test_one_ddim_step_matches_numpy(small, t, t_next):
    state, prior = small
    x, cond = _inputs(7)
    z = np.random.default_rng(8).standard_normal(x.shape)
    sd = _numpy(state)
    x0 = prior_network(sd, "", x, np.array([t, t]), cond, depth=2, heads=3)
    acp, prev = cosine_schedule(10)["alphas_cumprod"], cosine_schedule(10)["alphas_cumprod_prev"]
    eps = (x / np.sqrt(acp[t]) - x0) / np.sqrt(1 / acp[t] - 1)
    if t_next < 0:
        ref = x0
    else:
        a, a2 = prev[t], prev[t_next]
        c1 = np.sqrt((1 - a / a2) * (1 - a2) / (1 - a))
        ref = x0 * np.sqrt(a2) + c1 * (z if t_next > 0 else 0) + np.sqrt(1 - a2 - c1 ** 2) * eps
    with torch.no_grad():
        out = prior.ddim_step(torch.from_numpy(x).float(), t, t_next, torch.from_numpy(cond).float(),
                              noise=torch.from_numpy(z).float())
    diff = float(np.abs(out.double().numpy() - ref).max())
    print(f"DDIM step {t} → {t_next}: max abs diff {diff:.2e}")
    assert diff < 1e-5


@pytest.mark.parametrize("timesteps", [3, 9, 10])
def test_a_full_sample_with_fixed_noise_matches_numpy(timesteps):
    """3: DDIM (6 → 2 → x₀); 9: DDIM through t_next = 0 (no noise there); 10: the DDPM chain.

    Weights at a quarter of the fan-in scale: with full-scale random weights this small network is chaotic
    (each call agrees to ~1e-6, but float32 round-off grows step by step, up to ~1e-2 after 10 DDPM steps);
    the next test checks the loop itself to round-off at full scale.
    """
    state = _original_state(0, scale=0.25)
    prior = _load(state)
    _, cond = _inputs(9)
    n_draws = len(prior.sampling_times(timesteps)) + 1
    noise = np.random.default_rng(10).standard_normal((n_draws, 2, 3, 12))
    ref = prior_sample(_numpy(state), "", cond, noise, timesteps=timesteps, depth=2, heads=3)
    out = prior.sample(torch.from_numpy(cond).float(), timesteps=timesteps,
                       noise=torch.from_numpy(noise).float())
    diff = float(np.abs(out.double().numpy() - ref).max())
    print(f"{timesteps}-step sample: max abs diff {diff:.2e} (output scale {np.abs(ref).max():.2f})")
    assert diff < 1e-5


@pytest.mark.parametrize("timesteps", [3, 9, 10])
def test_the_sampling_loop_matches_numpy_to_round_off(small, timesteps):
    """The NumPy DDIM / DDPM loop around the float64 network equals the model's float64 sample."""
    state, _ = small
    prior = _load(state).double()
    _, cond = _inputs(9)
    noise = np.random.default_rng(10).standard_normal((len(prior.sampling_times(timesteps)) + 1, 2, 3, 12))
    c = torch.from_numpy(cond)

    def net(x, t):
        with torch.no_grad():
            return prior(torch.from_numpy(np.ascontiguousarray(x)), int(t), c).numpy()

    sd = {k: (v.double().numpy() if k.startswith("noise_scheduler.") else v) for k, v in state.items()}
    ref = prior_sample(sd, "", cond, noise, timesteps=timesteps, depth=2, heads=3, net=net)
    out = prior.sample(c, timesteps=timesteps, noise=torch.from_numpy(noise)).numpy()
    print(f"{timesteps}-step loop, float64: max abs diff {np.abs(out - ref).max():.2e}")
    assert np.abs(out - ref).max() < 1e-10


def test_generator_draws_are_the_noise_in_order(small):
    _, prior = small
    cond = torch.from_numpy(_inputs(11)[1]).float()
    a = prior.sample(cond, timesteps=3, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    draws = [torch.randn(cond.shape, generator=g) for _ in range(2)]      # x_T, step (6, 2); none at (2, -1)
    b = prior.sample(cond, timesteps=3, noise=torch.stack([*draws, torch.full(cond.shape, float("nan"))]))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="noise must hold 3 draws"):
        prior.sample(cond, timesteps=3, noise=torch.stack(draws))


def test_classifier_free_guidance_uses_the_null_embeddings(small):
    _, prior = small
    x, cond = (torch.from_numpy(v).float() for v in _inputs(12))
    with torch.no_grad():
        null = prior(x, 3, cond, drop_cond=True)
        same = prior(prior.null_input[None].expand_as(x), 3, prior.null_cond[None].expand_as(cond))
        pred = prior(x, 3, cond)
        guided = prior.predict_start(x, 3, cond, cond_scale=3.0)
    assert torch.equal(null, same)
    assert torch.allclose(guided, null + (pred - null) * 3.0)


def test_causal_attention_hides_later_tokens(small):
    state, _ = small
    causal = _load(state, causal=True)
    x, cond = (torch.from_numpy(v).float() for v in _inputs(13))
    later = x.clone()
    later[:, -1] += 1.0
    with torch.no_grad():
        a, b = causal(x, 4, cond), causal(later, 4, cond)
    assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.allclose(a[:, -1], b[:, -1])


# -- the mapper refuses what would make every step wrong -------------------------------------------------
def _map(state, **config):
    config = {**infer_prior_config(state, ""), **config}
    prior = DiffusionPrior(**prior_kwargs(config))
    m = StateMapper(state, "test")
    map_prior(m, "", "", config)
    m.load_into(prior)
    return prior


def test_a_wrong_schedule_is_refused():
    state = _original_state(2)
    linear = dict(state, **{f"noise_scheduler.{n}": v for n, v in noise_schedule("linear", 10).items()})
    with pytest.raises(ValueError, match=r"not dalle2's 'cosine' schedule for timesteps=10.*betas: max abs "
                                         r"difference.*nothing was loaded"):
        _map(linear)
    longer = dict(state, **{f"noise_scheduler.{n}": v[:10] for n, v in noise_schedule("cosine", 20).items()})
    with pytest.raises(ValueError, match="timesteps=10"):                  # the first 10 of a T = 20 schedule
        _map(longer)
    with pytest.raises(ValueError, match=r"timesteps=20 .*betas: 10 steps"):
        _map(state, timesteps=20)
    half = dict(state, **{k: v.half().float() for k, v in state.items() if k.startswith("noise_scheduler.")})
    prior = _map(half)                                                    # float16 files: within rounding
    assert torch.equal(prior.schedule.betas, half["noise_scheduler.betas"])


def test_rotary_frequency_copies_must_be_equal():
    state = _original_state(3)
    assert all(torch.equal(state["net.causal_transformer.layers.0.0.rotary_emb.freqs"], v)
               for k, v in state.items() if k.endswith("rotary_emb.freqs"))
    bad = dict(state)
    bad["net.causal_transformer.layers.1.0.rotary_emb.freqs"] = state[
        "net.causal_transformer.layers.1.0.rotary_emb.freqs"] * 1.01
    with pytest.raises(ValueError, match=r"rotary frequencies .* differ between layer 0 and layers \[1\]"):
        _map(bad)


# -- as a part of BrainDecoder ----------------------------------------------------------------------------
def _decoder(**kwargs) -> BrainDecoder:
    return BrainDecoder({1: 10, "b": 7}, embed_dim=36, hidden_dim=8, n_blocks=1, seed=3, backbone="mlp",
                        head_kwargs={"pooled": {"projector": True, "projector_tokens": 3}}, prior="dalle2",
                        prior_kwargs={"depth": 1, "heads": 3, "dim_head": 4, "timesteps": 10},
                        **kwargs).eval()


def test_a_decoder_with_a_prior_saves_and_reloads_exactly(tmp_path):
    model = _decoder()
    assert model.config["prior"] == "dalle2" and (model.prior.num_tokens, model.prior.dim) == (3, 12)
    assert {k.split(".")[0] for k in model.state_dict()} == {"adapter", "backbone", "heads", "prior"}
    x = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(3, 4, 3, 12, generator=torch.Generator().manual_seed(1))
    before = model.sample_prior(x, "b", timesteps=3, noise=noise)
    model.save_pretrained(tmp_path / "with_prior")
    back = BrainDecoder.from_pretrained(tmp_path / "with_prior")
    assert back.config == model.config and isinstance(back.prior, DiffusionPrior)
    assert torch.equal(back.sample_prior(x, "b", timesteps=3, noise=noise), before)
    g1, g2 = (torch.Generator().manual_seed(7) for _ in range(2))
    assert torch.equal(back.sample_prior(x, "b", generator=g1, timesteps=10),
                       model.sample_prior(x, "b", generator=g2, timesteps=10))
    # the conditioning is the pooled head's linear output viewed as tokens
    with torch.no_grad():
        h = model.backbone(model.adapter(x, "b"))
        assert torch.equal(model.heads["pooled"].tokens(h), model.heads["pooled"].proj(
            model.heads["pooled"].norm(h)).reshape(4, 3, 12))
    assert torch.equal(_decoder().prior.learned_query, model.prior.learned_query)    # seeded


def test_decoder_prior_errors():
    plain = BrainDecoder({1: 10}, embed_dim=12, hidden_dim=8, seed=0)
    assert plain.prior is None and plain.config["prior"] is None
    with pytest.raises(ValueError, match="has no diffusion prior"):
        plain.sample_prior(torch.zeros(2, 10), 1)
    with pytest.raises(ValueError, match="the pooled head gives 3 tokens of 12"):
        kwargs = {"num_tokens": 4, "depth": 1, "heads": 3, "dim_head": 4, "timesteps": 10}
        BrainDecoder({1: 10}, embed_dim=36, hidden_dim=8, seed=0, prior="dalle2", prior_kwargs=kwargs,
                     head_kwargs={"pooled": {"projector": True, "projector_tokens": 3}})
    with pytest.raises(ValueError, match="unknown prior 'dalle'. Did you mean 'dalle2'"):
        BrainDecoder({1: 10}, embed_dim=12, hidden_dim=8, seed=0, prior="dalle")
    with pytest.raises(ValueError, match="prior_kwargs given without a prior"):
        BrainDecoder({1: 10}, embed_dim=12, hidden_dim=8, seed=0, prior_kwargs={"depth": 1})
