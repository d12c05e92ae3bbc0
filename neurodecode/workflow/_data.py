"""Data for a run: the dataset of ``data.dataset`` (or its simulation), loaded and preprocessed."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import FitConfig
from ..utils import get_data_dir, logger

if TYPE_CHECKING:
    from ..datasets import DatasetSpec


def dataset_spec(config: FitConfig) -> DatasetSpec:
    """The registry entry of ``config.data.dataset`` (loader, simulator, hooks)."""
    from ..datasets import get_dataset

    return get_dataset(config.data.dataset)


def no_test_hint(config: FitConfig) -> str:
    """What to change when the run's data have no test trials (the dataset's ``test_split_hint``)."""
    return dataset_spec(config).test_split_hint


def simulate_params(config: FitConfig) -> dict[str, Any]:
    """Keyword arguments of ``simulate(config.data.dataset, ...)`` from ``config.simulate``.

    ``snr``, the first-class ``simulate.*`` keys the dataset takes (its ``simulate_keys``), ``image_size``
    for image datasets, then ``simulate.params``.
    """
    sim, info = config.simulate, dataset_spec(config)
    params: dict[str, Any] = {"snr": sim.snr}
    params.update({key: getattr(sim, key) for key in info.simulate_keys})
    if info.stimulus == "image":
        params["image_size"] = sim.image_size
    params.update(sim.params)
    return params


def simulated_root(config: FitConfig) -> Path:
    """Cache folder of the simulated dataset described by ``config.simulate``.

    Parameters
    ----------
    config : FitConfig
        The run configuration (its dataset name and ``simulate`` settings).

    Returns
    -------
    root : pathlib.Path
        ``<data dir>/simulated/<dataset>-<hash of the simulation parameters>``.
    """
    ds = config.data.dataset
    key = {"dataset": ds, "n_subjects": config.simulate.n_subjects, "seed": config.simulate.seed,
           **simulate_params(config)}
    if key.get("response") == "linear":  # linear simulations keep the cache folders they had before the mode
        del key["response"]
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return get_data_dir() / "simulated" / f"{ds}-{digest}"


def ensure_simulated(config: FitConfig) -> Path:
    """Write (or reuse) the simulation of ``config`` and return its root."""
    from ..datasets import simulate

    root = simulated_root(config)
    logger.info("No data.root given: using the simulated %s dataset in %s", config.data.dataset, root)
    # The folder is neurodecode's own cache for these parameters: one written by an older simulator version
    # (or interrupted) is replaced; an identical simulation is reused as is.
    simulate(config.data.dataset, root, n_subjects=config.simulate.n_subjects, seed=config.simulate.seed,
             overwrite=True, **simulate_params(config))
    return root


def check_loader_options(config: FitConfig) -> None:
    """Reject ``data.options`` the dataset's loader does not take (before any work starts)."""
    if not config.data.options:
        return
    loader = dataset_spec(config).loader
    params = inspect.signature(loader).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return  # the loader takes any keyword: it checks its own options
    accepted = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name != "verbose"]
    unknown = sorted(set(config.data.options) - set(accepted))
    if unknown:
        raise ValueError(f"data.options {unknown} are not options of {loader.__name__}; it accepts "
                         f"{accepted}")


def load_subject(config: FitConfig, root: str | Path, subject: int) -> Any:
    """One subject's trials from ``root`` with the loader of ``config.data.dataset``."""
    spec = dataset_spec(config)
    return spec.loader(root, subject, **spec.load_kwargs(config.data))


def load_data(config: FitConfig) -> tuple[Path, Any]:
    """The root and the trials of every subject of the run (simulated when ``data.root`` is null)."""
    from ..datasets import BrainTrials

    check_loader_options(config)
    root = Path(config.data.root) if config.data.root is not None else ensure_simulated(config)
    parts = [load_subject(config, root, s) for s in config.data.subjects]
    return root, BrainTrials.concatenate(parts)


def make_preprocessor(config: FitConfig) -> Any:
    """The M/EEG preprocessor of ``config.preprocessing`` (None for fMRI or when nothing is configured)."""
    if dataset_spec(config).modality == "fmri" or config.preprocessing.is_identity():
        return None
    from ..preprocessing import MEEGPreprocessor

    pc = config.preprocessing
    return MEEGPreprocessor(picks=pc.picks, l_freq=pc.l_freq, h_freq=pc.h_freq, sfreq=pc.sfreq,
                            tmin=pc.tmin, tmax=pc.tmax,
                            baseline=None if pc.baseline is None else tuple(pc.baseline),
                            scaler=pc.scaler, clip=pc.clip)


def preprocess(config: FitConfig, trials: Any) -> Any:
    """Apply ``config.preprocessing`` (statistics fitted on each subject's training trials only)."""
    pre = make_preprocessor(config)
    if pre is None:
        return trials
    out = pre.fit_transform(trials)
    logger.info("Preprocessed: %r", pre)
    return out


def positions_2d(ch_pos: Any) -> np.ndarray | None:
    """Flatten 3-D sensor positions (head coordinates) to 2-D, as a topographic map does.

    Azimuthal equidistant projection around the vertical axis through the
    sensors' centre (MNE's topomap convention). NaN rows stay NaN.
    """
    if ch_pos is None:
        return None
    pos = np.asarray(ch_pos, dtype=float)
    ok = np.isfinite(pos).all(axis=1)
    if not ok.any():
        return None
    rel = pos - np.r_[pos[ok, :2].mean(axis=0), pos[ok, 2].min()]
    r = np.linalg.norm(rel, axis=1)
    theta = np.arccos(np.clip(rel[:, 2] / np.where(r > 0, r, 1.0), -1.0, 1.0))
    phi = np.arctan2(rel[:, 1], rel[:, 0])
    out = np.stack([theta * np.cos(phi), theta * np.sin(phi)], axis=1)
    out[~ok] = np.nan
    return out


def pooled_subjects(trials: Any, label: int = 0) -> Any:
    """The trials of several subjects relabelled as one subject ``label`` (subject-agnostic models).

    Used for leave-one-subject-out: a model trained on the pooled subjects is
    applied to a subject it never saw. The subjects must share channels (and
    time axis); the original subject stays in ``events["source_subject"]``.
    """
    per = trials.by_subject()
    infos = {s: t.info for s, t in per.items()}
    first_s, first = next(iter(infos.items()))
    for s, info in infos.items():
        if list(info.get("ch_names", [])) != list(first.get("ch_names", [])):
            raise ValueError(f"leave-one-subject-out needs the same channels for every subject; subject {s} "
                             f"has {len(info.get('ch_names', []))} channels and subject {first_s} "
                             f"{len(first.get('ch_names', []))} (or they differ in order). Pick common channels "
                             "with preprocessing.picks.")
    events = trials.events.copy()
    events["source_subject"] = events["subject"]
    events["subject"] = label
    info = dict(first)
    info.pop("subjects_info", None)
    return type(trials)(np.asarray(trials.get_data()), events, info, trials.stimuli)
