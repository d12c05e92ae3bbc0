"""MindEye2 (``MedARC-AI/MindEyeV2`` ``src/models.py`` ``BrainNetwork``, ``src/Train.ipynb``) read with
``from_published("mindeye2", ...)``.

The reference below is an independent NumPy transcription of the original in eval mode: the retrieval path,
``RidgeRegression`` (``linears[i](x[:, 0]).unsqueeze(1)``), ``BrainNetwork.forward``'s literal two-residual
mixer loop (``mixer_blocks1`` over the 4096 features, ``mixer_blocks2`` over the length-1 sequence axis),
``backbone_linear`` reshaped to ``(B, n_tokens, clip_dim)`` and ``clip_proj`` applied per token, flattened
as MindEye2 scores retrieval; the blurry branch (diffusers ``Decoder``); and the diffusion prior
(``_published_numpy.prior_network`` / ``prior_sample``: ``PriorNetwork`` and dalle2's DDIM loop,
conditioned on the ``backbone_linear`` tokens, as ``recon_inference.ipynb`` samples it). It runs on a small
configuration with random weights under the original key names (the full key list, blurry branch and diffusion
prior included).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from _published_numpy import cosine_schedule, gelu, layer_norm, prior_network, prior_sample
from _published_numpy_mlp import conv2d, group_norm, resnet, silu

from neurodecode.models import BrainDecoder, MindEye2Mixer, from_published, list_published
from neurodecode.models.adapters import LinearAdapter
from neurodecode.models.heads import PooledHead, VAEDecoderHead
from neurodecode.models.priors import DiffusionPrior, noise_schedule
from neurodecode.models.published.mindeye2 import (
    MINDEYE2_DEFAULTS,
    NSD_VOXELS,
    convert_mindeye2,
    mindeye2_mapper,
    original_mindeye2_keys,
)

# small: two subjects (V = 5, 7; ridge order 3, 9), hidden 8, 4 blocks, 3 tokens of 6; prior: dim_head 4,
# 3 heads
SMALL = dict(voxels=(5, 7), hidden_dim=8, n_blocks=4, n_tokens=3, clip_dim=6, prior_dim_head=4, prior_heads=3,
             prior_tokens=3, timesteps=10)
SUBJECTS = [3, 9]


def _random_state(seed: int = 0, **config) -> dict[str, torch.Tensor]:
    """Random weights; the prior's schedule buffers and rotary frequencies as the original computes them."""
    rng = np.random.default_rng(seed)
    c = {**MINDEYE2_DEFAULTS, **config}
    sched = cosine_schedule(c["timesteps"])
    r = min(c["rotary_dim"], c["prior_dim_head"])
    state = {}
    for k, s in original_mindeye2_keys(**config).items():
        if k.startswith("diffusion_prior.noise_scheduler."):
            value = sched[k.split(".")[-1]]
        elif k.endswith("rotary_emb.freqs"):
            value = 1.0 / 10000 ** (np.arange(0, r, 2) / r)
        else:
            value = 0.5 * rng.standard_normal(s)
        state[k] = torch.tensor(value, dtype=torch.float32)
    return state


def _mlp(x, sd, p):
    """``Sequential(LayerNorm, Sequential(Linear, GELU, Dropout, Linear))`` (eval)."""
    y = layer_norm(x, sd[p + "0.weight"], sd[p + "0.bias"])
    y = gelu(y @ sd[p + "1.0.weight"].T + sd[p + "1.0.bias"])
    return y @ sd[p + "1.3.weight"].T + sd[p + "1.3.bias"]


def _numpy_mindeye2(sd: dict[str, np.ndarray], x: np.ndarray, ridge_index: int, c: dict):
    """Ridge → ``BrainNetwork.forward`` up to ``clip_proj``: (mixer output, backbone tokens, clip_voxels)."""
    w, b = sd[f"ridge.linears.{ridge_index}.weight"], sd[f"ridge.linears.{ridge_index}.bias"]
    h = (x[:, None, :][:, 0] @ w.T + b)[:, None, :]                 # (B, 1, hidden)
    res1, res2 = h, h.transpose(0, 2, 1)
    for k in range(c["n_blocks"]):                                  # the literal loop of src/models.py
        h = _mlp(h, sd, f"backbone.mixer_blocks1.{k}.") + res1
        res1 = h
        h = h.transpose(0, 2, 1)                                    # (B, hidden, 1)
        h = _mlp(h, sd, f"backbone.mixer_blocks2.{k}.") + res2
        res2 = h
        h = h.transpose(0, 2, 1)
    h = h.reshape(len(x), -1)
    tokens = (h @ sd["backbone.backbone_linear.weight"].T + sd["backbone.backbone_linear.bias"]).reshape(
        len(x), -1, c["clip_dim"])
    u = tokens
    for j in (0, 3, 6):
        u = gelu(layer_norm(u, sd[f"backbone.clip_proj.{j}.weight"], sd[f"backbone.clip_proj.{j}.bias"]))
        u = u @ sd[f"backbone.clip_proj.{j + 2}.weight"].T + sd[f"backbone.clip_proj.{j + 2}.bias"]
    return h, tokens, u.reshape(len(x), -1)


def _numpy_blurry(sd: dict[str, np.ndarray], h: np.ndarray) -> np.ndarray:
    """``blin1 → bdropout (eval) → reshape (B, 64, 7, 7) → bnorm → bupsampler`` (diffusers ``Decoder``)."""
    b = (h @ sd["backbone.blin1.weight"].T + sd["backbone.blin1.bias"]).reshape(len(h), 64, 7, 7)
    b = group_norm(b, 1, sd["backbone.bnorm.weight"], sd["backbone.bnorm.bias"], 1e-5)
    u = "backbone.bupsampler."
    x = conv2d(b, sd[u + "conv_in.weight"], sd[u + "conv_in.bias"])
    x = resnet(x, sd, u + "mid_block.resnets.0.")
    a = u + "mid_block.attentions.0."                       # one head of 128 over the 49 positions, residual
    t = group_norm(x, 32, sd[a + "group_norm.weight"], sd[a + "group_norm.bias"], 1e-6)
    t = t.reshape(len(h), 128, -1).transpose(0, 2, 1)
    q, k, v = (t @ sd[a + f"to_{n}.weight"].T + sd[a + f"to_{n}.bias"] for n in "qkv")
    att = q @ k.transpose(0, 2, 1) / np.sqrt(128)
    att = np.exp(att - att.max(-1, keepdims=True))
    o = (att / att.sum(-1, keepdims=True)) @ v @ sd[a + "to_out.0.weight"].T + sd[a + "to_out.0.bias"]
    x = x + o.transpose(0, 2, 1).reshape(x.shape)
    x = resnet(x, sd, u + "mid_block.resnets.1.")
    for i in range(3):
        for r in range(2):
            x = resnet(x, sd, f"{u}up_blocks.{i}.resnets.{r}.")
        if i < 2:
            x = x.repeat(2, axis=2).repeat(2, axis=3)          # nearest ×2
            x = conv2d(x, sd[f"{u}up_blocks.{i}.upsamplers.0.conv.weight"],
                        sd[f"{u}up_blocks.{i}.upsamplers.0.conv.bias"])
    x = silu(group_norm(x, 32, sd[u + "conv_norm_out.weight"], sd[u + "conv_norm_out.bias"], 1e-6))
    return conv2d(x, sd[u + "conv_out.weight"], sd[u + "conv_out.bias"])


def _closed_form(sd: dict[str, np.ndarray], r: np.ndarray, n_blocks: int) -> np.ndarray:
    """seq_len = 1: LayerNorm(1) returns its bias, so mixer_blocks2[k] is a constant c_k: h = r + Σ c_k."""
    total = 0.0
    for k in range(n_blocks):
        p = f"backbone.mixer_blocks2.{k}."
        a = gelu(sd[p + "1.0.weight"][0, 0] * sd[p + "0.bias"][0] + sd[p + "1.0.bias"][0])
        total += sd[p + "1.3.weight"][0, 0] * a + sd[p + "1.3.bias"][0]
    return r + total


@pytest.fixture(scope="module")
def small():
    state = _random_state(0, **SMALL)
    model = convert_mindeye2(state, parts="retrieval", subjects=SUBJECTS)
    return state, model


@pytest.mark.parametrize("index", [0, 1])
def test_forward_matches_the_numpy_original(small, index):
    state, model = small
    subject, n_vox = SUBJECTS[index], SMALL["voxels"][index]
    x = np.random.default_rng(10 + index).standard_normal((4, n_vox))
    sd = {k: v.double().numpy() for k, v in state.items()}
    h_ref, tokens_ref, clip_ref = _numpy_mindeye2(sd, x, index, SMALL)
    with torch.no_grad():
        out = model(torch.from_numpy(x).float(), subject)
        h = model.backbone(out.latent)
        tokens = model.heads["pooled"].proj(h).reshape(4, SMALL["n_tokens"], SMALL["clip_dim"])
    diffs = {name: float(np.abs(a.double().numpy() - b).max())
             for name, a, b in (("mixer", h, h_ref), ("backbone tokens", tokens, tokens_ref),
                                ("clip_voxels", out.embedding, clip_ref))}
    print(f"mindeye2 subject {subject}: max abs diff {diffs}")
    assert all(d < 1e-5 for d in diffs.values()), diffs
    r = x @ sd[f"ridge.linears.{index}.weight"].T + sd[f"ridge.linears.{index}.bias"]
    assert np.abs(_closed_form(sd, r, SMALL["n_blocks"]) - h_ref).max() < 1e-12   # the research note's form


def test_blurry_branch_matches_the_numpy_original():
    state = _random_state(5, **SMALL)
    rng = np.random.default_rng(5)
    for k in [k for k in state if k.startswith("backbone.") and ("norm" in k.split(".")[-2] or "bnorm" in k)]:
        if k.endswith(".weight"):                            # GroupNorm gains near 1 keep activations O(1)
            state[k] = torch.tensor(1.0 + 0.1 * rng.standard_normal(state[k].shape), dtype=torch.float32)
    for k in [k for k in state if k.startswith("backbone.bupsampler.") and k.endswith("conv1.weight")
              or k.endswith(("conv2.weight", "conv.weight", "conv_in.weight", "conv_out.weight"))]:
        state[k] = state[k] / np.sqrt(state[k][0].numel())      # fan-in scaling: no blow-up
    model = convert_mindeye2(state, parts=("retrieval", "blurry"), subjects=SUBJECTS)
    assert list(model.heads) == ["pooled", "vae_decoder"]
    x = np.random.default_rng(11).standard_normal((2, 7))
    sd = {k: v.double().numpy() for k, v in state.items()}
    h_ref, _, clip_ref = _numpy_mindeye2(sd, x, 1, SMALL)
    ref = _numpy_blurry(sd, h_ref)
    with torch.no_grad():
        out = model(torch.from_numpy(x).float(), 9).outputs
    diff = float(np.abs(out["vae_decoder"].double().numpy() - ref).max())
    print(f"mindeye2 blurry branch: max abs diff {diff:.2e} (output scale {np.abs(ref).max():.2f})")
    assert out["vae_decoder"].shape == (2, 4, 28, 28) and diff < 1e-5
    with torch.no_grad():                                    # in float64 the two agree to round-off
        out64 = model.double()(torch.from_numpy(x), 9).outputs["vae_decoder"].numpy()
    model.float()
    print(f"  float64 model: max abs diff {np.abs(out64 - ref).max():.2e}")
    assert np.abs(out64 - ref).max() < 1e-10
    assert np.abs(out["pooled"].double().numpy() - clip_ref).max() < 1e-5
    unused = model.published["unused"]
    assert sorted({v["reason"] for v in unused.values()}) == [
        "diffusion prior: not requested (parts=...)",
        "training-only auxiliary output (b_blurry's ConvNeXt-feature matching), not used at inference"]
    assert len([k for k in unused if "b_maps_projector" in k]) == 8


def test_old_diffusers_attention_names_are_accepted():
    state = _random_state(6, **SMALL)
    renames = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}
    old = {}
    for k, v in state.items():
        for new, previous in renames.items():
            k = k.replace(f"attentions.0.{new}", f"attentions.0.{previous}")
        old[k] = v
    assert "backbone.bupsampler.mid_block.attentions.0.proj_attn.weight" in old
    a = convert_mindeye2(state, parts=("retrieval", "blurry"), subjects=SUBJECTS)
    b = convert_mindeye2(old, parts=("retrieval", "blurry"), subjects=SUBJECTS)
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x, 3).outputs["vae_decoder"], b(x, 3).outputs["vae_decoder"])


def test_the_vae_decoder_has_diffusers_layout():
    """Same module names and outputs as diffusers' ``Decoder`` (MindEye2's ``bupsampler``), when installed."""
    vae = pytest.importorskip("diffusers.models.autoencoders.vae")
    from neurodecode.models.heads import VAEDecoder

    torch.manual_seed(0)
    ref = vae.Decoder(in_channels=64, out_channels=4, up_block_types=["UpDecoderBlock2D"] * 3,
                      block_out_channels=[32, 64, 128], layers_per_block=1).eval()
    ours = VAEDecoder(64, 4, (32, 64, 128), 1, 32).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    z = torch.randn(2, 64, 7, 7)
    with torch.no_grad():
        assert float((ours(z) - ref(z)).abs().max()) < 1e-5


def test_mixer_blocks1_never_reach_the_output(small):
    """As in the original: with seq_len = 1 the 4096-wide MLPs are computed and discarded."""
    state, model = small
    scaled = {k: (100 * v if k.startswith("backbone.mixer_blocks1.") else v) for k, v in state.items()}
    other = convert_mindeye2(scaled, parts="retrieval", subjects=SUBJECTS)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(other(x, 3).embedding, model(x, 3).embedding)
    fc1 = [m.backbone.blocks[0].channel_mlp.fc1.weight for m in (other, model)]
    assert not torch.equal(*fc1)


def test_the_mixer_with_several_tokens_follows_the_original_loop():
    """seq_len > 1 (not published; same code): the literal loop, where mixer_blocks1 reaches the output."""
    torch.manual_seed(0)
    mixer = MindEye2Mixer(4, n_blocks=3, dropout=0.15, seq_len=3).eval()
    sd = {}
    for k, block in enumerate(mixer.blocks):
        for group, mlp in (("mixer_blocks1", block.channel_mlp), ("mixer_blocks2", block.token_mlp)):
            for src, mod in (("0", mlp.norm), ("1.0", mlp.fc1), ("1.3", mlp.fc2)):
                for w in ("weight", "bias"):
                    sd[f"backbone.{group}.{k}.{src}.{w}"] = getattr(mod, w).detach().double().numpy()
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    h, res1, res2 = x, x, x.transpose(0, 2, 1)
    for k in range(3):
        h = _mlp(h, sd, f"backbone.mixer_blocks1.{k}.") + res1
        res1 = h
        h = _mlp(h.transpose(0, 2, 1), sd, f"backbone.mixer_blocks2.{k}.") + res2
        res2 = h
        h = h.transpose(0, 2, 1)
    with torch.no_grad():
        out = mixer(torch.from_numpy(x.reshape(2, 12)).float()).double().numpy()
    assert np.abs(out - h.reshape(2, 12)).max() < 1e-5
    mixer.blocks[2].channel_mlp.fc2.weight.data.mul_(3)
    with torch.no_grad():
        assert not np.allclose(mixer(torch.from_numpy(x.reshape(2, 12)).float()).numpy(), out)


def test_parts_all_loads_the_prior():
    state = _random_state(1, **SMALL)
    model = convert_mindeye2(state, subjects=SUBJECTS)                       # parts="all"
    assert list(model.heads) == ["pooled", "vae_decoder"] and model.prior is not None
    assert model.published["parts"] == ["blurry", "prior", "retrieval"]
    assert set(model.published["unused"]) == {k for k in state if "b_maps_projector" in k}
    assert torch.equal(model.prior.learned_query, state["diffusion_prior.net.learned_query"])
    assert torch.equal(model.prior.schedule.alphas_cumprod_prev,
                       state["diffusion_prior.noise_scheduler.alphas_cumprod_prev"])
    no_blurry = convert_mindeye2(state, parts=("retrieval", "prior"), subjects=SUBJECTS)
    assert list(no_blurry.heads) == ["pooled"] and no_blurry.prior is not None
    no_prior = {k: v for k, v in state.items() if not k.startswith("diffusion_prior.")}
    assert convert_mindeye2(no_prior, subjects=SUBJECTS).prior is None                       # "all"
    with pytest.raises(ValueError, match=r"asks for \['prior'\], which this checkpoint does not hold"):
        convert_mindeye2(no_prior, parts=("retrieval", "prior"), subjects=SUBJECTS)
    with pytest.raises(ValueError, match="give 'all' or a subset"):
        convert_mindeye2(state, parts="blurry", subjects=SUBJECTS)
    bad = dict(state, **{f"diffusion_prior.noise_scheduler.{n}": v
                         for n, v in noise_schedule("linear", SMALL["timesteps"]).items()})
    with pytest.raises(ValueError, match=r"diffusion_prior.noise_scheduler.\*\) is not dalle2's 'cosine' "
                                         r"schedule for timesteps=10"):
        convert_mindeye2(bad, subjects=SUBJECTS)


def _prior_state(seed: int) -> dict[str, torch.Tensor]:
    """The small checkpoint with the prior's matrices at ``0.25 / √fan_in`` (a random full-scale network is
    chaotic over several sampling steps: float32 round-off then grows; one network call is compared at full
    scale below)."""
    state = _random_state(seed, **SMALL)
    for k, v in state.items():
        if k.startswith("diffusion_prior.net.causal_transformer.") and v.ndim == 2 and "relative" not in k:
            state[k] = v / 0.5 * 0.25 / np.sqrt(v.shape[1])
    return state


def test_sample_prior_matches_the_numpy_original():
    """``p_sample_loop(backbone, cond_scale=1., timesteps=...)`` on the backbone tokens of the NumPy model."""
    state = _prior_state(12)
    model = convert_mindeye2(state, subjects=SUBJECTS)
    sd = {k: v.double().numpy() for k, v in state.items()}
    x = np.random.default_rng(13).standard_normal((2, 7))
    _, tokens, _ = _numpy_mindeye2(sd, x, 1, SMALL)                             # subject 9: ridge layer 1
    depth, heads = MINDEYE2_DEFAULTS["prior_depth"], SMALL["prior_heads"]
    for timesteps in (3, 10):                                                  # DDIM; the full DDPM chain
        n_draws = len(model.prior.sampling_times(timesteps)) + 1
        noise = np.random.default_rng(timesteps).standard_normal((n_draws, 2, 3, 6))
        ref = prior_sample(sd, "diffusion_prior.", tokens, noise, timesteps=timesteps, depth=depth,
                           heads=heads)
        out = model.sample_prior(torch.from_numpy(x).float(), 9, timesteps=timesteps,
                                 noise=torch.from_numpy(noise).float())
        diff = float(np.abs(out.double().numpy() - ref).max())
        print(f"mindeye2 sample_prior, {timesteps} steps: max abs diff {diff:.2e} "
              f"(scale {np.abs(ref).max():.2f})")
        assert out.shape == (2, 3, 6) and diff < 1e-5
    # one network call at full weight scale, on the model's own conditioning
    state = _random_state(14, **SMALL)
    model = convert_mindeye2(state, subjects=SUBJECTS)
    sd = {k: v.double().numpy() for k, v in state.items()}
    _, tokens, _ = _numpy_mindeye2(sd, x, 1, SMALL)
    z = np.random.default_rng(15).standard_normal((2, 3, 6))
    ref = prior_network(sd, "diffusion_prior.", z, np.array([9, 2]), tokens, depth=depth, heads=heads)
    with torch.no_grad():
        cond = model.heads["pooled"].tokens(model.backbone(model.adapter(torch.from_numpy(x).float(), "9")))
        out = model.prior(torch.from_numpy(z).float(), torch.tensor([9, 2]), cond)
    diff = float(np.abs(out.double().numpy() - ref).max())
    print(f"mindeye2 prior network: max abs diff {diff:.2e} (scale {np.abs(ref).max():.2f})")
    assert diff < 1e-5


def test_parts_retrieval_keeps_every_unplaced_tensor_with_its_reason(small):
    state, model = small
    unused = model.published["unused"]
    prior = {k for k in state if k.startswith("diffusion_prior.")}
    blurry = {k for k in state if k.startswith(("backbone.blin1", "backbone.bnorm", "backbone.bupsampler",
                                                "backbone.b_maps_projector"))}
    assert set(unused) == prior | blurry and len(prior) == 85 and len(blurry) == 100
    assert {unused[k]["reason"] for k in prior} == {"diffusion prior: not requested (parts=...)"}
    assert {unused[k]["reason"] for k in blurry} == {"blurry (low-level) branch: not requested (parts=...)"}
    query = "diffusion_prior.net.learned_query"
    assert torch.equal(unused[query]["tensor"], state[query])
    assert model.published["parts"] == ["retrieval"] and model.published["subjects"] == ["3", "9"]
    # a file without prior and blurry branch (the 1024-wide file's layout) loads with the default parts="all"
    bare = {k: v for k, v in state.items() if k not in prior | blurry}
    assert convert_mindeye2(bare, subjects=SUBJECTS).published["unused"] == {}


def test_refuses_unknown_missing_and_misshapen_keys():
    state = _random_state(2, **SMALL)
    bad = dict(state)
    bad["backbone.extra.weight"] = torch.zeros(3)
    del bad["backbone.clip_proj.8.bias"]
    bad["backbone.mixer_blocks1.2.1.3.bias"] = torch.zeros(9)
    with pytest.raises(ValueError, match=r"1 unknown keys \(backbone\.extra\.weight\).*1 missing keys "
                                         r"\(backbone\.clip_proj\.8\.bias\).*1 shape mismatches "
                                         r"\(backbone\.mixer_blocks1\.2\.1\.3\.bias: file \[9\] vs "
                                         r"expected \[8\]\)"):
        convert_mindeye2(bad, parts="retrieval", subjects=SUBJECTS)


def test_subjects_come_from_the_nsd_voxel_counts_or_must_be_given():
    state = _random_state(3, **{**SMALL, "voxels": (5,), "blurry": False, "prior": False})
    with pytest.raises(ValueError, match=r"\[5\] voxels match no NSD subject.*pass subjects="):
        convert_mindeye2(state)
    with pytest.raises(ValueError, match="one distinct subject per layer"):
        convert_mindeye2(state, subjects=[1, 2])
    assert convert_mindeye2(state, subjects=["a"]).subjects == ["a"]
    assert [str(s) for s in (2, 5, 7)] == [str({v: s for s, v in NSD_VOXELS.items()}[n])
                                           for n in (14278, 13039, 12682)]


def test_from_published_reads_a_model_state_dict_file(tmp_path, small):
    state, model = small
    path = tmp_path / "last.pth"
    torch.save({"epoch": 150, "model_state_dict": state, "train_losses": [0.5], "lrs": [3e-4]}, path)
    loaded = from_published("mindeye2", path, parts="retrieval", subjects=SUBJECTS)
    assert "mindeye2" in list_published() and loaded.published["container"] == "model_state_dict"
    x = torch.randn(2, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x, 9).embedding, model(x, 9).embedding)
    everything = from_published("mindeye2", path, subjects=SUBJECTS)           # parts="all": the prior too
    assert everything.published["parts"] == ["blurry", "prior", "retrieval"] and everything.prior is not None
    with torch.no_grad():
        assert torch.equal(everything(x, 9).embedding, model(x, 9).embedding)


def test_the_loaded_model_saves_and_reloads_as_a_neurodecode_model(tmp_path, small):
    _, model = small
    model.save_pretrained(tmp_path / "me2")
    back = BrainDecoder.from_pretrained(tmp_path / "me2")
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(back(x, 3).embedding, model(x, 3).embedding)


# -- the full-size key list: final_subj01_pretrained_40sess_24bs (research note §3.3) ----------------------
def _full_expected() -> dict[str, tuple[int, ...]]:
    """Written out from the note's table (not from original_mindeye2_keys)."""
    keys = {"ridge.linears.0.weight": (4096, 15724), "ridge.linears.0.bias": (4096,)}
    for k in range(4):
        for g, w in (("mixer_blocks1", 4096), ("mixer_blocks2", 1)):
            p = f"backbone.{g}.{k}."
            keys.update({p + "0.weight": (w,), p + "0.bias": (w,), p + "1.0.weight": (w, w),
                         p + "1.0.bias": (w,), p + "1.3.weight": (w, w), p + "1.3.bias": (w,)})
    keys.update({"backbone.backbone_linear.weight": (425984, 4096),
                 "backbone.backbone_linear.bias": (425984,)})
    for j in (0, 3, 6):
        p = "backbone.clip_proj."
        keys.update({f"{p}{j}.weight": (1664,), f"{p}{j}.bias": (1664,),
                     f"{p}{j + 2}.weight": (1664, 1664), f"{p}{j + 2}.bias": (1664,)})
    return keys


GROUPS = {"ridge.": 64_409_600, "backbone.mixer_blocks1.": 134_283_264, "backbone.mixer_blocks2.": 24,
          "backbone.backbone_linear.": 1_745_256_448, "backbone.clip_proj.": 8_321_664,
          ("backbone.blin1.", "backbone.bnorm."): 12_848_192 + 128, "backbone.bupsampler.": 1_750_692,
          "backbone.b_maps_projector.": 559_616, "diffusion_prior.": 259_866_596}


def test_full_size_keys_match_the_original():
    expected = original_mindeye2_keys()
    assert len(expected) == 249
    assert sum(int(np.prod(s)) for s in expected.values()) == 2_227_296_224
    for prefix, n in GROUPS.items():
        assert sum(int(np.prod(s)) for k, s in expected.items() if k.startswith(prefix)) == n, prefix
    retrieval = _full_expected()
    assert {k: expected[k] for k in retrieval} == retrieval
    blurry = ("backbone.bupsampler.", "backbone.blin1", "backbone.bnorm", "backbone.b_maps_projector")
    assert len([k for k in expected if k.startswith(blurry)]) == 100
    assert expected["diffusion_prior.net.causal_transformer.layers.5.0.rotary_emb.freqs"] == (16,)
    assert expected["diffusion_prior.net.causal_transformer.layers.0.1.1.weight"] == (13312, 1664)
    # other published layouts: multi-subject (7 ridge layers, held-out subject 1) and the 1024-wide file
    multi = original_mindeye2_keys(voxels=[NSD_VOXELS[s] for s in range(2, 9)])
    assert len(multi) == 261 and sum(int(np.prod(s)) for s in multi.values()) == 2_575_263_712
    narrow = original_mindeye2_keys(voxels=[NSD_VOXELS[s] for s in range(2, 9)], hidden_dim=1024,
                                    blurry=False)
    assert len(narrow) == 161 and sum(int(np.prod(s)) for s in narrow.values()) == 816_321_148


def test_full_size_mapping_places_every_tensor_on_the_meta_device():
    """The published subject-1 file maps onto neurodecode's parts (built on the meta device, no memory)."""
    state = {k: torch.empty(s, device="meta") for k, s in original_mindeye2_keys().items()}
    from neurodecode.models.published import mindeye2

    c = mindeye2._infer_config(state)
    assert {k: c[k] for k in MINDEYE2_DEFAULTS} == {**MINDEYE2_DEFAULTS, "voxels": (15724,)}
    m = mindeye2_mapper(state, c, ["1"], {"retrieval"})
    model = torch.nn.Module()
    model.adapter = LinearAdapter({"1": 15724}, 4096, device="meta")
    model.backbone = MindEye2Mixer(4096, 4, 0.15, device="meta")
    model.heads = torch.nn.ModuleDict({"pooled": PooledHead(4096, 425984, norm=False, projector=True,
                                                            projector_tokens=256, device="meta")})
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in m.target.items()} == own
    assert len(own) == 2 + 48 + 2 + 12 and sum(int(np.prod(s)) for s in own.values()) == \
        64_409_600 + 134_283_288 + 1_745_256_448 + 8_321_664
    assert len(m.side) == 249 - 64 and set(m.side) | {k for k in state if k not in m.side} == set(state)
    m.load_into(model)      # every original tensor placed or kept aside, every model tensor filled
    # with the blurry branch: blin1, bnorm and the 88 bupsampler tensors placed, b_maps_projector kept aside
    m = mindeye2_mapper(state, c, ["1"], {"retrieval", "blurry"})
    model.heads["vae_decoder"] = VAEDecoderHead(4096, (4, 28, 28), device="meta")
    blurry = {k: tuple(v.shape) for k, v in model.heads["vae_decoder"].state_dict().items()}
    assert len(blurry) == 92 and sum(int(np.prod(s)) for s in blurry.values()) == 12_848_192 + 128 + 1_750_692
    assert {k: tuple(v.shape) for k, v in m.target.items()} == {k: tuple(v.shape) for k, v in
                                                                model.state_dict().items()}
    assert len(m.side) == 85 + 8
    m.load_into(model)
    # with the prior: its 85 tensors placed (the rotary freqs once), only b_maps_projector kept aside; the
    # schedule check reads the 13 buffers and the repeated freqs, so those are real tensors here
    sched = noise_schedule("cosine", 100)
    state = {**state, **{k: sched[k.split(".")[-1]] for k in state if "noise_scheduler" in k},
             **{k: 1.0 / 10000 ** (torch.arange(0, 32, 2).float() / 32) for k in state if "rotary_emb" in k}}
    m = mindeye2_mapper(state, c, ["1"], {"retrieval", "blurry", "prior"})
    model.prior = DiffusionPrior(device="meta")
    prior = {k: tuple(v.shape) for k, v in model.prior.state_dict().items()}
    assert len(prior) == 85 - 5 and sum(int(np.prod(s)) for s in prior.values()) == 259_866_596 - 5 * 16
    assert {k: tuple(v.shape) for k, v in m.target.items()} == {k: tuple(v.shape) for k, v in
                                                                model.state_dict().items()}
    assert len(m.side) == 8
    m.target = {k: v.to("meta") for k, v in m.target.items()}      # (copying into meta tensors would warn)
    m.load_into(model)


# -- the DeepSpeed-era file (multisubject_subj01_1024hid_nolow_300ep): ZeRO, loss scaler, OneCycleLR ------
_FAKE = ("deepspeed", "deepspeed.runtime", "deepspeed.runtime.zero", "deepspeed.runtime.zero.config",
         "deepspeed.utils", "deepspeed.utils.tensor_fragment", "deepspeed.runtime.fp16",
         "deepspeed.runtime.fp16.loss_scaler", "evil", "evil.payload")


def _fake_class(module: str, name: str, base: type = object, **body) -> type:
    cls = type(name, (base,), {"__module__": module, "__qualname__": name, **body})
    setattr(sys.modules[module], name, cls)
    return cls


def _deepspeed_file(path, state, hostile: bool = False) -> None:
    """Pickle what DeepSpeed + OneCycleLR put next to the model (classes named as DeepSpeed's, fake)."""
    saved = {n: sys.modules.get(n) for n in _FAKE}
    sys.modules.update({n: types.ModuleType(n) for n in _FAKE})
    try:
        stage = _fake_class("deepspeed.runtime.zero.config", "ZeroStageEnum", int)
        address = _fake_class("deepspeed.utils.tensor_fragment", "fragment_address",
                              __init__=lambda self, n, start: self.__dict__.update(numel=n, start=start))
        scaler = _fake_class("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler",
                             __init__=lambda self: setattr(self, "cur_scale", 65536.0),
                             update_scale=lambda self: None)
        extra = {"payload": _fake_class("evil.payload", "Run")()} if hostile else {}
        torch.save({"epoch": 299, "model_state_dict": {k: v.half() for k, v in state.items()},
                    "optimizer_state_dict": {"zero_stage": stage(2), "frag": address(3, 0),
                                             "loss_scaler": scaler()},
                    "lr_scheduler": {"anneal_func": scaler().update_scale},   # pickled: getattr(obj, name)
                    **extra}, path)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def test_the_deepspeed_file_is_read_with_inert_placeholders(tmp_path):
    config = {**SMALL, "blurry": False}
    state = _random_state(7, **config)
    _deepspeed_file(tmp_path / "last.pth", state)
    model = from_published("mindeye2", tmp_path / "last.pth", parts="retrieval", subjects=SUBJECTS)
    assert model.published["container"] == "model_state_dict" and "vae_decoder" not in model.heads
    half = {k: v.half().float() for k, v in state.items()}                       # stored as float16
    ref = convert_mindeye2(half, parts="retrieval", subjects=SUBJECTS)
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(x, 3).embedding, ref(x, 3).embedding)
    # parts="all": the prior loads too, its float16 schedule buffers within rounding of the recomputation
    full = from_published("mindeye2", tmp_path / "last.pth", subjects=SUBJECTS)
    betas = "diffusion_prior.noise_scheduler.betas"
    assert full.prior is not None and torch.equal(full.prior.schedule.betas, half[betas])
    assert not torch.equal(half[betas], state[betas])
    _deepspeed_file(tmp_path / "hostile.pth", state, hostile=True)
    with pytest.raises(ValueError, match=r"pickles globals that are not tensors.*evil\.payload\.Run"):
        from_published("mindeye2", tmp_path / "hostile.pth", parts="retrieval", subjects=SUBJECTS)
