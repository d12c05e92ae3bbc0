"""Training loops for the deep decoders."""

from .trainer import Trainer

__all__ = ["Trainer"]
