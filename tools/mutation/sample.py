"""Print a seeded random sample of mutant names per module (run from the snapshot root).

    python tools/mutation/sample.py 60            # 60 mutants per target module (all if fewer)
    python tools/mutation/sample.py 60 nsd ridge  # only modules whose path contains one of the words
    MUTATION_SEED=2 python tools/mutation/sample.py 25   # another sample, disjoint from the default 40
    MUTATION_SEED=3 python tools/mutation/sample.py 20   # held out: disjoint from the default 40 and seed 2's 25
    MUTATION_SEED=4 python tools/mutation/sample.py 20   # held out: disjoint from all three above
    MUTATION_SEED=5 python tools/mutation/sample.py 30   # held out: disjoint from all four above

The full run takes hours on a 2-core machine (see docs/testing.md); a fixed-seed
sample gives an unbiased kill-rate estimate per module in minutes, and the
same seed and size give the same mutants on the same code.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

from summary import TARGETS


def main() -> None:
    k = int(sys.argv[1])
    words = sys.argv[2:]
    seed = os.environ.get("MUTATION_SEED", "")
    exclude = set()
    if seed:  # an independent sample: never one of the default 40-per-module sample's mutants
        base_k = int(os.environ.get("MUTATION_BASE_K", "40"))
        exclude = {n for t in TARGETS for n in _pick(t, base_k, "")}
        if seed != "2":  # a held-out sample: neither of the two samples the *_mutation.py tests were written on
            second_k = int(os.environ.get("MUTATION_SECOND_K", "25"))
            exclude |= {n for t in TARGETS for n in _pick(t, second_k, "2", exclude)}
        if seed not in ("2", "3"):  # sample 3 (seed 3, 20 per module) was looked at too: seed 4 excludes it
            third_k = int(os.environ.get("MUTATION_THIRD_K", "20"))
            exclude |= {n for t in TARGETS for n in _pick(t, third_k, "3", exclude)}
        if seed not in ("2", "3", "4"):  # sample 4 (seed 4, 20 per module) was looked at too: seed 5 excludes it
            fourth_k = int(os.environ.get("MUTATION_FOURTH_K", "20"))
            exclude |= {n for t in TARGETS for n in _pick(t, fourth_k, "4", exclude)}
    for t in TARGETS:
        if words and not any(w in t for w in words):
            continue
        for name in _pick(t, k, seed, exclude):
            print(name)


def _pick(target: str, k: int, seed: str, exclude: set[str] = frozenset()) -> list[str]:
    names = sorted(set(json.loads((Path("mutants") / (target + ".meta")).read_text())["exit_code_by_key"])
                   - exclude)
    if len(names) <= k:
        return names
    return sorted(random.Random(f"issue13{seed}:{target}").sample(names, k))


if __name__ == "__main__":
    main()
