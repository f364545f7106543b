"""Judges: what is relevant to each evaluation query, and the metrics its ranks give (spec §6).

The evaluator (:mod:`rails.retrieval.evaluator`) scores every corpus chunk once per query batch and feeds
the scores to a :class:`RankCounter`, which counts, for every (query, relevant item) pair, the corpus items
ranked ahead of it:

    rank = 1 + #{x != relevant item, x not excluded : s(q, x) >= s(q, relevant item)}

Ties go against the relevant item (pessimistic: a constant model scores zero); a relevant item that is
excluded or not in the corpus gets rank ``inf``. A judge turns a batch's evaluation outputs into
:class:`JudgedQueries` (relevant corpus positions, grades, exclusions) and ranks into metric sums:

- :class:`NextItemJudge`: one held-out next item per query, the history window excluded; HR@K, NDCG@K,
  MRR (and the training-popularity baseline at test time);
- :class:`QrelsJudge`: graded qrels, several relevant passages per question; Recall@K, nDCG@K, MRR@K.

Metric formulas: :mod:`rails.retrieval.metrics`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rails.retrieval.corpus import CorpusPositions, exclusion_mask
from rails.retrieval.metrics import graded_metric_sums, metric_sums, ranks_from_topk


@dataclass
class JudgedQueries:
    """The relevant items of a batch of B queries, as corpus positions.

    Attributes:
        relevant: (B, J) int64 corpus positions of the relevant items; -1 = padding or not in the corpus.
        grades: (B, J) float64 relevance grades, > 0 for a relevant item, 0 at padding.
        exclude: (B, H) int64 corpus positions removed from the ranking and the top-k (-1 = none), or None.
    """

    relevant: Tensor
    grades: Tensor
    exclude: Tensor | None = None

    def __len__(self) -> int:
        return int(self.relevant.shape[0])


class RankCounter:
    """Streaming exact ranks of the relevant items of a batch, fed with one corpus chunk's scores at a time.

    Args:
        queries: the batch's relevant items and exclusions.
        relevant_scores: (B, J) score of each relevant item (any value at padding), from the same scoring
            as the chunks.
    """

    def __init__(self, queries: JudgedQueries, relevant_scores: Tensor) -> None:
        valid = queries.relevant >= 0
        self.shape = tuple(queries.relevant.shape)
        self.valid = valid
        self.rows = valid.nonzero()[:, 0]  # (M,) query of every (query, relevant item) pair
        self.positions = queries.relevant[valid]  # (M,)
        self.scores = relevant_scores[valid]  # (M,)
        self.exclude = None if queries.exclude is None else queries.exclude[self.rows]  # (M, H)
        self.ahead = torch.zeros_like(self.positions)
        self.one_per_query = bool(valid.all()) and valid.shape[1] == 1  # pairs = queries: no row gather

    def update(self, scores: Tensor, start: int) -> None:
        """Count the items of corpus[start:start + C] ranked ahead, from their (B, C) scores."""
        end = start + scores.shape[1]
        pair_scores = scores if self.one_per_query else scores[self.rows]  # (M, C)
        beats = pair_scores >= self.scores[:, None].to(pair_scores.dtype)
        positions = torch.arange(start, end, device=scores.device)
        beats &= positions[None, :] != self.positions[:, None]
        if self.exclude is not None:
            beats &= ~exclusion_mask(self.exclude, start, end)
        self.ahead += beats.sum(dim=1)

    def ranks(self) -> Tensor:
        """(B, J) float64 1-based ranks; ``inf`` at padding and for excluded relevant items."""
        ranks = (self.ahead + 1).to(torch.float64)
        if self.exclude is not None:
            excluded = ((self.exclude == self.positions[:, None]) & (self.positions[:, None] >= 0)).any(dim=1)
            ranks = torch.where(excluded, torch.full_like(ranks, math.inf), ranks)
        out = torch.full(self.shape, math.inf, dtype=torch.float64, device=ranks.device)
        out[self.valid] = ranks
        return out


def target_ranks(
    score_chunk: Callable[[int, int], Tensor],
    num_items: int,
    target_positions: Tensor,
    target_scores: Tensor,
    exclude_positions: Tensor | None = None,
    chunk_size: int = 65536,
) -> Tensor:
    """Exact 1-based ranks of one target per query among the non-excluded corpus items (see module doc).

    Args:
        score_chunk: returns (B, end - start) scores of every query against corpus[start:end].
        num_items: X.
        target_positions: (B,) corpus position of each target (-1 if not in the corpus).
        target_scores: (B,) score of each target.
        exclude_positions: (B, H) corpus positions to exclude (-1 = no item).
        chunk_size: corpus items scored at once.

    Returns:
        (B,) float64 ranks, ``inf`` where the target is absent from the corpus or excluded.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    queries = JudgedQueries(
        target_positions[:, None], torch.ones_like(target_scores[:, None]), exclude_positions
    )
    counter = RankCounter(queries, target_scores[:, None])
    for start in range(0, num_items, chunk_size):
        counter.update(score_chunk(start, min(start + chunk_size, num_items)), start)
    return counter.ranks()[:, 0]


def _positive_ints(values: Sequence[int], key: str) -> list[int]:
    out = sorted({int(v) for v in values})
    if not out or any(v < 1 for v in out):
        raise ValueError(f"retrieval.evaluator.judge.{key} must be positive integers, got {list(values)}")
    return out


def _require_outputs(outputs: Mapping[str, Any], keys: Sequence[str], judge: str) -> None:
    missing = [key for key in keys if key not in outputs]
    if missing:
        raise ValueError(
            f"{judge} needs the evaluation step outputs {list(keys)}; the module's validation_step / test_step "
            f"returned {sorted(outputs)} (missing {missing})"
        )


class Judge(ABC):
    """Relevance and metrics of one kind of evaluation data (see the module docstring).

    ``overlap_name`` names the overlap of an index's top-k with the exact top-k (``{name}@{index_k}``).
    """

    overlap_name = "recall"

    @property
    @abstractmethod
    def metric_keys(self) -> list[str]:
        """Names of the metrics of the exact ranking (and of query-independent baselines)."""

    @abstractmethod
    def judge(self, outputs: Mapping[str, Any], positions: CorpusPositions) -> JudgedQueries:
        """A batch's evaluation outputs -> its relevant items and exclusions as corpus positions."""

    @abstractmethod
    def metric_sums(self, ranks: Tensor, queries: JudgedQueries) -> dict[str, Tensor]:
        """(B, J) exact ranks -> per-metric float64 sums over the B queries."""

    @abstractmethod
    def index_metric_keys(self, index_k: int) -> list[str]:
        """Names of the metrics computed from a top-``index_k`` list (cutoffs above it are skipped)."""

    @abstractmethod
    def index_metric_sums(self, topk: Tensor, queries: JudgedQueries, index_k: int) -> dict[str, Tensor]:
        """(B, K) retrieved corpus positions (-1 = empty slot) -> per-metric sums."""

    def baselines(self, datamodule: Any, corpus_ids: Tensor, stage: str) -> dict[str, Tensor]:
        """Query-independent rankers of this stage: name -> (X,) float64 scores (none by default)."""
        return {}


class NextItemJudge(Judge):
    """One held-out next item per query (spec §6): HR@K, NDCG@K, MRR.

    Evaluation step outputs read: ``targets`` (B,) item ids and, with ``exclude_history``, ``exclude`` (B, H)
    history item ids (0 = padding).

    Args:
        ks: HR/NDCG cutoffs (10, 50, 200 by default; the paper also reports 1, 5, 100).
        popularity: at test time also rank by training popularity (``test/popularity/...``), from
            ``datamodule.item_popularity()`` ((num_items,) counts per item id).
        exclude_history: remove the query's history window from the ranking and the top-k lists.
    """

    def __init__(
        self, ks: Sequence[int] = (10, 50, 200), popularity: bool = True, exclude_history: bool = True
    ) -> None:
        self.ks = _positive_ints(ks, "ks")
        self.popularity = popularity
        self.exclude_history = exclude_history

    @property
    def metric_keys(self) -> list[str]:
        return [f"{m}@{k}" for k in self.ks for m in ("hr", "ndcg")] + ["mrr"]

    def judge(self, outputs: Mapping[str, Any], positions: CorpusPositions) -> JudgedQueries:
        _require_outputs(
            outputs, ["targets", "exclude"] if self.exclude_history else ["targets"], "NextItemJudge"
        )
        targets = positions(outputs["targets"])[:, None]
        exclude = positions(outputs["exclude"]) if self.exclude_history else None
        return JudgedQueries(
            targets, torch.ones(targets.shape, dtype=torch.float64, device=targets.device), exclude
        )

    def metric_sums(self, ranks: Tensor, queries: JudgedQueries) -> dict[str, Tensor]:
        return metric_sums(ranks[:, 0], self.ks)

    def _index_ks(self, index_k: int) -> list[int]:
        return [k for k in self.ks if k <= index_k]

    def index_metric_keys(self, index_k: int) -> list[str]:
        return [f"{m}@{k}" for k in self._index_ks(index_k) for m in ("hr", "ndcg")] + ["mrr"]

    def index_metric_sums(self, topk: Tensor, queries: JudgedQueries, index_k: int) -> dict[str, Tensor]:
        return metric_sums(ranks_from_topk(topk, queries.relevant[:, 0]), self._index_ks(index_k))

    def baselines(self, datamodule: Any, corpus_ids: Tensor, stage: str) -> dict[str, Tensor]:
        if stage != "test" or not self.popularity:
            return {}
        counts = datamodule.item_popularity().to(corpus_ids.device)
        return {"popularity": counts[corpus_ids.clamp_max(counts.numel() - 1)].to(torch.float64)}


class QrelsJudge(Judge):
    """Graded qrels, several relevant passages per question (BEIR): Recall@K, nDCG@K, MRR@K.

    Evaluation step outputs read: ``relevant_ids`` (B, J) passage ids (-1 = padding) and ``relevant_grades``
    (B, J) grades (> 0 relevant, 0 padding). Nothing is excluded. The overlap of an index's top-k with the
    exact one is logged as ``overlap@{index_k}`` (``recall@K`` is a qrels metric here).

    Args:
        recall_ks: Recall cutoffs (1, 10, 100).
        ndcg_ks: nDCG cutoffs (10).
        mrr_ks: MRR cutoffs (10).
    """

    overlap_name = "overlap"

    def __init__(
        self,
        recall_ks: Sequence[int] = (1, 10, 100),
        ndcg_ks: Sequence[int] = (10,),
        mrr_ks: Sequence[int] = (10,),
    ) -> None:
        self.recall_ks = _positive_ints(recall_ks, "recall_ks")
        self.ndcg_ks = _positive_ints(ndcg_ks, "ndcg_ks")
        self.mrr_ks = _positive_ints(mrr_ks, "mrr_ks")

    @staticmethod
    def _keys(recall_ks: Sequence[int], ndcg_ks: Sequence[int], mrr_ks: Sequence[int]) -> list[str]:
        return (
            [f"recall@{k}" for k in recall_ks] + [f"ndcg@{k}" for k in ndcg_ks] + [f"mrr@{k}" for k in mrr_ks]
        )

    @property
    def metric_keys(self) -> list[str]:
        return self._keys(self.recall_ks, self.ndcg_ks, self.mrr_ks)

    def judge(self, outputs: Mapping[str, Any], positions: CorpusPositions) -> JudgedQueries:
        _require_outputs(outputs, ["relevant_ids", "relevant_grades"], "QrelsJudge")
        relevant = outputs["relevant_ids"]
        relevant = torch.where(relevant >= 0, positions(relevant), -1)
        return JudgedQueries(relevant, outputs["relevant_grades"].to(torch.float64))

    def metric_sums(self, ranks: Tensor, queries: JudgedQueries) -> dict[str, Tensor]:
        return graded_metric_sums(ranks, queries.grades, self.recall_ks, self.ndcg_ks, self.mrr_ks)

    def _index_cutoffs(self, index_k: int) -> tuple[list[int], list[int], list[int]]:
        cut = lambda ks: [k for k in ks if k <= index_k]  # noqa: E731
        return cut(self.recall_ks), cut(self.ndcg_ks), cut(self.mrr_ks)

    def index_metric_keys(self, index_k: int) -> list[str]:
        return self._keys(*self._index_cutoffs(index_k))

    def index_metric_sums(self, topk: Tensor, queries: JudgedQueries, index_k: int) -> dict[str, Tensor]:
        ranks = ranks_from_topk(topk, queries.relevant)
        return graded_metric_sums(ranks, queries.grades, *self._index_cutoffs(index_k))
