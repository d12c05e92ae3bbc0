"""Captions from decoded embeddings: caption-bank retrieval and a ClipCap-style prefix captioner.

Two ways to turn a decoded CLIP embedding into text:

- :class:`CaptionBank` — nearest-neighbour retrieval: embed a bank of captions with CLIP's
  text tower and return, for each decoded embedding, the captions with the highest cosine
  similarity. The captions of the test image itself must not be in the bank (that would leak
  the answer); :meth:`CaptionBank.retrieve` removes them per query through ``exclude_ids``,
  and :meth:`CaptionBank.without` builds a bank without a whole set of stimuli.
- :class:`PrefixCaptioner` — generation in the manner of ClipCap (Mokady et al., 2021,
  ``rmokady/CLIP_prefix_caption``): a mapping network (an MLP, or a transformer) turns a CLIP
  embedding into ``prefix_length`` token embeddings that are prepended to a caption and fed
  to a causal language model (GPT-2). It is trained with the language-model cross-entropy on
  the caption tokens on (image embedding, caption) pairs — e.g. the CLIP embeddings of the
  NSD training images and their COCO captions — and then applied to decoded embeddings.
  Language models are read from local folders only.

Score either with :func:`~neurodecode.tasks.caption_metrics.evaluate_captions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..models.pretrained import read_pretrained, write_pretrained
from ..utils import ProgressBar, check_option, check_path, ensure_finite, fill_doc, logger, verbose, warn

__all__ = ["CaptionBank", "PrefixCaptioner"]

_LM_DIR = "language_model"
_TOKENIZER_DIR = "tokenizer"


def _as_py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _as_float_matrix(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, dim), got {arr.shape}")
    ensure_finite(arr, what=name)
    return arr


def _flatten_captions(captions: Sequence[str] | Mapping[Any, Sequence[str]],
                      ids: Sequence[Any] | None) -> tuple[list[str], list[Any] | None]:
    """Captions as a flat list plus one id per caption (None when no ids are known)."""
    if isinstance(captions, Mapping):
        if ids is not None:
            raise ValueError("pass either a mapping {stimulus_id: captions} or ids=, not both")
        flat, flat_ids = [], []
        for key, caps in captions.items():
            caps = [caps] if isinstance(caps, str) else list(caps)
            flat.extend(str(c) for c in caps)
            flat_ids.extend([_as_py(key)] * len(caps))
        return flat, flat_ids
    if isinstance(captions, str):
        raise TypeError("captions must be a sequence of strings, not one string; wrap it in a list")
    flat = [str(c) for c in captions]
    if ids is None:
        return flat, None
    ids = [_as_py(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
    if len(ids) != len(flat):
        raise ValueError(f"ids must give one stimulus id per caption: {len(ids)} ids for "
                         f"{len(flat)} captions")
    return flat, ids


# =========================================================================== retrieval
class CaptionBank:
    """A bank of captions and their embeddings, searched by cosine similarity.

    Parameters
    ----------
    captions : sequence of str | mapping
        The captions, or ``{stimulus_id: [captions]}`` (then ``ids`` is filled in).
    embeddings : array-like, shape (n_captions, dim)
        One embedding per caption, in the space of the decoded embeddings (e.g. CLIP
        ViT-L/14 pooled text embeddings when the decoder predicts CLIP embeddings).
    ids : sequence | None
        The stimulus each caption describes (e.g. its NSD / COCO id). Needed to exclude a
        query's own captions (``exclude_ids`` in :meth:`retrieve`) and for :meth:`without`.

    Attributes
    ----------
    captions : list of str
    embeddings : ndarray of float32, shape (n_captions, dim)
        L2-normalised rows.
    ids : list | None

    Examples
    --------
    >>> bank = CaptionBank.from_encoder(train_captions, encoder)  # doctest: +SKIP
    >>> bank.retrieve(decoded, k=1, exclude_ids=test_ids)  # doctest: +SKIP
    [['a man riding a wave on a surfboard'], ...]
    """

    def __init__(self, captions: Sequence[str] | Mapping[Any, Sequence[str]], embeddings: Any, *,
                 ids: Sequence[Any] | None = None) -> None:
        flat, flat_ids = _flatten_captions(captions, ids)
        emb = _as_float_matrix(embeddings, "embeddings")
        if len(emb) != len(flat):
            raise ValueError(f"embeddings must have one row per caption: {len(emb)} rows for "
                             f"{len(flat)} captions")
        if not flat:
            raise ValueError("a CaptionBank needs at least one caption")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.captions = flat
        self.embeddings = (emb / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)
        self.ids = flat_ids
        self._rows_by_id: dict[Any, np.ndarray] | None = None

    @classmethod
    @verbose
    @fill_doc
    def from_encoder(cls, captions: Sequence[str] | Mapping[Any, Sequence[str]], encoder: Any, *,
                     ids: Sequence[Any] | None = None, prompt: str = "",
                     verbose: bool | str | int | None = None) -> CaptionBank:
        """Embed ``captions`` with a :class:`~neurodecode.embeddings.ClipEncoder`'s text tower.

        Parameters
        ----------
        captions : sequence of str | mapping
            As in the constructor.
        encoder : ClipEncoder
            Any object with ``embed_texts(texts, outputs=("pooled",))``; use the CLIP model
            whose *image* embeddings the decoder was trained to predict.
        ids : sequence | None
            As in the constructor.
        prompt : str
            Text prepended to every caption before embedding (none by default).
        %(verbose)s

        Returns
        -------
        bank : CaptionBank
        """
        flat, flat_ids = _flatten_captions(captions, ids)
        texts = [prompt + c for c in flat]
        emb = encoder.embed_texts(texts, outputs=("pooled",))["pooled"]
        logger.info("Embedded a bank of %d captions with %s", len(flat),
                    getattr(encoder, "model_name", "the encoder"))
        return cls(flat, emb, ids=flat_ids)

    def __len__(self) -> int:
        return len(self.captions)

    def __repr__(self) -> str:
        n_ids = len(set(self.ids)) if self.ids is not None else 0
        return (f"<CaptionBank | {len(self)} captions, dim {self.embeddings.shape[1]}"
                + (f", {n_ids} stimuli" if self.ids is not None else ", no ids") + ">")

    def _rows(self) -> dict[Any, np.ndarray]:
        if self._rows_by_id is None:
            rows: dict[Any, list[int]] = {}
            for i, key in enumerate(self.ids or []):
                rows.setdefault(key, []).append(i)
            self._rows_by_id = {k: np.asarray(v) for k, v in rows.items()}
        return self._rows_by_id

    def without(self, ids: Sequence[Any]) -> CaptionBank:
        """A new bank without the captions of the stimuli ``ids`` (e.g. all test stimuli).

        Parameters
        ----------
        ids : sequence
            Stimulus ids whose captions to drop (ids not in the bank are ignored).

        Returns
        -------
        bank : CaptionBank
            A new bank with the other captions, their embeddings and ids.

        Raises
        ------
        ValueError
            If the bank has no ids, or dropping ``ids`` leaves it empty.
        """
        if self.ids is None:
            raise ValueError("this CaptionBank has no ids; build it with ids= (or a mapping) to drop stimuli")
        drop = {_as_py(i) for i in ids}
        keep = [i for i, key in enumerate(self.ids) if key not in drop]
        if not keep:
            raise ValueError("removing these ids leaves the bank empty")
        return CaptionBank([self.captions[i] for i in keep], self.embeddings[keep],
                           ids=[self.ids[i] for i in keep])

    def _exclusions(self, exclude_ids: Sequence[Any] | None, n_queries: int) -> list[np.ndarray] | None:
        if exclude_ids is None:
            return None
        if self.ids is None:
            raise ValueError("exclude_ids needs a CaptionBank built with ids= (one stimulus id per caption)")
        if isinstance(exclude_ids, np.ndarray):
            exclude_ids = exclude_ids.tolist()
        if len(exclude_ids) != n_queries:
            raise ValueError(f"exclude_ids must give one entry per query ({n_queries}), "
                             f"got {len(exclude_ids)}")
        rows = self._rows()
        out = []
        for entry in exclude_ids:
            several = (isinstance(entry, (Sequence, set, frozenset, np.ndarray))
                       and not isinstance(entry, (str, bytes)))
            keys = list(entry) if several else [entry]
            idx = [rows[_as_py(k)] for k in keys if isinstance(_as_py(k), Hashable) and _as_py(k) in rows]
            out.append(np.concatenate(idx) if idx else np.zeros(0, dtype=int))
        return out

    @verbose
    @fill_doc
    def search(self, decoded: Any, k: int = 1, *, exclude_ids: Sequence[Any] | None = None,
               unique: bool = True, batch_size: int = 1024,
               verbose: bool | str | int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and cosine similarities of the ``k`` best captions per query.

        Parameters
        ----------
        decoded : array-like, shape (n_queries, dim)
            Decoded embeddings (numpy or torch).
        k : int
            Captions per query.
        exclude_ids : sequence | None
            One entry per query: a stimulus id, or a collection of ids (a list, tuple, set or
            array is read as several ids), whose captions are removed from that query's
            candidates — pass the test stimulus ids so that no image is described by its own
            captions. None: nothing is excluded.
        unique : bool
            Skip captions whose text equals one already returned for the query.
        batch_size : int
            Queries per similarity block (bounds memory).
        %(verbose)s

        Returns
        -------
        indices : ndarray of int, shape (n_queries, k)
            Rows of the bank, most similar first; -1 where fewer than ``k`` captions remain.
        scores : ndarray of float32, shape (n_queries, k)
            Their cosine similarities (NaN where the index is -1).
        """
        q = _as_float_matrix(decoded, "decoded")
        if q.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"decoded has dim {q.shape[1]} but the bank's embeddings have dim "
                             f"{self.embeddings.shape[1]}; embed the bank with the model the decoder targets")
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        excl = self._exclusions(exclude_ids, len(q))
        if exclude_ids is None and self.ids is not None:
            logger.info("CaptionBank.search without exclude_ids: a query's own captions may be returned if "
                        "its stimulus is in the bank")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        n_bank = len(self)
        indices = np.full((len(q), k), -1, dtype=np.int64)
        scores = np.full((len(q), k), np.nan, dtype=np.float32)
        for start in range(0, len(q), int(batch_size)):
            sim = q[start:start + int(batch_size)] @ self.embeddings.T
            for j, row in enumerate(sim):
                i = start + j
                if excl is not None and len(excl[i]):
                    row = row.copy()
                    row[excl[i]] = -np.inf
                m = min(n_bank, 4 * k + 16)
                cand = np.argpartition(-row, m - 1)[:m] if m < n_bank else np.arange(n_bank)
                order = cand[np.lexsort((cand, -row[cand]))]
                picked = self._pick(order, row, k, unique)
                if len(picked) < k and m < n_bank:
                    order = np.lexsort((np.arange(n_bank), -row))
                    picked = self._pick(order, row, k, unique)
                indices[i, :len(picked)] = picked
                scores[i, :len(picked)] = row[picked]
        return indices, scores

    def _pick(self, order: np.ndarray, row: np.ndarray, k: int, unique: bool) -> list[int]:
        picked: list[int] = []
        seen: set[str] = set()
        for idx in order:
            if not np.isfinite(row[idx]):
                break
            text = self.captions[idx]
            if unique and text in seen:
                continue
            seen.add(text)
            picked.append(int(idx))
            if len(picked) == k:
                break
        return picked

    @verbose
    @fill_doc
    def retrieve(self, decoded: Any, k: int = 1, *, exclude_ids: Sequence[Any] | None = None,
                 unique: bool = True, verbose: bool | str | int | None = None) -> list[list[str]]:
        """The ``k`` captions most similar (cosine) to each decoded embedding.

        Parameters
        ----------
        decoded : array-like, shape (n_queries, dim)
            Decoded embeddings.
        k : int
            Captions per query.
        exclude_ids : sequence | None
            One stimulus id (or collection of ids) per query whose captions are excluded for
            that query; pass the test stimulus ids to avoid leakage (see :meth:`search`).
        unique : bool
            Do not return the same caption text twice for one query.
        %(verbose)s

        Returns
        -------
        captions : list of list of str
            ``n_queries`` lists of up to ``k`` captions, most similar first. Use
            ``[c[0] for c in captions]`` as candidates for
            :func:`~neurodecode.tasks.caption_metrics.evaluate_captions`.
        """
        indices, _ = self.search(decoded, k, exclude_ids=exclude_ids, unique=unique)
        return [[self.captions[i] for i in row if i >= 0] for row in indices]


# =========================================================================== generation
class _MLPMapper(nn.Module):
    """ClipCap's MLP: Linear → Tanh → Linear to ``prefix_length * n_embd``."""

    def __init__(self, embed_dim: int, n_embd: int, prefix_length: int, hidden_dim: int) -> None:
        super().__init__()
        self.prefix_length, self.n_embd = prefix_length, n_embd
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.Tanh(),
                                 nn.Linear(hidden_dim, n_embd * prefix_length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0], self.prefix_length, self.n_embd)


class _TransformerMapper(nn.Module):
    """ClipCap's transformer mapper: ``clip_length`` tokens from the embedding plus learned constants."""

    def __init__(self, embed_dim: int, n_embd: int, prefix_length: int, clip_length: int,
                 n_layers: int, n_heads: int) -> None:
        super().__init__()
        self.clip_length, self.n_embd = clip_length, n_embd
        self.linear = nn.Linear(embed_dim, clip_length * n_embd)
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, n_embd))
        layer = nn.TransformerEncoderLayer(n_embd, n_heads, dim_feedforward=2 * n_embd, dropout=0.0,
                                           activation="relu", batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x).view(x.shape[0], self.clip_length, self.n_embd)
        const = self.prefix_const.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.transformer(torch.cat([h, const], dim=1))[:, self.clip_length:]


def _import_transformers():
    from ..utils.imports import import_optional

    return import_optional("transformers", extra="generation", what="Prefix captioners")


def _load_language_model(source: Any, random_state: int) -> tuple[nn.Module, str | None]:
    """A causal LM from a local folder, a model instance, or a config (random weights)."""
    transformers = _import_transformers()
    if isinstance(source, nn.Module):
        name = str(getattr(source, "name_or_path", "") or "")
        return source, (name if name and Path(name).is_dir() else None)
    if isinstance(source, transformers.PretrainedConfig):
        with torch.random.fork_rng(devices=[]):
            torch.random.manual_seed(int(random_state))
            model = transformers.AutoModelForCausalLM.from_config(source)
        return model, None
    if isinstance(source, (str, Path)):
        path = check_path(source, what="language model folder", kind="dir",
                           hint="Pass a local folder holding a causal LM saved with save_pretrained (e.g. "
                                "GPT-2: config.json and model.safetensors); nothing is downloaded")
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        logger.info("Loaded the language model %s from %s", type(model).__name__, path)
        return model, str(path)
    raise TypeError("language_model must be a local folder, a transformers causal LM, or a transformers "
                    f"config (random weights, for tests); got {type(source).__name__}")


def _check_fit_args(epochs: Any, batch_size: Any, lr: float, schedule: str, noise_std: float) -> None:
    """Errors for out-of-range training settings of :meth:`PrefixCaptioner.fit`."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    check_option("schedule", schedule, ("linear", "constant"))
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")


def _lr_factor(schedule: str, warm: int, total: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up over ``warm`` steps, then constant or linear decay."""
    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warm))

    return factor


class PrefixCaptioner(nn.Module):
    """ClipCap-style captioner: embedding → prefix token embeddings → causal language model.

    Parameters
    ----------
    language_model : str | Path | PreTrainedModel | PretrainedConfig
        A local folder with a causal LM (GPT-2 in ClipCap; loaded with
        ``from_pretrained(path, local_files_only=True)``), a loaded model (e.g.
        ``transformers.GPT2LMHeadModel``), or a config such as ``GPT2Config(n_embd=32,
        n_layer=2)`` for a randomly initialised one (tests).
    embed_dim : int
        Size of the input embeddings (768 for CLIP ViT-L/14 pooled embeddings).
    prefix_length : int
        Number of prefix tokens (10 in ClipCap).
    mapping : ``"mlp"`` | ``"transformer"``
        ClipCap's two mapping networks: ``"mlp"`` (Linear–Tanh–Linear, hidden size
        ``prefix_length * n_embd // 2``; the paper's choice when the LM is fine-tuned) or
        ``"transformer"`` (``clip_length`` tokens from the embedding plus ``prefix_length``
        learned constants through a transformer encoder; the paper's choice with a frozen LM).
    hidden_dim : int | None
        Hidden size of the MLP (default ``prefix_length * n_embd // 2``).
    clip_length : int
        Tokens made from the embedding by the transformer mapper (10 in ClipCap).
    n_mapping_layers : int
        Transformer mapper layers (8 in ClipCap).
    n_heads : int
        Transformer mapper attention heads (8 in ClipCap).
    normalize : bool
        L2-normalise input embeddings before the mapping (ClipCap's ``--normalize_prefix``);
        makes the captioner insensitive to the scale of decoded embeddings.
    random_state : int
        Seed of the mapping network's (and a config-built LM's) initialisation; the global
        torch RNG is untouched.
    tokenizer : tokenizer | str | Path | None
        The LM's tokenizer (a ``transformers`` tokenizer or a local folder); may instead be
        given to :meth:`fit`.

    Attributes
    ----------
    language_model : PreTrainedModel
        The causal LM.
    mapping_network : nn.Module
        The mapping network (the part trained with ``freeze_lm=True``).
    tokenizer_ : tokenizer | None
        The tokenizer used by :meth:`generate`.
    history_ : dict
        After :meth:`fit`: ``"epoch_loss"`` (mean loss per epoch) and ``"step_loss"``; only
        ``"epoch_loss"`` is saved by :meth:`save_pretrained`.

    Notes
    -----
    Training (:meth:`fit`) follows ClipCap: each caption is tokenised, the end-of-text token
    is appended, the prefix embeddings are concatenated in front of the token embeddings, and
    the loss is the LM cross-entropy of every caption token (and the end token) given the
    prefix and the preceding tokens; prefix and padding positions carry no loss. ClipCap
    trains with AdamW (lr 2e-5, 5000 warm-up steps, batch 40, 10 epochs) on COCO.

    Examples
    --------
    >>> cap = PrefixCaptioner("/models/gpt2", embed_dim=768)  # doctest: +SKIP
    >>> cap.fit(train_image_embeddings, train_captions, "/models/gpt2", epochs=10)  # doctest: +SKIP
    >>> cap.generate(decoded_embeddings, num_beams=5)  # doctest: +SKIP
    """

    def __init__(self, language_model: Any, *, embed_dim: int, prefix_length: int = 10,
                 mapping: Literal["mlp", "transformer"] = "mlp", hidden_dim: int | None = None,
                 clip_length: int = 10, n_mapping_layers: int = 8, n_heads: int = 8, normalize: bool = True,
                 random_state: int = 0, tokenizer: Any = None) -> None:
        super().__init__()
        check_option("mapping", mapping, ("mlp", "transformer"))
        for name, value in (("embed_dim", embed_dim), ("prefix_length", prefix_length),
                            ("clip_length", clip_length), ("n_mapping_layers", n_mapping_layers),
                            ("n_heads", n_heads)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        lm, lm_path = _load_language_model(language_model, random_state)
        self.language_model = lm
        n_embd = int(lm.get_input_embeddings().embedding_dim)
        self.embed_dim, self.prefix_length, self.mapping = int(embed_dim), int(prefix_length), mapping
        self.clip_length, self.n_mapping_layers = int(clip_length), int(n_mapping_layers)
        self.n_heads = int(n_heads)
        self.hidden_dim = int(hidden_dim) if hidden_dim else max(1, self.prefix_length * n_embd // 2)
        self.normalize, self.random_state = bool(normalize), int(random_state)
        self.n_embd = n_embd
        with torch.random.fork_rng(devices=[]):
            torch.random.manual_seed(self.random_state)
            if mapping == "mlp":
                self.mapping_network: nn.Module = _MLPMapper(self.embed_dim, n_embd, self.prefix_length,
                                                             self.hidden_dim)
            else:
                if n_embd % self.n_heads:
                    raise ValueError(f"n_heads={self.n_heads} must divide the LM's embedding size {n_embd}")
                self.mapping_network = _TransformerMapper(self.embed_dim, n_embd, self.prefix_length,
                                                          self.clip_length, self.n_mapping_layers,
                                                          self.n_heads)
        self.mapping_network.to(next(lm.parameters()).device)
        self._lm_path = lm_path
        self._lm_trained = lm_path is None  # a config-built (random) LM has no folder to point to
        self.tokenizer_ = _load_tokenizer(tokenizer) if tokenizer is not None else None
        self.history_: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    def __repr__(self) -> str:
        n_map = sum(p.numel() for p in self.mapping_network.parameters())
        n_lm = sum(p.numel() for p in self.language_model.parameters())
        return (f"<PrefixCaptioner | {self.mapping} mapping {self.embed_dim}→{self.prefix_length}"
                f"×{self.n_embd} ({n_map:,} params) | {type(self.language_model).__name__} "
                f"({n_lm:,} params)>")

    def prefix(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Prefix token embeddings, shape (batch, prefix_length, n_embd), from (batch, embed_dim).

        Parameters
        ----------
        embeddings : Tensor, shape (batch, embed_dim)
            Stimulus (or decoded) embeddings; L2-normalised first when ``normalize``.

        Returns
        -------
        prefix : Tensor, shape (batch, prefix_length, n_embd)
            The mapping network's output, in the language model's embedding dtype.
        """
        x = embeddings.to(self.device, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must have shape (batch, {self.embed_dim}), got {tuple(x.shape)}")
        if self.normalize:
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        dtype = self.language_model.get_input_embeddings().weight.dtype
        return self.mapping_network(x).to(dtype)

    def forward(self, embeddings: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> Any:
        """Run the LM on ``[prefix(embeddings), tokens]``.

        Parameters
        ----------
        embeddings : Tensor, shape (batch, embed_dim)
        input_ids : Tensor of int, shape (batch, n_tokens)
            Caption tokens (including the end token).
        attention_mask : Tensor, shape (batch, n_tokens) | None
            1 for real tokens, 0 for padding.
        labels : Tensor of int, shape (batch, n_tokens) | None
            Targets (-100 = no loss); None: ``input_ids`` with padding masked out.

        Returns
        -------
        output : transformers CausalLMOutput
            ``loss`` (mean cross-entropy over the caption tokens) and ``logits`` of shape
            (batch, prefix_length + n_tokens, vocab).
        """
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        if labels is None:
            labels = input_ids.masked_fill(attention_mask == 0, -100)
        prefix = self.prefix(embeddings)
        tokens = self.language_model.get_input_embeddings()(input_ids)
        b, p = prefix.shape[:2]
        inputs = torch.cat([prefix, tokens], dim=1)
        ones = torch.ones(b, p, dtype=attention_mask.dtype, device=self.device)
        mask = torch.cat([ones, attention_mask], dim=1)
        full_labels = torch.cat([torch.full((b, p), -100, dtype=labels.dtype, device=self.device),
                                 labels.to(self.device)], dim=1)
        return self.language_model(inputs_embeds=inputs, attention_mask=mask, labels=full_labels)

    def train(self, mode: bool = True) -> PrefixCaptioner:
        """Set training mode; a frozen language model stays in eval mode (no dropout), as in ClipCap.

        Parameters
        ----------
        mode : bool
            True: training mode; False: evaluation mode.

        Returns
        -------
        self : PrefixCaptioner
            The captioner.
        """
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.language_model.parameters()):
            self.language_model.eval()
        return self

    # ------------------------------------------------------------------ training
    def _encode(self, tokenizer: Any, captions: list[str],
                max_tokens: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token_id; captions need an end token to learn to stop")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        ids = tokenizer(list(captions), add_special_tokens=False)["input_ids"]
        cfg = self.language_model.config
        n_pos = getattr(cfg, "n_positions", 0) or getattr(cfg, "max_position_embeddings", 0) or 10**9
        limit = int(n_pos) - self.prefix_length
        if max_tokens is not None:
            limit = min(limit, int(max_tokens))
        seqs = [list(s)[:limit - 1] + [eos] for s in ids]
        n_cut = sum(len(s) + 1 > limit for s in ids)
        if n_cut:
            logger.info("%d captions were cut to %d tokens", n_cut, limit)
        width = max(len(s) for s in seqs)
        vocab = self.language_model.get_input_embeddings().num_embeddings
        if max(max(s) for s in seqs) >= vocab:
            raise ValueError(f"the tokenizer produces token ids beyond the language model's vocabulary "
                             f"({vocab}); use the tokenizer that belongs to the language model")
        input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        return input_ids, mask

    @verbose
    @fill_doc
    def fit(self, embeddings: Any, captions: Sequence[str] | Sequence[Sequence[str]],
            tokenizer: Any = None, *, epochs: int = 10, batch_size: int = 40, lr: float = 2e-5,
            weight_decay: float = 0.0, warmup_steps: int = 0,
            schedule: Literal["linear", "constant"] = "linear", freeze_lm: bool = True,
            max_tokens: int | None = None, noise_std: float = 0.0, seed: int = 0,
            verbose: bool | str | int | None = None) -> PrefixCaptioner:
        """Train on (embedding, caption) pairs with the LM cross-entropy of the caption tokens.

        Parameters
        ----------
        embeddings : array-like, shape (n_items, embed_dim)
            E.g. CLIP image embeddings of the training stimuli (numpy or torch).
        captions : sequence of str | sequence of sequence of str
            One caption per row, or a list of captions per row (each becomes a training pair,
            e.g. the 5 COCO captions of an NSD image).
        tokenizer : tokenizer | str | Path | None
            The LM's tokenizer or a local folder holding it; None: the one given at
            construction. It needs an ``eos_token_id``.
        epochs : int
            Passes over the pairs.
        batch_size : int
            Pairs per step.
        lr : float
            AdamW learning rate (2e-5 in ClipCap).
        weight_decay : float
            AdamW weight decay.
        warmup_steps : int
            Linear warm-up steps (ClipCap used 5000).
        schedule : ``"linear"`` | ``"constant"``
            After the warm-up, decay the learning rate linearly to 0 at the last step
            (ClipCap's schedule) or keep it constant.
        freeze_lm : bool
            Train only the mapping network (True) or the LM as well (False).
        max_tokens : int | None
            Cut captions to this many tokens (including the end token).
        noise_std : float
            Standard deviation of Gaussian noise added to the (normalised) embeddings during
            training, to make the captioner tolerant of imperfect decoded embeddings
            (CapDec-style; 0 = off).
        seed : int
            Seed of the shuffling, the noise and (with ``freeze_lm=False``) the LM's dropout;
            the same seed gives the same model.
        %(verbose)s

        Returns
        -------
        self : PrefixCaptioner
        """
        emb, rows, texts = self._training_pairs(embeddings, captions)
        _check_fit_args(epochs, batch_size, lr, schedule, noise_std)
        if tokenizer is not None:
            self.tokenizer_ = _load_tokenizer(tokenizer)
        if self.tokenizer_ is None:
            raise ValueError("fit needs the language model's tokenizer (tokenizer=, here or at construction)")
        input_ids, mask = self._encode(self.tokenizer_, texts, max_tokens)
        row_index = torch.as_tensor(rows)

        self.language_model.requires_grad_(not freeze_lm)
        if not freeze_lm:
            self._lm_trained = True
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(lr), weight_decay=float(weight_decay))
        n_pairs = len(texts)
        steps_per_epoch = math.ceil(n_pairs / int(batch_size))
        total = steps_per_epoch * int(epochs)
        warm = int(warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(schedule, warm, total))
        gen = torch.Generator().manual_seed(int(seed))
        device = self.device
        devices = [device.index or 0] if device.type == "cuda" else []
        logger.info("Training the %s prefix captioner on %d pairs (%d images) for %d epochs "
                    "(%d steps), %s LM", self.mapping, n_pairs, len(emb), epochs, total,
                    "frozen" if freeze_lm else "fine-tuned")
        history: dict[str, list[float]] = {"epoch_loss": [], "step_loss": []}
        with torch.random.fork_rng(devices=devices):
            torch.random.manual_seed(int(seed))  # the LM's dropout when it is trained
            self.train()
            bar = ProgressBar(range(int(epochs)), total=int(epochs), desc="Training captioner", unit="epoch")
            for _ in bar:
                losses = self._train_epoch(emb, row_index, input_ids, mask, int(batch_size), float(noise_std),
                                           optimizer, scheduler, gen)
                history["step_loss"].extend(losses)
                history["epoch_loss"].append(float(np.mean(losses)))
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{history['epoch_loss'][-1]:.4f}")
                logger.debug("epoch %d: loss %.4f", len(history["epoch_loss"]), history["epoch_loss"][-1])
        self.eval()
        self.language_model.requires_grad_(False)
        self.history_ = history
        logger.info("Captioner trained: loss %.4f → %.4f", history["epoch_loss"][0],
                    history["epoch_loss"][-1])
        return self

    def _training_pairs(self, embeddings: Any, captions: Any) -> tuple[Any, list[int], list[str]]:
        """The embeddings as a tensor, and one (row, caption) pair per caption."""
        emb = torch.as_tensor(_as_float_matrix(embeddings, "embeddings"))
        if emb.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings have dim {emb.shape[1]} but the captioner expects {self.embed_dim}")
        if isinstance(captions, str):
            raise TypeError("captions must be a sequence (one entry per embedding), not one string")
        if len(captions) != len(emb):
            raise ValueError(f"captions must have one entry per embedding: {len(captions)} for "
                             f"{len(emb)} rows")
        rows, texts = [], []
        for i, c in enumerate(captions):
            for t in ([c] if isinstance(c, str) else list(c)):
                rows.append(i)
                texts.append(str(t))
        if not texts:
            raise ValueError("no captions to train on")
        return emb, rows, texts

    def _train_epoch(self, emb: Any, row_index: Any, input_ids: Any, mask: Any, batch_size: int,
                     noise_std: float, optimizer: Any, scheduler: Any, gen: Any) -> list[float]:
        """One pass over the shuffled pairs; the loss of every step."""
        n_pairs = len(row_index)
        perm = torch.randperm(n_pairs, generator=gen)
        losses = []
        for start in range(0, n_pairs, batch_size):
            idx = perm[start:start + batch_size]
            x = emb[row_index[idx]]
            if noise_std:
                if self.normalize:
                    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                x = x + noise_std * torch.randn(x.shape, generator=gen)
            ids, m = input_ids[idx].to(self.device), mask[idx].to(self.device)
            out = self(x, ids, m)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(out.loss.detach()))
        return losses

    # ------------------------------------------------------------------ generation
    @verbose
    @fill_doc
    def generate(self, embeddings: Any, *, max_length: int = 30, num_beams: int = 1, tokenizer: Any = None,
                 batch_size: int = 64, verbose: bool | str | int | None = None,
                 **generate_kwargs: Any) -> list[str]:
        """Captions for embeddings (greedy search, or beam search with ``num_beams > 1``).

        Parameters
        ----------
        embeddings : array-like, shape (n_items, embed_dim)
            Decoded (or true) embeddings.
        max_length : int
            Most new tokens per caption.
        num_beams : int
            Beam width (1 = greedy; ClipCap's beam search uses 5).
        tokenizer : tokenizer | str | Path | None
            Overrides the stored tokenizer for decoding.
        batch_size : int
            Embeddings per ``generate`` call.
        %(verbose)s
        **generate_kwargs
            Passed to the LM's ``generate`` (e.g. ``repetition_penalty``, ``length_penalty``).

        Returns
        -------
        captions : list of str
            One caption per row, special tokens removed, stripped.
        """
        tok = _load_tokenizer(tokenizer) if tokenizer is not None else self.tokenizer_
        if tok is None:
            raise ValueError("generate needs a tokenizer (pass tokenizer=, or fit / construct with one)")
        emb = torch.as_tensor(_as_float_matrix(embeddings, "embeddings"))
        if int(max_length) < 1 or int(num_beams) < 1:
            raise ValueError(f"max_length and num_beams must be positive, got {max_length}, {num_beams}")
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        was_training = self.training
        self.eval()
        out: list[str] = []
        try:
            with torch.inference_mode():
                starts = range(0, len(emb), int(batch_size))
                for start in ProgressBar(starts, total=len(starts), desc="Generating captions", unit="batch"):
                    prefix = self.prefix(emb[start:start + int(batch_size)])
                    mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device)
                    kwargs = {"do_sample": False, **generate_kwargs}
                    ids = self.language_model.generate(
                        inputs_embeds=prefix, attention_mask=mask, max_new_tokens=int(max_length),
                        num_beams=int(num_beams), eos_token_id=eos, pad_token_id=pad, **kwargs)
                    for row in ids.tolist():
                        if eos is not None and eos in row:
                            row = row[:row.index(eos)]
                        out.append(tok.decode(row, skip_special_tokens=True).strip())
        finally:
            self.train(was_training)
        return out

    # ------------------------------------------------------------------ persistence
    def _config(self, lm_saved: bool) -> dict[str, Any]:
        return {
            "embed_dim": self.embed_dim, "prefix_length": self.prefix_length, "mapping": self.mapping,
            "hidden_dim": self.hidden_dim, "clip_length": self.clip_length,
            "n_mapping_layers": self.n_mapping_layers, "n_heads": self.n_heads, "normalize": self.normalize,
            "random_state": self.random_state,
            "language_model": {"class": type(self.language_model).__name__, "saved": lm_saved,
                               "path": None if lm_saved else self._lm_path},
            "tokenizer_saved": self.tokenizer_ is not None,
            "history": {"epoch_loss": list(self.history_.get("epoch_loss", []))},
        }

    @verbose
    @fill_doc
    def save_pretrained(self, folder: str | Path, *, save_language_model: bool | Literal["auto"] = "auto",
                        verbose: bool | str | int | None = None) -> Path:
        """Save to ``folder``: ``model.safetensors`` + ``config.json`` (mapping network), LM, tokenizer.

        Parameters
        ----------
        folder : str | Path
            Created if needed.
        save_language_model : bool | ``"auto"``
            Write the LM to ``folder/language_model`` (safetensors). ``"auto"``: when it was
            fine-tuned or has no folder of its own; otherwise only its path is recorded (a
            frozen GPT-2 need not be copied next to every captioner; :meth:`from_pretrained`
            can be pointed elsewhere with ``language_model=``).
        %(verbose)s

        Returns
        -------
        folder : Path
        """
        folder = Path(folder)
        if save_language_model == "auto":
            save_lm = self._lm_trained or self._lm_path is None
        else:
            save_lm = bool(save_language_model)
        if not save_lm and self._lm_path is None:
            raise ValueError("the language model has no folder to refer to; save it "
                             "(save_language_model=True)")
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.mapping_network.state_dict().items()}
        write_pretrained(folder, tensors, self._config(save_lm), class_name="PrefixCaptioner")
        if save_lm:
            self.language_model.save_pretrained(str(folder / _LM_DIR))
        if self.tokenizer_ is not None:
            self.tokenizer_.save_pretrained(str(folder / _TOKENIZER_DIR))
        logger.info("Saved the prefix captioner to %s (language model %s)", folder,
                    "included" if save_lm else f"referenced at {self._lm_path}")
        return folder

    @classmethod
    @verbose
    @fill_doc
    def from_pretrained(cls, folder: str | Path, *, language_model: Any = None, tokenizer: Any = None,
                        device: str = "cpu", verbose: bool | str | int | None = None) -> PrefixCaptioner:
        """Load a captioner written by :meth:`save_pretrained` (local files only).

        Parameters
        ----------
        folder : str | Path
            The saved folder.
        language_model : str | Path | PreTrainedModel | None
            Overrides where the LM comes from (default: ``folder/language_model``, else the
            recorded path).
        tokenizer : tokenizer | str | Path | None
            Overrides the saved tokenizer.
        device : str
            Where to put the model.
        %(verbose)s

        Returns
        -------
        captioner : PrefixCaptioner
            In eval mode.
        """
        folder = Path(folder)
        config, tensors = read_pretrained(folder, class_name="PrefixCaptioner")
        lm_info = config.get("language_model", {})
        if language_model is None:
            if (folder / _LM_DIR).is_dir():
                language_model = folder / _LM_DIR
            elif lm_info.get("path"):
                language_model = lm_info["path"]
            else:
                raise FileNotFoundError(f"{folder} holds no language model and records no path to one; pass "
                                        "language_model= the folder of the LM the captioner was trained with")
        if tokenizer is None and (folder / _TOKENIZER_DIR).is_dir():
            tokenizer = folder / _TOKENIZER_DIR
        model = cls(language_model, embed_dim=config["embed_dim"], prefix_length=config["prefix_length"],
                    mapping=config["mapping"], hidden_dim=config["hidden_dim"],
                    clip_length=config["clip_length"],
                    n_mapping_layers=config["n_mapping_layers"], n_heads=config["n_heads"],
                    normalize=config["normalize"], random_state=config["random_state"], tokenizer=tokenizer)
        model.mapping_network.load_state_dict(tensors, strict=True)
        model.history_ = dict(config.get("history") or {})
        if lm_info.get("saved") and Path(str(language_model)) == folder / _LM_DIR:
            model._lm_trained = True  # its only copy lives in this folder: copy it again when re-saving
        if model.tokenizer_ is None:
            warn(f"{folder} has no tokenizer; pass tokenizer= to generate()")
        return model.to(device).eval()


def _load_tokenizer(tokenizer: Any) -> Any:
    if isinstance(tokenizer, (str, Path)):
        transformers = _import_transformers()
        path = check_path(tokenizer, what="tokenizer folder", kind="dir",
                           hint="Pass a local folder holding the language model's tokenizer files")
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not callable(tokenizer) or not hasattr(tokenizer, "decode"):
        raise TypeError("tokenizer must be a transformers tokenizer or a local folder, got "
                        f"{type(tokenizer).__name__}")
    return tokenizer
