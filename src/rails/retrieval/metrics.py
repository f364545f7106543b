"""Ranking metrics as pure functions over the 1-based rank of each query's single target (spec §6).

With one relevant item per query at rank r (``inf`` when it was not retrieved):

    HR@K   = 1[r <= K]
    NDCG@K = 1[r <= K] / log2(r + 1)        (the ideal DCG of a single relevant item is 1)
    MRR    = 1 / r                          (0 when not retrieved)

Each is averaged over queries. Ties are resolved pessimistically by the rankers of this package: the
target is placed after every other item with an equal score, so a constant model scores zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _check(ranks: Tensor, ks: Sequence[int]) -> None:
    if ranks.dim() != 1:
        raise ValueError(f"ranks must be 1-D (one rank per query), got shape {tuple(ranks.shape)}")
    if ranks.numel() and bool((ranks < 1).any()):
        raise ValueError(f"ranks are 1-based; got minimum {ranks.min().item()}")
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"cutoffs must be positive integers, got {k!r}")


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


def ranks_from_topk(topk_ids: Tensor, target_ids: Tensor) -> Tensor:
    """(B, K) retrieved ids in score order and (B,) targets -> (B,) float 1-based ranks (inf if absent)."""
    if topk_ids.dim() != 2 or target_ids.shape != topk_ids.shape[:1]:
        raise ValueError(
            f"expected (B, K) ids and (B,) targets, got {tuple(topk_ids.shape)}, {tuple(target_ids.shape)}"
        )
    match = topk_ids == target_ids[:, None]
    first = torch.where(match.any(dim=1), match.float().argmax(dim=1).double() + 1.0, math.inf)
    return first.to(torch.float64)


def recall_at_k(approx_ids: Tensor, exact_ids: Tensor) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k, both (B, k) id tensors (ids are unique per row)."""
    if approx_ids.shape != exact_ids.shape:
        raise ValueError(f"shape mismatch: {tuple(approx_ids.shape)} vs {tuple(exact_ids.shape)}")
    if approx_ids.numel() == 0:
        return 0.0
    overlap = (approx_ids[:, :, None] == exact_ids[:, None, :]).any(dim=2).sum(dim=1)
    return float(overlap.double().mean().item() / approx_ids.shape[1])
