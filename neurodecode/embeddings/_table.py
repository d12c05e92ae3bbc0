"""StimulusEmbeddings: a lookup table from stimulus id to an embedding vector."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_path, check_path, ensure_finite, fill_doc, logger, verbose

_FORMAT = "neurodecode.StimulusEmbeddings"
_FORMAT_VERSION = 1


def _as_py(value: Any) -> Any:
    """numpy scalars → Python scalars (JSON-serialisable, hash-equal)."""
    return value.item() if isinstance(value, np.generic) else value


class StimulusEmbeddings:
    """Embedding vectors of stimuli, looked up by ``stimulus_id``.

    The targets a decoder learns to predict: one vector per stimulus (e.g. the
    CLIP image embedding of each NSD image), looked up for every trial by its
    ``events["stimulus_id"]``.

    Parameters
    ----------
    ids : sequence of int | str
        The stimulus ids, unique, one per row of ``values``.
    values : array-like, shape (n_stimuli, dim)
        The embeddings; stored as float32.
    name : str
        What the embeddings are (e.g. ``"ViT-L-14 image"``), kept when saved.
    normalize : bool
        If True, L2-normalise every row at construction.
    token_shape : tuple of int | None
        For token embeddings (e.g. CLIP's 257 × 768 image tokens, or speech
        frames × features), the shape of one stimulus's embedding; each row of
        ``values`` is that array flattened (C order), so
        ``prod(token_shape) == dim``. ``lookup(..., as_tokens=True)`` restores it.

        .. versionadded:: 0.1

    Attributes
    ----------
    ids : list
        The stimulus ids in row order.
    values : ndarray of float32, shape (n_stimuli, dim)
        The embedding table.
    token_shape : tuple of int | None
        The unflattened shape of one row, or None for plain vectors.

    Examples
    --------
    >>> emb = StimulusEmbeddings(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
    >>> emb.lookup(["b", "a", "b"]).shape
    (3, 2)
    """

    def __init__(self, ids: Sequence[Any], values: Any, *, name: str = "",
                 normalize: bool = False, token_shape: Sequence[int] | None = None) -> None:
        ids = [_as_py(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
        if (isinstance(values, np.ndarray) and values.dtype == np.float32 and not values.flags.writeable
                and not normalize):
            # Read-only float32 input (e.g. a view of EmbeddingCache's memory-mapped file) is kept as is:
            # nobody can modify it, and rows stay on disk until read, so token tables far larger than RAM
            # (256×1664 floats per image) can be used for training.
            pass
        else:
            values = np.array(values, dtype=np.float32, copy=True)
        if values.ndim != 2:
            raise ValueError(
                f"values must be a 2-D array of shape (n_stimuli, dim), got shape {values.shape}"
            )
        if len(ids) != len(values):
            raise ValueError(
                f"ids has {len(ids)} entries but values has {len(values)} rows; they must be aligned"
            )
        if token_shape is not None:
            token_shape = tuple(int(t) for t in token_shape)
            if int(np.prod(token_shape)) != values.shape[1] or min(token_shape, default=0) < 1:
                raise ValueError(
                    f"token_shape {token_shape} does not match the row length {values.shape[1]} of values; "
                    "rows must be the flattened token arrays (prod(token_shape) == dim)"
                )
        for start in range(0, len(values), 4096):  # chunked: never a full-size temporary
            ensure_finite(values[start:start + 4096], what="StimulusEmbeddings values")
        index = {}
        for row, sid in enumerate(ids):
            if sid in index:
                raise ValueError(f"StimulusEmbeddings ids must be unique; {sid!r} appears more than once")
            index[sid] = row
        if normalize:
            norms = np.linalg.norm(values, axis=1, keepdims=True)
            if np.any(norms == 0):
                bad = [ids[i] for i in np.flatnonzero(norms[:, 0] == 0)[:5]]
                raise ValueError(f"cannot normalize zero-norm embeddings (ids {bad}); use normalize=False")
            values /= norms
        self.ids = ids
        self.values = values
        self.name = str(name)
        self.token_shape = token_shape
        self._index = index

    # -- basic protocol -----------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, stimulus_id: Any) -> bool:
        return _as_py(stimulus_id) in self._index

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.values.shape[1])

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        tokens = f" (tokens {' × '.join(map(str, self.token_shape))})" if self.token_shape else ""
        return f"<StimulusEmbeddings{name} | {len(self):,} stimuli × {self.dim} dims{tokens}>"

    # -- lookup ----------------------------------------------------------------
    def _rows(self, stimulus_ids: Iterable[Any]) -> np.ndarray:
        if hasattr(stimulus_ids, "to_numpy"):
            stimulus_ids = stimulus_ids.to_numpy()
        keys = [_as_py(s) for s in stimulus_ids]
        get = self._index.get
        rows = [get(k, -1) for k in keys]
        if -1 in rows:
            missing = list(dict.fromkeys(k for k, r in zip(keys, rows) if r < 0))
            msg = (f"{len(missing)} stimulus id(s) have no embedding in {self!r}: "
                   f"{missing[:10]}{' …' if len(missing) > 10 else ''}.")
            known = {str(k) for k in self._index}
            if all(str(m) in known for m in missing[:10]):
                msg += (" The same ids exist as a different type (e.g. int vs str); convert "
                        "events['stimulus_id'] or the table ids to one type.")
            else:
                msg += " Embed these stimuli, or select trials whose stimuli are in the table."
            raise KeyError(msg)
        return np.asarray(rows, dtype=np.int64)

    def lookup(self, stimulus_ids: Iterable[Any], *, as_tokens: bool = False) -> np.ndarray:
        """Return the embeddings of ``stimulus_ids``, in order.

        Parameters
        ----------
        stimulus_ids : iterable of int | str
            E.g. ``trials.events["stimulus_id"]``; repeats are allowed.
        as_tokens : bool
            Return shape ``(n_ids, *token_shape)`` (needs ``token_shape``).

        Returns
        -------
        values : ndarray of float32, shape (n_ids, dim)
            A new array (safe to modify); ``(n_ids, *token_shape)`` with ``as_tokens``.

        Raises
        ------
        KeyError
            Listing the ids that have no embedding.
        """
        out = self.values[self._rows(stimulus_ids)]
        if as_tokens:
            if self.token_shape is None:
                raise ValueError(f"{self!r} holds plain vectors (token_shape is None); use as_tokens=False")
            out = out.reshape(len(out), *self.token_shape)
        return out

    def subset(self, stimulus_ids: Iterable[Any]) -> StimulusEmbeddings:
        """A new table holding only ``stimulus_ids`` (in that order, duplicates dropped).

        Parameters
        ----------
        stimulus_ids : iterable
            Ids to keep; each must be in the table.

        Returns
        -------
        embeddings : StimulusEmbeddings
            The subset, with the same name and token shape.
        """
        keys = list(dict.fromkeys(_as_py(s) for s in stimulus_ids))
        rows = self._rows(keys)
        return StimulusEmbeddings(keys, self.values[rows], name=self.name, token_shape=self.token_shape)

    # -- I/O -----------------------------------------------------------------------
    @verbose
    @fill_doc
    def save(self, path: str | Path, *, verbose: bool | str | int | None = None) -> Path:
        """Save to ``.npz`` or ``.safetensors`` (chosen by the suffix), atomically.

        Ids and the name are stored as JSON (inside the npz, or in the
        safetensors metadata); nothing is pickled.

        Parameters
        ----------
        path : str | Path
            Output file ending in ``.npz`` or ``.safetensors``.
        %(verbose)s

        Returns
        -------
        path : Path
            The written file.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".npz", ".safetensors"):
            raise ValueError(
                f"path must end in '.npz' or '.safetensors', got {path.name!r}"
            )
        meta = {"format": _FORMAT, "format_version": str(_FORMAT_VERSION), "name": self.name,
                "ids": json.dumps(self.ids)}
        if self.token_shape is not None:
            meta["token_shape"] = json.dumps(list(self.token_shape))
        with atomic_path(path) as tmp:
            if suffix == ".npz":
                with open(tmp, "wb") as fh:
                    np.savez(fh, values=self.values, **{k: np.array(v) for k, v in meta.items()})
            else:
                from safetensors.numpy import save_file

                save_file({"values": np.ascontiguousarray(self.values)}, str(tmp), metadata=meta)
        logger.info("Saved %r to %s", self, path)
        return path

    @classmethod
    @verbose
    @fill_doc
    def load(cls, path: str | Path, *, verbose: bool | str | int | None = None) -> StimulusEmbeddings:
        """Load a table written by :meth:`save`.

        Parameters
        ----------
        path : str | Path
            A ``.npz`` or ``.safetensors`` file.
        %(verbose)s

        Returns
        -------
        embeddings : StimulusEmbeddings
        """
        path = check_path(path, what="Embeddings file", kind="file",
                           hint="Write it with StimulusEmbeddings.save(path)")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                if "values" not in npz or "ids" not in npz:
                    raise ValueError(f"{path} is not a StimulusEmbeddings file (no 'values'/'ids')")
                values = npz["values"]
                meta = {k: str(npz[k]) for k in npz.files if k != "values"}
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as fh:
                meta = dict(fh.metadata() or {})
                if "values" not in fh.keys() or "ids" not in meta:
                    raise ValueError(f"{path} is not a StimulusEmbeddings file (no 'values'/'ids')")
                values = fh.get_tensor("values")
        else:
            raise ValueError(f"path must end in '.npz' or '.safetensors', got {path.name!r}")
        token_shape = json.loads(meta["token_shape"]) if meta.get("token_shape") else None
        out = cls(json.loads(meta["ids"]), values, name=meta.get("name", ""), token_shape=token_shape)
        logger.info("Loaded %r from %s", out, path)
        return out
