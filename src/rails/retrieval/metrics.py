"""Ranking metrics as pure functions over 1-based ranks (spec §6): one held-out item or graded qrels.

Ranks are float64, 1-based, ``inf`` when the item was not retrieved; the rankers of this package resolve
ties pessimistically (an item is placed after every other item with an equal score, so a constant model
scores zero). Every metric is averaged over queries; the ``*_sums`` functions return per-metric float64
sums for streaming / distributed averaging.

One held-out item per query at rank r (:func:`metric_sums`, :func:`retrieval_metrics`):

    HR@K   = 1[r <= K]
    NDCG@K = 1[r <= K] / log2(r + 1)        (the ideal DCG of a single relevant item is 1)
    MRR    = 1 / r                          (0 when not retrieved)

Graded relevance, J_q relevant passages of query q with ranks r_j and grades g_j > 0, rows padded to a
common J with grade 0 (:func:`graded_metric_sums`, :func:`graded_metrics`; BEIR / trec_eval style):

    Recall@K = #{j : r_j <= K} / J_q
    nDCG@K   = DCG@K / IDCG@K,  DCG@K = sum_{j : r_j <= K} g_j / log2(r_j + 1),
               IDCG@K = sum_{i = 1..min(K, J_q)} g_(i) / log2(i + 1)   (grades sorted descending)
    MRR@K    = max_{j : r_j <= K} 1 / r_j     (0 when no relevant passage is in the top K)

Gains are linear in the grade, as in trec_eval / pytrec_eval (what BEIR and MTEB report). Ranks come from
the judges' exact full-corpus counts (:mod:`rails.retrieval.judges`) or from a top-K list
(:func:`ranks_from_topk`, used with approximate indexes);
:func:`recall_at_k` is the overlap of an approximate top-k with the exact one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _check_cutoffs(ks: Sequence[int]) -> None:
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"cutoffs must be positive integers, got {k!r}")


# ------------------------------------------------------------------------------------ one held-out item
def _check(ranks: Tensor, ks: Sequence[int]) -> None:
    if ranks.dim() != 1:
        raise ValueError(f"ranks must be 1-D (one rank per query), got shape {tuple(ranks.shape)}")
    if ranks.numel() and ranks.is_cuda:  # a device-side assert: no host synchronisation per evaluation batch
        torch._assert_async((ranks >= 1).all(), "ranks are 1-based")
    elif ranks.numel() and bool((ranks < 1).any()):
        raise ValueError(f"ranks are 1-based; got minimum {ranks.min().item()}")
    _check_cutoffs(ks)


def metric_sums(ranks: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-metric sums over queries (float64 scalars), for streaming/distributed averaging."""
    _check(ranks, ks)
    r = ranks.to(torch.float64)
    out: dict[str, Tensor] = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = hit.sum(dtype=torch.float64)
        gain = torch.where(hit, 1.0 / torch.log2(r.clamp_max(float(k)) + 1.0), torch.zeros_like(r))
        out[f"ndcg@{k}"] = gain.sum()
    out["mrr"] = torch.where(torch.isfinite(r), 1.0 / r, torch.zeros_like(r)).sum()
    return out


def retrieval_metrics(ranks: Tensor, ks: Sequence[int] = (10, 50, 200)) -> dict[str, float]:
    """Mean HR@K, NDCG@K for each K in ``ks``, and MRR.

    Args:
        ranks: (B,) float 1-based rank of each query's target; ``inf`` where it was not retrieved.
        ks: cutoffs.

    Returns:
        ``{"hr@K": ..., "ndcg@K": ..., "mrr": ...}``; all 0.0 for an empty batch.
    """
    sums = metric_sums(ranks, ks)
    n = ranks.numel()
    return {key: (value.item() / n if n else 0.0) for key, value in sums.items()}


# ------------------------------------------------------------------------------------------ graded qrels
def _check_graded(ranks: Tensor, grades: Tensor, ks: Sequence[int]) -> None:
    if ranks.dim() != 2 or ranks.shape != grades.shape:
        raise ValueError(
            f"ranks and grades must both be (Q, J), got {tuple(ranks.shape)} and {tuple(grades.shape)}"
        )
    relevant = grades > 0
    if ranks.numel() and bool((ranks[relevant] < 1).any()):
        raise ValueError("ranks are 1-based; got a rank < 1 for a relevant passage")
    if ranks.shape[0] and not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant passage (grade > 0)")
    _check_cutoffs(ks)


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
    _check_graded(ranks, grades, [*recall_ks, *ndcg_ks, *mrr_ks])
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


def ranks_from_topk(topk_ids: Tensor, relevant_ids: Tensor) -> Tensor:
    """1-based ranks of relevant items within retrieved top-K lists (``inf`` where absent).

    Args:
        topk_ids: (B, K) retrieved ids (or corpus positions) in score order.
        relevant_ids: (B,) one relevant id per query, or (B, J) several; negative = padding.

    Returns:
        float64 ranks of ``relevant_ids``' shape; ``inf`` for ids not in the top K and for padding.
    """
    single = relevant_ids.dim() == 1
    relevant = relevant_ids[:, None] if single else relevant_ids
    if topk_ids.dim() != 2 or relevant.dim() != 2 or topk_ids.shape[0] != relevant.shape[0]:
        raise ValueError(
            f"expected (B, K) ids and (B,) or (B, J) relevant ids, got {tuple(topk_ids.shape)} and "
            f"{tuple(relevant_ids.shape)}"
        )
    match = (relevant[:, :, None] == topk_ids[:, None, :]) & (relevant[:, :, None] >= 0)  # (B, J, K)
    first = match.to(torch.int8).argmax(dim=2).to(torch.float64) + 1.0
    ranks = torch.where(match.any(dim=2), first, torch.full_like(first, math.inf))
    return ranks[:, 0] if single else ranks


# ------------------------------------------------------------------------------------ approximate search
def recall_at_k(approx_ids: Tensor, exact_ids: Tensor) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k, both (B, k) id tensors (ids are unique per row)."""
    if approx_ids.shape != exact_ids.shape:
        raise ValueError(f"shape mismatch: {tuple(approx_ids.shape)} vs {tuple(exact_ids.shape)}")
    if approx_ids.numel() == 0:
        return 0.0
    overlap = (approx_ids[:, :, None] == exact_ids[:, None, :]).any(dim=2).sum(dim=1)
    return float(overlap.double().mean().item() / approx_ids.shape[1])
