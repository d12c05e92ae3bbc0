"""What conditions the generator in ``neurodecode reconstruct``: a decoder's diffusion-prior samples or its
decoded embedding, each checked against the generator's kind (pooled / tokens) and width."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from neurodecode.workflow.reconstruct import _conditioning


class _Model:
    def __init__(self, n_tokens):
        self.prior = None if n_tokens is None else object()
        self.n_tokens, self.calls = n_tokens, []

    def predict_prior(self, test, *, timesteps, seed, device):
        self.calls.append((timesteps, seed))
        return np.arange(len(test) * self.n_tokens * 8, dtype=np.float32).reshape(len(test), self.n_tokens, 8)


def _cond(model, kind, dim, use_prior=True):
    rec = SimpleNamespace(embed_kind=kind, embed_dim=dim)
    return _conditioning(model, [0, 1], np.ones((2, 24), np.float32), rec, use_prior=use_prior, prior_steps=3,
                         seed=5, device="cpu", where="the generator", run_dir=Path("run"), encoder="pixels")


def test_token_prior_conditions_a_token_backend():
    model = _Model(3)
    out = _cond(model, "tokens", 8)
    assert out.shape == (2, 3, 8) and model.calls == [(3, 5)]
    with pytest.raises(ValueError, match="samples tokens image embeddings .* takes pooled 8-d"):
        _cond(_Model(3), "pooled", 8)


def test_a_one_token_prior_is_a_pooled_embedding():
    """MindEye1's 1×768 prior: one pooled embedding, never fed to a token backend (Versatile's 257 tokens)."""
    out = _cond(_Model(1), "pooled", 8)
    assert out.shape == (2, 8)
    np.testing.assert_array_equal(out, np.arange(16, dtype=np.float32).reshape(2, 8))
    with pytest.raises(ValueError, match="samples pooled image embeddings .* takes tokens 8-d"):
        _cond(_Model(1), "tokens", 8)


def test_without_a_prior_or_with_no_prior_the_decoded_embedding_conditions():
    assert _cond(_Model(None), "pooled", 24).shape == (2, 24)
    model = _Model(3)
    assert _cond(model, "pooled", 24, use_prior=False).shape == (2, 24) and model.calls == []
    with pytest.raises(ValueError, match="outputs 24-d embeddings .* takes 32-d"):
        _cond(_Model(None), "pooled", 32)
