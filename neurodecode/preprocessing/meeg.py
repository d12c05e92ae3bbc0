"""M/EEG preprocessing of epoched trials, with statistics fitted on training trials only.

Every function takes a :class:`~neurodecode.datasets.BrainTrials` whose ``data``
has shape ``(n_trials, n_channels, n_times)`` and returns a **new** one: the
input arrays and ``info`` are never modified. ``info`` stays consistent after
every step (``ch_names``/``ch_types``/``ch_pos`` after picking; ``sfreq``,
``times`` and ``tmin`` after resampling and cropping), and each step appends a
record to ``info["preprocessing"]``. Trials of several subjects
(``info["subjects_info"]``, see :meth:`BrainTrials.concatenate`) are processed
subject by subject, keeping the row order.

:class:`MEEGPreprocessor` chains the steps with brainmagick's defaults
(Défossez et al. 2023, ``bm/conf/config.yaml``: resample to 120 Hz, no
high-pass, baseline correction, per-recording robust scaling, clip at 20) and
fits the scaler on ``split == "train"`` rows only.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import numpy as np

from ..utils import check_option, fill_doc, logger, verbose, warn
from ..utils.imports import import_optional
from .channels import resolve_channels, sensor_regions

__all__ = [
    "MEEGPreprocessor", "RobustScaler", "apply_baseline", "crop", "filter_trials", "pick_channels",
    "resample_trials",
]

_CHUNK = 256                       # trials processed at once (bounds float64 copies)
_MEG_TYPES = ("mag", "grad")       # what the "meg" pick selects (with a generic "meg" type)
_MAX_DENOMINATOR = 1000            # resampling ratio precision


class _Trials(Protocol):
    """What the functions here need from a :class:`~neurodecode.datasets.BrainTrials`."""

    data: Any
    events: Any
    info: dict
    stimuli: Any


TrialsT = TypeVar("TrialsT", bound=_Trials)


# ----------------------------------------------------------------------------------------
# helpers: groups of rows sharing one info, chunked reading, re-assembly
# ----------------------------------------------------------------------------------------
class _Group(NamedTuple):
    subject: Any
    rows: np.ndarray
    info: dict


def _copy_info(info: Any) -> Any:
    """Copy dicts, lists and arrays recursively (other values are shared)."""
    if isinstance(info, dict):
        return {k: _copy_info(v) for k, v in info.items()}
    if isinstance(info, list):
        return [_copy_info(v) for v in info]
    if isinstance(info, np.ndarray):
        return info.copy()
    return info


def _with_record(info: dict, record: dict) -> dict:
    out = _copy_info(info)
    out["preprocessing"] = [*info.get("preprocessing", []), _copy_info(record)]
    return out


def _check_trials(trials: Any, what: str) -> None:
    if not all(hasattr(trials, a) for a in ("data", "events", "info")):
        raise TypeError(f"{what} expects a BrainTrials, got {type(trials).__name__}. Wrap arrays with "
                        "neurodecode.datasets.BrainTrials(data, events, info).")
    if trials.info.get("modality") == "fmri":
        raise ValueError(f"{what} works on M/EEG trials (info['modality'] 'eeg' or 'meg'), got 'fmri'; "
                         "use neurodecode.preprocessing.zscore_sessions for fMRI.")
    if len(trials.events) == 0:
        raise ValueError(f"{what} got no trials (0 rows); check the selection that produced them.")


def _groups(trials: _Trials, *, by_subject: bool = False) -> list[_Group]:
    """Rows that share one ``info``: one group per subject with ``subjects_info``, else one."""
    per = trials.info.get("subjects_info")
    if per is None and not by_subject:
        return [_Group(None, np.arange(len(trials.events)), trials.info)]
    subj = trials.events["subject"].to_numpy()
    out = []
    for s in trials.events["subject"].drop_duplicates():
        rows = np.flatnonzero(subj == s)
        if per is not None:
            if s not in per:
                raise ValueError(f"Subject {s!r} has no entry in info['subjects_info'] (subjects there: "
                                 f"{sorted(map(str, per))}); rebuild the trials with "
                                 "BrainTrials.concatenate.")
            info = per[s]
        else:
            info = trials.info
        out.append(_Group(s, rows, info))
    return out


def _where(group: _Group) -> str:
    return "" if group.subject is None else f" (subject {group.subject!r})"


def _read(trials: _Trials, rows: np.ndarray) -> np.ndarray:
    from ..utils import RaggedData, take_rows

    data = trials.data
    if isinstance(data, np.ndarray) and len(rows) and rows[-1] - rows[0] + 1 == len(rows) \
            and np.all(np.diff(rows) == 1):
        return data[int(rows[0]):int(rows[-1]) + 1]          # a view; callers never write into it
    block = take_rows(data, rows)
    if isinstance(block, RaggedData):
        raise ValueError("These trials mix subjects with different channel sets but info has no "
                         "'subjects_info'; build them with BrainTrials.concatenate.")
    return np.asarray(block)


def _map_chunks(trials: _Trials, group: _Group, fn: Callable[[np.ndarray], np.ndarray],
                chunk: int = _CHUNK) -> np.ndarray:
    """Apply ``fn`` to chunks of ``group``'s trials; ``fn`` must return a new array."""
    rows = group.rows
    out: np.ndarray | None = None
    for start in range(0, len(rows), chunk):
        block = _read(trials, rows[start:start + chunk])
        if block.ndim != 3:
            raise ValueError(f"M/EEG data must have shape (n_trials, n_channels, n_times); got trials of "
                             f"shape {block.shape[1:]}{_where(group)}")
        res = fn(block)
        if out is None:
            out = np.empty((len(rows), *res.shape[1:]), dtype=res.dtype)
        out[start:start + len(res)] = res
    if out is None:  # pragma: no cover - groups are never empty
        raise ValueError("no trials to process")
    return out


def _assemble(trials: TrialsT, groups: list[_Group], arrays: list[np.ndarray], infos: list[dict],
              record: dict) -> TrialsT:
    """A new BrainTrials from per-group results, in the original row order (empties ``arrays``)."""
    from ..utils import RaggedData

    n = len(trials.events)
    if "subjects_info" in trials.info:
        top = {k: v for k, v in trials.info.items() if k != "subjects_info"}
        info = _with_record(top, record)
        info["subjects_info"] = {g.subject: _with_record(i, record)
                                 for g, i in zip(groups, infos, strict=True)}
        names = [i.get("ch_names") for i in infos]
        same = len({a.shape[1:] for a in arrays}) == 1 and all(
            (a is None and b is None) or (a is not None and b is not None and list(a) == list(b))
            for a, b in itertools.pairwise(names))
    else:
        info = _with_record(infos[0], record)
        same = True
    if len(groups) == 1:
        data: Any = arrays[0]
    elif same:
        data = np.empty((n, *arrays[0].shape[1:]), dtype=np.result_type(*arrays))
        for g in groups:
            data[g.rows] = arrays.pop(0)      # frees each block once copied (lower peak memory)
    else:
        index = np.empty((n, 2), dtype=np.int64)
        for b, g in enumerate(groups):
            index[g.rows, 0] = b
            index[g.rows, 1] = np.arange(len(g.rows))
        data = RaggedData(arrays, index)
    return type(trials)(data, trials.events.copy(), info, trials.stimuli)


def _sfreq(info: dict, group: _Group) -> float:
    sfreq = info.get("sfreq")
    if sfreq is None or not np.isfinite(sfreq) or sfreq <= 0:
        raise ValueError(f"info['sfreq'] must be a positive number, got {sfreq!r}{_where(group)}")
    return float(sfreq)


def _times(info: dict, n_times: int, group: _Group) -> np.ndarray:
    times = info.get("times")
    if times is None:
        if info.get("tmin") is None:
            raise ValueError(f"info needs 'times' (or 'tmin' and 'sfreq') for this step{_where(group)}")
        return float(info["tmin"]) + np.arange(n_times) / _sfreq(info, group)
    times = np.asarray(times, dtype=np.float64)
    if times.shape != (n_times,):
        raise ValueError(f"info['times'] has {times.size} samples but the data have {n_times} time "
                         f"samples{_where(group)}")
    return times


def _n_times(trials: _Trials, group: _Group) -> int:
    first = _read(trials, group.rows[:1])
    if first.ndim != 3:
        raise ValueError(f"M/EEG data must have shape (n_trials, n_channels, n_times); got trials of "
                         f"shape {first.shape[1:]}{_where(group)}")
    return int(first.shape[2])


def _window(times: np.ndarray, sfreq: float, tmin: float | None, tmax: float | None,
            what: str) -> tuple[int, int]:
    """First and last sample (inclusive) of ``[tmin, tmax]``, as MNE's ``_time_mask``.

    Each bound is rounded to the sampling grid (``round(t * sfreq) / sfreq``) and
    widened by half a sample, so samples on the bounds are kept despite float error.
    """
    lo = -np.inf if tmin is None else round(tmin * sfreq) / sfreq - 0.5 / sfreq
    hi = np.inf if tmax is None else round(tmax * sfreq) / sfreq + 0.5 / sfreq
    inside = np.flatnonzero((times >= lo) & (times <= hi))
    if not len(inside):
        raise ValueError(f"The {what} window ({tmin}, {tmax}) s holds no sample: the trials span "
                         f"{times[0]:.4g} to {times[-1]:.4g} s.")
    return int(inside[0]), int(inside[-1])


def _float_dtype(dtype: np.dtype) -> np.dtype:
    return dtype if dtype.kind == "f" else np.dtype(np.float32)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _check_freq(name: str, value: Any) -> None:
    if value is not None and (not _is_number(value) or value <= 0):
        raise ValueError(f"{name} must be None or a positive number of Hz, got {value!r}")


# ----------------------------------------------------------------------------------------
# channel picking
# ----------------------------------------------------------------------------------------
def _channel_types(info: dict) -> list[str]:
    names = list(info["ch_names"])
    types = info.get("ch_types")
    if types is None:
        return [str(info.get("modality") or "unknown")] * len(names)
    if len(types) != len(names):
        raise ValueError(f"info['ch_types'] has {len(types)} entries for {len(names)} channels")
    return [str(t) for t in types]


def _resolve_picks(info: dict, picks: list[str], group: _Group) -> list[int]:
    if not info.get("ch_names"):
        raise ValueError(f"Picking channels needs info['ch_names']{_where(group)}")
    names = [str(c) for c in info["ch_names"]]
    types = _channel_types(info)
    present = set(types)
    chosen: set[str] = set()
    for p in picks:
        if not isinstance(p, str):
            raise TypeError(f"picks must be strings (channel, region or type names), got {p!r}")
        if p in names:
            got = [p]
        elif p in present:
            got = [c for c, t in zip(names, types, strict=True) if t == p]
        elif p == "meg" and present & {*_MEG_TYPES, "meg"}:
            got = [c for c, t in zip(names, types, strict=True) if t in (*_MEG_TYPES, "meg")]
        else:
            try:
                got = resolve_channels(info, p)
            except ValueError:
                kinds = sorted(present | ({"meg"} if present & set(_MEG_TYPES) else set()))
                regions = sorted({*sensor_regions(info), *sensor_regions(info, hemisphere=True)})
                more = "..." if len(names) > 20 else ""
                raise ValueError(f"Unknown pick {p!r}{_where(group)}: it is neither a channel, a sensor "
                                 f"region nor a channel type of these trials. Types: {kinds}; regions: "
                                 f"{regions}; channels: {names[:20]}{more}") from None
        chosen.update(got)
    return [i for i, c in enumerate(names) if c in chosen]


def _subset_channels(info: dict, idx: list[int]) -> dict:
    out = _copy_info(info)
    out["ch_names"] = [info["ch_names"][i] for i in idx]
    if info.get("ch_types") is not None:
        out["ch_types"] = [info["ch_types"][i] for i in idx]
    if info.get("ch_pos") is not None:
        out["ch_pos"] = np.asarray(info["ch_pos"], dtype=np.float64)[idx].copy()
    return out


@verbose
@fill_doc
def pick_channels(trials: TrialsT, picks: str | Sequence[str], *,
                  verbose: bool | str | int | None = None) -> TrialsT:
    """Keep the channels named by ``picks``, in their original order.

    Parameters
    ----------
    trials : BrainTrials
        M/EEG trials, ``data`` of shape (n_trials, n_channels, n_times), with
        ``info["ch_names"]``.
    picks : str | list of str
        Any mix of channel names (``"Cz"``), sensor regions (``"occipital"``,
        ``"left_temporal"``; see :func:`~neurodecode.preprocessing.sensor_regions`)
        and channel types from ``info["ch_types"]`` (``"eeg"``, ``"mag"``,
        ``"grad"``, ``"eog"``, ...; ``"meg"`` selects magnetometers and
        gradiometers). Without ``ch_types`` every channel has the type
        ``info["modality"]``.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        New trials with the selected channels; ``ch_names``, ``ch_types`` and
        ``ch_pos`` are subset to match.

    Raises
    ------
    ValueError
        If a pick is neither a channel, a region nor a type of these trials
        (the message lists all three), or ``picks`` is empty.

    Examples
    --------
    >>> occ = pick_channels(trials, "occipital")               # doctest: +SKIP
    >>> eeg = pick_channels(trials, ["eeg"])                    # doctest: +SKIP
    >>> few = pick_channels(trials, ["Cz", "left_temporal"])    # doctest: +SKIP
    """
    _check_trials(trials, "pick_channels")
    picks_list = [picks] if isinstance(picks, str) else list(picks)
    if not picks_list:
        raise ValueError("picks is empty; give channel names, sensor regions or channel types")
    groups = _groups(trials)
    arrays, infos = [], []
    for g in groups:
        idx = _resolve_picks(g.info, picks_list, g)
        arrays.append(_map_chunks(trials, g, lambda x, idx=idx: x[:, idx, :]))
        infos.append(_subset_channels(g.info, idx))
        logger.info("pick_channels%s: %d of %d channels", _where(g), len(idx), len(g.info["ch_names"]))
    return _assemble(trials, groups, arrays, infos, {"step": "pick_channels", "picks": picks_list})


# ----------------------------------------------------------------------------------------
# time axis: crop, baseline
# ----------------------------------------------------------------------------------------
def _check_time(name: str, value: Any) -> None:
    if value is not None and not _is_number(value):
        raise ValueError(f"{name} must be None or a finite number of seconds, got {value!r}")


@verbose
@fill_doc
def crop(trials: TrialsT, tmin: float | None = None, tmax: float | None = None, *,
         verbose: bool | str | int | None = None) -> TrialsT:
    """Keep the samples between ``tmin`` and ``tmax`` (both included).

    As in MNE (``Epochs.crop``), each bound is rounded to the sampling grid
    (``round(t * sfreq) / sfreq``) and samples on the rounded bounds are kept;
    ``None`` keeps the start (``tmin``) or end (``tmax``) of the epoch. Bounds
    beyond the epoch are clipped to it with a warning.

    Parameters
    ----------
    trials : BrainTrials
        M/EEG trials with ``info["times"]`` (or ``tmin`` and ``sfreq``).
    tmin, tmax : float | None
        Window in seconds relative to the event.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        New trials; ``info["times"]`` and ``info["tmin"]`` match the window.

    Raises
    ------
    ValueError
        If ``tmin > tmax`` or the window holds no sample.

    Examples
    --------
    >>> post = crop(trials, tmin=0.0, tmax=0.5)     # doctest: +SKIP
    """
    _check_trials(trials, "crop")
    _check_time("tmin", tmin)
    _check_time("tmax", tmax)
    if tmin is not None and tmax is not None and tmin > tmax:
        raise ValueError(f"crop: tmin ({tmin}) must be <= tmax ({tmax})")
    groups = _groups(trials)
    arrays, infos = [], []
    for g in groups:
        sfreq = _sfreq(g.info, g)
        times = _times(g.info, _n_times(trials, g), g)
        half = 0.5 / sfreq
        if (tmin is not None and tmin < times[0] - half) or (tmax is not None and tmax > times[-1] + half):
            warn(f"crop window ({tmin}, {tmax}) s extends beyond the trials ({times[0]:.4g} to "
                 f"{times[-1]:.4g} s){_where(g)}; it is clipped to them.")
        lo, hi = _window(times, sfreq, tmin, tmax, "crop")
        arrays.append(_map_chunks(trials, g, lambda x, lo=lo, hi=hi: x[:, :, lo:hi + 1].copy()))
        info = _copy_info(g.info)
        info["times"] = times[lo:hi + 1].copy()
        info["tmin"] = float(times[lo])
        infos.append(info)
        logger.info("crop%s: %d of %d samples kept (%.4g to %.4g s)", _where(g), hi - lo + 1, len(times),
                    times[lo], times[hi])
    return _assemble(trials, groups, arrays, infos, {"step": "crop", "tmin": tmin, "tmax": tmax})


def _check_baseline(baseline: Any) -> tuple[float | None, float | None]:
    if not isinstance(baseline, (tuple, list)) or len(baseline) != 2:
        raise ValueError(f"baseline must be a (start, stop) pair in seconds, with None for the start or end "
                         f"of the epoch, e.g. (None, 0.0); got {baseline!r}")
    a, b = baseline
    _check_time("baseline start", a)
    _check_time("baseline stop", b)
    if a is not None and b is not None and a > b:
        raise ValueError(f"baseline start ({a}) must be <= its stop ({b})")
    return (None if a is None else float(a)), (None if b is None else float(b))


@verbose
@fill_doc
def apply_baseline(trials: TrialsT, baseline: tuple[float | None, float | None] = (None, 0.0), *,
                   verbose: bool | str | int | None = None) -> TrialsT:
    """Subtract each trial's per-channel mean over a baseline window.

    Parameters
    ----------
    trials : BrainTrials
        M/EEG trials with ``info["times"]`` (or ``tmin`` and ``sfreq``).
    baseline : (float | None, float | None)
        Window in seconds; ``None`` is the start (first) or end (second) of the
        epoch. Bounds are rounded to the sampling grid and included, as in
        :func:`crop`. The default
        ``(None, 0.0)`` uses everything before the event.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        New trials whose mean over the window is zero for every trial and channel.

    Raises
    ------
    ValueError
        If ``baseline`` is not a valid pair or the window holds no sample.

    Examples
    --------
    >>> corrected = apply_baseline(trials, (-0.2, 0.0))    # doctest: +SKIP
    """
    _check_trials(trials, "apply_baseline")
    a, b = _check_baseline(baseline)
    groups = _groups(trials)
    arrays = []
    for g in groups:
        times = _times(g.info, _n_times(trials, g), g)
        lo, hi = _window(times, _sfreq(g.info, g), a, b, "baseline")

        def _one(x: np.ndarray, lo: int = lo, hi: int = hi) -> np.ndarray:
            mean = x[:, :, lo:hi + 1].mean(axis=-1, keepdims=True, dtype=np.float64)
            return (x - mean).astype(_float_dtype(x.dtype), copy=False)

        arrays.append(_map_chunks(trials, g, _one))
        logger.info("apply_baseline%s: mean of %.4g to %.4g s (%d samples) removed", _where(g), times[lo],
                    times[hi], hi - lo + 1)
    return _assemble(trials, groups, arrays, [g.info for g in groups],
                     {"step": "baseline", "baseline": [a, b]})


# ----------------------------------------------------------------------------------------
# frequency: filter, resample
# ----------------------------------------------------------------------------------------
def _check_band(l_freq: Any, h_freq: Any) -> None:
    _check_freq("l_freq", l_freq)
    _check_freq("h_freq", h_freq)
    if l_freq is not None and h_freq is not None and l_freq >= h_freq:
        raise ValueError(f"l_freq ({l_freq} Hz) must be below h_freq ({h_freq} Hz); for a band-stop use "
                         "MNE directly")


@verbose
@fill_doc
def filter_trials(trials: TrialsT, l_freq: float | None = None, h_freq: float | None = None, *,
                  verbose: bool | str | int | None = None) -> TrialsT:
    """Zero-phase FIR filter along time: band-pass, high-pass or low-pass.

    ``l_freq`` alone is a high-pass, ``h_freq`` alone a low-pass, both a
    band-pass. Uses :func:`mne.filter.filter_data` (``method="fir"``,
    ``phase="zero"``, ``fir_design="firwin"``, automatic length and transition
    bands), computed in float64 on chunks of trials and returned as float32.
    Each trial is filtered on its own, so short epochs with a low ``l_freq``
    get a filter longer than the signal (MNE pads it); filter continuous data
    before epoching when you need a slow high-pass.

    Parameters
    ----------
    trials : BrainTrials
        M/EEG trials with ``info["sfreq"]``.
    l_freq : float | None
        Lower pass-band edge in Hz (high-pass), or None.
    h_freq : float | None
        Upper pass-band edge in Hz (low-pass), below Nyquist, or None.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        New trials, float32.

    Raises
    ------
    ValueError
        If both frequencies are None, one is not positive, ``l_freq >= h_freq``
        or ``h_freq`` is at or above the Nyquist frequency.
    ImportError
        If MNE is not installed (``pip install 'neurodecode[meeg]'``).

    Examples
    --------
    >>> low = filter_trials(trials, h_freq=40.0)             # doctest: +SKIP
    >>> band = filter_trials(trials, l_freq=0.1, h_freq=40.0)  # doctest: +SKIP
    """
    _check_trials(trials, "filter_trials")
    _check_band(l_freq, h_freq)
    if l_freq is None and h_freq is None:
        raise ValueError("filter_trials needs l_freq and/or h_freq (in Hz); both are None")
    mne = import_optional("mne", extra="meeg", what="Filtering")
    groups = _groups(trials)
    arrays = []
    for g in groups:
        sfreq = _sfreq(g.info, g)
        nyq = sfreq / 2.0
        for name, f in (("l_freq", l_freq), ("h_freq", h_freq)):
            if f is not None and f >= nyq:
                raise ValueError(f"{name}={f} Hz must be below the Nyquist frequency ({nyq:g} Hz at "
                                 f"sfreq={sfreq:g} Hz){_where(g)}")
        messages: set[str] = set()

        def _one(x: np.ndarray, sfreq: float = sfreq, messages: set[str] = messages) -> np.ndarray:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                y = mne.filter.filter_data(np.asarray(x, dtype=np.float64), sfreq, l_freq, h_freq,
                                           method="fir", phase="zero", fir_design="firwin", copy=True,
                                           verbose="error")
            messages.update(str(w.message) for w in caught)
            return y.astype(np.float32)

        arrays.append(_map_chunks(trials, g, _one))
        for msg in sorted(messages):
            warn(f"filter_trials{_where(g)}: {msg}")
        logger.info("filter_trials%s: %s to %s Hz at sfreq=%g Hz", _where(g), l_freq, h_freq, sfreq)
    return _assemble(trials, groups, arrays, [g.info for g in groups],
                     {"step": "filter", "l_freq": l_freq, "h_freq": h_freq, "method": "fir",
                      "phase": "zero"})


@verbose
@fill_doc
def resample_trials(trials: TrialsT, sfreq: float, *, verbose: bool | str | int | None = None) -> TrialsT:
    """Resample along time with a polyphase anti-aliasing filter.

    Uses :func:`scipy.signal.resample_poly` with the ratio ``sfreq / old
    sfreq`` as a fraction (denominator at most 1000; when the ratio must be
    rounded, ``info["sfreq"]`` holds the rate actually obtained, with a
    warning). ``padtype="line"`` removes the straight line between the first
    and last samples before filtering, so DC offsets and slow drifts do not
    ring at the epoch edges. Computed in float64, returned as float32. The
    first sample keeps its time: ``times = tmin + arange(n_new) / sfreq``.

    Parameters
    ----------
    trials : BrainTrials
        M/EEG trials with ``info["sfreq"]``.
    sfreq : float
        New sampling frequency in Hz.
    %(verbose)s

    Returns
    -------
    trials : BrainTrials
        New trials with ``ceil(n_times * up / down)`` samples; ``info["sfreq"]``,
        ``times`` and ``tmin`` updated.

    Raises
    ------
    ValueError
        If ``sfreq`` is not a positive number.

    Examples
    --------
    >>> r = resample_trials(trials, 120.0)     # doctest: +SKIP
    """
    from scipy.signal import resample_poly

    _check_trials(trials, "resample_trials")
    if not _is_number(sfreq) or sfreq <= 0:
        raise ValueError(f"sfreq must be a positive number of Hz, got {sfreq!r}")
    groups = _groups(trials)
    arrays, infos = [], []
    for g in groups:
        old = _sfreq(g.info, g)
        ratio = Fraction(float(sfreq) / old).limit_denominator(_MAX_DENOMINATOR)
        if ratio == 0:
            raise ValueError(f"sfreq={sfreq} Hz is too low to resample from {old:g} Hz{_where(g)}")
        up, down = ratio.numerator, ratio.denominator
        new = old * up / down
        if not math.isclose(new, float(sfreq), rel_tol=1e-9):
            warn(f"resample_trials{_where(g)}: {old:g} → {sfreq:g} Hz is not a ratio of integers ≤ "
                 f"{_MAX_DENOMINATOR}; resampled by {up}/{down} to {new:.6g} Hz instead.")
        n_times = _n_times(trials, g)
        has_time = g.info.get("times") is not None or g.info.get("tmin") is not None
        tmin = float(_times(g.info, n_times, g)[0]) if has_time else 0.0
        if up == down:
            arrays.append(_map_chunks(trials, g, lambda x: x.astype(np.float32)))
        else:
            arrays.append(_map_chunks(trials, g, lambda x, up=up, down=down: resample_poly(
                np.asarray(x, dtype=np.float64), up, down, axis=-1, padtype="line").astype(np.float32)))
        n_new = arrays[-1].shape[-1]
        info = _copy_info(g.info)
        info["sfreq"] = float(new)
        info["times"] = tmin + np.arange(n_new) / new
        info["tmin"] = tmin
        infos.append(info)
        logger.info("resample_trials%s: %g → %g Hz (×%d/%d), %d → %d samples", _where(g), old, new, up, down,
                    n_times, n_new)
    return _assemble(trials, groups, arrays, infos, {"step": "resample", "sfreq": float(sfreq)})


# ----------------------------------------------------------------------------------------
# scaling
# ----------------------------------------------------------------------------------------
class _ParamsMixin:
    """``get_params`` / ``set_params`` from the ``__init__`` signature, as in scikit-learn."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        import inspect

        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this object, as given to ``__init__``.

        Parameters
        ----------
        deep : bool
            Unused (no nested estimators); kept for scikit-learn compatibility.

        Returns
        -------
        params : dict
            Parameter name → value.
        """
        return {k: getattr(self, k) for k in self._get_param_names()}

    def set_params(self, **params: Any) -> Any:
        """Set parameters (validated at the next ``fit``/``transform``).

        Parameters
        ----------
        **params : dict
            Parameter name → new value.

        Returns
        -------
        self : object
            This object.

        Raises
        ------
        ValueError
            For a name that is not a parameter (the message lists them).
        """
        valid = self._get_param_names()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"Invalid parameter {k!r} for {type(self).__name__}; valid parameters "
                                 f"are {valid}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _check_clip(clip: Any) -> None:
    if clip is not None and (not _is_number(clip) or clip <= 0):
        raise ValueError(f"clip must be None (no clipping) or a positive number, got {clip!r}")


class RobustScaler(_ParamsMixin):
    """Per-subject, per-channel robust scaling: ``(x - median) / IQR``, then clipping.

    ``fit`` computes, for each subject and channel, the median and the
    interquartile range over **all** rows it is given × all time samples.
    Pass training trials only (:class:`MEEGPreprocessor` does this for you):
    statistics that see validation or test trials leak them into the model.
    This is brainmagick's ``RobustScaler`` (``bm/norm.py``; one scaler per
    recording, quartiles 25/75, zero IQR → 1), fitted on every training trial
    rather than a sample of 200 segments.

    Parameters
    ----------
    clip : float | None
        After scaling, values are clipped to ``[-clip, clip]``; None keeps them.
        brainmagick clips at 20 (``norm.max_scale``).
    quantile_range : (float, float)
        Lower and upper percentiles (0–100) whose difference is the scale.

    Attributes
    ----------
    center_ : dict
        Subject → median of each channel, array of float64, shape (n_channels,).
    scale_ : dict
        Subject → interquartile range of each channel (1 where it is zero).
    ch_names_ : dict
        Subject → channel names seen in ``fit`` (None when info has none).
    n_samples_ : dict
        Subject → number of values per channel used (training rows × times).

    Examples
    --------
    >>> scaler = RobustScaler(clip=20.0).fit(trials.select(split="train"))   # doctest: +SKIP
    >>> scaled = scaler.transform(trials)                                      # doctest: +SKIP
    """

    def __init__(self, clip: float | None = 20.0,
                 quantile_range: tuple[float, float] = (25.0, 75.0)) -> None:
        self.clip = clip
        self.quantile_range = quantile_range

    def _validate(self) -> tuple[float, float]:
        _check_clip(self.clip)
        qr = self.quantile_range
        if not isinstance(qr, (tuple, list)) or len(qr) != 2 or not all(_is_number(q) for q in qr) \
                or not 0 <= qr[0] < qr[1] <= 100:
            raise ValueError(f"quantile_range must be two percentiles 0 <= low < high <= 100, got {qr!r}")
        return float(qr[0]), float(qr[1])

    @verbose
    @fill_doc
    def fit(self, trials: _Trials, *, verbose: bool | str | int | None = None) -> RobustScaler:
        """Learn each subject's per-channel median and IQR from every row of ``trials``.

        Parameters
        ----------
        trials : BrainTrials
            **Training** M/EEG trials (all rows are used).
        %(verbose)s

        Returns
        -------
        self : RobustScaler
            The fitted scaler.

        Raises
        ------
        ValueError
            For invalid parameters, or data with NaN/inf (the statistics
            would be NaN).

        Examples
        --------
        >>> scaler = RobustScaler().fit(trials.select(split="train"))   # doctest: +SKIP
        """
        lo_q, hi_q = self._validate()
        _check_trials(trials, "RobustScaler.fit")
        center, scale, ch_names, n_samples = {}, {}, {}, {}
        for g in _groups(trials, by_subject=True):
            x = _read(trials, g.rows)
            if x.ndim != 3:
                raise ValueError(f"M/EEG data must have shape (n_trials, n_channels, n_times); got trials "
                                 f"of shape {x.shape[1:]}{_where(g)}")
            stats = np.empty((x.shape[1], 3), dtype=np.float64)
            for c in range(x.shape[1]):
                stats[c] = np.percentile(x[:, c, :], [lo_q, 50.0, hi_q])
            if not np.isfinite(stats).all():
                names = g.info.get("ch_names")
                names = list(range(x.shape[1])) if names is None else list(names)
                bad = [str(names[i]) for i in np.flatnonzero(~np.isfinite(stats).all(axis=1))]
                raise ValueError(f"RobustScaler.fit: channels {bad[:10]}{_where(g)} contain NaN or inf; "
                                 "remove or interpolate them first.")
            iqr = stats[:, 2] - stats[:, 0]
            n_zero = int((iqr == 0).sum())
            if n_zero:
                logger.info("RobustScaler%s: %d channel(s) with zero IQR get scale 1", _where(g), n_zero)
            iqr[iqr == 0] = 1.0
            center[g.subject], scale[g.subject] = stats[:, 1].copy(), iqr
            names = g.info.get("ch_names")
            ch_names[g.subject] = None if names is None else [str(c) for c in names]
            n_samples[g.subject] = int(x.shape[0] * x.shape[2])
            logger.info("RobustScaler%s: statistics from %d trials × %d samples", _where(g), x.shape[0],
                        x.shape[2])
        self.center_, self.scale_ = center, scale
        self.ch_names_, self.n_samples_ = ch_names, n_samples
        return self

    @verbose
    @fill_doc
    def transform(self, trials: TrialsT, *, verbose: bool | str | int | None = None) -> TrialsT:
        """Scale with the fitted statistics of each trial's subject, then clip.

        Parameters
        ----------
        trials : BrainTrials
            M/EEG trials of fitted subjects, with the channels seen in ``fit``.
        %(verbose)s

        Returns
        -------
        trials : BrainTrials
            New trials, float32.

        Raises
        ------
        RuntimeError
            If the scaler is not fitted.
        ValueError
            For a subject that was not fitted, or channels that differ from
            those seen in ``fit``.

        Examples
        --------
        >>> scaled = scaler.transform(trials)   # doctest: +SKIP
        """
        if not hasattr(self, "center_"):
            raise RuntimeError("This RobustScaler is not fitted yet; call fit on training trials first.")
        self._validate()
        _check_trials(trials, "RobustScaler.transform")
        groups = _groups(trials, by_subject=True)
        arrays = []
        clip = self.clip
        for g in groups:
            if g.subject not in self.center_:
                raise ValueError(f"RobustScaler was not fitted on subject {g.subject!r} (fitted: "
                                 f"{list(self.center_)}); fit it on training trials of every subject "
                                 "you transform.")
            center, scale = self.center_[g.subject], self.scale_[g.subject]
            names, fitted = g.info.get("ch_names"), self.ch_names_[g.subject]
            if names is not None and fitted is not None and [str(c) for c in names] != fitted:
                missing = [c for c in fitted if c not in names]
                extra = [str(c) for c in names if str(c) not in fitted]
                raise ValueError(f"Channels{_where(g)} differ from those the RobustScaler was fitted on "
                                 f"(missing {missing[:10]}, extra {extra[:10]}, or another order); apply "
                                 "the same channel picking before fit and transform.")

            def _one(x: np.ndarray, center: np.ndarray = center, scale: np.ndarray = scale,
                     where: str = _where(g)) -> np.ndarray:
                if x.shape[1] != len(center):
                    raise ValueError(f"Trials{where} have {x.shape[1]} channels but the RobustScaler "
                                     f"was fitted on {len(center)}")
                y = (np.asarray(x, dtype=np.float64) - center[:, None]) / scale[:, None]
                if clip is not None:
                    np.clip(y, -clip, clip, out=y)
                return y.astype(np.float32)

            arrays.append(_map_chunks(trials, g, _one))
        logger.info("RobustScaler: scaled %d trials of %d subject(s)%s", len(trials.events), len(groups),
                    "" if clip is None else f", clipped at ±{clip:g}")
        record = {"step": "robust_scale", "clip": clip, "quantile_range": list(self.quantile_range)}
        return _assemble(trials, groups, arrays, [g.info for g in groups], record)

    @verbose
    @fill_doc
    def fit_transform(self, trials: TrialsT, *, verbose: bool | str | int | None = None) -> TrialsT:
        """Fit on all rows of ``trials`` and transform them.

        Parameters
        ----------
        trials : BrainTrials
            **Training** M/EEG trials.
        %(verbose)s

        Returns
        -------
        trials : BrainTrials
            The scaled trials.

        Examples
        --------
        >>> scaled_train = RobustScaler().fit_transform(train)   # doctest: +SKIP
        """
        return self.fit(trials).transform(trials)


# ----------------------------------------------------------------------------------------
# the chain
# ----------------------------------------------------------------------------------------
_SCALERS = ("robust", None)


class MEEGPreprocessor(_ParamsMixin):
    """Pick → filter → resample → crop → baseline → robust scale, fitted on training trials.

    The defaults are brainmagick's (``bm/conf/config.yaml``): resample to
    120 Hz, no high-pass (``highpass: 0``), baseline correction, a robust
    scaler per subject and clipping at 20 (``norm.max_scale``). Only the scaler
    learns from data, and ``fit`` gives it the rows with ``split == "train"``
    only, so validation and test trials never shape the normalisation.

    Parameters
    ----------
    picks : str | list of str | None
        Channels to keep (names, sensor regions or types; see
        :func:`pick_channels`); None keeps all.
    l_freq, h_freq : float | None
        Filter edges in Hz (see :func:`filter_trials`); both None skip filtering.
    sfreq : float | None
        Resample to this rate (Hz); None keeps the original rate.
    tmin, tmax : float | None
        Crop window in seconds (see :func:`crop`); both None keep the epoch.
    baseline : (float | None, float | None) | None
        Baseline window (see :func:`apply_baseline`); None skips it. Applied
        after cropping, so it must lie inside the crop window.
    scaler : ``"robust"`` | None
        ``"robust"``: :class:`RobustScaler` fitted on training trials; None
        skips scaling.
    clip : float | None
        Clip scaled values to ``[-clip, clip]`` (with ``scaler="robust"``).

    Attributes
    ----------
    scaler_ : RobustScaler | None
        The fitted scaler (None with ``scaler=None``).
    subjects_ : list
        Subjects of the training trials.
    n_train_trials_ : int
        Number of training trials seen by ``fit``.

    Examples
    --------
    >>> prep = MEEGPreprocessor(picks="meg", sfreq=120.0)     # doctest: +SKIP
    >>> clean = prep.fit_transform(trials)                    # doctest: +SKIP
    >>> clean.info["preprocessing"]                           # doctest: +SKIP
    """

    def __init__(self, *, picks: str | Sequence[str] | None = None, l_freq: float | None = None,
                 h_freq: float | None = None, sfreq: float | None = 120.0, tmin: float | None = None,
                 tmax: float | None = None,
                 baseline: tuple[float | None, float | None] | None = (None, 0.0),
                 scaler: Literal["robust"] | None = "robust", clip: float | None = 20.0) -> None:
        self.picks = picks
        self.l_freq = l_freq
        self.h_freq = h_freq
        self.sfreq = sfreq
        self.tmin = tmin
        self.tmax = tmax
        self.baseline = baseline
        self.scaler = scaler
        self.clip = clip

    def _validate(self) -> None:
        p = self.picks
        if p is not None and not (isinstance(p, str) or (
                isinstance(p, Sequence) and len(p) > 0 and all(isinstance(x, str) for x in p))):
            raise ValueError(f"picks must be None, a string or a non-empty list of strings, got {p!r}")
        _check_band(self.l_freq, self.h_freq)
        if self.sfreq is not None and (not _is_number(self.sfreq) or self.sfreq <= 0):
            raise ValueError(f"sfreq must be None (keep the rate) or a positive number of Hz, got "
                             f"{self.sfreq!r}")
        _check_time("tmin", self.tmin)
        _check_time("tmax", self.tmax)
        if self.tmin is not None and self.tmax is not None and self.tmin > self.tmax:
            raise ValueError(f"tmin ({self.tmin}) must be <= tmax ({self.tmax})")
        if self.baseline is not None:
            _check_baseline(self.baseline)
        check_option("scaler", self.scaler, _SCALERS)
        _check_clip(self.clip)
        nyq = None if self.sfreq is None else self.sfreq / 2.0
        for name, f in (("l_freq", self.l_freq), ("h_freq", self.h_freq)):
            if f is not None and nyq is not None and f >= nyq:
                warn(f"{name}={f} Hz is at or above the Nyquist frequency of the resampled data "
                     f"({nyq:g} Hz at sfreq={self.sfreq:g}); the resampler's anti-aliasing filter will "
                     "remove those frequencies anyway.")

    def _steps(self, trials: TrialsT) -> TrialsT:
        """Every step but the scaler (none of them learns from data)."""
        out = trials
        if self.picks is not None:
            out = pick_channels(out, self.picks)
        if self.l_freq is not None or self.h_freq is not None:
            out = filter_trials(out, self.l_freq, self.h_freq)
        if self.sfreq is not None:
            out = resample_trials(out, float(self.sfreq))
        if self.tmin is not None or self.tmax is not None:
            out = crop(out, self.tmin, self.tmax)
        if self.baseline is not None:
            out = apply_baseline(out, tuple(self.baseline))  # type: ignore[arg-type]
        return out

    def _new_scaler(self) -> RobustScaler | None:
        return RobustScaler(clip=self.clip) if self.scaler == "robust" else None

    @staticmethod
    def _train_mask(trials: _Trials) -> np.ndarray:
        mask = (trials.events["split"] == "train").to_numpy()
        if not mask.any():
            counts = trials.events["split"].value_counts().to_dict()
            raise ValueError(f"MEEGPreprocessor.fit needs trials with split == 'train' (its statistics "
                             f"come from training trials only); got splits {counts}")
        return mask

    def _set_fitted(self, scaler: RobustScaler | None, train: _Trials) -> None:
        self.scaler_ = scaler
        self.subjects_ = train.events["subject"].drop_duplicates().tolist()
        self.n_train_trials_ = len(train.events)

    @verbose
    @fill_doc
    def fit(self, trials: _Trials, *, verbose: bool | str | int | None = None) -> MEEGPreprocessor:
        """Fit the scaler on the rows of ``trials`` with ``split == "train"``.

        Parameters
        ----------
        trials : BrainTrials
            M/EEG trials; only training rows are used (others are ignored).
        %(verbose)s

        Returns
        -------
        self : MEEGPreprocessor
            The fitted preprocessor.

        Raises
        ------
        ValueError
            For invalid parameters, or when no row has ``split == "train"``.

        Examples
        --------
        >>> prep = MEEGPreprocessor().fit(trials)    # doctest: +SKIP
        """
        self._validate()
        _check_trials(trials, "MEEGPreprocessor.fit")
        train = trials[self._train_mask(trials)]  # type: ignore[index]
        scaler = self._new_scaler()
        if scaler is not None:
            scaler.fit(self._steps(train))
        self._set_fitted(scaler, train)
        return self

    @verbose
    @fill_doc
    def transform(self, trials: TrialsT, *, verbose: bool | str | int | None = None) -> TrialsT:
        """Apply every step to all rows of ``trials``.

        Parameters
        ----------
        trials : BrainTrials
            M/EEG trials of the subjects seen in ``fit``, any split.
        %(verbose)s

        Returns
        -------
        trials : BrainTrials
            New preprocessed trials; ``info["preprocessing"]`` lists the steps.

        Raises
        ------
        RuntimeError
            If the preprocessor is not fitted.
        ValueError
            For invalid parameters or subjects the scaler was not fitted on.

        Examples
        --------
        >>> test = prep.transform(trials.select(split="test"))    # doctest: +SKIP
        """
        if not hasattr(self, "n_train_trials_"):
            raise RuntimeError("This MEEGPreprocessor is not fitted yet; call fit (or fit_transform) first.")
        self._validate()
        _check_trials(trials, "MEEGPreprocessor.transform")
        out = self._steps(trials)
        if self.scaler_ is not None:
            out = self.scaler_.transform(out)
        return out

    @verbose
    @fill_doc
    def fit_transform(self, trials: TrialsT, *, verbose: bool | str | int | None = None) -> TrialsT:
        """Fit on the training rows and transform all rows (the steps run once).

        Parameters
        ----------
        trials : BrainTrials
            M/EEG trials with at least one ``split == "train"`` row.
        %(verbose)s

        Returns
        -------
        trials : BrainTrials
            All rows, preprocessed; the scaler saw the training rows only.

        Raises
        ------
        ValueError
            For invalid parameters, or when no row has ``split == "train"``.

        Examples
        --------
        >>> clean = MEEGPreprocessor(sfreq=120.0).fit_transform(trials)   # doctest: +SKIP
        """
        self._validate()
        _check_trials(trials, "MEEGPreprocessor.fit_transform")
        mask = self._train_mask(trials)
        out = self._steps(trials)
        train = out[mask]  # type: ignore[index]
        scaler = self._new_scaler()
        if scaler is not None:
            scaler.fit(train)
            out = scaler.transform(out)
        self._set_fitted(scaler, train)
        return out
