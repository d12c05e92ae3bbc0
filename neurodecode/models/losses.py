"""Contrastive losses aligning decoded brain embeddings with stimulus embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _soft_labels(n: int, ids: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """Row-stochastic positives: identity, or uniform over rows sharing the same id."""
    if ids is None:
        return torch.eye(n, device=device)
    ids = torch.as_tensor(ids, device=device).reshape(-1)
    if ids.numel() != n:
        raise ValueError(f"ids has {ids.numel()} entries but the batch has {n} rows")
    same = (ids[:, None] == ids[None, :]).float()
    return same / same.sum(1, keepdim=True)


def info_nce(pred: torch.Tensor, target: torch.Tensor, temperature: float | torch.Tensor = 0.07,
             *, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss between decoded and target embeddings.

    Both inputs are L2-normalised; the logits are cosine similarities divided
    by ``temperature``. Row ``i`` of ``pred`` is matched with row ``i`` of
    ``target`` (brain → stimulus and stimulus → brain cross-entropies,
    averaged).

    Parameters
    ----------
    pred : Tensor, shape (batch, dim)
        Decoded embeddings.
    target : Tensor, shape (batch, dim)
        Stimulus embeddings of the same trials.
    temperature : float | Tensor
        Softmax temperature (> 0).
    ids : Tensor of int, shape (batch,) | None
        Stimulus ids (as integer codes). Rows sharing an id (repetitions of one
        image in the batch) are all treated as positives, with equal weight,
        instead of as negatives of each other.

    Returns
    -------
    loss : Tensor, shape ()
        ``(CE(logits) + CE(logitsᵀ)) / 2``.
    """
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both have shape (batch, dim); got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    logits = F.normalize(pred, dim=1) @ F.normalize(target, dim=1).T / temperature
    labels = _soft_labels(len(pred), ids, pred.device)
    if ids is None:
        idx = torch.arange(len(pred), device=pred.device)
        return (F.cross_entropy(logits, idx) + F.cross_entropy(logits.T, idx)) / 2
    loss_b2s = -(labels * logits.log_softmax(1)).sum(1).mean()
    loss_s2b = -(labels * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_b2s + loss_s2b) / 2


def soft_clip(pred: torch.Tensor, target: torch.Tensor, temperature: float | torch.Tensor = 0.125
              ) -> torch.Tensor:
    """MindEye's SoftCLIP loss: soft targets from target–target similarities.

    Instead of one-hot labels, each row's targets are the softmax of the
    (normalised) target–target similarities, so near-duplicate stimuli are not
    pushed apart.

    Parameters
    ----------
    pred : Tensor, shape (batch, dim)
    target : Tensor, shape (batch, dim)
    temperature : float | Tensor

    Returns
    -------
    loss : Tensor, shape ()
    """
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both have shape (batch, dim); got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    p, t = F.normalize(pred, dim=1), F.normalize(target, dim=1)
    soft = (t @ t.T / temperature).softmax(1)
    logits = p @ t.T / temperature
    loss1 = -(soft * logits.log_softmax(1)).sum(1).mean()
    loss2 = -(soft * logits.T.log_softmax(1)).sum(1).mean()
    return (loss1 + loss2) / 2


class ClipLoss(nn.Module):
    """Symmetric InfoNCE with a (learnable) temperature, as in CLIP.

    The temperature is kept as a log inverse temperature (``logit_scale``) and
    clamped so the inverse temperature stays ≤ 100 (CLIP's rule).

    Parameters
    ----------
    init_temperature : float
        Starting temperature (> 0).
    learnable : bool
        If True, the temperature is a parameter optimised with the model.

    Examples
    --------
    >>> loss_fn = ClipLoss(init_temperature=0.07)
    >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, init_temperature: float = 0.07, learnable: bool = True) -> None:
        super().__init__()
        if not init_temperature > 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature!r}")
        self.init_temperature = float(init_temperature)
        self.learnable = bool(learnable)
        scale = torch.tensor(math.log(1.0 / init_temperature), dtype=torch.float32)
        if learnable:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    @property
    def temperature(self) -> float:
        """Current temperature."""
        return float(torch.exp(-self.logit_scale.detach().clamp(max=math.log(100.0))))

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                ids: torch.Tensor | None = None) -> torch.Tensor:
        """Loss for one batch (see :func:`info_nce`)."""
        inv_t = self.logit_scale.clamp(max=math.log(100.0)).exp()
        return info_nce(pred, target, 1.0 / inv_t, ids=ids)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, learnable={self.learnable}"
