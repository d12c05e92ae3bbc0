"""The run's targets: which CLIP tokens (``targets.tokens``) and what a published model is scored against."""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_clip import TINY, TOKEN_SHAPE, make_tiny_clip

from neurodecode.config import load_config
from neurodecode.datasets import load_nsd, simulate
from neurodecode.workflow._targets import scoring_targets, stimulus_targets


def _trials(folder):
    simulate("nsd", folder / "nsd", n_subjects=1, n_sessions=1, trials_per_session=30, shared_fraction=0.3,
             image_size=16, seed=0, verbose="warning")
    return load_nsd(folder / "nsd", 1, verbose="warning")


def test_tokens_option_is_for_open_clip_encoders_only():
    with pytest.raises(ValueError, match="targets.tokens='projected_cls' is for open_clip encoders"):
        load_config("demo", ["targets.tokens=projected_cls"])
    with pytest.raises(ValueError, match="raw.*projected_cls|projected_cls.*raw"):
        load_config("demo", ["targets.tokens=cls"])


@pytest.mark.parametrize(("mode", "shape"),
                         [("raw", TOKEN_SHAPE), ("projected_cls", (TOKEN_SHAPE[0] + 1, 32))])
def test_projected_cls_tokens_are_mindeye1s_257_token_layout(tmp_path, mode, shape):
    """'projected_cls': the pooled embedding, then the projected patch tokens (MindEye1's targets)."""
    weights = make_tiny_clip(tmp_path)
    config = load_config("demo", [f"targets.encoder={TINY}", f"targets.weights={weights}", "device=cpu",
                                  "targets.output=tokens", f"targets.tokens={mode}",
                                  "models.mlp.heads=[pooled,tokens]",
                                  f"targets.cache_dir={tmp_path / 'cache'}"])
    trials = _trials(tmp_path)
    pooled, token_shape = stimulus_targets(config, trials)
    assert token_shape == shape and pooled.dim == 32
    test = trials.select(split="test")
    width = int(np.prod(shape))
    tokens = scoring_targets(config, trials, test, width)
    assert tokens.dim == width and tokens.token_shape == shape
    if mode == "projected_cls":  # the first token is the pooled embedding itself
        ids = test.events["stimulus_id"].drop_duplicates().tolist()
        np.testing.assert_allclose(tokens.lookup(ids)[:, :32], pooled.lookup(ids), rtol=1e-5, atol=1e-6)
    assert scoring_targets(config, trials, test, 32) is not tokens  # a pooled-width model: pooled targets
