"""Batching for the Trainer: per-subject batches, in memory or streamed from lazy arrays.

Every batch holds trials of one subject. An epoch's batch list is drawn from a
``torch.Generator`` (a permutation per subject, then a permutation of the
batches), identically on every process; in a multi-process run each global
batch of ``batch_size × world_size`` trials is split into ``world_size``
consecutive slices, one per process, so 2 processes × batch ``b`` see exactly
the trials that 1 process × batch ``2b`` sees.

Lazy data (HDF5-backed, memory-mapped, anything with ``shape`` and row
indexing) is never materialised: each batch reads its rows (sorted, unique)
through :func:`~neurodecode.datasets._trials._take_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..datasets._trials import RaggedData, _take_rows
from ..utils import _ensure_finite, logger

#: Rows per read when checking or validating lazy data.
READ_CHUNK = 256


@dataclass
class SubjectData:
    """One subject's training material.

    ``rows`` index the full ``trials.data``; ``train``/``val`` index ``rows``.
    Features come from ``X`` (in memory, on the device) or are read from
    ``source`` batch by batch (streaming).
    """

    subject: Any
    rows: np.ndarray
    Y: torch.Tensor
    codes: torch.Tensor
    train: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    val: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    X: torch.Tensor | None = None
    source: Any = None

    def features(self, idx: np.ndarray, device: torch.device) -> torch.Tensor:
        """Float32 features of local rows ``idx``, shape (len(idx), n_features), on ``device``."""
        if self.X is not None:
            return self.X.index_select(0, torch.from_numpy(np.asarray(idx, np.int64)).to(self.X.device))
        block = np.asarray(_take_rows(self.source, self.rows[idx]), dtype=np.float32)
        return torch.from_numpy(block.reshape(len(idx), -1)).to(device)


def is_in_memory(data: Any) -> bool:
    """Whether ``data`` is a NumPy array (or ragged blocks of NumPy arrays)."""
    if isinstance(data, np.ndarray):
        return True
    if isinstance(data, RaggedData):
        return all(isinstance(b, np.ndarray) for b in data.blocks)
    return False


def check_features(X: np.ndarray | None, source: Any, rows: np.ndarray, *, subject: Any,
                   n_expected: int) -> None:
    """Size, finiteness and variance checks; lazy data is scanned in chunks of :data:`READ_CHUNK` rows."""
    lo = hi = None
    n_features = None
    chunks = [X] if X is not None else (
        np.asarray(_take_rows(source, rows[a:a + READ_CHUNK]), dtype=np.float32).reshape(
            len(rows[a:a + READ_CHUNK]), -1) for a in range(0, len(rows), READ_CHUNK))
    for block in chunks:
        if n_features is None:
            n_features = block.shape[1]
            if n_features != n_expected:
                raise ValueError(f"Subject {subject!r} has {n_features} features in trials but the model's "
                                 f"adapter expects {n_expected}; build the model with n_inputs from "
                                 "the data")
        _ensure_finite(block, what=f"The data of subject {subject!r}")
        bmin, bmax = block.min(0), block.max(0)
        lo = bmin if lo is None else np.minimum(lo, bmin)
        hi = bmax if hi is None else np.maximum(hi, bmax)
    if lo is None:
        return
    varying = hi > lo
    if len(rows) > 1 and not np.any(varying):
        raise ValueError(f"The data of subject {subject!r} has zero variance (every feature is "
                         "constant across trials); nothing can be learned. Check the loader "
                         "and preprocessing.")
    n_const = int((~varying).sum())
    if n_const:
        logger.debug("Subject %s: %d of %d features are constant", subject, n_const, len(varying))


def chunks(n: int, batch_size: int, min_size: int = 2) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches; a last batch of < ``min_size`` trials is dropped."""
    return [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)
            if min(a + batch_size, n) - a >= min_size]


def epoch_batches(data: dict[Any, SubjectData], batch_size: int, generator: torch.Generator,
                  min_size: int = 2) -> list[tuple[Any, np.ndarray]]:
    """One epoch's ``(subject, local training rows)`` global batches, in training order.

    Consumes ``generator`` identically on every process (one permutation per
    subject, then one over the batches).
    """
    batches = []
    for subject, d in data.items():
        perm = d.train[torch.randperm(len(d.train), generator=generator).numpy()]
        batches += [(subject, perm[a:b]) for a, b in chunks(len(perm), batch_size, min_size)]
    order = torch.randperm(len(batches), generator=generator).numpy()
    return [batches[i] for i in order]


def n_epoch_batches(data: dict[Any, SubjectData], batch_size: int, min_size: int = 2) -> int:
    """Number of global batches per epoch (without drawing them)."""
    return sum(len(chunks(len(d.train), batch_size, min_size)) for d in data.values())


def shard(idx: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This process's slice of a global batch (near-equal consecutive slices, in rank order)."""
    if world_size == 1:
        return idx
    return np.array_split(idx, world_size)[rank]
