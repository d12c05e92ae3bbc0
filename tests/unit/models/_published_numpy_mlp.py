"""Independent NumPy forwards of MindEye1 and MindBridge (written from the originals' code, float64, loops).

MindEye1 (``MedARC-AI/fMRI-reconstruction-NSD`` ``src/models.py``): ``BrainNetwork.forward`` (``lin0``, the
``mlp`` loop ``x = mlp[i](x); x += residual; residual = x``, ``lin1``, the projector on
``x.reshape(len(x), -1, clip_size)``) and ``Voxel2StableDiffusionModel.forward`` (the same loop without bias
and with SiLU, ``lin1``, ``reshape(B, -1, side, side)``, ``GroupNorm(1, 64)``, diffusers' ``Decoder`` with the
diffusers 0.13 ``AttentionBlock``). MindBridge (``littlepure2333/MindBridge`` ``src/models.py``,
``src/data.py``): ``AdaptiveMaxPool1d`` on the voxels, ``embedder[s]`` (``Adapter_Layer``: ``x + 1.0 ·
up(ReLU(down(x)))``, ``Linear``, ``LayerNorm``, ``GELU``), ``ResMLP``, ``head_image``, ``head_text``.
"""

from __future__ import annotations

import math

import numpy as np
from _published_numpy import gelu, layer_norm


def silu(x):
    return x / (1.0 + np.exp(-x))


def linear(x, sd, p, bias=True):
    """``nn.Linear`` at ``p`` (``p.weight``, ``p.bias``)."""
    y = x @ sd[p + "weight"].T
    return y + sd[p + "bias"] if bias else y


def group_norm(x, groups, w, b, eps):
    """``nn.GroupNorm`` over ``(B, C, H, W)``: statistics per sample and group of ``C / groups`` channels."""
    g = x.reshape(x.shape[0], groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    return g.reshape(x.shape) * w[None, :, None, None] + b[None, :, None, None]


def conv2d(x, w, b):
    """Stride 1, zero padding ``k // 2``: a loop over the kernel taps."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    height, width = x.shape[2:]
    out = np.zeros((x.shape[0], w.shape[0], height, width))
    for i in range(k):
        for j in range(k):
            out += np.einsum("oc,bchw->bohw", w[:, :, i, j], xp[:, :, i:i + height, j:j + width])
    return out + b[None, :, None, None]


def resnet(x, sd, p):
    """diffusers ``ResnetBlock2D`` (no time embedding; GroupNorm 32, eps 1e-6; output scale 1)."""
    h = conv2d(silu(group_norm(x, 32, sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)),
               sd[p + "conv1.weight"], sd[p + "conv1.bias"])
    h = conv2d(silu(group_norm(h, 32, sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)),
               sd[p + "conv2.weight"], sd[p + "conv2.bias"])
    if p + "conv_shortcut.weight" in sd:
        x = conv2d(x, sd[p + "conv_shortcut.weight"], sd[p + "conv_shortcut.bias"])
    return x + h


def attention_block(x, sd, a):
    """diffusers 0.13 ``AttentionBlock`` (one head): ``query``/``key``/``value``/``proj_attn``, residual.

    ``scale = 1 / sqrt(sqrt(C))`` applied to both the queries and the keys, as the original does.
    """
    bsz, c = x.shape[:2]
    t = group_norm(x, 32, sd[a + "group_norm.weight"], sd[a + "group_norm.bias"], 1e-6)
    t = t.reshape(bsz, c, -1).transpose(0, 2, 1)
    q, k, v = (linear(t, sd, a + n + ".") for n in ("query", "key", "value"))
    scale = 1.0 / math.sqrt(math.sqrt(c))
    att = (q * scale) @ (k * scale).transpose(0, 2, 1)
    att = np.exp(att - att.max(-1, keepdims=True))
    o = linear((att / att.sum(-1, keepdims=True)) @ v, sd, a + "proj_attn.")
    return x + o.transpose(0, 2, 1).reshape(x.shape)


def vae_decoder(sd, u, z, n_up_blocks):
    """diffusers ``Decoder`` (``n_up_blocks`` × ``UpDecoderBlock2D``, ``layers_per_block=1``) at ``u``."""
    x = conv2d(z, sd[u + "conv_in.weight"], sd[u + "conv_in.bias"])
    x = resnet(x, sd, u + "mid_block.resnets.0.")
    x = attention_block(x, sd, u + "mid_block.attentions.0.")
    x = resnet(x, sd, u + "mid_block.resnets.1.")
    for i in range(n_up_blocks):
        for r in range(2):
            x = resnet(x, sd, f"{u}up_blocks.{i}.resnets.{r}.")
        if i < n_up_blocks - 1:
            x = x.repeat(2, axis=2).repeat(2, axis=3)          # nearest ×2
            x = conv2d(x, sd[f"{u}up_blocks.{i}.upsamplers.0.conv.weight"],
                       sd[f"{u}up_blocks.{i}.upsamplers.0.conv.bias"])
    x = silu(group_norm(x, 32, sd[u + "conv_norm_out.weight"], sd[u + "conv_norm_out.bias"], 1e-6))
    return conv2d(x, sd[u + "conv_out.weight"], sd[u + "conv_out.bias"])


def residual_loop(x, sd, p, n_blocks, act, bias=True):
    """``x = mlp[i](x); x += residual; residual = x`` with ``mlp[i] = Linear → LayerNorm → act → Dropout``."""
    residual = x
    for i in range(n_blocks):
        x = act(layer_norm(linear(x, sd, f"{p}{i}.0.", bias), sd[f"{p}{i}.1.weight"], sd[f"{p}{i}.1.bias"]))
        x = x + residual
        residual = x
    return x


def mindeye1_voxel2clip(sd, x, n_blocks, clip_dim):
    """``BrainNetwork.forward`` in eval mode: ``(lin1 output, projector output flattened)``."""
    p = "voxel2clip."
    h = gelu(layer_norm(linear(x, sd, p + "lin0.0."), sd[p + "lin0.1.weight"], sd[p + "lin0.1.bias"]))
    h = residual_loop(h, sd, p + "mlp.", n_blocks, gelu)
    out = linear(h.reshape(len(h), -1), sd, p + "lin1.")
    u = out.reshape(len(out), -1, clip_dim)
    for j in (0, 3, 6):
        u = gelu(layer_norm(u, sd[f"{p}projector.{j}.weight"], sd[f"{p}projector.{j}.bias"]))
        u = linear(u, sd, f"{p}projector.{j + 2}.")
    return out, u.reshape(len(x), -1)


def mindeye1_autoencoder(sd, x, n_blocks, side, n_up_blocks):
    """``Voxel2StableDiffusionModel.forward`` (``ups_mode="4x"``) in eval mode: the SD-VAE latents."""
    h = silu(layer_norm(linear(x, sd, "lin0.0.", bias=False), sd["lin0.1.weight"], sd["lin0.1.bias"]))
    h = residual_loop(h, sd, "mlp.", n_blocks, silu, bias=False)
    z = linear(h, sd, "lin1.", bias=False).reshape(len(x), -1, side, side)
    z = group_norm(z, 1, sd["norm.weight"], sd["norm.bias"], 1e-5)
    return vae_decoder(sd, "upsampler.", z, n_up_blocks)


def adaptive_max_pool1d(x, n):
    """``AdaptiveMaxPool1d(n)`` on ``(B, L)``: bin ``i`` is the max over ``[⌊i·L/n⌋, ⌈(i+1)·L/n⌉)``."""
    length = x.shape[-1]
    out = np.empty((len(x), n))
    for i in range(n):
        lo, hi = (i * length) // n, -((-(i + 1) * length) // n)
        out[:, i] = x[:, lo:hi].max(-1)
    return out


def mindbridge(sd, x, subject, in_dim, n_blocks):
    """MindBridge's inference path for one subject: ``(head_image output, head_text output)``."""
    x = adaptive_max_pool1d(x, in_dim)
    p = f"embedder.{subject}."
    x = x + 1.0 * linear(np.maximum(linear(x, sd, p + "0.down_proj."), 0.0), sd, p + "0.up_proj.")
    x = gelu(layer_norm(linear(x, sd, p + "1."), sd[p + "2.weight"], sd[p + "2.bias"]))
    x = residual_loop(x, sd, "translator.mlp.", n_blocks, gelu)
    return linear(x, sd, "head_image."), linear(x, sd, "head_text.")


def mindbridge_builder(sd, z, subject):
    """``builder[s]``: ``Linear → LayerNorm → GELU → Adapter_Layer`` (the cycle loss's reconstruction)."""
    p = f"builder.{subject}."
    h = gelu(layer_norm(linear(z, sd, p + "0."), sd[p + "1.weight"], sd[p + "1.bias"]))
    return h + linear(np.maximum(linear(h, sd, p + "3.down_proj."), 0.0), sd, p + "3.up_proj.")
