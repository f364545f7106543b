"""Retrieval: exact and approximate top-k over learned similarities, metrics, and the evaluation callback.

Indexes (see :mod:`rails.retrieval.index` for the contract): :class:`ExactTopK`, and for
Mixture-of-Logits heads :class:`PerComponentTopK`, :class:`AverageTopK`, :class:`CombinedTopK`;
MIPS backends :class:`TorchMIPS` and :class:`FaissMIPS`; :class:`ShardedIndex` for corpus sharding.
"""

from rails.retrieval.index import ExactTopK, RetrievalIndex
from rails.retrieval.mips import FaissMIPS, MIPSBackend, TorchMIPS
from rails.retrieval.mol_topk import AverageTopK, CombinedTopK, PerComponentTopK
from rails.retrieval.sharded import ShardedIndex

__all__ = [
    "AverageTopK",
    "CombinedTopK",
    "ExactTopK",
    "FaissMIPS",
    "MIPSBackend",
    "PerComponentTopK",
    "RetrievalIndex",
    "ShardedIndex",
    "TorchMIPS",
]
