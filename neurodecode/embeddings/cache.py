"""On-disk embedding cache: compute each stimulus embedding once, reuse it memory-mapped.

Layout under ``cache_dir`` (default ``get_data_dir() / "embeddings"``)::

    <encoder-slug>/<weights-hash[:16]>/<kind>[/<dataset-slug>]/
        index.json            the commit point: which value files hold which ids
        values-<uid>.npy      float32 rows, shape (n_ids, *row_shape), read with mmap_mode="r"
    weights_hashes.json       sha256 of weight files, memoised by (path, size, mtime)

Writes are atomic: value files are written under a temporary name and renamed,
then ``index.json`` is replaced atomically. An interrupted computation (an
exception, Ctrl-C, a killed job) therefore leaves the previous cache readable and
intact; rows of chunks already committed are kept and reused. A different weights
hash is a different folder, so changing the weights invalidates the cache by
construction.

One process fills a key at a time: it holds the key folder's lock file
(``.neurodecode.lock``, a :class:`filelock.FileLock`) while it reads the index,
computes the missing rows and commits them; a second process waits, then
computes only what is still missing. The holder removes value and temporary
files that no index references (left by a killed writer: the lock proves it is
dead). Reading ids that are all cached in one file takes no lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_path, atomic_write_json, fill_doc, get_data_dir, logger, verbose, warn
from ..utils.locks import LOCK_NAME, hold_lock

_FORMAT = "neurodecode.EmbeddingCache"
_FORMAT_VERSION = 1
_HASH_MEMO = "weights_hashes.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".h5", ".msgpack")


def _as_py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _slug(text: str) -> str:
    """A readable, filesystem-safe, collision-free folder name for ``text``."""
    text = str(text)
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "key"
    return f"{clean}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def hash_config(config: Mapping[str, Any] | str) -> str:
    """sha256 of a configuration (canonical JSON), e.g. for randomly initialised models.

    Parameters
    ----------
    config : mapping | str
        JSON-serialisable settings that fully determine the model.

    Returns
    -------
    digest : str
        64 hex characters.
    """
    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_weights(path: str | Path, *, memo_dir: str | Path | None = None) -> str:
    """sha256 of a weight file (streamed), or of every weight/config file of a folder.

    Digests are memoised in ``<memo_dir>/weights_hashes.json`` keyed by the
    resolved path, size and modification time, so multi-GB files are hashed once.

    Parameters
    ----------
    path : str | Path
        A weight file, or a folder (e.g. a Hugging Face model folder): then the
        names and bytes of its ``*.json`` and weight files are hashed.
    memo_dir : str | Path | None
        Where the memo lives (default ``get_data_dir() / "embeddings"``).

    Returns
    -------
    digest : str
        64 hex characters.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"Cannot hash weights: {path} does not exist")
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.suffix == ".json"))
    memo_file = Path(memo_dir if memo_dir is not None else get_data_dir() / "embeddings") / _HASH_MEMO
    try:
        memo = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        memo = {}
    changed = False
    digests = []
    for f in files:
        st = f.stat()
        key = str(f)
        entry = memo.get(key)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            digest = entry["sha256"]
        else:
            logger.debug("Hashing %s (%d bytes)", f, st.st_size)
            digest = _sha256_file(f)
            memo[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            changed = True
        digests.append(digest if path.is_file() else f"{f.relative_to(path).as_posix()}:{digest}")
    if changed:
        try:
            atomic_write_json(memo_file, memo)
        except OSError as err:  # a read-only cache must not stop the embedding
            logger.debug("Could not write the weights-hash memo %s: %s", memo_file, err)
    return digests[0] if path.is_file() else hashlib.sha256("\n".join(digests).encode()).hexdigest()


class EmbeddingCache:
    """Embeddings on disk, keyed by (encoder, weights hash, output kind, stimulus id).

    Parameters
    ----------
    cache_dir : str | Path | None
        Root folder (default ``get_data_dir() / "embeddings"``, i.e.
        ``$NEURODECODE_DATA/embeddings``). Created on first write.

    Examples
    --------
    >>> cache = EmbeddingCache(tmp_dir)  # doctest: +SKIP
    >>> values = cache.get_or_compute("ViT-L-14 image", weights_hash, ids, encode)  # doctest: +SKIP
    """

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None \
            else get_data_dir() / "embeddings"

    def __repr__(self) -> str:
        return f"<EmbeddingCache | {self.cache_dir}>"

    # -- keys and folders ---------------------------------------------------------
    def key_dir(self, encoder_key: str, weights_hash: str, *, kind: str = "pooled", dataset: str = "") -> Path:
        """The folder of one (encoder, weights hash, kind, dataset) key.

        Parameters
        ----------
        encoder_key : str
            Names the encoder and what it embeds (e.g. ``"open_clip:ViT-L-14:image"``).
        weights_hash : str
            Digest of the weights (alphanumeric; its first 16 characters name the folder).
        kind : str
            Output kind (``"pooled"``, ``"tokens"``, ...).
        dataset : str
            Namespace of the ids; ``""`` for none.

        Returns
        -------
        folder : Path
            ``<cache_dir>/<encoder>/<hash[:16]>/<kind>[/<dataset>]`` (not created).
        """
        if not weights_hash or not re.fullmatch(r"[0-9A-Za-z]+", str(weights_hash)):
            raise ValueError(f"weights_hash must be a non-empty hex digest (see hash_weights), got {weights_hash!r}")
        folder = self.cache_dir / _slug(encoder_key) / str(weights_hash)[:16] / _slug(kind)
        return folder / _slug(dataset) if dataset else folder

    def weights_hash(self, path: str | Path) -> str:
        """:func:`hash_weights` with the memo kept in this cache's folder.

        Parameters
        ----------
        path : str | Path
            A weight file, or a folder of weight and config files.

        Returns
        -------
        digest : str
            64 hex characters.
        """
        return hash_weights(path, memo_dir=self.cache_dir)

    def _read_index(self, folder: Path) -> dict[str, Any] | None:
        index_file = folder / "index.json"
        if not index_file.is_file():
            return None
        try:
            index = json.loads(index_file.read_text())
            if index.get("format") != _FORMAT:
                raise ValueError("not an EmbeddingCache index")
            for shard in index["shards"]:
                if not (folder / shard["file"]).is_file():
                    raise FileNotFoundError(folder / shard["file"])
            return index
        except (OSError, ValueError, KeyError, TypeError) as err:
            warn(f"Ignoring the unreadable embedding cache {index_file} ({err}); it will be rebuilt. "
                 "Delete the folder to silence this.")
            return None

    def cached_ids(self, encoder_key: str, weights_hash: str, *, kind: str = "pooled",
                   dataset: str = "") -> list[Any]:
        """The stimulus ids stored for one key (empty if none).

        Parameters
        ----------
        encoder_key : str
            Names the encoder and what it embeds (see :meth:`get_or_compute`).
        weights_hash : str
            Digest of the weights.
        kind : str
            Output kind (``"pooled"``, ``"tokens"``, ...).
        dataset : str
            Namespace of the ids; ``""`` for none.

        Returns
        -------
        ids : list
            The cached ids, in storage order.
        """
        index = self._read_index(self.key_dir(encoder_key, weights_hash, kind=kind, dataset=dataset))
        return [] if index is None else [i for s in index["shards"] for i in s["ids"]]

    # -- main entry ---------------------------------------------------------------
    @verbose
    @fill_doc
    def get_or_compute(self, encoder_key: str, weights_hash: str, ids: Sequence[Any],
                       compute_fn: Callable[[list[Any]], Any], *, kind: str = "pooled", dataset: str = "",
                       chunk_size: int | None = None, verbose: bool | str | int | None = None) -> np.ndarray:
        """Return embeddings of ``ids``, computing (and storing) only those not cached.

        Parameters
        ----------
        encoder_key : str
            Names the encoder and what it embeds (e.g. ``"open_clip:ViT-L-14:image"``).
        weights_hash : str
            Digest of the weights (:func:`hash_weights`, or :func:`hash_config`
            for random models); another hash is another cache entry.
        ids : sequence of int | str
            Stimulus ids, unique; the output rows follow this order.
        compute_fn : callable
            ``compute_fn(list_of_ids) -> array, shape (len(ids), ...)``; called
            only with ids that are missing, in chunks of ``chunk_size``.
        kind : str
            Output kind (``"pooled"``, ``"tokens"``, ...), part of the key.
        dataset : str
            Namespace of the ids (e.g. ``StimulusSet.source``), part of the key,
            so equal ids of different datasets never collide.
        chunk_size : int | None
            Commit to disk after every chunk of this many computed ids (None: one
            chunk); after an interruption the committed chunks are reused.
        %(verbose)s

        Returns
        -------
        values : ndarray of float32, shape (n_ids, ...)
            Read-only. A :class:`numpy.memmap` (no copy) when ``ids`` are stored
            contiguously in this order (e.g. a repeat of an earlier call),
            otherwise an in-memory array gathered from the memory-mapped file.
        """
        ids = [_as_py(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
        if len(set(ids)) != len(ids):
            raise ValueError("ids passed to EmbeddingCache.get_or_compute must be unique")
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        folder = self.key_dir(encoder_key, weights_hash, kind=kind, dataset=dataset)
        index = self._read_index(folder)
        if index is not None and len(index["shards"]) == 1 and set(ids) <= set(index["shards"][0]["ids"]):
            try:  # all cached in one file: read without the lock (a read-only cache works)
                values = self._gather(folder, index, ids)
                logger.info("Embedding cache %s: all %d ids cached", folder, len(ids))
                return values
            except FileNotFoundError:  # consolidated by another process meanwhile: take the lock
                pass
        folder.mkdir(parents=True, exist_ok=True)
        # one writer per entry: another process filling it is waited for, and its rows are then reused
        with hold_lock(folder / LOCK_NAME, what=f"filling the embedding cache {folder}", remove=False):
            self._remove_stale(folder)
            return self._fill(folder, encoder_key, weights_hash, kind, dataset, ids, compute_fn, chunk_size)

    def _fill(self, folder: Path, encoder_key: str, weights_hash: str, kind: str, dataset: str, ids: list[Any],
              compute_fn: Callable[[list[Any]], Any], chunk_size: int | None) -> np.ndarray:
        """Compute and commit the missing rows, then gather ``ids`` (the caller holds the entry's lock)."""
        index = self._read_index(folder) or {
            "format": _FORMAT, "format_version": _FORMAT_VERSION, "encoder": str(encoder_key),
            "weights_hash": str(weights_hash), "kind": str(kind), "dataset": str(dataset), "shards": []}
        have = {i for s in index["shards"] for i in s["ids"]}
        missing = [i for i in ids if i not in have]
        if missing:
            logger.info("Embedding cache %s: %d of %d ids to compute", folder, len(missing), len(ids))
            step = len(missing) if chunk_size is None else int(chunk_size)
            for start in range(0, len(missing), step):
                chunk = missing[start:start + step]
                values = np.ascontiguousarray(np.asarray(compute_fn(list(chunk)), dtype=np.float32))
                if values.ndim < 2 or len(values) != len(chunk):
                    raise ValueError(f"compute_fn returned shape {values.shape} for {len(chunk)} ids; "
                                     "it must return one row per id")
                self._check_row_shape(index, values, folder)
                index = self._commit_shard(folder, index, chunk, values)
        else:
            logger.info("Embedding cache %s: all %d ids cached", folder, len(ids))
        if len(index["shards"]) > 1:
            index = self._consolidate(folder, index)
        return self._gather(folder, index, ids)

    # -- internals ----------------------------------------------------------------
    def _remove_stale(self, folder: Path) -> None:
        """Temporary files and unreferenced value files of killed writers (the caller holds the lock)."""
        index = self._read_index(folder)
        keep = set() if index is None else {s["file"] for s in index["shards"]}
        stale = [f for f in folder.glob(".*.tmp") if f.is_file()]
        stale += [f for f in folder.glob("values-*.npy") if f.name not in keep]
        for f in stale:
            try:
                f.unlink()
            except OSError as err:  # e.g. still memory-mapped on Windows
                logger.debug("Could not remove stale cache file %s: %s", f, err)
        if stale:
            logger.info("Embedding cache %s: removed %d file(s) left by an interrupted writer", folder, len(stale))

    @staticmethod
    def _check_row_shape(index: dict, values: np.ndarray, folder: Path) -> None:
        row_shape = list(values.shape[1:])
        if "row_shape" not in index:
            index["row_shape"] = row_shape
        elif index["row_shape"] != row_shape:
            raise ValueError(f"compute_fn returned rows of shape {tuple(row_shape)} but the cache {folder} "
                             f"holds rows of shape {tuple(index['row_shape'])}; use another kind/key or "
                             "clear() it")
        if not np.isfinite(values).all():
            raise ValueError("compute_fn returned non-finite values (NaN or inf); nothing was cached")

    @staticmethod
    def _write_values(folder: Path, values: np.ndarray) -> str:
        name = f"values-{uuid.uuid4().hex[:12]}.npy"
        with atomic_path(folder / name) as tmp, open(tmp, "wb") as fh:
            np.save(fh, values)
            fh.flush()
            os.fsync(fh.fileno())
        return name

    def _commit_shard(self, folder: Path, index: dict, ids: list[Any], values: np.ndarray) -> dict:
        name = self._write_values(folder, values)
        new = dict(index, shards=[*index["shards"], {"file": name, "ids": ids}])
        try:
            atomic_write_json(folder / "index.json", new)
        except BaseException:
            (folder / name).unlink(missing_ok=True)
            raise
        return new

    def _consolidate(self, folder: Path, index: dict) -> dict:
        """Merge all shards into one value file (one memmap), then drop the old files."""
        n = sum(len(s["ids"]) for s in index["shards"])
        name = f"values-{uuid.uuid4().hex[:12]}.npy"
        with atomic_path(folder / name) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, *index["row_shape"]))
            row = 0
            for shard in index["shards"]:
                block = np.load(folder / shard["file"], mmap_mode="r")
                out[row:row + len(block)] = block
                row += len(block)
            out.flush()
            del out
        ids = [i for s in index["shards"] for i in s["ids"]]
        new = dict(index, shards=[{"file": name, "ids": ids}])
        try:
            atomic_write_json(folder / "index.json", new)
        except BaseException:
            (folder / name).unlink(missing_ok=True)
            raise
        self._remove_unreferenced(folder, {name})
        return new

    @staticmethod
    def _remove_unreferenced(folder: Path, keep: set[str]) -> None:
        for f in folder.glob("values-*.npy"):
            if f.name not in keep:
                try:
                    f.unlink()
                except OSError as err:  # e.g. still memory-mapped on Windows
                    logger.debug("Could not remove stale cache file %s: %s", f, err)

    @staticmethod
    def _gather(folder: Path, index: dict, ids: list[Any]) -> np.ndarray:
        if not ids:
            return np.zeros((0, *index.get("row_shape", [0])), dtype=np.float32)
        where: dict[Any, tuple[int, int]] = {}
        for s_i, shard in enumerate(index["shards"]):
            for r, i in enumerate(shard["ids"]):
                where[i] = (s_i, r)
        locs = [where[i] for i in ids]
        maps = {s_i: np.load(folder / index["shards"][s_i]["file"], mmap_mode="r") for s_i, _ in set(locs)}
        if len(maps) == 1:
            s_i = locs[0][0]
            rows = np.fromiter((r for _, r in locs), dtype=np.int64, count=len(locs))
            if np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
                return maps[s_i][rows[0]:rows[0] + len(rows)]
            return np.asarray(maps[s_i][rows])
        return np.stack([maps[s_i][r] for s_i, r in locs])

    def clear(self, encoder_key: str | None = None, weights_hash: str | None = None) -> None:
        """Delete cached embeddings: everything, one encoder, or one (encoder, weights hash).

        Parameters
        ----------
        encoder_key : str | None
            Only this encoder's entries (None: the whole cache folder's entries).
        weights_hash : str | None
            Only entries of these weights (needs ``encoder_key``).
        """
        if weights_hash is not None and encoder_key is None:
            raise ValueError("clear(weights_hash=...) needs encoder_key too")
        if encoder_key is None:
            targets: Iterable[Path] = [p for p in self.cache_dir.glob("*") if p.is_dir()] \
                if self.cache_dir.is_dir() else []
        elif weights_hash is None:
            targets = [self.cache_dir / _slug(encoder_key)]
        else:
            targets = [self.cache_dir / _slug(encoder_key) / str(weights_hash)[:16]]
        for t in targets:
            if t.exists():
                shutil.rmtree(t)
                logger.info("Removed cached embeddings %s", t)
