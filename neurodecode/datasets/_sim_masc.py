"""Simulated MEG-MASC dataset (BIDS, speech) in its real on-disk layout (being written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_masc(*, n_subjects: int = 2, seed: int = 0, snr: float = 1.0) -> dict[str, Any]:
    raise NotImplementedError("simulate('masc') is being written")


def write_masc(root: Path, p: dict[str, Any]) -> dict[str, Any]:
    raise NotImplementedError("simulate('masc') is being written")
