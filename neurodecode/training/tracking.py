"""Experiment tracking through accelerate's trackers: tensorboard, wandb, mlflow; offline unless asked.

A :class:`Tracking` names the trackers a run logs to and the folder they write
in. :meth:`Trainer.fit <neurodecode.training.Trainer.fit>` takes one and logs,
through the :class:`accelerate.Accelerator` it trains on (``log_with=``,
``project_dir=``, ``init_trackers``), per optimizer step the training loss and
learning rate and per epoch the history's losses, validation loss and
validation retrieval; :meth:`Tracking.log_metrics` logs one set of values (the
final test metrics of a run). Nothing leaves the machine by default: wandb runs
in offline mode unless ``WANDB_MODE`` is set (or the tracker's ``mode`` is
given), and mlflow writes a local ``file:`` store under the tracking folder
unless ``MLFLOW_TRACKING_URI`` is set. See ``docs/training.md``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..utils import check_option

__all__ = ["TRACKERS", "Tracking", "flatten_config"]

#: The experiment trackers a run can log to (accelerate's names).
TRACKERS = ("tensorboard", "wandb", "mlflow")

#: How to install each tracker's package.
_INSTALL = {"tensorboard": "pip install 'neurodecode[tracking]' (or: pip install tensorboard)",
            "wandb": "pip install wandb", "mlflow": "pip install mlflow"}


class Tracking:
    """Which experiment trackers a run logs to, and where; offline unless asked.

    Parameters
    ----------
    trackers : sequence of {"tensorboard", "wandb", "mlflow"}
        The trackers (accelerate's); an empty sequence tracks nothing.
    directory : str | Path
        The tracking folder (``RUN/tracking`` in a run folder). tensorboard
        writes ``<directory>/<run_name>/`` (view it with ``tensorboard --logdir
        <directory>``); wandb writes its offline runs under
        ``<directory>/wandb/`` unless ``WANDB_DIR`` is set; mlflow, unless
        ``MLFLOW_TRACKING_URI`` is set, a ``file:`` store in
        ``<directory>/mlruns``.
    run_name : str
        This run: the tensorboard sub-folder (``"mlp"``,
        ``"loso-subj01/mlp"``, ``"test"``), and the wandb / mlflow run name.
    project : str
        The wandb project and the mlflow experiment.
    group : str | None
        The wandb group; also prefixed to the wandb / mlflow run name
        (``"<group>/<run_name>"``). A run folder's name, say.
    config : mapping | None
        Hyperparameters stored with the run (nested mappings become dotted
        keys, lists JSON text). None: the Trainer's settings.
    tracker_kwargs : mapping | None
        Extra keyword arguments per tracker name: ``tensorboard`` →
        ``torch.utils.tensorboard.SummaryWriter``, ``wandb`` → ``wandb.init``
        (e.g. ``{"mode": "online", "entity": ...}``), ``mlflow`` →
        ``accelerate.tracking.MLflowTracker`` (e.g. ``{"tags": {...}}``).
        ``wandb.project`` / ``mlflow.experiment_name`` replace ``project``.

    Notes
    -----
    wandb gets ``mode="offline"`` unless the environment sets ``WANDB_MODE``
    or ``tracker_kwargs`` give a ``mode``; mlflow's tracking URI is set to the
    local store only while the run is tracked (the environment is restored).
    A resumed fit continues the same tensorboard run: what the interrupted fit
    logged at or after the step it resumes from is hidden (tensorboard's
    ``purge_step``), so every step appears once. wandb and mlflow start a new
    run of the same name at the resumed step.

    Examples
    --------
    >>> tracking = Tracking(["tensorboard"], "runs/x/tracking", run_name="mlp")    # doctest: +SKIP
    >>> Trainer(model, max_epochs=10).fit(train, targets, tracking=tracking)      # doctest: +SKIP
    """

    def __init__(self, trackers: Sequence[str], directory: str | Path, *, run_name: str = "train",
                 project: str = "neurodecode", group: str | None = None,
                 config: Mapping[str, Any] | None = None,
                 tracker_kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.trackers = trackers
        self.directory = directory
        self.run_name = run_name
        self.project = project
        self.group = group
        self.config = config
        self.tracker_kwargs = tracker_kwargs

    def __repr__(self) -> str:
        return (f"Tracking({list(self.trackers)!r}, {str(self.directory)!r}, run_name={self.run_name!r}, "
                f"project={self.project!r})")

    @property
    def names(self) -> tuple[str, ...]:
        """The tracker names, each once, in the order given."""
        return tuple(dict.fromkeys(str(t) for t in self.trackers))

    def check(self) -> Tracking:
        """Refuse unknown trackers and options; make sure each tracker's package is installed.

        Returns
        -------
        self : Tracking
            This object, unchanged.

        Raises
        ------
        ValueError
            An unknown tracker name (the valid ones are listed) or options of a
            tracker not in ``trackers``.
        ImportError
            A tracker's package is missing (one line naming what to install).
        """
        if isinstance(self.trackers, str) or not isinstance(self.trackers, Sequence):
            raise TypeError(f"trackers must be a list of tracker names, got {self.trackers!r}")
        for name in self.names:
            check_option("tracking", name, TRACKERS)
        extra = sorted(set(self.tracker_kwargs or {}) - set(self.names))
        if extra:
            raise ValueError(f"tracker options for {extra}, which are not among the trackers "
                             f"{list(self.names)}")
        for name in self.names:
            try:
                importlib.import_module(name)
            except ImportError:
                raise ImportError(f"tracking with {name} needs the {name!r} package, which is not installed: "
                                  f"{_INSTALL[name]}") from None
        return self

    def with_run(self, run_name: str) -> Tracking:
        """The same trackers, folder, project and options for another run.

        Parameters
        ----------
        run_name : str
            The other run's name.

        Returns
        -------
        tracking : Tracking
            A copy with ``run_name`` replaced.
        """
        return Tracking(self.trackers, self.directory, run_name=run_name, project=self.project,
                        group=self.group, config=self.config, tracker_kwargs=self.tracker_kwargs)

    def log_metrics(self, values: Mapping[str, float], *, step: int = 0) -> None:
        """Log one set of scalars (a run's final metrics) as a run of its own, then close it.

        Only the main process logs. tensorboard replaces what an earlier
        attempt of this run logged at or after ``step``.

        Parameters
        ----------
        values : mapping of str to float
            Tag → value (None and non-finite values are left out).
        step : int
            The step the values are logged at.
        """
        if not self.names or not _is_main_process():
            return
        self.check()
        scalars = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
        trackers = _make_trackers(self, start_step=step)
        _wait_for_a_new_second(self)
        with _environment(self):
            started = []
            try:
                for tracker in trackers:
                    tracker.main_process_only = False  # the main process: leave accelerate's state unset
                    tracker.start()
                    started.append(tracker)
                    if self.config is not None:
                        tracker.store_init_configuration(flatten_config(self.config))
                    tracker.log(scalars, step=step)
            finally:
                for tracker in started:
                    tracker.finish()


def flatten_config(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as the flat hyperparameters trackers take: dotted keys, scalars or text.

    Parameters
    ----------
    values : mapping
        The config (e.g. ``FitConfig.model_dump(mode="json")``).
    prefix : str
        Prepended to every key.

    Returns
    -------
    flat : dict
        ``{"models.mlp.lr": 0.0003, "data.subjects": "[1, 2]", ...}``: numbers,
        strings, booleans and None as they are, anything else as JSON text.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= flatten_config(value, f"{name}.")
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


# -- the Trainer's side ------------------------------------------------------------------------------
def _is_main_process() -> bool:
    """Whether this is the main process, without creating accelerate's process state if there is none."""
    from accelerate.state import PartialState

    if PartialState._shared_state:
        return bool(PartialState().is_main_process)
    return int(os.environ.get("RANK", "0") or 0) == 0


def _make_trackers(tracking: Tracking, *, start_step: int = 0) -> list[Any]:
    """accelerate's trackers of ``tracking`` (not started); tensorboard purges steps >= ``start_step``."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    directory = Path(tracking.directory)
    label = f"{tracking.group}/{tracking.run_name}" if tracking.group else tracking.run_name
    out = []
    for name in tracking.names:
        kwargs = dict((tracking.tracker_kwargs or {}).get(name) or {})
        if name == "tensorboard":
            kwargs.setdefault("purge_step", int(start_step))
            out.append(TensorBoardTracker(tracking.run_name, str(directory), **kwargs))
        elif name == "wandb":
            if "mode" not in kwargs and not os.environ.get("WANDB_MODE"):
                kwargs["mode"] = "offline"
            if "dir" not in kwargs and not os.environ.get("WANDB_DIR"):
                directory.mkdir(parents=True, exist_ok=True)
                kwargs["dir"] = str(directory)
            kwargs.setdefault("name", label)
            if tracking.group:
                kwargs.setdefault("group", tracking.group)
            out.append(WandBTracker(kwargs.pop("project", tracking.project), **kwargs))
        else:
            kwargs.setdefault("run_name", label)
            out.append(MLflowTracker(kwargs.pop("experiment_name", tracking.project), **kwargs))
    return out


def _set_start_step(trackers: Sequence[Any], step: int) -> None:
    """Make tensorboard trackers (not started yet) hide what was logged at or after ``step`` (a resume)."""
    for tracker in trackers:
        if getattr(tracker, "name", None) == "tensorboard":
            tracker.init_kwargs["purge_step"] = int(step)


def _wait_for_a_new_second(tracking: Tracking) -> None:
    """Start tensorboard's next event file in a later second than the run folder's newest one.

    tensorboard reads a run's event files in name order, and a name starts with the second it was
    opened in (then host, process and a counter, which do not sort by time): a session opened in the
    same second as the previous one could be read first, and its ``purge_step`` then be applied to
    the events written after it.
    """
    if "tensorboard" not in tracking.names:
        return
    seconds = [int(p.name.split(".")[3]) for p in (Path(tracking.directory) / tracking.run_name).glob(
        "events.out.tfevents.*") if p.name.split(".")[3].isdigit()]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.05)


@contextmanager
def _environment(tracking: Tracking) -> Iterator[None]:
    """mlflow's tracking URI set to the local store under the tracking folder, unless the user set one."""
    if "mlflow" not in tracking.names or os.environ.get("MLFLOW_TRACKING_URI"):
        yield
        return
    store = Path(tracking.directory).resolve() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = store.as_uri()
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


@contextmanager
def _session(tracking: Tracking, accelerator: Any, *, start_step: int,
             config: Mapping[str, Any]) -> Iterator[None]:
    """Start the accelerator's trackers (``init_trackers``) from ``start_step``; finish them on any exit.

    The trackers are finished one by one rather than by ``accelerator.end_training()``, which would also
    destroy the process group of a multi-process run (the Trainer may fit again in the same processes).
    """
    _set_start_step(accelerator.log_with, start_step)
    _wait_for_a_new_second(tracking)
    with _environment(tracking):
        try:
            accelerator.init_trackers(tracking.run_name, config=flatten_config(config))
            yield
        finally:
            for tracker in accelerator.trackers:
                tracker.finish()
            accelerator.trackers.clear()


def _accelerator_kwargs(tracking: Tracking | None) -> dict[str, Any]:
    """``log_with`` and ``project_dir`` of the Trainer's Accelerator (none without tracking)."""
    if tracking is None or not tracking.names:
        return {}
    return {"log_with": _make_trackers(tracking), "project_dir": str(tracking.directory)}


def _epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The tracked values of a history row: ``epoch``, ``train/<loss>``, ``val/<loss or metric>``."""
    out: dict[str, float] = {"epoch": int(record["epoch"])}
    for key, value in record.items():
        if value is None or isinstance(value, (str, bool)):
            continue
        if key.startswith("train_"):
            tag = "train/" + key[len("train_"):]
        elif key.startswith("val_"):
            tag = "val/" + key[len("val_"):]
        elif key == "temperature":
            tag = "train/temperature"
        else:  # epoch, step (the x axis), lr (logged per step), time_s
            continue
        if math.isfinite(float(value)):
            out[tag] = float(value)
    return out


class _TrainingLog:
    """Logs a fit to the accelerator's trackers: each optimizer step's loss and learning rate, each epoch.

    Steps: the loss and learning rate of optimizer step ``i`` (0-based, the schedule's index) are logged
    at step ``i``; an epoch's values at the number of optimizer steps done after it. A checkpoint taken
    after ``k`` steps thus covers exactly the values logged at steps ``< k``, which is what a resume from
    it keeps (tensorboard's ``purge_step = k``).
    """

    def __init__(self, accelerator: Any, head_weights: Mapping[str, float]) -> None:
        self.accelerator = accelerator
        self.head_weights = dict(head_weights)
        self._reset()

    def _reset(self) -> None:
        self.total, self.count = 0.0, 0
        self.heads = {k: [0.0, 0] for k in self.head_weights}

    def add(self, loss: Any, n_rows: int, head_losses: Mapping[str, Any], n_local: int) -> None:
        """Add a batch of the current step: its loss over ``n_rows`` trials, head losses over ``n_local``."""
        self.total += float(loss.detach()) * n_rows
        self.count += n_rows
        for k, v in head_losses.items():
            self.heads[k][0] += float(v.detach()) * n_local
            self.heads[k][1] += n_local

    def log_step(self, index: int, lr: float) -> None:
        """Log the step's loss (computed as the epoch's ``train_loss``) and learning rate; reset."""
        loss = self.total / max(self.count, 1)
        loss += sum(self.head_weights[k] * s / max(n, 1) for k, (s, n) in self.heads.items())
        self.accelerator.log({"train/step_loss": loss, "train/lr": float(lr)}, step=int(index))
        self._reset()

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Log an epoch's history row at its step."""
        self.accelerator.log(_epoch_scalars(record), step=int(record["step"]))
