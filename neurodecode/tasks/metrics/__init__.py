"""Image reconstruction metrics with MindEye2's exact protocol.

PixCorr and SSIM at 425 px, 2-way identification on AlexNet (layers 2 and 5),
InceptionV3 and CLIP ViT-L/14 features, and correlation distance on EfficientNet-B1
and SwAV ResNet-50 features, with bootstrap confidence intervals over test images.
Feature networks load weights from local files only (see :class:`FeatureExtractor`).
"""

from ._images import resize_images
from .features import NETWORKS, FeatureExtractor, NetworkSpec
from .image import (
    METRICS,
    ReconstructionScores,
    correlation_distance,
    evaluate_reconstructions,
    pixcorr,
    ssim,
    two_way_identification,
)

__all__ = ["METRICS", "NETWORKS", "FeatureExtractor", "NetworkSpec", "ReconstructionScores",
           "correlation_distance", "evaluate_reconstructions", "pixcorr", "resize_images", "ssim",
           "two_way_identification"]
