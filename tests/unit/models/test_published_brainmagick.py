"""brainmagick's SimpleConv (``bm/models/simpleconv.py``, ``bm/models/common.py``) via ``from_published``.

The reference below is an independent NumPy transcription of ``SimpleConv.forward`` in eval mode with the
``clip_conv.yaml`` options (``ChannelMerger`` over ``PositionGetter`` layouts and ``FourierEmb``,
``initial_linear``, ``SubjectLayers`` gathered by subject index, ``ConvSequence`` with dilation reset,
BatchNorm, GELU, skip when shapes match and GLU convolutions, the ``complex_out`` final layers with their
``ConvTranspose1d``, cropped to the input length), on a small configuration with random weights.
"""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from _published_numpy import batch_norm_eval, conv1d, gelu, softmax

from neurodecode.models import from_published, list_published
from neurodecode.models.published.brainmagick import (
    SIMPLECONV_DEFAULTS,
    convert_simpleconv,
    original_simpleconv_keys,
)

# small: 9 subject layers (subjects use indices 3 and 7), 6 merged channels, Fourier dim 2·4² = 32
# (brainmagick asserts pos_dim % 4 == 0), hidden 8, depth 5 with dilation period 3 (dilations 1, 2, 4, 1, 2),
# GLUs after blocks 1 and 3, output 5 channels
SMALL = dict(n_subjects=9, merger_channels=6, pos_dim=32, initial_linear=6, hidden=8, depth=5, kernel_size=3,
             dilation_period=3, glu=2, glu_context=1, out_channels=5)
N_TIMES = 20
SUBJECT_INDEX = {"a": 3, "b": 7}


def _positions() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.uniform(-0.1, 0.1, (7, 2))
    a[4] = np.nan                                # a channel missing from the layout
    return {"a": a, "b": rng.uniform(-0.1, 0.1, (5, 2))}


def _random_state(seed: int = 0, prefix: str = "0.", **config) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in original_simpleconv_keys(prefix, **config).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(11, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.tensor(rng.uniform(0.5, 1.5, shape), dtype=torch.float32)
        else:
            state[key] = torch.tensor(0.4 * rng.standard_normal(shape), dtype=torch.float32)
    return state


def _layout(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``PositionGetter.get_recording_layout``: min-max over the channels in the layout, others INVALID."""
    valid = np.isfinite(pos).all(1)
    out = np.full(pos.shape, -0.1)
    lo, hi = pos[valid].min(0), pos[valid].max(0)
    out[valid] = (pos[valid] - lo) / (hi - lo)
    return out, ~valid


def _fourier(pos: np.ndarray, dim: int, margin: float = 0.2) -> np.ndarray:
    n = int(round(math.sqrt(dim // 2)))
    width = 1 + 2 * margin
    emb = np.zeros((len(pos), dim))
    for c, (x, y) in enumerate(pos + margin):
        loc = [2 * math.pi / width * (x * i + y * j) for i in range(n) for j in range(n)]
        emb[c] = np.concatenate([np.cos(loc), np.sin(loc)])
    return emb


def _numpy_simpleconv(sd: dict[str, np.ndarray], meg: np.ndarray, pos: np.ndarray, index: int,
                      c: dict) -> np.ndarray:
    """``SimpleConv.forward({"meg": meg}, batch)`` in eval mode, in float64: ``(B, out_channels, T)``."""
    sd = {k[2:]: v for k, v in sd.items()}
    layout, invalid = _layout(pos)
    scores = sd["merger.heads"] @ _fourier(layout, c["pos_dim"]).T                       # (O, C)
    scores[:, invalid] = -np.inf
    x = np.einsum("bct,oc->bot", meg, softmax(scores, axis=1))
    x = conv1d(x, sd["initial_linear.0.weight"], sd["initial_linear.0.bias"])
    x = np.einsum("bct,cd->bdt", x, sd["subject_layers.weights"][index])
    dilation = 1
    for k in range(c["depth"]):
        if k % c["dilation_period"] == 0:
            dilation = 1
        p = f"encoders.meg.sequence.{k}."
        old = x
        x = conv1d(x, sd[p + "0.weight"], sd[p + "0.bias"], dilation, dilation * (c["kernel_size"] // 2))
        stats = (sd[p + f"1.{w}"] for w in ("weight", "bias", "running_mean", "running_var"))
        x = gelu(batch_norm_eval(x, *stats))
        dilation *= 2
        if x.shape == old.shape:
            x = x + old
        if (k + 1) % c["glu"] == 0:
            g = conv1d(x, sd[f"encoders.meg.glus.{k}.0.weight"], sd[f"encoders.meg.glus.{k}.0.bias"], 1,
                       c["glu_context"])
            half = g.shape[1] // 2
            x = g[:, :half] / (1 + np.exp(-g[:, half:]))
    x = gelu(conv1d(x, sd["final.0.weight"], sd["final.0.bias"]))
    x = np.einsum("bit,io->bot", x, sd["final.2.weight"][:, :, 0]) + sd["final.2.bias"][None, :, None]
    return x[:, :, : meg.shape[-1]]


@pytest.fixture(scope="module")
def small():
    state = _random_state(0, **SMALL)
    model = convert_simpleconv(state, positions=_positions(), subject_index=SUBJECT_INDEX, n_times=N_TIMES,
                               dilation_period=3)
    return state, model


@pytest.mark.parametrize("subject", ["a", "b"])
def test_forward_matches_the_numpy_original(small, subject):
    state, model = small
    pos = _positions()[subject]
    meg = np.random.default_rng(len(pos)).standard_normal((3, len(pos), N_TIMES))
    ref = _numpy_simpleconv({k: v.double().numpy() for k, v in state.items()}, meg, pos,
                            SUBJECT_INDEX[subject], SMALL)
    with torch.no_grad():
        out = model(torch.from_numpy(meg).float(), subject).embedding
    out = out.reshape(3, N_TIMES, SMALL["out_channels"]).transpose(1, 2).double().numpy()   # frame-major rows
    diff = float(np.abs(out - ref).max())
    print(f"brainmagick subject {subject}: max abs diff {diff:.2e}")
    assert diff < 1e-5


def test_subject_layers_are_transposed_rows_of_the_index(small):
    state, model = small
    w = state["0.subject_layers.weights"]
    assert torch.equal(model.adapter.subject_layer.weights["a"], w[3].T)
    assert torch.equal(model.adapter.subject_layer.weights["b"], w[7].T)
    assert torch.equal(model.backbone.proj_out2.weight, state["0.final.2.weight"].transpose(0, 1))
    unused = model.published["unused"]
    assert {f"0.subject_layers.weights[{i}]" for i in (0, 1, 2, 4, 5, 6, 8)} == set(unused)
    # the first conv is not residual (270 → 320 in the published model), the others are
    assert not model.backbone.blocks[0].skip and all(b.skip for b in model.backbone.blocks[1:])


def test_refuses_what_it_cannot_place():
    state = _random_state(1, **SMALL)
    bad = dict(state)
    bad["0.subject_embedding.embedding.weight"] = torch.zeros(9, 4)        # subject_dim > 0: not reproduced
    del bad["0.encoders.meg.glus.3.0.bias"]
    bad["0.final.0.bias"] = torch.zeros(17)
    with pytest.raises(ValueError, match=r"1 unknown keys \(0\.subject_embedding\.embedding\.weight\).*"
                                         r"1 missing keys \(0\.encoders\.meg\.glus\.3\.0\.bias\).*"
                                         r"1 shape mismatches "
                                         r"\(0\.final\.0\.bias: file \[17\] vs expected \[16\]\)"):
        convert_simpleconv(bad, positions=_positions(), subject_index=SUBJECT_INDEX, n_times=N_TIMES)
    with pytest.raises(ValueError, match="outside the checkpoint's 9 subject layers"):
        convert_simpleconv(state, positions=_positions(), subject_index={"a": 3, "b": 9}, n_times=N_TIMES)


def test_from_published_reads_a_dora_checkpoint(tmp_path, small, monkeypatch):
    """A Dora / flashy checkpoint: its pickled scaler is read as an inert placeholder, never imported."""
    state, model = small
    path = tmp_path / "checkpoint.th"
    bm, norm = types.ModuleType("bm"), types.ModuleType("bm.norm")
    scaler_cls = type("BatchScaler", (), {"__module__": "bm.norm", "__init__": _scaler_init})
    norm.BatchScaler, bm.norm = scaler_cls, norm
    monkeypatch.setitem(sys.modules, "bm", bm)
    monkeypatch.setitem(sys.modules, "bm.norm", norm)
    torch.save({"best_state": dict(state), "all_models": dict(state), "xp.sig": "abc123",
                "history": [{"train": {"loss": 1.0}}], "scaler": scaler_cls()}, path)
    monkeypatch.delitem(sys.modules, "bm.norm")      # the training code is not installed where we read
    monkeypatch.delitem(sys.modules, "bm")
    loaded = from_published("brainmagick", path, positions=_positions(), subject_index=SUBJECT_INDEX,
                            n_times=N_TIMES, dilation_period=3)
    assert "brainmagick" in list_published() and loaded.published["container"] == "best_state"
    x = torch.randn(2, 5, N_TIMES, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x, "b").embedding, model(x, "b").embedding)


def _scaler_init(self) -> None:
    """Stands for ``bm.norm.BatchScaler.__init__``: a pickled object of the training code."""
    self.scalers = {"meg": torch.ones(3)}


# -- the full-size key list: brainmagick clip_conv.yaml on Gwilliams, 27 subjects (research note §6.3) ------
def _full_keys() -> dict[str, tuple[int, ...]]:
    keys = {"0.merger.heads": (270, 2048), "0.initial_linear.0.weight": (270, 270, 1),
            "0.initial_linear.0.bias": (270,), "0.subject_layers.weights": (27, 270, 270)}
    for k in range(10):
        p = f"0.encoders.meg.sequence.{k}."
        keys[p + "0.weight"] = (320, 270 if k == 0 else 320, 3)
        keys[p + "0.bias"] = (320,)
        keys.update({p + f"1.{w}": (320,) for w in ("weight", "bias", "running_mean", "running_var")})
        keys[p + "1.num_batches_tracked"] = ()
    for k in (1, 3, 5, 7, 9):
        keys[f"0.encoders.meg.glus.{k}.0.weight"] = (640, 320, 3)
        keys[f"0.encoders.meg.glus.{k}.0.bias"] = (640,)
    keys.update({"0.final.0.weight": (640, 320, 1), "0.final.0.bias": (640,),
                 "0.final.2.weight": (640, 1024, 1), "0.final.2.bias": (1024,)})
    return keys


def test_full_size_keys_match_the_original():
    expected = original_simpleconv_keys()
    assert expected == _full_keys()
    assert len(expected) == 88
    assert sum(int(np.prod(s)) for s in expected.values()) == 9_571_464
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(int(np.prod(s)) for k, s in expected.items() if not k.endswith(buffers)) == 9_565_054


def test_full_size_configuration_is_inferred_from_the_shapes():
    from neurodecode.models.published import brainmagick

    state = {k: torch.empty(s, device="meta") for k, s in _full_keys().items()}
    c = brainmagick._infer_config(state, "0.", {})
    assert c == SIMPLECONV_DEFAULTS


def test_the_loaded_model_saves_and_reloads_as_a_neurodecode_model(tmp_path, small):
    from neurodecode.models import BrainDecoder

    _, model = small
    model.save_pretrained(tmp_path / "bm")
    back = BrainDecoder.from_pretrained(tmp_path / "bm")
    x = torch.randn(2, 7, N_TIMES, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(back(x, "a").embedding, model(x, "a").embedding)


def test_positions_are_required():
    with pytest.raises(ValueError, match="pass positions="):
        convert_simpleconv(_random_state(4, **SMALL), n_times=N_TIMES)
