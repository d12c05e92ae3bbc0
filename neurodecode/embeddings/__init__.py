"""Stimulus embeddings: the targets decoders learn to predict.

:class:`StimulusEmbeddings` is the lookup table stimulus id → vector. Stimulus
encoders (``embed_images`` and friends) live in their own modules of this
package and return such a table.
"""

from ._table import StimulusEmbeddings

__all__ = ["StimulusEmbeddings"]
