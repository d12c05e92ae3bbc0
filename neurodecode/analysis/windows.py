"""Time-window decoding for M/EEG: where in the epoch does the stimulus become decodable?

:func:`time_windows` builds sliding or growing windows; :func:`decode_time_windows`
fits one decoder per window on the training trials cropped to it, and scores
retrieval on the test trials cropped the same way, with bootstrap CIs. The
window with the highest score is the decoding peak (ATM's time-window sweep).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..utils import ProgressBar, fill_doc, logger, verbose

__all__ = ["crop_times", "decode_time_windows", "time_windows"]


def time_windows(tmin: float, tmax: float, width: float, step: float | None = None, *,
                 mode: str = "sliding") -> list[tuple[float, float]]:
    """Windows ``(start, stop)`` in seconds covering ``[tmin, tmax]``.

    Parameters
    ----------
    tmin, tmax : float
        Span of the epoch to cover.
    width : float
        Window length (``"sliding"``), or the first window's length (``"growing"``).
    step : float | None
        Distance between window starts (sliding) or stops (growing); default ``width``.
    mode : ``"sliding"`` | ``"growing"``
        ``"sliding"``: ``[t, t + width]`` for ``t = tmin, tmin + step, ...``;
        ``"growing"``: ``[tmin, tmin + width + k·step]`` (ATM's cumulative windows).

    Returns
    -------
    windows : list of (float, float)
    """
    from ..utils import check_option

    check_option("mode", mode, ("sliding", "growing"))
    if not tmax > tmin:
        raise ValueError(f"tmax must be > tmin, got tmin={tmin}, tmax={tmax}")
    if not width > 0:
        raise ValueError(f"width must be > 0 s, got {width}")
    step = width if step is None else step
    if not step > 0:
        raise ValueError(f"step must be > 0 s, got {step}")
    eps = 1e-9
    out: list[tuple[float, float]] = []
    k = 0
    while True:
        if mode == "sliding":
            start, stop = tmin + k * step, tmin + k * step + width
        else:
            start, stop = tmin, tmin + width + k * step
        if stop > tmax + eps:
            break
        out.append((round(start, 9), round(stop, 9)))
        k += 1
    if not out:
        raise ValueError(f"no window of width {width} s fits in [{tmin}, {tmax}] s")
    return out


def trial_times(trials: Any) -> np.ndarray:
    info = trials.info.get("subjects_info")
    infos = list(info.values()) if info else [trials.info]
    times = np.asarray(infos[0].get("times"), dtype=float) if infos[0].get("times") is not None else None
    if times is None:
        raise ValueError("time-window decoding needs M/EEG trials with info['times']")
    for other in infos[1:]:
        if not np.allclose(np.asarray(other.get("times"), dtype=float), times):
            raise ValueError("subjects have different time axes; resample/crop them to one axis first")
    return times


def crop_times(trials: Any, start: float, stop: float) -> Any:
    """The trials restricted to samples with ``start <= t < stop`` (a new BrainTrials).

    Half-open, so adjacent windows never share a sample.

    Parameters
    ----------
    trials : BrainTrials
        M/EEG trials (n_trials, n_channels, n_times).
    start : float
        Start of the window in seconds (included).
    stop : float
        End of the window in seconds (excluded).

    Returns
    -------
    trials : BrainTrials
        The cropped trials, with ``times`` and ``tmin`` of the info updated.
    """
    times = trial_times(trials)
    keep = np.flatnonzero((times >= start - 1e-9) & (times < stop - 1e-9))
    if len(keep) == 0:
        raise ValueError(f"window [{start}, {stop}) s holds no sample ({times[0]:.3f}..{times[-1]:.3f} s)")
    data = np.asarray(trials.get_data())[:, :, keep]

    def crop_info(info: dict) -> dict:
        out = dict(info)
        if "times" in out:
            out["times"] = times[keep]
            out["tmin"] = float(times[keep[0]])
        return out

    info = crop_info(trials.info)
    if "subjects_info" in info:
        info["subjects_info"] = {s: crop_info(i) for s, i in info["subjects_info"].items()}
    return type(trials)(data, trials.events.copy(), info, trials.stimuli)


@verbose
@fill_doc
def decode_time_windows(train: Any, test: Any, targets: Any, windows: Sequence[Sequence[float]], *,
                        alphas: Sequence[float] = (1e0, 1e1, 1e2, 1e3, 1e4, 1e5), cv: int | None = None,
                        n_candidates: int | None = 200, n_repeats: int = 10, topk: Sequence[int] = (1, 5),
                        n_boot: int = 200, ci: float = 0.95, random_state: int = 0,
                        verbose: bool | str | int | None = None) -> pd.DataFrame:
    """Fit a ridge decoder per time window and score retrieval on the test trials of that window.

    Parameters
    ----------
    train, test : BrainTrials
        M/EEG trials (n_trials, n_channels, n_times); ``test`` usually averaged
        over repetitions. Each subject gets its own ridge model per window
        (:meth:`RidgeDecoder.fit_trials`); alphas are chosen on training trials only.
    targets : StimulusEmbeddings
        Stimulus embeddings covering both sets.
    windows : sequence of (start, stop)
        Windows in seconds (e.g. from :func:`time_windows`).
    alphas, cv : see :class:`~neurodecode.models.RidgeDecoder`.
    n_candidates, n_repeats, topk, n_boot, ci, random_state : see
        :func:`~neurodecode.tasks.evaluate_retrieval` (``n_candidates=None``: all test
        items of the smallest subject); retrieval runs within each
        subject and the value is the mean over subjects (subject-stratified bootstrap).
    %(verbose)s

    Returns
    -------
    scores : pandas.DataFrame
        One row per window: ``start``, ``stop``, ``n_times``, and for every
        metric ``<metric>`` (mean over subjects), ``<metric>_ci_low``,
        ``<metric>_ci_high`` and ``<metric>_chance``. ``scores.attrs["peak"]``
        is the row label of the best window by ``nway_top1_forward``.
    """
    from ..datasets import check_no_leakage
    from ..models import RidgeDecoder
    from ..tasks import evaluate_retrieval

    if len(windows) == 0:
        raise ValueError("windows is empty")
    check_no_leakage(train, test, where="time-window decoding")
    rows = []
    target_test = targets.lookup(test.events["stimulus_id"].tolist())
    subjects = test.events["subject"].to_numpy()
    for start, stop in ProgressBar(list(windows), desc="Time windows", unit="window"):
        tr, te = crop_times(train, start, stop), crop_times(test, start, stop)
        est = RidgeDecoder(alphas=tuple(alphas), cv=cv).fit_trials(tr, targets)
        pred = est.predict_trials(te)
        n_cand = int(min(np.bincount(pd.factorize(subjects)[0]))) if n_candidates is None else n_candidates
        scores = evaluate_retrieval(pred, target_test, groups=subjects, n_candidates=n_cand,
                                    n_repeats=n_repeats, topk=tuple(topk), n_boot=n_boot, ci=ci,
                                    random_state=random_state, verbose="error")
        row: dict[str, Any] = {"start": float(start), "stop": float(stop),
                               "n_times": int(te.get_data().shape[-1])}
        for metric, v in scores.metrics.items():
            row[metric] = float(v["value"])
            row[f"{metric}_ci_low"] = float(v["ci_low"])
            row[f"{metric}_ci_high"] = float(v["ci_high"])
            row[f"{metric}_chance"] = float(v["chance"])
        rows.append(row)
        logger.info("Window [%.3f, %.3f) s: N-way top-1 %.3f", start, stop, row.get("nway_top1_forward", np.nan))
    frame = pd.DataFrame(rows)
    frame.attrs["peak"] = int(frame["nway_top1_forward"].idxmax())
    return frame
