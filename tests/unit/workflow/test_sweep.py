"""Sweeps without fitting: grid parsing (list values), expansion (seeds, leave-one-subject-out folds), folder
names, the manifest, the skip / resume / refuse decisions and the requeue that submitit calls on preemption."""

from __future__ import annotations

import json

import pytest
import yaml

from neurodecode.config import ConfigError, config_to_yaml, load_config
from neurodecode.utils.locks import LOCK_NAME, FolderInUseError, acquire_lock, release_lock
from neurodecode.workflow import SweepJob, expand_sweep, parse_grid, parse_seeds, run_sweep
from neurodecode.workflow import sweep as sweep_mod

SETS = ["simulate.n_subjects=3", "data.subjects=[1,2,3]", "models.mlp.max_epochs=2"]


# -- parsing ---------------------------------------------------------------------------------------------
def test_parse_grid_splits_at_top_level_commas_only():
    grid = parse_grid(["data.subjects=[1,2],[1,3],[2]", "models.mlp.lr=1e-3,0.0003",
                       "models.mlp.adapter_kwargs={rank: 4, pool_size: 8},{}", "name='a,b',c"])
    assert grid["data.subjects"] == [[1, 2], [1, 3], [2]]
    assert grid["models.mlp.lr"] == ["1e-3", 0.0003]  # read as YAML, exactly like --set
    assert grid["models.mlp.adapter_kwargs"] == [{"rank": 4, "pool_size": 8}, {}]
    assert grid["name"] == ["a,b", "c"]
    assert list(grid) == ["data.subjects", "models.mlp.lr", "models.mlp.adapter_kwargs", "name"]


@pytest.mark.parametrize("text, match", [
    ("data.subjects=[1,2", "unbalanced"), ("data.subjects=[1,2]],[3]", "unbalanced"),
    ("models.mlp.lr=1,,2", "empty value"), ("models.mlp.lr=1,", "empty value"),
    ("models.mlp.lr", "KEY=V1,V2"), ("models.mlp.lr=", "KEY=V1,V2"), ("seed=1,1", "twice"),
])
def test_parse_grid_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_grid([text])


def test_parse_grid_refuses_a_key_twice_and_seeds_parse():
    with pytest.raises(ConfigError, match="twice"):
        parse_grid(["seed=1,2", "seed=3"])
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("7") == [7]
    for bad in ("0,1,1", "a,b", "1.5", ""):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


# -- expansion -------------------------------------------------------------------------------------------
def test_expand_is_the_product_in_order_with_readable_folders(tmp_path):
    sweep = expand_sweep(None, SETS, grid=["data.subjects=[1,2],[3]", "models.mlp.lr=1e-3,3e-4"],
                         seeds=[0, 1], output=tmp_path / "sw")
    names = [j.name for j in sweep.jobs]
    assert names == [f"data.subjects={s},models.mlp.lr={lr}/seed={seed}"
                     for s in ("1-2", "3") for lr in ("1e-3", "3e-4") for seed in (0, 1)]
    assert len(set(names)) == 8 and sweep.folder == (tmp_path / "sw").absolute()
    job = sweep.jobs[5]  # subjects [3], lr 1e-3, seed 1
    assert job.run_dir == sweep.folder / job.name
    assert job.overrides == ("data.subjects=[3]", "models.mlp.lr=1e-3", "seed=1") and job.seed == 1
    cfg = job.config()
    assert cfg.data.subjects == [3] and cfg.models.mlp.lr == pytest.approx(1e-3) and cfg.seed == 1
    assert cfg.models.mlp.max_epochs == 2  # the shared --set overrides apply to every job
    assert job.config_yaml == config_to_yaml(load_config(None, [*SETS, *job.overrides]))


def test_default_folder_seed_in_grid_and_no_grid(tmp_path):
    sweep = expand_sweep(None, [*SETS, f"output_dir={tmp_path}", "name=myrun"], grid={"seed": [3, 4]})
    assert sweep.folder == (tmp_path / "myrun-sweep").absolute()
    assert [j.name for j in sweep.jobs] == ["seed=3", "seed=4"] and sweep.seeds == [3, 4]
    single = expand_sweep(None, [*SETS, "seed=5"], output=tmp_path / "one")
    assert [(j.name, j.seed) for j in single.jobs] == [("seed=5", 5)]
    with pytest.raises(ConfigError, match="seeds once"):
        expand_sweep(None, SETS, grid={"seed": [1]}, seeds=[2], output=tmp_path)
    with pytest.raises(ConfigError, match="unknown key"):  # every job's config is validated up front
        expand_sweep(None, SETS, grid=["models.mlp.bogus=1,2"], output=tmp_path)


def test_loso_gives_one_job_per_held_out_subject(tmp_path):
    sweep = expand_sweep(None, SETS, grid=["evaluation.scheme=within,loso"], seeds=[0, 1], output=tmp_path)
    names = [j.name for j in sweep.jobs]
    assert names == ["evaluation.scheme=within/seed=0", "evaluation.scheme=within/seed=1",
                     *[f"evaluation.scheme=loso/seed={s}/fold=subj{f:02d}" for s in (0, 1) for f in (1, 2, 3)]]
    fold = sweep.jobs[3]  # loso, seed 0, held-out subject 2
    assert fold.fold == 2 and fold.overrides[-1] == "evaluation.loso_subjects=[2]"
    cfg = fold.config()
    assert cfg.evaluation.loso_subjects == [2] and cfg.data.subjects == [1, 2, 3]  # trained on the others
    assert sweep.jobs[0].fold is None and sweep.jobs[0].config().evaluation.loso_subjects is None
    # a chosen subset of folds
    part = expand_sweep(None, [*SETS, "evaluation.scheme=loso", "evaluation.loso_subjects=[3,1]"], output=tmp_path)
    assert [j.fold for j in part.jobs] == [3, 1]


def test_loso_subjects_is_validated():
    with pytest.raises(ConfigError, match="needs evaluation.scheme=loso"):
        load_config(None, [*SETS, "evaluation.loso_subjects=[1]"])
    with pytest.raises(ConfigError, match="distinct subjects of data.subjects"):
        load_config(None, [*SETS, "evaluation.scheme=loso", "evaluation.loso_subjects=[4]"])
    with pytest.raises(ConfigError, match="distinct subjects"):
        load_config(None, [*SETS, "evaluation.scheme=loso", "evaluation.loso_subjects=[1,1]"])


def test_folder_names_that_would_clash_get_a_hash(tmp_path):
    sweep = expand_sweep(None, SETS, grid={"name": ["a b", "ab"]}, output=tmp_path)
    first, second = (j.name for j in sweep.jobs)
    assert first == "name=ab/seed=0" and second.startswith("name=ab~") and second.endswith("/seed=0")
    long = expand_sweep(None, SETS, grid={"name": ["x" * 80]}, output=tmp_path)
    assert len(long.jobs[0].name.split("/")[0]) < 60


# -- folder states, skip / resume / refuse ------------------------------------------------------------
def _job(tmp_path, extra=()):
    return expand_sweep(None, [*SETS, *extra], output=tmp_path / "sw").jobs[0]


def _start(job, config_yaml=None):
    job.run_dir.mkdir(parents=True, exist_ok=True)
    (job.run_dir / "config.yaml").write_text(config_yaml or job.config_yaml)


def _finish(job):
    (job.run_dir / "metrics.json").write_text("{}")
    (job.run_dir / "run.json").write_text("{}")


def test_job_states(tmp_path):
    job = _job(tmp_path)
    assert job.state() == "new"
    job.run_dir.mkdir(parents=True)
    assert job.state() == "new"
    _start(job)
    assert job.state() == "started"
    (job.run_dir / "metrics.json").write_text("{}")
    assert job.state() == "started"  # run.json is written last: not finished yet
    (job.run_dir / "run.json").write_text("{}")
    assert job.state() == "finished"
    lock = acquire_lock(job.run_dir / LOCK_NAME, wait=False)
    try:
        assert job.state() == "running"
    finally:
        release_lock(lock, job.run_dir / LOCK_NAME)
    other = _job(tmp_path / "o")
    _start(other, config_to_yaml(load_config(None, [*SETS, "models.mlp.max_epochs=3"])))
    assert other.state() == "conflict"


def test_an_older_config_without_the_new_key_still_matches(tmp_path):
    job = _job(tmp_path)
    tree = yaml.safe_load(job.config_yaml)
    del tree["evaluation"]["loso_subjects"]  # a run folder written before the key existed
    _start(job, yaml.safe_dump(tree, sort_keys=False))
    assert job.state() == "started"


def test_calling_a_job_fits_resumes_or_skips(tmp_path, monkeypatch):
    from neurodecode.workflow import fit as fit_mod

    calls = []
    monkeypatch.setattr(fit_mod, "run_fit", lambda config, **kw: calls.append((config, kw)))
    job = _job(tmp_path)
    assert job()["status"] == "fitted"
    config, kw = calls.pop()
    assert config_to_yaml(config) == job.config_yaml and kw == {"run_dir": job.run_dir}
    _start(job)
    assert job()["status"] == "resumed"
    assert calls.pop() == (None, {"resume": job.run_dir})  # the exact resume of `neurodecode fit --resume`
    _finish(job)
    assert job()["status"] == "skipped" and not calls
    other = _job(tmp_path / "o")
    _start(other, config_to_yaml(load_config(None, [*SETS, "models.mlp.max_epochs=3"])))
    with pytest.raises(FileExistsError, match="another config"):
        other()
    assert not calls


def test_checkpoint_requeues_a_job_that_resumes(tmp_path, monkeypatch):
    from submitit.core.utils import DelayedSubmission

    from neurodecode.workflow import fit as fit_mod

    calls = []
    monkeypatch.setattr(fit_mod, "run_fit", lambda config, **kw: calls.append((config, kw)))
    job = _job(tmp_path)
    _start(job)  # preempted while training: the folder holds a started run
    # what submitit's signal handler does: call the function's checkpoint, then run what it returns
    delayed = DelayedSubmission(job)._checkpoint_function()
    assert isinstance(delayed, DelayedSubmission)
    again = delayed.function
    assert isinstance(again, SweepJob) and again.requeues == 1 and again.run_dir == job.run_dir
    assert delayed.result()["status"] == "resumed"
    assert calls == [(None, {"resume": job.run_dir})]
    # a job stopped before its run started is simply started again
    fresh = _job(tmp_path / "f")
    assert fresh.checkpoint().result()["status"] == "fitted"


def _fake_launch(monkeypatch):
    launched = []
    monkeypatch.setattr(sweep_mod, "_run_local", lambda submitit, sweep, todo, entries, *a: launched.append(
        [j.name for j in todo]))
    return launched


def test_rerun_skips_finished_resumes_started_and_leaves_running(tmp_path, monkeypatch):
    launched = _fake_launch(monkeypatch)
    kw = {"grid": ["models.mlp.max_epochs=2,3,4,5"], "output": tmp_path / "sw"}
    jobs = expand_sweep(None, SETS, **kw).jobs
    _start(jobs[0])
    _finish(jobs[0])
    _start(jobs[1])
    _start(jobs[3])
    lock = acquire_lock(jobs[3].run_dir / LOCK_NAME, wait=False)  # another process writes this one
    try:
        result = run_sweep(None, SETS, **kw)
    finally:
        release_lock(lock, jobs[3].run_dir / LOCK_NAME)
    assert launched == [[jobs[1].name, jobs[2].name]]  # the started one (resumes) and the new one
    manifest = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    states = {j["name"]: j["state"] for j in manifest["jobs"]}
    assert states == {jobs[0].name: "finished", jobs[1].name: "pending", jobs[2].name: "pending",
                      jobs[3].name: "running"}
    assert [j["state"] for j in result.jobs] == ["finished", "pending", "pending", "running"]
    entry = manifest["jobs"][1]
    assert entry["run_dir"] == jobs[1].name and entry["overrides"] == ["models.mlp.max_epochs=3"]
    assert manifest["grid"] == {"models.mlp.max_epochs": ["2", "3", "4", "5"]} and manifest["overrides"] == SETS
    # a later sweep with more values keeps the earlier entries and adds the new ones
    run_sweep(None, SETS, grid=["models.mlp.max_epochs=6"], output=tmp_path / "sw")
    names = [j["name"] for j in json.loads((tmp_path / "sw" / "sweep.json").read_text())["jobs"]]
    assert names == [*(j.name for j in jobs), "models.mlp.max_epochs=6/seed=0"]


def test_a_run_of_another_config_stops_the_sweep_before_anything_runs(tmp_path, monkeypatch):
    launched = _fake_launch(monkeypatch)
    kw = {"grid": ["models.mlp.max_epochs=2,3"], "output": tmp_path / "sw"}
    jobs = expand_sweep(None, SETS, **kw).jobs
    _start(jobs[1], config_to_yaml(load_config(None, [*SETS, "models.mlp.max_epochs=9"])))
    with pytest.raises(FileExistsError, match="another config"):
        run_sweep(None, SETS, **kw)
    assert not launched and not (tmp_path / "sw" / "sweep.json").exists()


def test_two_sweep_commands_on_one_folder_are_refused(tmp_path, monkeypatch):
    _fake_launch(monkeypatch)
    (tmp_path / "sw").mkdir()
    lock = acquire_lock(tmp_path / "sw" / sweep_mod._SWEEP_LOCK, wait=False)
    try:
        with pytest.raises(FolderInUseError, match="launching the sweep"):
            run_sweep(None, SETS, seeds=[0], output=tmp_path / "sw")
    finally:
        release_lock(lock, tmp_path / "sw" / sweep_mod._SWEEP_LOCK)


def test_dry_run_writes_nothing_and_bad_options_fail_early(tmp_path):
    result = run_sweep(None, SETS, seeds=[0, 1], output=tmp_path / "sw", dry_run=True)
    assert result.dry_run and [j["state"] for j in result.jobs] == ["new", "new"]
    assert not (tmp_path / "sw").exists()
    with pytest.raises(ValueError, match="need launcher='slurm'"):
        run_sweep(None, SETS, seeds=[0], output=tmp_path / "sw", slurm={"partition": "gpu"})
    with pytest.raises(ValueError, match="slurm time"):
        run_sweep(None, SETS, seeds=[0], output=tmp_path / "sw", launcher="slurm", slurm={"time": "soon"})
    with pytest.raises(ValueError, match="max_parallel"):
        run_sweep(None, SETS, seeds=[0], output=tmp_path / "sw", max_parallel=0)
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("value, minutes", [(90, 90), ("90", 90), ("1:30:00", 90), ("30:30", 31),
                                            ("2-00:00:00", 2880), ("1-12", 2160), ("1-2:30", 1590)])
def test_slurm_time(value, minutes):
    assert sweep_mod._slurm_minutes(value) == minutes
