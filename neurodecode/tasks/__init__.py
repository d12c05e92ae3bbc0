"""Tasks: retrieval (and, later, captioning and reconstruction) evaluated on decoded embeddings."""

from .retrieval import (
    RetrievalScores,
    evaluate_retrieval,
    identification_2way,
    retrieve,
    topk_accuracy,
)

__all__ = ["RetrievalScores", "evaluate_retrieval", "identification_2way", "retrieve",
           "topk_accuracy"]
