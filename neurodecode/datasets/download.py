"""``download``: fetch a dataset's files from its public hosts into its real on-disk layout.

One :class:`DownloadSource` per downloadable dataset says where its files are and how a selection
(subjects, sessions, ROI files, betas format, stimuli, variant) picks them; it is attached to the dataset's
registration (``DatasetSpec.source``, ``_builtins.py``). The fetching itself (host listings, resumable and
verified parallel downloads) is :mod:`neurodecode.io.fetch`. Hosts, and where each fact comes from, are
listed in ``docs/download.md``:

- **NSD**: the public S3 bucket ``natural-scenes-dataset`` (the NSD Terms and Conditions must be accepted
  first; the acceptance is recorded once per user), COCO captions from the Hugging Face dataset
  ``pscotti/naturalscenesdataset``.
- **THINGS-EEG2**: OSF components of project ``3jk45`` (preprocessed ``anp5v``, raw ``crxs4``, images
  ``y63gw``), one zip per subject; the ATM / NICE 250 Hz variant from the Hugging Face dataset
  ``LidongYang/EEG_Image_decode``.
- **THINGS-MEG**: OpenNeuro ``ds004212`` on the public S3 bucket ``openneuro.org``; the THINGS images need
  a manual step (a password-protected archive, see :data:`THINGS_IMAGES_HELP`).
- **MEG-MASC**: OSF projects ``ag3kj``, ``h2tzn`` and ``u5327`` (parts of one BIDS folder).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from ..io.fetch import RemoteFile, fetch_files, format_size, list_hf, list_osf, list_s3
from ..utils import atomic_write_json, fill_doc, get_config, get_config_dir, logger, verbose
from .registry import get_dataset, list_datasets

__all__ = ["DownloadReport", "DownloadSelection", "DownloadSource", "NSD_TERMS_URL", "THINGS_IMAGES_HELP",
           "download", "downloadable_datasets", "nsd_terms_path"]

# -- hosts -----------------------------------------------------------------------------------------------

#: The NSD bucket (``aws s3 ls --no-sign-request s3://natural-scenes-dataset/``), virtual-host style.
NSD_BUCKET = "https://natural-scenes-dataset.s3.amazonaws.com"
#: OpenNeuro's public bucket, path style (a bucket name with dots breaks TLS in virtual-host style).
OPENNEURO_BUCKET = "https://s3.amazonaws.com/openneuro.org"
OSF_API = "https://api.osf.io/v2"
HF_ENDPOINT = "https://huggingface.co"
#: The NSD Terms and Conditions, and the NSD Data Access Agreement form that goes with them.
NSD_TERMS_URL = "https://cvnlab.slite.page/p/IB6BSeW_7o/Terms-and-Conditions"
NSD_FORM_URL = ("https://docs.google.com/forms/d/e/1FAIpQLSduTPeZo54uEMKD-ihXmRhx0hBDdLHNsVyeo_kCb8qbyAkXuQ"
                "/viewform")
NSD_CAPTIONS_REPO = "pscotti/naturalscenesdataset"
EEG2_OSF = {"official": "anp5v", "raw": "crxs4", "images": "y63gw"}
EEG2_ATM_REPO, EEG2_ATM_DIR = "LidongYang/EEG_Image_decode", "Preprocessed_data_250Hz"
MEG_PREFIX = "ds004212/"
MASC_OSF = ("ag3kj", "h2tzn", "u5327")

#: How to get the THINGS images THINGS-MEG's metadata names (they are not part of ds004212).
THINGS_IMAGES_HELP = """\
THINGS-MEG: the THINGS images are not part of OpenNeuro ds004212 and need one manual step (their licence
asks you to read its terms first):
  1. open https://osf.io/jum2f/ (THINGS object concept and image database), read the licence and the
     password in password_images.txt;
  2. download images_THINGS.zip and extract it with that password: it holds object_images/<concept>/*.jpg;
  3. make the paths of sample_attributes_P<n>.csv (column image_path) exist under {images}:
       images_meg/<concept>/<file>.jpg   = object_images/<concept>/<file>.jpg
       images_test_meg/<file>.jpg         = object_images/<concept>/<file>.jpg (concept = file name
                                            without its _NNs suffix)
     (symbolic links are fine), or point data.options.images_root at a folder laid out that way.
Without the images, load_things_meg still loads the MEG data (stimulus ids only, no image targets)."""


@dataclass(frozen=True)
class DownloadSelection:
    """What to download of a dataset (already validated; ``None`` means everything).

    Parameters
    ----------
    subjects : tuple of int | None
        Subject numbers.
    sessions : tuple of int | None
        Session numbers.
    rois : tuple of str | None
        NSD ROI names (``nsdgeneral``, ``streams``, ...).
    betas_format : str
        NSD betas format, ``"hdf5"`` or ``"nifti"``.
    stimuli : bool
        Download the stimuli (images, audio) too.
    captions : bool
        NSD: download the COCO captions (``COCO_73k_annots_curated.npy``).
    variant : str | None
        The dataset's variant (THINGS-EEG2: ``official``, ``atm``, ``raw``; THINGS-MEG: ``preprocessed``,
        ``raw``, ``both``).
    """

    subjects: tuple[int, ...] | None = None
    sessions: tuple[int, ...] | None = None
    rois: tuple[str, ...] | None = None
    betas_format: str = "hdf5"
    stimuli: bool = True
    captions: bool = False
    variant: str | None = None


@dataclass(frozen=True)
class DownloadSource:
    """Where a dataset's files are and how a :class:`DownloadSelection` picks them.

    Parameters
    ----------
    label : str
        Display name.
    list_files : callable
        ``list_files(selection, hosts) -> list of RemoteFile``: lists the selected files (paths in the
        dataset's real layout); ``hosts`` maps each host kind to its base URL.
    hosts : mapping
        Host kind (``"s3"``, ``"osf"``, ``"hf"``) to its real base URL.
    primary : callable
        ``primary(variant) -> str``: the host kind a single mirror URL replaces.
    subjects : tuple of int
        The valid subject numbers.
    sessions : tuple of int
        The valid session numbers (empty: sessions cannot be selected).
    options : tuple of str
        The selection options besides subjects and stimuli that apply (``"sessions"``, ``"rois"``,
        ``"betas_format"``, ``"captions"``, ``"variant"``).
    variants : tuple of str
        Valid variants (empty: none); the first is the default.
    root_setting : str
        The setting naming the dataset's root (``NEURODECODE_NSD_ROOT``), the default ``root``.
    terms : callable | None
        ``terms(accept)``: raises ``PermissionError`` with instructions unless the dataset's terms are (or,
        with ``accept``, get) accepted.
    notes : callable | None
        ``notes(root, selection) -> list of str``: manual steps still needed after the download.
    """

    label: str
    list_files: Callable[[DownloadSelection, Mapping[str, str]], list[RemoteFile]]
    hosts: Mapping[str, str]
    primary: Callable[[str | None], str]
    subjects: tuple[int, ...]
    sessions: tuple[int, ...] = ()
    options: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    root_setting: str = ""
    terms: Callable[[bool], None] | None = None
    notes: Callable[[Path, DownloadSelection], list[str]] | None = None


@dataclass
class DownloadReport:
    """What :func:`download` found and did.

    Parameters
    ----------
    dataset : str
        The dataset name.
    root : pathlib.Path
        The download root.
    files : list of RemoteFile
        The selected files (paths relative to ``root``).
    dry_run : bool
        True when nothing was downloaded (the files were only listed).
    present : list of str
        Paths already at their place with their listed size before this call.
    downloaded : list of str
        Paths downloaded and verified by this call.
    skipped : list of str
        Paths found complete and verified (not downloaded again).
    n_bytes : int
        Bytes received by this call.
    notes : list of str
        Manual steps still needed (e.g. images behind a licence).
    """

    dataset: str
    root: Path
    files: list[RemoteFile]
    dry_run: bool
    present: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        """Bytes of every selected file (as listed by the hosts)."""
        return sum(f.size or 0 for f in self.files)

    def summary(self) -> str:
        """One line: what was listed or downloaded, and the sizes.

        Returns
        -------
        text : str
            E.g. ``"nsd: 12 files, 3.4 GB (2 already present)"``.
        """
        head = f"{self.dataset}: {len(self.files)} file(s), {format_size(self.total_size)}"
        if self.dry_run:
            return f"{head}; {len(self.present)} already present (dry run: nothing downloaded)"
        return (f"{head} in {self.root}: {len(self.downloaded)} downloaded ({format_size(self.n_bytes)} "
                f"received), {len(self.skipped)} already present and verified")


# -- NSD ------------------------------------------------------------------------------------------------

_NSD_BETAS = "func1pt8mm/betas_fithrf_GLMdenoise_RR"
_NSD_EXT = {"hdf5": "hdf5", "nifti": "nii.gz"}


def nsd_terms_path() -> Path:
    """Where the acceptance of the NSD Terms and Conditions is recorded (once per user).

    Returns
    -------
    path : pathlib.Path
        ``nsd_terms_accepted.json`` in :func:`neurodecode.utils.get_config_dir`.
    """
    return get_config_dir() / "nsd_terms_accepted.json"


def _nsd_terms(accept: bool) -> None:
    path = nsd_terms_path()
    if path.is_file():
        return
    if not accept:
        raise PermissionError(
            "The Natural Scenes Dataset is shared under the NSD Terms and Conditions, which you must accept "
            f"before downloading it:\n  1. read them: {NSD_TERMS_URL}\n  2. fill in the NSD Data Access "
            f"Agreement form: {NSD_FORM_URL}\n  3. run the same command with --accept-nsd-terms (Python: "
            f"download(..., accept_terms=True)). The acceptance is recorded once, in {path}.")
    from .. import __version__

    atomic_write_json(path, {"accepted": True, "terms": NSD_TERMS_URL, "form": NSD_FORM_URL,
                             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             "neurodecode": __version__})
    logger.info("Recorded your acceptance of the NSD Terms and Conditions in %s", path)


def _nsd_wanted(path: str, sel: DownloadSelection) -> bool:
    """Whether an NSD bucket key belongs to the selection."""
    if path in ("nsddata/experiments/nsd/nsd_expdesign.mat", "nsddata/experiments/nsd/nsd_stim_info_merged.csv"):
        return True
    if path == "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5":
        return sel.stimuli
    if path == "COCO_73k_annots_curated.npy":
        return sel.captions
    m = re.fullmatch(r"nsddata(?:_betas)?/(?:ppdata|freesurfer)/subj(\d\d)/(.+)", path)
    if m is None or (sel.subjects is not None and int(m.group(1)) not in sel.subjects):
        return False
    rest = m.group(2)
    if rest in ("behav/responses.tsv", "func1pt8mm/brainmask.nii.gz", f"{_NSD_BETAS}/ncsnr.nii.gz"):
        return True
    roi = re.fullmatch(r"func1pt8mm/roi/(?:[lr]h\.)?(.+)\.nii\.gz|label/(.+)\.mgz\.ctab", rest)
    if roi is not None:
        return sel.rois is None or (roi.group(1) or roi.group(2)) in sel.rois
    betas = re.fullmatch(rf"{_NSD_BETAS}/betas_session(\d\d)\.(hdf5|nii\.gz)", rest)
    return betas is not None and betas.group(2) == _NSD_EXT[sel.betas_format] and (
        sel.sessions is None or int(betas.group(1)) in sel.sessions)


def _list_many(calls: Sequence[Callable[[], list[RemoteFile]]], jobs: int = 8) -> list[RemoteFile]:
    """Run listing calls in a few threads; their files, in call order."""
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(calls)))) as pool:
        return [f for files in pool.map(lambda call: call(), calls) for f in files]


def _nsd_files(sel: DownloadSelection, hosts: Mapping[str, str]) -> list[RemoteFile]:
    s3 = hosts["s3"]
    calls = [partial(list_s3, s3, "nsddata/experiments/nsd/nsd_")]
    if sel.stimuli:
        calls.append(partial(list_s3, s3, "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"))
    if sel.captions:
        calls.append(partial(list_hf, NSD_CAPTIONS_REPO, endpoint=hosts["hf"], recursive=False))
    for s in sel.subjects or range(1, 9):
        subj = f"subj{s:02d}"
        calls += [partial(list_s3, s3, f"nsddata/ppdata/{subj}/behav/responses.tsv"),
                  partial(list_s3, s3, f"nsddata/ppdata/{subj}/func1pt8mm/brainmask.nii.gz"),
                  partial(list_s3, s3, f"nsddata/ppdata/{subj}/func1pt8mm/roi/"),
                  partial(list_s3, s3, f"nsddata/freesurfer/{subj}/label/"),
                  partial(list_s3, s3, f"nsddata_betas/ppdata/{subj}/{_NSD_BETAS}/")]
    files = [f for f in _list_many(calls) if _nsd_wanted(f.path, sel)]
    _warn_missing_sessions(files, sel)
    return files


def _warn_missing_sessions(files: list[RemoteFile], sel: DownloadSelection) -> None:
    """Say which requested NSD sessions a subject does not have (subjects 3, 4, 6, 8 have 30-32)."""
    if sel.sessions is None:
        return
    found: dict[int, set[int]] = {}
    for f in files:
        m = re.search(r"subj(\d\d)/.*betas_session(\d\d)\.", f.path)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    for s in sel.subjects or range(1, 9):
        missing = sorted(set(sel.sessions) - found.get(s, set()))
        if missing:
            logger.warning("NSD subj%02d has no %s betas for session(s) %s on the host", s, sel.betas_format,
                           ", ".join(map(str, missing)))


# -- THINGS-EEG2 ------------------------------------------------------------------------------------------


def _eeg2_files(sel: DownloadSelection, hosts: Mapping[str, str]) -> list[RemoteFile]:
    subjects = set(sel.subjects or range(1, 11))
    files: list[RemoteFile] = []
    if sel.variant in ("official", "raw"):
        dest = "eeg_dataset/preprocessed_data" if sel.variant == "official" else "eeg_dataset/raw_data"
        for f in list_osf(EEG2_OSF[sel.variant], api_url=hosts["osf"]):
            m = re.fullmatch(r"sub-?(\d+)\.zip", f.path.rsplit("/", 1)[-1], flags=re.IGNORECASE)
            if m and int(m.group(1)) in subjects:
                sub = f"sub-{int(m.group(1)):02d}"
                files.append(replace(f, path=f"{dest}/{sub}.zip", extract_to=f"{dest}/{sub}"))
    else:
        for f in list_hf(EEG2_ATM_REPO, EEG2_ATM_DIR, endpoint=hosts["hf"]):
            m = re.match(rf"{EEG2_ATM_DIR}/sub-(\d+)/", f.path)
            if m and int(m.group(1)) in subjects:
                files.append(f)
    if sel.stimuli:
        for f in list_osf(EEG2_OSF["images"], api_url=hosts["osf"]):
            name = f.path.rsplit("/", 1)[-1]
            if name == "image_metadata.npy":
                files.append(replace(f, path="image_set/image_metadata.npy"))
            elif name in ("training_images.zip", "test_images.zip"):
                files.append(replace(f, path=f"image_set/{name}", extract_to=f"image_set/{name[:-4]}"))
    return files


# -- THINGS-MEG ---------------------------------------------------------------------------------------------


def _meg_wanted(path: str, sel: DownloadSelection) -> bool:
    subjects = set(sel.subjects or range(1, 5))
    if "/" not in path:
        return True  # dataset_description.json, participants.tsv, README, ...
    m = re.fullmatch(r"derivatives/preprocessed/preprocessed_P(\d+)-epo(?:-\d+)?\.fif", path)
    if m:
        return sel.variant in ("preprocessed", "both") and int(m.group(1)) in subjects
    m = re.fullmatch(r"sourcedata/sample_attributes_P(\d+)\.csv", path)
    if m:
        return int(m.group(1)) in subjects
    m = re.match(r"sub-BIGMEG(\d+)/(?:ses-(\d+)/)?", path)
    if m and sel.variant in ("raw", "both") and int(m.group(1)) in subjects:
        return m.group(2) is None or sel.sessions is None or int(m.group(2)) in sel.sessions
    return False


def _meg_files(sel: DownloadSelection, hosts: Mapping[str, str]) -> list[RemoteFile]:
    s3 = hosts["s3"]
    calls = [partial(list_s3, s3, MEG_PREFIX, delimiter="/", strip=MEG_PREFIX),
             partial(list_s3, s3, f"{MEG_PREFIX}sourcedata/sample_attributes_P", strip=MEG_PREFIX)]
    if sel.variant in ("preprocessed", "both"):
        calls.append(partial(list_s3, s3, f"{MEG_PREFIX}derivatives/preprocessed/", strip=MEG_PREFIX))
    if sel.variant in ("raw", "both"):
        calls += [partial(list_s3, s3, f"{MEG_PREFIX}sub-BIGMEG{s}/", strip=MEG_PREFIX)
                  for s in sel.subjects or range(1, 5)]
    return [f for f in _list_many(calls) if _meg_wanted(f.path, sel)]


def _meg_notes(root: Path, sel: DownloadSelection) -> list[str]:
    if not sel.stimuli or (root / "images").is_dir():
        return []
    return [THINGS_IMAGES_HELP.format(images=root / "images")]


# -- MEG-MASC -------------------------------------------------------------------------------------------------


def _masc_path(path: str) -> str:
    """A path of the MASC OSF storages relative to the BIDS root (a leading ``bids_anonym/`` dropped)."""
    return path[len("bids_anonym/"):] if path.startswith("bids_anonym/") else path


def _masc_wanted(path: str, sel: DownloadSelection, *, folder: bool = False) -> bool:
    parts = _masc_path(path).strip("/").split("/")
    if parts == [""] or parts == ["bids_anonym"]:
        return True
    if len(parts) == 1 and not folder:
        return True  # participants.tsv, dataset_description.json, README, ...
    if parts[0] == "stimuli":
        return sel.stimuli
    m = re.fullmatch(r"sub-(\d+)", parts[0])
    if m is None or (sel.subjects is not None and int(m.group(1)) not in sel.subjects):
        return False
    s = re.fullmatch(r"ses-(\d+)", parts[1]) if len(parts) > 1 else None
    return s is None or sel.sessions is None or int(s.group(1)) in sel.sessions


def _masc_files(sel: DownloadSelection, hosts: Mapping[str, str]) -> list[RemoteFile]:
    keep = partial(_masc_wanted, sel=sel, folder=True)
    calls = [partial(list_osf, node, api_url=hosts["osf"], keep_folder=keep) for node in MASC_OSF]
    files: dict[str, RemoteFile] = {}
    for f in _list_many(calls, jobs=len(MASC_OSF)):
        path = _masc_path(f.path)
        if _masc_wanted(path, sel) and path not in files:  # the parts may repeat the top-level files
            files[path] = replace(f, path=path)
    return list(files.values())


# -- the sources ----------------------------------------------------------------------------------------------

_NSD_SOURCE = DownloadSource(
    label="NSD", list_files=_nsd_files, hosts={"s3": NSD_BUCKET, "hf": HF_ENDPOINT}, primary=lambda v: "s3",
    subjects=tuple(range(1, 9)), sessions=tuple(range(1, 41)),
    options=("sessions", "rois", "betas_format", "captions"), root_setting="NEURODECODE_NSD_ROOT",
    terms=_nsd_terms)
_EEG2_SOURCE = DownloadSource(
    label="THINGS-EEG2", list_files=_eeg2_files, hosts={"osf": OSF_API, "hf": HF_ENDPOINT},
    primary=lambda v: "hf" if v == "atm" else "osf", subjects=tuple(range(1, 11)), options=("variant",),
    variants=("official", "atm", "raw"), root_setting="NEURODECODE_THINGS_EEG2_ROOT")
_MEG_SOURCE = DownloadSource(
    label="THINGS-MEG", list_files=_meg_files, hosts={"s3": OPENNEURO_BUCKET}, primary=lambda v: "s3",
    subjects=tuple(range(1, 5)), sessions=tuple(range(1, 13)), options=("sessions", "variant"),
    variants=("preprocessed", "raw", "both"), root_setting="NEURODECODE_THINGS_MEG_ROOT", notes=_meg_notes)
_MASC_SOURCE = DownloadSource(
    label="MEG-MASC", list_files=_masc_files, hosts={"osf": OSF_API}, primary=lambda v: "osf",
    subjects=tuple(range(1, 28)), sessions=(0, 1), options=("sessions",), root_setting="NEURODECODE_MASC_ROOT")


# -- the public entry point -----------------------------------------------------------------------------------


def downloadable_datasets() -> list[str]:
    """Names of the registered datasets that :func:`download` can fetch.

    Returns
    -------
    names : list of str
        Registry names (``"nsd"``, ``"things_eeg2"``, ``"things_meg"``, ``"masc"``, ...).
    """
    return [n for n in list_datasets() if getattr(get_dataset(n), "source", None) is not None]


def _source(name: str) -> DownloadSource:
    source = getattr(get_dataset(name), "source", None)
    if source is None:
        raise ValueError(f"The dataset {name!r} has no download source; downloadable datasets: "
                         f"{', '.join(downloadable_datasets())}.")
    return source


def _numbers(value: Any, what: str, valid: Sequence[int]) -> tuple[int, ...] | None:
    """``None``, an int, a sequence, or a string like ``"1,2,5-7"`` -> sorted numbers, checked."""
    if value is None:
        return None
    if isinstance(value, str):
        out: list[int] = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if m is None:
                raise ValueError(f"{what} must be numbers like 1,2 or ranges like 1-3, got {value!r}")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            out += range(lo, hi + 1)
        value = out
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    try:
        numbers = sorted({int(v) for v in value if not isinstance(v, bool)})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be integers, got {value!r}") from err
    bad = [n for n in numbers if n not in valid]
    if bad or not numbers:
        raise ValueError(f"Invalid {what} {bad or value!r}: the valid ones are {valid[0]}..{valid[-1]}.")
    return tuple(numbers)


def _names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
    if not names:
        raise ValueError(f"rois must name at least one ROI (e.g. nsdgeneral,streams), got {value!r}")
    return names


def _selection(source: DownloadSource, **options: Any) -> DownloadSelection:
    """Validate the options against what the dataset allows."""
    defaults = DownloadSelection()
    for key in ("sessions", "rois", "captions", "variant"):
        if options[key] not in (None, False) and key not in source.options:
            raise ValueError(f"{source.label} downloads take no {key!r} selection (it applies to: "
                             f"{', '.join(n for n in downloadable_datasets() if key in _source(n).options)}).")
    if options["betas_format"] not in _NSD_EXT:
        raise ValueError(f"betas_format must be 'hdf5' or 'nifti', got {options['betas_format']!r}")
    variant = options["variant"]
    if source.variants:
        variant = source.variants[0] if variant is None else variant
        if variant not in source.variants:
            raise ValueError(f"Invalid variant {variant!r} for {source.label}: choose one of "
                             f"{', '.join(source.variants)} (default {source.variants[0]}).")
    return replace(defaults, subjects=_numbers(options["subjects"], "subjects", source.subjects),
                   sessions=_numbers(options["sessions"], "sessions", source.sessions or (0,)),
                   rois=_names(options["rois"]), betas_format=options["betas_format"],
                   stimuli=bool(options["stimuli"]), captions=bool(options["captions"]), variant=variant)


def _hosts(source: DownloadSource, variant: str | None, base_url: Any) -> dict[str, str]:
    """The source's hosts with the mirror(s) applied: a URL replaces the primary host, ``KIND=URL`` a named one."""
    hosts = dict(source.hosts)
    if base_url is None:
        return hosts
    items = [base_url] if isinstance(base_url, str) else (
        [f"{k}={v}" for k, v in base_url.items()] if isinstance(base_url, Mapping) else list(base_url))
    for item in items:
        kind, sep, url = str(item).partition("=")
        if not sep or "://" in kind:
            kind, url = source.primary(variant), str(item)
        if kind not in ("s3", "osf", "hf"):
            raise ValueError(f"Unknown host kind {kind!r} in the mirror {item!r}: use s3=URL, osf=URL or hf=URL "
                             f"({source.label} uses {', '.join(f'{k}: {v}' for k, v in source.hosts.items())}).")
        if not re.match(r"https?://", url):
            raise ValueError(f"A mirror must be an http(s) URL, got {url!r}")
        if kind not in hosts:
            logger.debug("%s uses no %s host: mirror %s ignored", source.label, kind, url)
            continue
        hosts[kind] = url.rstrip("/")
    return hosts


def _root(root: str | Path | None, source: DownloadSource) -> Path:
    if root is None:
        root = get_config(source.root_setting) if source.root_setting else None
        if not root:
            raise ValueError(f"Give the folder to download {source.label} into (--root DIR, or set "
                             f"{source.root_setting}).")
    return Path(root).expanduser()


def _present(files: Sequence[RemoteFile], root: Path) -> list[str]:
    """Files already at their place with their listed size (archives: their target folder exists)."""
    out = []
    for f in files:
        p = root / (f.extract_to or f.path)
        if (f.extract_to and p.is_dir()) or (p.is_file() and (f.size is None or p.stat().st_size == f.size)):
            out.append(f.path)
    return out


@verbose
@fill_doc
def download(name: str, root: str | Path | None = None, *, subjects: Any = None, sessions: Any = None,
             rois: Any = None, betas_format: str = "hdf5", stimuli: bool = True, captions: bool = False,
             variant: str | None = None, dry_run: bool = False, jobs: int = 4, base_url: Any = None,
             accept_terms: bool = False, retries: int = 5, backoff: float = 1.0,
             verbose: bool | str | int | None = None) -> DownloadReport:
    """Download a dataset (or a part of it) from its public hosts into its real on-disk layout.

    The files are listed from the hosts (with their sizes and, where the host gives them, checksums),
    the selection picks some, and :func:`neurodecode.io.fetch.fetch_files` downloads them in parallel:
    each is verified (checksum, else size) before it is renamed into place, an interrupted download
    resumes from its ``.part`` file (run the same call again), and files already present and verified
    are skipped. The result is the layout the dataset's loader reads, so ``neurodecode fit RECIPE --root
    ROOT`` runs on it as it is. ``docs/download.md`` lists the hosts and what each dataset allows.

    Parameters
    ----------
    name : str
        A downloadable dataset (:func:`downloadable_datasets`): ``"nsd"``, ``"things_eeg2"``,
        ``"things_meg"``, ``"masc"``.
    root : str | Path | None
        Folder to download into (the dataset root). ``None``: the dataset's root setting
        (``NEURODECODE_NSD_ROOT``, ``NEURODECODE_THINGS_EEG2_ROOT``, ``NEURODECODE_THINGS_MEG_ROOT``,
        ``NEURODECODE_MASC_ROOT``).
    subjects : int | sequence of int | str | None
        Subject numbers (``"1,2"`` or ``"1-4"`` accepted); ``None``: all.
    sessions : int | sequence of int | str | None
        Sessions (NSD betas sessions 1..40, THINGS-MEG raw sessions 1..12, MEG-MASC sessions 0..1);
        ``None``: all.
    rois : str | sequence of str | None
        NSD ROI files (``"nsdgeneral,streams"``; the ``lh.``/``rh.`` files and label tables come
        along); ``None``: every ROI file.
    betas_format : ``"hdf5"`` | ``"nifti"``
        NSD betas format (``betas_sessionNN.hdf5`` or ``.nii.gz``).
    stimuli : bool
        Download the stimuli too (NSD ``nsd_stimuli.hdf5``, the THINGS-EEG2 image set, the MEG-MASC
        audio); THINGS-MEG's images need a manual step, described in the returned notes.
    captions : bool
        NSD: also download ``COCO_73k_annots_curated.npy`` (COCO captions by 73k id).
    variant : str | None
        THINGS-EEG2: ``"official"`` (default; OSF preprocessed, 100 Hz), ``"atm"`` (the 250 Hz
        preprocessing of ATM / NICE) or ``"raw"``; THINGS-MEG: ``"preprocessed"`` (default; the
        preprocessed epochs the loader reads), ``"raw"`` (the CTF recordings) or ``"both"``.
    dry_run : bool
        Only list the selected files and their total size (nothing is written).
    jobs : int
        Files downloaded at once.
    base_url : str | mapping | sequence of str | None
        A mirror: a URL replaces the dataset's main host (NSD's bucket, OSF's API, ...); ``"KIND=URL"``
        entries (or a ``{kind: url}`` mapping) replace named hosts (``s3``, ``osf``, ``hf``).
    accept_terms : bool
        Accept the dataset's terms (NSD's Terms and Conditions) and record the acceptance once per user
        (:func:`nsd_terms_path`); without it, a dataset with terms not yet accepted raises
        ``PermissionError`` with the steps.
    retries : int
        Lost connections tolerated in a row per file (each retry resumes where the transfer stopped).
    backoff : float
        Seconds before the first retry (doubled at each, at most 30 s).
    %(verbose)s

    Returns
    -------
    report : DownloadReport
        The selected files, what was downloaded or skipped, and the manual steps left (``notes``).

    Raises
    ------
    PermissionError
        The dataset's terms have not been accepted.
    neurodecode.io.fetch.DownloadError
        A file could not be downloaded and verified (the message names it and its URL).
    """
    source = _source(name)
    sel = _selection(source, subjects=subjects, sessions=sessions, rois=rois, betas_format=betas_format,
                     stimuli=stimuli, captions=captions, variant=variant)
    hosts = _hosts(source, sel.variant, base_url)
    root = _root(root, source)
    if source.terms is not None and not dry_run:
        source.terms(accept_terms)
    files = sorted(source.list_files(sel, hosts), key=lambda f: f.path)
    if not files:
        raise FileNotFoundError(f"No {source.label} file on {', '.join(hosts.values())} matches the selection "
                                f"({_describe(sel)}).")
    report = DownloadReport(name, root, files, dry_run, present=_present(files, root))
    if dry_run:
        logger.info("%s", report.summary())
        return report
    fetched = fetch_files(files, root, jobs=jobs, retries=retries, backoff=backoff)
    report.downloaded, report.skipped, report.n_bytes = fetched.downloaded, fetched.skipped, fetched.n_bytes
    report.notes = source.notes(root, sel) if source.notes is not None else []
    logger.info("%s", report.summary())
    for note in report.notes:
        logger.warning("%s", note)
    return report


def _describe(sel: DownloadSelection) -> str:
    parts = [f"{k}={v}" for k, v in vars(sel).items() if v not in (None, ())]
    return ", ".join(parts)
