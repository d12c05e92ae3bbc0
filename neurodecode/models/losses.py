"""Losses: contrastive (InfoNCE, SoftCLIP, BiMixCo), regression, MindBridge's cycle loss, weighted sums."""

from __future__ import annotations

import math

import numpy as np
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


# -- regression losses -----------------------------------------------------------------------------
def _check_same_shape(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element (MindBridge weights it 1e4, ATM by ``1 − λ``).

    Parameters
    ----------
    pred, target : Tensor, same shape (any)

    Returns
    -------
    loss : Tensor, shape ()
    """
    _check_same_shape(pred, target)
    return F.mse_loss(pred, target)


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (MindEye2's loss on VAE latents from the low-level head)."""
    _check_same_shape(pred, target)
    return F.l1_loss(pred, target)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − cosine similarity`` along the last axis, averaged (works for pooled and token outputs).

    Parameters
    ----------
    pred, target : Tensor, shape (..., dim)

    Returns
    -------
    loss : Tensor, shape ()
    """
    _check_same_shape(pred, target)
    return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()


# -- BiMixCo (MindEye1/2) ------------------------------------------------------------------------
def mixco(x: torch.Tensor, *, beta: float = 0.15, select_prob: float = 0.5,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix brain inputs for BiMixCo: ``x̃ᵢ = λᵢ xᵢ + (1 − λᵢ) x_perm(i)``.

    Each row is mixed with probability ``select_prob``, with ``λᵢ ~ Beta(beta,
    beta)``; unmixed rows keep ``λᵢ = 1``. All draws come from ``generator``
    (the Beta draws through a NumPy generator seeded from it), never from a
    global RNG. MindEye1/2 use ``beta=0.15``, ``select_prob=0.5``.

    Parameters
    ----------
    x : Tensor, shape (batch, ...)
        Brain inputs of one subject (not modified).
    beta : float
        Beta distribution parameter (> 0).
    select_prob : float
        Probability that a row is mixed, in [0, 1].
    generator : torch.Generator | None
        Source of the permutation, selection and λ draws.

    Returns
    -------
    x_mixed : Tensor, same shape as ``x``
    perm : Tensor of int64, shape (batch,)
        Row ``i`` was mixed with row ``perm[i]``.
    lambdas : Tensor, shape (batch,)
        Weight of the row's own input (1 for unmixed rows).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if not 0.0 <= select_prob <= 1.0:
        raise ValueError(f"select_prob must be in [0, 1], got {select_prob!r}")
    n = len(x)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(n, generator=generator, device=gen_device).to(x.device)
    select = torch.rand(n, generator=generator, device=gen_device).to(x.device) < select_prob
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device))
    lam = np.random.default_rng(seed).beta(beta, beta, size=n)
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    lam = torch.where(select, lam, torch.ones_like(lam))
    shape = (-1,) + (1,) * (x.ndim - 1)
    x_mixed = lam.reshape(shape) * x + (1 - lam).reshape(shape) * x[perm]
    return x_mixed, perm, lam


def bimixco(pred: torch.Tensor, target: torch.Tensor, perm: torch.Tensor, lambdas: torch.Tensor,
            temperature: float | torch.Tensor = 0.006) -> torch.Tensor:
    """MindEye's bidirectional MixCo loss on predictions of mixed inputs (see :func:`mixco`).

    The soft label of row ``i`` puts ``λᵢ`` on its own target and ``1 − λᵢ``
    on target ``perm[i]``; cross-entropies of the cosine-similarity logits
    (brain → image, and image → brain with the transposed labels) are averaged.
    With ``λ = 1`` everywhere it equals :func:`info_nce`.

    Parameters
    ----------
    pred : Tensor, shape (batch, dim)
        Predictions for the mixed inputs.
    target : Tensor, shape (batch, dim)
        Targets of the unmixed rows.
    perm : Tensor of int, shape (batch,)
    lambdas : Tensor, shape (batch,)
    temperature : float | Tensor
        MindEye2 uses 0.006 for BiMixCo (its first third of training).

    Returns
    -------
    loss : Tensor, shape ()
    """
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both have shape (batch, dim); got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    n = len(pred)
    perm = torch.as_tensor(perm, device=pred.device).reshape(-1)
    lambdas = torch.as_tensor(lambdas, device=pred.device, dtype=pred.dtype).reshape(-1)
    if perm.numel() != n or lambdas.numel() != n:
        raise ValueError(f"perm and lambdas need {n} entries, got {perm.numel()} and {lambdas.numel()}")
    logits = F.normalize(pred, dim=1) @ F.normalize(target, dim=1).T / temperature
    labels = torch.diag(lambdas)
    labels = labels.index_put((torch.arange(n, device=pred.device), perm), 1 - lambdas, accumulate=True)
    loss1 = -(labels * logits.log_softmax(1)).sum(1).mean()
    loss2 = -(labels.T * logits.T.log_softmax(1)).sum(1).mean()
    return (loss1 + loss2) / 2


# -- MindBridge cycle loss -------------------------------------------------------------------------
def cycle_loss(builder: nn.Module, latent: torch.Tensor, x: torch.Tensor, subject: object) -> torch.Tensor:
    """MindBridge's reconstruction term: rebuild the input from the latent, MSE to the input.

    Parameters
    ----------
    builder : callable
        ``builder(latent, subject) → (batch, n)``, e.g. a
        :class:`~neurodecode.models.adapters.SubjectBuilder`.
    latent : Tensor, shape (batch, hidden_dim)
        The shared latent (``DecoderOutput.latent``).
    x : Tensor, shape (batch, n)
        What to reconstruct: the subject's (pooled, for
        :class:`~neurodecode.models.adapters.PooledAdapter`) input.
    subject : int | str

    Returns
    -------
    loss : Tensor, shape ()
    """
    rec = builder(latent, subject)
    if rec.shape != x.shape:
        raise ValueError(f"The builder reconstructs shape {tuple(rec.shape)} for subject {subject!r} but x "
                         f"has shape {tuple(x.shape)}")
    return F.mse_loss(rec, x)


# -- weighted sum of named terms --------------------------------------------------------------------
class WeightedLoss(nn.Module):
    """Weighted sum of named loss terms, e.g. MindEye2's ``prior + .033·clip + .016·lowlevel``.

    Parameters
    ----------
    weights : dict
        Term name → weight (float ≥ 0).
    losses : dict | None
        Term name → ``fn(pred, target)``. When given, call the module with
        ``(preds, targets)`` dicts and each term is computed; otherwise call it
        with one dict of already computed terms.

    Attributes
    ----------
    last_terms : dict
        The unweighted value of every term at the last call (floats, for logging).

    Examples
    --------
    >>> loss_fn = WeightedLoss({"prior": 1.0, "clip": 0.033, "lowlevel": 0.016})
    >>> total = loss_fn({"prior": l_prior, "clip": l_clip, "lowlevel": l_low})   # doctest: +SKIP
    >>> loss_fn = WeightedLoss({"clip": 0.5, "mse": 0.5}, losses={"clip": info_nce, "mse": mse_loss})
    >>> total = loss_fn({"clip": emb, "mse": emb}, {"clip": y, "mse": y})       # doctest: +SKIP
    """

    def __init__(self, weights: dict, losses: dict | None = None) -> None:
        super().__init__()
        if not isinstance(weights, dict) or not weights:
            raise ValueError(f"weights must be a non-empty dict name → float, got {weights!r}")
        for name, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
                raise ValueError(f"weights[{name!r}] must be a float >= 0, got {w!r}")
        if losses is not None:
            missing = sorted(set(weights) - set(losses))
            if missing:
                raise ValueError(f"losses has no function for the weighted terms {missing}")
            for name, fn in losses.items():
                if not callable(fn):
                    raise TypeError(f"losses[{name!r}] must be callable, got {type(fn).__name__}")
        self.weights = {str(k): float(v) for k, v in weights.items()}
        self.losses = dict(losses) if losses is not None else None
        self.last_terms: dict[str, float] = {}

    def forward(self, terms_or_preds: dict, targets: dict | None = None) -> torch.Tensor:
        """Total loss; ``(terms)`` or, with ``losses`` set, ``(preds, targets)``."""
        if targets is not None:
            if self.losses is None:
                raise ValueError("WeightedLoss was built without losses; pass one dict of computed terms")
            terms = {name: self.losses[name](terms_or_preds[name], targets[name]) for name in self.weights}
        else:
            terms = terms_or_preds
        missing = sorted(set(self.weights) - set(terms))
        if missing:
            raise ValueError(f"Missing loss terms {missing}; got {sorted(terms)}")
        total = sum(self.weights[name] * terms[name] for name in self.weights)
        self.last_terms = {name: float(terms[name].detach()) for name in self.weights}
        return total

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}·{name}" for name, w in self.weights.items())
