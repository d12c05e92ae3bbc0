"""Key lists of the diffusers ``Decoder`` that MindEye1 and MindEye2 use for their low-level (blurry) branch.

Both originals build ``diffusers.models.vae.Decoder(in_channels, out_channels, up_block_types=n ×
"UpDecoderBlock2D", block_out_channels, layers_per_block=1)`` and a ConvNeXt-feature projector of 1×1
convolutions (training only). Written from diffusers' ``Decoder`` (``src/diffusers/models/vae.py``) and the
originals' constructors; neurodecode's :class:`~neurodecode.models.heads.VAEDecoderHead` has the same module
names, so the keys map one to one, except the mid-block attention's, which diffusers ≤ 0.14 (MindEye1's
files) named ``query`` / ``key`` / ``value`` / ``proj_attn``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["OLD_ATTENTION", "decoder_keys", "maps_projector_keys", "new_attention_name"]

#: diffusers ≤ 0.14 attention names → the current ones (as diffusers' own converter renames them).
OLD_ATTENTION: dict[str, str] = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _resnet_keys(p: str, c_in: int, c_out: int) -> dict[str, tuple[int, ...]]:
    keys = {p + "norm1.weight": (c_in,), p + "norm1.bias": (c_in,), p + "conv1.weight": (c_out, c_in, 3, 3),
            p + "conv1.bias": (c_out,), p + "norm2.weight": (c_out,), p + "norm2.bias": (c_out,),
            p + "conv2.weight": (c_out, c_out, 3, 3), p + "conv2.bias": (c_out,)}
    if c_in != c_out:
        keys.update({p + "conv_shortcut.weight": (c_out, c_in, 1, 1), p + "conv_shortcut.bias": (c_out,)})
    return keys


def decoder_keys(prefix: str, *, in_channels: int, block_out_channels: Sequence[int], out_channels: int,
                 attention_names: str = "to_q") -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of ``Decoder(in_channels, out_channels, block_out_channels, 1)``.

    Parameters
    ----------
    prefix : str
        Where the decoder sits in the original (``"backbone.bupsampler."``, ``"upsampler."``).
    in_channels, out_channels : int
        Its input channels and the latent channels it outputs.
    block_out_channels : sequence of int
        diffusers' ``block_out_channels`` (smallest first; the up blocks run from the last).
    attention_names : {"to_q", "query"}
        The mid-block attention's names: diffusers ≥ 0.15 (``to_q``…) or older (``query``…).

    Returns
    -------
    keys : dict of str → tuple of int
        Key → shape, in the original's ``state_dict()`` order.
    """
    widths = tuple(int(w) for w in block_out_channels)
    rev, top = widths[::-1], widths[-1]
    keys = {prefix + "conv_in.weight": (top, int(in_channels), 3, 3), prefix + "conv_in.bias": (top,)}
    for r in (0, 1):
        keys.update(_resnet_keys(f"{prefix}mid_block.resnets.{r}.", top, top))
    a = prefix + "mid_block.attentions.0."
    names = ("to_q", "to_k", "to_v", "to_out.0") if attention_names == "to_q" else tuple(OLD_ATTENTION)
    keys.update({a + "group_norm.weight": (top,), a + "group_norm.bias": (top,)})
    keys.update({a + f"{n}.{w}": (top, top) if w == "weight" else (top,)
                 for n in names for w in ("weight", "bias")})
    prev = top
    for i, ch in enumerate(rev):
        for r in (0, 1):
            keys.update(_resnet_keys(f"{prefix}up_blocks.{i}.resnets.{r}.", prev if r == 0 else ch, ch))
        prev = ch
        if i < len(rev) - 1:
            keys.update({f"{prefix}up_blocks.{i}.upsamplers.0.conv.weight": (ch, ch, 3, 3),
                         f"{prefix}up_blocks.{i}.upsamplers.0.conv.bias": (ch,)})
    keys.update({prefix + "conv_norm_out.weight": (widths[0],), prefix + "conv_norm_out.bias": (widths[0],),
                 prefix + "conv_out.weight": (int(out_channels), widths[0], 3, 3),
                 prefix + "conv_out.bias": (int(out_channels),)})
    return keys


def maps_projector_keys(prefix: str, in_channels: int, width: int = 512) -> dict[str, tuple[int, ...]]:
    """MindEye's ConvNeXt-feature projector: ``Conv1×1 → GroupNorm → ReLU`` twice (no bias), then ``Conv1×1``.

    Parameters
    ----------
    prefix : str
        ``"backbone.b_maps_projector."`` (MindEye2) or ``"maps_projector."`` (MindEye1's autoencoder).
    in_channels : int
        The low-level feature map's channels (64).
    width : int
        The projector's width (512).

    Returns
    -------
    keys : dict of str → tuple of int
        Key → shape.
    """
    w = int(width)
    return {prefix + "0.weight": (w, int(in_channels), 1, 1), prefix + "1.weight": (w,),
            prefix + "1.bias": (w,), prefix + "3.weight": (w, w, 1, 1), prefix + "4.weight": (w,), prefix + "4.bias": (w,),
            prefix + "6.weight": (w, w, 1, 1), prefix + "6.bias": (w,)}


def new_attention_name(tail: str) -> str:
    """A decoder key (below the decoder) with diffusers ≤ 0.14's attention names renamed.

    Parameters
    ----------
    tail : str
        The key below the decoder's prefix (``"mid_block.attentions.0.query.weight"``).

    Returns
    -------
    tail : str
        The same key in today's names (``"mid_block.attentions.0.to_q.weight"``); other keys unchanged.
    """
    parts = tail.split(".")
    if len(parts) > 1 and parts[-2] in OLD_ATTENTION:
        return ".".join([*parts[:-2], OLD_ATTENTION[parts[-2]], parts[-1]])
    return tail
