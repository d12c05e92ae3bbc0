"""Atlases: named regions in the feature space of a :class:`~neurodecode.datasets.BrainTrials`.

An atlas turns trials into ``{region: {subject: feature indices}}`` (:meth:`Atlas.assign`), the
input of region / network ablation. Five kinds:

- :class:`VolumeAtlas`: any labelled integer NIfTI (Yeo 2011, Schaefer 2018, your own), in the
  data's space or in MNI152 (then mapped to each subject through NSD's ``MNI-to-func1pt8`` volume);
- :class:`NSDAtlas`: NSD's own ROI files, read from ``info["roi_labels"]``;
- :class:`SphereAtlas`: spheres around MNI coordinates grouped by network (Seitzman 2018,
  Dosenbach 2010);
- :class:`SensorAtlas`: M/EEG sensor regions (frontal, central, ...);
- :class:`TimeWindowAtlas`: M/EEG time windows.

Every atlas also draws size-matched null regions (:meth:`Atlas.random_regions`), paints region values
back into the data grid (:meth:`Atlas.region_image`) and gives region centres in mm
(:meth:`Atlas.region_centroids`). :func:`parse_atlas` reads the CLI's ``--atlas`` strings.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import logger, warn

__all__ = [
    "NSD_LABEL_ORDER", "NSD_MNI_AFFINE", "NSD_MNI_SHAPE", "Atlas", "NSDAtlas", "Regions", "SensorAtlas",
    "SphereAtlas", "SubjectAtlas", "TimeWindowAtlas", "VolumeAtlas", "load_atlas", "load_dosenbach_2010", "load_schaefer_2018",
    "load_seitzman_2018", "load_yeo_2011", "parse_atlas", "read_atlas_labels",
]

#: ``region → {subject: sorted unique int64 flat feature indices}``.
Regions = dict[str, dict[Any, np.ndarray]]

#: Grid of NSD's MNI space (FSL ``MNI152_T1_1mm``, 182 × 218 × 182), the source volume that the
#: coordinates stored in ``MNI-to-func1pt8.nii.gz`` index (1-based). nsdcode writes MNI outputs
#: flipped to LPI with the origin at 1-based voxel ``(183 - 91, 127, 73)``; undoing the flip gives
#: ``x = 90 - i``, ``y = j - 126``, ``z = k - 72`` for 0-based source voxels ``(i, j, k)``.
NSD_MNI_AFFINE = np.array([[-1.0, 0.0, 0.0, 90.0],
                           [0.0, 1.0, 0.0, -126.0],
                           [0.0, 0.0, 1.0, -72.0],
                           [0.0, 0.0, 0.0, 1.0]])
NSD_MNI_SHAPE = (182, 218, 182)

_TRANSFORM_FILE = "nsddata/ppdata/subjXX/transforms/MNI-to-func1pt8.nii.gz"
_INVALID_COORD = 9999.0

#: Label order of NSD's ROI label tables (``*.mgz.ctab``, value 1, 2, ...). Labels not listed
#: here come after, in natural sort order.
NSD_LABEL_ORDER: dict[str, tuple[str, ...]] = {
    "prf-visualrois": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"),
    "streams": ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"),
    "floc-faces": ("OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"),
    "floc-bodies": ("EBA", "FBA-1", "FBA-2", "mTL-bodies"),
    "floc-places": ("OPA", "PPA", "RSC"),
    "floc-words": ("OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"),
    "prf-eccrois": ("ecc0pt5", "ecc1", "ecc2", "ecc4", "ecc4+"),
}

_YEO7_NAMES = {1: "Visual", 2: "Somatomotor", 3: "DorsalAttention", 4: "VentralAttention", 5: "Limbic",
               6: "Frontoparietal", 7: "Default"}

_SPEC_FORMS = ("nsd:ROI", "nsd:ROI:hemi", "yeo7:DIR", "yeo17:DIR", "schaefer{N}-{7|17}:DIR",
               "seitzman", "dosenbach", "sensors", "sensors:hemi", "times:WIDTH[,STEP][,growing]",
               "path/to/atlas.nii[.gz]", "path/to/subj{subject:02d}_atlas.nii.gz (one file per subject)")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


def _is_mni(space: Any) -> bool:
    return isinstance(space, str) and space.strip().upper().startswith("MNI")


def _as_int_indices(idx: Any) -> np.ndarray:
    return np.unique(np.asarray(idx, dtype=np.int64).ravel())


def _fmri_geometry(info: Mapping, *, need_affine: bool = False) -> tuple[np.ndarray, tuple, np.ndarray | None]:
    """``voxel_indices``, ``volume_shape`` and ``affine`` of an fMRI info, checked."""
    if info.get("modality") not in (None, "fmri") or info.get("voxel_indices") is None:
        raise ValueError(
            "This atlas needs fMRI trials whose info has 'voxel_indices', 'volume_shape' and 'affine' "
            f"(as load_nsd gives); got modality {info.get('modality')!r} with keys {sorted(info)}. "
            "For M/EEG use SensorAtlas or TimeWindowAtlas.")
    vox = np.asarray(info["voxel_indices"], dtype=np.int64)
    if vox.ndim != 2 or vox.shape[1] != 3:
        raise ValueError(f"info['voxel_indices'] must have shape (n_voxels, 3), got {vox.shape}")
    shape = info.get("volume_shape")
    shape = tuple(int(v) for v in shape) if shape is not None else tuple(int(v) + 1 for v in vox.max(0))
    affine = info.get("affine")
    affine = np.asarray(affine, dtype=float) if affine is not None else None
    if need_affine and affine is None:
        raise ValueError("info['affine'] is missing: the voxel → mm mapping of the data is needed here. "
                         "Reload the data from files that carry an affine (NSD's func1pt8mm NIfTIs do).")
    return vox, shape, affine


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    ijk = np.asarray(ijk, dtype=float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _info_key(info: Mapping) -> str:
    """Content fingerprint of an fMRI info's geometry (info dicts are copied by ``by_subject``)."""
    h = hashlib.blake2b(digest_size=16)
    vox = np.ascontiguousarray(np.asarray(info.get("voxel_indices"), dtype=np.int64))
    h.update(vox.tobytes())
    h.update(repr(tuple(info.get("volume_shape") or ())).encode())
    aff = info.get("affine")
    if aff is not None:
        h.update(np.ascontiguousarray(np.asarray(aff, dtype=float)).tobytes())
    h.update(repr((info.get("space"), str(info.get("mni_transform")))).encode())
    return h.hexdigest()


def _load_img(img: Any, what: str) -> Any:
    import nibabel as nib

    if isinstance(img, (str, Path)):
        path = Path(img).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found: {path}. Check the path (a .nii or .nii.gz file).")
        try:
            return nib.load(str(path))
        except Exception as err:  # nibabel raises several types for unreadable files
            raise ValueError(f"Cannot read the {what} {path} as NIfTI ({err}); re-download or re-export "
                             "it.") from err
    if hasattr(img, "affine") and hasattr(img, "dataobj"):
        return img
    raise TypeError(f"{what} must be a path or a nibabel image, got {type(img).__name__}")


def _subject_for_format(subject: Any) -> Any:
    if isinstance(subject, (bool, np.bool_)):
        return subject
    if isinstance(subject, (int, np.integer)):
        return int(subject)
    if isinstance(subject, str) and subject.isdigit():
        return int(subject)
    return subject


def _resolve_transform(transforms: Any, info: Mapping, subject: Any) -> Path:
    """Path of the MNI → data-grid transform volume of ``subject`` (or raise, naming the file)."""
    path: Any = None
    if transforms is not None:
        if isinstance(transforms, Mapping):
            for key in (subject, _subject_for_format(subject), str(subject)):
                if key in transforms:
                    path = transforms[key]
                    break
            if path is None:
                raise ValueError(f"transforms= has no entry for subject {subject!r} (keys: "
                                 f"{list(transforms)}); add {subject!r}: '.../{_TRANSFORM_FILE}'.")
        elif isinstance(transforms, (str, Path)):
            pattern = str(transforms)
            if "{" in pattern:
                if subject is None:
                    raise ValueError("The transform pattern needs the subject but info has no 'subject'; "
                                     "pass the info of one subject (trials.by_subject()[s].info).")
                try:
                    path = pattern.format(subject=_subject_for_format(subject))
                except (ValueError, KeyError, IndexError) as err:
                    raise ValueError(f"Cannot format the transform pattern {pattern!r} with subject "
                                     f"{subject!r} ({err}); use '{{subject}}' or '{{subject:02d}}'.") from err
            else:
                path = pattern
        else:
            raise TypeError("transforms must be a mapping subject → path, a path pattern with '{subject}' "
                            f"or None, got {type(transforms).__name__}")
    elif info.get("mni_transform") is not None:
        path = info["mni_transform"]
    if path is None:
        raise ValueError(
            f"The atlas is in MNI152 space but the data of subject {subject!r} are in the subject's own "
            f"space (info['space'] = {info.get('space')!r}). Pass the MNI → data transform, NSD's "
            f"'{_TRANSFORM_FILE}', with transforms= (a dict subject → path or a pattern such as "
            "'.../subj{subject:02d}/transforms/MNI-to-func1pt8.nii.gz'), or set info['mni_transform'].")
    return Path(path).expanduser()


_TRANSFORM_CACHE: dict[tuple[str, float], np.ndarray] = {}


def _read_transform(path: Path, shape: tuple) -> np.ndarray:
    """The 4-D transform volume (X, Y, Z, 3) of 1-based MNI voxel coordinates, checked."""
    if not path.is_file():
        raise FileNotFoundError(f"MNI → data transform not found: {path}. It is NSD's '{_TRANSFORM_FILE}' "
                                "(download nsddata/ppdata/subjXX/transforms/ from the NSD bucket).")
    key = (str(path.resolve()), path.stat().st_mtime)
    arr = _TRANSFORM_CACHE.get(key)
    if arr is None:
        img = _load_img(path, "MNI → data transform")
        arr = np.asarray(img.dataobj, dtype=np.float64)
        if len(_TRANSFORM_CACHE) > 8:
            _TRANSFORM_CACHE.clear()
        _TRANSFORM_CACHE[key] = arr
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"The transform {path} has shape {arr.shape}; expected (X, Y, Z, 3) holding MNI voxel "
                         f"coordinates (NSD's '{_TRANSFORM_FILE}').")
    if tuple(arr.shape[:3]) != tuple(shape):
        raise ValueError(f"The transform {path} has grid {tuple(arr.shape[:3])} but the data grid is "
                         f"{tuple(shape)}; use the transform into the data's space (MNI-to-func1pt8.nii.gz "
                         "for func1pt8mm data, MNI-to-func1pt0.nii.gz for func1mm).")
    return arr


def _mni_mm_from_transform(transforms: Any, info: Mapping, subject: Any) -> np.ndarray:
    """MNI mm coordinate of every data voxel via NSD's transform volume (NaN rows = invalid)."""
    vox, shape, _ = _fmri_geometry(info)
    path = _resolve_transform(transforms, info, subject)
    arr = _read_transform(path, shape)
    coords = arr[vox[:, 0], vox[:, 1], vox[:, 2]]  # 1-based MNI voxel coordinates
    bad = ~np.isfinite(coords).all(axis=1) | (coords == _INVALID_COORD).any(axis=1)
    mm = _world(NSD_MNI_AFFINE, np.where(bad[:, None], 0.0, coords - 1.0))
    mm[bad] = np.nan
    n_bad = int(bad.sum())
    if n_bad:
        logger.info("%d of %d voxels of subject %r have no MNI coordinate in %s (9999/NaN); they are in "
                    "no region", n_bad, len(vox), subject, path.name)
    return mm


def _data_mm(info: Mapping, subject: Any, *, atlas_space: str | None, transforms: Any) -> np.ndarray:
    """World coordinate of every data voxel in the atlas's space (NaN where unknown)."""
    vox, _, affine = _fmri_geometry(info)
    data_space = info.get("space")
    if atlas_space is None or (data_space is not None and (data_space == atlas_space or
                                                           (_is_mni(data_space) and _is_mni(atlas_space)))):
        if affine is None:
            raise ValueError("info['affine'] is missing, so the atlas cannot be placed on the data grid; "
                             "reload the data from NIfTI files that carry an affine.")
        return _world(affine, vox)
    if _is_mni(atlas_space):
        return _mni_mm_from_transform(transforms, info, subject)
    raise ValueError(f"The atlas is in space {atlas_space!r} but the data are in "
                     f"{data_space or 'their own space'!r}; resample the atlas to the data's space first, or "
                     "use space=None for an atlas already in the data's space.")


# ---------------------------------------------------------------------------------------------
# label tables
# ---------------------------------------------------------------------------------------------
def read_atlas_labels(path: str | Path) -> dict[int, str]:
    """Read an atlas label table into ``{value: name}``.

    Accepted: FreeSurfer colour tables / LUTs (``.ctab``, ``.lut``, ``.txt``: ``index name [r g b a]``
    lines, ``#`` comments), TSV/CSV with columns ``index``/``name`` (else the first two columns), and
    plain ``.txt`` with one name per line (values 1..n). Value 0 (background) is dropped.

    Parameters
    ----------
    path : str | Path
        The label table file.

    Returns
    -------
    labels : dict of int → str
        ``{value: region name}``, without the background value 0.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Atlas label table not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    suffix = path.suffix.lower()
    out: dict[int, str] = {}
    if suffix in (".tsv", ".csv"):
        sep = "\t" if suffix == ".tsv" else ","
        rows = [[c.strip() for c in ln.split(sep)] for ln in lines]
        if not rows:
            raise ValueError(f"The label table {path} is empty")
        header = [c.lower() for c in rows[0]]
        body = rows[1:]
        if "index" in header and "name" in header:
            i_idx, i_name = header.index("index"), header.index("name")
        else:
            i_idx, i_name = 0, 1
            if _is_int(rows[0][0]):
                body = rows
        for k, row in enumerate(body):
            if len(row) <= max(i_idx, i_name) or not _is_int(row[i_idx]):
                raise ValueError(f"Row {k + 1} of the label table {path} is not 'index<TAB>name': {row}; "
                                 "use columns index/name.")
            out[int(float(row[i_idx]))] = row[i_name]
    else:
        parts = [ln.split() for ln in lines]
        lut = bool(parts) and all(len(p) >= 2 and _is_int(p[0]) for p in parts)
        if lut:
            for p in parts:
                out[int(p[0])] = p[1]
        elif suffix in (".ctab", ".lut"):
            bad = next(ln for ln, p in zip(lines, parts) if len(p) < 2 or not _is_int(p[0]))
            raise ValueError(f"The colour table {path} has a line that is not 'index name [r g b a]': {bad!r}")
        else:
            out = {i + 1: ln for i, ln in enumerate(lines)}
    return {k: v for k, v in out.items() if k > 0}


def _is_int(token: str) -> bool:
    try:
        value = float(token)
    except ValueError:
        return False
    return value == int(value)


def _find_sidecar(path: Path) -> Path | None:
    name = path.name
    stem = name[:-7] if name.endswith(".nii.gz") else (name[:-4] if name.endswith(".nii") else path.stem)
    for ext in (".tsv", ".txt", ".ctab", ".lut"):
        cand = path.with_name(stem + ext)
        if cand.is_file():
            return cand
    return None


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------
class Atlas:
    """Named regions in the feature space of BrainTrials (base class).

    Subclasses fill :meth:`_subject_regions`; :meth:`assign` collects them over subjects.

    Attributes
    ----------
    name : str
        Short name (``"yeo7"``, ``"nsd:streams"``, ``"seitzman2018"``, ``"sensors"``, ``"times"``).
    kind : str
        ``"volume"``, ``"nsd"``, ``"spheres"``, ``"sensors"`` or ``"times"``.
    """

    name: str = "atlas"
    kind: str = "volume"

    # -- to implement -------------------------------------------------------------------------
    def _subject_regions(self, info: Mapping, feature_shape: tuple, subject: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _sort_key(self, name: str) -> Any:
        """Key that puts region names in atlas order (None: order of first appearance)."""
        return None

    # -- public API ---------------------------------------------------------------------------
    def assign(self, trials: Any) -> Regions:
        """Feature indices of every region, per subject.

        Parameters
        ----------
        trials : BrainTrials
            One or several subjects (each with its own ``info``).

        Returns
        -------
        regions : dict of str → dict of subject → array of int64
            Regions in atlas order; indices are sorted, unique, flat (C-order) feature indices of that
            subject. A region without any feature in any subject is dropped (logged); a subject where
            a kept region is empty gets an empty array.
        """
        per_subject = {}
        for subject, sub in trials.by_subject().items():
            per_subject[subject] = self._subject_regions(sub.info, tuple(sub.feature_shape), subject)
        names: list[str] = []
        for regs in per_subject.values():
            names += [r for r in regs if r not in names]
        if self._sort_key(names[0] if names else "") is not None:
            names = sorted(names, key=self._sort_key)
        out: Regions = {}
        dropped = []
        empty = np.zeros(0, dtype=np.int64)
        for r in names:
            per = {s: _as_int_indices(regs.get(r, empty)) for s, regs in per_subject.items()}
            if all(len(v) == 0 for v in per.values()):
                dropped.append(r)
                continue
            out[r] = per
        if dropped:
            logger.info("Atlas %s: region(s) %s hold no feature of these trials; dropped", self.name,
                        ", ".join(map(str, dropped)))
        return out

    def random_regions(self, trials: Any, sizes: Mapping[Any, int], n: int,
                       rng: np.random.Generator) -> list[dict[Any, np.ndarray]]:
        """Size-matched null regions.

        Parameters
        ----------
        trials : BrainTrials
            The trials the regions index.
        sizes : mapping of subject → int
            Number of features of the real region in each subject.
        n : int
            Number of null regions to draw.
        rng : numpy.random.Generator
            Source of randomness (the result is deterministic given its state).

        Returns
        -------
        regions : list of dict of subject → array of int64
            ``n`` regions, each with exactly ``sizes[s]`` sorted feature indices per subject. fMRI
            atlases draw spatially contiguous blobs (a random seed voxel and its nearest voxels);
            sensor atlases random channel sets (all their time samples); time atlases a contiguous
            window at a random start (all channels).
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got "
                            f"{type(rng).__name__}")
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        subs = trials.by_subject()
        unknown = [s for s in sizes if s not in subs]
        if unknown:
            raise ValueError(f"sizes has subject(s) {unknown} that are not in the trials ({list(subs)})")
        samplers = {s: self._null_sampler(subs[s].info, tuple(subs[s].feature_shape), int(sizes[s]), s)
                    for s in sizes}
        return [{s: np.sort(np.asarray(draw(rng), dtype=np.int64)) for s, draw in samplers.items()}
                for _ in range(n)]

    def _null_sampler(self, info: Mapping, feature_shape: tuple, size: int, subject: Any):
        raise NotImplementedError

    def region_image(self, values: Mapping[str, float], info: dict) -> Any:
        """Paint one value per region into the data grid (fMRI atlases).

        Parameters
        ----------
        values : mapping of region → float
            E.g. the score drop when the region is ablated.
        info : dict
            The info of one subject (``trials.by_subject()[s].info``).

        Returns
        -------
        img : nibabel.Nifti1Image
            float32 volume of shape ``info["volume_shape"]`` with ``info["affine"]``: the voxels of
            region ``r`` hold ``values[r]``; every other voxel is NaN.
        """
        raise NotImplementedError(f"{type(self).__name__} has no voxels: use a plot of sensor/time regions "
                                  "instead of region_image.")

    def region_centroids(self, info: dict) -> dict[str, tuple[float, float, float]]:
        """Centre of every region in mm (see the subclasses).

        Parameters
        ----------
        info : dict
            The ``info`` of the trials the regions are placed on.

        Returns
        -------
        centroids : dict of str → tuple of float
            ``region → (x, y, z)``.
        """
        raise NotImplementedError(f"{type(self).__name__} regions have no position in space.")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} | kind {self.kind}>"


# ---------------------------------------------------------------------------------------------
# voxel atlases
# ---------------------------------------------------------------------------------------------
class _VoxelAtlas(Atlas):
    """Shared machinery of atlases that label voxels (volume / nsd / spheres)."""

    def _voxel_labels(self, info: Mapping, subject: Any) -> tuple[list[str], np.ndarray]:
        """Region names and, per data voxel, the index of its region in them (-1: none)."""
        raise NotImplementedError

    def _cached_labels(self, info: Mapping, subject: Any) -> tuple[list[str], np.ndarray]:
        cache = self.__dict__.setdefault("_label_cache", {})
        key = _info_key(info)
        entry = cache.setdefault(key, {})
        if subject is None:
            subject = info.get("subject")
        if subject in entry:
            return entry[subject]
        if subject is None and len(entry) >= 1:
            firsts = list(entry.values())
            if all(f[0] == firsts[0][0] and np.array_equal(f[1], firsts[0][1]) for f in firsts):
                return firsts[0]
        result = self._voxel_labels(info, subject)
        if len(cache) > 32:
            cache.clear()
            cache[key] = entry
        entry[subject] = result
        return result

    def _subject_regions(self, info: Mapping, feature_shape: tuple, subject: Any) -> dict[str, np.ndarray]:
        vox, _, _ = _fmri_geometry(info)
        if tuple(feature_shape) != (len(vox),):
            raise ValueError(f"Subject {subject!r}: trials have feature shape {tuple(feature_shape)} but "
                             f"info['voxel_indices'] lists {len(vox)} voxels; they must match (feature j = "
                             "voxel j).")
        names, lab = self._cached_labels(info, subject)
        order = np.argsort(lab, kind="stable")
        bounds = np.searchsorted(lab[order], np.arange(len(names) + 1))
        return {name: order[bounds[k]:bounds[k + 1]].astype(np.int64) for k, name in enumerate(names)}

    def _null_sampler(self, info: Mapping, feature_shape: tuple, size: int, subject: Any):
        from scipy.spatial import cKDTree

        vox, _, _ = _fmri_geometry(info)
        n_vox = len(vox)
        if tuple(feature_shape) != (n_vox,):
            raise ValueError(f"Subject {subject!r}: feature shape {tuple(feature_shape)} does not match the "
                             f"{n_vox} voxels of info['voxel_indices']")
        if not 0 <= size <= n_vox:
            raise ValueError(f"Cannot draw a region of {size} voxels for subject {subject!r}: it has "
                             f"{n_vox} voxels")
        tree = cKDTree(vox.astype(float))

        def draw(rng: np.random.Generator) -> np.ndarray:
            seed = int(rng.integers(n_vox))
            point = vox[seed] + rng.uniform(-0.25, 0.25, size=3)  # jitter: random tie-breaking
            if size == 0:
                return np.zeros(0, dtype=np.int64)
            _, idx = tree.query(point, k=size)
            return np.atleast_1d(idx)

        return draw

    def region_image(self, values: Mapping[str, float], info: dict) -> Any:
        """Paint one value per region into this subject's data grid.

        Parameters
        ----------
        values : mapping of region → float
            Value of each region; regions not in ``values`` stay NaN, keys that are not regions of
            this atlas are ignored (logged).
        info : dict
            The info of one subject (``trials.by_subject()[s].info``); the voxel → region map is the
            one :meth:`assign` uses for it (cached by content).

        Returns
        -------
        img : nibabel.Nifti1Image
            float32 volume of shape ``info["volume_shape"]`` with ``info["affine"]``; NaN outside the
            regions.
        """
        import nibabel as nib

        vox, shape, affine = _fmri_geometry(info, need_affine=True)
        names, lab = self._cached_labels(info, None)
        vol = np.full(shape, np.nan, dtype=np.float32)
        known = set(names)
        unknown = [r for r in values if r not in known]
        if unknown:
            logger.info("region_image: %s not region(s) of atlas %s; ignored", unknown, self.name)
        for k, name in enumerate(names):
            if name in values:
                sel = vox[lab == k]
                vol[sel[:, 0], sel[:, 1], sel[:, 2]] = np.float32(values[name])
        return nib.Nifti1Image(vol, affine)

    def region_centroids(self, info: dict) -> dict[str, tuple[float, float, float]]:
        """Mean world coordinate (mm, data space) of each region's voxels in this subject's data.

        Parameters
        ----------
        info : dict
            The ``info`` of fMRI trials, with the voxel coordinates and the affine of the data.

        Returns
        -------
        centroids : dict of str → tuple of float
            ``region → (x, y, z)`` for every region with at least one voxel in the data.
        """
        vox, _, affine = _fmri_geometry(info, need_affine=True)
        names, lab = self._cached_labels(info, None)
        xyz = _world(affine, vox)
        out = {}
        for k, name in enumerate(names):
            sel = lab == k
            if sel.any():
                c = xyz[sel].mean(axis=0)
                out[name] = (float(c[0]), float(c[1]), float(c[2]))
        return out


class VolumeAtlas(_VoxelAtlas):
    """Any labelled integer NIfTI (0 = background) as regions of fMRI data.

    Parameters
    ----------
    img : str | Path | nibabel image
        Integer label volume.
    labels : mapping of int → str | str | Path | None
        Names of the label values: a mapping, a label table (FreeSurfer ``.ctab``/LUT
        ``index name [r g b a]`` lines, TSV with columns ``index``/``name``, or ``.txt`` with one
        name per line = values 1..n; see :func:`read_atlas_labels`), or None (names ``"1"``,
        ``"2"``, ...).
    name : str | None
        Atlas name (default: the file name).
    space : str | None
        None: the atlas is in the data's space (placed on the data grid through both affines,
        nearest neighbour). ``"MNI152"``: the atlas is in MNI space; data whose
        ``info["space"]`` is MNI are handled as above, other data need NSD's
        ``MNI-to-func1pt8.nii.gz`` transform of their subject (``transforms``).
    networks : mapping of int → str | None
        Group label values into one region per network (Schaefer parcels → Yeo networks). Values
        not listed are in no region. Without it, one region per label name (values that share a name
        are merged).
    transforms : mapping of subject → path | str | None
        MNI → data transforms: a mapping, or a pattern such as
        ``".../subj{subject:02d}/transforms/MNI-to-func1pt8.nii.gz"``; None also looks at
        ``info["mni_transform"]``.

    Notes
    -----
    Data voxel ``ijk`` gets the label of the atlas voxel nearest to its position: in the same
    space, ``round(inv(atlas_affine) @ data_affine @ ijk)``; through NSD's transform, the stored
    1-based MNI voxel coordinate ``c`` is turned into mm with :data:`NSD_MNI_AFFINE`
    (``mm = A @ (c - 1)``) and then into the atlas's voxel with ``inv(atlas_affine)``. For an atlas
    on NSD's own MNI grid that is ``atlas[round(c) - 1]``. Voxels that fall outside the atlas
    volume, or whose transform entry is 9999/NaN, are in no region (a warning gives the count when
    more than 1 % of the data voxels are outside the atlas).
    """

    kind = "volume"

    def __init__(self, img: Any, labels: Mapping[int, str] | str | Path | None = None, *,
                 name: str | None = None, space: str | None = None,
                 networks: Mapping[int, str] | None = None, transforms: Any = None) -> None:
        self.img = _load_img(img, "atlas image")
        self.source = str(img) if isinstance(img, (str, Path)) else None
        if isinstance(labels, (str, Path)):
            labels = read_atlas_labels(labels)
        self.labels = {int(k): str(v) for k, v in labels.items()} if labels is not None else None
        self.networks = {int(k): str(v) for k, v in networks.items()} if networks is not None else None
        self.space = space
        self.transforms = transforms
        if name is None:
            base = Path(self.source).name if self.source else "atlas"
            name = re.sub(r"\.nii(\.gz)?$", "", base)
        self.name = name
        if len(self.img.shape) not in (3, 4) or (len(self.img.shape) == 4 and self.img.shape[3] != 1):
            raise ValueError(f"The atlas {self.source or name} must be a 3-D label volume, got shape "
                             f"{self.img.shape}; probabilistic (4-D) atlases are not supported.")
        self._data: np.ndarray | None = None
        self._regions: list[str] | None = None
        self._value_region: dict[int, int] | None = None

    # -- data and region table ----------------------------------------------------------------
    def _label_data(self) -> np.ndarray:
        if self._data is None:
            data = np.asanyarray(self.img.dataobj)
            data = data.reshape(data.shape[:3])
            if data.dtype.kind == "f":
                finite = np.where(np.isfinite(data), data, 0)
                vals = np.unique(finite)
                if not np.array_equal(vals, np.rint(vals)):
                    raise ValueError(f"The atlas {self.source or self.name} holds non-integer values; a label "
                                     "atlas must hold integer region values (0 = background).")
                data = finite.astype(np.int32)
            elif data.dtype.kind not in "iu":
                raise ValueError(f"The atlas {self.source or self.name} has dtype {data.dtype}; expected "
                                 "integer labels.")
            self._data = np.asarray(data)
        return self._data

    def _table(self) -> tuple[list[str], dict[int, int]]:
        if self._regions is None:
            if self.labels is not None:
                values = sorted(v for v in self.labels if v > 0)
            else:
                data = self._label_data()
                if data.size and data.min() >= 0 and data.max() < 10_000_000:
                    counts = np.bincount(data.ravel())
                    values = [int(v) for v in np.flatnonzero(counts) if v > 0]
                else:
                    values = [int(v) for v in np.unique(data) if v > 0]
            regions: list[str] = []
            value_region: dict[int, int] = {}
            skipped = []
            for v in values:
                if self.networks is not None:
                    if v not in self.networks:
                        skipped.append(v)
                        continue
                    rname = self.networks[v]
                else:
                    rname = self.labels.get(v, str(v)) if self.labels is not None else str(v)
                if rname not in regions:
                    regions.append(rname)
                value_region[v] = regions.index(rname)
            if skipped:
                logger.info("Atlas %s: label value(s) %s have no network; they are in no region", self.name,
                            skipped[:20])
            self._regions, self._value_region = regions, value_region
        return self._regions, self._value_region  # type: ignore[return-value]

    @property
    def regions(self) -> list[str]:
        """Region names in atlas order."""
        return list(self._table()[0])

    def _sort_key(self, name: str) -> Any:
        regions = self._table()[0]
        return regions.index(name) if name in regions else len(regions)

    # -- labelling ------------------------------------------------------------------------------
    def _voxel_labels(self, info: Mapping, subject: Any) -> tuple[list[str], np.ndarray]:
        vox, shape, affine = _fmri_geometry(info)
        data = self._label_data()
        regions, value_region = self._table()
        same_grid = (self.space is None and affine is not None and tuple(data.shape) == tuple(shape)
                     and np.allclose(affine, self.img.affine, atol=1e-4))
        if self.space is None and affine is None:
            if tuple(data.shape) != tuple(shape):
                raise ValueError(f"info['affine'] is missing and the atlas grid {data.shape} differs from the "
                                 f"data grid {tuple(shape)}; the atlas cannot be placed. Reload the data with "
                                 "its affine or resample the atlas to the data grid.")
            logger.info("Atlas %s: no data affine; using the atlas on the same %s grid as is", self.name,
                        data.shape)
            same_grid = True
        if same_grid:
            values = data[vox[:, 0], vox[:, 1], vox[:, 2]].astype(np.int64)
        else:
            mm = _data_mm(info, subject, atlas_space=self.space, transforms=self.transforms)
            values = self._sample(mm, subject)  # also warns when voxels fall outside the atlas
            if affine is not None and (self.space is None or _is_mni(info.get("space"))):
                values = self._resampled(affine, shape)[vox[:, 0], vox[:, 1], vox[:, 2]]
        lab = np.full(len(vox), -1, dtype=np.int64)
        uniq, inv = np.unique(values, return_inverse=True)
        extra = []
        for k, v in enumerate(uniq):
            v = int(v)
            if v <= 0:
                continue
            if v not in value_region:
                if self.networks is not None:
                    continue
                extra.append(v)
                regions.append(str(v))
                value_region[v] = len(regions) - 1
            lab[inv == k] = value_region[v]
        if extra:
            logger.info("Atlas %s: label value(s) %s are not in the label table; named by their value",
                        self.name, extra[:20])
        return list(regions), lab

    def _resampled(self, affine: np.ndarray, shape: tuple) -> np.ndarray:
        """The atlas resampled onto the data grid by nilearn (nearest neighbour), as integers."""
        from nilearn.image import resample_img

        img = resample_img(self.img, target_affine=np.asarray(affine, dtype=float), target_shape=tuple(shape),
                           interpolation="nearest", force_resample=True, copy_header=True)
        return np.rint(np.asarray(img.dataobj)).astype(np.int64)

    def _sample(self, mm: np.ndarray, subject: Any) -> np.ndarray:
        """Atlas value at the nearest atlas voxel of each mm point (0 outside / NaN points)."""
        data = self._label_data()
        inv = np.linalg.inv(np.asarray(self.img.affine, dtype=float))
        ok = np.isfinite(mm).all(axis=1)
        ijk = np.zeros((len(mm), 3), dtype=np.int64)
        ijk[ok] = np.floor(_world(inv, mm[ok]) + 0.5).astype(np.int64)
        inside = ok & np.all((ijk >= 0) & (ijk < np.array(data.shape)), axis=1)
        out = np.zeros(len(mm), dtype=np.int64)
        out[inside] = data[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
        n_out = int((ok & ~inside).sum())
        if n_out > 0.01 * max(len(mm), 1):
            warn(f"Atlas {self.name}: {n_out} of {len(mm)} voxels of subject {subject!r} lie outside the atlas "
                 "volume and are in no region; check that the atlas and the data are in the same space "
                 "(space=, transforms=).")
        return out

    def __repr__(self) -> str:
        space = self.space or "data space"
        n = len(self._regions) if self._regions is not None else "?"
        return f"<VolumeAtlas {self.name!r} | {n} regions | {space}>"


class NSDAtlas(_VoxelAtlas):
    """NSD's own ROI volumes, read from ``info["roi_labels"][roi_name]``.

    Parameters
    ----------
    roi_name : str
        An NSD ROI file name without extension (``"streams"``, ``"prf-visualrois"``,
        ``"floc-faces"``, ``"Kastner2015"``, ``"HCP_MMP1"``, ``"nsdgeneral"``, ...).
    hemisphere : bool
        Split each label into ``"lh.<name>"`` / ``"rh.<name>"`` by the sign of the world x
        coordinate of the voxel (``x < 0`` = left, from ``info["affine"]``).

    Notes
    -----
    Regions are the label names present in the data, in the order of NSD's label table for the
    files listed in :data:`NSD_LABEL_ORDER` (``V1v, V1d, V2v, ...`` for ``prf-visualrois``), and in
    natural sort order otherwise (and for labels missing from that table). NSD's func1pt8mm files
    put the world origin at the centre of the volume, so the hemisphere split is at the centre of
    the slab, which is close to, but not exactly, the subject's midline.
    """

    kind = "nsd"

    def __init__(self, roi_name: str, *, hemisphere: bool = False) -> None:
        self.roi_name = str(roi_name)
        self.hemisphere = bool(hemisphere)
        self.name = f"nsd:{self.roi_name}" + (":hemi" if self.hemisphere else "")

    def _base_key(self, label: str) -> tuple:
        order = NSD_LABEL_ORDER.get(self.roi_name, ())
        return (order.index(label), []) if label in order else (len(order), _natural_key(label))

    def _sort_key(self, name: str) -> Any:
        if self.hemisphere and name[:3] in ("lh.", "rh."):
            return (*self._base_key(name[3:]), name[:2] == "rh")
        return (*self._base_key(name), False)

    def _voxel_labels(self, info: Mapping, subject: Any) -> tuple[list[str], np.ndarray]:
        vox, _, affine = _fmri_geometry(info, need_affine=self.hemisphere)
        rois = info.get("roi_labels") or {}
        if self.roi_name not in rois:
            raise ValueError(f"NSD ROI {self.roi_name!r} is not in info['roi_labels'] of subject {subject!r} "
                             f"(available: {sorted(rois)}). Load the data with "
                             f"load_nsd(..., extra_rois=[..., {self.roi_name!r}]) or extra_rois='all'.")
        labels = np.asarray(rois[self.roi_name]).astype(str)
        if labels.shape != (len(vox),):
            raise ValueError(f"info['roi_labels'][{self.roi_name!r}] has {labels.shape} entries for "
                             f"{len(vox)} voxels; they must match")
        if self.hemisphere:
            x = _world(affine, vox)[:, 0]
            hemi = np.where(x < 0, "lh.", "rh.")
            labels = np.where(labels == "", "", np.char.add(hemi, labels))
        names = sorted({str(v) for v in np.unique(labels) if v != ""}, key=self._sort_key)
        pos = {n: k for k, n in enumerate(names)}
        uniq, inv = np.unique(labels, return_inverse=True)
        lut = np.array([pos.get(str(u), -1) for u in uniq], dtype=np.int64)
        return names, (lut[inv] if len(uniq) else np.full(len(vox), -1, dtype=np.int64))

    def _cached_labels(self, info: Mapping, subject: Any) -> tuple[list[str], np.ndarray]:
        return self._voxel_labels(info, subject if subject is not None else info.get("subject"))

    def __repr__(self) -> str:
        return f"<NSDAtlas {self.name!r} | ROI file {self.roi_name}{' | by hemisphere' if self.hemisphere else ''}>"


class SphereAtlas(_VoxelAtlas):
    """Spheres of ``radius`` mm around MNI coordinates, one region per network.

    Parameters
    ----------
    coords : array-like, shape (n_rois, 3)
        Sphere centres in MNI mm.
    networks : sequence of str, length n_rois
        Network of each sphere (the region it belongs to).
    radius : float
        Sphere radius in mm.
    name : str
        Atlas name.
    transforms : mapping | str | None
        MNI → data transforms for data in a subject's own space (see :class:`VolumeAtlas`).

    Notes
    -----
    Each data voxel's MNI position is ``affine @ ijk`` when ``info["space"]`` is MNI, else the
    coordinate stored in NSD's ``MNI-to-func1pt8.nii.gz`` turned into mm with
    :data:`NSD_MNI_AFFINE`. A voxel belongs to the network of the nearest centre when that centre
    is at most ``radius`` mm away (so overlapping spheres go to the nearest centre).
    """

    kind = "spheres"

    def __init__(self, coords: Any, networks: Sequence[str], *, radius: float = 5.0, name: str = "spheres",
                 transforms: Any = None) -> None:
        self.coords = np.asarray(coords, dtype=float).reshape(-1, 3)
        self.networks = [str(n) for n in networks]
        if len(self.networks) != len(self.coords):
            raise ValueError(f"coords has {len(self.coords)} rows but networks has {len(self.networks)} entries; "
                             "give one network per sphere")
        if not float(radius) > 0:
            raise ValueError(f"radius must be > 0 mm, got {radius}")
        self.radius = float(radius)
        self.name = name
        self.transforms = transforms
        self.regions: list[str] = list(dict.fromkeys(self.networks))

    def _sort_key(self, name: str) -> Any:
        return self.regions.index(name) if name in self.regions else len(self.regions)

    def _voxel_labels(self, info: Mapping, subject: Any) -> tuple[list[str], np.ndarray]:
        from scipy.spatial import cKDTree

        mm = _data_mm(info, subject, atlas_space="MNI152", transforms=self.transforms)
        lab = np.full(len(mm), -1, dtype=np.int64)
        ok = np.isfinite(mm).all(axis=1)
        if ok.any() and len(self.coords):
            dist, nearest = cKDTree(self.coords).query(mm[ok], k=1)
            net = np.array([self.regions.index(n) for n in self.networks], dtype=np.int64)
            lab[np.flatnonzero(ok)] = np.where(dist <= self.radius + 1e-9, net[nearest], -1)
        return list(self.regions), lab

    def region_centroids(self, info: dict | None = None) -> dict[str, tuple[float, float, float]]:
        """Mean of the sphere centres of each network (MNI mm); ``info`` is not needed.

        Parameters
        ----------
        info : dict | None
            Ignored (accepted for the :class:`Atlas` interface).

        Returns
        -------
        centroids : dict of str → tuple of float
            ``network → (x, y, z)``, in the order of ``regions``.
        """
        out = {}
        nets = np.asarray(self.networks)
        for r in self.regions:
            c = self.coords[nets == r].mean(axis=0)
            out[r] = (float(c[0]), float(c[1]), float(c[2]))
        return out

    def __repr__(self) -> str:
        return (f"<SphereAtlas {self.name!r} | {len(self.coords)} spheres of {self.radius:g} mm | "
                f"{len(self.regions)} networks>")


# ---------------------------------------------------------------------------------------------
# M/EEG atlases
# ---------------------------------------------------------------------------------------------
def _meeg_shape(info: Mapping, feature_shape: tuple, subject: Any) -> tuple[int, int]:
    if len(feature_shape) != 2:
        raise ValueError(f"Subject {subject!r}: sensor/time atlases need M/EEG trials of shape (n_trials, "
                         f"n_channels, n_times); got feature shape {tuple(feature_shape)}. For fMRI use "
                         "VolumeAtlas, NSDAtlas or SphereAtlas.")
    n_ch, n_t = (int(v) for v in feature_shape)
    names = info.get("ch_names")
    if names is not None and len(names) != n_ch:
        raise ValueError(f"Subject {subject!r}: info['ch_names'] has {len(names)} channels but the data have "
                         f"{n_ch}")
    return n_ch, n_t


class SensorAtlas(Atlas):
    """M/EEG sensor regions (frontal, central, temporal, parietal, occipital).

    Regions come from :func:`~neurodecode.preprocessing.channels.sensor_regions` (10-20 names, else
    positions). Each region holds every time sample of its channels (feature ``ch * n_times + t``).

    Parameters
    ----------
    hemisphere : bool
        Split regions by hemisphere (``left_temporal``, ``midline_central``, ...).
    """

    kind = "sensors"

    def __init__(self, *, hemisphere: bool = False) -> None:
        self.hemisphere = bool(hemisphere)
        self.name = "sensors" + (":hemi" if self.hemisphere else "")

    def _canonical(self) -> list[str]:
        from ..preprocessing.channels import HEMISPHERES, REGIONS

        keys = []
        for region in (*REGIONS, "unknown"):
            keys += [f"{h}_{region}" for h in (*HEMISPHERES, "unknown")] if self.hemisphere else [region]
        return keys

    def _sort_key(self, name: str) -> Any:
        keys = self._canonical()
        return keys.index(name) if name in keys else len(keys)

    def _channel_sets(self, info: Mapping) -> dict[str, list[int]]:
        from ..preprocessing.channels import sensor_regions

        names = [str(c) for c in info.get("ch_names") or []]
        regs = sensor_regions(info, hemisphere=self.hemisphere)
        pos = {c: i for i, c in enumerate(names)}
        return {r: [pos[c] for c in chans] for r, chans in regs.items()}

    def region_channels(self, info: Mapping) -> dict[str, list[int]]:
        """Channel indices (into ``info["ch_names"]``) of every region, in atlas order.

        Parameters
        ----------
        info : mapping
            The ``info`` of M/EEG trials, with ``ch_names`` (and ``ch_pos`` for non 10-20 names).

        Returns
        -------
        channels : dict of str → list of int
            ``region → channel indices``.
        """
        return self._channel_sets(info)

    def _subject_regions(self, info: Mapping, feature_shape: tuple, subject: Any) -> dict[str, np.ndarray]:
        _, n_t = _meeg_shape(info, feature_shape, subject)
        return {r: (np.asarray(ch, dtype=np.int64)[:, None] * n_t + np.arange(n_t)).ravel()
                for r, ch in self._channel_sets(info).items()}

    def _null_sampler(self, info: Mapping, feature_shape: tuple, size: int, subject: Any):
        n_ch, n_t = _meeg_shape(info, feature_shape, subject)
        if size % n_t or not 0 <= size // n_t <= n_ch:
            raise ValueError(f"Subject {subject!r}: a sensor region of {size} features is not a whole number "
                             f"of channels × {n_t} samples (≤ {n_ch} channels)")
        k = size // n_t

        def draw(rng: np.random.Generator) -> np.ndarray:
            ch = np.sort(rng.choice(n_ch, size=k, replace=False))
            return (ch[:, None] * n_t + np.arange(n_t)).ravel()

        return draw

    def region_centroids(self, info: dict) -> dict[str, tuple[float, float, float]]:
        """Mean ``info["ch_pos"]`` of each region's channels (head coordinates, NaN positions skipped).

        Parameters
        ----------
        info : dict
            The ``info`` of M/EEG trials, with ``ch_names`` and ``ch_pos``.

        Returns
        -------
        centroids : dict of str → tuple of float
            ``region → (x, y, z)`` for every region with at least one finite channel position.
        """
        pos = info.get("ch_pos")
        if pos is None:
            raise ValueError("info['ch_pos'] is missing: sensor positions are needed for region centroids")
        pos = np.asarray(pos, dtype=float)
        out = {}
        for r, ch in self._channel_sets(info).items():
            p = pos[ch]
            p = p[np.isfinite(p).all(axis=1)]
            if len(p):
                c = p.mean(axis=0)
                out[r] = (float(c[0]), float(c[1]), float(c[2]))
        return out

    def __repr__(self) -> str:
        return f"<SensorAtlas {self.name!r}{' | by hemisphere' if self.hemisphere else ''}>"


class TimeWindowAtlas(Atlas):
    """M/EEG time windows as regions (every channel at the window's samples).

    Parameters
    ----------
    width, step : float, float | None
        Window width and step in seconds (see :func:`~neurodecode.analysis.time_windows`).
    mode : ``"sliding"`` | ``"growing"``
        Sliding or growing windows.
    tmin, tmax : float | None
        Span to cover (default: the first and last sample of ``info["times"]``).

    Notes
    -----
    Region names are ``f"{start:.3f}-{stop:.3f} s"``. A window holds the samples with
    ``start <= t < stop``; the last window also holds ``t == stop``.
    """

    kind = "times"

    def __init__(self, width: float, step: float | None = None, *, mode: str = "sliding",
                 tmin: float | None = None, tmax: float | None = None) -> None:
        from ..utils import check_option

        check_option("mode", mode, ("sliding", "growing"))
        self.width, self.step, self.mode, self.tmin, self.tmax = float(width), step, mode, tmin, tmax
        self.name = "times"
        self._bounds: dict[str, tuple[float, float]] = {}

    def _windows(self, info: Mapping) -> tuple[np.ndarray, list[tuple[float, float]]]:
        from .windows import time_windows

        times = info.get("times")
        if times is None:
            raise ValueError("info['times'] is missing: time-window regions need M/EEG trials with sample times")
        times = np.asarray(times, dtype=float)
        tmin = float(times[0]) if self.tmin is None else float(self.tmin)
        tmax = float(times[-1]) if self.tmax is None else float(self.tmax)
        return times, time_windows(tmin, tmax, self.width, self.step, mode=self.mode)

    def _sort_key(self, name: str) -> Any:
        return self._bounds.get(name, (np.inf, np.inf))

    def _subject_regions(self, info: Mapping, feature_shape: tuple, subject: Any) -> dict[str, np.ndarray]:
        n_ch, n_t = _meeg_shape(info, feature_shape, subject)
        times, windows = self._windows(info)
        if len(times) != n_t:
            raise ValueError(f"Subject {subject!r}: info['times'] has {len(times)} samples but the data have {n_t}")
        out = {}
        eps = 1e-9
        for k, (start, stop) in enumerate(windows):
            last = k == len(windows) - 1
            sel = (times >= start - eps) & ((times <= stop + eps) if last else (times < stop - eps))
            name = f"{start:.3f}-{stop:.3f} s"
            self._bounds[name] = (start, stop)
            t_idx = np.flatnonzero(sel)
            out[name] = (np.arange(n_ch)[:, None] * n_t + t_idx).ravel().astype(np.int64)
        return out

    def _null_sampler(self, info: Mapping, feature_shape: tuple, size: int, subject: Any):
        n_ch, n_t = _meeg_shape(info, feature_shape, subject)
        if size % n_ch or not 0 <= size // n_ch <= n_t:
            raise ValueError(f"Subject {subject!r}: a time region of {size} features is not {n_ch} channels × a "
                             f"whole number of samples (≤ {n_t})")
        k = size // n_ch

        def draw(rng: np.random.Generator) -> np.ndarray:
            start = int(rng.integers(0, n_t - k + 1))
            return (np.arange(n_ch)[:, None] * n_t + np.arange(start, start + k)).ravel()

        return draw

    def region_centroids(self, info: dict) -> dict[str, tuple[float, float, float]]:
        """Not available: time windows have no position in space.

        Parameters
        ----------
        info : dict
            Ignored.

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError("Time-window regions have no position in space; plot the scores against "
                                  "time instead (window centres from the region names).")

    def __repr__(self) -> str:
        step = self.step if self.step is not None else self.width
        return f"<TimeWindowAtlas | {self.mode} windows of {self.width:g} s, step {step:g} s>"


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------
_FETCH_HINT = ("Get it on a machine with internet with nilearn.datasets.{fetcher}(data_dir=DIR) and copy the "
               "folder {folder!r} here (neurodecode never downloads atlases).")


class SubjectAtlas(Atlas):
    """One atlas per subject, e.g. label volumes drawn in each subject's native space.

    Parameters
    ----------
    atlases : mapping of subject → Atlas | callable
        The atlas of every subject, or ``get(subject) -> Atlas`` (called once per subject).
    name : str | None
        Short name (default: the first atlas' name).
    kind : str
        The atlases' kind (all must share it).

    Examples
    --------
    >>> atlas = SubjectAtlas(lambda s: load_atlas(f"atlases/subj{int(s):02d}_networks7.nii.gz"))  # doctest: +SKIP
    """

    def __init__(self, atlases: Mapping[Any, Atlas] | Any, *, name: str | None = None,
                 kind: str = "volume") -> None:
        self._source = atlases
        self._cache: dict[Any, Atlas] = {}
        self.kind = kind
        self.name = name or "per-subject atlas"

    def atlas(self, subject: Any) -> Atlas:
        """The atlas of ``subject``.

        Parameters
        ----------
        subject : str | int
            A subject (matched to the keys of ``atlases`` by its formatted name).

        Returns
        -------
        atlas : Atlas
            The subject's atlas (built once, then cached).
        """
        key = _subject_for_format(subject)
        if key not in self._cache:
            src = self._source
            if callable(src):
                got = src(subject)
            else:
                cands = [k for k in src if _subject_for_format(k) == key]
                if not cands:
                    raise ValueError(f"{self.name}: no atlas for subject {subject!r} (have {list(src)})")
                got = src[cands[0]]
            if got.kind != self.kind:
                raise ValueError(f"{self.name}: subject {subject!r}'s atlas is of kind {got.kind!r}, not {self.kind!r}")
            self._cache[key] = got
        return self._cache[key]

    def _from_info(self, info: Mapping) -> Atlas:
        if "subject" not in info:
            raise ValueError(f"{self.name} needs info['subject'] to pick the subject's atlas")
        return self.atlas(info["subject"])

    def _subject_regions(self, info: Mapping, feature_shape: tuple, subject: Any) -> dict[str, np.ndarray]:
        return self.atlas(subject)._subject_regions(info, feature_shape, subject)

    def _sort_key(self, name: str) -> Any:
        first = next(iter(self._cache.values()), None)
        return None if first is None else first._sort_key(name)

    def _null_sampler(self, info: Mapping, feature_shape: tuple, size: int, subject: Any):
        return self.atlas(subject)._null_sampler(info, feature_shape, size, subject)

    def region_image(self, values: Mapping[str, float], info: dict) -> Any:
        """Paint one value per region into the data grid, with the atlas of ``info["subject"]``.

        Parameters
        ----------
        values : mapping of region → float
            E.g. the score drop when the region is ablated.
        info : dict
            The info of one subject (``trials.by_subject()[s].info``); must hold ``"subject"``.

        Returns
        -------
        img : nibabel.Nifti1Image
            The subject atlas's :meth:`Atlas.region_image`.
        """
        return self._from_info(info).region_image(values, info)

    def region_centroids(self, info: dict) -> dict[str, tuple[float, float, float]]:
        """Centre of every region in mm, with the atlas of ``info["subject"]``.

        Parameters
        ----------
        info : dict
            The ``info`` of the trials the regions are placed on; must hold ``"subject"``.

        Returns
        -------
        centroids : dict of str → tuple of float
            ``region → (x, y, z)``, from the subject atlas's :meth:`Atlas.region_centroids`.
        """
        return self._from_info(info).region_centroids(info)


def load_yeo_2011(data_dir: str | Path | None, n_networks: int = 7, thickness: str = "thick", *,
                  transforms: Any = None) -> VolumeAtlas:
    """The Yeo 2011 cortical networks (MNI152 volume), from nilearn's on-disk layout.

    Parameters
    ----------
    data_dir : str | Path | None
        The ``data_dir`` given to ``nilearn.datasets.fetch_atlas_yeo_2011`` (holding
        ``yeo_2011/Yeo_JNeurophysiol11_MNI152/``), or that ``Yeo_JNeurophysiol11_MNI152`` folder
        itself. None: ``~/nilearn_data``.
    n_networks : 7 | 17
        Number of networks.
    thickness : ``"thick"`` | ``"thin"``
        ``"thick"``: ``..._FreeSurferConformed1mm_LiberalMask.nii.gz``; ``"thin"``:
        ``..._FreeSurferConformed1mm.nii.gz``.
    transforms : mapping | str | None
        MNI → data transforms for data in a subject's space (see :class:`VolumeAtlas`).

    Returns
    -------
    atlas : VolumeAtlas
        Space ``"MNI152"``; regions ``Visual, Somatomotor, DorsalAttention, VentralAttention, Limbic,
        Frontoparietal, Default`` (7) or ``17Networks_1 .. 17Networks_17`` (17).
    """
    from ..utils import check_option

    check_option("n_networks", n_networks, (7, 17))
    check_option("thickness", thickness, ("thick", "thin"))
    root = Path(data_dir).expanduser() if data_dir is not None else Path("~/nilearn_data").expanduser()
    fname = f"Yeo2011_{n_networks}Networks_MNI152_FreeSurferConformed1mm" + \
        ("_LiberalMask" if thickness == "thick" else "") + ".nii.gz"
    folder = "Yeo_JNeurophysiol11_MNI152"
    candidates = [root / "yeo_2011" / folder / fname, root / folder / fname, root / fname,
                  root / "yeo_2011_atlas" / folder / fname]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"Yeo 2011 atlas file {fname} not found; looked for " + ", ".join(map(str, candidates)) + ". "
            + _FETCH_HINT.format(fetcher="fetch_atlas_yeo_2011", folder=f"yeo_2011/{folder}"))
    names = _YEO7_NAMES if n_networks == 7 else {k: f"17Networks_{k}" for k in range(1, 18)}
    return VolumeAtlas(path, names, name=f"yeo{n_networks}", space="MNI152", transforms=transforms)


def load_schaefer_2018(data_dir: str | Path | None, n_rois: int = 400, yeo_networks: int = 7,
                       resolution_mm: int = 1, *, by: str = "network", transforms: Any = None) -> VolumeAtlas:
    """The Schaefer 2018 parcellation (MNI152 volume), from nilearn's on-disk layout.

    Parameters
    ----------
    data_dir : str | Path | None
        The ``data_dir`` given to ``nilearn.datasets.fetch_atlas_schaefer_2018`` (holding
        ``schaefer_2018/``), or that ``schaefer_2018`` folder itself. None: ``~/nilearn_data``.
    n_rois : int
        100, 200, ..., 1000 parcels.
    yeo_networks : 7 | 17
        Network version.
    resolution_mm : 1 | 2
        Voxel size of the volume.
    by : ``"network"`` | ``"parcel"``
        ``"network"``: one region per network (``name.split("_")[2]``: ``Vis, SomMot, DorsAttn,
        SalVentAttn, Limbic, Cont, Default`` for 7); ``"parcel"``: one region per parcel.
    transforms : mapping | str | None
        MNI → data transforms (see :class:`VolumeAtlas`).

    Returns
    -------
    atlas : VolumeAtlas
        Reads ``Schaefer2018_{n}Parcels_{k}Networks_order_FSLMNI152_{r}mm.nii.gz`` and its label file
        ``Schaefer2018_{n}Parcels_{k}Networks_order.txt`` (``index name r g b 0`` lines).
    """
    from ..utils import check_option

    check_option("n_rois", n_rois, tuple(range(100, 1001, 100)))
    check_option("yeo_networks", yeo_networks, (7, 17))
    check_option("resolution_mm", resolution_mm, (1, 2))
    check_option("by", by, ("network", "parcel"))
    root = Path(data_dir).expanduser() if data_dir is not None else Path("~/nilearn_data").expanduser()
    img_name = f"Schaefer2018_{n_rois}Parcels_{yeo_networks}Networks_order_FSLMNI152_{resolution_mm}mm.nii.gz"
    lab_name = f"Schaefer2018_{n_rois}Parcels_{yeo_networks}Networks_order.txt"
    folders = [root / "schaefer_2018", root]
    found = next((d for d in folders if (d / img_name).is_file() and (d / lab_name).is_file()), None)
    if found is None:
        expected = [str(d / f) for d in folders for f in (img_name, lab_name)]
        raise FileNotFoundError(
            f"Schaefer 2018 files not found; looked for {', '.join(expected)}. "
            + _FETCH_HINT.format(fetcher="fetch_atlas_schaefer_2018", folder="schaefer_2018"))
    labels = read_atlas_labels(found / lab_name)
    networks = None
    if by == "network":
        networks = {}
        for v, lab in labels.items():
            parts = lab.split("_")
            if len(parts) < 3:
                raise ValueError(f"Schaefer label {lab!r} (value {v}) in {found / lab_name} is not "
                                 "'<k>Networks_<hemi>_<network>_...'; use by='parcel'.")
            networks[v] = parts[2]
    name = f"schaefer{n_rois}-{yeo_networks}" + ("" if by == "network" else ":parcels")
    return VolumeAtlas(found / img_name, labels, name=name, space="MNI152", networks=networks,
                       transforms=transforms)


def _roi_coords(rois: Any) -> np.ndarray:
    """``(n, 3)`` coordinates from nilearn's ``rois`` (a DataFrame, or a record array before 0.11)."""
    if hasattr(rois, "columns"):
        return np.asarray(rois[["x", "y", "z"]], dtype=float)
    return np.column_stack([np.asarray(rois[c], dtype=float) for c in ("x", "y", "z")])


def load_seitzman_2018(radius: float = 5.0, *, transforms: Any = None) -> SphereAtlas:
    """The Seitzman 2018 coordinates (300 ROIs, ships with nilearn) as network spheres.

    ROIs whose network is ``"unassigned"`` are left out. Needs no download.

    Parameters
    ----------
    radius : float
        Sphere radius in mm.
    transforms : mapping | str | None
        MNI → data transforms for data in a subject's own space (see :class:`VolumeAtlas`).

    Returns
    -------
    atlas : SphereAtlas
        One region per network, named ``"seitzman2018"``.
    """
    from nilearn.datasets import fetch_coords_seitzman_2018

    bunch = fetch_coords_seitzman_2018()
    coords = _roi_coords(bunch.rois)
    nets = np.asarray(bunch.networks).astype(str)
    keep = nets != "unassigned"
    return SphereAtlas(coords[keep], list(nets[keep]), radius=radius, name="seitzman2018",
                       transforms=transforms)


def load_dosenbach_2010(radius: float = 5.0, *, transforms: Any = None) -> SphereAtlas:
    """The Dosenbach 2010 coordinates (160 ROIs, 6 networks, ships with nilearn) as spheres.

    Parameters
    ----------
    radius : float
        Sphere radius in mm.
    transforms : mapping | str | None
        MNI → data transforms for data in a subject's own space (see :class:`VolumeAtlas`).

    Returns
    -------
    atlas : SphereAtlas
        One region per network, named ``"dosenbach2010"``.
    """
    from nilearn.datasets import fetch_coords_dosenbach_2010

    bunch = fetch_coords_dosenbach_2010()
    coords = _roi_coords(bunch.rois)
    return SphereAtlas(coords, list(np.asarray(bunch.networks).astype(str)), radius=radius,
                       name="dosenbach2010", transforms=transforms)


def load_atlas(path: str | Path, labels: Mapping[int, str] | str | Path | None = None, *,
               name: str | None = None, space: str | None = None, transforms: Any = None) -> VolumeAtlas:
    """A labelled NIfTI atlas, with its label table found next to it when not given.

    Parameters
    ----------
    path : str | Path
        Integer label volume (``.nii`` / ``.nii.gz``).
    labels : mapping | str | Path | None
        Label names (see :class:`VolumeAtlas`). None: a sidecar with the same stem and the first
        of ``.tsv``, ``.txt``, ``.ctab``, ``.lut`` that exists, else numeric names.
    name, space, transforms
        See :class:`VolumeAtlas`.

    Returns
    -------
    atlas : VolumeAtlas
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Atlas image not found: {path}")
    if labels is None:
        sidecar = _find_sidecar(path)
        if sidecar is not None:
            logger.info("Atlas %s: label names from %s", path.name, sidecar.name)
            labels = sidecar
    return VolumeAtlas(path, labels, name=name, space=space, transforms=transforms)


def parse_atlas(spec: str, *, transforms: Any = None) -> Atlas:
    """An atlas from a short string (the CLI's ``--atlas``).

    Parameters
    ----------
    spec : str
        ``"nsd:ROI"`` / ``"nsd:ROI:hemi"`` (NSD ROI file), ``"yeo7:DIR"`` / ``"yeo17:DIR"``,
        ``"schaefer{N}-{7|17}:DIR"`` (by network), ``"seitzman"``, ``"dosenbach"``, ``"sensors"`` /
        ``"sensors:hemi"``, ``"times:WIDTH[,STEP][,growing]"`` (seconds) or a path to a
        ``.nii``/``.nii.gz`` label volume in the data's space.
    transforms : mapping | str | None
        MNI → data transforms for the MNI atlases (see :class:`VolumeAtlas`).

    Returns
    -------
    atlas : Atlas
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"atlas spec must be a non-empty string; accepted forms: {', '.join(_SPEC_FORMS)}")
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    low = head.lower()
    if low == "nsd":
        roi, _, opt = rest.partition(":")
        if not roi or opt not in ("", "hemi"):
            raise ValueError(f"Invalid NSD atlas spec {spec!r}; use 'nsd:ROI' or 'nsd:ROI:hemi' "
                             "(e.g. 'nsd:streams').")
        return NSDAtlas(roi, hemisphere=opt == "hemi")
    if low in ("yeo7", "yeo17"):
        if not rest:
            raise ValueError(f"Atlas spec {spec!r} needs the nilearn data folder: '{low}:DIR'")
        return load_yeo_2011(rest, n_networks=int(low[3:]), transforms=transforms)
    m = re.fullmatch(r"schaefer(\d+)-(7|17)", low)
    if m:
        if not rest:
            raise ValueError(f"Atlas spec {spec!r} needs the nilearn data folder: '{low}:DIR'")
        return load_schaefer_2018(rest, n_rois=int(m.group(1)), yeo_networks=int(m.group(2)),
                                  transforms=transforms)
    if low == "seitzman" and not rest:
        return load_seitzman_2018(transforms=transforms)
    if low == "dosenbach" and not rest:
        return load_dosenbach_2010(transforms=transforms)
    if low == "sensors" and rest in ("", "hemi"):
        return SensorAtlas(hemisphere=rest == "hemi")
    if low == "times" and rest:
        parts = [p.strip() for p in rest.split(",") if p.strip()]
        mode = "sliding"
        if parts and parts[-1].lower() in ("growing", "sliding"):
            mode = parts.pop().lower()
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) not in (1, 2):
            raise ValueError(f"Invalid time-window spec {spec!r}; use 'times:WIDTH[,STEP][,growing]' in seconds, "
                             "e.g. 'times:0.1,0.05'.")
        return TimeWindowAtlas(nums[0], nums[1] if len(nums) == 2 else None, mode=mode)
    if spec.endswith((".nii", ".nii.gz")) and "{subject" in spec:
        return SubjectAtlas(lambda s: load_atlas(spec.format(subject=_subject_for_format(s)), transforms=transforms),
                            name=re.sub(r"\{subject[^}]*\}", "XX", re.sub(r"\.nii(\.gz)?$", "", Path(spec).name)))
    if spec.endswith((".nii", ".nii.gz")):
        return load_atlas(spec, transforms=transforms)
    raise ValueError(f"Unknown atlas {spec!r}; accepted forms: {', '.join(_SPEC_FORMS)}")
