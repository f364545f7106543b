"""Similarity heads: ``phi(query, item)`` behind one contract (see :mod:`rails.models.similarity.base`)."""

from rails.models.similarity.base import SimilarityHead, SimilarityOutput
from rails.models.similarity.dot_product import DotProductSimilarity
from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.states import DotState, HeadState, MoLItemState, MoLMixing, MoLQueryState

__all__ = [
    "DotProductSimilarity",
    "DotState",
    "HeadState",
    "MoLItemState",
    "MoLMixing",
    "MoLQueryState",
    "MoLSimilarity",
    "SimilarityHead",
    "SimilarityOutput",
]
