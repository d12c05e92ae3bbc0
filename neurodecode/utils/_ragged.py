"""Rows of several subjects whose feature shapes differ, and row indexing of any array-like."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class RaggedData:
    """Trials of several subjects whose feature shapes differ (e.g. voxel counts).

    Parameters
    ----------
    blocks : list of array-like
        One array per subject, shape ``(n_trials_b, *feature_shape_b)``.
    index : array of int, shape (n_trials, 2)
        For every trial, ``(block, row in block)``.
    """

    def __init__(self, blocks: Sequence[Any], index: np.ndarray) -> None:
        self.blocks = list(blocks)
        self.index = np.asarray(index, dtype=np.int64).reshape(-1, 2)

    @classmethod
    def from_blocks(cls, blocks: Sequence[Any]) -> RaggedData:
        """All the trials of ``blocks``, block after block.

        Parameters
        ----------
        blocks : sequence of array-like
            One array per subject, shape ``(n_trials_b, *feature_shape_b)``.

        Returns
        -------
        data : RaggedData
            Every row of the first block, then of the second, and so on.
        """
        idx = [np.column_stack([np.full(len(b), i), np.arange(len(b))]) for i, b in enumerate(blocks)]
        return cls(blocks, np.concatenate(idx) if idx else np.zeros((0, 2), int))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple:
        """``(n_trials, None)``: the feature size differs across blocks."""
        return (len(self), None)

    @property
    def feature_shapes(self) -> list[tuple]:
        """Feature shape of each block."""
        return [tuple(b.shape[1:]) for b in self.blocks]

    def take(self, rows: np.ndarray) -> RaggedData | np.ndarray:
        """Rows ``rows``; a plain array when all come from one block.

        Parameters
        ----------
        rows : array of int
            Trial indices to take.

        Returns
        -------
        data : RaggedData | numpy.ndarray
            The selected trials: an array when they all come from one block, else a
            :class:`RaggedData` sharing this one's blocks.
        """
        sub = self.index[rows]
        used = np.unique(sub[:, 0])
        if len(used) == 1:
            return take_rows(self.blocks[int(used[0])], sub[:, 1])
        return RaggedData(self.blocks, sub)

    def __repr__(self) -> str:
        return f"<RaggedData | {len(self)} trials | feature shapes {self.feature_shapes}>"


def take_rows(data: Any, rows: np.ndarray) -> Any:
    """Index rows of an array or array-like, reading sorted unique rows (HDF5-friendly).

    Parameters
    ----------
    data : array-like
        A NumPy array, a :class:`RaggedData`, an object with a ``take_rows`` method,
        or any array-like indexable by a sorted array of rows (e.g. an HDF5 dataset).
    rows : array of int
        Row indices, in any order and possibly repeated.

    Returns
    -------
    out : numpy.ndarray | RaggedData
        The rows of ``data``, in the order of ``rows``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(data, np.ndarray):
        return data[rows]
    if isinstance(data, RaggedData):
        return data.take(rows)
    if hasattr(data, "take_rows"):
        return data.take_rows(rows)
    order = np.argsort(rows, kind="stable")
    uniq, inverse = np.unique(rows[order], return_inverse=True)
    block = np.asarray(data[uniq])
    out = np.empty((len(rows), *block.shape[1:]), dtype=block.dtype)
    out[order] = block[inverse]
    return out
