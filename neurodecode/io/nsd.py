"""Readers and writers of the Natural Scenes Dataset (NSD) on-disk format.

The layout, shapes and index bases follow ``FORMATS.md`` section 1 (the real
bucket ``natural-scenes-dataset/``):

- betas ``betas_sessionNN.nii.gz`` are (X, Y, Z, T) int16 and ``.hdf5`` files
  hold dataset ``betas`` of shape (T, Z, Y, X) (MATLAB order reversed), both
  storing percent signal change × 300;
- ``nsd_expdesign.mat`` holds 1-based ``masterordering`` (1, 30000),
  ``subjectim`` (8, 10000) and ``sharedix`` (1, 1000);
- ``nsd_stimuli.hdf5`` holds ``imgBrick`` (73000, 425, 425, 3) uint8, row =
  0-based 73k id;
- ROI volumes hold -1 (outside the surface mapping), 0 (no ROI) or a label
  ``k`` whose name is in ``<name>.mgz.ctab``.

Only :mod:`neurodecode.utils` is imported here (io is the lowest layer).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import atomic_path, logger
from .checks import gzip_error, is_gzip_verified, mark_gzip_verified, verify_gzip

__all__ = [
    "NSD_BETA_SCALE",
    "LazyHDF5Rows",
    "NSDLayout",
    "read_betas_masked",
    "read_betas_nonzero_mask",
    "read_betas_shape",
    "read_coco_captions",
    "read_ctab",
    "read_expdesign",
    "read_stim_info",
    "read_volume",
    "write_betas",
    "write_coco_captions",
    "write_ctab",
    "write_expdesign",
    "write_stim_info",
    "write_stimuli_hdf5",
    "write_volume",
]

#: Stored beta value = percent signal change × 300 (NSD Data Manual).
NSD_BETA_SCALE = 300.0

_REDOWNLOAD = "re-download this file"
_BETAS_VERSION = "betas_fithrf_GLMdenoise_RR"
_SESSION_RE = re.compile(r"^betas_session(\d+)\.(hdf5|nii\.gz)$")


# ---------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------
def _subj(subject: int) -> str:
    return f"subj{int(subject):02d}"


class NSDLayout:
    """Paths of the real NSD layout under ``root`` (no file is touched).

    Parameters
    ----------
    root : str | Path
        The NSD bucket root (``natural-scenes-dataset/``), the folder that
        contains ``nsddata/``, ``nsddata_betas/`` and ``nsddata_stimuli/``.

    Examples
    --------
    >>> layout = NSDLayout("/data/nsd")
    >>> layout.betas_file(1, 3, "hdf5").name
    'betas_session03.hdf5'
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"NSDLayout({str(self.root)!r})"

    # -- shared files ------------------------------------------------------------
    @property
    def expdesign(self) -> Path:
        """``nsddata/experiments/nsd/nsd_expdesign.mat``."""
        return self.root / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat"

    @property
    def stim_info(self) -> Path:
        """``nsddata/experiments/nsd/nsd_stim_info_merged.csv``."""
        return self.root / "nsddata" / "experiments" / "nsd" / "nsd_stim_info_merged.csv"

    @property
    def stimuli_hdf5(self) -> Path:
        """``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``."""
        return self.root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"

    @property
    def curated_captions(self) -> Path:
        """``COCO_73k_annots_curated.npy`` at the root (Brain-Diffuser / HF form)."""
        return self.root / "COCO_73k_annots_curated.npy"

    # -- per subject ---------------------------------------------------------------
    def subject_dir(self, subject: int) -> Path:
        """``nsddata/ppdata/subjXX``.

        Parameters
        ----------
        subject : int
            Subject number (1-based; ``1`` is ``subj01``).

        Returns
        -------
        path : pathlib.Path
            The subject's folder.
        """
        return self.root / "nsddata" / "ppdata" / _subj(subject)

    def betas_dir(self, subject: int) -> Path:
        """``nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR``.

        Parameters
        ----------
        subject : int
            Subject number (1-based).

        Returns
        -------
        path : pathlib.Path
            The subject's betas folder.
        """
        return self.root / "nsddata_betas" / "ppdata" / _subj(subject) / "func1pt8mm" / _BETAS_VERSION

    def betas_file(self, subject: int, session: int, ext: str) -> Path:
        """``betas_sessionNN.<ext>`` with ``ext`` ``"hdf5"`` or ``"nii.gz"``.

        Parameters
        ----------
        subject : int
            Subject number (1-based).
        session : int
            Session number (1-based).
        ext : str
            File format, ``"hdf5"`` or ``"nii.gz"`` (a leading dot is ignored).

        Returns
        -------
        path : pathlib.Path
            The session's betas file, in :meth:`betas_dir`.
        """
        ext = ext.lstrip(".")
        if ext not in ("hdf5", "nii.gz"):
            raise ValueError(f"Invalid value for the 'ext' parameter. Allowed values are 'hdf5', "
                             f"'nii.gz', but got {ext!r} instead.")
        return self.betas_dir(subject) / f"betas_session{int(session):02d}.{ext}"

    def roi_dir(self, subject: int) -> Path:
        """``nsddata/ppdata/subjXX/func1pt8mm/roi``.

        Parameters
        ----------
        subject : int
            Subject number (1-based).

        Returns
        -------
        path : pathlib.Path
            The subject's ROI folder.
        """
        return self.subject_dir(subject) / "func1pt8mm" / "roi"

    def roi_file(self, subject: int, name: str, hemi: str | None = None) -> Path:
        """``nsddata/ppdata/subjXX/func1pt8mm/roi/[lh.|rh.]<name>.nii.gz``.

        Parameters
        ----------
        subject : int
            Subject number (1-based).
        name : str
            ROI file name without extension (e.g. ``"nsdgeneral"``).
        hemi : str | None
            ``"lh"`` or ``"rh"`` for a one-hemisphere file; ``None`` for both.

        Returns
        -------
        path : pathlib.Path
            The ROI volume.
        """
        if hemi not in (None, "lh", "rh"):
            raise ValueError(f"Invalid value for the 'hemi' parameter. Allowed values are None, 'lh', "
                             f"'rh', but got {hemi!r} instead.")
        prefix = f"{hemi}." if hemi else ""
        return self.roi_dir(subject) / f"{prefix}{name}.nii.gz"

    def ctab_file(self, subject: int, name: str) -> Path:
        """``nsddata/freesurfer/subjXX/label/<name>.mgz.ctab``.

        Parameters
        ----------
        subject : int
            Subject number (1-based).
        name : str
            ROI name (e.g. ``"streams"``).

        Returns
        -------
        path : pathlib.Path
            The label table of the ROI.
        """
        return self.root / "nsddata" / "freesurfer" / _subj(subject) / "label" / f"{name}.mgz.ctab"

    def brainmask(self, subject: int) -> Path:
        """``nsddata/ppdata/subjXX/func1pt8mm/brainmask.nii.gz``.

        Parameters
        ----------
        subject : int
            Subject number (1-based).

        Returns
        -------
        path : pathlib.Path
            The subject's brain mask.
        """
        return self.subject_dir(subject) / "func1pt8mm" / "brainmask.nii.gz"

    def ncsnr(self, subject: int) -> Path:
        """``nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/ncsnr.nii.gz``.

        Parameters
        ----------
        subject : int
            Subject number (1-based).

        Returns
        -------
        path : pathlib.Path
            The subject's noise-ceiling SNR volume.
        """
        return self.betas_dir(subject) / "ncsnr.nii.gz"

    def mni_transform(self, subject: int) -> Path:
        """``nsddata/ppdata/subjXX/transforms/MNI-to-func1pt8.nii.gz`` (MNI → func1pt8mm coordinates).

        Parameters
        ----------
        subject : int
            Subject number (1-based).

        Returns
        -------
        path : pathlib.Path
            The subject's MNI-to-func1pt8mm transform.
        """
        return self.subject_dir(subject) / "transforms" / "MNI-to-func1pt8.nii.gz"

    def responses(self, subject: int) -> Path:
        """``nsddata/ppdata/subjXX/behav/responses.tsv``.

        Parameters
        ----------
        subject : int
            Subject number (1-based).

        Returns
        -------
        path : pathlib.Path
            The subject's behavioural responses table.
        """
        return self.subject_dir(subject) / "behav" / "responses.tsv"

    def coco_captions(self, split: str) -> Path:
        """``<root>/coco/annotations/captions_{split}.json`` (split ``train2017``/``val2017``).

        Parameters
        ----------
        split : str
            COCO split, ``"train2017"`` or ``"val2017"``.

        Returns
        -------
        path : pathlib.Path
            The COCO captions annotation file.
        """
        return self.root / "coco" / "annotations" / f"captions_{split}.json"

    def mindeye2_betas(self, subject: int) -> Path:
        """MindEye2's ``<root>/betas_all_subjXX_fp32_renorm.hdf5``.

        Parameters
        ----------
        subject : int
            Subject number (1-based).

        Returns
        -------
        path : pathlib.Path
            The subject's MindEye2 renormalised betas file.
        """
        return self.root / f"betas_all_{_subj(subject)}_fp32_renorm.hdf5"

    def mindeye2_subj_indices(self) -> Path:
        """MindEye2's ``<root>/COCO_73k_subj_indices.hdf5``.

        Returns
        -------
        path : pathlib.Path
            MindEye2's subject-indices file.
        """
        return self.root / "COCO_73k_subj_indices.hdf5"

    def sessions_found(self, subject: int) -> list[int]:
        """Session numbers (1-based) with a ``.hdf5`` or ``.nii.gz`` betas file, sorted.

        Parameters
        ----------
        subject : int
            Subject number (1-based).

        Returns
        -------
        sessions : list of int
            The sessions found in :meth:`betas_dir` (empty when it does not exist).
        """
        d = self.betas_dir(subject)
        if not d.is_dir():
            return []
        found = set()
        for p in d.iterdir():
            m = _SESSION_RE.match(p.name)
            if m:
                found.add(int(m.group(1)))
        return sorted(found)

    def subjects_found(self) -> list[int]:
        """Subjects (1-based) with a betas folder or a MindEye2 renorm file, sorted.

        Returns
        -------
        subjects : list of int
            Subjects with a ``subjXX`` folder under ``nsddata_betas/ppdata`` or
            ``nsddata/ppdata``, or a MindEye2 betas file at the root.
        """
        found = set()
        for base in (self.root / "nsddata_betas" / "ppdata", self.root / "nsddata" / "ppdata"):
            if base.is_dir():
                for p in base.iterdir():
                    m = re.match(r"^subj(\d\d)$", p.name)
                    if m and p.is_dir():
                        found.add(int(m.group(1)))
        if self.root.is_dir():
            for p in self.root.glob("betas_all_subj*_fp32_renorm.hdf5"):
                m = re.match(r"^betas_all_subj(\d\d)_", p.name)
                if m:
                    found.add(int(m.group(1)))
        return sorted(found)


# ---------------------------------------------------------------------------
# Writers (format-faithful miniatures; used by the simulator and the tests)
# ---------------------------------------------------------------------------
def write_expdesign(path: str | Path, masterordering: np.ndarray, subjectim: np.ndarray,
                    sharedix: np.ndarray) -> Path:
    """Write ``nsd_expdesign.mat`` (MATLAB v5) like the real file.

    Parameters
    ----------
    path : str | Path
        Output ``.mat`` path.
    masterordering : array of int, shape (n_trials,)
        1-based 10k-index shown on each global trial (30000 in NSD).
    subjectim : array of int, shape (8, n_images)
        1-based 73k id of each 10k-index, one row per subject.
    sharedix : array of int, shape (n_shared,)
        1-based 73k ids of the shared images.

    Returns
    -------
    path : Path
        The written file. Keys are stored with shapes (1, n_trials),
        (8, n_images) and (1, n_shared).
    """
    from scipy.io import savemat

    mo = np.asarray(masterordering).reshape(1, -1).astype(np.float64)
    si = np.asarray(subjectim)
    if si.ndim != 2:
        raise ValueError(f"subjectim must be 2-D (8, n_images), got shape {si.shape}")
    sh = np.asarray(sharedix).reshape(1, -1).astype(np.float64)
    for name, arr in (("masterordering", mo), ("subjectim", si), ("sharedix", sh)):
        if arr.size and np.nanmin(arr) < 1:
            raise ValueError(f"{name} must hold 1-based indices (>= 1), got a minimum of {np.nanmin(arr)}")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fid:
        savemat(fid, {"masterordering": mo, "subjectim": si.astype(np.float64), "sharedix": sh},
                format="5", do_compression=False, oned_as="row")
    return path


def write_stim_info(path: str | Path, table: pd.DataFrame) -> Path:
    """Write ``nsd_stim_info_merged.csv`` with an unnamed 0-based index column.

    Parameters
    ----------
    path : str | Path
        Output ``.csv`` path.
    table : pandas.DataFrame
        One row per image with the columns of FORMATS 1.3 (``cocoId``,
        ``cocoSplit``, ``nsdId`` 0-based, ``shared1000``, ``subject1..8``,
        ``subjectK_rep0/1/2``...). Its index is replaced by 0..n-1.

    Returns
    -------
    path : Path
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    out = table.reset_index(drop=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=True)
    return path


def write_stimuli_hdf5(path: str | Path, images: np.ndarray) -> Path:
    """Write ``nsd_stimuli.hdf5`` with dataset ``imgBrick`` (N, H, W, 3) uint8.

    Parameters
    ----------
    path : str | Path
        Output ``.hdf5`` path.
    images : array of uint8, shape (n_images, height, width, 3)
        Row = 0-based 73k id.

    Returns
    -------
    path : Path
    """
    import h5py

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (n_images, height, width, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255 RGB), got {images.dtype}")
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("imgBrick", data=images, chunks=(1, *images.shape[1:]))
    return path


def write_betas(path: str | Path, betas: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write one session of betas, format chosen from the suffix.

    Parameters
    ----------
    path : str | Path
        ``betas_sessionNN.nii.gz`` (4-D NIfTI, (X, Y, Z, T)) or
        ``betas_sessionNN.hdf5`` (dataset ``betas`` of shape (T, Z, Y, X),
        int16, chunks (T, 1, 1, 1) as in the real files).
    betas : array of int16, shape (X, Y, Z, T)
        Percent signal change × 300, in nibabel axis order.
    affine : array, shape (4, 4) | None
        Voxel-to-world affine of the NIfTI (default: 1.8 mm isotropic).

    Returns
    -------
    path : Path
    """
    betas = np.asarray(betas)
    if betas.ndim != 4:
        raise ValueError(f"betas must be 4-D (X, Y, Z, T), got shape {betas.shape}")
    if betas.dtype != np.int16:
        raise ValueError(f"betas must be int16 (PSC x 300, as in NSD), got {betas.dtype}")
    path = Path(path)
    name = path.name
    if name.endswith((".nii.gz", ".nii")):
        _write_nifti(path, betas, affine)
    elif name.endswith((".hdf5", ".h5")):
        import h5py

        data = np.ascontiguousarray(betas.transpose(3, 2, 1, 0))  # (T, Z, Y, X)
        n_t = data.shape[0]
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("betas", data=data, chunks=(n_t, 1, 1, 1))
    else:
        raise ValueError(f"Cannot tell the betas format from {path}: use a '.nii.gz' or '.hdf5' suffix")
    return path


def _default_affine() -> np.ndarray:
    return np.diag([1.8, 1.8, 1.8, 1.0])


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None) -> None:
    import nibabel as nib

    aff = _default_affine() if affine is None else np.asarray(affine, dtype=float)
    img = nib.Nifti1Image(data, aff)
    img.header.set_data_dtype(data.dtype)
    if data.dtype.kind in "iu":
        img.header.set_slope_inter(1.0, 0.0)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path) as tmp:
        real = tmp.with_name(tmp.name + suffix)  # nibabel picks compression from the suffix
        try:
            nib.save(img, real)
            real.replace(tmp)
        finally:
            real.unlink(missing_ok=True)


def write_volume(path: str | Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a 3-D NIfTI volume (ROI int volume with -1/0/k, brainmask, ncsnr).

    Parameters
    ----------
    path : str | Path
        Output ``.nii.gz`` path.
    volume : array, shape (X, Y, Z)
        Integer labels or float values; bool is stored as uint8.
    affine : array, shape (4, 4) | None
        Voxel-to-world affine (default: 1.8 mm isotropic).

    Returns
    -------
    path : Path
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D (X, Y, Z), got shape {vol.shape}")
    if vol.dtype == bool:
        vol = vol.astype(np.uint8)
    elif vol.dtype.kind == "i" and vol.dtype.itemsize > 4:
        info = np.iinfo(np.int32)
        if vol.size and (vol.min() < info.min or vol.max() > info.max):
            raise ValueError(f"Cannot write {path}: integer values outside the int32 range "
                             f"[{vol.min()}, {vol.max()}] would wrap; NIfTI label volumes are stored as int32.")
        vol = vol.astype(np.int32)
    elif vol.dtype.kind == "f" and vol.dtype.itemsize > 4:
        vol = vol.astype(np.float32)
    _write_nifti(Path(path), vol, affine)
    return Path(path)


def write_ctab(path: str | Path, labels: Mapping[int, str]) -> Path:
    """Write a FreeSurfer-style ``<name>.mgz.ctab``: ``0 Unknown`` then ``k name`` lines.

    Parameters
    ----------
    path : str | Path
        Output path.
    labels : dict of int → str
        Label value → name (value 0 is always written as ``Unknown``).

    Returns
    -------
    path : Path
    """
    lines = ["0 Unknown"]
    for k in sorted(int(k) for k in labels):
        if k == 0:
            continue
        name = str(labels[k])
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"ctab label names must be non-empty without spaces, got {name!r} for {k}")
        lines.append(f"{k} {name}")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_coco_captions(path: str | Path, captions: Mapping[int, Sequence[str]]) -> Path:
    """Write a COCO ``captions_{split}.json`` annotation file.

    Parameters
    ----------
    path : str | Path
        Output path, e.g. ``NSDLayout(root).coco_captions("train2017")``.
    captions : dict of int → list of str
        COCO image id (``cocoId``) → its captions.

    Returns
    -------
    path : Path
    """
    images, annots, n = [], [], 0
    for coco_id in sorted(int(c) for c in captions):
        images.append({"id": coco_id})
        for cap in captions[coco_id]:
            n += 1
            annots.append({"image_id": coco_id, "id": n, "caption": str(cap)})
    obj = {"info": {"description": "COCO captions (neurodecode writer)"}, "images": images,
           "annotations": annots}
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------
_KIND_NAMES = {"b": "booleans", "c": "complex numbers", "U": "text", "S": "text",
               "O": "a cell array or struct", "V": "a struct", "M": "dates", "m": "time spans"}


def corrupt_file_error(path: Path, err: BaseException, what: str) -> OSError:
    return OSError(
        f"Could not read the {what} {path}: the file is truncated, corrupt or not in the expected "
        f"format ({type(err).__name__}: {err}). Please {_REDOWNLOAD} from the NSD bucket."
    )


def _require(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_file():
        msg = f"{what} not found: {path}."
        if hint:
            msg += f" {hint}"
        raise FileNotFoundError(msg)
    return path


def read_expdesign(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``nsd_expdesign.mat``.

    Parameters
    ----------
    path : str | Path
        The design file.

    Returns
    -------
    design : dict
        ``masterordering`` (n_trials,), ``subjectim`` (8, n_images) and
        ``sharedix`` (n_shared,), all int64 and **1-based** as on disk.
    """
    from scipy.io import loadmat

    path = _require(Path(path), "NSD design file",
                    "It lives at nsddata/experiments/nsd/nsd_expdesign.mat under the NSD root.")
    try:
        mat = loadmat(str(path))
    except Exception as err:  # scipy raises ValueError/TypeError/OSError on bad files
        raise corrupt_file_error(path, err, "NSD design file") from err
    out = {}
    for key, ndim in (("masterordering", 1), ("subjectim", 2), ("sharedix", 1)):
        if key not in mat:
            keys = sorted(k for k in mat if not k.startswith("__"))
            raise ValueError(
                f"The NSD design file {path} has no {key!r} variable (it has {keys}). It is not a valid "
                f"nsd_expdesign.mat; please {_REDOWNLOAD}."
            )
        arr = np.asarray(mat[key])
        if arr.dtype.kind not in "iuf":
            raise ValueError(
                f"{key!r} in the NSD design file {path} has dtype {arr.dtype} "
                f"({_KIND_NAMES.get(arr.dtype.kind, 'not a number')}), but nsd_expdesign.mat stores 1-based "
                f"indices as numbers (double). The file is damaged or was written wrongly; please "
                f"{_REDOWNLOAD}.")
        arr = arr.ravel() if ndim == 1 else np.atleast_2d(arr)
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 1):
            raise ValueError(f"{key!r} in {path} must hold 1-based indices (>= 1); please {_REDOWNLOAD}.")
        if arr.dtype.kind == "f" and arr.size and not np.array_equal(arr, np.rint(arr)):
            n_frac = int(np.count_nonzero(arr != np.rint(arr)))
            raise ValueError(f"{key!r} in the NSD design file {path} holds {n_frac} non-integer value(s); "
                             f"indices must be whole numbers. Please {_REDOWNLOAD}.")
        out[key] = arr.astype(np.int64)
    return out


def read_stim_info(path: str | Path) -> pd.DataFrame:
    """Read ``nsd_stim_info_merged.csv`` (one row per image, ``nsdId`` 0-based).

    Parameters
    ----------
    path : str | pathlib.Path
        Path of the CSV file.

    Returns
    -------
    table : pandas.DataFrame
        One row per image; an ``nsdId`` column (the row number) is added when absent.
    """
    path = _require(Path(path), "NSD stimulus info file")
    try:
        table = pd.read_csv(path, index_col=0)
    except Exception as err:
        raise corrupt_file_error(path, err, "NSD stimulus info file") from err
    if "nsdId" not in table.columns:
        table["nsdId"] = np.arange(len(table))
    return table


def read_ctab(path: str | Path) -> dict[int, str]:
    """Read a ``.mgz.ctab`` label table into ``{value: name}`` (``0 Unknown`` kept).

    Parameters
    ----------
    path : str | pathlib.Path
        Path of the label table.

    Returns
    -------
    labels : dict of int to str
        ROI name of every label value.
    """
    path = _require(Path(path), "ROI label table")
    labels: dict[int, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise corrupt_file_error(path, err, "ROI label table") from err
    for i, line in enumerate(text.splitlines()):
        parts = line.strip().split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            labels[int(parts[0])] = parts[1] if len(parts) > 1 else parts[0]
        except ValueError as err:
            raise ValueError(f"Line {i + 1} of the ROI label table {path} is not 'index name': "
                             f"{line!r}; please {_REDOWNLOAD}.") from err
    return labels


def read_volume(path: str | Path, *, what: str = "volume") -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D NIfTI volume.

    Parameters
    ----------
    path : str | pathlib.Path
        Path of the ``.nii`` or ``.nii.gz`` file (a gzip stream is verified first).
    what : str
        What the volume is, for error messages.

    Returns
    -------
    data : array, shape (X, Y, Z)
        Values as stored (int ROI labels stay int).
    affine : array, shape (4, 4)
    """
    import nibabel as nib

    path = _require(Path(path), what)
    _verify_if_gzip(path, what)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise corrupt_file_error(path, err, what) from err
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"The {what} {path} must be a 3-D volume, got shape {data.shape}")
    return np.asarray(data), np.asarray(img.affine, dtype=float)


def _verify_if_gzip(path: Path, what: str) -> None:
    """Verify the whole gzip stream of a ``.gz`` file (CRC-32 and length) before its values are used."""
    if path.name.endswith(".gz"):
        verify_gzip(path, what=what, fix=f"please {_REDOWNLOAD}")


def read_betas_shape(path: str | Path) -> tuple[tuple[int, int, int], int, np.ndarray | None]:
    """Grid and trial count of a betas file without reading its data.

    Parameters
    ----------
    path : str | pathlib.Path
        Path of a ``.hdf5`` (or ``.h5``) or NIfTI betas file.

    Returns
    -------
    grid : tuple of int
        (X, Y, Z) in nibabel axis order.
    n_trials : int
        T, read from the file.
    affine : array, shape (4, 4) | None
        The NIfTI affine (``None`` for ``.hdf5``).
    """
    path = Path(path)
    if path.name.endswith(".hdf5") or path.name.endswith(".h5"):
        with open_h5(path, "NSD betas file") as f:
            dset = get_dataset(f, "betas", path)
            if dset.ndim != 4:
                raise ValueError(f"'betas' in {path} must be 4-D (T, Z, Y, X), got {dset.shape}; "
                                 f"please {_REDOWNLOAD}.")
            t, z, y, x = dset.shape
            return (x, y, z), t, None
    import nibabel as nib

    _require(path, "NSD betas file")
    try:
        img = nib.load(str(path))
        shape = img.shape
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise corrupt_file_error(path, err, "NSD betas file") from err
    if len(shape) != 4:
        raise ValueError(f"The NSD betas file {path} must be 4-D (X, Y, Z, T), got {shape}; "
                         f"please {_REDOWNLOAD}.")
    return tuple(shape[:3]), shape[3], np.asarray(img.affine, dtype=float)


class open_h5:
    """``h5py.File`` opened read-only, turning h5py errors into a clear OSError."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = _require(Path(path), what)
        self.what = what
        self.f = None

    def __enter__(self):
        import h5py

        try:
            self.f = h5py.File(self.path, "r")
        except OSError as err:
            raise corrupt_file_error(self.path, err, self.what) from err
        return self.f

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()
        return False


def get_dataset(f: Any, key: str, path: Path):
    if key not in f:
        raise ValueError(f"{path} has no dataset {key!r} (it has {sorted(f.keys())}); "
                         f"please {_REDOWNLOAD}.")
    return f[key]


def read_betas_masked(path: str | Path, mask: np.ndarray, *, out: np.ndarray | None = None,
                      scale: float = NSD_BETA_SCALE, dtype: Any = np.float32) -> np.ndarray:
    """Read the masked voxels of one betas file, divided by ``scale``.

    Only the voxels inside ``mask`` are read from ``.hdf5`` files: when the
    dataset is stored one voxel per chunk without filters (the real NSD
    layout, chunks (T, 1, 1, 1)) each chunk is read directly; otherwise the
    Z-slabs that contain mask voxels are read. ``.nii.gz`` files are streamed
    in blocks of volumes.

    Parameters
    ----------
    path : str | Path
        ``betas_sessionNN.hdf5`` or ``betas_sessionNN.nii.gz``.
    mask : array of bool, shape (X, Y, Z)
        Voxels to keep. Columns follow the C-order of ``vol[mask]`` on the
        (X, Y, Z) array (``np.nonzero`` order).
    out : array, shape (T, n_voxels) | None
        Where to write the result (e.g. a slice of a preallocated array).
    scale : float
        Stored values are divided by ``scale`` (300 for NSD betas).
    dtype : numpy dtype
        dtype of the result when ``out`` is None.

    Returns
    -------
    data : array, shape (T, n_voxels)
    """
    path = Path(path)
    mask = np.asarray(mask, dtype=bool)
    grid, n_t, _ = read_betas_shape(path)
    if tuple(mask.shape) != tuple(grid):
        raise ValueError(f"The mask has grid {tuple(mask.shape)} but the betas file {path} has grid "
                         f"{tuple(grid)} (X, Y, Z); they must match.")
    n_vox = int(mask.sum())
    if out is None:
        out = np.empty((n_t, n_vox), dtype=dtype)
    elif out.shape != (n_t, n_vox):
        raise ValueError(f"out has shape {out.shape}, expected {(n_t, n_vox)} for {path}")
    if path.name.endswith(".hdf5") or path.name.endswith(".h5"):
        _read_hdf5_masked(path, mask, out, scale)
    else:
        _read_nifti_masked(path, mask, out, scale)
    return out


def _scale_into(raw: np.ndarray, out: np.ndarray, scale: float) -> None:
    """``out[...] = raw / scale`` computed in ``out``'s dtype (exactly ``float32(raw) / 300``)."""
    if out.dtype.kind == "f":
        np.divide(raw, out.dtype.type(scale), out=out, dtype=out.dtype, casting="unsafe")
    else:
        out[...] = raw / scale


def _read_hdf5_masked(path: Path, mask: np.ndarray, out: np.ndarray, scale: float) -> None:
    xs, ys, zs = np.nonzero(mask)  # C-order of the (X, Y, Z) mask
    with open_h5(path, "NSD betas file") as f:
        dset = get_dataset(f, "betas", path)
        n_t = dset.shape[0]
        try:
            direct = (dset.chunks == (n_t, 1, 1, 1)
                      and dset.id.get_create_plist().get_nfilters() == 0)
            logger.debug("%s: %d voxels by %s", path.name, len(xs),
                         "direct chunk reads" if direct else "Z-slab reads")
            if direct and len(xs):
                read_chunk = dset.id.read_direct_chunk
                nbytes = n_t * dset.dtype.itemsize
                step = 2048  # voxels per block: a small int16 buffer, output written in place
                raw = np.empty((min(step, len(xs)), n_t), dtype=dset.dtype)
                for j0 in range(0, len(xs), step):
                    j1 = min(j0 + step, len(xs))
                    for j in range(j0, j1):
                        coord = (0, int(zs[j]), int(ys[j]), int(xs[j]))
                        try:
                            _, buf = read_chunk(coord)
                        except (OSError, KeyError, RuntimeError):  # chunk never written: fill value
                            raw[j - j0] = dset[:, coord[1], coord[2], coord[3]]
                            continue
                        if len(buf) != nbytes:
                            raise OSError(f"chunk {coord} has {len(buf)} bytes, expected {nbytes}")
                        raw[j - j0] = np.frombuffer(buf, dtype=dset.dtype)
                    _scale_into(raw[: j1 - j0].T, out[:, j0:j1], scale)
                return
            # general chunking: read the Z-slabs holding mask voxels
            for z in np.unique(zs):
                cols = np.flatnonzero(zs == z)
                slab = dset[:, int(z), :, :]  # (T, Y, X)
                vals = slab[:, ys[cols], xs[cols]]
                tmp = np.empty(vals.shape, dtype=out.dtype)
                _scale_into(vals, tmp, scale)
                out[:, cols] = tmp
        except OSError as err:
            raise corrupt_file_error(path, err, "NSD betas file") from err


def _read_nifti_masked(path: Path, mask: np.ndarray, out: np.ndarray, scale: float,
                       block: int = 64) -> None:
    if path.name.endswith(".gz") and not is_gzip_verified(path):
        _read_nifti_gz_stream(path, mask, out, scale, block)
        return
    import nibabel as nib

    img = None
    try:
        img = nib.Nifti1Image.from_filename(str(path), keep_file_open=True)
        proxy = img.dataobj
        n_t = img.shape[3]
        for t0 in range(0, n_t, block):
            t1 = min(t0 + block, n_t)
            chunk = np.asanyarray(proxy[..., t0:t1])  # (X, Y, Z, b)
            _scale_into(chunk[mask].T, out[t0:t1], scale)
            del chunk
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise corrupt_file_error(path, err, "NSD betas file") from err
    finally:
        try:
            img.dataobj._opener.close_if_mine()  # type: ignore[union-attr]
        except Exception as err:  # noqa: BLE001 - best effort; nibabel closes it on gc anyway
            logger.debug("could not close %s early: %s", path.name, err)


def _read_nifti_gz_stream(path: Path, mask: np.ndarray, out: np.ndarray, scale: float, block: int) -> None:
    """Read the masked voxels of a ``.nii.gz`` in one sequential pass that also verifies the gzip stream.

    The volumes are decompressed in order, ``block`` at a time, and the stream
    is then read to its end, so the gzip CRC-32 and length of every member are
    checked (a flipped byte or a truncation raises, naming the file) at the
    cost of a single decompression. Values go through nibabel's scaling
    (``scl_slope`` / ``scl_inter``), exactly as a nibabel read would.
    """
    import gzip

    import nibabel as nib
    from nibabel.volumeutils import apply_read_scaling

    try:
        img = nib.Nifti1Image.from_filename(str(path))
        proxy = img.dataobj  # where and how nibabel itself would read the data
        shape = tuple(int(v) for v in img.shape)
        dtype = np.dtype(proxy.dtype)
        offset = int(proxy.offset)
        slope, inter = proxy.slope, proxy.inter
        if getattr(proxy, "order", "F") != "F":
            raise ValueError(f"unexpected on-disk order {proxy.order!r}")
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise corrupt_file_error(path, err, "NSD betas file") from err
    x, y, z, n_t = shape[:4]
    n_vol = x * y * z
    xs, ys, zs = np.nonzero(mask)  # C-order of the (X, Y, Z) mask, as vol[mask]
    flat = xs + x * (ys + y * zs)  # the same voxels in the file's Fortran order
    vol_bytes = n_vol * dtype.itemsize
    try:
        with gzip.open(path, "rb") as f:
            _read_exact(f, offset)
            for t0 in range(0, n_t, block):
                t1 = min(t0 + block, n_t)
                buf = _read_exact(f, (t1 - t0) * vol_bytes)
                raw = np.frombuffer(buf, dtype=dtype).reshape(t1 - t0, n_vol)[:, flat]
                del buf
                vals = apply_read_scaling(raw, slope, inter)
                _scale_into(vals, out[t0:t1], scale)
            while f.read(1 << 20):  # to the end: gzip checks CRC-32 and length of each member here
                pass
    except _ShortData as err:
        raise OSError(f"The NSD betas file {path} is damaged: its header declares {n_t} volumes of "
                      f"{shape[:3]} but the data end early ({err}). Nothing from it was used; please "
                      f"{_REDOWNLOAD} from the NSD bucket.") from err
    except (OSError, EOFError, zlib.error) as err:
        raise gzip_error(path, err, "NSD betas file", f"please {_REDOWNLOAD} from the NSD bucket") from err
    mark_gzip_verified(path)


class _ShortData(EOFError):
    """A complete gzip stream holding fewer bytes than the NIfTI header declares."""


def _read_exact(f: Any, n: int) -> bytes:
    buf = f.read(n)
    if len(buf) != n:
        raise _ShortData(f"needed {n} bytes, got {len(buf)}")
    return buf


def read_betas_nonzero_mask(path: str | Path, *, block: int = 64) -> np.ndarray:
    """Voxels that are nonzero on at least one trial of a betas file.

    Reads the file slab by slab (``.hdf5``) or in blocks of volumes
    (``.nii.gz``) so memory stays small.

    Parameters
    ----------
    path : str | pathlib.Path
        Path of a ``.hdf5`` (or ``.h5``) or NIfTI betas file.
    block : int
        Number of volumes read at once from a NIfTI file.

    Returns
    -------
    mask : array of bool, shape (X, Y, Z)
    """
    path = Path(path)
    grid, n_t, _ = read_betas_shape(path)
    mask = np.zeros(grid, dtype=bool)
    if path.name.endswith(".hdf5") or path.name.endswith(".h5"):
        with open_h5(path, "NSD betas file") as f:
            dset = f["betas"]
            try:
                for z in range(grid[2]):
                    mask[:, :, z] = np.any(dset[:, z, :, :] != 0, axis=0).T
            except OSError as err:
                raise corrupt_file_error(path, err, "NSD betas file") from err
        return mask
    import nibabel as nib

    _verify_if_gzip(path, "NSD betas file")
    try:
        img = nib.Nifti1Image.from_filename(str(path), keep_file_open=True)
        for t0 in range(0, n_t, block):
            mask |= np.any(np.asanyarray(img.dataobj[..., t0:min(t0 + block, n_t)]) != 0, axis=-1)
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise corrupt_file_error(path, err, "NSD betas file") from err
    return mask


def read_coco_captions(path: str | Path) -> dict[int, list[str]]:
    """Read a COCO ``captions_{split}.json`` into ``{cocoId: [captions]}``.

    Parameters
    ----------
    path : str | pathlib.Path
        Path of the COCO annotation file.

    Returns
    -------
    captions : dict of int to list of str
        Stripped captions of every COCO image id, in file order.
    """
    path = _require(Path(path), "COCO captions file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        annots = obj["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise corrupt_file_error(path, err, "COCO captions file") from err
    out: dict[int, list[str]] = {}
    for a in annots:
        out.setdefault(int(a["image_id"]), []).append(str(a["caption"]).strip())
    return out


class LazyHDF5Rows:
    """Rows of an HDF5 dataset, read on access (the file is opened per access).

    Picklable (it stores only the path and key), so it can cross process
    boundaries (data-loader workers).

    Parameters
    ----------
    path : str | Path
        The HDF5 file.
    key : str
        The dataset, e.g. ``"imgBrick"``.
    """

    def __init__(self, path: str | Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        with open_h5(self.path, "HDF5 file") as f:
            dset = get_dataset(f, key, self.path)
            self.shape = tuple(dset.shape)
            self.dtype = dset.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<LazyHDF5Rows | {self.path}:{self.key} | shape {self.shape} | {self.dtype}>"

    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            i = int(idx)
            if not -self.shape[0] <= i < self.shape[0]:
                raise IndexError(f"row {i} out of range for {self.shape[0]} rows of {self.path}")
            sel: Any = i % self.shape[0]
            order = None
        elif isinstance(idx, slice):
            sel, order = idx, None
        else:
            rows = np.asarray(idx)
            if rows.dtype == bool:
                rows = np.flatnonzero(rows)
            rows = rows.astype(np.int64) % max(self.shape[0], 1) if rows.size else rows.astype(np.int64)
            if rows.size and rows.max() >= self.shape[0]:
                raise IndexError(f"row index out of range for {self.shape[0]} rows of {self.path}")
            uniq, inverse = np.unique(rows, return_inverse=True)
            sel, order = uniq, inverse
        with open_h5(self.path, "HDF5 file") as f:
            dset = f[self.key]
            try:
                block = dset[sel] if not (isinstance(sel, np.ndarray) and sel.size == 0) else \
                    np.zeros((0, *self.shape[1:]), dtype=self.dtype)
            except OSError as err:
                raise corrupt_file_error(self.path, err, "HDF5 file") from err
        return block if order is None else block[order]
