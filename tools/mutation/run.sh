#!/usr/bin/env bash
# Mutation testing of the eight science-critical modules (issue #13).
#
#   tools/mutation/run.sh                      # everything (slow: see docs/testing.md)
#   tools/mutation/run.sh 'neurodecode.analysis.stats*'   # one module (mutmut name glob)
#   MUTATION_SAMPLE=40 tools/mutation/run.sh              # 40 seeded random mutants per module
#   MUTATION_REUSE=1 tools/mutation/run.sh NAME...        # rerun some mutants in the same snapshot
#
# Works on a snapshot of HEAD (plus the *_mutation.py tests of the working tree),
# so edits in the working tree during the run cannot disturb it. One worker, niced.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
MUTMUT=${MUTMUT:-$ROOT/.venv/bin/mutmut}
SNAP=${MUTATION_SNAPSHOT:-/tmp/mutation}
TARGETS="neurodecode/tasks/retrieval.py neurodecode/datasets/_splits.py neurodecode/io/nsd.py
neurodecode/models/ridge.py neurodecode/models/losses.py neurodecode/analysis/stats.py
neurodecode/analysis/ablation.py neurodecode/training/checkpoint.py"

if [ "${MUTATION_REUSE:-0}" != 1 ]; then
  rm -rf "$SNAP" && mkdir -p "$SNAP"
  git -C "$ROOT" archive HEAD | tar -x -C "$SNAP"
  (cd "$ROOT" && find tests/unit -name 'test_*_mutation.py' -exec cp --parents {} "$SNAP" \;)
  # config: drop test files that do not exist in this checkout
  "$PY" - "$ROOT/tools/mutation/setup.cfg" "$SNAP" <<'PYEOF'
import sys, pathlib
cfg, snap = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out = [l for l in cfg.read_text().splitlines()
       if not (l.strip().startswith("tests/") and not (snap / l.strip()).exists())]
(snap / "setup.cfg").write_text("\n".join(out) + "\n")
PYEOF
  (cd "$SNAP" && "$PY" "$ROOT/tools/mutation/prepare_snapshot.py" $TARGETS)
fi

# the mutation-killing tests, even if not committed yet (refreshed on every run; mutmut
# notices new tests and maps only those)
for dest in "$SNAP" "$SNAP/mutants"; do
  [ -d "$dest" ] && (cd "$ROOT" && find tests/unit -name 'test_*_mutation.py' -exec cp --parents {} "$dest" \;)
done

cd "$SNAP"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0
unset PYTHONPATH
if [ -n "${MUTATION_SAMPLE:-}" ]; then
  # mutants must exist before they can be sampled: the first run generates them (and the
  # test-to-function map) while checking the smallest module in full
  [ -f mutants/neurodecode/datasets/_splits.py.meta ] || \
    nice -n 10 "$MUTMUT" run --max-children 1 'neurodecode.datasets._splits*'
  mapfile -t picked < <(cd "$SNAP" && PYTHONPATH="$ROOT/tools/mutation" "$PY" "$ROOT/tools/mutation/sample.py" \
    "$MUTATION_SAMPLE" "$@")
  nice -n 10 "$MUTMUT" run --max-children 1 "${picked[@]}"
else
  nice -n 10 "$MUTMUT" run --max-children 1 "$@"
fi
"$PY" "$ROOT/tools/mutation/summary.py"
