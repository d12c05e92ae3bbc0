"""Decoders: closed-form ridge, the composable deep BrainDecoder, its parts and losses."""

from .adapters import LinearAdapter, PooledAdapter, SpatialAttention, SubjectBuilder, SubjectLayer
from .backbones import ChannelAttentionEncoder, DilatedConvNet, MLPMixer, ResidualMLP, init_parameters_
from .decoder import BrainDecoder, DecoderOutput
from .heads import LowLevelHead, PooledHead, Projector, SequenceHead, TokenHead
from .losses import (
                     ClipLoss,
                     WeightedLoss,
                     bimixco,
                     candidate_clip,
                     cosine_loss,
                     cycle_loss,
                     info_nce,
                     l1_loss,
                     mixco,
                     mse_loss,
                     soft_clip,
)
from .ridge import RidgeDecoder

__all__ = ["BrainDecoder", "ChannelAttentionEncoder", "ClipLoss", "DecoderOutput", "DilatedConvNet",
           "LinearAdapter", "LowLevelHead", "MLPMixer", "PooledAdapter", "PooledHead", "Projector", "ResidualMLP",
           "RidgeDecoder", "SequenceHead", "SpatialAttention", "SubjectBuilder", "SubjectLayer", "TokenHead",
           "WeightedLoss",
           "bimixco", "candidate_clip", "cosine_loss", "cycle_loss", "info_nce", "init_parameters_", "l1_loss", "mixco",
           "mse_loss", "soft_clip"]
