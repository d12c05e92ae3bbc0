"""Decoders: closed-form ridge, the composable deep BrainDecoder, its parts and losses."""

from .adapters import (
    LinearAdapter,
    LinearNormAdapter,
    PooledAdapter,
    SpatialAttention,
    SubjectBuilder,
    SubjectLayer,
    SubjectToken,
)
from .backbones import (
    ChannelAttentionEncoder,
    DilatedConvNet,
    MindEye2Mixer,
    MLPMixer,
    PostNormResidualMLP,
    ResidualMLP,
    init_parameters_,
)
from .decoder import BrainDecoder, DecoderOutput
from .heads import LowLevelHead, PooledHead, Projector, SequenceHead, TextHead, TokenHead, VAEDecoderHead
from .losses import (
                     BrainMagickClipLoss,
                     ClipLoss,
                     ClipMSELoss,
                     InfoNCELoss,
                     MindEye2Loss,
                     NormalizedMSELoss,
                     SoftClipLoss,
                     TrainingLoss,
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
from .priors import DiffusionPrior, DiffusionPriorNetworkPrior
from .published import from_published, list_published
from .registry import (
    DecoderSpec,
    build_loss,
    get_adapter,
    get_backbone,
    get_head,
    get_loss,
    get_lowlevel_loss,
    get_prior,
    get_token_loss,
    list_adapters,
    list_backbones,
    list_heads,
    list_losses,
    list_lowlevel_losses,
    list_priors,
    list_token_losses,
    register_adapter,
    register_backbone,
    register_head,
    register_loss,
    register_lowlevel_loss,
    register_prior,
    register_token_loss,
)
from .ridge import RidgeDecoder

__all__ = ["BrainDecoder", "ChannelAttentionEncoder", "ClipLoss", "DecoderOutput", "DilatedConvNet",
           "LinearAdapter", "LowLevelHead", "MLPMixer", "PooledAdapter", "PooledHead", "Projector", "ResidualMLP",
           "MindEye2Mixer",
           "RidgeDecoder", "SequenceHead", "SpatialAttention", "SubjectBuilder", "SubjectLayer", "TokenHead",
           "SubjectToken", "VAEDecoderHead",
           "WeightedLoss", "TrainingLoss", "InfoNCELoss", "SoftClipLoss", "MindEye2Loss", "ClipMSELoss",
           "BrainMagickClipLoss", "NormalizedMSELoss", "DecoderSpec", "build_loss",
           "get_adapter", "get_backbone", "get_head", "get_loss", "get_lowlevel_loss", "get_token_loss",
           "list_adapters", "list_backbones", "list_heads", "list_losses", "list_lowlevel_losses",
           "list_token_losses", "register_adapter", "register_backbone", "register_head", "register_loss",
           "register_lowlevel_loss", "register_token_loss",
           "bimixco", "candidate_clip", "cosine_loss", "cycle_loss", "info_nce", "init_parameters_", "l1_loss", "mixco",
           "mse_loss", "soft_clip", "from_published", "list_published", "DiffusionPrior", "get_prior",
           "list_priors", "register_prior", "DiffusionPriorNetworkPrior", "LinearNormAdapter",
           "PostNormResidualMLP", "TextHead"]
