"""Dot-product (cosine) similarity, the MIPS baseline of spec §1.8."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rails.models.encoders.base import OutputNorm
from rails.models.similarity.base import SimilarityHead, State, l2_normalize


class DotProductSimilarity(SimilarityHead):
    """phi(q, x) = <q, x>, with both sides L2-normalised when ``normalize`` (the paper's setting).

    Args:
        normalize: L2-normalise queries and items (eps 1e-6), making scores cosines in [-1, 1].
        eps: normalisation epsilon.
        loss_temperature: sampled-softmax temperature (0.05 in every paper config: cosines / 0.05).
        query_norm: encoder output normalisation (the paper's "l2_norm" user embedding).

    States: query ``{"embeddings": (B, D)}``, item ``{"embeddings": (*L, D)}``.
    """

    def __init__(
        self,
        normalize: bool = True,
        eps: float = 1e-6,
        loss_temperature: float = 0.05,
        query_norm: OutputNorm = "l2",
    ) -> None:
        self.check_args(locals())
        super().__init__(loss_temperature=loss_temperature, query_norm=query_norm)
        self.normalize = normalize
        self.eps = eps

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.utils.instantiate.check_config`)."""
        SimilarityHead.check_recipe(args)

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
        return f"normalize={self.normalize}, loss_temperature={self.loss_temperature}, query_norm={self.query_norm}"
