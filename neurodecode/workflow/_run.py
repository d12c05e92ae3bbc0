"""Run folders: never overwritten, resumable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import FitConfig, config_to_yaml


@dataclass
class FitResult:
    """What :func:`run_fit` produced."""

    run_dir: Path
    metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        """The HTML report."""
        return self.run_dir / "report.html"


def _fresh_dir(base: Path) -> Path:
    """``base``, or the first ``base-1``, ``base-2``, ... that holds no files (never overwrite a run)."""
    path, k = base, 1
    while path.exists() and any(path.iterdir()):
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def _new_run_dir(config: FitConfig, run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(
                f"Run folder {path} already holds files; pick another folder or remove it "
                "(neurodecode never overwrites an earlier run).")
        path.mkdir(parents=True, exist_ok=True)
        return path
    return _fresh_dir(Path(config.output_dir) / config.name)


def _resume_config(config: FitConfig | None, resume: str | Path, run_dir: str | Path | None) -> FitConfig:
    """The config of the run folder ``resume`` (checked against ``config`` when one is given)."""
    from ..config import load_config

    if run_dir is not None:
        raise ValueError("Give either run_dir (a new run) or resume (an existing run folder), not both")
    saved = Path(resume) / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"Cannot resume {resume}: it has no config.yaml. Pass the folder of a run "
                                "started with `neurodecode fit` (e.g. runs/demo).")
    saved_config = load_config(saved)
    if config is not None and config_to_yaml(config) != config_to_yaml(saved_config):
        raise ValueError(f"Cannot resume {resume} with another config; drop the recipe and --set options "
                         f"(the run's own {saved} is used)")
    return saved_config
