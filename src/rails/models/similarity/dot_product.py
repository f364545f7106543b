"""Dot-product (cosine) similarity, the MIPS baseline of spec §1.8."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rails.models.encoders.base import OutputNorm
from rails.models.similarity.base import SimilarityHead, l2_normalize
from rails.models.similarity.states import DotState


class DotProductSimilarity(SimilarityHead):
    """phi(q, x) = <q, x>, with both sides L2-normalised when ``normalize`` (the paper's setting).

    Args:
        normalize: L2-normalise queries and items (eps 1e-6), making scores cosines in [-1, 1].
        eps: normalisation epsilon.
        loss_temperature: sampled-softmax temperature (0.05 in every paper config: cosines / 0.05).
        query_norm: encoder output normalisation (the paper's "l2_norm" user embedding).

    States: :class:`~rails.models.similarity.states.DotState` with ``vectors`` (B, D) / (*L, D).
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
        """Argument rules (see :func:`rails.config.check_config`)."""
        SimilarityHead.check_recipe(args)

    def _prepare(self, x: Tensor) -> Tensor:
        return l2_normalize(x, self.eps) if self.normalize else x

    def encode_queries(self, query_embeddings: Tensor, **ctx: Tensor) -> DotState:
        """(B, D) -> DotState((B, D))."""
        return DotState(self._prepare(query_embeddings))

    def encode_items(self, item_embeddings: Tensor) -> DotState:
        """(*L, D) -> DotState((*L, D))."""
        return DotState(self._prepare(item_embeddings))

    def _scoring(
        self, query: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor, contextlib.AbstractContextManager]:
        """The vectors to multiply and the context to do it in: as given in training; in eval mode at least
        float32 and outside autocast (bf16 scores tie, and the evaluator ranks ties against the target: a
        cosine / 0.05 near 20 moves in steps of 0.125 in bf16)."""
        if self.training or not query.is_floating_point():
            return query, items.to(query.dtype), contextlib.nullcontext()
        dtype = torch.promote_types(query.dtype, torch.float32)
        return query.to(dtype), items.to(dtype), torch.autocast(query.device.type, enabled=False)

    def score(self, query_state: DotState, item_state: DotState) -> Tensor:  # type: ignore[override]
        """(B, D) x (X, D) -> (B, X); float32 or wider in eval mode."""
        query, items, context = self._scoring(query_state.vectors, item_state.vectors)
        with context:
            return query @ items.T

    def score_pairs(self, query_state: DotState, item_state: DotState) -> Tensor:  # type: ignore[override]
        """(B, D) x (B, X, D) -> (B, X); float32 or wider in eval mode."""
        query, items, context = self._scoring(query_state.vectors, item_state.vectors)
        with context:
            return torch.einsum("bd,bxd->bx", query, items)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, loss_temperature={self.loss_temperature}, query_norm={self.query_norm}"
