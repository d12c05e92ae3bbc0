"""MindBridge (``littlepure2333/MindBridge`` ``src/models.py``) read with
``from_published("mindbridge", ...)``.

The reference (``_published_numpy_mlp.mindbridge``) is an independent NumPy transcription of the original's
inference path in eval mode: the voxels' ``AdaptiveMaxPool1d`` (bins ``[⌊i·L/n⌋, ⌈(i+1)·L/n⌉)``, with
voxel counts that are not multiples of the pooled size, and one smaller than it), ``embedder[s]``, the
``ResMLP`` translator and both heads. It runs on a small configuration with random weights under the
original key names; the full-size key list and element count are checked against the research note (§7.3),
and the DeepSpeed-era file is read with inert placeholders.
"""

from __future__ import annotations

import collections
import sys
import types

import numpy as np
import pytest
import torch
from _published_numpy_mlp import mindbridge, mindbridge_builder

from neurodecode.models import BrainDecoder, from_published, list_published
from neurodecode.models.adapters import PooledAdapter
from neurodecode.models.backbones import PostNormResidualMLP
from neurodecode.models.heads import PooledHead, TextHead
from neurodecode.models.published.mindbridge import (
    MINDBRIDGE_DEFAULTS,
    convert_mindbridge,
    mindbridge_mapper,
    original_mindbridge_keys,
)

# small: subjects 2, 5, 7 pooled to 16 (from 23, 37 and 11 voxels), rank 3, hidden 8, 4 blocks; image 3 × 4,
# text 2 × 4 tokens
SMALL = dict(subjects=("2", "5", "7"), in_dim=16, hidden_dim=8, n_blocks=4, rank=3, image_dim=12, text_dim=8)
VOXELS = {"2": 23, "5": 37, "7": 11}


def _random_state(seed: int = 0, **config) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return {k: torch.tensor(0.5 * rng.standard_normal(s), dtype=torch.float32)
            for k, s in original_mindbridge_keys(**config).items()}


def _numpy(state):
    return {k: v.double().numpy() for k, v in state.items()}


@pytest.fixture(scope="module")
def small():
    state = _random_state(0, **SMALL)
    return state, convert_mindbridge(state, voxels=VOXELS, token_dim=4)


@pytest.mark.parametrize("subject", ["2", "5", "7"])
def test_forward_matches_the_numpy_original(small, subject):
    state, model = small
    x = np.random.default_rng(int(subject)).standard_normal((4, VOXELS[subject]))
    image_ref, text_ref = mindbridge(_numpy(state), x, subject, SMALL["in_dim"], SMALL["n_blocks"])
    with torch.no_grad():
        out = model(torch.from_numpy(x).float(), int(subject))
    diffs = {"head_image": float(np.abs(out.embedding.double().numpy() - image_ref).max()),
             "head_text": float(np.abs(out.outputs["text"].double().numpy() - text_ref).max())}
    print(f"mindbridge subject {subject} ({VOXELS[subject]} voxels → 16): max abs diff {diffs}")
    assert out.embedding.shape == (4, 12) and out.outputs["text"].shape == (4, 8)
    assert all(d < 1e-5 for d in diffs.values()), diffs


def test_the_layout_and_the_pooling_bins(small):
    _, model = small
    assert type(model.adapter) is PooledAdapter and type(model.backbone) is PostNormResidualMLP
    assert type(model.heads["text"]) is TextHead and model.heads["text"].norm is None
    assert model.heads["pooled"].norm is None and model.heads["pooled"].projector is None
    assert model.subjects == ["2", "5", "7"] and model.published["voxels"] == VOXELS
    x = torch.arange(23.0)[None]                      # increasing: each bin's max is its last voxel
    bins = [-(-(i + 1) * 23 // 16) - 1 for i in range(16)]
    assert model.adapter.pool(x)[0].tolist() == [float(b) for b in bins]


def test_the_builder_is_kept_aside_and_returned_as_a_subject_builder(small):
    state, model = small
    unused = model.published["unused"]
    assert set(unused) == {k for k in state if k.startswith("builder.")} and len(unused) == 3 * 8
    assert {v["reason"].split(":")[0] for v in unused.values()} == {
        "builder (subject reconstruction for MindBridge's cycle loss)"}
    builder = model.published["builder"]
    z = np.random.default_rng(3).standard_normal((2, 8))
    ref = mindbridge_builder(_numpy(state), z, "5")
    with torch.no_grad():
        out = builder(torch.from_numpy(z).float(), 5).double().numpy()
    assert out.shape == (2, 16) and np.abs(out - ref).max() < 1e-5
    single = {k: v for k, v in state.items() if not k.startswith("builder.")}     # MindSingle: no builder
    other = convert_mindbridge(single, voxels=VOXELS, token_dim=4)
    assert other.published["builder"] is None and other.published["unused"] == {}


def test_refuses_unknown_missing_and_misshapen_keys():
    state = _random_state(2, **SMALL)
    bad = dict(state)
    bad["translator.extra.weight"] = torch.zeros(3)
    del bad["head_text.bias"]
    bad["embedder.5.0.up_proj.weight"] = torch.zeros(16, 4)
    with pytest.raises(ValueError, match=r"not a 'mindbridge' model.*1 unknown keys "
                                         r"\(translator\.extra\.weight\).*1 missing keys \(head_text\.bias\)"
                                         r".*1 shape mismatches \(embedder\.5\.0\.up_proj\.weight: file "
                                         r"\[16, 4\] vs expected \[16, 3\]\).*Nothing was loaded"):
        convert_mindbridge(bad, voxels=VOXELS, token_dim=4)
    with pytest.raises(ValueError, match=r"not a MindBridge model: no embedder"):
        convert_mindbridge({"voxel2clip.lin1.weight": torch.zeros(2, 2)})


def test_voxel_counts_default_to_nsd_and_are_checked():
    state = _random_state(3, **SMALL)
    model = convert_mindbridge(state, voxels={"7": 11}, token_dim=4)
    assert model.published["voxels"] == {"2": 14278, "5": 13039, "7": 11}
    with pytest.raises(ValueError, match=r"voxels names subjects \['9'\] that the checkpoint has no "
                                         r"embedder"):
        convert_mindbridge(state, voxels={"9": 100}, token_dim=4)
    renamed = {k.replace("embedder.7.", "embedder.x.").replace("builder.7.", "builder.x."): v
               for k, v in state.items()}
    with pytest.raises(ValueError, match=r"subject 'x' is not an NSD subject.*voxels="):
        convert_mindbridge(renamed, token_dim=4)


def test_the_loaded_model_saves_and_reloads_as_a_neurodecode_model(tmp_path, small):
    _, model = small
    model.save_pretrained(tmp_path / "mb")
    back = BrainDecoder.from_pretrained(tmp_path / "mb")
    x = torch.randn(2, 37, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = back(x, 5).outputs, model(x, 5).outputs
    assert set(a) == {"pooled", "text"} and all(torch.equal(a[k], b[k]) for k in a)


# -- full size (research note §7.3) ------------------------------------------------------------------------
def test_full_size_keys_match_the_research_note():
    keys = original_mindbridge_keys()
    assert len(keys) == 84 and sum(int(np.prod(s)) for s in keys.values()) == 693_579_264
    table = {"embedder.1.0.down_proj.weight": (128, 8192), "embedder.1.0.up_proj.weight": (8192, 128),
             "embedder.7.1.weight": (2048, 8192), "embedder.2.2.bias": (2048,),
             "translator.mlp.3.0.weight": (2048, 2048), "translator.mlp.0.1.weight": (2048,),
             "head_image.weight": (197376, 2048), "head_image.bias": (197376,),
             "head_text.weight": (59136, 2048),
             "head_text.bias": (59136,), "builder.5.0.weight": (8192, 2048), "builder.5.1.bias": (8192,),
             "builder.5.3.down_proj.weight": (128, 8192), "builder.5.3.up_proj.weight": (8192, 128)}
    assert {k: keys[k] for k in table} == table
    # 693.6 M float32 elements = 2.77 GB, plus the rank-0 ZeRO-2 partition of 8 GPUs: the published 3.81 GB
    n = sum(int(np.prod(s)) for s in keys.values())
    assert round((n * 4 + n * 12 / 8) / 1e9, 2) == 3.81


def test_full_size_mapping_places_every_tensor_on_the_meta_device():
    from neurodecode.models.published import mindbridge as module

    state = {k: torch.empty(s, device="meta") for k, s in original_mindbridge_keys().items()}
    c = module._infer_config(state)
    assert c == MINDBRIDGE_DEFAULTS
    m = mindbridge_mapper(state, c)
    model = torch.nn.Module()
    model.adapter = PooledAdapter({s: 15000 for s in "1257"}, 2048, pool_size=8192, rank=128, device="meta")
    model.backbone = PostNormResidualMLP(2048, 4, 0.15, device="meta")
    model.heads = torch.nn.ModuleDict({"pooled": PooledHead(2048, 197376, norm=False, device="meta"),
                                       "text": TextHead(2048, (77, 768), norm=False, device="meta")})
    assert {k: tuple(v.shape) for k, v in m.target.items()} == {k: tuple(v.shape) for k, v in
                                                                model.state_dict().items()}
    assert len(m.target) == 84 - 32 and len(m.side) == 32
    m.load_into(model)


# -- the DeepSpeed-era file: ZeRO-2 optimizer state, loss scaler, AdamW, OneCycleLR (bound method) ----------
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
        scaler = _fake_class("deepspeed.runtime.fp16.loss_scaler", "LossScaler",
                             __init__=lambda self: setattr(self, "cur_scale", 1.0),
                             update_scale=lambda self: None)
        adamw = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=3e-4)
        extra = {"payload": _fake_class("evil.payload", "Run")()} if hostile else {}
        torch.save({"epoch": 199, "model_state_dict": state,
                    "optimizer_state_dict": {"zero_stage": stage(2), "frag": address(3, 0),
                                             "loss_scaler": scaler(),
                                             "base_optimizer_state": collections.defaultdict(dict, {0: {}}),
                                             "optimizer": adamw},
                    "lr_scheduler": {"anneal_func": scaler().update_scale}, **extra}, path)
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod


def test_the_deepspeed_file_is_read_with_inert_placeholders(tmp_path, small):
    state, model = small
    _deepspeed_file(tmp_path / "last.pth", state)
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "last.pth"))
    assert {"torch.optim.adamw.AdamW", "collections.defaultdict", "builtins.getattr"} <= set(names)
    loaded = from_published("mindbridge", tmp_path / "last.pth", voxels=VOXELS, token_dim=4)
    assert "mindbridge" in list_published() and loaded.published["container"] == "model_state_dict"
    x = torch.randn(2, 23, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = loaded(x, 2).outputs, model(x, 2).outputs
    assert all(torch.equal(a[k], b[k]) for k in a)
    _deepspeed_file(tmp_path / "hostile.pth", state, hostile=True)
    with pytest.raises(ValueError, match=r"pickles globals that are not tensors.*evil\.payload\.Run"):
        from_published("mindbridge", tmp_path / "hostile.pth", voxels=VOXELS, token_dim=4)
