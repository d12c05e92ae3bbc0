"""Simulated THINGS-EEG2 and THINGS-MEG datasets in their real on-disk layouts (being written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_things_eeg2(*, n_subjects: int = 2, seed: int = 0, image_size: int = 64,
                        snr: float = 1.0) -> dict[str, Any]:
    raise NotImplementedError("simulate('things_eeg2') is being written")


def write_things_eeg2(root: Path, p: dict[str, Any]) -> dict[str, Any]:
    raise NotImplementedError("simulate('things_eeg2') is being written")


def resolve_things_meg(*, n_subjects: int = 2, seed: int = 0, image_size: int = 64,
                       snr: float = 1.0) -> dict[str, Any]:
    raise NotImplementedError("simulate('things_meg') is being written")


def write_things_meg(root: Path, p: dict[str, Any]) -> dict[str, Any]:
    raise NotImplementedError("simulate('things_meg') is being written")
