"""Independent NumPy forwards of the published originals (written from their code, float64, loops/einsum)."""

from __future__ import annotations

import math

import numpy as np

_ERF = np.vectorize(math.erf)


def gelu(x):
    """Exact GELU, ``0.5 x (1 + erf(x / √2))`` (torch's ``nn.GELU()`` / ``F.gelu`` default)."""
    return 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0)))


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def batch_norm_eval(x, w, b, mean, var, eps=1e-5, axis=1):
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda v: np.asarray(v).reshape(shape)  # noqa: E731
    return (x - r(mean)) / np.sqrt(r(var) + eps) * r(w) + r(b)


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def conv1d(x, w, b, dilation=1, padding=0):
    """``(B, C, T)`` ⊛ ``w (O, C, K)``: an explicit loop over the kernel taps (zero padding)."""
    bsz, _, t = x.shape
    o, _, k = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    t_out = t + 2 * padding - dilation * (k - 1)
    out = np.zeros((bsz, o, t_out))
    for j in range(k):
        out += np.einsum("oc,bct->bot", w[:, :, j], xp[:, :, j * dilation: j * dilation + t_out])
    return out + b[None, :, None]
