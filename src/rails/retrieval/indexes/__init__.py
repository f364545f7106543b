"""Retrieval indexes behind one contract (:mod:`rails.retrieval.indexes.base`).

:class:`ExactTopK` (any head; the fused Triton kernel for MoL heads), the approximate Mixture-of-Logits
indexes :class:`PerComponentTopK`, :class:`AverageTopK`, :class:`CombinedTopK` (spec §7) and
:class:`ClusteredTopK` (IVF lists probed by exact MoL, gate-weighted keys), and
:class:`ShardedIndex` (a collective over processes, each holding one contiguous corpus shard).
"""

from rails.retrieval.indexes.approximate import AverageTopK, CombinedTopK, PerComponentTopK
from rails.retrieval.indexes.base import RetrievalIndex
from rails.retrieval.indexes.clustered import ClusteredTopK
from rails.retrieval.indexes.exact import ExactTopK
from rails.retrieval.indexes.sharded import ShardedIndex

__all__ = [
    "AverageTopK",
    "ClusteredTopK",
    "CombinedTopK",
    "ExactTopK",
    "PerComponentTopK",
    "RetrievalIndex",
    "ShardedIndex",
]
