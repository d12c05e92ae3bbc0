"""Deep decoder vs ridge on every recipe's simulator: headline metric with CIs, wall time, peak RSS.

Each recipe runs **exactly the simulator command documented in its header** (the ``--set`` overrides
after ``neurodecode fit NAME`` under "On the simulator"), so this benchmark also checks the
promise that a newcomer can finish those commands; the embedded demo runs with no overrides. Every run
happens in this one process, one after another, with ``simulate.response`` set to each requested
simulator mode (``linear``: responses linear in the stimulus features; ``nonlinear``: the realistic mode,
see docs/simulator.md). Peak RSS is sampled every 0.2 s during each run (the process's resident memory,
which never shrinks much after a run, so later runs report at least the earlier peak: run one recipe per
process for exact per-recipe memory).

    python benchmarks/deep_vs_ridge.py                                   # every recipe, both modes
    python benchmarks/deep_vs_ridge.py --recipes masc_speech --modes linear
    python benchmarks/deep_vs_ridge.py --json results.json

The headline metric is the one the recipe's paper reports, brain → stimulus, averaged over the subjects;
its CI is the mean of the subjects' bootstrap CI bounds (``RetrievalScores.combine`` pools them the same
way in reports): N-way top-1 (``nway_top1_forward``; NSD: 300-way among the shared images, M/EEG: among
all test items) for every recipe except ``things_meg``, whose paper (Benchetrit et al. 2023) reports
top-5 accuracy among the test images (``top5_forward``). The table also gives the other of the two
metrics for every run, so no recipe is judged on one number alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("demo", "masc_speech", "things_meg", "things_eeg_atm", "nsd_mindeye", "nsd_mindbridge")
#: The metric each recipe's paper reports (default: N-way top-1, MindEye2's and ATM's headline).
HEADLINE = {"things_meg": "top5_forward"}
#: The metric shown next to the headline.
SECOND = {"nway_top1_forward": "top5_forward", "top5_forward": "nway_top1_forward"}


def header_overrides(recipe: Path) -> list[str]:
    """The ``--set`` overrides of the simulator command in a recipe's header comment."""
    lines = recipe.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("#") and "On the simulator" in line),
                 None)
    if start is None:
        raise ValueError(f"{recipe} has no 'On the simulator' command in its header")
    command = ""
    for line in lines[start + 1:]:
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not command and not text.startswith("neurodecode fit"):
            continue
        command += " " + text.rstrip("\\").strip()
        if not text.endswith("\\"):
            break
    words = shlex.split(command)
    if words[:2] != ["neurodecode", "fit"]:
        raise ValueError(f"could not read the simulator command of {recipe}: {command!r}")
    out, it = [], iter(words[3:])
    for word in it:
        if word == "--set":
            out.append(next(it))
        elif word.startswith("--set="):
            out.append(word.split("=", 1)[1])
        else:
            raise ValueError(f"{recipe}: unexpected word {word!r} in the simulator command {command!r}")
    return out


class _PeakRSS:
    """Sample this process's RSS in a thread; ``peak_mb`` after ``stop()``."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self._proc, self._interval = psutil.Process(), interval
        self._stop = threading.Event()
        self.peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)
            self._stop.wait(self._interval)

    def __enter__(self) -> _PeakRSS:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)


def run_one(recipe: str, mode: str, out_dir: Path) -> dict:
    """Fit one recipe on its simulator in one mode; return its row(s) of the table."""
    from neurodecode.config import load_config
    from neurodecode.utils import use_log_level
    from neurodecode.workflow import run_fit

    path = None if recipe == "demo" else REPO / "neurodecode" / "pipelines" / f"{recipe}.yaml"
    overrides = [] if path is None else header_overrides(path)
    overrides += [f"output_dir={out_dir}", f"simulate.response={mode}"]
    config = load_config(path, overrides)
    t0 = time.perf_counter()
    with _PeakRSS() as rss, use_log_level("warning"):
        result = run_fit(config)
    wall = time.perf_counter() - t0
    headline = HEADLINE.get(recipe, "nway_top1_forward")
    rows = {}
    for model, per in result.metrics["models"].items():
        first = next(iter(per.values()))["metrics"]
        other = next((m for m in (SECOND[headline], "top10_forward") if m in first), SECOND[headline])
        rows[model] = {**_mean_metric(per, headline), "fit_s": result.metrics["timings_s"].get(model),
                       "other": {other: _mean_metric(per, other)}}
    return {"recipe": recipe, "mode": mode, "metric": headline, "overrides": overrides[:-2], "wall_s": wall,
            "peak_rss_mb": rss.peak_mb, "models": rows}


def _mean_metric(per_subject: dict, metric: str) -> dict:
    """Mean over the subjects of ``metric`` and of its CI bounds (None where a run lacks the metric)."""
    vals = [sub["metrics"].get(metric) for sub in per_subject.values()]
    if any(v is None for v in vals):
        return {"value": None}
    n = len(vals)
    return {"value": sum(v["value"] for v in vals) / n, "ci_low": sum(v["ci_low"] for v in vals) / n,
            "ci_high": sum(v["ci_high"] for v in vals) / n,
            "chance": sum(v.get("chance", float("nan")) for v in vals) / n,
            "per_subject": {s: round(sub["metrics"][metric]["value"], 4) for s, sub in per_subject.items()}}


def table(results: list[dict]) -> str:
    """Markdown table: recipe × mode × model → top-1 [CI], chance, fit time; recipe wall time and RSS."""
    names = {"nway_top1_forward": "top-1", "top5_forward": "top-5", "top10_forward": "top-10"}
    out = [("| recipe | simulator | model | headline metric [95 % CI] | chance | other metric | model fit | "
            "run wall time | peak RSS |"), "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        models = r["models"]
        metric = r.get("metric", "nway_top1_forward")
        best = max(models, key=lambda m: models[m]["value"])
        for name, m in models.items():
            sep = ""
            others = [o for o in models if o != name]
            if name == best and others and all(m["ci_low"] > models[o]["ci_high"] for o in others):
                sep = " (CIs separate)"
            cell = f"{names[metric]} {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
            cell = f"**{cell}**{sep}" if name == best else cell
            (other_name, other), = m.get("other", {"": {"value": None}}).items()
            other_cell = ("—" if other["value"] is None else
                          f"{names[other_name]} {other['value']:.3f} [{other['ci_low']:.3f}, {other['ci_high']:.3f}]")
            chance = "—" if m["chance"] != m["chance"] else f"{m['chance']:.3f}"
            fit = "—" if m["fit_s"] is None else f"{m['fit_s']:.0f} s"
            out.append(f"| {r['recipe']} | {r['mode']} | {name} | {cell} | {chance} | {other_cell} | {fit} | "
                       f"{r['wall_s'] / 60:.1f} min | {r['peak_rss_mb'] / 1024:.2f} GB |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--modes", nargs="+", default=["linear", "nonlinear"], choices=("linear", "nonlinear"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores)")
    args = parser.parse_args(argv)

    from neurodecode.utils import set_torch_threads

    n = set_torch_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            for mode in args.modes:
                print(f"== {recipe} ({mode} simulator), {n} threads", file=sys.stderr, flush=True)
                results.append(run_one(recipe, mode, Path(tmp) / f"{recipe}-{mode}"))
                print(table(results[-1:]), file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
