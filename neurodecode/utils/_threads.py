"""How many CPU cores this process may use, and torch's intra-op threads set to match."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ._logging import logger


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max`` or v1 ``cfs_quota/period``)."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """Cores this process may use: ``OMP_NUM_THREADS`` when set, else the affinity mask and cgroup quota.

    Returns
    -------
    n : int
        At least 1.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            logger.warning("OMP_NUM_THREADS=%r is not an integer; ignoring it", env)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default :func:`available_cpus`) and return it.

    torch otherwise starts one thread per *physical core of the machine*, which
    oversubscribes a job that was given fewer cores (a cluster allocation, a
    container's quota, ``taskset``) and slows every process on a busy machine.

    Parameters
    ----------
    n : int | None
        Threads; ``None`` for :func:`available_cpus`.

    Returns
    -------
    n : int
        The number of threads set.
    """
    import torch

    if n is None:
        n = available_cpus()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an int >= 1, got {n!r}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    logger.debug("torch intra-op threads: %d", n)
    return n
