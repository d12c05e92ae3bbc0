"""Readers and writers, one module per on-disk format."""

from .nsd import (
    NSD_BETA_SCALE,
    LazyHDF5Rows,
    NSDLayout,
    read_betas_masked,
    read_betas_nonzero_mask,
    read_betas_shape,
    read_coco_captions,
    read_ctab,
    read_expdesign,
    read_stim_info,
    read_volume,
    write_betas,
    write_coco_captions,
    write_ctab,
    write_expdesign,
    write_stim_info,
    write_stimuli_hdf5,
    write_volume,
)

__all__ = [
    "NSD_BETA_SCALE", "LazyHDF5Rows", "NSDLayout", "read_betas_masked", "read_betas_nonzero_mask",
    "read_betas_shape",
    "read_coco_captions", "read_ctab", "read_expdesign", "read_stim_info", "read_volume",
    "write_betas", "write_coco_captions", "write_ctab", "write_expdesign", "write_stim_info",
    "write_stimuli_hdf5", "write_volume",
]
from .masc import (  # noqa: E402
    MASC_STORIES,
    WavSegments,
    find_masc_wav,
    masc_recordings,
    parse_trial_type,
    read_masc_events,
    read_wav,
)

__all__ += ["MASC_STORIES", "WavSegments", "find_masc_wav", "masc_recordings", "parse_trial_type",
            "read_masc_events", "read_wav"]
