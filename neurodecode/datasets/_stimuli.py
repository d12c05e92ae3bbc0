"""StimulusSet: stimulus id → image, caption(s) or audio, loaded lazily."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


class StimulusSet:
    """The stimuli of a dataset, keyed by ``stimulus_id``.

    Parameters
    ----------
    ids : sequence of int | str
        The stimulus ids, one per row of ``images`` / ``audio``.
    images : array-like, shape (n_stimuli, height, width, 3) | None
        uint8 RGB images aligned with ``ids``. Any object with ``shape`` and
        integer-array ``__getitem__`` works (e.g. a lazy HDF5 reader), so images
        are only read when asked for.
    captions : mapping of id → list of str | None
        Captions per stimulus (e.g. COCO captions for NSD).
    audio : array-like, shape (n_stimuli, n_samples) | None
        Audio segments aligned with ``ids``.
    sfreq_audio : float | None
        Sampling rate of ``audio`` in Hz.
    metadata : pandas.DataFrame | None
        Extra per-stimulus columns (indexed like ``ids``).
    source : str | None
        Where the stimuli come from (a path), shown in ``repr``.
    """

    def __init__(self, ids: Sequence[Any], *, images: Any = None,
                 captions: Mapping[Any, list[str]] | None = None, audio: Any = None,
                 sfreq_audio: float | None = None, metadata: pd.DataFrame | None = None,
                 source: str | None = None) -> None:
        self.ids = pd.Index(list(ids), name="stimulus_id")
        if not self.ids.is_unique:
            dup = self.ids[self.ids.duplicated()][:5].tolist()
            raise ValueError(f"StimulusSet ids must be unique; duplicated ids include {dup}")
        for name, arr in (("images", images), ("audio", audio)):
            if arr is not None and len(arr) != len(self.ids):
                raise ValueError(
                    f"StimulusSet {name} has {len(arr)} rows but there are {len(self.ids)} ids; "
                    "they must be aligned row by row."
                )
        self.images_ = images
        self.captions_ = dict(captions) if captions is not None else None
        self.audio_ = audio
        self.sfreq_audio = sfreq_audio
        self.metadata = metadata
        self.source = source

    # -- basic protocol -------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, stimulus_id: Any) -> bool:
        return stimulus_id in self.ids

    @property
    def kinds(self) -> list[str]:
        """Which modalities are present (``image``, ``caption``, ``audio``)."""
        out = []
        if self.images_ is not None:
            out.append("image")
        if self.captions_ is not None:
            out.append("caption")
        if self.audio_ is not None:
            out.append("audio")
        return out

    def __repr__(self) -> str:
        parts = [f"{len(self):,} stimuli"]
        if self.images_ is not None:
            shape = getattr(self.images_, "shape", None)
            parts.append(f"images {tuple(shape[1:])}" if shape is not None else "images")
        if self.captions_ is not None:
            parts.append(f"captions for {len(self.captions_):,}")
        if self.audio_ is not None:
            parts.append(f"audio @ {self.sfreq_audio} Hz")
        if self.source:
            parts.append(f"from {self.source}")
        return f"<StimulusSet | {' | '.join(parts)}>"

    # -- lookups ----------------------------------------------------------
    def _rows(self, stimulus_ids: Iterable[Any]) -> np.ndarray:
        ids = list(stimulus_ids)
        rows = self.ids.get_indexer(ids)
        if (rows < 0).any():
            missing = [ids[i] for i in np.flatnonzero(rows < 0)[:5]]
            raise KeyError(f"Unknown stimulus id(s) {missing} (this StimulusSet has {len(self):,} stimuli)")
        return rows

    def get_images(self, stimulus_ids: Iterable[Any]) -> np.ndarray:
        """Return the images of ``stimulus_ids`` as uint8 (n, height, width, 3).

        Parameters
        ----------
        stimulus_ids : iterable
            Ids of the set, in any order (repeats allowed).

        Returns
        -------
        images : ndarray of uint8, shape (n, height, width, 3)
            The images, in the order of ``stimulus_ids``.
        """
        if self.images_ is None:
            raise ValueError("This StimulusSet has no images.")
        rows = self._rows(stimulus_ids)
        if len(rows) == 0:
            shape = tuple(self.images_.shape[1:])
            return np.zeros((0, *shape), dtype=np.uint8)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        uniq, inverse = np.unique(sorted_rows, return_inverse=True)
        block = np.asarray(self.images_[uniq])  # sorted, unique: what h5py needs
        out = np.empty((len(rows), *block.shape[1:]), dtype=block.dtype)
        out[order] = block[inverse]
        return out

    def get_image(self, stimulus_id: Any) -> np.ndarray:
        """Return one image, uint8 (height, width, 3).

        Parameters
        ----------
        stimulus_id : int | str
            An id of the set.

        Returns
        -------
        image : ndarray of uint8, shape (height, width, 3)
            The image.
        """
        return self.get_images([stimulus_id])[0]

    def get_captions(self, stimulus_id: Any) -> list[str]:
        """Return the captions of one stimulus (empty list if it has none).

        Parameters
        ----------
        stimulus_id : int | str
            An id of the set.

        Returns
        -------
        captions : list of str
            A new list of the stimulus's captions.
        """
        if self.captions_ is None:
            raise ValueError("This StimulusSet has no captions.")
        if stimulus_id not in self.ids:
            raise KeyError(f"Unknown stimulus id {stimulus_id!r}")
        return list(self.captions_.get(stimulus_id, []))

    def get_audio(self, stimulus_ids: Iterable[Any]) -> np.ndarray:
        """Return audio segments (n, n_samples).

        Parameters
        ----------
        stimulus_ids : iterable
            Ids of the set, in any order.

        Returns
        -------
        audio : ndarray, shape (n, n_samples)
            One waveform per id, at ``sfreq_audio``, in the order of ``stimulus_ids``.
        """
        if self.audio_ is None:
            raise ValueError("This StimulusSet has no audio.")
        rows = self._rows(stimulus_ids)
        return np.stack([np.asarray(self.audio_[r]) for r in rows]) if len(rows) else np.zeros((0, 0))

    def subset(self, stimulus_ids: Iterable[Any]) -> StimulusSet:
        """Return a StimulusSet restricted to ``stimulus_ids`` (lazy sources stay lazy).

        Parameters
        ----------
        stimulus_ids : iterable
            Ids of the set to keep (duplicates dropped, order kept).

        Returns
        -------
        stimuli : StimulusSet
            The subset, with the same source.
        """
        ids = list(dict.fromkeys(stimulus_ids))
        rows = self._rows(ids)
        images = None if self.images_ is None else _RowView(self.images_, rows)
        audio = None if self.audio_ is None else _RowView(self.audio_, rows)
        caps = None if self.captions_ is None else {i: self.captions_[i] for i in ids if i in self.captions_}
        meta = None if self.metadata is None else self.metadata.iloc[rows]
        out = StimulusSet(ids, images=images, captions=caps, audio=audio,
                          sfreq_audio=self.sfreq_audio, metadata=meta, source=self.source)
        out._root = _root_set(self)
        return out

    @classmethod
    def merge(cls, sets: Sequence[StimulusSet | None]) -> StimulusSet | None:
        """Union of several StimulusSets sharing one id space (same source wins).

        Parameters
        ----------
        sets : sequence of StimulusSet | None
            The sets to merge; None entries are skipped.

        Returns
        -------
        stimuli : StimulusSet | None
            The union (the first set itself when all are the same object), or None when
            every entry is None.
        """
        sets = [s for s in sets if s is not None]
        if not sets:
            return None
        first = sets[0]
        if all(s is first for s in sets):
            return first
        if all(_same_source(s, first) for s in sets):
            base = _root_set(first)
            ids: list[Any] = []
            for s in sets:
                ids.extend(s.ids)
            return base.subset(ids)
        ids, images, caps = [], [], {}
        for s in sets:
            for i in s.ids:
                if i in caps or i in ids:
                    continue
                ids.append(i)
            if s.captions_:
                caps.update(s.captions_)
        has_img = all(s.images_ is not None for s in sets)
        if has_img:
            seen = set()
            for s in sets:
                for i in s.ids:
                    if i not in seen:
                        seen.add(i)
                        images.append(s.get_image(i))
        return cls(ids, images=np.stack(images) if has_img and images else None,
                   captions=caps or None, source="merged")


def _root_set(s: StimulusSet) -> StimulusSet:
    return getattr(s, "_root", s)


def _same_source(a: StimulusSet, b: StimulusSet) -> bool:
    return a.source is not None and a.source == b.source


class _RowView:
    """A lazy view of some rows of an array-like (keeps HDF5 sources lazy)."""

    def __init__(self, base: Any, rows: np.ndarray) -> None:
        if isinstance(base, _RowView):
            rows = base.rows[rows]
            base = base.base
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *tuple(base.shape[1:]))
        self.dtype = getattr(base, "dtype", None)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: Any) -> np.ndarray:
        rows = self.rows[idx]
        if np.ndim(rows) == 0:
            return np.asarray(self.base[int(rows)])
        order = np.argsort(rows, kind="stable")
        uniq, inverse = np.unique(rows[order], return_inverse=True)
        block = np.asarray(self.base[uniq])
        out = np.empty((len(rows), *block.shape[1:]), dtype=block.dtype)
        out[order] = block[inverse]
        return out
