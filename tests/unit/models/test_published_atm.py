"""ATM-S (``Retrieval/ATMS_retrieval.py``) read with ``from_published("atm", ...)``.

The reference below is an independent NumPy transcription of ``ATMS.forward`` in eval mode (iTransformer with
its subject token, ``AttentionLayer`` + ``FullAttention``, post-norm ``EncoderLayer``, the encoder's final
LayerNorm, ``enc_out[:, :63]``, ``PatchEmbedding``'s ShallowNet and ``Rearrange('b e h w -> b (h w) e')``,
``Proj_eeg``), run on a small configuration with random weights under the original key names.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _published_numpy import batch_norm_eval, elu, gelu, layer_norm, softmax

from neurodecode.models import BrainDecoder, from_published, list_published
from neurodecode.models.published.atm import ATMS_DEFAULTS, convert_atms, original_atms_keys

# small: d_model 42 with 4 heads of 42 // 4 = 10 (inner width 40 ≠ 42, as ATM's 248 ≠ 250); 5 channels + the
# subject token, the spatial conv spans the first 5 tokens (ATM: 63 of 64); a 4-row token table
SMALL = dict(n_chans=5, n_times=42, d_model=42, n_heads=4, e_layers=2, d_ff=8, n_filters=3, conv_kernel=5,
             pool_size=7, pool_stride=3, proj_dim=12, n_ids=4, n_linear=2, keep_tokens=5, ff="conv")
OPTIONS = dict(n_chans=5, n_heads=4, pool_size=7, pool_stride=3, variant="retrieval")
E = "encoder.enc_embedding."


def _random_state(seed: int = 0, **config) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in original_atms_keys(**config).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.tensor(rng.uniform(0.5, 1.5, shape), dtype=torch.float32)
        else:
            state[key] = torch.tensor(0.3 * rng.standard_normal(shape), dtype=torch.float32)
    return state


def _numpy_atms(sd: dict[str, np.ndarray], x: np.ndarray, subject_id: int, c: dict) -> np.ndarray:
    """``ATMS.forward(x, subject_ids)`` in eval mode, in float64."""
    e = x @ sd[E + "value_embedding.weight"].T + sd[E + "value_embedding.bias"]          # (B, C, d)
    table = sd[E + "subject_embedding.subject_embedding.weight"]
    token = sd[E + "subject_embedding.shared_embedding"][0] if subject_id >= len(table) else table[subject_id]
    e = np.concatenate([np.broadcast_to(token, (len(x), 1, token.size)), e], axis=1)    # (B, 1 + C, d)
    h, dk = c["n_heads"], c["d_model"] // c["n_heads"]
    for i in range(c["e_layers"]):
        p = f"encoder.encoder.attn_layers.{i}."
        proj = {n: e @ sd[f"{p}attention.{n}_projection.weight"].T + sd[f"{p}attention.{n}_projection.bias"]
                for n in ("query", "key", "value")}
        q, k, v = (proj[n].reshape(len(x), -1, h, dk) for n in ("query", "key", "value"))
        a = softmax(np.einsum("blhe,bshe->bhls", q, k) / np.sqrt(dk), axis=-1)
        o = np.einsum("bhls,bshd->blhd", a, v).reshape(len(x), -1, h * dk)
        e = e + o @ sd[p + "attention.out_projection.weight"].T + sd[p + "attention.out_projection.bias"]
        e = layer_norm(e, sd[p + "norm1.weight"], sd[p + "norm1.bias"])
        y = gelu(np.einsum("fd,bld->blf", sd[p + "conv1.weight"][:, :, 0], e) + sd[p + "conv1.bias"])
        y = np.einsum("df,blf->bld", sd[p + "conv2.weight"][:, :, 0], y) + sd[p + "conv2.bias"]
        e = layer_norm(e + y, sd[p + "norm2.weight"], sd[p + "norm2.bias"])
    e = layer_norm(e, sd["encoder.encoder.norm.weight"], sd["encoder.encoder.norm.bias"])
    e = e[:, : c["keep_tokens"]]                                                          # enc_out[:, :63]
    # PatchEmbedding: Conv2d(1, F, (1, K)) → AvgPool2d((1, P), (1, S)) → BN → ELU → Conv2d(F, F, (63, 1)) → …
    w0, kk = sd["enc_eeg.0.tsconv.0.weight"], c["conv_kernel"]
    width = e.shape[2] - kk + 1
    z = sum(w0[None, :, 0, 0, j, None, None] * e[:, None, :, j:j + width] for j in range(kk))
    z = z + sd["enc_eeg.0.tsconv.0.bias"][None, :, None, None]
    n_pool = (width - c["pool_size"]) // c["pool_stride"] + 1
    z = np.stack([z[..., s * c["pool_stride"]: s * c["pool_stride"] + c["pool_size"]].mean(-1)
                  for s in range(n_pool)], axis=-1)                                       # (B, F, 63, n_pool)
    bn = lambda t, i: batch_norm_eval(t, *(sd[f"enc_eeg.0.tsconv.{i}.{w}"]  # noqa: E731
                                           for w in ("weight", "bias", "running_mean", "running_var")))
    z = elu(bn(z, 2))
    z = np.einsum("gfh,bfhw->bgw", sd["enc_eeg.0.tsconv.4.weight"][..., 0], z) \
        + sd["enc_eeg.0.tsconv.4.bias"][None, :, None]                                  # (B, F, n_pool)
    z = elu(bn(z[:, :, None, :], 5))[:, :, 0, :]
    z = np.einsum("gf,bfw->bgw", sd["enc_eeg.0.projection.0.weight"][:, :, 0, 0], z) \
        + sd["enc_eeg.0.projection.0.bias"][None, :, None]
    flat = z.transpose(0, 2, 1).reshape(len(x), -1)            # 'b e (h) (w) -> b (h w) e', then view(B, -1)
    u = flat @ sd["proj_eeg.0.weight"].T + sd["proj_eeg.0.bias"]
    u = u + gelu(u) @ sd["proj_eeg.1.fn.1.weight"].T + sd["proj_eeg.1.fn.1.bias"]
    return layer_norm(u, sd["proj_eeg.2.weight"], sd["proj_eeg.2.bias"])


@pytest.fixture(scope="module")
def small():
    state = _random_state(0, **SMALL)
    model = convert_atms(state, subjects=[2, 5], **OPTIONS)
    return state, model


@pytest.mark.parametrize("subject", [2, 5])   # 5 ≥ the 4-row table: ATM's shared token
def test_forward_matches_the_numpy_original(small, subject):
    state, model = small
    x = np.random.default_rng(subject).standard_normal((3, SMALL["n_chans"], SMALL["n_times"]))
    ref = _numpy_atms({k: v.double().numpy() for k, v in state.items()}, x, subject, SMALL)
    with torch.no_grad():
        out = model(torch.from_numpy(x).float(), subject).embedding.double().numpy()
    diff = float(np.abs(out - ref).max())
    print(f"atm subject {subject}: max abs diff {diff:.2e}")
    assert diff < 1e-5


def test_tokens_follow_atm_ids_and_the_shared_rule(small):
    state, model = small
    table = state[E + "subject_embedding.subject_embedding.weight"]
    assert torch.equal(model.adapter.entries["2"].token, table[2])          # 1-based ids index the table
    assert torch.equal(model.adapter.entries["5"].token, state[E + "subject_embedding.shared_embedding"][0])
    unused = model.published["unused"]
    assert {f"{E}subject_embedding.subject_embedding.weight[{r}]" for r in (0, 1, 3)} <= set(unused)
    assert "logit_scale" in unused and "subject_wise_linear.1.bias" in unused
    # every original tensor is either placed or listed aside
    assert isinstance(model, BrainDecoder) and not model.training


def test_projection_columns_are_permuted_not_copied(small):
    state, model = small
    w_atm = state["proj_eeg.0.weight"]
    w_nd = model.backbone.proj.weight.detach()
    n_filters, n_pooled = SMALL["n_filters"], 11
    f, p = 2, 7
    assert torch.equal(w_nd[:, f * n_pooled + p], w_atm[:, p * n_filters + f])
    assert not torch.equal(w_nd, w_atm)


def test_linear_feed_forward_names_are_accepted():
    conv = _random_state(1, **SMALL)
    lin = {k.replace("conv1.weight", "linear1.weight").replace("conv2.weight", "linear2.weight")
           .replace("conv1.bias", "linear1.bias").replace("conv2.bias", "linear2.bias"):
           (v[..., 0] if k.endswith(("conv1.weight", "conv2.weight")) else v) for k, v in conv.items()}
    a, b = convert_atms(conv, subjects=[1], **OPTIONS), convert_atms(lin, subjects=[1], **OPTIONS)
    x = torch.randn(2, 5, 42, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x, 1).embedding, b(x, 1).embedding)


def test_refuses_unknown_missing_and_misshapen_keys():
    state = _random_state(2, **SMALL)
    bad = dict(state)
    bad["encoder.extra.weight"] = torch.zeros(3)
    del bad["proj_eeg.2.bias"]
    bad["proj_eeg.1.fn.1.bias"] = torch.zeros(13)
    with pytest.raises(ValueError, match=r"1 unknown keys \(encoder\.extra\.weight\).*1 missing keys "
                                         r"\(proj_eeg\.2\.bias\).*1 shape mismatches "
                                         r"\(proj_eeg\.1\.fn\.1\.bias: file \[13\] vs expected \[12\]\)"):
        convert_atms(bad, subjects=[1], **OPTIONS)


def test_refuses_the_models_atms_refactor():
    state = _random_state(3, **{**SMALL, "n_ids": 2})
    with pytest.raises(ValueError, match="models/atms.py"):
        convert_atms(state, subjects=[1], **{k: v for k, v in OPTIONS.items() if k != "variant"})


def test_from_published_reads_a_saved_state_dict(tmp_path, small):
    state, model = small
    path = tmp_path / "40.pth"
    torch.save(state, path)
    loaded = from_published("atm", path, subjects=[2, 5], **OPTIONS)
    assert "atm" in list_published() and loaded.published["container"] == "<bare>"
    x = torch.randn(2, 5, 42, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x, 5).embedding, model(x, 5).embedding)


# -- the full-size key list: EEG_Image_decode/Retrieval/ATMS_retrieval.py ATMS() (research note §5.3) --------
FULL_KEYS = {
    "logit_scale": (),
    E + "mask_token": (1, 250), E + "value_embedding.weight": (250, 250), E + "value_embedding.bias": (250,),
    E + "position_embedding.pe": (1, 5000, 250), E + "temporal_embedding.embed.weight": (250, 4),
    E + "subject_embedding.shared_embedding": (1, 250), E + "subject_embedding.mask_embedding": (1, 250),
    E + "subject_embedding.subject_embedding.weight": (10, 250),
    **{f"encoder.encoder.attn_layers.0.attention.{n}_projection.weight": (248, 250)
       for n in ("query", "key", "value")},
    **{f"encoder.encoder.attn_layers.0.attention.{n}_projection.bias": (248,)
       for n in ("query", "key", "value")},
    "encoder.encoder.attn_layers.0.attention.out_projection.weight": (250, 248),
    "encoder.encoder.attn_layers.0.attention.out_projection.bias": (250,),
    "encoder.encoder.attn_layers.0.conv1.weight": (256, 250, 1),
    "encoder.encoder.attn_layers.0.conv1.bias": (256,),
    "encoder.encoder.attn_layers.0.conv2.weight": (250, 256, 1),
    "encoder.encoder.attn_layers.0.conv2.bias": (250,),
    **{f"encoder.encoder.attn_layers.0.norm{j}.{w}": (250,) for j in (1, 2) for w in ("weight", "bias")},
    "encoder.encoder.norm.weight": (250,), "encoder.encoder.norm.bias": (250,),
    **{f"subject_wise_linear.{j}.weight": (250, 250) for j in (0, 1)},
    **{f"subject_wise_linear.{j}.bias": (250,) for j in (0, 1)},
    "enc_eeg.0.tsconv.0.weight": (40, 1, 1, 25), "enc_eeg.0.tsconv.0.bias": (40,),
    **{f"enc_eeg.0.tsconv.{i}.{w}": (40,) for i in (2, 5)
       for w in ("weight", "bias", "running_mean", "running_var")},
    "enc_eeg.0.tsconv.2.num_batches_tracked": (), "enc_eeg.0.tsconv.5.num_batches_tracked": (),
    "enc_eeg.0.tsconv.4.weight": (40, 40, 63, 1), "enc_eeg.0.tsconv.4.bias": (40,),
    "enc_eeg.0.projection.0.weight": (40, 40, 1, 1), "enc_eeg.0.projection.0.bias": (40,),
    "proj_eeg.0.weight": (1024, 1440), "proj_eeg.0.bias": (1024,),
    "proj_eeg.1.fn.1.weight": (1024, 1024), "proj_eeg.1.fn.1.bias": (1024,),
    "proj_eeg.2.weight": (1024,), "proj_eeg.2.bias": (1024,),
}
BUFFERS = ("position_embedding.pe", "running_mean", "running_var", "num_batches_tracked")


def test_full_size_keys_match_the_original():
    expected = original_atms_keys()
    assert expected == FULL_KEYS
    assert len(expected) == 53
    assert sum(int(np.prod(s)) for s in expected.values()) == 4_452_575
    n_params = sum(int(np.prod(s)) for k, s in expected.items() if not k.endswith(BUFFERS))
    assert n_params == 3_202_413


def test_full_size_mapping_places_every_tensor():
    """The published configuration maps onto a neurodecode model on the meta device (no memory)."""
    state = {k: torch.empty(s, device="meta") for k, s in FULL_KEYS.items()}
    from neurodecode.models.published import atm

    c = atm._infer_config(state, {})
    assert {k: c[k] for k in ATMS_DEFAULTS} == ATMS_DEFAULTS
    model_keys = original_atms_keys(**c)
    assert model_keys == FULL_KEYS


def test_the_loaded_model_saves_and_reloads_as_a_neurodecode_model(tmp_path, small):
    _, model = small
    model.save_pretrained(tmp_path / "atm")
    back = BrainDecoder.from_pretrained(tmp_path / "atm")
    x = torch.randn(2, 5, 42, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(back(x, 2).embedding, model(x, 2).embedding)
