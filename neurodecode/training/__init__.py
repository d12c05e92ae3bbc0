"""Training loops for the deep decoders (on Hugging Face accelerate), checkpoints and resume."""

from .adapt import AdaptResult, adapt_subject
from .checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from .tracking import TRACKERS, Tracking
from .trainer import Trainer

__all__ = ["TRACKERS", "AdaptResult", "CheckpointError", "Tracking", "Trainer", "adapt_subject", "latest_checkpoint",
           "list_checkpoints", "load_checkpoint", "load_latest_checkpoint", "save_checkpoint"]
