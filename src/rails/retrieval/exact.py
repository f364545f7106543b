"""Exact, memory-bounded target ranking over the full corpus.

The rank of a query's target is ``1 + #{items x != target, x not excluded : s(q, x) >= s(q, target)}``:
ties go against the target (pessimistic), excluded items (the history window, spec §6) are removed, and
a target that is itself excluded or not in the corpus gets rank ``inf``. Scores are produced chunk by
chunk over the corpus so memory stays at (B, chunk) whatever the corpus size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

ChunkScorer = Callable[[int, int], Tensor]  # (start, end) -> (B, end - start) scores


class CorpusPositions:
    """Maps item ids to their position in the corpus id tensor (-1 when absent).

    Args:
        corpus_ids: (X,) int64 unique item ids.
    """

    def __init__(self, corpus_ids: Tensor) -> None:
        if corpus_ids.numel() and corpus_ids.unique().numel() != corpus_ids.numel():
            raise ValueError("corpus item ids must be unique")
        self.corpus_ids = corpus_ids
        size = int(corpus_ids.max().item()) + 1 if corpus_ids.numel() else 1
        self.lookup = torch.full((size,), -1, dtype=torch.int64, device=corpus_ids.device)
        self.lookup[corpus_ids] = torch.arange(corpus_ids.numel(), device=corpus_ids.device)

    def __len__(self) -> int:
        return self.corpus_ids.numel()

    def __call__(self, ids: Tensor) -> Tensor:
        """(*S,) ids -> (*S,) corpus positions, -1 for ids outside the corpus (or padding 0 if absent)."""
        inside = (ids >= 0) & (ids < self.lookup.numel())
        return torch.where(inside, self.lookup[ids.clamp(0, self.lookup.numel() - 1)], -1)


def exclusion_mask(exclude_positions: Tensor, start: int, end: int) -> Tensor:
    """(B, H) corpus positions to exclude (-1 = none) -> (B, end - start) bool mask of that chunk."""
    rows = exclude_positions.shape[0]
    mask = torch.zeros(rows, end - start + 1, dtype=torch.bool, device=exclude_positions.device)
    inside = (exclude_positions >= start) & (exclude_positions < end)
    cols = torch.where(inside, exclude_positions - start, end - start)  # out-of-chunk -> spill column
    mask.scatter_(1, cols, True)
    return mask[:, :-1]


def target_ranks(
    score_chunk: ChunkScorer,
    num_items: int,
    target_positions: Tensor,
    target_scores: Tensor,
    exclude_positions: Tensor | None = None,
    chunk_size: int = 65536,
) -> Tensor:
    """Exact 1-based ranks of each query's target among the non-excluded corpus items.

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
    ahead = torch.zeros_like(target_positions)
    for start in range(0, num_items, chunk_size):
        end = min(start + chunk_size, num_items)
        scores = score_chunk(start, end)
        beats = scores >= target_scores[:, None].to(scores.dtype)
        positions = torch.arange(start, end, device=scores.device)
        beats &= positions[None, :] != target_positions[:, None]
        if exclude_positions is not None:
            beats &= ~exclusion_mask(exclude_positions, start, end)
        ahead += beats.sum(dim=1)
    ranks = (ahead + 1).to(torch.float64)
    missing = target_positions < 0
    if exclude_positions is not None:
        missing |= ((exclude_positions == target_positions[:, None]) & (target_positions[:, None] >= 0)).any(
            dim=1
        )
    return torch.where(missing, torch.full_like(ranks, math.inf), ranks)
