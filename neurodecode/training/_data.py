"""Batching for the Trainer: per-subject or all-subject batches, in memory or streamed from lazy arrays.

``per_subject`` (:func:`epoch_batches`): every batch holds trials of one
subject. An epoch's batch list is drawn from a ``torch.Generator`` (a
permutation per subject, then a permutation of the batches), identically on
every process; in a multi-process run each global batch of ``batch_size ×
world_size`` trials is split into ``world_size`` consecutive slices, one per
process, so 2 processes × batch ``b`` see exactly the trials that 1 process ×
batch ``2b`` sees.

``all_subjects`` (:func:`all_subject_steps`): every step holds ``batch_size //
n_subjects`` trials of every subject (MindEye2), and no stimulus twice.

Lazy data (HDF5-backed, memory-mapped, anything with ``shape`` and row
indexing) is never materialised: each batch reads its rows (sorted, unique)
through :func:`~neurodecode.datasets._trials.take_rows`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..utils import RaggedData, ensure_finite, logger, take_rows

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
    _codes_np: np.ndarray | None = field(default=None, repr=False)

    @property
    def codes_np(self) -> np.ndarray:
        """``codes`` as a (cached) NumPy array on the CPU."""
        if self._codes_np is None:
            self._codes_np = self.codes.cpu().numpy()
        return self._codes_np

    def features(self, idx: np.ndarray, device: torch.device) -> torch.Tensor:
        """Float32 features of local rows ``idx``, shape (len(idx), n_features), on ``device``."""
        if self.X is not None:
            return self.X.index_select(0, torch.from_numpy(np.asarray(idx, np.int64)).to(self.X.device))
        block = np.asarray(take_rows(self.source, self.rows[idx]), dtype=np.float32)
        return torch.from_numpy(block.reshape(len(idx), -1)).to(device)


def is_in_memory(data: Any) -> bool:
    """Whether ``data`` is a NumPy array (or ragged blocks of NumPy arrays)."""
    if isinstance(data, np.ndarray):
        return True
    if isinstance(data, RaggedData):
        return all(isinstance(b, np.ndarray) for b in data.blocks)
    return False


def check_features(X: np.ndarray | None, source: Any, rows: np.ndarray, *, subject: Any,
                   n_expected: int, digest: Any = None) -> None:
    """Size, finiteness and variance checks; lazy data is scanned in chunks of :data:`READ_CHUNK` rows.

    ``digest`` (a hashlib object), if given, is updated with the float32 features in trial
    order (the resume fingerprint; the data are read once for both).
    """
    lo = hi = None
    n_features = None
    chunks = [X] if X is not None else (
        np.asarray(take_rows(source, rows[a:a + READ_CHUNK]), dtype=np.float32).reshape(
            len(rows[a:a + READ_CHUNK]), -1) for a in range(0, len(rows), READ_CHUNK))
    for block in chunks:
        if n_features is None:
            n_features = block.shape[1]
            if n_features != n_expected:
                raise ValueError(f"Subject {subject!r} has {n_features} features in trials but the model's "
                                 f"adapter expects {n_expected}; build the model with n_inputs from "
                                 "the data")
        ensure_finite(block, what=f"The data of subject {subject!r}")
        if digest is not None:
            digest.update(memoryview(np.ascontiguousarray(block, dtype=np.float32)).cast("B"))
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


def sub_batch_size(n_subjects: int, batch_size: int) -> int:
    """Trials per subject in an ``all_subjects`` step: ``batch_size // n_subjects`` (MindEye2)."""
    return int(batch_size) // max(int(n_subjects), 1)


def n_all_subject_steps(data: dict[Any, SubjectData], batch_size: int, min_size: int = 2) -> int:
    """Steps per ``all_subjects`` epoch: one pass over the smallest subject's training trials.

    0 when a step would hold fewer than ``min_size`` trials.
    """
    b = sub_batch_size(len(data), batch_size)
    if b < 1 or b * len(data) < min_size:
        return 0
    return min(len(d.train) for d in data.values()) // b


def all_subject_steps(data: dict[Any, SubjectData], batch_size: int, generator: torch.Generator,
                      min_size: int = 2) -> list[list[tuple[Any, np.ndarray]]]:
    """One epoch of ``all_subjects`` steps: ``[(subject, local rows), ...]`` per step, subjects in data order.

    Every step takes ``b = batch_size // n_subjects`` training trials of every
    subject (MindEye2 splits its batch so), and never two trials of one
    stimulus (within or across subjects): the contrastive loss over the
    concatenated step would otherwise treat a stimulus as its own negative.
    MindEye2 skips a subject's batch whose images repeat; here the epoch is
    deterministic instead: each subject's training trials are permuted (one
    ``randperm`` per subject, in data order, from ``generator``) and consumed
    in that order; a trial whose stimulus is already in the step is deferred
    to the next step (deferred trials come first, in order). An epoch has
    :func:`n_all_subject_steps` steps (one pass over the smallest subject);
    when a subject runs out of trials for the last steps because of
    deferrals, its permutation is reused from the start (so a trial may then
    come twice in an epoch, never twice in a step).

    Parameters
    ----------
    data : dict
        Subject → :class:`SubjectData` (with ``train`` set).
    batch_size : int
        Trials per step, over all subjects (``b × n_subjects`` are used).
    generator : torch.Generator
        Consumed identically on every process.
    min_size : int
        Smallest allowed step.

    Returns
    -------
    steps : list of list of (subject, ndarray of int64)

    Raises
    ------
    ValueError
        If ``batch_size < n_subjects``, or a subject has fewer than ``b``
        training stimuli outside those the other subjects put in a step.
    """
    subjects = list(data)
    b = sub_batch_size(len(subjects), batch_size)
    if b < 1:
        raise ValueError(f"batch_composition='all_subjects' needs batch_size >= the number of subjects "
                         f"({len(subjects)}), got batch_size={batch_size}")
    perms = {s: data[s].train[torch.randperm(len(data[s].train), generator=generator).numpy()]
             for s in subjects}
    n_steps = n_all_subject_steps(data, batch_size, min_size)
    cursor = dict.fromkeys(subjects, 0)
    pending: dict[Any, deque] = {s: deque() for s in subjects}
    steps = []
    for _ in range(n_steps):
        used: set[int] = set()
        step = []
        for s in subjects:
            perm, codes = perms[s], data[s].codes_np
            take, skipped, queue = [], [], pending[s]
            streamed = 0
            while len(take) < b:
                if queue:
                    r = queue.popleft()
                else:
                    if streamed >= len(perm):
                        raise ValueError(
                            f"Cannot draw {b} training trials of subject {s!r} whose stimuli differ from the "
                            f"{len(used)} other stimuli of an all_subjects step (it has "
                            f"{len(np.unique(codes[perm]))} training stimuli); lower batch_size or use "
                            "batch_composition='per_subject'")
                    r = perm[cursor[s] % len(perm)]
                    cursor[s] += 1
                    streamed += 1
                code = int(codes[r])
                if code in used:
                    skipped.append(r)
                else:
                    take.append(r)
                    used.add(code)
            skipped.extend(queue)
            pending[s] = deque(skipped)
            step.append((s, np.asarray(take, dtype=np.int64)))
        steps.append(step)
    return steps


def shard(idx: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This process's slice of a global batch (near-equal consecutive slices, in rank order)."""
    if world_size == 1:
        return idx
    return np.array_split(idx, world_size)[rank]
