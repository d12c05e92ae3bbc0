"""Decoders: closed-form ridge, the shared deep BrainDecoder and contrastive losses."""

from .decoder import BrainDecoder, DecoderOutput
from .losses import ClipLoss, info_nce, soft_clip
from .ridge import RidgeDecoder

__all__ = ["BrainDecoder", "ClipLoss", "DecoderOutput", "RidgeDecoder", "info_nce", "soft_clip"]
