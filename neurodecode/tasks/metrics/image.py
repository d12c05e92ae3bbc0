"""Image reconstruction metrics, computed exactly as MindEye2 does (``src/final_evaluations.ipynb``).

The eight columns of MindEye2's Table 1 (and of MindEye1, Brain-Diffuser, MindBridge,
ATM, ... which use the same code):

- **PixCorr** (``pixcorr``): both image sets resized to 425 px (bilinear), flattened;
  Pearson r between each reconstruction and its stimulus, averaged. Higher is better.
- **SSIM** (``ssim``): the same 425 px images converted to luminance
  (``skimage.color.rgb2gray``), then the Gaussian-weighted SSIM of Wang et al. (2004)
  (``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1.0)``), averaged. Higher is better.
- **AlexNet(2), AlexNet(5), InceptionV3, CLIP** (``alexnet2``, ``alexnet5``, ``inception``,
  ``clip``): 2-way identification on a network's features: for each reconstruction, the
  fraction of the *other* stimuli whose features are less correlated (Pearson) with the
  reconstruction's features than its own stimulus' features; averaged. Chance 0.5, higher
  is better.
- **EffNet-B, SwAV** (``effnet``, ``swav``): correlation distance (``1 - r``,
  ``scipy.spatial.distance.correlation``) between the features of each reconstruction
  and of its stimulus; averaged. Lower is better.

:func:`evaluate_reconstructions` computes all of them with percentile bootstrap CIs over
test images and, beside each, two baselines under the same protocol (a shuffled pairing of
reconstructions and stimuli, and the mean stimulus as every reconstruction), and returns a
:class:`ReconstructionScores`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.random import Generator

from ...utils import (
    ProgressBar,
    check_option,
    check_random_state,
    fill_doc,
    json_float,
    logger,
    verbose,
    warn,
)
from ..bootstrap import bootstrap_counts, check_ci, percentile_interval, random_derangement
from ..retrieval import _from_json_float
from ._images import RGB2GRAY_WEIGHTS, _check_pair, _check_same_resized, _ImageSet, _resize
from .features import NETWORKS, FeatureExtractor, weights_hint

__all__ = ["METRICS", "ReconstructionScores", "correlation_distance", "evaluate_reconstructions",
           "pixcorr", "ssim", "two_way_identification"]

#: Resolution of MindEye2's PixCorr and SSIM (the NSD stimuli are 425 x 425).
PIXEL_SIZE = 425
#: SSIM constants of Wang et al. (2004), as MindEye2 passes them to scikit-image.
SSIM_SIGMA, SSIM_TRUNCATE, SSIM_K1, SSIM_K2 = 1.5, 3.5, 0.01, 0.03
#: Derangements averaged in the shuffled-pairing baseline.
N_DERANGEMENTS = 5
#: The shuffled pairs are drawn within blocks of this many test images (in a random order), so that
#: PixCorr and SSIM reuse the resized, filtered images of a block instead of resizing them again.
DERANGEMENT_BLOCK = 32


@dataclass(frozen=True)
class _MetricInfo:
    label: str
    higher_is_better: bool
    chance: float
    kind: str  # "pixel", "two_way" or "distance"
    network: str | None = None
    layer: str | None = None


#: Metric name -> how it is computed. Order = MindEye2's Table 1 columns.
METRICS: dict[str, _MetricInfo] = {
    "pixcorr": _MetricInfo("PixCorr", True, math.nan, "pixel"),
    "ssim": _MetricInfo("SSIM", True, math.nan, "pixel"),
    "alexnet2": _MetricInfo("AlexNet(2)", True, 0.5, "two_way", "alexnet", "features.4"),
    "alexnet5": _MetricInfo("AlexNet(5)", True, 0.5, "two_way", "alexnet", "features.11"),
    "inception": _MetricInfo("InceptionV3", True, 0.5, "two_way", "inception", "avgpool"),
    "clip": _MetricInfo("CLIP", True, 0.5, "two_way", "clip", "encode_image"),
    "effnet": _MetricInfo("EffNet-B", False, math.nan, "distance", "effnet", "avgpool"),
    "swav": _MetricInfo("SwAV", False, math.nan, "distance", "swav", "avgpool"),
}
DEFAULT_METRICS = tuple(METRICS)
#: Baseline keys of ``ReconstructionScores.metrics[name]`` and how they are written for people.
_BASELINE_TEXT = {"shuffled": "shuffled", "mean_image": "mean image"}


# --------------------------------------------------------------------------- pixel metrics
def _pearson_prepare(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``x`` centred (float64), their sums of squares, and which rows are constant."""
    x = x.astype(np.float64, copy=False)
    flat = np.zeros(len(x), dtype=bool)
    if x.shape[1]:
        flat |= np.ptp(x, axis=1) <= 1e-6 * np.maximum(np.abs(x).max(axis=1), 1.0)
    x = x - x.mean(axis=1, keepdims=True)
    return x, np.einsum("ij,ij->i", x, x), flat


def _pearson_pair(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...], *,
                  a_rows: np.ndarray | None = None) -> np.ndarray:
    """Pearson r between row ``a_rows[i]`` (default i) of ``a`` and row i of ``b``, from :func:`_pearson_prepare`.

    A ``b`` of one row is paired with every row of ``a``.
    """
    (ca, sa, fa), (cb, sb, fb) = a, b
    if a_rows is not None:  # one dot product per pair: no permuted copy of ``a``
        num = np.array([ca[j] @ cb[i] for i, j in enumerate(a_rows)], dtype=np.float64)
        sa, fa = sa[a_rows], fa[a_rows]
    elif len(cb) == 1 and len(ca) > 1:
        num = ca @ cb[0]
    else:
        num = np.einsum("ij,ij->i", ca, cb)
    den = np.sqrt(sa * sb)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r[fa | fb] = np.nan
    return np.clip(r, -1.0, 1.0)  # as np.corrcoef


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between row i of ``a`` and row i of ``b`` (float64); NaN for a constant row.

    A row is constant when its range is below ``1e-6`` of its largest magnitude (at least 1e-6): resizing
    a constant image leaves ~1e-8 of rounding whose correlation would be noise, and how much depends on
    the number of threads the resize ran on.
    """
    return _pearson_pair(_pearson_prepare(a), _pearson_prepare(b))


def _gray(x: Any) -> np.ndarray:
    """Luminance (``skimage.color.rgb2gray``) of a tensor (b, 3, h, w), float64 (b, h, w)."""
    arr = x.numpy().astype(np.float64)
    w = np.asarray(RGB2GRAY_WEIGHTS, dtype=np.float64)
    return np.einsum("bchw,c->bhw", arr, w)


def _ssim_filter(img: np.ndarray) -> np.ndarray:
    """The Gaussian window of SSIM over the last two axes of a stack (b, h, w)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma=(0.0, SSIM_SIGMA, SSIM_SIGMA), mode="reflect", truncate=SSIM_TRUNCATE)


def _ssim_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, local mean, local population variance)`` of a grayscale stack (b, h, w), float64."""
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    win = 2 * radius + 1
    if min(x.shape[1:]) < win:
        raise ValueError(f"SSIM needs images of at least {win} x {win} px, got {x.shape[1]} x {x.shape[2]}")
    ux = _ssim_filter(x)
    return x, ux, _ssim_filter(x * x) - ux * ux  # population covariance (use_sample_covariance=False)


def _ssim_cross(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    """Per-image SSIM of two stacks given their :func:`_ssim_stats` (a stack of one image broadcasts)."""
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    (x, ux, vx), (y, uy, vy) = a, b
    vxy = _ssim_filter(x * y) - ux * uy
    c1, c2 = (SSIM_K1 * 1.0) ** 2, (SSIM_K2 * 1.0) ** 2  # data_range = 1
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s[:, radius:-radius, radius:-radius].mean(axis=(1, 2), dtype=np.float64)


def _ssim_gray(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image Gaussian SSIM of grayscale stacks (b, h, w) in [0, 1], as scikit-image computes it.

    Equals ``skimage.metrics.structural_similarity(x[i], y[i], gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0)`` for every i.
    """
    return _ssim_cross(_ssim_stats(x), _ssim_stats(y))


def _take(stats: tuple[np.ndarray, ...], rows: Any) -> tuple[np.ndarray, ...]:
    return tuple(a[rows] for a in stats)


#: Images per SSIM cross-filtering step of a baseline (bounds the float64 temporaries).
_CROSS_CHUNK = 8


def _pixel_prepare(x: Any, want: Sequence[str]) -> dict[str, Any]:
    """What the pixel metrics need of a resized stack: flattened RGB (PixCorr), luminance statistics (SSIM)."""
    out: dict[str, Any] = {}
    if "pixcorr" in want:  # MindEye2 flattens the (3, 425, 425) tensors
        out["pixcorr"] = _pearson_prepare(x.flatten(1).numpy())
    if "ssim" in want:
        out["ssim"] = _ssim_stats(_gray(x))
    return out


def _n_rows(prep: dict[str, Any]) -> int:
    return len(prep["pixcorr"][0]) if "pixcorr" in prep else len(prep["ssim"][0])


def _pixel_pair(rec: dict[str, Any], tgt: dict[str, Any], want: Sequence[str], *,
                tgt_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-image PixCorr / SSIM of reconstruction i against target ``tgt_rows[i]`` (default i).

    ``rec`` may hold a single image (the mean image), which is then paired with every target.
    """
    rows = np.arange(_n_rows(tgt)) if tgt_rows is None else np.asarray(tgt_rows)
    n = len(rows)
    single = _n_rows(rec) == 1 and n > 1
    out = {}
    if "pixcorr" in want:
        out["pixcorr"] = _pearson_pair(tgt["pixcorr"], rec["pixcorr"], a_rows=tgt_rows)
    if "ssim" in want:
        parts = []
        for c in range(0, n, _CROSS_CHUNK):
            sl = slice(c, c + _CROSS_CHUNK)
            parts.append(_ssim_cross(rec["ssim"] if single else _take(rec["ssim"], sl),
                                     _take(tgt["ssim"], rows[sl])))
        out["ssim"] = np.concatenate(parts)
    return out


def _pixel_scores(rec: _ImageSet, tgt: _ImageSet, *, want: Sequence[str], size: int, antialias: bool,
                  batch_size: int, groups: Sequence[np.ndarray] | None = None, perms: np.ndarray | None = None,
                  mean_image: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per-image PixCorr and/or SSIM, sharing the resize; and the same scores of the baselines.

    ``groups`` (default: consecutive batches of ``batch_size``) are the index sets processed
    together; each derangement in ``perms`` (shape (n_shuffles, n)) must map every group onto
    itself, so a shuffled pair reuses the resized, filtered images of its group. ``mean_image``
    (one image) is resized and filtered once and paired with every target.

    Returns ``{"value": {metric: (n,)}}`` plus ``"shuffled": {metric: (n_shuffles, n)}`` with
    ``perms`` and ``"mean_image": {metric: (n,)}`` with ``mean_image``.
    """
    _check_same_resized(rec, tgt, (size,))
    if groups is None:
        groups = [np.arange(s, min(s + batch_size, rec.n)) for s in range(0, rec.n, batch_size)]
    n_perm = 0 if perms is None else len(perms)
    value = {m: np.full(rec.n, np.nan) for m in want}
    shuffled = {m: np.full((n_perm, rec.n), np.nan) for m in want}
    mean_scores = {m: np.full(rec.n, np.nan) for m in want}
    mean_prep = None
    if mean_image is not None:
        m_set = _ImageSet(mean_image, "mean_image")
        mean_prep = _pixel_prepare(_resize(m_set.batch(0, 1), size, antialias=antialias), want)
    for idx in ProgressBar(groups, total=len(groups), desc="PixCorr / SSIM", unit="batch"):
        r = _pixel_prepare(_resize(rec.take(idx), size, antialias=antialias), want)
        t = _pixel_prepare(_resize(tgt.take(idx), size, antialias=antialias), want)
        for m, v in _pixel_pair(r, t, want).items():
            value[m][idx] = v
        pos = np.empty(rec.n, dtype=np.intp)
        pos[idx] = np.arange(len(idx))
        for d in range(n_perm):
            for m, v in _pixel_pair(r, t, want, tgt_rows=pos[perms[d, idx]]).items():  # type: ignore[index]
                shuffled[m][d, idx] = v
        if mean_prep is not None:
            for m, v in _pixel_pair(mean_prep, t, want).items():
                mean_scores[m][idx] = v
    out = {"value": value}
    if perms is not None:
        out["shuffled"] = shuffled
    if mean_image is not None:
        out["mean_image"] = mean_scores
    return out


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _summary(values: np.ndarray, name: str, per_image: bool) -> float | np.ndarray:
    if per_image:
        return values
    bad = int(np.isnan(values).sum())
    if bad:
        warn(f"{name}: {bad} of {len(values)} images score NaN (a constant image or feature vector has no "
             "correlation); the mean is over the others.")
        return float(np.nanmean(values)) if bad < len(values) else math.nan
    return float(np.mean(values))


@verbose
@fill_doc
def pixcorr(recon_images: Any, target_images: Any, *, per_image: bool = False, size: int = PIXEL_SIZE,
            antialias: bool = False, batch_size: int = 32,
            verbose: bool | str | int | None = None) -> float | np.ndarray:
    """Pixel correlation (PixCorr) between reconstructions and their stimuli, as MindEye2.

    Both sets are resized so that the shorter side is ``size`` (bilinear,
    ``torchvision.transforms.Resize(425)``), each RGB image is flattened, and the Pearson
    correlation between reconstruction i and stimulus i is computed; the value is the
    mean over images.

    Parameters
    ----------
    recon_images : array-like, shape (n_images, height, width, 3) or (n_images, 3, height, width)
        Reconstructions: uint8 (0-255) or float (0-1); numpy arrays or torch tensors.
    target_images : array-like, same layout
        The stimuli, aligned with ``recon_images`` (sizes may differ, aspect ratios not).
    per_image : bool
        Return the per-image correlations instead of their mean.
    size : int
        Shorter side after resizing (425 in MindEye1/2 and Brain-Diffuser).
    antialias : bool
        Antialias the resize when downsampling (``False`` = MindEye2's torchvision 0.15).
    batch_size : int
        Images resized at a time (bounds memory).
    %(verbose)s

    Returns
    -------
    score : float | ndarray, shape (n_images,)
        Mean Pearson r (higher is better), or one r per image. A constant image has no
        correlation (NaN); the mean then skips it, with a warning.
    """
    rec, tgt = _check_pair(recon_images, target_images)
    scores = _pixel_scores(rec, tgt, want=("pixcorr",), size=int(size), antialias=antialias,
                           batch_size=_check_batch_size(batch_size))["value"]["pixcorr"]
    return _summary(scores, "PixCorr", per_image)


@verbose
@fill_doc
def ssim(recon_images: Any, target_images: Any, *, per_image: bool = False, size: int = PIXEL_SIZE,
         antialias: bool = False, batch_size: int = 32,
         verbose: bool | str | int | None = None) -> float | np.ndarray:
    """Structural similarity (SSIM) on luminance at 425 px, as MindEye2.

    Both sets are resized (shorter side ``size``, bilinear), converted to luminance with
    ``skimage.color.rgb2gray`` weights (0.2125 R + 0.7154 G + 0.0721 B), and compared with
    the Gaussian-weighted SSIM of Wang et al. (2004): an 11-tap Gaussian window with
    sigma 1.5 (truncated at 3.5 sigma, ``reflect`` borders), population covariances,
    ``data_range=1``, K1 = 0.01, K2 = 0.03, and the mean of the SSIM map after cropping
    the 5-pixel filter radius, i.e. ``skimage.metrics.structural_similarity(recon, target,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)``.

    Parameters
    ----------
    recon_images : array-like, shape (n_images, height, width, 3) or (n_images, 3, height, width)
        Reconstructions: uint8 (0-255) or float (0-1); numpy arrays or torch tensors.
    target_images : array-like, same layout
        The stimuli, aligned with ``recon_images``.
    per_image : bool
        Return the per-image SSIM instead of the mean.
    size : int
        Shorter side after resizing (425 in MindEye2).
    antialias : bool
        Antialias the resize when downsampling (``False`` = MindEye2's torchvision 0.15).
    batch_size : int
        Images processed at a time.
    %(verbose)s

    Returns
    -------
    score : float | ndarray, shape (n_images,)
        Mean SSIM (higher is better; 1 for identical images), or one value per image.

    Notes
    -----
    MindEye2's call also passes ``multichannel=True``. scikit-image removed that argument
    in 0.20 and has ignored it (as an unused keyword) since, so with the scikit-image a
    2024 install gets, SSIM is the 2-D SSIM of the grayscale image, which is what is
    computed here. (With scikit-image < 0.20 the same call treated the image columns as
    channels and returned a mean of 1-D SSIMs.) Computations are in float64.
    """
    rec, tgt = _check_pair(recon_images, target_images)
    scores = _pixel_scores(rec, tgt, want=("ssim",), size=int(size), antialias=antialias,
                           batch_size=_check_batch_size(batch_size))["value"]["ssim"]
    return _summary(scores, "SSIM", per_image)


# --------------------------------------------------------------------------- feature metrics
def _as_features(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (n_images, n_features) (trailing dimensions are "
                         f"flattened), got shape {arr.shape}")
    arr = arr.reshape(arr.shape[0], -1)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def _check_features(recon_feats: Any, target_feats: Any) -> tuple[np.ndarray, np.ndarray]:
    rec = _as_features(recon_feats, "recon_feats")
    tgt = _as_features(target_feats, "target_feats")
    if rec.shape != tgt.shape:
        raise ValueError(f"recon_feats and target_feats must have the same shape (row i of each for image i), "
                         f"got {rec.shape} and {tgt.shape}")
    return rec, tgt


def _row_stats(x: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Row means and centred norms in float64, reading ``chunk`` columns at a time."""
    mean = np.zeros(x.shape[0])
    for c in range(0, x.shape[1], chunk):
        mean += x[:, c:c + chunk].sum(axis=1, dtype=np.float64)
    mean /= x.shape[1]
    ss = np.zeros(x.shape[0])
    for c in range(0, x.shape[1], chunk):
        d = x[:, c:c + chunk].astype(np.float64) - mean[:, None]
        ss += np.einsum("ij,ij->i", d, d)
    return mean, np.sqrt(ss)


def _chunk_cols(n_rows: int) -> int:
    return max(1, (1 << 24) // max(1, n_rows))  # ~128 MB of float64 per block


def _corr_matrix(target: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """``r[i, j]`` = Pearson r(target_i, recon_j), float64, as ``np.corrcoef(target, recon)[:n, n:]``."""
    n = target.shape[0]
    chunk = _chunk_cols(n)
    mt, nt = _row_stats(target, chunk)
    mr, nr = _row_stats(recon, chunk)
    r = np.zeros((n, recon.shape[0]))
    for c in range(0, target.shape[1], chunk):
        a = target[:, c:c + chunk].astype(np.float64) - mt[:, None]
        b = recon[:, c:c + chunk].astype(np.float64) - mr[:, None]
        r += a @ b.T
    with np.errstate(invalid="ignore", divide="ignore"):
        r /= np.outer(nt, nr)
    return np.clip(r, -1.0, 1.0)


def _two_way_from_corr(r: np.ndarray, congruent: np.ndarray) -> np.ndarray:
    """2-way scores from ``r[i, j]`` = r(stimulus i, reconstruction j) and each reconstruction's own r."""
    n = r.shape[0]
    # MindEye2: success = r < congruents; success_cnt = success.sum(0): for reconstruction j, the
    # stimuli i whose features correlate less with it than its own stimulus (ties fail).
    with np.errstate(invalid="ignore"):
        success = (r < congruent[None, :]).sum(axis=0)
    out = (success / (n - 1)).astype(np.float64)
    out[np.isnan(congruent)] = np.nan
    return out


def _two_way_per_image(recon: np.ndarray, target: np.ndarray) -> np.ndarray:
    n = recon.shape[0]
    if n < 2:
        raise ValueError(f"2-way identification needs at least 2 images, got {n}")
    r = _corr_matrix(target, recon)
    return _two_way_from_corr(r, np.diag(r))


def _corr_distance_per_image(recon: np.ndarray, target: np.ndarray, *,
                             target_rows: np.ndarray | None = None) -> np.ndarray:
    """``1 - r`` between recon row i and target row ``target_rows[i]`` (default i), chunked over columns."""
    chunk = _chunk_cols(recon.shape[0])
    mr, nr = _row_stats(recon, chunk)
    mt, nt = _row_stats(target, chunk)
    rows: Any = slice(None) if target_rows is None else np.asarray(target_rows)
    mt, nt = mt[rows], nt[rows]
    num = np.zeros(recon.shape[0])
    for c in range(0, recon.shape[1], chunk):
        a = recon[:, c:c + chunk].astype(np.float64) - mr[:, None]
        b = target[rows, c:c + chunk].astype(np.float64) - mt[:, None]
        num += np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 1.0 - num / (nr * nt)
    return np.clip(d, 0.0, 2.0)  # as scipy.spatial.distance.correlation


def _feature_scores(kind: str, recon: np.ndarray, target: np.ndarray, mean_feats: np.ndarray | None,
                    perms: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-image scores of one feature metric, and those of its baselines, from features already extracted.

    Returns ``"value"`` (n,), with ``perms`` ``"shuffled"`` (n_shuffles, n): the metric with target
    row ``perms[d, i]`` as reconstruction i's stimulus (no forward pass: rows are permuted), and
    with ``mean_feats`` (1, n_features) ``"mean_image"`` (n,): every reconstruction replaced by
    the mean image, whose features are broadcast.
    """
    n = recon.shape[0]
    out: dict[str, np.ndarray] = {}
    if kind == "two_way":
        if n < 2:
            raise ValueError(f"2-way identification needs at least 2 images, got {n}")
        r = _corr_matrix(target, recon)
        out["value"] = _two_way_from_corr(r, np.diag(r))
        if perms is not None:
            cols = np.arange(n)
            out["shuffled"] = np.stack([_two_way_from_corr(r, r[p, cols]) for p in perms])
        del r
        if mean_feats is not None:  # every reconstruction has the same features: r[i, j] = r(t_i, m)
            c = _corr_matrix(target, mean_feats)[:, 0]
            out["mean_image"] = _two_way_from_corr(np.broadcast_to(c[:, None], (n, n)), c)
    else:
        out["value"] = _corr_distance_per_image(recon, target)
        if perms is not None:
            out["shuffled"] = np.stack([_corr_distance_per_image(recon, target, target_rows=p) for p in perms])
        if mean_feats is not None:
            out["mean_image"] = _corr_distance_per_image(np.broadcast_to(mean_feats, target.shape), target)
    return out


@verbose
@fill_doc
def two_way_identification(recon_feats: Any, target_feats: Any, *, per_image: bool = False,
                           verbose: bool | str | int | None = None) -> float | np.ndarray:
    """2-way identification on features, exactly as MindEye2's ``two_way_identification``.

    With ``r[i, j]`` the Pearson correlation between the features of stimulus i and of
    reconstruction j, reconstruction j scores the fraction of the other ``n - 1`` stimuli
    i with ``r[i, j] < r[j, j]`` (ties count as failures). The value is the mean over
    reconstructions; chance is 0.5.

    Parameters
    ----------
    recon_feats : array-like, shape (n_images, n_features)
        Features of the reconstructions (numpy or torch; trailing dimensions flattened).
    target_feats : array-like, shape (n_images, n_features)
        Features of the stimuli, aligned row by row.
    per_image : bool
        Return the per-reconstruction fractions instead of their mean.
    %(verbose)s

    Returns
    -------
    accuracy : float | ndarray, shape (n_images,)
        Higher is better. Each per-image score is conditioned on the whole candidate set.

    Examples
    --------
    >>> t = np.array([[1., -1, 0, 0], [0, 0, 1, -1], [1, 1, -1, -1]])
    >>> r = np.stack([t[0], t[1] + 2 * t[2], -t[2]])
    >>> two_way_identification(r, t, per_image=True)
    array([1. , 0.5, 0. ])
    """
    rec, tgt = _check_features(recon_feats, target_feats)
    scores = _two_way_per_image(rec, tgt)
    return _summary(scores, "2-way identification", per_image)


@verbose
@fill_doc
def correlation_distance(recon_feats: Any, target_feats: Any, *, per_image: bool = False,
                         verbose: bool | str | int | None = None) -> float | np.ndarray:
    """Correlation distance ``1 - r`` between the features of each reconstruction and its stimulus.

    Per image ``scipy.spatial.distance.correlation(target_i, recon_i)`` (in float64,
    clipped to [0, 2]); the value is the mean over images, as MindEye2 reports EffNet-B
    and SwAV. Lower is better; 0 for identical features.

    Parameters
    ----------
    recon_feats : array-like, shape (n_images, n_features)
        Features of the reconstructions.
    target_feats : array-like, shape (n_images, n_features)
        Features of the stimuli, aligned row by row.
    per_image : bool
        Return the per-image distances instead of their mean.
    %(verbose)s

    Returns
    -------
    distance : float | ndarray, shape (n_images,)
    """
    rec, tgt = _check_features(recon_feats, target_feats)
    scores = _corr_distance_per_image(rec, tgt)
    return _summary(scores, "Correlation distance", per_image)


# --------------------------------------------------------------------------- results

def _weighted_nanmean(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bootstrap replicates ``sum(w * x) / sum(w)`` over finite x, shape (n_boot, n_metrics)."""
    finite = np.isfinite(values)
    num = counts @ np.where(finite, values, 0.0)
    den = counts @ finite.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


@dataclass(repr=False)
class ReconstructionScores:
    """Reconstruction metrics with bootstrap confidence intervals and baselines.

    Parameters
    ----------
    metrics : dict
        ``name -> {"value", "ci_low", "ci_high", "chance", "higher_is_better"}`` for every
        metric computed, in MindEye2's column order, plus ``"shuffled"`` and ``"mean_image"``
        when the baselines were computed (the metric for a shuffled pairing of
        reconstructions and stimuli, and for the mean stimulus as every reconstruction).
        Names: ``pixcorr``, ``ssim``, ``alexnet2``, ``alexnet5``, ``inception``, ``clip``
        (2-way identification, chance 0.5), ``effnet``, ``swav`` (correlation distance,
        lower is better). ``chance`` is NaN where there is no fixed chance level.
    per_image : dict of ndarray
        ``name -> array, shape (n_images,)``: each image's score (2-way scores are
        conditioned on the whole candidate set).
    n_images : int
        Number of (reconstruction, stimulus) pairs.
    protocol : dict
        Settings, weight provenance and a plain-language ``"description"``.
    replicates : ndarray, shape (n_boot, n_metrics) | None
        Bootstrap replicates (columns in ``metrics`` order), kept in memory so scores of
        several subjects can be pooled with :meth:`combine`; not written by :meth:`to_dict`.
    baseline_per_image : dict
        ``{"shuffled", "mean_image"} -> name -> array, shape (n_images,)``: each
        reconstruction's baseline scores (a shuffled score is the mean over the
        derangements); empty without baselines.
    pairings : ndarray, shape (n_derangements, n_images) | None
        The derangements of the shuffled baseline (reconstruction i was scored against
        stimulus ``pairings[d, i]``); kept in memory only.
    """

    metrics: dict[str, dict[str, Any]]
    per_image: dict[str, np.ndarray] = field(default_factory=dict)
    n_images: int = 0
    protocol: dict[str, Any] = field(default_factory=dict)
    replicates: np.ndarray | None = field(default=None, compare=False)
    baseline_per_image: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, compare=False)
    pairings: np.ndarray | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ accessors
    @property
    def names(self) -> list[str]:
        """Metric names, in table order."""
        return list(self.metrics)

    @property
    def description(self) -> str:
        """Plain-language description of the protocol."""
        return str(self.protocol.get("description", ""))

    @staticmethod
    def label(name: str) -> str:
        """MindEye2's column name of metric ``name`` (e.g. ``"AlexNet(2)"``).

        Parameters
        ----------
        name : str
            A metric name (``"alexnet2"``, ``"clip"``, ...).

        Returns
        -------
        label : str
            The column name; ``name`` itself for a metric without one.
        """
        return METRICS[name].label if name in METRICS else name

    def __getitem__(self, name: str) -> float:
        """Point estimate of metric ``name``."""
        return self.metrics[name]["value"]

    def __contains__(self, name: object) -> bool:
        return name in self.metrics

    def __repr__(self) -> str:
        lines = [f"<ReconstructionScores | {self.n_images} images>"]
        ci = self.protocol.get("ci", 0.95)
        for name, d in self.metrics.items():
            arrow = "↑" if d["higher_is_better"] else "↓"
            base = "".join(f"  {text} {d[key]:.4f}" for key, text in _BASELINE_TEXT.items() if key in d)
            lines.append(f"  {self.label(name):<12} {arrow} {d['value']:.4f}  "
                         f"[{d['ci_low']:.4f}, {d['ci_high']:.4f}] ({ci:.0%} CI){base}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ export
    def to_frame(self, *, per_image: bool = False) -> Any:
        """Tidy :class:`pandas.DataFrame`.

        Parameters
        ----------
        per_image : bool
            False: one row per metric, columns ``metric, label, value, ci_low, ci_high,
            chance, shuffled, mean_image, direction, n_images`` (``direction`` is ``"higher"``
            or ``"lower"`` is better; the baselines are NaN when not computed). True: one row
            per (image, metric), columns ``image, metric, label, score, shuffled,
            mean_image`` (the image's baseline scores, NaN when not computed).

        Returns
        -------
        frame : pandas.DataFrame
        """
        import pandas as pd

        if per_image:
            def base(kind: str, name: str, i: int) -> float:
                arr = self.baseline_per_image.get(kind, {}).get(name)
                return float(arr[i]) if arr is not None else math.nan

            rows = [{"image": i, "metric": name, "label": self.label(name), "score": float(v),
                     **{kind: base(kind, name, i) for kind in _BASELINE_TEXT}}
                    for name, vals in self.per_image.items() for i, v in enumerate(vals)]
            return pd.DataFrame(rows, columns=["image", "metric", "label", "score", *_BASELINE_TEXT])
        rows = [{"metric": name, "label": self.label(name), "value": d["value"], "ci_low": d["ci_low"],
                 "ci_high": d["ci_high"], "chance": d["chance"],
                 **{kind: d.get(kind, math.nan) for kind in _BASELINE_TEXT},
                 "direction": "higher" if d["higher_is_better"] else "lower", "n_images": self.n_images}
                for name, d in self.metrics.items()]
        return pd.DataFrame(rows, columns=["metric", "label", "value", "ci_low", "ci_high", "chance",
                                           *_BASELINE_TEXT, "direction", "n_images"])

    def to_dict(self, *, per_image: bool = True) -> dict[str, Any]:
        """JSON-serialisable dict (NaN written as ``None``); inverse of :meth:`from_dict`.

        Parameters
        ----------
        per_image : bool
            Also write the per-image scores (``"per_image"``).

        Returns
        -------
        data : dict
            ``metrics`` (with their labels and, when computed, their ``shuffled`` and
            ``mean_image`` baselines), ``n_images``, ``protocol`` and, with ``per_image``,
            ``per_image`` and ``baseline_per_image`` (the bootstrap replicates and the
            derangements are not written).
        """
        out: dict[str, Any] = {
            "metrics": {name: {"label": self.label(name), "value": json_float(d["value"]),
                               "ci_low": json_float(d["ci_low"]), "ci_high": json_float(d["ci_high"]),
                               "chance": json_float(d["chance"]),
                               "higher_is_better": bool(d["higher_is_better"]),
                               **{k: json_float(d[k]) for k in _BASELINE_TEXT if k in d}}
                        for name, d in self.metrics.items()},
            "n_images": int(self.n_images),
            "protocol": self.protocol,
        }
        if per_image:
            out["per_image"] = {name: [json_float(v) for v in vals] for name, vals in self.per_image.items()}
            if self.baseline_per_image:
                out["baseline_per_image"] = {kind: {name: [json_float(v) for v in vals]
                                                    for name, vals in arrays.items()}
                                             for kind, arrays in self.baseline_per_image.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReconstructionScores:
        """Rebuild scores written by :meth:`to_dict` (without bootstrap replicates).

        Parameters
        ----------
        data : mapping
            The output of :meth:`to_dict` (e.g. read back from JSON); ``None`` values become NaN.
            Dicts written before the baselines existed load without them.

        Returns
        -------
        scores : ReconstructionScores
            The scores, without bootstrap replicates or derangements.
        """
        metrics = {name: {"value": _from_json_float(d["value"]), "ci_low": _from_json_float(d["ci_low"]),
                          "ci_high": _from_json_float(d["ci_high"]), "chance": _from_json_float(d["chance"]),
                          "higher_is_better": bool(d["higher_is_better"]),
                          **{k: _from_json_float(d[k]) for k in _BASELINE_TEXT if k in d}}
                   for name, d in data["metrics"].items()}
        per_image = {name: np.array([_from_json_float(v) for v in vals], dtype=float)
                     for name, vals in data.get("per_image", {}).items()}
        base = {kind: {name: np.array([_from_json_float(v) for v in vals], dtype=float)
                       for name, vals in arrays.items()}
                for kind, arrays in data.get("baseline_per_image", {}).items()}
        return cls(metrics=metrics, per_image=per_image, n_images=int(data.get("n_images", 0)),
                   protocol=dict(data.get("protocol", {})), baseline_per_image=base)

    # ------------------------------------------------------------------ pooling
    @classmethod
    def combine(cls, scores_by_group: Mapping[Any, ReconstructionScores]) -> ReconstructionScores:
        """Pool scores computed per group (e.g. per subject): the unweighted mean, as MindEye2.

        MindEye2's Table 1 averages subjects 1, 2, 5 and 7. Each metric's pooled value is
        the mean of the groups' values; its CI is the percentile interval of the mean of
        the groups' bootstrap replicates (a bootstrap stratified by group) when every group
        kept replicates with the same ``n_boot``, otherwise NaN. Only metrics present in
        every group are pooled. A baseline (``shuffled``, ``mean_image``) is pooled the same
        way (mean of the groups') when every group has it.

        Parameters
        ----------
        scores_by_group : mapping of label to ReconstructionScores
            One entry per group.

        Returns
        -------
        scores : ReconstructionScores
            ``per_image`` holds the groups' images concatenated in the mapping's order;
            ``protocol["groups"]`` lists the groups and their sizes.
        """
        if not scores_by_group:
            raise ValueError("combine needs at least one ReconstructionScores")
        groups = list(scores_by_group.items())
        names = [n for n in groups[0][1].metrics if all(n in sc.metrics for _, sc in groups)]
        values = np.array([[sc.metrics[n]["value"] for n in names] for _, sc in groups], dtype=float)
        pooled = values.mean(axis=0)
        reps = [sc.replicates for _, sc in groups]
        ci = float(groups[0][1].protocol.get("ci", 0.95))
        if all(r is not None for r in reps) and len({r.shape[0] for r in reps}) == 1:  # type: ignore[union-attr]
            cols = [[sc.names.index(n) for n in names] for _, sc in groups]
            rep = np.mean([r[:, c] for r, c in zip(reps, cols)], axis=0)  # type: ignore[index]
            low, high = percentile_interval(rep, ci)
        else:
            rep = None
            low = high = np.full(len(names), np.nan)
        metrics = {n: {"value": float(pooled[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
                       "chance": groups[0][1].metrics[n]["chance"],
                       "higher_is_better": groups[0][1].metrics[n]["higher_is_better"],
                       **{k: float(np.mean([sc.metrics[n][k] for _, sc in groups])) for k in _BASELINE_TEXT
                          if all(k in sc.metrics[n] for _, sc in groups)}}
                   for i, n in enumerate(names)}
        per_image = {n: np.concatenate([sc.per_image[n] for _, sc in groups if n in sc.per_image])
                     for n in names if all(n in sc.per_image for _, sc in groups)}
        base = {k: {n: np.concatenate([sc.baseline_per_image[k][n] for _, sc in groups]) for n in names
                    if all(n in sc.baseline_per_image.get(k, {}) for _, sc in groups)} for k in _BASELINE_TEXT}
        protocol = {**groups[0][1].protocol,
                    "groups": {str(g): int(sc.n_images) for g, sc in groups},
                    "pooling": "unweighted mean over groups; CI from the mean of the groups' bootstrap "
                               "replicates (stratified)" if rep is not None else
                               "unweighted mean over groups; no CI (a group had no replicates)"}
        return cls(metrics=metrics, per_image=per_image, n_images=int(sum(sc.n_images for _, sc in groups)),
                   protocol=protocol, replicates=rep, baseline_per_image={k: v for k, v in base.items() if v})


# --------------------------------------------------------------------------- baselines
def _shuffle_pairings(n: int, seed: int, n_shuffles: int = N_DERANGEMENTS,
                      block: int = DERANGEMENT_BLOCK) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Blocks of the test images and ``n_shuffles`` derangements that map every block onto itself.

    The images are put in a random order and cut into blocks of ``block`` (a last block of one image
    joins the previous one); in every block each derangement is uniformly random, so each
    reconstruction is paired with a random other stimulus, never its own. Returns the blocks and
    the derangements, shape (n_shuffles, n) (None for a single image).
    """
    rng = np.random.default_rng([int(seed), 1])
    order = rng.permutation(n)
    blocks = [order[s:s + block] for s in range(0, n, block)]
    if len(blocks) > 1 and len(blocks[-1]) == 1:
        blocks[-2:] = [np.concatenate(blocks[-2:])]
    if n < 2:
        return blocks, None
    perms = np.empty((n_shuffles, n), dtype=np.intp)
    for d in range(n_shuffles):
        for b in blocks:
            perms[d, b] = b[random_derangement(len(b), rng)]
    return blocks, perms


def _quiet_nanmean(a: np.ndarray, axis: int | None = None) -> Any:
    """Mean over the finite entries (NaN where there are none), without a warning."""
    finite = np.isfinite(a)
    total = np.where(finite, a, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _baselines_protocol(seed: int, n: int) -> dict[str, Any]:
    return {
        "n_derangements": N_DERANGEMENTS, "block_size": DERANGEMENT_BLOCK, "seed": int(seed),
        "description": (
            f"Baselines, under the same protocol: 'shuffled' = each metric with the reconstructions paired "
            f"with the wrong stimuli, averaged over {N_DERANGEMENTS} derangements (no reconstruction with "
            f"its own stimulus) drawn with seed {int(seed)} (from random_state) within random blocks of "
            f"{DERANGEMENT_BLOCK} of the {n} test images; feature rows are permuted, no extra forward pass. "
            "'mean_image' = each metric with every reconstruction replaced by the pixel-wise mean of the "
            "stimuli (each with weight 1/n, float, at the stimuli's resolution); one forward pass per network. "
            "A reconstruction is better than trivial only where it beats both."),
    }


# --------------------------------------------------------------------------- evaluate
def _check_metrics(metrics: Any) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    names = tuple(dict.fromkeys(metrics))
    for name in names:
        check_option("metrics", name, tuple(METRICS))
    if not names:
        raise ValueError(f"metrics must name at least one of {list(METRICS)}")
    return tuple(n for n in METRICS if n in names)  # table order


def _resolve_networks(needed: Sequence[str], networks: Mapping[str, Any] | None, *, allow_random: bool,
                      device: str, batch_size: int, antialias: bool, seed: int) -> dict[str, FeatureExtractor]:
    networks = dict(networks or {})
    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in networks=; allowed: {list(NETWORKS)}")
    missing = [n for n in needed if networks.get(n) is None]
    if missing and not allow_random:
        hints = "\n".join(f"  {n}: {weights_hint(n)}" for n in missing)
        raise ValueError(
            f"The metrics asked for need these networks, but networks= gives no weights for {missing}. Pass "
            "networks={name: path to the weight file (or a FeatureExtractor / built model)}, or leave those "
            f"metrics out of metrics=. Random weights are only used with allow_random=True (tests).\n{hints}")
    for n in needed:  # fail on bad paths before any computation
        w = networks.get(n)
        if isinstance(w, (str, Path)) and n != "clip":
            p = Path(w).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"networks[{n!r}]: {p} is {'a folder' if p.is_dir() else 'not found'}. "
                                        + weights_hint(n))
    out = {}
    for i, n in enumerate(needed):
        w = networks.get(n)
        if isinstance(w, FeatureExtractor):
            if w.network != n:
                raise ValueError(f"networks[{n!r}] is a FeatureExtractor for {w.network!r}")
            out[n] = w
        elif w is None:
            out[n] = FeatureExtractor(n, None, device=device, batch_size=batch_size, antialias=antialias,
                                      allow_random=True, random_state=seed + i)
        elif isinstance(w, (str, Path)):
            out[n] = FeatureExtractor(n, w, device=device, batch_size=batch_size, antialias=antialias)
        else:
            out[n] = FeatureExtractor(n, model=w, device=device, batch_size=batch_size, antialias=antialias)
    return out


def _description(names: Sequence[str], n_boot: int, ci: float, antialias: bool, baselines: bool = False) -> str:
    parts = []
    if "pixcorr" in names or "ssim" in names:
        parts.append("PixCorr: Pearson r of the flattened RGB images resized to 425 px (bilinear). SSIM: "
                     "Gaussian-weighted SSIM (sigma 1.5, population covariance, data range 1) of the "
                     "rgb2gray luminance at 425 px.")
    if any(METRICS[n].kind == "two_way" for n in names):
        parts.append("AlexNet(2)/(5) (features.4 / features.11, 256 px), InceptionV3 (avgpool, 342 px), CLIP "
                     "(ViT-L/14 image embedding, 224 px): 2-way identification, i.e. per reconstruction the "
                     "fraction of the other stimuli whose features correlate (Pearson) less with its features "
                     "than its own stimulus' (ties fail); chance 0.5.")
    if any(METRICS[n].kind == "distance" for n in names):
        parts.append("EffNet-B (EfficientNet-B1 avgpool, 255 px) and SwAV (ResNet-50 avgpool, 224 px): mean "
                     "correlation distance 1 - r between reconstruction and stimulus features (lower is better).")
    parts.append(f"Resizing {'with' if antialias else 'without'} antialiasing (MindEye2: without); no crop; "
                 "MindEye2's normalisation constants.")
    if n_boot:
        parts.append(f"{ci:.0%} percentile CIs from {n_boot} bootstrap resamples of the test images (per-image "
                     "scores held fixed, so 2-way scores stay conditioned on the full candidate set; "
                     "resamples paired across metrics).")
    else:
        parts.append("No bootstrap (n_boot=0).")
    if baselines:
        parts.append(f"Baselines under the same protocol: shuffled pairing (each reconstruction against another "
                     f"image's stimulus, mean over {N_DERANGEMENTS} seeded derangements) and mean image (the "
                     "pixel-wise mean of the stimuli as every reconstruction); a reconstruction beats trivial "
                     "only where its value beats both.")
    return " ".join(parts)


@verbose
@fill_doc
def evaluate_reconstructions(recon_images: Any, target_images: Any, *,
                             metrics: Sequence[str] = DEFAULT_METRICS,
                             networks: Mapping[str, Any] | None = None, allow_random: bool = False,
                             n_boot: int = 1000, ci: float = 0.95, batch_size: int = 32, device: str = "cpu",
                             antialias: bool = False, random_state: None | int | Generator = 0,
                             baselines: bool = True,
                             verbose: bool | str | int | None = None) -> ReconstructionScores:
    """Score image reconstructions with MindEye2's eight metrics, bootstrap CIs and baselines.

    Parameters
    ----------
    recon_images : array-like, shape (n_images, height, width, 3) or (n_images, 3, height, width)
        Reconstructions, uint8 (0-255) or float (0-1), numpy arrays or torch tensors.
    target_images : array-like, same layout
        The seen stimuli, aligned with ``recon_images`` (image i was reconstructed from the
        response to stimulus i). Resolutions may differ; aspect ratios must match.
    metrics : sequence of str
        Any of ``"pixcorr", "ssim", "alexnet2", "alexnet5", "inception", "clip", "effnet",
        "swav"`` (all by default). Results are kept in that (MindEye2's) order.
    networks : dict | None
        Weights of the feature networks, keyed ``"alexnet"`` (both AlexNet metrics),
        ``"inception"``, ``"clip"``, ``"effnet"``, ``"swav"``. Each value is a local weight
        file, a :class:`FeatureExtractor`, or a built model (for ``"clip"`` an open_clip
        model or a :class:`~neurodecode.embeddings.ClipEncoder`). Networks not given raise
        a ``ValueError`` naming the files to download, unless ``allow_random``.
    allow_random : bool
        Build networks missing from ``networks`` with random weights (tests only).
    n_boot : int
        Bootstrap resamples of the test images; ``0`` skips them (CI bounds NaN).
    ci : float
        Confidence level of the percentile intervals.
    batch_size : int
        Images per forward pass / resize step.
    device : str
        Torch device for the feature networks (``"cpu"``, ``"cuda"``, ``"auto"``).
    antialias : bool
        Antialias every resize that downsamples. ``False`` (default) reproduces MindEye2,
        which resized torch tensors with torchvision 0.15 (no antialiasing).
    random_state : None | int | numpy.random.Generator
        Seed of the bootstrap, of the baselines' derangements (and of random network weights).
    baselines : bool
        Also score two trivial references under the same protocol (same resizing, networks and
        per-image scores): the reconstructions paired with the wrong stimuli (``"shuffled"``,
        the mean over 5 seeded derangements; feature rows are permuted, so it costs
        no forward pass) and the pixel-wise mean of the stimuli as every reconstruction
        (``"mean_image"``; one forward pass per network). See Notes.
    %(verbose)s

    Returns
    -------
    scores : ReconstructionScores
        Values, CIs, direction, chance and baselines of every metric, per-image scores, and
        the protocol.

    Notes
    -----
    The protocol is MindEye2's ``final_evaluations`` notebook, metric by metric; see
    :mod:`neurodecode.tasks.metrics.image` and ``docs/reconstruction_metrics.md``. Two
    steps of that notebook are *not* part of the metrics and are left to the caller:
    it first resizes both sets to 256 x 256 (:func:`resize_images`), and for its
    "enhanced" reconstructions it scores ``0.75 * recon + 0.25 * blurry_recon``.

    **Confidence intervals**: ``n_boot`` times, the images are resampled with replacement
    and each metric is recomputed as the mean of the per-image scores of the resample.
    Per-image scores are held fixed, so a 2-way score stays conditioned on the full
    candidate set (as in :func:`~neurodecode.tasks.evaluate_retrieval`); the interval
    reflects the sampling of test images. All metrics share the same resamples.

    **Baselines** (``baselines=True``): ``metrics[m]["shuffled"]`` is metric ``m`` with
    reconstruction i scored against stimulus ``pi(i)`` for 5 derangements ``pi`` (no image
    paired with its own stimulus), averaged; the derangements are drawn from ``random_state``
    within random blocks of 32 test images, so PixCorr and SSIM reuse the resized, filtered
    images of a block. ``metrics[m]["mean_image"]`` is metric ``m`` with every reconstruction
    replaced by the pixel-wise mean of the stimuli (each stimulus weighs 1/n, itself included).
    For 2-way identification a constant reconstruction scores 0.5 minus ties, by construction.
    A reconstruction is better than trivial only where its value beats both, in the metric's
    direction. Per-image baseline scores are in ``scores.baseline_per_image`` and the
    derangements in ``scores.pairings``.
    """
    names = _check_metrics(metrics)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    n_boot = int(n_boot)
    ci = check_ci(ci)
    batch_size = _check_batch_size(batch_size)
    if not isinstance(baselines, (bool, np.bool_)):
        raise TypeError(f"baselines must be True or False, got {baselines!r}")
    rng = check_random_state(random_state)
    rec, tgt = _check_pair(recon_images, target_images)
    n = rec.n
    needed = list(dict.fromkeys(METRICS[m].network for m in names if METRICS[m].network))
    if needed and n < 2:
        raise ValueError(f"2-way identification needs at least 2 images, got {n}")
    _check_same_resized(rec, tgt, [PIXEL_SIZE] * bool({"pixcorr", "ssim"} & set(names))
                        + [NETWORKS[k].input_size for k in needed])
    seed = int(rng.integers(0, 2**31 - 1))
    extractors = _resolve_networks(needed, networks, allow_random=allow_random, device=device,
                                   batch_size=batch_size, antialias=antialias, seed=seed)
    logger.info("Scoring %d reconstructions: %s; %d bootstraps%s", n,
                ", ".join(METRICS[m].label for m in names), n_boot,
                "; shuffled-pairing and mean-image baselines" if baselines else "")
    per_image, base, perms = _all_per_image(rec, tgt, names, needed, extractors, batch_size=batch_size,
                                            antialias=antialias, seed=seed if baselines else None)

    matrix = np.stack([per_image[m] for m in names], axis=1)  # (n, n_metrics)
    for j, m in enumerate(names):
        bad = int(np.isnan(matrix[:, j]).sum())
        if bad:
            warn(f"{METRICS[m].label}: {bad} of {n} images score NaN (constant image or features); "
                 "the mean and CI skip them.")
    values = np.array([_quiet_nanmean(matrix[:, j]) for j in range(len(names))], dtype=np.float64)
    if n_boot:
        counts = bootstrap_counts(n, n_boot, rng).astype(np.float64)
        replicates = _weighted_nanmean(counts, matrix)
        low, high = percentile_interval(replicates, ci)
    else:
        replicates = None
        low = high = np.full(len(names), np.nan)

    protocol = {
        "name": "mindeye2_reconstruction", "metrics": list(names), "n_boot": n_boot, "ci": ci,
        "pixel_size": PIXEL_SIZE, "antialias": bool(antialias),
        "networks": {k: {"label": NETWORKS[k].label, "layers": list(NETWORKS[k].layers),
                         "input_size": NETWORKS[k].input_size, "weights": extractors[k].fingerprint,
                         "antialias": extractors[k].antialias}
                     for k in needed},
        "random_weights": sorted(k for k in needed if extractors[k].random_weights_),
        "bootstrap": "images, percentile, paired across metrics",
        "random_state": random_state if isinstance(random_state, (int, type(None))) else "Generator",
        "baselines": _baselines_protocol(seed, n) if baselines else None,
        "description": _description(names, n_boot, ci, antialias, baselines),
    }
    metrics_out = {m: {"value": float(values[j]), "ci_low": float(low[j]), "ci_high": float(high[j]),
                       "chance": METRICS[m].chance, "higher_is_better": METRICS[m].higher_is_better}
                   for j, m in enumerate(names)}
    for kind, arrays in base.items():
        for m in names:
            metrics_out[m][kind] = float(_quiet_nanmean(arrays[m]))
    scores = ReconstructionScores(metrics=metrics_out, per_image=per_image, n_images=n, protocol=protocol,
                                  replicates=replicates, baseline_per_image=base, pairings=perms)
    for line in repr(scores).splitlines()[1:]:
        logger.info("%s", line)
    return scores


def _all_per_image(rec: _ImageSet, tgt: _ImageSet, names: Sequence[str], needed: Sequence[str],
                   extractors: Mapping[str, FeatureExtractor], *, batch_size: int, antialias: bool,
                   seed: int | None) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]],
                                              np.ndarray | None]:
    """Per-image scores of every metric, and with ``seed`` those of the two baselines.

    Returns ``per_image`` (metric -> (n,)), ``baselines`` (``{"shuffled", "mean_image"}`` ->
    metric -> (n,), a shuffled score being the mean over the derangements; empty without
    ``seed``) and the derangements (n_derangements, n) or None.
    """
    groups = perms = mean_img = None
    if seed is not None:
        groups, perms = _shuffle_pairings(rec.n, seed)
        mean_img = tgt.mean_image(batch_size)
    parts: dict[str, dict[str, np.ndarray]] = {}
    pixel = [m for m in names if METRICS[m].kind == "pixel"]
    if pixel:
        res = _pixel_scores(rec, tgt, want=pixel, size=PIXEL_SIZE, antialias=antialias, batch_size=batch_size,
                            groups=groups, perms=perms, mean_image=mean_img)
        parts.update({m: {kind: res[kind][m] for kind in res} for m in pixel})
    for net in needed:
        ext = extractors[net]
        f_rec = ext.extract(rec)
        f_tgt = ext.extract(tgt)
        f_mean = ext.extract(mean_img) if mean_img is not None else None  # one forward pass
        for m in names:
            info = METRICS[m]
            if info.network == net:
                parts[m] = _feature_scores(info.kind, f_rec[info.layer], f_tgt[info.layer],  # type: ignore[index]
                                           None if f_mean is None else f_mean[info.layer], perms)
        del f_rec, f_tgt
    per_image = {m: parts[m]["value"] for m in names}
    base: dict[str, dict[str, np.ndarray]] = {}
    if seed is not None:
        base["shuffled"] = {m: (_quiet_nanmean(parts[m]["shuffled"], axis=0) if "shuffled" in parts[m]
                                else np.full(rec.n, np.nan)) for m in names}
        base["mean_image"] = {m: parts[m]["mean_image"] for m in names}
    return per_image, base, perms
