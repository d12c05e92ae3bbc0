"""Fetching public dataset files: host listings and a resumable, verified, parallel download.

Three listing APIs cover the hosts of the built-in datasets (``docs/download.md`` names them):

- **S3 ListObjectsV2** (``GET <bucket>/?list-type=2&prefix=...``, XML): each key with its size and ETag. The
  ETag is the file's MD5 for a single-part upload; an ETag with a ``-N`` suffix (multipart upload) is not
  an MD5, and such a file is verified by its size only.
- **OSF API v2** (``GET https://api.osf.io/v2/nodes/<id>/files/osfstorage/``, JSON): files with their size
  and ``attributes.extra.hashes`` (``sha256``, ``md5``), folders followed through
  ``relationships.files.links.related.href``, pages through ``links.next``.
- **Hugging Face tree API** (``GET <endpoint>/api/datasets/<repo>/tree/<revision>/<path>?recursive=true``,
  JSON): files with their size; a Git-LFS file's ``lfs.oid`` is its SHA-256.

Each file becomes a :class:`RemoteFile`; :func:`fetch_files` downloads a list of them with
:func:`pooch.retrieve`, extended (through its ``downloader=`` hook, :class:`ResumableDownloader`) with what
pooch lacks: an HTTP ``Range`` resume from a persistent ``<name>.part`` file and retries with exponential
backoff. pooch then checks the hash (when the host gives one) and renames the file into place, so a file at
its final path is always complete and verified; a file the host gives no hash for is checked against its
listed size. A mismatch deletes the partial file and downloads again; when that fails too, a
:class:`DownloadError` names the file and its URL and nothing is left at the final path. Files already
present and verified are skipped (rerunning is how an interrupted download resumes), downloads run in a
thread pool, each file is written under its own lock file (two processes downloading into one folder never
write the same file), and archives (``.zip``) are extracted member by member (each written atomically)
where :attr:`RemoteFile.extract_to` says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils import ProgressBar, atomic_path, atomic_write_json, logger
from ..utils.locks import hold_lock

__all__ = ["DownloadError", "FetchReport", "MANIFEST_NAME", "RemoteFile", "ResumableDownloader",
           "fetch_files", "format_size", "list_hf", "list_osf", "list_s3", "parse_hf_listing",
           "parse_osf_listing", "parse_s3_listing"]

#: The record of verified files a download keeps in its root (lets a rerun skip them without hashing).
MANIFEST_NAME = ".neurodecode-download.json"
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_MiB = 1 << 20


class DownloadError(OSError):
    """A file could not be downloaded and verified (the message names the file and its URL)."""


class _Cancelled(Exception):
    """The download was interrupted (Ctrl-C in the main thread)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset on its host.

    Parameters
    ----------
    path : str
        Where the file goes, as a POSIX path relative to the download root (``a/b/c.nii.gz``).
    url : str
        Where it is downloaded from.
    size : int | None
        Its size in bytes, as listed by the host (``None``: unknown).
    hash : str | None
        Its checksum as ``"<algorithm>:<hex digest>"`` (``"md5:..."``, ``"sha256:..."``), as listed by the
        host; ``None`` when the host gives none (the file is then checked against ``size``).
    extract_to : str | None
        For a ``.zip`` archive: the folder (relative to the root) its members are extracted into; the
        archive is removed afterwards. A single top-level folder in the archive named like this folder
        (``sub-01/`` for ``.../sub-01``) is not repeated. ``None`` keeps the file as it is.
    """

    path: str
    url: str
    size: int | None = None
    hash: str | None = None
    extract_to: str | None = None

    def __post_init__(self) -> None:
        parts = Path(self.path).parts
        if not self.path or Path(self.path).is_absolute() or ".." in parts:
            raise ValueError(f"RemoteFile.path must be a relative path inside the root, got {self.path!r}")
        if self.hash is not None and ":" not in self.hash:
            raise ValueError(f"RemoteFile.hash must read 'algorithm:digest', got {self.hash!r}")


@dataclass
class FetchReport:
    """What :func:`fetch_files` did.

    Parameters
    ----------
    downloaded : list of str
        Paths (relative to the root) downloaded and verified by this call.
    skipped : list of str
        Paths that were already present and verified.
    n_bytes : int
        Bytes received over the network by this call (resumed parts not counted twice).
    """

    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_bytes: int = 0


def format_size(n_bytes: int | None) -> str:
    """A byte count for people (``1.5 GB``; decimal units, as hosts list them).

    Parameters
    ----------
    n_bytes : int | None
        The size; ``None`` for unknown.

    Returns
    -------
    text : str
        E.g. ``"512 B"``, ``"3.2 MB"``, ``"1.05 GB"``, or ``"? B"`` when unknown.
    """
    if n_bytes is None:
        return "? B"
    value = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"  # pragma: no cover


# -- HTTP -----------------------------------------------------------------------------------------------

_LOCAL = threading.local()


def _session() -> Any:
    """A ``requests.Session`` of this thread (sessions are not shared between threads)."""
    import requests

    if getattr(_LOCAL, "session", None) is None:
        _LOCAL.session = requests.Session()
        _LOCAL.session.headers["User-Agent"] = "neurodecode-download"
    return _LOCAL.session


def _transient(err: BaseException) -> bool:
    """Whether a request error is worth retrying (connection trouble, a timeout, a 5xx or 429 answer)."""
    import requests

    if isinstance(err, requests.HTTPError):
        status = err.response.status_code if err.response is not None else 0
        return status >= 500 or status == 429
    return isinstance(err, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError))


def _get(url: str, *, params: dict | None = None, retries: int = 4, backoff: float = 1.0,
         timeout: float = 60.0) -> Any:
    """GET a listing (small answer) with retries; a clear ``DownloadError`` when it keeps failing."""
    import requests

    for attempt in range(retries + 1):
        try:
            response = _session().get(url, params=params, timeout=timeout)
            response.raise_for_status()
            return response
        except requests.RequestException as err:
            if attempt == retries or not _transient(err):
                hint = (" Check the network connection (and any proxy), or point --mirror at a reachable copy."
                        if isinstance(err, (requests.ConnectionError, requests.Timeout)) else "")
                raise DownloadError(f"Could not list {_response_url(url, params)}: {err}.{hint}") from err
            time.sleep(min(backoff * 2 ** attempt, 30.0))
    raise AssertionError("unreachable")  # pragma: no cover


def _response_url(url: str, params: dict | None) -> str:
    """``url`` with its query ``params`` (for messages)."""
    if not params:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(params)}"


# -- S3 ------------------------------------------------------------------------------------------------


def parse_s3_listing(text: str | bytes) -> tuple[list[dict[str, Any]], str | None]:
    """Parse one page of an S3 ListObjectsV2 answer.

    Parameters
    ----------
    text : str | bytes
        The XML body (``<ListBucketResult>``).

    Returns
    -------
    entries : list of dict
        One ``{"key", "size", "etag"}`` per ``<Contents>`` (the ETag without its quotes).
    next_token : str | None
        The ``NextContinuationToken`` when ``IsTruncated`` is true, else ``None``.
    """
    root = ET.fromstring(text)
    ns = _S3_NS if root.tag.startswith(_S3_NS) else ""
    entries = []
    for item in root.iter(f"{ns}Contents"):
        key = item.findtext(f"{ns}Key")
        size = item.findtext(f"{ns}Size")
        etag = (item.findtext(f"{ns}ETag") or "").strip().strip('"')
        if key is None or key.endswith("/"):
            continue
        entries.append({"key": key, "size": int(size) if size is not None else None, "etag": etag or None})
    truncated = (root.findtext(f"{ns}IsTruncated") or "false").strip().lower() == "true"
    token = root.findtext(f"{ns}NextContinuationToken") if truncated else None
    if truncated and not token:
        raise DownloadError("An S3 listing page says it is truncated but gives no NextContinuationToken")
    return entries, token


def _etag_hash(etag: str | None) -> str | None:
    """The MD5 an S3 ETag is (single-part upload), or ``None`` for a multipart ETag (``<hex>-<N>``)."""
    if etag and re.fullmatch(r"[0-9a-fA-F]{32}", etag):
        return f"md5:{etag.lower()}"
    return None


def list_s3(bucket_url: str, prefix: str, *, delimiter: str | None = None, strip: str = "",
            timeout: float = 60.0) -> list[RemoteFile]:
    """Every object of a public S3 bucket under ``prefix`` (ListObjectsV2, all pages).

    Parameters
    ----------
    bucket_url : str
        The bucket's HTTP(S) root, virtual-host style (``https://natural-scenes-dataset.s3.amazonaws.com``)
        or path style (``https://s3.amazonaws.com/openneuro.org``), or any S3-compatible mirror.
    prefix : str
        Key prefix (``nsddata/ppdata/subj01/``; a whole key lists that object).
    delimiter : str | None
        ``"/"`` lists only the objects directly under ``prefix`` (no sub-folders).
    strip : str
        Leading part of each key left out of :attr:`RemoteFile.path` (e.g. ``"ds004212/"``).
    timeout : float
        Seconds to wait for each answer.

    Returns
    -------
    files : list of RemoteFile
        One per object, with its size and (single-part uploads) its MD5.
    """
    base = bucket_url.rstrip("/")
    files: list[RemoteFile] = []
    params: dict[str, str] = {"list-type": "2", "prefix": prefix}
    if delimiter:
        params["delimiter"] = delimiter
    while True:
        entries, token = parse_s3_listing(_get(base + "/", params=params, timeout=timeout).content)
        for e in entries:
            key = e["key"]
            path = key[len(strip):] if strip and key.startswith(strip) else key
            files.append(RemoteFile(path, f"{base}/{urllib.parse.quote(key)}", e["size"], _etag_hash(e["etag"])))
        if token is None:
            return files
        params["continuation-token"] = token


# -- OSF -----------------------------------------------------------------------------------------------


def _osf_hash(hashes: dict | None) -> str | None:
    hashes = hashes or {}
    for alg in ("sha256", "md5"):
        if hashes.get(alg):
            return f"{alg}:{str(hashes[alg]).lower()}"
    return None


def parse_osf_listing(payload: dict) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Parse one page of an OSF API v2 file listing.

    Parameters
    ----------
    payload : dict
        The decoded JSON (``{"data": [...], "links": {"next": ...}}``).

    Returns
    -------
    files : list of dict
        One ``{"path", "url", "size", "hash"}`` per file: ``path`` is its ``materialized_path`` without the
        leading slash, ``url`` its ``links.download``, ``hash`` ``"sha256:..."`` (else ``"md5:..."``) from
        ``attributes.extra.hashes``.
    folders : list of str
        The listing URL of each sub-folder (``relationships.files.links.related.href``).
    next_url : str | None
        The next page (``links.next``), or ``None``.
    """
    files, folders = [], []
    for item in payload.get("data", []):
        attrs = item.get("attributes", {})
        if attrs.get("kind") == "folder":
            rel = item.get("relationships", {}).get("files", {})
            href = (rel.get("links", {}).get("related", {}) or {}).get("href") or rel.get("related", {}).get("href")
            if not href:
                raise DownloadError(f"The OSF folder {attrs.get('materialized_path')!r} has no files link")
            folders.append(href)
            continue
        path = str(attrs.get("materialized_path") or attrs.get("name") or "").lstrip("/")
        url = item.get("links", {}).get("download")
        if not path or not url:
            raise DownloadError(f"An OSF file entry lacks its path or download link: {item.get('id')!r}")
        size = attrs.get("size")
        files.append({"path": path, "url": url, "size": int(size) if size is not None else None,
                      "hash": _osf_hash((attrs.get("extra") or {}).get("hashes"))})
    return files, folders, (payload.get("links") or {}).get("next")


def list_osf(node: str, *, api_url: str = "https://api.osf.io/v2", provider: str = "osfstorage",
             keep_folder: Callable[[str], bool] | None = None, timeout: float = 60.0) -> list[RemoteFile]:
    """Every file of an OSF project's storage (folders followed, pages followed).

    Parameters
    ----------
    node : str
        The OSF project or component id (``"anp5v"`` for ``https://osf.io/anp5v/``).
    api_url : str
        The OSF API root (a mirror of the API may be given).
    provider : str
        The storage provider.
    keep_folder : callable | None
        ``keep_folder(path) -> bool`` on each sub-folder's path (``"sub-01/ses-0/"``): False skips it
        without listing it (saves requests when only a selection is wanted).
    timeout : float
        Seconds to wait for each answer.

    Returns
    -------
    files : list of RemoteFile
        One per file, its path relative to the storage root.
    """
    pending = [f"{api_url.rstrip('/')}/nodes/{node}/files/{provider}/"]
    files: list[RemoteFile] = []
    while pending:
        url: str | None = pending.pop()
        while url:
            payload = _get(url, timeout=timeout).json()
            found, folders, url = parse_osf_listing(payload)
            files += [RemoteFile(f["path"], f["url"], f["size"], f["hash"]) for f in found]
            for item, href in zip([d for d in payload.get("data", [])
                                   if d.get("attributes", {}).get("kind") == "folder"], folders):
                folder = str(item["attributes"].get("materialized_path") or "").lstrip("/")
                if keep_folder is None or keep_folder(folder):
                    pending.append(href)
    return sorted(files, key=lambda f: f.path)


# -- Hugging Face ----------------------------------------------------------------------------------------


def parse_hf_listing(entries: Sequence[dict], *, endpoint: str, repo: str, revision: str = "main",
                     repo_type: str = "dataset") -> list[dict[str, Any]]:
    """Parse a Hugging Face tree listing.

    Parameters
    ----------
    entries : sequence of dict
        The decoded JSON list (``{"type", "path", "size", "lfs": {"oid", "size"}}`` per entry).
    endpoint : str
        The hub's root URL (``https://huggingface.co``).
    repo : str
        The repository id (``"pscotti/naturalscenesdataset"``).
    revision : str
        Branch, tag or commit.
    repo_type : str
        ``"dataset"`` or ``"model"``.

    Returns
    -------
    files : list of dict
        One ``{"path", "url", "size", "hash"}`` per file (``hash`` the LFS SHA-256, else ``None``).
    """
    prefix = "datasets/" if repo_type == "dataset" else ""
    out = []
    for e in entries:
        if e.get("type") != "file":
            continue
        lfs = e.get("lfs") or {}
        path = e["path"]
        url = f"{endpoint.rstrip('/')}/{prefix}{repo}/resolve/{revision}/{urllib.parse.quote(path)}"
        out.append({"path": path, "url": url, "size": int(e["size"]) if e.get("size") is not None else None,
                    "hash": f"sha256:{lfs['oid']}" if lfs.get("oid") else None})
    return out


def list_hf(repo: str, path: str = "", *, endpoint: str = "https://huggingface.co", revision: str = "main",
            repo_type: str = "dataset", recursive: bool = True, timeout: float = 60.0) -> list[RemoteFile]:
    """Every file of a Hugging Face repository under ``path`` (the tree API, all pages).

    Parameters
    ----------
    repo : str
        The repository id.
    path : str
        Folder inside the repository (``""``: its root).
    endpoint : str
        The hub's root URL (or a mirror's).
    revision : str
        Branch, tag or commit.
    repo_type : str
        ``"dataset"`` or ``"model"``.
    recursive : bool
        List sub-folders too.
    timeout : float
        Seconds to wait for each answer.

    Returns
    -------
    files : list of RemoteFile
        One per file, its path relative to the repository root.
    """
    kind = "datasets" if repo_type == "dataset" else "models"
    url: str | None = f"{endpoint.rstrip('/')}/api/{kind}/{repo}/tree/{revision}"
    if path:
        url += "/" + urllib.parse.quote(path.strip("/"))
    params: dict | None = {"recursive": "true"} if recursive else None
    files: list[RemoteFile] = []
    while url:
        response = _get(url, params=params, timeout=timeout)
        found = parse_hf_listing(response.json(), endpoint=endpoint, repo=repo, revision=revision,
                                 repo_type=repo_type)
        files += [RemoteFile(f["path"], f["url"], f["size"], f["hash"]) for f in found]
        url, params = (response.links.get("next") or {}).get("url"), None
    return sorted(files, key=lambda f: f.path)


# -- one file: resumable download under pooch ----------------------------------------------------------------


class ResumableDownloader:
    """A pooch downloader (``pooch.retrieve(..., downloader=...)``) that resumes a persistent part file.

    pooch hands it a fresh temporary file to fill. It fills ``part`` instead, continuing from the bytes
    already there with an HTTP ``Range`` request, retrying lost connections with exponential backoff,
    and, once ``part`` holds ``size`` bytes, moves it onto pooch's temporary file; pooch then checks the
    hash and renames the file into place. A part file that outgrows ``size`` is deleted (the next try
    starts over).

    Parameters
    ----------
    part : str | Path
        The persistent partial file (``<name>.part`` next to the final file).
    size : int | None
        The expected size in bytes (``None``: whatever the server sends).
    retries : int
        Connection failures tolerated in a row before giving up (the part file is kept for a later resume).
    backoff : float
        Seconds before the first retry; doubled at each (at most 30 s).
    timeout : float
        Seconds without data before a connection counts as lost.
    progress : object | None
        A tqdm-like bar whose ``update(n)`` receives the bytes received.
    cancel : threading.Event | None
        Stops the transfer (keeping the part file) when set.
    chunk_size : int
        Bytes per read.
    """

    def __init__(self, part: str | Path, size: int | None, *, retries: int = 5, backoff: float = 1.0,
                 timeout: float = 60.0, progress: Any = None, cancel: threading.Event | None = None,
                 chunk_size: int = 1 << 16) -> None:
        self.part, self.size = Path(part), size
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.progress, self.cancel, self.chunk_size = progress, cancel, chunk_size
        self.received = 0  # bytes received over the network
        self.counted = 0  # bytes of the current part file shown on the progress bar

    def _count(self, n: int) -> None:
        self.counted += n
        if self.progress is not None and n:
            self.progress.update(n)

    def __call__(self, url: str, output_file: str, pooch: Any, check_only: bool = False) -> bool | None:
        """Fill ``part`` from ``url``, then move it onto ``output_file``.

        Parameters
        ----------
        url : str
            The file's URL.
        output_file : str
            pooch's temporary file (replaced by the complete part file).
        pooch : pooch.Pooch | None
            The calling pooch instance (unused).
        check_only : bool
            Only check that the URL answers (pooch's downloader protocol).

        Returns
        -------
        available : bool | None
            With ``check_only``: whether the server has the file; otherwise ``None``.
        """
        if check_only:
            return bool(_session().head(url, timeout=self.timeout, allow_redirects=True).ok)
        self._fill(url)
        os.replace(self.part, output_file)
        return None

    def _fill(self, url: str) -> None:
        failures = short = ended_at = 0
        self._count(self._have() - self.counted)  # a part file left by an earlier run
        while True:
            have = self._have()
            if self.size is not None and have > self.size:
                self._restart()
                raise _SizeMismatch(f"the server sent more than the {self.size} bytes listed")
            if self.size is not None and have == self.size:
                return
            try:
                complete = self._stream(url, have)
            except Exception as err:  # noqa: BLE001 - classified just below
                if isinstance(err, (_Cancelled, _SizeMismatch)) or not _transient(err):
                    raise
                failures = 1 if self._have() > have else failures + 1  # progress resets the count
                if failures > self.retries:
                    raise DownloadError(f"lost the connection {failures} times in a row ({err}); the "
                                        f"{format_size(self._have())} received are kept in {self.part}: "
                                        "run the same command again to resume") from err
                wait = min(self.backoff * 2 ** (failures - 1), 30.0)
                logger.debug("Connection to %s lost (%s); resuming in %.2g s", url, err, wait)
                time.sleep(wait)
                continue
            if self.size is None and complete:
                return
            if self._have() < (self.size or 0):  # the answer ended early: once may be a glitch, twice is not
                short += 1
                ended_at = max(ended_at, self._have())
                if short > 1:
                    self._restart()
                    raise _SizeMismatch(f"the server ends the file at {ended_at} bytes, {self.size} were listed")

    def _have(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0

    def _restart(self) -> None:
        """Forget the part file (and what the bar counted for it)."""
        self._count(-self.counted)
        self.part.unlink(missing_ok=True)

    def _stream(self, url: str, start: int) -> bool:
        """One request from byte ``start``; True when the answer was read to its end."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        with _session().get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if start and r.status_code == 416:  # the range starts past the end: the part is not this file
                self._restart()
                return False
            r.raise_for_status()
            if start and (r.status_code != 206 or not _range_starts_at(r.headers.get("Content-Range"), start)):
                self._restart()  # the server ignored the range: start over from this answer
                start = 0
            with open(self.part, "ab" if start else "wb") as f:
                for chunk in r.iter_content(chunk_size=self.chunk_size):
                    if self.cancel is not None and self.cancel.is_set():
                        raise _Cancelled
                    f.write(chunk)
                    self.received += len(chunk)
                    self._count(len(chunk))
        return True


class _SizeMismatch(ValueError):
    """The file's bytes do not add up to its listed size."""


def _range_starts_at(content_range: str | None, start: int) -> bool:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return bool(match) and int(match.group(1)) == start


# -- the record of verified files ---------------------------------------------------------------------------


class _Manifest:
    """``<root>/.neurodecode-download.json``: the files verified so far, with their size, hash and mtime.

    A file whose size and modification time still match its record is not hashed again on a rerun. The
    record is merged into the file under a lock (two processes may download into one root) and written
    atomically, at most every ``every`` seconds and at the end.
    """

    def __init__(self, root: Path, every: float = 5.0) -> None:
        self.path, self.every = root / MANIFEST_NAME, every
        self._mutex = threading.Lock()
        self._new: dict[str, dict] = {}
        self._last = time.monotonic()
        self.records = self._read()

    def _read(self) -> dict[str, dict]:
        try:
            return dict(json.loads(self.path.read_text(encoding="utf-8")).get("files", {}))
        except (OSError, ValueError, AttributeError):
            return {}

    def get(self, path: str) -> dict | None:
        with self._mutex:
            return self._new.get(path) or self.records.get(path)

    def put(self, path: str, record: dict) -> None:
        with self._mutex:
            self._new[path] = record
            due = time.monotonic() - self._last > self.every
        if due:
            self.flush()

    def flush(self) -> None:
        with self._mutex:
            if not self._new:
                return
            new, self._new = self._new, {}
            self._last = time.monotonic()
            with hold_lock(self.path.with_name(self.path.name + ".lock"), what="recording downloads"):
                records = {**self._read(), **new}
                atomic_write_json(self.path, {"version": 1, "files": records}, sort_keys=True)
            self.records = records


def _stat_record(dest: Path, rf: RemoteFile) -> dict:
    st = dest.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": rf.hash, "url": rf.url}


def _verified(rf: RemoteFile, dest: Path, manifest: _Manifest) -> bool:
    """Whether ``dest`` already holds ``rf`` (by its record, else by its hash or size); a wrong file is removed."""
    import pooch

    if not dest.is_file():
        return False
    st = dest.stat()
    if rf.size is not None and st.st_size != rf.size:
        logger.warning("%s holds %d bytes, %d are listed: downloading it again", dest, st.st_size, rf.size)
        dest.unlink()
        return False
    record = manifest.get(rf.path)
    if record and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns \
            and record.get("hash") == rf.hash:
        return True
    alg, _, digest = (rf.hash or "").partition(":")
    if rf.hash is not None and pooch.file_hash(str(dest), alg=alg).lower() != digest.lower():
        logger.warning("%s does not match its %s checksum: downloading it again", dest, rf.hash.split(":")[0])
        dest.unlink()
        return False
    manifest.put(rf.path, _stat_record(dest, rf))
    return True


# -- archives ----------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _members(zf: zipfile.ZipFile, folder_name: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """The archive's files with their path inside the target folder (a top folder named like it dropped)."""
    infos = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
    tops = {i.filename.split("/", 1)[0] for i in infos}
    strip = ""
    if len(tops) == 1 and all("/" in i.filename for i in infos) and _norm(next(iter(tops))) == _norm(folder_name):
        strip = next(iter(tops)) + "/"
    out = []
    for info in infos:
        rel = info.filename[len(strip):]
        if not rel or rel.startswith("/") or ".." in Path(rel).parts or ":" in rel.split("/", 1)[0]:
            raise DownloadError(f"refusing to extract {info.filename!r}: it points outside the target folder")
        out.append((info, rel))
    return out


def _extract(archive: Path, rf: RemoteFile, root: Path, cancel: threading.Event | None) -> dict[str, int]:
    """Extract ``archive`` into ``root / rf.extract_to``, each member atomically; ``{member path: size}``."""
    target = root / str(rf.extract_to)
    members: dict[str, int] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            for info, rel in _members(zf, target.name):
                if cancel is not None and cancel.is_set():
                    raise _Cancelled
                dest = target / rel
                with atomic_path(dest) as tmp, zf.open(info) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, _MiB)  # zipfile checks each member's CRC-32 as it reads
                if dest.stat().st_size != info.file_size:
                    raise DownloadError(f"{dest}: extracted {dest.stat().st_size} bytes, the archive lists "
                                        f"{info.file_size}")
                members[dest.relative_to(root).as_posix()] = info.file_size
    except zipfile.BadZipFile as err:
        archive.unlink(missing_ok=True)
        raise DownloadError(f"{rf.path} (from {rf.url}) is not a readable zip archive ({err}); it was removed: "
                            "run the same command again to download it anew") from err
    return members


def _archive_done(rf: RemoteFile, root: Path, manifest: _Manifest) -> bool:
    """Whether ``rf`` (an archive) was extracted and every member is still there, with its size."""
    record = manifest.get(rf.path)
    if not record or record.get("hash") != rf.hash or record.get("size") != rf.size or "members" not in record:
        return False
    for rel, size in record["members"].items():
        p = root / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


# -- one file ----------------------------------------------------------------------------------------------


@dataclass
class _Options:
    retries: int
    verify_retries: int
    backoff: float
    timeout: float
    progress: Any
    cancel: threading.Event


def _download_verified(rf: RemoteFile, dest: Path, opts: _Options) -> int:
    """Download ``rf`` to ``dest`` through pooch (resumable part file, hash or size checked); bytes received."""
    import pooch
    import requests

    part = dest.with_name(dest.name + ".part")
    received = 0
    for attempt in range(opts.verify_retries + 1):
        loader = ResumableDownloader(part, rf.size, retries=opts.retries, backoff=opts.backoff,
                                     timeout=opts.timeout, progress=opts.progress, cancel=opts.cancel)
        try:
            pooch.retrieve(rf.url, known_hash=rf.hash, fname=dest.name, path=dest.parent, downloader=loader)
            return received + loader.received
        except requests.RequestException as err:  # e.g. 403 / 404: retrying will not help
            raise DownloadError(f"{rf.path}: {rf.url} could not be downloaded ({err})") from err
        except DownloadError as err:  # the connection kept failing: the part file is kept for a resume
            raise DownloadError(f"{rf.path}: downloading {rf.url}: {err}") from err
        except ValueError as err:  # pooch's hash check, or a size that does not add up: nothing was kept
            received += loader.received
            loader.part.unlink(missing_ok=True)
            if opts.progress is not None:
                opts.progress.update(-loader.counted)
            if attempt == opts.verify_retries:
                raise DownloadError(
                    f"{rf.path}: the download from {rf.url} failed verification {attempt + 1} times "
                    f"({err}); nothing was kept at {dest}. The host may be serving a damaged file: try again "
                    "later, or another mirror") from err
            logger.warning("%s failed verification (%s); downloading it again", rf.path, err)
    raise AssertionError("unreachable")  # pragma: no cover


def _fetch_one(rf: RemoteFile, root: Path, manifest: _Manifest, opts: _Options) -> tuple[bool, int]:
    """Bring ``rf`` into ``root`` unless it is there already; ``(downloaded, bytes received)``."""
    dest = root / rf.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    with hold_lock(dest.with_name(f".{dest.name}.lock"), what=f"downloading {rf.path}"):
        if opts.cancel.is_set():
            raise _Cancelled
        if rf.extract_to is None:
            if _verified(rf, dest, manifest):
                return False, 0
            received = _download_verified(rf, dest, opts)
            manifest.put(rf.path, _stat_record(dest, rf))
            return True, received
        if _archive_done(rf, root, manifest):
            return False, 0
        # an archive left by an interrupted extraction is extracted again without downloading it
        received = 0 if _verified(rf, dest, manifest) else _download_verified(rf, dest, opts)
        members = _extract(dest, rf, root, opts.cancel)
        manifest.put(rf.path, {"size": rf.size, "hash": rf.hash, "url": rf.url, "members": members})
        manifest.flush()
        dest.unlink()
        return True, received


# -- many files ---------------------------------------------------------------------------------------------


@contextmanager
def _quiet_pooch() -> Any:
    """pooch logs every download (and the SHA-256 of unhashed ones) at INFO: keep it to warnings."""
    import pooch

    plog = pooch.get_logger()
    old = plog.level
    plog.setLevel("WARNING")
    try:
        yield
    finally:
        plog.setLevel(old)


def _check_unique(files: Iterable[RemoteFile]) -> list[RemoteFile]:
    files = list(files)
    seen: dict[str, str] = {}
    for rf in files:
        if rf.path in seen and seen[rf.path] != rf.url:
            raise ValueError(f"two files would be written to {rf.path}: {seen[rf.path]} and {rf.url}")
        seen[rf.path] = rf.url
    return list({rf.path: rf for rf in files}.values())


def fetch_files(files: Iterable[RemoteFile], root: str | Path, *, jobs: int = 4, retries: int = 5,
                verify_retries: int = 2, backoff: float = 1.0, timeout: float = 60.0,
                progress: bool = True) -> FetchReport:
    """Download ``files`` into ``root``: resumable, verified, in parallel; present files are skipped.

    Each file goes through :func:`pooch.retrieve` with a :class:`ResumableDownloader`: bytes collect in
    ``<name>.part`` (resumed with an HTTP ``Range`` request after a lost connection, and by a later call
    after an interruption), pooch checks the hash (else the size is checked) and only then renames the file
    to its final name. A file failing verification is deleted and downloaded again, ``verify_retries``
    times, then a :class:`DownloadError` names it and its URL. Files already at their final path are kept
    when they match their record in ``<root>/.neurodecode-download.json`` or their hash (or size); others
    are downloaded again. Archives (:attr:`RemoteFile.extract_to`) are extracted and removed.

    Parameters
    ----------
    files : iterable of RemoteFile
        What to download (paths relative to ``root``).
    root : str | Path
        The download root (created if needed).
    jobs : int
        Files downloaded at once (threads).
    retries : int
        Lost connections tolerated in a row per file (each resumes where it stopped).
    verify_retries : int
        Fresh downloads of a file that failed verification before giving up.
    backoff : float
        Seconds before the first retry (doubled at each, at most 30 s).
    timeout : float
        Seconds without an answer before a connection counts as lost.
    progress : bool
        Show a progress bar of the bytes (through :func:`neurodecode.utils.ProgressBar`).

    Returns
    -------
    report : FetchReport
        The files downloaded and skipped, and the bytes received.

    Raises
    ------
    DownloadError
        A file could not be downloaded or verified (after the retries); the others were completed first.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    files = _check_unique(files)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(root)
    total = sum(rf.size or 0 for rf in files)
    bar = ProgressBar(total=total, desc="download", unit="B", unit_scale=True, unit_divisor=1000) \
        if progress else None
    opts = _Options(retries, verify_retries, backoff, timeout, bar, threading.Event())
    report = FetchReport()
    try:
        with _quiet_pooch(), ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_fetch_one, rf, root, manifest, opts): rf for rf in files}
            errors = _collect(futures, report, bar, opts)
    finally:
        manifest.flush()
        if bar is not None:
            bar.close()
    if errors:
        more = (f" ({len(errors) - 1} more file(s) failed too: {', '.join(p for p, _ in errors[1:4])}"
                f"{' ...' if len(errors) > 4 else ''})") if len(errors) > 1 else ""
        raise DownloadError(f"{errors[0][1]}{more}") from errors[0][1]
    return report


def _collect(futures: dict, report: FetchReport, bar: Any, opts: _Options) -> list[tuple[str, DownloadError]]:
    """Wait for the downloads; record each outcome; on Ctrl-C stop them (their part files are kept)."""
    errors: list[tuple[str, DownloadError]] = []
    try:
        for future in as_completed(futures):
            rf = futures[future]
            try:
                downloaded, received = future.result()
            except DownloadError as err:
                errors.append((rf.path, err))
                continue
            (report.downloaded if downloaded else report.skipped).append(rf.path)
            report.n_bytes += received
            if not downloaded and bar is not None:
                bar.update(rf.size or 0)
    except KeyboardInterrupt:
        opts.cancel.set()
        for f in futures:
            f.cancel()
        raise
    report.downloaded.sort()
    report.skipped.sort()
    return errors
