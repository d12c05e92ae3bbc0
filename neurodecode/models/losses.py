"""Losses: contrastive (InfoNCE, SoftCLIP, BiMixCo), regression, MindBridge's cycle loss, weighted sums.

:class:`TrainingLoss` is the :class:`~neurodecode.training.Trainer`'s loss for a
named recipe (``infonce``, ``soft_clip``, ``mindeye2``, ``clip_mse``): it owns
the temperature (fixed, learnable or cosine-scheduled per epoch) and, for
``mindeye2``, the switch from BiMixCo to SoftCLIP. The numbers of the original
recipes are the module constants below (see ``docs/training.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import LOSS_REGISTRY, get_loss, register_loss, register_lowlevel_loss, register_token_loss

#: Temperature modes of :class:`TrainingLoss`.
TEMPERATURE_MODES = ("fixed", "learnable", "schedule")
#: Cap on a *learnable* inverse temperature (CLIP clamps its logit scale at 100); a learnable
#: temperature must therefore start at >= 1 / 100 = 0.01. Fixed and scheduled temperatures are not capped.
MAX_LEARNABLE_INVERSE_TEMPERATURE = 100.0
#: MindEye2 (``src/Train.ipynb``): BiMixCo temperature, and SoftCLIP's temperature at validation.
MINDEYE2_TEMPERATURE = 0.006
#: MindEye2: SoftCLIP temperatures ``cosine_anneal(0.004, 0.0075, n_softclip_epochs)``.
MINDEYE2_SCHEDULE = (0.004, 0.0075)
#: MindEye2's ``--mixup_pct`` default: BiMixCo while ``epoch < int(0.33 * num_epochs)``.
MINDEYE2_MIXCO_FRACTION = 0.33
#: ATM (``encoder_utils.py``, generation mode, ``alpha=0.90`` on the MSE): weight of the CLIP term.
ATM_CLIP_WEIGHT = 0.1
#: ATM's ``logit_scale = log(1 / 0.07)`` is used as the logit multiplier itself (no ``exp``), i.e. an
#: inverse temperature of 2.659: temperature ``1 / log(1 / 0.07)`` ≈ 0.376.
ATM_TEMPERATURE = 1.0 / math.log(1.0 / 0.07)


class _TemperatureDefaults(Mapping[str, tuple[float, str, tuple[str, ...]]]):
    """Read-only, live view: registered loss with a temperature → its ``temperature_defaults``."""

    def _table(self) -> dict[str, tuple[float, str, tuple[str, ...]]]:
        return {name: cls.temperature_defaults for name in LOSS_REGISTRY.names()
                if getattr(cls := LOSS_REGISTRY.get(name), "temperature_defaults", None) is not None}

    def __getitem__(self, name: str) -> tuple[float, str, tuple[str, ...]]:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(self._table())


#: Named losses with a temperature → (default temperature, default mode, allowed modes): a live view of
#: the ``temperature_defaults`` of the losses registered with :func:`~neurodecode.models.register_loss`.
TEMPERATURE_DEFAULTS: Mapping[str, tuple[float, str, tuple[str, ...]]] = _TemperatureDefaults()


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """ValueError unless ``pred`` and ``target`` are two (batch, dim) tensors of one shape."""
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both have shape (batch, dim); got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")


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
    _check_pair(pred, target)
    logits = F.normalize(pred, dim=1) @ F.normalize(target, dim=1).T / temperature
    labels = _soft_labels(len(pred), ids, pred.device)
    if ids is None:
        idx = torch.arange(len(pred), device=pred.device)
        return (F.cross_entropy(logits, idx) + F.cross_entropy(logits.T, idx)) / 2
    loss_b2s = -(labels * logits.log_softmax(1)).sum(1).mean()
    loss_s2b = -(labels * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_b2s + loss_s2b) / 2


def candidate_clip(pred: torch.Tensor, target: torch.Tensor, temperature: float | torch.Tensor = 1.0,
                   *, ids: torch.Tensor | None = None) -> torch.Tensor:
    """brainmagick's CLIP loss: one direction, only the candidates L2-normalised.

    ``logits[i, j] = pred_i · target_j / ‖target_j‖ / temperature`` and the
    loss is the cross-entropy of each brain row over the candidates (brain →
    stimulus only). The prediction is *not* normalised: its norm acts as a
    learned inverse temperature, and brainmagick applies no other
    (``temperature`` = 1). For a time-resolved target the rows are the
    flattened (frames × dim) maps, so the dot product and the candidate norm
    run over the whole map, as in brainmagick's ``einsum("bct,oct,o->bo")``.

    Parameters
    ----------
    pred : Tensor, shape (batch, dim)
        Decoded embeddings (not normalised).
    target : Tensor, shape (batch, dim)
        Candidate (stimulus) embeddings of the same trials.
    temperature : float | Tensor
        Divides the logits (> 0; brainmagick: 1).
    ids : Tensor of int, shape (batch,) | None
        Stimulus ids: rows sharing an id are all positives (brainmagick counts
        them as negatives).

    Returns
    -------
    loss : Tensor, shape ()
    """
    _check_pair(pred, target)
    logits = pred @ F.normalize(target, dim=1, eps=1e-8).T / temperature
    if ids is None:
        return F.cross_entropy(logits, torch.arange(len(pred), device=pred.device))
    labels = _soft_labels(len(pred), ids, pred.device)
    return -(labels * logits.log_softmax(1)).sum(1).mean()


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
    _check_pair(pred, target)
    p, t = F.normalize(pred, dim=1), F.normalize(target, dim=1)
    soft = (t @ t.T / temperature).softmax(1)
    logits = p @ t.T / temperature
    loss1 = -(soft * logits.log_softmax(1)).sum(1).mean()
    loss2 = -(soft * logits.T.log_softmax(1)).sum(1).mean()
    return (loss1 + loss2) / 2


class ClipLoss(nn.Module):
    """Symmetric InfoNCE with a fixed or learnable temperature, as in CLIP.

    A learnable temperature is kept as a log inverse temperature
    (``logit_scale``) and clamped so that the inverse temperature stays
    ≤ :data:`MAX_LEARNABLE_INVERSE_TEMPERATURE` (100, CLIP's rule); a
    learnable ``init_temperature`` below 0.01 is therefore refused rather than
    silently clamped. A fixed temperature is used exactly as given (logits are
    the cosine similarities divided by it), with no cap.

    Parameters
    ----------
    init_temperature : float
        Starting (or fixed) temperature: > 0, and >= 0.01 when learnable.
    learnable : bool
        If True, the temperature is a parameter optimised with the model.

    Raises
    ------
    ValueError
        If ``init_temperature`` is not a finite number > 0, or is < 0.01 with
        ``learnable=True``.

    Examples
    --------
    >>> loss_fn = ClipLoss(init_temperature=0.07)
    >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    >>> ClipLoss(0.006, learnable=False).temperature   # MindEye2's BiMixCo temperature
    0.006
    """

    def __init__(self, init_temperature: float = 0.07, learnable: bool = True) -> None:
        super().__init__()
        _check_temperature(init_temperature, "learnable" if learnable else "fixed", "init_temperature")
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
        if not self.learnable:
            return self.init_temperature
        return float(torch.exp(-self.logit_scale.detach().clamp(max=_LOG_CAP)))

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                ids: torch.Tensor | None = None) -> torch.Tensor:
        """Loss for one batch (see :func:`info_nce`).

        Parameters
        ----------
        pred : Tensor, shape (batch, dim)
            Decoded embeddings.
        target : Tensor, shape (batch, dim)
            Stimulus embeddings of the same trials.
        ids : Tensor of int, shape (batch,) | None
            Stimulus codes: rows sharing an id are all positives.

        Returns
        -------
        loss : Tensor, shape ()
            The symmetric InfoNCE loss at the current temperature.
        """
        if not self.learnable:
            return info_nce(pred, target, self.init_temperature, ids=ids)
        inv_t = self.logit_scale.clamp(max=_LOG_CAP).exp()
        return info_nce(pred, target, 1.0 / inv_t, ids=ids)

    def extra_repr(self) -> str:
        """The settings shown in the module's ``repr``.

        Returns
        -------
        text : str
            The current temperature and whether it is learnable.
        """
        return f"temperature={self.temperature:.4g}, learnable={self.learnable}"


_LOG_CAP = math.log(MAX_LEARNABLE_INVERSE_TEMPERATURE)


def _check_temperature(value: float, mode: str, name: str = "temperature") -> None:
    """Raise a ValueError naming ``value`` and the allowed range unless it is a valid temperature."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(float(value)) or not float(value) > 0:
        raise ValueError(f"{name} must be a finite number > 0 (allowed range: (0, inf)), got {value!r}")
    if mode == "learnable" and 1.0 / float(value) > MAX_LEARNABLE_INVERSE_TEMPERATURE:
        lo = 1.0 / MAX_LEARNABLE_INVERSE_TEMPERATURE
        raise ValueError(
            f"{name}={value!r} is an inverse temperature of {1.0 / float(value):.4g}, above the cap of "
            f"{MAX_LEARNABLE_INVERSE_TEMPERATURE:g} on a learnable temperature (CLIP's clamp): the allowed "
            f"range for a learnable temperature is [{lo:g}, inf). Use a fixed temperature (or a schedule) "
            "for smaller values, e.g. MindEye2's 0.006.")


def resolve_temperature(loss: str, temperature: float | None = None, mode: str | None = None,
                        schedule: Sequence[float] = MINDEYE2_SCHEDULE) -> tuple[float, str]:
    """Fill in a named loss's default temperature / mode and check them.

    Parameters
    ----------
    loss : str
        A key of :data:`TEMPERATURE_DEFAULTS` (``"infonce"``, ``"soft_clip"``,
        ``"mindeye2"``, ``"clip_mse"``, ``"brainmagick_clip"``).
    temperature : float | None
        None = the loss's default (0.07, 0.125, 0.006, ≈0.376, 1).
    mode : {"fixed", "learnable", "schedule"} | None
        None = the loss's default (learnable, fixed, schedule, learnable, fixed).
    schedule : (float, float)
        ``(start, end)`` of the cosine schedule (checked in schedule mode).

    Returns
    -------
    temperature : float
    mode : str

    Raises
    ------
    ValueError
        For an unknown loss or mode, a mode the loss does not support, or a
        temperature outside its allowed range (> 0; >= 0.01 when learnable).
    """
    if loss not in TEMPERATURE_DEFAULTS:
        raise ValueError(f"loss {loss!r} has no temperature; losses with one: {sorted(TEMPERATURE_DEFAULTS)}")
    default_t, default_mode, allowed = TEMPERATURE_DEFAULTS[loss]
    mode = default_mode if mode is None else mode
    if mode not in TEMPERATURE_MODES:
        raise ValueError(f"temperature_mode must be one of {TEMPERATURE_MODES}, got {mode!r}")
    if mode not in allowed:
        raise ValueError(f"loss {loss!r} supports temperature_mode {allowed}, got {mode!r}")
    temperature = default_t if temperature is None else temperature
    _check_temperature(temperature, mode)
    if mode == "schedule":
        if isinstance(schedule, (str, bytes)) or len(schedule) != 2:
            raise ValueError(f"temperature_schedule must be [start, end], got {schedule!r}")
        for name, v in zip(("start", "end"), schedule):
            _check_temperature(v, "schedule", f"temperature_schedule {name}")
    return float(temperature), mode


def cosine_anneal(start: float, end: float, steps: int) -> np.ndarray:
    """MindEye2's ``utils.cosine_anneal``: ``steps`` values from ``start`` to ``end`` on a half cosine.

    ``v[i] = end + (start − end) / 2 · (1 + cos(π i / (steps − 1)))``, so
    ``v[0] = start`` and ``v[-1] = end``. MindEye2 anneals SoftCLIP's
    temperature with ``cosine_anneal(0.004, 0.0075, n_softclip_epochs)``.
    For ``steps == 1`` the result is ``[start]`` (MindEye2's formula divides
    0 by 0 there).

    Parameters
    ----------
    start, end : float
    steps : int
        Number of values (>= 0).

    Returns
    -------
    values : ndarray of float64, shape (steps,)
    """
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if steps == 1:
        return np.array([float(start)])
    i = np.arange(steps, dtype=np.float64)
    return end + (start - end) / 2 * (1 + np.cos(np.pi * i / max(steps - 1, 1)))


# -- regression losses -----------------------------------------------------------------------------
def _check_same_shape(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")


@register_lowlevel_loss("mse")
@register_token_loss("mse")
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


@register_lowlevel_loss("l1")
def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (MindEye2's loss on VAE latents from the low-level head).

    Parameters
    ----------
    pred, target : Tensor
        Predicted and target latents, of the same shape.

    Returns
    -------
    loss : Tensor
        Scalar mean absolute error.
    """
    _check_same_shape(pred, target)
    return F.l1_loss(pred, target)


@register_token_loss("cosine")
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
            temperature: float | torch.Tensor = 0.006, *, ids: torch.Tensor | None = None) -> torch.Tensor:
    """MindEye's bidirectional MixCo loss on predictions of mixed inputs (see :func:`mixco`).

    The soft label of row ``i`` puts ``λᵢ`` on its own target and ``1 − λᵢ``
    on target ``perm[i]``; cross-entropies of the cosine-similarity logits
    (brain → image, and image → brain with the transposed labels) are averaged.
    With ``λ = 1`` everywhere it equals :func:`info_nce`. A row mixed with
    itself (``perm[i] == i``) keeps label 1 on its own target (MindEye2's
    ``mixco_nce`` assigns instead of adding, which leaves such an unmixed row
    with label ``1 − λᵢ = 0``).

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
    ids : Tensor of int, shape (batch,) | None
        Stimulus codes: each one-hot part of a label is spread uniformly over
        the rows sharing that stimulus (as :func:`info_nce` does), so repeats
        of an image in a batch are not negatives of each other.

    Returns
    -------
    loss : Tensor, shape ()
    """
    _check_pair(pred, target)
    n = len(pred)
    perm = torch.as_tensor(perm, device=pred.device).reshape(-1).long()
    lambdas = torch.as_tensor(lambdas, device=pred.device, dtype=pred.dtype).reshape(-1)
    if perm.numel() != n or lambdas.numel() != n:
        raise ValueError(f"perm and lambdas need {n} entries, got {perm.numel()} and {lambdas.numel()}")
    logits = F.normalize(pred, dim=1) @ F.normalize(target, dim=1).T / temperature
    own = _soft_labels(n, ids, pred.device).to(pred.dtype)
    labels = lambdas[:, None] * own + (1 - lambdas)[:, None] * own[perm]
    loss1 = -(labels * logits.log_softmax(1)).sum(1).mean()
    loss2 = -(labels.T * logits.T.log_softmax(1)).sum(1).mean()
    return (loss1 + loss2) / 2


# -- the Trainer's named losses ---------------------------------------------------------------------
class TrainingLoss(nn.Module):
    """A named training recipe's loss, with its temperature and (``mindeye2``) BiMixCo phase.

    The base of the registered contrastive losses: each recipe is a subclass
    registered under its name (:func:`~neurodecode.models.register_loss`) that
    sets :attr:`temperature_defaults` and implements :meth:`objective`;
    ``TrainingLoss(name, ...)`` builds the subclass registered under ``name``.

    ``"infonce"``
        Symmetric CLIP loss (:func:`info_nce`).
    ``"soft_clip"``
        MindEye's SoftCLIP (:func:`soft_clip`).
    ``"mindeye2"``
        MindEye2: BiMixCo (:func:`bimixco`, on inputs mixed by :func:`mixco`)
        at ``temperature`` during the first ``int(mixco_fraction × n_epochs)``
        epochs, then SoftCLIP; in schedule mode SoftCLIP's temperature follows
        ``cosine_anneal(*temperature_schedule, n_epochs − n_mixco_epochs)``
        indexed by epoch.
    ``"clip_mse"``
        ATM: ``clip_weight × CLIP + (1 − clip_weight) × MSE`` — the CLIP term on
        L2-normalised rows, the MSE between the raw prediction and the target.
    ``"brainmagick_clip"``
        brainmagick's / neuralbench's ``ClipLoss`` (:func:`candidate_clip`):
        brain → stimulus only, candidates normalised, the prediction's norm as
        the inverse temperature (fixed ``temperature`` 1).

    Temperature modes: ``"fixed"`` (used exactly), ``"learnable"`` (a log
    inverse temperature optimised with the model, clamped to an inverse
    temperature ≤ 100; needs ``temperature >= 0.01``) and ``"schedule"``
    (per epoch: a cosine from ``temperature_schedule[0]`` to
    ``temperature_schedule[1]`` over the training epochs — over the SoftCLIP
    epochs for ``mindeye2``, whose BiMixCo epochs use ``temperature``).

    The validation loss (:meth:`validation_loss`) never mixes inputs and uses
    one temperature for every epoch, so that epochs are comparable for
    best-epoch selection: ``temperature`` in fixed and schedule modes (for
    ``mindeye2`` that is SoftCLIP at 0.006, MindEye2's test loss), the current
    learned value in learnable mode.

    Parameters
    ----------
    name : {"infonce", "soft_clip", "mindeye2", "clip_mse", "brainmagick_clip"}
        The registered loss to build (None: ``"infonce"``, or the subclass's own name).
    *args, **kwargs
        The keyword-only settings below, passed on to ``__init__``.
    temperature : float | None
        None = the loss's default (:data:`TEMPERATURE_DEFAULTS`).
    temperature_mode : {"fixed", "learnable", "schedule"} | None
        None = the loss's default.
    temperature_schedule : (float, float)
        ``(start, end)`` of the cosine schedule (MindEye2: 0.004 → 0.0075).
    n_epochs : int
        Training epochs (for the schedule and the BiMixCo phase).
    mixco_fraction : float
        ``mindeye2``: fraction of the epochs trained with BiMixCo, in [0, 1]
        (MindEye2: 0.33).
    clip_weight : float
        ``clip_mse``: weight λ of the CLIP term, in [0, 1] (ATM: 0.1).

    Attributes
    ----------
    epoch : int
        The current (1-based) epoch, set by :meth:`set_epoch`.
    n_mixco_epochs : int
        Number of BiMixCo epochs (0 unless ``mindeye2``).

    Examples
    --------
    >>> loss_fn = TrainingLoss("mindeye2", n_epochs=150)
    >>> loss_fn.n_mixco_epochs, loss_fn.set_epoch(50) or loss_fn.phase
    (49, 'soft_clip')
    """

    #: ``(default temperature, default mode, allowed modes)`` of the recipe.
    temperature_defaults: ClassVar[tuple[float, str, tuple[str, ...]] | None] = None
    #: Whether the first ``int(mixco_fraction × n_epochs)`` epochs train BiMixCo on mixed inputs.
    uses_mixco: ClassVar[bool] = False
    #: The name of the objective after the BiMixCo epochs (``phase``); None: the loss's name.
    main_phase: ClassVar[str | None] = None

    def __new__(cls, name: str | None = None, *args: Any, **kwargs: Any) -> TrainingLoss:
        if cls is TrainingLoss:  # TrainingLoss("infonce") → the class registered as "infonce"
            target = get_loss("infonce" if name is None else name)
            if not (isinstance(target, type) and issubclass(target, TrainingLoss)):
                raise ValueError(f"loss {name!r} has no temperature; losses with one: {sorted(TEMPERATURE_DEFAULTS)}")
            cls = target
        return super().__new__(cls)

    def __init__(self, name: str | None = None, *, temperature: float | None = None,
                 temperature_mode: str | None = None,
                 temperature_schedule: Sequence[float] = MINDEYE2_SCHEDULE, n_epochs: int = 1,
                 mixco_fraction: float = MINDEYE2_MIXCO_FRACTION,
                 clip_weight: float = ATM_CLIP_WEIGHT) -> None:
        super().__init__()
        own = getattr(type(self), "registered_name", None)
        if own is None:
            raise TypeError(f"{type(self).__name__} is not registered: decorate it with "
                            "@neurodecode.models.register_loss(name)")
        if name is not None and name != own:
            raise ValueError(f"{type(self).__name__} is the {own!r} loss, not {name!r}")
        name = self.name = own
        self.base_temperature, self.temperature_mode = resolve_temperature(
            name, temperature, temperature_mode, temperature_schedule)
        if isinstance(n_epochs, bool) or not isinstance(n_epochs, (int, np.integer)) or n_epochs < 1:
            raise ValueError(f"n_epochs must be an int >= 1, got {n_epochs!r}")
        for key, v in (("mixco_fraction", mixco_fraction), ("clip_weight", clip_weight)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) \
                    or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{key} must be a number in [0, 1], got {v!r}")
        self.temperature_schedule = tuple(float(v) for v in temperature_schedule)
        self.n_epochs = int(n_epochs)
        self.mixco_fraction = float(mixco_fraction)
        self.clip_weight = float(clip_weight)
        # MindEye2: BiMixCo while (0-based) epoch < int(mixup_pct * num_epochs)
        self.n_mixco_epochs = int(self.mixco_fraction * self.n_epochs) if self.uses_mixco else 0
        if self.temperature_mode == "learnable":
            self.logit_scale = nn.Parameter(
                torch.tensor(math.log(1.0 / self.base_temperature), dtype=torch.float32))
        n_sched = self.n_epochs - self.n_mixco_epochs
        self._schedule = cosine_anneal(*self.temperature_schedule, n_sched) \
            if self.temperature_mode == "schedule" else None
        self.epoch = 1

    @classmethod
    def from_settings(cls, **settings: Any) -> TrainingLoss:
        """Built by the :class:`~neurodecode.training.Trainer` from its settings (every recipe takes all).

        Parameters
        ----------
        **settings
            The keyword arguments of the class (``temperature``, ``temperature_mode``,
            ``temperature_schedule``, ``n_epochs``, ``mixco_fraction``, ``clip_weight``).

        Returns
        -------
        loss : TrainingLoss
            The loss.
        """
        return cls(**settings)

    # -- epoch-dependent state -------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the (1-based) training epoch; the Trainer calls this at the start of every epoch.

        Parameters
        ----------
        epoch : int
            The epoch, in ``[1, n_epochs]``.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) \
                or not 1 <= epoch <= self.n_epochs:
            raise ValueError(f"epoch must be an int in [1, {self.n_epochs}], got {epoch!r}")
        self.epoch = int(epoch)

    @property
    def phase(self) -> str:
        """``"bimixco"`` during MindEye2's first epochs, otherwise the objective's name."""
        if self.uses_mixco and self.epoch <= self.n_mixco_epochs:
            return "bimixco"
        return self.main_phase or self.name

    @property
    def mixes_inputs(self) -> bool:
        """Whether this epoch's loss needs inputs mixed by :func:`mixco` (BiMixCo)."""
        return self.phase == "bimixco"

    def epoch_temperature(self, epoch: int) -> float:
        """Training temperature of a (1-based) epoch; the current learned value in learnable mode.

        Parameters
        ----------
        epoch : int
            The epoch, in ``[1, n_epochs]``.

        Returns
        -------
        temperature : float
            The temperature used for that epoch's training loss.
        """
        if self.temperature_mode == "learnable":
            return float(torch.exp(-self.logit_scale.detach().clamp(max=_LOG_CAP)))
        if self.temperature_mode == "fixed" or epoch <= self.n_mixco_epochs:
            return self.base_temperature
        return float(self._schedule[epoch - self.n_mixco_epochs - 1])

    def epoch_temperatures(self) -> list[float]:
        """The training temperature of every epoch ``1..n_epochs`` (learnable: the current value).

        Returns
        -------
        temperatures : list of float
            One temperature per epoch (see :meth:`epoch_temperature`).
        """
        return [self.epoch_temperature(e) for e in range(1, self.n_epochs + 1)]

    @property
    def temperature(self) -> float:
        """The current epoch's training temperature (logged in ``Trainer.history_``)."""
        return self.epoch_temperature(self.epoch)

    def _temperature(self, validation: bool) -> float | torch.Tensor:
        if self.temperature_mode == "learnable":
            return 1.0 / self.logit_scale.clamp(max=_LOG_CAP).exp()
        return self.base_temperature if validation else self.temperature

    # -- losses ----------------------------------------------------------------------------------
    def forward(self, pred: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None = None, *,
                perm: torch.Tensor | None = None, lambdas: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss of one batch at the current epoch.

        Parameters
        ----------
        pred, target : Tensor, shape (batch, dim)
            Decoded and stimulus embeddings of the same trials.
        ids : Tensor of int, shape (batch,) | None
            Stimulus codes (repeats of a stimulus are positives, not negatives).
        perm, lambdas : Tensor | None
            From :func:`mixco` on the inputs that produced ``pred``; required
            exactly when :attr:`mixes_inputs`.

        Returns
        -------
        loss : Tensor, shape ()
            BiMixCo on a BiMixCo epoch, else the recipe's :meth:`objective`.
        """
        if self.mixes_inputs:
            if perm is None or lambdas is None:
                raise ValueError(f"epoch {self.epoch} of 'mindeye2' is a BiMixCo epoch: pass the perm and "
                                 "lambdas of mixco() applied to the inputs")
            return bimixco(pred, target, perm, lambdas, self._temperature(False), ids=ids)
        if perm is not None or lambdas is not None:
            raise ValueError(f"perm / lambdas were given but epoch {self.epoch} of {self.name!r} does not "
                             "mix inputs")
        return self._loss(pred, target, ids, self._temperature(False))

    def validation_loss(self, pred: torch.Tensor, target: torch.Tensor,
                        ids: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of unmixed rows at the validation temperature (the same for every epoch).

        Parameters
        ----------
        pred, target : Tensor, shape (batch, dim)
            Decoded and stimulus embeddings of the same trials.
        ids : Tensor of int, shape (batch,) | None
            Stimulus codes (repeats of a stimulus are positives, not negatives).

        Returns
        -------
        loss : Tensor, shape ()
            The recipe's :meth:`objective`.
        """
        return self._loss(pred, target, ids, self._temperature(True))

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None,
              temperature: float | torch.Tensor) -> torch.Tensor:
        return self.objective(pred, target, ids, temperature)

    def objective(self, pred: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None,
                  temperature: float | torch.Tensor) -> torch.Tensor:
        """The recipe's loss of unmixed rows at ``temperature`` (each registered subclass defines it).

        Parameters
        ----------
        pred, target : Tensor, shape (batch, dim)
            Decoded and stimulus embeddings of the same trials.
        ids : Tensor of int, shape (batch,) | None
            Stimulus codes (repeats of a stimulus are positives, not negatives).
        temperature : float | Tensor
            Softmax temperature (a tensor in learnable mode).

        Returns
        -------
        loss : Tensor, shape ()
            The loss.
        """
        raise NotImplementedError(f"{type(self).__name__} must define objective(pred, target, ids, temperature)")

    def extra_repr(self) -> str:
        """The settings shown in the module's ``repr``.

        Returns
        -------
        text : str
            The loss's name, current temperature and mode (and schedule / BiMixCo epochs).
        """
        out = f"{self.name!r}, temperature={self.temperature:.4g}, mode={self.temperature_mode!r}"
        if self.temperature_mode == "schedule":
            out += f", schedule={self.temperature_schedule}"
        if self.uses_mixco:
            out += f", n_mixco_epochs={self.n_mixco_epochs}"
        return out


@register_loss("infonce")
class InfoNCELoss(TrainingLoss):
    """Symmetric CLIP loss (:func:`info_nce`); learnable temperature from 0.07 by default.

    Parameters
    ----------
    name : str | None
        ``"infonce"`` or None.
    *args, **kwargs
        The keyword-only settings of :class:`TrainingLoss`.
    """

    temperature_defaults = (0.07, "learnable", ("fixed", "learnable", "schedule"))

    def objective(self, pred: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None,
                  temperature: float | torch.Tensor) -> torch.Tensor:
        """Symmetric CLIP loss of unmixed rows at ``temperature`` (:func:`info_nce`).

        Parameters
        ----------
        pred, target : Tensor, shape (batch, dim)
            Decoded and stimulus embeddings of the same trials.
        ids : Tensor of int, shape (batch,) | None
            Stimulus codes (repeats of a stimulus are positives, not negatives).
        temperature : float | Tensor
            Softmax temperature (a tensor in learnable mode).

        Returns
        -------
        loss : Tensor, shape ()
            The symmetric InfoNCE loss.
        """
        return info_nce(pred, target, temperature, ids=ids)


@register_loss("soft_clip")
class SoftClipLoss(TrainingLoss):
    """MindEye's SoftCLIP (:func:`soft_clip`); fixed temperature 0.125 by default.

    Parameters
    ----------
    name : str | None
        ``"soft_clip"`` or None.
    *args, **kwargs
        The keyword-only settings of :class:`TrainingLoss`.
    """

    temperature_defaults = (0.125, "fixed", ("fixed", "schedule"))

    def objective(self, pred: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None,
                  temperature: float | torch.Tensor) -> torch.Tensor:
        """SoftCLIP loss of unmixed rows at ``temperature`` (:func:`soft_clip`).

        Parameters
        ----------
        pred, target : Tensor, shape (batch, dim)
            Decoded and stimulus embeddings of the same trials.
        ids : Tensor of int, shape (batch,) | None
            Ignored: SoftCLIP's soft targets come from the target embeddings' similarities.
        temperature : float | Tensor
            Softmax temperature (a tensor in learnable mode).

        Returns
        -------
        loss : Tensor, shape ()
            The SoftCLIP loss.
        """
        return soft_clip(pred, target, temperature)


@register_loss("mindeye2")
class MindEye2Loss(SoftClipLoss):
    """MindEye2: BiMixCo for the first ``mixco_fraction`` of the epochs, then SoftCLIP on a schedule.

    Parameters
    ----------
    name : str | None
        ``"mindeye2"`` or None.
    *args, **kwargs
        The keyword-only settings of :class:`TrainingLoss`.
    """

    temperature_defaults = (MINDEYE2_TEMPERATURE, "schedule", ("fixed", "schedule"))
    uses_mixco = True
    main_phase = "soft_clip"


@register_loss("clip_mse")
class ClipMSELoss(TrainingLoss):
    """ATM: ``clip_weight × CLIP + (1 − clip_weight) × MSE`` (CLIP on normalised rows, MSE on raw ones).

    Parameters
    ----------
    name : str | None
        ``"clip_mse"`` or None.
    *args, **kwargs
        The keyword-only settings of :class:`TrainingLoss`.
    """

    temperature_defaults = (ATM_TEMPERATURE, "learnable", ("fixed", "learnable", "schedule"))

    def objective(self, pred: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None,
                  temperature: float | torch.Tensor) -> torch.Tensor:
        """``clip_weight × CLIP + (1 − clip_weight) × MSE`` of unmixed rows.

        Parameters
        ----------
        pred, target : Tensor, shape (batch, dim)
            Decoded and stimulus embeddings of the same trials.
        ids : Tensor of int, shape (batch,) | None
            Stimulus codes for the CLIP term (repeats of a stimulus are positives, not negatives).
        temperature : float | Tensor
            Softmax temperature (a tensor in learnable mode).

        Returns
        -------
        loss : Tensor, shape ()
            The weighted sum of the CLIP loss at ``temperature`` and the MSE.
        """
        clip = info_nce(pred, target, temperature, ids=ids)
        return self.clip_weight * clip + (1.0 - self.clip_weight) * F.mse_loss(pred, target)

    def extra_repr(self) -> str:
        """The settings shown in the module's ``repr``.

        Returns
        -------
        text : str
            The :class:`TrainingLoss` settings and ``clip_weight``.
        """
        return f"{super().extra_repr()}, clip_weight={self.clip_weight:g}"


@register_loss("brainmagick_clip")
class BrainMagickClipLoss(TrainingLoss):
    """brainmagick's ``ClipLoss`` (:func:`candidate_clip`): brain → stimulus, candidates normalised.

    Parameters
    ----------
    name : str | None
        ``"brainmagick_clip"`` or None.
    *args, **kwargs
        The keyword-only settings of :class:`TrainingLoss`.
    """

    temperature_defaults = (1.0, "fixed", ("fixed",))

    def objective(self, pred: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None,
                  temperature: float | torch.Tensor) -> torch.Tensor:
        """Brain → stimulus CLIP loss of unmixed rows, as in brainmagick (:func:`candidate_clip`).

        Parameters
        ----------
        pred, target : Tensor, shape (batch, dim)
            Decoded and stimulus embeddings of the same trials.
        ids : Tensor of int, shape (batch,) | None
            Stimulus codes: rows sharing an id are all positives.
        temperature : float | Tensor
            Softmax temperature (a tensor in learnable mode).

        Returns
        -------
        loss : Tensor, shape ()
            The candidate CLIP loss.
        """
        return candidate_clip(pred, target, temperature, ids=ids)


@register_loss("mse")
class NormalizedMSELoss(nn.Module):
    """MSE between the L2-normalised prediction and the target (``Trainer(loss="mse")``; no temperature).

    Parameters
    ----------
    *args, **kwargs
        None accepted (the signature of ``nn.Module.__init__``): the loss has no settings.
    """

    temperature_defaults = None

    def forward(self, pred: torch.Tensor, target: torch.Tensor, ids: Any = None) -> torch.Tensor:
        """Loss of one batch; ``ids`` is ignored.

        Parameters
        ----------
        pred : Tensor, shape (batch, dim)
            Decoded embeddings (L2-normalised here).
        target : Tensor, shape (batch, dim)
            Stimulus embeddings (used as given).
        ids : object
            Ignored (accepted for the loss interface).

        Returns
        -------
        loss : Tensor, shape ()
            Mean squared error.
        """
        return F.mse_loss(F.normalize(pred, dim=1), target)


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
        """Total loss; ``(terms)`` or, with ``losses`` set, ``(preds, targets)``.

        Parameters
        ----------
        terms_or_preds : dict
            Term name → computed loss (Tensor), or, with ``targets``, term name → prediction.
        targets : dict | None
            Term name → target, passed with the prediction to the term's function in ``losses``.

        Returns
        -------
        loss : Tensor
            The weighted sum of the terms (their unweighted values go to ``last_terms``).
        """
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
        """The settings shown in the module's ``repr``.

        Returns
        -------
        text : str
            The weighted sum, e.g. ``1·prior + 0.033·clip``.
        """
        return " + ".join(f"{w:g}·{name}" for name, w in self.weights.items())
