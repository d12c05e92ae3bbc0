"""End to end: ``neurodecode download nsd`` from a fake NSD bucket on 127.0.0.1, then ``neurodecode fit``.

The bucket serves a small simulated NSD in the real layout (no ``simulation.json``: the downloaded root is
indistinguishable from real NSD to the loader), one betas file drops its connection twice mid-file, and the
fit runs the shipped ``nsd_ridge`` recipe on the downloaded root with only size overrides.
"""

from __future__ import annotations

import json

import numpy as np
from _chance import assert_run_above_chance
from _fake_hosts import FakeHosts, publish

from neurodecode.cli import main
from neurodecode.datasets import load_nsd, simulate

BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.hdf5"
SMALL = ["data.subjects=[1]", "targets.size=6", "models.mlp.enabled=false", "evaluation.n_boot=20",
         "evaluation.n_repeats=2", "evaluation.n_candidates=10", "report.n_examples=2",
         "report.n_retrieved=3"]


def test_download_then_fit_runs_unchanged(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEURODECODE_CONFIG", str(tmp_path / "cfg" / "config.json"))
    for var in ("NO_PROXY", "no_proxy"):  # 127.0.0.1 never through a proxy of the environment
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    sim = tmp_path / "sim"
    simulate("nsd", sim, n_subjects=1, n_sessions=3, trials_per_session=120, shared_fraction=0.2,
             image_size=16, snr=2.0, grid=[(12, 12, 12)], seed=0, verbose="warning")
    root = tmp_path / "nsd"
    with FakeHosts() as hosts:
        bucket = hosts.s3["natural-scenes-dataset"] = {}
        publish(bucket, sim, skip=lambda rel: rel.startswith(("simulation", "coco/")))
        hosts.fault("s3", BETAS, "drop", times=2)
        rc = main(["download", "nsd", "--root", str(root), "--subjects", "1", "--mirror",
                   hosts.mirror()["s3"], "--accept-nsd-terms", "-q"])
        assert rc == 0, capsys.readouterr().err
        assert [r for r in hosts.ranged("s3", BETAS) if r] != []  # the drops were resumed by Range
    assert not (root / "simulation.json").exists()
    for key, data in bucket.items():
        assert (root / key).read_bytes() == data, key

    ours = load_nsd(root, 1, verbose="warning")
    theirs = load_nsd(sim, 1, verbose="warning")
    np.testing.assert_array_equal(np.asarray(ours.data), np.asarray(theirs.data))
    assert ours.events["stimulus_id"].tolist() == theirs.events["stimulus_id"].tolist()

    sets = [x for s in [*SMALL, f"output_dir={tmp_path / 'runs'}"] for x in ("--set", s)]
    assert main(["fit", "nsd_ridge", "--root", str(root), "-q", *sets]) == 0
    metrics = json.loads((tmp_path / "runs" / "nsd_ridge" / "metrics.json").read_text())
    assert metrics["subjects"] == [1]
    top1 = metrics["models"]["ridge"]["subj01"]["metrics"]["top1_forward"]
    assert top1["ci_low"] <= top1["value"] <= top1["ci_high"]
    assert_run_above_chance(metrics, ["ridge"], "2way_forward", two_way=0.6)  # the downloaded data decode
