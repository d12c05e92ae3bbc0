"""MindEye1 (``MedARC-AI/fMRI-reconstruction-NSD`` ``src/models.py``) read with
``from_published("mindeye1", ...)``.

The references (``_published_numpy_mlp``) are independent NumPy transcriptions of the originals in eval mode:
``BrainNetwork.forward`` (both outputs: ``lin1``'s, the prior's conditioning, and the projector's, flattened
as MindEye1 scores retrieval) and ``Voxel2StableDiffusionModel.forward`` (the SD-VAE latents, through the
diffusers 0.13 ``Decoder`` with its old ``query``/``key``/``value``/``proj_attn`` attention); the 257-token
prior is checked with ``_published_numpy``'s ``prior_network`` / ``prior_sample``, conditioned on the NumPy
``lin1`` tokens. They run on small configurations with random weights under the original key names; the
full-size key lists and element counts are checked against the research note
(``notes/published_checkpoints_research.md`` §4.3).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _published_numpy import (
    cosine_schedule,
    ddim_times,
    network_prior,
    network_prior_sample,
    prior_network,
    prior_sample,
)
from _published_numpy_mlp import mindeye1_autoencoder, mindeye1_voxel2clip

from neurodecode.models import BrainDecoder, from_published, list_published
from neurodecode.models.adapters import LinearNormAdapter
from neurodecode.models.backbones import PostNormResidualMLP
from neurodecode.models.heads import PooledHead, VAEDecoderHead
from neurodecode.models.priors import DiffusionPriorNetworkPrior
from neurodecode.models.published.dalle2_prior import network_prior_kwargs
from neurodecode.models.published.mindeye1 import (
    MINDEYE1_DEFAULTS,
    NOUSR_DEFAULTS,
    NSD_VOXELS,
    convert_mindeye1,
    detect_kind,
    mindeye1_mapper,
    original_mindeye1_keys,
)

# small: 11 voxels, hidden 8, 4 blocks, 3 tokens of 6, projector width 10; prior dim 6 = 3 heads × 4, T = 10
SMALL = dict(voxels=11, hidden_dim=8, n_blocks=4, clip_dim=6, n_tokens=3, projector_dim=10, prior_depth=2,
             prior_dim_head=4, prior_heads=3, rotary_dim=4, timesteps=10)
# small autoencoder: the published decoder widths (64, 128, 256) from a 64 × 4 × 4 grid → (4, 16, 16)
SMALL_AE = dict(voxels=11, hidden_dim=8, n_blocks=4, side=4)
# small 1×768 file: the same voxel2clip with one token of 6; its dalle2 DiffusionPriorNetwork with 5 null text
# encodings (a sequence of 9 tokens), NormFormer feed-forwards and project_out
SMALL_1X768 = dict(SMALL, max_text_len=5)
SUBJECT = "s1"


def _random_state(kind: str, seed: int = 0, **config) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    state = {k: torch.tensor(0.5 * rng.standard_normal(s), dtype=torch.float32)
             for k, s in original_mindeye1_keys(kind, **config).items()}
    for k, v in state.items():                 # norm gains near 1, fan-in-scaled convs: activations stay O(1)
        if v.ndim == 1 and k.endswith(".weight"):
            state[k] = 1.0 + 0.2 * v
        elif v.ndim == 4:
            state[k] = v / np.sqrt(v[0].numel())
    if kind != "autoencoder":                  # dalle2's cosine schedule; one RotaryEmbedding for all layers
        for name, values in cosine_schedule(config["timesteps"]).items():
            state[f"noise_scheduler.{name}"] = torch.tensor(values, dtype=torch.float32)
        freqs = [k for k in state if k.endswith("rotary_emb.freqs")]
        for k in freqs:
            state[k] = state[freqs[0]].clone()
    return state


def _numpy(state):
    return {k: v.double().numpy() for k, v in state.items()}


@pytest.fixture(scope="module")
def small():
    state = _random_state("prior_257", 0, **SMALL)
    return state, convert_mindeye1(state, parts="retrieval", subject=SUBJECT)


def test_voxel2clip_matches_the_numpy_original(small):
    state, model = small
    x = np.random.default_rng(10).standard_normal((4, SMALL["voxels"]))
    lin1_ref, clip_ref = mindeye1_voxel2clip(_numpy(state), x, SMALL["n_blocks"], SMALL["clip_dim"])
    with torch.no_grad():
        out = model(torch.from_numpy(x).float(), SUBJECT)
        lin1 = model.heads["pooled"].proj(model.backbone(out.latent))
    diffs = {"lin1 (prior conditioning)": float(np.abs(lin1.double().numpy() - lin1_ref).max()),
             "projector (retrieval)": float(np.abs(out.embedding.double().numpy() - clip_ref).max())}
    print(f"mindeye1 voxel2clip: max abs diff {diffs}")
    assert out.embedding.shape == (4, SMALL["n_tokens"] * SMALL["clip_dim"])
    assert all(d < 1e-5 for d in diffs.values()), diffs
    assert model.published["kind"] == "prior_257" and model.published["parts"] == ["retrieval"]
    assert type(model.adapter) is LinearNormAdapter and type(model.backbone) is PostNormResidualMLP


def test_parts_retrieval_keeps_the_prior_aside_with_its_reason(small):
    state, model = small
    unused = model.published["unused"]
    prior = {k for k in state if k.startswith(("net.", "noise_scheduler."))}
    assert set(unused) == prior and len(prior) == 13 + 3 + 6 + 1 + 2 * 10 + 2
    assert {v["reason"] for v in unused.values()} == {
        "diffusion prior (VersatileDiffusionPriorNetwork): not requested (parts=...)"}
    assert torch.equal(unused["net.learned_query"]["tensor"], state["net.learned_query"])
    assert model.prior is None
    with pytest.raises(ValueError, match=r"the prior is conditioned on voxel2clip's lin1 tokens"):
        convert_mindeye1(state, parts="prior", subject=SUBJECT)
    with pytest.raises(ValueError, match=r"asks for \['lowlevel'\], which this MindEye1 prior_257 checkpoint "
                                         r"does not hold"):
        convert_mindeye1(state, parts="lowlevel", subject=SUBJECT)
    with pytest.raises(ValueError, match="give 'all' or a non-empty subset"):
        convert_mindeye1(state, parts="blurry", subject=SUBJECT)


@pytest.fixture(scope="module")
def with_prior():
    state = _random_state("prior_257", 5, **SMALL)
    return state, convert_mindeye1(state, subject=SUBJECT)            # parts="all": voxel2clip and prior


def test_the_prior_network_matches_the_numpy_original(with_prior):
    state, model = with_prior
    assert model.published["parts"] == ["prior", "retrieval"] and model.published["unused"] == {}
    sd = _numpy(state)
    x = np.random.default_rng(13).standard_normal((2, SMALL["voxels"]))
    lin1, _ = mindeye1_voxel2clip(sd, x, SMALL["n_blocks"], SMALL["clip_dim"])
    cond = lin1.reshape(2, SMALL["n_tokens"], SMALL["clip_dim"])        # the prior network's view(B, -1, 768)
    x_noisy = np.random.default_rng(14).standard_normal(cond.shape)
    t = np.array([3, 7])
    ref = prior_network(sd, "", x_noisy, t, cond, depth=SMALL["prior_depth"], heads=SMALL["prior_heads"])
    with torch.no_grad():
        h = model.backbone(model.adapter(torch.from_numpy(x).float(), SUBJECT))
        tokens = model.heads["pooled"].tokens(h)
        out = model.prior(torch.from_numpy(x_noisy).float(), torch.from_numpy(t), tokens)
    diffs = {"conditioning tokens": float(np.abs(tokens.double().numpy() - cond).max()),
             "prior network": float(np.abs(out.double().numpy() - ref).max())}
    print(f"mindeye1 prior: max abs diff {diffs}")
    assert all(d < 1e-5 for d in diffs.values()), diffs


@pytest.mark.parametrize("steps", [4, SMALL["timesteps"]])
def test_sampling_from_voxels_matches_the_numpy_original(with_prior, steps):
    """voxels → voxel2clip → prior sampling (DDIM below the training steps, full DDPM chain at them)."""
    state, model = with_prior
    sd = _numpy(state)
    x = np.random.default_rng(15).standard_normal((2, SMALL["voxels"]))
    lin1, _ = mindeye1_voxel2clip(sd, x, SMALL["n_blocks"], SMALL["clip_dim"])
    cond = lin1.reshape(2, SMALL["n_tokens"], SMALL["clip_dim"])
    total = SMALL["timesteps"]
    n_draws = (total if steps == total else len(ddim_times(total, steps))) + 1
    noise = np.random.default_rng(16).standard_normal((n_draws, *cond.shape))
    ref = prior_sample(sd, "", cond, noise, timesteps=steps, depth=SMALL["prior_depth"],
                       heads=SMALL["prior_heads"])
    with torch.no_grad():
        out = model.sample_prior(torch.from_numpy(x).float(), SUBJECT, timesteps=steps,
                                 noise=torch.from_numpy(noise).float())
    diff = float(np.abs(out.double().numpy() - ref).max())
    print(f"mindeye1 prior sampling ({steps} of {SMALL['timesteps']} steps): max abs diff {diff:.2e} "
          f"(scale {np.abs(ref).max():.2f})")
    assert out.shape == cond.shape and diff < 1e-5


def test_a_prior_with_a_wrong_schedule_is_refused():
    state = _random_state("prior_257", 6, **SMALL)
    state["noise_scheduler.betas"] = state["noise_scheduler.betas"] * 1.5
    with pytest.raises(ValueError, match=r"noise schedule \(noise_scheduler\.\*\) is not dalle2's 'cosine' "
                                         r"schedule for timesteps=10.*nothing was loaded"):
        convert_mindeye1(state, subject=SUBJECT)
    assert convert_mindeye1(state, parts="retrieval", subject=SUBJECT).prior is None  # kept aside, unchecked


@pytest.fixture(scope="module")
def one_token():
    state = _random_state("prior_1x768", 1, **SMALL_1X768)
    return state, convert_mindeye1(state, subject=SUBJECT)            # parts="all": voxel2clip and prior


def test_the_1x768_file_loads_voxel2clip_and_the_nousr_prior(one_token):
    state, model = one_token
    assert detect_kind(state) == "prior_1x768" and state["voxel2clip.lin1.weight"].shape == (6, 8)
    assert model.published["parts"] == ["prior", "retrieval"] and model.published["unused"] == {}
    c = model.published["config"]
    assert c["n_tokens"] == 1 and c["max_text_len"] == 5 and c["normformer"] and c["final_proj"]
    assert type(model.prior) is DiffusionPriorNetworkPrior and model.prior.layers[0].ff.post_norm is not None
    assert model.config["prior"] == "dalle2_network"
    sd = _numpy(state)
    x = np.random.default_rng(11).standard_normal((3, SMALL["voxels"]))
    lin1, clip_ref = mindeye1_voxel2clip(sd, x, SMALL["n_blocks"], SMALL["clip_dim"])
    x_noisy, t = np.random.default_rng(12).standard_normal((3, 6)), np.array([0, 4, 9])
    ref = network_prior(sd, "", x_noisy, t, lin1, depth=SMALL["prior_depth"], heads=SMALL["prior_heads"])
    with torch.no_grad():
        out = model(torch.from_numpy(x).float(), SUBJECT).embedding.double().numpy()
        h = model.backbone(model.adapter(torch.from_numpy(x).float(), SUBJECT))
        tokens = model.heads["pooled"].tokens(h)
        pred = model.prior(torch.from_numpy(x_noisy[:, None]).float(), torch.from_numpy(t), tokens)
    diffs = {"projector (retrieval)": float(np.abs(out - clip_ref).max()),
             "conditioning (lin1, text_embed)": float(np.abs(tokens[:, 0].double().numpy() - lin1).max()),
             "prior network": float(np.abs(pred[:, 0].double().numpy() - ref).max())}
    print(f"mindeye1 1x768: max abs diff {diffs} (prior scale {np.abs(ref).max():.2f})")
    assert out.shape == (3, 6) and tokens.shape == (3, 1, 6) and all(d < 1e-5 for d in diffs.values()), diffs


@pytest.mark.parametrize("steps", [4, SMALL["timesteps"]])
def test_1x768_sampling_from_voxels_matches_the_numpy_original(one_token, steps):
    """voxels → lin1 (``text_embed``) → ``p_sample_loop`` (DDIM below the training steps, DDPM at them, as
    MindEye1's ``img_variations`` path with ``timesteps=1000``) → ÷ √768 (here √6)."""
    state, model = one_token
    sd = _numpy(state)
    x = np.random.default_rng(17).standard_normal((2, SMALL["voxels"]))
    lin1, _ = mindeye1_voxel2clip(sd, x, SMALL["n_blocks"], SMALL["clip_dim"])
    total = SMALL["timesteps"]
    n_draws = (total if steps == total else len(ddim_times(total, steps))) + 1
    noise = np.random.default_rng(18).standard_normal((n_draws, 2, 6))
    ref = network_prior_sample(sd, "", lin1, noise, timesteps=steps, depth=SMALL["prior_depth"],
                               heads=SMALL["prior_heads"])
    with torch.no_grad():
        out = model.sample_prior(torch.from_numpy(x).float(), SUBJECT, timesteps=steps,
                                 noise=torch.from_numpy(noise[:, :, None]).float())
    diff = float(np.abs(out[:, 0].double().numpy() - ref).max())
    print(f"mindeye1 1x768 prior sampling ({steps} of {total} steps): max abs diff {diff:.2e} "
          f"(scale {np.abs(ref).max():.2f})")
    assert out.shape == (2, 1, 6) and diff < 1e-5


def test_the_1x768_parts_and_refusals():
    state = _random_state("prior_1x768", 2, **SMALL_1X768)
    model = convert_mindeye1(state, parts="retrieval", subject=SUBJECT)
    prior = {k for k in state if k.startswith(("net.", "noise_scheduler."))}
    assert set(model.published["unused"]) == prior and len(prior) == 13 + 6 + 2 * 11 + 2
    assert model.prior is None
    assert {v["reason"] for v in model.published["unused"].values()} == {
        "diffusion prior (dalle2 DiffusionPriorNetwork, nousr LAION config): not requested (parts=...)"}
    with pytest.raises(ValueError, match=r"1 unknown keys \(something\.else\)"):
        convert_mindeye1({**state, "something.else": torch.zeros(2)}, parts="retrieval", subject=SUBJECT)
    continuous = {k: v for k, v in state.items() if k != "net.to_time_embeds.0.weight"}
    continuous["net.to_time_embeds.0.1.net.0.0.weight"] = torch.zeros(12, 6)   # num_timesteps=None: not ours
    with pytest.raises(ValueError, match=r"unknown keys \(net\.to_time_embeds\.0\.1\.net.*missing keys "
                                         r"\(net\.to_time_embeds\.0\.weight\)"):
        convert_mindeye1(continuous, subject=SUBJECT)
    bad = {**state, "noise_scheduler.betas": state["noise_scheduler.betas"] * 1.5}
    with pytest.raises(ValueError, match=r"not dalle2's 'cosine' schedule for timesteps=10"):
        convert_mindeye1(bad, subject=SUBJECT)
    plain = {k: v for k, v in state.items() if not k.endswith((".1.3.g", "project_out.weight"))}
    model = convert_mindeye1(plain, subject=SUBJECT)          # normformer=False, final_proj=False files
    assert not model.prior.normformer and not model.prior.final_proj
    assert model.published["config"]["normformer"] is False


@pytest.fixture(scope="module")
def autoencoder():
    state = _random_state("autoencoder", 2, **SMALL_AE)
    return state, convert_mindeye1(state, subject=SUBJECT)


def test_the_autoencoder_matches_the_numpy_original(autoencoder):
    state, model = autoencoder
    assert list(model.heads) == ["pooled", "vae_decoder"] and model.published["parts"] == ["lowlevel"]
    x = np.random.default_rng(12).standard_normal((2, SMALL_AE["voxels"]))
    ref = mindeye1_autoencoder(_numpy(state), x, SMALL_AE["n_blocks"], SMALL_AE["side"], 3)
    with torch.no_grad():
        out = model(torch.from_numpy(x).float(), SUBJECT).outputs
    diff = float(np.abs(out["vae_decoder"].double().numpy() - ref).max())
    print(f"mindeye1 autoencoder: max abs diff {diff:.2e} (output scale {np.abs(ref).max():.2f})")
    assert out["vae_decoder"].shape == (2, 4, 16, 16) and diff < 1e-5
    with torch.no_grad():                                    # in float64 the two agree to round-off
        out64 = model.double()(torch.from_numpy(x), SUBJECT).outputs["vae_decoder"].numpy()
    model.float()
    print(f"  float64 model: max abs diff {np.abs(out64 - ref).max():.2e}")
    assert np.abs(out64 - ref).max() < 1e-10
    assert out["pooled"].shape == (2, SMALL_AE["hidden_dim"])   # identity: the backbone output
    unused = model.published["unused"]
    assert sorted(unused) == sorted(k for k in state if k.startswith("maps_projector."))
    assert len(unused) == 8 and all("training-only" in v["reason"] for v in unused.values())
    assert model.heads["vae_decoder"].fc.bias is None and model.backbone.blocks[0].linear.bias is None


def test_the_autoencoder_accepts_new_diffusers_attention_names(autoencoder):
    state, model = autoencoder
    renames = {"query.": "to_q.", "key.": "to_k.", "value.": "to_v.", "proj_attn.": "to_out.0."}
    new = {}
    for k, v in state.items():
        for old, name in renames.items():
            k = k.replace(f"attentions.0.{old}", f"attentions.0.{name}")
        new[k] = v
    assert "upsampler.mid_block.attentions.0.to_out.0.weight" in new
    other = convert_mindeye1(new, subject=SUBJECT)
    x = torch.randn(2, SMALL_AE["voxels"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(other(x, SUBJECT).outputs["vae_decoder"], model(x, SUBJECT).outputs["vae_decoder"])
    with pytest.raises(ValueError, match=r"asks for \['retrieval'\], which this MindEye1 autoencoder"):
        convert_mindeye1(state, parts="retrieval", subject=SUBJECT)


def test_refuses_unknown_missing_and_misshapen_keys():
    state = _random_state("prior_257", 3, **SMALL)
    bad = dict(state)
    bad["voxel2clip.extra.weight"] = torch.zeros(3)
    del bad["voxel2clip.projector.8.bias"]
    bad["voxel2clip.mlp.2.0.bias"] = torch.zeros(9)
    with pytest.raises(ValueError, match=r"not a 'mindeye1' model.*1 unknown keys "
                                         r"\(voxel2clip\.extra\.weight\).*1 missing keys "
                                         r"\(voxel2clip\.projector\.8\.bias\).*1 shape mismatches "
                                         r"\(voxel2clip\.mlp\.2\.0\.bias: file \[9\] vs expected \[8\]\)"
                                         r".*Nothing was loaded"):
        convert_mindeye1(bad, parts="retrieval", subject=SUBJECT)
    ae = _random_state("autoencoder", 3, **SMALL_AE)
    ae["lin1.bias"] = torch.zeros(1024)                      # the original's lin1 has no bias
    with pytest.raises(ValueError, match=r"1 unknown keys \(lin1\.bias\)"):
        convert_mindeye1(ae, subject=SUBJECT)
    with pytest.raises(ValueError, match=r"not a MindEye1 model: no voxel2clip\.\* keys"):
        convert_mindeye1({"ridge.linears.0.weight": torch.zeros(2, 3)})


def test_the_subject_comes_from_the_nsd_voxel_count_or_must_be_given():
    state = _random_state("prior_257", 4, **SMALL)
    with pytest.raises(ValueError, match=r"reads 11 voxels, which matches no NSD subject.*pass subject="):
        convert_mindeye1(state, parts="retrieval")
    assert {v: s for s, v in NSD_VOXELS.items()}[13039] == 5


def test_from_published_reads_a_model_state_dict_file(tmp_path, small):
    state, model = small
    path = tmp_path / "last.pth"
    torch.save({"epoch": 240, "model_state_dict": state,
                "optimizer_state_dict": {"state": {}, "param_groups": []}, "train_losses": [0.5],
                "val_losses": [0.6], "lrs": [3e-4]}, path)
    loaded = from_published("mindeye1", path, parts="retrieval", subject=SUBJECT)
    assert "mindeye1" in list_published() and loaded.published["container"] == "model_state_dict"
    x = torch.randn(2, 11, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x, SUBJECT).embedding, model(x, SUBJECT).embedding)
    full = from_published("mindeye1", path, subject=SUBJECT)                  # parts="all": with the prior
    assert full.prior is not None and full.published["unused"] == {}
    with pytest.raises(ValueError, match=r"Did you mean 'mindeye1'.*'mindbridge', 'mindeye1'"):
        from_published("mindeye_1", path)


def test_the_loaded_models_save_and_reload_as_neurodecode_models(tmp_path, small, autoencoder):
    for name, (_, model) in (("v2c", small), ("ae", autoencoder)):
        model.save_pretrained(tmp_path / name)
        back = BrainDecoder.from_pretrained(tmp_path / name)
        x = torch.randn(2, 11, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            a, b = back(x, SUBJECT).outputs, model(x, SUBJECT).outputs
        assert all(torch.equal(a[k], b[k]) for k in a)


# -- full size (research note §4.3) ------------------------------------------------------------------------
def _n(keys, prefix=""):
    return sum(int(np.prod(s)) for k, s in keys.items() if k.startswith(prefix))


def _voxel2clip_table(v: int, out: int) -> dict[str, tuple[int, ...]]:
    """Written out from the note's table (not from original_mindeye1_keys)."""
    p = "voxel2clip."
    keys = {p + "lin0.0.weight": (4096, v), p + "lin0.0.bias": (4096,), p + "lin0.1.weight": (4096,),
            p + "lin0.1.bias": (4096,)}
    for k in range(4):
        keys.update({f"{p}mlp.{k}.0.weight": (4096, 4096), f"{p}mlp.{k}.0.bias": (4096,),
                     f"{p}mlp.{k}.1.weight": (4096,), f"{p}mlp.{k}.1.bias": (4096,)})
    keys.update({p + "lin1.weight": (out, 4096), p + "lin1.bias": (out,)})
    for j, w in ((0, 768), (3, 2048), (6, 2048)):
        keys.update({f"{p}projector.{j}.weight": (w,), f"{p}projector.{j}.bias": (w,)})
    keys.update({p + "projector.2.weight": (2048, 768), p + "projector.5.weight": (2048, 2048),
                 p + "projector.8.weight": (768, 2048), p + "projector.2.bias": (2048,),
                 p + "projector.5.bias": (2048,), p + "projector.8.bias": (768,)})
    return keys


def test_full_size_keys_match_the_research_note():
    keys = original_mindeye1_keys("prior_257")
    assert len(keys) == 119 and _n(keys) == 1_003_636_468 and _n(keys, "voxel2clip.") == 947_579_904
    assert {k: keys[k] for k in _voxel2clip_table(15724, 197376)} == _voxel2clip_table(15724, 197376)
    prior = {k: s for k, s in keys.items() if not k.startswith("voxel2clip.")}
    assert len(prior) == 85
    assert all(prior[f"noise_scheduler.{n}"] == (100,) for n in ("betas", "p2_loss_weight"))
    tr = "net.causal_transformer."
    assert prior[tr + "layers.5.0.rotary_emb.freqs"] == (16,)
    assert prior[tr + "layers.0.0.to_kv.weight"] == (128, 768)
    assert prior[tr + "layers.0.1.1.weight"] == (6144, 768)
    assert prior[tr + "layers.0.1.5.weight"] == (768, 3072)
    assert prior[tr + "rel_pos_bias.relative_attention_bias.weight"] == (32, 12)
    assert prior["net.to_time_embeds.0.1.net.1.0.weight"] == (1536, 1536)
    for s, n in ((2, 941_657_088), (5, 936_582_144), (7, 935_119_872)):
        assert _n(original_mindeye1_keys("prior_257", voxels=NSD_VOXELS[s]), "voxel2clip.") == n
    one = original_mindeye1_keys("prior_1x768")
    assert {k: s for k, s in one.items() if k.startswith("voxel2clip.")} == _voxel2clip_table(15724, 768)
    assert _n(one, "voxel2clip.") == 142_076_928 and _n(one) - 142_076_928 == 101_907_208
    assert len(one) - len(_voxel2clip_table(15724, 768)) == 13 + 6 + 12 * 11 + 2
    assert one["net.causal_transformer.layers.11.1.3.g"] == (3072,)
    assert one["noise_scheduler.betas"] == (1000,) and one["net.to_time_embeds.0.weight"] == (1000, 768)
    assert one["net.null_text_encodings"] == (1, 256, 768) and one["net.learned_query"] == (768,)
    for s, gb in ((1, 2.93), (7, 2.78)):                     # × 12 bytes (weights + two AdamW moments)
        assert round(_n(original_mindeye1_keys("prior_1x768", voxels=NSD_VOXELS[s])) * 12 / 1e9, 2) == gb
    ae = original_mindeye1_keys("autoencoder")
    assert len(ae) == 114 and _n(ae) == 206_065_604
    assert len([k for k in ae if k.startswith("upsampler.")]) == 88
    assert "upsampler.mid_block.attentions.0.query.weight" in ae          # diffusers 0.13 names, as published
    assert ae["lin0.0.weight"] == (4096, 15724) and ae["lin1.weight"] == (16384, 4096)
    assert "lin0.0.bias" not in ae
    for s, gb in ((2, 2.40), (5, 2.34), (7, 2.32)):          # × 12 bytes (weights + two AdamW moments)
        assert round(_n(original_mindeye1_keys("autoencoder", voxels=NSD_VOXELS[s])) * 12 / 1e9, 2) == gb


def test_full_size_mapping_places_every_tensor_on_the_meta_device():
    """The published subject-1 files map onto neurodecode's parts (built on the meta device, no memory)."""
    from neurodecode.models.published import mindeye1

    state = {k: torch.empty(s, device="meta") for k, s in original_mindeye1_keys("prior_257").items()}
    c = mindeye1._infer_config(state, detect_kind(state))
    assert c == {k: MINDEYE1_DEFAULTS[k] for k in c} and "base_channels" not in c
    m = mindeye1_mapper(state, c, "prior_257", "1", {"retrieval"})
    model = torch.nn.Module()
    model.adapter = LinearNormAdapter({"1": 15724}, 4096, device="meta")
    model.backbone = PostNormResidualMLP(4096, 4, 0.15, device="meta")
    model.heads = torch.nn.ModuleDict({"pooled": PooledHead(4096, 197376, norm=False, projector=2048,
                                                            projector_tokens=257, device="meta")})
    assert {k: tuple(v.shape) for k, v in m.target.items()} == {k: tuple(v.shape) for k, v in
                                                                model.state_dict().items()}
    assert len(m.target) == 34 and len(m.side) == 85
    m.load_into(model)
    state = {k: torch.empty(s, device="meta") for k, s in original_mindeye1_keys("autoencoder").items()}
    c = mindeye1._infer_config(state, "autoencoder")
    assert c["block_out_channels"] == (64, 128, 256) and c["side"] == 16 and c["attention_names"] == "query"
    m = mindeye1_mapper(state, c, "autoencoder", "1", {"lowlevel"})
    model = torch.nn.Module()
    model.adapter = LinearNormAdapter({"1": 15724}, 4096, bias=False, act="silu", device="meta")
    model.backbone = PostNormResidualMLP(4096, 4, 0.25, bias=False, act="silu", device="meta")
    model.heads = torch.nn.ModuleDict({"vae_decoder": VAEDecoderHead(
        4096, (4, 64, 64), base_channels=64, block_out_channels=(64, 128, 256), dropout=0.0, bias=False,
        device="meta")})
    assert {k: tuple(v.shape) for k, v in m.target.items()} == {k: tuple(v.shape) for k, v in
                                                                model.state_dict().items()}
    assert len(m.target) == 114 - 8 and len(m.side) == 8
    m.load_into(model)


def test_full_size_1x768_mapping_places_every_tensor_on_the_meta_device():
    """The published subject-1 1×768 file maps onto voxel2clip and a nousr-config ``dalle2_network`` prior
    (meta tensors, except the schedule and rotary buffers the checks read)."""
    from neurodecode.models.published import mindeye1

    sched = cosine_schedule(1000)
    freqs = torch.tensor(1.0 / 10000 ** (np.arange(0, 32, 2) / 32), dtype=torch.float32)
    state = {}
    for k, s in original_mindeye1_keys("prior_1x768").items():
        if k.startswith("noise_scheduler."):
            state[k] = torch.tensor(sched[k.split(".")[1]], dtype=torch.float32)
        else:
            state[k] = freqs.clone() if k.endswith("rotary_emb.freqs") else torch.empty(s, device="meta")
    c = mindeye1._infer_config(state, detect_kind(state))
    defaults = {**MINDEYE1_DEFAULTS, **NOUSR_DEFAULTS, "n_tokens": 1}
    assert c == {k: defaults[k] for k in c} and c["prior_depth"] == 12 and c["timesteps"] == 1000
    m = mindeye1_mapper(state, c, "prior_1x768", "1", {"retrieval", "prior"})
    prior = DiffusionPriorNetworkPrior(**network_prior_kwargs(mindeye1._network_config(c)), device="meta")
    want = {f"prior.{k}": tuple(v.shape) for k, v in prior.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in m.target.items() if k.startswith("prior.")}
    assert got == want and len(got) == len(prior.state_dict()) and m.side == {}
    assert sum(int(np.prod(s)) for s in got.values()) == 101_907_208 - 11 * 16   # one rotary copy


# -- the parts added for MindEye1 / MindBridge, on their own -------------------------------------------------
def test_the_new_parts_check_their_options_and_take_new_subjects(autoencoder, tmp_path):
    from neurodecode.models.heads import TextHead

    with pytest.raises(ValueError, match=r"'act' parameter.*'gelu', 'silu', but got 'relu'"):
        LinearNormAdapter({"a": 3}, 4, act="relu")
    with pytest.raises(ValueError, match=r"'act' parameter"):
        PostNormResidualMLP(4, act="tanh")
    with pytest.raises(ValueError, match="bias must be True or False"):
        PostNormResidualMLP(4, bias=1)
    with pytest.raises(ValueError, match="bias must be True or False"):
        VAEDecoderHead(4, (4, 8, 8), base_channels=8, block_out_channels=(32, 32), bias="no")
    with pytest.raises(ValueError, match="norm must be True or False"):
        TextHead(4, (2, 3), norm=None)
    assert TextHead(4, (2, 3))(torch.zeros(5, 4)).shape == (5, 6)
    _, model = autoencoder
    model.save_pretrained(tmp_path / "ae")
    model = BrainDecoder.from_pretrained(tmp_path / "ae")        # a copy: the fixture's model stays as loaded
    model.add_subject("new", 7, seed=0)
    layer = model.adapter["new"]
    assert layer.linear.weight.shape == (8, 7) and layer.linear.bias is None         # bias=False kept
    assert model.subject_parameter_names("new") == ["adapter.layers.new.linear.weight",
                                                    "adapter.layers.new.norm.weight",
                                                    "adapter.layers.new.norm.bias"]
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 7), "new").outputs["vae_decoder"].shape == (2, 4, 16, 16)
