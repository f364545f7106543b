"""Similarity heads: ``phi(query, item)`` behind one contract (see :mod:`rails.models.similarity.base`)."""

from rails.models.similarity.base import SimilarityHead, SimilarityOutput, State, slice_state
from rails.models.similarity.dot_product import DotProductSimilarity
from rails.models.similarity.mol import MoLSimilarity

__all__ = [
    "DotProductSimilarity",
    "MoLSimilarity",
    "SimilarityHead",
    "SimilarityOutput",
    "State",
    "slice_state",
]
