"""Import fixes for mismatched torch / torchvision builds.

The only torchvision wheel that matches some CPU-only torch releases is a CUDA
build whose C extension cannot register its operators against CPU torch.  The
plain ``import torchvision`` then fails with ``RuntimeError: operator
torchvision::nms does not exist``, which in turn breaks ``open_clip``, ``timm``,
``transformers`` vision models and ``diffusers``.

:func:`ensure_torchvision` repairs that case: it defines the ``torchvision::nms``
and ``torchvision::qnms`` operator schemas, registers a pure-torch CPU kernel
for ``nms``, drops the half-imported modules and imports again.  On a normal
install (the plain import works) it does nothing.
"""

from __future__ import annotations

import importlib
import sys

_STATE: dict[str, object] = {"done": False, "patched": False, "lib": None}


def _nms_cpu(boxes, scores, iou_threshold: float):  # pragma: no cover - tiny
    import torch

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    keep = []
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(x1[i], x1)
        yy1 = torch.maximum(y1[i], y1)
        xx2 = torch.minimum(x2[i], x2)
        yy2 = torch.minimum(y2[i], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def ensure_torchvision() -> bool:
    """Make ``import torchvision`` work; return True if a repair was needed.

    Safe to call many times and a no-op when torchvision is absent or imports
    cleanly.
    """
    if _STATE["done"]:
        return bool(_STATE["patched"])
    _STATE["done"] = True
    try:
        importlib.import_module("torchvision")
        return False
    except ImportError:
        return False
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define(
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    )
    lib.impl("nms", _nms_cpu, "CPU")
    _STATE["lib"] = lib  # keep the registration alive
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        del sys.modules[name]
    importlib.import_module("torchvision")
    # torchvision.ops asks the extension whether its C++ ops loaded; they did
    # not, but the operators it needs are now registered in pure torch.
    ext = importlib.import_module("torchvision.extension")
    ext._has_ops = lambda: True  # type: ignore[attr-defined]
    _STATE["patched"] = True
    return True
