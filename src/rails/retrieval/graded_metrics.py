"""Ranking metrics with graded relevance and several relevant passages per query (BEIR / trec_eval style).

Inputs are, for each query q, the 1-based ranks r_qj of its J_q relevant passages among the whole corpus
(``inf`` when not retrieved) and their grades g_qj > 0; rows are padded to a common J with grade 0.

    Recall@K = #{j : r_j <= K} / J_q
    nDCG@K   = DCG@K / IDCG@K,  DCG@K = sum_{j : r_j <= K} g_j / log2(r_j + 1),
               IDCG@K = sum_{i = 1..min(K, J_q)} g_(i) / log2(i + 1)   (grades sorted descending)
    MRR@K    = max_{j : r_j <= K} 1 / r_j     (0 when no relevant passage is in the top K)

Gains are linear in the grade, as in trec_eval / pytrec_eval (what BEIR and MTEB report). Each metric is
averaged over queries. Ranks come from :func:`rails.retrieval.exact.target_ranks` (ties pessimistic: two
relevant passages with exactly equal scores share the later rank) or from a top-K list
(:func:`relevant_ranks_from_topk`, used with approximate indexes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _check(ranks: Tensor, grades: Tensor, ks: Sequence[int]) -> None:
    if ranks.dim() != 2 or ranks.shape != grades.shape:
        raise ValueError(
            f"ranks and grades must both be (Q, J), got {tuple(ranks.shape)} and {tuple(grades.shape)}"
        )
    relevant = grades > 0
    if ranks.numel() and bool((ranks[relevant] < 1).any()):
        raise ValueError("ranks are 1-based; got a rank < 1 for a relevant passage")
    if ranks.shape[0] and not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant passage (grade > 0)")
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"cutoffs must be positive integers, got {k!r}")


def graded_metric_sums(
    ranks: Tensor,
    grades: Tensor,
    recall_ks: Sequence[int] = (1, 10, 100),
    ndcg_ks: Sequence[int] = (10,),
    mrr_ks: Sequence[int] = (10,),
) -> dict[str, Tensor]:
    """Per-metric sums over queries (float64 scalars) for streaming / distributed averaging.

    Args:
        ranks: (Q, J) 1-based rank of each relevant passage (``inf`` = not retrieved; any value at padding).
        grades: (Q, J) relevance grade, > 0 for a relevant passage, 0 at padding.
        recall_ks, ndcg_ks, mrr_ks: cutoffs.

    Returns:
        ``{"recall@K": ..., "ndcg@K": ..., "mrr@K": ...}`` sums over the Q queries.
    """
    _check(ranks, grades, [*recall_ks, *ndcg_ks, *mrr_ks])
    g = grades.to(torch.float64)
    relevant = g > 0
    r = torch.where(relevant, ranks.to(torch.float64), torch.full_like(g, math.inf))
    out: dict[str, Tensor] = {}
    num_relevant = relevant.sum(dim=1).to(torch.float64)
    for k in recall_ks:
        out[f"recall@{k}"] = ((r <= k).sum(dim=1) / num_relevant).sum()
    ideal = torch.sort(g, dim=1, descending=True).values  # (Q, J), zeros (padding) last
    for k in ndcg_ks:
        hit = r <= k
        dcg = torch.where(hit, g / torch.log2(r.clamp_max(float(k)) + 1.0), torch.zeros_like(g)).sum(dim=1)
        top = ideal[:, :k]
        discounts = torch.log2(torch.arange(2, top.shape[1] + 2, dtype=torch.float64, device=g.device))
        out[f"ndcg@{k}"] = (dcg / (top / discounts).sum(dim=1)).sum()
    best = r.min(dim=1).values if r.shape[1] else torch.full((r.shape[0],), math.inf, dtype=torch.float64)
    for k in mrr_ks:
        out[f"mrr@{k}"] = torch.where(best <= k, 1.0 / best, torch.zeros_like(best)).sum()
    return out


def graded_metrics(
    ranks: Tensor,
    grades: Tensor,
    recall_ks: Sequence[int] = (1, 10, 100),
    ndcg_ks: Sequence[int] = (10,),
    mrr_ks: Sequence[int] = (10,),
) -> dict[str, float]:
    """Means over queries of :func:`graded_metric_sums` (all 0.0 for an empty batch)."""
    sums = graded_metric_sums(ranks, grades, recall_ks, ndcg_ks, mrr_ks)
    q = ranks.shape[0]
    return {key: (value.item() / q if q else 0.0) for key, value in sums.items()}


def relevant_ranks_from_topk(topk_ids: Tensor, relevant_ids: Tensor) -> Tensor:
    """(Q, K) retrieved ids in score order and (Q, J) relevant ids (-1 = padding) -> (Q, J) float64 ranks.

    A relevant id absent from the top K (or padding) gets ``inf``.
    """
    if topk_ids.dim() != 2 or relevant_ids.dim() != 2 or topk_ids.shape[0] != relevant_ids.shape[0]:
        raise ValueError(
            f"expected (Q, K) and (Q, J) ids, got {tuple(topk_ids.shape)} and {tuple(relevant_ids.shape)}"
        )
    match = (relevant_ids[:, :, None] == topk_ids[:, None, :]) & (relevant_ids[:, :, None] >= 0)  # (Q, J, K)
    found = match.any(dim=2)
    first = match.to(torch.int8).argmax(dim=2).to(torch.float64) + 1.0
    return torch.where(found, first, torch.full_like(first, math.inf))
