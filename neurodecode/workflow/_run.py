"""Run folders: never overwritten, one writer at a time, resumable.

A command claims its output folder with :func:`~neurodecode.utils.locks.claim_folder`:
it holds the folder's lock file (``.neurodecode.lock``) while it writes, a second
process takes the next numbered name (or fails with a clear message for an
explicit folder), and a command that fails before writing anything leaves no
folder behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import FitConfig, config_to_yaml
from ..utils.locks import LOCK_NAME, FolderClaim, claim_folder


@dataclass
class FitResult:
    """What :func:`run_fit` produced.

    Parameters
    ----------
    run_dir : Path
        The output folder of the command (holding ``metrics.json`` and ``report.html``).
    metrics : dict
        The content of its ``metrics.json``.
    timings : dict of str → float
        Wall time in seconds of each stage (``"total"``: the whole command); empty when
        a finished run was found and not refitted.
    """

    run_dir: Path
    metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        """The HTML report."""
        return self.run_dir / "report.html"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a command whose run folder can be continued; ``resume_command`` says how."""

    def __init__(self, run_dir: Path, resume_command: str) -> None:
        super().__init__(f"interrupted; continue with: {resume_command}")
        self.run_dir, self.resume_command = Path(run_dir), resume_command


class OutputInterrupted(KeyboardInterrupt):
    """Ctrl-C while a command that cannot resume wrote ``out_dir``; says what became of that folder.

    ``cleared``: the folder was empty when claimed, so everything the command
    had written there was removed (``removed``: the folder itself too, as this
    command had created it). Otherwise the folder held earlier files (an
    explicit ``--output``) and was left as it is.
    """

    def __init__(self, out_dir: Path, *, cleared: bool, removed: bool) -> None:
        super().__init__(f"interrupted while writing {out_dir}")
        self.out_dir, self.cleared, self.removed = Path(out_dir), cleared, removed


@contextmanager
def _complete_or_removed(claim: FolderClaim) -> Iterator[Path]:
    """``with claim as out`` for a command that cannot resume (adapt, ablate, reconstruct).

    On Ctrl-C the files this command wrote into a folder it claimed empty are
    removed (while the lock is still held, so they are all its own), so the
    folder is either complete or gone; :class:`OutputInterrupted` then says
    which. Other errors behave as with the claim alone.
    """
    try:
        with claim as out:
            try:
                yield out
            except KeyboardInterrupt:
                if claim.fresh:
                    _clear_folder(out)
                raise
    except KeyboardInterrupt as err:
        raise OutputInterrupted(claim.path, cleared=claim.fresh, removed=claim.removed) from err


def _clear_folder(folder: Path) -> None:
    """Remove everything in ``folder`` but its lock file."""
    for p in folder.iterdir():
        if p.name == LOCK_NAME:
            continue
        with suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


def _fresh_dir(base: Path, *, what: str = "output") -> FolderClaim:
    """Claim ``base``, or the first ``base-1``, ``base-2``, ... that is free (never overwrite a run).

    Use the claim as a context manager: the folder is written by this process
    only, and a command that fails before writing anything leaves no folder.
    """
    return claim_folder(base, numbered=True, what=what)


def _output_dir(output: str | Path, *, what: str = "output") -> FolderClaim:
    """Claim an explicitly given output folder (it may hold earlier outputs; never two writers)."""
    return claim_folder(Path(output), allow_existing=True, what=what)


def _claim_run_dir(config: FitConfig, run_dir: str | Path | None, *,
                   disposable: tuple[str, ...] = ("config.yaml",)) -> FolderClaim:
    """Claim a new, empty run folder: ``run_dir`` (must be empty or new) or ``<output_dir>/<name>[-k]``."""
    if run_dir is not None:
        return claim_folder(Path(run_dir), disposable=disposable, what="run")
    return claim_folder(Path(config.output_dir) / config.name, numbered=True, disposable=disposable,
                        what="run")


def _new_run_dir(config: FitConfig, run_dir: str | Path | None) -> Path:
    """The folder :func:`_claim_run_dir` would claim, created empty and not held (no writer protection)."""
    claim = _claim_run_dir(config, run_dir)
    claim.release()
    return claim.path


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
