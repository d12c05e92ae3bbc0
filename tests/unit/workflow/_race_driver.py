"""Subprocess driver for the race tests: the real CLI or cache code, with a delay injected.

``python _race_driver.py cli WHERE SECONDS ARG...``
    Run ``neurodecode ARG...`` after making one step slow, so a second process
    reliably starts while the first one holds its folder. ``WHERE``:
    ``load`` (``neurodecode fit`` sleeps before loading its data, after its run
    folder is claimed and ``config.yaml`` written), ``simulate`` (the NSD
    simulator sleeps before writing its files, until the file named by the
    environment variable ``RACE_RELEASE`` exists, at most SECONDS) or ``none``. With the
    environment variable ``RACE_GO=PATH`` the command starts only once PATH
    exists (after writing ``PATH.ready-<pid>``), so that two processes start it
    at the same moment.
``python _race_driver.py cache CACHE_DIR FIRST STOP SECONDS CALLS_FILE``
    Fill ``EmbeddingCache(CACHE_DIR)`` with ids ``FIRST..STOP-1`` (chunks of 5,
    ``SECONDS`` per chunk); every computed id is appended to ``CALLS_FILE``;
    exit 3 if the returned rows are wrong.
``python _race_driver.py hold FOLDER``
    Claim FOLDER like a command does, leave a temporary file in it, print
    ``ready`` and wait to be killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _cli(where: str, seconds: float, argv: list[str]) -> int:
    if where == "load":
        from neurodecode.workflow import fit

        load = fit.load_data

        def slow_load(config):
            time.sleep(seconds)
            return load(config)

        fit.load_data = slow_load
    elif where == "simulate":
        import importlib

        mod = importlib.import_module("neurodecode.datasets.simulate")
        spec = mod._SIMULATORS["nsd"]

        def slow_write(root, params):
            (root / "started").write_text("x")
            release = os.environ.get("RACE_RELEASE")  # wait for the test's signal (at most SECONDS)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not (release and os.path.exists(release)):
                time.sleep(0.01)
            (root / "started").unlink()
            return spec.write(root, params)

        mod._SIMULATORS["nsd"] = mod._Simulator(resolve=spec.resolve, write=slow_write)
    from neurodecode.cli import main

    go = os.environ.get("RACE_GO")
    if go:
        import neurodecode.workflow._models
        import neurodecode.workflow.fit  # noqa: F401  (the slow imports, before the start line)

        Path(f"{go}.ready-{os.getpid()}").write_text("x")
        while not os.path.exists(go):
            time.sleep(0.001)
    return main(argv)


def _cache(cache_dir: str, first: int, stop: int, seconds: float, calls_file: str) -> int:
    import numpy as np

    from neurodecode.embeddings.cache import EmbeddingCache

    def compute(ids):
        time.sleep(seconds)
        with open(calls_file, "a") as fh:
            fh.write("".join(f"{i}\n" for i in ids))
        return np.array([[i, 2 * i, -i] for i in ids], dtype=np.float32)

    ids = list(range(first, stop))
    out = EmbeddingCache(cache_dir).get_or_compute("enc", "ab12", ids, compute, chunk_size=5, verbose="info")
    return 0 if np.array_equal(np.asarray(out)[:, 0], ids) and np.array_equal(np.asarray(out)[:, 1],
                                                                             2 * np.array(ids)) else 3


def _hold(folder: str) -> int:
    from neurodecode.utils.locks import claim_folder

    claim = claim_folder(folder)
    (claim.path / ".report.html.abc123.tmp").write_text("half-written")
    print("ready", flush=True)
    time.sleep(600)
    return 0


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "cli":
        sys.exit(_cli(rest[0], float(rest[1]), rest[2:]))
    if mode == "cache":
        sys.exit(_cache(rest[0], int(rest[1]), int(rest[2]), float(rest[3]), rest[4]))
    if mode == "hold":
        sys.exit(_hold(rest[0]))
    sys.exit(f"unknown mode {mode}")
