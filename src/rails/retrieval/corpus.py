"""Corpus bookkeeping shared by the indexes and the evaluator: id -> position maps, exclusion masks, states.

A corpus is an (X,) tensor of unique item ids; everything else (scores, top-k results, exclusions) refers to
items by their *corpus position* 0..X-1, with -1 for "no item".
"""

from __future__ import annotations

import torch
from torch import Tensor

from rails.models.similarity.base import SimilarityHead
from rails.models.similarity.states import HeadState


class CorpusPositions:
    """Maps item ids to their position in the corpus id tensor (-1 when absent).

    Args:
        corpus_ids: (X,) int64 unique item ids.
    """

    def __init__(self, corpus_ids: Tensor) -> None:
        if corpus_ids.numel() and corpus_ids.unique().numel() != corpus_ids.numel():
            raise ValueError("corpus item ids must be unique")
        if corpus_ids.numel() and int(corpus_ids.min()) < 0:
            raise ValueError(f"corpus item ids must be >= 0, got {int(corpus_ids.min())}")
        self.corpus_ids = corpus_ids
        size = int(corpus_ids.max().item()) + 1 if corpus_ids.numel() else 1
        self.lookup = torch.full((size,), -1, dtype=torch.int64, device=corpus_ids.device)
        self.lookup[corpus_ids] = torch.arange(corpus_ids.numel(), device=corpus_ids.device)

    def __len__(self) -> int:
        return self.corpus_ids.numel()

    def __call__(self, ids: Tensor) -> Tensor:
        """(*S,) ids -> (*S,) corpus positions, -1 for ids outside the corpus (or padding 0 if absent)."""
        ids = ids.to(self.lookup.device)
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


def encode_corpus(head: SimilarityHead, item_embeddings: Tensor, batch_size: int) -> HeadState:
    """(X, D_x) item embeddings -> item state with leading dim X, encoded ``batch_size`` items at a time."""
    if item_embeddings.dim() != 2:
        raise ValueError(f"item_embeddings must be (X, D_x), got shape {tuple(item_embeddings.shape)}")
    parts = [
        head.encode_items(item_embeddings[start : start + batch_size])
        for start in range(0, max(item_embeddings.shape[0], 1), batch_size)
    ]
    return type(parts[0]).cat(parts)
