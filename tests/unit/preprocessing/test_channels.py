"""Sensor regions: 10-20 names, positions (MNE's 10-20 montage), channel resolution."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.preprocessing import REGIONS, channel_regions, resolve_channels, sensor_regions

NAMES = ["Fp1", "Cz", "T7", "P3", "O1", "O2"]


def test_sensor_regions_from_1020_names():
    assert sensor_regions({"ch_names": NAMES}) == {
        "frontal": ["Fp1"], "central": ["Cz"], "temporal": ["T7"], "parietal": ["P3"],
        "occipital": ["O1", "O2"],
    }
    assert list(sensor_regions({"ch_names": NAMES})) == [r for r in REGIONS]


def test_sensor_regions_hemisphere_split():
    got = sensor_regions({"ch_names": NAMES}, hemisphere=True)
    assert got == {
        "left_frontal": ["Fp1"], "midline_central": ["Cz"], "left_temporal": ["T7"],
        "left_parietal": ["P3"], "left_occipital": ["O1"], "right_occipital": ["O2"],
    }


@pytest.mark.parametrize("name, expected", [
    ("FC3", ("central", "left")), ("FT8", ("temporal", "right")), ("PO8", ("occipital", "right")),
    ("TP9", ("temporal", "left")), ("CP2", ("central", "right")), ("AF4", ("frontal", "right")),
    ("Oz", ("occipital", "midline")), ("Iz", ("occipital", "midline")), ("FPZ", ("frontal", "midline")),
    ("C5h", ("central", "left")), ("f3", ("frontal", "left")),
])
def test_longest_prefix_wins(name, expected):
    assert channel_regions({"ch_names": [name]}) == [expected]


def test_unknown_names_without_positions():
    info = {"ch_names": ["Cz", "EOG1", "STI 014"]}
    assert channel_regions(info)[1:] == [("unknown", "unknown")] * 2
    assert sensor_regions(info) == {"central": ["Cz"], "unknown": ["EOG1", "STI 014"]}
    assert sensor_regions(info, hemisphere=True)["unknown_unknown"] == ["EOG1", "STI 014"]


def test_names_win_over_positions_and_nan_positions_are_unknown():
    names = ["Fp1", "MEG002", "MEG003", "MEG004", "MEG005", "MEG006", "MEG007", "MEG008"]
    back, front = [0.0, -0.09, 0.03], [0.0, 0.09, 0.03]
    pos = np.array([back,                     # an occipital position, but the name says frontal
                    [np.nan, np.nan, np.nan],
                    back, front, front, [-0.08, 0.0, 0.0], [0.08, 0.0, 0.0], [0.0, 0.0, 0.1]])
    regions = channel_regions({"ch_names": names, "ch_pos": pos})
    assert regions[0] == ("frontal", "left")
    assert regions[1] == ("unknown", "unknown")
    assert regions[2:] == [("occipital", "midline"), ("frontal", "midline"), ("frontal", "midline"),
                           ("temporal", "left"), ("temporal", "right"), ("central", "midline")]


def _montage_positions():
    mne = pytest.importorskip("mne")
    # "standard_1020" was renamed "colin27_1020" (same positions) in MNE 1.12.
    kind = "colin27_1020" if "colin27_1020" in mne.channels.get_builtin_montages() else "standard_1020"
    montage = mne.channels.make_standard_montage(kind)
    info = mne.create_info(montage.ch_names, 1000.0, "eeg")
    info.set_montage(montage)
    pos = np.array([ch["loc"][:3] for ch in info["chs"]])  # head coordinates, metres
    return list(montage.ch_names), pos


def test_positions_agree_with_names_on_the_1020_montage():
    names, pos = _montage_positions()
    by_name = channel_regions({"ch_names": names})
    anonymous = [f"MEG{i:03d}" for i in range(len(names))]           # forces the positional path
    by_pos = channel_regions({"ch_names": anonymous, "ch_pos": pos})
    known = [i for i, r in enumerate(by_name) if r != ("unknown", "unknown")]  # drops A1, M1, ...
    assert len(known) >= 80
    region_agree = np.mean([by_name[i][0] == by_pos[i][0] for i in known])
    hemi_agree = np.mean([by_name[i][1] == by_pos[i][1] for i in known])
    assert region_agree >= 0.95, region_agree
    assert hemi_agree >= 0.95, hemi_agree
    assert {r for r, _ in by_pos} >= set(REGIONS)


def test_sensor_regions_accepts_a_braintrials_like_object():
    class _T:
        def __init__(self):
            self.info = {"ch_names": NAMES}

    assert sensor_regions(_T())["occipital"] == ["O1", "O2"]


def test_resolve_channels_mixes_names_and_regions_in_channel_order():
    info = {"ch_names": NAMES}
    assert resolve_channels(info, ["O2", "frontal", "left_temporal"]) == ["Fp1", "T7", "O2"]
    assert resolve_channels(info, "occipital") == ["O1", "O2"]
    assert resolve_channels(info, ["O1", "occipital"]) == ["O1", "O2"]   # no duplicates


def test_resolve_channels_errors():
    info = {"ch_names": NAMES}
    with pytest.raises(ValueError, match="neither a channel nor a sensor region") as err:
        resolve_channels(info, "visual")
    assert "occipital" in str(err.value) and "Fp1" in str(err.value)
    with pytest.raises(ValueError, match="neither"):
        resolve_channels(info, "right_temporal")      # a valid key, but empty for this montage
    with pytest.raises(ValueError, match="ch_names"):
        resolve_channels({"sfreq": 100.0}, "occipital")
    with pytest.raises(ValueError, match="ch_pos"):
        channel_regions({"ch_names": ["MEG001"], "ch_pos": np.zeros((2, 3))})
