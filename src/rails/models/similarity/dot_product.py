"""Dot-product (cosine) similarity, the MIPS baseline of spec §1.8."""

from __future__ import annotations

import torch
from torch import Tensor

from rails.models.similarity.base import SimilarityHead, State, l2_normalize


class DotProductSimilarity(SimilarityHead):
    """phi(q, x) = <q, x>, with both sides L2-normalised when ``normalize`` (the paper's setting).

    Args:
        normalize: L2-normalise queries and items (eps 1e-6), making scores cosines in [-1, 1].
        eps: normalisation epsilon.

    States: query ``{"embeddings": (B, D)}``, item ``{"embeddings": (*L, D)}``.
    """

    def __init__(self, normalize: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.normalize = normalize
        self.eps = eps

    def _prepare(self, x: Tensor) -> Tensor:
        return l2_normalize(x, self.eps) if self.normalize else x

    def encode_queries(self, query_embeddings: Tensor, **ctx: Tensor) -> State:
        return {"embeddings": self._prepare(query_embeddings)}

    def encode_items(self, item_embeddings: Tensor) -> State:
        return {"embeddings": self._prepare(item_embeddings)}

    def score(self, query_state: State, item_state: State) -> Tensor:
        return query_state["embeddings"] @ item_state["embeddings"].to(query_state["embeddings"].dtype).T

    def score_pairs(self, query_state: State, item_state: State) -> Tensor:
        items = item_state["embeddings"].to(query_state["embeddings"].dtype)
        return torch.einsum("bd,bxd->bx", query_state["embeddings"], items)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}"
