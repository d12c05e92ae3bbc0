"""Time and peak memory of the commands the README shows, measured the way a user runs them.

Each command runs in a subprocess (from the repository root, with a fresh ``NEURODECODE_DATA`` cache unless
said otherwise); the script polls the whole process tree every 0.1 s and records the peak of the summed
resident memory (children included: pytest-xdist workers, submitit jobs, sphinx) and the wall time.
Results go to ``benchmarks/results/readme_commands.md`` (the table the README quotes) and ``.json``.

Usage::

    python benchmarks/readme_commands.py            # every command (about 15 min on 2 cores)
    python benchmarks/readme_commands.py fit_demo   # only the named ones

Numbers depend on the machine and on what else runs; the README quotes the 2-core machine this was
run on, idle, with the CPU wheels of torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: name -> (shell command as the README shows it, note). ``{tmp}`` is a fresh temporary folder.
COMMANDS: dict[str, tuple[str, str]] = {
    "fit_demo": ("neurodecode fit --set output_dir={tmp}/runs",
                 "the embedded demo, cold (simulates NSD first)"),
    "fit_demo_cached": ("neurodecode fit --set output_dir={tmp}/runs2",
                        "the demo again, simulation cached"),
    "recipes": ("neurodecode recipes", ""),
    "masc_speech": ("neurodecode fit masc_speech --set data.root=null --set data.subjects=[1,2] "
                    "--set targets.encoder=melspec --set targets.weights=null "
                    "--set \"models.mlp.backbone_kwargs={{hidden: 64}}\" --set models.mlp.max_epochs=20 "
                    "--set output_dir={tmp}/runs", "README's M/EEG example"),
    "sweep": ("neurodecode fit demo --sweep models.mlp.lr=1e-3,3e-4 --seeds 0,1 --max-parallel 2 "
              "--output {tmp}/sweep", "README's sweep: 4 jobs, 2 at a time (demo data cached)"),
    "summarize": ("neurodecode summarize {tmp}/sweep", "the sweep's summary"),
    "tests": ("python -m pytest -q -p no:cacheprovider -n 2 -m \"not slow\" tests",
              "the README's test command (after the install)"),
    "docs": ("rm -rf docs/auto_examples docs/api/generated docs/api/modules docs/sg_execution_times.rst && "
             "NEURODECODE_DOCS_LIGHT=1 sphinx-build -q -W --keep-going -b html docs {tmp}/html",
             "the README's docs command (after the install), clean build: gallery and API pages regenerated"),
}


def measure(command: str, env: dict[str, str]) -> dict[str, float]:
    """Wall time (s) and peak summed RSS of the process tree (GiB) of one shell command."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, shell=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.1)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{command!r} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_gib": round(peak / 2**30, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"commands to run (default: all of {', '.join(COMMANDS)})")
    args = parser.parse_args()
    names = args.names or list(COMMANDS)
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "readme_commands.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "NEURODECODE_DATA": f"{tmp}/data"}
        for name in names:
            command, note = COMMANDS[name]
            command = command.format(tmp=tmp)
            print(f"{name}: {command}", flush=True)
            res = measure(command, env)
            res.update(command=command.replace(tmp, "$TMP"), note=note, cpus=os.cpu_count(),
                       omp=os.environ.get("OMP_NUM_THREADS"), python=platform.python_version(),
                       date=time.strftime("%Y-%m-%d"))
            results[name] = res
            print(f"  {res['wall_s']} s, peak {res['peak_rss_gib']} GiB", flush=True)
            json_path.write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| command | wall time | peak memory (process tree) | note |", "|---|---:|---:|---|"]
    for name, res in results.items():
        lines.append(f"| `{shlex.join(shlex.split(res['command']))[:110]}` | {res['wall_s']:.0f} s | "
                     f"{res['peak_rss_gib']:.2f} GiB | {res['note']} |")
    (out_dir / "readme_commands.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
