"""Procedural stimuli for the simulator: images and captions drawn from the same latents.

Every image is generated from a small set of latent parameters (a category with its
shape family, 1 to 3 objects, a colour, a size, positions, a background colour and an
oriented grating texture). The images are rendered with numpy and the captions are
written from the same latents, so images, captions and simulated brain responses all
share one ground truth.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..utils import ProgressBar

# name, singular nouns (synonyms), plural nouns (same order)
CATEGORIES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("circle", ("circle", "disc", "round dot"), ("circles", "discs", "round dots")),
    ("square", ("square", "box", "square block"), ("squares", "boxes", "square blocks")),
    ("triangle", ("triangle", "triangular shape", "triangle"),
     ("triangles", "triangular shapes", "triangles")),
    ("star", ("star", "star shape", "five-pointed star"), ("stars", "star shapes", "five-pointed stars")),
    ("ring", ("ring", "hoop", "hollow circle"), ("rings", "hoops", "hollow circles")),
    ("cross", ("cross", "plus sign", "cross shape"), ("crosses", "plus signs", "cross shapes")),
    ("bars", ("striped block", "set of bars", "barcode"), ("striped blocks", "sets of bars", "barcodes")),
    ("blob", ("blob", "splodge", "wobbly shape"), ("blobs", "splodges", "wobbly shapes")),
    ("hexagon", ("hexagon", "six-sided shape", "hexagon"), ("hexagons", "six-sided shapes", "hexagons")),
    ("crescent", ("crescent", "crescent moon", "moon shape"), ("crescents", "crescent moons", "moon shapes")),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c[0] for c in CATEGORIES)

#: Named colours (RGB, 0..255) used for objects and backgrounds.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
    "pink": (240, 130, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "brown": (130, 80, 40),
    "cyan": (40, 200, 210),
    "gray": (128, 128, 128),
}
COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)
_RGB = np.array([PALETTE[c] for c in COLOUR_NAMES], dtype=np.float32)

SIZE_NAMES: tuple[str, ...] = ("small", "medium-sized", "large")
_SIZE_RADIUS = np.array([0.10, 0.16, 0.24])  # object radius as a fraction of the image width
_COUNT_P = np.array([0.5, 0.3, 0.2])  # probability of 1, 2, 3 objects


@dataclass
class Latents:
    """Latent parameters of ``n`` procedural images (one row per image).

    Attributes
    ----------
    category : array of int, shape (n,)
        Index into :data:`CATEGORY_NAMES` (all objects of an image share it).
    colour : array of int, shape (n,)
        Object colour, index into :data:`COLOUR_NAMES`.
    size : array of int, shape (n,)
        0 small, 1 medium, 2 large.
    radius : array of float, shape (n,)
        Object radius as a fraction of the image width.
    n_objects : array of int, shape (n,)
        1, 2 or 3.
    pos : array of float, shape (n, 3, 2)
        Object centres (x, y) as fractions of the image (y grows downwards);
        rows beyond ``n_objects`` are NaN.
    rotation : array of float, shape (n, 3)
        Object rotation in radians.
    background : array of int, shape (n,)
        Background colour, index into :data:`COLOUR_NAMES` (never the object colour).
    grating_ori : array of float, shape (n,)
        Orientation of the background grating in degrees (0..180).
    grating_freq : array of float, shape (n,)
        Grating spatial frequency in cycles per image.
    grating_contrast : array of float, shape (n,)
        Grating amplitude (0..0.3 of the background colour).
    blob_phase : array of float, shape (n, 3)
        Phases of the harmonics that shape a blob.
    """

    category: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    radius: np.ndarray
    n_objects: np.ndarray
    pos: np.ndarray
    rotation: np.ndarray
    background: np.ndarray
    grating_ori: np.ndarray
    grating_freq: np.ndarray
    grating_contrast: np.ndarray
    blob_phase: np.ndarray

    def __len__(self) -> int:
        return len(self.category)

    def table(self) -> dict[str, list]:
        """Return the latents as JSON-friendly columns (names, not indices)."""
        cx = np.nanmean(self.pos[..., 0], axis=1)
        cy = np.nanmean(self.pos[..., 1], axis=1)
        return {
            "category": [CATEGORY_NAMES[i] for i in self.category],
            "colour": [COLOUR_NAMES[i] for i in self.colour],
            "size": [SIZE_NAMES[i] for i in self.size],
            "n_objects": self.n_objects.tolist(),
            "center_x": np.round(cx, 4).tolist(),
            "center_y": np.round(cy, 4).tolist(),
            "background": [COLOUR_NAMES[i] for i in self.background],
            "grating_ori": np.round(self.grating_ori, 2).tolist(),
            "grating_contrast": np.round(self.grating_contrast, 4).tolist(),
        }


def sample_latents(n: int, rng: np.random.Generator) -> Latents:
    """Draw the latent parameters of ``n`` images.

    Parameters
    ----------
    n : int
        Number of images.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    latents : Latents
        The latent parameters.
    """
    n_cat, n_col = len(CATEGORIES), len(COLOUR_NAMES)
    category = rng.integers(0, n_cat, n)
    colour = rng.integers(0, n_col, n)
    # background differs from the object colour: shift by 1..n_col-1
    background = (colour + rng.integers(1, n_col, n)) % n_col
    size = rng.integers(0, 3, n)
    n_objects = rng.choice(np.arange(1, 4), size=n, p=_COUNT_P)
    # more objects -> slightly smaller objects so that they fit
    radius = _SIZE_RADIUS[size] * rng.uniform(0.85, 1.15, n) * np.array([1.0, 0.85, 0.75])[n_objects - 1]
    pos = np.full((n, 3, 2), np.nan)
    for i in range(n):
        r = radius[i]
        placed: list[np.ndarray] = []
        for _ in range(n_objects[i]):
            best, best_d = None, -1.0
            for _try in range(6):  # keep the candidate farthest from the others
                cand = rng.uniform(r, 1 - r, 2)
                d = min((np.hypot(*(cand - p)) for p in placed), default=np.inf)
                if d > best_d:
                    best, best_d = cand, d
                if d > 2.1 * r:
                    break
            placed.append(best)
        pos[i, : len(placed)] = placed
    return Latents(
        category=category, colour=colour, size=size, radius=radius, n_objects=n_objects, pos=pos,
        rotation=rng.uniform(0, 2 * np.pi, (n, 3)), background=background,
        grating_ori=rng.uniform(0, 180, n), grating_freq=rng.uniform(2, 8, n),
        grating_contrast=rng.uniform(0, 0.3, n), blob_phase=rng.uniform(0, 2 * np.pi, (n, 3)),
    )


def _shape_mask(cat: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Inside-mask of a unit-radius shape in rotated, normalised coordinates (u, v)."""
    rho = np.hypot(u, v)
    if cat == "circle":
        return rho <= 1.0
    if cat == "ring":
        return (rho <= 1.0) & (rho >= 0.55)
    if cat in ("square", "triangle", "hexagon"):
        n_sides = {"square": 4, "triangle": 3, "hexagon": 6}[cat]
        apothem = np.cos(np.pi / n_sides)
        d = np.full(u.shape, -np.inf)
        for k in range(n_sides):
            a = 2 * np.pi * k / n_sides + np.pi / 2
            d = np.maximum(d, u * np.cos(a) + v * np.sin(a))
        return d <= apothem * (0.95 if n_sides == 4 else 1.0)
    phi = np.arctan2(v, u)
    if cat == "star":
        frac = np.abs(((phi * 5 / (2 * np.pi)) % 1.0) * 2 - 1)  # 1 at the tips, 0 between
        return rho <= 0.42 + 0.58 * frac
    if cat == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if cat == "bars":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9) & (np.cos(3.5 * np.pi * u) > 0)
    if cat == "blob":
        edge = 0.78 + 0.12 * np.cos(2 * phi + phase) + 0.1 * np.cos(3 * phi + 2 * phase)
        return rho <= edge
    if cat == "crescent":
        return (rho <= 1.0) & (np.hypot(u - 0.45, v) > 0.8)
    raise ValueError(f"unknown category {cat!r}")


def render_images(latents: Latents, image_size: int, *, desc: str = "Rendering images") -> np.ndarray:
    """Render the images of ``latents`` with numpy.

    Images smaller than 128 pixels are rendered at twice the size and averaged
    down (anti-aliasing).

    Parameters
    ----------
    latents : Latents
        Latent parameters (``n`` images).
    image_size : int
        Height and width in pixels.
    desc : str
        Progress-bar label.

    Returns
    -------
    images : array of uint8, shape (n, image_size, image_size, 3)
        RGB images.
    """
    n = len(latents)
    ss = 2 if image_size < 128 else 1
    size = image_size * ss
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for i in ProgressBar(range(n), total=n, desc=desc, unit="img"):
        bg = 0.55 * _RGB[latents.background[i]] + 0.45 * 128.0
        theta = np.deg2rad(latents.grating_ori[i])
        grating = np.sin(2 * np.pi * latents.grating_freq[i] * (xx * np.cos(theta) + yy * np.sin(theta)))
        img = bg[None, None, :] * (1.0 + latents.grating_contrast[i] * grating[..., None]).astype(np.float32)
        cat = CATEGORY_NAMES[latents.category[i]]
        rgb = _RGB[latents.colour[i]]
        r = latents.radius[i]
        for k in range(latents.n_objects[i]):
            cx, cy = latents.pos[i, k]
            # local window around the object keeps rendering cheap
            lo_x, hi_x = max(int((cx - r) * size) - 1, 0), min(int((cx + r) * size) + 2, size)
            lo_y, hi_y = max(int((cy - r) * size) - 1, 0), min(int((cy + r) * size) + 2, size)
            du = (xx[lo_y:hi_y, lo_x:hi_x] - cx) / r
            dv = (yy[lo_y:hi_y, lo_x:hi_x] - cy) / r
            rot = latents.rotation[i, k]
            u = du * np.cos(rot) + dv * np.sin(rot)
            v = -du * np.sin(rot) + dv * np.cos(rot)
            mask = _shape_mask(cat, u, v, float(latents.blob_phase[i, k]))
            img[lo_y:hi_y, lo_x:hi_x][mask] = rgb
        if ss > 1:  # ss == 2: average 2x2 blocks
            img = 0.25 * (img[0::2, 0::2] + img[1::2, 0::2] + img[0::2, 1::2] + img[1::2, 1::2])
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------- captions
_COUNT_WORDS = {1: ("a", "one", "a single"), 2: ("two", "a pair of", "two"),
                3: ("three", "a group of three", "three")}
_SIZE_WORDS = {0: ("small", "little", "tiny"), 1: ("medium-sized", "mid-sized", "moderately sized"),
               2: ("large", "big", "huge")}
_TEMPLATES = (
    "{count} {size} {colour} {noun} {where} on a {bg} background",
    "a {bg} background with {count} {colour} {noun} {where}",
    "{count} {noun} in {colour}, {where}, over a {texture} {bg} backdrop",
    "an image of {count} {size} {colour} {noun} against {backdrop}",
    "there {be} {count} {size} {noun} {where}; {pron} {be} {colour}",
    "a simple drawing of {count} {colour} {noun} on {bg}",
    "{count} {size} {noun} coloured {colour} {where}",
    "{count} {colour} {noun} sitting {where} with {backdrop} behind",
)


def _where(latents: Latents, i: int, rng: np.random.Generator) -> str:
    k = latents.n_objects[i]
    p = latents.pos[i, :k]
    cx, cy = p.mean(axis=0)
    if k > 1 and np.ptp(p, axis=0).max() > 0.45:
        return str(rng.choice(["spread across the image", "scattered around the picture",
                               "spread out across the frame"]))
    h = "left" if cx < 0.4 else "right" if cx > 0.6 else ""
    vert = "top" if cy < 0.4 else "bottom" if cy > 0.6 else ""
    if h and vert:
        return str(rng.choice([f"in the {vert} {h} corner", f"near the {vert} {h}",
                               f"towards the {vert} {h} of the image"]))
    if h:
        return str(rng.choice([f"on the {h}", f"on the {h} side", f"to the {h} of the picture"]))
    if vert:
        return str(rng.choice([f"near the {vert}", f"at the {vert} of the image", f"along the {vert}"]))
    return str(rng.choice(["in the middle", "in the centre of the image", "at the centre"]))


def make_captions(latents: Latents, rng: np.random.Generator, n_captions: int = 5) -> list[list[str]]:
    """Write ``n_captions`` different natural-ish captions per image from its latents.

    Parameters
    ----------
    latents : Latents
        Latent parameters of ``n`` images.
    rng : numpy.random.Generator
        Picks templates and synonyms.
    n_captions : int
        Captions per image (at most the number of templates, 8).

    Returns
    -------
    captions : list of list of str
        ``n`` lists of ``n_captions`` captions.
    """
    out: list[list[str]] = []
    for i in range(len(latents)):
        k = int(latents.n_objects[i])
        _, singular, plural = CATEGORIES[latents.category[i]]
        grating_strong = latents.grating_contrast[i] > 0.12
        caps: list[str] = []
        for t in rng.permutation(len(_TEMPLATES))[:n_captions]:
            j = int(rng.integers(0, 3))
            text = _TEMPLATES[t].format(
                count=_COUNT_WORDS[k][j], size=_SIZE_WORDS[int(latents.size[i])][int(rng.integers(0, 3))],
                colour=COLOUR_NAMES[latents.colour[i]],
                noun=(singular if k == 1 else plural)[int(rng.integers(0, 3))],
                where=_where(latents, i, rng), bg=COLOUR_NAMES[latents.background[i]],
                texture="striped" if grating_strong else "plain",
                backdrop=(f"{COLOUR_NAMES[latents.background[i]]} stripes" if grating_strong
                          else f"a plain {COLOUR_NAMES[latents.background[i]]} backdrop"),
                be="is" if k == 1 else "are", pron="it" if k == 1 else "they",
            )
            text = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)
            caps.append(text[0].upper() + text[1:] + ".")
        out.append(caps)
    return out


# --------------------------------------------------------------------- features
SEMANTIC_GROUPS: dict[str, int] = {
    "category": len(CATEGORIES), "colour": len(COLOUR_NAMES), "count": 3, "size": 1,
    "position": 2, "background": len(COLOUR_NAMES), "texture": 1,
}


def semantic_features(latents: Latents) -> tuple[np.ndarray, dict[str, slice]]:
    """Return the semantic feature matrix of the images and the column slice of each group.

    Groups (see :data:`SEMANTIC_GROUPS`): category one-hot, colour one-hot, object
    count one-hot, object radius, mean object position (x, y), background colour
    one-hot and grating contrast. Columns are standardised (mean 0, std 1).

    Parameters
    ----------
    latents : Latents
        Latent parameters of ``n`` images.

    Returns
    -------
    features : array of float32, shape (n, n_features)
        Standardised features.
    groups : dict of str → slice
        Columns of each group.
    """
    n = len(latents)
    cols, groups, start = [], {}, 0
    blocks = {
        "category": np.eye(len(CATEGORIES))[latents.category],
        "colour": np.eye(len(COLOUR_NAMES))[latents.colour],
        "count": np.eye(3)[latents.n_objects - 1],
        "size": latents.radius[:, None],
        "position": np.stack([np.nanmean(latents.pos[..., 0], 1), np.nanmean(latents.pos[..., 1], 1)], 1),
        "background": np.eye(len(COLOUR_NAMES))[latents.background],
        "texture": latents.grating_contrast[:, None],
    }
    for name, block in blocks.items():
        cols.append(block.reshape(n, -1))
        groups[name] = slice(start, start + cols[-1].shape[1])
        start += cols[-1].shape[1]
    feats = np.concatenate(cols, axis=1).astype(np.float64)
    feats = (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-6)
    return feats.astype(np.float32), groups


def _bin_index(n_in: int, n_out: int) -> np.ndarray:
    return np.flatnonzero(np.diff(np.floor(np.arange(n_in) * n_out / n_in).astype(int), prepend=-1))


#: Luminance weights of the R, G, B channels (ITU-R BT.601).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _opponent_batches(images: np.ndarray, resolution: int, step: int = 256) -> Iterator[tuple[
        int, tuple[np.ndarray, np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]]:
    """Batches of uint8 images as (start, (luminance, red-green, blue-yellow), block means).

    The channels are float32 maps of shape (batch, H, W); ``block(a)`` averages such maps over the
    blocks of a ``resolution`` x ``resolution`` grid (shape (batch, resolution, resolution)).
    """
    _, h, w, _ = images.shape
    iy, ix = _bin_index(h, resolution), _bin_index(w, resolution)
    counts = np.outer(np.diff(np.append(iy, h)), np.diff(np.append(ix, w))).astype(np.float32)

    def block(a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(a, iy, axis=1), ix, axis=2) / counts

    for s in range(0, len(images), step):
        x = images[s:s + step].astype(np.float32) / 255.0
        yield s, (x @ _LUMA, x[..., 0] - x[..., 1], x[..., 2] - 0.5 * (x[..., 0] + x[..., 1])), block


def lowlevel_features(images: np.ndarray, resolution: int = 16) -> np.ndarray:
    """Low-resolution luminance, contrast and colour-opponent maps of uint8 images.

    Parameters
    ----------
    images : array of uint8, shape (n, H, W, 3)
        RGB images.
    resolution : int
        Side of the output maps (block averages of the image).

    Returns
    -------
    features : array of float32, shape (n, 4, resolution * resolution)
        Channels: luminance, local contrast (block std of luminance plus the block's
        deviation from the image mean), red-green and blue-yellow opponency; values
        roughly in [-1, 1].
    """
    out = np.empty((len(images), 4, resolution * resolution), dtype=np.float32)
    for s, (lum, rg, by), block in _opponent_batches(images, resolution):
        m = block(lum)
        var = np.maximum(block(lum * lum) - m * m, 0.0)
        contrast = np.sqrt(var) + np.abs(m - lum.mean(axis=(1, 2), keepdims=True))
        k = len(lum)
        out[s:s + k, 0] = (m - 0.5).reshape(k, -1)
        out[s:s + k, 1] = contrast.reshape(k, -1)
        out[s:s + k, 2] = block(rg).reshape(k, -1)
        out[s:s + k, 3] = block(by).reshape(k, -1)
    return out


# ------------------------------------------------------ nonlinear-response features
def contrast_energy(images: np.ndarray, resolution: int = 16) -> np.ndarray:
    """Local contrast energy and signed contrast of luminance, red-green and blue-yellow.

    For channel ``c`` (luminance, red-green, blue-yellow; the opponent signals of
    :func:`lowlevel_features`) and block ``x`` of a ``resolution`` x ``resolution`` grid,
    ``d_c(x) = mean_x(c) - mean_image(c)`` is the block's signed contrast relative to the image mean
    and ``E_c(x) = sqrt(var_x(c) + d_c(x)**2)`` its root-mean-square contrast energy (the
    polarity-invariant quantity that complex cells and BOLD in early visual cortex follow).
    Always ``E_c >= |d_c|``.

    Parameters
    ----------
    images : array of uint8, shape (n, H, W, 3)
        RGB images.
    resolution : int
        Side of the output maps.

    Returns
    -------
    features : array of float32, shape (n, 6, resolution * resolution)
        ``E_lum, E_rg, E_by, d_lum, d_rg, d_by``.
    """
    out = np.empty((len(images), 6, resolution * resolution), dtype=np.float32)
    for s, chans, block in _opponent_batches(images, resolution):
        k = len(chans[0])
        for c, a in enumerate(chans):
            m = block(a)
            var = np.maximum(block(a * a) - m * m, 0.0)
            d = m - a.mean(axis=(1, 2), keepdims=True)
            out[s:s + k, c] = np.sqrt(var + d * d).reshape(k, -1)
            out[s:s + k, 3 + c] = d.reshape(k, -1)
    return out


def _shape_descriptors() -> np.ndarray:
    """(n_categories, 3) descriptors of the rendered category shapes: fill, compactness, hollowness.

    Computed from :func:`_shape_mask` on a fine grid: ``fill`` = area / area of the unit disc,
    ``compactness`` = 4 pi area / perimeter**2 (1 for a disc, small for spiky or striped shapes),
    ``hollowness`` = fraction of the central disc (radius 0.5) that is empty. Similar shapes get
    similar descriptors, which makes them a small "shape space" for tuning curves.
    """
    from scipy.ndimage import gaussian_filter

    g = (np.arange(160) + 0.5) / 160 * 2.4 - 1.2
    v, u = np.meshgrid(g, g, indexing="ij")
    cell = (2.4 / 160) ** 2
    centre = np.hypot(u, v) <= 0.5
    out = []
    for name in CATEGORY_NAMES:
        m = _shape_mask(name, u, v, 0.0)
        area = m.sum() * cell
        gy, gx = np.gradient(gaussian_filter(m.astype(np.float64), 1.0))
        perim = np.hypot(gx, gy).sum() * (2.4 / 160)  # total variation of the smoothed mask = boundary length
        out.append([area / np.pi, 4 * np.pi * area / max(perim, 1e-9) ** 2, 1.0 - m[centre].mean()])
    return np.asarray(out, dtype=np.float64)


def _opponent(rgb: np.ndarray) -> np.ndarray:
    """Luminance, red-green and blue-yellow coordinates of RGB colours in 0..255."""
    x = np.asarray(rgb, dtype=np.float64) / 255.0
    return np.stack([x @ np.array([0.299, 0.587, 0.114]), x[..., 0] - x[..., 1],
                     x[..., 2] - 0.5 * (x[..., 0] + x[..., 1])], axis=-1)


#: Groups of :func:`tuning_coordinates` (the same names as :data:`SEMANTIC_GROUPS`) and their dimensions.
TUNING_GROUPS: dict[str, int] = {"category": 3, "colour": 3, "count": 1, "size": 1, "position": 2,
                                 "background": 3, "texture": 1}


def tuning_coordinates(latents: Latents) -> tuple[np.ndarray, dict[str, slice]]:
    """Continuous stimulus coordinates in which simulated higher-level voxels have tuning curves.

    Unlike :func:`semantic_features` (one-hot codes, in which every category is equally far from
    every other one), similar stimuli are close here: category = the 3 shape descriptors of its
    shape (fill, compactness, hollowness), colour and background = the opponent coordinates
    (luminance, red-green, blue-yellow) of the palette colour, count = number of objects, size =
    object radius, position = mean object centre (x, y), texture = grating contrast. Every column
    is standardised over the images (mean 0, std 1).

    Parameters
    ----------
    latents : Latents
        Latent parameters of ``n`` images.

    Returns
    -------
    coords : array of float32, shape (n, 14)
        Standardised coordinates.
    groups : dict of str -> slice
        Columns of each group (:data:`TUNING_GROUPS`).
    """
    blocks = {
        "category": _shape_descriptors()[latents.category],
        "colour": _opponent(_RGB[latents.colour]),
        "count": latents.n_objects[:, None].astype(np.float64),
        "size": latents.radius[:, None],
        "position": np.stack([np.nanmean(latents.pos[..., 0], 1), np.nanmean(latents.pos[..., 1], 1)], 1),
        "background": _opponent(_RGB[latents.background]),
        "texture": latents.grating_contrast[:, None],
    }
    cols, groups, start = [], {}, 0
    for name in TUNING_GROUPS:
        block = np.asarray(blocks[name], dtype=np.float64).reshape(len(latents), -1)
        cols.append(block)
        groups[name] = slice(start, start + block.shape[1])
        start += block.shape[1]
    feats = np.concatenate(cols, axis=1)
    feats = (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-6)
    return feats.astype(np.float32), groups
