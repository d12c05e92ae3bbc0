"""Published checkpoints of the originals, read weights-only and mapped onto neurodecode models.

``from_published(family, path, **options)`` reads the original checkpoint file without unpickling code
(:func:`~neurodecode.models.published.loading.read_checkpoint`), checks every key and shape against the
original's architecture for the configuration the file gives, and maps each tensor onto a
:class:`~neurodecode.models.BrainDecoder` that computes the original's forward pass. What is supported and
what each family's files hold: ``docs/published.md``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atm import load_atms
from .brainmagick import load_simpleconv
from .mindbridge import load_mindbridge
from .mindeye1 import load_mindeye1
from .mindeye2 import load_mindeye2

__all__ = ["PublishedFamily", "from_published", "list_published"]


@dataclass(frozen=True)
class PublishedFamily:
    """One family of published checkpoints that :func:`from_published` reads.

    Parameters
    ----------
    name : str
        The family name (``"atm"``).
    original : str
        The original model and the file its code is in.
    load : callable
        ``load(path, **options) → BrainDecoder``.
    options : str
        The options the loader takes, for messages and docs.
    """

    name: str
    original: str
    load: Callable[..., Any]
    options: str


_FAMILIES: dict[str, PublishedFamily] = {
    "atm": PublishedFamily(
        "atm", "ATM-S, dongyangli-del/EEG_Image_decode Retrieval/ATMS_retrieval.py (ATMS)", load_atms,
        "subjects=range(1, 11), n_chans=63, n_heads=4, pool_size=51, pool_stride=5"),
    "brainmagick": PublishedFamily("brainmagick",
                                   "facebookresearch/brainmagick bm/models/simpleconv.py (SimpleConv)",
                                   load_simpleconv, "positions={subject: (n_chans, 2)} (required), "
                                   "subject_index=None, n_times=342, dilation_period=5"),
    "mindbridge": PublishedFamily("mindbridge", "littlepure2333/MindBridge src/models.py (MindBridge)",
                                  load_mindbridge, "voxels=None (subject → voxel count; default: NSD "
                                  "nsdgeneral counts), token_dim=768"),
    "mindeye1": PublishedFamily("mindeye1", "MedARC-AI/fMRI-reconstruction-NSD src/models.py (BrainNetwork, "
                                "BrainDiffusionPrior, Voxel2StableDiffusionModel)", load_mindeye1,
                                "parts='all' | 'retrieval' | ('retrieval', 'prior') | 'lowlevel', "
                                "subject=None (from the NSD voxel count)"),
    "mindeye2": PublishedFamily("mindeye2", "MedARC-AI/MindEyeV2 src/models.py (BrainNetwork) + "
                                "src/Train.ipynb (RidgeRegression, MindEyeModule)", load_mindeye2,
                                "parts='all' | 'retrieval' | subset of ('retrieval', 'blurry', 'prior'), "
                                "subjects=None (from the NSD voxel counts)"),
}


def list_published() -> list[str]:
    """Families of published checkpoints :func:`from_published` reads.

    Returns
    -------
    names : list of str
        The family names (MindEye1 and MindEye2 with their diffusion priors).
    """
    return list(_FAMILIES)


def from_published(family: str, path: str | Path, **options: Any) -> Any:
    """Load an original published checkpoint, weights only, as a neurodecode model.

    Parameters
    ----------
    family : {"atm", "brainmagick", "mindbridge", "mindeye1", "mindeye2"}
        The original model family (see :func:`list_published`).
    path : str | Path
        The checkpoint file as the original code saves it (a torch file — read with ``weights_only=True``;
        pickled non-tensor objects of the expected kinds are read as inert placeholders — or safetensors).
    **options
        Per family: ``atm`` — ``subjects`` (ATM's integer ids, default 1–10), ``n_chans``, ``n_heads``,
        ``pool_size``, ``pool_stride``; ``brainmagick`` — ``positions`` (required: subject → 2-D sensor
        positions), ``subject_index`` (subject → brainmagick subject index), ``n_times``, ``dilation_period``;
        ``mindbridge`` — ``voxels`` (subject → voxel count; default: the NSD nsdgeneral counts), ``token_dim``
        (768: ``head_text`` becomes a ``text`` head of 77 × 768); ``mindeye1`` (the file kind — ``prior_257``,
        ``prior_1x768``, ``autoencoder`` — is read from the keys) — ``parts`` (``"all"``, the default: every
        part the file holds, ``voxel2clip`` and its prior — the 257-token ``dalle2`` prior, or the 1×768
        files' nousr ``dalle2_network`` prior; ``"retrieval"`` loads ``voxel2clip`` and keeps the prior
        aside; autoencoder files load their ``"lowlevel"`` part as a ``vae_decoder`` head), ``subject``
        (default: from the NSD voxel count);
        ``mindeye2`` — ``parts`` (``"all"``, the default: every part the file holds; ``"retrieval"`` loads
        ridge → backbone → ``clip_proj``, ``"blurry"`` adds the blurry branch as a ``vae_decoder`` head,
        ``"prior"`` the diffusion prior, sampled with ``model.sample_prior``; the rest goes to ``unused``),
        ``subjects`` (one per ridge layer; default: from the NSD voxel counts).

    Returns
    -------
    model : BrainDecoder
        In eval mode. ``model.published`` is a dict: ``family``, ``config`` (the original's configuration),
        ``unused`` (original tensors that play no part at inference, each with the reason), ``path``,
        ``container``.

    Raises
    ------
    ValueError
        Unknown family; a pickled global that is not expected; any original key that cannot be placed, a
        missing key, or a shape that differs from the original's (one message listing them); MindEye1/2
        prior schedule buffers that are not dalle2's cosine schedule for the file's timesteps.
    """
    if family not in _FAMILIES:
        close = difflib.get_close_matches(str(family), list(_FAMILIES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown published family {family!r}.{hint} Supported: "
                         f"{', '.join(repr(k) for k in _FAMILIES)}.")
    return _FAMILIES[family].load(path, **options)
