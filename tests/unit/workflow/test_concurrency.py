"""One writer per thing: two real processes writing one run folder, one simulation, one cache entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

DRIVER = Path(__file__).with_name("_race_driver.py")
TINY_SIM = ["--n-subjects", "1", "--n-sessions", "1", "--trials-per-session", "60", "--image-size", "16"]
# a ridge-only fit of a tiny simulation: a few seconds
TINY_FIT = ["simulate.n_subjects=1", "simulate.n_sessions=2", "simulate.trials_per_session=120",
            "simulate.image_size=24", "targets.size=6", "models.mlp.enabled=false", "evaluation.n_boot=20",
            "evaluation.n_repeats=2", "evaluation.n_candidates=10", "report.n_examples=1",
            "report.n_retrieved=2", "data.subjects=[1]"]


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NEURODECODE_TQDM": "off",
           "NEURODECODE_DATA": str(tmp_path / "data")}
    env.pop("NEURODECODE_LOG_LEVEL", None)
    return env


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(DRIVER), *args], env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the first process ended before {what}: {err[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _fit_args(seed: int, *extra: str) -> list[str]:
    return ["fit", *[x for s in [*TINY_FIT, f"seed={seed}"] for x in ("--set", s)], *extra]


@pytest.fixture
def simulated(tmp_path, monkeypatch):
    """The tiny fit's simulated dataset, written once before the race."""
    from neurodecode.config import load_config
    from neurodecode.utils import use_log_level
    from neurodecode.workflow._data import ensure_simulated

    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    with use_log_level("warning"):
        ensure_simulated(load_config(None, TINY_FIT))
    return tmp_path


def _start_together(tmp_path: Path, *commands: list[str]) -> list[subprocess.Popen]:
    """Start processes that begin their command at the same moment (after their imports)."""
    go = tmp_path / "go"
    env = {**_env(tmp_path), "RACE_GO": str(go)}
    procs = [subprocess.Popen([sys.executable, str(DRIVER), *cmd], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd in commands]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.ready-*"))) < len(procs):
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"a process ended before the start: {p.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "the processes did not get ready"
        time.sleep(0.02)
    go.write_text("go")
    return procs


def test_two_fits_into_one_folder(simulated):
    tmp_path = simulated
    run = tmp_path / "run"
    procs = _start_together(tmp_path, *[["cli", "load", "3", *_fit_args(seed, "-q", "--output", str(run))]
                                        for seed in (1, 2)])
    (code1, _, err1), (code2, _, err2) = [_finish(p) for p in procs]
    assert sorted([code1, code2]) == [0, 1], (err1[-2000:], err2[-2000:])
    winner, (loser_err,) = (1, [err2]) if code1 == 0 else (2, [err1])
    # the second is refused at once with one clear line, and touches nothing
    assert "Traceback" not in loser_err and len(loser_err.strip().splitlines()) == 1
    assert "being written by another neurodecode process" in loser_err and str(run) in loser_err
    # the folder holds one run: its config and its own results
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == winner
    assert json.loads((run / "run.json").read_text())["seed"] == winner
    assert (run / "metrics.json").is_file() and not (run / ".neurodecode.lock").exists()


def test_two_fits_with_one_name_take_numbered_folders(simulated):
    tmp_path = simulated
    runs = tmp_path / "runs"
    name = ["--set", f"output_dir={runs}", "--set", "name=race", "-q"]
    procs = _start_together(tmp_path, *[["cli", "load", "3", *_fit_args(seed, *name)] for seed in (1, 2)])
    for proc in procs:
        code, _, err = _finish(proc)
        assert code == 0, err[-3000:]
    assert sorted(p.name for p in runs.iterdir()) == ["race", "race-1"]
    seeds = []
    for folder in ("race", "race-1"):  # each folder: one run's config and its own results
        seed = yaml.safe_load((runs / folder / "config.yaml").read_text())["seed"]
        assert json.loads((runs / folder / "run.json").read_text())["seed"] == seed
        seeds.append(seed)
    assert sorted(seeds) == [1, 2]


@pytest.mark.parametrize("same", [True, False], ids=["same-parameters", "other-parameters"])
def test_two_simulations_into_one_folder(tmp_path, same):
    out, release, log2 = tmp_path / "sim", tmp_path / "release", tmp_path / "second.err"
    # the first holds the folder until the second has reported that it waits (however slow the machine)
    first = subprocess.Popen([sys.executable, str(DRIVER), "cli", "simulate", "120", "simulate", "nsd", str(out),
                              *TINY_SIM], env={**_env(tmp_path), "RACE_RELEASE": str(release)}, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: any(tmp_path.glob(".sim.simulating-*/started")), first, "it started writing")
    with open(log2, "w") as err_file:
        second = subprocess.Popen([sys.executable, str(DRIVER), "cli", "none", "0", "simulate", "nsd", str(out),
                                   *TINY_SIM, *([] if same else ["--param", "snr=2.0"])],
                                  env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=err_file,
                                  text=True)
        _wait_for(lambda: "Waiting for another process" in log2.read_text(), second, "the second waited")
        release.write_text("go")
        code2 = second.wait(timeout=300)
    err2 = log2.read_text()
    release.unlink(), log2.unlink()
    code1, _, err1 = _finish(first)
    assert code1 == 0, err1[-3000:]
    assert "Waiting for another process simulating into" in err2  # it waited for the first
    rec = json.loads((out / "simulation.json").read_text())
    assert rec["parameters"]["snr"] == 0.4  # the first simulation, not replaced
    if same:  # ... then reused the first one's dataset
        assert code2 == 0, err2[-3000:]
        assert "reusing it" in err2
    else:  # ... then was refused: other parameters without --overwrite
        assert code2 == 1 and "Traceback" not in err2
        assert "different parameters" in err2 and "snr" in err2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == ["sim"]  # no temporaries, no lock


def test_two_processes_fill_one_embedding_cache(tmp_path):
    from neurodecode.embeddings.cache import EmbeddingCache

    cache_dir, calls = tmp_path / "cache", tmp_path / "calls.txt"
    first = _start(tmp_path, "cache", str(cache_dir), "0", "20", "1.0", str(calls))
    _wait_for(lambda: calls.is_file() and calls.read_text(), first, "it computed a chunk")
    second = _start(tmp_path, "cache", str(cache_dir), "10", "30", "0.2", str(calls))
    for proc in (first, second):
        code, _, err = _finish(proc)
        assert code == 0, err[-3000:]
    computed = [int(x) for x in calls.read_text().split()]
    assert sorted(computed) == list(range(30))  # every id computed once: the second reused the first's rows
    cache = EmbeddingCache(cache_dir)
    folder = cache.key_dir("enc", "ab12")
    index = json.loads((folder / "index.json").read_text())
    assert all((folder / shard["file"]).is_file() for shard in index["shards"])  # no dangling file
    assert sorted(cache.cached_ids("enc", "ab12")) == list(range(30))
    values = cache.get_or_compute("enc", "ab12", list(range(30)), lambda ids: pytest.fail("recomputed"))
    np.testing.assert_array_equal(np.asarray(values)[:, 0], np.arange(30))
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    assert sorted(f.name for f in folder.glob("values-*.npy")) == [index["shards"][0]["file"]]
