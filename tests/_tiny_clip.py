"""A tiny random open_clip model saved as safetensors: CLIP targets without downloading weights.

32-px images in 8-px patches: 16 patch tokens of the 64-wide vision transformer, pooled embeddings of 32.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = "nd-recipes-tiny-vit"
TINY_CFG = {"embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 2}}
TOKEN_SHAPE = (16, 64)


def make_tiny_clip(folder: Path) -> Path:
    """Register the tiny model's config with open_clip and save its random weights; the weights' path."""
    from neurodecode._compat import ensure_torchvision

    ensure_torchvision()  # before open_clip imports torchvision (see ENVIRONMENT.md)
    pytest.importorskip("open_clip")
    import open_clip
    import torch
    from safetensors.torch import save_file

    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    path = folder / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
