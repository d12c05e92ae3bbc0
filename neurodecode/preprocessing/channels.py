"""Sensor regions of an M/EEG montage: frontal, central, temporal, parietal, occipital (× hemisphere).

EEG channels with 10-20 / 10-05 names are classified from the name (``Fp``,
``AF``, ``F`` → frontal; ``FC``, ``C``, ``CP`` → central; ``FT``, ``T``, ``TP``
→ temporal; ``P`` → parietal; ``PO``, ``O``, ``I`` → occipital; odd numbers are
left, even right, ``z`` midline). Other channels (MEG, numbered EEG caps) are
classified from their positions in head coordinates (x right, y anterior,
z up), which every MNE ``info`` carries. Used for channel picking
(:mod:`neurodecode.preprocessing.meeg`), planting signal in simulations, and
sensor-region ablation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["HEMISPHERES", "REGIONS", "channel_regions", "sensor_regions"]

#: Region names, front to back.
REGIONS: tuple[str, ...] = ("frontal", "central", "temporal", "parietal", "occipital")
#: Hemisphere labels.
HEMISPHERES: tuple[str, ...] = ("left", "midline", "right")

# Longest prefix first, so "FC" wins over "F" and "PO" over "P".
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("FP", "frontal"), ("AF", "frontal"), ("FT", "temporal"), ("FC", "central"), ("TP", "temporal"),
    ("CP", "central"), ("PO", "occipital"), ("CB", "occipital"), ("F", "frontal"), ("C", "central"),
    ("T", "temporal"), ("P", "parietal"), ("O", "occipital"), ("I", "occipital"),
)
_NAME = re.compile(r"^(FP|AF|FT|FC|TP|CP|PO|CB|F|C|T|P|O|I)(Z|\d+)H?$")


def _from_name(name: str) -> tuple[str, str] | None:
    m = _NAME.match(name.strip().upper().replace(" ", ""))
    if m is None:
        return None
    prefix, num = m.groups()
    region = dict(_PREFIXES)[prefix]
    if num == "Z":
        hemi = "midline"
    else:
        hemi = "left" if int(num) % 2 == 1 else "right"
    return region, hemi


def _from_positions(pos: np.ndarray) -> list[tuple[str, str]]:
    """Classify sensors by their position relative to the montage's centre."""
    ok = np.all(np.isfinite(pos), axis=1)
    centre = pos[ok].mean(axis=0)
    rel = pos - centre
    radius = np.nanmax(np.linalg.norm(rel[ok, :2], axis=1)) or 1.0
    z = pos[:, 2]
    zspan = (np.nanmax(z[ok]) - np.nanmin(z[ok])) or 1.0
    out = []
    for i in range(len(pos)):
        if not ok[i]:
            out.append(("unknown", "unknown"))
            continue
        xn, yn = rel[i, 0] / radius, rel[i, 1] / radius
        zn = (z[i] - np.nanmin(z[ok])) / zspan
        if abs(xn) > 0.7 and zn < 0.45 and -0.45 < yn < 0.45:
            region = "temporal"
        elif yn > 0.55:
            region = "frontal"
        elif yn < -0.7:
            region = "occipital"
        elif yn < -0.42:
            region = "parietal"
        else:
            region = "central"
        hemi = "left" if xn < -0.1 else ("right" if xn > 0.1 else "midline")
        out.append((region, hemi))
    return out


def _names_and_pos(info: Any) -> tuple[list[str], np.ndarray | None]:
    info = getattr(info, "info", info)  # BrainTrials → its info
    if not isinstance(info, Mapping) or "ch_names" not in info:
        raise ValueError("sensor regions need an info dict with 'ch_names' (and 'ch_pos' for non 10-20 "
                         "names), or a BrainTrials loaded from M/EEG data")
    names = [str(c) for c in info["ch_names"]]
    pos = info.get("ch_pos")
    if pos is not None:
        pos = np.asarray(pos, dtype=float)
        if pos.shape != (len(names), 3):
            raise ValueError(f"info['ch_pos'] must have shape ({len(names)}, 3), got {pos.shape}")
        if not np.isfinite(pos).all(axis=1).any():
            pos = None
    return names, pos


def channel_regions(info: Any) -> list[tuple[str, str]]:
    """``(region, hemisphere)`` of every channel, in channel order.

    Parameters
    ----------
    info : dict | BrainTrials
        A dict with ``ch_names`` and optionally ``ch_pos`` (n_channels, 3) in
        head coordinates (metres, NaN where unknown), or a BrainTrials.

    Returns
    -------
    regions : list of (str, str)
        Region in :data:`REGIONS` (or ``"unknown"``) and hemisphere in
        :data:`HEMISPHERES` (or ``"unknown"``). 10-20 names win over positions.
    """
    names, pos = _names_and_pos(info)
    by_pos = _from_positions(pos) if pos is not None else None
    out = []
    for i, name in enumerate(names):
        r = _from_name(name)
        if r is None:
            r = by_pos[i] if by_pos is not None else ("unknown", "unknown")
        out.append(r)
    return out


def sensor_regions(info: Any, *, hemisphere: bool = False) -> dict[str, list[str]]:
    """Channel names per sensor region.

    Parameters
    ----------
    info : dict | BrainTrials
        See :func:`channel_regions`.
    hemisphere : bool
        Split each region by hemisphere: keys ``left_temporal``,
        ``right_temporal``, ``midline_central``, ...

    Returns
    -------
    regions : dict of str → list of str
        Non-empty regions only, in front-to-back order; channels that cannot be
        placed are under ``"unknown"``.

    Examples
    --------
    >>> sensor_regions({"ch_names": ["Fp1", "Cz", "T8", "P3", "O2"]})
    {'frontal': ['Fp1'], 'central': ['Cz'], 'temporal': ['T8'], 'parietal': ['P3'], 'occipital': ['O2']}
    """
    names, _ = _names_and_pos(info)
    labels = channel_regions(info)
    keys: list[str] = []
    for region in (*REGIONS, "unknown"):
        if hemisphere:
            keys += [f"{h}_{region}" for h in (*HEMISPHERES, "unknown")]
        else:
            keys.append(region)
    out: dict[str, list[str]] = {k: [] for k in keys}
    for name, (region, hemi) in zip(names, labels):
        key = f"{hemi}_{region}" if hemisphere else region
        if key not in out:
            key = "unknown_unknown" if hemisphere else "unknown"
        out[key].append(name)
    return {k: v for k, v in out.items() if v}


def resolve_channels(info: Any, picks: str | Sequence[str]) -> list[str]:
    """Channel names selected by region names, ``left_temporal``-style keys or channel names.

    Parameters
    ----------
    info : dict | BrainTrials
        See :func:`channel_regions`.
    picks : str | sequence of str
        Channel names, sensor regions (``"temporal"``) or hemisphere regions
        (``"left_temporal"``), mixed freely.

    Returns
    -------
    ch_names : list of str
        The selected channels, without duplicates, in the montage's channel order.

    Raises
    ------
    ValueError
        A pick that is neither a channel nor a region of this montage (the
        message lists both).
    """
    names, _ = _names_and_pos(info)
    picks = [picks] if isinstance(picks, str) else list(picks)
    regions = sensor_regions(info)
    regions.update(sensor_regions(info, hemisphere=True))
    chosen: list[str] = []
    for p in picks:
        if p in names:
            got = [p]
        elif p in regions:
            got = regions[p]
        else:
            raise ValueError(f"{p!r} is neither a channel nor a sensor region of this montage. Regions: "
                             f"{sorted(regions)}; channels: {names[:10]}{'...' if len(names) > 10 else ''}")
        chosen += [c for c in got if c not in chosen]
    return [c for c in names if c in chosen]
