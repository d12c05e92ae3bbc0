"""Experiment tracking of a run (``tracking: [...]``): the deep decoder's training and the final test metrics.

Everything goes under ``<run>/tracking``: tensorboard runs ``mlp`` (or
``loso-subjNN/mlp`` per leave-one-subject-out fold, mirroring ``models/``) and
``test``; the wandb project / mlflow experiment is the config's ``name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import FitConfig


def run_tracking(config: FitConfig, out: Path, run_name: str) -> Any:
    """The run's :class:`~neurodecode.training.Tracking` for ``run_name``, or None when tracking is off."""
    if not config.tracking:
        return None
    from ..training import Tracking

    return Tracking(config.tracking, out / "tracking", run_name=run_name, project=config.name, group=out.name,
                    config=config.model_dump(mode="json"), tracker_kwargs=config.tracking_kwargs)


def training_tracking(config: FitConfig, out: Path, model_dir: Path) -> Any:
    """The tracking of the decoder saved to ``model_dir``, its run named after its place in ``models/``."""
    try:
        name = Path(model_dir).relative_to(out / "models").as_posix()
    except ValueError:
        name = Path(model_dir).name
    return run_tracking(config, out, name)


def check_tracking(config: FitConfig) -> None:
    """Refuse a tracker whose package is missing before the run starts (one line naming what to install)."""
    tracking = run_tracking(config, Path("."), "check")
    if tracking is not None:
        tracking.check()


def metric_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The test metrics of ``metrics.json`` as tracker scalars.

    ``test/<model>/<subject>/<metric>/<value|ci_low|ci_high|chance>`` per subject (groups, if any, as
    ``test/<model>/<subject>/groups/<group>/<metric>/<stat>``), and ``test/<model>/mean/<metric>/value``:
    the mean over subjects.
    """
    out: dict[str, float] = {}
    for model, per_subject in metrics.get("models", {}).items():
        values: dict[str, list[float]] = {}
        for subject, scores in per_subject.items():
            parts = [(f"test/{model}/{subject}", scores.get("metrics", {}))]
            parts += [(f"test/{model}/{subject}/groups/{g}", m) for g, m in scores.get("groups", {}).items()]
            for prefix, table in parts:
                for metric, stats in table.items():
                    out |= {f"{prefix}/{metric}/{k}": float(v) for k, v in stats.items() if v is not None}
            for metric, stats in scores.get("metrics", {}).items():
                if stats.get("value") is not None:
                    values.setdefault(metric, []).append(float(stats["value"]))
        out |= {f"test/{model}/mean/{metric}/value": float(np.mean(v)) for metric, v in values.items()}
    return out


def log_final_metrics(config: FitConfig, out: Path, metrics: dict[str, Any]) -> None:
    """Log the run's test metrics (as written to ``metrics.json``) to its trackers, as the run ``test``."""
    tracking = run_tracking(config, out, "test")
    if tracking is not None:
        tracking.log_metrics(metric_scalars(metrics))
