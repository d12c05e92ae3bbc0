"""The dataset registry: every dataset ``neurodecode`` loads or simulates, by name.

A dataset is **one loader module and one simulator entry registered under its name**: a
:class:`DatasetSpec` holds the loader (``loader(root, subject, **options) -> BrainTrials``), the
simulator (a :class:`Simulator`: ``resolve`` validates the parameters, ``write`` writes the files in the
dataset's own layout) and the few facts the rest of the package needs (modality, image or audio stimuli,
the first-class config keys it takes). :func:`register_dataset` makes the name valid everywhere: in
``simulate(name, ...)``, in a run config's ``data.dataset`` (``neurodecode.config``, a higher layer,
validates against this registry) and in ``neurodecode fit``. The registration is the only place a dataset
is named: the built-in datasets are registered in ``neurodecode/datasets/_builtins.py``, one
``register_dataset`` line each; a dataset of your own is registered the same way from your code (see
``docs/contributing.md``). Every registered dataset passes the same conformance suite
(``tests/conformance/test_datasets.py``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any

from ..utils import logger

__all__ = ["Conformance", "DatasetSpec", "Simulator", "get_dataset", "list_datasets", "register_dataset",
           "unregister_dataset"]

#: Modalities a dataset may have (which preprocessing, models and analyses apply).
MODALITIES = ("fmri", "eeg", "meg")
#: Stimulus kinds: image targets (pixels / open_clip) or sound targets (speech encoders).
STIMULI = ("image", "audio")


@dataclass(frozen=True)
class Simulator:
    """A dataset simulator, as :func:`neurodecode.datasets.simulate` runs it.

    Parameters
    ----------
    resolve : callable
        ``resolve(*, n_subjects, seed, **params) -> dict``: validates the parameters (a clear
        ``ValueError`` for a bad one) and returns them complete and JSON-serialisable. Its keyword
        names are the parameters ``simulate(name, ...)`` accepts; the dict is recorded in
        ``simulation.json`` and decides whether an existing simulation is reused.
    write : callable
        ``write(root, params) -> dict``: writes the dataset's files under ``root`` (a fresh folder) in the
        dataset's real layout and returns the planted ground truth (JSON-serialisable), recorded in
        ``simulation.json``. ``simulate`` handles the output folder, locking, caching and atomicity.
    """

    resolve: Callable[..., dict[str, Any]]
    write: Callable[[Path, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Conformance:
    """How the conformance suite (``tests/conformance/test_datasets.py``) exercises a dataset.

    Parameters
    ----------
    simulate_params : dict
        Parameters of a tiny simulation (``n_subjects`` >= 1 included; seconds to write and read).
    planted : callable
        ``planted(record, subject) -> dict``: what the simulation planted for ``subject``, from its
        ``simulation.json`` record (``{"name", "parameters", "ground_truth"}``). Any of the keys
        ``n_trials`` (int), ``n_stimuli`` (distinct stimulus ids), ``trial_shape`` (shape of one trial's
        data, ``None`` for any length on an axis), ``values`` (``{column: set}``: the column's values,
        exactly), ``test_values`` (the same, on the test-split rows) and ``within`` (``{column: set}``:
        the column's values are among these); the suite
        compares each given key with what the loader returns.
    files : callable
        ``files(root, subject) -> list of Path``: data files the loader must read for ``subject``; the
        suite removes and truncates each and expects an error naming it.
    load_kwargs : dict
        Keyword arguments of the loader for the tiny simulation.
    """

    simulate_params: dict[str, Any]
    planted: Callable[[dict[str, Any], int], dict[str, Any]]
    files: Callable[[Path, int], list[Path]]
    load_kwargs: dict[str, Any] = field(default_factory=dict)


def _default_loader_kwargs(spec: DatasetSpec, data: Any) -> dict[str, Any]:
    """The first-class ``data.*`` keys the dataset takes, by name, then ``data.options``."""
    return {**{key: getattr(data, key) for key in spec.data_keys}, **data.options}


@dataclass(frozen=True)
class DatasetSpec:
    """Everything neurodecode knows about one dataset.

    Parameters
    ----------
    name : str
        The registry name (``simulate(name)``, ``data.dataset: name``); a Python identifier.
    modality : str
        ``"fmri"``, ``"eeg"`` or ``"meg"``.
    loader : callable
        ``loader(root, subject, **options) -> BrainTrials``: reads one subject from the dataset's on-disk
        layout. Its keyword-only parameters are the options ``data.options`` may give.
    simulator : Simulator
        Writes a simulated copy in the same layout (the demo, the tests and the conformance suite use it).
    stimulus : str
        ``"image"`` or ``"audio"`` (speech targets).
    label : str
        Display name (``"THINGS-EEG2"``); defaults to ``name``.
    data_keys : tuple of str
        First-class ``data.*`` config keys passed to the loader by name (NSD: ``roi``, ``sessions``,
        ``zscore``, ``betas_format``, ``nonfinite``). Empty (the default): ``data.options`` only. Each must
        be one of the run config's dataset-specific ``data.*`` keys (a config naming the dataset says so
        otherwise).
    simulate_keys : tuple of str
        First-class ``simulate.*`` keys passed to the simulator by name (NSD: ``n_sessions``,
        ``trials_per_session``, ``shared_fraction``); ``simulate.params`` passes the others. Each must be one
        of the run config's dataset-specific ``simulate.*`` keys.
    loader_kwargs : callable | None
        Hook ``loader_kwargs(spec, data) -> dict``: the loader's keyword arguments for a run config's
        ``data`` section (a ``neurodecode.config.DataConfig``). ``None``: the ``data_keys`` by name, then
        ``data.options``.
    test_split_hint : str
        What to change when a run finds no test trials (shown in the error).
    description : str
        One line for listings.
    conformance : Conformance | None
        The tiny simulation and planted facts the conformance suite checks the dataset with.
    source : neurodecode.datasets.download.DownloadSource | None
        Where the dataset's files are on its public hosts and how a selection picks them
        (``neurodecode download NAME``); ``None``: not downloadable.
    """

    name: str
    modality: str
    loader: Callable[..., Any]
    simulator: Simulator
    stimulus: str = "image"
    label: str = ""
    data_keys: tuple[str, ...] = ()
    simulate_keys: tuple[str, ...] = ()
    loader_kwargs: Callable[[DatasetSpec, Any], dict[str, Any]] | None = None
    test_split_hint: str = "load more data so that some stimuli are in the test split"
    description: str = field(default="", compare=False)
    conformance: Conformance | None = field(default=None, compare=False)
    source: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"a dataset name must be a Python identifier (e.g. 'my_eeg'), got {self.name!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"dataset {self.name!r}: modality must be one of {MODALITIES}, got "
                             f"{self.modality!r}")
        if self.stimulus not in STIMULI:
            raise ValueError(f"dataset {self.name!r}: stimulus must be one of {STIMULI}, got "
                             f"{self.stimulus!r}")
        for attr in ("data_keys", "simulate_keys"):
            keys = getattr(self, attr)
            if isinstance(keys, str) or not all(isinstance(k, str) and k.isidentifier() for k in keys):
                raise ValueError(f"dataset {self.name!r}: {attr} must be a sequence of config key names, "
                                 f"got {keys!r}")
            object.__setattr__(self, attr, tuple(keys))
        object.__setattr__(self, "label", self.label or self.name)
        if not callable(self.loader):
            raise TypeError(f"dataset {self.name!r}: loader must be callable, got {self.loader!r}")
        if not (isinstance(self.simulator, Simulator) and callable(self.simulator.resolve)
                and callable(self.simulator.write)):
            raise TypeError(f"dataset {self.name!r}: simulator must be a Simulator(resolve=..., write=...), "
                            f"got {self.simulator!r}")

    def load_kwargs(self, data: Any) -> dict[str, Any]:
        """Keyword arguments of :attr:`loader` for a run config's ``data`` section.

        Parameters
        ----------
        data : neurodecode.config.DataConfig
            The ``data`` section of a run config.

        Returns
        -------
        kwargs : dict
            From the ``loader_kwargs`` hook, or by default the ``data.*`` keys of ``data_keys``
            then ``data.options``.
        """
        hook = self.loader_kwargs or _default_loader_kwargs
        return hook(self, data)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Register a dataset under ``spec.name`` (the one line a new dataset adds).

    After this call, ``simulate(spec.name, ...)`` writes it, a run config may say ``data.dataset:
    <name>`` and ``neurodecode fit`` loads it. Registering from your own code is enough (no entry point
    or edit of neurodecode is needed); import that code before loading a config that names the dataset.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset.
    replace : bool
        Replace a different dataset already registered under this name (registering an equal spec
        again is always allowed).

    Returns
    -------
    spec : DatasetSpec
        ``spec``, unchanged.

    Raises
    ------
    ValueError
        Another dataset is registered under the name and ``replace`` is False.
    TypeError
        ``spec`` is not a :class:`DatasetSpec`.
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset expects a DatasetSpec, got {type(spec).__name__}")
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec and not replace:
        raise ValueError(f"a dataset named {spec.name!r} is already registered ({old.label}, loader "
                         f"{getattr(old.loader, '__qualname__', old.loader)!r}); pass replace=True to "
                         "replace it or choose another name")
    _REGISTRY[spec.name] = spec
    logger.debug("Registered dataset %r (%s, %s stimuli)", spec.name, spec.modality, spec.stimulus)
    return spec


def unregister_dataset(name: str) -> DatasetSpec:
    """Remove a registered dataset; returns its spec.

    Parameters
    ----------
    name : str
        A registered dataset name.

    Returns
    -------
    spec : DatasetSpec
        The removed dataset.

    Raises
    ------
    ValueError
        ``name`` is not registered.
    """
    spec = get_dataset(name)
    del _REGISTRY[name]
    return spec


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered under ``name``.

    Parameters
    ----------
    name : str
        A registered dataset name (see :func:`list_datasets`).

    Returns
    -------
    spec : DatasetSpec
        The dataset.

    Raises
    ------
    ValueError
        Unknown name: the message lists the registered datasets and suggests the closest one.
    """
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Registered datasets: "
                         f"{', '.join(repr(n) for n in _REGISTRY)}. A dataset of your own is registered with "
                         "neurodecode.datasets.register_dataset (import the module that registers it before "
                         "loading a config that names it).")
    return spec


def list_datasets(modality: str | None = None) -> list[str]:
    """Names of the registered datasets (of one ``modality`` if given), in registration order.

    Parameters
    ----------
    modality : str | None
        ``"fmri"``, ``"eeg"`` or ``"meg"`` to list only those datasets; None lists all.

    Returns
    -------
    names : list of str
        The dataset names.
    """
    return [n for n, s in _REGISTRY.items() if modality is None or s.modality == modality]


class SimulatorView(MutableMapping[str, Simulator]):
    """``{name: Simulator}`` view of the registry (setting an item re-registers that dataset's simulator)."""

    def __getitem__(self, name: str) -> Simulator:
        if name not in _REGISTRY:
            raise KeyError(name)
        return _REGISTRY[name].simulator

    def __setitem__(self, name: str, simulator: Simulator) -> None:
        register_dataset(dataclass_replace(get_dataset(name), simulator=simulator), replace=True)

    def __delitem__(self, name: str) -> None:
        raise TypeError("remove a dataset with unregister_dataset(name)")

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)
