"""Per-module table of a mutmut run (run from the snapshot root, after `mutmut run`).

Reads mutants/<module>.py.meta and prints the markdown table that goes into
docs/testing.md. "no tests" counts as survived (nothing caught it); mutants not
run (outside the sample, or a run cut short) are listed apart and left out of the rate.

    python summary.py                 # every mutant that has a result
    python summary.py --names FILE    # only the mutants named in FILE (one per line), e.g. a sample
    python summary.py -v              # also list the survivors
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

TARGETS = [
    "neurodecode/tasks/retrieval.py", "neurodecode/datasets/_splits.py", "neurodecode/io/nsd.py",
    "neurodecode/models/ridge.py", "neurodecode/models/losses.py", "neurodecode/analysis/stats.py",
    "neurodecode/analysis/ablation.py", "neurodecode/training/checkpoint.py",
]


def main(root: Path = Path(".")) -> None:
    only = None
    if "--names" in sys.argv:
        only = set(Path(sys.argv[sys.argv.index("--names") + 1]).read_text().split())
    rows, total = [], Counter()
    survivors = []
    for t in TARGETS:
        meta = root / "mutants" / (t + ".meta")
        if not meta.exists():
            rows.append((t, None))
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        c = Counter()
        for key, code in codes.items():
            if only is not None and key not in only:
                continue
            s = status_by_exit_code[code]
            s = {"no tests": "survived", "segfault": "killed", "suspicious": "timeout"}.get(s, s)
            c[s] += 1
            if s == "survived":
                survivors.append(key)
        rows.append((t, c))
        total += c
    print("| module | mutants run | killed | survived | timeout | not run | kill rate |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def line(name, c):
        run = c["killed"] + c["survived"] + c["timeout"]
        rate = f"{100 * (c['killed'] + c['timeout']) / run:.1f} %" if run else "n/a"
        print(f"| {name} | {run} | {c['killed']} | {c['survived']} | {c['timeout']} "
              f"| {c['not checked']} | {rate} |")

    for t, c in rows:
        if c is None:
            print(f"| {t} | – | – | – | – | – | not run |")
        else:
            line(f"`{t.removeprefix('neurodecode/')}`", c)
    line("**all**", total)
    if "-v" in sys.argv:
        print("\nsurvivors:")
        for k in survivors:
            print(" ", k)


if __name__ == "__main__":
    main()
