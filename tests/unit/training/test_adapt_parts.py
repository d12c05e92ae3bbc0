"""The pieces of ``adapt_subject``, each on its own: argument checks, the adapter set-up, parameter roles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neurodecode.datasets import BrainTrials, DataLeakageError
from neurodecode.models import BrainDecoder
from neurodecode.training.adapt import _check_adapt_args, _parameter_roles, _prepare_adapter


def _trials(subjects=(3,), n=8, p=5, split="train"):
    parts = []
    for s in subjects:
        ev = pd.DataFrame(dict(subject=s, session=1, stimulus_id=np.arange(n), repetition=0, split=split))
        parts.append(BrainTrials(np.ones((n, p), np.float32), ev, {"modality": "fmri"}))
    return BrainTrials.concatenate(parts)


def _decoder():
    return BrainDecoder({1: 4, 2: 6}, embed_dim=3, hidden_dim=8, n_blocks=1, seed=0)


def test_check_adapt_args_returns_the_subject_and_int_epochs():
    assert _check_adapt_args(_trials(), np.int64(2), 5, 0.5, False, None) == (3, 2, 5)
    assert _check_adapt_args(_trials(), 0, 1, 0.0, True, "ckpt") == (3, 0, 1)


@pytest.mark.parametrize("trials, args, error, match", [
    (_trials((1, 2)), (1, 2, 0.1, False, None), ValueError, "one subject at a time"),
    (_trials(split="test"), (1, 2, 0.1, False, None), DataLeakageError, None),
    (_trials(), (-1, 2, 0.1, False, None), ValueError, "freeze_epochs must be an int >= 0"),
    (_trials(), (0, 0, 0.1, False, None), ValueError, "max_epochs must be an int >= 1"),
    (_trials(), (True, 2, 0.1, False, None), ValueError, "freeze_epochs"),
    (_trials(), (3, 2, 0.1, False, None), ValueError, "must be <= max_epochs"),
    (_trials(), (1, 2, 1.5, False, None), ValueError, "shared_lr_scale must be in"),
    (_trials(), (1, 2, 0.1, True, None), ValueError, "resume=True needs checkpoint_dir"),
])
def test_check_adapt_args_refuses(trials, args, error, match):
    with pytest.raises(error, match=match):
        _check_adapt_args(trials, *args)


def test_prepare_adapter_adds_resets_or_keeps():
    model = _decoder()
    _prepare_adapter(model, 7, 9, reset=True, positions=None, seed=1)
    assert model.n_inputs["7"] == 9
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in set(model.subject_parameter_names(1)):
                p.add_(1.0)
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    _prepare_adapter(model, 1, 4, reset=False, positions=None, seed=1)  # fine-tuned from its weights
    assert all(torch.equal(moved[k], v) for k, v in model.state_dict().items())
    _prepare_adapter(model, 1, 4, reset=True, positions=None, seed=1)
    own = set(model.subject_parameter_names(1))
    state = dict(model.named_parameters())
    assert all(not torch.equal(state[n], moved[n]) for n in own)  # re-initialised
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()
               if not any(k == n for n in own))  # nothing else moved
    with pytest.raises(ValueError, match="has 5 features.*expects 4"):
        _prepare_adapter(model, 1, 5, reset=True, positions=None, seed=1)


def test_parameter_roles_split_own_others_and_shared():
    model = _decoder()
    model.add_subject(3, 5, seed=0)
    own, others = _parameter_roles(model, 3)
    assert own == set(model.subject_parameter_names(3)) and own
    assert others == set(model.subject_parameter_names(1)) | set(model.subject_parameter_names(2))
    assert not own & others
    shared = set(dict(model.named_parameters())) - own - others
    assert shared  # the encoder shared by every subject
