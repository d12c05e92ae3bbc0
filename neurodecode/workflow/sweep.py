"""Sweeps: one ``neurodecode fit`` job per grid point × seed (× leave-one-subject-out fold), through submitit.

``neurodecode fit RECIPE --sweep KEY=V1,V2 --seeds 0,1,2 --launcher local|slurm`` calls :func:`run_sweep`.
Every job writes its own run folder under the sweep folder, named from what it sets::

    runs/demo-sweep/
        sweep.json                                  the manifest: jobs, overrides, folders, job ids, states
        submitit/                                   submitit's pickles and each job's stdout / stderr
        models.mlp.lr=0.001/seed=0/                 a run folder, as `neurodecode fit` writes it
        models.mlp.lr=0.001/seed=1/
        evaluation.scheme=loso/seed=0/fold=subj02/  one job per held-out subject with scheme loso

A job is a :class:`SweepJob`: a picklable callable that decides from its folder what to do, so running it
again is always safe — a finished run (``run.json`` and ``metrics.json`` written, same config) is skipped,
a started one is continued with the exact resume of ``neurodecode fit --resume``, a new one is fitted.
Its ``checkpoint`` method is what submitit calls on preemption or timeout (duck-typed as
``submitit.helpers.Checkpointable``; submitit checks for the method): the job is requeued and resumes.
Rerunning the sweep command does the same for every job. The run-folder lock of ``neurodecode fit``
refuses a second writer; the sweep folder has its own lock, held while a sweep command submits (and, with
the local launcher, until its jobs end).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from .. import __version__
from ..config import ConfigError, FitConfig, config_to_yaml, load_config, parse_override, recipe_path
from ..utils import atomic_write_json, available_cpus, check_option, fill_doc, logger, verbose
from ..utils.imports import import_optional
from ..utils.locks import LOCK_NAME, acquire_lock, hold_lock, release_lock

__all__ = ["MANIFEST_NAME", "Sweep", "SweepJob", "SweepResult", "expand_sweep", "parse_grid", "parse_seeds",
           "run_sweep"]

#: The manifest every sweep folder holds.
MANIFEST_NAME = "sweep.json"
#: Where submitit keeps its pickles and the jobs' logs, inside the sweep folder.
_SUBMITIT_DIR = "submitit"
#: The lock a sweep command holds in its sweep folder.
_SWEEP_LOCK = ".sweep.lock"
#: Local jobs get no wall-time limit in practice (submitit's local default is 2 minutes).
_LOCAL_TIMEOUT_MIN = 60 * 24 * 365
_OPEN, _CLOSE = "[{(", "]})"


# -- parsing ------------------------------------------------------------------------------------------------
def _split_top_level(raw: str, text: str) -> list[str]:
    """Split ``raw`` at the commas outside brackets, braces, parentheses and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(raw):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                break
        elif ch == "," and depth == 0:
            parts.append(raw[start:i])
            start = i + 1
    if depth != 0 or quote:
        raise ConfigError(f"--sweep {text!r}: unbalanced brackets or quotes; write list values in brackets, "
                          "separated by commas: --sweep data.subjects=[1,2],[1,3]")
    parts.append(raw[start:])
    return parts


def _flow(value: Any) -> str:
    """``value`` as one line of YAML (what ``--set KEY=...`` reads back to the same value)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[:-3].strip() if text.endswith("\n...") else text


def parse_grid(texts: Sequence[str]) -> dict[str, list[Any]]:
    """Parse ``--sweep KEY=V1,V2,...`` arguments into a grid.

    Values are separated by the commas outside brackets, braces and quotes, and each is read as
    YAML like a ``--set`` value: ``data.subjects=[1,2],[1,3]`` gives two values, ``[1, 2]`` and
    ``[1, 3]``; ``models.mlp.lr=1e-3,3e-4`` two learning rates; ``name='a,b'`` one string.

    Parameters
    ----------
    texts : sequence of str
        One ``KEY=V1,V2,...`` string per swept key.

    Returns
    -------
    grid : dict of str → list
        The values of each key, in the order given.

    Raises
    ------
    ConfigError
        A malformed argument, an empty or repeated value, or a key given twice.
    """
    grid: dict[str, list[Any]] = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--sweep expects KEY=V1,V2,... (e.g. --sweep models.mlp.lr=1e-3,3e-4), got {text!r}")
        parts = _split_top_level(raw, text)
        if any(not p.strip() for p in parts):
            raise ConfigError(f"--sweep {text!r} has an empty value (two commas in a row, or one at an end)")
        values = [parse_override(f"{key}={p}")[1] for p in parts]
        flows = [_flow(v) for v in values]
        if len(set(flows)) != len(flows):
            raise ConfigError(f"--sweep {text!r} gives a value twice")
        if key in grid:
            raise ConfigError(f"--sweep gives {key!r} twice; list all its values in one --sweep {key}=V1,V2")
        grid[key] = values
    return grid


def parse_seeds(text: str) -> list[int]:
    """Parse ``--seeds 0,1,2``.

    Parameters
    ----------
    text : str
        Comma-separated integers.

    Returns
    -------
    seeds : list of int
        The seeds, in the order given.

    Raises
    ------
    ConfigError
        A value that is not an integer, or a seed given twice.
    """
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, e.g. --seeds 0,1,2; got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} gives a seed twice")
    return seeds


# -- jobs ---------------------------------------------------------------------------------------------------
@dataclass
class SweepJob:
    """One job of a sweep: fit (or continue, or skip) one run folder; what submitit runs.

    Calling the job looks at its folder: a finished run with the same config is left as it is; a
    started one is continued with ``run_fit(None, resume=run_dir)`` (the exact resume of
    ``neurodecode fit --resume``); otherwise the run is fitted into ``run_dir``. So a job may be run
    again at any time: after a crash, a preemption, or by rerunning the sweep command.

    Parameters
    ----------
    name : str
        The run folder relative to the sweep folder (e.g. ``"models.mlp.lr=0.001/seed=0"``).
    run_dir : Path
        The run folder (absolute).
    config_yaml : str
        The job's resolved config (:func:`~neurodecode.config.config_to_yaml`).
    overrides : tuple of str
        What the job sets on top of the sweep's recipe and ``--set`` options (grid values, seed,
        held-out subject), as ``KEY=VALUE`` strings.
    seed : int
        The job's ``seed``.
    fold : int | None
        The held-out subject of a leave-one-subject-out job (``evaluation.loso_subjects``), or None.
    threads : int | None
        Torch CPU threads of the job (None: the cores the job may use).
    log_level : str | None
        Log level of the job (None: the process default).
    requeues : int
        How many times the job was requeued (by :meth:`checkpoint`).
    """

    name: str
    run_dir: Path
    config_yaml: str
    overrides: tuple[str, ...] = ()
    seed: int = 0
    fold: int | None = None
    threads: int | None = None
    log_level: str | None = None
    requeues: int = 0

    def config(self) -> FitConfig:
        """The job's run config.

        Returns
        -------
        config : FitConfig
            Validated from :attr:`config_yaml`.
        """
        return FitConfig.model_validate(yaml.safe_load(self.config_yaml))

    def state(self) -> Literal["new", "started", "finished", "running", "conflict"]:
        """What the job's run folder holds now.

        Returns
        -------
        state : str
            ``"new"`` (no run yet), ``"started"`` (a run of this config to continue), ``"finished"``
            (``run.json`` and ``metrics.json`` written), ``"running"`` (another process holds the
            folder's lock) or ``"conflict"`` (the folder holds a run of another config).
        """
        run_dir = Path(self.run_dir)
        if not run_dir.is_dir():
            return "new"
        lock = acquire_lock(run_dir / LOCK_NAME, wait=False)
        if lock is None:
            return "running"
        release_lock(lock, run_dir / LOCK_NAME)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            return "new"
        try:
            same = config_to_yaml(load_config(saved)) == self.config_yaml
        except (ConfigError, OSError):
            same = False
        if not same:
            return "conflict"
        done = (run_dir / "run.json").is_file() and (run_dir / "metrics.json").is_file()
        return "finished" if done else "started"

    def __call__(self) -> dict[str, Any]:
        """Fit, continue or skip the run; a short record of what was done."""
        import os

        from ..utils import set_torch_threads, use_log_level
        from .fit import run_fit

        if os.environ.get("SUBMITIT_EXECUTOR"):  # a job process: its log is a file, no progress bars there
            os.environ.setdefault("NEURODECODE_TQDM", "off")
        with use_log_level(self.log_level):
            state = self.state()
            if state == "finished":
                logger.info("%s already finished: skipped", self.run_dir)
                return {"run_dir": str(self.run_dir), "status": "skipped", "requeues": self.requeues}
            if state in ("running", "conflict"):
                what = ("is being written by another process" if state == "running"
                        else "holds a run of another config")
                raise FileExistsError(f"The run folder {self.run_dir} {what}; this job does not touch it.")
            set_torch_threads(self.threads)
            if state == "started":
                logger.info("Continuing the started run %s (exact resume)", self.run_dir)
                run_fit(None, resume=self.run_dir)
            else:
                run_fit(self.config(), run_dir=self.run_dir)
        return {"run_dir": str(self.run_dir), "status": "resumed" if state == "started" else "fitted",
                "requeues": self.requeues}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The resubmission submitit requeues on preemption or timeout.

        Parameters
        ----------
        *args, **kwargs
            The job's call arguments (none; accepted as submitit passes them).

        Returns
        -------
        delayed : submitit.helpers.DelayedSubmission
            This job again (``requeues`` + 1). When it runs, the run folder holds a started run
            (the MLP checkpoints into it), so it continues with ``run_fit(None, resume=run_dir)``.
        """
        submitit = import_optional("submitit", extra="cluster", what="Requeued sweep jobs")
        started = (Path(self.run_dir) / "config.yaml").is_file()
        logger.warning("Job %s stopped (preempted or out of time): requeued; it will %s", self.name,
                       "continue from its last checkpoint" if started else "start again")
        return submitit.helpers.DelayedSubmission(replace(self, requeues=self.requeues + 1), *args, **kwargs)


@dataclass
class Sweep:
    """The jobs of a sweep and where they go (see :func:`expand_sweep`).

    Parameters
    ----------
    folder : Path
        The sweep folder (absolute).
    jobs : list of SweepJob
        One per grid point × seed (× held-out subject), in submission order.
    recipe : str | None
        The recipe file (absolute path) or None (the defaults).
    overrides : list of str
        The ``--set`` overrides shared by every job.
    grid : dict of str → list
        The swept keys and their values.
    seeds : list of int | None
        The seeds (None: each config's own).
    """

    folder: Path
    jobs: list[SweepJob]
    recipe: str | None = None
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] | None = None


_UNSAFE = re.compile(r"[^A-Za-z0-9._+@=-]")


def _slug(key: str, value: Any) -> str:
    """A readable folder-name part for ``key=value`` (lists ``[1, 2]`` become ``1-2``)."""
    text = re.sub(r"\s*[,:]\s*", "-", _flow(value).replace("/", "_"))
    text = _UNSAFE.sub("", text) or "empty"
    if len(text) > 48:
        text = f"{text[:40]}~{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    return f"{key}={text}"


def _combo_names(keys: list[str], combos: list[tuple]) -> list[str]:
    """One unique, readable folder name per grid point (a short hash added where two would clash)."""
    names, seen = [], {}
    for combo in combos:
        name = ",".join(_slug(k, v) for k, v in zip(keys, combo))
        if name in seen and seen[name] != combo:
            name += "~" + hashlib.sha1(repr(combo).encode()).hexdigest()[:6]
        seen[name] = combo
        names.append(name)
    return names


def _folds(config: FitConfig) -> list[int | None]:
    """The held-out subjects to run as separate jobs (scheme loso), or [None]."""
    if config.evaluation.scheme != "loso":
        return [None]
    return list(config.evaluation.loso_subjects or config.data.subjects)


def expand_sweep(recipe: str | Path | None = None, overrides: Sequence[str] = (), *,
                 grid: Mapping[str, Sequence[Any]] | Sequence[str] | None = None,
                 seeds: Sequence[int] | None = None, output: str | Path | None = None,
                 threads: int | None = None, log_level: str | None = None) -> Sweep:
    """The jobs of a sweep: the grid's cartesian product × seeds × (scheme loso) held-out subjects.

    Every job's config is built and validated here, so a bad value fails before anything runs.

    Parameters
    ----------
    recipe : str | Path | None
        A shipped recipe's name or a YAML file (None: the defaults), as for ``neurodecode fit``.
    overrides : sequence of str
        ``KEY=VALUE`` overrides shared by every job (``--set``), applied before the grid's.
    grid : mapping of str → sequence | sequence of str | None
        Key → values, or ``--sweep`` strings (see :func:`parse_grid`). ``seed`` in the grid is the
        same as ``seeds``.
    seeds : sequence of int | None
        One job per seed for each grid point (None: the config's ``seed``).
    output : str | Path | None
        The sweep folder (default ``<output_dir>/<name>-sweep`` of the recipe with ``overrides``).
    threads : int | None
        Torch CPU threads of each job (None: the cores the job may use).
    log_level : str | None
        Log level of each job.

    Returns
    -------
    sweep : Sweep
        The sweep folder and its jobs, in submission order (grid points in the order given, then
        seeds, then held-out subjects). A job's folder is ``KEY=VALUE,KEY=VALUE/seed=S[/fold=subjNN]``
        (no first part without a grid).
    """
    grid = parse_grid(grid) if grid is not None and not isinstance(grid, Mapping) else dict(grid or {})
    if "seed" in grid:
        if seeds is not None:
            raise ConfigError("Give the seeds once: --seeds 0,1,2 or --sweep seed=0,1,2, not both")
        seeds = [int(s) for s in grid.pop("seed")]
    overrides = list(overrides)
    recipe_file = None if recipe is None else str(recipe_path(recipe))
    base = load_config(recipe_file, overrides)
    folder = Path(output if output is not None else Path(base.output_dir) / f"{base.name}-sweep").absolute()
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    jobs = []
    for combo, combo_name in zip(combos, _combo_names(keys, combos)):
        assigned = [f"{k}={_flow(v)}" for k, v in zip(keys, combo)]
        for seed in (list(seeds) if seeds is not None else [None]):
            with_seed = assigned + ([f"seed={seed}"] if seed is not None else [])
            config = load_config(recipe_file, overrides + with_seed)
            for fold in _folds(config):
                job_overrides = with_seed + ([f"evaluation.loso_subjects=[{fold}]"] if fold is not None else [])
                job_config = config if fold is None else load_config(recipe_file, overrides + job_overrides)
                parts = [combo_name, f"seed={config.seed}", None if fold is None else f"fold=subj{fold:02d}"]
                name = "/".join(p for p in parts if p)
                jobs.append(SweepJob(name, folder / name, config_to_yaml(job_config), tuple(job_overrides),
                                     seed=config.seed, fold=fold, threads=threads, log_level=log_level))
    return Sweep(folder, jobs, recipe_file, overrides, grid, None if seeds is None else list(seeds))


# -- launching ----------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What :func:`run_sweep` did.

    Parameters
    ----------
    sweep : Sweep
        The sweep folder and its jobs.
    jobs : list of dict
        The manifest entry of each job of this sweep (``name``, ``run_dir``, ``overrides``, ``seed``,
        ``fold``, ``state``, ``job_id``, ``log``, ``error``), in submission order.
    launcher : str
        ``"local"`` or ``"slurm"``.
    dry_run : bool
        True when nothing was submitted (``state`` is then the folder's state).
    """

    sweep: Sweep
    jobs: list[dict[str, Any]]
    launcher: str
    dry_run: bool = False

    @property
    def folder(self) -> Path:
        """The sweep folder."""
        return self.sweep.folder

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The manifest entries of the jobs that failed (local launcher)."""
        return [j for j in self.jobs if j["state"] in ("failed", "interrupted")]


def _entry(job: SweepJob, state: str, old: Mapping[str, Any] | None = None) -> dict[str, Any]:
    entry = {"name": job.name, "run_dir": job.name, "overrides": list(job.overrides), "seed": job.seed,
             "fold": job.fold, "state": state, "job_id": None, "log": None, "error": None}
    if old and state in ("finished", "running"):  # keep how it got there
        entry.update({k: old.get(k) for k in ("job_id", "log")})
    return entry


def _write_manifest(sweep: Sweep, entries: dict[str, dict[str, Any]], launcher: str) -> None:
    atomic_write_json(sweep.folder / MANIFEST_NAME, {
        "neurodecode_version": __version__, "recipe": sweep.recipe, "overrides": sweep.overrides,
        "grid": {k: [_flow(v) for v in vals] for k, vals in sweep.grid.items()}, "seeds": sweep.seeds,
        "launcher": launcher, "submitit_folder": _SUBMITIT_DIR, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "jobs": list(entries.values())})


def _old_entries(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        return {j["name"]: j for j in json.loads((folder / MANIFEST_NAME).read_text())["jobs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _local_gpus() -> dict[str, Any]:
    """submitit's local GPU parameters that keep this process's GPUs visible to the jobs (shared)."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [int(x) for x in visible.split(",") if x.strip().isdigit()]
        return {"gpus_per_node": len(ids), "visible_gpus": ids}
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"gpus_per_node": n}


def _record_done(entry: dict[str, Any], sub: Any) -> None:
    err = sub.exception()
    entry["state"] = "finished" if err is None else "failed"
    if err is not None:
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        entry["error"] = lines[-1] if lines else type(err).__name__
        logger.warning("Job %s failed: %s (log: %s)", entry["name"], entry["error"], entry["log"])
    else:
        logger.info("Job %s finished", entry["name"])


def _run_local(submitit: Any, sweep: Sweep, todo: list[SweepJob], entries: dict[str, dict[str, Any]],
               max_parallel: int, poll_s: float) -> None:
    """Run ``todo`` as local subprocesses, at most ``max_parallel`` at a time; wait for them all."""
    executor = submitit.LocalExecutor(folder=sweep.folder / _SUBMITIT_DIR / "%j")
    executor.update_parameters(timeout_min=_LOCAL_TIMEOUT_MIN, **_local_gpus())
    pending, running = list(todo), {}
    try:
        while pending or running:
            while pending and len(running) < max_parallel:
                job = pending.pop(0)
                sub = executor.submit(job)
                running[job.name] = sub
                entries[job.name].update(state="running", job_id=str(sub.job_id), log=str(sub.paths.stderr))
                logger.info("Started job %s (process %s)", job.name, sub.job_id)
                _write_manifest(sweep, entries, "local")
            for name, sub in list(running.items()):
                if sub.done():
                    del running[name]
                    _record_done(entries[name], sub)
                    _write_manifest(sweep, entries, "local")
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for name, sub in running.items():
            sub.cancel(check=False)
            entries[name]["state"] = "interrupted"
        _write_manifest(sweep, entries, "local")
        raise


_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def _slurm_minutes(value: Any) -> int:
    """Wall time in whole minutes from ``90``, ``"90"``, ``"1:30:00"``, ``"2-00:00:00"`` or ``"2-12"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return max(1, int(-(-value // 1)))
    m = _SLURM_TIME.match(str(value).strip())
    if m is None:
        raise ValueError(f"slurm time must be minutes or [D-]H:MM[:SS] (e.g. 90, 1:30:00, 2-00:00:00), got {value!r}")
    days, a, b, c = (int(x) if x else 0 for x in m.groups())
    if m.group(1) and not m.group(3):  # D-H
        hours, minutes, seconds = a, 0, 0
    elif m.group(4) or m.group(1):  # [D-]H:MM:SS or D-H:MM
        hours, minutes, seconds = a, b, c
    elif m.group(3):  # MM:SS
        hours, minutes, seconds = 0, a, b
    else:  # minutes
        hours, minutes, seconds = 0, a, 0
    total = days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if total <= 0:
        raise ValueError(f"slurm time must be positive, got {value!r}")
    return total


def _slurm_params(sweep: Sweep, slurm: Mapping[str, Any]) -> dict[str, Any]:
    """submitit.SlurmExecutor parameters: the given ones, 60 min by default, ``--requeue`` always."""
    params: dict[str, Any] = {"job_name": f"neurodecode-{sweep.folder.name}", "signal_delay_s": 120, "time": 60}
    params.update({k: v for k, v in slurm.items() if v is not None})
    params["time"] = _slurm_minutes(params["time"])
    mem = params.get("mem")
    if mem is not None and not re.fullmatch(r"\d+(\.\d+)?[KMGT]?B?", str(mem).strip(), flags=re.IGNORECASE):
        raise ValueError(f"slurm mem must be a size such as 32G or 64000M, got {mem!r}")
    params["additional_parameters"] = {"requeue": True, **dict(params.get("additional_parameters") or {})}
    return params


def _submit_slurm(submitit: Any, sweep: Sweep, todo: list[SweepJob], entries: dict[str, dict[str, Any]],
                  slurm: Mapping[str, Any]) -> None:
    """Submit ``todo`` as one SLURM job array (requeue on preemption allowed)."""
    params = _slurm_params(sweep, slurm)
    executor = submitit.SlurmExecutor(folder=sweep.folder / _SUBMITIT_DIR / "%j")
    executor.update_parameters(**params)
    subs = executor.submit_array(todo)
    for job, sub in zip(todo, subs):
        entries[job.name].update(state="submitted", job_id=str(sub.job_id), log=str(sub.paths.stderr))
    if subs:
        logger.info("Submitted %d job(s) to SLURM as %s", len(subs), str(subs[0].job_id).split("_")[0])


@verbose
@fill_doc
def run_sweep(recipe: str | Path | None = None, overrides: Sequence[str] = (), *,
              grid: Mapping[str, Sequence[Any]] | Sequence[str] | None = None,
              seeds: Sequence[int] | None = None, launcher: Literal["local", "slurm"] = "local",
              output: str | Path | None = None, max_parallel: int = 1, threads: int | None = None,
              slurm: Mapping[str, Any] | None = None, job_log_level: str | None = "info",
              dry_run: bool = False, poll_s: float = 1.0, verbose: Any = None) -> SweepResult:
    """Run a sweep of ``neurodecode fit`` jobs through submitit, one run folder each.

    Jobs whose run folder already holds a finished run of the same config are skipped, started
    ones are continued (exact resume), running ones (folder locked) are left alone; so rerunning
    the same sweep finishes it. A folder holding a run of another config stops the sweep before
    anything is submitted.

    Parameters
    ----------
    recipe : str | Path | None
        A shipped recipe's name or a YAML file (None: the defaults).
    overrides : sequence of str
        ``KEY=VALUE`` overrides shared by every job.
    grid : mapping of str → sequence | sequence of str | None
        The swept keys and values, or ``--sweep KEY=V1,V2`` strings (see :func:`parse_grid`).
    seeds : sequence of int | None
        One job per seed for each grid point (None: the config's seed).
    launcher : "local" | "slurm"
        ``"local"``: submitit's local executor (one subprocess per job, at most ``max_parallel``
        at a time; returns when all have ended). ``"slurm"``: one SLURM job array through
        submitit (returns once submitted).
    output : str | Path | None
        The sweep folder (default ``<output_dir>/<name>-sweep``).
    max_parallel : int
        Local launcher: jobs running at once.
    threads : int | None
        Torch CPU threads per job (None: local, the cores this process may use divided by
        ``max_parallel``; SLURM, the job's allocation).
    slurm : mapping | None
        Parameters of ``submitit.SlurmExecutor`` (``partition``, ``time`` in minutes,
        ``gpus_per_node``, ``cpus_per_task``, ``mem``, ``array_parallelism``, ``setup``,
        ``additional_parameters``, ...). ``#SBATCH --requeue`` is always added.
    job_log_level : str | None
        Log level inside the jobs (their logs are in ``SWEEP/submitit/``).
    dry_run : bool
        Only expand the sweep and report each job's folder state; nothing is written.
    poll_s : float
        Local launcher: seconds between checks of the running jobs.
    %(verbose)s

    Returns
    -------
    result : SweepResult
        The sweep and the manifest entry of each job (also written to ``SWEEP/sweep.json``).
    """
    check_option("launcher", launcher, ("local", "slurm"))
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
    if launcher == "local" and any(v for v in (slurm or {}).values()):
        raise ValueError(f"SLURM options ({', '.join(k for k, v in (slurm or {}).items() if v)}) need "
                         "launcher='slurm' (--launcher slurm)")
    if launcher == "slurm":
        _slurm_params(Sweep(Path("sweep"), []), slurm or {})  # a bad time or size fails before anything runs
    if threads is None and launcher == "local":
        threads = max(1, available_cpus() // max_parallel)
    sweep = expand_sweep(recipe, overrides, grid=grid, seeds=seeds, output=output, threads=threads,
                         log_level=job_log_level)
    states = {job.name: job.state() for job in sweep.jobs}
    if dry_run:
        return SweepResult(sweep, [_entry(j, states[j.name]) for j in sweep.jobs], launcher, dry_run=True)
    conflicts = [name for name, s in states.items() if s == "conflict"]
    if conflicts:
        raise FileExistsError(
            f"{len(conflicts)} job folder(s) of the sweep {sweep.folder} hold a run of another config (e.g. "
            f"{sweep.folder / conflicts[0]}); neurodecode never overwrites a run. Pick another sweep folder "
            "(--output) or run name (--set name=...), or remove those folders.")
    submitit = import_optional("submitit", extra="cluster", what="Sweeps (--sweep, --seeds, --launcher)")
    sweep.folder.mkdir(parents=True, exist_ok=True)
    with hold_lock(sweep.folder / _SWEEP_LOCK, wait=False, what=f"launching the sweep {sweep.folder}"):
        old = _old_entries(sweep.folder)
        entries = dict(old)  # earlier jobs of this folder keep their place; new ones go last
        entries.update({j.name: _entry(j, "pending" if states[j.name] in ("new", "started") else states[j.name],
                                       old.get(j.name)) for j in sweep.jobs})
        todo = [j for j in sweep.jobs if states[j.name] in ("new", "started")]
        logger.info("Sweep %s: %d job(s), %d to run (%d finished, %d running elsewhere)", sweep.folder,
                    len(sweep.jobs), len(todo), sum(s == "finished" for s in states.values()),
                    sum(s == "running" for s in states.values()))
        _write_manifest(sweep, entries, launcher)
        if todo and launcher == "local":
            _run_local(submitit, sweep, todo, entries, max_parallel, poll_s)
        elif todo:
            _submit_slurm(submitit, sweep, todo, entries, slurm or {})
        _write_manifest(sweep, entries, launcher)
    return SweepResult(sweep, [entries[j.name] for j in sweep.jobs], launcher)
