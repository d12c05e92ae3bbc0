"""Tasks on decoded embeddings: retrieval, captioning, reconstruction and their metrics.

Retrieval is imported eagerly (numpy only); captioning, caption metrics, diffusion reconstruction and
image metrics load torch / transformers / diffusers lazily and are imported from their modules:
``neurodecode.tasks.captioning``, ``.caption_metrics``, ``.reconstruction``, ``.metrics``.
"""

from .retrieval import (
    RetrievalScores,
    evaluate_retrieval,
    identification_2way,
    retrieve,
    topk_accuracy,
)

__all__ = ["RetrievalScores", "evaluate_retrieval", "identification_2way", "retrieve",
           "topk_accuracy"]
