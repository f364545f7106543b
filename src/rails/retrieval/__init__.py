"""Retrieval: exact and approximate top-k over learned similarities, judges, metrics and the evaluator.

Indexes (:mod:`rails.retrieval.indexes`, one contract): :class:`ExactTopK`, for Mixture-of-Logits heads
:class:`PerComponentTopK`, :class:`AverageTopK`, :class:`CombinedTopK`, :class:`ClusteredTopK`, and
:class:`ShardedIndex` for corpus
sharding; MIPS backends :class:`TorchMIPS` and :class:`FaissMIPS` (:mod:`rails.retrieval.mips`). The one
evaluation callback is :class:`RetrievalEvaluator` (:mod:`rails.retrieval.evaluator`) with a judge
(:class:`NextItemJudge`, :class:`QrelsJudge`); metrics live in :mod:`rails.retrieval.metrics`; the top-k
benchmark harness in :mod:`rails.retrieval.benchmark`.
"""

from rails.retrieval.evaluator import RetrievalEvaluator
from rails.retrieval.indexes import (
    AverageTopK,
    ClusteredTopK,
    CombinedTopK,
    ExactTopK,
    PerComponentTopK,
    RetrievalIndex,
    ShardedIndex,
)
from rails.retrieval.judges import Judge, NextItemJudge, QrelsJudge
from rails.retrieval.mips import FaissMIPS, MIPSBackend, TorchMIPS

__all__ = [
    "AverageTopK",
    "ClusteredTopK",
    "CombinedTopK",
    "ExactTopK",
    "FaissMIPS",
    "Judge",
    "MIPSBackend",
    "NextItemJudge",
    "PerComponentTopK",
    "QrelsJudge",
    "RetrievalEvaluator",
    "RetrievalIndex",
    "ShardedIndex",
    "TorchMIPS",
]
