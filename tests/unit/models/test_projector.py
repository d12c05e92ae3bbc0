"""MindEye2's contrastive projector (``Projector``) and the pooled head that can end with it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neurodecode.models import BrainDecoder, PooledHead, init_parameters_
from neurodecode.models.heads import Projector

# MindEye2 (src/models.py, src/Train.ipynb): clip_proj = projector(clip_size, clip_size, h=clip_size) with
# clip_size = clip_emb_dim = 1664 (OpenCLIP ViT-bigG/14 tokens), applied to 256 tokens.
CLIP_SIZE, N_TOKENS = 1664, 256


def _expected(dim, h):
    # LN(dim) + Linear(dim→h) + LN(h) + Linear(h→h) + LN(h) + Linear(h→dim)
    return 2 * dim + (dim * h + h) + 2 * h + (h * h + h) + 2 * h + (h * dim + dim)


def _n(module):
    return sum(p.numel() for p in module.parameters())


def test_projector_parameter_count_at_mindeye2_sizes_on_meta():
    proj = Projector(CLIP_SIZE, device="meta")
    assert all(p.is_meta for p in proj.parameters())
    assert _n(proj) == _expected(CLIP_SIZE, CLIP_SIZE) == Projector.n_parameters(CLIP_SIZE) == 8_321_664
    # another inner width (MindEye2's projector() default h=2048)
    assert _n(Projector(CLIP_SIZE, 2048, device="meta")) == _expected(CLIP_SIZE, 2048) \
        == Projector.n_parameters(CLIP_SIZE, 2048)
    # the MindEye2 data flow as a pooled head: 4096-wide backbone → 256 × 1664 tokens, projected per token
    head = PooledHead(4096, N_TOKENS * CLIP_SIZE, projector=True, projector_tokens=N_TOKENS, device="meta")
    assert _n(head) == 2 * 4096 + (4096 * N_TOKENS * CLIP_SIZE + N_TOKENS * CLIP_SIZE) + 8_321_664
    assert head.out_shape == (N_TOKENS * CLIP_SIZE,)


def test_projector_layout_matches_mindeye2_state_dict_names():
    proj = Projector(6, 10)
    assert list(proj.state_dict()) == [f"{i}.{w}" for i in (0, 2, 3, 5, 6, 8) for w in ("weight", "bias")]
    assert [type(m).__name__ for m in proj] == ["LayerNorm", "GELU", "Linear"] * 3
    assert (proj[2].in_features, proj[2].out_features, proj[5].out_features, proj[8].out_features) == (6, 10, 10, 6)


def test_projector_forward_equals_its_definition_on_any_leading_shape():
    torch.manual_seed(0)
    proj = Projector(6, 10)
    for lin in (proj[2], proj[5], proj[8]):  # non-trivial norms too
        lin.weight.data.normal_()
    for ln in (proj[0], proj[3], proj[6]):
        ln.weight.data.uniform_(0.5, 1.5)
        ln.bias.data.normal_()
    x = torch.randn(3, 4, 6)

    def ref(v):
        for ln, lin in ((proj[0], proj[2]), (proj[3], proj[5]), (proj[6], proj[8])):
            v = F.linear(F.gelu(F.layer_norm(v, ln.normalized_shape, ln.weight, ln.bias, ln.eps)),
                         lin.weight, lin.bias)
        return v

    out = proj(x)
    assert out.shape == (3, 4, 6)
    torch.testing.assert_close(out, ref(x))
    torch.testing.assert_close(proj(x[:, 1]), out[:, 1])  # token by token


def test_pooled_head_shapes_and_token_view():
    h = PooledHead(8, 12)
    assert h.projector is None and h(torch.randn(3, 8)).shape == (3, 12)
    assert sorted(h.state_dict()) == ["norm.bias", "norm.weight", "proj.bias", "proj.weight"]  # unchanged default
    hp = PooledHead(8, 12, projector=True)
    assert hp.projector.hidden == 12 and hp(torch.randn(3, 8)).shape == (3, 12)
    assert PooledHead(8, 12, projector=32).projector.hidden == 32
    ht = PooledHead(8, 12, projector=True, projector_tokens=4)
    assert ht.projector.dim == 3 and ht.projector.hidden == 3
    x = torch.randn(5, 8)
    out = ht(x)
    assert out.shape == (5, 12)
    lin = ht.proj(ht.norm(x)).reshape(5, 4, 3)
    torch.testing.assert_close(out, ht.projector(lin).reshape(5, 12))  # per token, flattened token-major


def test_pooled_head_errors():
    with pytest.raises(ValueError, match="divide"):
        PooledHead(8, 12, projector=True, projector_tokens=5)
    with pytest.raises(ValueError, match="only used with a projector"):
        PooledHead(8, 12, projector_tokens=4)
    with pytest.raises(ValueError, match="projector"):
        PooledHead(8, 12, projector=0)
    with pytest.raises(ValueError, match="hidden"):
        Projector(6, -1)


def test_projector_init_reproducible_from_a_seed():
    def build(seed):
        m = Projector(16, 24, device="meta")
        m.to_empty(device="cpu")
        return init_parameters_(m, torch.Generator().manual_seed(seed))

    a, b, c = build(0), build(0), build(1)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
        if k.endswith("weight") and k.split(".")[0] in ("2", "5", "8"):
            assert not torch.equal(va, vc)
    state = torch.get_rng_state()
    m1 = BrainDecoder({1: 30, 2: 20}, embed_dim=12, hidden_dim=16, n_blocks=1, seed=3,
                      head_kwargs={"pooled": {"projector": True}})
    m2 = BrainDecoder({1: 30, 2: 20}, embed_dim=12, hidden_dim=16, n_blocks=1, seed=3,
                      head_kwargs={"pooled": {"projector": True}})
    assert torch.equal(torch.get_rng_state(), state)  # seeded builds leave the global RNG alone
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert any(k.startswith("heads.pooled.projector.") for k in s1)
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k], rtol=0, atol=0)


def test_decoder_with_projector_save_load_round_trip(tmp_path):
    model = BrainDecoder({1: 30, 2: 20}, embed_dim=12, hidden_dim=16, n_blocks=1, backbone="mixer", seed=0,
                         heads=("pooled", "tokens"), token_shape=(4, 3),
                         head_kwargs={"pooled": {"projector": 24}})
    assert model.config["head_kwargs"] == {"pooled": {"projector": 24}}
    assert isinstance(model.heads["pooled"].projector, Projector) and model.heads["pooled"].projector.hidden == 24
    x = torch.randn(5, 30)
    model.eval()
    with torch.no_grad():
        out = model(x, subject=1)
    model.save_pretrained(tmp_path / "m")
    loaded = BrainDecoder.from_pretrained(tmp_path / "m")
    assert loaded.config["head_kwargs"] == {"pooled": {"projector": 24}}
    assert list(loaded.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        again = loaded(x, subject=1)
    torch.testing.assert_close(again.embedding, out.embedding, rtol=0, atol=0)
    torch.testing.assert_close(again.tokens, out.tokens, rtol=0, atol=0)
    # gradients reach the projector, the head's linear and the backbone
    model.train()
    model(x, subject=1).embedding.square().sum().backward()
    assert model.heads["pooled"].projector[8].weight.grad.abs().sum() > 0
    assert model.heads["pooled"].proj.weight.grad.abs().sum() > 0
