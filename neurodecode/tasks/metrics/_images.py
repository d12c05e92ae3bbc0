"""Image inputs of the reconstruction metrics: checks, layout, and torchvision-style resizing.

Images are held as given (uint8 or float, channels last or first) and converted to
float32 tensors in [0, 1], shape (batch, 3, height, width), one batch at a time, so a
1000-image test set at 512 px never has to exist in float32 all at once.

Resizing follows ``torchvision.transforms.Resize`` on tensors exactly: an ``int`` size
sets the shorter side and keeps the aspect ratio (the long side is truncated, as
torchvision does), bilinear interpolation with ``align_corners=False``. ``antialias``
is explicit because torchvision changed its default for tensors in 0.17: MindEye2 ran
torch 2.0.1 / torchvision 0.15, where tensors were resized *without* antialiasing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Luminance weights of ``skimage.color.rgb2gray`` (ITU-R BT.709), used by MindEye2's SSIM.
RGB2GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)
#: Tolerance on float images: values may stray this far outside [0, 1] (decoder overshoot).
_FLOAT_TOL = 1e-3


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    if isinstance(x, (list, tuple)):
        return np.stack([_to_numpy(xi) for xi in x]) if len(x) else np.zeros((0,))
    return np.asarray(x)


class _ImageSet:
    """A validated stack of RGB images, converted to float tensors batch by batch.

    Parameters
    ----------
    images : array-like
        uint8 in [0, 255] or float in [0, 1]; shape (n, height, width, 3) or (n, 3,
        height, width) (numpy array, torch tensor, or a list of equally sized images).
    name : str
        Parameter name for error messages.
    """

    def __init__(self, images: Any, name: str) -> None:
        arr = _to_numpy(images)
        if arr.ndim != 4:
            hint = ""
            if arr.ndim == 3 and arr.shape[-1] == 3:
                hint = " (a single image? add a leading axis: images[None])"
            elif arr.ndim == 3:
                hint = " (grayscale? repeat to RGB: np.repeat(images[..., None], 3, axis=-1))"
            raise ValueError(f"{name} must have shape (n_images, height, width, 3) or (n_images, 3, height, "
                             f"width), got shape {arr.shape}{hint}")
        if arr.shape[-1] == 3:
            channels_last = True
        elif arr.shape[1] == 3:
            channels_last = False
        else:
            raise ValueError(
                f"{name} must be RGB with 3 channels, last (n, height, width, 3) or second (n, 3, height, "
                f"width), got shape {arr.shape}" + (" (drop the alpha channel: images[..., :3])"
                                                    if 4 in (arr.shape[-1], arr.shape[1]) else ""))
        if arr.dtype == np.uint8:
            scale = 255.0
        elif arr.dtype.kind == "f":
            if arr.size:
                lo, hi = float(np.min(arr)), float(np.max(arr))
                if not (np.isfinite(lo) and np.isfinite(hi)):
                    raise ValueError(f"{name} contains non-finite values (NaN or inf)")
                if lo < -_FLOAT_TOL or hi > 1.0 + _FLOAT_TOL:
                    raise ValueError(
                        f"float {name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]. "
                        + ("Divide by 255 or pass uint8 images. " if hi > 1.5 else "")
                        + ("Images in [-1, 1] (diffusion decoders) need (x + 1) / 2 first."
                           if lo < -0.5 else ""))
            scale = 1.0
        else:
            raise TypeError(f"{name} must be uint8 (0-255) or float (0-1) images, got dtype {arr.dtype}")
        if arr.shape[0] == 0:
            raise ValueError(f"{name} holds no images (shape {arr.shape})")
        self.array = arr
        self.channels_last = channels_last
        self.scale = scale
        self.name = name

    @property
    def n(self) -> int:
        return int(self.array.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        s = self.array.shape
        return (int(s[1]), int(s[2])) if self.channels_last else (int(s[2]), int(s[3]))

    def batch(self, start: int, stop: int) -> Any:
        """float32 tensor in [0, 1], shape (b, 3, height, width), of images ``start:stop``."""
        return self._tensor(self.array[start:stop])

    def take(self, indices: Any) -> Any:
        """float32 tensor in [0, 1], shape (b, 3, height, width), of the images at ``indices`` (any order)."""
        return self._tensor(self.array[np.asarray(indices, dtype=np.intp)])

    def _tensor(self, images: np.ndarray) -> Any:
        """``images`` (rows of :attr:`array`) as a float32 tensor in [0, 1], channels first."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
        if self.scale != 1.0:
            x = x / self.scale
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return x.contiguous()

    def mean_image(self, batch_size: int = 64) -> np.ndarray:
        """Pixel-wise mean of the images (each with weight 1/n), at their resolution.

        Summed in float64 from the float32 [0, 1] images; returned as float32, shape (1, height, width, 3).
        """
        import torch

        total = torch.zeros((3, *self.hw), dtype=torch.float64)
        for start in range(0, self.n, batch_size):
            total += self.batch(start, start + batch_size).to(torch.float64).sum(dim=0)
        return (total / self.n).permute(1, 2, 0).numpy().astype(np.float32)[None]


def _check_pair(recon: Any, target: Any) -> tuple[_ImageSet, _ImageSet]:
    """Validate both image sets and that they are aligned one to one."""
    rec = recon if isinstance(recon, _ImageSet) else _ImageSet(recon, "recon_images")
    tgt = target if isinstance(target, _ImageSet) else _ImageSet(target, "target_images")
    if rec.n != tgt.n:
        raise ValueError(
            "recon_images and target_images must be aligned (reconstruction i of stimulus i), got "
            f"{rec.n} reconstructions and {tgt.n} target images")
    return rec, tgt


def resized_hw(hw: tuple[int, int], size: int | Sequence[int]) -> tuple[int, int]:
    """Output (height, width) of ``torchvision.transforms.Resize(size)`` for an input of ``hw``.

    An ``int`` sets the shorter side; the longer side is ``int(size * long / short)``.
    """
    if isinstance(size, (int, np.integer)):
        h, w = hw
        short, long = (w, h) if w <= h else (h, w)
        if short == size:
            return (int(h), int(w))
        new_short, new_long = int(size), int(size * long / short)
        return (new_long, new_short) if w <= h else (new_short, new_long)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return size  # type: ignore[return-value]


def _check_same_resized(rec: _ImageSet, tgt: _ImageSet, sizes: Sequence[int]) -> None:
    """Raise if the two sets would not resize to the same shape (different aspect ratios)."""
    for size in sizes:
        a, b = resized_hw(rec.hw, size), resized_hw(tgt.hw, size)
        if a != b:
            raise ValueError(
                f"recon_images ({rec.hw[0]}x{rec.hw[1]}) and target_images ({tgt.hw[0]}x{tgt.hw[1]}) resize "
                f"to different shapes at {size} px ({a[0]}x{a[1]} vs {b[0]}x{b[1]}): MindEye2's metrics "
                "resize the shorter side and need the same aspect ratio; crop both sets to squares first.")


def _resize(x: Any, size: int | Sequence[int], *, antialias: bool) -> Any:
    """Bilinear resize of a float tensor (b, c, h, w) as ``torchvision.transforms.Resize`` does."""
    import torch.nn.functional as F

    out_hw = resized_hw((int(x.shape[-2]), int(x.shape[-1])), size)
    if tuple(out_hw) == (int(x.shape[-2]), int(x.shape[-1])):
        return x
    return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=bool(antialias))


def resize_images(images: Any, size: int | Sequence[int], *, antialias: bool = False) -> np.ndarray:
    """Resize RGB images as ``torchvision.transforms.Resize(size)`` does on float tensors.

    Parameters
    ----------
    images : array-like, shape (n_images, height, width, 3) or (n_images, 3, height, width)
        uint8 (0-255) or float (0-1) images.
    size : int | (int, int)
        An int sets the shorter side (aspect ratio kept); a pair is (height, width).
    antialias : bool
        Antialias when downsampling. ``False`` reproduces MindEye2's environment
        (torchvision 0.15 did not antialias tensors); ``True`` matches torchvision >= 0.17
        and PIL. No effect when upsampling.

    Returns
    -------
    resized : ndarray of float32, shape (n_images, new_height, new_width, 3)
        Values in [0, 1] (bilinear interpolation never leaves the input range).

    Notes
    -----
    MindEye2's ``final_evaluations`` first brings both the reconstructions and the
    stimuli to 256 x 256 (``transforms.Resize((256, 256))``), then applies each metric's
    own resizing. To reproduce that step, pass ``resize_images(x, (256, 256))`` to
    :func:`evaluate_reconstructions`.
    """
    imgs = _ImageSet(images, "images")
    out = []
    step = 64
    for start in range(0, imgs.n, step):
        x = _resize(imgs.batch(start, start + step), size, antialias=antialias)
        out.append(x.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out).astype(np.float32, copy=False)
