"""``neurodecode reconstruct``: images from a fitted run's decoded embeddings, their metrics and the gallery."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..utils import atomic_write_json, fill_doc, logger, resolve_device, verbose
from ._data import load_data, preprocess
from ._run import FitResult, _complete_or_removed, _fresh_dir, _output_dir


@verbose
@fill_doc
def run_reconstruct(run_dir: str | Path, generator: str | Path | None = None, *, backend: str = "unclip",
                    stage: str = "full", lowlevel_vae: str | Path | None = None, use_prior: bool = True,
                    prior_steps: int = 20,
                    limit: int | None = 16, n_samples: int = 1, steps: int | None = None,
                    strength: float = 0.75, seed: int = 0, batch_size: int = 4, device: str = "auto",
                    size: int | None = None, output: str | Path | None = None, captions: bool = False,
                    metric_weights: Mapping[str, str | Path] | None = None,
                    verbose: Any = None) -> FitResult:
    """Reconstruct the test images of a fitted run with a diffusers backend.

    The run's deep decoder (``models/mlp``) decodes the test trials (repetitions
    averaged as in the run); its pooled embedding conditions the backend, and its
    ``lowlevel`` head, when the model has one, gives the img2img starting point.
    Outputs: ``reconstructions/`` (PNGs + ``manifest.json``), ``metrics.json``
    (PixCorr and SSIM against the seen images, with bootstrap CIs and the
    shuffled-pairing and mean-image baselines) and ``gallery.html``.

    Parameters
    ----------
    run_dir : str | Path
        A folder written by ``neurodecode fit``.
    generator : str | Path | None
        The backend's diffusers folder (or a repo id in the local HF cache); not needed with
        ``stage="lowlevel"``.
    backend : {"unclip", "kandinsky", "ip_adapter", "versatile"}
        See :class:`neurodecode.tasks.reconstruction.Reconstructor`.
    stage : {"full", "lowlevel"}
        ``"full"``: the two-stage reconstruction. ``"lowlevel"``: the low-level head's images alone (RGB
        thumbnails, or its VAE latents decoded — e.g. MindEye2's blurry reconstructions), scored and shown
        the same way; no generator.
    lowlevel_vae : str | Path | None
        The autoencoder whose latents the low-level head predicts (a diffusers ``AutoencoderKL`` folder or
        cached repo id; a published MindEye2 run's ``vae_decoder`` head predicts Stable Diffusion VAE latents,
        e.g. ``stabilityai/sd-vae-ft-mse``). Default: the run's ``models.mlp.lowlevel_vae``, else the
        generator's own.
    use_prior, prior_steps
        A decoder with a diffusion prior (a published MindEye1 ``prior_257`` or MindEye2 run) conditions the
        generator on the prior's image tokens, sampled with ``prior_steps`` DDIM steps from ``seed``
        (:meth:`~neurodecode.models.BrainDecoder.predict_prior`); ``use_prior=False`` conditions on the
        decoded embedding instead.
    limit : int | None
        Reconstruct the first ``limit`` test items (None = all).
    n_samples, steps, strength, seed, batch_size, device
        Passed to the :class:`~neurodecode.tasks.reconstruction.Reconstructor`. With
        ``n_samples > 1`` the best sample per item is the one whose CLIP image embedding
        (the run's own CLIP, ``targets.encoder``) is closest to the decoded embedding
        (MindEye1's best-of-N); runs on weight-free targets keep the first sample.
    size : int | None
        Output side in pixels (None: the backend's default, e.g. 768 for unCLIP 2.1).
    output : str | Path | None
        Output folder; default ``<run_dir>/reconstructions-<backend>`` (never overwritten).
    captions : bool
        Also decode a caption per item by caption-bank retrieval: the captions of the run's
        *training* stimuli (COCO captions for NSD) embedded with the run's CLIP text tower
        (``targets.encoder`` / ``targets.weights``; test captions are never in the bank); the
        nearest caption to the decoded embedding is scored against the item's true captions
        (BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE where Java is present, CLIP-S, RefCLIP-S) and
        shown in the gallery. Needs CLIP targets and captioned stimuli.
    metric_weights : mapping | None
        Local weights of MindEye2's feature networks (``alexnet``, ``inception``, ``clip``,
        ``effnet``, ``swav``; see :func:`~neurodecode.tasks.metrics.evaluate_reconstructions`):
        each adds its metrics (AlexNet-2/5, Inception, CLIP two-way; EffNet-B / SwAV distance)
        to PixCorr and SSIM.
    %(verbose)s

    Returns
    -------
    result : FitResult
        The output folder and its metrics.
    """
    from ..config import load_config
    from ..models import BrainDecoder
    from ..tasks.reconstruction import Reconstructor

    run_dir = Path(run_dir)
    cfg_path, mlp_dir = _check_run(run_dir, limit)
    _check_stage(stage, generator)
    config = load_config(cfg_path)
    networks, image_metrics = _feature_networks(metric_weights)  # checked before any work
    t0 = time.perf_counter()
    _, trials = load_data(config)
    trials = preprocess(config, trials)
    if trials.stimuli is None or "image" not in trials.stimuli.kinds:
        raise ValueError(f"The {config.data.dataset} stimuli of this run have no images to reconstruct.")
    test = _test_trials(config, trials, limit)
    ids = test.events["stimulus_id"].tolist()
    dev = resolve_device(device)
    model = BrainDecoder.from_pretrained(mlp_dir)
    embeds = model.predict(test, device=dev)
    lowlevel, lowlevel_vae = _lowlevel_stage(config, model, test, dev, lowlevel_vae)
    if stage == "lowlevel":
        result, backend = _lowlevel_result(lowlevel, lowlevel_vae, ids, run_dir, batch_size), "lowlevel"
        clip = _run_clip(config, dev) if captions else None
        return _write_outputs(run_dir, output, config, trials, test, ids, embeds, result, clip,
                              backend=backend, generator=None, n_samples=1, seed=seed, captions=captions,
                              networks=networks, image_metrics=image_metrics, device=dev, t0=t0)
    clip = _run_clip(config, dev) if (captions or n_samples > 1) else None
    if n_samples > 1 and clip is None:
        logger.warning("--n-samples %d: this run's targets (%s) have no CLIP image space to pick the best sample "
                       "in; the first sample of each item is kept", n_samples, config.targets.encoder)
    rec = Reconstructor.from_pretrained(backend, generator, device=device, num_inference_steps=steps,
                                        strength=strength, n_samples=n_samples, batch_size=batch_size,
                                        height=size, width=size, lowlevel_vae=lowlevel_vae,
                                        selector=clip if n_samples > 1 else None)
    cond = _conditioning(model, test, embeds, rec, use_prior=use_prior, prior_steps=prior_steps, seed=seed,
                         device=dev, where=f"the {backend} generator at {generator}", run_dir=run_dir,
                         encoder=config.targets.encoder)
    result = rec.reconstruct(cond, lowlevel, seeds=seed, ids=[str(i) for i in ids])
    return _write_outputs(run_dir, output, config, trials, test, ids, embeds, result, clip, backend=backend,
                          generator=generator, n_samples=n_samples, seed=seed, captions=captions,
                          networks=networks, image_metrics=image_metrics, device=dev, t0=t0)


def _write_outputs(run_dir: Path, output: Any, config: Any, trials: Any, test: Any, ids: list, embeds: Any,
                   result: Any, clip: Any, *, backend: str, generator: Any, n_samples: int, seed: int,
                   captions: bool, networks: Any, image_metrics: Any, device: Any, t0: float) -> FitResult:
    """Save the images, score them, write gallery.html and metrics.json into a fresh output folder."""
    claim = _output_dir(output, what="reconstruction") if output is not None else \
        _fresh_dir(run_dir / f"reconstructions-{backend}", what="reconstruction")
    with _complete_or_removed(claim) as out:  # ours alone; removed on Ctrl-C or a failure before writing
        result.save(out / "reconstructions")

        scored = _score_and_gallery(config, trials, test, ids, embeds, result, clip, out, backend=backend,
                                    captions=captions, networks=networks, image_metrics=image_metrics,
                                    device=device)
        metrics = {"neurodecode_version": __version__, "run": str(run_dir), "backend": backend,
                   "generator": None if generator is None else str(generator), "n_items": len(ids),
                   "n_samples": n_samples, "seed": seed, "metrics": scored["metrics"],
                   "time_s": round(time.perf_counter() - t0, 3)}
        if "captions" in scored:
            metrics["captions"] = scored["captions"]
        atomic_write_json(out / "metrics.json", metrics)
    logger.info("Reconstructed %d test images with %s: %s", len(ids), backend, out / "gallery.html")
    return FitResult(out, metrics, {"total": metrics["time_s"]})


def _conditioning(model: Any, test: Any, embeds: np.ndarray, rec: Any, *, use_prior: bool, prior_steps: int,
                  seed: int, device: Any, where: str, run_dir: Path, encoder: str) -> np.ndarray:
    """What conditions the generator: the diffusion prior's image tokens when the model has one, else the
    decoded embeddings; checked against the generator's image-embedding width."""
    if getattr(model, "prior", None) is not None and use_prior:
        cond = model.predict_prior(test, timesteps=prior_steps, seed=seed, device=device)
        logger.info("Stage 1: the decoder's diffusion prior sampled %s image tokens per item (%d steps)",
                    tuple(cond.shape[1:]), prior_steps)
        kind = "pooled" if cond.shape[1] == 1 else "tokens"  # one token: a pooled embedding (MindEye1 1×768)
        cond = cond[:, 0] if kind == "pooled" else cond
        if rec.embed_dim is not None and (rec.embed_kind != kind or rec.embed_dim != cond.shape[-1]):
            raise ValueError(
                f"The diffusion prior of {run_dir}'s decoder samples {kind} image embeddings "
                f"{tuple(cond.shape[1:])} but {where} takes {rec.embed_kind} {rec.embed_dim}-d image "
                "embeddings. MindEye1's 257-token prior feeds Versatile Diffusion (--backend versatile), its "
                "1×768 prior one pooled ViT-L/14 embedding (a backend taking 768-d pooled embeddings); "
                "MindEye2's ViT-bigG/14 tokens feed its SDXL unCLIP, which is not a diffusers pipeline and is "
                "not supported: use --stage lowlevel for its blurry reconstructions, or --no-prior to "
                "condition on the decoded embedding.")
        return cond
    if rec.embed_dim is not None and rec.embed_dim != embeds.shape[-1]:
        raise ValueError(f"The decoder of {run_dir} outputs {embeds.shape[-1]}-d embeddings ({encoder} "
                         f"targets) but {where} takes {rec.embed_dim}-d image embeddings. Fit the run on the "
                         "generator's CLIP space (e.g. targets.encoder=ViT-H-14 for Stable unCLIP 2.1) or map "
                         "the embeddings with an EmbeddingPrior.")
    return embeds


_STAGES = ("full", "lowlevel")
_LOWLEVEL_HEADS = ("lowlevel", "vae_decoder")


def _check_stage(stage: str, generator: Any) -> None:
    from ..utils import check_option

    check_option("stage", stage, _STAGES)
    if stage == "full" and generator is None:
        raise ValueError("A full reconstruction needs the backend's generator (--generator DIR); without "
                         "one, --stage lowlevel shows and scores the low-level head's images alone.")


def _lowlevel_result(lowlevel: Any, vae: Any, ids: list, run_dir: Path, batch_size: int) -> Any:
    """The low-level head's images as the reconstructions (``stage="lowlevel"``)."""
    from ..tasks.reconstruction import ReconstructionResult, decode_lowlevel

    if lowlevel is None:
        raise ValueError(f"--stage lowlevel: the decoder of {run_dir} has no low-level head "
                         f"({' or '.join(_LOWLEVEL_HEADS)}); add 'lowlevel' to models.mlp.heads when fitting")
    t0 = time.perf_counter()
    if vae is not None:
        images = decode_lowlevel(vae, lowlevel, scaled=True, batch_size=batch_size)
    else:
        rgb = np.clip(np.asarray(lowlevel, dtype=np.float64), 0.0, 1.0).transpose(0, 2, 3, 1)
        images = np.round(rgb * 255).astype(np.uint8)
    n = len(images)
    took = time.perf_counter() - t0
    return ReconstructionResult(images=images, samples=images[:, None], scores=np.full((n, 1), np.nan),
                                best=np.zeros(n, dtype=int), seeds=np.zeros((n, 1), dtype=np.int64),
                                ids=[str(i) for i in ids], lowlevel_images=None, backend="lowlevel",
                                config={"stage": "lowlevel",
                                        "vae": type(vae).__name__ if vae is not None else None},
                                timing={"stage1_s": took, "total_s": took})


def _check_run(run_dir: Path, limit: int | None) -> tuple[Path, Path]:
    """The run's config file and deep-decoder folder, after checking they exist."""
    cfg_path, mlp_dir = run_dir / "config.yaml", run_dir / "models" / "mlp"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: RUN must be a folder written by `neurodecode fit`.")
    if not mlp_dir.is_dir():
        raise FileNotFoundError(f"{mlp_dir} not found: reconstruction needs the run's deep decoder "
                                "(models.mlp.enabled: true).")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit}")
    return cfg_path, mlp_dir


def _test_trials(config: Any, trials: Any, limit: int | None) -> Any:
    """The test trials to reconstruct (repetitions averaged if the run did, the first ``limit``)."""
    test = trials.select(split="test")
    if config.evaluation.average_repetitions:
        test = test.average_repetitions()
    if limit is not None:
        test = test[np.arange(min(limit, len(test)))]
    return test


def _lowlevel_stage(config: Any, model: Any, test: Any, dev: Any, vae: str | Path | None = None
                    ) -> tuple[Any, Any]:
    """The low-level head's estimate (RGB thumbnails or VAE latents) and the VAE decoding it, if any.

    The ``lowlevel`` head predicts RGB thumbnails unless the run was fitted on VAE latents
    (``models.mlp.lowlevel_vae``); the ``vae_decoder`` head (a published MindEye2 run's blurry branch) always
    predicts latents, decoded by ``vae``, else the run's VAE, else the generator's own.
    """
    lowlevel, lowlevel_vae = None, None
    head = next((h for h in _LOWLEVEL_HEADS if h in model.config["heads"]), None)
    if head is not None:
        lowlevel = model.predict(test, output=head, device=dev)
        vae_path = vae if vae is not None else config.models.mlp.lowlevel_vae
        if head == "vae_decoder" and vae_path is None:
            logger.info("Low-level stage: the vae_decoder head's latents %s are decoded by the generator's "
                        "VAE (give --lowlevel-vae for another)", tuple(lowlevel.shape[1:]))
            return lowlevel, None
        if vae_path is None:  # RGB thumbnails in [0, 1], (n, 3, h, w)
            lowlevel = np.clip(lowlevel, 0.0, 1.0)
        else:  # latents of the run's own VAE, decoded by that VAE (whatever the generator's is)
            from ..embeddings.lowlevel import load_vae

            lowlevel_vae = load_vae(vae_path)
        logger.info("Low-level stage: the decoder's %s estimate %s", "VAE-latent" if vae_path else "RGB",
                    tuple(lowlevel.shape[1:]))
    else:
        logger.info("The run's decoder has no 'lowlevel' head: img2img starts from noise only (add 'lowlevel' to "
                    "models.mlp.heads for MindEye2's two-stage reconstruction)")
    return lowlevel, lowlevel_vae


def _score_and_gallery(config: Any, trials: Any, test: Any, ids: list, embeds: np.ndarray, result: Any, clip: Any,
                       out: Path, *, backend: str, captions: bool, networks: Any, image_metrics: Any,
                       device: Any) -> dict:
    """Score the reconstructions (and decoded captions), write gallery.html; the metrics of metrics.json."""
    from ..reports.gallery import build_gallery, gallery_items
    from ..tasks.metrics import evaluate_reconstructions

    seen = trials.stimuli.get_images(ids)
    scores = evaluate_reconstructions(result.images, seen, metrics=image_metrics, networks=networks or None,
                                      n_boot=config.evaluation.n_boot, ci=config.evaluation.ci,
                                      device=device, random_state=config.seed)
    true_captions = trials.stimuli.captions_ if "caption" in trials.stimuli.kinds else None
    decoded_captions, caption_scores = None, None
    if captions:
        decoded_captions, caption_scores = _decode_captions(config, trials, test, ids, embeds, seen, clip)
    items = gallery_items(seen, result.images, ids=ids, lowlevel=result.lowlevel_images,
                          decoded_captions=decoded_captions,
                          true_captions=true_captions, subjects=test.events["subject"].tolist(),
                          scores={m: np.asarray(v) for m, v in scores.per_image.items()})
    table = scores.to_frame() if caption_scores is None else _with_caption_rows(scores.to_frame(), caption_scores)
    build_gallery(items, title=f"neurodecode reconstruct — {config.name} ({backend})",
                  metrics=table, config=config.model_dump(mode="json")).save(out / "gallery.html")
    metrics = {"metrics": scores.to_dict()}
    if caption_scores is not None:
        metrics["captions"] = {"method": "caption-bank retrieval (training-stimulus captions, run's CLIP)",
                               "decoded": dict(zip(map(str, ids), decoded_captions)),
                               "scores": caption_scores.to_dict()}
    return metrics


def _with_caption_rows(table: Any, caption_scores: Any) -> Any:
    """The image-metric table plus one row per caption metric computed, with its shuffled-pairing baseline."""
    import pandas as pd

    cap = caption_scores.to_frame()
    cap = cap[cap["available"].astype(bool)]
    rows = pd.DataFrame({"metric": "caption " + cap["label"], "label": cap["label"], "value": cap["value"],
                         "ci_low": cap["ci_low"], "ci_high": cap["ci_high"], "chance": float("nan"),
                         "shuffled": cap["shuffled"], "mean_image": float("nan"), "direction": "higher"})
    return pd.concat([table, rows], ignore_index=True)


def _run_clip(config: Any, device: Any) -> Any:
    """The run's own CLIP encoder (its targets' space), or None for weight-free targets."""
    from ..embeddings import ClipEncoder

    if config.targets.encoder in ("pixels", "melspec", "speech"):
        return None
    return ClipEncoder(config.targets.encoder, config.targets.weights, device=device,
                       tokens=config.targets.tokens)


def _decode_captions(config: Any, trials: Any, test: Any, ids: list, embeds: np.ndarray, seen: np.ndarray,
                     enc: Any) -> tuple[list[str], Any]:
    """Nearest training caption to each decoded embedding (CLIP text space of the run), and its scores."""
    from ..tasks.caption_metrics import evaluate_captions
    from ..tasks.captioning import CaptionBank

    if enc is None:
        raise ValueError(f"Decoded captions need a run fitted on CLIP targets (targets.encoder = an open_clip "
                         f"model); this run's targets are {config.targets.encoder!r}, which have no text space")
    if "caption" not in trials.stimuli.kinds:
        raise ValueError(f"The {config.data.dataset} stimuli of this run have no captions (NSD: COCO captions from "
                         "nsddata/experiments/nsd/ or nsd_stim_info with the COCO annotations)")
    all_caps = trials.stimuli.captions_
    test_ids = set(map(str, test.events["stimulus_id"]))
    train_ids = [i for i in trials.events["stimulus_id"].drop_duplicates()
                 if str(i) not in test_ids and all_caps.get(i)]
    if not train_ids:
        raise ValueError("No training stimulus has captions: the caption bank would be empty")
    bank = CaptionBank.from_encoder({i: list(all_caps[i]) for i in train_ids}, enc)
    decoded = [c[0] for c in bank.retrieve(embeds, k=1)]
    refs = [list(all_caps.get(i) or []) for i in ids]
    keep = [k for k, r in enumerate(refs) if r]
    if not keep:
        raise ValueError("None of the reconstructed test items has true captions to score against")
    scores = evaluate_captions([decoded[k] for k in keep], [refs[k] for k in keep], encoder=enc,
                               images=seen[keep], n_boot=config.evaluation.n_boot, ci=config.evaluation.ci,
                               random_state=config.seed)
    logger.info("Decoded captions (bank of %d training captions): %s", len(bank), scores)
    return decoded, scores


def _feature_networks(metric_weights: Mapping[str, str | Path] | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """Checked ``{network: weight file}`` and the image metrics they add to PixCorr and SSIM."""
    networks = {str(k): str(Path(v).expanduser()) for k, v in (metric_weights or {}).items()}
    unknown = sorted(set(networks) - {"alexnet", "inception", "clip", "effnet", "swav"})
    if unknown:
        raise ValueError(f"Unknown feature network(s) {unknown} in metric_weights; use alexnet, inception, clip, "
                         "effnet, swav")
    missing = [f"{k}={v}" for k, v in networks.items() if not Path(v).exists()]
    if missing:
        raise FileNotFoundError(f"Feature-network weights not found: {', '.join(missing)} (see "
                                "docs/reconstruction_metrics.md for the files MindEye2's metrics use)")
    extra = [m for net in networks for m in (("alexnet2", "alexnet5") if net == "alexnet" else (net,))]
    return networks, ("pixcorr", "ssim", *extra)
