"""The registry lines of the built-in datasets: one :func:`register_dataset` call each.

A dataset is its loader module (``nsd.py``, ``things_eeg.py``, ...) plus its simulator entry
(``resolve`` + ``write``), registered here under its name. The registry line is the only place a dataset
is named: a run config (``neurodecode.config``, a higher layer) validates ``data.dataset`` and the
dataset's first-class ``data.*`` / ``simulate.*`` keys against the registered :class:`DatasetSpec`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io.nsd import NSDLayout
from . import _sim_masc, _sim_things
from .download import _EEG2_SOURCE, _MASC_SOURCE, _MEG_SOURCE, _NSD_SOURCE
from .masc import load_masc
from .nsd import load_nsd
from .registry import Conformance, DatasetSpec, Simulator, register_dataset
from .simulate import _resolve_nsd, _write_nsd
from .things_eeg import load_things_eeg2
from .things_meg import load_things_meg

# -- what each tiny simulation planted (the conformance suite's round trip) -------------------------


def _nsd_planted(record: dict[str, Any], subject: int) -> dict[str, Any]:
    truth = record["ground_truth"]
    sub, design = truth["subjects"][str(subject)], truth["design"]
    shared = design["shared_shown_73k_ids_1based"]
    return {"n_trials": design["n_trials_per_subject"], "n_stimuli": sub["n_images_seen"],
            "trial_shape": (sub["n_nsdgeneral_voxels"],),
            "test_values": {"stimulus_id": {str(i - 1) for i in shared}}}  # 73k ids, 0-based


def _things_planted(record: dict[str, Any], subject: int, n_trials: int, n_channels: int,
                    n_times: int | None) -> dict[str, Any]:
    stim = record["ground_truth"]["stimuli"]
    return {"n_trials": n_trials, "n_stimuli": stim["n_train_images"] + stim["n_test_images"],
            "trial_shape": (n_channels, n_times),
            "values": {"concept": set(stim["train_concepts"]) | set(stim["test_concepts"])},
            "test_values": {"concept": set(stim["test_concepts"])}}


def _eeg2_planted(record: dict[str, Any], subject: int) -> dict[str, Any]:
    p, truth = record["parameters"], record["ground_truth"]
    stim = truth["stimuli"]
    n_trials = stim["n_train_images"] * p["n_train_reps"] + stim["n_test_images"] * p["n_test_reps"]
    n_channels = len(truth["variants"][p["variant"]]["ch_names"])
    return _things_planted(record, subject, n_trials, n_channels, None)


def _meg_planted(record: dict[str, Any], subject: int) -> dict[str, Any]:
    truth = record["ground_truth"]
    sub, sensors = truth["subjects"][str(subject)], truth["sensors"]
    return _things_planted(record, subject, sub["n_exp"] + sub["n_test"], len(sensors["ch_names"]),
                           sensors["n_times"])


def _masc_planted(record: dict[str, Any], subject: int) -> dict[str, Any]:
    truth = record["ground_truth"]
    return {"trial_shape": (record["parameters"]["n_channels"], None),
            "within": {"word": set(truth["vocabulary"]), "story": set(truth["stories"])}}


def _masc_files(root: Path, subject: int) -> list[Path]:
    return sorted((root / f"sub-{subject:02d}").glob("ses-*/meg/*_meg.fif"))


_NSD_CASE = Conformance(
    simulate_params={"n_subjects": 1, "n_sessions": 2, "trials_per_session": 30, "image_size": 16,
                     "grid": [(12, 12, 12)]},
    planted=_nsd_planted,
    files=lambda root, s: [NSDLayout(root).expdesign, NSDLayout(root).roi_file(s, "nsdgeneral")])
_EEG2_CASE = Conformance(
    simulate_params={"n_subjects": 1, "n_train_concepts": 4, "images_per_concept": 2, "n_test_concepts": 4,
                     "n_train_reps": 2, "n_test_reps": 4, "image_size": 16},
    planted=_eeg2_planted,
    files=lambda root, s: [root / f for f in _read_truth(root)["subjects"][str(s)]["files"]])
_MEG_CASE = Conformance(
    simulate_params={"n_subjects": 1, "n_train_concepts": 4, "images_per_concept": 2, "n_test_concepts": 4,
                     "n_test_reps": 4, "n_channels": 16, "sfreq": 100.0, "n_sessions": 1, "image_size": 16},
    planted=_meg_planted,
    files=lambda root, s: [root / "derivatives" / "preprocessed" / f"preprocessed_P{s}-epo.fif"])
_MASC_CASE = Conformance(
    simulate_params={"n_subjects": 1, "n_sessions": 1, "n_stories": 1, "story_duration_s": 30.0,
                     "n_channels": 16},
    planted=_masc_planted, files=_masc_files, load_kwargs={"test_ratio": 0.4, "window_s": 1.0})


def _read_truth(root: Path) -> dict[str, Any]:
    import json

    return json.loads((root / "simulation.json").read_text(encoding="utf-8"))["ground_truth"]


# -- the registry lines -------------------------------------------------------------------------------

register_dataset(DatasetSpec(
    name="nsd", modality="fmri", label="NSD", loader=load_nsd,
    simulator=Simulator(resolve=_resolve_nsd, write=_write_nsd),
    data_keys=("roi", "sessions", "zscore", "betas_format", "nonfinite"),
    simulate_keys=("n_sessions", "trials_per_session", "shared_fraction"),
    test_split_hint="the NSD test split is the shared-1000 images: load more sessions",
    description="Natural Scenes Dataset: 7T fMRI single-trial betas, COCO images",
    conformance=_NSD_CASE, source=_NSD_SOURCE))
register_dataset(DatasetSpec(
    name="things_eeg2", modality="eeg", label="THINGS-EEG2", loader=load_things_eeg2,
    simulator=Simulator(resolve=_sim_things.resolve_things_eeg2, write=_sim_things.write_things_eeg2),
    test_split_hint="load the test files too (data.options.split must include 'test')",
    description="THINGS-EEG2: EEG, rapid serial presentation of THINGS images (Gifford et al. 2022)",
    conformance=_EEG2_CASE, source=_EEG2_SOURCE))
register_dataset(DatasetSpec(
    name="things_meg", modality="meg", label="THINGS-MEG", loader=load_things_meg,
    simulator=Simulator(resolve=_sim_things.resolve_things_meg, write=_sim_things.write_things_meg),
    test_split_hint="the test split is the images shown 12 times",
    description="THINGS-MEG (ds004212): CTF MEG, THINGS images (Hebart et al. 2023)",
    conformance=_MEG_CASE, source=_MEG_SOURCE))
register_dataset(DatasetSpec(
    name="masc", modality="meg", stimulus="audio", label="MEG-MASC", loader=load_masc,
    simulator=Simulator(resolve=_sim_masc.resolve_masc, write=_sim_masc.write_masc),
    test_split_hint="raise data.options.test_ratio or load more stories (data.options.tasks)",
    description="MEG-MASC (BIDS): MEG while listening to spoken stories (Gwilliams et al. 2023)",
    conformance=_MASC_CASE, source=_MASC_SOURCE))
