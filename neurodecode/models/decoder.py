"""BrainDecoder: per-subject linear adapters → shared residual MLP → embedding head."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import _check_option, logger, verbose
from ._pretrained import CONFIG_NAME, WEIGHTS_NAME, read_pretrained, write_pretrained

BACKBONES = ("mlp",)


@dataclass
class DecoderOutput:
    """What :meth:`BrainDecoder.forward` returns.

    Attributes
    ----------
    embedding : Tensor, shape (batch, embed_dim)
        The decoded stimulus embedding.
    latent : Tensor, shape (batch, hidden_dim)
        The shared latent after the subject adapter (before the backbone).
    """

    embedding: torch.Tensor
    latent: torch.Tensor


def _dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout drawing its mask from ``generator`` (reproducible without global seeding)."""
    if not training or p == 0.0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


class _ResidualBlock(nn.Module):
    """``x + Dropout(Linear(GELU(Linear(LayerNorm(x)))))``."""

    def __init__(self, dim: int, dropout: float, device: Any = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, device=device)
        self.fc1 = nn.Linear(dim, dim, device=device)
        self.fc2 = nn.Linear(dim, dim, device=device)
        self.act = nn.GELU()
        self.p = dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.fc2(_dropout(self.act(self.fc1(self.norm(x))), self.p, self.training, generator))
        return x + _dropout(h, self.p, self.training, generator)


class BrainDecoder(nn.Module):
    """Decode brain responses of several subjects into one stimulus-embedding space.

    MindEye2's recipe: each subject has its own linear adapter (voxels → a
    shared latent, the "ridge" layer), followed by a backbone shared across
    subjects and a linear head to the embedding space (e.g. CLIP).

    Parameters
    ----------
    n_inputs : dict
        Subject → number of input features (voxels, or channels × times,
        flattened). Subjects are keyed by ``str(subject)``, so ``1`` and ``"1"``
        name the same subject.
    embed_dim : int
        Dimension of the target embeddings.
    hidden_dim : int
        Width of the shared latent and backbone.
    n_blocks : int
        Number of residual MLP blocks (LayerNorm, Linear, GELU, dropout).
    dropout : float
        Dropout probability in the backbone, in [0, 1).
    backbone : {"mlp"}
        The shared backbone.
    seed : int | None
        If given, weights are initialised from a ``torch.Generator`` seeded
        with it (reproducible, leaves the global torch RNG alone); otherwise
        torch's global RNG is used, as for any ``nn.Module``.

    Examples
    --------
    >>> model = BrainDecoder(n_inputs={1: 15724, 2: 14278}, embed_dim=768)   # doctest: +SKIP
    >>> out = model(torch.randn(4, 15724), subject=1)                        # doctest: +SKIP
    >>> out.embedding.shape                                                  # doctest: +SKIP
    torch.Size([4, 768])
    >>> pred = model.predict(test_trials)                                    # doctest: +SKIP
    """

    config_name = CONFIG_NAME
    weights_name = WEIGHTS_NAME

    def __init__(self, n_inputs: Mapping[Any, int], embed_dim: int, hidden_dim: int = 512,
                 n_blocks: int = 2, dropout: float = 0.1, backbone: str = "mlp",
                 seed: int | None = None) -> None:
        super().__init__()
        if not isinstance(n_inputs, Mapping) or not n_inputs:
            raise ValueError("n_inputs must be a non-empty dict subject → number of input features, "
                             f"got {n_inputs!r}")
        n_in = {}
        for subject, n in n_inputs.items():
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"n_inputs[{subject!r}] must be a positive int, got {n!r}")
            n_in[str(subject)] = int(n)
        for name, val in (("embed_dim", embed_dim), ("hidden_dim", hidden_dim)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or n_blocks < 0:
            raise ValueError(f"n_blocks must be an int >= 0, got {n_blocks!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        _check_option("backbone", backbone, BACKBONES)
        self.config = {"n_inputs": n_in, "embed_dim": int(embed_dim), "hidden_dim": int(hidden_dim),
                       "n_blocks": int(n_blocks), "dropout": float(dropout), "backbone": backbone,
                       "seed": seed}
        # built on the meta device, then initialised once from the generator (no global RNG use)
        meta = torch.device("meta")
        self.adapters = nn.ModuleDict({s: nn.Linear(n, hidden_dim, device=meta) for s, n in n_in.items()})
        self.blocks = nn.ModuleList([_ResidualBlock(hidden_dim, float(dropout), device=meta)
                                     for _ in range(n_blocks)])
        self.head_norm = nn.LayerNorm(hidden_dim, device=meta)
        self.head = nn.Linear(hidden_dim, embed_dim, device=meta)
        self.to_empty(device="cpu")
        self.reset_parameters(None if seed is None else torch.Generator().manual_seed(int(seed)))

    # -- properties --------------------------------------------------------------------
    @property
    def subjects(self) -> list[str]:
        """Subjects the model has an adapter for (as strings)."""
        return list(self.config["n_inputs"])

    @property
    def n_inputs(self) -> dict[str, int]:
        """Subject → number of input features."""
        return dict(self.config["n_inputs"])

    @property
    def embed_dim(self) -> int:
        """Output embedding dimension."""
        return self.config["embed_dim"]

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every weight (PyTorch's defaults), drawing from ``generator``."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(module.in_features)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _check_subject(self, subject: Any) -> str:
        key = str(subject)
        if key not in self.config["n_inputs"]:
            raise ValueError(f"Subject {subject!r} is unknown to this model; it has adapters for subjects "
                             f"{self.subjects}. Add an adapter (new-subject adaptation) or select "
                             "trials of known subjects.")
        return key

    # -- forward ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, subject: Any,
                generator: torch.Generator | None = None) -> DecoderOutput:
        """Decode one batch of a single subject.

        Parameters
        ----------
        x : Tensor, shape (batch, n_inputs[subject])
        subject : int | str
            The subject all rows of ``x`` come from.
        generator : torch.Generator | None
            Source of dropout masks in training mode (for reproducible training).

        Returns
        -------
        output : DecoderOutput
        """
        key = self._check_subject(subject)
        n_expected = self.config["n_inputs"][key]
        if x.ndim != 2 or x.shape[1] != n_expected:
            raise ValueError(f"Subject {subject!r} expects input of shape (batch, {n_expected}), got "
                             f"{tuple(x.shape)}")
        latent = self.adapters[key](x)
        h = latent
        for block in self.blocks:
            h = block(h, generator)
        return DecoderOutput(embedding=self.head(self.head_norm(h)), latent=latent)

    # -- inference on BrainTrials ------------------------------------------------------
    @verbose
    def predict(self, trials: Any, *, batch_size: int = 256, device: str | torch.device = "cpu",
                verbose: bool | str | int | None = None) -> np.ndarray:
        """Decoded embeddings of every trial, in trial order.

        Works on single- and multi-subject (ragged) BrainTrials: each subject's
        trials go through its own adapter and come back to their original rows.

        Parameters
        ----------
        trials : BrainTrials
            Features beyond the first axis are flattened.
        batch_size : int
            Trials per forward pass.
        device : str | torch.device
            Where to run (the model is moved there).
        verbose : bool | str | int | None
            Log level for this call.

        Returns
        -------
        embeddings : ndarray of float32, shape (n_trials, embed_dim)
        """
        subj_col = trials.events["subject"].to_numpy()
        for subject in trials.subjects:
            self._check_subject(subject)
        out = np.empty((len(trials), self.embed_dim), dtype=np.float32)
        was_training = self.training
        self.eval()
        self.to(device)
        try:
            with torch.no_grad():
                for subject, sub in trials.by_subject().items():
                    rows = np.flatnonzero(subj_col == subject)
                    X = np.asarray(sub.get_data(), dtype=np.float32).reshape(len(sub), -1)
                    n_expected = self.config["n_inputs"][str(subject)]
                    if X.shape[1] != n_expected:
                        raise ValueError(f"Subject {subject!r} has {X.shape[1]} features in trials but the "
                                         f"model's adapter expects {n_expected}")
                    for start in range(0, len(X), batch_size):
                        xb = torch.from_numpy(X[start:start + batch_size]).to(device)
                        emb = self(xb, subject).embedding
                        out[rows[start:start + batch_size]] = emb.float().cpu().numpy()
                    logger.debug("BrainDecoder.predict: subject %s, %d trials", subject, len(X))
        finally:
            self.train(was_training)
        return out

    # -- persistence -------------------------------------------------------------------
    @verbose
    def save_pretrained(self, save_directory: str | Path, *,
                        verbose: bool | str | int | None = None) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (class, version, config) to a folder.

        Parameters
        ----------
        save_directory : str | Path
            Created if needed; files are replaced atomically.
        verbose : bool | str | int | None
            Log level for this call.

        Returns
        -------
        save_directory : Path
        """
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        return write_pretrained(save_directory, state, {"config": self.config}, class_name=type(self).__name__)

    @classmethod
    @verbose
    def from_pretrained(cls, save_directory: str | Path, *, device: str | torch.device = "cpu",
                        verbose: bool | str | int | None = None) -> BrainDecoder:
        """Rebuild a model saved by :meth:`save_pretrained` (safetensors, never pickle).

        Parameters
        ----------
        save_directory : str | Path
            Folder holding ``config.json`` and ``model.safetensors``.
        device : str | torch.device
            Where to load the weights.
        verbose : bool | str | int | None
            Log level for this call.

        Returns
        -------
        model : BrainDecoder
            In eval mode.
        """
        cfg, state = read_pretrained(save_directory, class_name=cls.__name__, device=str(device))
        config = dict(cfg["config"])
        config["seed"] = 0  # weights come from the file; a private generator leaves the global RNG alone
        model = cls(**config)
        model.config["seed"] = cfg["config"].get("seed")
        model.load_state_dict(state, strict=True)
        model.to(device)
        model.eval()
        logger.info("Loaded %s from %s", cls.__name__, save_directory)
        return model
